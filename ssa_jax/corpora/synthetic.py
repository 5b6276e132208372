"""The built-in generated speech corpus (docs/DESIGN.md §7): speech-like audio whose emotions are
prosodic strategies that differ between speakers (or not: `config.data.synthetic.strategies`).

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

Speaker `s` expresses class `e` with the strategy `v[s, e] = B[s, e] + δ[s, e]`: a noiseless base
`B[s, e]` that depends on `config.data.synthetic.strategies` (below), plus an idiosyncratic offset
`δ[s, e]` (N(0, 0.4²) per dimension), redrawn from `(seed, 3, s)` until the speaker's K strategies
are at least `MIN_SEPARATION` = 2.0 apart (Euclidean). Every utterance adds N(0, 0.12²) per
dimension (within-emotion variability, well below the separation), plus its own random jitter,
noise, etc. The bases (SHARED_WEIGHT = 0.7, PERSONAL_WEIGHT = 1.1, c = hypot(0.7, 1.1) = 1.304):

  per_speaker (the default, the corpus as it was before the knob):
      `B[s, e] = 0.7·P[e] + 1.1·P[π_s(e)]`, `π_s` a personal permutation of the classes (the
      speakers take distinct permutations, in an order shuffled from the seed, so for up to K!
      speakers (24 for 4 classes) no two share one; beyond that they repeat, speaker s taking
      the (s mod K!)-th): one speaker's anger is another's joy. The shared part keeps the task
      partly speaker-independent, the personal part makes speaker identity genuinely useful.
  shared: `B[s, e] = c·P[e]` for every speaker: only `δ[s, e]` differs between speakers.
  swapped: `B[s, e] = c·P[σ_s(e)]`, σ_s the identity for group A and the transposition of
      classes 1 and 2 (hap, ang) for group B: A shows happiness mainly by pitch and range and
      anger by loudness and effort, B the reverse; neu and sad are expressed alike. Speaker s
      is in group `(s // 2 + s % 2) % 2` (0 = A): A = spk00F, spk03M, spk04F, spk07M, ...,
      B = spk01M, spk02F, spk05M, spk06F, ..., so each group holds both sexes (needs >= 4
      speakers and >= 3 classes). Pooled over the speakers, hap and ang then have the same cues.
  voice_linked: the strategies of `swapped` (same groups, same vectors), and the group also sets
      voice traits (`VOICE_TRAITS`, redrawn from `(seed, 8, s)` in the group's range; the other
      traits, F0 and vocal tract included, are the speaker's as in every other mode), so that a
      speaker representation learnt on training speakers can tell an unseen speaker's group.
      The models see features z-scored per speaker (per band and channel), which removes static
      traits (mean F0, tilt, level); the group traits are therefore temporal or relative:

      | trait | group A | group B |
      | --- | --- | --- |
      | tremor rate (F0 and level, together) | 3.5-4.5 Hz | 7.0-8.0 Hz |
      | tremor depth, × 2^irregular | 0.6-0.9 st, 2.5-3.5 dB | the same |
      | pitch-accent size | 1.5-2.5 st | 4.0-5.5 st |
      | speaking rate (duration factor) | 1.04-1.14 (slower) | 0.86-0.96 (faster) |
      | unstressed / stressed vowel level | 0.80-0.90 | 0.45-0.55 |

      (The other modes: 5.5 Hz tremor of 0.25 st × 2^irregular, no level tremor, accents 2-4 st,
      rate 0.88-1.12, unstressed 0.7.) Both sexes in each group, so sex does not tell the group.
      Probe of the group on unseen speakers (16 speakers × 6 phrases × 1 repetition, features
      z-scored per speaker with `features.fit_speaker_stats` / `normalize`, logistic regression
      trained on 15 speakers and tested on the 16th, each in turn; utterance accuracy, mean over
      the speakers, and speakers right by a majority of their utterances; chance 50 %):

      | per-utterance statistics | voice_linked | swapped |
      | --- | ---: | ---: |
      | mean and std of every band and channel (240) | 51.8 (8 / 16) | 33.9 (4 / 16) |
      | autocorrelation, lags 10-300 ms, static and Δ, 4 band groups (240) | 83.9 (16 / 16) | 35.9 (1 / 16) |
      | both (480) | 94.8 (16 / 16), worst speaker 79 | 32.3 (4 / 16) |

      The group lives in the temporal structure (a model with convolutions and an LSTM over time
      sees it; per-utterance means and stds of z-scored features do not), and the swapped corpus
      carries none (below chance: leaving a speaker out tilts the training groups the other way).
      Emotion UARs as in the table below (8 speakers, 12 phrases, 2 repetitions, balanced,
      measured side by side with today's split code):

      | strategies | pooled | spk-norm | per-speaker | loso | loso recall neu/hap/ang/sad |
      | --- | ---: | ---: | ---: | ---: | --- |
      | voice_linked | 84.6 | 86.4 | 97.8 | 70.8 | 88 / 48 / 48 / 99 |
      | swapped | 87.0 | 85.5 | 95.5 | 69.5 | 92 / 45 / 43 / 98 |

      hap / ang stay at chance between each other on an unseen speaker for a linear classifier of
      the mean / std statistics, as under swapped: the group must be inferred from the voice.
  c is chosen so that the separation between classes stays comparable: averaged over all K!
  permutations, the RMS distance between two classes' `per_speaker` bases is exactly c times the
  prototypes' (the cross terms cancel). Measured on the 8 default speakers (with δ): mean
  distance between a speaker's classes 3.97 (per_speaker), 3.92 (shared), 3.75 (swapped).

How learnable each mode is (`python -m studies.corpus_learnability`: logistic regression on
per-utterance means and standard deviations of the 40 × 3 log-Mel/Δ/ΔΔ features, UAR in %, folds
0-4 of the random split with repetition groups kept together; "pooled": one classifier, raw
statistics; "spk-norm": statistics z-scored per speaker; "per-speaker": one classifier per
speaker; "loso": spk-norm tested on each unseen speaker in turn; 8 speakers, 12 phrases, 2 reps):

| strategies | class_weights | pooled | spk-norm | per-speaker | loso | loso recall neu/hap/ang/sad |
| --- | --- | ---: | ---: | ---: | ---: | --- |
| shared | balanced | 97.2 | 97.5 | 97.9 | 95.2 | 93 / 89 / 99 / 99 |
| per_speaker | balanced | 70.5 | 73.4 | 95.9 | 36.8 | 51 / 23 / 37 / 37 |
| swapped | balanced | 87.5 | 86.3 | 97.8 | 69.5 | 92 / 45 / 43 / 98 |
| shared | iemocap | 91.7 | 90.9 | 85.6 | 92.2 | 99 / 76 / 93 / 100 |
| swapped | iemocap | 76.6 | 79.2 | 82.8 | 75.1 | 98 / 43 / 59 / 100 |

Knowing the speaker gains nothing under `shared` and resolves hap / ang under `swapped`: on an
unseen speaker those two are at chance between each other (loso recalls 45 / 43), as designed. With
every speaker seen in training (the random split), a pooled classifier still gets part of the way
(hap / ang recalls 75 / 78 under swapped): the voice tells the 8 speakers apart, and 16 speaker ×
class clusters are close to linearly separable in 240 dimensions. (The per-speaker classifiers of the
iemocap rows have only ~5 training utterances of hap and of ang per speaker.)

Class proportions (`config.data.synthetic.class_weights`):
  balanced (default): every (speaker, class) holds all `num_phrases` phrases × `repetitions`.
  iemocap: the improvised IEMOCAP proportions neu 1099, hap 284, ang 289, sad 608 (4 classes
      only), by dropping whole repetition groups (a phrase's repetitions stay together):
      class e keeps `G_e = round(S·P·w_e / max w)` (speaker, phrase) groups in all, at least 2
      phrases per (speaker, class); each speaker gets `G_e // S` of them and `G_e mod S` speakers
      (drawn from `(seed, 6, e)`) one more; which phrases is drawn from `(seed, 7, s, e)`. The kept
      utterances are byte-identical to the balanced corpus's. Measured (12 phrases, 2 repetitions):

      | speakers | neu | hap | ang | sad | total |
      | ---: | ---: | ---: | ---: | ---: | ---: |
      | 8 | 192 | 50 | 50 | 106 | 398 |
      | 10 | 240 | 62 | 64 | 132 | 498 |
      | 20 | 480 | 124 | 126 | 266 | 996 |

      (8 speakers: shares 48.2 / 12.6 / 12.6 / 26.6 % against IEMOCAP's 48.2 / 12.5 / 12.7 / 26.7 %.)

Speakers (`config.data.synthetic.num_speakers`): any number >= 1 (>= 4 with `swapped` and
`voice_linked`); 8, 10, 20 and 32 are tested. Speakers alternate female / male, so 10 speakers
are 5 F + 5 M; every 4 consecutive speakers hold one F and one M of each group, so 24-32 speakers
(any multiple of 4) give both groups the same number of each sex; voices are drawn per speaker
(distinct for every index).

Held-out test subset (`test_phrases = P_t`, `test_speakers = S_t`, both 0 by default): utterances
marked `Utterance.subset = "test"` (recorded in listing.json; `train.split="heldout"` trains on the
rest and scores them), always class-balanced whatever `class_weights` (which applies to the
training part only, unchanged by the test knobs, as is every training utterance):
  * every training speaker speaks P_t extra phrases (`p{P}` .. `p{P+P_t-1}`) in every class, all
    repetitions: new sentences of known speakers;
  * S_t extra speakers (`spk{S}` .. `spk{S+S_t-1}`, continuing the female / male alternation, the
    groups and every per-speaker rule) speak phrases 0 .. P+P_t-1 in every class: unseen speakers.
  Test utterances per class = R·(S·P_t + S_t·(P + P_t)) (R repetitions):

  | S | P | R | test_phrases | test_speakers | train per class | test per class |
  | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
  | 8 | 12 | 2 | 19 | 0 | 192 | 8·19·2 = 304 |
  | 8 | 12 | 2 | 0 | 4 | 192 | 4·12·2 = 96 |
  | 8 | 12 | 2 | 4 | 4 | 192 | (8·4 + 4·16)·2 = 192 |
  | 8 | 12 | 2 (iemocap) | 19 | 0 | 192 / 50 / 50 / 106 | 304 |

Cache key: the corpus folder is `synthetic-<hash>` of the config, the classes and the generator
version; the knobs (`KNOB_DEFAULTS`: class_weights, strategies, test_phrases, test_speakers) enter
it only when they differ from their defaults, so the default corpus keeps the key (and bytes) it
had before the knobs. Generating the default
768 utterances takes about 30 s on one core.

Lengths: 1-6 s (a phrase rendered longer than 5.9 s or shorter than 1.1 s is time-scaled to fit).
Classes: 2 to 6 (the table's first K prototypes, by position).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import os
import time
from typing import Any, Callable, Sequence

import numpy as np
import scipy.signal
import soundfile as sf

from ssa_jax import io as io_lib
from ssa_jax.corpora.base import CorpusError, Listing, Utterance

_log = logging.getLogger(__name__)

GENERATOR_VERSION = "synthetic-v2"
CORPUS_NAME = "synthetic"
SAMPLE_RATE = 16000

# Mixing of the emotion strategies (see the module docstring); candidates for config fields.
SHARED_WEIGHT = 0.7
PERSONAL_WEIGHT = 1.1
IDIOSYNCRASY_STD = 0.4
UTTERANCE_STD = 0.12
MIN_SEPARATION = 2.0
# `shared` and `swapped` scale the prototypes by hypot(SHARED_WEIGHT, PERSONAL_WEIGHT): over all
# permutations, the RMS distance between two classes of a `per_speaker` speaker equals this scale
# times the prototypes' (module docstring), so only the speaker dependence differs between modes.
COMMON_SCALE = float(np.hypot(SHARED_WEIGHT, PERSONAL_WEIGHT))
SWAPPED_CLASSES = (1, 2)  # `swapped`: group B expresses class 1 (hap) as group A expresses 2 (ang)
GROUPED_STRATEGIES = ("swapped", "voice_linked")  # the modes with two speaker groups (speaker_group)
# `voice_linked`: voice traits drawn from a range of the speaker's group (A, B), see the docstring.
VOICE_TRAITS = {
    "tremor_hz": ((3.5, 4.5), (7.0, 8.0)),  # tremor rate (Hz): the temporal cue
    "tremor_st": ((0.6, 0.9), (0.6, 0.9)),  # its F0 depth (st), times 2^irregular: alike
    "tremor_db": ((2.5, 3.5), (2.5, 3.5)),  # its level depth (dB), times 2^irregular: alike
    "accent_st": ((1.5, 2.5), (4.0, 5.5)),  # pitch-accent size (st)
    "rate": ((1.04, 1.14), (0.86, 0.96)),  # duration factor (< 1: faster)
    "unstressed": ((0.8, 0.9), (0.45, 0.55)),  # level of unstressed vowels re stressed ones
}

# The corpus knobs of `config.data.synthetic` and their defaults (today's corpus).
STRATEGIES = ("shared", "per_speaker", "swapped", "voice_linked")
CLASS_WEIGHTS = {
    "balanced": None,
    # Improvised IEMOCAP utterances of neu, hap, ang, sad (class indices 0-3).
    "iemocap": (1099, 284, 289, 608),
}
KNOB_DEFAULTS = {"class_weights": "balanced", "strategies": "per_speaker", "test_phrases": 0,
                 "test_speakers": 0}
TEST = "test"  # Utterance.subset of the held-out utterances
MIN_PHRASES = 2  # class_weights: repetition groups kept per (speaker, class), at least

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


def _cfg_values(syn_cfg: Any) -> dict[str, Any]:
  """The fields of `config.data.synthetic`, validated: the integers num_speakers, num_phrases,
  repetitions, seed, and the knobs class_weights, strategies, test_phrases and test_speakers
  (their defaults when absent)."""
  def get(name: str) -> Any:
    try:
      return syn_cfg[name]
    except (KeyError, AttributeError, TypeError) as e:
      if name in KNOB_DEFAULTS:
        return KNOB_DEFAULTS[name]
      raise CorpusError(f"synthetic corpus config: missing field {name!r}") from e

  def get_int(name: str) -> int:
    value = get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
        or int(value) != value:
      raise CorpusError(f"synthetic corpus config: {name} must be an integer, got {value!r}")
    return int(value)
  vals: dict[str, Any] = {k: get_int(k) for k in ("num_speakers", "num_phrases", "repetitions")}
  for k in ("num_speakers", "num_phrases", "repetitions"):
    if vals[k] < 1:
      raise CorpusError(f"synthetic corpus config: {k} must be >= 1, got {vals[k]}")
  for k in ("seed", "test_phrases", "test_speakers"):
    vals[k] = get_int(k)
    if vals[k] < 0:
      raise CorpusError(f"synthetic corpus config: {k} must be >= 0, got {vals[k]}")
  for name, choices in (("class_weights", tuple(CLASS_WEIGHTS)), ("strategies", STRATEGIES)):
    value = get(name)
    if value not in choices:
      raise CorpusError(f"synthetic corpus config: {name} must be one of {', '.join(choices)}, "
                        f"got {value!r}")
    vals[name] = str(value)
  if vals["strategies"] in GROUPED_STRATEGIES and vals["num_speakers"] < 4:
    raise CorpusError(f"synthetic corpus config: strategies={vals['strategies']!r} needs num_speakers >= 4 "
                      f"(two groups, each with both sexes), got {vals['num_speakers']}")
  return vals


def _key_values(vals: dict[str, Any]) -> dict[str, Any]:
  """The config as recorded in the cache key and listing.json: knobs at their default are left
  out, so the default corpus keeps the key it had before the knobs existed."""
  return {k: v for k, v in vals.items() if KNOB_DEFAULTS.get(k, object()) != v}


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
def speaker_params(seed: int, speaker: int, strategies: str = "per_speaker") -> dict[str, Any]:
  """Voice of a speaker: F0, vocal-tract scale, voice quality, rate, level, tremor, stress.

  Drawn from `(seed, 2, speaker)`, the same in every mode; under `voice_linked` the traits of
  `VOICE_TRAITS` are then redrawn from `(seed, 8, speaker)` in the range of the speaker's group.
  """
  g = _rng(seed, 2, speaker)
  female = speaker % 2 == 0
  formant_jitter = g.uniform(0.96, 1.04, size=5)
  formant_jitter.setflags(write=False)  # cached: shared between calls
  params = {
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
      "tremor_hz": 5.5,
      "tremor_st": 0.25,
      "tremor_db": 0.0,
      "unstressed": 0.7,
  }
  if strategies == "voice_linked":
    group = speaker_group(speaker)
    g = _rng(seed, 8, speaker)
    for name, ranges in VOICE_TRAITS.items():
      params[name] = float(g.uniform(*ranges[group]))
  return params


@functools.lru_cache(maxsize=64)
def _permutation_order(seed: int, num_classes: int) -> tuple[tuple[int, ...], ...]:
  perms = list(itertools.permutations(range(num_classes)))
  order = _rng(seed, 5, num_classes).permutation(len(perms))
  return tuple(perms[i] for i in order)


def speaker_group(speaker: int) -> int:
  """`swapped` / `voice_linked` group of a speaker: 0 (A) or 1 (B), `(speaker // 2 + speaker % 2) % 2`,
  so that each group holds both sexes (A = spk00F, spk03M, spk04F, spk07M, ...; B = spk01M, spk02F,
  ...) and every 4 consecutive speakers are one F and one M in each group."""
  return (speaker // 2 + speaker % 2) % 2


def strategy_base(seed: int, speaker: int, num_classes: int, mode: str = "per_speaker") -> np.ndarray:
  """`(num_classes, 8)` noiseless strategy vectors of a speaker (before `δ[s, e]`), see the docstring."""
  if not 2 <= num_classes <= len(PROTOTYPES):
    raise CorpusError(f"synthetic corpus: 2 to {len(PROTOTYPES)} classes supported, got {num_classes}")
  if mode not in STRATEGIES:
    raise CorpusError(f"synthetic corpus: strategies must be one of {', '.join(STRATEGIES)}, got {mode!r}")
  protos = PROTOTYPES[:num_classes]
  if mode == "per_speaker":
    perms = _permutation_order(seed, num_classes)
    perm = np.array(perms[speaker % len(perms)])
    return SHARED_WEIGHT * protos + PERSONAL_WEIGHT * protos[perm]
  order = np.arange(num_classes)
  if mode in GROUPED_STRATEGIES:
    if num_classes <= max(SWAPPED_CLASSES):
      raise CorpusError(f"synthetic corpus: strategies={mode!r} swaps classes {SWAPPED_CLASSES} and "
                        f"needs at least {max(SWAPPED_CLASSES) + 1} classes, got {num_classes}")
    if speaker_group(speaker) == 1:
      a, b = SWAPPED_CLASSES
      order[[a, b]] = order[[b, a]]
  return COMMON_SCALE * protos[order]


@functools.lru_cache(maxsize=1024)
def speaker_strategies(seed: int, speaker: int, num_classes: int,
                       mode: str = "per_speaker") -> np.ndarray:
  """`(num_classes, 8)` strategy vectors of a speaker (rows: class index), see the docstring."""
  base = strategy_base(seed, speaker, num_classes, mode)
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


def kept_phrases(vals: Any, num_classes: int) -> np.ndarray:
  """`(num_speakers, num_classes, num_phrases)` bool: the repetition groups the corpus holds.

  `balanced`: all. `iemocap`: class e keeps `G_e = round(S·P·w_e / max(w))` groups in all (S
  speakers, P phrases, w the proportions), at least `min(MIN_PHRASES, P)` per speaker; each speaker
  gets `G_e // S`, `G_e % S` speakers (drawn from `(seed, 6, e)`) one more, and each (speaker,
  class) keeps a random subset of its phrases (drawn from `(seed, 7, speaker, e)`).
  """
  vals = _cfg_values(vals)
  n_spk, n_phr = vals["num_speakers"], vals["num_phrases"]
  weights = CLASS_WEIGHTS[vals["class_weights"]]
  kept = np.ones((n_spk, num_classes, n_phr), bool)
  if weights is None:
    return kept
  if num_classes != len(weights):
    raise CorpusError(f"synthetic corpus: class_weights={vals['class_weights']!r} gives proportions "
                      f"for {len(weights)} classes, got {num_classes}")
  w = np.asarray(weights, np.float64) / max(weights)
  low = min(MIN_PHRASES, n_phr)
  for e in range(num_classes):
    total = int(np.clip(np.floor(n_spk * n_phr * w[e] + 0.5), n_spk * low, n_spk * n_phr))
    per_speaker = np.full(n_spk, total // n_spk)
    per_speaker[_rng(vals["seed"], 6, e).permutation(n_spk)[:total % n_spk]] += 1
    for s in range(n_spk):
      keep = _rng(vals["seed"], 7, s, e).permutation(n_phr)[:per_speaker[s]]
      kept[s, e] = np.isin(np.arange(n_phr), keep)
  return kept


def corpus_plan(vals: Any, num_classes: int) -> list[tuple[int, int, int, str]]:
  """The repetition groups `(speaker, class, phrase, subset)` the corpus holds, in writing order.

  Training part (subset ""): speakers `0 .. S-1`, phrases `0 .. P-1` as `kept_phrases` keeps them.
  Test part (subset "test"), balanced whatever `class_weights`: every training speaker's phrases
  `P .. P+P_t-1` (`test_phrases`) in every class, and every class of the test speakers
  `S .. S+S_t-1` (`test_speakers`) on phrases `0 .. P+P_t-1`.
  """
  vals = _cfg_values(vals)
  n_spk, n_phr = vals["num_speakers"], vals["num_phrases"]
  all_phr = n_phr + vals["test_phrases"]
  kept = kept_phrases(vals, num_classes)
  plan = []
  for s in range(n_spk + vals["test_speakers"]):
    for e in range(num_classes):
      if s < n_spk:
        plan.extend((s, e, p, "") for p in np.flatnonzero(kept[s, e]).tolist())
        plan.extend((s, e, p, TEST) for p in range(n_phr, all_phr))
      else:
        plan.extend((s, e, p, TEST) for p in range(all_phr))
  return plan


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
    syn_cfg: `config.data.synthetic` (uses `seed` and `strategies`; the counts only bound the
      indices, test speakers and phrases included; `class_weights`, `test_phrases` and
      `test_speakers` change no utterance, only which ones the corpus holds).
    sample_rate: output rate (the features expect 16 kHz).
    num_classes: number of classes (selects the prototypes and the speakers' permutations).
  """
  vals = _cfg_values(syn_cfg)
  n_spk, n_phr = vals["num_speakers"] + vals["test_speakers"], vals["num_phrases"] + vals["test_phrases"]
  for name, idx, hi in (("speaker", speaker, n_spk), ("phrase", phrase, n_phr),
                        ("emotion", emotion, num_classes), ("repetition", repetition, vals["repetitions"])):
    if not 0 <= int(idx) < hi:
      raise CorpusError(f"synthetic corpus: {name} index {idx} out of range [0, {hi})")
  if sample_rate < 12000:
    raise CorpusError(f"synthetic corpus: sample_rate must be >= 12000, got {sample_rate}")
  seed = vals["seed"]
  spk = speaker_params(seed, speaker, vals["strategies"])
  words = phrase_plan(seed, phrase)
  g = _rng(seed, 4, speaker, phrase, emotion, repetition)
  v = (speaker_strategies(seed, speaker, num_classes, vals["strategies"])[emotion]
       + g.normal(0.0, UTTERANCE_STD, size=8))
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
  tremor = np.sin(2 * np.pi * spk["tremor_hz"] * time_s + g.uniform(0, 2 * np.pi))
  st += spk["tremor_st"] * 2 ** irregular * tremor
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
      voiced.append((ia, ib, 1.0 if stressed else spk["unstressed"]))
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
  if spk["tremor_db"]:  # voice_linked only (the other modes' audio stays as it was)
    v_env_s = v_env_s * 10 ** (spk["tremor_db"] * 2 ** irregular * tremor / 20)

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
  key = json.dumps({"config": _key_values(_cfg_values(syn_cfg)), "classes": list(classes), "version": GENERATOR_VERSION,
                    "sample_rate": SAMPLE_RATE}, sort_keys=True)
  digest = hashlib.sha256(key.encode()).hexdigest()[:12]
  return os.path.join(os.path.expanduser(str(cache_dir)), f"{CORPUS_NAME}-{digest}")


