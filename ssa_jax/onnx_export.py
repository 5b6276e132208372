"""ONNX export of a trained ACRNN / SSA-CRNN, run by onnxruntime (project issue 22, item 3).

  proto = export_onnx(variables, config.model, "model.onnx", metadata={...})   # writes the file
  proto = build_onnx_model(variables, config.model, frames=300, mels=40)       # in memory
  outputs = run_onnx("model.onnx", x, mask)          # onnxruntime: {output name: np.ndarray}
  outputs = run_onnx("model.onnx", x, mask, enroll_context)   # a model trained with enrollment
  sess = session("model.onnx", threads=2); outputs = run_session(sess, x, mask)   # reused session
  path = export_fold("runs/quickstart_ssa_crnn_r/fold3", "model.onnx")   # best checkpoint + metadata

The graph is written op by op with `onnx.helper` from the trained parameters and BatchNorm
statistics (`{"params", "batch_stats"}`), and computes `model.apply(variables, x, mask,
train=False)` in float32:

  inputs   x     float32 (B, T, M, C)   features (B dynamic; T dynamic for ACRNN, fixed for
                                        SSA-CRNN, whose W^q is tied to T' = T // pool_t)
           mask  bool    (B, T)         real frames
  outputs  probabilities   (B, K)  softmax of the emotion logits (`inference.eval_outputs`' probs)
           emotion_logits  (B, K)
           z_em            (B, E)  the emotion embedding (input of the classifier)
           SSA-CRNN only: speaker_logits (B, S), z_sp (B, E)

A model trained with enrollment (`model.enroll_k` > 0, `ssa_jax/enroll.py`) has two more inputs
and one more output, as the light runtime's exported function (`ssa_jax/serving.py`):
  inputs   enroll_context  float32 (J, d)  pooled speaker-branch states of enrollment files (J
                                           dynamic), attended by every example's SSA speaker half
           enroll_valid    bool    (J,)    entries to use (all False: the model without
                                           enrollment; pass J = 1 zeros then)
  output   speaker_state   (B, d)          each example's pooled speaker-branch state c_sp (Eq.
                                           1-2 of C_sp): an enrollment file's state is the mean
                                           over its segments (`predict.enrollment_context`)

Each piece mirrors `ssa_jax/models`:
  * convs: ONNX `Conv` (NCHW; XLA's SAME padding, `models.layers.same_padding`), leaky ReLU, one VALID
    `MaxPool` after conv1; the frame mask (pooled as `crnn.pool_mask`: a VALID max-pool over
    time) multiplies the activations before conv1 and after every conv (`model.mask_padding`);
  * dense + BatchNorm (running statistics) folded into one MatMul + Add (float64 fold);
  * BLSTM: ONNX's `LSTM` (direction "bidirectional", gates reordered i f g o -> i o f c) with
    `sequence_lens` = real pooled frames per example, so the reverse direction starts at each
    sequence's last real frame (flax's `flip_sequences`); its outputs are masked as in JAX;
  * attention: the masked softmax of `attention.masked_softmax` (padded frames get exactly 0);
    SSA with its mode (`model.ssa`); the emotion head with its temperature and bias mode.

Why not jax2onnx: its current release (0.17.1) pins orbax-checkpoint < 0.11.37 (we need >= 0.12.8;
with both pins pip falls back to the older jax2onnx 0.13.0), and issue 22 found it refusing
reverse scans and testing flax's BLSTM only without sequence lengths; jax2tf + tf2onnx no longer
works (non-native serialisation is gone from JAX). Building the graph from the
parameters needs only `onnx`, uses ONNX's own LSTM with sequence lengths, and the parity tests
(tests/test_onnx_export.py) hold it to the JAX model within 1e-4.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np

logger = logging.getLogger(__name__)

OPSET = 17
BN_EPSILON = 1e-5  # nn.BatchNorm(epsilon=1e-5) in models/crnn.py
OUTPUTS_ACRNN = ("probabilities", "emotion_logits", "z_em")
OUTPUTS_SSA = OUTPUTS_ACRNN + ("speaker_logits", "z_sp")


def _onnx():
  try:
    import onnx  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("ONNX export needs the onnx package: pip install -e '.[onnx]'") from e
  return onnx


# --------------------------------------------------------------------------- parameters


class _Params:
  """Read access to a nested variable tree that records every leaf it hands out, so that
  parameters the exporter does not know about (a model option it does not implement) are an
  error instead of a silently different graph."""

  def __init__(self, tree: Mapping[str, Any]):
    self._tree = tree
    self._used: set[tuple[str, ...]] = set()

  def __call__(self, *path: str) -> np.ndarray:
    node: Any = self._tree
    for i, key in enumerate(path):
      if not isinstance(node, Mapping) or key not in node:
        raise ValueError(f"the variables have no {'/'.join(path[:i + 1])} (expected by the "
                         f"exported architecture; does the config match the checkpoint?)")
      node = node[key]
    self._used.add(path)
    return np.asarray(node, np.float64)

  def count(self, *path: str) -> int:
    """How many of `prefix1, prefix2, ...` (e.g. conv1..convN) the node `path[:-1]` holds."""
    node, prefix, n = self._tree, path[-1], 0
    for key in path[:-1]:
      node = node[key]
    while f"{prefix}{n + 1}" in node:
      n += 1
    return n

  def has(self, *path: str) -> bool:
    node: Any = self._tree
    for key in path:
      if not isinstance(node, Mapping) or key not in node:
        return False
      node = node[key]
    return True

  def unused(self) -> list[str]:
    out = []

    def walk(node, prefix):
      if isinstance(node, Mapping):
        for k, v in node.items():
          walk(v, prefix + (str(k),))
      elif prefix not in self._used:
        out.append("/".join(prefix))
    walk(self._tree, ())
    return sorted(out)


def lstm_weights(p: _Params, prefix: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One direction of a flax BLSTM (`.../cell/{i,h}{i,f,g,o}`) in ONNX LSTM layout.

  Returns W (4H, F), R (4H, H), B (8H,) = [W_b ; R_b] in ONNX's gate order i, o, f, c
  (flax's g is ONNX's c); flax keeps the gate biases on the recurrent kernels, so W_b = 0.
  """
  order = "iofg"
  w = np.concatenate([p(*prefix, f"i{g}", "kernel").T for g in order])
  r = np.concatenate([p(*prefix, f"h{g}", "kernel").T for g in order])
  rb = np.concatenate([p(*prefix, f"h{g}", "bias") for g in order])
  return w, r, np.concatenate([np.zeros_like(rb), rb])


