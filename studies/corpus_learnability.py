"""How learnable the built-in corpus is with and without the speaker, per corpus knob setting.

  python -m studies.corpus_learnability [--strategies shared,per_speaker,swapped]
      [--class-weights balanced] [--num-speakers 8] [--folds 0-4] [--cache-dir DIR] [--json OUT]

For each `config.data.synthetic.strategies` mode: the corpus (generated once, cached under
`--cache-dir`) through the project's features (`data.prepare`), one vector of statistics per
utterance (mean and standard deviation over its real frames of every mel band of the log-Mel, Δ
and ΔΔ channels: 240 numbers), and scikit-learn logistic regressions on the folds of the
project's random split (`splits.fold_split`, repetition groups kept together, 80/20):

  pooled       one classifier for all speakers on the raw statistics (no speaker information
               beyond what the voice itself carries);
  spk-norm     one classifier on statistics z-scored per speaker with that speaker's training
               utterances (what the models' per-speaker normalisation gives them);
  per-speaker  one classifier per speaker (knows the speaker: each speaker's own cues);
  loso         `spk-norm` trained on all speakers but one and tested on that one (z-scored with its
               own statistics), over every speaker: the unseen speaker's cues must be guessed.

Prints the UAR (balanced accuracy) of each, mean over the folds (loso: over the speakers), and the
pooled and loso classifiers' per-class recalls. With every speaker seen in training, even a linear
classifier on 240 numbers partly learns speaker-specific rules from the voice (16 speaker x class
clusters are nearly always linearly separable in 240 dimensions), so `pooled` is an upper bound
of what no speaker information allows; `loso` is the strict case.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ssa_jax import data, splits
from ssa_jax.config import base_config


def utterance_stats(dataset) -> np.ndarray:
  """(U, 2·M·C) mean and standard deviation over each utterance's real frames."""
  seg = np.asarray(dataset.segments, np.float64)  # (N, T, M, C)
  mask = np.asarray(dataset.mask, np.float64)[..., None, None]  # (N, T, 1, 1)
  num_utts = len(dataset.utt_ids)
  s1 = np.zeros((num_utts,) + seg.shape[2:])
  s2 = np.zeros_like(s1)
  n = np.zeros(num_utts)
  np.add.at(s1, dataset.seg_utt, (seg * mask).sum(1))
  np.add.at(s2, dataset.seg_utt, (seg ** 2 * mask).sum(1))
  np.add.at(n, dataset.seg_utt, mask.sum(axis=(1, 2, 3)))
  mean = s1 / n[:, None, None]
  std = np.sqrt(np.maximum(s2 / n[:, None, None] - mean ** 2, 0.0))
  return np.concatenate([mean.reshape(num_utts, -1), std.reshape(num_utts, -1)], axis=1)


def _fit_predict(x_train, y_train, x_valid):
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.pipeline import make_pipeline  # pylint: disable=g-import-not-at-top
  from sklearn.preprocessing import StandardScaler  # pylint: disable=g-import-not-at-top
  clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
  return clf.fit(x_train, y_train).predict(x_valid)


def fold_scores(x, labels, speakers, train, valid, num_classes) -> dict[str, object]:
  """UAR of the three classifiers on one fold, and the pooled one's per-class recalls."""
  from sklearn.metrics import balanced_accuracy_score, recall_score  # pylint: disable=g-import-not-at-top
  y_tr, y_va = labels[train], labels[valid]
  pooled = _fit_predict(x[train], y_tr, x[valid])
  z = np.empty_like(x)
  per_speaker = np.empty(len(valid), np.int64)
  for s in np.unique(speakers):
    tr, va = train[speakers[train] == s], valid[speakers[valid] == s]
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-9
    z[tr], z[va] = (x[tr] - mu) / sd, (x[va] - mu) / sd
    if len(va):
      per_speaker[speakers[valid] == s] = _fit_predict(x[tr], labels[tr], x[va])
  norm = _fit_predict(z[train], y_tr, z[valid])
  return {"pooled": balanced_accuracy_score(y_va, pooled),
          "spk-norm": balanced_accuracy_score(y_va, norm),
          "per-speaker": balanced_accuracy_score(y_va, per_speaker),
          "pooled_recalls": recall_score(y_va, pooled, average=None,
                                         labels=list(range(num_classes))).tolist()}


