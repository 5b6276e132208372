"""Preemption: a fold killed inside an epoch resumes at the checkpointed batch (the data order
of an epoch is a pure function of (seed, fold, epoch)) and ends with the result.json and
metrics.jsonl of an uninterrupted run; orbax tracks the best step; when a timed checkpoint is
due."""

import json
import os

import pytest

from conftest import fake_dataset, tiny_config
from ssa_jax import checkpointing, fold as fold_lib, input_pipeline, train

EVERY = 3  # train.checkpoint_every_steps of the interrupted runs
REAL_BATCHES = input_pipeline.train_batches


class Killed(Exception):
  """Stands for SIGKILL: raised before the batch it names is trained."""


def _config():
  cfg = tiny_config()
  cfg.train.epochs = 2
  cfg.train.checkpoint_every_minutes = 0.0  # only the deterministic steps-based checkpoints
  cfg.train.checkpoint_every_steps = EVERY
  return cfg


def _read(workdir):
  fold_dir = os.path.join(workdir, "fold0")
  with open(os.path.join(fold_dir, "result.json")) as f:
    result = json.load(f)
  for k in ("timing", "config"):
    result.pop(k)
  with open(os.path.join(fold_dir, "metrics.jsonl")) as f:
    lines = [json.loads(l) for l in f]
  return result, [{k: v for k, v in l.items() if k != "elapsed"} for l in lines]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted run without mid-epoch checkpoints, and the number of batches per epoch."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  cfg = _config()
  cfg.train.checkpoint_every_steps = 0
  train.train_and_evaluate(cfg, workdir, 0, dataset=fake_dataset())
  fd = fold_lib.prepare_fold(cfg, fake_dataset(), 0)
  num_batches = input_pipeline.batches_per_epoch(fd.train["label"], 4, 8)
  return {"workdir": workdir, "num_batches": num_batches}


def _kill_before(monkeypatch, kill_epoch, kill_batch, calls):
  real = REAL_BATCHES

  def batches(*args, epoch, start_batch=0, **kwargs):
    calls.append((epoch, start_batch))
    for b, batch in enumerate(real(*args, epoch=epoch, start_batch=start_batch, **kwargs),
                              start=start_batch):
      if (epoch, b) == (kill_epoch, kill_batch):
        raise Killed(f"killed before batch {b} of epoch {epoch}")
      yield batch
  monkeypatch.setattr(train.input_pipeline, "train_batches", batches)


@pytest.mark.parametrize("lost", [0, 2], ids=["at_a_checkpointed_batch", "between_checkpoints"])
def test_killed_mid_epoch_resumes_to_the_same_result(reference, tmp_path, monkeypatch, lost):
  nb = reference["num_batches"]
  assert nb >= 2 * EVERY  # the second epoch holds a mid-epoch checkpoint and a later batch
  # Kill in the second epoch, `lost` steps after its first mid-epoch checkpoint.
  saved_step = next(s for s in range(nb + 1, 2 * nb) if s % EVERY == 0)
  kill_batch = saved_step - nb + lost
  assert 0 < kill_batch < nb
  workdir = str(tmp_path)
  calls = []
  _kill_before(monkeypatch, 1, kill_batch, calls)
  with pytest.raises(Killed):
    train.train_and_evaluate(_config(), workdir, 0, dataset=fake_dataset())
  manager = checkpointing.checkpoint_manager(os.path.join(workdir, "fold0", "checkpoints"))
  assert manager.latest_step() == saved_step
  _, meta = checkpointing.restore_latest(manager, None)
  manager.close()
  assert (meta["epoch"], meta["batch"]) == (1, saved_step - nb)
  assert meta["sums"]["count"] == saved_step - nb and meta["sums"]["loss"] > 0

  calls.clear()
  _kill_before(monkeypatch, -1, -1, calls)  # no kill: resume and finish
  train.train_and_evaluate(_config(), workdir, 0, dataset=fake_dataset())
  assert (1, saved_step - nb) in calls  # resumed at the checkpointed batch, not the epoch start
  assert (1, 0) not in calls
  result, lines = _read(workdir)
  ref_result, ref_lines = _read(reference["workdir"])
  assert result == ref_result  # bit for bit: same batches, same state, same metric sums
  assert lines == ref_lines
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "fold0", "checkpoints"))
                 if d.isdigit())
  assert steps == sorted({result["best_step"], 2 * nb})  # mid-epoch checkpoints are gone
  assert checkpointing.load_best(os.path.join(workdir, "fold0"))["step"] == result["best_step"]


def test_checkpoint_due():
  assert train.checkpoint_due(6, 0.0, 3, 0.0) and not train.checkpoint_due(7, 0.0, 3, 0.0)
  assert train.checkpoint_due(7, 600.0, 0, 10.0) and not train.checkpoint_due(7, 599.0, 0, 10.0)
  assert not train.checkpoint_due(6, 1e9, 0, 0.0)  # both off: epoch ends only
