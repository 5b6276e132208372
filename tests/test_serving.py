"""The export (`bin.export`, ssa_jax/export.py) and the light runtime (ssa_jax/serving.py) against
`predict.predict_files` on the same run folder and audio files: tiny ACRNN and SSA-CRNN, both
normalisations, both poolings, within 1e-5; the runtime imports nothing heavy, and predicts in a
fresh virtual environment holding only `serving.REQUIREMENTS` (jax, jaxlib, numpy, soundfile, soxr
and flatbuffers, which jax.export's deserialization needs) and what they require, from a copy of
its own files; one-line errors of both commands.

The run folders are written with the training's own `checkpointing.save` and `rundir` (config.json
and orbax checkpoints, as `bin.train` leaves them), with random weights and BatchNorm statistics
away from their initial values, and speaker statistics fitted on three generated voices: training
the two tiny models would take about two minutes of this suite.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import venv

import jax
import numpy as np
import pytest
import soundfile as sf

from conftest import tiny_config, vigorous
from ssa_jax import checkpointing, export, features, predict, rundir, serving
from ssa_jax.models import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-5  # the parity bound: max abs difference of every probability and score
HEAVY = ("flax", "optax", "orbax", "ml_collections", "librosa", "chex", "absl", "torch",
         "tensorflow")
MAX_DIFF = {}  # filled by the parity tests, printed by the last one (the report's figures)


def _write_fold(workdir, name, overrides=None):
  """A run folder <workdir>/fold0 of a tiny `name` model (module docstring)."""
  # No Eq. 8 temperature (K x E = 32 would saturate the softmax of random weights).
  cfg = tiny_config(name, "none", {"features.min_segment_frames": 4, "train.eval_batch_size": 4,
                                   **(overrides or {})})
  if name == "ssa_crnn":
    cfg.model.num_speakers = 3
  frames, mels = int(cfg.features.segment_frames), int(cfg.features.n_mels)
  model = build_model(cfg.model)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, frames, mels, 3), np.float32),
                          jax.ShapeDtypeStruct((1, frames), bool))
  variables = vigorous(shapes, seed=len(name))
  parts = [features.segment(f, frames, 4) for f in features.compute(
      [(1 + s) * _tone(0.5, 16000, 5 + s).astype(np.float32) for s in range(3)], cfg.features)]
  stats = features.fit_speaker_stats(np.concatenate([p[0] for p in parts]),
                                     np.concatenate([p[1] for p in parts]),
                                     np.concatenate([np.full(len(p[0]), s) for s, p in enumerate(parts)]))
  fold = rundir.FoldDir.of(str(workdir), 0)
  fold.write_config(cfg)
  manager = checkpointing.checkpoint_manager(fold.checkpoints_path)
  state = {"step": 12, "params": variables["params"], "batch_stats": variables["batch_stats"],
           "opt_state": {"count": np.zeros((), np.int32)}, "bad_step": 0}
  checkpointing.save(manager, 12, state, {"epoch": 1}, stats,
                     {"classes": list(cfg.data.classes), "speakers": ["s0", "s1", "s2"]},
                     uar=0.5, epoch=1)
  manager.close()
  return fold.path


def _tone(seconds, sr, seed, channels=1):
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * sr)) / sr
  x = 0.3 * np.sin(2 * np.pi * (150 + 60 * seed) * t * (1 + 0.3 * t)) + 0.05 * rng.normal(size=t.shape)
  return np.stack([x, 0.4 * x], axis=1) if channels == 2 else x


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
  d = tmp_path_factory.mktemp("serving_audio")
  sf.write(d / "a_16k.wav", _tone(0.9, 16000, 1), 16000)               # 88 frames: 11 segments
  sf.write(d / "b_stereo_44k.flac", _tone(0.5, 44100, 2, 2), 44100)     # 48 frames
  sf.write(d / "c_8k.wav", _tone(0.33, 8000, 3), 8000)                 # 31: a 7-frame tail kept
  sf.write(d / "d_short.wav", _tone(0.1, 16000, 4), 16000)             # 8 frames: one segment
  (d / "e_corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
  return [str(d / f) for f in ("a_16k.wav", "b_stereo_44k.flac", "c_8k.wav", "d_short.wav",
                               "e_corrupt.wav")]


@dataclasses.dataclass
class Run:
  fold: str                     # the run folder <workdir>/fold0
  path: str                     # its export
  predictor: predict.Predictor  # the run folder's model (bin.predict's)
  model: serving.Model          # the export's, loaded once (its compilations are reused)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """{"acrnn" | "ssa_crnn": Run} of the tiny models."""
  out = {}
  for name in ("acrnn", "ssa_crnn"):
    work = tmp_path_factory.mktemp(f"serving_{name}")
    fold = _write_fold(work, name)
    path = str(work / "model.npz")
    meta = export.export_fold(fold, path)
    assert meta["model"]["name"] == name and meta["step"] == 12
    out[name] = Run(fold, path, predict.load_predictor(fold), serving.load(path))
  return out


@pytest.fixture(params=["acrnn", "ssa_crnn"])
def run(request, runs):
  return runs[request.param]


def _max_diff(got, want):
  """Max abs difference of every probability and score of two predict_files results, after
  checking that everything else (paths, errors, labels, segments, times) is equal."""
  assert len(got) == len(want)
  diff = 0.0
  for g, w in zip(got, want):
    assert g.keys() == w.keys() and g["path"] == w["path"]
    if "error" in w:
      assert g["error"] == w["error"]
      continue
    assert (g["label"], g["pooling"], g["norm"], g["duration_s"]) == \
        (w["label"], w["pooling"], w["norm"], w["duration_s"])
    pairs = [(g["probabilities"], w["probabilities"]), (g["scores"], w["scores"])]
    assert len(g["segments"]) == len(w["segments"])
    for gs, ws in zip(g["segments"], w["segments"]):
      assert {k: v for k, v in gs.items() if k != "probabilities"} == \
          {k: v for k, v in ws.items() if k != "probabilities"}
      pairs.append((gs["probabilities"], ws["probabilities"]))
    for a, b in pairs:
      assert a.keys() == b.keys()
      diff = max(diff, max(abs(a[k] - b[k]) for k in a))
  return diff


@pytest.mark.parametrize("pooling", ["max", "mean"])
@pytest.mark.parametrize("norm", ["self", "train"])
def test_runtime_equals_predict_files(run, audio_files, norm, pooling):
  want = predict.predict_files(run.predictor, audio_files, norm=norm, pooling=pooling)
  got = run.model.predict_files(audio_files, norm=norm, pooling=pooling)
  assert [("error" in r) for r in got] == [False] * 4 + [True]
  assert [len(r["segments"]) for r in got[:4]] == [11, 6, 4, 1]
  seg = np.array([list(s["probabilities"].values()) for r in got[:4] for s in r["segments"]])
  assert np.ptp(seg, axis=0).max() > 0.01  # the outputs depend on the input (not a constant)
  diff = _max_diff(got, want)
  MAX_DIFF[(run.predictor.config.model.name, norm, pooling)] = diff
  assert diff <= TOL, diff


def test_norms_differ_and_train_stats_travel(run, audio_files):
  """The file's statistics are the checkpoint's, and "train" is not "self" on this data."""
  m, stats = run.model, run.predictor.stats
  np.testing.assert_array_equal(m.stats.global_mean, stats.global_mean)
  np.testing.assert_array_equal(m.stats.global_std, stats.global_std)
  assert m.stats.speakers == stats.speakers
  a = m.predict_file(audio_files[0], norm="self")
  b = m.predict_file(audio_files[0], norm="train")
  assert max(abs(a["scores"][c] - b["scores"][c]) for c in m.classes) > 1e-3


def test_predict_wave_equals_predict_file(run, audio_files):
  m = run.model
  wave, sr = sf.read(audio_files[1], dtype="float32")  # stereo, 44.1 kHz
  assert wave.ndim == 2 and sr == 44100
  from_wave = m.predict_wave(wave, sr, name="b")
  from_file = m.predict_file(audio_files[1])
  assert from_wave.pop("name") == "b" and from_file.pop("path") == audio_files[1]
  assert from_wave == from_file
  with pytest.raises(ValueError, match="^silence: all samples are zero"):
    m.predict_wave(np.zeros(4000, np.float32), 16000, name="silence")
  with pytest.raises(ValueError, match="e_corrupt.wav: unreadable or corrupt"):
    m.predict_file(audio_files[4])


def test_exported_outputs_and_metadata(run):
  """The exported function with a symbolic batch: any batch size, the model's outputs."""
  m, predictor = run.model, run.predictor
  meta = m.metadata
  assert meta["format"] == serving.FORMAT and meta["classes"] == list(predictor.classes)
  assert meta["features"] == predictor.config.features.to_dict()
  assert meta["model"] == predictor.config.model.to_dict()
  assert set(meta["platforms"]) >= {"cpu", "cuda", "tpu"}
  ssa = predictor.config.model.name == "ssa_crnn"
  assert set(meta["outputs"]) == {"probs", "z_em"} | ({"z_sp", "speaker_mass", "speaker_pred"}
                                                      if ssa else set())
  rng = np.random.default_rng(3)
  x = rng.normal(size=(4, 8, 4, 3)).astype(np.float32)
  mask = np.arange(8)[None, :] < np.array([8, 5, 1, 6])[:, None]
  x[~mask] = 0.0
  got = m.outputs(x, mask)  # 4 rows: the batch size the predictions above compiled
  logits, aux = jax.jit(lambda v, x, k: predictor.model.apply(v, x, k, train=False))(
      predictor.variables, x, mask)
  np.testing.assert_allclose(got["probs"], jax.nn.softmax(logits), atol=1e-6)
  np.testing.assert_allclose(got["z_em"], aux["z_em"], atol=1e-5)
  if ssa:
    np.testing.assert_allclose(got["z_sp"], aux["z_sp"], atol=1e-5)
  # one row: another batch size of the same function (rows are independent in evaluation mode)
  np.testing.assert_allclose(m.outputs(x[1:2], mask[1:2])["probs"], got["probs"][1:2], atol=1e-6)


