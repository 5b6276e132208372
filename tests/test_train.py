"""Training: the jitted step (loss falls, Eq. 8 invariant, one trace per epoch), the fold loop
(files, checkpoints, exact resume, non-finite loss) and checkpoint fallback. The CLI's errors are
in test_cli.py."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import fake_dataset, tiny_config
from ssa_jax import checkpointing, features, inference, input_pipeline, models, parallel, train


@pytest.fixture(scope="module")
def step_setup():
  """Tiny SSA-CRNN-r, normalised fake training arrays, and the real jitted step (max 1 trace)."""
  cfg = tiny_config()
  ds = fake_dataset()
  cfg.model.num_speakers = len(ds.speaker_names)
  model = models.build_model(cfg.model)
  tx = train.make_optimizer(cfg.train)
  mesh = parallel.make_mesh()
  utt = ds.seg_utt
  stats = features.fit_speaker_stats(ds.segments, ds.mask, ds.speakers[utt])
  arrays = {"x": features.normalize(ds.segments, ds.mask, ds.speakers[utt], stats),
            "mask": ds.mask, "label": ds.labels[utt], "speaker": ds.speakers[utt]}
  chex.clear_trace_counter()
  step = train.make_train_step(model, tx, "l1_sphere", mesh, max_traces=1)
  init = lambda: train.create_train_state(model, tx, jax.random.PRNGKey(0),
                                          arrays["x"][:8], arrays["mask"][:8], "l1_sphere")
  return {"cfg": cfg, "model": model, "mesh": mesh, "arrays": arrays, "step": step, "init": init}


def _z_em(model, state, batch):
  """The classifier inputs of a training-mode forward pass, computed outside the step."""
  (_, aux), _ = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                            batch["x"], batch["mask"], train=True, mutable=["batch_stats"])
  return np.asarray(aux["z_em"], np.float64)


def test_epoch_traces_once_and_eq8_holds_after_every_step(step_setup):
  s = step_setup
  state = jax.device_put(s["init"](), parallel.replicated(s["mesh"]))
  batches = list(input_pipeline.train_batches(s["arrays"], 4, 8, seed=0, fold=0, epoch=0))
  assert len(batches) >= 5
  for local in batches:  # one full epoch of the real pipeline through the real step
    batch = parallel.global_batch(local, s["mesh"])
    z = _z_em(s["model"], state, batch)  # before the step: the state is donated to it
    state, m = s["step"](state, batch)
    radius = z.shape[0] / (4 * np.abs(z.sum(axis=0)).sum())  # Eq. 8: N / (K ||sum_i z_i||_1)
    col_l1 = np.abs(np.asarray(state.params["classifier"]["kernel"], np.float64)).sum(axis=0)
    np.testing.assert_allclose(col_l1, np.full(4, radius), rtol=1e-5)
    assert np.isfinite(float(m["loss"])) and float(m["grad_norm"]) > 0
  assert int(state.step) == len(batches) and int(state.bad_step) == -1
  assert s["step"]._cache_size() == 1  # pylint: disable=protected-access


@pytest.mark.parametrize("constraint", ["l1_sphere", "rescale"])
def test_initial_state_satisfies_eq8(step_setup, constraint):
  """create_train_state projects the initial kernel with the first batch's embeddings."""
  s = step_setup
  x, mask = s["arrays"]["x"][:8], s["arrays"]["mask"][:8]
  tx = train.make_optimizer(s["cfg"].train)
  state = train.create_train_state(s["model"], tx, jax.random.PRNGKey(0), x, mask, constraint)
  z = _z_em(s["model"], state, {"x": x, "mask": mask})  # z does not depend on the kernel
  radius = z.shape[0] / (4 * np.abs(z.sum(axis=0)).sum())
  kernel = np.asarray(state.params["classifier"]["kernel"], np.float64)
  np.testing.assert_allclose(np.abs(kernel).sum(axis=0), np.full(4, radius), rtol=1e-5)
  unconstrained = train.create_train_state(s["model"], tx, jax.random.PRNGKey(0), x, mask)
  assert not np.allclose(np.abs(np.asarray(unconstrained.params["classifier"]["kernel"])).sum(0),
                         radius, rtol=1e-3)  # flax's initialiser alone is off the sphere


