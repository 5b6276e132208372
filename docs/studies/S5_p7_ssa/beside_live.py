"""P7 table (PYTHONPATH=. python docs/studies/S5_p7_ssa/beside_live.py > beside_live.md): per-draw UAR at seeds d / d+1000, EMA vs live (H2's pilot), SD of Δ and N."""
import json, glob, numpy as np
from ssa_jax import replicates as r
def runs(pattern):
  out = {}
  for f in glob.glob(pattern + "/draw*/fold0/result.json"):
    d = int(f.split("/draw")[1].split("/")[0]); out[d] = 100 * json.load(open(f))["uar"]
  return out
S = "runs/"  # from the repository root, where the studies ran
cols = {
  "SSA-CRNN-r averaged": (S + "s5/p7_ssa/*seeds_0", S + "s5/p7_ssa/*seeds_1000"),
  "SSA-CRNN-r live (H2 pilot)": (S + "s4/pilot_d2_ssa/*seeds_0", S + "s4/pilot_d2_ssa/*seeds_1000"),
  "ACRNN-r averaged": (S + "s5/p7_acrnn_r/*seeds_0", S + "s5/p7_acrnn_r/*seeds_1000"),
  "ACRNN-r live (H2 pilot)": (S + "s4/pilot_d2_acrnn_r/*seeds_0", S + "s4/pilot_d2_acrnn_r/*seeds_1000"),
}
data = {k: (runs(glob.glob(a)[0]) if glob.glob(a) else {}, runs(glob.glob(b)[0]) if glob.glob(b) else {}) for k, (a, b) in cols.items()}
print("| draw | " + " | ".join(f"{k} (Δ)" for k in cols) + " |")
print("|---:|" + "---|" * len(cols))
for d in range(200, 204):
  cells = []
  for k in cols:
    a, b = data[k]
    cells.append(f"{a[d]:.2f} / {b[d]:.2f} ({b[d]-a[d]:+.2f})" if d in a and d in b else "–")
  print(f"| {d} | " + " | ".join(cells) + " |")
sds, means = [], []
for k in cols:
  a, b = data[k]; ds = [b[d] - a[d] for d in a if d in b]
  sd = np.std(ds, ddof=1) if len(ds) > 1 else float("nan")
  sds.append(f"{sd:.2f} → {r.draws_for_power(sd, 3.0)} draws" if len(ds) > 1 else "–")
  means.append(f"{np.mean(list(a.values()) + list(b.values())):.2f}" if a else "–")
print("| SD of Δ | " + " | ".join(sds) + " |")
print("| mean of the runs | " + " | ".join(means) + " |")
