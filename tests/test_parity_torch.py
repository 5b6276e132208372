"""Float32 parity of our code with PyTorch on the same weights and inputs.

Error measure: rel(a, b) = max|a - b| / max|b| (b the torch value), required <= 1e-5.
Components: the conv stack (torch Conv2d + max_pool2d), the BLSTM (torch nn.LSTM, packed
sequences of different lengths), self attention and SSA (torch written here from Eq. 1-7),
whole ACRNN / SSA-CRNN forwards (eval and train mode) against tests/torch_reference.py, the
Eq. 8 projection, and one `train.train_step`: its loss, gradients (torch autograd) and running
statistics, and its NAdam update against optax's formula written here in numpy. Also the
parameter counts of the paper configs against counts written out by hand.
"""

from __future__ import annotations

import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F

import torch_reference as tr
from ssa_jax.configs import acrnn, acrnn_r, ssa_crnn_r
from conftest import tiny_config
from ssa_jax import train
from ssa_jax.models import CRNN, SelfAttention, SelfSpeakerAttention, build_model
from ssa_jax.models.crnn import make_blstm

TOL = 1e-5
torch.set_num_threads(1)


def rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  assert a.shape == b.shape, (a.shape, b.shape)
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def random_variables(module, *args, seed=0, **kwargs):
  """Variables of `module`'s structure filled with random values (running var in [0.5, 1.5])."""
  shapes = jax.eval_shape(functools.partial(module.init, **kwargs), jax.random.key(0), *args)
  rng = np.random.default_rng(seed)
  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if "'var'" in name:
      return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), jnp.float32)
    return jnp.asarray((0.1 if "'mean'" in name else 0.3) * rng.standard_normal(leaf.shape),
                       jnp.float32)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def batch(b, t, m, c, lengths, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((b, t, m, c)).astype(np.float32)
  mask = np.arange(t)[None, :] < np.asarray(lengths)[:, None]
  return x, mask


def tt(a):
  return torch.from_numpy(np.array(a))


def test_conv_stack_matches_torch_conv2d_and_max_pool2d():
  feats, slope = (3, 4, 5), 0.01
  crnn = CRNN(conv_features=feats, kernel_size=(5, 3), pool_size=(2, 2), dense_units=6,
              lstm_units=3, leaky_slope=slope)
  x, mask = batch(2, 12, 8, 3, [12, 6])
  variables = random_variables(crnn, x, mask)
  _, state = crnn.apply(variables, x, mask, capture_intermediates=True, mutable=["intermediates"])
  inter = state["intermediates"]
  # Torch, NCHW, written from the description: SAME = padding (2, 1) for the 5x3 kernel.
  y = tt(x).permute(0, 3, 1, 2) * tt(mask)[:, None, :, None]
  m = tt(mask)
  for i in range(len(feats)):
    p = variables["params"][f"conv{i + 1}"]
    w = tt(p["kernel"]).permute(3, 2, 0, 1)  # (kt, kf, cin, cout) -> (cout, cin, kt, kf)
    y = F.conv2d(y, w, tt(p["bias"]), padding=(2, 1))
    flax_out = np.asarray(inter[f"conv{i + 1}"]["__call__"][0])  # pre-activation, NHWC
    err = rel(flax_out, y.permute(0, 2, 3, 1).numpy())
    print(f"conv{i + 1}: rel err {err:.2e}")
    assert err <= TOL
    y = F.leaky_relu(y, slope)
    if i == 0:
      y = F.max_pool2d(y, (2, 2), (2, 2))
      m = m.reshape(2, -1, 2).any(-1)
    y = y * m[:, None, :, None]
  assert y.shape[2:] == (6, 4)


def test_blstm_matches_torch_lstm_with_packed_sequences():
  units, feats, t = 5, 7, 9
  lengths = np.array([9, 4, 1])
  blstm = make_blstm(units)
  y = np.random.default_rng(1).standard_normal((3, t, feats)).astype(np.float32)
  variables = random_variables(blstm, y, seq_lengths=lengths)
  h = np.asarray(blstm.apply(variables, y, seq_lengths=lengths))

  lstm = torch.nn.LSTM(feats, units, batch_first=True, bidirectional=True)
  cells = variables["params"]
  tr.load_lstm_direction(lstm, cells["forward_rnn"]["cell"])
  tr.load_lstm_direction(lstm, cells["backward_rnn"]["cell"], "_reverse")
  packed = torch.nn.utils.rnn.pack_padded_sequence(tt(y), torch.from_numpy(lengths),
                                                   batch_first=True, enforce_sorted=False)
  with torch.no_grad():
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(lstm(packed)[0], batch_first=True,
                                                    total_length=t)
  real = np.arange(t)[None, :] < lengths[:, None]
  err = rel(h[real], out.numpy()[real])
  print(f"blstm: rel err {err:.2e}")
  assert err <= TOL
  # The reverse direction of a short sequence starts at its last real frame: its output at
  # frame 0 differs from running the reverse LSTM over the padded length.
  with torch.no_grad():
    unpacked = lstm(tt(y))[0].numpy()
  assert rel(h[1, 0, units:], unpacked[1, 0, units:]) > 1e-3


def torch_self_attention(h, mask, w_att):
  """Eq. 1-2 with masked frames excluded."""
  scores = (h @ w_att).masked_fill(~mask, float("-inf"))
  alpha = torch.softmax(scores, dim=1)
  return (alpha[:, :, None] * h).sum(1), alpha


def torch_ssa(h_em, h_sp, mask, p):
  """Eq. 3-7 as docs/DESIGN.md §3 reads them."""
  t = h_em.shape[1]
  q = (p["w_q"][None, :, None] * h_em * mask[:, :, None]).sum(1)        # (B, d)
  a_em = h_em @ p["w_k_em"]                                              # (B, T)
  k = h_sp @ p["w_k_sp"]                                                 # (B, T, d)
  a_sp = (k * q[:, None, :]).sum(-1) / t ** 0.5                           # (B, T)
  scores = torch.cat([a_em, a_sp], 1).masked_fill(~torch.cat([mask, mask], 1), float("-inf"))
  alpha = torch.softmax(scores, dim=1)
  v = torch.cat([h_em @ p["w_v_em"], h_sp @ p["w_v_sp"]], 1)             # (B, 2T, d)
  c = torch.cat([(alpha[:, :t, None] * v[:, :t]).sum(1), (alpha[:, t:, None] * v[:, t:]).sum(1)], 1)
  return c, alpha[:, :t], alpha[:, t:]


def test_attention_and_ssa_match_torch_equations():
  rng = np.random.default_rng(2)
  b, t, d = 3, 6, 8
  h_em = rng.standard_normal((b, t, d)).astype(np.float32)
  h_sp = rng.standard_normal((b, t, d)).astype(np.float32)
  mask = np.arange(t)[None, :] < np.array([[6], [3], [1]])
  h_em, h_sp = h_em * mask[..., None], h_sp * mask[..., None]

  att = SelfAttention()
  v = random_variables(att, h_em, mask)
  c, alpha = att.apply(v, h_em, mask)
  c_t, alpha_t = torch_self_attention(tt(h_em), tt(mask), tt(v["params"]["w_att"]))
  errs = {"attention c": rel(c, c_t), "attention alpha": rel(alpha, alpha_t)}

  ssa = SelfSpeakerAttention()
  v = random_variables(ssa, h_em, h_sp, mask, seed=3)
  c, a_em, a_sp = ssa.apply(v, h_em, h_sp, mask)
  p = {k: tt(a) for k, a in v["params"].items()}
  c_t, a_em_t, a_sp_t = torch_ssa(tt(h_em), tt(h_sp), tt(mask), p)
  errs.update({"ssa c": rel(c, c_t), "ssa alpha_em": rel(a_em, a_em_t),
               "ssa alpha_sp": rel(a_sp, a_sp_t)})
  print(errs)
  assert max(errs.values()) <= TOL


def small_model_cfg(name):
  """The shared tiny model (tests/tiny_config.py) with every size different (conv 3, 4, 4; dense
  10; BLSTM 2 x 6; embedding 5; 3 speakers), so that a transposed or misplaced weight cannot load
  with a matching shape; three convs keep the test fast."""
  return tiny_config(name, overrides={
      "model.conv_features": (3, 4, 4), "model.dense_units": 10, "model.lstm_units": 6,
      "model.embed_dim": 5, "model.num_speakers": 3 if name == "ssa_crnn" else 0}).model


@pytest.mark.parametrize("name,head", [
    ("acrnn", {}), ("ssa_crnn", {}),
    ("acrnn", {"logit_scale": "learned", "logit_scale_init": 3.0, "classifier_bias": "unscaled"}),
    ("ssa_crnn", {"logit_scale": 20.0, "classifier_bias": "none", "ssa": "speaker_only"})])
def test_whole_model_matches_torch_reference(name, head):
  cfg = small_model_cfg(name)
  for k, v in head.items():
    cfg[k] = v
  b, t, m, c = 3, 12, 8, 3
  x, mask = batch(b, t, m, c, [12, 8, 4], seed=5)
  model = build_model(cfg)
  variables = random_variables(model, x, mask, seed=4)
  torch_model = tr.build_torch_model(cfg, num_frames=t, num_mels=m, channels=c)
  tr.load_flax_variables(torch_model, variables)
  assert tr.num_trainable_parameters(torch_model) == sum(
      a.size for a in jax.tree.leaves(variables["params"]))

  logits, aux = jax.jit(model.apply)(variables, x, mask)
  torch_model.eval()
  with torch.no_grad():
    logits_t, aux_t = torch_model(tt(x), tt(mask))
  assert set(aux) == set(aux_t)
  errs = {k: rel(aux[k], aux_t[k]) for k in aux if k != "mask"}
  errs["logits"] = rel(logits, logits_t)
  np.testing.assert_array_equal(aux["mask"], aux_t["mask"].numpy())
  print(name, "eval", {k: f"{e:.1e}" for k, e in errs.items()})
  assert max(errs.values()) <= TOL, errs

  # Train mode: batch statistics of the real frames, running averages updated the same way.
  train_apply = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))
  (logits, _), updates = train_apply(variables, x, mask)
  torch_model.train()
  with torch.no_grad():
    logits_t, _ = torch_model(tt(x), tt(mask))
  errs = {"train logits": rel(logits, logits_t)}
  for branch, stats in updates["batch_stats"].items():
    bn = getattr(torch_model, branch).bn
    errs[f"{branch} mean"] = rel(stats["bn"]["mean"], bn.running_mean)
    errs[f"{branch} var"] = rel(stats["bn"]["var"], bn.running_var)
  print(name, "train", {k: f"{e:.1e}" for k, e in errs.items()})
  assert max(errs.values()) <= TOL, errs