def loso_scores(x, labels, speakers, num_classes) -> dict[str, object]:
  """UAR and per-class recalls of the speaker-normalised pooled classifier on unseen speakers."""
  from sklearn.metrics import balanced_accuracy_score, recall_score  # pylint: disable=g-import-not-at-top
  z = np.empty_like(x)
  for s in np.unique(speakers):
    own = speakers == s
    z[own] = (x[own] - x[own].mean(0)) / (x[own].std(0) + 1e-9)
  uars, recalls = [], []
  for s in np.unique(speakers):
    own = speakers == s
    pred = _fit_predict(z[~own], labels[~own], z[own])
    uars.append(balanced_accuracy_score(labels[own], pred))
    recalls.append(recall_score(labels[own], pred, average=None, labels=list(range(num_classes))))
  return {"loso": float(np.mean(uars)), "loso_recalls": np.mean(recalls, axis=0).tolist()}


def measure(strategies: str, class_weights: str, num_speakers: int, folds: list[int],
            cache_dir: str) -> dict[str, object]:
  config = base_config()
  config.data.cache_dir = cache_dir
  config.data.synthetic.strategies = strategies
  config.data.synthetic.class_weights = class_weights
  config.data.synthetic.num_speakers = num_speakers
  start = time.perf_counter()
  dataset = data.prepare(config, progress=False)
  prepared = time.perf_counter() - start
  x = utterance_stats(dataset)
  labels, speakers = np.asarray(dataset.labels), np.asarray(dataset.speakers)
  per_fold = []
  for fold in folds:
    train, valid = splits.fold_split(dataset, fold, "random", num_folds=10, valid_fraction=0.2,
                                     seed=0)
    per_fold.append(fold_scores(x, labels, speakers, train, valid, len(dataset.classes)))
  out: dict[str, object] = {"strategies": strategies, "class_weights": class_weights,
                            "num_speakers": num_speakers, "utterances": len(labels),
                            "folds": folds, "classes": list(dataset.classes),
                            "prepare_s": round(prepared, 1)}
  for k in ("pooled", "spk-norm", "per-speaker"):
    out[k] = float(np.mean([f[k] for f in per_fold]))
  out["pooled_recalls"] = np.mean([f["pooled_recalls"] for f in per_fold], axis=0).tolist()
  out.update(loso_scores(x, labels, speakers, len(dataset.classes)))
  return out


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--strategies", default="shared,per_speaker,swapped")
  parser.add_argument("--class-weights", default="balanced")
  parser.add_argument("--num-speakers", type=int, default=8)
  parser.add_argument("--folds", default="0-4", help="folds of the 10-fold random split: a-b")
  parser.add_argument("--cache-dir", default="~/.cache/ssa_jax")
  parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
  args = parser.parse_args(argv)
  lo, _, hi = args.folds.partition("-")
  folds = list(range(int(lo), int(hi or lo) + 1))
  rows = [measure(m, args.class_weights, args.num_speakers, folds, args.cache_dir)
          for m in args.strategies.split(",")]
  classes = rows[0]["classes"]
  print(f"logistic regression on per-utterance log-Mel statistics, UAR (%), mean over random-split "
        f"folds {args.folds}; class_weights={args.class_weights}, num_speakers={args.num_speakers}")
  names = "/".join(classes)
  print(f"| strategies | utterances | pooled | spk-norm | per-speaker | loso | pooled recall "
        f"{names} | loso recall {names} |")
  print("|---|---:|---:|---:|---:|---:|---|---|")
  for r in rows:
    rec = {k: " / ".join(f"{100 * v:.0f}" for v in r[k]) for k in ("pooled_recalls", "loso_recalls")}
    print(f"| {r['strategies']} | {r['utterances']} | {100 * r['pooled']:.1f} | "
          f"{100 * r['spk-norm']:.1f} | {100 * r['per-speaker']:.1f} | {100 * r['loso']:.1f} | "
          f"{rec['pooled_recalls']} | {rec['loso_recalls']} |")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(rows, f, indent=1)
  return rows


if __name__ == "__main__":
  main()
