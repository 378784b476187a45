"""The `jukejax_codes` dataset: every song of a `jukejax_music` dataset encoded once, one record per song,
written in shards by one process or by every process of a multi-host job, resumable after a kill.

Layout of a built dataset, `<out_dir>/jukejax_codes/1.0.0/`:
  jukejax_codes-{split}.array_record-NNNNN-of-MMMMM   one record per song (fields: `feature_names`), in
                                              song_id order: shard k holds songs [k * S, (k + 1) * S)
  dataset_info.json, features.json            TFDS metadata (`tfds.data_source` / `builder_from_directory`)
  songs-{split}.npz                           record position -> song_id, total_length, length_{level}
  artists.txt, genres.txt                     copied from the audio dataset: ids are its ids
  summary.json                                levels, hops, chunking, counts, the encoder used, timings

While encoding, everything lives in `<out_dir>/.jukejax_codes.incomplete/`: `plan.json` (what is being
encoded, with which encoder), the finished shards, and per shard a `.done/<shard>.json` written after the
shard (the shard's song table and timings; its presence is what marks the shard finished). A rerun with the
same plan keeps the finished shards and encodes only the rest; a different plan (another encoder, levels or
chunking) starts over. Process 0 publishes the dataset, by renaming, only once every shard is done.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib
import shutil
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import file_adapters

from jukejax.config import ConfigError
from jukejax.data.builder import (ARTISTS_FILE, GENRES_FILE, SPLITS, SUMMARY_FILE, DatasetError,
                                  DatasetExistsError, RecordSource, dataset_path, load_source, load_summary)
from jukejax.data.codes.encode import ChunkPlan, EncodeFn, SongReader, check_hops, encode_chunks
from jukejax.data.pipeline import build_song_index, window_table
from jukejax.errors import atomic_write_text

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

NAME = "jukejax_codes"
VERSION = "1.0.0"
SONGS_FILE = "songs-{split}.npz"
CODE_DTYPES = ("int16", "int32")
WORK_DIR = f".{NAME}.incomplete"
PLAN_FILE = "plan.json"
DONE_DIR = ".done"
SHARD_FILE = "{name}-{split}.array_record-{index:05d}-of-{count:05d}"   # TFDS's default shard names
SONGS_PER_SHARD = 64    # ~220 MB of int16 codes at all three levels for 4-minute songs


def codes_key(level: int) -> str:
    """Record field holding the codes of `level`."""
    return f"codes_{level}"


def feature_names(levels: Sequence[int]) -> Tuple[str, ...]:
    """Fields of a codes record for the stored `levels`."""
    return ("song_id", *(codes_key(l) for l in levels), "total_length", "sample_rate", "hop_lengths", "artist",
            "genre", "lyrics", "song_key")


def song_fields(levels: Sequence[int]) -> Tuple[str, ...]:
    """Columns of `songs-{split}.npz`: per record position, the song and its number of codes per level."""
    return ("song_id", "total_length", *(f"length_{l}" for l in levels))


def text(value) -> str:
    """A TFDS Text feature as str (records hold bytes)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def codes_features(levels: Sequence[int], code_dtype: str, n_levels: int) -> tfds.features.FeaturesDict:
    """The TFDS features of a codes record."""
    scalar = lambda: tfds.features.Scalar(dtype=np.int64)  # noqa: E731
    features = {"song_id": scalar()}
    for level in levels:
        # Raw bytes: tokens of a 2048-entry codebook barely compress, and decoding stays a memcpy.
        features[codes_key(level)] = tfds.features.Tensor(shape=(None,), dtype=np.dtype(code_dtype),
                                                          encoding=tfds.features.Encoding.BYTES)
    features.update({
        "total_length": scalar(),
        "sample_rate": scalar(),
        "hop_lengths": tfds.features.Tensor(shape=(n_levels,), dtype=np.int64),
        "artist": scalar(),
        "genre": scalar(),
        "lyrics": tfds.features.Text(),
        "song_key": tfds.features.Text(),
    })
    return tfds.features.FeaturesDict(features)


