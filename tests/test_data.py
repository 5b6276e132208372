"""`data.prepare`: bad audio reported (or an error with strict), features cached, reused and rebuilt."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ssa_jax import audio, data, features
from ssa_jax.config import base_config
from ssa_jax.corpora import CorpusError

SR = 16000


def tone(seconds: float, sr: int, freq: float = 300.0, channels: int = 1, seed: int = 0) -> np.ndarray:
  t = np.arange(int(seconds * sr)) / sr
  x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(seed).standard_normal(t.size)
  return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


# name -> (speaker, label, writer); the good ones cover every sample rate and stereo.
GOOD = {
    "g16k_long.wav": ("A", "neu", lambda p: sf.write(p, tone(4.5, SR), SR)),  # 448 frames: 2 segments
    "g8k.wav": ("A", "hap", lambda p: sf.write(p, tone(1.2, 8000, 200), 8000)),
    "g22k.wav": ("B", "ang", lambda p: sf.write(p, tone(1.0, 22050, 400), 22050)),
    "g44k.wav": ("B", "sad", lambda p: sf.write(p, tone(0.8, 44100, 500), 44100)),
    "g48k_stereo.wav": ("A", "sad", lambda p: sf.write(p, tone(1.1, 48000, 250, channels=2), 48000)),
    "g16k_noise.wav": ("B", "neu", lambda p: sf.write(
        p, 0.1 * np.random.default_rng(1).standard_normal(SR), SR)),
}


def _truncated(p: Path):
  sf.write(p, tone(1.0, SR), SR)
  p.write_bytes(p.read_bytes()[:30])


def _nan(p: Path):
  x = tone(1.0, SR).astype(np.float32)
  x[100:110] = np.nan
  sf.write(p, x, SR, subtype="FLOAT")


BAD = {
    "truncated.wav": _truncated,
    "zero_bytes.wav": lambda p: p.write_bytes(b""),
    "text.wav": lambda p: p.write_text("this is not audio\n" * 20),
    "nan.wav": _nan,
    "silent.wav": lambda p: sf.write(p, np.zeros(SR, np.float32), SR),
    "too_short.wav": lambda p: sf.write(p, tone(0.05, SR), SR),
}


def make_corpus(base: Path, bad: bool = True) -> Path:
  (base / "wav").mkdir(parents=True)
  rows = ["path,speaker,label,phrase"]
  for name, (spk, label, write) in GOOD.items():
    write(base / "wav" / name)
    rows.append(f"wav/{name},{spk},{label},{name[:3]}")
  if bad:
    for name, write in BAD.items():
      write(base / "wav" / name)
      rows.append(f"wav/{name},C,neu,bad")
  (base / "corpus.csv").write_text("\n".join(rows) + "\n")
  return base / "corpus.csv"


def make_config(csv_path: Path, cache: Path, backend: str = "librosa", **data_overrides):
  c = base_config()
  c.data.corpus, c.data.root, c.data.cache_dir = "manifest", str(csv_path), str(cache)
  for k, v in data_overrides.items():
    setattr(c.data, k, v)
  c.features.backend = backend
  return c


@pytest.fixture
def calls(monkeypatch):
  """Counts the files whose features `prepare` extracts."""
  counter = {"files": 0}
  real = data._features

  def counting(waves, cfg):
    counter["files"] += len(waves)
    return real(waves, cfg)

  monkeypatch.setattr(data, "_features", counting)
  return counter


def test_prepare_skips_bad_audio_and_keeps_every_good_file(tmp_path):
  csv_path = make_corpus(tmp_path / "corpus")
  ds = data.prepare(make_config(csv_path, tmp_path / "cache"), progress=False)
  wav = tmp_path / "corpus" / "wav"
  assert sorted(ds.utt_ids) == sorted(f"wav/{n}" for n in GOOD)
  skipped = dict(ds.listing.skipped)
  assert set(skipped) == {str(wav / n) for n in BAD}
  expected = {"truncated.wav": "corrupt", "zero_bytes.wav": "empty", "text.wav": "corrupt",
              "nan.wav": "NaN", "silent.wav": "zero", "too_short.wav": "too short"}
  for name, word in expected.items():
    assert word in skipped[str(wav / name)], (name, skipped[str(wav / name)])
  assert ds.listing.counts() == {"A": {"neu": 1, "hap": 1, "ang": 0, "sad": 1},
                                 "B": {"neu": 1, "hap": 0, "ang": 1, "sad": 1}}
  assert ds.classes == ("neu", "hap", "ang", "sad") and ds.speaker_names == ("A", "B")
  for i, uid in enumerate(ds.utt_ids):
    spk, label, _ = GOOD[uid[4:]]
    assert ds.speaker_names[ds.speakers[i]] == spk and ds.classes[ds.labels[i]] == label
    assert ds.phrases[i] == uid[4:7]
  assert ds.segments.shape == (7, 300, 40, 3) and ds.segments.dtype == np.float32
  assert np.bincount(ds.seg_utt).tolist() == [2 if u.endswith("long.wav") else 1 for u in ds.utt_ids]
  assert not ds.segments[~ds.mask].any()


def test_segments_follow_the_reference_features_in_utterance_order(tmp_path):
  """Each utterance's segments are its own features (librosa reference path), frames in order."""
  cfg = make_config(make_corpus(tmp_path / "corpus", bad=False), tmp_path / "cache")
  ds = data.prepare(cfg, progress=False)
  for i, u in enumerate(ds.listing.utterances):
    assert u.utt_id == ds.utt_ids[i]
    ref = features.log_mel_3d(audio.load_audio(u.path, SR), SR, cfg.features)
    got = ds.segments[ds.seg_utt == i][ds.mask[ds.seg_utt == i]]
    assert got.shape == ref.shape  # every frame kept here: 448 = 300 + a 148-frame tail, others < 300
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_jax_backend_matches_librosa_backend(tmp_path):
  csv_path = make_corpus(tmp_path / "corpus", bad=False)
  ref = data.prepare(make_config(csv_path, tmp_path / "c1", "librosa"), progress=False)
  got = data.prepare(make_config(csv_path, tmp_path / "c2", "jax"), progress=False)
  assert got.utt_ids == ref.utt_ids
  np.testing.assert_array_equal(got.mask, ref.mask)
  np.testing.assert_array_equal(got.seg_utt, ref.seg_utt)
  np.testing.assert_allclose(got.segments, ref.segments, rtol=1e-3, atol=2e-3)


