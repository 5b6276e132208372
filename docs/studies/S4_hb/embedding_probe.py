"""Post hoc, exploratory: head or embedding? For each HB run (D1, proportional batches), a
class-balanced and a plain logistic regression on z_em (standardised; fitted on the utterances the
run trained on, scored on the draw's test subset), beside the run's own head (result.json).

  PYTHONPATH=. python docs/studies/S4_hb/embedding_probe.py runs/s4/hb [DRAWS]  (-> embedding_probe.txt)

DRAWS: a bin.replicates draw list (default: every draw of the study). Per-run figures are cached
in runs/s4/hb/embedding_probe.json, so a rerun computes only new runs.
"""
import glob, json, os, sys
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import recall_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from ssa_jax import data, replicates, rundir, speaker_eval, summary

root = sys.argv[1]
cache_path = os.path.join(root, "embedding_probe.json")
cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {}
systems = [os.path.basename(d.rstrip("/")) for d in sorted(glob.glob(os.path.join(root, "*/")))]
draws = sorted({int(os.path.basename(d)[4:]) for d in glob.glob(os.path.join(root, "*", "draw*"))})
if len(sys.argv) > 2:
  draws = [d for d in draws if d in set(replicates.parse_draws(sys.argv[2]))]


def labels_of(dataset, utt_ids):
  index = {u: i for i, u in enumerate(np.asarray(dataset.utt_ids).tolist())}
  return np.asarray(dataset.labels)[[index[u] for u in utt_ids]]


def probe(x_tr, y_tr, x_te, y_te, num_classes, balanced):
  clf = make_pipeline(StandardScaler(), LogisticRegression(
      max_iter=3000, class_weight="balanced" if balanced else None))
  rec = recall_score(y_te, clf.fit(x_tr, y_tr).predict(x_te), labels=range(num_classes),
                     average=None, zero_division=0)
  return rec.tolist()


for draw in draws:
  dataset = None
  for system in systems:
    key = f"{system}/draw{draw}"
    fold_dir = os.path.join(root, system, f"draw{draw}", "fold0")
    if key in cache or not os.path.exists(os.path.join(fold_dir, "result.json")):
      continue
    if dataset is None:  # one corpus per draw, shared by its systems
      dataset = data.prepare(rundir.FoldDir(fold_dir).config(), progress=False)
    tr = speaker_eval.fold_embeddings(fold_dir, "train", dataset)
    te = speaker_eval.fold_embeddings(fold_dir, "valid", dataset)
    y_tr, y_te = labels_of(dataset, tr.utt_ids), labels_of(dataset, te.utt_ids)
    k = len(dataset.classes)
    with open(os.path.join(fold_dir, "result.json")) as f:
      own = json.load(f)["recalls"]
    cache[key] = {"own": own,
                  "balanced": probe(tr.embeddings["z_em"], y_tr, te.embeddings["z_em"], y_te, k, True),
                  "plain": probe(tr.embeddings["z_em"], y_tr, te.embeddings["z_em"], y_te, k, False),
                  "train_counts": np.bincount(y_tr, minlength=k).tolist()}
    with open(cache_path + ".tmp", "w") as f:
      json.dump(cache, f)
    os.replace(cache_path + ".tmp", cache_path)
    print(key, {h: round(100 * min(r), 1) for h, r in cache[key].items() if h != "train_counts"},
          flush=True)


def ci(x):  # Student's t over the draws (summary.mean_ci)
  m = summary.mean_ci(x)
  return f"{m.mean:+.2f} [{m.low:+.2f}, {m.high:+.2f}]"


print("\nPer system, over the draws with every head (percent): mean UAR / worst-class recall")
for system in systems:
  runs = [v for k, v in cache.items() if k.startswith(system + "/") and int(k.split("draw")[1]) in draws]
  if len(runs) < 2:
    continue
  uar = {h: [100 * np.mean(r[h]) for r in runs] for h in ("own", "balanced", "plain")}
  worst = {h: [100 * min(r[h]) for r in runs] for h in ("own", "balanced", "plain")}
  print(f"{system} ({len(runs)} draws): " + "; ".join(
      f"{h} {np.mean(uar[h]):.2f} / {np.mean(worst[h]):.2f}" for h in ("own", "balanced", "plain")))
  print(f"  balanced probe - own head: UAR {ci(np.subtract(uar['balanced'], uar['own']))}, "
        f"worst-class {ci(np.subtract(worst['balanced'], worst['own']))}")
  print(f"  plain probe - own head:    UAR {ci(np.subtract(uar['plain'], uar['own']))}, "
        f"worst-class {ci(np.subtract(worst['plain'], worst['own']))}")

print("\nBetween systems, balanced probe on each system's z_em, paired over draws "
      "(ACRNN-r relative - ACRNN):")
for name, f in (("UAR", lambda r: 100 * np.mean(r)), ("worst-class", lambda r: 100 * min(r))):
  a = {k.split("/")[1]: f(v["balanced"]) for k, v in cache.items() if k.startswith("ACRNN-r_relative/")}
  b = {k.split("/")[1]: f(v["balanced"]) for k, v in cache.items() if k.startswith("ACRNN/")}
  print(f"  {name}: {ci([a[d] - b[d] for d in sorted(a)])}")