def hand_count(num_speakers: int | None) -> int:
  """Parameters of the paper configs, from the layer sizes (T=300, M=40, C=3 -> T'=150, F'=20)."""
  conv = ((5 * 3 * 3 * 128 + 128)                 # conv1: 5x3 kernel, 3 -> 128 channels
          + (5 * 3 * 128 * 256 + 256)             # conv2: 128 -> 256
          + 4 * (5 * 3 * 256 * 256 + 256))        # conv3..6: 256 -> 256
  dense = 20 * 256 * 768                          # (F'=40/2) * 256 -> 768, no bias (BN follows)
  bn = 2 * 768                                    # scale, bias
  lstm = 2 * 4 * (768 * 128 + 128 * 128 + 128)    # 2 directions x 4 gates (input, recurrent, bias)
  crnn = conv + dense + bn + lstm
  if num_speakers is None:                        # ACRNN
    return (crnn
            + 256                                 # W_att (d = 256)
            + 256 * 128 + 128                     # embedding
            + 128 * 4 + 4)                        # classifier
  speaker = crnn + 256 + (256 * 128 + 128) + (128 * num_speakers + num_speakers)
  ssa = 150 + 256 + 3 * 256 * 256                 # W^q (T'), W^k_em (d), W^k_sp, W^v_em, W^v_sp
  emotion = crnn + ssa + (2 * 256 * 128 + 128) + (128 * 4 + 4)
  return speaker + emotion