def fold_batchnorm(kernel: np.ndarray, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray,
                   var: np.ndarray, eps: float = BN_EPSILON) -> tuple[np.ndarray, np.ndarray]:
  """Dense (no bias) followed by BatchNorm with running statistics as one affine map.

  kernel (F, D), scale / bias / mean / var (D,) -> (kernel' (F, D), bias' (D,)) with
  x kernel' + bias' = ((x kernel) - mean) / sqrt(var + eps) * scale + bias.
  """
  s = scale / np.sqrt(var + eps)
  return kernel * s[None, :], bias - mean * s


# --------------------------------------------------------------------------- graph builder


class _Graph:
  """Collects nodes and float32 initialisers with unique names."""

  def __init__(self):
    self.onnx = _onnx()
    self.nodes: list[Any] = []
    self.inits: list[Any] = []
    self._n = 0

  def _name(self, hint: str) -> str:
    self._n += 1
    return f"{hint}_{self._n}"

  def const(self, value: Any, hint: str = "c", dtype: Any = np.float32) -> str:
    name = self._name(hint)
    self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype), name))
    return name

  def op(self, op_type: str, *inputs: str, hint: str | None = None, outputs: int = 1,
         out_names: Sequence[str] | None = None, **attrs) -> Any:
    names = list(out_names) if out_names else [self._name(hint or op_type.lower())
                                               for _ in range(outputs)]
    self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), names, **attrs))
    return names[0] if outputs == 1 else names

  # small compositions ------------------------------------------------------------------
  def dense(self, x: str, kernel: np.ndarray, bias: np.ndarray, hint: str,
            out_name: str | None = None) -> str:
    """x (..., F) @ kernel (F, D) + bias (D,)."""
    y = self.op("MatMul", x, self.const(kernel, hint + "_kernel"), hint=hint)
    return self.op("Add", y, self.const(bias, hint + "_bias"), hint=hint,
                   out_names=[out_name] if out_name else None)

  def squeeze(self, x: str, axis: int) -> str:
    return self.op("Squeeze", x, self.const([axis], "axes", np.int64))

  def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
    return self.op("Unsqueeze", x, self.const(list(axes), "axes", np.int64))

  def masked_softmax(self, scores: str, mask: str) -> str:
    """Softmax over the last axis with masked entries exactly 0 (`attention.masked_softmax`);
    mask is bool, shaped as scores."""
    lowest = self.const(np.finfo(np.float32).min, "lowest")
    sm = self.op("Softmax", self.op("Where", mask, scores, lowest), axis=-1)
    return self.op("Where", mask, sm, self.const(0.0, "zero"), hint="alpha")