def test_first_step_cross_entropy_is_near_ln_k_at_paper_size():
  """Paper-size ACRNN-r layers (6 convs 128/256, dense 768, BLSTM 2x128, embedding 128) with the
  default temperature: the projected initial head gives a loss near ln 4 (an unprojected
  lecun-normal kernel times K * E gave ~40)."""
  from ssa_jax.configs import acrnn_r
  cfg = acrnn_r.get_config()
  model = models.build_model(cfg.model)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(4, 100, 40, 3)).astype(np.float32))  # 1 s: faster, same layers
  mask = jnp.ones((4, 100), bool)
  tx = train.make_optimizer(cfg.train)
  init = jax.jit(lambda r: train.create_train_state(model, tx, r, x, mask, "l1_sphere"))
  state = init(jax.random.PRNGKey(0))
  (logits, _), _ = model.apply({"params": state.params, "batch_stats": state.batch_stats}, x,
                               mask, train=True, mutable=["batch_stats"])
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(4)).mean()
  assert abs(float(ce) - np.log(4)) < 0.25, float(ce)


def test_loss_falls_on_a_fixed_batch(step_setup):
  s = step_setup
  state = jax.device_put(s["init"](), parallel.replicated(s["mesh"]))
  local = next(input_pipeline.train_batches(s["arrays"], 4, 8, seed=0, fold=0, epoch=0))
  batch = parallel.global_batch(local, s["mesh"])
  losses, losses_em = [], []
  for _ in range(30):
    state, m = s["step"](state, batch)
    losses.append(float(m["loss"]))
    losses_em.append(float(m["loss_em"]))
  assert set(m) >= {"loss", "loss_em", "loss_sp", "accuracy_em", "accuracy_sp", "grad_norm"}
  assert float(m["loss"]) == pytest.approx(float(m["loss_em"]) + float(m["loss_sp"]), rel=1e-6)
  # Eq. 8 alone bounds the emotion logits by about 1/K; the logit temperature (model.logit_scale,
  # K * embed_dim by default for the constrained systems, DESIGN §4) lets CE_em fit the batch: it
  # must end well below ln K (about 0.5 here), and the total (with CE_sp) must fall clearly.
  assert np.mean(losses[-5:]) < np.mean(losses[:3]) - 0.15, losses
  assert np.mean(losses_em[-5:]) < np.log(4) - 0.3, losses_em


def _result(workdir, fold=0):
  with open(os.path.join(workdir, f"fold{fold}", "result.json")) as f:
    r = json.load(f)
  r.pop("timing")
  r.pop("config")
  return r


