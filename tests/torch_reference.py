"""ACRNN and SSA-CRNN in PyTorch: the parity reference for the flax models and the speed
reference for the step benchmark.

Same layers, shapes, masking and parameter count as `ssa_jax.models` (docs/DESIGN.md §3):

  model = build_torch_model(config.model, num_frames=300, num_mels=40, channels=3)
  load_flax_variables(model, variables)           # weights and running statistics from flax
  logits, aux = model(x (B, T, M, C) float32, mask (B, T) bool)   # channels-last input

Conventions matched to flax: conv kernels (kt, kf, cin, cout) <-> Conv2d (cout, cin, kt, kf); the
conv features are flattened as (T', F'·C) with the channel fastest (flax NHWC reshape); Linear
weights are flax kernels transposed; the LSTM gate order i, f, g, o is the same, flax's single
bias (on the recurrent kernels) goes to `bias_ih` and `bias_hh` is frozen at 0, so the trainable
parameter count equals flax's; BatchNorm is a masked batch norm with flax's semantics (biased
batch variance, `running = momentum·running + (1-momentum)·batch`, padded frames excluded).
`make_optimizer` is torch's NAdam (note: it has a momentum-decay schedule that optax.nadam does
not; the cost per step is the same).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.profiler import record_function
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ssa_jax.models import resolve_logit_scale


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
  """Softmax over the last axis with masked entries exactly 0 (all-masked rows: all 0)."""
  scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
  return torch.softmax(scores, dim=-1).masked_fill(~mask, 0.0)


def pool_mask(mask: torch.Tensor, pool_t: int) -> torch.Tensor:
  b, t = mask.shape
  tp = t // pool_t
  return mask[:, : tp * pool_t].reshape(b, tp, pool_t).any(dim=-1)


class MaskedBatchNorm(nn.Module):
  """BatchNorm over (B, T, F) features with a frame mask, flax.linen.BatchNorm semantics."""

  def __init__(self, features: int, momentum: float = 0.99, eps: float = 1e-5):
    super().__init__()
    self.momentum, self.eps = momentum, eps
    self.weight = nn.Parameter(torch.ones(features))
    self.bias = nn.Parameter(torch.zeros(features))
    self.register_buffer("running_mean", torch.zeros(features))
    self.register_buffer("running_var", torch.ones(features))

  def forward(self, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if self.training:
      m = torch.ones_like(y[..., :1]) if mask is None else mask[..., None].to(y.dtype)
      count = m.sum().clamp_min(1.0)
      mean = (y * m).sum(dim=(0, 1)) / count
      var = (((y - mean) ** 2) * m).sum(dim=(0, 1)) / count
      with torch.no_grad():
        self.running_mean.mul_(self.momentum).add_((1 - self.momentum) * mean)
        self.running_var.mul_(self.momentum).add_((1 - self.momentum) * var)
    else:
      mean, var = self.running_mean, self.running_var
    return (y - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class TorchCRNN(nn.Module):
  """x (B, T, M, C), mask (B, T) -> h (B, T', 2·lstm_units), pooled mask (B, T')."""

  def __init__(self, num_mels: int, channels: int, conv_features: Sequence[int],
               kernel_size: Sequence[int], pool_size: Sequence[int], dense_units: int,
               lstm_units: int, leaky_slope: float, bn_momentum: float, mask_padding: bool):
    super().__init__()
    kt, kf = kernel_size
    if kt % 2 == 0 or kf % 2 == 0:
      raise ValueError(f"torch reference supports odd kernels only (SAME padding), got {kernel_size}")
    self.pool_size, self.slope, self.mask_padding = tuple(pool_size), leaky_slope, mask_padding
    cins = [channels] + list(conv_features[:-1])
    self.convs = nn.ModuleList(nn.Conv2d(ci, co, (kt, kf), padding=(kt // 2, kf // 2))
                               for ci, co in zip(cins, conv_features))
    self.dense = nn.Linear((num_mels // pool_size[1]) * conv_features[-1], dense_units,
                           bias=False)  # BatchNorm follows
    self.bn = MaskedBatchNorm(dense_units, bn_momentum)
    self.lstm = nn.LSTM(dense_units, lstm_units, batch_first=True, bidirectional=True)
    for name, p in self.lstm.named_parameters():
      if name.startswith("bias_hh"):  # flax has one bias per gate: keep this one at 0
        nn.init.zeros_(p)
        p.requires_grad_(False)

  def forward(self, x: torch.Tensor, mask: torch.Tensor):
    b, t, _, _ = x.shape
    y = x.permute(0, 3, 1, 2)  # NCHW view of the channels-last input
    fmask = mask[:, None, :, None].to(y.dtype)
    if self.mask_padding:
      y = y * fmask
    for i, conv in enumerate(self.convs):
      y = F.leaky_relu(conv(y), self.slope)
      if i == 0:
        y = F.max_pool2d(y, self.pool_size, self.pool_size)
        mask = pool_mask(mask, self.pool_size[0])
        fmask = mask[:, None, :, None].to(y.dtype)
      if self.mask_padding:
        y = y * fmask
    _, c, tp, fp = y.shape
    y = y.permute(0, 2, 3, 1).reshape(b, tp, fp * c)
    y = F.leaky_relu(self.bn(self.dense(y), mask if self.mask_padding else None), self.slope)
    if not self.mask_padding:
      return self.lstm(y)[0], mask
    y = y * mask[..., None].to(y.dtype)
    lengths = mask.sum(dim=1).clamp_min(1).cpu()
    packed = pack_padded_sequence(y, lengths, batch_first=True, enforce_sorted=False)
    h, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=tp)
    return h * mask[..., None].to(h.dtype), mask


class TorchSelfAttention(nn.Module):
  def __init__(self, d: int):
    super().__init__()
    self.w_att = nn.Parameter(torch.randn(d) / math.sqrt(d))

  def forward(self, h, mask):
    alpha = masked_softmax(h @ self.w_att, mask)
    return torch.einsum("bt,btd->bd", alpha, h), alpha


class TorchSSA(nn.Module):
  """Self Speaker Attention (docs/DESIGN.md §3 reading), as ssa_jax.models.SelfSpeakerAttention."""

  def __init__(self, t: int, d: int, mode: str = "full"):
    super().__init__()
    self.mode = mode
    self.w_q = nn.Parameter(torch.randn(t) / math.sqrt(t))
    self.w_k_em = nn.Parameter(torch.randn(d) / math.sqrt(d))
    self.w_k_sp, self.w_v_em, self.w_v_sp = (nn.Parameter(torch.randn(d, d) / math.sqrt(d))
                                             for _ in range(3))

  def forward(self, h_em, h_sp, mask):
    t = h_em.shape[1]
    q = torch.einsum("t,btd->bd", self.w_q, h_em * mask[..., None])
    a_em = h_em @ self.w_k_em
    a_sp = torch.einsum("btd,bd->bt", h_sp @ self.w_k_sp, q) / math.sqrt(t)
    off = torch.zeros_like(mask)
    halves = {"full": (mask, mask), "self_only": (mask, off), "speaker_only": (off, mask)}
    alpha = masked_softmax(torch.cat([a_em, a_sp], 1), torch.cat(halves[self.mode], 1))
    alpha_em, alpha_sp = alpha[:, :t], alpha[:, t:]
    c = torch.cat([torch.einsum("bt,btd->bd", alpha_em, h_em @ self.w_v_em),
                   torch.einsum("bt,btd->bd", alpha_sp, h_sp @ self.w_v_sp)], 1)
    return c, alpha_em, alpha_sp


class TorchHead(nn.Module):
  """The emotion head of ssa_jax.models.acrnn: s (z W + b) | s z W + b | s z W, s fixed or
  exp(log_logit_scale) (learned)."""

  def __init__(self, embed_dim: int, num_classes: int, logit_scale: float | str = 1.0,
               logit_scale_init: float = 1.0, bias: str = "scaled"):
    super().__init__()
    self.bias_mode = bias
    self.classifier = nn.Linear(embed_dim, num_classes, bias=bias != "none")
    self.learned = logit_scale == "learned"
    if self.learned:
      self.log_logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)))
    else:
      self.fixed_scale = float(logit_scale)

  def forward(self, z):
    """z (B, E) -> (logits (B, K), s ())."""
    s = torch.exp(self.log_logit_scale) if self.learned else torch.tensor(self.fixed_scale)
    zw = z @ self.classifier.weight.T
    if self.bias_mode == "scaled":
      return s * (zw + self.classifier.bias), s
    if self.bias_mode == "unscaled":
      return s * zw + self.classifier.bias, s
    return s * zw, s


class TorchACRNN(nn.Module):
  """ACRNN: CRNN + self attention + embedding + classifier. forward -> (logits, aux)."""

  def __init__(self, crnn_kwargs: dict, embed_dim: int, num_classes: int, leaky_slope: float,
               head_kwargs: dict | None = None):
    super().__init__()
    d = 2 * crnn_kwargs["lstm_units"]
    self.slope = leaky_slope
    self.crnn = TorchCRNN(**crnn_kwargs)
    self.attention = TorchSelfAttention(d)
    self.embed = nn.Linear(d, embed_dim)
    self.head = TorchHead(embed_dim, num_classes, **(head_kwargs or {}))
    self.classifier = self.head.classifier  # the Eq. 8 kernel

  def forward(self, x, mask):
    h, pmask = self.crnn(x, mask)
    c, alpha = self.attention(h, pmask)
    z = F.leaky_relu(self.embed(c), self.slope)
    logits, scale = self.head(z)
    return logits, {"emotion_logits": logits, "z_em": z, "mask": pmask, "alpha": alpha,
                    "logit_scale": scale}


class TorchSSACRNN(nn.Module):
  """SSA-CRNN: speaker branch + emotion branch joined by the SSA. forward -> (logits, aux)."""

  def __init__(self, crnn_kwargs: dict, embed_dim: int, num_classes: int, num_speakers: int,
               leaky_slope: float, num_pooled_frames: int, head_kwargs: dict | None = None,
               ssa_mode: str = "full"):
    super().__init__()
    d = 2 * crnn_kwargs["lstm_units"]
    self.slope = leaky_slope
    self.crnn_sp = TorchCRNN(**crnn_kwargs)
    self.attention_sp = TorchSelfAttention(d)
    self.embed_sp = nn.Linear(d, embed_dim)
    self.speaker_classifier = nn.Linear(embed_dim, num_speakers)
    self.crnn_em = TorchCRNN(**crnn_kwargs)
    self.ssa = TorchSSA(num_pooled_frames, d, ssa_mode)
    self.embed = nn.Linear(2 * d, embed_dim)
    self.head = TorchHead(embed_dim, num_classes, **(head_kwargs or {}))
    self.classifier = self.head.classifier  # the Eq. 8 kernel

  def forward(self, x, mask):
    h_sp, pmask = self.crnn_sp(x, mask)
    c_sp, alpha_sp_self = self.attention_sp(h_sp, pmask)
    z_sp = F.leaky_relu(self.embed_sp(c_sp), self.slope)
    speaker_logits = self.speaker_classifier(z_sp)
    h_em, _ = self.crnn_em(x, mask)
    c_em, alpha_em, alpha_sp = self.ssa(h_em, h_sp, pmask)
    z_em = F.leaky_relu(self.embed(c_em), self.slope)
    logits, scale = self.head(z_em)
    return logits, {"emotion_logits": logits, "z_em": z_em, "mask": pmask,
                    "speaker_logits": speaker_logits, "z_sp": z_sp,
                    "alpha_sp_self": alpha_sp_self, "alpha_em": alpha_em, "alpha_sp": alpha_sp,
                    "logit_scale": scale}


def build_torch_model(model_cfg, num_frames: int = 300, num_mels: int = 40,
                      channels: int = 3) -> nn.Module:
  """The torch twin of `ssa_jax.models.build_model(model_cfg)` for inputs (B, T, M, C)."""
  crnn_kwargs = dict(num_mels=num_mels, channels=channels,
                     conv_features=tuple(model_cfg.conv_features),
                     kernel_size=tuple(model_cfg.kernel_size), pool_size=tuple(model_cfg.pool_size),
                     dense_units=model_cfg.dense_units, lstm_units=model_cfg.lstm_units,
                     leaky_slope=model_cfg.leaky_slope, bn_momentum=model_cfg.bn_momentum,
                     mask_padding=model_cfg.mask_padding)
  scale, init = resolve_logit_scale(model_cfg)
  head_kwargs = dict(logit_scale=scale, logit_scale_init=init,
                     bias=str(model_cfg.get("classifier_bias", "scaled")))
  if model_cfg.name == "acrnn":
    return TorchACRNN(crnn_kwargs, model_cfg.embed_dim, model_cfg.num_classes,
                      model_cfg.leaky_slope, head_kwargs)
  if model_cfg.name == "ssa_crnn":
    if model_cfg.num_speakers <= 0:
      raise ValueError(f"ssa_crnn needs model.num_speakers > 0, got {model_cfg.num_speakers}")
    return TorchSSACRNN(crnn_kwargs, model_cfg.embed_dim, model_cfg.num_classes,
                        model_cfg.num_speakers, model_cfg.leaky_slope,
                        num_frames // model_cfg.pool_size[0], head_kwargs,
                        str(model_cfg.get("ssa", "full")))
  raise ValueError(f"unknown model.name {model_cfg.name!r}")


def num_trainable_parameters(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- flax -> torch weights ---------------------------------------------------------------------

def _t(a) -> torch.Tensor:
  return torch.from_numpy(np.array(a, dtype=np.float32))


def _copy(param: torch.Tensor, value: torch.Tensor) -> None:
  if tuple(param.shape) != tuple(value.shape):
    raise ValueError(f"shape mismatch copying flax weights: torch {tuple(param.shape)} "
                     f"vs flax {tuple(value.shape)}")
  with torch.no_grad():
    param.copy_(value)


def _load_dense(linear: nn.Linear, p) -> None:
  _copy(linear.weight, _t(p["kernel"]).T)
  if linear.bias is not None or "bias" in p:
    _copy(linear.bias, _t(p["bias"]))


def load_lstm_direction(lstm: nn.LSTM, cell, suffix: str = "") -> None:
  """Copies a flax OptimizedLSTMCell's params into one direction of a torch nn.LSTM."""
  gates = ("i", "f", "g", "o")  # torch's row-block order, the same gates as flax
  _copy(getattr(lstm, f"weight_ih_l0{suffix}"), torch.cat([_t(cell["i" + g]["kernel"]).T for g in gates]))
  _copy(getattr(lstm, f"weight_hh_l0{suffix}"), torch.cat([_t(cell["h" + g]["kernel"]).T for g in gates]))
  _copy(getattr(lstm, f"bias_ih_l0{suffix}"), torch.cat([_t(cell["h" + g]["bias"]) for g in gates]))
  _copy(getattr(lstm, f"bias_hh_l0{suffix}"), torch.zeros_like(getattr(lstm, f"bias_hh_l0{suffix}")))