# --------------------------------------------------------------------------- model pieces


def _crnn(g: _Graph, p: _Params, branch: str, x_nchw: str, mask_f: str, cfg: Mapping[str, Any]
          ) -> tuple[str, str, str]:
  """One CRNN branch (models/crnn.py) on x (B, C, T, M) with the frame mask (B, T) float.

  Returns (h (B, T', 2H) masked, pooled mask (B, T') float, pooled mask (B, T') bool).
  """
  from ssa_jax.models import layers  # pylint: disable=g-import-not-at-top  (as `architecture`)
  pt, pf = cfg["pool_size"]
  slope, masking = cfg["leaky_slope"], cfg["mask_padding"]

  def frame_mask(m):  # (B, T) -> (B, 1, T, 1), broadcast over channels and mel bands
    return g.unsqueeze(m, [1, 3])

  y, fm = x_nchw, frame_mask(mask_f)
  if masking:
    y = g.op("Mul", y, fm)
  pmask = mask_f
  for i in range(p.count("params", branch, "conv")):
    kernel = p("params", branch, f"conv{i + 1}", "kernel")  # (kt, kf, Ci, Co) HWIO
    bias = p("params", branch, f"conv{i + 1}", "bias")
    kt, kf = kernel.shape[:2]
    (lt, ht), (lf, hf) = layers.same_padding((kt, kf))
    y = g.op("Conv", y, g.const(kernel.transpose(3, 2, 0, 1), f"{branch}_conv{i + 1}_w"),
             g.const(bias, f"{branch}_conv{i + 1}_b"), kernel_shape=[kt, kf],
             pads=[lt, lf, ht, hf], strides=[1, 1], hint=f"{branch}_conv{i + 1}")
    y = g.op("LeakyRelu", y, alpha=slope)
    if i == 0:
      y = g.op("MaxPool", y, kernel_shape=[pt, pf], strides=[pt, pf])
      pooled = g.op("MaxPool", g.unsqueeze(mask_f, [1]), kernel_shape=[pt], strides=[pt])
      pmask = g.squeeze(pooled, 1)  # (B, T') float: any real frame in the window
      fm = frame_mask(pmask)
    if masking:
      y = g.op("Mul", y, fm)
  # (B, C, T', F') -> (B, T', F', C) -> (B, T', F'·C), as the NHWC reshape in JAX.
  y = g.op("Reshape", g.op("Transpose", y, perm=[0, 2, 3, 1]),
           g.const([0, 0, -1], "shape", np.int64))
  kernel, shift = fold_batchnorm(
      p("params", branch, "dense", "kernel"), p("params", branch, "bn", "scale"),
      p("params", branch, "bn", "bias"), p("batch_stats", branch, "bn", "mean"),
      p("batch_stats", branch, "bn", "var"))
  y = g.op("LeakyRelu", g.dense(y, kernel, shift, f"{branch}_dense_bn"), alpha=slope)
  mask3 = g.unsqueeze(pmask, [2])  # (B, T', 1)
  if masking:
    y = g.op("Mul", y, mask3)
  fw = lstm_weights(p, ("params", branch, "blstm", "forward_rnn", "cell"))
  bw = lstm_weights(p, ("params", branch, "blstm", "backward_rnn", "cell"))
  hidden = fw[1].shape[1]
  w, r, b = (np.stack([f, bk]) for f, bk in zip(fw, bw))
  lstm_in = [g.op("Transpose", y, perm=[1, 0, 2]), g.const(w, f"{branch}_lstm_W"),
             g.const(r, f"{branch}_lstm_R"), g.const(b, f"{branch}_lstm_B")]
  if masking:
    # Real pooled frames per example (0 for a fully padded one: its outputs are 0, as in JAX).
    lstm_in.append(g.op("Cast", g.op("ReduceSum", pmask, g.const([1], "axes", np.int64),
                                     keepdims=0), to=_onnx().TensorProto.INT32))
  y_all = g.op("LSTM", *lstm_in, hidden_size=hidden, direction="bidirectional",
               hint=f"{branch}_blstm")  # Y (T', 2, B, H)
  h = g.op("Reshape", g.op("Transpose", y_all, perm=[2, 0, 1, 3]),
           g.const([0, 0, -1], "shape", np.int64))  # (B, T', 2H) = [forward ; backward]
  if masking:
    h = g.op("Mul", h, mask3)
  return h, pmask, g.op("Cast", pmask, to=_onnx().TensorProto.BOOL)


