"""IEMOCAP from its release layout (docs/DESIGN.md §7).

  <root>/Session{N}/sentences/wav/<dialog>/<utt_id>.wav
  <root>/Session{N}/dialog/EmoEvaluation/<dialog>.txt      one label line per utterance:
      [START - END]<TAB>UTT_ID<TAB>LABEL<TAB>[V, A, D]
  between them a `%` header, blank lines and annotator lines (`C-E2:<TAB>...`, `A-E3:<TAB>...`);
  beside them sub-folders (`Categorical/`, `Attribute/`, `Self-evaluation/`) and macOS `._*` files.

`<root>` is the folder holding the sessions, or its parent holding `IEMOCAP_full_release/`.
Speaker = session + the first letter of the utterance id's last `_` part (`Ses05M_script01_1b_M012`
-> `Ses05_M`): the dialog name's letter (char 5) is the lead actor, not the speaker.
Improvised dialogs only (`impro` in the name) unless `data.scripted`; labels outside `data.classes`
(fru, sur, fea, dis, oth, xxx, and exc unless `data.merge_exc` counts it as hap) are counted in the
report. A label line naming a missing wav, a malformed label line (file:line) and a wav without a label
are reported skips (errors with `data.strict`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ssa_jax.corpora import SkipLog, corpus_root, finish, is_dir, is_file, is_resource_fork, scandir
from ssa_jax.corpora.base import CorpusError, Listing, Utterance

# The categorical labels of the release (the `LABEL` field of the EmoEvaluation lines).
LABELS = ("neu", "hap", "ang", "sad", "exc", "fru", "sur", "fea", "dis", "oth", "xxx")
_SESSION_DIR = re.compile(r"^Session(\d+)$")
_LABEL_LINE = re.compile(
    r"^\[\s*(?P<start>\d+(?:\.\d*)?)\s*-\s*(?P<end>\d+(?:\.\d*)?)\s*\]\s+(?P<utt>\S+)\s+(?P<label>[A-Za-z]+)"
    r"(?:\s+\[[^\]]*\])?\s*$")
_ANNOTATOR_LINE = re.compile(r"^[A-Za-z]+-[A-Za-z]+\d*\s*:")
_UTT_ID = re.compile(r"^(?P<session>Ses\d+)[FM]_\S+_(?P<gender>[FM])[^_]*$")


def speaker_of(utt_id: str) -> str:
  """`Ses03M_impro05a_F020` -> `Ses03_F` (session + first letter of the last `_` part)."""
  m = _UTT_ID.match(utt_id)
  if m is None:
    raise ValueError(f"not an IEMOCAP utterance id (SesNN[FM]_<dialog>_[FM]...): {utt_id!r}")
  return f"{m['session']}_{m['gender']}"


def is_improvised(dialog: str) -> bool:
  return "impro" in dialog


def find_sessions(root: Path) -> list[Path]:
  """The `SessionN` folders under root (or under root/IEMOCAP_full_release), sorted by N."""
  for base in (root, root / "IEMOCAP_full_release"):
    if not base.is_dir():
      continue
    try:
      entries = scandir(base)
    except OSError as e:
      raise CorpusError(f"{base}: cannot read the IEMOCAP folder: {e.strerror or e}") from e
    sessions = [(int(m[1]), Path(e.path)) for e in entries
                if (m := _SESSION_DIR.match(e.name)) and is_dir(e)]
    if sessions:
      return [p for _, p in sorted(sessions)]
  raise CorpusError(f"{root}: holds no IEMOCAP corpus (expected Session1..Session5/ or "
                    "IEMOCAP_full_release/Session1..5/ with sentences/wav and dialog/EmoEvaluation)")


def _class_of(label: str, classes: tuple[str, ...], merge_exc: bool) -> str | None:
  if merge_exc and label == "exc":
    label = "hap"
  return label if label in classes else None


def _read_labels(path: Path, log: SkipLog) -> list[tuple[str, str, int]]:
  """(utt_id, lowercase label, line number) of every well-formed label line of one EmoEvaluation file."""
  try:
    text = path.read_text(encoding="utf-8", errors="strict")
  except UnicodeDecodeError:
    log.skip(path, "label file is not UTF-8 text")
    return []
  except OSError as e:
    log.skip(path, f"cannot read label file: {e.strerror or e}")
    return []
  out = []
  for lineno, line in enumerate(text.splitlines(), start=1):
    s = line.strip()
    if not s or s.startswith("%") or _ANNOTATOR_LINE.match(s):
      continue
    m = _LABEL_LINE.match(s)
    if m is None or _UTT_ID.match(m["utt"]) is None:
      log.skip(f"{path}:{lineno}", f"malformed label line {s[:80]!r} "
               "(expected '[START - END]<TAB>UTT_ID<TAB>LABEL<TAB>[V, A, D]')")
      continue
    out.append((m["utt"], m["label"].lower(), lineno))
  return out


def _list_wavs(folder: Path, log: SkipLog) -> dict[str, Path]:
  """utt_id -> wav path for the wav files directly in one dialog folder."""
  try:
    entries = scandir(folder)
  except OSError as e:
    log.skip(folder, f"unreadable directory: {e.strerror or e}")
    return {}
  wavs = {}
  for e in entries:
    if is_resource_fork(e.name):
      log.ignore("macOS '._*' files")
    elif e.name.lower().endswith(".wav") and is_file(e):
      wavs[e.name[:-4]] = Path(e.path)
    else:
      log.ignore("non-wav entries in wav folders")
  return wavs


def load(data_cfg: Any) -> Listing:
  """Lists IEMOCAP under `data_cfg.root` (see the module docstring)."""
  classes = tuple(str(c) for c in data_cfg.classes)
  unknown = [c for c in classes if c not in LABELS]
  if unknown:
    raise CorpusError(f"data.classes {unknown} are not IEMOCAP labels; choose from {', '.join(LABELS)}")
  merge_exc = bool(data_cfg.merge_exc)
  if merge_exc and "hap" not in classes:
    raise CorpusError("data.merge_exc=True maps exc to hap, but hap is not in data.classes")
  scripted = bool(data_cfg.scripted)
  root = corpus_root(data_cfg.root, "IEMOCAP folder holding Session1..Session5")
  log = SkipLog(data_cfg.strict)
  utterances: list[Utterance] = []

  for session in find_sessions(root):
    label_dir = session / "dialog" / "EmoEvaluation"
    wav_root = session / "sentences" / "wav"
    try:
      label_entries = scandir(label_dir)
    except OSError as e:
      log.skip(label_dir, f"missing or unreadable label folder: {e.strerror or e}")
      label_entries = []
    # utt_id -> (class, "file:line") for the utterances in scope.
    wanted: dict[str, tuple[str, str]] = {}
    labelled: set[str] = set()
    for e in label_entries:
      if is_resource_fork(e.name):
        log.ignore("macOS '._*' files")
        continue
      if not (e.name.endswith(".txt") and is_file(e)):
        continue  # Categorical/, Attribute/, Self-evaluation/: per-annotator detail, not used
      for utt, label, lineno in _read_labels(Path(e.path), log):
        where = f"{e.path}:{lineno}"
        if utt in labelled:
          log.skip(where, f"{utt} is labelled twice")
          continue
        labelled.add(utt)
        dialog = utt.rsplit("_", 1)[0]
        if not scripted and not is_improvised(dialog):
          log.ignore("utterances of scripted dialogs (data.scripted=False)")
          continue
        cls = _class_of(label, classes, merge_exc)
        if cls is None:
          log.ignore(f"utterances labelled {label} (not in data.classes)")
          continue
        wanted[utt] = (cls, where)

    try:
      dialog_entries = scandir(wav_root)
    except OSError as e:
      log.skip(wav_root, f"missing or unreadable wav folder: {e.strerror or e}")
      dialog_entries = []
    wavs: dict[str, Path] = {}
    for e in dialog_entries:
      if is_resource_fork(e.name):
        log.ignore("macOS '._*' files")
      elif is_dir(e) and (scripted or is_improvised(e.name)):
        wavs.update(_list_wavs(Path(e.path), log))

    for utt, (cls, where) in sorted(wanted.items()):
      wav = wavs.get(utt)
      if wav is None:
        expected = wav_root / utt.rsplit("_", 1)[0] / f"{utt}.wav"
        log.skip(expected, f"labelled at {where} but the wav file is missing")
        continue
      utterances.append(Utterance(utt_id=utt, path=str(wav), speaker=speaker_of(utt), label=cls))
    for utt, wav in sorted(wavs.items()):
      if utt not in labelled:
        log.skip(wav, f"no label line for {utt} in {label_dir}")
  return finish("iemocap", root, classes, utterances, log)