# --------------------------------------------------------------------------- refusals and errors


class _BatchAsInt:
  """A model whose output shape needs the batch size as a Python int: not exportable with a
  symbolic batch."""

  def apply(self, variables, x, mask, train=False):
    del variables, mask, train
    return np.zeros((int(x.shape[0]), 4), np.float32) + x.sum(), {}


def test_unexportable_model_is_refused_in_one_line(tmp_path):
  cfg = tiny_config("acrnn")
  pred = predict.Predictor(_BatchAsInt(), {}, cfg, tuple(cfg.data.classes))
  with pytest.raises(ValueError) as e:
    export.export_predictor(pred, tmp_path / "m.npz")
  assert str(e.value).startswith("jax.export cannot export this model with a symbolic batch size")
  assert "\n" not in str(e.value) and not (tmp_path / "m.npz").exists()


def test_load_refuses_other_files(tmp_path):
  np.savez(tmp_path / "other.npz", a=np.zeros(3))
  with pytest.raises(ValueError, match=f"^{tmp_path / 'other.npz'}: not a model exported by"):
    serving.load(tmp_path / "other.npz")
  (tmp_path / "text.npz").write_text("hello")
  with pytest.raises(ValueError, match=f"^{tmp_path / 'text.npz'}: not a model exported by"):
    serving.load(tmp_path / "text.npz")


