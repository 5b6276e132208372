"""Builds (or reuses) the feature cache of a corpus and prints what it holds.

  python -m bin.prepare                                          # built-in corpus, configs/quickstart.py
  python -m bin.prepare --config configs/ssa_crnn_r.py \\
      --config.data.corpus=iemocap --config.data.root=/data/IEMOCAP_full_release
  python -m bin.prepare --config.data.corpus=atthack --config.data.root=/data/Att-HACK
  python -m bin.prepare --config.data.corpus=manifest --config.data.root=my_corpus.csv

Prints the speakers x classes table, the skipped files with their reasons, the number of segments
and where the cache is. A bad flag, a broken corpus or config is one line on stderr and exit
code 1 (`ssa_jax/cli/_cli.py`).
"""

from __future__ import annotations

from pathlib import Path

from ssa_jax.cli import _cli

_CONFIG = _cli.define_config_flag("quickstart")


def _stamp(path: Path) -> int | None:
  try:
    return path.stat().st_mtime_ns
  except OSError:
    return None


def main(argv: list[str]) -> int:
  _cli.no_arguments(argv)
  config = _cli.config(_CONFIG)
  _cli.setup_jax(config.data.cache_dir)
  # Imported here so that `--help` and flag errors do not wait for JAX.
  from ssa_jax import data  # pylint: disable=g-import-not-at-top
  from ssa_jax.corpora import list_corpus  # pylint: disable=g-import-not-at-top

  # CorpusError, AudioError, bad config values, unreadable paths: one line (ssa_jax/cli/_cli.py).
  listing = list_corpus(config.data, progress=lambda line: print(line, flush=True))
  location = data.cache_location(config, listing)
  before = _stamp(location / "meta.json")
  dataset = data.prepare(config, progress=True, listing=listing)
  reused = before is not None and before == _stamp(location / "meta.json")
  n, t, m, c = dataset.segments.shape
  print(dataset.listing.report())
  print(f"{n} segments of {t} frames x {m} mel bands x {c} channels "
        f"({int(dataset.mask.sum())} real frames) from {dataset.num_utterances} utterances")
  print(f"feature cache: {location} ({'reused' if reused else 'built'})")
  return 0


def command() -> None:
  """`ssa-prepare` (installed by `pip install .`) and `python -m bin.prepare`."""
  _cli.run(main)


if __name__ == "__main__":
  command()
