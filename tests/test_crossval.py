"""ssa_jax/crossval.py without training: the per-fold progress lines and their time estimate over
all the systems of a comparison, the shared dataset, the duration format."""

import json
import os

import pytest

from ssa_jax import crossval, rundir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(REPO, "configs", "quickstart.py")


def _result(fold, epochs, uar=0.5):
  return {"uar": uar, "wa": uar, "segment_uar": uar, "best_epoch": 1, "epochs_run": epochs,
          "fold": fold, "confusion": [[2, 0, 0, 0], [0, 1, 1, 0], [0, 0, 2, 0], [1, 0, 0, 1]],
          "classes": ["neu", "hap", "ang", "sad"]}


def _write(fold_dir, result):
  os.makedirs(fold_dir, exist_ok=True)
  with open(os.path.join(fold_dir, "result.json"), "w") as f:
    json.dump(result, f)


def test_progress_lines_and_eta_over_all_systems(tmp_path, caplog):
  overrides = {"train.num_folds": 3, "train.epochs": 2}
  configs = [crossval.load_config(f"{QUICKSTART}:acrnn", overrides),
             crossval.load_config(QUICKSTART, overrides)]
  _write(tmp_path / configs[0].name / "fold1", _result(1, 2, 0.7))  # complete: not trained
  now = [1000.0]
  seconds = {("quickstart_acrnn", 0): 60.0, ("quickstart_acrnn", 2): 120.0,
             ("quickstart_ssa_crnn_r", 0): 90.0, ("quickstart_ssa_crnn_r", 2): 30.0}
  prepared = []

  def fake_train(config, workdir, fold, dataset=None):
    assert dataset == "the dataset"
    if (config.name, fold) == ("quickstart_ssa_crnn_r", 1):
      now[0] += 500.0  # a failure is not timed
      raise FloatingPointError("non-finite loss")
    now[0] += seconds[(config.name, fold)]
    r = _result(fold, 2, 0.6 + fold / 100)
    _write(os.path.join(workdir, f"fold{fold}"), r)
    return r

  reported = []
  with caplog.at_level("ERROR", logger="ssa_jax.crossval"):
    summaries, errors = crossval.run_compare(
        configs, str(tmp_path), None, train_fn=fake_train,
        prepare_fn=lambda c: prepared.append(c.name) or "the dataset", clock=lambda: now[0],
        report=reported.append)
  assert prepared == ["quickstart_acrnn"]  # one dataset for both systems (same data config)
  assert len(errors) == 1 and "fold 1" in errors[0] and "non-finite" in caplog.text
  out = "\n".join(reported)
  lines = [l for l in reported if "trained in" in l]
  # 5 folds to train (fold 1 of ACRNN is complete). Left after each, and the mean time so far:
  # 60 s -> 4 left x 60 = 240 s; 120 s -> 3 x 90 = 270 s; 90 s -> 2 x 90 = 180 s;
  # the failure -> 1 left; 30 s -> none left.
  assert [l.split(":")[0] for l in lines] == ["[ACRNN] fold 0", "[ACRNN] fold 2", "[SSA-CRNN-r] fold 0",
                                              "[SSA-CRNN-r] fold 2"]
  assert lines[0].startswith("[ACRNN] fold 0: UAR 60.00 %")
  assert lines[0].endswith("trained in 1 min 00 s; 4 folds left, about 4 min 00 s")
  assert lines[1].endswith("trained in 2 min 00 s; 3 folds left, about 4 min 30 s")
  assert lines[2].endswith("trained in 1 min 30 s; 2 folds left, about 3 min 00 s")
  assert lines[3].endswith("trained in 30 s; no fold left")
  assert "[ACRNN] fold 1: complete" in out and "not retrained: UAR 70.00 %" in out
  assert [s["num_folds"] for s in summaries] == [3, 2]
  compare = json.load(open(tmp_path / "compare.json"))
  assert compare["paired"][0]["folds"] == [0, 2]  # SSA-CRNN-r's fold 1 failed: not paired


def test_single_system_counts_only_its_unfinished_folds(tmp_path):
  config = crossval.load_config(QUICKSTART, {"train.num_folds": 4, "train.epochs": 1})
  for k in (0, 1):
    _write(tmp_path / f"fold{k}", _result(k, 1))
  now = [0.0]

  def fake_train(config, workdir, fold, dataset=None):
    now[0] += 10.0
    return _result(fold, 1)

  reported = []
  crossval.run_crossval(config, str(tmp_path), None, train_fn=fake_train, prepare_fn=lambda c: None,
                        clock=lambda: now[0], report=reported.append)
  lines = [l for l in reported if "trained in" in l]
  assert [l.split(";")[-1].strip() for l in lines] == ["1 fold left, about 10 s", "no fold left"]