def _run(args, **kw):
  env = {**os.environ, "PYTHONPATH": REPO, **kw.pop("env", {})}
  return subprocess.run([sys.executable, *args], cwd=kw.pop("cwd", REPO), env=env,
                        capture_output=True, text=True, timeout=300, **kw)


def test_bin_export_cli_and_one_line_errors(runs, tmp_path):
  r = runs["acrnn"]
  out = tmp_path / "cli.npz"
  p = _run(["-m", "bin.export", "--workdir", r.fold, "--out", str(out)])
  assert p.returncode == 0, p.stderr[-3000:]
  assert p.stdout.startswith(f"wrote {out} (acrnn, step 12, ") and "platforms cpu, cuda" in p.stdout
  with np.load(out) as a, np.load(r.path) as b:  # what the library writes (the serialized
    assert a.files == b.files                     # function holds source locations: not compared)
    assert all(np.array_equal(a[k], b[k]) for k in a.files if k != "function")
  np.testing.assert_array_equal(serving.load(out).outputs(np.ones((4, 8, 4, 3)), np.ones((4, 8), bool))["probs"],
                                r.model.outputs(np.ones((4, 8, 4, 3)), np.ones((4, 8), bool))["probs"])
  missing = str(tmp_path / "nope")
  p = _run(["-m", "bin.export", "--workdir", missing, "--out", str(out)])
  assert p.returncode == 1 and p.stderr.strip() == f"error: {missing}: no such run folder"
  untrained = tmp_path / "untrained"
  (untrained / "checkpoints").mkdir(parents=True)
  shutil.copy(os.path.join(r.fold, "config.json"), untrained / "config.json")
  p = _run(["-m", "bin.export", "--workdir", str(untrained), "--out", str(tmp_path / "u.npz")])
  lines = [l for l in p.stderr.splitlines() if l.strip()]
  assert p.returncode == 1 and len(lines) == 1 and "no checkpoint" in lines[0], p.stderr