def _load_crnn(crnn: TorchCRNN, p, stats) -> None:
  for i, conv in enumerate(crnn.convs):
    _copy(conv.weight, _t(p[f"conv{i + 1}"]["kernel"]).permute(3, 2, 0, 1))
    _copy(conv.bias, _t(p[f"conv{i + 1}"]["bias"]))
  _load_dense(crnn.dense, p["dense"])
  _copy(crnn.bn.weight, _t(p["bn"]["scale"]))
  _copy(crnn.bn.bias, _t(p["bn"]["bias"]))
  _copy(crnn.bn.running_mean, _t(stats["bn"]["mean"]))
  _copy(crnn.bn.running_var, _t(stats["bn"]["var"]))
  load_lstm_direction(crnn.lstm, p["blstm"]["forward_rnn"]["cell"])
  load_lstm_direction(crnn.lstm, p["blstm"]["backward_rnn"]["cell"], "_reverse")


def _load_attention(att: TorchSelfAttention, p) -> None:
  _copy(att.w_att, _t(p["w_att"]))


def load_flax_variables(model: nn.Module, variables) -> nn.Module:
  """Copies flax variables ({"params", "batch_stats"}) of the same architecture into `model`."""
  p, s = variables["params"], variables["batch_stats"]
  if isinstance(model, TorchACRNN):
    _load_crnn(model.crnn, p["crnn"], s["crnn"])
    _load_attention(model.attention, p["attention"])
  elif isinstance(model, TorchSSACRNN):
    _load_crnn(model.crnn_sp, p["crnn_sp"], s["crnn_sp"])
    _load_attention(model.attention_sp, p["attention_sp"])
    _load_dense(model.embed_sp, p["embed_sp"])
    _load_dense(model.speaker_classifier, p["speaker_classifier"])
    _load_crnn(model.crnn_em, p["crnn_em"], s["crnn_em"])
    for name in ("w_q", "w_k_em", "w_k_sp", "w_v_em", "w_v_sp"):
      _copy(getattr(model.ssa, name), _t(p["ssa"][name]))
  else:
    raise TypeError(f"expected TorchACRNN or TorchSSACRNN, got {type(model).__name__}")
  _load_dense(model.embed, p["embed"])
  _load_dense(model.classifier, p["classifier"])
  if model.head.learned:
    _copy(model.head.log_logit_scale, _t(p["log_logit_scale"]))
  return model


