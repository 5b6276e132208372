"""Enrollment (beyond the paper, `model.enroll_k`; docs/DESIGN.md "Beyond the paper"): which
utterances lend the SSA's speaker half their pooled speaker-branch states. Pure numpy; the model
side is `models.SSACRNN(enroll=...)` and `models.speaker_states`, the evaluation side
`inference.enrollment_arrays`.

Training (`training_draw`, called by `input_pipeline.train_batches`): for each row of a batch (a
segment of utterance u, speaker s), k distinct utterances of s among the TRAINING utterances other
than u, uniformly without replacement (a speaker with 0 < n < k others: a permutation of the n,
repeated), and one uniformly chosen segment of each; a speaker with no other training utterance
gets k invalid entries (filled with the row's own segment, masked out by the model). The draw of
a batch is seeded by (seed, fold, epoch, ENROLL_STREAM, batch index), for the global batch: a
resumed run and any process count draw the same.

Evaluation (`evaluation_plan`, called by `fold.prepare_fold` for the validation / test set and the
inner split), per evaluated speaker s, seeded by (seed, fold, ENROLL_STREAM, s):
  * known (s has utterances in the part trained on): k of them (all if fewer), the same k for
    every evaluated utterance of s; every evaluated utterance is scored (speaker-dependent
    comparisons keep their scored set);
  * unseen (no training utterance): k of its own utterances in the evaluated set (at most n - 1
    of its n, so one is left to score), which are removed from the scored set: enrollment
    utterances are never scored.
An enrollment utterance is represented by the mean of its segments' pooled states (in training
by one random segment of it).
`scored_k(config)`: the k whose enrollment utterances leave the scored sets, `model.enroll_k`
or, for a run without enrollment scored on the same subset (paired comparisons),
`train.exclude_enroll_k` (the same seeded plan, nothing enrolled).

Batch keys (`input_pipeline.KEYS`):
  training    enroll_x (B, k, T, M, C) float32, enroll_mask (B, k, T) bool, enroll_valid (B, k) bool
  evaluation  enroll_context (B, k, d) float32, enroll_valid (B, k) bool
Memory of a training batch: B * k extra segments (batch 40, k 2, 300 x 40 x 3 floats: 11.5 MB),
and C_sp runs on B (1 + k) segments per step.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

ENROLL_STREAM = 1 << 21  # rng stream tag, apart from input_pipeline's (per class, proportional)
TRAIN_KEYS = ("enroll_x", "enroll_mask", "enroll_valid")
EVAL_KEYS = ("enroll_context", "enroll_valid")
_MODEL_KEYS = {"enroll_x": "x", "enroll_mask": "mask", "enroll_valid": "valid",
               "enroll_context": "context"}


def enroll_k(model_cfg: Any) -> int:
  """`model.enroll_k` (0 for a config that predates it or a model without a speaker branch)."""
  return int(model_cfg.get("enroll_k", 0)) if model_cfg.get("name") == "ssa_crnn" else 0


def scored_k(config: Any) -> int:
  """The k whose enrollment utterances of unseen speakers leave the scored sets: `model.enroll_k`,
  else `train.exclude_enroll_k` (a run without enrollment scored on the subset a k run scores);
  0: every evaluated utterance is scored. A one-line ValueError for a negative value, or an
  exclude_enroll_k that differs from the model's own enroll_k."""
  k = enroll_k(config.model)
  x = config.train.get("exclude_enroll_k", 0)
  if isinstance(x, bool) or not isinstance(x, int) or x < 0:
    raise ValueError(f"train.exclude_enroll_k must be an integer >= 0 (0: score every evaluated "
                     f"utterance), got {x!r}")
  if k > 0 and x not in (0, k):
    raise ValueError(f"train.exclude_enroll_k={x} differs from model.enroll_k={k}: a model with "
                     f"enrollment leaves out its own enrollment utterances (set 0 or {k})")
  return k or x


