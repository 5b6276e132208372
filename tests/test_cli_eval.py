"""End to end on a tiny SSA-CRNN-r trained ONCE for this module (2 folds of 1 epoch on a tiny
generated corpus, through the real `python -m bin.crossval`): the cross-validation summary and its
resume, the --compare table, the evaluation figures, and `python -m bin.predict` on new files."""

import csv
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.stats
import soundfile as sf
from PIL import Image

from ssa_jax import crossval, rundir
from ssa_jax import features, predict, summary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The shared tiny model (tests/tiny_config.py) on a tiny generated corpus: 2 speakers x 2 classes x
# 4 phrases, 0.4 s segments (real speech-like audio needs more than 8 frames a segment), 2 folds
# of 1 epoch. The CLI subprocesses import it with the repository on PYTHONPATH.
TINY = """
from tests.tiny_config import tiny_config


def get_config(model="ssa_crnn"):
  c = tiny_config(model, "l1_sphere" if model == "ssa_crnn" else "none", {{
      "data.cache_dir": {cache!r}, "data.classes": ("neu", "ang"), "model.num_classes": 2,
      "data.synthetic.num_speakers": 2, "data.synthetic.num_phrases": 4,
      "data.synthetic.repetitions": 1, "features.n_mels": 8, "features.segment_frames": 40,
      "features.min_segment_frames": 10, "train.batch_size": 4, "train.valid_fraction": 0.5,
      "train.num_folds": 2, "train.epochs": 1}})
  c.name = "tiny_" + model
  return c
"""


def _run(*args, timeout=600):
  env = {**os.environ, "PYTHONPATH": REPO}
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=timeout)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  root = tmp_path_factory.mktemp("cv")
  cfg = root / "tiny_config.py"
  cfg.write_text(TINY.format(cache=str(root / "cache")))
  workdir = root / "run"
  p = _run("bin.crossval", "--config", str(cfg), "--folds", "0-1", "--workdir", str(workdir))
  assert p.returncode == 0, p.stderr[-3000:]
  return {"root": root, "config": str(cfg), "workdir": str(workdir), "stdout": p.stdout,
          "stderr": p.stderr}


def _check_png(path):
  with Image.open(path) as im:
    assert im.format == "PNG"
    px = np.asarray(im.convert("RGB"))
  assert px.shape[0] > 100 and px.shape[1] > 100 and px.std() > 1.0


def test_crossval_writes_summary(run):
  wd = run["workdir"]
  s = json.load(open(os.path.join(wd, "summary.json")))
  results = [json.load(open(os.path.join(wd, f"fold{k}", "result.json"))) for k in (0, 1)]
  assert [r["fold"] for r in s["folds"]] == [0, 1]
  assert [r["uar"] for r in s["folds"]] == [r["uar"] for r in results]
  # The random split: the corrected resampled t (Nadeau & Bengio), written out here.
  uars = np.array([r["uar"] for r in results])
  ratio = np.mean([sum(r["counts"]["valid_utterances"].values())
                   / sum(r["counts"]["train_utterances"].values()) for r in results])
  half = scipy.stats.t.ppf(0.975, 1) * uars.std(ddof=1) * np.sqrt(1 / 2 + ratio)
  assert s["metrics"]["uar"]["mean"] == pytest.approx(uars.mean())
  assert s["metrics"]["uar"]["ci"] == pytest.approx(half)
  assert s["statistics"]["method"] == "corrected resampled t"
  # Per-class recalls from the confusion matrices, also in result.json.
  for row, r in zip(s["folds"], results):
    cm = np.array(r["confusion"])
    np.testing.assert_allclose(row["recalls"], np.diag(cm) / cm.sum(1))
    np.testing.assert_allclose(r["recalls"], np.diag(cm) / cm.sum(1))
    assert row["worst_class_recall"] == pytest.approx(min(np.diag(cm) / cm.sum(1)))
  assert s["system"] == "SSA-CRNN-r"
  md = open(os.path.join(wd, "summary.md")).read()
  assert len([l for l in md.splitlines() if l.startswith(("| 0 |", "| 1 |"))]) == 2
  assert sum(l.startswith("| mean ± 95 % CI |") for l in md.splitlines()) == 1
  assert "summary.md" in run["stdout"]
  # The library's INFO lines reach stderr (ssa_jax/cli/_cli.py), JAX's do not.
  assert "train.py" in run["stderr"] and "fold 1 (random split): " in run["stderr"]
  assert "xla_bridge" not in run["stderr"] and "Unable to initialize backend" not in run["stderr"]
  # TensorBoard events written live by the training loop, beside metrics.jsonl.
  assert any("tfevents" in f for f in os.listdir(os.path.join(wd, "fold0")))


