"""From a corpus listing to raw segment features, with a hash-keyed on-disk cache (docs/DESIGN.md §1, §2, §9).

  prepare(config, progress=True) -> Dataset

lists the corpus (`corpora.list_corpus(config.data)`), loads every file (`audio.load_audio`, in a
thread pool), extracts 3-D log-Mel features (`config.features.backend`: "jax" -> the batched
`features.extract`, "librosa" -> the per-file reference `features.log_mel_3d`), cuts them into
segments (`features.segment`) and caches the result under

  <config.data.cache_dir>/features-<key>/   segments.npy (N,T,M,C) float32, mask.npy (N,T) bool,
                                            seg_utt.npy (N,) int32, meta.json (written last)

`key` hashes the feature config and the file list (utterance ids, paths, speakers, labels, phrases,
subsets where not "", sizes and modification times), so a changed file, subset or feature setting
rebuilds and an unchanged corpus is read back (a corpus without a test subset keeps the key it had
before subsets existed). Arrays are read with `allow_pickle=False` and the metadata is JSON: nothing is unpickled.
Every file is written atomically (`ssa_jax.io.write_with`: temporary name, fsync, `os.replace`);
`meta.json` comes last and marks a complete cache, so an interrupted run is rebuilt, never taken
for a whole one.

A file `load_audio` rejects (AudioError) is a reported skip in `Dataset.listing.skipped` (a
`CorpusError` with `config.data.strict`); no utterance left is a `CorpusError`.
Normalisation is not cached: it depends on the fold (docs/DESIGN.md §2).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import chex
import numpy as np
import tqdm

from ssa_jax import audio, features
from ssa_jax import io as io_lib
from ssa_jax.corpora import IGNORED, list_corpus
from ssa_jax.corpora.base import CorpusError, Listing, Utterance

FORMAT_VERSION = 1  # bump when the cache layout or the feature code changes what is stored
_CHUNK = 256  # utterances whose audio is in memory at once
_ARRAYS = {"segments": np.float32, "mask": np.bool_, "seg_utt": np.int32}
# config.features fields that do not change the cached (unnormalised) features.
_NOT_HASHED = ("norm_fallback",)
_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Raw segment features of a corpus and per-utterance metadata (docs/ARCHITECTURE.md).

  segments  float32 (N, T, M, C)  raw log-Mel + Δ + ΔΔ; padded frames are 0
  mask      bool    (N, T)        real frames
  seg_utt   int32   (N,)          index of each segment's utterance
  utt_ids   tuple[str] (U,)
  labels    int32   (U,)          index into classes
  speakers  int32   (U,)          index into speaker_names
  phrases   tuple[str] (U,)
  subsets   tuple[str] (U,)   "" (training material) or "test" (held out), `Utterance.subset`
  listing   the listing of the utterances kept, with every skipped file and its reason
  """
  segments: np.ndarray
  mask: np.ndarray
  seg_utt: np.ndarray
  utt_ids: tuple[str, ...]
  labels: np.ndarray
  speakers: np.ndarray
  phrases: tuple[str, ...]
  subsets: tuple[str, ...]
  classes: tuple[str, ...]
  speaker_names: tuple[str, ...]
  listing: Listing

  def __post_init__(self):
    n, u = self.segments.shape[0], len(self.utt_ids)
    chex.assert_rank(self.segments, 4)
    chex.assert_shape(self.mask, self.segments.shape[:2])
    chex.assert_shape(self.seg_utt, (n,))
    chex.assert_shape([self.labels, self.speakers], (u,))
    chex.assert_equal(len(self.phrases), u)
    chex.assert_equal(len(self.subsets), u)
    chex.assert_type([self.segments, self.mask, self.seg_utt, self.labels, self.speakers],
                     [np.float32, bool, np.int32, np.int32, np.int32])

  @property
  def num_utterances(self) -> int:
    return len(self.utt_ids)


# --------------------------------------------------------------------------- cache key and location


