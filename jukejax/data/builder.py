"""A TFDS dataset of fixed-length audio windows cut from a folder of songs (the training data of
openai/jukebox `data/files_dataset.py`, prepared once instead of read per step).

The original reads songs straight from disk with PyAV at every step. jukejax prepares them once: each song
is decoded, resampled to `sr`, quantised to int16 and cut into contiguous windows of `window_seconds`
(the last window keeps the remainder, so every sample of every song is stored and any range within a song
can be rebuilt from consecutive windows). Windows are ArrayRecord records, read back by random access.

No TensorFlow anywhere: audio is a zlib-compressed int16 `Tensor` feature (`tfds.features.Audio` imports
TF), decoding is ours (soundfile), and reading uses TFDS's numpy parser.

Layout of a built dataset, `<data_dir>/jukejax_music/1.0.0/`:
  jukejax_music-{train,test}.array_record-*   windows (fields: see `FEATURE_NAMES`)
  dataset_info.json, features.json            TFDS metadata
  windows-{split}.npz                         record position -> (song_id, window_index, offset, length,
                                              total_length): TFDS stores records in hashed-key order, and
                                              this table spares readers a scan of every record
  artists.txt, genres.txt                     `name;id` lines, the original's id-table format
  summary.json                                what was kept and every file that was skipped, and why
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import math
import os
import pathlib
import shutil
import tempfile
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import hashing as tfds_hashing

from jukejax import audio as audio_lib
from jukejax.config import ConfigError
from jukejax.errors import UserError, partial_dir_name, remove_dead_partials
from jukejax.names import name_key

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

NAME = "jukejax_music"
VERSION = "1.0.0"
INCOMPLETE_PREFIX = f".{NAME}.incomplete-"  # + host-pid-: whose build it is (see jukejax.errors.remove_dead_partials)
UNKNOWN = "unknown"
METADATA_FILE = "metadata.jsonl"
SUMMARY_FILE = "summary.json"
ARTISTS_FILE = "artists.txt"
GENRES_FILE = "genres.txt"
WINDOWS_FILE = "windows-{split}.npz"
SPLITS = ("train", "test")
FEATURE_NAMES = ("audio", "song_id", "window_index", "offset", "total_length", "sample_rate", "artist",
                 "genre", "lyrics", "song_key")
WINDOW_FIELDS = ("song_id", "window_index", "offset", "length", "total_length")
# Sample rates a file header may claim: outside this, a header is damaged (or the file would resample to
# nothing or to an unbounded number of samples).
MIN_FILE_RATE, MAX_FILE_RATE = 1000, 768000
_INT16_SCALE = 32768.0  # soundfile's int16 <-> float convention, so PCM_16 input round-trips bit-exact


class DatasetError(UserError):
    """A dataset cannot be built or read: nothing usable, missing files, or a bad argument."""


class DatasetExistsError(DatasetError):
    """The output dataset folder exists and overwriting was not asked for."""

    def __init__(self, path: PathLike, what: str = "overwrite=True"):
        super().__init__(f"{path} already exists; remove it or pass {what}")
        self.path = path


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """What to build from which folder. Durations are in seconds; files are kept if
    `min_duration <= duration < max_duration` (the original's filter; `max_duration=None` means no limit)."""
    audio_dir: str
    sr: int = 44100
    channels: int = 2
    window_seconds: float = 24.0
    min_duration: float = 0.0
    max_duration: Optional[float] = None
    test_fraction: float = 0.1
    seed: int = 0
    artist_ids: str = ""     # optional `name;id` table to extend (e.g. a converted model's ids/v3_artist_ids.txt)
    genre_ids: str = ""      # the same for genres

    def __post_init__(self):
        if not self.audio_dir:
            raise ConfigError("build.audio_dir is empty; expected a folder of audio files")
        if isinstance(self.sr, bool) or not isinstance(self.sr, int) or self.sr <= 0:
            raise ConfigError(f"build.sr is {self.sr!r}; expected a positive integer sample rate")
        if self.channels not in (1, 2):
            raise ConfigError(f"build.channels is {self.channels!r}; expected 1 or 2")
        if not (math.isfinite(self.window_seconds) and self.window_seconds > 0):
            raise ConfigError(f"build.window_seconds is {self.window_seconds!r}; expected a positive number")
        if self.window_length < 1:
            raise ConfigError(f"build.window_seconds {self.window_seconds} is under one sample at sr "
                              f"{self.sr}")
        if not (math.isfinite(self.min_duration) and self.min_duration >= 0):
            raise ConfigError(f"build.min_duration is {self.min_duration!r}; expected a number >= 0")
        if self.max_duration is not None and not self.max_duration > self.min_duration:
            raise ConfigError(f"build.max_duration {self.max_duration} must exceed min_duration "
                              f"{self.min_duration}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError(f"build.test_fraction is {self.test_fraction!r}; expected a number in [0, 1)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"build.seed is {self.seed!r}; expected an integer")

    @property
    def window_length(self) -> int:
        """Samples per stored window."""
        return int(round(self.window_seconds * self.sr))


def normalize_name(name: str) -> str:
    """The name's key in the dataset's tables (`jukejax.names.name_key`, the v2 tables' `norm`, which sampling
    uses to look names up too); a name without a letter or digit is unknown."""
    return name_key(name) or UNKNOWN


@dataclasses.dataclass
class _Song:
    song_id: int
    key: str          # path relative to audio_dir, '/'-separated: stable across machines
    path: pathlib.Path
    split: str
    artist: int
    genre: int
    lyrics: str


@dataclasses.dataclass
class _Plan:
    config: BuildConfig
    songs: List[_Song]
    artists: List[str]    # id -> name, 0 = unknown
    genres: List[str]
    skipped: List[Dict[str, str]]
    artist_lines: List[str] = dataclasses.field(default_factory=list)  # the table files: a base table's
    genre_lines: List[str] = dataclasses.field(default_factory=list)   # lines + the new names, when extended

    def skip(self, file: str, reason: str) -> None:
        log.warning("skipping %s: %s", file, reason)
        self.skipped.append({"file": file, "reason": reason})

    def songs_of(self, split: str) -> List["_Song"]:
        return [s for s in self.songs if s.split == split]


def _walk(root: pathlib.Path, exclude: Sequence[pathlib.Path], plan: "_Plan") -> List[pathlib.Path]:
    """Every non-hidden file under `root`; hidden entries (`.DS_Store`, a build's own
    `.incomplete` folder) and `exclude` folders (a data_dir placed inside audio_dir) are not candidates.
    Symbolic links are followed, but a folder reached a second time (a link back up the tree) is skipped
    as a loop; a broken file link or a link loop is skipped when its header is read. A folder that cannot
    be listed is skipped with its reason."""
    exclude = {p.resolve() for p in exclude}
    visited = {os.path.realpath(root)}

    def unlistable(err: OSError) -> None:
        plan.skip(_key_of(pathlib.Path(err.filename or root), root),
                  f"cannot list folder ({err.strerror or err})")

    found = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unlistable, followlinks=True):
        here = pathlib.Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            real = os.path.realpath(here / d)
            if d.startswith(".") or pathlib.Path(real) in exclude:
                continue
            if real in visited:
                plan.skip(_key_of(here / d, root), f"symbolic link loop (folder {real} is already read)")
                continue
            visited.add(real)
            keep.append(d)
        dirnames[:] = keep
        found.extend(here / f for f in sorted(filenames) if not f.startswith("."))
    return found


