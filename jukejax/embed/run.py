"""Embed a folder of audio or a built dataset's songs: one `.npy` per file or song plus `manifest.jsonl`,
resumable, split over processes.

Output layout of `--out DIR`:

    DIR/<relative path of the audio file, extension replaced by .npy>
    DIR/<song key, extension replaced by .npy, made filesystem-safe>   (--data_dir; see jukejax/embed/inputs.py)
        float32: (width,) pooled / (frames, width) frame-level for one layer; with several layers a leading
        layer axis in the order --layers gives them: (n_layers, width) / (n_layers, frames, width)
    DIR/manifest.jsonl
        one JSON object per finished file: file (its path under --audio_dir, or the song key), npy, shape,
        layers, preset, pool, fps, frame_rate, model, dtype, duration (seconds of the source audio), sample_rate
        (the file's or dataset's), frames (before pooling); with --data_dir also dataset (its folder) and split

Every `.npy` appears atomically (temporary file + rename) and its manifest line is appended after it, so a run
killed at any point leaves only complete files; a rerun skips every file whose `.npy` exists (adding its
manifest line if the kill came between the two). Files are split over processes by index (file i goes to
process i mod P); each process writes its own files and appends its own lines to the one manifest (process 0
completes the manifest before any process appends). Within a process, windows of all its files are batched
together and the batch is split over the mesh's batch axes.

What is checked before anything is written: the flags, the model (top prior present, layers within its depth),
every file's header or song's length (readable, long enough for the jukemir preset), two files mapping to one
output name, and every file this process will embed decodes to finite, not entirely silent audio (if any
process refuses a file, every process stops). Each problem is one line naming the file or flag.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import json
import os
import pathlib
import time
from typing import Any, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import jax
import numpy as np

from jukejax import audio as audio_lib
from jukejax.embed import presets
from jukejax.embed.inputs import Input, audio_folder_inputs, dataset_inputs
from jukejax.embed.model import EmbedError, Embedder
from jukejax.embed.preprocess import check_content, frames_after_resampling, mono_normalised
from jukejax.errors import atomic_write_bytes

MANIFEST = "manifest.jsonl"


@dataclasses.dataclass(frozen=True)
class EmbedConfig:
    checkpoint: str
    out: str
    audio_dir: Optional[str] = None
    data_dir: Optional[str] = None    # a jukejax_music dataset instead of a folder of audio
    split: Optional[str] = None       # with data_dir: one split (default: every split)
    layers: Tuple[int, ...] = (36,)
    preset: str = "jukemir"
    pool: Optional[str] = None        # default: mean for jukemir, none for frames
    fps: Optional[float] = None
    batch_size: int = 0               # windows per prior step over all devices (0: the batch-axis device count)
    dtype: str = "float32"
    progress: bool = True

    @property
    def pool_or_default(self) -> str:
        return self.pool or ("mean" if self.preset == "jukemir" else "none")

    def check(self) -> None:
        if self.preset not in presets.PRESETS:
            raise EmbedError(f"--preset {self.preset!r}: expected one of {', '.join(presets.PRESETS)}")
        if self.pool is not None and self.pool not in ("mean", "max", "none"):
            raise EmbedError(f"--pool {self.pool!r}: expected mean, max or none")
        if self.fps is not None:
            if self.preset != "frames":
                raise EmbedError("--fps applies to frame-level features: use it with --preset=frames")
            if not self.fps > 0:
                raise EmbedError(f"--fps {self.fps}: expected a positive frame rate")
        if self.batch_size < 0:
            raise EmbedError(f"--batch_size {self.batch_size}: expected a positive number (0: one per device)")
        if bool(self.audio_dir) == bool(self.data_dir):
            raise EmbedError("give exactly one of --audio_dir (a folder of audio files) and --data_dir (a dataset "
                             "built by python -m jukejax.data build)")
        if self.audio_dir and not pathlib.Path(self.audio_dir).is_dir():
            raise EmbedError(f"--audio_dir {self.audio_dir}: no such folder")
        if self.split is not None and not self.data_dir:
            raise EmbedError("--split chooses a split of --data_dir; a folder of audio has none")
        if self.data_dir:
            if not pathlib.Path(self.data_dir).is_dir():
                raise EmbedError(f"--data_dir {self.data_dir}: no such folder")
            from jukejax.embed.inputs import dataset_splits
            dataset_splits(self.data_dir)


@dataclasses.dataclass
class _Job:
    """One file in flight: its windows, and the activations of those already computed."""
    file: Input
    windows: List[presets.Window]
    n_samples: int
    results: Dict[int, List[np.ndarray]] = dataclasses.field(default_factory=dict)
    done: int = 0


def _plan(config: EmbedConfig, embedder: Embedder) -> List[Input]:
    """Every input of the run, lengths checked against the preset."""
    if config.data_dir:
        inputs = dataset_inputs(config.data_dir, config.split)
    else:
        inputs = audio_folder_inputs(config.audio_dir, config.out)
    for f in inputs:
        presets.check_length(config.preset, embedder.info, frames_after_resampling(f.frames, f.sr, embedder.info.sr),
                             f.name)
    return inputs


def _decode(f: Input) -> Tuple[np.ndarray, int]:
    try:
        return f.read()
    except audio_lib.AudioError as e:
        raise EmbedError(str(e)) from None


def _check_content(f: Input) -> None:
    """Decodable, finite and not silent: checked for every input before the first output is written."""
    data, _ = _decode(f)
    try:
        check_content(data, f.name)
    except audio_lib.AudioError as e:
        raise EmbedError(str(e)) from None


def _read_manifest(path: pathlib.Path) -> Dict[str, dict]:
    records = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                records[record["file"]] = record
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a kill mid-append; the file's record is rewritten below
    return records


def _append_line(path: pathlib.Path, record: dict) -> None:
    # One write on an O_APPEND descriptor: lines from several processes do not interleave (local POSIX
    # filesystems; on network filesystems give each process its own --out).
    line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


class _Writer:
    def __init__(self, config: EmbedConfig, embedder: Embedder):
        self.config, self.embedder = config, embedder
        self.out = pathlib.Path(config.out)
        self.manifest = self.out / MANIFEST

    def npy(self, f: Input) -> pathlib.Path:
        return self.out / f.npy_rel

    def record(self, f: Input, shape: Tuple[int, ...], frames: int) -> dict:
        info = self.embedder.info
        return dict(file=f.rel, npy=f.npy_rel, shape=list(shape),
                    layers=list(self.embedder.layers), preset=self.config.preset, pool=self.config.pool_or_default,
                    fps=self.config.fps, frame_rate=info.frame_rate, model=os.path.abspath(info.checkpoint),
                    dtype=self.config.dtype, duration=f.frames / f.sr, sample_rate=f.sr, frames=frames, **f.extra)

    def write(self, f: Input, features: np.ndarray, frames: int) -> None:
        self.npy(f).parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.save(buf, features.astype(np.float32), allow_pickle=False)
        atomic_write_bytes(self.npy(f), buf.getvalue())
        _append_line(self.manifest, self.record(f, features.shape, frames))

    def reconcile(self, files: Sequence[Input]) -> None:
        """Manifest lines for finished files that lack one (a kill between the .npy and its line)."""
        have = _read_manifest(self.manifest)
        for f in files:
            if self.npy(f).exists() and f.rel not in have:
                arr = np.load(self.npy(f), mmap_mode="r")
                frames = arr.shape[-2] if self.config.pool_or_default == "none" else -1
                _append_line(self.manifest, self.record(f, arr.shape, frames))


def _assemble(config: EmbedConfig, embedder: Embedder, job: _Job) -> Tuple[np.ndarray, int]:
    """The file's features from its windows' activations: concatenated and cut to the audio's frames
    (frames preset), pooled over those frames, resampled to --fps; one layer or a stack."""
    pool = config.pool_or_default
    info = embedder.info
    out = []
    frames = 0
    for layer in embedder.layers:
        parts = job.results[layer]
        if config.preset == "jukemir":
            h = parts[0]                     # pooled in the step, or (n_ctx, width)
            frames = info.n_ctx
        else:
            frames = job.n_samples // info.hop
            if pool == "none":
                h = np.concatenate(parts, axis=0)[:frames]
                if config.fps is not None:
                    h = presets.resample_frames(h, info.frame_rate, config.fps)
            else:
                # pooled per window in the step over its valid frames; combine by frame counts / max
                weights = np.array([w.n_valid for w in job.windows], np.float64)
                stack = np.stack(parts)
                h = (np.tensordot(weights / weights.sum(), stack, axes=1).astype(np.float32) if pool == "mean"
                     else stack.max(axis=0))
        out.append(h)
    return (out[0] if len(out) == 1 else np.stack(out)), frames


def _jobs(config: EmbedConfig, embedder: Embedder, files: Sequence[Input]) -> Iterator[_Job]:
    """Load and VQ-VAE-encode each file into prior windows (tokens filled in)."""
    info = embedder.info
    for f in files:
        try:
            audio = mono_normalised(*_decode(f), info.sr, f.name)
        except audio_lib.AudioError as e:
            raise EmbedError(str(e)) from None
        presets.check_length(config.preset, info, audio.shape[0], f.name)
        if config.preset == "jukemir":
            x = audio[:presets.jukemir_encode_length(info, audio.shape[0])]
            codes = np.asarray(embedder.encode(x[None]))[0]
            windows = presets.jukemir_windows(info)
            windows[0].tokens = codes[:info.n_ctx]
        else:
            chunks = presets.frames_audio_windows(info, audio)
            codes = np.asarray(embedder.encode(chunks))
            windows = presets.frames_windows(info, audio.shape[0])
            for w, c in zip(windows, codes):
                w.tokens = c[:info.n_ctx]
        yield _Job(f, windows, audio.shape[0])


def _any_process(flag: bool) -> bool:
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def run(config: EmbedConfig, embedder: Optional[Embedder] = None) -> Dict[str, Any]:
    """Embed every audio file of `config.audio_dir` (or song of `config.data_dir`) not yet in `config.out`;
    returns a summary."""
    config.check()
    if embedder is None:
        embedder = Embedder(config.checkpoint, config.layers, dtype=config.dtype)
    elif tuple(embedder.layers) != tuple(config.layers):
        raise ValueError(f"the Embedder computes layers {embedder.layers}, the config asks for {config.layers}")
    info = embedder.info
    divisor = embedder.batch_divisor
    batch = config.batch_size or divisor
    if batch % divisor or batch % jax.process_count():
        raise EmbedError(f"--batch_size {batch}: must be a multiple of the {divisor} devices the batch is split "
                         f"over")
    local_batch = batch // jax.process_count()
    out = pathlib.Path(config.out)
    writer = _Writer(config, embedder)
    refused: Optional[EmbedError] = None
    try:
        files = _plan(config, embedder)
        mine = [f for i, f in enumerate(files) if i % jax.process_count() == jax.process_index()]
        pending = [f for f in mine if not writer.npy(f).exists()]
        for f in pending:
            _check_content(f)
    except EmbedError as e:
        refused = e
    # Each process decodes only its own inputs; if any refuses one, all stop here, before anything is written
    # (rather than the others waiting for it in the first prior step).
    if _any_process(refused is not None):
        raise refused or EmbedError("another process refused one of its inputs (its error names it); nothing "
                                    "was written")
    out.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        writer.reconcile(files)
    # No process appends to the manifest until process 0 has read and completed it.
    _barrier("jukejax.embed: manifest reconciled")
    bar = None
    if config.progress and jax.process_index() == 0:
        from tqdm import tqdm
        bar = tqdm(total=len(pending), unit="file", dynamic_ncols=True, desc="embed")
    pool = config.pool_or_default
    # jukemir pools in the step over the whole clip; frames pools per window in the step, then over windows.
    step_pool = pool
    jobs = _jobs(config, embedder, pending)
    queue: Deque[Tuple[_Job, int]] = collections.deque()
    open_jobs = 0
    finished = 0
    began = time.perf_counter()
    exhausted = False
    while True:
        while len(queue) < local_batch and not exhausted:
            job = next(jobs, None)
            if job is None:
                exhausted = True
                break
            open_jobs += 1
            queue.extend((job, i) for i in range(len(job.windows)))
        if not _any_process(bool(queue)):
            break
        take = [queue.popleft() for _ in range(min(local_batch, len(queue)))]
        tokens = np.zeros((local_batch, info.n_ctx), np.int32)
        ys = np.zeros((local_batch, info.y_width), np.int64)
        ys[:] = presets.label_vector(info, info.window_samples, 0)  # padding rows: any valid labels
        n_valid = np.full((local_batch,), info.n_ctx, np.int32)
        for row, (job, i) in enumerate(take):
            w = job.windows[i]
            tokens[row], ys[row], n_valid[row] = w.tokens, w.y, w.n_valid
        acts = embedder.activations(embedder.place(tokens), embedder.place(ys), pool=step_pool,
                                    n_valid=embedder.place(n_valid))
        acts = {layer: embedder.local(a) for layer, a in acts.items()}
        for row, (job, i) in enumerate(take):
            for layer, a in acts.items():
                job.results.setdefault(layer, [None] * len(job.windows))[i] = a[row]
            job.done += 1
            if job.done == len(job.windows):
                features, frames = _assemble(config, embedder, job)
                writer.write(job.file, features, frames)
                open_jobs -= 1
                finished += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(files_per_s=f"{finished / (time.perf_counter() - began):.2f}")
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - began
    return dict(files=len(files), embedded=finished, skipped=len(mine) - len(pending), seconds=seconds,
                files_per_second=finished / seconds if seconds > 0 else 0.0, out=str(out))
