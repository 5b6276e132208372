"""Train / validation splits over utterances for the 10-fold protocols of the paper (docs/DESIGN.md §5).

Four modes (`config.train.split`):
  random      IEMOCAP (seed §3.2): a random 80/20 split of the whole set per fold, seeded by
              (seed, fold), stratified by class (each class sends round(20 %) of its groups to
              validation, so class proportions match on both sides, imbalanced corpora too)
              and within a class by speaker, and every (speaker, class) cell with data keeps at least one training utterance
              (so every speaker is seen in training: the split is speaker dependent).
              The unit of the split is a *repetition group*: the utterances of one (speaker,
              class, phrase) (Att-HACK's and the built-in corpus's repetitions of a sentence),
              so that two takes of the same sentence by the same speaker in the same emotion
              never fall on both sides (they differ by little more than jitter, and a split that
              separates them rewards memorising near-duplicates). Utterances without a phrase
              (IEMOCAP's improvised dialogs) are groups of one.
  linguistic  Att-HACK (seed §3.2): the distinct phrases are shuffled once (seeded by `seed`, the
              same for every fold) into `num_folds` groups; fold k validates on groups k and
              k+1 (mod num_folds), so no phrase is on both sides.
  loso        leave one speaker out (beyond the paper, speaker independent): fold k validates on
              the k-th speaker (speakers in index order); `num_folds` is not used, the folds are
              0 .. number of speakers - 1.
  heldout     a fixed held-out test set (the replicate protocol's draws, or a corpus that marks
              its test utterances): training = the utterances whose `subsets` entry is not
              "test", validation/test = those whose entry is "test"; the only fold is 0. An error
              when the dataset has no `subsets`, no "test" utterance or no other utterance.

Inner validation (`config.train.selection="inner"`, `inner_split`): model selection on a split
carved from a fold's TRAINING utterances, so that the fold's validation set (the test set) takes
no part in training or selection. `inner_fraction` of the training part's repetition groups go to
the inner split, stratified exactly as the random split (`_random_split`: by class, then speaker,
whole repetition groups, every (speaker, class) cell with training data keeps at least one
training group), seeded by (seed, fold, INNER_STREAM), a stream apart from the outer random
split's (seed, fold). Any outer mode can be combined with it (with loso the inner split holds
utterances of the training speakers: it is speaker dependent, the outer test is not).

All splits are over utterances (a segment goes where its utterance goes), returned as sorted int64
index arrays into the dataset's per-utterance arrays.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

MODES = ("random", "linguistic", "loso", "heldout")
TEST_SUBSET = "test"  # the `subsets` entry of a held-out utterance
INNER_STREAM = 1  # the inner split's rng is seeded (seed, fold, INNER_STREAM); the outer (seed, fold)


def _field(data: Any, name: str) -> Any:
  if isinstance(data, Mapping):
    return data.get(name)
  return getattr(data, name, None)


def _check_fold(fold: int, num_folds: int, what: str) -> None:
  if not isinstance(fold, (int, np.integer)) or isinstance(fold, bool):
    raise ValueError(f"fold must be an integer, got {fold!r}")
  if not 0 <= fold < num_folds:
    raise ValueError(f"fold {fold} is out of range: {what} has folds 0..{num_folds - 1}")


def repetition_groups(labels: np.ndarray, speakers: np.ndarray,
                      phrases: np.ndarray | None) -> np.ndarray:
  """(U,) int64 group id per utterance: one group per (speaker, class, phrase); an utterance
  with no phrase (None or "") is a group of its own."""
  n = len(labels)
  if phrases is None:
    return np.arange(n, dtype=np.int64)
  phrases = np.asarray(phrases, dtype=str)
  keys = [(int(s), int(c), p) if p else ("utt", i, "")
          for i, (s, c, p) in enumerate(zip(speakers.tolist(), labels.tolist(), phrases.tolist()))]
  index: dict = {}
  return np.array([index.setdefault(k, len(index)) for k in keys], dtype=np.int64)


def _random_split(labels: np.ndarray, speakers: np.ndarray, groups: np.ndarray, fold: int,
                  valid_fraction: float, seed: int, stream: tuple[int, ...] = ()) -> np.ndarray:
  """Boolean validation mask over utterances: whole repetition groups, stratified by class, then
  by speaker within the class, with largest-remainder quotas counted in groups.

  Each class sends round(valid_fraction * its groups) to validation (so the class proportions
  match on both sides, also on an imbalanced corpus), shared among its (speaker, class) cells by
  largest remainder (random tie-break), each cell keeping at least one training group.
  The rng is seeded by (seed, fold, *stream) (`stream`: () for the outer split).
  """
  if not 0.0 < valid_fraction < 1.0:
    raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
  rng = np.random.default_rng([seed, fold, *stream])
  valid_groups = [np.zeros(0, np.int64)]
  for c in np.unique(labels):
    in_class = labels == c
    cell_speakers = np.unique(speakers[in_class])
    # Groups of each cell (a group lies in one cell: its key holds the speaker and the class).
    members = [np.unique(groups[in_class & (speakers == s)]) for s in cell_speakers]
    sizes = np.array([len(m) for m in members])
    quota = valid_fraction * sizes
    cap = sizes - 1  # at least one training group per (speaker, class) cell
    take = np.minimum(np.floor(quota).astype(np.int64), cap)
    remaining = int(round(valid_fraction * sizes.sum())) - int(take.sum())
    order = np.lexsort((rng.random(len(sizes)), -(quota - take)))
    for i in order:
      if remaining <= 0:
        break
      if take[i] < cap[i]:
        take[i] += 1
        remaining -= 1
    valid_groups += [rng.permutation(m)[:k] for m, k in zip(members, take)]
  return np.isin(groups, np.concatenate(valid_groups))


def _linguistic_split(phrases: np.ndarray, fold: int, num_folds: int, seed: int) -> np.ndarray:
  distinct = np.array(sorted(set(phrases.tolist())))
  if len(distinct) < num_folds:
    raise ValueError(f"linguistic split needs at least {num_folds} distinct phrases "
                     f"(one group per fold), found {len(distinct)}")
  groups = np.array_split(np.random.default_rng(seed).permutation(distinct), num_folds)
  held_out = np.concatenate([groups[fold], groups[(fold + 1) % num_folds]])
  return np.isin(phrases, held_out)


def fold_split(dataset: Any, fold: int, mode: str, num_folds: int = 10,
               valid_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Utterance indices (train, valid) of one fold.

  Args:
    dataset: a `data.Dataset` or anything with per-utterance `labels (U,)`, `speakers (U,)` and
      `phrases (U,)` (attributes or mapping keys; needed by the linguistic mode, used by the
      random mode to keep repetitions together); the heldout mode reads `subsets (U,)` str.
    fold: 0-based fold number (heldout: 0 only).
    mode: "random" | "linguistic" | "loso" | "heldout" (see the module docstring).
    num_folds: number of folds (random and linguistic).
    valid_fraction: share of validation utterances (random).
    seed: the run's seed; the random mode seeds with (seed, fold), the phrase grouping with seed.

  Returns:
    (train_idx, valid_idx): sorted int64 arrays, disjoint, together all of 0..U-1.

  Raises:
    ValueError: unknown mode, fold out of range, or data the mode cannot split.
  """
  if mode not in MODES:
    raise ValueError(f"unknown split mode {mode!r}; choose one of {', '.join(MODES)}")
  labels = np.asarray(_field(dataset, "labels"))
  speakers = np.asarray(_field(dataset, "speakers"))
  if labels.ndim != 1 or speakers.shape != labels.shape:
    raise ValueError(f"labels and speakers must be 1-D arrays of the same length, got shapes "
                     f"{labels.shape} and {speakers.shape}")
  if len(labels) == 0:
    raise ValueError("cannot split an empty dataset (no utterances)")

  if mode == "random":
    _check_fold(fold, num_folds, f"the random split with num_folds={num_folds}")
    phrases = _field(dataset, "phrases")
    if phrases is not None and len(phrases) != len(labels):
      raise ValueError(f"phrases must have one entry per utterance ({len(labels)}), "
                       f"got {len(phrases)}")
    groups = repetition_groups(labels, speakers, phrases)
    valid = _random_split(labels, speakers, groups, int(fold), valid_fraction, seed)
  elif mode == "linguistic":
    _check_fold(fold, num_folds, f"the linguistic split with num_folds={num_folds}")
    phrases = _field(dataset, "phrases")
    if phrases is None or len(phrases) != len(labels):
      raise ValueError("the linguistic split needs a phrase for every utterance")
    phrases = np.asarray(phrases, dtype=str)
    if np.any(phrases == ""):
      raise ValueError(f"the linguistic split needs a phrase for every utterance; "
                       f"{int(np.sum(phrases == ''))} of {len(phrases)} have none")
    valid = _linguistic_split(phrases, int(fold), num_folds, seed)
  elif mode == "loso":
    speaker_ids = np.unique(speakers)
    _check_fold(fold, len(speaker_ids), f"leave-one-speaker-out with {len(speaker_ids)} speakers")
    valid = speakers == speaker_ids[fold]
  else:  # heldout
    _check_fold(fold, 1, "the heldout split (one fixed test set)")
    valid = heldout_mask(_field(dataset, "subsets"), len(labels))

  idx = np.arange(len(labels), dtype=np.int64)
  train_idx, valid_idx = idx[~valid], idx[valid]
  if mode == "heldout" and len(train_idx) == 0:
    raise ValueError(f"the heldout split needs training utterances, but all {len(labels)} "
                     f"utterances are in subset {TEST_SUBSET!r}")
  if len(train_idx) == 0 or len(valid_idx) == 0:
    raise ValueError(f"fold {fold} of the {mode} split leaves an empty "
                     f"{'training' if len(train_idx) == 0 else 'validation'} set "
                     f"({len(labels)} utterances)")
  return train_idx, valid_idx


