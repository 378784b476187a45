"""What `jukejax.embed` embeds: the audio files of a folder, or the songs of a built `jukejax_music` dataset.

Either way the run sees a list of `Input`s, sorted by output name (so every process of a multi-process run
lists the same inputs in the same order): a name for the manifest, the `.npy` it becomes, its length and rate
(known without decoding it, for the length checks), and how to decode it to float32 (time, channels).

- `--audio_dir`: every audio file under the folder (recursive; hidden entries and the output folder skipped),
  written to its relative path with the extension replaced by `.npy`.
- `--data_dir` (`python -m jukejax.data build` output): every song of the chosen splits, its windows
  reassembled in `window_index` order and int16 turned into float32 as libsndfile reads PCM_16 (x / 32768), so a
  song embeds exactly as its source file would if that was PCM_16 at the dataset's rate. It is written to its
  song key (the source file's path relative to the folder the dataset was built from) with the extension
  replaced by `.npy`, made filesystem-safe (see `song_output_names`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from jukejax import audio as audio_lib
from jukejax.embed.model import EmbedError
from jukejax.embed.preprocess import read_file

# What libsndfile decodes; .au is GTZAN's format (jukemir's genre benchmark).
EXTENSIONS = tuple(audio_lib.AUDIO_EXTENSIONS) + (".au",)
INT16_SCALE = 32768.0  # libsndfile's PCM_16 -> float convention (the dataset stores what it read that way)
# Characters some filesystem (Windows, SMB shares, object-store mounts) refuses in a file name.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"\\|?*]')
_MAX_NAME_BYTES = 200   # under the 255-byte limit of ext4/xfs/APFS, leaving room for the atomic write's suffix


@dataclasses.dataclass
class Input:
    """One thing to embed."""
    rel: str                 # the manifest's "file": path under --audio_dir, or the dataset's song key
    name: str                # how errors name it
    npy_rel: str             # output path under --out, '/'-separated
    frames: int              # samples at `sr`
    sr: int
    read: Callable[[], Tuple[np.ndarray, int]]   # -> float32 (time, channels), sample rate
    extra: Dict[str, object] = dataclasses.field(default_factory=dict)   # more manifest fields


def list_audio(audio_dir: pathlib.Path, out: pathlib.Path) -> List[Tuple[str, pathlib.Path]]:
    """(relative name, path) of every audio file under `audio_dir` (recursive, hidden entries and the output
    folder skipped), sorted by name."""
    found = []
    out = out.resolve()
    for root, dirs, names in os.walk(audio_dir):
        root_path = pathlib.Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (root_path / d).resolve() != out)
        for name in names:
            if name.startswith(".") or pathlib.Path(name).suffix.lower() not in EXTENSIONS:
                continue
            path = root_path / name
            found.append((path.relative_to(audio_dir).as_posix(), path))
    return sorted(found)


def audio_folder_inputs(audio_dir: str, out: str) -> List[Input]:
    """The audio files of `audio_dir`, headers read (unreadable or empty ones are an `EmbedError`)."""
    folder, out_path = pathlib.Path(audio_dir), pathlib.Path(out)
    inputs, by_output = [], {}
    for rel, path in list_audio(folder, out_path):
        npy_rel = str(pathlib.PurePosixPath(rel).with_suffix(".npy"))
        if npy_rel in by_output:
            raise EmbedError(f"{folder / by_output[npy_rel]} and {path}: both would be written to "
                             f"{out_path / npy_rel}; rename one")
        by_output[npy_rel] = rel
        try:
            n, sr, _ = audio_lib.probe(path)
        except audio_lib.AudioError as e:
            raise EmbedError(str(e)) from None
        if n == 0:
            raise EmbedError(f"{path}: no audio samples")
        inputs.append(Input(rel, str(path), npy_rel, n, sr, lambda path=path: read_file(path)))
    if not inputs:
        raise EmbedError(f"--audio_dir {audio_dir}: no audio files ({', '.join(EXTENSIONS)})")
    return inputs


def _safe_part(part: str, max_bytes: int = _MAX_NAME_BYTES) -> str:
    part = _UNSAFE.sub("_", part).strip(" ")
    if part in ("", ".", ".."):
        return "_"
    if part.startswith("."):    # hidden names are skipped by listings and reserved for atomic writes' temporaries
        part = "_" + part[1:]
    while len(part.encode("utf-8")) > max_bytes:
        part = part[:-1]
    return part


def song_output_names(keys: Sequence[str]) -> Dict[str, str]:
    """key -> '/'-separated `.npy` path: the key's folders kept, its extension replaced; characters some
    filesystem refuses (control characters, `<>:"\\|?*`) become `_`, as do empty, `.` and `..` parts and a
    leading dot; parts are cut to 200 bytes. Names that then coincide, or differ only in case (macOS and
    Windows filesystems ignore case), get `-` and 8 hex digits of the key's SHA-1 after their stem."""
    plain = {}
    for key in keys:
        *folders, file = key.replace("\\", "/").split("/")
        stem = pathlib.PurePosixPath(file).stem if pathlib.PurePosixPath(file).suffix else file
        # room for the collision suffix and .npy within the part limit
        plain[key] = "/".join([_safe_part(f) for f in folders] + [_safe_part(stem, _MAX_NAME_BYTES - 13)])
    hashed = {key: f"{name}-{hashlib.sha1(key.encode('utf-8')).hexdigest()[:8]}" for key, name in plain.items()}
    counts: Dict[str, int] = {}
    for name in plain.values():
        counts[name.casefold()] = counts.get(name.casefold(), 0) + 1
    names = {key: hashed[key] if counts[name.casefold()] > 1 else name for key, name in plain.items()}
    if len({n.casefold() for n in names.values()}) != len(names):   # a hashed name equal to a plain one
        names = hashed
    return {key: name + ".npy" for key, name in names.items()}


