"""Cross-validation summary: mean and Student-t interval against scipy, the corrected resampled t
and the paired tests against hand computations (mpmath, written out), per-class recalls against
scikit-learn, Markdown tables, the TensorBoard writer (its event files parsed back here by hand: the
TFRecord framing and tensorboardX's Event proto; TensorBoard itself is not a dependency)."""

import json
import math
import os

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings, strategies as st

from ssa_jax import splits, summary


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=2, max_size=12),
       st.sampled_from([0.9, 0.95, 0.99]))
def test_mean_ci_matches_scipy_t_interval(values, confidence):
  x = np.asarray(values)
  m = summary.mean_ci(values, confidence)
  sem = scipy.stats.sem(x)  # s / sqrt(n), ddof=1
  assert m.n == len(values)
  assert m.mean == pytest.approx(float(np.mean(x)), abs=1e-12)
  if sem == 0:
    assert m.half_width == pytest.approx(0.0, abs=1e-12)
    return
  lo, hi = scipy.stats.t.interval(confidence, len(x) - 1, loc=np.mean(x), scale=sem)
  assert m.low == pytest.approx(lo, rel=1e-9, abs=1e-12)
  assert m.high == pytest.approx(hi, rel=1e-9, abs=1e-12)
  assert m.std == pytest.approx(float(np.std(x, ddof=1)), rel=1e-9, abs=1e-12)


def test_mean_ci_single_fold_is_undefined_and_bad_input_is_rejected():
  m = summary.mean_ci([0.5])
  assert (m.mean, m.half_width, m.low, m.std) == (0.5, None, None, None)
  assert m.format() == "50.00 ± n/a"
  with pytest.raises(ValueError, match="at least one"):
    summary.mean_ci([])
  with pytest.raises(ValueError, match="finite"):
    summary.mean_ci([0.5, float("nan")])


def test_format_known_value():
  # Two folds 0.6 and 0.7: mean 0.65, s = 0.0707107, t_{0.975,1} = 12.7062 -> 0.6353
  m = summary.mean_ci([0.6, 0.7])
  assert m.format() == "65.00 ± 63.53"


def _result(uar, wa, seg, epoch):
  return {"uar": uar, "wa": wa, "segment_uar": seg, "best_epoch": epoch,
          "confusion": [[1, 0], [0, 1]], "classes": ["a", "b"]}


def test_markdown_has_one_row_per_fold_and_the_mean_ci_row():
  results = {2: _result(0.5, 0.6, 0.4, 3), 0: _result(0.7, 0.8, 0.6, 1), 5: _result(0.6, 0.7, 0.5, 2)}
  s = summary.summarize(results, name="tiny")
  assert [r["fold"] for r in s["folds"]] == [0, 2, 5]
  json.dumps(s)  # serialisable
  md = summary.render_markdown(s)
  rows = [l for l in md.splitlines() if l.startswith("| ") and l[2].isdigit()]
  assert len(rows) == 3
  # fold, UAR, WA, segment UAR, recall a, recall b, worst-class recall, largest predicted-class
  # share (one of two utterances each way: 50 %), best epoch
  assert rows[0] == "| 0 | 70.00 | 80.00 | 60.00 | 100.00 | 100.00 | 100.00 | 50.00 | 1 |"
  assert "| worst-class recall (%) | largest predicted-class share (%) |" in md
  ci = summary.mean_ci([0.7, 0.5, 0.6])
  mean_rows = [l for l in md.splitlines() if l.startswith("| mean ± 95 % CI")]
  assert len(mean_rows) == 1
  assert f"{100 * ci.mean:.2f} ± {100 * ci.half_width:.2f}" in mean_rows[0]


def test_missing_metric_names_the_fold():
  with pytest.raises(ValueError, match="fold 3.*segment_uar"):
    summary.summarize({3: {"uar": 0.5, "wa": 0.5}})


