"""Evaluation of a trained fold, as `bin.evaluate` runs it: training's metrics on the fold's
validation set from its best checkpoint, and the paper's figures (drawn by ssa_jax/plots.py).

  report = evaluate_fold(fold_dir, fold=None, utterance=None, out_dir=None, dataset=None)

Rebuilds the fold's validation set with training's own code (`fold.prepare_fold`: same data
cache and split, the training speaker statistics from the checkpoint), computes the metrics with
training's `inference.evaluate` (the same eval step, batches and pooling: result.json's numbers),
and writes into `out_dir` (default `<fold_dir>/figures`): confusion.png (Figure 4),
attention_<utterance>.png (Figure 3; the chosen utterance, else the first validation one),
tsne.png (Figure 5, validation segment embeddings z_em) and evaluation.json (UAR, WA, segment UAR,
confusion, recalls, SSA speaker mass, the scored subset (result.json's "scored"), the files
written).

Enrollment (`model.enroll_k` > 0; or `train.exclude_enroll_k`): the fold's own evaluation, so
the same `enroll.EvalEnrollment` and the same scored utterances as result.json: the confusion
matrix and the t-SNE cover the scored utterances, read with their enrollment; Figure 3 of a
scored validation utterance is drawn from the evaluation's own outputs, of another utterance
(training) with the enrollment the fold's rule gives it (`fold.set_enrollment`); an unseen
speaker's enrollment utterance (not scored) is refused in one line.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import numpy as np

from ssa_jax import data as data_lib
from ssa_jax import enroll, inference, metrics, parallel, plots, predict, rundir, summary
from ssa_jax import fold as fold_lib
from ssa_jax import io as io_lib

FIGURE_AUX = ("z_em", "alpha", "alpha_em", "alpha_sp")  # the model outputs the figures need


def safe_name(s: str) -> str:
  """`s` with every character but letters, digits and - _ . replaced by _ (a file name)."""
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)


def attention_curves(aux: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Figure 3's curves {label: (n, T')} from the model's aux outputs (one utterance's n
  segments)."""
  if "alpha_em" in aux and "alpha_sp" in aux:  # SSA-CRNN: the halves of the joint SSA softmax
    return {"α_em (self)": aux["alpha_em"], "α_sp (speaker)": aux["alpha_sp"]}
  if "alpha" in aux:  # ACRNN
    return {"α (self attention)": aux["alpha"]}
  raise ValueError(f"the model returns no attention weights (aux keys: {sorted(aux)})")


def utterance_index(dataset: Any, utterance: str | None, valid_utt: np.ndarray) -> int:
  """The corpus index of `utterance` (default: the first validation utterance)."""
  ids = list(dataset.utt_ids)
  if utterance is None:
    return int(valid_utt[0])
  if utterance in ids:
    return ids.index(utterance)
  raise ValueError(f"utterance {utterance!r} is not in the corpus "
                   f"(e.g. validation utterances: {', '.join(ids[i] for i in valid_utt[:5])})")


def check_not_excluded(u: int, dataset: Any, fd: fold_lib.FoldData, fold: int) -> None:
  """A one-line ValueError if utterance index u was left out of the fold's scored validation
  set (an unseen speaker's enrollment utterance: `fd.valid_excluded`)."""
  if fd.valid_excluded is not None and u in set(fd.valid_excluded.tolist()):
    ids = list(dataset.utt_ids)
    raise ValueError(f"utterance {ids[u]!r} enrolls its unseen speaker in fold {fold} (enroll k "
                     f"{fd.scored['enroll_k']}), so it is not scored; choose another, e.g. "
                     f"{', '.join(ids[i] for i in fd.valid_utt[:5])}")


