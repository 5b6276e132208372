"""The one fold pipeline (ssa_jax/fold.py): prepare_fold's split, statistics and arrays, the
validation metrics, and bin.evaluate's numbers (evaluate.evaluate_fold) equal to training's
result.json through the same code."""

import json
import os

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from conftest import fake_dataset, tiny_config
from ssa_jax import evaluate, features, inference, splits, train
from ssa_jax import fold as fold_lib


def test_prepare_fold_split_statistics_and_arrays():
  ds = fake_dataset()
  cfg = tiny_config()
  fd = fold_lib.prepare_fold(cfg, ds, 1)
  assert np.intersect1d(fd.train_utt, fd.valid_utt).size == 0
  assert len(fd.train_utt) + len(fd.valid_utt) == len(ds.labels)
  # Segments follow their utterances; valid_seg_utt indexes valid_utt.
  np.testing.assert_array_equal(fd.valid_utt[fd.valid_seg_utt], ds.seg_utt[fd.valid_seg])
  np.testing.assert_array_equal(fd.valid_labels, ds.labels[fd.valid_utt])
  np.testing.assert_array_equal(fd.valid["label"], ds.labels[ds.seg_utt[fd.valid_seg]])
  # Statistics from the training segments only, applied to both sides.
  seg_spk = np.asarray(ds.speaker_names)[ds.speakers[ds.seg_utt]]
  stats = features.fit_speaker_stats(ds.segments[fd.train_seg], ds.mask[fd.train_seg],
                                     seg_spk[fd.train_seg])
  np.testing.assert_allclose(fd.stats.mean, stats.mean, rtol=1e-6, atol=1e-6)
  ref = features.normalize(ds.segments[fd.valid_seg], ds.mask[fd.valid_seg],
                           seg_spk[fd.valid_seg], stats)
  np.testing.assert_allclose(fd.valid["x"], ref, rtol=1e-5, atol=1e-5)
  assert fd.train["x"].shape == (len(fd.train_seg),) + ds.segments.shape[1:]
  assert sum(fd.counts["valid_segments"].values()) == len(fd.valid_seg)
  # Given statistics are used as they are; the training side can be skipped.
  shifted = features.SpeakerStats(**{**fd.stats.__dict__, "mean": fd.stats.mean + 1.0})
  other = fold_lib.prepare_fold(cfg, ds, 1, stats=shifted, with_train=False)
  assert other.train is None and other.stats is shifted
  assert not np.allclose(other.valid["x"], fd.valid["x"])


@pytest.mark.parametrize("fold,split,match", [(10, "random", "fold 10 is out of range"),
                                              (0, "nope", "train.split must be one of")])
def test_prepare_fold_bad_fold_is_one_line(fold, split, match):
  cfg = tiny_config()
  cfg.train.split = split
  with pytest.raises(ValueError, match=match) as e:
    fold_lib.prepare_fold(cfg, fake_dataset(), fold)
  assert "\n" not in str(e.value)


def test_validation_metrics_pool_segments_and_match_sklearn():
  ds = fake_dataset()
  fd = fold_lib.prepare_fold(tiny_config(), ds, 0, with_train=False)
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.ones(4), size=len(fd.valid_seg))
  m = inference.validation_metrics({"probs": probs, "speaker_mass": np.full(len(probs), 0.25),
                                   "speaker_pred": fd.valid["speaker"]}, fd, "mean")
  pooled = np.zeros((len(fd.valid_utt), 4))
  np.add.at(pooled, fd.valid_seg_utt, probs)  # mean pooling: the argmax of the sum
  pred = pooled.argmax(-1)
  assert m["uar"] == pytest.approx(balanced_accuracy_score(fd.valid_labels, pred), abs=1e-12)
  assert m["wa"] == pytest.approx(np.mean(pred == fd.valid_labels), abs=1e-12)
  assert np.sum(m["confusion"]) == len(fd.valid_utt)
  seg_uar = balanced_accuracy_score(fd.valid["label"], probs.argmax(-1))
  assert m["segment_uar"] == pytest.approx(seg_uar, abs=1e-12)
  assert m["speaker_mass"] == 0.25 and m["speaker_accuracy"] == 1.0
  # The collapse figures, from the predictions themselves (not the confusion matrix).
  assert m["largest_predicted_share"] == pytest.approx(np.bincount(pred).max() / len(pred),
                                                       abs=1e-12)
  recalls = [np.mean(pred[fd.valid_labels == c] == c) for c in np.unique(fd.valid_labels)]
  assert m["worst_class_recall"] == pytest.approx(min(recalls), abs=1e-12)
  assert "speaker_mass" not in inference.validation_metrics({"probs": probs}, fd, "max")


