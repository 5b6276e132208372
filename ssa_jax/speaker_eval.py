"""How much speaker identity a trained run's embeddings carry (docs/DESIGN.md "Beyond the paper").

  trials = verification_trials(speakers, num_different=10000, seed=0)  # {"first", "second", "same"}
  scores = cosine_scores(embeddings, trials["first"], trials["second"])
  report = speaker_eer(embeddings, speakers)        # EER of cosine scoring (metrics.equal_error_rate)
  report = linear_probe(embeddings, speakers)       # logistic regression accuracy vs chance
  emb = fold_embeddings(fold_dir, subset="valid")   # a trained fold's per-utterance z_sp / z_em

Speaker verification (open-set: speakers the model was not trained on): trials are all
same-speaker pairs of utterances plus a seeded sample of different-speaker pairs, scored by the
cosine of the two utterances' embeddings; the equal error rate summarises how well the embedding
tells speakers apart (0: perfectly, 0.5: not at all). The embedding of an utterance is the mean
of its segments' embeddings (z_sp: the speaker branch's; z_em: the emotion embedding).

Linear probe: how far speaker identity can be decoded from an embedding; per speaker, its
utterances are split (seeded) into a training and a test part, a standardised multinomial
logistic regression (scikit-learn) is fitted on the training parts, and its accuracy on the test
parts is compared with chance (1 / number of speakers).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import numpy as np

from ssa_jax import metrics

SUBSETS = ("valid", "train", "all")
EMBEDDINGS = ("z_sp", "z_em")


def verification_trials(speakers: np.ndarray, num_different: int = 10000,
                        seed: int = 0) -> dict[str, np.ndarray]:
  """Verification trials over utterances with speaker labels `speakers` (U,).

  Returns {"first" (N,), "second" (N,) utterance indices with first < second, "same" (N,) bool}:
  every same-speaker pair (first the target trials, in (first, second) order), then
  `num_different` different-speaker pairs drawn uniformly without replacement with
  `np.random.default_rng(seed)` (all of them if there are no more), sorted by (first, second).
  """
  speakers = np.asarray(speakers).reshape(-1)
  n = speakers.shape[0]
  if num_different < 0:
    raise ValueError(f"num_different must be >= 0, got {num_different}")
  first, second = [], []
  for s in np.unique(speakers):
    idx = np.flatnonzero(speakers == s)
    a, b = np.triu_indices(len(idx), 1)
    first.append(idx[a])
    second.append(idx[b])
  same_first = np.concatenate(first) if first else np.zeros(0, np.int64)
  same_second = np.concatenate(second) if second else np.zeros(0, np.int64)
  order = np.lexsort((same_second, same_first))
  same_first, same_second = same_first[order], same_second[order]
  counts = np.unique(speakers, return_counts=True)[1]
  total_diff = (n * (n - 1) - int(np.sum(counts * (counts - 1)))) // 2
  if total_diff <= num_different:  # all of them
    pairs = [(i, j) for i in range(n) for j in (np.flatnonzero(speakers[i + 1:] != speakers[i])
                                                + i + 1)]
    codes = np.asarray([i * n + j for i, j in pairs], np.int64)
  else:
    rng = np.random.default_rng(seed)
    codes = np.zeros(0, np.int64)
    while codes.shape[0] < num_different:
      draw = rng.integers(0, n, size=(2 * (num_different - codes.shape[0]) + 16, 2))
      draw = draw[speakers[draw[:, 0]] != speakers[draw[:, 1]]]
      new = np.minimum(draw[:, 0], draw[:, 1]) * n + np.maximum(draw[:, 0], draw[:, 1])
      new = new[~np.isin(new, codes)]
      _, first_seen = np.unique(new, return_index=True)
      new = new[np.sort(first_seen)][:num_different - codes.shape[0]]
      codes = np.concatenate([codes, new])
    codes = np.sort(codes)
  diff_first, diff_second = codes // n, codes % n
  return {"first": np.concatenate([same_first, diff_first]).astype(np.int64),
          "second": np.concatenate([same_second, diff_second]).astype(np.int64),
          "same": np.concatenate([np.ones(len(same_first), bool), np.zeros(len(codes), bool)])}


def cosine_scores(embeddings: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
  """(N,) cosine of embeddings[first] and embeddings[second] (embeddings (U, E); a zero vector
  scores 0)."""
  e = np.asarray(embeddings, np.float64)
  if e.ndim != 2:
    raise ValueError(f"embeddings must be (utterances, dims), got shape {e.shape}")
  norm = np.linalg.norm(e, axis=1, keepdims=True)
  e = e / np.where(norm > 0, norm, 1.0)
  return np.sum(e[np.asarray(first)] * e[np.asarray(second)], axis=1)


def _check(embeddings: np.ndarray, speakers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  embeddings, speakers = np.asarray(embeddings), np.asarray(speakers).reshape(-1)
  if embeddings.ndim != 2 or embeddings.shape[0] != speakers.shape[0]:
    raise ValueError(f"embeddings must be (U, E) with speakers (U,), got {embeddings.shape} and "
                     f"{speakers.shape}")
  if len(np.unique(speakers)) < 2:
    raise ValueError(f"speaker identity needs utterances of at least 2 speakers, got "
                     f"{len(np.unique(speakers))} (a leave-one-speaker-out fold's validation set "
                     f"has one: use its training utterances, or a heldout split with "
                     f"data.synthetic.test_speakers >= 2)")
  return embeddings, speakers


def speaker_eer(embeddings: np.ndarray, speakers: np.ndarray, num_different: int = 10000,
                seed: int = 0) -> dict[str, Any]:
  """EER of cosine scoring on `verification_trials` of (U, E) embeddings with speaker labels (U,).

  Returns {"eer", "target_trials", "nontarget_trials", "speakers", "utterances"}.
  """
  embeddings, speakers = _check(embeddings, speakers)
  trials = verification_trials(speakers, num_different, seed)
  if not trials["same"].any():
    raise ValueError("no speaker has two utterances: no same-speaker trial")
  scores = cosine_scores(embeddings, trials["first"], trials["second"])
  return {"eer": metrics.equal_error_rate(scores, trials["same"]),
          "target_trials": int(trials["same"].sum()),
          "nontarget_trials": int((~trials["same"]).sum()),
          "speakers": int(len(np.unique(speakers))), "utterances": int(len(speakers))}


def probe_split(speakers: np.ndarray, test_fraction: float = 0.5,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(train, test) utterance indices: each speaker's utterances shuffled (seeded) and
  round(n * test_fraction) of them, clipped to [1, n - 1], put in the test part; speakers with
  a single utterance are left out."""
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
  rng = np.random.default_rng(seed)
  train, test = [], []
  for s in np.unique(speakers):
    idx = rng.permutation(np.flatnonzero(speakers == s))
    if len(idx) < 2:
      continue
    k = int(np.clip(round(len(idx) * test_fraction), 1, len(idx) - 1))
    test.append(idx[:k])
    train.append(idx[k:])
  if len(test) < 2:
    raise ValueError("the probe needs at least 2 speakers with 2 or more utterances each")
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def linear_probe(embeddings: np.ndarray, speakers: np.ndarray, test_fraction: float = 0.5,
                 seed: int = 0, max_iter: int = 2000) -> dict[str, Any]:
  """Speaker identity decoded from (U, E) embeddings by a linear classifier.

  Standardisation (fitted on the training part) + multinomial logistic regression (scikit-learn,
  L2, C = 1) on `probe_split`'s training part, scored on its test part.

  Returns {"accuracy", "balanced_accuracy" (mean per-speaker recall), "chance" (1 / speakers),
  "speakers", "train_utterances", "test_utterances"}.
  """
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.metrics import balanced_accuracy_score  # pylint: disable=g-import-not-at-top
  from sklearn.pipeline import make_pipeline  # pylint: disable=g-import-not-at-top
  from sklearn.preprocessing import StandardScaler  # pylint: disable=g-import-not-at-top
  embeddings, speakers = _check(embeddings, speakers)
  train, test = probe_split(speakers, test_fraction, seed)
  clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
  clf.fit(np.asarray(embeddings[train], np.float64), speakers[train])
  pred = clf.predict(np.asarray(embeddings[test], np.float64))
  num = len(np.unique(speakers[test]))
  return {"accuracy": float(np.mean(pred == speakers[test])),
          "balanced_accuracy": float(balanced_accuracy_score(speakers[test], pred)),
          "chance": 1.0 / num, "speakers": int(num), "train_utterances": int(len(train)),
          "test_utterances": int(len(test))}