def _self_attention(g: _Graph, p: _Params, name: str, h: str, mask_b: str) -> str:
  """Eq. 1-2: h (B, T', d) -> context (B, d)."""
  w_att = p("params", name, "w_att")[:, None]
  scores = g.squeeze(g.op("MatMul", h, g.const(w_att, name + "_w")), 2)
  alpha = g.masked_softmax(scores, mask_b)
  return g.squeeze(g.op("MatMul", g.unsqueeze(alpha, [1]), h), 1)


def _ssa_weights(g: _Graph, scores: list[str], allowed: list[str], softmax: str) -> str:
  """`attention.ssa_weights`: the scores and float masks of the self half (the first) and the
  speaker half (the rest, (B, T') or (B, J) each) -> alpha (B, N) over their concatenation."""
  def softmax_of(parts_s, parts_m):
    mask = g.op("Cast", g.op("Concat", *parts_m, axis=1), to=_onnx().TensorProto.BOOL)
    return g.masked_softmax(g.op("Concat", *parts_s, axis=1), mask)
  if softmax == "joint":
    return softmax_of(scores, allowed)
  halves = [(scores[:1], allowed[:1]), (scores[1:], allowed[1:])]
  present = [g.op("ReduceMax", g.op("Concat", *m, axis=1), axes=[1], keepdims=1)
             for _, m in halves]  # (B, 1): 1 if the half has an allowed entry (opset 17: axes)
  n = g.op("Max", g.op("Add", *present), g.const(1.0, "one"))
  return g.op("Div", g.op("Concat", *[softmax_of(s, m) for s, m in halves], axis=1), n)


