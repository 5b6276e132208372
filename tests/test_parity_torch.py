"""Float32 parity of the flax models with PyTorch on the same weights.

Error measure: rel(a, b) = max|a - b| / max|b| (b the torch value), required <= 1e-5.
Components: the conv stack (torch Conv2d + max_pool2d), the BLSTM (torch nn.LSTM, packed
sequences of different lengths), self attention and SSA (torch written here from Eq. 1-7), and
whole ACRNN / SSA-CRNN forwards (eval and train mode) against benchmarks/torch_reference.py.
Also the parameter counts of the paper configs against counts written out by hand.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmarks import torch_reference as tr
from configs import acrnn, acrnn_r, ssa_crnn_r
from ssa_jax.config import base_config
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
  """Eq. 3-7 as DESIGN §3 reads them."""
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
  c = base_config().model
  c.name = name
  c.conv_features = (3, 4, 4)
  c.dense_units = 10
  c.lstm_units = 6
  c.embed_dim = 5
  c.num_speakers = 3 if name == "ssa_crnn" else 0
  return c


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


def test_torch_projection_and_train_step():
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

  for name in ("acrnn", "ssa_crnn"):
    cfg = small_model_cfg(name)
    torch.manual_seed(0)
    model = tr.build_torch_model(cfg, num_frames=8, num_mels=8, channels=3)
    opt = tr.make_optimizer(model, learning_rate=1e-3)
    x, mask = batch(4, 8, 8, 3, [8, 6, 4, 8])
    loss = tr.train_step(model, opt, tt(x), tt(mask), torch.tensor([0, 1, 2, 3]),
                         torch.tensor([0, 1, 2, 0]), constraint="l1_sphere")
    assert np.isfinite(loss)
    norms = model.classifier.weight.detach().abs().sum(dim=1).numpy()
    np.testing.assert_allclose(norms, norms[0], rtol=1e-5)  # every class on the same sphere
    crnn = model.crnn if name == "acrnn" else model.crnn_em
    assert float(crnn.lstm.bias_hh_l0.abs().sum()) == 0.0  # frozen: flax has one bias per gate
