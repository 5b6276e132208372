"""ssa_jax/replicates.py and ssa_jax/cli/replicates.py without training: system specs and their errors, the
per-run configs, the draw-major order, resume, compare.json / compare.md after every draw (paired
differences against scipy.stats.ttest_rel), the power planning against the noncentral t's known
value and a Monte-Carlo simulation, and the command's one-line errors."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

from ssa_jax import crossval
from ssa_jax import replicates
from ssa_jax import summary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(REPO, "configs", "quickstart.py")
GLOBAL = {"data.synthetic.test_phrases": 2, "train.epochs": 2}
CLASSES = ["neu", "hap", "ang", "sad"]

# --------------------------------------------------------------------------------------------
# Specs


@pytest.mark.parametrize("text,config,overrides,offset,label", [
    ("configs/quickstart.py", "configs/quickstart.py", (), 0, None),
    ("configs/quickstart.py:acrnn_r=ACRNN-r", "configs/quickstart.py:acrnn_r", (), 0, "ACRNN-r"),
    ("configs/quickstart.py:acrnn_r@train.head_step=relative=ACRNN-r relative",
     "configs/quickstart.py:acrnn_r", (("train.head_step", "relative"),), 0, "ACRNN-r relative"),
    ("c.py@seed_offset=1000,train.epochs=8=SSA, 8 epochs, a=b", "c.py",
     (("train.epochs", "8"),), 1000, "SSA, 8 epochs, a=b"),  # the label is the rest of the word
    ("c.py@model.conv_features=(8,16,16),train.head_step='a=b,c'", "c.py",
     (("model.conv_features", "(8,16,16)"), ("train.head_step", "'a=b,c'")), 0, None),
    ("c.py:acrnn=A=B", "c.py:acrnn", (), 0, "A=B"),
])
def test_parse_spec(text, config, overrides, offset, label):
  spec = replicates.parse_spec(text)
  assert (spec.config, spec.overrides, spec.seed_offset, spec.label) == (config, overrides,
                                                                          offset, label)


@pytest.mark.parametrize("text,words", [
    ("", "empty system spec"),
    ("@train.epochs=2", "no config file"),
    ("=label", "no config file"),
    ("c.py@", "expected KEY=VALUE"),
    ("c.py@train.epochs", "expected KEY=VALUE"),
    ("c.py@train.epochs=", "no value for 'train.epochs'"),
    ("c.py@train.epochs=2,", "expected KEY=VALUE"),
    ("c.py@1train=2", "expected KEY=VALUE"),
    ("c.py@model.conv_features=(8,16", "unclosed"),
    ("c.py@model.conv_features=8,16)", "expected KEY=VALUE"),
    ("c.py@a=(8]", "unbalanced"),
    ("c.py@a=1,a=2", "'a' given twice"),
    ("c.py@seed_offset=-1", "seed_offset must be an integer >= 0"),
    ("c.py@seed_offset=x", "seed_offset must be an integer >= 0"),
    ("c.py=  ", "empty label"),
    ("c.py@a=1=", "empty label"),
])
def test_parse_spec_errors(text, words):
  with pytest.raises(ValueError, match=re.escape(words)):
    replicates.parse_spec(text)


def test_load_system_applies_global_then_own_overrides_by_field_type():
  spec = (f"{QUICKSTART}:acrnn_r@train.epochs=3,model.conv_features=(4,4,4,4,4,4),"
          f"train.learning_rate=5e-4,train.head_step=relative,data.synthetic.test_speakers=1,"
          f"seed_offset=7")
  s = replicates.load_system(spec, GLOBAL)
  c = s.config
  assert c.train.epochs == 3  # the system's own override wins over the global one
  assert c.data.synthetic.test_phrases == 2  # the global one applies
  assert c.model.conv_features == (4, 4, 4, 4, 4, 4)
  assert c.train.learning_rate == pytest.approx(5e-4) and c.train.head_step == "relative"
  assert s.seed_offset == 7 and c.model.name == "acrnn"
  assert s.label == ("ACRNN-r [train.epochs=3, model.conv_features=(4,4,4,4,4,4), "
                     "train.learning_rate=5e-4, train.head_step=relative, "
                     "data.synthetic.test_speakers=1, seed_offset=7]")
  other = replicates.load_system(f"{QUICKSTART}:acrnn=Plain", GLOBAL)
  assert other.label == "Plain" and other.config.train.epochs == 2  # overrides are per system
  assert other.config.train.head_step == "adam"
  # The protocol's own values may be restated; other values and the runner's seeds are refused.
  ok = replicates.load_system(f"{QUICKSTART}@train.split=heldout,train.selection=inner", GLOBAL)
  assert ok.config.train.split == "heldout"


@pytest.mark.parametrize("spec,overrides,words", [
    ("{q}@train.split=random", GLOBAL, "needs train.split=heldout, got 'random'"),
    ("{q}@train.selection=valid", GLOBAL, "needs train.selection=inner"),
    ("{q}", {**GLOBAL, "train.split": "loso"}, "--config overrides: the replicate protocol"),
    ("{q}@seed=3", GLOBAL, "seed is set by the runner"),
    ("{q}", {**GLOBAL, "data.synthetic.seed": 4}, "data.synthetic.seed is set by the runner"),
    ("{q}@train.nosuch=1", GLOBAL, "no config field 'train.nosuch'"),
    ("{q}@train.epochs=abc", GLOBAL, "train.epochs='abc'"),
    ("{q}@train.epochs=2.5", GLOBAL, "train.epochs='2.5'"),
    ("{q}@data.synthetic=1", GLOBAL, "is a section"),
    ("{q}.missing", GLOBAL, "config file not found"),
])
def test_load_system_errors(spec, overrides, words):
  with pytest.raises(ValueError) as e:
    replicates.load_system(spec.format(q=QUICKSTART), overrides)
  assert words in str(e.value) and "\n" not in str(e.value)


def test_a_spec_names_a_packaged_config_from_any_folder(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # no configs/ here: the name is ssa_jax/configs/quickstart.py
  by_name = replicates.load_system("quickstart:acrnn_r@train.epochs=3=ACRNN-r", GLOBAL)
  by_path = replicates.load_system(f"{QUICKSTART}:acrnn_r@train.epochs=3=ACRNN-r", GLOBAL)
  assert by_name.config.to_dict() == by_path.config.to_dict()
  assert (by_name.label, by_name.config.model.name, by_name.config.train.epochs) == (
      "ACRNN-r", "acrnn", 3)
  with pytest.raises(ValueError, match=r"^nosuch: config file not found \(packaged configs: "
                     r"acrnn, acrnn_r, quickstart, ssa_crnn_r\)$"):
    replicates.load_system("nosuch:acrnn_r", GLOBAL)


def test_run_config_sets_the_draw_seeds_split_and_selection():
  s = replicates.load_system(f"{QUICKSTART}:acrnn", GLOBAL)
  c = replicates.run_config(s.config, draw=4, seed_offset=1000)
  assert (c.data.synthetic.seed, c.seed, c.train.split, c.train.selection) == (4, 1004, "heldout",
                                                                              "inner")
  assert c.model.name == "acrnn" and c.data.synthetic.test_phrases == 2
  assert (s.config.seed, s.config.train.split) == (0, "random")  # the system's config is a copy
  no_test = crossval.load_config(QUICKSTART, {})
  with pytest.raises(ValueError, match="no held-out test subset"):
    replicates.run_config(no_test, 0)
  other = crossval.load_config(QUICKSTART, {**GLOBAL, "data.corpus": "iemocap"})
  with pytest.raises(ValueError, match="draws the built-in corpus"):
    replicates.run_config(other, 0)


def test_pilot_runs_one_system_at_two_seed_offsets():
  a, b = replicates.pilot_systems(f"{QUICKSTART}:acrnn_r@seed_offset=5", GLOBAL)
  assert (a.seed_offset, b.seed_offset) == (5, 5 + replicates.PILOT_OFFSET)
  assert a.label != b.label and a.config.to_dict() == b.config.to_dict()
  runs = replicates.plan_runs([a, b], "/w", [2])
  assert [r.config.seed for r in runs] == [7, 1007]
  assert [r.config.data.synthetic.seed for r in runs] == [2, 2]


def test_subdirs_and_draws():
  assert replicates.subdirs(["ACRNN-r relative", "ACRNN-r/relative", "acrnn-r relative", "§§",
                             "x (seeds +0)"]) == [
      "ACRNN-r_relative", "ACRNN-r_relative_2", "acrnn-r_relative_3", "system", "x_seeds_0"]
  assert replicates.parse_draws("0-3,7, 2") == [0, 1, 2, 3, 7]
  for bad in ("3-1", "-1", "a", "", None, "0-"):
    with pytest.raises(ValueError, match="--draws"):
      replicates.parse_draws(bad)


# --------------------------------------------------------------------------------------------
# The runner with a fake training


def _result(uar, epochs=2, wrong=0):
  """A result.json with a 4-class confusion matrix (20 test utterances per class), `wrong`
  of class 1 predicted as class 0; `uar` as given (the fake does not have to be consistent)."""
  cm = np.diag([20, 20 - wrong, 20, 20]).astype(int)
  cm[1, 0] = wrong
  return {"uar": uar, "wa": uar, "segment_uar": uar - 0.01, "best_epoch": 1, "epochs_run": epochs,
          "confusion": cm.tolist(), "classes": CLASSES, "split": "heldout",
          "selection": "inner", "inner": {"uar": uar}}  # as train.py writes with selection=inner


def _write(fold_dir, result):
  os.makedirs(fold_dir, exist_ok=True)
  with open(os.path.join(fold_dir, "result.json"), "w") as f:
    json.dump(result, f)


UARS = {"A": [0.70, 0.74, 0.66, 0.71], "B": [0.73, 0.75, 0.70, 0.72],
        "C": [0.60, 0.77, 0.65, 0.70]}
WRONG = {"A": [1, 5, 2, 0], "B": [3, 1, 1, 6], "C": [0, 0, 9, 2]}


class FakeTraining:
  """train_fn: records (label, draw, config, workdir, fold), snapshots compare.json as it is when
  the run starts, writes result.json like train.train_and_evaluate and returns it."""

  def __init__(self, study_dir, fail=(), now=None):
    self.study_dir, self.fail, self.calls, self.snapshots = study_dir, set(fail), [], []
    self.now = now if now is not None else [0.0]
    self.prepared = []

  def label(self, config):
    return {"acrnn": "A", "ssa_crnn": "B"}[config.model.name] if config.train.head_step == "adam" \
        else "C"

  def __call__(self, config, workdir, fold, dataset=None):
    label, draw = self.label(config), config.data.synthetic.seed
    assert dataset == ("data", draw)
    self.calls.append((label, draw, config, workdir, fold))
    path = os.path.join(self.study_dir, "compare.json")
    self.snapshots.append(json.load(open(path)) if os.path.exists(path) else None)
    self.now[0] += 10.0 * (len(self.calls))
    if (label, draw) in self.fail:
      raise FloatingPointError("non-finite loss\nat step 3")
    r = _result(UARS[label][draw], config.train.epochs, WRONG[label][draw])
    _write(os.path.join(workdir, f"fold{fold}"), r)
    return r

  def prepare(self, config):
    self.prepared.append(config.data.synthetic.seed)
    return ("data", config.data.synthetic.seed)


def _systems():
  return [replicates.load_system(f"{QUICKSTART}:acrnn=A", GLOBAL),
          replicates.load_system(QUICKSTART + "=B", GLOBAL),
          replicates.load_system(f"{QUICKSTART}:acrnn@train.head_step=relative,seed_offset=100=C",
                                 GLOBAL)]


def test_runs_are_draw_major_with_the_protocols_configs_and_folders(tmp_path):
  fake = FakeTraining(str(tmp_path))
  lines = []
  study, errors = replicates.run_replicates(_systems(), str(tmp_path), "0-3", train_fn=fake,
                                            prepare_fn=fake.prepare, clock=lambda: fake.now[0],
                                            report=lines.append)
  assert errors == []
  assert [(l, d) for l, d, *_ in fake.calls] == [(s, d) for d in range(4) for s in "ABC"]
  assert fake.prepared == [0, 1, 2, 3]  # one dataset per draw, shared by the systems
  for label, draw, config, workdir, fold in fake.calls:
    offset = 100 if label == "C" else 0
    assert (config.data.synthetic.seed, config.seed) == (draw, draw + offset)
    assert (config.train.split, config.train.selection, fold) == ("heldout", "inner", 0)
    assert config.data.synthetic.test_phrases == 2 and config.train.epochs == 2
    assert workdir == str(tmp_path / label / f"draw{draw}")
  # Progress: 12 runs, the k-th takes 10 k s; the estimate is the mean so far x the runs left.
  done = [l for l in lines if "trained in" in l]
  assert len(done) == 12
  assert done[0].startswith("[A] draw 0: UAR 70.00 %")
  assert done[0].endswith("trained in 10 s; 11 runs left, about 1 min 50 s")
  assert done[1].endswith("trained in 20 s; 10 runs left, about 2 min 30 s")
  assert done[-1].endswith("no run left")
  assert [r["state"] for r in study["runs"]] == ["trained"] * 12


def test_compare_is_written_after_every_draw_with_scipys_paired_t(tmp_path):
  fake = FakeTraining(str(tmp_path))
  replicates.run_replicates(_systems(), str(tmp_path), [0, 1, 2, 3], train_fn=fake,
                            prepare_fn=fake.prepare, report=lambda _: None)
  # When draw d's first run starts, compare.json holds draws 0..d-1 of every system.
  firsts = [fake.snapshots[3 * d] for d in range(4)]
  assert firsts[0] is None
  for d in (1, 2, 3):
    assert [s["num_folds"] for s in firsts[d]["systems"]] == [d, d, d]
    assert firsts[d]["paired"][0]["folds"] == list(range(d))
  doc = json.load(open(tmp_path / "compare.json"))
  assert [s["system"] for s in doc["systems"]] == ["A", "B", "C"]
  for entry, label in zip(doc["paired"], "BC"):
    assert (entry["system"], entry["reference"], entry["folds"]) == (label, "A", [0, 1, 2, 3])
    ref = scipy.stats.ttest_rel(UARS[label], UARS["A"])
    ci = ref.confidence_interval(0.95)
    assert entry["uar"]["p"] == pytest.approx(ref.pvalue)
    assert entry["uar"]["t"] == pytest.approx(ref.statistic)
    assert entry["uar"]["mean"] == pytest.approx(np.mean(np.subtract(UARS[label], UARS["A"])))
    assert entry["uar"]["low"] == pytest.approx(ci.low)
    assert entry["uar"]["high"] == pytest.approx(ci.high)
    for key in summary.PAIRED:  # every paired metric, on the values of each draw's row
      a = [summary.fold_rows({0: _result(UARS[label][d], 2, WRONG[label][d])})[0][key]
           for d in range(4)]
      b = [summary.fold_rows({0: _result(UARS["A"][d], 2, WRONG["A"][d])})[0][key]
           for d in range(4)]
      if np.ptp(np.subtract(a, b)) > 0:
        assert entry[key]["p"] == pytest.approx(scipy.stats.ttest_rel(a, b).pvalue), key
  # Student's t over draws for the means (independent draws).
  uar_a = doc["systems"][0]["metrics"]["uar"]
  half = scipy.stats.t.ppf(0.975, 3) * np.std(UARS["A"], ddof=1) / 2
  assert uar_a["ci"] == pytest.approx(half)
  md = (tmp_path / "compare.md").read_text()
  assert "| 2 | 66.00 | 70.00 | 65.00 | +4.00 | -1.00 |" in md  # the per-draw UAR table
  # Planning: SD of the per-draw UAR differences (points) and the draws for 80 % at 3 points.
  sd_b = 100 * np.std(np.subtract(UARS["B"], UARS["A"]), ddof=1)
  p_b = doc["power"][0]
  assert p_b["sd_diff"] == pytest.approx(sd_b)
  assert p_b["draws_needed"] == replicates.draws_for_power(sd_b, 3.0)
  assert f"{sd_b:.2f}" in md


def test_complete_runs_are_not_retrained_and_a_failure_is_not_paired(tmp_path):
  systems = _systems()
  # A's draw 0 complete; B's draw 0 stopped after 1 of 2 epochs (resumed); C's draw 1 by patience.
  _write(tmp_path / "A" / "draw0" / "fold0", _result(UARS["A"][0], 2, WRONG["A"][0]))
  _write(tmp_path / "B" / "draw0" / "fold0", _result(0.1, 1))
  _write(tmp_path / "C" / "draw1" / "fold0",
         {**_result(UARS["C"][1], 1, WRONG["C"][1]), "stopped_by": "patience"})
  runs = replicates.plan_runs(systems, str(tmp_path), [0, 1, 2])
  plan = replicates.describe_plan(runs)
  assert "9 runs (6 new, 1 resume, 2 complete)" in plan
  fake = FakeTraining(str(tmp_path), fail={("B", 2)})
  lines = []
  study, errors = replicates.run_replicates(systems, str(tmp_path), [0, 1, 2], train_fn=fake,
                                            prepare_fn=fake.prepare, report=lines.append)
  assert [(l, d) for l, d, *_ in fake.calls] == [("B", 0), ("C", 0), ("A", 1), ("B", 1),
                                                 ("A", 2), ("B", 2), ("C", 2)]
  assert any(l.startswith("[A] draw 0: complete") for l in lines)
  assert len(errors) == 1 and errors[0].startswith("[B] draw 2 failed: FloatingPointError")
  assert "\n" not in errors[0]
  assert [r["state"] for r in study["runs"]] == ["complete", "trained", "trained",
                                                 "trained", "trained", "complete",
                                                 "trained", "failed", "trained"]
  paired = {e["system"]: e for e in study["paired"]}
  assert paired["B"]["folds"] == [0, 1] and paired["C"]["folds"] == [0, 1, 2]
  ref = scipy.stats.ttest_rel(UARS["B"][:2], UARS["A"][:2])
  assert paired["B"]["uar"]["p"] == pytest.approx(ref.pvalue)
  assert "- [B] draw 2 failed: FloatingPointError: non-finite loss at step 3" in (
      tmp_path / "compare.md").read_text()


def test_pilot_study_reports_the_seed_noise(tmp_path):
  systems = replicates.pilot_systems(f"{QUICKSTART}:acrnn_r", GLOBAL)
  uar = lambda c: 0.6 + 0.01 * c.data.synthetic.seed + 0.003 * (c.seed % 7)  # noqa: E731
  seeds = []

  def fake(config, workdir, fold, dataset=None):
    seeds.append((config.data.synthetic.seed, config.seed))
    return _result(uar(config), config.train.epochs)

  study, _ = replicates.run_replicates(systems, str(tmp_path), "0-4", train_fn=fake,
                                       prepare_fn=lambda c: None, report=lambda _: None,
                                       pilot=True)
  assert seeds == [(d, s) for d in range(5) for s in (d, d + 1000)]
  diffs = [100 * (0.003 * ((d + 1000) % 7) - 0.003 * (d % 7)) for d in range(5)]
  (row,) = study["power"]
  assert row["sd_diff"] == pytest.approx(np.std(diffs, ddof=1))
  assert row["mean_diff"] == pytest.approx(np.mean(diffs))
  assert "Seed-noise pilot" in (tmp_path / "compare.md").read_text()


def test_a_run_folder_of_another_config_is_named(tmp_path, caplog):
  (system,) = _systems()[:1]
  (run,) = replicates.plan_runs([system], str(tmp_path), [1])
  assert replicates.config_changes(run) == []  # no config.json yet
  stored = json.loads(json.dumps(run.config.to_dict()))
  os.makedirs(run.fold_dir)
  with open(os.path.join(run.fold_dir, "config.json"), "w") as f:
    json.dump(stored, f)
  assert replicates.config_changes(run) == []  # as training writes it (tuples as lists)
  stored["train"]["head_step"], stored["seed"] = "relative", 5
  with open(os.path.join(run.fold_dir, "config.json"), "w") as f:
    json.dump(stored, f)
  assert replicates.config_changes(run) == ["seed", "train.head_step"]
  _write(run.fold_dir, _result(0.7, 2))
  with caplog.at_level("WARNING", logger="ssa_jax.replicates"):
    replicates.run_replicates([system], str(tmp_path), [1],
                              train_fn=lambda *a, **k: pytest.fail("a complete run retrained"),
                              prepare_fn=lambda c: None, report=lambda _: None)
  assert "seed, train.head_step" in caplog.text


def test_no_finished_run_is_an_error(tmp_path):
  fake = FakeTraining(str(tmp_path), fail={("A", 0), ("B", 0)})
  with pytest.raises(RuntimeError, match="no run finished"):
    replicates.run_replicates(_systems()[:2], str(tmp_path), [0], train_fn=fake,
                              prepare_fn=fake.prepare, report=lambda _: None)


# --------------------------------------------------------------------------------------------
# Power planning


def test_power_known_value():
  # Effect size 1 (delta = sd): the paired t-test has 80.3 % power with 10 pairs (G*Power).
  assert replicates.paired_power(10, 1.0, 1.0) == pytest.approx(0.8031, abs=5e-4)
  assert replicates.paired_power(9, 1.0, 1.0) < 0.8
  assert replicates.draws_for_power(1.0, 1.0) == 10
  assert replicates.draws_for_power(2.0, 2.0, power=0.8) == 10  # only the ratio counts
  assert replicates.draws_for_power(0.0, 3.0) == 2
  # 0.5 effect size, 80 %: 34 pairs (the table value of a paired t-test).
  assert replicates.draws_for_power(6.0, 3.0) == 34


@pytest.mark.parametrize("sd_diff,delta", [(4.0, 3.0), (2.5, 3.0)])
def test_power_against_monte_carlo(sd_diff, delta):
  rng = np.random.default_rng(0)
  n = replicates.draws_for_power(sd_diff, delta)
  sims = 20_000
  for m in (n - 1, n):
    if m < 2:
      continue
    d = rng.normal(delta, sd_diff, size=(sims, m))
    p = scipy.stats.ttest_1samp(d, 0.0, axis=1).pvalue
    simulated = float(np.mean(p < 0.05))
    assert simulated == pytest.approx(replicates.paired_power(m, sd_diff, delta), abs=0.012)
  # n is the smallest: n - 1 falls short of 80 % and n reaches it.
  assert replicates.paired_power(n, sd_diff, delta) >= 0.8
  assert n == 2 or replicates.paired_power(n - 1, sd_diff, delta) < 0.8


def test_ci_half_width_covers_95_percent_by_monte_carlo():
  rng = np.random.default_rng(1)
  sd, n, sims = 3.0, 8, 20_000
  d = rng.normal(1.0, sd, size=(sims, n))
  half = scipy.stats.t.ppf(0.975, n - 1) * d.std(axis=1, ddof=1) / math.sqrt(n)
  covered = np.mean(np.abs(d.mean(axis=1) - 1.0) <= half)
  assert covered == pytest.approx(0.95, abs=0.006)
  # ci_half_width at the true SD: the expected half-width to within the sample SD's bias (c4).
  c4 = math.sqrt(2 / (n - 1)) * math.gamma(n / 2) / math.gamma((n - 1) / 2)
  assert replicates.ci_half_width(sd, n) * c4 == pytest.approx(half.mean(), rel=0.01)
  for bad in ((sd, 1), (-1.0, 5)):
    with pytest.raises(ValueError):
      replicates.ci_half_width(*bad)


def test_pilot_summary():
  a = {0: 0.70, 1: 0.74, 2: 0.66, 3: 0.71, 9: 0.5}
  b = {0: 0.73, 1: 0.75, 2: 0.70, 3: 0.72}
  p = replicates.pilot_summary(a, b)
  d = 100 * (np.array([0.70, 0.74, 0.66, 0.71]) - np.array([0.73, 0.75, 0.70, 0.72]))
  assert p["draws"] == [0, 1, 2, 3] and p["n"] == 4
  assert p["mean_diff"] == pytest.approx(d.mean())
  assert p["sd_diff"] == pytest.approx(d.std(ddof=1))
  assert p["sd_single_run"] == pytest.approx(d.std(ddof=1) / math.sqrt(2))
  assert p["draws_needed"] == replicates.draws_for_power(d.std(ddof=1), 3.0)
  assert p["ci_half_width_now"] == pytest.approx(scipy.stats.ttest_rel(
      [0.70, 0.74, 0.66, 0.71], [0.73, 0.75, 0.70, 0.72]).confidence_interval().high * 100
      - d.mean())
  md = replicates.render_power([{"system": "x (seeds +1000)", **p}], 3.0, 0.8, pilot=True)
  assert "Seed-noise pilot" in md and f"{d.std(ddof=1) / math.sqrt(2):.2f} UAR points" in md
  row = f"| x (seeds +1000) | 4 | {d.mean():+.2f} | {d.std(ddof=1):.2f} | {p['draws_needed']} |"
  assert row in md
  single = replicates.pilot_summary({0: 0.7}, {0: 0.6})
  assert single["n"] == 1 and single["sd_diff"] is None and single["draws_needed"] is None


def test_power_rejects_bad_parameters():
  for args in ((-1.0,), (float("nan"),), (1.0, 0.0), (1.0, 3.0, 1.0), (1.0, 3.0, 0.8, 0.0)):
    with pytest.raises(ValueError):
      replicates.draws_for_power(*args)
  with pytest.raises(ValueError, match="n >= 2"):
    replicates.paired_power(1, 1.0, 1.0)


# --------------------------------------------------------------------------------------------
# The command


def _run(*args):
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", "bin.replicates", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


TEST_SET = "--config.data.synthetic.test_phrases=2"


@pytest.mark.parametrize("args,words", [
    (["--compare", "configs/quickstart.py"], "no held-out test subset"),
    ([TEST_SET, "--config.train.split=random", "--compare", "configs/quickstart.py"],
     "needs train.split=heldout"),
    ([TEST_SET, "--compare", "configs/quickstart.py@seed=1"], "seed is set by the runner"),
    ([TEST_SET, "--compare", "configs/quickstart.py@train.nosuch=1"], "no config field"),
    ([TEST_SET, "--compare", "configs/quickstart.py@train.epochs=x"], "train.epochs='x'"),
    ([TEST_SET, "--compare", "configs/quickstart.py@"], "expected KEY=VALUE"),
    ([TEST_SET, "--compare", "configs/quickstart.py", "configs/quickstart.py"], "same label"),
    ([TEST_SET, "--draws", "5-2", "--compare", "configs/quickstart.py"], "--draws"),
    ([TEST_SET, "--pilot", "configs/quickstart.py", "--compare", "configs/quickstart.py"],
     "--pilot runs one system"),
    ([TEST_SET], "give the systems"),
    (["stray"], "unexpected arguments: stray"),
    (["--compare", "configs/missing.py"], "configs/missing.py: config file not found"),
    (["--power", "1.5", "--compare", "configs/quickstart.py"], "--power"),
    (["--nosuchflag"], "nosuchflag"),
])
def test_cli_errors_are_one_line(args, words, tmp_path):
  proc = _run("--plan", "--workdir", str(tmp_path), *args)
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode == 1, proc.stderr
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  assert words in lines[0], proc.stderr


def test_cli_plan_lists_the_runs_draw_major(tmp_path):
  proc = _run("--plan", "--workdir", str(tmp_path), "--draws", "3,5", TEST_SET, "--compare",
              "configs/quickstart.py:acrnn_r=ACRNN-r",
              "configs/quickstart.py:acrnn_r@train.head_step=relative,seed_offset=10=ACRNN-r rel")
  assert proc.returncode == 0, proc.stderr
  rows = [l.split() for l in proc.stdout.splitlines() if l.startswith("draw")]
  assert [(r[1], r[2], r[-1]) for r in rows] == [
      ("3", "ACRNN-r", str(tmp_path / "ACRNN-r" / "draw3" / "fold0")),
      ("3", "ACRNN-r", str(tmp_path / "ACRNN-r_rel" / "draw3" / "fold0")),
      ("5", "ACRNN-r", str(tmp_path / "ACRNN-r" / "draw5" / "fold0")),
      ("5", "ACRNN-r", str(tmp_path / "ACRNN-r_rel" / "draw5" / "fold0"))]
  assert [l.split("seed=")[-1].split()[0] for l in proc.stdout.splitlines()
          if l.startswith("draw")] == ["3", "13", "5", "15"]
  assert "4 runs (4 new, 0 resume, 0 complete)" in proc.stdout
  assert not os.listdir(tmp_path)  # nothing trained, nothing written
