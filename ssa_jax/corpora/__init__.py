"""Corpus loaders: each returns a `Listing` of utterances plus what it skipped and why.

  list_corpus(data_cfg) -> Listing     dispatches on `data_cfg.corpus`:
    "synthetic"  the built-in generated corpus (`synthetic.generate`, written under data.cache_dir)
    "iemocap"    `iemocap.load`, root = the folder holding Session1..Session5 (or its parent)
    "atthack"    `atthack.load`, root = anywhere above the Att-HACK wav files
    "manifest"   `manifest.load`, root = the CSV file (`path,speaker,label[,phrase]`)

The helpers below are shared by the loaders: `SkipLog` collects per-file problems (a reported skip, or a
`CorpusError` with `data.strict=True`) and counts of files deliberately left out (`._*` files, classes
that are not configured, scripted dialogs, ...), which are listed in the report but never an error.
"""

from __future__ import annotations

import collections
import importlib
import os
from pathlib import Path
from typing import Any, Callable

from ssa_jax.corpora.base import IGNORED, CorpusError, Listing, Utterance

__all__ = ["CORPORA", "CorpusError", "Listing", "Utterance", "list_corpus"]

# corpus name -> module (in this package) with a `load(data_cfg) -> Listing` function.
CORPORA = ("synthetic", "iemocap", "atthack", "manifest")


def list_corpus(data_cfg: Any, progress: bool | Callable[[str], None] = False) -> Listing:
  """Lists the corpus named by `data_cfg.corpus` (see the module docstring).

  `progress`: a line while the built-in corpus is generated (first use only): to this callable,
  or logged at INFO if True (`synthetic.generate`).
  """
  name = str(data_cfg.corpus).strip().lower()
  if name not in CORPORA:
    raise CorpusError(f"unknown corpus {data_cfg.corpus!r} (data.corpus); choose one of {', '.join(CORPORA)}")
  if name == "synthetic":
    synthetic = importlib.import_module("ssa_jax.corpora.synthetic")
    cache_dir = os.path.expanduser(str(data_cfg.cache_dir))
    return synthetic.generate(data_cfg.synthetic, cache_dir, tuple(data_cfg.classes), progress=progress)
  return importlib.import_module(f"ssa_jax.corpora.{name}").load(data_cfg)


# --------------------------------------------------------------------------- shared helpers


class SkipLog:
  """Collects skipped files with their reasons, and counts of deliberately ignored files.

  `skip` records a problem with one file (a reported skip; `CorpusError` when strict).
  `ignore` counts files left out on purpose (never an error); `entries` lists both for `Listing.skipped`.
  """

  def __init__(self, strict: bool):
    self.strict = bool(strict)
    self.skipped: list[tuple[str, str]] = []
    self.ignored: collections.Counter[str] = collections.Counter()

  def skip(self, path: str | os.PathLike, reason: str) -> None:
    if self.strict:
      raise CorpusError(f"{path}: {reason} (data.strict=True makes every skip an error)")
    self.skipped.append((str(path), reason))

  def ignore(self, what: str, n: int = 1) -> None:
    self.ignored[what] += n

  def entries(self, root: str | os.PathLike) -> list[tuple[str, str]]:
    return self.skipped + [(str(root), f"{IGNORED}{n} {what}") for what, n in sorted(self.ignored.items())]


def is_resource_fork(name: str) -> bool:
  """macOS `._*` AppleDouble files that archives made on a Mac carry beside every real file."""
  return name.startswith("._")


def corpus_root(root: Any, what: str) -> Path:
  """`data.root` as an absolute Path to an existing, readable directory, else a CorpusError naming it."""
  text = str(root or "").strip()
  if not text:
    raise CorpusError(f"data.root is empty: set --config.data.root to the {what}")
  path = Path(os.path.abspath(os.path.expanduser(text)))
  if not path.exists():
    raise CorpusError(f"{path}: corpus root does not exist (data.root, the {what})")
  if not path.is_dir():
    raise CorpusError(f"{path}: corpus root is not a directory (data.root, the {what})")
  try:
    scandir(path)
  except OSError as e:
    raise CorpusError(f"{path}: cannot read the corpus root: {e.strerror or e}") from e
  return path


def scandir(path: str | os.PathLike) -> list[os.DirEntry]:
  """The entries of a directory, sorted by name (raises OSError, e.g. PermissionError)."""
  with os.scandir(path) as it:
    return sorted(it, key=lambda e: e.name)


def is_dir(entry: os.DirEntry) -> bool:
  try:
    return entry.is_dir()
  except OSError:
    return False


def is_file(entry: os.DirEntry) -> bool:
  try:
    return entry.is_file()
  except OSError:
    return False


def finish(corpus: str, root: Path, classes: tuple[str, ...], utterances: list[Utterance],
           log: SkipLog) -> Listing:
  """The Listing, sorted by utterance id; a CorpusError if nothing usable was found."""
  utterances = sorted(utterances, key=lambda u: u.utt_id)
  listing = Listing(corpus=corpus, root=str(root), classes=tuple(classes), utterances=utterances,
                    skipped=log.entries(root))
  if not utterances:
    reasons = "; ".join(f"{p}: {r}" for p, r in listing.skipped[:5])
    more = f" (+{len(listing.skipped) - 5} more)" if len(listing.skipped) > 5 else ""
    raise CorpusError(f"{root}: no usable {corpus} utterance for classes {', '.join(classes)}"
                      + (f"; {reasons}{more}" if reasons else ""))
  return listing