def _key_of(path: pathlib.Path, root: pathlib.Path) -> str:
    try:
        return path.relative_to(root).as_posix() or "."
    except ValueError:
        return os.fspath(path)


def _relative_key(name: str) -> str:
    return pathlib.PurePosixPath(os.path.normpath(name.replace("\\", "/"))).as_posix()


def _read_metadata(path: pathlib.Path, plan: _Plan) -> Tuple[Dict[str, Tuple[int, dict]], Dict[str, str]]:
    """Labels by file key, and the keys whose labels are unusable (with why): a song with a wrong-typed or
    contradictory line is skipped rather than silently trained as "unknown". A line that is not valid
    UTF-8 or not valid JSON is skipped with its line number; a UTF-8 byte-order mark (as some editors
    write) is ignored. A metadata file that exists but cannot be read is listed as skipped."""
    labels: Dict[str, Tuple[int, dict]] = {}
    bad: Dict[str, str] = {}
    if not os.path.lexists(path):
        return labels, bad
    try:
        data = path.read_bytes()
    except OSError as err:
        plan.skip(METADATA_FILE, f"cannot read ({err.strerror or err}); every song gets unknown labels")
        return labels, bad
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for lineno, raw in enumerate(data.splitlines(), start=1):
        where = f"{METADATA_FILE}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            plan.skip(where, f"not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})")
            continue
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            plan.skip(where, f"not valid JSON ({err.msg} at column {err.colno})")
            continue
        if not isinstance(entry, dict):
            plan.skip(where, f"expected a JSON object, got {type(entry).__name__}")
            continue
        file = entry.get("file")
        if not isinstance(file, str) or not file.strip():
            plan.skip(where, f'"file" is {file!r}; expected a relative path string')
            continue
        key = _relative_key(file)
        wrong = [f'"{k}" is {entry[k]!r} ({type(entry[k]).__name__}); expected a string'
                 for k in ("artist", "genre", "lyrics") if k in entry and not isinstance(entry[k], str)]
        if wrong:
            bad.setdefault(key, f"{where}: {'; '.join(wrong)}")
            continue
        fields = {k: entry.get(k, "") for k in ("artist", "genre", "lyrics")}
        if key in labels:
            first_line, first = labels[key]
            if first != fields:
                bad.setdefault(key, f"{METADATA_FILE} lines {first_line} and {lineno} disagree")
            continue
        labels[key] = (lineno, fields)
    return labels, bad