@pytest.mark.parametrize("config_module,num_speakers", [(acrnn, None), (acrnn_r, None),
                                                        (ssa_crnn_r, 10)])
def test_paper_parameter_counts(config_module, num_speakers):
  cfg = config_module.get_config().model
  if num_speakers is not None:
    cfg.num_speakers = num_speakers
  x = jax.ShapeDtypeStruct((1, 300, 40, 3), jnp.float32)
  mask = jax.ShapeDtypeStruct((1, 300), jnp.bool_)
  shapes = jax.eval_shape(build_model(cfg).init, jax.random.key(0), x, mask)
  count = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes["params"]))
  print(config_module.__name__, count)
  assert count == hand_count(num_speakers)
  torch_model = tr.build_torch_model(cfg, num_frames=300, num_mels=40, channels=3)
  assert tr.num_trainable_parameters(torch_model) == count


def test_l1_sphere_projection_matches_torch():
  from ssa_jax.constraint import project_classifier
  rng = np.random.default_rng(6)
  kernel = rng.standard_normal((7, 4)).astype(np.float32)
  kernel[rng.random(kernel.shape) < 0.3] = 0.0
  z = rng.standard_normal((5, 7)).astype(np.float32)
  for scale in (0.01, 1.0, 100.0):  # columns outside and inside the ball
    w = scale * kernel
    r = torch.tensor(z.shape[0] / (4 * np.abs(z.sum(0)).sum()), dtype=torch.float32)
    ours = np.asarray(project_classifier(jnp.asarray(w), jnp.asarray(z), "l1_sphere"))
    ref = tr.project_l1_sphere_columns(tt(w).T, r).numpy().T
    assert rel(ref, ours) <= TOL