def test_cache_reused_and_invalidated(tmp_path, calls):
  csv_path = make_corpus(tmp_path / "corpus")
  cfg = make_config(csv_path, tmp_path / "cache")
  first = data.prepare(cfg, progress=False)
  assert calls["files"] == len(GOOD)
  location = data.cache_location(cfg, data.list_corpus(cfg.data))
  assert location.parent == tmp_path / "cache" and location.name.startswith("features-")
  assert sorted(p.name for p in location.iterdir()) == ["mask.npy", "meta.json", "seg_utt.npy", "segments.npy"]

  again = data.prepare(cfg, progress=False)  # unchanged: read back, nothing extracted
  assert calls["files"] == len(GOOD)
  np.testing.assert_array_equal(again.segments, first.segments)
  # Built or read back, the segments are the cache file memory-mapped read-only (no private copy).
  for ds in (first, again):
    assert isinstance(ds.segments, np.memmap) and not ds.segments.flags.writeable
    assert os.path.samefile(ds.segments.filename, location / "segments.npy")
  assert again.utt_ids == first.utt_ids and again.listing.skipped == first.listing.skipped
  cfg.features.norm_fallback = "global"  # does not change the features
  data.prepare(cfg, progress=False)
  assert calls["files"] == len(GOOD)

  target = tmp_path / "corpus" / "wav" / "g8k.wav"  # a touched file rebuilds
  st = target.stat()
  os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
  data.prepare(cfg, progress=False)
  assert calls["files"] == 2 * len(GOOD)

  cfg.features.n_mels = 20  # a feature setting rebuilds
  small = data.prepare(cfg, progress=False)
  assert calls["files"] == 3 * len(GOOD) and small.segments.shape[2] == 20
  assert len(list((tmp_path / "cache").glob("features-*"))) == 3


def test_subsets_go_through_the_cache(tmp_path, calls):
  csv_path = make_corpus(tmp_path / "corpus", bad=False)
  cfg = make_config(csv_path, tmp_path / "cache")
  plain = data.prepare(cfg, progress=False)
  assert plain.subsets == ("",) * plain.num_utterances
  plain_key = data.cache_key(cfg.features, data.list_corpus(cfg.data))
  # The same files with a subset column: empty/train everywhere keeps the key (and the cache) ...
  rows = csv_path.read_text().splitlines()
  with_col = ["path,speaker,label,phrase,subset"] + [r + ",train" for r in rows[1:]]
  csv_path.write_text("\n".join(with_col) + "\n")
  assert data.cache_key(cfg.features, data.list_corpus(cfg.data)) == plain_key
  # ... marking two utterances "test" changes it: built once, then read back with the subsets.
  held = {"wav/g8k.wav", "wav/g44k.wav"}
  csv_path.write_text("\n".join([with_col[0]] + [r[:-len("train")] + ("test" if r.split(",")[0] in held else "")
                                                  for r in with_col[1:]]) + "\n")
  listing = data.list_corpus(cfg.data)
  assert data.cache_key(cfg.features, listing) != plain_key
  built = data.prepare(cfg, progress=False)
  assert calls["files"] == 2 * len(GOOD)
  meta = json.loads((data.cache_location(cfg, listing) / "meta.json").read_text())
  assert dict(zip(meta["utt_ids"], meta["subsets"])) == dict(zip(built.utt_ids, built.subsets))
  again = data.prepare(cfg, progress=False)
  assert calls["files"] == 2 * len(GOOD)  # read back
  for ds in (built, again):
    assert {u for u, s in zip(ds.utt_ids, ds.subsets) if s == "test"} == held
    assert set(ds.subsets) == {"", "test"} and len(ds.subsets) == ds.num_utterances
    assert [u.subset for u in ds.listing.utterances] == list(ds.subsets)