def _utt_id(spk: str, label: str, phrase: int, rep: int) -> str:
  return f"{spk}_{label}_p{phrase:02d}_r{rep}"


def _write_one(job: tuple[str, int, int, int, int, dict[str, Any], int]) -> None:
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
    utts = [Utterance(u["utt_id"], os.path.join(folder, u["file"]), u["speaker"], u["label"], u["phrase"],
                      str(u.get("subset", ""))) for u in meta["utterances"]]
  except (OSError, ValueError, KeyError, TypeError):
    return None  # unreadable: regenerate
  if tuple(meta.get("classes", ())) != classes or not all(os.path.isfile(u.path) for u in utts):
    return None
  return Listing(CORPUS_NAME, folder, classes, utts)


def generate(syn_cfg: Any, cache_dir: str, classes: Sequence[str],
             progress: bool | Callable[[str], None] = False) -> Listing:
  """The generated corpus as a `Listing`, writing it under `corpus_dir(...)` on the first call.

  Args:
    syn_cfg: `config.data.synthetic` (num_speakers, num_phrases, repetitions, seed,
      class_weights, strategies, test_phrases, test_speakers).
    cache_dir: `config.data.cache_dir` (`~` expanded).
    classes: class names in logit order (2 to 6); the class index selects the prototype.
    progress: a line before and after generating: to this callable (bin.prepare prints them),
      logged at INFO if True, nowhere if False.

  The folder counts as complete only once `listing.json` (written last, atomically) exists and every
  wav it names does; otherwise everything is regenerated. Every file is written atomically.
  """
  classes = tuple(str(c) for c in classes)
  if len(set(classes)) != len(classes):
    raise CorpusError(f"synthetic corpus: duplicate class names in {classes}")
  if not 2 <= len(classes) <= len(PROTOTYPES):
    raise CorpusError(f"synthetic corpus: 2 to {len(PROTOTYPES)} classes supported, got {classes}")
  vals = _cfg_values(syn_cfg)
  plan = corpus_plan(vals, len(classes))  # validates class_weights against the classes
  strategy_base(vals["seed"], 0, len(classes), vals["strategies"])  # and the strategies
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
  for s, e, p, subset in plan:
    for r in range(vals["repetitions"]):
      uid = _utt_id(speaker_name(s), classes[e], p, r)
      jobs.append((os.path.join(folder, uid + ".wav"), s, p, e, r, vals, len(classes)))
      record = {"utt_id": uid, "file": uid + ".wav", "speaker": speaker_name(s), "label": classes[e],
                "phrase": f"p{p:02d}"}
      if subset:  # training utterances carry no field: the default listing.json is as it was
        record["subset"] = subset
      records.append(record)
  start = time.perf_counter()
  report = progress if callable(progress) else (_log.info if progress else None)
  if report:
    report(f"generating the synthetic corpus ({len(jobs)} utterances) in {folder} ...")
  for job in jobs:  # ~15 ms an utterance in one process: no pool needed
    _write_one(job)
  meta = {"corpus": CORPUS_NAME, "version": GENERATOR_VERSION, "config": _key_values(vals),
          "classes": list(classes),
          "sample_rate": SAMPLE_RATE, "utterances": records}
  io_lib.write_json(os.path.join(folder, "listing.json"), meta, indent=1)
  if report:
    report(f"generated {len(jobs)} utterances in {time.perf_counter() - start:.1f} s")
  listing = _read_listing(folder, classes)
  if listing is None:
    raise CorpusError(f"{folder}: the generated synthetic corpus could not be read back")
  return listing
