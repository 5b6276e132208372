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
