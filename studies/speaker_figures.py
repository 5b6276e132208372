"""Speaker figures of a `bin.replicates` study: the speaker branch's EER and linear probes of z_em.

  python -m studies.speaker_figures --workdir runs/s5/screen [--reference SSA-CRNN-r] [--out DIR]

For every system of the study (compare.json's order) and every draw it finished (result.json),
from the draw's best checkpoint (`speaker_eval.fold_embeddings`, as `bin.speaker_eer` and
`bin.probe`):

  eer_test      EER (%) of cosine-scored verification trials on z_sp over the draw's test
                utterances: the held-out speakers of an unseen-speaker draw (S5's H5a). SSA-CRNN
                systems only (ACRNN has no speaker branch).
  probe_test    linear-probe speaker accuracy (%) on z_em over the test utterances (each
                speaker's utterances split half / half), and its chance 100 / speakers;
  probe_train   the same over the training utterances: the speakers the model was trained on,
                whose identity `train.adversarial_weight` pushes out of z_em (S5's H5d).

Each system's figure is the mean over its draws with Student's 95 % CI; with --reference, every
other system's paired difference against it over the draws both finished (`summary.paired_test`,
the paired t over draws). A run's figures are cached in its fold folder
(`speaker_figures.json`), so a rerun computes only new draws. Writes speaker_figures.json and
speaker_figures.md to --out (default: the workdir) and prints the table.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from typing import Any, Callable, Mapping, Sequence

from ssa_jax import replicates, summary

FIGURES = ("eer_test", "probe_test", "probe_train")
CACHE = "speaker_figures.json"
_TITLES = {"eer_test": "EER z_sp, test speakers (%)",
           "probe_test": "probe z_em, test speakers (%)",
           "probe_train": "probe z_em, training speakers (%)"}


def run_figures(fold_dir: str) -> dict[str, Any]:
  """The figures of one trained fold (module docstring); None for a figure its model lacks."""
  from ssa_jax import speaker_eval  # pylint: disable=g-import-not-at-top (jax only when needed)
  out: dict[str, Any] = {}
  test = speaker_eval.fold_embeddings(fold_dir, "valid")
  out["eer_test"] = (100 * speaker_eval.speaker_eer(test.embeddings["z_sp"], test.speakers)["eer"]
                     if "z_sp" in test.embeddings else None)
  for name, emb in (("probe_test", test), ("probe_train",
                                           speaker_eval.fold_embeddings(fold_dir, "train"))):
    probe = speaker_eval.linear_probe(emb.embeddings["z_em"], emb.speakers)
    out[name] = 100 * probe["accuracy"]
    out[name + "_chance"] = 100 * probe["chance"]
  return out


def study_runs(workdir: str) -> dict[str, dict[int, str]]:
  """{system label: {draw: fold folder}} of the finished runs (result.json) of a replicates
  workdir, in compare.json's order.

  Raises:
    FileNotFoundError: no compare.json (not a replicates workdir, or no draw finished yet).
  """
  path = os.path.join(workdir, "compare.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir}: no compare.json (not a bin.replicates workdir, or no "
                            f"draw finished yet)")
  with open(path) as f:
    labels = [s["system"] for s in json.load(f)["systems"]]
  out = {}
  for label, sub in zip(labels, replicates.subdirs(labels)):
    runs = {}
    for result in glob.glob(os.path.join(workdir, sub, "draw*", "fold0", "result.json")):
      fold_dir = os.path.dirname(result)
      runs[int(os.path.basename(os.path.dirname(fold_dir))[len("draw"):])] = fold_dir
    out[label] = dict(sorted(runs.items()))
  return out


def cached_figures(fold_dir: str, compute: Callable[[str], dict[str, Any]] = run_figures
                   ) -> dict[str, Any]:
  """`compute(fold_dir)`, read from / written to fold_dir/speaker_figures.json."""
  path = os.path.join(fold_dir, CACHE)
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  figures = compute(fold_dir)
  with open(path + ".tmp", "w") as f:
    json.dump(figures, f)
  os.replace(path + ".tmp", path)
  return figures


def tabulate(per_run: Mapping[str, Mapping[int, Mapping[str, Any]]],
             reference: str | None = None) -> dict[str, Any]:
  """Per system and figure: mean with CI over the draws, and the paired difference (system −
  reference) over the draws both have. per_run: {label: {draw: figures}}."""
  if reference is not None and reference not in per_run:
    raise ValueError(f"reference {reference!r} is not a system of the study: {list(per_run)}")
  rows = []
  for label, draws in per_run.items():
    row: dict[str, Any] = {"system": label, "draws": sorted(draws)}
    for fig in FIGURES:
      values = {d: f[fig] for d, f in draws.items() if f.get(fig) is not None}
      row[fig] = summary.mean_ci(list(values.values())).to_json() if values else None
      if fig.startswith("probe") and values:
        row[fig + "_chance"] = summary.mean_ci(
            [draws[d][fig + "_chance"] for d in values]).mean
      if reference is not None and label != reference and values:
        ref = {d: f[fig] for d, f in per_run[reference].items() if f.get(fig) is not None}
        common = sorted(set(values) & set(ref))
        if common:
          row[fig + "_diff"] = summary.paired_test([values[d] for d in common],
                                                   [ref[d] for d in common]).to_json()
    rows.append(row)
  return {"reference": reference, "systems": rows,
          "per_run": {label: {str(d): f for d, f in draws.items()}
                      for label, draws in per_run.items()}}


def _cell(stat: Mapping[str, Any] | None) -> str:
  if stat is None:
    return "–"
  ci = stat.get("ci")
  return f"{stat['mean']:.2f}" + ("" if ci is None else f" ± {ci:.2f}")


def _diff(stat: Mapping[str, Any] | None) -> str:
  if stat is None:
    return "–"
  if stat.get("ci") is None:
    return f"{stat['mean']:+.2f}"
  return f"{stat['mean']:+.2f} [{stat['low']:+.2f}, {stat['high']:+.2f}], p = {stat['p']:.3f}"


def render(table: Mapping[str, Any]) -> str:
  """Markdown: figures per system, paired differences, and every run."""
  lines = ["| system | draws | " + " | ".join(_TITLES[f] for f in FIGURES) + " | probe chance (%) |",
           "|---|---:|" + "---:|" * (len(FIGURES) + 1)]
  for r in table["systems"]:
    chance = r.get("probe_test_chance")
    lines.append(f"| {r['system']} | {len(r['draws'])} | "
                 + " | ".join(_cell(r[f]) for f in FIGURES)
                 + f" | {'–' if chance is None else f'{chance:.2f}'} |")
  lines.append("")
  lines.append("Mean ± 95 % CI over the draws (Student's t).")
  if table["reference"] is not None:
    lines += ["", f"Paired differences against {table['reference']} over the draws both "
                  f"finished, percentage points, mean [95 % CI], paired t:", "",
              "| system | " + " | ".join(_TITLES[f] for f in FIGURES) + " |",
              "|---|" + "---|" * len(FIGURES)]
    for r in table["systems"]:
      if r["system"] != table["reference"]:
        lines.append(f"| {r['system']} | "
                     + " | ".join(_diff(r.get(f + "_diff")) for f in FIGURES) + " |")
  lines += ["", "Every run (" + ", ".join(FIGURES) + "):", "",
            "| system | draw | " + " | ".join(FIGURES) + " |", "|---|---:|" + "---:|" * len(FIGURES)]
  for label, draws in table["per_run"].items():
    for d, f in draws.items():
      lines.append(f"| {label} | {d} | " + " | ".join(
          "–" if f.get(k) is None else f"{f[k]:.2f}" for k in FIGURES) + " |")
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True, help="a bin.replicates workdir (compare.json)")
  p.add_argument("--reference", default=None, help="label of the system differences are against")
  p.add_argument("--out", default=None, help="folder for speaker_figures.{json,md}")
  args = p.parse_args(argv)
  runs = study_runs(args.workdir)
  per_run = {label: {d: cached_figures(fold_dir) for d, fold_dir in draws.items()}
             for label, draws in runs.items()}
  table = tabulate(per_run, args.reference)
  out = args.out or args.workdir
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "speaker_figures.json"), "w") as f:
    json.dump(table, f, indent=1)
  text = render(table)
  with open(os.path.join(out, "speaker_figures.md"), "w") as f:
    f.write(text)
  print(text, end="")
  return table


if __name__ == "__main__":
  main()
