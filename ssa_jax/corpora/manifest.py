"""Any other corpus, from a CSV manifest (docs/DESIGN.md §7).

`data.root` is the CSV's path. Header `path,speaker,label[,phrase][,subset]` (any order, other columns
ignored); relative paths are resolved from the CSV's folder; labels must be in `data.classes`. The
optional `subset` column is `train`, `test` or empty (any case): `test` marks a held-out utterance
(`Utterance.subset == "test"`, scored by `train.split="heldout"`), `train` or empty training material
(subset ""); any other value is a `CorpusError` naming `file:line` and the value.
A missing column, an empty file or one that is not UTF-8 CSV text is a `CorpusError`; a row with an
unknown label, a missing audio file, a wrong number of fields, an empty path or speaker, or a path
listed twice is a reported skip naming `file:line` (an error with `data.strict`).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from ssa_jax.corpora import SkipLog, finish
from ssa_jax.corpora.base import CorpusError, Listing, Utterance

REQUIRED = ("path", "speaker", "label")
SUBSET_VALUES = {"": "", "train": "", "test": "test"}  # subset column (lower-cased) -> Utterance.subset


def _csv_path(root: Any) -> Path:
  text = str(root or "").strip()
  if not text:
    raise CorpusError("data.root is empty: set --config.data.root to the manifest CSV's path")
  path = Path(os.path.abspath(os.path.expanduser(text)))
  if not path.exists():
    raise CorpusError(f"{path}: manifest CSV does not exist (data.root)")
  if not path.is_file():
    raise CorpusError(f"{path}: manifest (data.root) is not a file; expected a CSV with header "
                      "path,speaker,label[,phrase]")
  return path


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
  """(line number, fields) of every non-blank row, the header first."""
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      reader = csv.reader(f)
      rows = []
      for fields in reader:
        if any(x.strip() for x in fields):
          rows.append((reader.line_num, fields))
      return rows
  except UnicodeDecodeError as e:
    raise CorpusError(f"{path}: manifest is not a UTF-8 CSV text file ({e.reason} at byte {e.start})") from e
  except csv.Error as e:
    raise CorpusError(f"{path}: manifest is not a valid CSV file: {e}") from e
  except OSError as e:
    raise CorpusError(f"{path}: cannot read the manifest: {e.strerror or e}") from e


def load(data_cfg: Any) -> Listing:
  """Lists the manifest CSV at `data_cfg.root` (see the module docstring)."""
  classes = tuple(str(c) for c in data_cfg.classes)
  path = _csv_path(data_cfg.root)
  rows = _read_rows(path)
  if not rows:
    raise CorpusError(f"{path}: manifest is empty; expected a header path,speaker,label[,phrase]")
  header_line, header = rows[0]
  names = [h.strip().lower() for h in header]
  missing = [c for c in REQUIRED if c not in names]
  if missing:
    raise CorpusError(f"{path}:{header_line}: manifest header {header} lacks column(s) "
                      f"{', '.join(missing)}; expected path,speaker,label[,phrase]")
  col = {n: names.index(n) for n in (*REQUIRED, "phrase", "subset") if n in names}
  base = path.parent
  log = SkipLog(data_cfg.strict)
  utterances: list[Utterance] = []
  first: dict[str, int] = {}
  for lineno, fields in rows[1:]:
    where = f"{path}:{lineno}"
    if len(fields) != len(header):
      log.skip(where, f"expected {len(header)} fields ({','.join(header)}), found {len(fields)}")
      continue
    rel, speaker, label = (fields[col[c]].strip() for c in REQUIRED)
    phrase = fields[col["phrase"]].strip() if "phrase" in col else ""
    subset_text = fields[col["subset"]].strip() if "subset" in col else ""
    if subset_text.lower() not in SUBSET_VALUES:
      raise CorpusError(f"{where}: subset {subset_text!r} is not one of train, test or empty")
    if not rel or not speaker:
      log.skip(where, "empty path or speaker")
      continue
    if label not in classes:
      log.skip(where, f"unknown label {label!r}; data.classes are {', '.join(classes)}")
      continue
    audio = Path(os.path.abspath(base / os.path.expanduser(rel)))
    if not audio.is_file():
      log.skip(where, f"audio file {audio} does not exist" if not audio.exists()
               else f"{audio} is not a file")
      continue
    if str(audio) in first:
      log.skip(where, f"{audio} is listed twice (first at line {first[str(audio)]})")
      continue
    first[str(audio)] = lineno
    utterances.append(Utterance(utt_id=rel, path=str(audio), speaker=speaker, label=label, phrase=phrase,
                                subset=SUBSET_VALUES[subset_text.lower()]))
  return finish("manifest", path, classes, utterances, log)