def test_serving_cli_prints_like_bin_predict_and_imports_nothing_heavy(runs, audio_files):
  """`python -m ssa_jax.serving` in a fresh interpreter (`-X importtime` lists every module it
  imports): bin.predict's text, a bad file on its own line, no flax/optax/orbax/..., and no
  project module beyond `serving.RUNTIME_FILES`."""
  r = runs["ssa_crnn"]
  p = _run(["-X", "importtime", "-m", "ssa_jax.serving", r.path, *audio_files])
  assert p.returncode == 1  # the corrupt file
  assert p.stdout == "\n".join(serving.format_result(x) for x in
                               r.model.predict_files(audio_files[:4])) + "\n"
  err = [l for l in p.stderr.splitlines() if not l.startswith("import time:")]
  assert err[0].startswith(f"error: {audio_files[4]}: unreadable") and err[1:] == \
      ["4 file(s) predicted, 1 failed"], err
  modules = {l.split("|")[-1].strip() for l in p.stderr.splitlines()
             if l.startswith("import time:")}
  assert {"jax", "soxr", "soundfile", "flatbuffers"} <= modules  # the list is complete
  assert sorted({n.split(".")[0] for n in modules} & set(HEAVY)) == []
  ours = {n for n in modules if n.split(".")[0] == "ssa_jax"}  # serving itself is __main__
  assert ours == {"ssa_jax"} | {f"ssa_jax.{f[:-3]}" for f in serving.RUNTIME_FILES
                                if f not in ("__init__.py", "serving.py")}, ours


def test_serving_cli_one_line_errors(runs, audio_files, tmp_path, capsys):
  assert serving.main([str(tmp_path / "none.npz"), audio_files[0]]) == 1
  assert capsys.readouterr().err == f"error: no such file or folder: {tmp_path / 'none.npz'}\n"
  assert serving.main([audio_files[0], audio_files[0]]) == 1
  assert capsys.readouterr().err.startswith(f"error: {audio_files[0]}: not a model exported")
  assert serving.main([runs["acrnn"].path, str(tmp_path)]) == 1
  assert capsys.readouterr().err == f"error: no audio file found in {tmp_path}\n"
  with pytest.raises(SystemExit):
    serving.main([runs["acrnn"].path, audio_files[0], "--norm", "speaker"])
  assert "invalid choice: 'speaker'" in capsys.readouterr().err