def _ssa(g: _Graph, p: _Params, h_em: str, h_sp: str, mask_f: str, mode: str,
         enroll: tuple[str, str] | None = None, softmax: str = "joint") -> str:
  """Eq. 3-7 (attention.SelfSpeakerAttention): -> context (B, 2d). `enroll`: the names of the
  enrollment inputs (context (J, d), valid (J,) bool): J more keys and values of the speaker half
  (`SelfSpeakerAttention._with_enrollment`), shared by every example. `softmax`: the weights'
  normalisation (`attention.ssa_weights`: joint, or per_half)."""
  w_q = p("params", "ssa", "w_q")  # (T',)
  t = w_q.shape[0]
  # q = sum_t W^q_t mask_t h_em,t: (B, d, T') @ (T', 1) -> (B, d)
  masked = g.op("Mul", h_em, g.unsqueeze(mask_f, [2]))
  q = g.squeeze(g.op("MatMul", g.op("Transpose", masked, perm=[0, 2, 1]),
                     g.const(w_q[:, None], "ssa_w_q")), 2)
  a_em = g.squeeze(g.op("MatMul", h_em, g.const(p("params", "ssa", "w_k_em")[:, None],
                                                "ssa_w_k_em")), 2)
  w_k_sp = g.const(p("params", "ssa", "w_k_sp"), "ssa_w_k_sp")
  keys = g.op("MatMul", h_sp, w_k_sp)
  a_sp = g.op("Div", g.squeeze(g.op("MatMul", keys, g.unsqueeze(q, [2])), 2),
              g.const(math.sqrt(t), "sqrt_t"))
  off = g.op("Mul", mask_f, g.const(0.0, "zero"))
  halves = {"full": (mask_f, mask_f), "self_only": (mask_f, off), "speaker_only": (off, mask_f)}
  scores, allowed = [a_em, a_sp], list(halves[mode])
  if enroll is not None:
    context, valid = enroll
    e_keys = g.op("MatMul", context, w_k_sp)
    scores.append(g.op("Div", g.op("MatMul", q, g.op("Transpose", e_keys, perm=[1, 0])),
                       g.const(math.sqrt(t), "sqrt_t")))  # (B, J)
    valid_f = g.op("Expand", g.op("Cast", valid, to=_onnx().TensorProto.FLOAT),
                   g.op("Shape", scores[-1]))  # (B, J)
    allowed.append(g.op("Mul", valid_f, g.const(0.0, "zero")) if mode == "self_only"
                   else valid_f)
  alpha = _ssa_weights(g, scores, allowed, softmax)

  def columns(start, stop):  # alpha[:, start:stop] (stop None: to the end)
    return g.op("Slice", alpha, g.const([start], "starts", np.int64),
                g.const([np.iinfo(np.int64).max if stop is None else stop], "ends", np.int64),
                g.const([1], "axes", np.int64))
  if enroll is None:
    alpha_em, alpha_sp = g.op("Split", alpha, g.const([t, t], "split", np.int64), axis=1,
                              outputs=2)
  else:  # J is dynamic: slices
    alpha_em, alpha_sp = columns(0, t), columns(t, 2 * t)
  v_em = g.op("MatMul", h_em, g.const(p("params", "ssa", "w_v_em"), "ssa_w_v_em"))
  w_v_sp = g.const(p("params", "ssa", "w_v_sp"), "ssa_w_v_sp")
  v_sp = g.op("MatMul", h_sp, w_v_sp)
  c_em = g.squeeze(g.op("MatMul", g.unsqueeze(alpha_em, [1]), v_em), 1)
  c_sp = g.squeeze(g.op("MatMul", g.unsqueeze(alpha_sp, [1]), v_sp), 1)
  if enroll is not None:  # + sum_j alpha_j e_j W^v_sp: (B, J) @ (J, d)
    e_values = g.op("MatMul", enroll[0], w_v_sp)
    c_sp = g.op("Add", c_sp, g.op("MatMul", columns(2 * t, None), e_values))
  return g.op("Concat", c_em, c_sp, axis=1)


def _emotion_head(g: _Graph, p: _Params, z: str, cfg: Mapping[str, Any]) -> str:
  """ACRNN.emotion_head: z (B, E) -> logits (B, K) (the docstring of models/acrnn.py)."""
  zw = g.op("MatMul", z, g.const(p("params", "classifier", "kernel"), "classifier_kernel"))
  if cfg["logit_scale"] == "learned":
    scale = np.exp(np.float32(p("params", "log_logit_scale")))
  else:
    scale = np.float32(cfg["logit_scale"])
  s = g.const(scale, "logit_scale")
  mode = cfg["classifier_bias"]
  if mode == "none":
    return g.op("Mul", zw, s, out_names=["emotion_logits"])
  b = g.const(p("params", "classifier", "bias"), "classifier_bias")
  if mode == "scaled":
    return g.op("Mul", g.op("Add", zw, b), s, out_names=["emotion_logits"])
  return g.op("Add", g.op("Mul", zw, s), b, out_names=["emotion_logits"])


# --------------------------------------------------------------------------- the model


