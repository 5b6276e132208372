"""The paper's figures as PNG files, from plain numpy arrays (matplotlib, Agg canvas, no pyplot
global state).

  plot_confusion(confusion (K, K) counts, classes, path)           Figure 4: row-normalised, percent
  plot_attention(static (T, M), alphas {name: (T',)}, path)         Figure 3: alpha_em / alpha_sp (or
                                                                    alpha) over time, log-Mel above
  plot_tsne(embeddings (N, E), labels (N,), classes, path)          Figure 5: t-SNE of z_em by class
  tsne_2d(embeddings, seed) -> (N, 2)                               scikit-learn TSNE, perplexity
                                                                    clipped below N

Every plot_* function writes atomically (`ssa_jax.io.write_with`) and returns the path it wrote;
confusion_figure / attention_figure / tsne_figure (same arguments less the path) return the
matplotlib Figure it saves, to inspect what it shows.
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
  """Figure 4 (`confusion_figure`) written to `path`."""
  return _save(confusion_figure(confusion, classes, title), path)


def confusion_figure(confusion: np.ndarray, classes: Sequence[str],
                     title: str = "Normalised confusion matrix") -> Figure:
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
  return fig


def plot_attention(static: np.ndarray, alphas: Mapping[str, np.ndarray], path: str | os.PathLike,
                   hop_seconds: float = 0.01, title: str = "Attention scores",
                   boundaries_s: Sequence[float] = ()) -> str:
  """Figure 3 (`attention_figure`, same arguments) written to `path`."""
  return _save(attention_figure(static, alphas, hop_seconds, title, boundaries_s), path)


def attention_figure(static: np.ndarray, alphas: Mapping[str, np.ndarray],
                     hop_seconds: float = 0.01, title: str = "Attention scores",
                     boundaries_s: Sequence[float] = ()) -> Figure:
  """Figure 3: the log-Mel static channel (T, M) above, the attention curves below.

  Args:
    static: (T, M) log-Mel static channel of the segment (real frames only, or padded).
    alphas: name -> (T',) attention weights on the pooled time axis (T' = T // pool); each curve
      is drawn at the centre times of its pooled frames, so T' may differ from T.
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
  return fig


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
  """Figure 5 (`tsne_figure`) written to `path`."""
  return _save(tsne_figure(embeddings, labels, classes, title, seed), path)


def tsne_figure(embeddings: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                title: str = "t-SNE of the emotion embeddings", seed: int = 0) -> Figure:
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
  return fig


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


def _fold_number(fold_dir: str) -> int:
  """K of a trained fold: result.json's "fold", else the folder name fold<K>."""
  from ssa_jax import io as io_lib  # pylint: disable=g-import-not-at-top,reimported
  result_path = os.path.join(fold_dir, "result.json")
  if os.path.isfile(result_path):
    return int(io_lib.read_json(result_path)["fold"])
  name = os.path.basename(fold_dir)
  if not (name.startswith("fold") and name[4:].isdigit()):
    raise ValueError(f"{fold_dir}: cannot tell the fold number; pass it")
  return int(name[4:])


def _utterance_index(dataset, utterance: str | None, valid_utt: np.ndarray) -> int:
  """The corpus index of `utterance` (default: the first validation utterance)."""
  ids = list(dataset.utt_ids)
  if utterance is None:
    return int(valid_utt[0])
  if utterance in ids:
    return ids.index(utterance)
  raise ValueError(f"utterance {utterance!r} is not in the corpus "
                   f"(e.g. validation utterances: {', '.join(ids[i] for i in valid_utt[:5])})")


def _plot_attention_of(u: int, dataset, fd, config, outputs_fn, system: str, fold: int,
                       out_dir: str) -> str:
  """Figure 3 for utterance index u (its segments normalised with the fold's statistics)."""
  from ssa_jax import features, metrics  # pylint: disable=g-import-not-at-top
  seg_utt = np.asarray(dataset.seg_utt)
  useg = np.flatnonzero(seg_utt == u)
  labels = np.asarray(dataset.labels)
  seg_speaker = np.asarray(dataset.speaker_names)[np.asarray(dataset.speakers)[seg_utt]]
  arrays = {"x": features.normalize(dataset.segments, dataset.mask, seg_speaker, fd.stats,
                                    str(config.features.norm_fallback), index=useg),
            "mask": np.asarray(dataset.mask[useg], bool),
            "label": np.full(len(useg), labels[u], np.int32),
            "speaker": np.zeros(len(useg), np.int32)}  # unused by the model
  out = outputs_fn(arrays)
  curves = _attention_curves(out)
  real = int(arrays["mask"].sum())
  static = np.asarray(dataset.segments[useg][..., 0]).reshape(-1, dataset.segments.shape[2])[:real]
  keep = -(-real // int(config.model.pool_size[0]))
  curves = {k: np.asarray(v).reshape(-1)[:keep] for k, v in curves.items()}
  hop = float(config.features.hop_length) / float(config.features.sample_rate)
  scores = metrics.pool_posteriors(out["probs"], np.zeros(len(useg), np.int64), 1,
                                   str(config.train.pooling))[0]
  ids, classes = list(dataset.utt_ids), fd.classes
  where = "validation" if u in set(fd.valid_utt.tolist()) else "training"
  title = (f"{system}, fold {fold}: attention over {ids[u]} ({where} utterance, "
           f"true {classes[labels[u]]}, predicted {classes[int(scores.argmax())]})")
  seg_s = int(config.features.segment_frames) * hop
  path = os.path.join(out_dir, f"attention_{_safe_name(ids[u])}.png")
  return plot_attention(static, curves, path, hop, title,
                        boundaries_s=[k * seg_s for k in range(1, len(useg))])


def evaluate_fold(fold_dir: str | os.PathLike, fold: int | None = None,
                  utterance: str | None = None, out_dir: str | os.PathLike | None = None,
                  dataset=None) -> dict:
  """Evaluates a fold's best checkpoint on its validation utterances and draws the figures.

  Rebuilds the fold's validation set with training's own code (`fold.prepare_fold`: same data
  cache and split, the training speaker statistics from the checkpoint), computes the metrics
  with training's `fold.evaluate` (the same eval step, batches and pooling), and writes into
  `out_dir` (default `<fold_dir>/figures`): confusion.png (Figure 4), attention_<utterance>.png
  (Figure 3; the chosen utterance, else the first validation one), tsne.png (Figure 5,
  validation segment embeddings z_em) and evaluation.json (UAR, WA, segment UAR, confusion,
  recalls, SSA speaker mass, the files written).

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
  # pylint: disable=g-import-not-at-top
  from ssa_jax import data as data_lib, fold as fold_lib, parallel, predict, summary, train

  fold_dir = os.path.abspath(os.fspath(fold_dir))
  p = predict.load_predictor(fold_dir)
  config, classes = p.config, p.classes
  fold = _fold_number(fold_dir) if fold is None else fold
  if dataset is None:
    dataset = data_lib.prepare(config, progress=False)
  if tuple(dataset.classes) != tuple(classes):
    raise ValueError(f"{fold_dir}: the checkpoint's classes {classes} differ from the data's "
                     f"{tuple(dataset.classes)} (was the config changed?)")
  fd = fold_lib.prepare_fold(config, dataset, fold, stats=p.stats, with_train=False)
  u = _utterance_index(dataset, utterance, fd.valid_utt)

  # --- validation metrics: training's evaluation on the best checkpoint ---
  mesh = parallel.make_mesh()
  batch_size = int(config.train.eval_batch_size)
  eval_fn = train.make_eval_step(p.model, mesh, aux_keys=("z_em", "alpha", "alpha_em", "alpha_sp"))
  variables = p.variables  # {"params", "batch_stats"} of the best checkpoint
  report, outputs = fold_lib.evaluate(eval_fn, variables, fd, str(config.train.pooling),
                                      batch_size, mesh)
  system = summary.system_label(config)
  out_dir = os.path.join(fold_dir, "figures") if out_dir is None else os.fspath(out_dir)
  uar, wa = report["uar"], report["wa"]
  written = {}
  written["confusion"] = plot_confusion(
      np.asarray(report["confusion"]), classes, os.path.join(out_dir, "confusion.png"),
      title=f"{system}, fold {fold}: validation UAR {100 * uar:.2f} %, WA {100 * wa:.2f} %")
  written["tsne"] = plot_tsne(
      outputs["z_em"], fd.valid["label"], classes, os.path.join(out_dir, "tsne.png"),
      title=f"t-SNE of the emotion embeddings z_em ({system}, fold {fold}, "
            f"{len(fd.valid_seg)} validation segments)", seed=int(config.seed))
  def outputs_fn(arrays):
    return fold_lib.model_outputs(eval_fn, variables, arrays, batch_size, mesh)
  written["attention"] = _plot_attention_of(u, dataset, fd, config, outputs_fn, system, fold,
                                            out_dir)
  report = {"fold_dir": fold_dir, "fold": fold, "step": p.step, "system": system, **report,
            "classes": list(classes), "valid_utterances": int(len(fd.valid_utt)),
            "valid_segments": int(len(fd.valid_seg)),
            "attention_utterance": list(dataset.utt_ids)[u], "figures": written}
  io_lib.write_json(os.path.join(out_dir, "evaluation.json"), report)
  return report