def test_crossval_rerun_does_not_retrain(run):
  wd = run["workdir"]
  stamps = {k: os.stat(os.path.join(wd, f"fold{k}", "result.json")).st_mtime_ns for k in (0, 1)}
  cfg = crossval.load_config(run["config"], {})

  def must_not_train(*args, **kwargs):
    raise AssertionError(f"retrained {args[1:]}")

  reported = []
  s, errors = crossval.run_crossval(cfg, wd, "0-1", train_fn=must_not_train,
                                    prepare_fn=lambda c: pytest.fail("prepared the data"),
                                    report=reported.append)
  assert errors == [] and s["num_folds"] == 2
  assert sum("not retrained" in line for line in reported) == 2
  for k in (0, 1):
    assert os.stat(os.path.join(wd, f"fold{k}", "result.json")).st_mtime_ns == stamps[k]
  # More epochs asked for than were run: the fold is not complete any more.
  cfg.train.epochs = 2
  assert rundir.FoldDir.of(wd, 0).complete_result(cfg) is None


def test_failed_fold_is_reported_and_the_rest_summarised(run, tmp_path, capsys):
  cfg = crossval.load_config(run["config"], {"train.num_folds": 3})

  def flaky_train(config, workdir, fold, dataset=None):
    if fold == 1:
      raise FloatingPointError("non-finite loss at step 3")
    return {"uar": 0.5, "wa": 0.5, "segment_uar": 0.5, "best_epoch": 1, "fold": fold}

  s, errors = crossval.run_crossval(cfg, str(tmp_path), "0-2", train_fn=flaky_train,
                                    prepare_fn=lambda c: None)
  assert [r["fold"] for r in s["folds"]] == [0, 2] and s["folds_failed"] == [1]
  assert len(errors) == 1 and "fold 1" in errors[0] and "non-finite" in errors[0]
  assert "Folds [1] failed" in open(tmp_path / "summary.md").read()
  with pytest.raises(RuntimeError, match="no fold finished"):
    crossval.run_crossval(cfg, str(tmp_path / "x"), "1", train_fn=flaky_train,
                          prepare_fn=lambda c: None)


def test_fold_specs():
  assert crossval.parse_folds("0-2,5", 10) == [0, 1, 2, 5]
  assert crossval.parse_folds("3,1,1", 10) == [1, 3]
  assert crossval.parse_folds(None, 3) == [0, 1, 2]
  with pytest.raises(ValueError, match="outside"):
    crossval.parse_folds("0-10", 10)
  with pytest.raises(ValueError, match="cannot read"):
    crossval.parse_folds("a-b", 10)


def test_compare_one_row_per_system_overrides_for_all(run, tmp_path):
  specs = [f"{run['config']}:acrnn", f"{run['config']}:ssa_crnn"]
  configs = [crossval.load_config(s, {"train.epochs": 3, "train.pooling": "mean"}) for s in specs]
  assert [c.train.epochs for c in configs] == [3, 3]
  assert [c.train.pooling for c in configs] == ["mean", "mean"]
  seen = []

  def fake_train(config, workdir, fold, dataset=None):  # records what it was asked to train
    seen.append((config.name, os.path.basename(workdir), fold))
    r = {"uar": 0.5 + 0.1 * fold, "wa": 0.6, "segment_uar": 0.4, "best_epoch": 1,
         "epochs_run": 3, "fold": fold}
    os.makedirs(os.path.join(workdir, f"fold{fold}"), exist_ok=True)
    json.dump(r, open(os.path.join(workdir, f"fold{fold}", "result.json"), "w"))
    return r

  summaries, errors = crossval.run_compare(configs, str(tmp_path), "0,1", train_fn=fake_train,
                                           prepare_fn=lambda c: None)
  assert errors == []
  assert seen == [("tiny_acrnn", "tiny_acrnn", 0), ("tiny_acrnn", "tiny_acrnn", 1),
                  ("tiny_ssa_crnn", "tiny_ssa_crnn", 0), ("tiny_ssa_crnn", "tiny_ssa_crnn", 1)]
  md = open(tmp_path / "compare.md").read()
  table1 = md.split("\n\n")[1]  # the first table: one row per system
  rows = [l for l in table1.splitlines() if l.startswith("| ") and not l.startswith("| SER")]
  assert [r.split("|")[1].strip() for r in rows] == ["ACRNN", "SSA-CRNN-r"]
  # Folds 0.5 and 0.6, the random split, no counts in these results: n_valid/n_train from
  # valid_fraction 0.5 = 1; t_{0.975,1} s sqrt(1/2 + 1) = 12.7062 x 0.070711 x 1.224745 = 1.10039.
  assert all("55.00 ± 110.04" in r for r in rows)
  paired = json.load(open(tmp_path / "compare.json"))["paired"]
  assert [p["system"] for p in paired] == ["SSA-CRNN-r"] and paired[0]["uar"]["mean"] == 0.0
  assert os.path.isfile(tmp_path / "tiny_acrnn" / "summary.md")
  with pytest.raises(ValueError, match="not found"):
    crossval.load_config("configs/nope.py", {})
  with pytest.raises(ValueError, match="overrides"):
    crossval.load_config(specs[0], {"train.nope": 1})