def test_evaluate_fold_equals_result_json_through_the_shared_code(tmp_path, monkeypatch):
  ds = fake_dataset()
  cfg = tiny_config()
  calls = []
  real = inference.evaluate

  def spy(*args, **kwargs):
    metrics, outputs = real(*args, **kwargs)
    calls.append(metrics)
    return metrics, outputs
  monkeypatch.setattr(inference, "evaluate", spy)
  result = train.train_and_evaluate(cfg, str(tmp_path / "run"), 0, dataset=ds)
  assert len(calls) == cfg.train.epochs  # training evaluated each epoch through inference.evaluate
  fold_dir = str(tmp_path / "run" / "fold0")
  report = evaluate.evaluate_fold(fold_dir, dataset=ds, out_dir=str(tmp_path / "figures"))
  assert len(calls) == cfg.train.epochs + 1  # and so did the evaluation
  assert report["step"] == result["best_step"]
  assert report["confusion"] == result["confusion"]
  assert report["uar"] == result["uar"] and report["wa"] == result["wa"]
  assert report["segment_uar"] == result["segment_uar"]
  assert report["recalls"] == result["recalls"]
  # The collapse figures reach result.json and every metrics.jsonl line (train.py copies them).
  cm = np.asarray(result["confusion"])
  assert result["largest_predicted_share"] == pytest.approx(cm.sum(0).max() / cm.sum(), abs=1e-12)
  assert result["worst_class_recall"] == pytest.approx(min(np.diag(cm) / cm.sum(1)), abs=1e-12)
  lines = [json.loads(l) for l in open(os.path.join(fold_dir, "metrics.jsonl"))]
  assert all("valid_largest_predicted_share" in l and "valid_worst_class_recall" in l
             for l in lines if "valid_uar" in l)
  assert report["speaker_mass"] == pytest.approx(result["speaker_mass"], abs=1e-6)
  saved = json.load(open(tmp_path / "figures" / "evaluation.json"))
  assert saved["confusion"] == result["confusion"]
  assert sorted(os.listdir(tmp_path / "figures")) == [
      f"attention_{report['attention_utterance']}.png", "confusion.png", "evaluation.json",
      "tsne.png"]


def heldout_dataset(test_phrase="p3", per_cell=5):
  """fake_dataset with subsets: phrase `test_phrase` of every (speaker, class) held out."""
  ds = fake_dataset(per_cell=per_cell)
  ds.subsets = tuple("test" if p == test_phrase else "" for p in ds.phrases)
  return ds


def test_prepare_fold_inner_selection_fits_statistics_on_the_trained_part_only():
  ds = heldout_dataset()
  cfg = tiny_config(overrides={"train.split": "heldout", "train.selection": "inner"})
  fd = fold_lib.prepare_fold(cfg, ds, 0)
  test = np.flatnonzero(np.asarray(ds.subsets) == "test")
  np.testing.assert_array_equal(fd.valid_utt, test)
  # train_utt + inner_utt = the non-test utterances, disjoint; no test utterance in either.
  assert np.intersect1d(fd.train_utt, fd.inner_utt).size == 0
  np.testing.assert_array_equal(np.sort(np.concatenate([fd.train_utt, fd.inner_utt])),
                                np.setdiff1d(np.arange(len(ds.labels)), test))
  # The split is splits.inner_split's; segments follow utterances.
  np.testing.assert_array_equal(fd.inner_utt, splits.inner_split(
      ds, np.setdiff1d(np.arange(len(ds.labels)), test), 0, 0.2, 0)[1])
  np.testing.assert_array_equal(fd.inner_utt[fd.inner_seg_utt], ds.seg_utt[fd.inner_seg])
  np.testing.assert_array_equal(fd.inner_labels, ds.labels[fd.inner_utt])
  # Statistics of the trained-on segments only (not inner, not test), applied to all three.
  seg_spk = np.asarray(ds.speaker_names)[ds.speakers[ds.seg_utt]]
  stats = features.fit_speaker_stats(ds.segments[fd.train_seg], ds.mask[fd.train_seg],
                                     seg_spk[fd.train_seg])
  np.testing.assert_allclose(fd.stats.mean, stats.mean, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(fd.stats.std, stats.std, rtol=1e-6, atol=1e-6)
  for arrays, seg in ((fd.inner, fd.inner_seg), (fd.valid, fd.valid_seg)):
    ref = features.normalize(ds.segments[seg], ds.mask[seg], seg_spk[seg], stats)
    np.testing.assert_allclose(arrays["x"], ref, rtol=1e-5, atol=1e-5)
  assert sum(fd.counts["inner_utterances"].values()) == len(fd.inner_utt)
  assert sum(fd.counts["inner_segments"].values()) == len(fd.inner_seg)
  assert sum(fd.counts["train_utterances"].values()) == len(fd.train_utt)
  # inner_view scores the inner split with the validation code.
  view = fold_lib.inner_view(fd)
  probs = np.eye(4)[view.valid["label"]]  # a perfect model on the inner segments
  assert inference.validation_metrics({"probs": probs}, view, "max")["uar"] == 1.0
  assert np.sum(inference.validation_metrics({"probs": probs}, view, "max")["confusion"]) == len(
      fd.inner_utt)
  # Without inner selection: no inner split, and the statistics see all training utterances.
  plain = fold_lib.prepare_fold(tiny_config(overrides={"train.split": "heldout"}), ds, 0)
  assert plain.inner_utt is None and "inner_utterances" not in plain.counts
  assert len(plain.train_utt) == len(fd.train_utt) + len(fd.inner_utt)
  with pytest.raises(ValueError, match="no inner validation split"):
    fold_lib.inner_view(plain)


@pytest.mark.parametrize("overrides,fold,match", [
    ({"train.split": "heldout"}, 1, "fold 1 is out of range: the heldout split has folds 0..0"),
    ({"train.selection": "best"}, 0, "train.selection must be one of"),
    ({"train.selection": "inner", "train.inner_fraction": 1.0}, 0, "train.inner_fraction must"),
])
def test_check_fold_selection_and_heldout_errors_are_one_line(overrides, fold, match):
  cfg = tiny_config(overrides=overrides)
  with pytest.raises(ValueError, match=match) as e:
    fold_lib.prepare_fold(cfg, heldout_dataset(), fold)
  assert "\n" not in str(e.value)


def test_heldout_without_subsets_is_one_line():
  cfg = tiny_config(overrides={"train.split": "heldout"})
  with pytest.raises(ValueError, match="needs the dataset's subsets") as e:
    fold_lib.prepare_fold(cfg, fake_dataset(), 0)
  assert "\n" not in str(e.value)