# --------------------------------------------------------------------------- a trained fold


@dataclasses.dataclass(frozen=True)
class FoldEmbeddings:
  """Per-utterance embeddings of a trained fold: embeddings {"z_sp" (SSA-CRNN only), "z_em"}:
  (U, E) each (the mean over the utterance's segments); speakers (U,) speaker indices into
  speaker_names; utt_ids (U,); fold, subset, step (the checkpoint's); enroll_k (the model's
  `model.enroll_k`: z_em read with the fold's enrollment) and excluded (the validation
  utterances left out, as in result.json's "scored": unseen speakers' enrollment utterances)."""
  embeddings: Mapping[str, np.ndarray]
  speakers: np.ndarray
  speaker_names: tuple[str, ...]
  utt_ids: tuple[str, ...]
  fold: int
  subset: str
  step: int | None
  enroll_k: int = 0
  excluded: tuple[str, ...] = ()


def pool_segments(seg_values: np.ndarray, seg_utt: np.ndarray, num_utts: int) -> np.ndarray:
  """(N, E) segment values -> (U, E) per-utterance means (seg_utt (N,) in 0..U-1, every
  utterance at least one segment)."""
  seg_values = np.asarray(seg_values, np.float64)
  counts = np.bincount(seg_utt, minlength=num_utts)
  if np.any(counts == 0):
    raise ValueError(f"{int(np.sum(counts == 0))} utterance(s) have no segment")
  sums = np.zeros((num_utts, seg_values.shape[1]))
  np.add.at(sums, seg_utt, seg_values)
  return sums / counts[:, None]


