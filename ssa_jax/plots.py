"""The paper's figures as PNG files, from plain numpy arrays (matplotlib, Agg canvas, no pyplot
global state).

  plot_confusion(confusion (K, K) counts, classes, path)           Figure 4: row-normalised, percent
  plot_attention(static (T, M), alphas {name: (T',)}, path)         Figure 3: alpha_em / alpha_sp (or
                                                                    alpha) over time, log-Mel above
  plot_tsne(embeddings (N, E), labels (N,), classes, path)          Figure 5: t-SNE of z_em by class
  tsne_2d(embeddings, seed) -> (N, 2)                               scikit-learn TSNE, perplexity
                                                                    clipped below N

Every function writes atomically (`ssa_jax.io.write_with`) and returns the path it wrote.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ssa_jax import io as io_lib

DEFAULT_PERPLEXITY = 30.0


def _save(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> str:
  FigureCanvasAgg(fig)
  return io_lib.write_with(path, lambda f: fig.savefig(f, dpi=dpi, format="png",
                                                       bbox_inches="tight"))


def row_normalize(confusion: np.ndarray) -> np.ndarray:
  """(K, K) counts -> rows summing to 1 (a class absent from the truth stays a row of zeros)."""
  c = np.asarray(confusion, np.float64)
  if c.ndim != 2 or c.shape[0] != c.shape[1]:
    raise ValueError(f"confusion matrix must be square (K, K), got shape {c.shape}")
  if np.any(c < 0):
    raise ValueError("confusion matrix has negative counts")
  support = c.sum(axis=1, keepdims=True)
  return np.divide(c, support, out=np.zeros_like(c), where=support > 0)


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], path: str | os.PathLike,
                   title: str = "Normalised confusion matrix") -> str:
  """Figure 4: rows = true class, columns = prediction, each row normalised, cells in percent."""
  norm = row_normalize(confusion)
  k = norm.shape[0]
  if len(classes) != k:
    raise ValueError(f"{len(classes)} class names for a {k} x {k} confusion matrix")
  counts = np.asarray(confusion).sum(axis=1)
  fig = Figure(figsize=(1.2 * k + 2.5, 1.1 * k + 1.8))
  ax = fig.add_subplot()
  im = ax.imshow(100.0 * norm, cmap="Blues", vmin=0.0, vmax=100.0)
  fig.colorbar(im, ax=ax, label="% of the true class")
  ax.set_xticks(range(k), labels=list(classes))
  ax.set_yticks(range(k), labels=[f"{c} (n={int(n)})" for c, n in zip(classes, counts)])
  ax.set_xlabel("predicted class")
  ax.set_ylabel("true class")
  ax.set_title(title)
  for i in range(k):
    for j in range(k):
      v = 100.0 * norm[i, j]
      ax.text(j, i, f"{v:.1f}%", ha="center", va="center",
              color="white" if v > 50.0 else "black", fontsize=9)
  return _save(fig, path)


def plot_attention(static: np.ndarray, alphas: Mapping[str, np.ndarray], path: str | os.PathLike,
                   hop_seconds: float = 0.01, title: str = "Attention scores",
                   boundaries_s: Sequence[float] = ()) -> str:
  """Figure 3: the log-Mel static channel (T, M) above, the attention curves below.

  Args:
    static: (T, M) log-Mel static channel of the segment (real frames only, or padded).
    alphas: name -> (T',) attention weights on the pooled time axis (T' = T // pool); each curve
      is drawn at the centre times of its pooled frames, so T' may differ from T.
    path: PNG to write.
    hop_seconds: feature frame hop (10 ms).
    title: figure title.
    boundaries_s: times of segment boundaries, drawn as dashed lines (each segment's attention
      is its own softmax).
  """
  static = np.asarray(static, np.float64)
  if static.ndim != 2:
    raise ValueError(f"static log-Mel must be (frames, mels), got shape {static.shape}")
  if not alphas:
    raise ValueError("no attention curve to plot")
  t = static.shape[0]
  fig = Figure(figsize=(9, 5.5))
  ax_spec, ax_att = fig.subplots(2, 1, sharex=True, height_ratios=(1.2, 1.0))
  duration = t * hop_seconds
  ax_spec.imshow(static.T, origin="lower", aspect="auto", cmap="magma",
                 extent=(0.0, duration, 0, static.shape[1]))
  ax_spec.set_ylabel("mel band")
  ax_spec.set_title(title)
  for name, a in alphas.items():
    a = np.asarray(a, np.float64).reshape(-1)
    if a.size == 0:
      raise ValueError(f"attention curve {name!r} is empty")
    step = duration / a.size
    ax_att.plot((np.arange(a.size) + 0.5) * step, a, label=name, linewidth=1.2)
  for b in boundaries_s:
    for ax in (ax_spec, ax_att):
      ax.axvline(b, color="0.4", linestyle="--", linewidth=0.8)
  ax_att.set_xlabel("time (s)")
  ax_att.set_ylabel("attention score")
  ax_att.set_xlim(0.0, duration)
  ax_att.legend(loc="upper right")
  ax_att.grid(alpha=0.3)
  return _save(fig, path)


def tsne_2d(embeddings: np.ndarray, seed: int = 0,
            perplexity: float = DEFAULT_PERPLEXITY) -> np.ndarray:
  """(N, E) -> (N, 2) with scikit-learn's TSNE; perplexity clipped to at most N - 1 (it must be
  below the number of points). N = 1 gives the origin."""
  from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top
  x = np.asarray(embeddings, np.float64)
  if x.ndim != 2:
    raise ValueError(f"embeddings must be (N, E), got shape {x.shape}")
  if not np.all(np.isfinite(x)):
    raise ValueError("embeddings contain NaN or infinite values")
  n = x.shape[0]
  if n == 0:
    raise ValueError("no embeddings to plot")
  if n == 1:
    return np.zeros((1, 2))
  perp = float(min(perplexity, n - 1))
  init = "pca" if min(x.shape) >= 2 else "random"
  return TSNE(n_components=2, perplexity=perp, init=init, random_state=seed).fit_transform(x)


def plot_tsne(embeddings: np.ndarray, labels: np.ndarray, classes: Sequence[str],
              path: str | os.PathLike, title: str = "t-SNE of the emotion embeddings",
              seed: int = 0) -> str:
  """Figure 5: the 2-D t-SNE of the embeddings, one colour per class."""
  labels = np.asarray(labels).reshape(-1)
  if labels.shape[0] != np.shape(embeddings)[0]:
    raise ValueError(f"{labels.shape[0]} labels for {np.shape(embeddings)[0]} embeddings")
  if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
    raise ValueError(f"labels outside 0..{len(classes) - 1}")
  xy = tsne_2d(embeddings, seed)
  fig = Figure(figsize=(6, 5.5))
  ax = fig.add_subplot()
  for k, name in enumerate(classes):
    sel = labels == k
    if sel.any():
      ax.scatter(xy[sel, 0], xy[sel, 1], s=18, label=f"{name} ({int(sel.sum())})", alpha=0.8)
  ax.set_xlabel("t-SNE 1")
  ax.set_ylabel("t-SNE 2")
  ax.set_title(title)
  ax.legend(loc="best", fontsize=8)
  return _save(fig, path)


# --------------------------------------------------------------------------- a trained fold


def _safe_name(s: str) -> str:
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)


def _attention_curves(aux: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Figure 3's curves from the model's aux outputs (all segments of one utterance, (n, T'))."""
  if "alpha_em" in aux and "alpha_sp" in aux:  # SSA-CRNN: the halves of the joint SSA softmax
    return {"α_em (self)": aux["alpha_em"], "α_sp (speaker)": aux["alpha_sp"]}
  if "alpha" in aux:  # ACRNN
    return {"α (self attention)": aux["alpha"]}
  raise ValueError(f"the model returns no attention weights (aux keys: {sorted(aux)})")