def _feature_settings(features_cfg: Any) -> dict[str, Any]:
  d = features_cfg.to_dict() if hasattr(features_cfg, "to_dict") else dict(features_cfg)
  return {k: v for k, v in sorted(d.items()) if k not in _NOT_HASHED}


def cache_key(features_cfg: Any, listing: Listing) -> str:
  """Hash of the feature config and the file list (ids, paths, metadata, sizes, mtimes)."""
  files = []
  for u in listing.utterances:
    try:
      st = os.stat(u.path)
      size, mtime = st.st_size, st.st_mtime_ns
    except OSError:
      size, mtime = -1, -1  # vanished since listing: loading reports it
    entry = [u.utt_id, u.path, u.speaker, u.label, u.phrase]
    if u.subset:  # only when set: the keys of corpora without a test subset stay as they were
      entry.append(u.subset)
    files.append(entry + [size, mtime])
  payload = {"version": FORMAT_VERSION, "features": _feature_settings(features_cfg),
             "corpus": listing.corpus, "classes": list(listing.classes), "files": files}
  blob = json.dumps(payload, sort_keys=True, default=str).encode()
  return hashlib.sha256(blob).hexdigest()[:20]


def cache_location(config: Any, listing: Listing) -> Path:
  """`<config.data.cache_dir>/features-<cache_key>`: where `prepare` keeps this listing's features."""
  base = Path(os.path.expanduser(str(config.data.cache_dir)))
  return base / f"features-{cache_key(config.features, listing)}"


# --------------------------------------------------------------------------- building


def _load(path: str, sample_rate: int) -> np.ndarray | Exception:
  try:
    return audio.load_audio(path, sample_rate)
  except (audio.AudioError, OSError) as e:
    return e


def _reason(err: Exception, path: str) -> str:
  """The error message without its leading `path: ` (the skip list already names the file)."""
  msg = str(err)
  return msg[len(path) + 2:] if msg.startswith(f"{path}: ") else msg


def _features(waves: Sequence[np.ndarray], features_cfg: Any) -> list[np.ndarray]:
  return features.compute(waves, features_cfg)  # a seam for the tests (they count the files)


def _build(config: Any, listing: Listing, progress: bool):
  """(segments, mask, seg_utt, kept utterances, audio skips) for every file of the listing."""
  fcfg = config.features
  if str(fcfg.backend) not in features.BACKENDS:  # before any file is read
    raise ValueError(f"unknown features.backend {fcfg.backend!r}; choose one of "
                     f"{', '.join(features.BACKENDS)}")
  sr, win = int(fcfg.sample_rate), int(fcfg.win_length)
  strict = bool(config.data.strict)
  utts = listing.utterances
  chunks = [utts[i:i + _CHUNK] for i in range(0, len(utts), _CHUNK)]
  segs, masks, seg_utt, kept, skipped = [], [], [], [], []

  def skip(u: Utterance, reason: str, cause: Exception | None = None):
    if strict:
      raise CorpusError(f"{u.path}: {reason} (data.strict=True makes every skip an error)") from cause
    skipped.append((u.path, reason))

  workers = max(1, min(8, os.cpu_count() or 1))
  with concurrent.futures.ThreadPoolExecutor(workers) as pool, \
       tqdm.tqdm(total=len(utts), desc="features", unit="file", disable=not progress) as bar:
    submit = lambda chunk: [pool.submit(_load, u.path, sr) for u in chunk]  # noqa: E731
    pending = submit(chunks[0]) if chunks else []
    try:
      for k, chunk in enumerate(chunks):
        loaded = [f.result() for f in pending]
        pending = submit(chunks[k + 1]) if k + 1 < len(chunks) else []  # read ahead while extracting
        good, waves, chunk_segs, chunk_masks = [], [], [], []
        for u, w in zip(chunk, loaded):
          if isinstance(w, Exception):
            skip(u, _reason(w, u.path), w)
          elif w.shape[0] < win:
            skip(u, f"too short for one analysis window ({w.shape[0]} < {win} samples)")
          else:
            good.append(u)
            waves.append(w)
        for u, f in zip(good, _features(waves, fcfg)):
          s, m = features.segment(f, int(fcfg.segment_frames), int(fcfg.min_segment_frames))
          if s.shape[0] == 0:
            skip(u, f"no segment: {f.shape[0]} frames")
            continue
          seg_utt.append(np.full(s.shape[0], len(kept), np.int32))
          kept.append(u)
          chunk_segs.append(np.asarray(s, np.float32))
          chunk_masks.append(np.asarray(m, bool))
        if chunk_segs:  # one array per chunk: few large blocks that _concat_consuming frees
          segs.append(np.concatenate(chunk_segs))
          masks.append(np.concatenate(chunk_masks))
        del waves, loaded, chunk_segs, chunk_masks
        bar.update(len(chunk))
    finally:
      for f in pending:
        f.cancel()
  if not kept:
    shown = "; ".join(f"{p}: {r}" for p, r in skipped[:3])
    raise CorpusError(f"{listing.root}: no utterance left after loading audio "
                      f"({len(skipped)} of {len(utts)} files skipped: {shown})")
  return (_concat_consuming(segs), _concat_consuming(masks), np.concatenate(seg_utt), kept,
          skipped)