# --- the train step: its gradients against torch autograd, its NAdam update against numpy ------

GRAD_TOL = 1e-5  # float32 backward through 3 convs, BN, a BLSTM and attention (measured <= 2.1e-6)


def capture_gradients() -> optax.GradientTransformation:
  """An "optimizer" that changes nothing and keeps the gradient as its state: after one
  `train.train_step` with it, `state.opt_state` is that step's gradient tree."""
  return optax.GradientTransformation(
      init=lambda params: jax.tree.map(jnp.zeros_like, params),
      update=lambda grads, state, params=None: (jax.tree.map(jnp.zeros_like, grads), grads))


def step_state(model, tx, variables, x, mask):
  """A TrainState holding `variables` and `tx`'s fresh state."""
  state = train.create_train_state(model, tx, jax.random.key(0), x, mask)
  return state.replace(params=variables["params"], batch_stats=variables["batch_stats"],
                       opt_state=tx.init(variables["params"]))


def jax_step(model, tx, constraint="none"):
  return jax.jit(functools.partial(train.train_step, model=model, tx=tx, constraint=constraint))


def torch_grads_as_flax(torch_model, variables):
  """The `.grad` of every trainable torch parameter, arranged as the flax params tree.

  `tr.load_flax_variables` maps flax weights to torch ones (transposes, permutations, stacked LSTM
  gates); it is inverted here by probing, not by restating it: flax params whose every entry holds
  its own index (1..N, exact in float32) are loaded into a copy of the model, and each torch entry
  then says which flax entry it is. Every index must land exactly once (a bijection)."""
  leaves, treedef = jax.tree.flatten(variables["params"])
  sizes = [int(np.size(l)) for l in leaves]
  assert sum(sizes) < 2 ** 24  # indices exact in float32
  ids = np.split(np.arange(1, sum(sizes) + 1, dtype=np.float32), np.cumsum(sizes)[:-1])
  probe_params = treedef.unflatten([i.reshape(np.shape(l)) for i, l in zip(ids, leaves)])
  probe = copy.deepcopy(torch_model)
  tr.load_flax_variables(probe, {"params": probe_params, "batch_stats": variables["batch_stats"]})
  flat = np.zeros(sum(sizes) + 1, np.float64)
  hits = np.zeros(sum(sizes) + 1, np.int64)
  for (name, p_id), (_, p) in zip(probe.named_parameters(), torch_model.named_parameters()):
    if not p.requires_grad:  # the LSTM's bias_hh, frozen at 0 (flax has one bias per gate)
      continue
    idx = p_id.detach().numpy().astype(np.int64).ravel()
    flat[idx] = p.grad.detach().numpy().astype(np.float64).ravel()
    np.add.at(hits, idx, 1)
  assert hits[0] == 0 and np.all(hits[1:] == 1), "the flax -> torch weight map is not a bijection"
  return treedef.unflatten([g.reshape(np.shape(l)) for g, l in
                            zip(np.split(flat[1:], np.cumsum(sizes)[:-1]), leaves)])


def step_inputs(name):
  cfg = small_model_cfg(name)
  x, mask = batch(4, 12, 8, 3, [12, 8, 6, 12], seed=7)
  labels, speakers = np.array([0, 1, 2, 3], np.int32), np.array([0, 1, 2, 0], np.int32)
  model = build_model(cfg)
  variables = random_variables(model, x, mask, seed=8)
  return cfg, model, variables, {"x": x, "mask": mask, "label": labels, "speaker": speakers}