def fold_embeddings(fold_dir: str | os.PathLike, subset: str = "valid", dataset: Any = None,
                    fold: int | None = None) -> FoldEmbeddings:
  """The best checkpoint of `<workdir>/fold<K>` run in evaluation mode over the fold's
  validation ("valid"; the held-out speakers of a loso / heldout fold), training ("train") or
  both ("all") utterances, normalised as in training (`fold.prepare_fold` with the checkpoint's
  statistics); `dataset` as `evaluate.evaluate_fold`'s (default `data.prepare(config)`); `fold`
  default `rundir.FoldDir.number` (result.json's, else the folder name).

  Enrollment (`model.enroll_k` > 0, or `train.exclude_enroll_k`): the validation utterances are
  the ones the fold's evaluation scored (unseen speakers' enrollment utterances left out) and
  the model reads them with the fold's own `enroll.EvalEnrollment`; the training utterances
  with the enrollment the same rule gives them (`fold.set_enrollment`: k training utterances
  of their speaker). z_sp does not depend on enrollment, z_em does.

  Raises:
    ValueError: not a trained fold, an unknown subset, or data that differ from the run's.
  """
  # pylint: disable=g-import-not-at-top  (JAX and the model only when a run is read)
  from ssa_jax import data as data_lib, enroll, fold as fold_lib, inference, parallel, predict
  from ssa_jax import rundir
  if subset not in SUBSETS:
    raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
  where = rundir.FoldDir(fold_dir)
  fold_dir = where.path
  p = predict.load_predictor(fold_dir)
  config = p.config
  fold = where.number if fold is None else fold
  if dataset is None:
    dataset = data_lib.prepare(config, progress=False)
  if tuple(dataset.classes) != tuple(p.classes):
    raise ValueError(f"{fold_dir}: the checkpoint's classes {p.classes} differ from the data's "
                     f"{tuple(dataset.classes)} (was the config changed?)")
  fd = fold_lib.prepare_fold(config, dataset, fold, stats=p.stats, with_train=subset != "valid")
  seg_utt_all = np.asarray(dataset.seg_utt)
  parts = []  # (arrays, utterance indices, each segment's index into them, enrollment)
  if subset in ("valid", "all"):
    parts.append((fd.valid, fd.valid_utt, fd.valid_seg_utt, fd.valid_enroll))
  if subset in ("train", "all"):
    parts.append((fd.train, fd.train_utt, np.searchsorted(fd.train_utt, seg_utt_all[fd.train_seg]),
                  fold_lib.set_enrollment(config, dataset, fd, fold, fd.train_seg, fd.train)))
  mesh = parallel.make_mesh()
  eval_fn = inference.make_eval_step(p.model, mesh, aux_keys=EMBEDDINGS)
  k = enroll.enroll_k(config.model)
  states_fn = inference.make_states_step(p.model, mesh) if k > 0 else None
  batch_size = int(config.train.eval_batch_size)
  pooled: dict[str, list[np.ndarray]] = {}
  utts = []
  for arrays, utt, seg_utt, enrollment in parts:
    arrays = inference.with_enrollment(arrays, enrollment, states_fn, p.variables, batch_size,
                                       mesh)
    out = inference.model_outputs(eval_fn, p.variables, arrays, batch_size, mesh)
    for key in EMBEDDINGS:
      if key in out:
        pooled.setdefault(key, []).append(pool_segments(out[key], seg_utt, len(utt)))
    utts.append(utt)
  utt = np.concatenate(utts)
  return FoldEmbeddings(
      embeddings={k: np.concatenate(v) for k, v in pooled.items()},
      speakers=np.asarray(dataset.speakers)[utt], speaker_names=tuple(map(str,
                                                                          dataset.speaker_names)),
      utt_ids=tuple(np.asarray(dataset.utt_ids)[utt].tolist()), fold=fold, subset=subset,
      step=p.step, enroll_k=k,
      excluded=tuple(fd.scored["excluded"]) if subset != "train" else ())


def embedding_of(emb: FoldEmbeddings, name: str) -> np.ndarray:
  """emb.embeddings[name], or a one-line ValueError naming what the run's model returns."""
  if name not in EMBEDDINGS:
    raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {name!r}")
  if name not in emb.embeddings:
    raise ValueError(f"this run's model has no {name} (it returns {sorted(emb.embeddings)}); "
                     f"z_sp needs model.name='ssa_crnn'")
  return emb.embeddings[name]