def check_enrollable(model_cfg: Any) -> None:
  """Raises the one-line ValueError of `--enroll` given a model trained without enrollment
  (`model_cfg`: a ConfigDict or an exported file's dict; `bin.predict` and `ssa_jax.serving`)."""
  if enroll_k(model_cfg) == 0:
    raise ValueError(f"--enroll needs a model trained with enrollment (model.name='ssa_crnn', "
                     f"model.enroll_k > 0); this one has model.name={model_cfg.get('name')!r}, "
                     f"model.enroll_k={model_cfg.get('enroll_k', 0)}")


def unusable_files(errors: list[str]) -> ValueError:
  """The one-line error of enrollment files that cannot be used (their AudioError messages):
  enrollment is all or nothing."""
  return ValueError(f"enrollment file(s) unusable: {'; '.join(errors) or 'none given'}")


def missing_warning(model_cfg: Any) -> str:
  """The warning for a model trained with enrollment that predicts without it."""
  return (f"warning: this model was trained with enrollment (model.enroll_k="
          f"{enroll_k(model_cfg)}); without --enroll the speaker half of its attention sees "
          f"only each file itself")


def from_batch(batch: Mapping[str, Any]) -> dict[str, Any] | None:
  """The model's `enroll` argument from a batch's enroll_* keys, or None without them."""
  out = {_MODEL_KEYS[k]: batch[k] for k in _MODEL_KEYS if k in batch}
  return out or None


# --------------------------------------------------------------------------------- training


@dataclasses.dataclass(frozen=True)
class UtterancePool:
  """A set's segments by utterance and speaker: `speaker_utts[s]` the sorted utterance ids of
  speaker s, `utt_segments[u]` the positions (into the set's arrays) of utterance u's segments."""
  speaker_utts: dict[int, np.ndarray]
  utt_segments: dict[int, np.ndarray]


def utterance_pool(utt: np.ndarray, speaker: np.ndarray) -> UtterancePool:
  """The pool of a set whose segments have utterance ids `utt` (N,) and speakers `speaker` (N,)."""
  utt, speaker = np.asarray(utt), np.asarray(speaker)
  order = np.argsort(utt, kind="stable")
  ids, starts = np.unique(utt[order], return_index=True)
  segments = dict(zip(ids.tolist(), np.split(order, starts[1:])))
  owner = speaker[order[starts]]
  return UtterancePool({int(s): ids[owner == s] for s in np.unique(owner)}, segments)


