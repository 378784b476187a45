"""VQ-VAE codes, encoded once per song, and the Grain pipeline of prior training windows over them
(labels as the original's `data/labels.py` and `SimplePrior.get_y`; windows as its `data/files_dataset.py`).

The original trains priors on raw audio: every step draws a random `sample_length` chunk and encodes it
through the frozen VQ-VAE. jukejax encodes every song of an audio dataset once (`encode_dataset`) into a
second TFDS ArrayRecord dataset, `jukejax_codes`, so prior and upsampler training never touch audio or
the VQ-VAE. Codes are ~8% of the audio's size (all three levels of the released model: 7.2k int16 tokens per
second against 88.2k int16 stereo samples), so one record holds a whole song and random access reads it
whole: a 4-minute song is ~3.5 MB, about one 24 s audio window. Store only the levels a prior reads
(`levels=`: (2,) for a top prior, (0, 1) for the level-0 upsampler) to read less per example.

Differences from encoding on the fly, both deliberate:

- Boundaries. A song is encoded in chunks of `chunk_seconds` (a multiple of the top hop, so bounded memory
  and one compiled shape), each with `context_seconds` of real neighbouring audio on both sides that is
  encoded and then dropped. The encoder is a non-causal conv stack padded with zeros, so a code depends on
  the audio within its receptive field: with context at least the receptive field, chunked codes equal the
  codes of the whole song encoded at once (except the song's first and last few codes: zero audio beyond the
  song is not quite the encoder's zero padding of its inner layers); codes closer than that to a chunk edge
  see zeros instead of the song. The original encodes each random training window by itself, so the codes
  near *every* window edge (both ends of each of the 8192-token contexts) see zero padding, and the same
  moment of a song gets slightly different codes depending on where the window falls. Pre-encoded windows
  are slices of one fixed code sequence per song instead: what sampling sees when it encodes a primed
  prompt or decodes its own codes.
- Mixing. Songs are mixed to mono with the channel mean; a per-example channel blend (`aug_blend`) of the
  original cannot be applied to fixed codes.

Layout of a built dataset, `<out_dir>/jukejax_codes/1.0.0/`:
  jukejax_codes-{train,test}.array_record-*   one record per song (fields: `feature_names`)
  dataset_info.json, features.json            TFDS metadata
  songs-{split}.npz                           record position -> song_id, total_length, length_{level}
  artists.txt, genres.txt                     copied from the audio dataset: ids are its ids
  summary.json                                levels, hops, chunking, counts, the encoder used
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib
import shutil
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import grain
import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import hashing as tfds_hashing

from jukejax import audio as audio_lib
from jukejax.config import ConfigError
from jukejax.data.builder import (ARTISTS_FILE, GENRES_FILE, SPLITS, SUMMARY_FILE, DatasetError, DatasetExistsError, RecordSource,
                                  dataset_path, load_source, load_summary)
from jukejax.data.pipeline import build_song_index, stack_examples, window_table

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
EncodeFn = Callable[[np.ndarray], Sequence[Any]]

NAME = "jukejax_codes"
VERSION = "1.0.0"
SONGS_FILE = "songs-{split}.npz"
CODE_DTYPES = ("int16", "int32")
PRIOR_BATCH_FIELDS = ("z", "z_cond", "y", "song_id", "start")
_INT16_SCALE = np.float32(32768.0)


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


# ---------------------------------------------------------------------------------------------------------
# Encoding one song in chunks


def _check_hops(hop_lengths: Sequence[int]) -> Tuple[int, ...]:
    hops = tuple(int(h) for h in hop_lengths)
    if not hops or any(h <= 0 for h in hops):
        raise ConfigError(f"hop_lengths {tuple(hop_lengths)} must be positive integers, one per level")
    for lo, hi in zip(hops[:-1], hops[1:]):
        if hi % lo:
            raise ConfigError(f"hop_lengths {hops}: each level's hop must be a multiple of the one below "
                              f"({hi} is not a multiple of {lo})")
    return hops


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    """How songs are cut for the encoder: every call sees `(chunk_batch, chunk_length + 2 * context, 1)`;
    of each chunk's codes only those of its middle `chunk_length` samples are kept."""
    hop_lengths: Tuple[int, ...]
    chunk_length: int
    context: int = 0
    chunk_batch: int = 1

    def __post_init__(self):
        top = _check_hops(self.hop_lengths)[-1]
        if self.chunk_length <= 0 or self.chunk_length % top:
            raise ConfigError(f"chunk_length {self.chunk_length} is not a positive multiple of the top hop {top}")
        if self.context < 0 or self.context % top:
            raise ConfigError(f"context {self.context} is not a multiple (>= 0) of the top hop {top}")
        if self.chunk_batch <= 0:
            raise ConfigError(f"chunk_batch is {self.chunk_batch}; expected a positive integer")

    @classmethod
    def from_seconds(cls, hop_lengths: Sequence[int], sample_rate: int, chunk_seconds: float,
                     context_seconds: float = 0.0, chunk_batch: int = 1) -> "ChunkPlan":
        """Chunk length rounded down (but to at least one top hop), context rounded up, to top hops."""
        top = _check_hops(hop_lengths)[-1]
        if not (math.isfinite(chunk_seconds) and chunk_seconds > 0):
            raise ConfigError(f"chunk_seconds is {chunk_seconds!r}; expected a positive number")
        if not (math.isfinite(context_seconds) and context_seconds >= 0):
            raise ConfigError(f"context_seconds is {context_seconds!r}; expected a number >= 0")
        chunk = max(1, int(chunk_seconds * sample_rate) // top) * top
        context = int(math.ceil(context_seconds * sample_rate / top)) * top
        return cls(tuple(hop_lengths), chunk, context, chunk_batch)

    @property
    def input_length(self) -> int:
        return self.chunk_length + 2 * self.context


def _encode_chunks(read: Callable[[int, int], np.ndarray], total: int, encode_fn: EncodeFn, plan: ChunkPlan
                   ) -> List[np.ndarray]:
    """Codes (T // hop,) int64 per level of a song of `total` samples; `read(a, b)` returns its float32 mono
    samples [a, b) with zeros outside [0, total)."""
    hops, chunk, ctx = plan.hop_lengths, plan.chunk_length, plan.context
    starts = list(range(0, total, chunk)) or [0]
    out: List[List[np.ndarray]] = [[] for _ in hops]
    for b in range(0, len(starts), plan.chunk_batch):
        group = starts[b:b + plan.chunk_batch]
        x = np.zeros((plan.chunk_batch, plan.input_length, 1), np.float32)
        for i, a in enumerate(group):
            x[i, :, 0] = read(a - ctx, a + chunk + ctx)
        zs = encode_fn(x)
        if len(zs) != len(hops):
            raise ValueError(f"encode_fn returned {len(zs)} code arrays; expected one per level of hop_lengths "
                             f"{hops}")
        for level, (z, hop) in enumerate(zip(zs, hops)):
            z = np.asarray(z)
            want = (plan.chunk_batch, plan.input_length // hop)
            if z.shape != want:
                raise ValueError(f"encode_fn level {level}: codes of shape {z.shape} for audio "
                                 f"{x.shape}; expected {want} (hop {hop})")
            keep = z[:len(group), ctx // hop:(ctx + chunk) // hop]
            out[level].append(keep.reshape(-1).astype(np.int64))
    return [np.concatenate(parts)[:total // hop] for parts, hop in zip(out, hops)]


def encode_song(audio: np.ndarray, encode_fn: EncodeFn, plan: ChunkPlan) -> List[np.ndarray]:
    """Codes (T // hop_l,) int64 of each level of a mono song `audio` (T,) or (T, 1) float32, encoded in the
    chunks of `plan` (see the module docstring for the boundary effect). The tail is zero-padded to a whole
    chunk, so `encode_fn` only ever sees one shape; codes of a partial last hop are dropped."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim == 2 and audio.shape[1] == 1:
        audio = audio[:, 0]
    if audio.ndim != 1:
        raise ValueError(f"encode_song: audio has shape {audio.shape}; expected (T,) or (T, 1) mono")
    total = len(audio)

    def read(a: int, b: int) -> np.ndarray:
        out = np.zeros(b - a, np.float32)
        lo, hi = max(a, 0), min(b, total)
        if hi > lo:
            out[lo - a:hi - a] = audio[lo:hi]
        return out

    return _encode_chunks(read, total, encode_fn, plan)


class _SongReader:
    """Reads [a, b) of one song of an audio dataset as float32 mono, from the stored windows it spans."""

    def __init__(self, source, positions: np.ndarray, offsets: np.ndarray, total: int):
        self.source, self.positions, self.offsets, self.total = source, positions, offsets, total

    def __call__(self, a: int, b: int) -> np.ndarray:
        out = np.zeros(b - a, np.float32)
        lo, hi = max(a, 0), min(b, self.total)
        if hi <= lo:
            return out
        k0 = int(np.searchsorted(self.offsets, lo, side="right")) - 1
        k1 = int(np.searchsorted(self.offsets, hi - 1, side="right")) - 1
        pcm = np.concatenate([self.source[int(p)]["audio"] for p in self.positions[k0:k1 + 1]], axis=0)
        start = lo - int(self.offsets[k0])
        x = audio_lib.to_mono(pcm[start:start + hi - lo].astype(np.float32) / _INT16_SCALE)
        out[lo - a:hi - a] = x[:, 0]
        return out


# ---------------------------------------------------------------------------------------------------------
# The codes dataset


@dataclasses.dataclass
class _EncodePlan:
    audio_dir: pathlib.Path            # the audio dataset's versioned folder
    splits: Tuple[str, ...]
    levels: Tuple[int, ...]
    chunks: ChunkPlan
    code_dtype: str
    encode_fn: EncodeFn
    sample_rate: int
    n_songs: Dict[str, int]


class JukejaxCodes(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """One record per song: its VQ-VAE codes at each stored level with the audio dataset's labels.

    Only instantiated by `encode_dataset`; `tfds.data_source("jukejax_codes", data_dir=...)` or
    `load_codes_source` read a built copy from its files.
    """

    RELEASE_NOTES = {VERSION: "VQ-VAE codes of a jukejax_music dataset, one record per song."}
    VERSION = tfds.core.Version(VERSION)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # As JukejaxMusic: TFDS's package lookup needs the `importlib_resources` backport otherwise.
        return epath.Path(__file__)

    def __init__(self, *, plan: _EncodePlan, **kwargs):
        self._plan = plan   # before super().__init__, which calls _info()
        # Per split, in generation order: record key and its song_fields row.
        self.songs: Dict[str, List[Tuple[str, Tuple[int, ...]]]] = {}
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        plan = self._plan
        scalar = lambda: tfds.features.Scalar(dtype=np.int64)  # noqa: E731
        features = {"song_id": scalar()}
        for level in plan.levels:
            # Raw bytes: tokens of a 2048-entry codebook barely compress, and decoding stays a memcpy.
            features[codes_key(level)] = tfds.features.Tensor(shape=(None,), dtype=np.dtype(plan.code_dtype),
                                                              encoding=tfds.features.Encoding.BYTES)
        features.update({
            "total_length": scalar(),
            "sample_rate": scalar(),
            "hop_lengths": tfds.features.Tensor(shape=(len(plan.chunks.hop_lengths),), dtype=np.int64),
            "artist": scalar(),
            "genre": scalar(),
            "lyrics": tfds.features.Text(),
            "song_key": tfds.features.Text(),
        })
        return tfds.core.DatasetInfo(
            builder=self,
            description="VQ-VAE codes of whole songs per level with artist, genre and lyrics labels "
                        "(jukejax.data.codes).",
            features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(split) for split in self._plan.splits}

    def _generate_examples(self, split: str) -> Iterator[Tuple[str, Dict[str, Any]]]:
        plan = self._plan
        source = load_source(plan.audio_dir, split)
        index = build_song_index(window_table(source), 1)   # every song, in song_id order
        hops, dtype = plan.chunks.hop_lengths, np.dtype(plan.code_dtype)
        limit = np.iinfo(dtype)
        rows = self.songs.setdefault(split, [])
        n = len(index.song_ids)
        for slot in range(n):
            lo, hi = index.first[slot], index.first[slot + 1]
            positions, offsets = index.positions[lo:hi], index.offsets[lo:hi]
            total = int(index.lengths[slot])
            head = source[int(positions[0])]
            began = time.perf_counter()
            zs = _encode_chunks(_SongReader(source, positions, offsets, total), total, plan.encode_fn, plan.chunks)
            song_id, key = int(index.song_ids[slot]), _text(head["song_key"])
            record = {"song_id": song_id, "total_length": total, "sample_rate": plan.sample_rate,
                      "hop_lengths": np.asarray(hops, np.int64), "artist": int(head["artist"]),
                      "genre": int(head["genre"]), "lyrics": _text(head["lyrics"]), "song_key": key}
            for level in plan.levels:
                z = zs[level]
                if z.size and (z.min() < limit.min or z.max() > limit.max):
                    raise DatasetError(f"song {key!r} level {level}: codes span [{z.min()}, {z.max()}], outside "
                                       f"code_dtype {dtype.name}; use code_dtype='int32'")
                record[codes_key(level)] = z.astype(dtype)
            rows.append((key, (song_id, total, *(len(zs[l]) for l in plan.levels))))
            log.info("%s %d/%d %s: %.1f s of audio encoded in %.1f s", split, slot + 1, n, key,
                     total / plan.sample_rate, time.perf_counter() - began)
            yield key, record


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def codes_path(codes_dir: PathLike) -> pathlib.Path:
    """The versioned folder of a codes dataset; accepts the TFDS data_dir or that folder itself."""
    codes_dir = pathlib.Path(codes_dir)
    if (codes_dir / "dataset_info.json").exists():
        return codes_dir
    return codes_dir / NAME / VERSION


def _scan_songs(source, levels: Sequence[int]) -> Dict[str, np.ndarray]:
    rows = []
    for i in range(len(source)):
        r = source[i]
        rows.append((int(r["song_id"]), int(r["total_length"]), *(len(r[codes_key(l)]) for l in levels)))
    return {name: np.asarray([row[j] for row in rows], np.int64).reshape(-1)
            for j, name in enumerate(song_fields(levels))}


def _song_tables(built: pathlib.Path, builder: JukejaxCodes, levels: Sequence[int]
                 ) -> Dict[str, Dict[str, np.ndarray]]:
    """Record position -> song_fields per split. TFDS stores a split sorted by md5(split name + key) (see
    builder._predicted_order); the prediction is checked on up to 65 records and replaced by a full scan if
    it is wrong."""
    reader = tfds.builder_from_directory(built)
    fields = song_fields(levels)
    tables = {}
    for split, rows in builder.songs.items():
        hasher = tfds_hashing.Hasher(split)
        order = sorted(range(len(rows)), key=lambda i: hasher.hash_key(rows[i][0]))
        table = {name: np.asarray([rows[i][1][j] for i in order], np.int64) for j, name in enumerate(fields)}
        source = reader.as_data_source(split)
        probes = np.unique(np.linspace(0, len(order) - 1, min(len(order), 65)).astype(np.int64))
        stored = (_scan_songs([source[int(p)] for p in probes], levels) if len(source) == len(order) else None)
        if stored is None or any(not np.array_equal(stored[k], table[k][probes]) for k in fields):
            log.warning("split %s: stored record order differs from the predicted one; scanning all %d records",
                        split, len(source))
            table = _scan_songs(source, levels)
        tables[split] = table
    return tables


def encode_dataset(data_dir: PathLike, out_dir: PathLike, encode_fn: EncodeFn, *, hop_lengths: Sequence[int],
                   levels: Optional[Sequence[int]] = None, splits: Optional[Sequence[str]] = None,
                   chunk_seconds: float = 60.0, context_seconds: float = 1.0, chunk_batch: int = 1,
                   code_dtype: str = "int16", encoder_info: Optional[Mapping[str, Any]] = None,
                   overwrite: bool = False) -> Dict[str, Any]:
    """Encode every song of the `jukejax_music` dataset at `data_dir` into a `jukejax_codes` dataset at
    `out_dir`; returns the summary (also saved as summary.json).

    `encode_fn(audio)` maps float32 mono audio (chunk_batch, chunk + 2 * context, 1) to one int code array
    (chunk_batch, length // hop) per entry of `hop_lengths` (level 0 first), e.g. a jitted `VQVAE.encode`
    (see `python -m jukejax.data encode`); it is always called with that one shape. `levels` chooses which
    levels are stored (default all); `splits` which splits (default all of the audio dataset). Each song is
    mixed to mono (channel mean) and encoded in chunks of `chunk_seconds` with `context_seconds` of
    neighbouring audio each side (rounded to top hops; see the module docstring), and gets exactly
    `total_length // hop` codes per level. `encoder_info` (JSON-able) is recorded in the summary.

    All-or-nothing like `build_dataset`: written under a hidden temporary folder in `out_dir`, renamed into
    `<out_dir>/jukejax_codes/1.0.0` once complete.
    """
    audio_dir = dataset_path(data_dir)
    audio_summary = load_summary(audio_dir)
    sample_rate = int(audio_summary["sample_rate"])
    hops = _check_hops(hop_lengths)
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
    chunks = ChunkPlan.from_seconds(hops, sample_rate, chunk_seconds, context_seconds, chunk_batch)

    out_dir = pathlib.Path(out_dir)
    final = out_dir / NAME / VERSION
    if final.exists() and not overwrite:
        raise DatasetExistsError(final)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = _EncodePlan(audio_dir, splits, levels, chunks, code_dtype, encode_fn, sample_rate,
                       {s: audio_summary["songs"].get(s, 0) for s in splits})
    tmp_root = pathlib.Path(tempfile.mkdtemp(prefix=f".{NAME}.incomplete-", dir=out_dir))
    began = time.perf_counter()
    try:
        builder = JukejaxCodes(plan=plan, data_dir=os.fspath(tmp_root), file_format="array_record")
        builder.download_and_prepare(file_format="array_record")
        built = pathlib.Path(os.fspath(builder.data_dir))
        tables = _song_tables(built, builder, levels)
        for split, table in tables.items():
            np.savez(built / SONGS_FILE.format(split=split), **table)
        for name in (ARTISTS_FILE, GENRES_FILE):
            shutil.copyfile(audio_dir / name, built / name)
        summary = {
            "name": NAME, "version": VERSION, "dataset_dir": os.path.abspath(final),
            "source": os.path.abspath(audio_dir), "sample_rate": sample_rate, "hop_lengths": list(hops),
            "levels": list(levels), "code_dtype": code_dtype,
            "chunk_length": chunks.chunk_length, "context_length": chunks.context,
            "chunk_batch": chunks.chunk_batch, "encoder": dict(encoder_info or {}),
            "songs": {s: int(len(t["song_id"])) for s, t in tables.items()},
            "tokens": {s: {str(l): int(t[f"length_{l}"].sum()) for l in levels} for s, t in tables.items()},
            "hours": {s: float(t["total_length"].sum()) / sample_rate / 3600.0 for s, t in tables.items()},
            "encode_seconds": round(time.perf_counter() - began, 3),
        }
        (built / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            os.rename(final, tmp_root / "replaced")
        os.rename(built, final)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    log.info("encoded %s: songs %s, tokens %s in %.1f s", final, summary["songs"], summary["tokens"],
             summary["encode_seconds"])
    return summary


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


# ---------------------------------------------------------------------------------------------------------
# Prior training windows


@dataclasses.dataclass(frozen=True)
class WindowIndex:
    """Valid window starts of every song long enough: song `s` (record `positions[s]`) has `n_starts[s]`
    starts, `0, ratio, 2 * ratio, ...`; `ends = cumsum(n_starts)` numbers them all consecutively."""
    song_ids: np.ndarray
    positions: np.ndarray
    lengths: np.ndarray       # codes at the prior's level
    n_starts: np.ndarray
    ends: np.ndarray
    ratio: int

    @property
    def total(self) -> int:
        return int(self.ends[-1])

    def locate(self, u: int) -> Tuple[int, int]:
        """(song slot, token start) of window number `u` in [0, total)."""
        slot = int(np.searchsorted(self.ends, u, side="right"))
        first = int(self.ends[slot - 1]) if slot else 0
        return slot, (int(u) - first) * self.ratio


def build_window_index(songs: Mapping[str, np.ndarray], *, level: int, n_ctx: int, ratio: int = 1,
                       cond_level: Optional[int] = None, cond_length: int = 0,
                       sample_rate: Optional[int] = None, hop_length: Optional[int] = None) -> WindowIndex:
    """Window starts per song (a songs-{split}.npz table): starts are multiples of `ratio` with the window
    [start, start + n_ctx) inside the song's level codes and, with `cond_level`, the upper window
    [start / ratio, start / ratio + cond_length) inside its upper codes. Songs without one are skipped."""
    lengths = np.asarray(songs[f"length_{level}"], np.int64)
    if lengths.size == 0:
        raise DatasetError("the codes source has no songs")
    room = (lengths - n_ctx) // ratio
    if cond_level is not None:
        room = np.minimum(room, np.asarray(songs[f"length_{cond_level}"], np.int64) - cond_length)
    keep = np.flatnonzero(room >= 0)
    if keep.size == 0:
        slot = int(np.argmax(lengths))
        longest = int(lengths[slot])

        def secs(n: int) -> str:
            return f" ({n * hop_length / sample_rate:.2f} s)" if sample_rate and hop_length else ""

        raise DatasetError(f"every song is shorter than n_ctx {n_ctx} tokens at level {level}{secs(n_ctx)}; the "
                           f"longest (song_id {int(songs['song_id'][slot])}) has {longest} tokens{secs(longest)}")
    order = keep[np.argsort(np.asarray(songs["song_id"])[keep], kind="stable")]
    n_starts = room[order] + 1
    return WindowIndex(song_ids=np.asarray(songs["song_id"], np.int64)[order], positions=order.astype(np.int64),
                       lengths=lengths[order], n_starts=n_starts, ends=np.cumsum(n_starts), ratio=int(ratio))


def _prior_lyric_tokens(text: str, v3: bool) -> np.ndarray:
    # Lazy: data never imports prior at module level (the package pulls in flax); the lyric vocabulary and
    # cleaning are the prior's, so it is the one place to take them from.
    from jukejax.prior import lyrics as lyrics_lib
    return lyrics_lib.tokenize(lyrics_lib.clean_lyrics(text, v3), v3)


def _prior_lyric_window(tokens, total_length, offset, duration, n_tokens):
    from jukejax.prior import lyrics as lyrics_lib
    return lyrics_lib.lyric_window(tokens, total_length, offset, duration, n_tokens)


class WindowLoader:
    """Maps (item, rng) to one prior training example; a class so Grain worker processes can pickle it."""

    def __init__(self, source, index: WindowIndex, *, level: int, n_ctx: int, hop_length: int,
                 cond_level: Optional[int], cond_length: int, labels: bool, max_bow_genre_size: int,
                 n_tokens: int, labels_v3: bool, lyric_tokens: Optional[Callable[[str], np.ndarray]],
                 lyric_window: Optional[Callable]):
        self.source, self.index = source, index
        self.level, self.n_ctx, self.hop_length = level, n_ctx, hop_length
        self.cond_level, self.cond_length = cond_level, cond_length
        self.labels, self.max_bow_genre_size = labels, max_bow_genre_size
        self.n_tokens, self.labels_v3 = n_tokens, labels_v3
        self.lyric_tokens, self.lyric_window = lyric_tokens, lyric_window

    def _y(self, record: Dict[str, Any], total: int, offset: int) -> np.ndarray:
        sample_length = self.n_ctx * self.hop_length
        genre = [int(record["genre"])] + [-1] * (self.max_bow_genre_size - 1)
        y = [total, offset, sample_length, int(record["artist"]), *genre]
        if self.n_tokens:
            text = _text(record["lyrics"])
            tokens = (self.lyric_tokens(text) if self.lyric_tokens is not None
                      else _prior_lyric_tokens(text, self.labels_v3))
            window_fn = self.lyric_window if self.lyric_window is not None else _prior_lyric_window
            window, _ = window_fn(tokens, total, offset, sample_length, self.n_tokens)
            y.extend(int(t) for t in np.asarray(window).reshape(-1))
        return np.asarray(y, np.int64)

    def __call__(self, item: int, rng: np.random.Generator) -> Dict[str, Any]:
        del item  # every position draws its own window: uniform over all valid starts of all songs
        slot, start = self.index.locate(int(rng.integers(self.index.total)))
        record = self.source[int(self.index.positions[slot])]
        z = np.asarray(record[codes_key(self.level)][start:start + self.n_ctx], np.int32)
        song_id = int(self.index.song_ids[slot])
        if len(z) != self.n_ctx:
            raise DatasetError(f"song {song_id}: read {len(z)} level-{self.level} codes at {start}, expected "
                               f"{self.n_ctx}")
        example = {"z": z}
        if self.cond_level is not None:
            # The upper window covers the same audio: token t of level L spans samples [t, t + 1) * hop_L.
            a = start // self.index.ratio
            z_cond = np.asarray(record[codes_key(self.cond_level)][a:a + self.cond_length], np.int32)
            if len(z_cond) != self.cond_length:
                raise DatasetError(f"song {song_id}: read {len(z_cond)} level-{self.cond_level} codes at {a}, "
                                   f"expected {self.cond_length}")
            example["z_cond"] = z_cond
        if self.labels:
            example["y"] = self._y(record, int(record["total_length"]), start * self.hop_length)
        example["song_id"] = np.int64(song_id)
        example["start"] = np.int64(start)
        return example


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{name} is {value!r}; expected a positive integer")
    return int(value)


def make_prior_pipeline(codes_source: CodesSource, *, level: int, n_ctx: int, batch_size: int, seed: int,
                        hop_lengths: Optional[Sequence[int]] = None, cond_length: Optional[int] = None,
                        labels: bool = True, max_bow_genre_size: int = 1, n_tokens: int = 0,
                        labels_v3: bool = False, y_bins: Optional[Tuple[int, int]] = None,
                        lyric_tokens: Optional[Callable[[str], np.ndarray]] = None,
                        lyric_window: Optional[Callable] = None, shard_index: Optional[int] = None,
                        shard_count: Optional[int] = None, num_epochs: Optional[int] = None,
                        num_threads: int = 4, prefetch_buffer_size: int = 4,
                        worker_count: int = 0) -> grain.DatasetIterator:
    """A Grain iterator of batches of prior training windows of `n_ctx` codes at `level`.

    Each example is a window drawn uniformly over every valid start of every song with at least `n_ctx`
    codes (so songs are drawn in proportion to their length, as the original's chunk sampler does).
    With `cond_length` (upsamplers: `PriorConfig.cond_length`; None or 0 for the top prior) the window is
    conditioned on level + 1: `ratio = n_ctx // cond_length` must equal the hop ratio of the two levels,
    starts are multiples of `ratio`, and `z_cond` is upper codes [start / ratio, start / ratio + cond_length),
    the same span of audio. `hop_lengths` (all levels, e.g. `PriorConfig.vqvae.hop_lengths`) is checked
    against the dataset's.

    Labels, in the original y layout (`data/labels.py::Labeller.get_label`): [total_length, offset = start * hop, sample_length =
    n_ctx * hop, artist, genre, -1 x (max_bow_genre_size - 1), lyric window of `n_tokens`]. Artist and genre
    ids are the audio dataset's (its artists.txt / genres.txt, copied beside the codes; `y_bins` checks they
    fit the prior's embeddings). The lyric window is `lyric_window(lyric_tokens(lyrics), total_length,
    offset, sample_length, n_tokens)`, by default `jukejax.prior.lyrics`' cleaning, tokens (v3 vocabulary
    with `labels_v3`) and linear window, imported only when `n_tokens > 0`.

    Batch (rows = batch_size // shard_count): `z` int32 (rows, n_ctx); `z_cond` int32 (rows, cond_length)
    only with `cond_length`; `y` int64 (rows, 4 + max_bow_genre_size + n_tokens) only with `labels`;
    `song_id`, `start` (token start at `level`) int64 (rows,).

    Determinism, sharding and resume are those of `make_pipeline`: position p of the global stream draws
    its window from its own seeded generator, process `shard_index` takes positions
    `shard_index::shard_count` (default: this JAX process), so a step's shards are disjoint parts of one
    global batch; `iterator.get_state()` / `set_state()` restore the exact stream. An epoch
    (`num_epochs`) is `min(windows, codes // n_ctx)` draws.
    """
    if shard_index is None or shard_count is None:
        import jax  # the default shard is this JAX process; imported late to keep reading jax-free
        shard_index = jax.process_index() if shard_index is None else shard_index
        shard_count = jax.process_count() if shard_count is None else shard_count
    n_ctx = _positive_int("n_ctx", n_ctx)
    batch_size = _positive_int("batch_size", batch_size)
    shard_count = _positive_int("shard_count", shard_count)
    max_bow_genre_size = _positive_int("max_bow_genre_size", max_bow_genre_size)
    if not 0 <= shard_index < shard_count:
        raise ConfigError(f"shard_index {shard_index} must lie in [0, shard_count={shard_count})")
    if batch_size % shard_count:
        raise ConfigError(f"batch_size {batch_size} is not divisible by the {shard_count} processes")
    if num_epochs is not None and num_epochs <= 0:
        raise ConfigError(f"num_epochs is {num_epochs}; expected a positive integer or None")
    if not 0 <= seed < 2**32:
        raise ConfigError(f"seed is {seed}; expected an integer in [0, 2**32)")
    if isinstance(n_tokens, bool) or n_tokens < 0 or n_tokens % 2:
        raise ConfigError(f"n_tokens is {n_tokens!r}; expected an even integer >= 0")
    hops = tuple(codes_source.hop_lengths)
    if hop_lengths is not None and tuple(int(h) for h in hop_lengths) != hops:
        raise ConfigError(f"hop_lengths {tuple(hop_lengths)} differ from the codes dataset's {hops} "
                          f"({getattr(codes_source, 'path', 'source')}): encoded with another VQ-VAE?")
    stored = tuple(codes_source.levels)
    if level not in stored:
        raise ConfigError(f"level {level} is not stored in the codes dataset; stored levels: {stored}")
    cond_length = int(cond_length or 0)
    cond_level, ratio = None, 1
    if cond_length:
        cond_level = level + 1
        if cond_level not in stored:
            raise ConfigError(f"cond_length {cond_length} conditions level {level} on level {cond_level}, which "
                              f"is not stored in the codes dataset (stored levels: {stored})")
        if n_ctx % cond_length:
            raise ConfigError(f"n_ctx {n_ctx} is not a multiple of cond_length {cond_length}")
        ratio = n_ctx // cond_length
        if hops[cond_level] != ratio * hops[level]:
            raise ConfigError(f"n_ctx {n_ctx} / cond_length {cond_length} = {ratio}, but level {cond_level} has "
                              f"hop {hops[cond_level]} = {hops[cond_level] / hops[level]:g} x level {level}'s "
                              f"{hops[level]}: the two windows would not cover the same audio")
    if labels and y_bins is not None:
        for what, names, bins in (("artist", codes_source.artists, y_bins[0]),
                                  ("genre", codes_source.genres, y_bins[1])):
            if len(names) > bins:
                raise ConfigError(f"the codes dataset has {len(names)} {what} ids but y_bins allows {bins}")

    index = build_window_index(codes_source.songs, level=level, n_ctx=n_ctx, ratio=ratio, cond_level=cond_level,
                               cond_length=cond_length, sample_rate=getattr(codes_source, "sample_rate", None),
                               hop_length=hops[level])
    num_items = max(1, min(index.total, int(index.lengths.sum()) // n_ctx))
    map_seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
    ds = grain.MapDataset.range(num_items).repeat(num_epochs)
    if num_epochs is not None:
        usable = len(ds) // batch_size * batch_size
        if usable == 0:
            raise DatasetError(f"{num_items} window(s) of {n_ctx} tokens x {num_epochs} epoch(s) do not fill one "
                               f"batch of {batch_size}")
        ds = ds[:usable]
    loader = WindowLoader(codes_source, index, level=level, n_ctx=n_ctx, hop_length=hops[level],
                          cond_level=cond_level, cond_length=cond_length, labels=labels,
                          max_bow_genre_size=max_bow_genre_size, n_tokens=int(n_tokens), labels_v3=labels_v3,
                          lyric_tokens=lyric_tokens, lyric_window=lyric_window)
    # Randomness is keyed by the position in the global stream, before sharding (see make_pipeline).
    ds = ds.random_map(loader, seed=map_seed)
    ds = ds[shard_index::shard_count]
    ds = ds.batch(batch_size // shard_count, drop_remainder=True, batch_fn=stack_examples)
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size))
    if worker_count > 0:
        from absl import flags
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return iter(it_ds)