def test_fold_run_writes_files_and_resumes_exactly(tmp_path, monkeypatch, tiny):
  ds = fake_dataset()
  cfg = tiny
  cfg.train.epochs = 2
  full = train.train_and_evaluate(cfg, str(tmp_path / "full"), 0, dataset=ds)

  fold_dir = tmp_path / "full" / "fold0"
  lines = [json.loads(l) for l in (fold_dir / "metrics.jsonl").read_text().splitlines()]
  assert [l["epoch"] for l in lines] == [1, 2]
  assert set(lines[0]) >= {"epoch", "step", "train_loss", "valid_uar", "valid_wa",
                           "valid_segment_uar", "elapsed", "train_speaker_accuracy",
                           "valid_speaker_mass", "valid_speaker_accuracy"}
  assert all(0.0 <= l["valid_speaker_mass"] <= 1.0 for l in lines)
  from tests.test_summary import _read_scalars  # TensorBoard events beside metrics.jsonl
  scalars = _read_scalars(fold_dir)
  assert [(s, round(v, 5)) for s, v in scalars["valid/uar"]] == [
      (l["epoch"], round(l["valid_uar"], 5)) for l in lines]
  config = json.loads((fold_dir / "config.json").read_text())
  assert config["model"]["num_speakers"] == 3
  assert full["best_epoch"] in (1, 2) and 0 <= full["uar"] <= 1
  assert full["uar"] == max(l["valid_uar"] for l in lines)
  best_line = next(l for l in lines if l["epoch"] == full["best_epoch"])
  assert full["speaker_mass"] == best_line["valid_speaker_mass"]
  assert full["train_speaker_accuracy"] == best_line["train_speaker_accuracy"]
  assert [round(v, 5) for _, v in scalars["valid/speaker_mass"]] == [
      round(l["valid_speaker_mass"], 5) for l in lines]
  assert np.sum(full["confusion"]) == sum(full["counts"]["valid_utterances"].values())
  assert full["classes"] == ["neu", "hap", "ang", "sad"] and "timing" in full
  assert full["selection"] == "valid" and "inner" not in full  # the paper's selection
  steps = sorted(int(d) for d in os.listdir(fold_dir / "checkpoints") if d.isdigit())
  assert lines[-1]["step"] in steps and full["best_step"] in steps  # latest and best kept
  best = checkpointing.load_best(str(fold_dir))
  assert best["step"] == full["best_step"] and best["stats"].speakers == ("spk0", "spk1", "spk2")

  # Stop after one epoch, then rerun the same fold for two: same result, bit for bit.
  cfg.train.epochs = 1
  train.train_and_evaluate(cfg, str(tmp_path / "resumed"), 0, dataset=ds)
  cfg.train.epochs = 2
  resumed = train.train_and_evaluate(cfg, str(tmp_path / "resumed"), 0, dataset=ds)
  assert _result(tmp_path / "resumed") == _result(tmp_path / "full")
  assert resumed["uar"] == full["uar"]
  strip = lambda ls: [{k: v for k, v in l.items() if k != "elapsed"} for l in ls]
  resumed_lines = [json.loads(l) for l in
                   (tmp_path / "resumed" / "fold0" / "metrics.jsonl").read_text().splitlines()]
  assert strip(resumed_lines) == strip(lines)

  # A NaN batch in the third epoch stops the run naming its step; the checkpoint stays good.
  steps_per_epoch = lines[0]["step"]
  real = input_pipeline.train_batches

  def poisoned(*args, epoch, **kwargs):
    for i, b in enumerate(real(*args, epoch=epoch, **kwargs)):
      if epoch == 2 and i == 1:
        b = {**b, "x": np.full_like(b["x"], np.nan)}
      yield b

  monkeypatch.setattr(train.input_pipeline, "train_batches", poisoned)
  cfg.train.epochs = 4
  bad = 2 * steps_per_epoch + 1
  with pytest.raises(train.NonFiniteLossError, match=f"at step {bad} "):
    train.train_and_evaluate(cfg, str(tmp_path / "full"), 0, dataset=ds)
  manager = checkpointing.checkpoint_manager(str(fold_dir / "checkpoints"))
  assert manager.latest_step() == 2 * steps_per_epoch
  restored = checkpointing.restore_latest(manager, None)
  assert restored is not None and restored[1]["epoch"] == 2
  assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(restored[0]["params"]))


def test_ema_step_follows_the_numpy_recurrence(step_setup):
  """train.ema_decay: after each real jitted step the averaged weights equal a float64 numpy
  recurrence over the live params and batch_stats the steps produced, with TensorFlow's
  num_updates decay min(d, (1+t)/(10+t)); evaluation (`variables_of`) reads the average."""
  s, decay = step_setup, 0.8
  tx = train.make_optimizer(s["cfg"].train)
  step = train.make_train_step(s["model"], tx, "l1_sphere", s["mesh"], ema_decay=decay)
  x, mask = s["arrays"]["x"][:8], s["arrays"]["mask"][:8]
  state = train.create_train_state(s["model"], tx, jax.random.PRNGKey(0), x, mask, "l1_sphere",
                                   ema=True)
  live = lambda st: jax.tree.map(lambda a: np.asarray(a, np.float64),
                                 {"params": st.params, "batch_stats": st.batch_stats})
  expected = live(state)
  batches = list(input_pipeline.train_batches(s["arrays"], 4, 8, seed=0, fold=0, epoch=0))[:6]
  for t, local in enumerate(batches):
    state, _ = step(state, parallel.global_batch(local, s["mesh"]))
    d = min(decay, (1 + t) / (10 + t))
    expected = jax.tree.map(lambda e, p, d=d: d * e + (1 - d) * p, expected, live(state))
  got = jax.tree.map(lambda a: np.asarray(a, np.float64), state.ema)
  chex.assert_trees_all_close(got, expected, rtol=1e-5, atol=1e-7)
  scored = inference.variables_of(state)
  chex.assert_trees_all_close(jax.tree.map(np.asarray, scored), got, rtol=0, atol=0)
  kernel = lambda v: np.asarray(v["params"]["classifier"]["kernel"])
  assert np.abs(kernel(scored) - kernel(live(state))).max() > 1e-4  # not the live weights