def _split_of(keys: Sequence[str], test_fraction: float, seed: int) -> Dict[str, str]:
    """Songs ranked by a seeded hash of their relative path; the first round(n * test_fraction) are test.
    Depends only on the set of paths (never on file order or position in a concatenation, unlike the
    original's 90/10 cut), and keeps at least one song on each side when a test split is asked for."""
    n = len(keys)
    n_test = int(round(n * test_fraction))
    if test_fraction > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    else:
        n_test = 0
    rank = sorted(keys, key=lambda k: hashlib.sha256(f"{seed}\0{k}".encode()).hexdigest())
    test = set(rank[:n_test])
    return {k: ("test" if k in test else "train") for k in keys}


def _plan(config: BuildConfig, exclude: Sequence[pathlib.Path]) -> _Plan:
    root = pathlib.Path(config.audio_dir)
    if not root.is_dir():
        raise DatasetError(f"audio_dir {root} is not a folder")
    plan = _Plan(config, [], [UNKNOWN], [UNKNOWN], [])
    labels, bad = _read_metadata(root / METADATA_FILE, plan)
    # Song ids follow the sorted relative paths, so they do not depend on the filesystem's walk order.
    files = sorted((p for p in _walk(root, exclude, plan) if p != root / METADATA_FILE),
                   key=lambda p: p.relative_to(root).as_posix())
    keys_on_disk = {p.relative_to(root).as_posix() for p in files}
    for key in sorted(set(labels) - keys_on_disk) + sorted(set(bad) - keys_on_disk):
        line = labels[key][0] if key in labels else None
        plan.skip(key, f"named in {METADATA_FILE}{f' line {line}' if line else ''} but not found in "
                       f"{root}")
    kept = []
    for path in files:
        key = path.relative_to(root).as_posix()
        ext = path.suffix.lower()
        if ext not in audio_lib.AUDIO_EXTENSIONS:
            plan.skip(key, f"unsupported extension {ext or '(none)'!r}; expected one of "
                           f"{', '.join(audio_lib.AUDIO_EXTENSIONS)}")
            continue
        if key in bad:
            plan.skip(key, bad[key])
            continue
        reason = _check_header(path, config)
        if reason:
            plan.skip(key, reason)
            continue
        kept.append((key, path))
    split = _split_of([k for k, _ in kept], config.test_fraction, config.seed)
    fields = {k: labels.get(k, (0, {"artist": "", "genre": "", "lyrics": ""}))[1] for k, _ in kept}
    artist_id = _assign_ids(plan, "artist", config.artist_ids, [f["artist"] for f in fields.values()])
    genre_id = _assign_ids(plan, "genre", config.genre_ids, [f["genre"] for f in fields.values()])
    for song_id, (key, path) in enumerate(kept):
        f = fields[key]
        plan.songs.append(_Song(song_id, key, path, split[key], artist_id[normalize_name(f["artist"])],
                                genre_id[normalize_name(f["genre"])], f["lyrics"]))
    return plan