def architecture(model_cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """The settings of `config.model` the graph depends on (sizes come from the parameters), read
  off the module `models.build_model(model_cfg)` makes (which checks them, once)."""
  # pylint: disable-next=g-import-not-at-top  (jax and flax only where a config is read)
  from ssa_jax import models
  name = str(model_cfg.name)
  if name not in ("acrnn", "ssa_crnn"):
    raise ValueError(f"ONNX export knows model.name 'acrnn' and 'ssa_crnn', got {name!r}")
  m = models.build_model(model_cfg)
  cfg = {"name": name, "pool_size": tuple(int(v) for v in m.pool_size),
         "leaky_slope": float(m.leaky_slope), "mask_padding": bool(m.mask_padding),
         "classifier_bias": m.classifier_bias, "logit_scale": m.scale[0],
         "ssa": getattr(m, "ssa", None), "ssa_softmax": getattr(m, "ssa_softmax", "joint")}
  if getattr(m, "speaker_loss", "softmax") != "softmax":  # unseen speakers: no bias, a cosine
    raise ValueError(f"ONNX export follows the dense speaker classifier (model.speaker_loss="
                     f"'softmax') only, got {m.speaker_loss!r}")
  cfg["enroll"] = getattr(m, "enroll_k", 0) > 0  # the enrollment inputs (module docstring)
  if m.dtype != "float32":
    logger.warning("model.dtype is %s: the ONNX graph computes in float32", m.dtype)
  return cfg


def build_onnx_model(variables: Mapping[str, Any], model_cfg: ml_collections.ConfigDict, *,
                     frames: int | None = None, mels: int | None = None,
                     metadata: Mapping[str, str] | None = None) -> Any:
  """The ONNX model (`onnx.ModelProto`, checked) of `model.apply(variables, x, mask, train=False)`.

  Args:
    variables: {"params", "batch_stats"} of ACRNN or SSA-CRNN (numpy or jax arrays).
    model_cfg: `config.model` the variables were trained with.
    frames: T of the input. None: dynamic for ACRNN; for SSA-CRNN pool_t · T' (W^q's length).
    mels: M of the input. None: F' · pool_f, F' from the dense layer's input size.
    metadata: extra `metadata_props` (string to string).

  Raises:
    ValueError: settings the graph cannot follow, or variables that do not match them
      (missing parameters, or parameters the exporter does not know).
  """
  onnx = _onnx()
  cfg = architecture(model_cfg)
  p = _Params(variables)
  if not p.has("params") or not p.has("batch_stats"):
    raise ValueError("variables must hold 'params' and 'batch_stats' (a trained model's)")
  ssa = cfg["name"] == "ssa_crnn"
  branch = "crnn_sp" if ssa else "crnn"
  if not p.has("params", branch):
    raise ValueError(f"the variables have no params/{branch}: not a {cfg['name']} model")
  pt, pf = cfg["pool_size"]
  n_conv = p.count("params", branch, "conv")
  if n_conv == 0:
    raise ValueError(f"the variables have no params/{branch}/conv1")
  channels = int(np.shape(variables["params"][branch]["conv1"]["kernel"])[2])
  last = int(np.shape(variables["params"][branch][f"conv{n_conv}"]["kernel"])[3])
  f_in = int(np.shape(variables["params"][branch]["dense"]["kernel"])[0])
  if f_in % last:
    raise ValueError(f"params/{branch}/dense/kernel has {f_in} inputs, not a multiple of the "
                     f"last conv's {last} filters")
  if mels is None:
    mels = f_in // last * pf
  elif mels // pf * last != f_in:
    raise ValueError(f"{mels} mel bands pool to {mels // pf} but the dense layer expects "
                     f"{f_in // last}")
  if ssa:
    t_pooled = int(np.shape(variables["params"]["ssa"]["w_q"])[0])
    if frames is None:
      frames = t_pooled * pt
    elif frames // pt != t_pooled:
      raise ValueError(f"SSA-CRNN's W^q was built for {t_pooled} pooled frames per segment but "
                       f"frames={frames} pools to {frames // pt}")

  g = _Graph()
  x_nchw = g.op("Transpose", "x", perm=[0, 3, 1, 2])  # (B, C, T, M)
  mask_f = g.op("Cast", "mask", to=onnx.TensorProto.FLOAT)
  if ssa:
    h_sp, pmask_f, pmask_b = _crnn(g, p, "crnn_sp", x_nchw, mask_f, cfg)
    c_sp = _self_attention(g, p, "attention_sp", h_sp, pmask_b)
    if cfg["enroll"]:
      g.op("Identity", c_sp, out_names=["speaker_state"])
    z_sp = g.op("LeakyRelu", g.dense(c_sp, p("params", "embed_sp", "kernel"),
                                     p("params", "embed_sp", "bias"), "embed_sp"),
                alpha=cfg["leaky_slope"], out_names=["z_sp"])
    g.dense(z_sp, p("params", "speaker_classifier", "kernel"),
            p("params", "speaker_classifier", "bias"), "speaker", out_name="speaker_logits")
    h_em, _, _ = _crnn(g, p, "crnn_em", x_nchw, mask_f, cfg)
    c = _ssa(g, p, h_em, h_sp, pmask_f, cfg["ssa"],
             ("enroll_context", "enroll_valid") if cfg["enroll"] else None, cfg["ssa_softmax"])
  else:
    h, _, pmask_b = _crnn(g, p, "crnn", x_nchw, mask_f, cfg)
    c = _self_attention(g, p, "attention", h, pmask_b)
  z = g.dense(c, p("params", "embed", "kernel"), p("params", "embed", "bias"), "embed")
  g.op("LeakyRelu", z, alpha=cfg["leaky_slope"], out_names=["z_em"])
  logits = _emotion_head(g, p, "z_em", cfg)
  g.op("Softmax", logits, axis=-1, out_names=["probabilities"])

  unused = p.unused()
  if unused:
    raise ValueError(f"the variables hold parameters the ONNX export does not know "
                     f"({', '.join(unused[:6])}{' ...' if len(unused) > 6 else ''}): a model "
                     f"option it does not implement")

  num_classes = int(np.shape(variables["params"]["classifier"]["kernel"])[1])
  embed = int(np.shape(variables["params"]["embed"]["kernel"])[1])
  t_dim = "frames" if frames is None else int(frames)
  f32, vi = onnx.TensorProto.FLOAT, onnx.helper.make_tensor_value_info
  inputs = [vi("x", f32, ["batch", t_dim, mels, channels]),
            vi("mask", onnx.TensorProto.BOOL, ["batch", t_dim])]
  outputs = [vi("probabilities", f32, ["batch", num_classes]),
             vi("emotion_logits", f32, ["batch", num_classes]),
             vi("z_em", f32, ["batch", embed])]
  if ssa:
    speakers = int(np.shape(variables["params"]["speaker_classifier"]["kernel"])[1])
    outputs += [vi("speaker_logits", f32, ["batch", speakers]), vi("z_sp", f32, ["batch", embed])]
  if cfg["enroll"]:
    d = int(np.shape(variables["params"]["attention_sp"]["w_att"])[0])
    inputs += [vi("enroll_context", f32, ["enroll", d]),
               vi("enroll_valid", onnx.TensorProto.BOOL, ["enroll"])]
    outputs.append(vi("speaker_state", f32, ["batch", d]))
  graph = onnx.helper.make_graph(g.nodes, cfg["name"], inputs, outputs, g.inits)
  model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                 producer_name="ssa_jax")
  model.doc_string = (f"{cfg['name']} (ssa_jax): x float32 (batch, frames, mels, channels), "
                      f"mask bool (batch, frames)"
                      + (", enroll_context float32 (enroll, d), enroll_valid bool (enroll)"
                         if cfg["enroll"] else "")
                      + f" -> {', '.join(o.name for o in outputs)}")
  props = {"model": cfg["name"], "conv_layers": str(n_conv), "mask_padding": str(cfg["mask_padding"])}
  props.update({str(k): str(v) for k, v in (metadata or {}).items()})
  onnx.helper.set_model_props(model, props)
  onnx.checker.check_model(model, full_check=True)
  return model


