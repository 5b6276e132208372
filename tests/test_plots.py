"""The figure functions on plain arrays: what each figure shows (the confusion cells' values and
colours against the matrix given, the attention curves against the alphas, one t-SNE point per
embedding), the PNGs they write; row normalisation against scikit-learn; t-SNE with fewer points
than the default perplexity."""

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


def test_confusion_figure_shows_the_row_normalised_matrix(tmp_path):
  counts = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]])
  classes = ["neu", "hap", "ang"]
  fig = plots.confusion_figure(counts, classes, title="t")
  ax = fig.axes[0]
  want = 100.0 * counts / counts.sum(1, keepdims=True)  # rows: true class
  # the colour image is the percent matrix, on a fixed 0-100 scale
  np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), want, rtol=1e-12)
  assert ax.images[0].get_clim() == (0.0, 100.0)
  # one text per cell at (column = prediction, row = truth), its value to 0.1 %
  cells = {(int(round(t.get_position()[1])), int(round(t.get_position()[0]))): t.get_text()
           for t in ax.texts}
  assert cells == {(i, j): f"{want[i, j]:.1f}%" for i in range(3) for j in range(3)}
  assert [t.get_text() for t in ax.get_xticklabels()] == classes
  assert [t.get_text() for t in ax.get_yticklabels()] == ["neu (n=6)", "hap (n=6)", "ang (n=4)"]
  path = plots.plot_confusion(counts, classes, tmp_path / "confusion.png")
  _check_png(path)
  with pytest.raises(ValueError, match="class names"):
    plots.plot_confusion(np.eye(3), ["a", "b"], tmp_path / "bad.png")


def test_attention_figure_draws_the_alphas(tmp_path):
  rng = np.random.default_rng(1)
  static = rng.normal(size=(120, 10))
  a = rng.random(60)
  alphas = {"alpha_em": a / a.sum(), "alpha_sp": a[::-1] / a.sum()}
  fig = plots.attention_figure(static, alphas, hop_seconds=0.01, title="SSA",
                               boundaries_s=[0.6])
  ax_spec, ax_att = fig.axes[:2]
  curves = [line for line in ax_att.lines if line.get_label() in alphas]
  assert [c.get_label() for c in curves] == ["alpha_em", "alpha_sp"]
  for c in curves:
    np.testing.assert_array_equal(c.get_ydata(), alphas[c.get_label()])
    # 60 pooled frames over 1.2 s: centres at 10 ms, 30 ms, ...
    np.testing.assert_allclose(c.get_xdata(), (np.arange(60) + 0.5) * 0.02)
  np.testing.assert_array_equal(np.asarray(ax_spec.images[0].get_array()), static.T)
  dashed = [line for line in ax_att.lines if line.get_linestyle() == "--"]
  assert len(dashed) == 1 and np.all(np.asarray(dashed[0].get_xdata()) == 0.6)
  path = plots.plot_attention(static, alphas, tmp_path / "attention.png", title="SSA")
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
  fig = plots.tsne_figure(x, labels, ["neu", "hap"], seed=0)
  ax = fig.axes[0]
  # one scatter per class, one point per embedding, at tsne_2d's coordinates
  assert [c.get_label() for c in ax.collections] == ["neu (6)", "hap (6)"]
  np.testing.assert_allclose(np.concatenate([c.get_offsets() for c in ax.collections]), xy)
  _check_png(plots.plot_tsne(x, labels, ["neu", "hap"], tmp_path / "tsne.png"))
  assert plots.tsne_2d(x[:2]).shape == (2, 2)
  assert plots.tsne_2d(x[:1]).shape == (1, 2)
  with pytest.raises(ValueError, match="labels"):
    plots.plot_tsne(x, labels[:3], ["neu", "hap"], tmp_path / "bad.png")