def test_evaluate_figures(run, tmp_path):
  wd = run["workdir"]
  utt = "spk01M_ang_p03_r0"  # the generated corpus names utterances speaker_class_phrase_rep
  p = _run("bin.evaluate", "--workdir", wd, "--fold", "1", "--out", str(tmp_path),
           "--utterance", utt)
  assert p.returncode == 0, p.stderr[-3000:]
  pngs = sorted(f for f in os.listdir(tmp_path) if f.endswith(".png"))
  assert len(pngs) == 3 and "confusion.png" in pngs and "tsne.png" in pngs
  assert f"attention_{utt}.png" in pngs
  for f in pngs:
    _check_png(tmp_path / f)
    assert str(tmp_path / f) in p.stdout
  report = json.load(open(tmp_path / "evaluation.json"))
  result = json.load(open(os.path.join(wd, "fold1", "result.json")))
  # Recomputed from the restored best checkpoint through training's own fold.evaluate:
  assert report["step"] == result["best_step"]
  assert report["confusion"] == result["confusion"]
  assert report["uar"] == result["uar"] and report["recalls"] == result["recalls"]
  assert report["segment_uar"] == result["segment_uar"]
  assert report["attention_utterance"] == utt
  # An unknown utterance id is a one-line error.
  p = _run("bin.evaluate", "--workdir", wd, "--fold", "1", "--utterance", "nope")
  lines = [l for l in p.stderr.splitlines() if l.strip()]
  assert p.returncode == 1 and len(lines) == 1, p.stderr
  assert lines[0].startswith("error: utterance 'nope' is not in the corpus")