def test_incomplete_or_tampered_cache_is_rebuilt_never_unpickled(tmp_path, calls):
  cfg = make_config(make_corpus(tmp_path / "corpus", bad=False), tmp_path / "cache")
  ref = data.prepare(cfg, progress=False)
  location = data.cache_location(cfg, data.list_corpus(cfg.data))
  (location / "meta.json").unlink()  # an interrupted write: arrays without the marker
  data.prepare(cfg, progress=False)
  assert calls["files"] == 2 * len(GOOD)
  # An object array in place of the features must not be unpickled: rebuilt instead.
  np.save(location / "segments.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
  rebuilt = data.prepare(cfg, progress=False)
  assert calls["files"] == 3 * len(GOOD)
  np.testing.assert_array_equal(rebuilt.segments, ref.segments)
  meta = json.loads((location / "meta.json").read_text())
  meta["arrays"]["segments"]["shape"][0] += 1  # metadata that disagrees with the arrays
  (location / "meta.json").write_text(json.dumps(meta))
  data.prepare(cfg, progress=False)
  assert calls["files"] == 4 * len(GOOD)
  for name in ("segments", "mask", "seg_utt"):
    np.load(location / f"{name}.npy", allow_pickle=False)
  assert not [p for p in location.iterdir() if "tmp" in p.name]


def test_strict_and_nothing_left(tmp_path):
  csv_path = make_corpus(tmp_path / "corpus")
  with pytest.raises(CorpusError, match=r"wav/(truncated|zero_bytes|text|nan|silent|too_short)\.wav: .*strict"):
    data.prepare(make_config(csv_path, tmp_path / "cache", strict=True), progress=False)
  data.prepare(make_config(csv_path, tmp_path / "cache"), progress=False)
  with pytest.raises(CorpusError, match="strict"):  # a cache built with skips does not hide them
    data.prepare(make_config(csv_path, tmp_path / "cache", strict=True), progress=False)

  only_bad = tmp_path / "bad"
  (only_bad / "wav").mkdir(parents=True)
  rows = ["path,speaker,label"]
  for name, write in BAD.items():
    write(only_bad / "wav" / name)
    rows.append(f"wav/{name},C,neu")
  (only_bad / "bad.csv").write_text("\n".join(rows) + "\n")
  with pytest.raises(CorpusError, match="no utterance left.*6 of 6 files skipped"):
    data.prepare(make_config(only_bad / "bad.csv", tmp_path / "cache"), progress=False)


def test_unknown_backend(tmp_path):
  cfg = make_config(make_corpus(tmp_path / "corpus", bad=False), tmp_path / "cache", backend="torch")
  with pytest.raises(ValueError, match="features.backend 'torch'"):
    data.prepare(cfg, progress=False)


def test_concat_consuming_equals_concatenate_and_empties_the_list():
  rng = np.random.default_rng(0)
  parts = [rng.standard_normal((n, 3, 2)).astype(np.float32) for n in (4, 1, 7)]
  want = np.concatenate(parts)
  got = data._concat_consuming(list(parts))  # pylint: disable=protected-access
  np.testing.assert_array_equal(got, want)
  assert got.dtype == np.float32 and got.shape == (12, 3, 2)
  owned = [np.ones((2, 5), bool), np.zeros((3, 5), bool)]
  out = data._concat_consuming(owned)  # pylint: disable=protected-access
  assert owned == [] and out.shape == (5, 5) and out[:2].all() and not out[2:].any()


_PEAK_SCRIPT = """
import sys
import numpy as np
from ssa_jax import data
def kib(field):
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
parts = [np.full((64, 2**18), i, np.float32) for i in range(4)]   # 4 x 64 MiB, touched
with open("/proc/self/clear_refs", "w") as f:
  f.write("5")  # resets the peak (VmHWM) to the current resident set (Linux >= 4.0)
before = kib("VmRSS")
if kib("VmHWM") - before > 16 * 1024:  # the reset did not take (not a stock Linux kernel)
  print("no-reset")
  sys.exit(0)
out = np.concatenate(parts) if sys.argv[1] == "concatenate" else data._concat_consuming(parts)
assert out.shape == (256, 2**18) and out[-1, 0] == 3
print((kib("VmHWM") - before) / 1024)  # MiB of peak above the parts alone
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux /proc only")
def test_concat_consuming_peak_is_about_one_part_not_a_second_copy():
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  root = Path(__file__).resolve().parents[1]
  growth = {}
  for how in ("concatenate", "consuming"):
    done = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, how], cwd=root, capture_output=True,
                          text=True, check=True, env={**os.environ, "PYTHONPATH": str(root)})
    last = done.stdout.strip().splitlines()[-1]
    if last == "no-reset":
      pytest.skip("/proc/self/clear_refs does not reset the peak RSS here")
    growth[how] = float(last)
  assert growth["concatenate"] > 200  # the second copy: 256 MiB (the check can tell them apart)
  assert growth["consuming"] < 128, growth  # about one 64 MiB part
