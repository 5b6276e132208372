"""ONNX export (ssa_jax/onnx_export.py) against the JAX model in evaluation mode on the same weights:
random inputs with uneven lengths (tiny ACRNN and SSA-CRNN, several head / mask / SSA settings),
features of generated speech (the quickstart SSA-CRNN, and one paper-size ACRNN), the file's
metadata, and `python -m bin.export_onnx` on a tiny trained fold with its one-line errors."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import fake_dataset, tiny_config, vigorous
from ssa_jax import features, inference, onnx_export, predict, train
from ssa_jax.corpora import synthetic
from ssa_jax.models import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-4  # the parity bound (max abs difference, every output)


def _inputs(frames, mels, lengths, seed=0, pad_value=0.0):
  """x (B, T, M, 3) float32 with `pad_value` on padded frames, mask (B, T) prefix of `lengths`."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(len(lengths), frames, mels, 3)).astype(np.float32)
  mask = np.arange(frames)[None, :] < np.asarray(lengths)[:, None]
  x[~mask] = pad_value
  return x, mask


def _model(config, frames, seed=1):
  """(model, `vigorous` variables) of `config.model` for inputs (B, frames, n_mels, 3)."""
  model = build_model(config.model)
  x = jax.ShapeDtypeStruct((1, frames, int(config.features.n_mels), 3), np.float32)
  m = jax.ShapeDtypeStruct((1, frames), bool)
  return model, vigorous(jax.eval_shape(model.init, jax.random.PRNGKey(0), x, m), seed)


_APPLY = {}


def _jax_outputs(model, variables, x, mask):
  """The reference: `model.apply(..., train=False)` under the ONNX output names."""
  if model not in _APPLY:  # one jitted function per model: the same shapes compile once
    _APPLY[model] = jax.jit(lambda v, x, m: model.apply(v, x, m, train=False))
  logits, aux = _APPLY[model](variables, x, mask)
  out = {"emotion_logits": logits, "z_em": aux["z_em"],
         "probabilities": inference.eval_outputs(logits, aux)["probs"]}
  if "speaker_logits" in aux:
    out.update(speaker_logits=aux["speaker_logits"], z_sp=aux["z_sp"])
  return {k: np.asarray(v) for k, v in out.items()}


def _errors(onnx_out, ref):
  assert set(onnx_out) == set(ref)
  return {k: float(np.max(np.abs(onnx_out[k] - ref[k]))) for k in ref}


SETTINGS = {
    "acrnn": ("acrnn", {}),
    "acrnn_nomask_unscaled_learned": ("acrnn", {"model.mask_padding": False,
                                                "model.classifier_bias": "unscaled",
                                                "model.logit_scale": "learned"}),
    "ssa_crnn": ("ssa_crnn", {"model.num_speakers": 3}),
    "ssa_crnn_per_half": ("ssa_crnn", {"model.num_speakers": 3, "model.ssa_softmax": "per_half"}),
    "ssa_crnn_self_only_nobias_flax_lstm": ("ssa_crnn", {
        "model.num_speakers": 3, "model.ssa": "self_only", "model.classifier_bias": "none",
        "model.lstm_impl": "flax"}),
}


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_parity_random_uneven_lengths(setting):
  name, overrides = SETTINGS[setting]
  frames = 16
  cfg = tiny_config(name, overrides={"features.segment_frames": frames, **overrides})
  model, variables = _model(cfg, frames)
  # Real lengths: full, odd (a pooled frame half real), short, one frame, none; padding not 0.
  x, mask = _inputs(frames, 4, [16, 11, 3, 1, 0], pad_value=0.7)
  ref = _jax_outputs(model, variables, x, mask)
  out = onnx_export.run_onnx(onnx_export.build_onnx_model(variables, cfg.model), x, mask)
  errors = _errors(out, ref)
  assert max(errors.values()) <= TOL, errors
  # The comparison is sensitive to the lengths: the same inputs with every frame real give
  # different outputs (by far more than the tolerance) for the padded examples.
  full = _jax_outputs(model, variables, x, np.ones_like(mask))
  assert np.min(np.abs(full["emotion_logits"] - ref["emotion_logits"])[1:].max(axis=1)) > 100 * TOL
  assert np.abs(ref["emotion_logits"]).max() > 0.5  # logits are O(1), not vanishing


def test_dynamic_batch_and_frames_acrnn():
  """One ACRNN graph runs any batch size and any number of frames (W^q does not tie it)."""
  cfg = tiny_config("acrnn", overrides={"features.segment_frames": 16})
  model, variables = _model(cfg, 16, seed=3)
  proto = onnx_export.build_onnx_model(variables, cfg.model)
  dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
  assert dims == ["batch", "frames", 4, 3]
  for frames, lengths in ((12, [12]), (20, [20, 17, 9, 5, 2])):
    x, mask = _inputs(frames, 4, lengths, seed=frames)
    errors = _errors(onnx_export.run_onnx(proto, x, mask), _jax_outputs(model, variables, x, mask))
    assert max(errors.values()) <= TOL, (frames, errors)


