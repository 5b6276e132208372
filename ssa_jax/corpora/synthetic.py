"""The built-in generated speech corpus (docs/DESIGN.md §7): speech-like audio whose emotions are prosodic
strategies that differ between speakers.

Every utterance is a pure function of `(seed, speaker, phrase, emotion, repetition)`:
`synthesize` seeds its own `numpy.random.Generator` from that tuple, so each file is reproducible
on its own. `generate` writes the whole corpus once as 16-bit wav files and caches it.

Signal model (16 kHz, everything vectorised except a loop over 10 ms filter blocks):
  * source: Rosenberg glottal flow pulses (open quotient and speed quotient from the voice
    quality), differentiated (lip radiation), through a one-pole spectral-tilt low-pass; plus
    aspiration noise modulated by the glottal flow (breathiness);
  * pitch: speaker F0 × emotion shift, declination, a Gaussian accent on every stressed syllable
    (larger on the phrase accents), a final fall, 5.5 Hz tremor and per-cycle-scale jitter;
  * vocal tract: a cascade of five Klatt resonators whose formant targets follow the vowel
    sequence of the phrase, with consonant loci and smoothed (50 ms) transitions, scaled by the
    speaker's vocal-tract-length factor and small per-speaker formant idiosyncrasies;
  * rhythm: syllables = onset consonant (plosive closure+burst+aspiration, fricative noise band,
    or sonorant) + vowel nucleus with raised-cosine attack/decay, stressed syllables louder,
    pauses between words; leading/trailing silence; a -75 dBFS noise floor (never digitally silent).
  * level: the utterance is scaled so that the RMS of its voiced part is the speaker's level
    (0.02 × ±2 dB, about -34 dBFS) times the emotion's loudness gain (so the loudness cue
    survives); only if the peak would exceed 0.98 is it scaled down (6 of the 768 default
    utterances).

Phrases: phrase `p` is 3-6 words of 1-3 syllables (onset consonant, vowel, stress, relative
duration, phrase accents, pause after each word), drawn from `(seed, p)` and shared by all
speakers and emotions.

Speakers: speaker `s` is female when `s` is even (`spk00F`, `spk01M`, `spk02F`, ...), so the
default 8 speakers are 4 female and 4 male:

| | female | male |
| --- | --- | --- |
| base F0 | 175-250 Hz | 90-135 Hz |
| vocal-tract scale (formants ×) | 1.10-1.22 | 0.90-1.02 |
| formant idiosyncrasy | ×(1 ± 4 %) per formant | same |
| open quotient / tilt / breathiness / rate / level | drawn per speaker (±) | same |

Emotion strategies. A strategy is a vector `v ∈ R^8` in normalised units (0 = the speaker's
default way of speaking); each dimension drives the synthesis as follows:

| dim | name | effect of `v` |
| --- | --- | --- |
| 0 | pitch | F0 shifted by `4.5·v` semitones |
| 1 | range | excursions × `2^(1.2·v)`: accents (the speaker's 2-4 st), declination (3 st), final fall (2 st) |
| 2 | tempo | syllable nuclei durations × `2^(-0.5·v)`, consonants × `2^(-0.25·v)` |
| 3 | loudness | voiced RMS level `+6·v` dB |
| 4 | effort | open quotient `OQ_s - 0.18·v` (speaker's OQ_s 0.55-0.68; pressed when lower), speed quotient `2.5·2^(0.5·v)`, tilt low-pass pole `0.55 - 0.35·(v + tilt_s)` (more high-frequency energy when pressed), B1 × `(1 - 0.2·v + 0.3·breath)` |
| 5 | breath | aspiration noise (flow-modulated, through the formants) `-18 + 10·v + breath_s` dB re the voiced source RMS |
| 6 | irregular | jitter `0.8·2^(1.3·v)` % of F0, tremor `0.25·2^(v)` st, shimmer `1.5·2^(v)` dB |
| 7 | pauses | pauses between words (0.06-0.18 s × the speaker's rate factor) × `2^(1.0·v)` |

Each class index `e` has a canonical prototype `P[e]` (for the default classes neu, hap, ang, sad):

| class | pitch | range | tempo | loud | effort | breath | irregular | pauses |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
| 0 neu | 0.0 | -0.4 | 0.0 | 0.0 | 0.0 | 0.0 | -0.4 | 0.0 |
| 1 hap | 1.0 | 1.0 | 0.5 | 0.4 | 0.2 | -0.2 | 0.0 | -0.5 |
| 2 ang | 0.3 | 0.2 | 0.3 | 1.0 | 1.0 | -0.7 | 0.5 | -0.6 |
| 3 sad | -0.8 | -1.0 | -0.9 | -0.7 | -0.7 | 0.9 | 0.3 | 0.9 |
| 4 (fear-like) | 1.0 | -0.4 | 0.8 | -0.3 | -0.3 | 0.6 | 1.0 | 0.2 |
| 5 (bored-like) | -0.5 | -1.0 | -0.5 | -0.3 | -0.2 | 0.3 | -0.6 | 0.6 |

Speaker `s` expresses class `e` with
`v[s, e] = SHARED_WEIGHT·P[e] + PERSONAL_WEIGHT·P[π_s(e)] + δ[s, e]`, where `π_s` is a personal
permutation of the classes (the speakers take distinct permutations, in an order shuffled from the
seed, so for up to K! speakers no two share one: one speaker's anger is another's joy) and `δ[s, e]`
is an idiosyncratic offset (N(0, 0.4²) per dimension), redrawn until the speaker's K strategies are
at least `MIN_SEPARATION` = 2.0 apart (Euclidean; SHARED_WEIGHT = 0.7, PERSONAL_WEIGHT = 1.1). The
shared part keeps the task partly speaker-independent; the personal part makes speaker identity
genuinely useful (logistic regression on per-utterance log-Mel statistics of the default corpus,
80/20 splits: UAR ~0.77 without the speaker, ~0.84 on per-speaker normalised statistics, ~0.99 with
per-speaker weights). Every utterance adds N(0, 0.12²) per dimension (within-emotion variability, well below the separation), plus its
own random jitter, noise, etc.

Lengths: 1-6 s (a phrase rendered longer than 5.9 s or shorter than 1.1 s is time-scaled to fit).
Classes: 2 to 6 (the table's first K prototypes, by position).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import time
from typing import Any, Sequence

import numpy as np
import scipy.signal
import soundfile as sf

from ssa_jax import io as io_lib
from ssa_jax.corpora.base import CorpusError, Listing, Utterance

GENERATOR_VERSION = "synthetic-v2"
CORPUS_NAME = "synthetic"
SAMPLE_RATE = 16000

# Mixing of the emotion strategies (see the module docstring); candidates for config fields.
SHARED_WEIGHT = 0.7
PERSONAL_WEIGHT = 1.1
IDIOSYNCRASY_STD = 0.4
UTTERANCE_STD = 0.12
MIN_SEPARATION = 2.0

STRATEGY_DIMS = ("pitch", "range", "tempo", "loud", "effort", "breath", "irregular", "pauses")
PROTOTYPES = np.array([
    # pitch range tempo loud effort breath irreg pauses
    [0.0, -0.4, 0.0, 0.0, 0.0, 0.0, -0.4, 0.0],  # 0 neutral
    [1.0, 1.0, 0.5, 0.4, 0.2, -0.2, 0.0, -0.5],  # 1 happy
    [0.3, 0.2, 0.3, 1.0, 1.0, -0.7, 0.5, -0.6],  # 2 angry
    [-0.8, -1.0, -0.9, -0.7, -0.7, 0.9, 0.3, 0.9],  # 3 sad
    [1.0, -0.4, 0.8, -0.3, -0.3, 0.6, 1.0, 0.2],  # 4 fear-like
    [-0.5, -1.0, -0.5, -0.3, -0.2, 0.3, -0.6, 0.6],  # 5 bored-like
])
PROTOTYPES.setflags(write=False)

# Vowel formants (Hz) of an adult male voice (Peterson & Barney / Hillenbrand averages), F4-F5 fixed.
VOWELS = {
    "i": (270, 2290, 3010), "e": (530, 1840, 2480), "a": (730, 1090, 2440), "o": (570, 840, 2410),
    "u": (300, 870, 2240), "ae": (660, 1720, 2410), "schwa": (520, 1190, 2390),
}
VOWEL_NAMES = tuple(VOWELS)
F4, F5 = 3500.0, 4500.0
BANDWIDTHS = np.array([70.0, 100.0, 140.0, 200.0, 260.0])
BANDWIDTHS.setflags(write=False)
# Onset consonants: kind, formant locus (F1-F3), noise band (Hz) or None.
CONSONANTS = {
    "": ("none", None, None),
    "p": ("plosive", (250, 800, 2200), (400, 2000)), "t": ("plosive", (250, 1700, 2700), (3000, 7000)),
    "k": ("plosive", (250, 2000, 2500), (1500, 3500)),
    "b": ("vplosive", (250, 800, 2200), (400, 2000)), "d": ("vplosive", (250, 1700, 2700), (3000, 7000)),
    "g": ("vplosive", (250, 2000, 2500), (1500, 3500)),
    "s": ("fricative", (300, 1700, 2700), (4000, 7500)), "sh": ("fricative", (300, 1800, 2400), (2200, 5500)),
    "f": ("fricative", (300, 900, 2300), (1000, 7500)),
    "m": ("sonorant", (250, 1000, 2300), None), "n": ("sonorant", (250, 1500, 2500), None),
    "l": ("sonorant", (350, 1100, 2600), None),
}
CONSONANT_NAMES = tuple(CONSONANTS)

_BLOCK = 160  # formant filter coefficients are updated every 10 ms
_MIN_DUR, _MAX_DUR = 1.1, 5.9  # target range of utterance durations (s)
_STALE_S = 600.0  # a temporary file older than this belongs to no running generation


def _rng(*key: int) -> np.random.Generator:
  return np.random.default_rng([int(k) for k in key])


def _cfg_values(syn_cfg: Any) -> dict[str, int]:
  """The integer fields of `config.data.synthetic`, validated."""
  def get(name: str) -> int:
    try:
      value = syn_cfg[name]
    except (KeyError, AttributeError, TypeError) as e:
      raise CorpusError(f"synthetic corpus config: missing field {name!r}") from e
    if isinstance(value, bool) or int(value) != value:
      raise CorpusError(f"synthetic corpus config: {name} must be an integer, got {value!r}")
    return int(value)
  vals = {k: get(k) for k in ("num_speakers", "num_phrases", "repetitions", "seed")}
  for k in ("num_speakers", "num_phrases", "repetitions"):
    if vals[k] < 1:
      raise CorpusError(f"synthetic corpus config: {k} must be >= 1, got {vals[k]}")
  if vals["seed"] < 0:
    raise CorpusError(f"synthetic corpus config: seed must be >= 0, got {vals['seed']}")
  return vals


def speaker_name(speaker: int) -> str:
  """`spk00F`, `spk01M`, ...: even speakers are female, odd ones male."""
  return f"spk{speaker:02d}{'F' if speaker % 2 == 0 else 'M'}"


# ----------------------------------------------------------------------------------------------
# Phrases, speakers and strategies (small, deterministic, cached per process).


@functools.lru_cache(maxsize=256)
def phrase_plan(seed: int, phrase: int) -> tuple[tuple[tuple[str, str, bool, float, bool], ...], ...]:
  """Words of syllables `(consonant, vowel, stressed, relative_duration, accented)`."""
  g = _rng(seed, 1, phrase)
  n_words = int(g.integers(3, 7))
  accented = set(g.choice(n_words, size=min(n_words, int(g.integers(1, 3))), replace=False).tolist())
  words = []
  for w in range(n_words):
    n_syl = int(g.choice([1, 2, 3], p=[0.35, 0.45, 0.2]))
    stress = int(g.integers(n_syl))
    syls = []
    for k in range(n_syl):
      cons = CONSONANT_NAMES[int(g.integers(len(CONSONANT_NAMES)))]
      vowel = "schwa" if (k != stress and g.random() < 0.5) else VOWEL_NAMES[int(g.integers(len(VOWEL_NAMES)))]
      rel = float(g.uniform(0.8, 1.2) * (1.3 if k == stress else 0.85))
      syls.append((cons, vowel, k == stress, rel, k == stress and w in accented))
    words.append(tuple(syls))
  return tuple(words)


@functools.lru_cache(maxsize=256)
def speaker_params(seed: int, speaker: int) -> dict[str, Any]:
  """Voice of a speaker: F0, vocal-tract scale, voice quality, rate, level."""
  g = _rng(seed, 2, speaker)
  female = speaker % 2 == 0
  formant_jitter = g.uniform(0.96, 1.04, size=5)
  formant_jitter.setflags(write=False)  # cached: shared between calls
  return {
      "female": female,
      "f0": float(g.uniform(175, 250) if female else g.uniform(90, 135)),
      "vtl": float(g.uniform(1.10, 1.22) if female else g.uniform(0.90, 1.02)),
      "formant_jitter": formant_jitter,
      "oq": float(g.uniform(0.55, 0.68)),
      "tilt": float(g.uniform(-0.1, 0.1)),
      "breath_db": float(g.uniform(-4, 4)),
      "rate": float(g.uniform(0.88, 1.12)),
      "syl_dur": 0.17,
      "accent_st": float(g.uniform(2.0, 4.0)),
      "level": float(0.02 * 10 ** (g.uniform(-2, 2) / 20)),
  }


@functools.lru_cache(maxsize=64)
def _permutation_order(seed: int, num_classes: int) -> tuple[tuple[int, ...], ...]:
  perms = list(itertools.permutations(range(num_classes)))
  order = _rng(seed, 5, num_classes).permutation(len(perms))
  return tuple(perms[i] for i in order)


@functools.lru_cache(maxsize=256)
def speaker_strategies(seed: int, speaker: int, num_classes: int) -> np.ndarray:
  """`(num_classes, 8)` strategy vectors of a speaker (rows: class index), see the docstring."""
  if not 2 <= num_classes <= len(PROTOTYPES):
    raise CorpusError(f"synthetic corpus: 2 to {len(PROTOTYPES)} classes supported, got {num_classes}")
  perms = _permutation_order(seed, num_classes)
  perm = np.array(perms[speaker % len(perms)])
  protos = PROTOTYPES[:num_classes]
  base = SHARED_WEIGHT * protos + PERSONAL_WEIGHT * protos[perm]
  g = _rng(seed, 3, speaker)
  best, best_sep = base, -1.0
  for _ in range(1000):  # accepts within a few draws; keeps the best draw in any case
    v = base + g.normal(0.0, IDIOSYNCRASY_STD, size=base.shape)
    sep = np.linalg.norm(v[:, None] - v[None], axis=-1)[np.triu_indices(num_classes, 1)].min()
    if sep > best_sep:
      best, best_sep = v, sep
    if sep >= MIN_SEPARATION:
      break
  best.setflags(write=False)
  return best


@functools.lru_cache(maxsize=16)
def _noise_sos(lo: float, hi: float, sample_rate: int) -> np.ndarray:
  return scipy.signal.butter(4, [lo, min(hi, 0.45 * sample_rate)], btype="bandpass", fs=sample_rate,
                             output="sos")


# ----------------------------------------------------------------------------------------------
# Synthesis.


def _ramp_env(n: int, segs: Sequence[tuple[int, int, float]], ramp: int) -> np.ndarray:
  """Sum of raised-cosine-edged boxes `(start, end, gain)` on `n` samples."""
  env = np.zeros(n)
  for a, b, gain in segs:
    if b <= a:
      continue
    box = np.full(b - a, gain)
    r = min(ramp, (b - a) // 2)
    if r > 0:
      w = 0.5 - 0.5 * np.cos(np.pi * (np.arange(r) + 0.5) / r)
      box[:r] *= w
      box[-r:] *= w[::-1]
    env[a:b] += box
  return env


def _rosenberg(phase: np.ndarray, oq: np.ndarray, sq: np.ndarray) -> np.ndarray:
  """Rosenberg glottal flow at fractional cycle phase `u ∈ [0, 1)`."""
  u = phase - np.floor(phase)
  tp = oq * sq / (1.0 + sq)
  tn = oq / (1.0 + sq)
  rise = 0.5 - 0.5 * np.cos(np.pi * u / tp)
  fall = np.cos(0.5 * np.pi * np.clip((u - tp) / tn, 0.0, 1.0))
  return np.where(u < tp, rise, np.where(u < tp + tn, fall, 0.0))


def _formant_cascade(x: np.ndarray, freqs: np.ndarray, bws: np.ndarray, sample_rate: int) -> np.ndarray:
  """Cascade of Klatt resonators with per-block `(n_blocks, 5)` formants/bandwidths."""
  t = 1.0 / sample_rate
  c = -np.exp(-2 * np.pi * bws * t)
  b = 2 * np.exp(-np.pi * bws * t) * np.cos(2 * np.pi * freqs * t)
  a = 1.0 - b - c
  n_blocks, n_form = freqs.shape
  sos = np.zeros((n_blocks, n_form, 6))
  sos[..., 0] = a
  sos[..., 3] = 1.0
  sos[..., 4] = -b
  sos[..., 5] = -c
  y = np.empty_like(x)
  zi = np.zeros((n_form, 2))
  for k in range(n_blocks):
    sl = slice(k * _BLOCK, (k + 1) * _BLOCK)
    y[sl], zi = scipy.signal.sosfilt(sos[k], x[sl], zi=zi)
  return y


def synthesize(speaker: int, phrase: int, emotion: int, repetition: int, syn_cfg: Any,
               sample_rate: int = SAMPLE_RATE, num_classes: int = 4) -> np.ndarray:
  """One utterance, float32 `(S,)` in [-1, 1], 1-6 s at `sample_rate`.

  Args:
    speaker, phrase, emotion, repetition: indices (emotion indexes the class list).
    syn_cfg: `config.data.synthetic` (uses `seed`; the counts only bound the indices).
    sample_rate: output rate (the features expect 16 kHz).
    num_classes: number of classes (selects the prototypes and the speakers' permutations).
  """
  vals = _cfg_values(syn_cfg)
  for name, idx, hi in (("speaker", speaker, vals["num_speakers"]), ("phrase", phrase, vals["num_phrases"]),
                        ("emotion", emotion, num_classes), ("repetition", repetition, vals["repetitions"])):
    if not 0 <= int(idx) < hi:
      raise CorpusError(f"synthetic corpus: {name} index {idx} out of range [0, {hi})")
  if sample_rate < 12000:
    raise CorpusError(f"synthetic corpus: sample_rate must be >= 12000, got {sample_rate}")
  seed = vals["seed"]
  spk = speaker_params(seed, speaker)
  words = phrase_plan(seed, phrase)
  g = _rng(seed, 4, speaker, phrase, emotion, repetition)
  v = speaker_strategies(seed, speaker, num_classes)[emotion] + g.normal(0.0, UTTERANCE_STD, size=8)
  pitch, rng_, tempo, loud, effort, breath, irregular, pauses = v
  sr = sample_rate

  # --- timeline (seconds) ---
  nuc_scale = spk["rate"] * 2 ** (-0.5 * tempo)
  con_scale = spk["rate"] * 2 ** (-0.25 * tempo)
  events = []  # (kind, cons, vowel, t0, t1, stressed, accented)
  t = float(g.uniform(0.12, 0.2))
  lead = t
  for w, syls in enumerate(words):
    for cons, vowel, stressed, rel, accented in syls:
      kind = CONSONANTS[cons][0]
      if kind != "none":
        cd = {"plosive": 0.09, "vplosive": 0.07, "fricative": 0.10, "sonorant": 0.06}[kind]
        cd *= con_scale * g.uniform(0.85, 1.15)
        events.append((kind, cons, vowel, t, t + cd, stressed, accented))
        t += cd
      vd = spk["syl_dur"] * rel * nuc_scale * g.uniform(0.9, 1.1)
      events.append(("vowel", cons, vowel, t, t + vd, stressed, accented))
      t += vd
    if w < len(words) - 1:
      t += 0.12 * g.uniform(0.5, 1.5) * 2 ** (1.0 * pauses) * spk["rate"]
  total = t + float(g.uniform(0.15, 0.25))
  scale = 1.0
  if total > _MAX_DUR:
    scale = _MAX_DUR / total
  elif total < _MIN_DUR:
    scale = _MIN_DUR / total
  events = [(k, c, vw, a * scale, b * scale, s, ac) for k, c, vw, a, b, s, ac in events]
  total *= scale
  speech_end = events[-1][4]
  n_blocks = int(np.ceil(total * sr / _BLOCK))
  n = n_blocks * _BLOCK
  time_s = np.arange(n) / sr

  def to_i(x: float) -> int:
    return int(round(x * sr))

  # --- pitch contour (semitones re the speaker's F0) ---
  range_mult = 2 ** (1.2 * rng_)
  st = 4.5 * pitch - 3.0 * range_mult * (time_s - lead) / max(speech_end - lead, 1e-3)
  for kind, _, _, a, b, stressed, accented in events:
    if kind == "vowel" and stressed:
      amp = spk["accent_st"] * range_mult * (1.0 if accented else 0.45) * g.uniform(0.8, 1.2)
      st += amp * np.exp(-0.5 * ((time_s - 0.5 * (a + b)) / (0.45 * (b - a))) ** 2)
  last = events[-1]
  st -= 2.0 * range_mult * np.clip((time_s - last[3]) / max(last[4] - last[3], 1e-3), 0, 1)
  st += 0.25 * 2 ** irregular * np.sin(2 * np.pi * 5.5 * time_s + g.uniform(0, 2 * np.pi))
  jit_pts = np.arange(0.0, total + 0.01, 0.004)
  jitter_pct = 0.8 * 2 ** (1.3 * irregular)
  st += np.interp(time_s, jit_pts, g.normal(0.0, 12 * np.log2(1 + jitter_pct / 100), jit_pts.size))
  f0 = np.clip(spk["f0"] * 2 ** (st / 12), 50.0, 600.0)
  phase = np.cumsum(f0) / sr + g.uniform()

  # --- envelopes ---
  voiced, fric, burst, asp = [], [], [], []
  bands: dict[str, list] = {}
  for kind, cons, _, a, b, stressed, _ in events:
    ia, ib = to_i(a), to_i(b)
    if kind == "vowel":
      voiced.append((ia, ib, 1.0 if stressed else 0.7))
    elif kind == "sonorant":
      voiced.append((ia, ib, 0.35))
    elif kind in ("plosive", "vplosive"):
      clo = ia + int(0.6 * (ib - ia))
      if kind == "vplosive":
        voiced.append((ia, clo, 0.08))
      bands.setdefault(cons, []).append((clo, clo + to_i(0.012), 0.5 if kind == "plosive" else 0.25))
      if kind == "plosive":
        asp.append((clo + to_i(0.01), ib + to_i(0.01), 1.0))
    elif kind == "fricative":
      bands.setdefault(cons, []).append((ia, ib, 0.12))
  ramp = to_i(0.015)
  v_env = _ramp_env(n, voiced, ramp)
  shimmer = 10 ** (np.interp(time_s, jit_pts, g.normal(0, 1.5 * 2 ** irregular, jit_pts.size)) / 20)
  v_env_s = v_env * shimmer

  # --- source ---
  oq = np.clip(spk["oq"] - 0.18 * effort, 0.3, 0.9)
  sq = 2.5 * 2 ** (0.5 * effort)
  flow = _rosenberg(phase, oq, sq)
  dflow = np.diff(flow, prepend=flow[0]) * sr / spk["f0"]
  p = float(np.clip(0.55 - 0.35 * (effort + spk["tilt"]), 0.0, 0.93))
  dflow = scipy.signal.lfilter([1 - p], [1, -p], dflow)
  noise = g.standard_normal(n)
  asp_db = -18 + 10 * breath + spk["breath_db"]
  src_rms = np.sqrt(np.mean(dflow ** 2)) + 1e-9
  aspiration = noise * src_rms * 10 ** (asp_db / 20) * (0.4 + 0.6 * flow)
  src = v_env_s * (dflow + aspiration) + _ramp_env(n, asp, to_i(0.005)) * noise * src_rms * 0.3

  # --- formant trajectories (per 10 ms block) ---
  vt = spk["vtl"] * spk["formant_jitter"]
  targ = np.empty((n_blocks, 5))
  targ[:] = np.array([*VOWELS["schwa"], F4, F5])
  for kind, cons, vowel, a, b, _, _ in events:
    f = np.array([*VOWELS[vowel], F4, F5]) if kind == "vowel" else np.array([*CONSONANTS[cons][1], F4, F5])
    targ[to_i(a) // _BLOCK: to_i(b) // _BLOCK + 1] = f
  win = np.hanning(7)
  win /= win.sum()
  targ = np.stack([np.convolve(np.pad(targ[:, i], 3, mode="edge"), win, "valid") for i in range(5)], 1)
  freqs = np.minimum(targ * vt, 0.45 * sr)
  bws = BANDWIDTHS * np.array([np.clip(1.0 - 0.2 * effort + 0.3 * breath, 0.6, 2.0), 1, 1, 1, 1])
  bws = np.broadcast_to(bws, freqs.shape)
  y = _formant_cascade(src, freqs, bws, sr)

  # --- consonant noise (not through the formants) ---
  y_rms = np.sqrt(np.mean(y[v_env > 0.5] ** 2))  # every syllable has a vowel: never empty
  fric_noise = g.standard_normal(n)
  for cons, segs in bands.items():
    env = _ramp_env(n, segs, to_i(0.004))
    y += scipy.signal.sosfilt(_noise_sos(*CONSONANTS[cons][2], sr), fric_noise) * env * y_rms * 2.0

  # --- level ---
  target_rms = spk["level"] * 10 ** (6.0 * loud / 20)
  y *= target_rms / (y_rms + 1e-12)
  y += g.standard_normal(n) * 10 ** (-75 / 20)
  peak = np.max(np.abs(y))
  if peak > 0.98:
    y *= 0.98 / peak
  return y.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# The cached corpus.


def corpus_dir(syn_cfg: Any, cache_dir: str, classes: Sequence[str]) -> str:
  """`<cache_dir>/synthetic-<hash of config, classes and generator version>`."""
  key = json.dumps({"config": _cfg_values(syn_cfg), "classes": list(classes), "version": GENERATOR_VERSION,
                    "sample_rate": SAMPLE_RATE}, sort_keys=True)
  digest = hashlib.sha256(key.encode()).hexdigest()[:12]
  return os.path.join(os.path.expanduser(str(cache_dir)), f"{CORPUS_NAME}-{digest}")


def _utt_id(spk: str, label: str, phrase: int, rep: int) -> str:
  return f"{spk}_{label}_p{phrase:02d}_r{rep}"


def _write_one(job: tuple[str, int, int, int, int, dict[str, int], int]) -> None:
  path, s, p, e, r, vals, num_classes = job
  audio = synthesize(s, p, e, r, vals, SAMPLE_RATE, num_classes)
  io_lib.write_with(path, lambda f: sf.write(f, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV"))


def _read_listing(folder: str, classes: tuple[str, ...]) -> Listing | None:
  """The cached listing, or None when the folder is incomplete (no listing.json, a missing wav)."""
  path = os.path.join(folder, "listing.json")
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      meta = json.load(f)
    utts = [Utterance(u["utt_id"], os.path.join(folder, u["file"]), u["speaker"], u["label"], u["phrase"])
            for u in meta["utterances"]]
  except (OSError, ValueError, KeyError, TypeError):
    return None  # unreadable: regenerate
  if tuple(meta.get("classes", ())) != classes or not all(os.path.isfile(u.path) for u in utts):
    return None
  return Listing(CORPUS_NAME, folder, classes, utts)


def generate(syn_cfg: Any, cache_dir: str, classes: Sequence[str], progress: bool = False) -> Listing:
  """The generated corpus as a `Listing`, writing it under `corpus_dir(...)` on the first call.

  Args:
    syn_cfg: `config.data.synthetic` (num_speakers, num_phrases, repetitions, seed).
    cache_dir: `config.data.cache_dir` (`~` expanded).
    classes: class names in logit order (2 to 6); the class index selects the prototype.
    progress: print a line when generating.

  The folder counts as complete only once `listing.json` (written last, atomically) exists and every
  wav it names does; otherwise everything is regenerated. Every file is written atomically.
  """
  classes = tuple(str(c) for c in classes)
  if len(set(classes)) != len(classes):
    raise CorpusError(f"synthetic corpus: duplicate class names in {classes}")
  if not 2 <= len(classes) <= len(PROTOTYPES):
    raise CorpusError(f"synthetic corpus: 2 to {len(PROTOTYPES)} classes supported, got {classes}")
  vals = _cfg_values(syn_cfg)
  folder = corpus_dir(vals, cache_dir, classes)
  cached = _read_listing(folder, classes)
  if cached is not None:
    return cached

  os.makedirs(folder, exist_ok=True)
  for name in os.listdir(folder):  # temporary files of an interrupted run (not of a live one)
    path = os.path.join(folder, name)
    try:
      if io_lib.is_temporary(name) and time.time() - os.path.getmtime(path) > _STALE_S:
        os.remove(path)
    except OSError:
      pass
  jobs, records = [], []
  for s in range(vals["num_speakers"]):
    for e, label in enumerate(classes):
      for p in range(vals["num_phrases"]):
        for r in range(vals["repetitions"]):
          uid = _utt_id(speaker_name(s), label, p, r)
          jobs.append((os.path.join(folder, uid + ".wav"), s, p, e, r, vals, len(classes)))
          records.append({"utt_id": uid, "file": uid + ".wav", "speaker": speaker_name(s), "label": label,
                          "phrase": f"p{p:02d}"})
  start = time.perf_counter()
  if progress:
    print(f"generating the synthetic corpus ({len(jobs)} utterances) in {folder} ...", flush=True)
  for job in jobs:  # ~15 ms an utterance in one process: no pool needed
    _write_one(job)
  meta = {"corpus": CORPUS_NAME, "version": GENERATOR_VERSION, "config": vals, "classes": list(classes),
          "sample_rate": SAMPLE_RATE, "utterances": records}
  io_lib.write_json(os.path.join(folder, "listing.json"), meta, indent=1)
  if progress:
    print(f"generated {len(jobs)} utterances in {time.perf_counter() - start:.1f} s", flush=True)
  listing = _read_listing(folder, classes)
  if listing is None:
    raise CorpusError(f"{folder}: the generated synthetic corpus could not be read back")
  return listing