def training_draw(pool: UtterancePool, rows: np.ndarray, utt: np.ndarray, speaker: np.ndarray,
                  k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Enrollment segments of the batch rows `rows` (B,) (positions into the set; `utt` and
  `speaker` the set's per-segment ids): (positions (B, k) int64, valid (B, k) bool), the module
  docstring's training rule. Never the row's own utterance, always its speaker."""
  positions = np.repeat(np.asarray(rows, np.int64)[:, None], k, axis=1)
  valid = np.zeros((len(rows), k), bool)
  for i, r in enumerate(rows):
    candidates = pool.speaker_utts[int(speaker[r])]
    others = candidates[candidates != utt[r]]
    if others.size == 0:
      continue
    if others.size >= k:
      chosen = rng.choice(others, k, replace=False)
    else:
      chosen = np.resize(rng.permutation(others), k)
    for j, v in enumerate(chosen):
      segments = pool.utt_segments[int(v)]
      positions[i, j] = segments[rng.integers(len(segments))]
    valid[i] = True
  return positions, valid


def training_rng(seed: int, fold: int, epoch: int, batch: int) -> np.random.Generator:
  """The enrollment draw's generator of one batch: (seed, fold, epoch, ENROLL_STREAM, batch)."""
  return np.random.default_rng([seed, fold, epoch, ENROLL_STREAM, batch])


def training_batch(arrays: Mapping[str, np.ndarray], pool: UtterancePool, rows: np.ndarray,
                   k: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """The enroll_* keys of a training batch of the set `arrays` ({x, mask, utt, speaker}) rows."""
  positions, valid = training_draw(pool, rows, arrays["utt"], arrays["speaker"], k, rng)
  return {"enroll_x": arrays["x"][positions], "enroll_mask": arrays["mask"][positions],
          "enroll_valid": valid}


# ------------------------------------------------------------------------------- evaluation


@dataclasses.dataclass(frozen=True)
class EvalEnrollment:
  """The enrollment of an evaluated set of N segments (`evaluation_plan` + `fold.prepare_fold`).

  x (E, T, M, C) float32, mask (E, T) bool   the enrollment utterances' segments, normalised
                                             as the evaluated set
  seg_group (E,) int64                       each segment's enrollment utterance, 0..G-1
  utt (G,) int64                             their dataset utterance indices
  index (N, k) int64, valid (N, k) bool      each evaluated segment's k enrollment utterances
  excluded (X,) int64                        dataset utterances taken out of the scored set
  """
  x: np.ndarray
  mask: np.ndarray
  seg_group: np.ndarray
  utt: np.ndarray
  index: np.ndarray
  valid: np.ndarray
  excluded: np.ndarray


@dataclasses.dataclass(frozen=True)
class Plan:
  """`evaluation_plan`'s choice: `speaker_utts` {speaker: its enrollment utterances (dataset
  indices, <= k)}, `scored` (the evaluated utterances left to score, sorted), `excluded`."""
  speaker_utts: dict[int, np.ndarray]
  scored: np.ndarray
  excluded: np.ndarray


def evaluation_plan(speakers: np.ndarray, train_utt: np.ndarray, eval_utt: np.ndarray, k: int,
                    seed: int, fold: int) -> Plan:
  """The module docstring's evaluation rule for the utterances `eval_utt`, with `train_utt` the
  part trained on; `speakers` (U,) each dataset utterance's speaker."""
  speakers = np.asarray(speakers)
  train_utt, eval_utt = np.sort(np.asarray(train_utt)), np.sort(np.asarray(eval_utt))
  chosen, excluded = {}, []
  for s in np.unique(speakers[eval_utt]).tolist():
    rng = np.random.default_rng([seed, fold, ENROLL_STREAM, s])
    known = train_utt[speakers[train_utt] == s]
    if known.size:
      chosen[s] = np.sort(rng.choice(known, min(k, known.size), replace=False))
      continue
    own = eval_utt[speakers[eval_utt] == s]
    chosen[s] = np.sort(rng.choice(own, min(k, own.size - 1), replace=False))
    excluded.append(chosen[s])
  excluded = np.sort(np.concatenate(excluded)) if excluded else np.zeros(0, np.int64)
  return Plan(chosen, np.setdiff1d(eval_utt, excluded), excluded)


def segment_table(plan: Plan, seg_speaker: np.ndarray, k: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(utt (G,) the enrollment utterances in order, index (N, k) and valid (N, k)) for evaluated
  segments of speakers `seg_speaker` (N,): each segment's entries point at its speaker's
  enrollment utterances (invalid padding where a speaker has fewer than k)."""
  utt = np.concatenate([plan.speaker_utts[s] for s in sorted(plan.speaker_utts)] +
                       [np.zeros(0, np.int64)]).astype(np.int64)
  group = {int(u): g for g, u in enumerate(utt)}
  index = np.zeros((len(seg_speaker), k), np.int64)
  valid = np.zeros((len(seg_speaker), k), bool)
  for s, members in plan.speaker_utts.items():
    rows = np.flatnonzero(np.asarray(seg_speaker) == s)
    for j, u in enumerate(members):
      index[rows, j], valid[rows, j] = group[int(u)], True
  return utt, index, valid


def group_means(states: np.ndarray, seg_group: np.ndarray, num_groups: int) -> np.ndarray:
  """(G, d) the mean of the segment states (E, d) of each enrollment utterance."""
  sums = np.zeros((num_groups, states.shape[1]), np.float64)
  np.add.at(sums, seg_group, states)
  counts = np.bincount(seg_group, minlength=num_groups)
  return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