def _speech_segments(fcfg, utterances=((0, 0, 1), (1, 2, 3), (2, 5, 0))):
  """Normalised segments of generated utterances (speaker, phrase, emotion) through the
  prediction front end: synthetic speech -> log-Mel + deltas -> 3 s segments -> own statistics."""
  syn = tiny_config().data.synthetic
  segs, masks = [], []
  for spk, phrase, emo in utterances:
    wave = synthetic.synthesize(spk, phrase, emo, 0, syn, sample_rate=int(fcfg.sample_rate))
    (feats,) = features.compute([wave], fcfg)
    s, m = features.segment(feats, int(fcfg.segment_frames), int(fcfg.min_segment_frames))
    segs.append(predict.normalize_utterance(s, m, "self", None))
    masks.append(m)
  return np.concatenate(segs), np.concatenate(masks)


@pytest.fixture(scope="module")
def speech():
  """Segments of three generated utterances at the real feature settings (300 x 40 x 3)."""
  fcfg = tiny_config().features
  fcfg.segment_frames, fcfg.min_segment_frames, fcfg.n_mels = 300, 100, 40
  x, mask = _speech_segments(fcfg)
  lengths = mask.sum(axis=1)
  assert lengths.max() == 300 and lengths.min() < 300  # full and padded segments
  return x, mask


def test_parity_real_features_quickstart_ssa_crnn(speech):
  from ssa_jax.configs import quickstart
  cfg = quickstart.get_config()
  cfg.model.num_speakers = 8
  model, variables = _model(cfg, 300)
  x, mask = speech
  ref = _jax_outputs(model, variables, x, mask)
  out = onnx_export.run_onnx(onnx_export.build_onnx_model(variables, cfg.model), x, mask)
  errors = _errors(out, ref)
  assert max(errors.values()) <= TOL, errors


def test_parity_real_features_paper_size_acrnn(speech):
  """The one paper-size check: ACRNN as configs/acrnn.py (6 convs of 128/256, BLSTM 2 x 128)."""
  from ssa_jax.configs import acrnn
  cfg = acrnn.get_config()
  model, variables = _model(cfg, 300)
  x, mask = speech[0][-2:], speech[1][-2:]
  ref = _jax_outputs(model, variables, x, mask)
  out = onnx_export.run_onnx(onnx_export.build_onnx_model(variables, cfg.model), x, mask)
  errors = _errors(out, ref)
  assert max(errors.values()) <= TOL, errors


@pytest.mark.parametrize("mode,softmax", [("full", "joint"), ("self_only", "joint"),
                                          ("full", "per_half")])
def test_parity_with_enrollment(mode, softmax):
  """A model trained with enrollment (model.enroll_k > 0): the enrollment inputs against
  `model.apply(..., enroll={"context", "valid"})` (all valid, and a mix), speaker_state against
  `models.speaker_states`, and one invalid entry against the model without enrollment."""
  from ssa_jax import models  # pylint: disable=g-import-not-at-top
  frames, d = 16, 8  # d = 2 x lstm_units
  cfg = tiny_config("ssa_crnn", overrides={
      "features.segment_frames": frames, "model.num_speakers": 3, "model.enroll_k": 2,
      "model.ssa": mode, "model.ssa_softmax": softmax,
      "model.conv_features": (3, 4)})  # two conv layers: less to compile
  model, variables = _model(cfg, frames, seed=4)
  x, mask = _inputs(frames, 4, [16, 11, 3, 1], pad_value=0.7)
  ctx = np.random.default_rng(5).normal(size=(3, d)).astype(np.float32)
  sess = onnx_export.session(onnx_export.build_onnx_model(variables, cfg.model))
  assert [i.name for i in sess.get_inputs()] == ["x", "mask", "enroll_context", "enroll_valid"]
  apply = jax.jit(lambda v, x, m, c, ok: model.apply(v, x, m, train=False,
                                                     enroll={"context": c, "valid": ok}))
  state = np.asarray(jax.jit(lambda v, x, m: models.speaker_states(model, v, x, m))(
      variables, x, mask))

  def reference(valid):
    logits, aux = apply(variables, x, mask, np.broadcast_to(ctx, (4, 3, d)),
                        np.broadcast_to(valid, (4, 3)))
    return {"emotion_logits": np.asarray(logits), "z_em": np.asarray(aux["z_em"]),
            "probabilities": np.asarray(jax.nn.softmax(logits)),
            "speaker_logits": np.asarray(aux["speaker_logits"]), "z_sp": np.asarray(aux["z_sp"]),
            "speaker_state": state}
  out = onnx_export.run_session(sess, x, mask, ctx)  # all valid
  errors = _errors(out, reference(np.ones(3, bool)))
  assert max(errors.values()) <= TOL, errors
  valid = np.array([True, False, True])
  names = [o.name for o in sess.get_outputs()]
  mixed = dict(zip(names, sess.run(names, {"x": x, "mask": mask, "enroll_context": ctx,
                                           "enroll_valid": valid})))
  errors = _errors(mixed, reference(valid))
  assert max(errors.values()) <= TOL, errors
  plain = onnx_export.run_session(sess, x, mask)  # one invalid entry
  errors = _errors(plain, {**_jax_outputs(model, variables, x, mask), "speaker_state": state})
  assert max(errors.values()) <= TOL, errors
  moved = np.abs(out["emotion_logits"] - plain["emotion_logits"]).max()
  assert moved > 100 * TOL if mode == "full" else moved <= TOL  # self_only ignores the entries