def test_compare_table_has_one_row_per_system():
  systems = []
  for i, name in enumerate(["ACRNN", "ACRNN-r", "SSA-CRNN-r"]):
    s = summary.summarize({0: _result(0.3 + i / 10, 0.5, 0.4, 1), 1: _result(0.4 + i / 10, 0.5, 0.4, 1)},
                          name=name, system=name, corpus="synthetic")
    systems.append(s)
  md = summary.render_compare(systems)
  body = _table(md, "| SER system | corpus |")
  assert [l.split("|")[1].strip() for l in body] == ["ACRNN", "ACRNN-r", "SSA-CRNN-r"]
  assert "45.00 ± " in body[1]


def _table(md, header):
  """The body rows of the Markdown table whose header line starts with `header`."""
  lines = md.splitlines()
  start = next(i for i, l in enumerate(lines) if l.startswith(header)) + 2
  rows = []
  for l in lines[start:]:
    if not l.startswith("|"):
      break
    rows.append(l)
  return rows


def _read_scalars(logdir):
  """tag -> [(step, value)] from the TFRecord event files in `logdir` (the record format parsed
  here by hand: u64 length, u32 crc, payload, u32 crc; payload = tensorboard Event proto)."""
  import struct
  from tensorboardX.proto import event_pb2
  out = {}
  files = sorted(f for f in os.listdir(logdir) if "tfevents" in f)
  assert files, f"no event file in {logdir}"
  for name in files:
    data = open(os.path.join(logdir, name), "rb").read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      ev = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      for v in ev.summary.value:
        out.setdefault(v.tag, []).append((ev.step, v.simple_value))
  return out


def test_metric_writer_tensorboard_scalars_read_back(tmp_path):
  with summary.MetricWriter(tmp_path) as w:
    w.write(1, {"train/loss": 1.5, "valid/uar": 0.25, "confusion": [[1]], "ok": True})
    w.write(2, {"train/loss": 1.0, "valid/uar": 0.5})
  scalars = _read_scalars(tmp_path)
  assert sorted(scalars) == ["train/loss", "valid/uar"]
  assert scalars["valid/uar"] == [(1, 0.25), (2, 0.5)]
  assert not (tmp_path / "metrics.jsonl").exists()  # metrics.jsonl is training's (train.py)


def test_metrics_jsonl_lines_become_train_and_valid_tags(tmp_path):
  lines = [{"epoch": 1, "step": 16, "train_loss": 1.2, "valid_uar": 0.5, "valid_wa": 0.55,
            "valid_segment_uar": 0.4, "elapsed": 3.0},
           {"epoch": 2, "step": 32, "train_loss": 0.9, "valid_uar": 0.75, "valid_wa": 0.7,
            "valid_segment_uar": 0.6, "elapsed": 6.0}]
  with summary.MetricWriter(tmp_path) as w:  # as train.py writes them, one line per epoch
    for l in lines:
      w.write(l["epoch"], l)
  scalars = _read_scalars(tmp_path)
  assert sorted(scalars) == ["elapsed", "train/loss", "valid/segment_uar", "valid/uar", "valid/wa"]
  assert scalars["valid/uar"] == [(1, 0.5), (2, 0.75)]  # stepped by epoch


def test_system_labels_follow_table1():
  from ssa_jax.config import base_config
  c = base_config()
  assert summary.system_label(c) == "SSA-CRNN-r"
  c.model.name, c.train.constraint = "acrnn", "none"
  assert summary.system_label(c) == "ACRNN"
  c.train.constraint = "l1_sphere"
  assert summary.system_label(c) == "ACRNN-r"


# --- corrected resampled t, paired tests, per-class recalls ------------------------------------