def dataset_splits(data_dir: str) -> Dict[str, int]:
    """split -> songs of the `jukejax_music` dataset at `data_dir` (splits without songs left out)."""
    from jukejax.data import DatasetError, dataset_path, load_summary

    if not (dataset_path(data_dir) / "dataset_info.json").exists():
        raise EmbedError(f"--data_dir {data_dir}: no jukejax_music dataset there (build one with "
                         f"python -m jukejax.data build)")
    try:
        summary = load_summary(data_dir)
    except DatasetError as e:
        raise EmbedError(f"--data_dir {data_dir}: {e}") from None
    return {split: int(n) for split, n in sorted(summary["songs"].items()) if int(n) > 0}


def dataset_inputs(data_dir: str, split: Optional[str]) -> List[Input]:
    """The songs of `split` (None: every split) of the dataset at `data_dir`. Output names are derived from
    the keys of every split, so they do not depend on which split a run embeds."""
    from jukejax.data import DatasetError, dataset_path, load_source

    splits = dataset_splits(data_dir)
    if split is not None and split not in splits:
        raise EmbedError(f"--split {split}: the dataset at {data_dir} has songs in {', '.join(splits)}")
    path = dataset_path(data_dir).resolve()
    songs = []   # (split, key, source, rows in window order, total length)
    for name in splits:
        try:
            source = load_source(data_dir, name)
        except DatasetError as e:
            raise EmbedError(f"--data_dir {data_dir}: {e}") from None
        w = source.windows
        order = np.lexsort((w["window_index"], w["song_id"]))
        starts = np.flatnonzero(np.diff(w["song_id"][order], prepend=-1))
        for rows in np.split(order, starts[1:]):
            total = int(w["total_length"][rows[0]])
            if int(w["length"][rows].sum()) != total or not np.array_equal(w["window_index"][rows],
                                                                             np.arange(len(rows))):
                raise EmbedError(f"--data_dir {data_dir}: split {name} song id {int(w['song_id'][rows[0]])} has "
                                 f"missing windows; rebuild the dataset")
            key = source[int(rows[0])]["song_key"]
            songs.append((name, key.decode("utf-8") if isinstance(key, bytes) else str(key), source, rows, total))
    keys = [key for _, key, _, _, _ in songs]
    if len(set(keys)) != len(keys):
        raise EmbedError(f"--data_dir {data_dir}: a song key appears twice; rebuild the dataset")
    names = song_output_names(keys)

    def reader(source, rows):
        def read() -> Tuple[np.ndarray, int]:
            pcm = np.concatenate([r["audio"] for r in source.__getitems__([int(i) for i in rows])])
            return pcm.astype(np.float32) / INT16_SCALE, source.sample_rate
        return read

    inputs = [Input(key, f"{data_dir} song {key} ({name})", names[key], total, source.sample_rate,
                    reader(source, rows), dict(dataset=str(path), split=name))
              for name, key, source, rows, total in songs if split is None or name == split]
    return sorted(inputs, key=lambda i: i.npy_rel)
