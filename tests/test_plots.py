"""The figure functions on plain arrays: valid, non-blank PNGs; row normalisation against
scikit-learn; t-SNE with fewer points than the default perplexity."""

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import confusion_matrix

from ssa_jax import plots


def _check_png(path):
  with Image.open(path) as im:
    assert im.format == "PNG"
    px = np.asarray(im.convert("RGB"))
  assert px.shape[0] > 50 and px.shape[1] > 50
  assert px.std() > 1.0  # not a blank canvas
  return px


def test_row_normalize_matches_sklearn():
  rng = np.random.default_rng(0)
  y_true = rng.integers(0, 4, 200)
  y_pred = rng.integers(0, 4, 200)
  counts = confusion_matrix(y_true, y_pred, labels=range(4))
  ref = confusion_matrix(y_true, y_pred, labels=range(4), normalize="true")
  np.testing.assert_allclose(plots.row_normalize(counts), ref, rtol=1e-12)


def test_row_normalize_keeps_absent_class_at_zero_and_rejects_bad_shapes():
  out = plots.row_normalize(np.array([[2, 2], [0, 0]]))
  np.testing.assert_array_equal(out, [[0.5, 0.5], [0.0, 0.0]])
  with pytest.raises(ValueError, match="square"):
    plots.row_normalize(np.zeros((2, 3)))


def test_confusion_png(tmp_path):
  path = plots.plot_confusion(np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]]), ["neu", "hap", "ang"],
                              tmp_path / "confusion.png")
  _check_png(path)
  with pytest.raises(ValueError, match="class names"):
    plots.plot_confusion(np.eye(3), ["a", "b"], tmp_path / "bad.png")


def test_attention_png(tmp_path):
  rng = np.random.default_rng(1)
  static = rng.normal(size=(120, 10))
  a = rng.random(60)
  path = plots.plot_attention(static, {"alpha_em": a / a.sum(), "alpha_sp": a[::-1] / a.sum()},
                              tmp_path / "attention.png", title="SSA")
  _check_png(path)
  with pytest.raises(ValueError, match="no attention"):
    plots.plot_attention(static, {}, tmp_path / "x.png")


def test_tsne_few_points_separates_two_blobs(tmp_path):
  rng = np.random.default_rng(2)
  x = np.concatenate([rng.normal(0, 0.1, (6, 8)), rng.normal(10, 0.1, (6, 8))])
  labels = np.repeat([0, 1], 6)
  xy = plots.tsne_2d(x, seed=0)  # 12 points < default perplexity 30
  assert xy.shape == (12, 2)
  c0, c1 = xy[:6].mean(0), xy[6:].mean(0)
  # Every point is closer to its own blob's centre than to the other's.
  d_own = np.linalg.norm(xy - np.where(labels[:, None] == 0, c0, c1), axis=1)
  d_other = np.linalg.norm(xy - np.where(labels[:, None] == 0, c1, c0), axis=1)
  assert np.all(d_own < d_other)
  _check_png(plots.plot_tsne(x, labels, ["neu", "hap"], tmp_path / "tsne.png"))
  assert plots.tsne_2d(x[:2]).shape == (2, 2)
  assert plots.tsne_2d(x[:1]).shape == (1, 2)
  with pytest.raises(ValueError, match="labels"):
    plots.plot_tsne(x, labels[:3], ["neu", "hap"], tmp_path / "bad.png")