def attention_outputs(u: int, dataset: Any, fd: fold_lib.FoldData, fold: int, config: Any,
                      valid_outputs: Mapping[str, np.ndarray],
                      run: Callable[[Mapping[str, np.ndarray], Any], dict[str, np.ndarray]]
                      ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """(mask (n, T), model outputs {key: (n, ...)}) of utterance index u's n segments, in corpus
  order, for Figure 3. A scored validation utterance: its rows of the evaluation's own outputs
  `valid_outputs` (its normalisation and enrollment: what result.json scored). Any other
  utterance: its segments normalised with the fold's statistics, run alone by `run(arrays,
  enrollment)` (with enrollment (model.enroll_k > 0): `fold.set_enrollment`'s, the fold's rule).

  Raises:
    ValueError: u is one of the validation utterances left out of the scored set (an unseen
      speaker's enrollment utterance).
  """
  pos = int(np.searchsorted(fd.valid_utt, u))
  if pos < len(fd.valid_utt) and fd.valid_utt[pos] == u:
    rows = fd.valid_seg_utt == pos
    return fd.valid["mask"][rows], {k: np.asarray(v)[rows] for k, v in valid_outputs.items()}
  check_not_excluded(u, dataset, fd, fold)
  useg = np.flatnonzero(np.asarray(dataset.seg_utt) == u)
  arrays = fold_lib.normalizer(config, dataset, fd.stats)(useg)
  return arrays["mask"], run(arrays, fold_lib.set_enrollment(config, dataset, fd, fold, useg,
                                                             arrays))


def plot_attention_of(u: int, dataset: Any, fd: fold_lib.FoldData, config: Any,
                      mask: np.ndarray, out: Mapping[str, np.ndarray], system: str, fold: int,
                      out_dir: str) -> str:
  """Figure 3 for utterance index u: its segments' attention curves (`out`, their masks `mask`:
  `attention_outputs`) over the static log-Mel channel of its real frames; returns the PNG's
  path."""
  useg = np.flatnonzero(np.asarray(dataset.seg_utt) == u)
  curves = attention_curves(out)
  real = int(mask.sum())
  static = np.asarray(dataset.segments[useg][..., 0]).reshape(-1, dataset.segments.shape[2])[:real]
  keep = -(-real // int(config.model.pool_size[0]))
  curves = {k: np.asarray(v).reshape(-1)[:keep] for k, v in curves.items()}
  hop = float(config.features.hop_length) / float(config.features.sample_rate)
  scores = metrics.pool_posteriors(out["probs"], np.zeros(len(useg), np.int64), 1,
                                   str(config.train.pooling))[0]
  ids, classes, labels = list(dataset.utt_ids), fd.classes, np.asarray(dataset.labels)
  where = "validation" if u in set(fd.valid_utt.tolist()) else "training"
  title = (f"{system}, fold {fold}: attention over {ids[u]} ({where} utterance, "
           f"true {classes[labels[u]]}, predicted {classes[int(scores.argmax())]})")
  seg_s = int(config.features.segment_frames) * hop
  path = os.path.join(out_dir, f"attention_{safe_name(ids[u])}.png")
  return plots.plot_attention(static, curves, path, hop, title,
                              boundaries_s=[k * seg_s for k in range(1, len(useg))])


def evaluate_fold(fold_dir: str | os.PathLike, fold: int | None = None,
                  utterance: str | None = None, out_dir: str | os.PathLike | None = None,
                  dataset: Any = None) -> dict[str, Any]:
  """Evaluates a fold's best checkpoint on its validation utterances and draws the figures
  (module docstring).

  Args:
    fold_dir: `<workdir>/fold<K>`.
    fold: K (default: `rundir.FoldDir.number`: result.json's, else the folder name).
    utterance: utterance id for Figure 3 (any utterance of the corpus; validation ones by default).
    out_dir: where the PNGs go.
    dataset: a prepared `data.Dataset` (default `data.prepare(config)`).

  Returns:
    The evaluation.json content.

  Raises:
    ValueError: not a trained fold, classes that differ from the data's, an unknown utterance.
  """
  where = rundir.FoldDir(fold_dir)
  p = predict.load_predictor(where.path)
  config, classes = p.config, p.classes
  fold = where.number if fold is None else fold
  if dataset is None:
    dataset = data_lib.prepare(config, progress=False)
  if tuple(dataset.classes) != tuple(classes):
    raise ValueError(f"{where.path}: the checkpoint's classes {classes} differ from the data's "
                     f"{tuple(dataset.classes)} (was the config changed?)")
  fd = fold_lib.prepare_fold(config, dataset, fold, stats=p.stats, with_train=False)
  u = utterance_index(dataset, utterance, fd.valid_utt)
  check_not_excluded(u, dataset, fd, fold)

  # --- validation metrics: training's evaluation on the best checkpoint ---
  mesh = parallel.make_mesh()
  batch_size = int(config.train.eval_batch_size)
  eval_fn = inference.make_eval_step(p.model, mesh, aux_keys=FIGURE_AUX)
  variables = p.variables  # {"params", "batch_stats"} of the best checkpoint
  states_fn = (inference.make_states_step(p.model, mesh)  # enrollment (model.enroll_k > 0)
               if enroll.enroll_k(config.model) > 0 else None)
  report, outputs = inference.evaluate(eval_fn, variables, fd, str(config.train.pooling),
                                       batch_size, mesh, states_fn)
  system = summary.system_label(config)
  out_dir = where.figures_path if out_dir is None else os.fspath(out_dir)
  uar, wa = report["uar"], report["wa"]
  written = {}
  written["confusion"] = plots.plot_confusion(
      np.asarray(report["confusion"]), classes, os.path.join(out_dir, "confusion.png"),
      title=f"{system}, fold {fold}: validation UAR {100 * uar:.2f} %, WA {100 * wa:.2f} %")
  written["tsne"] = plots.plot_tsne(
      outputs["z_em"], fd.valid["label"], classes, os.path.join(out_dir, "tsne.png"),
      title=f"t-SNE of the emotion embeddings z_em ({system}, fold {fold}, "
            f"{len(fd.valid_seg)} validation segments)", seed=int(config.seed))

  def run(arrays, enrollment):
    arrays = inference.with_enrollment(arrays, enrollment, states_fn, variables, batch_size, mesh)
    return inference.model_outputs(eval_fn, variables, arrays, batch_size, mesh)
  mask, out = attention_outputs(u, dataset, fd, fold, config, outputs, run)
  written["attention"] = plot_attention_of(u, dataset, fd, config, mask, out, system, fold,
                                           out_dir)
  report = {"fold_dir": where.path, "fold": fold, "step": p.step, "system": system, **report,
            "classes": list(classes), "valid_utterances": int(len(fd.valid_utt)),
            "valid_segments": int(len(fd.valid_seg)), "scored": fd.scored,
            "attention_utterance": list(dataset.utt_ids)[u], "figures": written}
  io_lib.write_json(os.path.join(out_dir, "evaluation.json"), report)
  return report