def _concat_consuming(parts: list[np.ndarray]) -> np.ndarray:
  """np.concatenate(parts) along axis 0 that empties `parts` as it copies.

  The output is allocated uninitialised (its pages are committed as they are written) and each
  part is dropped once copied, so the peak is about one copy of the data plus one part, not the
  parts and the concatenation side by side (2x: `bin.prepare`'s peak grew at twice the feature
  bytes per hour of audio, benchmarks/RESULTS.md).
  """
  total = sum(p.shape[0] for p in parts)
  out = np.empty((total,) + parts[0].shape[1:], parts[0].dtype)
  pos = 0
  for i in range(len(parts)):
    part, parts[i] = parts[i], None
    out[pos:pos + part.shape[0]] = part
    pos += part.shape[0]
    del part
  parts.clear()
  return out


# --------------------------------------------------------------------------- cache files


def _write_cache(location: Path, key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
  location.mkdir(parents=True, exist_ok=True)
  marker = location / "meta.json"
  if marker.exists():
    marker.unlink()  # no longer complete while the arrays are rewritten
  for leftover in location.glob(io_lib.TEMP_GLOB):  # temporary files of a killed run
    leftover.unlink(missing_ok=True)
  for name, arr in arrays.items():
    io_lib.write_with(location / f"{name}.npy", lambda f, a=arr: np.save(f, a, allow_pickle=False))
  meta = dict(meta, version=FORMAT_VERSION, key=key,
              arrays={n: {"shape": list(a.shape), "dtype": np.dtype(a.dtype).str} for n, a in arrays.items()})
  io_lib.write_json(marker, meta, indent=1)


def _load_array(location: Path, name: str) -> np.ndarray:
  """One cached array. The segments (nearly all of the bytes) are memory-mapped read-only: a fold
  reads the rows it normalises from the page cache, so it never holds a private raw copy beside
  its normalised one (benchmarks/RESULTS.md, "Memory as the corpus grows")."""
  return np.load(location / f"{name}.npy", allow_pickle=False,
                 mmap_mode="r" if name == "segments" else None)


def _read_cache(location: Path, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
  """The cached arrays and metadata, or None if absent, incomplete, stale or inconsistent."""
  marker = location / "meta.json"
  if not marker.is_file():
    return None
  try:
    meta = json.loads(marker.read_text())
    if meta.get("version") != FORMAT_VERSION or meta.get("key") != key:
      raise ValueError("version or key mismatch")
    arrays = {}
    for name, dtype in _ARRAYS.items():
      arr = _load_array(location, name)
      want = meta["arrays"][name]
      if list(arr.shape) != want["shape"] or arr.dtype != np.dtype(dtype):
        raise ValueError(f"{name}.npy has shape {arr.shape} {arr.dtype}, expected {want}")
      arrays[name] = arr
    u, seg_utt = len(meta["utt_ids"]), arrays["seg_utt"]
    if not isinstance(meta["skipped"], list):
      raise ValueError("malformed skipped list")
    if u == 0 or seg_utt.size == 0 or int(seg_utt.min()) < 0 or int(seg_utt.max()) >= u:
      raise ValueError("segment -> utterance index out of range")
    return arrays, meta
  except (OSError, ValueError, KeyError, TypeError) as e:
    _log.warning("feature cache %s is unreadable (%s); rebuilding it", location, e)
    return None


# --------------------------------------------------------------------------- prepare


def prepare(config: Any, progress: bool = True, *, listing: Listing | None = None) -> Dataset:
  """The corpus of `config.data` as raw segment features, from the cache when it is up to date.

  Args:
    config: the full config (`config.data`, `config.features`).
    progress: tqdm progress bar while extracting (and a line while generating the built-in corpus).
    listing: an already made `list_corpus(config.data)` (listed here if None).

  Raises:
    CorpusError: broken corpus, no utterance left, or any skip with `config.data.strict`.
    ValueError: an unknown `features.backend`.
  """
  if listing is None:
    listing = list_corpus(config.data, progress=progress)
  key = cache_key(config.features, listing)
  location = cache_location(config, listing)
  by_id = {u.utt_id: u for u in listing.utterances}
  cached = _read_cache(location, key)
  if cached is not None and (not all(i in by_id for i in cached[1]["utt_ids"]) or cached[1].get(
      "subsets", [""] * len(cached[1]["utt_ids"])) != [by_id[i].subset for i in cached[1]["utt_ids"]]):
    cached = None
  if cached is None:
    segs, mask, seg_utt, kept, skipped = _build(config, listing, progress)
    arrays = {"segments": segs, "mask": mask, "seg_utt": seg_utt}
    meta = {"corpus": listing.corpus, "root": listing.root, "classes": list(listing.classes),
            "utt_ids": [u.utt_id for u in kept], "skipped": [list(s) for s in skipped]}
    if any(u.subset for u in kept):
      meta["subsets"] = [u.subset for u in kept]
    _write_cache(location, key, arrays, meta)
    # Drop the freshly built segments for the memory-mapped cache file, as a cache hit returns.
    arrays["segments"] = _load_array(location, "segments")
  else:
    arrays, meta = cached
    kept = [by_id[i] for i in meta["utt_ids"]]
    skipped = [tuple(s) for s in meta["skipped"]]
    if skipped and config.data.strict:
      path, reason = skipped[0]
      raise CorpusError(f"{path}: {reason} (data.strict=True makes every skip an error)")

  # Per-file problems first (the loader's, then audio), the loader's "ignored N ..." summaries last.
  ignored = [s for s in listing.skipped if s[1].startswith(IGNORED)]
  problems = [s for s in listing.skipped if not s[1].startswith(IGNORED)] + [tuple(s) for s in skipped]
  classes = tuple(listing.classes)
  speaker_names = tuple(sorted({u.speaker for u in kept}))
  spk_index = {s: i for i, s in enumerate(speaker_names)}
  cls_index = {c: i for i, c in enumerate(classes)}
  return Dataset(
      segments=arrays["segments"], mask=arrays["mask"], seg_utt=arrays["seg_utt"],
      utt_ids=tuple(u.utt_id for u in kept),
      labels=np.array([cls_index[u.label] for u in kept], np.int32),
      speakers=np.array([spk_index[u.speaker] for u in kept], np.int32),
      phrases=tuple(u.phrase for u in kept), subsets=tuple(u.subset for u in kept), classes=classes,
      speaker_names=speaker_names,
      listing=Listing(corpus=listing.corpus, root=listing.root, classes=classes, utterances=kept,
                      skipped=problems + ignored))