def heldout_mask(subsets: Any, num_utterances: int) -> np.ndarray:
  """(U,) bool: the utterances whose `subsets` entry is "test" (the heldout split's test set).

  Raises:
    ValueError: no subsets, a length other than U, or no "test" utterance.
  """
  if subsets is None:
    raise ValueError("the heldout split needs the dataset's subsets (a 'test' mark per "
                     "utterance); this corpus has none")
  subsets = np.asarray(subsets, dtype=str)
  if subsets.shape != (num_utterances,):
    raise ValueError(f"subsets must have one entry per utterance ({num_utterances}), "
                     f"got shape {subsets.shape}")
  test = subsets == TEST_SUBSET
  if not test.any():
    raise ValueError(f"the heldout split needs utterances of subset {TEST_SUBSET!r}; none of "
                     f"the {num_utterances} utterances is (subsets found: "
                     f"{sorted(set(subsets.tolist()))})")
  return test


def inner_split(dataset: Any, train_idx: np.ndarray, fold: int, inner_fraction: float = 0.2,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """The inner validation split of a fold's training utterances (model selection on it).

  Args:
    dataset: as `fold_split`'s (labels, speakers, optional phrases).
    train_idx: (U_tr,) the fold's training utterance indices (`fold_split`'s first array).
    fold: the fold (seeds the split with `seed`).
    inner_fraction: share of the training part's repetition groups held out, in (0, 1).
    seed: the run's seed; the rng is seeded (seed, fold, INNER_STREAM).

  Returns:
    (fit_idx, inner_idx): sorted int64 utterance indices, disjoint, together `train_idx`;
    stratified as the random split (whole repetition groups, by class then speaker, every
    (speaker, class) cell of the training part keeps at least one group in fit_idx).

  Raises:
    ValueError: inner_fraction outside (0, 1), or an empty inner split (every training
      (speaker, class) cell holds a single repetition group).
  """
  if not 0.0 < float(inner_fraction) < 1.0:
    raise ValueError(f"train.inner_fraction must be in (0, 1), got {inner_fraction}")
  train_idx = np.sort(np.asarray(train_idx, np.int64))
  labels = np.asarray(_field(dataset, "labels"))[train_idx]
  speakers = np.asarray(_field(dataset, "speakers"))[train_idx]
  phrases = _field(dataset, "phrases")
  phrases = None if phrases is None else np.asarray(phrases, dtype=str)[train_idx]
  groups = repetition_groups(labels, speakers, phrases)
  inner = _random_split(labels, speakers, groups, int(fold), float(inner_fraction), int(seed),
                        stream=(INNER_STREAM,))
  if not inner.any():
    raise ValueError(f"the inner validation split of fold {fold} is empty: no (speaker, class) "
                     f"cell of its {len(train_idx)} training utterances has a repetition group "
                     f"to spare (train.inner_fraction={inner_fraction})")
  return train_idx[~inner], train_idx[inner]
