"""One fold's data, shared by training and `bin.evaluate` (ssa_jax/evaluate.py).

  fd = prepare_fold(config, dataset, fold)          # split, speaker statistics, normalised arrays
  metrics, outputs = inference.evaluate(eval_fn, variables, fd, pooling, batch_size, mesh)

With `config.train.selection="inner"` the fold's training utterances are split again
(`splits.inner_split`): `train_utt` / `train` are the part trained on (the speaker statistics are
fitted on it alone), `inner_utt` / `inner` the inner validation split that selects the epoch, and
`valid_utt` / `valid` stay the fold's validation set (with split="heldout": the test set), scored
once at the selected epoch. `inner_view(fd)` is the FoldData whose validation side is the inner
split, so `inference.validation_metrics` / `inference.evaluate` score it with the same code.

Training (`train.train_and_evaluate`) and `evaluate.evaluate_fold` both call `prepare_fold` and
`inference.evaluate`, so the figures' numbers are training's numbers.

Arrays of a fold (`FoldData.train`, `FoldData.valid`, `FoldData.inner`): dicts of numpy
  x        float32 (N, T, M, C)  normalised with the TRAINING speakers' statistics
  mask     bool    (N, T)
  label    int32   (N,)          emotion class of the segment's utterance
  speaker  int32   (N,)          speaker index (into `speaker_names`)
  utt      int64   (N,)          the segment's utterance (dataset index; enrollment draws)

Enrollment (`model.enroll_k` > 0, ssa_jax/enroll.py): `valid_enroll` / `inner_enroll` hold the
enrollment of the validation set / inner split (`enroll.EvalEnrollment`); an unseen speaker's
enrollment utterances are taken out of `valid_utt` / `inner_utt` (never scored; normalised
with the set they came from, so the scored segments are normalised as without enrollment) and
counted under counts["valid_enroll_excluded"] / ["inner_enroll_excluded"]. A run without
enrollment can score the same subset (`train.exclude_enroll_k` = K: the
utterances a `model.enroll_k` = K run would enroll are left out, nothing else changes;
`enroll.scored_k`), so that
paired comparisons of the two score the same utterances; `valid_excluded` names them.
`set_enrollment` gives any other evaluated set (the training utterances, one utterance) the
enrollment the same rule gives it (bin.evaluate, bin.speaker_eer, bin.probe).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
import numpy as np

from ssa_jax import enroll as enroll_lib
from ssa_jax import features, splits


@dataclasses.dataclass(frozen=True)
class FoldData:
  """One fold's split and normalised arrays (no reference to the raw dataset features).

  classes (K,) names; speaker_names (S,) str; train_utt (U_tr,), valid_utt (U_va,) sorted
  utterance indices; train_seg (N_tr,), valid_seg (N_va,) segment indices; stats: the training
  speaker statistics; train / valid: the arrays above (train None when not asked for);
  valid_seg_utt (N_va,): each validation segment's index into valid_utt; valid_labels (U_va,);
  counts: per-class utterance and segment counts {train_utterances, valid_utterances,
  train_segments, valid_segments; selection "inner": inner_utterances, inner_segments}:
  {class: n}. Selection "inner" (else None): inner_utt (U_in,), inner_seg (N_in,), inner (its
  arrays, None when the training side was not asked for), inner_seg_utt (N_in,) each inner
  segment's index into inner_utt, inner_labels (U_in,).
  """
  classes: tuple[str, ...]
  speaker_names: np.ndarray
  train_utt: np.ndarray
  valid_utt: np.ndarray
  train_seg: np.ndarray
  valid_seg: np.ndarray
  stats: features.SpeakerStats
  train: dict[str, np.ndarray] | None
  valid: dict[str, np.ndarray]
  valid_seg_utt: np.ndarray
  valid_labels: np.ndarray
  counts: dict[str, dict[str, int]]
  inner_utt: np.ndarray | None = None
  inner_seg: np.ndarray | None = None
  inner: dict[str, np.ndarray] | None = None
  inner_seg_utt: np.ndarray | None = None
  inner_labels: np.ndarray | None = None
  valid_enroll: enroll_lib.EvalEnrollment | None = None
  inner_enroll: enroll_lib.EvalEnrollment | None = None
  valid_excluded: np.ndarray | None = None  # (X,) utterances left out of valid_utt (scored_k > 0)
  scored: dict[str, Any] | None = None  # result.json's "scored" (`scored_record`)

  @property
  def num_classes(self) -> int:
    return len(self.classes)


SELECTIONS = ("valid", "inner")


def num_folds(train_cfg: ml_collections.ConfigDict) -> int | None:
  """The number of folds of the split mode (heldout: 1), None for loso (it is on the data)."""
  if train_cfg.split == "loso":
    return None
  return 1 if train_cfg.split == "heldout" else int(train_cfg.num_folds)


def check_fold(train_cfg: ml_collections.ConfigDict, fold: int) -> None:
  """A one-line ValueError for an unknown split mode, a fold out of range (loso: on the data),
  or a bad `train.selection` / `train.inner_fraction`."""
  if train_cfg.split not in splits.MODES:
    raise ValueError(f"train.split must be one of {splits.MODES}, got {train_cfg.split!r}")
  n = num_folds(train_cfg)
  if n is not None and not 0 <= fold < n:
    raise ValueError(f"fold {fold} is out of range: the {train_cfg.split} split has folds "
                     f"0..{n - 1}" + (" (one fixed test set)" if train_cfg.split == "heldout"
                                      else ""))
  selection = train_cfg.get("selection", "valid")
  if selection not in SELECTIONS:
    raise ValueError(f"train.selection must be one of {SELECTIONS}, got {selection!r}")
  if selection == "inner" and not 0.0 < float(train_cfg.inner_fraction) < 1.0:
    raise ValueError(f"train.inner_fraction must be in (0, 1), got {train_cfg.inner_fraction}")


def scored_record(k: int, excluded_ids: Any) -> dict[str, Any]:
  """result.json's "scored": which validation (test) utterances were scored. {"enroll_k": the k
  whose unseen speakers' enrollment utterances were left out (`enroll.scored_k`; 0: none),
  "excluded": their utterance ids, sorted}. Paired comparisons check that both runs excluded
  the same (`summary.compare_systems`)."""
  return {"enroll_k": int(k), "excluded": sorted(str(u) for u in excluded_ids)}


def normalizer(config: ml_collections.ConfigDict, dataset: Any, stats: features.SpeakerStats):
  """`norm(seg_idx) -> arrays` (the module docstring's dict) of dataset segments `seg_idx`,
  normalised with `stats` (the training speakers'; `features.norm_fallback` for the others)."""
  seg_utt = np.asarray(dataset.seg_utt)
  seg_speaker = np.asarray(dataset.speaker_names)[np.asarray(dataset.speakers)[seg_utt]]

  def norm(idx):
    return _arrays(features.normalize(dataset.segments, dataset.mask, seg_speaker, stats,
                                      config.features.norm_fallback, index=idx), dataset, idx)
  return norm


def _counts(labels: np.ndarray, classes: tuple[str, ...]) -> dict[str, int]:
  return {c: int(n) for c, n in zip(classes, np.bincount(labels, minlength=len(classes)))}


def _arrays(x: np.ndarray, dataset: Any, seg_idx: np.ndarray) -> dict[str, np.ndarray]:
  utt = np.asarray(dataset.seg_utt)[seg_idx]
  return {"x": x, "mask": np.asarray(dataset.mask[seg_idx], bool),
          "label": np.asarray(dataset.labels, np.int32)[utt],
          "speaker": np.asarray(dataset.speakers, np.int32)[utt], "utt": utt.astype(np.int64)}


def prepare_fold(config: ml_collections.ConfigDict, dataset: Any, fold: int,
                 stats: features.SpeakerStats | None = None, with_train: bool = True) -> FoldData:
  """The split of fold `fold` (and its inner split with `train.selection="inner"`), the training
  speaker statistics and the normalised arrays.

  Args:
    config: the full config (reads `seed`, `train.split / num_folds / valid_fraction /
      selection / inner_fraction`, `features.norm_fallback`).
    dataset: a `data.Dataset` (raw segments, read a chunk of rows at a time: the only copy of
      the features made here is the normalised one).
    fold: 0-based fold number.
    stats: the training statistics to use (a checkpoint's); default: fitted on the training
      segments of this fold.
    with_train: also normalise the training (and inner) segments (training needs them,
      evaluation not).

  Raises:
    ValueError: bad split mode / fold / selection, or data the split cannot use.
  """
  tcfg = config.train
  check_fold(tcfg, fold)
  classes = tuple(dataset.classes)
  train_utt, valid_utt = splits.fold_split(dataset, fold, tcfg.split, int(tcfg.num_folds),
                                           float(tcfg.valid_fraction), int(config.seed))
  inner_utt = None
  if tcfg.get("selection", "valid") == "inner":  # train on the rest of the training part
    train_utt, inner_utt = splits.inner_split(dataset, train_utt, fold,
                                              float(tcfg.inner_fraction), int(config.seed))
  seg_utt = np.asarray(dataset.seg_utt)
  train_seg = np.flatnonzero(np.isin(seg_utt, train_utt))
  valid_seg = np.flatnonzero(np.isin(seg_utt, valid_utt))
  speaker_names = np.asarray(dataset.speaker_names)
  seg_speaker = speaker_names[np.asarray(dataset.speakers)[seg_utt]]
  if stats is None:  # from the TRAINING segments only; both sides normalised with them
    stats = features.fit_speaker_stats(dataset.segments, dataset.mask, seg_speaker,
                                       index=train_seg)
  norm = normalizer(config, dataset, stats)
  train = norm(train_seg) if with_train else None
  valid = norm(valid_seg)
  labels = np.asarray(dataset.labels)
  k, kx, extra = enroll_lib.enroll_k(config.model), enroll_lib.scored_k(config), {}
  if kx > 0:  # an unseen speaker's enrollment utterances (a k = kx run's) leave the scored set
    valid_utt, valid_seg, valid, extra["valid_enroll"], excluded = _scored_set(
        dataset, train_utt, valid_utt, valid_seg, valid, norm, kx, int(config.seed), fold, k > 0)
    extra["excluded"] = {"valid_enroll_excluded": _counts(labels[excluded], classes)}
    extra["valid_excluded"] = excluded
  extra["scored"] = scored_record(kx, np.asarray(dataset.utt_ids)[extra.get("valid_excluded", [])])
  counts = {"train_utterances": _counts(labels[train_utt], classes),
            "valid_utterances": _counts(labels[valid_utt], classes),
            "train_segments": _counts(labels[seg_utt[train_seg]], classes),
            "valid_segments": _counts(valid["label"], classes), **extra.pop("excluded", {})}
  inner = {}
  if inner_utt is not None:
    inner_seg = np.flatnonzero(np.isin(seg_utt, inner_utt))
    inner_arrays = norm(inner_seg) if with_train else None
    if kx > 0 and with_train:
      inner_utt, inner_seg, inner_arrays, extra["inner_enroll"], excluded = _scored_set(
          dataset, train_utt, inner_utt, inner_seg, inner_arrays, norm, kx, int(config.seed),
          fold, k > 0)
      counts["inner_enroll_excluded"] = _counts(labels[excluded], classes)
    counts.update(inner_utterances=_counts(labels[inner_utt], classes),
                  inner_segments=_counts(labels[seg_utt[inner_seg]], classes))
    inner = {"inner_utt": inner_utt, "inner_seg": inner_seg, "inner": inner_arrays,
             "inner_seg_utt": np.searchsorted(inner_utt, seg_utt[inner_seg]),
             "inner_labels": labels[inner_utt]}
  return FoldData(classes=classes, speaker_names=speaker_names, train_utt=train_utt,
                  valid_utt=valid_utt, train_seg=train_seg, valid_seg=valid_seg, stats=stats,
                  train=train, valid=valid,
                  valid_seg_utt=np.searchsorted(valid_utt, seg_utt[valid_seg]),
                  valid_labels=labels[valid_utt], counts=counts, **inner, **extra)


def _scored_set(dataset: Any, train_utt: np.ndarray, set_utt: np.ndarray, set_seg: np.ndarray,
                arrays: dict[str, np.ndarray], norm: Any, k: int, seed: int, fold: int,
                with_enrollment: bool = True):
  """An evaluated set under `enroll.evaluation_plan` with k: (scored utterances, their segments,
  their arrays, its `enroll.EvalEnrollment` (None without `with_enrollment`: the subset only),
  the excluded utterances). The set's arrays were normalised whole (excluded utterances
  included), so the scored rows are the rows they would be without enrollment; enrollment
  utterances from the training part are normalised with their own (known) speakers' statistics
  by `norm` (`normalizer`)."""
  seg_utt = np.asarray(dataset.seg_utt)
  plan = enroll_lib.evaluation_plan(dataset.speakers, train_utt, set_utt, k, seed, fold)
  keep = np.isin(seg_utt[set_seg], plan.scored)
  scored = arrays if keep.all() else {key: v[keep] for key, v in arrays.items()}
  enrollment = None
  if with_enrollment:
    utt, index, valid = enroll_lib.segment_table(plan, scored["speaker"], k)
    enroll_seg = np.flatnonzero(np.isin(seg_utt, utt))  # dataset segments, sorted
    position = {int(u): g for g, u in enumerate(utt)}
    group = np.array([position[int(u)] for u in seg_utt[enroll_seg]], np.int64)  # into `utt`
    in_set = np.isin(enroll_seg, set_seg)
    x = np.zeros((len(enroll_seg),) + arrays["x"].shape[1:], np.float32)
    mask = np.asarray(dataset.mask[enroll_seg], bool)
    if in_set.any():
      x[in_set] = arrays["x"][np.searchsorted(set_seg, enroll_seg[in_set])]
    if (~in_set).any():
      x[~in_set] = norm(enroll_seg[~in_set])["x"]
    enrollment = enroll_lib.EvalEnrollment(x=x, mask=mask, seg_group=group, utt=utt,
                                           index=index, valid=valid, excluded=plan.excluded)
  return plan.scored, set_seg[keep], scored, enrollment, plan.excluded


def set_enrollment(config: ml_collections.ConfigDict, dataset: Any, fd: FoldData, fold: int,
                   set_seg: np.ndarray, arrays: dict[str, np.ndarray]
                   ) -> enroll_lib.EvalEnrollment | None:
  """The enrollment of another evaluated set of the fold, by the rule the fold's evaluation
  follows (`enroll.evaluation_plan` with fold `fold`'s training part and the seed): dataset
  segments `set_seg` (N,) with their normalised `arrays` (`normalizer`; e.g. `fd.train`, one
  utterance's segments); None for a model without enrollment. A known speaker gets the same k
  training utterances as in the fold's evaluation. Every utterance of the set is scored.

  Raises:
    ValueError: the rule would take utterances of the set out of it (unseen speakers' own
      utterances: use the fold's `valid_enroll`, whose excluded utterances are not scored).
  """
  k = enroll_lib.enroll_k(config.model)
  if k == 0:
    return None
  set_utt = np.unique(np.asarray(dataset.seg_utt)[set_seg])
  _, _, _, enrollment, excluded = _scored_set(
      dataset, fd.train_utt, set_utt, set_seg, arrays, normalizer(config, dataset, fd.stats), k,
      int(config.seed), fold)
  if excluded.size:
    ids = np.asarray(dataset.utt_ids)[excluded]
    raise ValueError(f"utterances {', '.join(map(str, ids[:5]))} would enroll an unseen speaker "
                     f"(model.enroll_k={k}): they are not scored")
  return enrollment


def inner_view(fd: FoldData) -> FoldData:
  """`fd` with its validation side replaced by the inner split (`inference.validation_metrics`
  and `inference.evaluate` of the view score the inner split); an error if `fd` has no inner arrays."""
  if fd.inner is None:
    raise ValueError("this fold has no inner validation split (train.selection is not 'inner', "
                     "or the training side was not prepared)")
  return dataclasses.replace(fd, valid_utt=fd.inner_utt, valid_seg=fd.inner_seg, valid=fd.inner,
                             valid_seg_utt=fd.inner_seg_utt, valid_labels=fd.inner_labels,
                             valid_enroll=fd.inner_enroll, valid_excluded=None, scored=None)