def codes_path(codes_dir: PathLike) -> pathlib.Path:
    """The versioned folder of a codes dataset; accepts the TFDS data_dir or that folder itself."""
    codes_dir = pathlib.Path(codes_dir)
    if (codes_dir / "dataset_info.json").exists():
        return codes_dir
    return codes_dir / NAME / VERSION


@dataclasses.dataclass(frozen=True)
class _Shard:
    split: str
    index: int
    count: int
    slots: range     # song slots (song_id order) of the split's song index

    @property
    def file(self) -> str:
        return SHARD_FILE.format(name=NAME, split=self.split, index=self.index, count=self.count)


class _ShardEncoder:
    """Encodes the songs of one split's shards: reads their windows, encodes, serializes, writes."""

    def __init__(self, audio_dir: pathlib.Path, split: str, plan: Dict[str, Any], chunks: ChunkPlan,
                 encode_fn: EncodeFn, features: tfds.features.FeaturesDict):
        self.source = load_source(audio_dir, split)
        self.index = build_song_index(window_table(self.source), 1)   # every song, in song_id order
        self.split, self.plan, self.chunks, self.encode_fn, self.features = split, plan, chunks, encode_fn, features
        self.levels = tuple(plan["levels"])
        self.dtype = np.dtype(plan["code_dtype"])

    def song(self, slot: int) -> Tuple[Dict[str, Any], Tuple[int, ...]]:
        index, source = self.index, self.source
        lo, hi = index.first[slot], index.first[slot + 1]
        positions, offsets = index.positions[lo:hi], index.offsets[lo:hi]
        total = int(index.lengths[slot])
        head = source[int(positions[0])]
        zs = encode_chunks(SongReader(source, positions, offsets, total), total, self.encode_fn, self.chunks)
        song_id, key = int(index.song_ids[slot]), text(head["song_key"])
        record = {"song_id": song_id, "total_length": total, "sample_rate": self.plan["sample_rate"],
                  "hop_lengths": np.asarray(self.chunks.hop_lengths, np.int64), "artist": int(head["artist"]),
                  "genre": int(head["genre"]), "lyrics": text(head["lyrics"]), "song_key": key}
        limit = np.iinfo(self.dtype)
        for level in self.levels:
            z = zs[level]
            if z.size and (z.min() < limit.min or z.max() > limit.max):
                raise DatasetError(f"song {key!r} level {level}: codes span [{z.min()}, {z.max()}], outside "
                                   f"code_dtype {self.dtype.name}; use code_dtype='int32'")
            record[codes_key(level)] = z.astype(self.dtype)
        return record, (song_id, total, *(len(zs[l]) for l in self.levels))

    def write(self, shard: _Shard, built: pathlib.Path, done: pathlib.Path) -> None:
        """Encode and write `shard`; its done file, written last, is what marks it finished."""
        began, rows, serialized = time.perf_counter(), [], []
        for slot in shard.slots:
            record, row = self.song(slot)
            rows.append(row)
            serialized.append((None, self.features.serialize_example(record)))
        seconds = time.perf_counter() - began
        tmp = built / f".{shard.file}.tmp"
        file_adapters.ArrayRecordFileAdapter.write_examples(tmp, serialized)
        os.replace(tmp, built / shard.file)
        atomic_write_text(done / f"{shard.file}.json", json.dumps({
            "rows": rows, "bytes": (built / shard.file).stat().st_size, "encode_seconds": round(seconds, 3),
            "audio_seconds": sum(r[1] for r in rows) / self.plan["sample_rate"]}))
        log.info("%s: %d song(s), %.1f s of audio encoded in %.1f s", shard.file, len(rows),
                 sum(r[1] for r in rows) / self.plan["sample_rate"], seconds)


def _default_barrier(process_count: int) -> Callable[[str], None]:
    if process_count == 1:
        return lambda name: None
    from jax.experimental import multihost_utils  # only multi-process encoding needs JAX here
    return multihost_utils.sync_global_devices


