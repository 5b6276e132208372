"""Model selection on an inner split (`train.selection="inner"`) with the held-out split: the test
set is scored once, at the selected epoch's checkpoint, and never influences training or
selection; a run killed before that scoring finishes on rerun. Proportional batches through the
real loop."""

import json
import math
import os

import numpy as np
import pytest

from conftest import fake_dataset, tiny_config
from ssa_jax import checkpointing, inference, parallel, rundir, train
from ssa_jax import fold as fold_lib

EPOCHS = 6


class Killed(Exception):
  """Stands for SIGKILL."""


def _dataset(rotate_test_labels=False):
  """fake_dataset with phrase p3 of every (speaker, class) held out as the test subset;
  optionally the test utterances' labels rotated (c -> c + 1 mod 4), features unchanged."""
  ds = fake_dataset(per_cell=5)
  test = np.array([p == "p3" for p in ds.phrases])
  ds.subsets = tuple(np.where(test, "test", ""))
  if rotate_test_labels:
    ds.labels = np.where(test, (ds.labels + 1) % 4, ds.labels).astype(np.int32)
  return ds


def _config():
  """Tiny SSA-CRNN without the Eq. 8 head and a larger step: it leaves chance within a few
  epochs (the tiny SSA-CRNN-r stays at chance UAR for 8 epochs here), so the selected epoch is
  neither the first nor the last and the checkpoints' predictions differ (measured: best epoch
  4 of 6, test UAR 0.58). Batches of 6: proportional batches need no multiple of K."""
  return tiny_config("ssa_crnn", "none", {
      "train.split": "heldout", "train.selection": "inner", "train.batch_sampling": "proportional",
      "train.epochs": EPOCHS, "train.learning_rate": 1e-2, "train.batch_size": 6,
      "train.eval_batch_size": 8})


def _read(fold_dir):
  with open(os.path.join(fold_dir, "result.json")) as f:
    result = json.load(f)
  for k in ("timing", "config"):
    result.pop(k)
  with open(os.path.join(fold_dir, "metrics.jsonl")) as f:
    lines = [{k: v for k, v in json.loads(l).items() if k != "elapsed"} for l in f]
  return result, lines


def _spy_evaluate(monkeypatch):
  """Records the utterances each inference.evaluate call scores."""
  calls, real = [], inference.evaluate

  def spy(eval_fn, variables, fd, *args, **kwargs):
    calls.append(np.array(fd.valid_utt))
    return real(eval_fn, variables, fd, *args, **kwargs)
  monkeypatch.setattr(inference, "evaluate", spy)
  return calls


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """One uninterrupted run, with the sets each evaluation scored."""
  mp = pytest.MonkeyPatch()
  calls = _spy_evaluate(mp)
  try:
    workdir = str(tmp_path_factory.mktemp("reference"))
    out = train.train_and_evaluate(_config(), workdir, 0, dataset=_dataset())
  finally:
    mp.undo()
  fold_dir = os.path.join(workdir, "fold0")
  return {"out": out, "fold_dir": fold_dir, "calls": calls}