def _table_key(name: str) -> str:
    """Names match across tables by their key (`normalize_name`): `Jane  Pianist`, `jane pianist` (a v3 table's
    spelling) and `jane_pianist` (a dataset's) are one artist."""
    return normalize_name(name)


def read_base_table(path: PathLike, what: str) -> Tuple[List[str], Dict[str, int]]:
    """A `name;id` table to extend: its lines as they are (aliases kept) and {match key: id}, the first
    spelling of a key winning. A malformed line is an error naming the file and line."""
    lines, ids = [], {}
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise DatasetError(f"--{what}_ids {path}: cannot be read ({e.strerror or e})") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.rpartition(";")
        if not sep or not value.strip().isdigit():
            raise DatasetError(f"--{what}_ids {path}:{lineno}: expected 'name;id', got {line!r}")
        lines.append(line)
        ids.setdefault(_table_key(name), int(value))
    if not lines:
        raise DatasetError(f"--{what}_ids {path}: holds no 'name;id' lines")
    return lines, ids


def _assign_ids(plan: _Plan, what: str, base: str, names: Sequence[str]) -> Dict[str, int]:
    """{normalize_name(name): id} for the songs' names, filling plan.{what}s and plan.{what}_lines. Without a
    base table ids are 0 = unknown then the sorted names; with one, known names keep the table's id and new
    names are appended after its largest id, in sorted order (the model's embedding grows by as many rows)."""
    table: List[str] = getattr(plan, f"{what}s")
    used = sorted({normalize_name(n) for n in names} - {UNKNOWN})
    if not base:
        table += used
        ids = {n: i for i, n in enumerate(table)}
        setattr(plan, f"{what}_lines", [f"{n};{i}" for i, n in enumerate(table)])
        return ids
    lines, known = read_base_table(base, what)
    next_id = max(known.values()) + 1
    by_id: Dict[int, str] = {}
    for line in lines:
        name, _, value = line.rpartition(";")
        by_id.setdefault(int(value), name)
    ids = {UNKNOWN: known.get(UNKNOWN, 0)}
    for name in used:
        key = _table_key(name)
        if key not in known:
            known[key] = next_id
            by_id[next_id] = name
            lines.append(f"{name};{next_id}")
            next_id += 1
        ids[name] = known[key]
    table[:] = [by_id.get(i, UNKNOWN) for i in range(next_id)]
    setattr(plan, f"{what}_lines", lines)
    return ids


def _check_duration(seconds: float, config: BuildConfig) -> Optional[str]:
    if seconds < config.min_duration:
        return f"duration {seconds:.2f} s is below min_duration {config.min_duration} s"
    if config.max_duration is not None and seconds >= config.max_duration:
        return f"duration {seconds:.2f} s is not below max_duration {config.max_duration} s"
    return None


def _check_header(path: pathlib.Path, config: BuildConfig) -> Optional[str]:
    """Why `path` cannot be kept, judged from its header alone (decoding waits for generation)."""
    try:
        size = path.stat().st_size
    except OSError as err:
        return _unopenable(path, err)
    if size == 0:
        return "zero-length file"
    try:
        frames, sample_rate, channels = audio_lib.probe(path)
    except audio_lib.AudioError as err:
        return str(err).removeprefix(f"{path}: ")
    if frames <= 0:
        return "no audio frames (empty file)"
    if not MIN_FILE_RATE <= sample_rate <= MAX_FILE_RATE:
        return (f"header claims a sample rate of {sample_rate} Hz; expected {MIN_FILE_RATE} to "
                f"{MAX_FILE_RATE} Hz")
    if config.channels == 2 and channels > 2:
        return f"{channels} channels; expected mono or stereo"
    if frames * config.sr < sample_rate:
        return f"{frames} frame(s) at {sample_rate} Hz is less than one sample at sr {config.sr}"
    return _check_duration(frames / sample_rate, config)