def encode_dataset(data_dir: PathLike, out_dir: PathLike, encode_fn: EncodeFn, *, hop_lengths: Sequence[int],
                   levels: Optional[Sequence[int]] = None, splits: Optional[Sequence[str]] = None,
                   chunk_seconds: float = 60.0, context_seconds: float = 1.0, chunk_batch: int = 1,
                   code_dtype: str = "int16", encoder_info: Optional[Mapping[str, Any]] = None,
                   overwrite: bool = False, sample_rate: Optional[int] = None,
                   songs_per_shard: int = SONGS_PER_SHARD, process_index: int = 0, process_count: int = 1,
                   barrier: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Encode every song of the `jukejax_music` dataset at `data_dir` into a `jukejax_codes` dataset at
    `out_dir`; returns the summary (also saved as summary.json).

    `encode_fn(audio)` maps float32 mono audio (chunk_batch, chunk + 2 * context, 1) to one int code array
    (chunk_batch, length // hop) per entry of `hop_lengths` (level 0 first), e.g. a jitted `VQVAE.encode`
    (see `python -m jukejax.data encode`); it is always called with that one shape. `levels` chooses which
    levels are stored (default all); `splits` which splits (default all of the audio dataset). Each song is
    mixed to mono (channel mean) and encoded in chunks of `chunk_seconds` with `context_seconds` of
    neighbouring audio each side (rounded to top hops; see `jukejax.data.codes`), and gets exactly
    `total_length // hop` codes per level. `sample_rate` is the encoder's (default: `encode_fn.config.sr`
    when it has one): a dataset at another rate is refused. `encoder_info` (JSON-able) is recorded in the
    summary and identifies the encoder when a killed run is resumed.

    Multi-process: every one of `process_count` processes calls this with its `process_index` and the same
    arguments; shard k (of all splits, numbered in order) is encoded by process k % process_count, on that
    process's devices (its `encode_fn`). `barrier(name)` must block until every process reached it
    (default: `jax.experimental.multihost_utils.sync_global_devices`); process 0 publishes the dataset once
    all shards are done. The shards and their content do not depend on the number of processes.

    Nothing looks complete before it is: work happens in `<out_dir>/.jukejax_codes.incomplete/` (kept after
    a failure, so that a rerun with the same plan resumes from the finished shards), and the dataset
    appears at `<out_dir>/jukejax_codes/1.0.0` by one rename at the end.
    """
    began = time.perf_counter()
    audio_dir = dataset_path(data_dir)
    audio_summary = load_summary(audio_dir)
    dataset_sr = int(audio_summary["sample_rate"])
    expected_sr = sample_rate if sample_rate is not None else getattr(getattr(encode_fn, "config", None), "sr", None)
    if expected_sr is not None and int(expected_sr) != dataset_sr:
        raise ConfigError(f"the dataset {audio_dir} is at {dataset_sr} Hz but the VQ-VAE encodes vqvae.sr "
                          f"{int(expected_sr)} Hz; rebuild the dataset with --sr {int(expected_sr)}")
    hops = check_hops(hop_lengths)
    levels = tuple(range(len(hops))) if levels is None else tuple(int(l) for l in levels)
    if not levels or len(set(levels)) != len(levels) or any(not 0 <= l < len(hops) for l in levels):
        raise ConfigError(f"levels {levels} must be distinct level indices in [0, {len(hops)}) of hop_lengths "
                          f"{hops}")
    levels = tuple(sorted(levels))
    if code_dtype not in CODE_DTYPES:
        raise ConfigError(f"code_dtype is {code_dtype!r}; expected one of {CODE_DTYPES}")
    available = [s for s in SPLITS if s in audio_summary.get("windows", {})]
    splits = tuple(available) if splits is None else tuple(splits)
    missing = [s for s in splits if s not in available]
    if not splits or missing:
        raise DatasetError(f"split(s) {missing or list(splits)} not in {audio_dir}; available: "
                           f"{', '.join(available)}")
    if isinstance(songs_per_shard, bool) or not isinstance(songs_per_shard, int) or songs_per_shard <= 0:
        raise ConfigError(f"songs_per_shard is {songs_per_shard!r}; expected a positive integer")
    if not 0 <= process_index < process_count:
        raise ConfigError(f"process_index {process_index} must lie in [0, process_count={process_count})")
    chunks = ChunkPlan.from_seconds(hops, dataset_sr, chunk_seconds, context_seconds, chunk_batch)

    out_dir = pathlib.Path(out_dir)
    final = out_dir / NAME / VERSION
    if final.exists() and not overwrite:
        raise DatasetExistsError(final)
    barrier = barrier or _default_barrier(process_count)
    n_songs = {s: int(audio_summary["songs"][s]) for s in splits}
    shards = [_Shard(split, k, math.ceil(n / songs_per_shard),
                     range(k * songs_per_shard, min((k + 1) * songs_per_shard, n)))
              for split, n in n_songs.items() for k in range(math.ceil(n / songs_per_shard))]
    plan = {"source": os.path.abspath(audio_dir), "source_songs": n_songs, "sample_rate": dataset_sr,
            "hop_lengths": list(hops), "levels": list(levels), "code_dtype": code_dtype,
            "chunk_length": chunks.chunk_length, "context_length": chunks.context,
            "songs_per_shard": songs_per_shard, "encoder": json.loads(json.dumps(dict(encoder_info or {})))}
    work = out_dir / WORK_DIR
    built, done = work / NAME / VERSION, work / DONE_DIR

    if process_index == 0:
        _prepare_work_dir(work, plan)
        built.mkdir(parents=True, exist_ok=True)
        done.mkdir(exist_ok=True)
    barrier("jukejax_codes:plan")
    if json.loads((work / PLAN_FILE).read_text(encoding="utf-8")) != plan:
        raise DatasetError(f"process {process_index}: {work / PLAN_FILE} differs from this process's plan; every "
                           f"process must be given the same arguments")

    features = codes_features(levels, code_dtype, len(hops))
    encoders: Dict[str, _ShardEncoder] = {}
    mine = [s for k, s in enumerate(shards) if k % process_count == process_index]
    todo = [s for s in mine if not (done / f"{s.file}.json").exists()]
    if len(todo) < len(mine):
        log.info("process %d: %d of its %d shard(s) already encoded; resuming", process_index,
                 len(mine) - len(todo), len(mine))
    for shard in todo:
        if shard.split not in encoders:
            encoders[shard.split] = _ShardEncoder(audio_dir, shard.split, plan, chunks, encode_fn, features)
        encoders[shard.split].write(shard, built, done)
    barrier("jukejax_codes:encoded")

    if process_index == 0:
        _publish(shards, plan, work, final, audio_dir, features, time.perf_counter() - began)
    barrier("jukejax_codes:published")
    summary = json.loads((final / SUMMARY_FILE).read_text(encoding="utf-8"))
    log.info("encoded %s: songs %s, tokens %s", final, summary["songs"], summary["tokens"])
    return summary


def _prepare_work_dir(work: pathlib.Path, plan: Dict[str, Any]) -> None:
    """Keep a previous run's work folder if it was encoding the same plan; otherwise start an empty one."""
    plan_file = work / PLAN_FILE
    if work.exists():
        try:
            previous = json.loads(plan_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous == plan:
            return
        log.warning("%s holds an unfinished encoding of another plan (encoder, levels or chunking); starting "
                    "over", work)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    atomic_write_text(plan_file, json.dumps(plan, indent=2) + "\n")


def _publish(shards: Sequence[_Shard], plan: Dict[str, Any], work: pathlib.Path, final: pathlib.Path,
             audio_dir: pathlib.Path, features, wall_seconds: float) -> None:
    """Process 0, after every process finished: tables, TFDS metadata, summary, then one rename into place."""
    built, done = work / NAME / VERSION, work / DONE_DIR
    missing = [s.file for s in shards if not (done / f"{s.file}.json").exists()]
    if missing:
        raise DatasetError(f"{len(missing)} shard(s) were not encoded (first: {missing[0]}); rerun to resume")
    levels = plan["levels"]
    fields = song_fields(levels)
    tables, split_infos, timing = {}, [], {"encode_seconds": 0.0, "audio_seconds": 0.0}
    for split in plan["source_songs"]:
        infos = [json.loads((done / f"{s.file}.json").read_text(encoding="utf-8"))
                 for s in shards if s.split == split]
        rows = [row for info in infos for row in info["rows"]]
        tables[split] = {name: np.asarray([r[j] for r in rows], np.int64) for j, name in enumerate(fields)}
        np.savez(built / SONGS_FILE.format(split=split), **tables[split])
        split_infos.append(tfds.core.SplitInfo(name=split, shard_lengths=[len(i["rows"]) for i in infos],
                                               num_bytes=sum(i["bytes"] for i in infos)))
        for key in timing:
            timing[key] += sum(i[key] for i in infos)
    for name in (ARTISTS_FILE, GENRES_FILE):
        shutil.copyfile(audio_dir / name, built / name)
    tfds.folder_dataset.write_metadata(
        data_dir=built, features=features, split_infos=split_infos, check_data=False,
        description="VQ-VAE codes of whole songs per level with artist, genre and lyrics labels "
                    "(jukejax.data.codes).")
    sr = plan["sample_rate"]
    summary = {
        "name": NAME, "version": VERSION, "dataset_dir": os.path.abspath(final),
        "source": plan["source"], "sample_rate": sr, "hop_lengths": plan["hop_lengths"],
        "levels": levels, "code_dtype": plan["code_dtype"], "chunk_length": plan["chunk_length"],
        "context_length": plan["context_length"], "songs_per_shard": plan["songs_per_shard"],
        "encoder": plan["encoder"],
        "songs": {s: int(len(t["song_id"])) for s, t in tables.items()},
        "tokens": {s: {str(l): int(t[f"length_{l}"].sum()) for l in levels} for s, t in tables.items()},
        "hours": {s: float(t["total_length"].sum()) / sr / 3600.0 for s, t in tables.items()},
        # Summed over shards (each timed by the process that encoded it, across resumed runs): the
        # encoders' busy time, so audio_seconds / encode_seconds is one process's rate.
        "encode_seconds": round(timing["encode_seconds"], 3),
        "wall_seconds": round(wall_seconds, 3),
    }
    atomic_write_text(built / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        os.rename(final, work / "replaced")
    os.rename(built, final)
    shutil.rmtree(work, ignore_errors=True)


class CodesSource(RecordSource):
    """Random access to one split's song records of a codes dataset.

    `songs` maps each of `song_fields(levels)` to an int64 array indexed by record position. Records are
    dicts with `feature_names(levels)` (`codes_{l}` int16/int32 (length_l,); `lyrics`, `song_key` bytes).
    """
    _kind = "songs"

    def __init__(self, codes_dir: PathLike, split: str = "train"):
        path = codes_path(codes_dir)
        summary_path = path / SUMMARY_FILE
        if not summary_path.exists():
            raise DatasetError(f"no {NAME} dataset at {path}; build one with `python -m jukejax.data encode`")
        self.summary = json.loads(summary_path.read_text(encoding="utf-8"))
        self.levels = tuple(int(l) for l in self.summary["levels"])
        self.hop_lengths = tuple(int(h) for h in self.summary["hop_lengths"])
        self.sample_rate = int(self.summary["sample_rate"])
        super().__init__(path, split, SONGS_FILE.format(split=split), song_fields(self.levels),
                         self.summary["songs"])
        self.songs = self.table

    def lengths(self, level: int) -> np.ndarray:
        """Codes per record at `level`."""
        if level not in self.levels:
            raise DatasetError(f"level {level} is not stored in {self.path}; stored levels: {self.levels}")
        return self.songs[f"length_{level}"]


def load_codes_source(codes_dir: PathLike, split: str = "train") -> CodesSource:
    """Open one split of a dataset written by `encode_dataset` for random access."""
    return CodesSource(codes_dir, split)