def test_ema_run_resumes_exactly_and_its_checkpoint_is_the_average(tmp_path):
  """A fold with train.ema_decay > 0 resumes bit for bit; its checkpoints hold the live and the
  averaged weights, and `load_best` (evaluate, predict, export) returns the averaged ones."""
  ds = fake_dataset()
  cfg = tiny_config(overrides={"train.ema_decay": 0.9, "train.epochs": 2})
  full = train.train_and_evaluate(cfg, str(tmp_path / "full"), 0, dataset=ds)
  cfg.train.epochs = 1
  train.train_and_evaluate(cfg, str(tmp_path / "resumed"), 0, dataset=ds)
  cfg.train.epochs = 2
  train.train_and_evaluate(cfg, str(tmp_path / "resumed"), 0, dataset=ds)
  assert _result(tmp_path / "resumed") == _result(tmp_path / "full")
  fold_dir = tmp_path / "full" / "fold0"
  best = checkpointing.load_best(str(fold_dir))
  manager = checkpointing.checkpoint_manager(str(fold_dir / "checkpoints"), read_only=True)
  raw = manager.restore(full["best_step"], args=checkpointing.ocp.args.Composite(
      state=checkpointing.ocp.args.StandardRestore()))["state"]
  chex.assert_trees_all_equal(jax.tree.map(np.asarray, best["variables"]),
                              jax.tree.map(np.asarray, dict(raw["ema"])))
  assert not np.array_equal(np.asarray(raw["ema"]["params"]["classifier"]["kernel"]),
                            np.asarray(raw["params"]["classifier"]["kernel"]))


def test_fold_frees_the_raw_features_it_loaded(tmp_path, monkeypatch):
  """A fold that prepared its own dataset drops the raw segments before training (only the
  normalised copy stays); a caller's dataset is left alone; both give the same result."""
  import weakref  # pylint: disable=g-import-not-at-top
  from ssa_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  cfg = tiny_config()
  cfg.train.epochs = 1
  raw = []

  def prepare(config, progress=True):
    ds = fake_dataset()
    raw.append(weakref.ref(ds.segments))  # numpy arrays take weak references
    return ds
  freed = []
  real = input_pipeline.train_batches

  def spy(*args, **kwargs):
    freed.append(raw[-1]() is None if raw else None)
    return real(*args, **kwargs)
  monkeypatch.setattr(data_lib, "prepare", prepare)
  monkeypatch.setattr(train.input_pipeline, "train_batches", spy)
  train.train_and_evaluate(cfg, str(tmp_path / "loaded"), 0)
  assert freed and freed[0] is True
  kept = fake_dataset()
  raw.clear()
  freed.clear()
  train.train_and_evaluate(cfg, str(tmp_path / "given"), 0, dataset=kept)
  assert freed[0] is None and kept.segments.shape[0] > 0
  assert _result(tmp_path / "loaded") == _result(tmp_path / "given")