# --- training helpers (speed reference) ---------------------------------------------------------

def make_optimizer(model: nn.Module, learning_rate: float = 1e-4, b1: float = 0.9,
                   b2: float = 0.999, eps: float = 1e-8) -> torch.optim.Optimizer:
  """torch NAdam over the trainable parameters (see the module docstring)."""
  params = [p for p in model.parameters() if p.requires_grad]
  return torch.optim.NAdam(params, lr=learning_rate, betas=(b1, b2), eps=eps)


def project_l1_sphere_columns(kernel: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
  """Per-column nearest point on the L1 sphere (sort-based simplex projection of |w|).

  `kernel` is (K, n) (torch Linear layout: one row per class). Zero entries count as positive.
  The threshold is computed in float64 (the cumulative sums cancel badly in float32 when the
  rows lie far outside the ball).
  """
  u = kernel.abs().double()
  srt, _ = torch.sort(u, dim=1, descending=True)
  css = srt.cumsum(dim=1) - radius
  ks = torch.arange(1, u.shape[1] + 1, dtype=u.dtype, device=u.device)
  rho = (srt - css / ks > 0).sum(dim=1, keepdim=True)
  theta = css.gather(1, rho - 1) / rho.to(u.dtype)
  sign = torch.where(kernel >= 0, 1.0, -1.0).to(kernel.dtype)
  return sign * (u - theta).clamp_min(0.0).to(kernel.dtype)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               mask: torch.Tensor, labels: torch.Tensor, speakers: torch.Tensor | None = None,
               constraint: str = "l1_sphere", speaker_loss_weight: float = 1.0) -> float:
  """One step: CE_em (+ CE_sp), NAdam update, then the Eq. 8 projection of the classifier."""
  model.train()
  optimizer.zero_grad(set_to_none=True)
  logits, aux = model(x, mask)
  with record_function("loss"):  # scopes for benchmarks/step.py --profile
    loss = F.cross_entropy(logits, labels)
    if "speaker_logits" in aux:
      loss = loss + speaker_loss_weight * F.cross_entropy(aux["speaker_logits"], speakers)
  loss.backward()
  with record_function("optimizer"):
    optimizer.step()
  if constraint != "none":
    with torch.no_grad(), record_function("eq8"):
      z = aux["z_em"].detach()
      w = model.classifier.weight
      radius = z.shape[0] / (w.shape[0] * z.sum(dim=0).abs().sum().double())
      if torch.isfinite(radius):
        if constraint == "l1_sphere":
          w.copy_(project_l1_sphere_columns(w, radius))
        else:
          norms = w.abs().sum(dim=1, keepdim=True)
          w.copy_(torch.where(norms > 0, w * radius / norms.clamp_min(1e-30),
                              radius / w.shape[1]))
  return float(loss.detach())