def test_duration_format_and_eta():
  assert crossval.format_duration(42.4) == "42 s"
  assert crossval.format_duration(185) == "3 min 05 s"
  assert crossval.format_duration(7620) == "2 h 07 min"
  assert crossval.eta_seconds([10.0, 20.0], 3) == pytest.approx(45.0)
  assert crossval.eta_seconds([], 3) is None
  assert crossval.eta_seconds([10.0], 0) == 0.0
  p = crossval.Progress(2)
  assert p.describe() == "2 folds left"  # nothing timed yet: no estimate
  p.finished(None)
  assert p.describe() == "1 fold left"
  p.finished(5.0)
  assert p.describe() == "no fold left"


def test_tabulate_runs_pairs_finished_folds_without_training(tmp_path):
  """--runs: finished run folders -> compare.md / compare.json, paired against the first, with
  the SSA speaker mass column; the numbers are summary.paired_test's on the matching folds."""
  from ssa_jax import summary
  cfg = {"name": "x", "model": {"name": "ssa_crnn"}, "train": {"constraint": "l1_sphere",
                                                              "valid_fraction": 0.2}}
  counts = {"train_utterances": {"a": 60}, "valid_utterances": {"a": 15}}
  ref_uar, new_uar = [0.80, 0.85, 0.78], [0.75, 0.84, 0.74]
  for name, uars in (("ref", ref_uar), ("new", new_uar)):
    for fold, u in enumerate(uars):
      _write(tmp_path / name / f"fold{fold}",
             {**_result(fold, 12, u), "split": "random", "corpus": "synthetic", "config": cfg,
              "counts": counts, "speaker_mass": 0.1 * (fold + 1)})
  (tmp_path / "new" / "fold9").mkdir()  # a fold folder without result.json is ignored
  out = crossval.tabulate_runs([f"{tmp_path / 'ref'}=Ref", str(tmp_path / "new")],
                               str(tmp_path / "table"))
  assert [s["system"] for s in out] == ["Ref", "SSA-CRNN-r (new)"]
  doc = json.loads((tmp_path / "table" / "compare.json").read_text())
  expected = summary.paired_test(new_uar, ref_uar, test_train_ratio=15 / 60)
  assert doc["paired"][0]["uar"]["p"] == pytest.approx(expected.p)
  assert doc["paired"][0]["uar"]["mean"] == pytest.approx(expected.mean)
  md = (tmp_path / "table" / "compare.md").read_text()
  assert "speaker mass" in md and "0.200 ±" in md  # mean of 0.1, 0.2, 0.3
  # The collapse figures of _result's confusion matrix: worst-class recall 1/2, predicted
  # classes 3, 1, 3, 1 of 8 utterances: largest share 3/8; identical systems: no difference.
  assert "| worst-class recall (%) | largest predicted-class share (%) |" in md
  assert doc["systems"][0]["metrics"]["largest_predicted_share"]["mean"] == pytest.approx(3 / 8)
  assert doc["paired"][0]["largest_predicted_share"]["mean"] == 0.0
  with pytest.raises(ValueError, match="no fold"):
    crossval.tabulate_runs([str(tmp_path / "new" / "fold9")], str(tmp_path / "t2"))
  with pytest.raises(ValueError, match="no such run folder"):
    crossval.tabulate_runs([str(tmp_path / "missing")], str(tmp_path / "t2"))


def test_complete_result_of_a_corrupt_file_warns_naming_it(tmp_path, caplog, capsys):
  (tmp_path / "result.json").write_text('{"uar": 0.5,', encoding="utf-8")  # cut off mid-write
  with caplog.at_level("WARNING", logger="ssa_jax.rundir"):
    assert rundir.FoldDir(str(tmp_path)).complete_result(config=None) is None
  assert len(caplog.records) == 1  # one warning, through logging only (the library never prints)
  assert str(tmp_path / "result.json") in caplog.text and "resumed" in caplog.text
  captured = capsys.readouterr()
  assert captured.out == "" and captured.err == ""


def test_linguistic_crossval_summary_uses_the_overlap_corrected_t(tmp_path):
  """run_crossval hands the split's num_folds to the summary, which needs it for the linguistic
  folds' overlapping validation windows (the results here carry no config)."""
  from ssa_jax import summary
  config = crossval.load_config(QUICKSTART, {"train.num_folds": 4, "train.epochs": 1,
                                             "train.split": "linguistic"})
  uars = [0.5, 0.6, 0.55, 0.7]
  s, _ = crossval.run_crossval(config, str(tmp_path), None, prepare_fn=lambda c: None,
                               train_fn=lambda c, w, fold, dataset=None: _result(fold, 1, uars[fold]))
  expected = summary.mean_ci(uars, overlap=summary.linguistic_overlap([0, 1, 2, 3], 4))
  assert s["statistics"]["method"] == "overlap-corrected t"
  assert s["metrics"]["uar"]["ci"] == pytest.approx(expected.half_width)
  assert "overlap-corrected t" in (tmp_path / "summary.md").read_text()