def test_unreadable_latest_checkpoint_falls_back_to_the_best(tmp_path, capsys, caplog):
  manager = checkpointing.checkpoint_manager(str(tmp_path))
  stats = features.SpeakerStats(speakers=("a",), mean=np.zeros((1, 2, 3), np.float32),
                                std=np.ones((1, 2, 3), np.float32),
                                global_mean=np.zeros((2, 3), np.float32),
                                global_std=np.ones((2, 3), np.float32), frames=np.ones(1, np.int64))
  for step, uar in [(1, 0.5), (2, 0.9), (3, 0.4)]:
    checkpointing.save(manager, step, {"w": np.full(3, float(step))}, {"epoch": step}, stats,
                       {"classes": ["x"]}, uar=uar, epoch=step)
  assert manager.all_steps() == [2, 3]  # the best (2) and the latest (3)
  assert manager.best_step() == 2  # orbax's own tracking (best_fn on the saved metrics)
  checkpointing.save(manager, 4, {"w": np.full(3, 4.0)}, {"epoch": 3, "batch": 1}, stats,
                     {"classes": ["x"]}, uar=None, epoch=3)  # mid-epoch: no metrics
  assert manager.all_steps() == [2, 4] and manager.best_step() == 2
  reopened = checkpointing.checkpoint_manager(str(tmp_path), read_only=True)
  assert reopened.best_step() == 2  # the metrics are read back from disk
  reopened.close()
  for f in (tmp_path / "4" / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")
  with caplog.at_level("WARNING", logger="ssa_jax.checkpointing"):
    state, meta = checkpointing.restore_latest(manager, {"w": np.zeros(3)})
  np.testing.assert_array_equal(state["w"], [2.0, 2.0, 2.0])
  assert meta == {"epoch": 2}
  # Said once, through logging (the library does not print it besides).
  ours = [r.getMessage() for r in caplog.records if r.name == "ssa_jax.checkpointing"]
  assert len(ours) == 1 and ours[0].startswith(f"checkpoint step 4 in {tmp_path} is unreadable")
  assert capsys.readouterr().out == ""


def test_load_best_of_a_run_checkpointed_before_orbax_tracked_the_metrics(tmp_path):
  """Checkpoints saved without orbax metrics (before best_fn) are kept by the new manager, and
  load_best takes the best the saved meta names, not orbax's best among the newer ones."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  fold_dir = tmp_path / "fold0"
  fold_dir.mkdir()
  (fold_dir / "config.json").write_text(json.dumps(tiny_config().to_dict()))
  stats = features.SpeakerStats(speakers=("a",), mean=np.zeros((1, 2, 3), np.float32),
                                std=np.ones((1, 2, 3), np.float32),
                                global_mean=np.zeros((2, 3), np.float32),
                                global_std=np.ones((2, 3), np.float32), frames=np.ones(1, np.int64))
  names = {"classes": ["x"], "speakers": ["a"]}
  state = lambda v: {"params": {"w": np.full(3, v)}, "batch_stats": {"m": np.zeros(1)}}  # noqa: E731
  old = ocp.CheckpointManager(str(fold_dir / "checkpoints"), options=ocp.CheckpointManagerOptions(
      enable_async_checkpointing=False))  # the manager as it was: no best_fn, metrics not written
  for step, uar in [(1, 0.9), (2, 0.5)]:
    checkpointing.save(old, step, state(float(step)), {"epoch": step, "best": {"step": 1}}, stats,
                       names, uar=uar, epoch=step)
  old.close()
  new = checkpointing.checkpoint_manager(str(fold_dir / "checkpoints"))
  checkpointing.save(new, 3, state(3.0), {"epoch": 3, "best": {"step": 1}}, stats, names,
                     uar=0.4, epoch=3)
  assert 1 in new.all_steps() and new.best_step() == 3  # orbax alone would pick step 3
  new.close()
  best = checkpointing.load_best(str(fold_dir))
  assert best["step"] == 1
  np.testing.assert_array_equal(best["variables"]["params"]["w"], [1.0, 1.0, 1.0])


def test_eval_step_compiles_with_the_train_steps_cpu_options():
  """make_eval_step's default is the train step's option set (xla_options.step_compiler_options): on CPU
  no convolution goes to a YNNPACK fusion (XLA's defaults send 32-channel f32 convolutions there),
  and the outputs equal those of the step compiled with XLA's defaults."""
  cfg = tiny_config("acrnn", overrides={"model.conv_features": (32,) * 6,
                                        "features.segment_frames": 16, "features.n_mels": 8})
  model = models.build_model(cfg.model)
  mesh = parallel.make_mesh()
  rng = np.random.default_rng(0)
  batch = {"x": rng.standard_normal((8, 16, 8, 3)).astype(np.float32),
           "mask": np.ones((8, 16), bool)}
  variables = model.init(jax.random.PRNGKey(0), batch["x"], batch["mask"])
  batch = parallel.global_batch(batch, mesh)
  tuned = inference.make_eval_step(model, mesh)
  plain = inference.make_eval_step(model, mesh, compiler_options=None)
  if jax.default_backend() == "cpu":
    hlo = tuned.lower(variables, batch).compile().as_text()
    assert "convolution(" in hlo and "ynn" not in hlo.lower()
  np.testing.assert_allclose(tuned(variables, batch)["probs"], plain(variables, batch)["probs"],
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("key,value,match", [
    ("train.batch_sampling", "uniform", "train.batch_sampling must be one of"),
    ("train.selection", "test", "train.selection must be one of"),
    ("train.inner_fraction", 0.0, "train.inner_fraction must be in"),
    ("train.split", "heldout", "needs the dataset's subsets"),
    ("train.ema_decay", 1.0, r"train.ema_decay must be a number in \[0, 1\)"),
    ("train.ema_decay", True, r"train.ema_decay must be a number in \[0, 1\)"),
])
def test_bad_selection_or_sampling_is_one_line(tmp_path, key, value, match):
  overrides = {key: value}
  if key == "train.inner_fraction":
    overrides["train.selection"] = "inner"
  with pytest.raises(ValueError, match=match) as e:
    train.train_and_evaluate(tiny_config(overrides=overrides), str(tmp_path), 0,
                             dataset=fake_dataset())
  assert "\n" not in str(e.value)