def test_inner_selection_scores_the_test_set_once_at_the_selected_checkpoint(reference):
  ds, cfg = _dataset(), _config()
  result, lines = _read(reference["fold_dir"])
  fd = fold_lib.prepare_fold(cfg, ds, 0)
  test = np.flatnonzero(np.asarray(ds.subsets) == "test")
  # Each epoch scored the inner split; the test set was scored once, after the last epoch.
  calls = reference["calls"]
  assert len(calls) == EPOCHS + 1
  for c in calls[:-1]:
    np.testing.assert_array_equal(c, fd.inner_utt)
  np.testing.assert_array_equal(calls[-1], test)
  # metrics.jsonl: the inner split's figures, no validation/test figures; proportional batches.
  assert [l["epoch"] for l in lines] == list(range(1, EPOCHS + 1))
  assert all("inner_uar" in l and "inner_speaker_mass" in l and not any(
      k.startswith("valid_") for k in l) for l in lines)
  assert lines[0]["step"] == math.ceil(len(fd.train_seg) / 6)
  # The selected epoch is the best inner UAR (the earliest on ties).
  inner_uars = [l["inner_uar"] for l in lines]
  assert result["best_epoch"] == 1 + int(np.argmax(inner_uars))
  best_line = lines[result["best_epoch"] - 1]
  assert result["best_step"] == best_line["step"]
  assert result["selection"] == "inner"
  assert result["inner"]["uar"] == best_line["inner_uar"]
  assert result["inner"]["segment_uar"] == best_line["inner_segment_uar"]
  assert np.sum(result["inner"]["confusion"]) == len(fd.inner_utt)
  # The reported figures are the test set's: an independent evaluation of the best checkpoint.
  best = checkpointing.load_best(reference["fold_dir"])
  assert best["step"] == result["best_step"]
  cfg.model.num_speakers = len(ds.speaker_names)
  evaluation_fd = fold_lib.prepare_fold(cfg, ds, 0, stats=best["stats"], with_train=False)
  mesh = parallel.make_mesh()
  from ssa_jax import models  # pylint: disable=g-import-not-at-top
  eval_fn = inference.make_eval_step(models.build_model(cfg.model), mesh)
  independent, _ = inference.evaluate(eval_fn, best["variables"], evaluation_fd, "max", 8, mesh)
  assert np.sum(result["confusion"]) == len(test)
  assert result["confusion"] == independent["confusion"]
  for k in ("uar", "wa", "segment_uar", "recalls", "speaker_accuracy"):
    assert result[k] == independent[k], k
  assert result["speaker_mass"] == pytest.approx(independent["speaker_mass"], abs=1e-6)
  # Counts: the part trained on, the inner split and the test set.
  counts = result["counts"]
  assert sum(counts["valid_utterances"].values()) == len(test)
  assert sum(counts["inner_utterances"].values()) == len(fd.inner_utt)
  assert (sum(counts["train_utterances"].values()) + len(fd.inner_utt) + len(test)
          == len(ds.labels))
  assert rundir.FoldDir(reference["fold_dir"]).complete_result(cfg) is not None


def test_test_labels_change_only_the_scored_figures(reference, tmp_path):
  """Rotated test labels: the same training, selection and predictions (the confusion matrix's
  rows rotate with them), only the reported figures may change."""
  out = train.train_and_evaluate(_config(), str(tmp_path), 0,
                                 dataset=_dataset(rotate_test_labels=True))
  result, lines = _read(str(tmp_path / "fold0"))
  ref_result, ref_lines = _read(reference["fold_dir"])
  assert lines == ref_lines
  for k in ("best_epoch", "best_step", "inner", "epochs_run", "last_train_loss",
            "train_speaker_accuracy"):
    assert result[k] == ref_result[k], k
  for k in ("train_utterances", "train_segments", "inner_utterances", "inner_segments"):
    assert result["counts"][k] == ref_result["counts"][k]
  np.testing.assert_array_equal(np.roll(ref_result["confusion"], 1, axis=0), result["confusion"])
  assert out["speaker_accuracy"] == ref_result["speaker_accuracy"]  # speakers did not change


def test_killed_before_the_test_scoring_finishes_on_rerun(reference, tmp_path, monkeypatch):
  cfg = _config()
  fold_dir = str(tmp_path / "fold0")

  def killed(*args, **kwargs):
    raise Killed("killed after the last epoch, before the test scoring")
  monkeypatch.setattr(train, "score_selected", killed)
  with pytest.raises(Killed):
    train.train_and_evaluate(cfg, str(tmp_path), 0, dataset=_dataset())
  assert not os.path.exists(os.path.join(fold_dir, "result.json"))
  assert rundir.FoldDir(fold_dir).complete_result(cfg) is None
  # A result.json without the test scoring (or of the other selection) is not complete either.
  with open(os.path.join(reference["fold_dir"], "result.json")) as f:
    ref = json.load(f)
  os.makedirs(tmp_path / "partial", exist_ok=True)
  with open(tmp_path / "partial" / "result.json", "w") as f:
    json.dump({k: v for k, v in ref.items() if k != "inner"}, f)
  assert rundir.FoldDir(str(tmp_path / "partial")).complete_result(cfg) is None
  valid_cfg = _config()
  valid_cfg.train.selection = "valid"
  assert rundir.FoldDir(reference["fold_dir"]).complete_result(valid_cfg) is None

  monkeypatch.undo()
  calls = _spy_evaluate(monkeypatch)
  train.train_and_evaluate(cfg, str(tmp_path), 0, dataset=_dataset())
  assert len(calls) == 1  # no epoch retrained or re-evaluated: only the test scoring
  assert _read(fold_dir) == _read(reference["fold_dir"])
  assert rundir.FoldDir(fold_dir).complete_result(cfg) is not None