@pytest.mark.parametrize("name", ["acrnn", "ssa_crnn"])
def test_train_step_gradients_match_torch_autograd(name):
  cfg, model, variables, b = step_inputs(name)
  tx = capture_gradients()
  state, m = jax_step(model, tx)(step_state(model, tx, variables, b["x"], b["mask"]), b)
  grads = state.opt_state

  torch_model = tr.build_torch_model(cfg, num_frames=12, num_mels=8, channels=3)
  tr.load_flax_variables(torch_model, variables)
  torch_model.train()  # batch statistics of the real frames, as train=True
  logits, aux = torch_model(tt(b["x"]), tt(b["mask"]))
  loss = F.cross_entropy(logits, torch.from_numpy(b["label"]).long())
  if name == "ssa_crnn":  # CE_em + CE_sp, the speaker branch trained jointly
    loss = loss + F.cross_entropy(aux["speaker_logits"], torch.from_numpy(b["speaker"]).long())
  loss.backward()
  ref = torch_grads_as_flax(torch_model, variables)

  assert rel(m["loss"], loss.detach().numpy()) <= TOL
  paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(grads)[0]]
  got, want = dict(zip(paths, jax.tree.leaves(grads))), dict(zip(paths, jax.tree.leaves(ref)))
  scale = max(np.abs(r).max() for r in want.values())
  errs = {p: rel(got[p], want[p]) for p in paths}
  print(name, "worst gradients", sorted(errs.items(), key=lambda e: -e[1])[:3])
  assert max(errs.values()) <= GRAD_TOL, errs
  small = {p: np.abs(want[p]).max() / scale for p in errs if np.abs(want[p]).max() < 1e-6 * scale}
  assert not small, small  # every other weight gets a gradient well above round-off
  assert float(m["grad_norm"]) == pytest.approx(
      np.sqrt(sum(np.sum(np.square(r)) for r in jax.tree.leaves(ref))), rel=1e-4)
  # The step's new running statistics are torch's after the same forward pass.
  for branch, stats in state.batch_stats.items():
    bn = getattr(torch_model, branch).bn
    assert rel(stats["bn"]["mean"], bn.running_mean) <= TOL
    assert rel(stats["bn"]["var"], bn.running_var) <= TOL


def numpy_nadam(params, grads, m, v, t, lr, b1, b2, eps):
  """One step of optax.nadam, from its documented formula (scale_by_adam with nesterov=True,
  Dozat 2016; no momentum-decay schedule, unlike torch's NAdam), in float64:
    m_t = b1 m + (1 - b1) g,   v_t = b2 v + (1 - b2) g^2,
    m_hat = b1 m_t / (1 - b1^(t+1)) + (1 - b1) g / (1 - b1^t),   v_hat = v_t / (1 - b2^t),
    p_t = p - lr m_hat / (sqrt(v_hat) + eps).
  Returns (p_t, m_t, v_t)."""
  m = b1 * m + (1 - b1) * grads
  v = b2 * v + (1 - b2) * grads ** 2
  m_hat = b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * grads / (1 - b1 ** t)
  v_hat = v / (1 - b2 ** t)
  return params - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def test_train_step_nadam_update_matches_numpy():
  cfg, model, variables, b = step_inputs("ssa_crnn")
  tcfg = tiny_config().train
  lr, b1, b2, eps = (float(tcfg.learning_rate), float(tcfg.b1), float(tcfg.b2), float(tcfg.eps))
  tx, capture = train.make_optimizer(tcfg), capture_gradients()
  step, grads_at = jax_step(model, tx), jax_step(model, capture)
  state = step_state(model, tx, variables, b["x"], b["mask"])
  f64 = lambda tree: [np.asarray(a, np.float64) for a in jax.tree.leaves(tree)]  # noqa: E731
  p = f64(state.params)
  m, v = [np.zeros_like(a) for a in p], [np.zeros_like(a) for a in p]
  for t in (1, 2):  # the first step, then one with moments and bias corrections at work
    g_state = step_state(model, capture, {"params": state.params,
                                          "batch_stats": state.batch_stats}, b["x"], b["mask"])
    g = f64(grads_at(g_state, b)[0].opt_state)  # this step's gradient, at this step's weights
    state, _ = step(state, b)
    new = [numpy_nadam(*args, t, lr, b1, b2, eps) for args in zip(p, g, m, v)]
    got = f64(state.params)
    for a, (want, _, _), before in zip(got, new, p):
      assert np.abs(want - before).max() > 1e-4  # the update is large against the tolerance
      np.testing.assert_allclose(a, want, rtol=0, atol=2e-7 + 1e-6 * np.abs(want - before).max())
    p, m, v = got, [n[1] for n in new], [n[2] for n in new]