def _unopenable(path: pathlib.Path, err: OSError) -> str:
    if path.is_symlink():
        if err.errno == errno.ELOOP:
            return "symbolic link loop"
        if err.errno == errno.ENOENT:
            return f"broken symbolic link (to {os.readlink(path)})"
    return f"cannot open ({err.strerror or err})"


class SongSkipped(Exception):
    """Raised by `decode_song` for a song that cannot be built; `reason` is what the summary records."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def decode_song(song: "_Song", config: BuildConfig) -> np.ndarray:
    """The song at `config.sr` as int16 `(time, config.channels)`: decoded, resampled, mono files upmixed to
    stereo as the original's loader does (or mixed to mono). `SongSkipped` with the reason if it cannot be
    decoded, is empty after resampling, or its decoded length breaks the duration limits (headers of
    compressed files can misstate the length)."""
    try:
        x, _ = audio_lib.read_audio(song.path, sr=config.sr, mono=config.channels == 1)
    except audio_lib.AudioError as err:
        raise SongSkipped(str(err).removeprefix(f"{song.path}: ")) from None
    except OSError as err:  # vanished or unreadable since planning
        raise SongSkipped(_unopenable(song.path, err)) from None
    if len(x) == 0:
        raise SongSkipped(f"no samples left after resampling to sr {config.sr}")
    reason = _check_duration(len(x) / config.sr, config)
    if reason:
        raise SongSkipped(f"after decoding: {reason}")
    if x.shape[1] == 1 and config.channels == 2:
        x = np.repeat(x, 2, axis=1)
    return _to_int16(x)


def song_examples(song: "_Song", pcm: np.ndarray, config: BuildConfig
                  ) -> Iterator[Tuple[str, Tuple[int, int, int, int, int], Dict[str, Any]]]:
    """(record key, WINDOW_FIELDS row, record) of each window of a decoded song: contiguous windows of
    `config.window_length`, the last keeping the remainder."""
    width, total = config.window_length, len(pcm)
    for k, offset in enumerate(range(0, total, width)):
        window = pcm[offset:offset + width]
        yield f"{song.key}#{k}", (song.song_id, k, offset, len(window), total), {
            "audio": window, "song_id": song.song_id, "window_index": k, "offset": offset,
            "total_length": total, "sample_rate": config.sr, "artist": song.artist,
            "genre": song.genre, "lyrics": song.lyrics, "song_key": song.key,
        }


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * _INT16_SCALE), -32768, 32767).astype(np.int16)


class JukejaxMusic(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Songs from a local folder as fixed-length int16 windows with artist, genre and lyrics labels.

    Not in TFDS's registry: it is only instantiated by `build_dataset` (it needs the plan of files), so
    `tfds.data_source("jukejax_music", data_dir=...)` reads a prepared copy from its files instead.
    """

    RELEASE_NOTES = {VERSION: "Windows of songs from a local folder, with metadata.jsonl labels."}
    VERSION = tfds.core.Version(VERSION)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's lookup for builders inside a package touches `importlib_resources`, a backport it only
        # depends on for Python < 3.9, so it fails on a plain 3.11 install.
        return epath.Path(__file__)

    def __init__(self, *, plan: _Plan, **kwargs):
        # Set before super().__init__, which builds DatasetInfo and so calls _info().
        self._plan = plan
        # Per split, in generation order: the record key and its WINDOW_FIELDS row.
        self.windows: Dict[str, List[Tuple[str, Tuple[int, int, int, int, int]]]] = {}
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        channels = self._plan.config.channels
        scalar = lambda: tfds.features.Scalar(dtype=np.int64)  # noqa: E731
        return tfds.core.DatasetInfo(
            builder=self,
            description="Fixed-length int16 windows of songs with artist, genre and lyrics labels "
                        "(jukejax.data.builder).",
            features=tfds.features.FeaturesDict({
                "audio": tfds.features.Tensor(shape=(None, channels), dtype=np.int16,
                                              encoding=tfds.features.Encoding.ZLIB),
                "song_id": scalar(),
                "window_index": scalar(),
                "offset": scalar(),
                "total_length": scalar(),
                "sample_rate": scalar(),
                "artist": scalar(),
                "genre": scalar(),
                "lyrics": tfds.features.Text(),
                "song_key": tfds.features.Text(),
            }),
            # Shuffled storage is kept on purpose: with `disable_shuffling` TFDS sorts a whole split in
            # memory before writing it, which a real music collection does not fit.
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        present = [s for s in SPLITS if any(song.split == s for song in self._plan.songs)]
        return {split: self._generate_examples(split) for split in present}

    def _generate_examples(self, split: str) -> Iterator[Tuple[str, Dict[str, Any]]]:
        plan = self._plan
        rows = self.windows.setdefault(split, [])
        songs = plan.songs_of(split)
        for song in songs:
            try:
                pcm = decode_song(song, plan.config)
            except SongSkipped as err:
                plan.skip(song.key, err.reason)
                continue
            for key, row, example in song_examples(song, pcm, plan.config):
                rows.append((key, row))
                yield key, example
        if not rows:
            raise _no_song_decoded(split, len(songs))


def _no_song_decoded(split: str, n: int) -> "DatasetError":
    return DatasetError(f"split {split!r}: none of its {n} song(s) could be decoded; see the skipped files "
                        f"logged above")


def dataset_path(data_dir: PathLike) -> pathlib.Path:
    """The versioned folder of a built dataset; accepts the TFDS data_dir or that folder itself."""
    data_dir = pathlib.Path(data_dir)
    if (data_dir / "dataset_info.json").exists():
        return data_dir
    return data_dir / NAME / VERSION


def write_name_table(path: PathLike, names: Sequence[str]) -> None:
    """`name;id` per line, id = position: the format of the original's `data/ids/*.txt`."""
    pathlib.Path(path).write_text("".join(f"{n};{i}\n" for i, n in enumerate(names)), encoding="utf-8")


def read_name_table(path: PathLike) -> List[str]:
    """Names indexed by id from a `name;id` table (ids may be aliases; the first name of an id wins)."""
    table: Dict[int, str] = {}
    for line in pathlib.Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            name, _, idx = line.rpartition(";")
            table.setdefault(int(idx), name)
    return [table.get(i, UNKNOWN) for i in range(max(table) + 1)] if table else [UNKNOWN]


def load_summary(data_dir: PathLike) -> Dict[str, Any]:
    """The build summary saved beside a dataset (see `build_dataset`)."""
    path = dataset_path(data_dir) / SUMMARY_FILE
    if not path.exists():
        raise DatasetError(f"{path} not found; is {data_dir} a dataset written by "
                           f"jukejax.data.build_dataset?")
    return json.loads(path.read_text(encoding="utf-8"))


def _summarize(plan: _Plan, builder: JukejaxMusic, final: pathlib.Path) -> Dict[str, Any]:
    config = plan.config
    songs, windows, hours = {}, {}, {}
    for split, rows in builder.windows.items():
        lengths = {song_id: total for _, (song_id, _, _, _, total) in rows}
        songs[split] = len(lengths)
        windows[split] = len(rows)
        hours[split] = sum(lengths.values()) / config.sr / 3600.0
    return {
        "name": NAME, "version": VERSION, "dataset_dir": os.path.abspath(final),
        "config": dataclasses.asdict(config),
        "sample_rate": config.sr, "channels": config.channels, "window_length": config.window_length,
        "songs": songs, "windows": windows, "hours": hours,
        "artists": len(plan.artists), "genres": len(plan.genres),
        "num_skipped": len(plan.skipped), "skipped": plan.skipped,
    }


def scan_windows(source) -> Dict[str, np.ndarray]:
    """The WINDOW_FIELDS table of any source of window records, by reading every record once."""
    rows = []
    for i in range(len(source)):
        r = source[i]
        rows.append((int(r["song_id"]), int(r["window_index"]), int(r["offset"]), len(r["audio"]),
                     int(r["total_length"])))
    return {name: np.asarray([row[j] for row in rows], dtype=np.int64).reshape(-1)
            for j, name in enumerate(WINDOW_FIELDS)}


def _predicted_order(split: str, keys: Sequence[str]) -> List[int]:
    """Generation indices in stored order. TFDS writes a split sorted by md5(split name + key), a hash it
    keeps stable across releases because changing it would reorder every published dataset."""
    hasher = tfds_hashing.Hasher(split)
    return sorted(range(len(keys)), key=lambda i: hasher.hash_key(keys[i]))


def _window_tables(built: pathlib.Path, builder: JukejaxMusic) -> Dict[str, Dict[str, np.ndarray]]:
    """Record position -> window fields per split, predicted from the keys and checked on stored records
    (about 65 per split); if the check fails, built from a full scan instead, so it is never wrong."""
    reader = tfds.builder_from_directory(built)
    tables = {}
    for split, rows in builder.windows.items():
        order = _predicted_order(split, [key for key, _ in rows])
        table = {name: np.asarray([rows[i][1][j] for i in order], dtype=np.int64)
                 for j, name in enumerate(WINDOW_FIELDS)}
        source = reader.as_data_source(split)
        probes = np.unique(np.linspace(0, len(order) - 1, min(len(order), 65)).astype(np.int64))
        stored = scan_windows([source[int(p)] for p in probes]) if len(source) == len(order) else None
        if stored is None or any(not np.array_equal(stored[k], table[k][probes]) for k in WINDOW_FIELDS):
            log.warning("split %s: stored record order differs from the predicted one; scanning all %d "
                        "records", split, len(source))
            table = scan_windows(source)
        tables[split] = table
    return tables


def parse_beam_options(text: Optional[str]) -> List[str]:
    """`"a=1,b=x"` (the form of `--beam_options`) -> Beam pipeline flags `["--a=1", "--b=x"]`."""
    flags = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, eq, value = item.removeprefix("--").partition("=")
        if not name or not eq:
            raise ConfigError(f"--beam_options entry {item!r}; expected name=value (comma-separated)")
        flags.append(f"--{name}={value}")
    return flags


def _beam_builder():
    try:
        from jukejax.data import beam_builder
    except ImportError as err:
        if "apache_beam" not in str(err):
            raise
        raise ConfigError("building with a Beam runner needs Apache Beam: pip install 'jukejax[beam]' "
                          "(or drop --runner to build in this process)") from None
    return beam_builder


def build_dataset(config: BuildConfig, data_dir: PathLike, *, overwrite: bool = False,
                  runner: Optional[str] = None, beam_options: Sequence[str] = ()) -> Dict[str, Any]:
    """Build the `jukejax_music` dataset from `config.audio_dir` into `data_dir`; returns the summary.

    With `runner` (a Beam runner name: "DirectRunner", "DataflowRunner", ...; `beam_options` are its
    pipeline flags, e.g. ["--direct_num_workers=2"]) songs are decoded and windowed on Apache Beam (see
    `jukejax.data.beam_builder`); the dataset is the same.

    All-or-nothing: the dataset is written under a hidden temporary folder in `data_dir` and renamed into
    `<data_dir>/jukejax_music/1.0.0` only once every file (records, tables, summary) is complete. Every file
    is either built or skipped with its reason (logged, and listed in the summary); if no song is left,
    `DatasetError`.
    """
    data_dir = pathlib.Path(data_dir)
    final = data_dir / NAME / VERSION
    if final.exists() and not overwrite:
        raise DatasetExistsError(final)
    beam_lib = _beam_builder() if runner else None
    plan = _plan(config, exclude=[data_dir])
    if not plan.songs:
        reasons = "; ".join(f"{s['file']}: {s['reason']}" for s in plan.skipped[:3])
        more = f" (and {len(plan.skipped) - 3} more)" if len(plan.skipped) > 3 else ""
        raise DatasetError(f"no usable audio in {config.audio_dir}: {len(plan.skipped)} file(s) skipped"
                           f"{': ' + reasons + more if reasons else ''}")
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp_root = pathlib.Path(tempfile.mkdtemp(prefix=partial_dir_name(INCOMPLETE_PREFIX), dir=data_dir))
    try:
        if beam_lib is not None:
            builder = beam_lib.prepare(plan, tmp_root, runner, beam_options)
        else:
            builder = JukejaxMusic(plan=plan, data_dir=os.fspath(tmp_root), file_format="array_record")
            builder.download_and_prepare(file_format="array_record")
        built = pathlib.Path(os.fspath(builder.data_dir))
        for split, table in _window_tables(built, builder).items():
            np.savez(built / WINDOWS_FILE.format(split=split), **table)
        (built / ARTISTS_FILE).write_text("".join(line + "\n" for line in plan.artist_lines), encoding="utf-8")
        (built / GENRES_FILE).write_text("".join(line + "\n" for line in plan.genre_lines), encoding="utf-8")
        summary = _summarize(plan, builder, final)
        (built / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            os.rename(final, tmp_root / "replaced")
        os.rename(built, final)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    for leftover in remove_dead_partials(data_dir, INCOMPLETE_PREFIX):
        log.info("removed %s, left by a build that was killed", leftover)
    log.info("built %s: songs %s, windows %s, hours %s, %d file(s) skipped", final, summary["songs"],
             summary["windows"], {k: round(v, 3) for k, v in summary["hours"].items()}, len(plan.skipped))
    return summary


class RecordSource:
    """Random access to one split of a TFDS ArrayRecord dataset written by jukejax, with its per-record table
    (an npz of int64 columns beside the records) and its artist/genre name tables.

    Pickles as (path, split) so Grain worker processes reopen the files instead of copying readers.
    """
    _kind = "records"

    def __init__(self, path: pathlib.Path, split: str, table_name: str, columns: Sequence[str],
                 available: Sequence[str]):
        self.path = path
        self.split = split
        table = self.path / table_name
        if not table.exists():
            raise DatasetError(f"split {split!r} not in {self.path}; available: {', '.join(sorted(available))}")
        with np.load(table) as f:
            self.table = {name: f[name] for name in columns}
        self.artists = read_name_table(self.path / ARTISTS_FILE)
        self.genres = read_name_table(self.path / GENRES_FILE)
        self._records = tfds.builder_from_directory(self.path).as_data_source(split)
        rows = len(next(iter(self.table.values())))
        if len(self._records) != rows:
            raise DatasetError(f"{self.path} split {split!r}: {len(self._records)} records but {rows} rows in "
                               f"{table.name}")

    def __reduce__(self):
        return type(self), (os.fspath(self.path), self.split)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return self._records[index]

    def __getitems__(self, indices: Sequence[int]) -> List[Dict[str, Any]]:
        return list(self._records.__getitems__(list(indices)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({os.fspath(self.path)!r}, split={self.split!r}, {self._kind}={len(self)})"


class MusicSource(RecordSource):
    """One split's window records: `windows` maps each field of `WINDOW_FIELDS` to an int64 array indexed by
    record position. Records are dicts with the fields of `FEATURE_NAMES` (`audio` int16 (n, channels);
    `lyrics`, `song_key` bytes)."""

    def __init__(self, data_dir: PathLike, split: str = "train"):
        path = dataset_path(data_dir)
        if not (path / "dataset_info.json").exists():
            raise DatasetError(f"no jukejax_music dataset at {path}; build one with `python -m jukejax.data build`")
        summary = load_summary(path)
        super().__init__(path, split, WINDOWS_FILE.format(split=split), WINDOW_FIELDS, summary["windows"])
        self.windows = self.table
        self.sample_rate = int(summary["sample_rate"])
        self.channels = int(summary["channels"])
        self.window_length = int(summary["window_length"])


def load_source(data_dir: PathLike, split: str = "train") -> MusicSource:
    """Open one split of a dataset written by `build_dataset` for random access."""
    return MusicSource(data_dir, split)
