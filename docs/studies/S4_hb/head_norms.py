"""Post hoc, descriptive: the emotion classifier's per-class column L1 norms and biases at the
selected checkpoint of every HB run (D1, proportional batches), against each class's recall.

  PYTHONPATH=. python docs/studies/S4_hb/head_norms.py runs/s4/hb   (output: head_norms.txt)
"""
import json, os, sys, glob
import numpy as np
from ssa_jax import checkpointing

root = sys.argv[1]
out = {}
for sysdir in sorted(glob.glob(os.path.join(root, "*/"))):
  name = os.path.basename(sysdir.rstrip("/"))
  rows = []
  for fd in sorted(glob.glob(os.path.join(sysdir, "draw*/fold0"))):
    with open(os.path.join(fd, "result.json")) as f:
      res = json.load(f)
    b = checkpointing.load_best(fd)
    p = b["variables"]["params"]["classifier"]
    w = np.asarray(p["kernel"])  # (E, K)
    bias = np.asarray(p["bias"]) if "bias" in p else np.zeros(w.shape[1])
    rows.append({"classes": list(b["classes"]), "l1": np.abs(w).sum(0).tolist(),
                 "nz": (w != 0).mean(0).tolist(), "bias": bias.tolist(),
                 "recalls": res["recalls"]})
  out[name] = rows
  cls = rows[0]["classes"]
  l1 = np.array([r["l1"] for r in rows]); l1r = l1 / l1.mean(1, keepdims=True)
  nz = np.array([r["nz"] for r in rows]); bias = np.array([r["bias"] for r in rows])
  rec = np.array([r["recalls"] for r in rows])  # result.json: a list in the order of `classes`
  print(name, len(rows), "draws; classes", cls)
  print("  L1 norm / mean over classes:", np.round(l1r.mean(0), 3), "+-", np.round(l1r.std(0), 3))
  print("  non-zero share:", np.round(nz.mean(0), 3))
  print("  bias (minus row mean):", np.round((bias - bias.mean(1, keepdims=True)).mean(0), 4))
  print("  recall:", np.round(rec.mean(0), 3))
  # within-draw: correlation of a class's relative L1 norm with its recall
  print("  corr(rel L1, recall) over draws x classes:",
        round(float(np.corrcoef(l1r.ravel(), rec.ravel())[0, 1]), 3))
with open(os.path.join(root, "head_norms.json"), "w") as f:
  json.dump(out, f)
