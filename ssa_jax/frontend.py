"""The front end's pure numpy / JAX part, shared by training (`ssa_jax.features`) and the light
runtime (`ssa_jax.serving`): it imports numpy and jax only (no librosa, flax, ml_collections, chex).

  fe = FrontEnd.from_config(config.features)         # or a dict of the same fields (an export's)
  feats, mask = log_mel_3d_batch(waves (B, S), lengths (B,), fe, window, mel_fb)  # jitted
  feats_list = extract(waves, fe, window, mel_fb)     # many utterances, a few length buckets
  segs, mask = segment(feats (F, M, 3), 300, 100)     # 3 s segments (n, T, M, 3) + mask (n, T)
  stats = fit_speaker_stats(segs, mask, speakers)     # per speaker and global mean / std
  x = normalize(segs, mask, speakers, stats)          # (x - mean) / std, padded frames 0
  x = normalize_utterance(segs, mask, "self" | "train", stats)   # one file, no known speaker

The window `(win_length,)` and the mel filterbank `(n_fft // 2 + 1, n_mels)` are inputs here:
`features.constants(fe)` computes them with librosa (the training path), and an exported model
carries them (`ssa_jax.export`), so the runtime needs no librosa. What the features are (framing,
log-Mel, Δ, ΔΔ, the librosa reference they equal) is documented in `ssa_jax/features.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# ----------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FrontEnd:
  """The hashable subset of `config.features` the front end depends on (a jit static argument)."""
  sample_rate: int
  win_length: int
  hop_length: int
  n_fft: int
  n_mels: int
  fmin: float
  fmax: float
  log_floor: float
  delta_width: int

  @classmethod
  def from_config(cls, cfg: Any) -> "FrontEnd":
    """From `config.features` (attributes) or a dict with the same keys (an export's metadata);
    other keys are ignored.

    Raises:
      ValueError: inconsistent settings; KeyError / AttributeError: a missing field.
    """
    get = cfg.__getitem__ if isinstance(cfg, Mapping) else functools.partial(getattr, cfg)
    fe = cls(**{f.name: (int if f.type == "int" else float)(get(f.name))
                for f in dataclasses.fields(cls)})
    if not 0 < fe.hop_length <= fe.win_length <= fe.n_fft:
      raise ValueError(f"features config: need 0 < hop_length <= win_length <= n_fft, got "
                       f"{fe.hop_length}, {fe.win_length}, {fe.n_fft}")
    if fe.delta_width < 3 or fe.delta_width % 2 == 0:
      raise ValueError(f"features config: delta_width must be odd and >= 3, got {fe.delta_width}")
    if fe.log_floor <= 0:
      raise ValueError(f"features config: log_floor must be > 0, got {fe.log_floor}")
    return fe

  @property
  def delta_n(self) -> int:
    return (self.delta_width - 1) // 2


def num_frames(num_samples: int, fe: FrontEnd) -> int:
  """Frames of a wave of `num_samples` samples (at fe.sample_rate), `center=False` framing.

  `F = 1 + (num_samples - win_length) // hop_length` if `num_samples >= win_length`, else 0.
  With 25 ms / 10 ms at 16 kHz: 1600 samples (100 ms) -> 8 frames, 48000 (3 s) -> 298.
  """
  if num_samples < fe.win_length:
    return 0
  return 1 + (int(num_samples) - fe.win_length) // fe.hop_length


# ----------------------------------------------------------------------------------------------
# Batched JAX implementation
# ----------------------------------------------------------------------------------------------


# Full float32 matmuls also on GPU/TPU (whose default f32 matmul precision is TF32/bf16 passes).
_EXACT = jax.lax.Precision.HIGHEST


def _delta(x: jax.Array, last: jax.Array, n_max: int) -> jax.Array:
  """Regression delta over axis 1 of `x (B, F, M)`, clamped to frames [0, last_b] per row.

  Frames after `last` (padding) are never read for frames <= last; their outputs are garbage
  that the caller masks. A shifted copy plus `where` replaces a gather.
  """
  frames = x.shape[1]
  x_last = jnp.take_along_axis(x, last[:, None, None], axis=1)  # (B, 1, M)
  xp = jnp.pad(x, ((0, 0), (n_max, n_max), (0, 0)), mode="edge")
  t = jnp.arange(frames)
  out = jnp.zeros_like(x)
  for n in range(1, n_max + 1):
    ahead = xp[:, n_max + n:n_max + n + frames]  # x[min(t+n, F-1)]
    ahead = jnp.where((t[None, :] + n <= last[:, None])[..., None], ahead, x_last)
    behind = xp[:, n_max - n:n_max - n + frames]  # x[max(t-n, 0)]
    out = out + n * (ahead - behind)
  return out / (2.0 * sum(n * n for n in range(1, n_max + 1)))


def _power_spectrum(blocks: jax.Array, window: jax.Array, fe: FrontEnd, frames: int,
                    dft: str) -> jax.Array:
  """`blocks (B, frames-1+J, hop)`, `window (win,)` -> power spectrum `(B, frames, n_fft//2+1)`.

  Frame t is blocks t, t+1, ..., t+J-1 (the last one cut to the window's end): framing by reshape
  and contiguous slices, no gather; the window zero-padded at the end to n_fft (librosa centres it
  in n_fft instead: a circular shift, which leaves the power spectrum unchanged).
  """
  hop, win = fe.hop_length, fe.win_length
  n_blocks = -(-win // hop)
  pieces = [(j, min(hop, win - j * hop)) for j in range(n_blocks)]
  if dft == "rfft":
    # Each windowed piece padded into its place in the n_fft frame, then summed: XLA fuses this
    # into one loop that writes the (B, F, n_fft) frames once (a concatenate + pad took 4 passes).
    frames_x = sum(
        jnp.pad(blocks[:, j:j + frames, :size] * window[j * hop:j * hop + size],
                ((0, 0), (0, 0), (j * hop, fe.n_fft - j * hop - size)))
        for j, size in pieces)
    spec = jnp.fft.rfft(frames_x, axis=-1)
    return jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
  if dft == "matmul":
    bins = fe.n_fft // 2 + 1
    phase = 2.0 * np.pi * np.outer(np.arange(win), np.arange(bins)) / fe.n_fft
    basis = np.concatenate([np.cos(phase), -np.sin(phase)], axis=1).astype(np.float32)
    basis = jnp.asarray(basis) * window[:, None]  # (win, 2·bins), window folded in
    acc = None
    for j, size in pieces:
      term = jnp.matmul(blocks[:, j:j + frames, :size], basis[j * hop:j * hop + size],
                        precision=_EXACT)
      acc = term if acc is None else acc + term
    return acc[..., :bins] ** 2 + acc[..., bins:] ** 2
  raise ValueError(f"dft must be 'rfft' or 'matmul', got {dft!r}")


@functools.partial(jax.jit, static_argnames=("fe", "dft"))
def _log_mel_3d_batch(waves: jax.Array, lengths: jax.Array, window: jax.Array, mel_fb: jax.Array,
                      fe: FrontEnd, dft: str) -> tuple[jax.Array, jax.Array]:
  batch, samples = waves.shape
  frames = num_frames(samples, fe)
  hop = fe.hop_length
  n_blocks = -(-fe.win_length // hop)
  total = (frames - 1 + n_blocks) * hop
  waves = waves.astype(jnp.float32)
  waves = waves[:, :total] if total <= samples else jnp.pad(waves, ((0, 0), (0, total - samples)))
  blocks = waves.reshape(batch, frames - 1 + n_blocks, hop)
  power = _power_spectrum(blocks, window.astype(jnp.float32), fe, frames, dft)
  mel = jnp.matmul(power, mel_fb.astype(jnp.float32), precision=_EXACT)
  static = jnp.log(mel + jnp.float32(fe.log_floor))  # (B, F, M)
  lengths = lengths.astype(jnp.int32)
  real = jnp.where(lengths >= fe.win_length, 1 + (lengths - fe.win_length) // hop, 0)
  real = jnp.minimum(real, frames)
  last = jnp.clip(real - 1, 0, frames - 1)
  d1 = _delta(static, last, fe.delta_n)
  d2 = _delta(d1, last, fe.delta_n)
  mask = jnp.arange(frames)[None, :] < real[:, None]
  feats = jnp.where(mask[..., None, None], jnp.stack([static, d1, d2], axis=-1), 0.0)
  return feats, mask


def log_mel_3d_batch(waves: jax.Array | np.ndarray, lengths: jax.Array | np.ndarray,
                     fe: FrontEnd, window: np.ndarray, mel_fb: np.ndarray,
                     dft: str = "rfft") -> tuple[jax.Array, jax.Array]:
  """Batched, jitted front end for zero-padded waves already at `fe.sample_rate`.

  Args:
    waves: `(B, S)` float32, row b's real samples are `waves[b, :lengths[b]]`.
    lengths: `(B,)` int, real samples per row (0 <= lengths <= S).
    fe: the settings; window: `(win_length,)`, mel_fb: `(n_fft // 2 + 1, n_mels)` float32
      (`features.constants`).
    dft: "rfft" (`jnp.fft.rfft`, the faster on CPU) or "matmul" (windowed DFT as a real matmul).

  Returns:
    feats: `(B, F, M, 3)` float32 with F = `num_frames(S)`; row b's first `num_frames(lengths[b])`
      frames equal `log_mel_3d(waves[b, :lengths[b]])` (the deltas clamp at the row's real last
      frame), the rest are 0.
    mask: `(B, F)` bool, True on real frames.
  """
  if np.ndim(waves) != 2 or np.shape(lengths) != np.shape(waves)[:1]:
    raise ValueError(f"log_mel_3d_batch: expected waves (B, S) and lengths (B,), got "
                     f"{np.shape(waves)} and {np.shape(lengths)}")
  if np.shape(window) != (fe.win_length,) or np.shape(mel_fb) != (fe.n_fft // 2 + 1, fe.n_mels):
    raise ValueError(f"log_mel_3d_batch: expected window ({fe.win_length},) and mel_fb "
                     f"({fe.n_fft // 2 + 1}, {fe.n_mels}), got {np.shape(window)} and "
                     f"{np.shape(mel_fb)}")
  if num_frames(waves.shape[1], fe) == 0:
    raise ValueError(f"log_mel_3d_batch: {waves.shape[1]} samples per row is shorter than one "
                     f"window ({fe.win_length} samples)")
  return _log_mel_3d_batch(jnp.asarray(waves), jnp.asarray(lengths), jnp.asarray(window),
                           jnp.asarray(mel_fb), fe, dft)


def bucket_frames(frames: int, growth: float = 1.25, smallest: int = 100, quantum: int = 25) -> int:
  """The padded frame count used for an utterance of `frames` frames (>= frames).

  Buckets are `smallest · growth^k` rounded up to a multiple of `quantum`: at most ~25 % padding,
  and about ten sizes between 1 s and 10 s (so about ten compilations at most).
  """
  bucket = smallest
  k = 0
  while bucket < frames:
    k += 1
    bucket = int(quantum * math.ceil(smallest * growth ** k / quantum))
  return bucket


def extract(waves: Sequence[np.ndarray], fe: FrontEnd, window: np.ndarray, mel_fb: np.ndarray,
            batch_size: int = 64, dft: str = "rfft") -> list[np.ndarray]:
  """Features of many utterances with the batched JAX path, returned in the input order.

  Utterances are sorted by length and batched; each batch is zero-padded to a length bucket
  (`bucket_frames`) and the batch dimension to a fixed size, so jit compiles once per bucket.
  With several local devices (e.g. `--xla_force_host_platform_device_count=2` on a 2-core CPU)
  each batch is sharded over them along the batch axis.

  Args:
    waves: mono float32 waves already at `fe.sample_rate` (e.g. from `audio.load_audio`).
    fe, window, mel_fb: as `log_mel_3d_batch`.
    batch_size: utterances per call of `log_mel_3d_batch`.

  Returns:
    One `(F_i, M, 3)` float32 array per wave, F_i = `num_frames(len(waves[i]))`.

  Raises:
    ValueError: a wave is not 1-D or shorter than one window (the message gives its index).
  """
  lengths = np.zeros(len(waves), dtype=np.int64)
  for i, w in enumerate(waves):
    if np.ndim(w) != 1:
      raise ValueError(f"extract: wave {i} is not 1-D (shape {np.shape(w)})")
    if len(w) < fe.win_length:
      raise ValueError(f"extract: wave {i} has {len(w)} samples, fewer than one window "
                       f"({fe.win_length})")
    lengths[i] = len(w)
  out: list[np.ndarray | None] = [None] * len(waves)
  if not waves:
    return []
  order = np.argsort(lengths, kind="stable")
  rows = min(batch_size, len(waves))
  devices = jax.local_devices()
  sharding = None
  if len(devices) > 1:  # each row is independent: split the batch over the devices
    rows = -(-rows // len(devices)) * len(devices)
    sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(devices), ("data",)),
                                          jax.sharding.PartitionSpec("data"))
  for start in range(0, len(order), rows):
    idx = order[start:start + rows]
    frames = bucket_frames(num_frames(int(lengths[idx].max()), fe))
    samples = (frames - 1) * fe.hop_length + fe.win_length
    batch = np.zeros((rows, samples), dtype=np.float32)
    batch_lengths = np.zeros(rows, dtype=np.int32)
    for r, i in enumerate(idx):
      # Samples after the last frame's end are read by no frame: copy only the used ones (a wave
      # can be up to hop-1 samples longer than its last frame, and its frames fill the bucket).
      used = (num_frames(int(lengths[i]), fe) - 1) * fe.hop_length + fe.win_length
      batch[r, :used] = waves[i][:used]
      batch_lengths[r] = used
    if sharding is not None:
      batch, batch_lengths = jax.device_put((batch, batch_lengths), sharding)
    feats, _ = jax.device_get(log_mel_3d_batch(batch, batch_lengths, fe, window, mel_fb, dft))
    for r, i in enumerate(idx):
      out[i] = np.array(feats[r, :num_frames(int(lengths[i]), fe)])
  return out  # type: ignore[return-value]



# ----------------------------------------------------------------------------------------------
# Segmentation
# ----------------------------------------------------------------------------------------------


def segment(features: np.ndarray, segment_frames: int = 300,
            min_frames: int = 100) -> tuple[np.ndarray, np.ndarray]:
  """Cuts `(F, M, C)` features into consecutive, non-overlapping segments of `segment_frames`.

  Segment k holds frames `[k·T, (k+1)·T)`. The trailing partial segment (F mod T > 0 frames) is
  zero-padded to T; it is dropped if it has fewer than `min_frames` real frames, unless it is the
  only segment (F < T: an utterance shorter than T frames is always one padded segment). So the
  dropped tail, if any, has fewer than `min_frames` frames and the kept segments hold the first
  `n_full·T + kept tail` frames in order.

  Returns:
    segments: `(n, T, M, C)` same dtype as `features`, padded frames 0.
    mask: `(n, T)` bool, True on real frames.

  Raises:
    ValueError: `features` is not 3-D or has no frames.
  """
  features = np.asarray(features)
  if features.ndim != 3:
    raise ValueError(f"segment: expected features (F, M, C), got shape {features.shape}")
  total = features.shape[0]
  if total == 0:
    raise ValueError("segment: features have no frames")
  if segment_frames <= 0:
    raise ValueError(f"segment: segment_frames must be > 0, got {segment_frames}")
  n_full, tail = divmod(total, segment_frames)
  keep_tail = tail > 0 and (tail >= min_frames or n_full == 0)
  n = n_full + int(keep_tail)
  kept = n_full * segment_frames + (tail if keep_tail else 0)
  padded = np.zeros((n * segment_frames,) + features.shape[1:], dtype=features.dtype)
  padded[:kept] = features[:kept]
  mask = np.zeros(n * segment_frames, dtype=bool)
  mask[:kept] = True
  return (padded.reshape((n, segment_frames) + features.shape[1:]),
          mask.reshape(n, segment_frames))


# ----------------------------------------------------------------------------------------------
# Per-speaker normalisation
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SpeakerStats:
  """Per-speaker and global mean/std over real frames, per mel band and channel.

  speakers: the fitted speaker ids (ints or strings), in the order of `mean`/`std`.
  mean, std: `(S, M, C)` float32 (std already floored); global_mean, global_std: `(M, C)` over all
  fitted frames; frames: `(S,)` int64, real frames each speaker's statistics came from.
  """
  speakers: tuple
  mean: np.ndarray
  std: np.ndarray
  global_mean: np.ndarray
  global_std: np.ndarray
  frames: np.ndarray

  def index(self) -> dict:
    return {s: i for i, s in enumerate(self.speakers)}

  def to_arrays(self) -> dict[str, np.ndarray]:
    """Plain numpy arrays (no object dtype): `np.savez(path, **stats.to_arrays())` needs no pickle."""
    speakers = np.asarray(self.speakers)
    if speakers.dtype == object:
      raise ValueError("SpeakerStats.to_arrays: speaker ids must all be ints or all be strings")
    return {"speakers": speakers, "mean": self.mean, "std": self.std,
            "global_mean": self.global_mean, "global_std": self.global_std, "frames": self.frames}

  @classmethod
  def from_arrays(cls, arrays: Any) -> "SpeakerStats":
    """Inverse of `to_arrays` (accepts a dict or an `np.load` result)."""
    return cls(speakers=tuple(np.asarray(arrays["speakers"]).tolist()),
               mean=np.asarray(arrays["mean"], np.float32), std=np.asarray(arrays["std"], np.float32),
               global_mean=np.asarray(arrays["global_mean"], np.float32),
               global_std=np.asarray(arrays["global_std"], np.float32),
               frames=np.asarray(arrays["frames"], np.int64))


# Segments per chunk when statistics and normalised copies are computed from row indices: the
# temporaries stay at a few chunks (paper sizes: 256 x 144 KB = 37 MB) whatever the corpus size.
_CHUNK = 256


def _chunks(rows: np.ndarray):
  chunk = _CHUNK
  for i in range(0, len(rows), chunk):
    yield rows[i:i + chunk]


def _row_sums(segments: np.ndarray, mask: np.ndarray, rows: np.ndarray,
              mean: np.ndarray | None = None) -> tuple[np.ndarray, int]:
  """Sum over the real frames of `segments[rows]` of x (mean None) or of (x - mean)², in float64,
  a chunk of rows at a time: ((M, C) float64, number of real frames)."""
  total = np.zeros(segments.shape[2:], np.float64)
  count = 0
  for r in _chunks(rows):
    real = segments[r][mask[r]].astype(np.float64)  # (frames in this chunk, M, C)
    if mean is not None:
      real -= mean
      real *= real
    total += real.sum(axis=0)
    count += real.shape[0]
  return total, count


def _rows_moments(segments: np.ndarray, mask: np.ndarray, rows: np.ndarray, min_std: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
  """Two-pass moments over the real frames of `segments[rows]`, without copying them whole:
  (mean f32, floored std f32, mean f64, sum of squared deviations f64, frames)."""
  total, count = _row_sums(segments, mask, rows)
  mean = total / max(count, 1)
  ss, _ = _row_sums(segments, mask, rows, mean)
  std = np.sqrt(ss / max(count, 1))
  return (mean.astype(np.float32), np.maximum(std, min_std).astype(np.float32), mean, ss, count)


def _key(s: Any) -> Any:
  return s.item() if isinstance(s, np.generic) else s


def _check(segments: np.ndarray, mask: np.ndarray, speakers: np.ndarray) -> None:
  if segments.ndim != 4:
    raise ValueError(f"expected segments (N, T, M, C), got shape {segments.shape}")
  if mask.shape != segments.shape[:2] or mask.dtype != bool:
    raise ValueError(f"mask must be bool {segments.shape[:2]}, got {mask.dtype} {mask.shape}")
  if speakers.shape != segments.shape[:1]:
    raise ValueError(f"speakers must have shape {segments.shape[:1]}, got {speakers.shape}")


def _index(index: np.ndarray | None, n: int) -> np.ndarray:
  if index is None:
    return np.arange(n)
  index = np.asarray(index)
  if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
    raise ValueError(f"index must be a 1-D integer array of rows, got {index.dtype} {index.shape}")
  return index


Moments = tuple[np.ndarray, np.ndarray, int]  # (mean (M, C) f64, squared deviations (M, C) f64, frames)


def frame_moments(segments: np.ndarray, mask: np.ndarray) -> Moments:
  """The moments of the real frames of `segments (N, T, M, C)` (mask (N, T)), two-pass in
  float64 a chunk of rows at a time: (mean, sum of squared deviations, number of frames)."""
  segments, mask = np.asarray(segments), np.asarray(mask)
  _check(segments, mask, np.zeros(segments.shape[:1]))
  _, _, mean, ss, n = _rows_moments(segments, mask, np.arange(segments.shape[0]), 1.0)
  return mean, ss, n


def combine_moments(parts: Sequence[Moments]) -> Moments:
  """The moments of the union of disjoint sets of frames from theirs (Chan et al.: Σ ss_i +
  n_i (mean_i - mean)²); equal to the moments over all frames at once to float64 rounding."""
  parts = [p for p in parts if p[2] > 0]
  if not parts:
    raise ValueError("combine_moments: no frames")
  total = sum(n for _, _, n in parts)
  mean = sum(m * n for m, _, n in parts) / total
  return mean, sum(ss + n * (m - mean) ** 2 for m, ss, n in parts), total


def stats_of_moments(moments: Moments, speaker: Any = 0, min_std: float = 1e-3) -> SpeakerStats:
  """One speaker's `SpeakerStats` (also the global ones) from its frames' moments: the same
  statistics `fit_speaker_stats` gives for those frames."""
  mean, ss, n = moments
  m32 = mean.astype(np.float32)
  std = np.maximum(np.sqrt(ss / max(n, 1)), min_std).astype(np.float32)
  return SpeakerStats(speakers=(speaker,), mean=m32[None], std=std[None], global_mean=m32,
                      global_std=std, frames=np.asarray([n], np.int64))


def fit_speaker_stats(segments: np.ndarray, mask: np.ndarray, speakers: Sequence | np.ndarray,
                      min_std: float = 1e-3, index: np.ndarray | None = None) -> SpeakerStats:
  """Statistics from the real frames of the given segments only (pass the training segments).

  Args:
    segments: `(N, T, M, C)` raw features; mask: `(N, T)` bool real frames;
    speakers: `(N,)` speaker id of each segment (ints or strings).
    min_std: floor on every std (a constant band, e.g. the log floor, has std 0).
    index: rows of segments / mask / speakers to fit on (default all): the same statistics as
      `fit_speaker_stats(segments[index], mask[index], speakers[index])` without that copy.

  Two passes (mean, then squared deviations) in float64 over chunks of rows, so the memory
  beyond the inputs is a few chunks; the global statistics combine the per-speaker sums
  (Σ_s ss_s + n_s (mean_s - mean)²). Equal to the whole-array float64 moments to float64 rounding.

  Raises:
    ValueError: bad shapes, or no real frame at all.
  """
  segments, mask, speakers = np.asarray(segments), np.asarray(mask), np.asarray(speakers)
  _check(segments, mask, speakers)
  rows = _index(index, segments.shape[0])
  if not mask[rows].any():
    raise ValueError("fit_speaker_stats: no real frames to fit on")
  spk = speakers[rows]
  ids = tuple(_key(s) for s in np.unique(spk))
  means, stds, counts, parts = [], [], [], []
  for s in ids:
    m, d, m64, ss, n = _rows_moments(segments, mask, rows[spk == s], min_std)
    if n == 0:
      raise ValueError(f"fit_speaker_stats: speaker {s!r} has no real frames")
    means.append(m)
    stds.append(d)
    counts.append(n)
    parts.append((m64, ss, n))
  g64, g_ss, total = combine_moments(parts)
  g_mean = g64.astype(np.float32)
  g_std = np.maximum(np.sqrt(g_ss / total), min_std).astype(np.float32)
  return SpeakerStats(speakers=ids, mean=np.stack(means), std=np.stack(stds), global_mean=g_mean,
                      global_std=g_std, frames=np.asarray(counts, np.int64))


def normalize(segments: np.ndarray, mask: np.ndarray, speakers: Sequence | np.ndarray,
              stats: SpeakerStats, fallback: str = "global", min_std: float = 1e-3,
              index: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
  """`(x - mean_spk) / std_spk` per mel band and channel; padded frames set to 0; float32.

  Args:
    segments: `(N, T, M, C)`; mask: `(N, T)` bool; speakers: `(N,)` speaker ids.
    stats: from `fit_speaker_stats` on the training segments.
    fallback: for a speaker not in `stats`: "global" uses the global statistics, "self" the
      speaker's own statistics over the real frames of the segments normalised here.
    index: rows to normalise (default all): the result equals
      `normalize(segments[index], mask[index], speakers[index], ...)`, computed a chunk of rows
      at a time without copying the selected rows first.
    out: a `(len(index), T, M, C)` float32 array to write into (default: a new one).

  Returns:
    `(len(index), T, M, C)` float32 (`out` if given).
  """
  if fallback not in ("global", "self"):
    raise ValueError(f"normalize: fallback must be 'global' or 'self', got {fallback!r}")
  segments, mask, speakers = np.asarray(segments), np.asarray(mask), np.asarray(speakers)
  _check(segments, mask, speakers)
  rows = _index(index, segments.shape[0])
  shape = (len(rows),) + segments.shape[1:]
  if out is None:
    out = np.empty(shape, dtype=np.float32)
  elif out.shape != shape or out.dtype != np.float32:
    raise ValueError(f"normalize: out must be float32 {shape}, got {out.dtype} {out.shape}")
  lookup = stats.index()
  spk = speakers[rows]
  for s in np.unique(spk):
    pos = np.flatnonzero(spk == s)  # positions in `out`
    key = _key(s)
    if key in lookup:
      mean, std = stats.mean[lookup[key]], stats.std[lookup[key]]
    elif fallback == "global":
      mean, std = stats.global_mean, stats.global_std
    else:
      mean, std, _, _, n = _rows_moments(segments, mask, rows[pos], min_std)
      if n == 0:
        mean, std = stats.global_mean, stats.global_std
    for p in _chunks(pos):
      x = segments[rows[p]].astype(np.float32, copy=False)  # a new array: fancy indexing copies
      x -= mean
      x /= std
      x[~mask[rows[p]]] = 0.0
      out[p] = x
  return out


NORMS = ("self", "train")


def normalize_utterance(segs: np.ndarray, mask: np.ndarray, norm: str,
                        stats: SpeakerStats | None, own: SpeakerStats | None = None) -> np.ndarray:
  """Speaker normalisation of one utterance's segments `(n, T, M, C)` (mask `(n, T)`): its own
  statistics ("self"; `own`, or fitted on these segments) or the training global statistics
  ("train")."""
  speakers = np.zeros(segs.shape[0], np.int64)
  if norm == "self":
    own = fit_speaker_stats(segs, mask, speakers) if own is None else own
    return normalize(segs, mask, speakers, own)
  if norm == "train":
    if stats is None:
      raise ValueError("norm='train' needs the training statistics saved with the checkpoint")
    # No known speaker: every file falls back to the training global statistics.
    empty = dataclasses.replace(stats, speakers=(), mean=stats.mean[:0], std=stats.std[:0],
                                frames=stats.frames[:0])
    return normalize(segs, mask, speakers, empty, fallback="global")
  raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
