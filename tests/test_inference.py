"""ssa_jax/inference.py: the one way a model runs in evaluation mode.

The posteriors `bin.predict` gets equal an independent, unjitted forward pass of each segment on
its own (so neither the batching nor the padding by a repeated segment changes them); the
batch-size rule; and the modules after training do not import the training code.
"""

from __future__ import annotations

import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import fake_dataset, tiny_config
from ssa_jax import fold as fold_lib
from ssa_jax import inference, parallel
from ssa_jax.models import build_model


def _model(name):
  cfg = tiny_config(name, overrides={"model.num_speakers": 3})
  model = build_model(cfg.model)
  x = np.zeros((2, 8, 4, 3), np.float32)
  variables = model.init(jax.random.PRNGKey(1), x, np.ones((2, 8), bool))
  return model, variables


def test_batch_rows_power_of_two_device_multiple_at_most_the_batch():
  assert [inference.batch_rows(n, 40) for n in (1, 2, 3, 5, 17, 33, 200)] == [1, 2, 4, 8, 32, 40, 40]
  assert inference.batch_rows(3, 40, num_devices=8) == 8
  assert inference.batch_rows(9, 40, num_devices=3) == 18
  assert inference.batch_rows(100, 24, num_devices=8) == 24


@pytest.mark.parametrize("name", ["acrnn", "ssa_crnn"])
def test_segment_posteriors_equal_each_segment_alone(name):
  """11 segments in batches of 8 (the last one padded with a repeat of segment 0), some padded
  frames: each row's posteriors are those of the segment run alone, outside jit."""
  model, variables = _model(name)
  rng = np.random.default_rng(0)
  segs = rng.normal(size=(11, 8, 4, 3)).astype(np.float32)
  mask = np.ones((11, 8), bool)
  mask[3, 5:] = False
  mask[10, 2:] = False
  segs[~mask] = 0.0
  probs = inference.segment_posteriors(model, variables, segs, mask, batch_size=8)
  assert probs.shape == (11, 4) and probs.dtype == np.float64
  alone = np.concatenate([
      np.asarray(jax.nn.softmax(model.apply(variables, segs[i:i + 1], mask[i:i + 1])[0]))
      for i in range(11)])
  np.testing.assert_allclose(probs, alone, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(probs.argmax(-1), alone.argmax(-1))
  with pytest.raises(ValueError, match="no segments"):
    inference.segment_posteriors(model, variables, segs[:0], mask[:0])
  with pytest.raises(ValueError, match=r"\(N, T, M, C\)"):
    inference.segment_posteriors(model, variables, segs[0], mask[0])


def test_evaluate_pads_the_last_batch_without_changing_the_outputs():
  """A fold's validation outputs in batches of 8 (last one padded) equal those in one batch
  holding every segment; the metrics come from them."""
  model, variables = _model("ssa_crnn")
  cfg = tiny_config("ssa_crnn")
  fd = fold_lib.prepare_fold(cfg, fake_dataset(), 0, with_train=False)
  n = len(fd.valid["label"])
  assert n % 8, "the test needs a padded last batch"
  mesh = parallel.make_mesh()
  eval_fn = inference.make_eval_step(model, mesh, aux_keys=("z_em",))
  metrics, outputs = inference.evaluate(eval_fn, variables, fd, "max", 8, mesh)
  whole = -(-n // 8) * 8
  one = inference.model_outputs(eval_fn, variables, fd.valid, whole, mesh)
  assert set(outputs) == {"probs", "speaker_mass", "speaker_pred", "z_em"}
  for k in outputs:
    assert outputs[k].shape[0] == n
    np.testing.assert_allclose(outputs[k], one[k], rtol=1e-5, atol=1e-6)
  assert metrics == inference.validation_metrics(outputs, fd, "max")
  assert np.sum(metrics["confusion"]) == len(fd.valid_utt)


def test_modules_after_training_do_not_import_train():
  code = ("import sys; import ssa_jax.predict, ssa_jax.plots, ssa_jax.crossval, "
          "ssa_jax.evaluate, ssa_jax.inference, ssa_jax.rundir; "
          "print(sorted(m for m in sys.modules if m in ('ssa_jax.train', 'optax')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]", out.stdout