def export_onnx(variables: Mapping[str, Any], model_cfg: ml_collections.ConfigDict,
                path: str | os.PathLike, *, frames: int | None = None, mels: int | None = None,
                metadata: Mapping[str, str] | None = None) -> Any:
  """`build_onnx_model(...)` written to `path` (atomically); returns the `onnx.ModelProto`."""
  from ssa_jax import io  # pylint: disable=g-import-not-at-top
  model = build_onnx_model(variables, model_cfg, frames=frames, mels=mels, metadata=metadata)
  io.write_bytes(os.fspath(path), model.SerializeToString())
  logger.info("wrote %s (%s, %.1f MiB)", os.fspath(path), model.graph.name,
              os.path.getsize(path) / 2**20)
  return model


def session(model: Any, threads: int = 0) -> Any:
  """An onnxruntime `InferenceSession` of an exported model (path, bytes or ModelProto) on the
  CPU execution provider; `threads` > 0 sets its intra-op threads (0: onnxruntime's default)."""
  try:
    import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("running an ONNX model needs onnxruntime: pip install -e '.[onnx]'") from e
  if hasattr(model, "SerializeToString"):
    model = model.SerializeToString()
  elif not isinstance(model, bytes):
    model = os.fspath(model)
  opts = ort.SessionOptions()
  opts.log_severity_level = 3
  if threads > 0:
    opts.intra_op_num_threads = int(threads)
  return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def run_session(sess: Any, x: np.ndarray, mask: np.ndarray,
                enroll_context: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """x (B, T, M, C) float32, mask (B, T) bool -> {output name: array} of a `session`. A model
  with enrollment inputs gets `enroll_context` (J, d), all valid, or (None) one invalid entry."""
  names = [o.name for o in sess.get_outputs()]
  feed = {"x": np.asarray(x, np.float32), "mask": np.asarray(mask, bool)}
  if any(i.name == "enroll_context" for i in sess.get_inputs()):
    d = int(next(i for i in sess.get_inputs() if i.name == "enroll_context").shape[1])
    if enroll_context is None:
      feed.update(enroll_context=np.zeros((1, d), np.float32), enroll_valid=np.zeros(1, bool))
    else:
      context = np.asarray(enroll_context, np.float32)
      feed.update(enroll_context=context, enroll_valid=np.ones(context.shape[0], bool))
  elif enroll_context is not None:
    raise ValueError("this ONNX model has no enrollment inputs")
  values = sess.run(names, feed)
  return dict(zip(names, values))


def run_onnx(model: Any, x: np.ndarray, mask: np.ndarray,
             enroll_context: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """Runs an exported model (path, bytes or ModelProto) with onnxruntime on the CPU.

  x (B, T, M, C) float32, mask (B, T) bool (, enroll_context (J, d) as `run_session`) ->
  {output name: array} (the module docstring).
  """
  return run_session(session(model), x, mask, enroll_context)


# --------------------------------------------------------------------------- a trained fold


def fold_metadata(config: ml_collections.ConfigDict, classes: Sequence[str],
                  step: int | None) -> dict[str, str]:
  """What a user of the ONNX file needs besides the graph: class names (logit order), feature
  settings, segment pooling and normalisation, the training step."""
  meta = {"classes": json.dumps(list(classes)),
          "features": json.dumps(config.features.to_dict(), sort_keys=True, default=str),
          "pooling": str(config.train.pooling),
          "norm_fallback": str(config.features.get("norm_fallback", "self")),
          "segment_frames": str(int(config.features.segment_frames)),
          "config_name": str(config.get("name", "")),
          "model_config": json.dumps(config.model.to_dict(), sort_keys=True, default=str)}
  if step is not None:
    meta["step"] = str(int(step))
  return meta


def export_fold(fold_dir: str | os.PathLike, out: str | os.PathLike) -> Any:
  """The best checkpoint of `<workdir>/fold<K>` (`predict.load_predictor`) as an ONNX file with
  `fold_metadata` in its metadata_props; returns the ModelProto.

  Raises:
    ValueError: not a trained fold (message names the folder), or a model the export cannot follow.
  """
  from ssa_jax import predict  # pylint: disable=g-import-not-at-top
  fold_dir = os.fspath(fold_dir)
  if not os.path.isdir(fold_dir):
    raise ValueError(f"{fold_dir}: no such run folder")
  predictor = predict.load_predictor(fold_dir)
  config = predictor.config
  frames = int(config.features.segment_frames) if config.model.name == "ssa_crnn" else None
  try:
    return export_onnx(predictor.variables, config.model, out, frames=frames,
                       mels=int(config.features.n_mels),
                       metadata=fold_metadata(config, predictor.classes, predictor.step))
  except ValueError as e:
    raise ValueError(f"{fold_dir}: {e}") from e