def evaluate_fold(fold_dir: str | os.PathLike, fold: int | None = None,
                  utterance: str | None = None, out_dir: str | os.PathLike | None = None,
                  dataset=None) -> dict:
  """Evaluates a fold's best checkpoint on its validation utterances and draws the figures.

  Rebuilds the fold's validation set exactly as training did (same data cache, split and
  training speaker statistics from the checkpoint), runs the model, pools the segment posteriors
  (`config.train.pooling`), and writes into `out_dir` (default `<fold_dir>/figures`):
  confusion.png (Figure 4), attention_<utterance>.png (Figure 3; the chosen utterance, else the
  first validation one), tsne.png (Figure 5, validation segment embeddings z_em) and
  evaluation.json (UAR, WA, segment UAR, confusion, the files written).

  Args:
    fold_dir: `<workdir>/fold<K>`.
    fold: K (default: read from result.json, else the folder name).
    utterance: utterance id for Figure 3 (any utterance of the corpus; validation ones by default).
    out_dir: where the PNGs go.
    dataset: a prepared `data.Dataset` (default `data.prepare(config)`).

  Returns:
    The evaluation.json content.
  """
  # Imported here: plotting arrays must not need JAX or the model code.
  import json  # pylint: disable=g-import-not-at-top
  from ssa_jax import data as data_lib, features, metrics, predict, splits, summary  # pylint: disable=g-import-not-at-top

  fold_dir = os.path.abspath(os.fspath(fold_dir))
  p = predict.load_predictor(fold_dir)
  config, classes = p.config, p.classes
  if fold is None:
    result_path = os.path.join(fold_dir, "result.json")
    if os.path.isfile(result_path):
      with open(result_path, encoding="utf-8") as f:
        fold = int(json.load(f)["fold"])
    else:
      name = os.path.basename(fold_dir)
      if not (name.startswith("fold") and name[4:].isdigit()):
        raise ValueError(f"{fold_dir}: cannot tell the fold number; pass it")
      fold = int(name[4:])
  if dataset is None:
    dataset = data_lib.prepare(config, progress=False)
  if tuple(dataset.classes) != tuple(classes):
    raise ValueError(f"{fold_dir}: the checkpoint's classes {classes} differ from the data's "
                     f"{tuple(dataset.classes)} (was the config changed?)")
  tcfg = config.train
  train_utt, valid_utt = splits.fold_split(dataset, fold, tcfg.split, int(tcfg.num_folds),
                                           float(tcfg.valid_fraction), int(config.seed))
  ids = list(dataset.utt_ids)
  if utterance is None:
    u = int(valid_utt[0])
  elif utterance in ids:
    u = ids.index(utterance)
  else:
    raise ValueError(f"utterance {utterance!r} is not in the corpus "
                     f"(e.g. validation utterances: {', '.join(ids[i] for i in valid_utt[:5])})")
  seg_utt = np.asarray(dataset.seg_utt)
  seg_speaker = np.asarray(dataset.speaker_names)[np.asarray(dataset.speakers)[seg_utt]]
  fallback = str(config.features.norm_fallback)  # as training normalised the validation side

  def run(seg_idx, keys):
    x = features.normalize(dataset.segments[seg_idx], dataset.mask[seg_idx], seg_speaker[seg_idx],
                           p.stats, fallback)
    return predict.run_segments(p.model, p.variables, x, dataset.mask[seg_idx],
                                int(tcfg.eval_batch_size), aux_keys=keys)

  # --- validation metrics ---
  valid_seg = np.flatnonzero(np.isin(seg_utt, valid_utt))
  is_ssa = str(config.model.name) == "ssa_crnn"
  probs, aux = run(valid_seg, ("z_em", "alpha_sp") if is_ssa else ("z_em",))
  local = np.searchsorted(valid_utt, seg_utt[valid_seg])
  labels = np.asarray(dataset.labels)
  pooled = metrics.pool_posteriors(probs, local, len(valid_utt), str(tcfg.pooling))
  cm = metrics.confusion_matrix(labels[valid_utt], pooled.argmax(-1), len(classes))
  seg_cm = metrics.confusion_matrix(labels[seg_utt[valid_seg]], probs.argmax(-1), len(classes))
  uar, wa, seg_uar = metrics.uar(cm), metrics.wa(cm), metrics.uar(seg_cm)
  system = summary.system_label(config)
  out_dir = os.path.join(fold_dir, "figures") if out_dir is None else os.fspath(out_dir)
  written = {}
  written["confusion"] = plot_confusion(
      cm, classes, os.path.join(out_dir, "confusion.png"),
      title=f"{system}, fold {fold}: validation UAR {100 * uar:.2f} %, WA {100 * wa:.2f} %")
  written["tsne"] = plot_tsne(
      aux["z_em"], labels[seg_utt[valid_seg]], classes, os.path.join(out_dir, "tsne.png"),
      title=f"t-SNE of the emotion embeddings z_em ({system}, fold {fold}, "
            f"{len(valid_seg)} validation segments)", seed=int(config.seed))

  # --- attention of one utterance (Figure 3) ---
  useg = np.flatnonzero(seg_utt == u)
  uprobs, uaux = run(useg, ("alpha", "alpha_em", "alpha_sp"))
  curves = _attention_curves(uaux)
  mask = np.asarray(dataset.mask[useg])
  real = int(mask.sum())
  static = np.asarray(dataset.segments[useg][..., 0]).reshape(-1, dataset.segments.shape[2])[:real]
  pool_t = int(config.model.pool_size[0])
  keep = -(-real // pool_t)
  curves = {k: np.asarray(v).reshape(-1)[:keep] for k, v in curves.items()}
  hop = float(config.features.hop_length) / float(config.features.sample_rate)
  scores = metrics.pool_posteriors(uprobs, np.zeros(len(useg), np.int64), 1, str(tcfg.pooling))[0]
  where = "validation" if u in set(valid_utt.tolist()) else "training"
  title = (f"{system}, fold {fold}: attention over {ids[u]} ({where} utterance, "
           f"true {classes[labels[u]]}, predicted {classes[int(scores.argmax())]})")
  seg_s = int(config.features.segment_frames) * hop
  written["attention"] = plot_attention(
      static, curves, os.path.join(out_dir, f"attention_{_safe_name(ids[u])}.png"), hop, title,
      boundaries_s=[k * seg_s for k in range(1, len(useg))])

  report = {"fold_dir": fold_dir, "fold": fold, "step": p.step, "system": system,
            "uar": uar, "wa": wa, "segment_uar": seg_uar, "confusion": cm.tolist(),
            "classes": list(classes), "valid_utterances": int(len(valid_utt)),
            "valid_segments": int(len(valid_seg)), "attention_utterance": ids[u],
            "figures": written}
  if is_ssa:  # mean attention mass on the SSA's speaker half (sum_t alpha_sp,t per segment)
    report["speaker_mass"] = float(np.mean(np.asarray(aux["alpha_sp"]).sum(axis=-1)))
  io_lib.write_json(os.path.join(out_dir, "evaluation.json"), report)
  return report
