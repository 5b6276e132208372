"""Corpus loaders on small trees in the exact on-disk layouts of IEMOCAP, Att-HACK and a manifest CSV."""

from __future__ import annotations

import os
from pathlib import Path

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
import soundfile as sf

from ssa_jax.config import ATTITUDES, base_config
from ssa_jax.corpora import CorpusError, atthack, iemocap, list_corpus, manifest


def write_wav(path: Path, seconds: float = 0.2, sr: int = 16000, freq: float = 220.0) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  t = np.arange(int(seconds * sr)) / sr
  sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
  return path


def data_cfg(**overrides):
  cfg = base_config().data
  for k, v in overrides.items():
    setattr(cfg, k, v)
  return cfg


# --------------------------------------------------------------------------- IEMOCAP

# session -> dialog -> [(utterance id, label)]
IEMOCAP_TREE = {
    1: {"Ses01F_impro01": [("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_F001", "hap"),
                           ("Ses01F_impro01_M000", "ang"), ("Ses01F_impro01_M001", "sad"),
                           ("Ses01F_impro01_F002", "exc"), ("Ses01F_impro01_M002", "fru"),
                           ("Ses01F_impro01_F003", "xxx")],
        "Ses01M_script01_1": [("Ses01M_script01_1_F000", "neu"), ("Ses01M_script01_1_M000", "sad")]},
    3: {"Ses03M_impro05a": [("Ses03M_impro05a_F020", "ang"), ("Ses03M_impro05a_M001", "neu")],
        "Ses03F_impro06": [("Ses03F_impro06_FXX1", "sad")]},
    5: {"Ses05M_script01_1b": [("Ses05M_script01_1b_M012", "hap")]},
}


def label_block(utt: str, label: str, k: int) -> str:
  return (f"[{6.29 + k:.4f} - {8.23 + k:.4f}]\t{utt}\t{label}\t[2.5000, 3.0000, 2.0000]\n"
          "C-E2:\tNeutral;\t()\nC-E3:\tNeutral; Frustration;\t(comment)\n"
          "A-E3:\tval 3; act 2; dom  2;\t()\nA-F1:\tval 3; act 3; dom  3;\t()\n\n")


