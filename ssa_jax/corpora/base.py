"""What every corpus loader returns: a listing of utterances, and what it skipped and why.

A loader never drops a file silently: anything it sees and does not use goes to `skipped` with a
reason (or raises `CorpusError` with `strict=True`).

An utterance's `subset` is "" (training material) or "test" (held out: `train.split="heldout"`
trains on the rest and scores it); the built-in corpus marks one with `data.synthetic.test_*`, a
manifest with its `subset` column.
"""

from __future__ import annotations

import collections
import dataclasses


IGNORED = "ignored "  # reason prefix of summary entries for files left out on purpose (never errors)
SUBSETS = ("", "test")  # Utterance.subset: "" = training material, "test" = held out


class CorpusError(ValueError):
  """A corpus root, label file or manifest that cannot be used; the message names the path."""


@dataclasses.dataclass(frozen=True)
class Utterance:
  utt_id: str  # unique within the corpus
  path: str  # absolute path of the audio file
  speaker: str
  label: str  # one of the configured class names
  phrase: str = ""  # linguistic content id (Att-HACK phrase, synthetic phrase); "" if unknown
  subset: str = ""  # "" = training material, "test" = held out (SUBSETS)


@dataclasses.dataclass
class Listing:
  corpus: str
  root: str
  classes: tuple[str, ...]
  utterances: list[Utterance]
  skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (path, reason)

  @property
  def problems(self) -> list[tuple[str, str]]:
    """Files skipped because something is wrong with them (not the `ignored N ...` summaries)."""
    return [s for s in self.skipped if not s[1].startswith(IGNORED)]

  def counts(self) -> dict[str, dict[str, int]]:
    """speaker -> class -> number of utterances."""
    table: dict[str, dict[str, int]] = collections.defaultdict(lambda: {c: 0 for c in self.classes})
    for u in self.utterances:
      table[u.speaker][u.label] += 1
    return dict(sorted(table.items()))

  def subset_counts(self) -> dict[str, dict[str, int]]:
    """Subset name ("train" for subset "", "test") -> class -> number of utterances; present ones only."""
    table: dict[str, dict[str, int]] = {}
    for u in self.utterances:
      row = table.setdefault("test" if u.subset == "test" else "train", {c: 0 for c in self.classes})
      row[u.label] += 1
    return {k: table[k] for k in ("train", "test") if k in table}

  def report(self) -> str:
    """A speakers x classes count table (with a `test` column and train / test rows when the corpus
    holds a test subset), then the skipped files with their reasons."""
    counts = self.counts()
    has_test = any(u.subset == "test" for u in self.utterances)
    n_test: dict[str, int] = collections.Counter(u.speaker for u in self.utterances if u.subset == "test")
    w = max([len("speaker")] + [len(s) for s in counts])
    cw = max([6] + [len(c) for c in self.classes])
    lines = [f"{self.corpus} corpus at {self.root}: {len(self.utterances)} utterances, "
             f"{len(counts)} speakers, {len(self.problems)} bad files skipped"]
    extra = "test".rjust(cw + 1) if has_test else ""
    lines.append("speaker".ljust(w) + "".join(c.rjust(cw + 1) for c in self.classes) + "total".rjust(cw + 1)
                 + extra)
    totals = {c: 0 for c in self.classes}
    for spk, row in counts.items():
      lines.append(spk.ljust(w) + "".join(str(row[c]).rjust(cw + 1) for c in self.classes)
                   + str(sum(row.values())).rjust(cw + 1)
                   + (str(n_test[spk]).rjust(cw + 1) if has_test else ""))
      for c in self.classes:
        totals[c] += row[c]
    lines.append("total".ljust(w) + "".join(str(totals[c]).rjust(cw + 1) for c in self.classes)
                 + str(sum(totals.values())).rjust(cw + 1)
                 + (str(sum(n_test.values())).rjust(cw + 1) if has_test else ""))
    if has_test:
      for name, row in self.subset_counts().items():
        lines.append(name.ljust(w) + "".join(str(row[c]).rjust(cw + 1) for c in self.classes)
                     + str(sum(row.values())).rjust(cw + 1))
    if self.skipped:
      lines.append(f"skipped or ignored ({len(self.problems)} bad files):")
      lines.extend(f"  {p}: {r}" for p, r in self.skipped)
    return "\n".join(lines)