A = [0.80, 0.85, 0.78, 0.90, 0.82]
B = [0.75, 0.84, 0.74, 0.86, 0.80]  # A - B = [0.05, 0.01, 0.04, 0.04, 0.02]
# Hand computation (mpmath, 30 digits; t quantile by root finding, p = I_{df/(df+t^2)}(df/2, 1/2)):
#   A: mean 0.83, s^2 = 0.0088 / 4 = 0.0022; t_{0.975,4} = 2.7764451051977944
#     Student:   half = t sqrt(0.0022 / 5)           = 0.058239203855803079
#     corrected: half = t sqrt((1/5 + 0.25) 0.0022)  = 0.087358805783704618
#   d = A - B: mean 0.032, s_d^2 = 0.00108 / 4 = 0.00027
#     paired t:  se = sqrt(0.00027 / 5) = 0.0073484692283495343, t = 4.3546484316145388,
#                p = 0.012112835399944045, half = 0.020402621419747677
#     corrected: se = sqrt(0.45 * 0.00027) = 0.011022703842524301, t = 2.9030989544096926,
#                p = 0.043981110268420941, half = 0.030603932129621516
T975_4 = 2.7764451051977944


def test_corrected_mean_ci_matches_the_hand_computation():
  plain = summary.mean_ci(A)
  corrected = summary.mean_ci(A, test_train_ratio=0.25)
  assert plain.mean == corrected.mean == pytest.approx(0.83, abs=1e-12)
  assert plain.half_width == pytest.approx(0.058239203855803079, rel=1e-10)
  assert corrected.half_width == pytest.approx(0.087358805783704618, rel=1e-10)
  assert (plain.method, corrected.method) == ("t", "corrected resampled t")
  assert corrected.to_json()["test_train_ratio"] == 0.25
  with pytest.raises(ValueError, match="test_train_ratio.*-0.1"):
    summary.mean_ci(A, test_train_ratio=-0.1)


def test_paired_t_matches_the_hand_computation_and_scipy():
  res = summary.paired_test(A, B)
  assert res.mean == pytest.approx(0.032, abs=1e-12)
  assert res.t == pytest.approx(4.3546484316145388, rel=1e-9)
  assert res.p == pytest.approx(0.012112835399944045, rel=1e-8)
  assert res.half_width == pytest.approx(0.020402621419747677, rel=1e-9)
  assert res.df == 4 and res.method == "t"
  ref = scipy.stats.ttest_rel(A, B)
  assert (res.t, res.p) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-12)


def test_corrected_paired_t_matches_the_hand_computation():
  res = summary.paired_test(A, B, test_train_ratio=0.25)
  assert res.mean == pytest.approx(0.032, abs=1e-12)
  assert res.t == pytest.approx(2.9030989544096926, rel=1e-9)
  assert res.p == pytest.approx(0.043981110268420941, rel=1e-8)
  assert res.half_width == pytest.approx(0.030603932129621516, rel=1e-9)
  j = res.to_json()
  assert j["low"] == pytest.approx(0.032 - 0.030603932129621516, rel=1e-9)
  assert j["method"] == "corrected resampled t" and j["df"] == 4
  # Swapping the systems flips the sign, not the p-value.
  back = summary.paired_test(B, A, test_train_ratio=0.25)
  assert (back.mean, back.t, back.p) == pytest.approx((-0.032, -res.t, res.p), rel=1e-12)


def test_paired_degenerate_cases():
  assert summary.paired_test([0.5], [0.4]).p is None  # one fold
  same = summary.paired_test([0.5, 0.6], [0.4, 0.5])  # constant difference
  assert same.half_width == 0.0 and same.p == 0.0
  assert summary.paired_test([0.5, 0.6], [0.5, 0.6]).p == 1.0
  with pytest.raises(ValueError, match="same folds"):
    summary.paired_test([0.5, 0.6], [0.5])