def make_iemocap(base: Path, tree=IEMOCAP_TREE, extra_lines: dict[str, str] | None = None) -> Path:
  """Writes the release layout under `base`, with `._*` files and annotator sub-folders beside it."""
  for session, dialogs in tree.items():
    sdir = base / f"Session{session}"
    emo = sdir / "dialog" / "EmoEvaluation"
    for sub in ("Categorical", "Attribute", "Self-evaluation"):
      (emo / sub).mkdir(parents=True, exist_ok=True)
    for dialog, utts in dialogs.items():
      text = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
      text += "".join(label_block(u, lab, k) for k, (u, lab) in enumerate(utts))
      text += (extra_lines or {}).get(dialog, "")
      (emo / f"{dialog}.txt").write_text(text)
      (emo / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07Mac OS X        ")
      (emo / "Categorical" / f"{dialog}_e1_cat.txt").write_text(f"{utts[0][0]} :Neutral state; ()\n")
      for u, _ in utts:
        write_wav(sdir / "sentences" / "wav" / dialog / f"{u}.wav")
        (sdir / "sentences" / "wav" / dialog / f"._{u}.wav").write_bytes(b"\x00\x05\x16\x07")
  return base


def counts_of(listing):
  return {spk: {c: n for c, n in row.items() if n} for spk, row in listing.counts().items()}


def problems(listing):
  """Skipped entries that are per-file problems (not the 'ignored N ...' summary lines)."""
  return [(p, r) for p, r in listing.skipped if not r.startswith("ignored ")]


def test_iemocap_counts_improvised_only_by_default(tmp_path):
  listing = iemocap.load(data_cfg(corpus="iemocap", root=str(make_iemocap(tmp_path))))
  assert listing.classes == ("neu", "hap", "ang", "sad")
  assert counts_of(listing) == {
      "Ses01_F": {"neu": 1, "hap": 1}, "Ses01_M": {"ang": 1, "sad": 1},
      "Ses03_F": {"ang": 1, "sad": 1}, "Ses03_M": {"neu": 1}}
  assert problems(listing) == []
  ignored = {r for _, r in listing.skipped}
  assert "ignored 3 utterances of scripted dialogs (data.scripted=False)" in ignored
  for label in ("exc", "fru", "xxx"):
    assert f"ignored 1 utterances labelled {label} (not in data.classes)" in ignored
  assert any("macOS '._*' files" in r for r in ignored)
  for u in listing.utterances:
    assert os.path.isabs(u.path) and u.path.endswith(f"/{u.utt_id}.wav") and os.path.isfile(u.path)
    assert "._" not in u.path


def test_iemocap_scripted_and_exc_merge(tmp_path):
  root = str(make_iemocap(tmp_path))
  listing = iemocap.load(data_cfg(corpus="iemocap", root=root, scripted=True))
  assert counts_of(listing) == {
      "Ses01_F": {"neu": 2, "hap": 1}, "Ses01_M": {"ang": 1, "sad": 2},
      "Ses03_F": {"ang": 1, "sad": 1}, "Ses03_M": {"neu": 1}, "Ses05_M": {"hap": 1}}
  merged = iemocap.load(data_cfg(corpus="iemocap", root=root, merge_exc=True))
  assert counts_of(merged)["Ses01_F"] == {"neu": 1, "hap": 2}
  assert {u.utt_id: u.label for u in merged.utterances}["Ses01F_impro01_F002"] == "hap"
  assert not any("labelled exc" in r for _, r in merged.skipped)


@pytest.mark.parametrize("utt, speaker", [
    ("Ses03M_impro05a_F020", "Ses03_F"), ("Ses05M_script01_1b_M012", "Ses05_M"),
    ("Ses03F_impro06_FXX1", "Ses03_F"), ("Ses01F_impro01_M000", "Ses01_M")])
def test_iemocap_speaker_is_last_part_not_lead_actor(tmp_path, utt, speaker):
  assert iemocap.speaker_of(utt) == speaker
  listing = iemocap.load(data_cfg(corpus="iemocap", root=str(make_iemocap(tmp_path)), scripted=True))
  assert {u.utt_id: u.speaker for u in listing.utterances}[utt] == speaker


def test_iemocap_full_release_parent_and_classes_subset(tmp_path):
  make_iemocap(tmp_path / "IEMOCAP_full_release")
  listing = list_corpus(data_cfg(corpus="iemocap", root=str(tmp_path), classes=("ang", "sad")))
  assert listing.root == str(tmp_path)
  assert counts_of(listing) == {"Ses01_M": {"ang": 1, "sad": 1}, "Ses03_F": {"ang": 1, "sad": 1}}
  with pytest.raises(CorpusError, match="not IEMOCAP labels"):
    iemocap.load(data_cfg(corpus="iemocap", root=str(tmp_path), classes=ATTITUDES))


def test_iemocap_bad_labels_and_missing_files_are_reported(tmp_path):
  extra = {"Ses01F_impro01": "[12.0 - ]\tSes01F_impro01_F009\tneu\t[2.0, 2.0, 2.0]\n"
                             "[13.0 - 14.0]\tSes01F_impro01_F010\tang\t[2.0, 2.0, 2.0]\n"}
  root = make_iemocap(tmp_path, extra_lines=extra)
  wav_dir = root / "Session1" / "sentences" / "wav" / "Ses01F_impro01"
  write_wav(wav_dir / "Ses01F_impro01_F011.wav")  # a wav without a label
  (wav_dir / "Ses01F_impro01_F001.wav").unlink()  # a label naming a missing wav
  listing = iemocap.load(data_cfg(corpus="iemocap", root=str(root)))
  label_file = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
  lines = label_file.read_text().splitlines()
  bad_line = 1 + lines.index("[12.0 - ]\tSes01F_impro01_F009\tneu\t[2.0, 2.0, 2.0]")
  f010_line = 1 + next(i for i, s in enumerate(lines) if "F010" in s)
  got = dict(problems(listing))
  assert set(got) == {f"{label_file}:{bad_line}", str(wav_dir / "Ses01F_impro01_F001.wav"),
                      str(wav_dir / "Ses01F_impro01_F010.wav"), str(wav_dir / "Ses01F_impro01_F011.wav")}
  assert "malformed label line" in got[f"{label_file}:{bad_line}"]
  assert "wav file is missing" in got[str(wav_dir / "Ses01F_impro01_F010.wav")]
  assert f"{label_file}:{f010_line}" in got[str(wav_dir / "Ses01F_impro01_F010.wav")]
  assert "no label line" in got[str(wav_dir / "Ses01F_impro01_F011.wav")]
  # Every good file is still there.
  assert counts_of(listing) == {"Ses01_F": {"neu": 1}, "Ses01_M": {"ang": 1, "sad": 1},
                                "Ses03_F": {"ang": 1, "sad": 1}, "Ses03_M": {"neu": 1}}
  with pytest.raises(CorpusError, match="strict"):
    iemocap.load(data_cfg(corpus="iemocap", root=str(root), strict=True))


def test_iemocap_strict_passes_on_clean_tree(tmp_path):
  listing = iemocap.load(data_cfg(corpus="iemocap", root=str(make_iemocap(tmp_path)), strict=True))
  assert len(listing.utterances) == 7


def test_iemocap_unreadable_folder(tmp_path, monkeypatch):
  root = make_iemocap(tmp_path)
  blocked = root / "Session3" / "sentences" / "wav" / "Ses03M_impro05a"
  real_scandir = os.scandir

  def scandir(path="."):
    if Path(path) == blocked:
      raise PermissionError(13, "Permission denied", str(path))
    return real_scandir(path)

  monkeypatch.setattr(os, "scandir", scandir)
  listing = iemocap.load(data_cfg(corpus="iemocap", root=str(root)))
  got = dict(problems(listing))
  assert "unreadable directory" in got[str(blocked)]
  assert "wav file is missing" in got[str(blocked / "Ses03M_impro05a_F020.wav")]
  assert counts_of(listing)["Ses03_F"] == {"sad": 1}
  with pytest.raises(CorpusError, match="Session3.*strict"):
    iemocap.load(data_cfg(corpus="iemocap", root=str(root), strict=True))
  monkeypatch.setattr(os, "scandir", lambda path=".": (_ for _ in ()).throw(PermissionError(13, "denied")))
  with pytest.raises(CorpusError, match="cannot read the corpus root"):
    iemocap.load(data_cfg(corpus="iemocap", root=str(root)))


@pytest.mark.parametrize("loader", [iemocap.load, atthack.load])
def test_broken_roots(tmp_path, loader):
  name = "iemocap" if loader is iemocap.load else "atthack"
  with pytest.raises(CorpusError, match="does not exist"):
    loader(data_cfg(corpus=name, root=str(tmp_path / "nope")))
  (tmp_path / "file.txt").write_text("x")
  with pytest.raises(CorpusError, match="not a directory"):
    loader(data_cfg(corpus=name, root=str(tmp_path / "file.txt")))
  (tmp_path / "empty" / "sub").mkdir(parents=True)
  with pytest.raises(CorpusError, match=f"{tmp_path / 'empty'}: holds no"):
    loader(data_cfg(corpus=name, root=str(tmp_path / "empty")))
  with pytest.raises(CorpusError, match="data.root is empty"):
    loader(data_cfg(corpus=name, root=""))


# --------------------------------------------------------------------------- Att-HACK

ATTHACK_FILES = {
    "Att-HACK_SLR88/wav/F01/deep/er": ["F01_a1_s001_v01", "F01_a2_s001_v01", "F01_a3_s002_v02",
                                       "F01_a4_s100_v05"],
    "Att-HACK_SLR88/wav/M08": ["M08_a1_s001_v01", "M08_a1_s001_v02", "M08_a3_s050_v03"],
}


def make_atthack(base: Path) -> Path:
  for folder, names in ATTHACK_FILES.items():
    for n in names:
      write_wav(base / folder / f"{n}.wav")
      (base / folder / f"._{n}.wav").write_bytes(b"\x00\x05\x16\x07")
  (base / "Att-HACK_SLR88" / "README.txt").write_text("Att-HACK")
  return base


def test_atthack_nested_counts_and_phrases(tmp_path):
  listing = atthack.load(data_cfg(corpus="atthack", root=str(make_atthack(tmp_path))))
  assert listing.classes == ATTITUDES
  assert counts_of(listing) == {"F01": dict.fromkeys(ATTITUDES, 1), "M08": {"friendly": 2, "dominant": 1}}
  assert problems(listing) == []
  by_id = {u.utt_id: u for u in listing.utterances}
  assert by_id["F01_a4_s100_v05"].phrase == "s100" and by_id["F01_a4_s100_v05"].label == "seductive"
  assert by_id["M08_a3_s050_v03"].phrase == "s050" and by_id["M08_a3_s050_v03"].speaker == "M08"
  ignored = {r for _, r in listing.skipped}
  assert "ignored 7 macOS '._*' files" in ignored and "ignored 1 non-wav files" in ignored
  custom = ("w", "x", "y", "z")
  listing2 = list_corpus(data_cfg(corpus="atthack", root=str(tmp_path), attitudes=custom))
  assert listing2.classes == custom and counts_of(listing2)["M08"] == {"w": 2, "y": 1}
  with pytest.raises(CorpusError, match="attitudes"):
    atthack.load(data_cfg(corpus="atthack", root=str(tmp_path), attitudes=("a", "b")))


def test_atthack_bad_names_duplicates_and_unreadable(tmp_path, monkeypatch):
  root = make_atthack(tmp_path)
  bad = [write_wav(root / "extra" / n) for n in ("bad_name.wav", "F01_a5_s001_v01.wav", "F01_a1_s1_v01.wav")]
  dup = write_wav(root / "copy" / "F01_a1_s001_v01.wav")
  blocked = root / "Att-HACK_SLR88" / "wav" / "M08"
  real_scandir = os.scandir
  monkeypatch.setattr(os, "scandir", lambda p=".": (_ for _ in ()).throw(PermissionError(13, "denied"))
                      if Path(p) == blocked else real_scandir(p))
  listing = atthack.load(data_cfg(corpus="atthack", root=str(root)))
  got = dict(problems(listing))
  assert set(got) == {*map(str, bad), str(dup), str(blocked)}
  assert all("does not follow the Att-HACK pattern" in got[str(b)] for b in bad)
  assert "duplicate of" in got[str(dup)] and "unreadable directory" in got[str(blocked)]
  assert counts_of(listing) == {"F01": dict.fromkeys(ATTITUDES, 1)}
  with pytest.raises(CorpusError, match="strict"):
    atthack.load(data_cfg(corpus="atthack", root=str(root), strict=True))


# --------------------------------------------------------------------------- manifest


def make_manifest(base: Path, rows: list[str], header: str = "path,speaker,label,phrase") -> Path:
  write_wav(base / "audio" / "a.wav")
  write_wav(base / "audio" / "b.wav")
  write_wav(base / "elsewhere" / "c.wav")
  csv_path = base / "lists" / "corpus.csv"
  csv_path.parent.mkdir(parents=True, exist_ok=True)
  csv_path.write_text("\n".join([header, *rows]) + "\n")
  return csv_path


def test_manifest_good_and_bad_rows(tmp_path):
  c = str(tmp_path / "elsewhere" / "c.wav")
  csv_path = make_manifest(tmp_path, [
      "../audio/a.wav,spk1,neu,p1",  # line 2
      "../audio/b.wav,spk1,hap,p2",
      f"{c},spk2,sad,p1",  # absolute path
      "../audio/a.wav,spk3,ang,p1",  # line 5: listed twice
      "../audio/missing.wav,spk2,ang,p3",  # line 6
      "../audio/b.wav,spk2,joy,p3",  # line 7: unknown label
      "../audio/b.wav,spk2",  # line 8: wrong field count
      "",
      ",spk2,ang,p1",  # line 10: empty path
  ])
  listing = manifest.load(data_cfg(corpus="manifest", root=str(csv_path)))
  assert counts_of(listing) == {"spk1": {"neu": 1, "hap": 1}, "spk2": {"sad": 1}}
  assert {u.path for u in listing.utterances} == {
      str(tmp_path / "audio" / "a.wav"), str(tmp_path / "audio" / "b.wav"), c}
  assert {u.phrase for u in listing.utterances} == {"p1", "p2"}
  got = dict(listing.skipped)
  assert set(got) == {f"{csv_path}:{n}" for n in (5, 6, 7, 8, 10)}
  assert "listed twice" in got[f"{csv_path}:5"]
  assert "does not exist" in got[f"{csv_path}:6"] and "missing.wav" in got[f"{csv_path}:6"]
  assert "unknown label 'joy'" in got[f"{csv_path}:7"]
  assert "expected 4 fields" in got[f"{csv_path}:8"]
  with pytest.raises(CorpusError, match=f"{csv_path}:5.*strict"):
    list_corpus(data_cfg(corpus="manifest", root=str(csv_path), strict=True))


def test_manifest_broken_files(tmp_path):
  no_label = make_manifest(tmp_path, ["../audio/a.wav,spk1"], header="path,speaker")
  with pytest.raises(CorpusError, match=f"{no_label}:1: .*lacks column.*label"):
    manifest.load(data_cfg(corpus="manifest", root=str(no_label)))
  no_phrase = make_manifest(tmp_path, ["spk1,../audio/a.wav,neu"], header=" Speaker, path ,LABEL")
  listing = manifest.load(data_cfg(corpus="manifest", root=str(no_phrase)))
  assert [(u.speaker, u.label, u.phrase) for u in listing.utterances] == [("spk1", "neu", "")]
  binary = tmp_path / "bin.csv"
  binary.write_bytes(b"\xff\xfe\x00\x81" * 10)
  with pytest.raises(CorpusError, match="not a UTF-8 CSV"):
    manifest.load(data_cfg(corpus="manifest", root=str(binary)))
  (tmp_path / "empty.csv").write_text("")
  with pytest.raises(CorpusError, match="empty"):
    manifest.load(data_cfg(corpus="manifest", root=str(tmp_path / "empty.csv")))
  with pytest.raises(CorpusError, match="not a file"):
    manifest.load(data_cfg(corpus="manifest", root=str(tmp_path)))
  with pytest.raises(CorpusError, match="does not exist"):
    manifest.load(data_cfg(corpus="manifest", root=str(tmp_path / "nope.csv")))
  only_bad = make_manifest(tmp_path, ["../audio/zz.wav,spk1,neu,p"])
  with pytest.raises(CorpusError, match="no usable manifest utterance.*zz.wav"):
    manifest.load(data_cfg(corpus="manifest", root=str(only_bad)))


def test_manifest_subset_column(tmp_path):
  csv_path = make_manifest(tmp_path, [
      "../audio/a.wav,spk1,neu,test",
      "../audio/b.wav,spk1,hap,Train",
      "../elsewhere/c.wav,spk2,sad,",
  ], header="path,speaker,label,subset")
  listing = manifest.load(data_cfg(corpus="manifest", root=str(csv_path)))
  assert {u.utt_id: u.subset for u in listing.utterances} == {
      "../audio/a.wav": "test", "../audio/b.wav": "", "../elsewhere/c.wav": ""}
  assert listing.subset_counts() == {"train": {"neu": 0, "hap": 1, "ang": 0, "sad": 1},
                                     "test": {"neu": 1, "hap": 0, "ang": 0, "sad": 0}}
  report = listing.report()
  assert "test" in report.splitlines()[1] and report.splitlines()[-1].split() == ["test", "1", "0", "0", "0", "1"]
  # Without the column every utterance is training material, and the report has no test column.
  plain = manifest.load(data_cfg(corpus="manifest", root=str(make_manifest(tmp_path, ["../audio/a.wav,spk1,neu,p"]))))
  assert [u.subset for u in plain.utterances] == [""] and "test" not in plain.report().split(": ", 1)[1]
  assert plain.subset_counts() == {"train": {"neu": 1, "hap": 0, "ang": 0, "sad": 0}}


@pytest.mark.parametrize("value", ["valid", "heldout", "1"])
def test_manifest_bad_subset_is_an_error_naming_file_row_and_value(tmp_path, value):
  csv_path = make_manifest(tmp_path, ["../audio/a.wav,spk1,neu,p1,train", f"../audio/b.wav,spk1,hap,p2,{value}"],
                           header="path,speaker,label,phrase,subset")
  with pytest.raises(CorpusError, match=f"{csv_path}:3: subset '{value}' is not one of train, test"):
    manifest.load(data_cfg(corpus="manifest", root=str(csv_path)))


def test_list_corpus_dispatch(tmp_path):
  with pytest.raises(CorpusError, match="unknown corpus 'timit'.*synthetic, iemocap, atthack, manifest"):
    list_corpus(data_cfg(corpus="timit"))
  csv_path = make_manifest(tmp_path, ["../audio/a.wav,spk1,neu,p1"])
  assert list_corpus(data_cfg(corpus="manifest", root=str(csv_path))).corpus == "manifest"
  assert list_corpus(data_cfg(corpus="atthack", root=str(make_atthack(tmp_path / "ah")))).corpus == "atthack"


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(speaker=st.text(st.characters(whitelist_categories=("Lu", "Ll", "Nd")), min_size=1, max_size=6),
                  attitude=st.integers(1, 4), phrase=st.integers(1, 100), rep=st.integers(1, 5))
def test_atthack_parse_name_roundtrip(speaker, attitude, phrase, rep):
  name = f"{speaker}_a{attitude}_s{phrase:03d}_v{rep:02d}.wav"
  assert atthack.parse_name(name) == (speaker, attitude, f"s{phrase:03d}", rep)
  assert atthack.parse_name(name.replace(f"_a{attitude}_", f"_a{attitude + 4}_")) is None
  assert atthack.parse_name(f"{speaker}_x_{name}") is None