# --------------------------------------------------------------------------- a clean environment


@pytest.fixture(scope="session")
def clean_venv(tmp_path_factory):
  """A new virtual environment (no system site-packages, no pip) into which this pip installs
  only `serving.REQUIREMENTS` and what they require (jax and jaxlib pinned to this environment's
  versions: the export's)."""
  root = tmp_path_factory.mktemp("venv")
  start = time.monotonic()
  venv.create(root / "env", with_pip=False, system_site_packages=False, clear=True)
  python = str(root / "env" / "bin" / "python")
  pins = [f"{r}=={jax.__version__}" if r in ("jax", "jaxlib") else r for r in serving.REQUIREMENTS]
  p = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
                      "--disable-pip-version-check", *pins],
                     capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  return python, time.monotonic() - start


_VENV_SCRIPT = """
import json, sys
from ssa_jax import serving
models, enroll_files, files = sys.argv[1:4], sys.argv[4:6], sys.argv[6:]
out = [serving.load(m).predict_files(files, norm="train", pooling="mean") for m in models[:2]]
m = serving.load(models[2])  # trained with enrollment
out.append(m.predict_files(files, norm="train", pooling="mean",
                           enroll_context=m.enrollment_context(enroll_files, norm="train")))
print(json.dumps(out))
"""