def _counts(n_valid, n_train):
  """result.json counts with two classes holding the utterances (3/5 and 2/5)."""
  return {"valid_utterances": {"a": 3 * n_valid // 5, "b": n_valid - 3 * n_valid // 5},
          "train_utterances": {"a": 3 * n_train // 5, "b": n_train - 3 * n_train // 5}}


# Per fold n_valid / n_train: 36/150 = 0.24, 39/150 = 0.26, then 0.25 three times: mean 0.25.
RATIOS = [(36, 150), (39, 150), (40, 160), (40, 160), (40, 160)]


def _system(uars, split="random", name="sys", confusions=None):
  results = {}
  for fold, u in enumerate(uars):
    r = {"uar": u, "wa": u, "segment_uar": u, "best_epoch": 1, "classes": ["a", "b"],
         "counts": _counts(*RATIOS[fold])}
    if confusions is not None:
      r["confusion"] = confusions[fold]
    results[fold] = r
  return summary.summarize(results, name=name, system=name, split=split, corpus="synthetic")


def test_summary_uses_the_corrected_t_for_the_random_split_and_plain_t_for_disjoint_folds():
  rnd = _system(A, "random")
  assert rnd["statistics"]["method"] == "corrected resampled t"
  assert rnd["statistics"]["test_train_ratio"] == pytest.approx(0.25, abs=1e-12)
  assert rnd["statistics"]["ratio_source"] == "counts"
  assert rnd["metrics"]["uar"]["ci"] == pytest.approx(0.087358805783704618, rel=1e-9)
  assert "Nadeau & Bengio" in summary.render_markdown(rnd)
  for split in ("loso", "heldout"):
    s = _system(A, split)
    assert s["statistics"]["method"] == "t" and s["statistics"]["test_train_ratio"] is None
    assert s["metrics"]["uar"]["ci"] == pytest.approx(0.058239203855803079, rel=1e-9)
  # No counts: the configured valid fraction (0.2 -> 0.2 / 0.8 = 0.25); neither: an error.
  bare = {f: {"uar": u, "wa": u, "segment_uar": u} for f, u in enumerate(A)}
  s = summary.summarize(bare, split="random", valid_fraction=0.2)
  assert s["statistics"]["ratio_source"] == "valid_fraction"
  assert s["metrics"]["uar"]["ci"] == pytest.approx(0.087358805783704618, rel=1e-9)
  with pytest.raises(ValueError, match="n_valid / n_train"):
    summary.summarize(bare, split="random")


def test_compare_systems_pairs_matching_folds():
  ref, other = _system(B, name="ACRNN"), _system(A, name="ACRNN-r")
  (entry,) = summary.compare_systems([ref, other])
  assert entry["system"] == "ACRNN-r" and entry["reference"] == "ACRNN" and entry["folds"] == [0, 1, 2, 3, 4]
  uar = entry["uar"]
  assert uar["mean"] == pytest.approx(0.032, abs=1e-12)
  assert uar["p"] == pytest.approx(0.043981110268420941, rel=1e-8)
  assert uar["ci"] == pytest.approx(0.030603932129621516, rel=1e-9)
  assert entry["worst_class_recall"] is None  # no confusion matrices
  assert entry["largest_predicted_share"] is None
  md = summary.render_compare([ref, other], paired=[entry])
  (row,) = _table(md, "| SER system | folds | Δ UAR")
  assert row.startswith("| ACRNN-r | 5 | +3.20 [+0.14, +6.26] | 0.044 |")
  assert "paired corrected resampled t" in row and "n_valid/n_train = 0.2500" in md
  # Disjoint folds: the ordinary paired t; one fold missing in a system: only the common ones.
  ref, other = _system(B, "loso", "ACRNN"), _system(A, "loso", "ACRNN-r")
  (entry,) = summary.compare_systems([ref, other])
  assert entry["uar"]["p"] == pytest.approx(0.012112835399944045, rel=1e-8)
  assert entry["uar"]["method"] == "t"
  del other["folds"][2]
  (entry,) = summary.compare_systems([ref, other])
  assert entry["folds"] == [0, 1, 3, 4] and entry["uar"]["n"] == 4
  ref4 = [b for i, b in enumerate(B) if i != 2]
  a4 = [a for i, a in enumerate(A) if i != 2]
  assert entry["uar"]["p"] == pytest.approx(scipy.stats.ttest_rel(a4, ref4).pvalue, rel=1e-12)
  # Different splits cannot be paired.
  (entry,) = summary.compare_systems([_system(B, "random"), _system(A, "loso")])
  assert "splits differ" in entry["error"]


def test_recalls_and_collapse_figures_match_scikit_learn_and_the_predictions():
  from sklearn.metrics import confusion_matrix, recall_score
  rng = np.random.default_rng(3)
  confusions, recalls, shares = [], [], []
  for _ in range(5):
    y = rng.integers(0, 3, size=60)
    y[:3] = [0, 1, 2]  # every class present
    pred = np.where(rng.random(60) < 0.7, y, rng.integers(0, 3, size=60))
    confusions.append(confusion_matrix(y, pred, labels=[0, 1, 2]).tolist())
    recalls.append(recall_score(y, pred, average=None, labels=[0, 1, 2]))
    shares.append(max(np.sum(pred == j) for j in range(3)) / len(pred))
  results = {f: {"uar": 0.5, "wa": 0.5, "segment_uar": 0.5, "confusion": confusions[f],
                 "classes": ["neu", "hap", "ang"], "counts": _counts(*RATIOS[f])} for f in range(5)}
  s = summary.summarize(results, split="random")
  recalls = np.array(recalls)
  for f, row in enumerate(s["folds"]):
    np.testing.assert_allclose(row["recalls"], recalls[f], rtol=1e-12)
    assert row["worst_class_recall"] == pytest.approx(recalls[f].min(), rel=1e-12)
    assert row["largest_predicted_share"] == pytest.approx(shares[f], rel=1e-12)
  assert s["classes"] == ["neu", "hap", "ang"]
  for k, c in enumerate(s["classes"]):
    ref = summary.mean_ci(recalls[:, k], test_train_ratio=0.25)
    assert s["recalls"][c]["mean"] == pytest.approx(recalls[:, k].mean(), rel=1e-12)
    assert s["recalls"][c]["ci"] == pytest.approx(ref.half_width, rel=1e-12)
  assert s["metrics"]["worst_class_recall"]["mean"] == pytest.approx(recalls.min(axis=1).mean(),
                                                                     rel=1e-12)
  share = s["metrics"]["largest_predicted_share"]
  assert share["mean"] == pytest.approx(np.mean(shares), rel=1e-12)
  assert share["ci"] == pytest.approx(summary.mean_ci(shares, test_train_ratio=0.25).half_width,
                                      rel=1e-12)
  md = summary.render_markdown(s)
  assert "recall hap (%)" in md and "worst-class recall (%)" in md
  assert "collapse" not in md.split("\n")[2]  # the old name is gone from the table header
  rows = [l for l in md.splitlines() if l.startswith("| 0 |")]
  assert f"| {100 * recalls[0, 1]:.2f} |" in rows[0]


def test_absent_class_has_no_recall_and_is_left_out_of_the_worst_class_recall():
  results = {0: {"uar": 0.5, "wa": 0.5, "segment_uar": 0.5, "classes": ["a", "b", "c"],
                 "confusion": [[3, 1, 0], [0, 0, 0], [2, 0, 2]]},
             1: {"uar": 0.5, "wa": 0.5, "segment_uar": 0.5, "classes": ["a", "b", "c"],
                 "confusion": [[4, 0, 0], [1, 1, 0], [0, 0, 4]]}}
  s = summary.summarize(results, split="loso")
  assert s["folds"][0]["recalls"] == [0.75, None, 0.5]
  assert s["folds"][0]["worst_class_recall"] == 0.5
  assert s["folds"][1]["worst_class_recall"] == 0.5
  # Predicted as a: 5 of 8 utterances in fold 0, 5 of 10 in fold 1.
  assert s["folds"][0]["largest_predicted_share"] == pytest.approx(5 / 8)
  assert s["folds"][1]["largest_predicted_share"] == pytest.approx(5 / 10)
  assert s["recalls"]["b"]["n"] == 1 and s["recalls"]["b"]["mean"] == 0.5
  assert s["recalls"]["a"]["mean"] == pytest.approx(0.875)
  with pytest.raises(ValueError, match="fold 0: confusion must be a square"):
    summary.summarize({0: {"uar": 0.5, "wa": 0.5, "segment_uar": 0.5, "confusion": [[1, 2]]}})


# --- overlapping linguistic folds, replicate draws ----------------------------------------------


def test_overlap_design_against_closed_forms():
  # Disjoint validation sets: Student's t (f = 1/n, df = n - 1).
  disjoint = summary.overlap_design([{0, 1}, {2, 3}, {4, 5}, {6, 7}])
  assert (disjoint.factor, disjoint.df) == pytest.approx((1 / 4, 3), rel=1e-12)
  # The paper's linguistic protocol, all 10 folds: fold k's score averages group effects k and
  # k+1, a cyclic moving average. Var(mean) = σ²/10 (each group counted twice); E[s²] =
  # σ² (n - w) / (w (n - 1)) = σ² 8/18, so f = w (n - 1) / (n (n - w)) = 18/80 = 0.225. The
  # circulant Σ has eigenvalues (1 + cos 2πj/n)/2; without j = 0, their sum is (n - 2)/2 = 4 and
  # the sum of their squares (1/4)(n - 3 + n/2 - 1) = 11/4, so df = 4² / (11/4) = 64/11.
  ling = summary.linguistic_overlap(list(range(10)), 10)
  assert ling.factor == pytest.approx(0.225, rel=1e-12)
  assert ling.df == pytest.approx(64 / 11, rel=1e-12)
  assert summary.linguistic_valid_groups(9, 10) == (0, 9)
  with pytest.raises(ValueError, match="all the same"):
    summary.overlap_design([{1, 2}, {1, 2}])


def test_linguistic_summary_uses_the_overlap_corrected_t():
  uars = A + B  # ten folds
  results = {f: {"uar": u, "wa": u, "segment_uar": u, "config": {"train": {"num_folds": 10}}}
             for f, u in enumerate(uars)}
  s = summary.summarize(results, split="linguistic")
  half = scipy.stats.t.ppf(0.975, 64 / 11) * np.std(uars, ddof=1) * math.sqrt(0.225)
  assert s["metrics"]["uar"]["ci"] == pytest.approx(half, rel=1e-10)
  assert s["statistics"]["method"] == "overlap-corrected t"
  assert s["statistics"]["phrase_groups"] == 10
  assert "f = 0.2250, df = 5.82" in summary.render_markdown(s)
  # Paired over the linguistic folds: the same f and df on the differences.
  other = summary.summarize({f: {**r, "uar": r["uar"] - 0.01 * (f % 3)} for f, r in results.items()},
                            split="linguistic")
  (entry,) = summary.compare_systems([s, other])
  d = np.array([-0.01 * (f % 3) for f in range(10)])
  se = np.std(d, ddof=1) * math.sqrt(0.225)
  assert entry["uar"]["t"] == pytest.approx(d.mean() / se, rel=1e-10)
  assert entry["uar"]["p"] == pytest.approx(2 * scipy.stats.t.sf(abs(d.mean() / se), 64 / 11),
                                            rel=1e-10)
  assert "paired overlap-corrected t" in summary.render_compare([s, other], paired=[entry])
  # Without the split's num_folds (no config, no argument) the windows are unknown: an error.
  bare = {f: {"uar": u, "wa": u, "segment_uar": u} for f, u in enumerate(uars)}
  with pytest.raises(ValueError, match="num_folds"):
    summary.summarize(bare, split="linguistic")
  assert summary.summarize(bare, split="linguistic", num_folds=10)["metrics"]["uar"]["ci"] == \
      pytest.approx(half, rel=1e-10)


def _toy_dataset(num_speakers=4, num_phrases=20, classes=4):
  """One utterance per (speaker, class, phrase): every phrase and every speaker equally often."""
  grid = np.array([(s, c, p) for s in range(num_speakers) for c in range(classes)
                   for p in range(num_phrases)])
  return {"speakers": grid[:, 0], "labels": grid[:, 1],
          "phrases": np.array([f"s{p:03d}" for p in grid[:, 2]])}


def _units(mode, ds, num_folds):
  """The folds (or draws) of one run of `mode` on `ds`. A new split mode must be added here."""
  if mode in ("random", "linguistic"):
    return list(range(num_folds))
  if mode == "loso":
    return list(range(len(np.unique(ds["speakers"]))))
  if mode == "heldout":  # fold 0 of each draw: draws are independent corpora (see below)
    return list(range(5))
  pytest.fail(f"split mode {mode!r} is new: say here how its folds are built, then check which "
              f"confidence interval summary.summarize gives it")


@pytest.mark.parametrize("mode", splits.MODES)
def test_summary_corrects_exactly_the_splits_whose_folds_overlap(mode):
  """Structural: build the folds of each split mode with the real splitter; the summary must use
  a corrected interval exactly when two validation sets overlap (random: resamples, whose
  training sets overlap too, the corrected resampled t; linguistic: the overlap-corrected t with
  the f of the actual validation sets), and Student's t when they are disjoint or independent."""
  num_folds = 10
  ds = _toy_dataset()
  units = _units(mode, ds, num_folds)
  if mode == "heldout":  # draw d: its own corpus, the last 5 phrases held out; ids tagged by draw
    held_out = np.array([int(p[1:]) >= 15 for p in ds["phrases"]])
    ds = {**ds, "subsets": np.where(held_out, "test", "")}
    split = {d: tuple(d * len(ds["labels"]) + idx for idx in splits.fold_split(ds, 0, mode))
             for d in units}
  else:
    split = {k: splits.fold_split(ds, k, mode, num_folds, 0.2, seed=3) for k in units}
  valid = [set(v.tolist()) for _, v in split.values()]
  valid_overlap = any(a & b for i, a in enumerate(valid) for b in valid[i + 1:])
  results = {k: {"uar": 0.5 + 0.01 * (k % 4), "wa": 0.5, "segment_uar": 0.5,
                 "counts": {"valid_utterances": {"a": len(v)}, "train_utterances": {"a": len(t)}},
                 "config": {"train": {"num_folds": num_folds}}}
             for k, (t, v) in split.items()}
  s = summary.summarize(results, split=mode, valid_fraction=0.2)
  method = s["statistics"]["method"]
  assert (method != summary.STUDENT_T) == valid_overlap, (mode, method)
  if method == summary.CORRECTED_T:  # Nadeau & Bengio's correction is for overlapping resamples
    train = [set(t.tolist()) for t, _ in split.values()]
    assert any(a & b for i, a in enumerate(train) for b in train[i + 1:])
  if method == summary.OVERLAP_T:  # the summary's windows are the splitter's validation sets
    actual = summary.overlap_design(valid)
    assert s["statistics"]["variance_factor"] == pytest.approx(actual.factor, rel=1e-12)
    assert s["statistics"]["df"] == pytest.approx(actual.df, rel=1e-12)


def test_linguistic_interval_covers_95_percent_of_simulated_corpora():
  """Coverage of the 95 % CI of the mean UAR over the 10 linguistic folds, simulated: 100
  phrases, each with a random effect on the score (phrase difficulty, plus the mean noise of its
  utterances), and a small independent training noise per fold. The folds come from the real
  splitter. Seeded; the target is the population mean.

  Measured with this seed (400 corpora): overlap-corrected t 0.935, plain Student t over the
  folds (the old behaviour) 0.785. With 4,000 corpora (seeds 1, 2): overlap-corrected 0.955 and
  0.962, plain t 0.822 and 0.833, well below 0.95; Nadeau & Bengio's f = 1/n + 0.25 would give
  0.971 and 0.980 (conservative). Tolerance 0.03: about 2.7 binomial standard errors at 400.
  """
  num_folds, num_phrases, mu = 10, 100, 0.6
  ds = {"labels": np.zeros(num_phrases, int), "speakers": np.zeros(num_phrases, int),
        "phrases": np.array([f"p{i:03d}" for i in range(num_phrases)])}
  weights = np.zeros((num_phrases, num_folds))  # fold score = phrase effects @ weights
  for k in range(num_folds):
    _, v = splits.fold_split(ds, k, "linguistic", num_folds, seed=0)
    weights[v, k] = 1.0 / len(v)
  rng = np.random.default_rng(0)
  sims = 400
  scores = (mu + rng.normal(0.0, 0.08, (sims, num_phrases)) @ weights
            + rng.normal(0.0, 0.005, (sims, num_folds)))
  covered = plain = 0
  for x in scores:
    results = {k: {"uar": u, "wa": u, "segment_uar": u} for k, u in enumerate(x)}
    ci = summary.summarize(results, split="linguistic", num_folds=num_folds)["metrics"]["uar"]
    covered += ci["low"] <= mu <= ci["high"]
    p = summary.mean_ci(x)
    plain += p.low <= mu <= p.high
  assert abs(covered / sims - 0.95) < 0.03, covered / sims
  assert plain / sims < 0.90, plain / sims  # what the plain t gave: the bug this fixes


def test_replicate_draws_use_the_plain_t_and_the_draw_label():
  """The replicate protocol: results keyed by draw, split "heldout", no counts (so no
  valid_train_ratio), independent draws: Student's t and the paired t-test over draws."""
  def draws(uars):
    return {d: {"uar": u, "wa": u, "segment_uar": u, "confusion": [[3, 1], [1, 3]],
                "classes": ["a", "b"]} for d, u in enumerate(uars)}
  ref = summary.summarize(draws(B), name="ref", system="ACRNN", split="heldout", unit="draw")
  new = summary.summarize(draws(A), name="new", system="ACRNN-r", split="heldout", unit="draw")
  assert all(r["valid_train_ratio"] is None for r in new["folds"])
  lo, hi = scipy.stats.t.interval(0.95, len(A) - 1, loc=np.mean(A), scale=scipy.stats.sem(A))
  assert (new["metrics"]["uar"]["low"], new["metrics"]["uar"]["high"]) == pytest.approx((lo, hi))
  assert new["statistics"]["method"] == "t" and new["unit"] == "draw"
  md = summary.render_markdown(new)
  assert "| draw | UAR (%)" in md and ": 5 draw(s)" in md and "over the draws" in md
  (entry,) = summary.compare_systems([ref, new])
  ref_t = scipy.stats.ttest_rel(A, B)
  assert (entry["uar"]["t"], entry["uar"]["p"]) == pytest.approx((ref_t.statistic, ref_t.pvalue))
  table = summary.render_compare([ref, new], paired=[entry])
  assert "| draws |" in table and "over matching draws" in table and "| paired t |" in table
  # Folds and draws are not paired with each other.
  folds = summary.summarize(draws(B), split="heldout")
  (bad,) = summary.compare_systems([folds, new])
  assert "units differ" in bad["error"]
  with pytest.raises(ValueError, match="unit"):
    summary.summarize(draws(A), unit="replicate")


def test_old_results_get_the_collapse_figures_from_their_confusion_matrix():
  cm = [[6, 2, 0], [4, 4, 0], [5, 0, 3]]  # predicted: 15, 6, 3 of 24
  old = {"uar": 0.5, "wa": 0.5, "segment_uar": 0.5, "confusion": cm, "classes": ["a", "b", "c"]}
  (row,) = summary.fold_rows({0: old})
  assert row["largest_predicted_share"] == pytest.approx(15 / 24)
  assert row["worst_class_recall"] == pytest.approx(3 / 8)
  # A result with the figures but no matrix keeps its own values.
  (row,) = summary.fold_rows({0: {"uar": 0.5, "wa": 0.5, "segment_uar": 0.5,
                                  "worst_class_recall": 0.2, "largest_predicted_share": 0.7}})
  assert (row["worst_class_recall"], row["largest_predicted_share"]) == (0.2, 0.7)