def test_unknown_parameters_and_wrong_frames_are_errors():
  cfg = tiny_config("ssa_crnn", overrides={"model.num_speakers": 2})
  _, variables = _model(cfg, 8)
  extra = {"params": {**variables["params"], "speaker_gate": {"kernel": np.ones((2, 2))}},
           "batch_stats": variables["batch_stats"]}
  with pytest.raises(ValueError, match="does not know .*speaker_gate/kernel"):
    onnx_export.build_onnx_model(extra, cfg.model)
  with pytest.raises(ValueError, match="W\\^q was built for 4 pooled frames .* frames=12"):
    onnx_export.build_onnx_model(variables, cfg.model, frames=12)
  cfg.model.name = "acrnn"  # the SSA-CRNN's variables with an ACRNN config
  with pytest.raises(ValueError, match="no params/crnn"):
    onnx_export.build_onnx_model(variables, cfg.model)


# --------------------------------------------------------------------------- a trained fold


def _run(*args):
  env = {**os.environ, "PYTHONPATH": REPO}
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)


@pytest.fixture(scope="module")
def fold(tmp_path_factory):
  """A tiny ACRNN trained for 1 epoch on the fake dataset (as tests/test_train.py; ACRNN: half
  the compilation time of SSA-CRNN, whose graph the parity tests above cover)."""
  workdir = tmp_path_factory.mktemp("onnx_run")
  cfg = tiny_config("acrnn", "none")
  cfg.train.epochs = 1
  train.train_and_evaluate(cfg, str(workdir), 0, dataset=fake_dataset())
  return str(workdir / "fold0")


def test_cli_exports_best_checkpoint_with_metadata(fold, tmp_path):
  out = tmp_path / "model.onnx"
  p = _run("bin.export_onnx", "--workdir", fold, "--out", str(out))
  assert p.returncode == 0, p.stderr[-3000:]
  assert str(out) in p.stdout
  import onnx
  proto = onnx.load(str(out))
  props = {m.key: m.value for m in proto.metadata_props}
  pred = predict.load_predictor(fold)
  assert json.loads(props["classes"]) == list(pred.classes) == ["neu", "hap", "ang", "sad"]
  assert json.loads(props["features"]) == pred.config.features.to_dict()
  assert props["pooling"] == pred.config.train.pooling == "max"
  assert props["model"] == "acrnn" and props["step"] == str(pred.step)
  assert json.loads(props["model_config"]) == pred.config.model.to_dict()
  assert [o.name for o in proto.graph.output] == list(onnx_export.OUTPUTS_ACRNN)
  # The file computes the restored model (best checkpoint, trained BN statistics).
  assert any(np.abs(np.asarray(v) - 1).max() > 1e-3
             for v in jax.tree.leaves(pred.variables["batch_stats"]))  # BN var moved from init
  x, mask = _inputs(8, 4, [8, 5, 2], seed=7)
  errors = _errors(onnx_export.run_onnx(str(out), x, mask),
                   _jax_outputs(pred.model, pred.variables, x, mask))
  assert max(errors.values()) <= TOL, errors


def test_cli_one_line_errors(fold, tmp_path):
  missing = str(tmp_path / "nope" / "fold0")
  p = _run("bin.export_onnx", "--workdir", missing, "--out", str(tmp_path / "m.onnx"))
  assert p.returncode == 1 and p.stderr.strip() == f"error: {missing}: no such run folder", p.stderr
  untrained = tmp_path / "untrained"  # a fold whose training saved no checkpoint yet
  (untrained / "checkpoints").mkdir(parents=True)
  with open(os.path.join(fold, "config.json")) as f:
    (untrained / "config.json").write_text(f.read())
  p = _run("bin.export_onnx", "--workdir", str(untrained), "--out", str(tmp_path / "m.onnx"))
  lines = [l for l in p.stderr.splitlines() if l.strip()]
  assert p.returncode == 1 and len(lines) == 1, p.stderr
  assert lines[0].startswith(f"error: {untrained}: ") and "no checkpoint" in lines[0], lines[0]
  assert not (tmp_path / "m.onnx").exists()