def test_predicts_in_a_clean_virtual_environment(clean_venv, runs, enroll_run, audio_files,
                                                 enroll_files, tmp_path):
  python, setup_s = clean_venv
  pkg = tmp_path / "runtime" / "ssa_jax"
  pkg.mkdir(parents=True)
  for f in serving.RUNTIME_FILES:  # the runtime's files only, no checkout on the path
    shutil.copy(os.path.join(REPO, "ssa_jax", f), pkg / f)
  env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
  probe = subprocess.run([python, "-c", "import flax"], env=env, cwd=pkg.parent,
                         capture_output=True, text=True)
  assert probe.returncode != 0 and "No module named 'flax'" in probe.stderr  # really clean
  names = ("acrnn", "ssa_crnn", "ssa_crnn enroll")
  predictors = [runs["acrnn"].predictor, runs["ssa_crnn"].predictor, enroll_run.predictor]
  p = subprocess.run([python, "-c", _VENV_SCRIPT, runs["acrnn"].path, runs["ssa_crnn"].path,
                      enroll_run.path, *enroll_files[:2], *audio_files], env=env,
                     cwd=pkg.parent, capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  for name, predictor, got in zip(names, predictors, json.loads(p.stdout)):
    ctx = None
    if name.endswith("enroll"):  # as bin.predict --enroll
      ctx = predict.enrollment_context(predictor, enroll_files[:2], "train")
    want = predict.predict_files(predictor, audio_files, norm="train", pooling="mean",
                                 enroll_context=ctx)
    diff = _max_diff(got, want)
    MAX_DIFF[(name, "clean venv: train", "mean")] = diff
    assert diff <= TOL, diff
  print(f"\nclean venv set up in {setup_s:.1f} s; max abs differences {MAX_DIFF}")


# --------------------------------------------------------------------------- enrollment


@pytest.fixture(scope="module")
def enroll_run(tmp_path_factory):
  """A Run of a tiny SSA-CRNN trained with enrollment (model.enroll_k=2; random weights as the
  others: enrollment adds no parameter), with two conv layers (fewer to compile)."""
  work = tmp_path_factory.mktemp("serving_enroll")
  fold = _write_fold(work, "ssa_crnn", {"model.enroll_k": 2, "model.conv_features": (3, 4)})
  path = str(work / "model.npz")
  meta = export.export_fold(fold, path)
  assert meta["format_version"] == 2 and meta["enroll_dim"] == 8  # 2 x lstm_units 4
  return Run(fold, path, predict.load_predictor(fold), serving.load(path))


@pytest.fixture(scope="module")
def enroll_files(tmp_path_factory):
  """Three enrollment files of one 'speaker' (rates and lengths differ) and a broken one."""
  d = tmp_path_factory.mktemp("serving_enroll_audio")
  sf.write(d / "e0.wav", _tone(0.6, 16000, 7), 16000)            # 5 segments
  sf.write(d / "e1.flac", _tone(0.4, 22050, 8, 2), 22050)        # stereo
  sf.write(d / "e2.wav", _tone(0.12, 16000, 9), 16000)           # one short segment
  (d / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
  return [str(d / f) for f in ("e0.wav", "e1.flac", "e2.wav", "broken.wav")]


@pytest.mark.parametrize("norm", ["self", "train"])
def test_enrollment_equals_predictor(enroll_run, audio_files, enroll_files, norm):
  """The runtime's enrollment states and predictions with them equal `bin.predict --enroll`'s
  (`predict.enrollment_context` + `predict_files(enroll_context=)`), and enrollment changes the
  predictions; without enrollment the model equals the Predictor without it."""
  m, p = enroll_run.model, enroll_run.predictor
  want_ctx = predict.enrollment_context(p, enroll_files[:3], norm)
  got_ctx = m.enrollment_context(enroll_files[:3], norm=norm)
  assert got_ctx.shape == want_ctx.shape == (3, 8)
  np.testing.assert_allclose(got_ctx, want_ctx, rtol=0, atol=TOL)
  want = predict.predict_files(p, audio_files, norm=norm, pooling="mean", enroll_context=want_ctx)
  got = m.predict_files(audio_files, norm=norm, pooling="mean", enroll_context=got_ctx)
  diff = _max_diff(got, want)
  MAX_DIFF[("ssa_crnn enroll", norm, "mean")] = diff
  assert diff <= TOL, diff
  plain_want = predict.predict_files(p, audio_files, norm=norm, pooling="mean")
  plain = m.predict_files(audio_files, norm=norm, pooling="mean")
  diff = _max_diff(plain, plain_want)
  MAX_DIFF[("ssa_crnn enroll, none given", norm, "mean")] = diff
  assert diff <= TOL, diff
  assert _max_diff(got, plain) > 1e-3  # the enrollment states matter
  # One file's state does not depend on the other files.
  np.testing.assert_allclose(m.enrollment_context(enroll_files[1:2], norm=norm)[0], got_ctx[1],
                             rtol=0, atol=1e-6)


def test_enrollment_outputs_against_the_model(enroll_run):
  """The exported function against `model.apply` itself: speaker_state is the speaker branch's
  pooled state (`models.speaker_states`), and J states enter as `inference.segment_outputs`
  gives them (valid, broadcast over the batch)."""
  from ssa_jax import models  # pylint: disable=g-import-not-at-top
  m, p = enroll_run.model, enroll_run.predictor
  rng = np.random.default_rng(5)
  x = rng.normal(size=(4, 8, 4, 3)).astype(np.float32)
  mask = np.arange(8)[None, :] < np.array([8, 5, 1, 6])[:, None]
  x[~mask] = 0.0
  states = np.asarray(models.speaker_states(p.model, p.variables, x, mask))
  apply = jax.jit(lambda v, x, k, e: p.model.apply(v, x, k, train=False, enroll=e))
  ctx = rng.normal(size=(3, 8)).astype(np.float32)
  got = m.outputs(x, mask, enroll_context=ctx)
  np.testing.assert_allclose(got["speaker_state"], states, atol=1e-5)
  logits, _ = apply(p.variables, x, mask, {"context": np.broadcast_to(ctx, (4, 3, 8)),
                                           "valid": np.ones((4, 3), bool)})
  np.testing.assert_allclose(got["probs"], jax.nn.softmax(logits), atol=1e-6)
  with pytest.raises(ValueError, match=r"enroll_context must be \(J, 8\)"):
    m.outputs(x, mask, enroll_context=np.zeros((2, 5), np.float32))


def test_k0_export_unchanged(runs):
  """A model without enrollment is written as before: format version 1, no enroll_dim, the
  exported function of (x, mask) only."""
  for r in runs.values():
    assert r.model.metadata["format_version"] == serving.PLAIN_FORMAT_VERSION == 1
    assert "enroll_dim" not in r.model.metadata and r.model.enroll_dim == 0
    with np.load(r.path) as z:
      exported = jax.export.deserialize(bytearray(z["function"].tobytes()))
    assert [a.shape[1:] for a in exported.in_avals] == [(8, 4, 3), (8,)]
    assert ENROLL_KEY not in r.model.metadata["outputs"]


ENROLL_KEY = serving.ENROLL_OUTPUT


def test_enrollment_errors(runs, enroll_run, audio_files, enroll_files, tmp_path, capsys,
                           monkeypatch):
  """One-line errors as bin.predict's: a bad enrollment file (nothing predicted), --enroll with a
  model trained without enrollment; no --enroll with an enrollment model: a warning."""
  m = enroll_run.model
  loaded = {r.path: r.model for r in (enroll_run, *runs.values())}
  monkeypatch.setattr(serving, "load", loaded.__getitem__)  # compiled once (loading: above)
  with pytest.raises(ValueError, match="^enrollment file\\(s\\) unusable: .*broken.wav"):
    m.enrollment_context(enroll_files)
  with pytest.raises(ValueError, match="model.enroll_k > 0\\); this one has model.name='acrnn'"):
    runs["acrnn"].model.enrollment_context(enroll_files[:1])
  with pytest.raises(ValueError, match="model.enroll_k=0"):
    runs["ssa_crnn"].model.predict_files(audio_files[:1], enroll_context=np.zeros((1, 8)))
  # The CLI, in process.
  target = audio_files[3]
  assert serving.main([enroll_run.path, target, "--enroll", enroll_files[0],
                       "--enroll", enroll_files[3]]) == 1
  out = capsys.readouterr()
  assert out.out == "" and out.err.count("\n") == 1
  assert out.err.startswith("error: enrollment file(s) unusable: ") and "broken.wav" in out.err
  assert serving.main([runs["ssa_crnn"].path, target, "--enroll", enroll_files[0]]) == 1
  out = capsys.readouterr()
  assert out.out == "" and out.err.count("\n") == 1 and "model.enroll_k=0" in out.err
  assert serving.main([enroll_run.path, target, "--enroll", str(tmp_path / "nope")]) == 1
  assert capsys.readouterr().err == f"error: no such file or folder: {tmp_path / 'nope'}\n"
  assert serving.main([enroll_run.path, target, "--enroll", str(tmp_path)]) == 1
  assert capsys.readouterr().err == f"error: no audio file found in --enroll {tmp_path}\n"
  # Good enrollment: bin.predict's text with it; none: a warning, then the plain prediction.
  assert serving.main([enroll_run.path, target, "--json", "--enroll", enroll_files[0],
                       "--enroll", enroll_files[1]]) == 0
  doc = json.loads(capsys.readouterr().out)
  assert doc["enroll"] == enroll_files[:2]
  ctx = m.enrollment_context(enroll_files[:2])
  assert doc["files"] == json.loads(json.dumps(m.predict_files([target], enroll_context=ctx)))
  assert serving.main([enroll_run.path, target]) == 0
  out = capsys.readouterr()
  assert out.err.splitlines()[0] == ("warning: this model was trained with enrollment "
                                     "(model.enroll_k=2); without --enroll the speaker half of "
                                     "its attention sees only each file itself")
  assert out.out == serving.format_result(m.predict_file(target)) + "\n"