def _write_inputs(folder):
  rng = np.random.default_rng(0)
  t = np.arange(int(1.5 * 44100)) / 44100
  x = 0.3 * np.sin(2 * np.pi * 200 * t) + 0.02 * rng.normal(size=t.shape)
  sf.write(folder / "stereo_44k.wav", np.stack([x, 0.7 * x], 1), 44100)
  sf.write(folder / "short.wav", 0.1 * rng.normal(size=1600), 16000)  # 0.1 s
  (folder / "nested").mkdir()
  sf.write(folder / "nested" / "mono_22k.flac", 0.1 * rng.normal(size=22050), 22050)
  (folder / "nested" / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")


def test_predict_cli_json_and_bad_file(run, tmp_path):
  _write_inputs(tmp_path)
  fold = os.path.join(run["workdir"], "fold0")
  p = _run("bin.predict", "--workdir", fold, str(tmp_path), "--json", "--pooling", "mean")
  assert p.returncode == 1
  bad = str(tmp_path / "nested" / "broken.wav")
  assert bad in p.stderr and "Traceback" not in p.stderr
  doc = json.loads(p.stdout)
  assert doc["classes"] == ["neu", "ang"] and doc["failed"] == 1 and doc["pooling"] == "mean"
  by_name = {os.path.basename(r["path"]): r for r in doc["files"]}
  assert set(by_name) == {"stereo_44k.wav", "short.wav", "mono_22k.flac", "broken.wav"}
  assert by_name["broken.wav"]["error"].startswith(bad)
  for name in ("stereo_44k.wav", "short.wav", "mono_22k.flac"):
    r = by_name[name]
    probs = np.array(list(r["probabilities"].values()))
    assert probs.sum() == pytest.approx(1.0, abs=1e-9)
    seg = np.array([list(s["probabilities"].values()) for s in r["segments"]])
    np.testing.assert_allclose(probs, seg.mean(axis=0) / seg.mean(axis=0).sum(), rtol=1e-9)
  assert len(by_name["short.wav"]["segments"]) == 1
  # Same model through the library: the CLI printed what predict_files computes.
  lib = predict.predict_files(predict.load_predictor(fold), [str(tmp_path / "stereo_44k.wav")],
                              pooling="mean")[0]
  assert lib["label"] == by_name["stereo_44k.wav"]["label"]
  np.testing.assert_allclose(list(lib["probabilities"].values()),
                             list(by_name["stereo_44k.wav"]["probabilities"].values()), atol=1e-6)


def test_predict_cli_text_and_errors(run, tmp_path):
  _write_inputs(tmp_path)
  fold = os.path.join(run["workdir"], "fold0")
  p = _run("bin.predict", "--workdir", fold, str(tmp_path / "short.wav"), "--norm", "train")
  assert p.returncode == 0, p.stderr[-2000:]
  assert str(tmp_path / "short.wav") in p.stdout and "segment 0" in p.stdout
  assert "norm=train" in p.stdout
  # A run directory instead of one of its folds: one line naming a fold to pass instead.
  p = _run("bin.predict", "--workdir", run["workdir"], str(tmp_path / "short.wav"))
  lines = [l for l in p.stderr.splitlines() if l.strip()]
  assert p.returncode == 1 and len(lines) == 1, p.stderr
  assert lines[0].startswith(f"error: {run['workdir']}: not a trained fold directory")
  assert os.path.join(run["workdir"], "fold0") in lines[0]


def test_predict_cli_streams_csv_and_embeddings(run, tmp_path):
  """--format csv with every file streamed (--stream_above_s 0) and --embeddings: the segment
  posteriors of the library's whole-file path; the embeddings equal the model's own z_em / z_sp
  on segments built here (librosa reference features, numpy statistics)."""
  _write_inputs(tmp_path)
  fold = os.path.join(run["workdir"], "fold0")
  out = tmp_path / "emb.npz"
  p = _run("bin.predict", "--workdir", fold, str(tmp_path), "--format", "csv", "--embeddings",
           str(out), "--stream_above_s", "0")
  bad = str(tmp_path / "nested" / "broken.wav")
  assert p.returncode == 1
  errs = [l for l in p.stderr.splitlines() if l.strip()]  # not a terminal: no progress bar
  assert errs[0].startswith(f"error: {bad}") and len(errs) == 2, p.stderr
  assert errs[1].startswith("3 file(s) predicted, 1 failed; embeddings of 3")
  rows = list(csv.DictReader(io.StringIO(p.stdout)))
  assert list(rows[0]) == ["path", "segment", "start_s", "end_s", "label", "neu", "ang"]
  p_ = predict.load_predictor(fold)
  whole = [r for r in predict.predict_files(p_, predict.find_audio_files([tmp_path]))
           if "error" not in r]
  segs = [(r["path"], s) for r in whole for s in r["segments"]]
  assert [(r["path"], int(r["segment"])) for r in rows] == [(w, s["index"]) for w, s in segs]
  np.testing.assert_allclose([[float(r["neu"]), float(r["ang"])] for r in rows],
                             [[s["probabilities"]["neu"], s["probabilities"]["ang"]]
                              for _, s in segs], atol=2e-6)
  assert [r["label"] for r in rows] == [s["label"] for _, s in segs]

  emb = np.load(out)  # no pickle needed
  assert list(emb["paths"]) == [r["path"] for r in whole]
  assert list(emb["failed"]) == [bad]
  np.testing.assert_array_equal(emb["segment_file"],
                                np.repeat(np.arange(3), [len(r["segments"]) for r in whole]))
  fcfg = p_.config.features
  seg = int(fcfg.segment_frames)
  wave, sr = sf.read(tmp_path / "stereo_44k.wav", dtype="float32")
  f = features.log_mel_3d(wave.mean(axis=1), sr, fcfg)
  n = f.shape[0] // seg  # 1.5 s: 148 frames, 3 segments of 40 and a tail of 28 (>= 10, kept)
  x = np.zeros(((n + 1) * seg,) + f.shape[1:], np.float32)
  x[:f.shape[0]] = (f - f.mean(axis=0)) / np.maximum(f.std(axis=0), 1e-3)
  mask = np.arange((n + 1) * seg) < f.shape[0]
  _, aux = p_.model.apply(p_.variables, x.reshape((n + 1, seg) + f.shape[1:]),
                          mask.reshape(n + 1, seg), train=False)
  rows_ = emb["segment_file"] == 2
  for key in ("z_em", "z_sp"):
    np.testing.assert_allclose(emb[key + "_segments"][rows_], np.asarray(aux[key]), atol=2e-4)
    np.testing.assert_allclose(emb[key][2], np.asarray(aux[key]).mean(axis=0), atol=2e-4)
  np.testing.assert_allclose(emb["end_s"][rows_][-1], f.shape[0] * 0.01)
