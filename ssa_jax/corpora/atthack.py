"""Att-HACK (OpenSLR SLR88) from its archive layout (docs/DESIGN.md §7).

Every `{speaker}_{a1..a4}_{s001..s100}_{v01..v05}.wav` anywhere under `data.root` (the archive nests
them under a long prefix), e.g. `F01_a3_s042_v02.wav`: speaker `F01`, attitude a3 (the third name of
`data.attitudes`), phrase `s042`, repetition 2. The classes of the listing are `data.attitudes`.
A `.wav` whose name does not follow the pattern is a reported skip; `._*` files and other files are
counted in the report; an unreadable sub-folder is a reported skip (errors with `data.strict`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ssa_jax.corpora import SkipLog, corpus_root, finish, is_dir, is_file, is_resource_fork, scandir
from ssa_jax.corpora.base import CorpusError, Listing, Utterance

_NAME = re.compile(r"^(?P<speaker>[^_\s]+)_a(?P<attitude>[1-4])_(?P<phrase>s\d{3})_v(?P<rep>\d{2})\.wav$",
                   re.IGNORECASE)
PATTERN = "{speaker}_a{1..4}_s{NNN}_v{NN}.wav"


def parse_name(name: str) -> tuple[str, int, str, int] | None:
  """`F01_a3_s042_v02.wav` -> ("F01", 3, "s042", 2); None if the name does not follow the pattern."""
  m = _NAME.match(name)
  if m is None:
    return None
  return m["speaker"], int(m["attitude"]), m["phrase"].lower(), int(m["rep"])


def _walk(root: Path, log: SkipLog) -> list[Path]:
  """Every file under root (not following symlinked folders twice); unreadable folders are skips."""
  files, stack, seen = [], [root], set()
  while stack:
    folder = stack.pop()
    try:
      real = os.path.realpath(folder)
      if real in seen:
        continue
      seen.add(real)
      entries = scandir(folder)
    except OSError as e:
      if folder == root:
        raise CorpusError(f"{root}: cannot read the corpus root: {e.strerror or e}") from e
      log.skip(folder, f"unreadable directory: {e.strerror or e}")
      continue
    for e in entries:
      if is_resource_fork(e.name):
        log.ignore("macOS '._*' files")
      elif is_dir(e):
        stack.append(Path(e.path))
      elif is_file(e):
        files.append(Path(e.path))
  return sorted(files)


def load(data_cfg: Any) -> Listing:
  """Lists Att-HACK under `data_cfg.root` (see the module docstring)."""
  attitudes = tuple(str(a) for a in data_cfg.attitudes)
  if len(attitudes) != 4 or len(set(attitudes)) != 4:
    raise CorpusError(f"data.attitudes must name a1..a4 with 4 distinct names, got {attitudes}")
  root = corpus_root(data_cfg.root, "folder holding the Att-HACK wav files")
  log = SkipLog(data_cfg.strict)
  utterances: list[Utterance] = []
  first: dict[str, Path] = {}
  for path in _walk(root, log):
    if not path.name.lower().endswith(".wav"):
      log.ignore("non-wav files")
      continue
    parsed = parse_name(path.name)
    if parsed is None:
      log.skip(path, f"wav name does not follow the Att-HACK pattern {PATTERN}")
      continue
    speaker, attitude, phrase, _ = parsed
    utt_id = path.name[:-4]
    if utt_id in first:
      log.skip(path, f"duplicate of {first[utt_id]}")
      continue
    first[utt_id] = path
    utterances.append(Utterance(utt_id=utt_id, path=str(path), speaker=speaker,
                                label=attitudes[attitude - 1], phrase=phrase))
  if not utterances and not log.skipped:
    raise CorpusError(f"{root}: holds no Att-HACK wav file ({PATTERN}) at any depth")
  return finish("atthack", root, attitudes, utterances, log)
