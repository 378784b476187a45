"""Embed a folder of audio: one `.npy` per file plus `manifest.jsonl`, resumable, split over processes.

Output layout of `--out DIR`:

    DIR/<relative path of the audio file, extension replaced by .npy>
        float32: (width,) pooled / (frames, width) frame-level for one layer; with several layers a leading
        layer axis in the order --layers gives them: (n_layers, width) / (n_layers, frames, width)
    DIR/manifest.jsonl
        one JSON object per finished file: file, npy, shape, layers, preset, pool, fps, frame_rate, model,
        dtype, duration (seconds of the source audio), sample_rate (the file's), frames (before pooling)

Every `.npy` appears atomically (temporary file + rename) and its manifest line is appended after it, so a run
killed at any point leaves only complete files; a rerun skips every file whose `.npy` exists (adding its
manifest line if the kill came between the two). Files are split over processes by index (file i goes to
process i mod P); each process writes its own files. Within a process, windows of all its files are batched
together and the batch is split over the mesh's batch axes.

What is checked before anything is written: the flags, the model (top prior present, layers within its depth),
every file's header (readable, long enough for the jukemir preset), two files mapping to one output name, and
every file this process will embed decodes to finite, not entirely silent audio. Each problem is one line
naming the file or flag.
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
from jukejax.embed.model import EmbedError, Embedder
from jukejax.embed.preprocess import frames_after_resampling, load_mono_normalised
from jukejax.errors import atomic_write_bytes

MANIFEST = "manifest.jsonl"
# What libsndfile decodes; .au is GTZAN's format (jukemir's genre benchmark).
EXTENSIONS = tuple(audio_lib.AUDIO_EXTENSIONS) + (".au",)


@dataclasses.dataclass(frozen=True)
class EmbedConfig:
    checkpoint: str
    out: str
    audio_dir: Optional[str] = None
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
        if not self.audio_dir:
            raise EmbedError("--audio_dir: give the folder of audio files to embed")
        if not pathlib.Path(self.audio_dir).is_dir():
            raise EmbedError(f"--audio_dir {self.audio_dir}: no such folder")


@dataclasses.dataclass
class _File:
    rel: str
    path: pathlib.Path
    npy: pathlib.Path
    frames: int            # samples at the file's rate (header)
    sr: int                # the file's rate


@dataclasses.dataclass
class _Job:
    """One file in flight: its windows, and the activations of those already computed."""
    file: _File
    windows: List[presets.Window]
    n_samples: int
    results: Dict[int, List[np.ndarray]] = dataclasses.field(default_factory=dict)
    done: int = 0


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


def _plan_files(config: EmbedConfig, embedder: Embedder) -> List[_File]:
    audio_dir, out = pathlib.Path(config.audio_dir), pathlib.Path(config.out)
    files, by_output = [], {}
    for rel, path in list_audio(audio_dir, out):
        npy_rel = str(pathlib.PurePosixPath(rel).with_suffix(".npy"))
        if npy_rel in by_output:
            raise EmbedError(f"{audio_dir / by_output[npy_rel]} and {path}: both would be written to "
                             f"{out / npy_rel}; rename one")
        by_output[npy_rel] = rel
        try:
            n, sr, _ = audio_lib.probe(path)
        except audio_lib.AudioError as e:
            raise EmbedError(str(e)) from None
        if n == 0:
            raise EmbedError(f"{path}: no audio samples")
        presets.check_length(config.preset, embedder.info, frames_after_resampling(n, sr, embedder.info.sr),
                             str(path))
        files.append(_File(rel, path, out / npy_rel, n, sr))
    if not files:
        raise EmbedError(f"--audio_dir {audio_dir}: no audio files ({', '.join(EXTENSIONS)})")
    return files


def _check_content(f: _File) -> None:
    """Decodable, finite and not silent: checked for every file before the first output is written."""
    import soundfile as sf

    try:
        data, _ = sf.read(os.fspath(f.path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError, TypeError) as err:
        raise EmbedError(f"{f.path}: cannot decode audio ({' '.join(str(err).split()) or type(err).__name__})"
                         ) from None
    if not np.isfinite(data).all():
        raise EmbedError(f"{f.path}: audio has NaN or infinite samples")
    if not np.abs(data).max(initial=0.0) > 0:
        raise EmbedError(f"{f.path}: audio is silent (every sample is 0); its features would be those of "
                         f"digital silence")


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
        self.manifest = pathlib.Path(config.out) / MANIFEST

    def record(self, f: _File, shape: Tuple[int, ...], frames: int) -> dict:
        info = self.embedder.info
        return dict(file=f.rel, npy=str(pathlib.PurePosixPath(f.rel).with_suffix(".npy")), shape=list(shape),
                    layers=list(self.embedder.layers), preset=self.config.preset, pool=self.config.pool_or_default,
                    fps=self.config.fps, frame_rate=info.frame_rate, model=os.path.abspath(info.checkpoint),
                    dtype=self.config.dtype, duration=f.frames / f.sr, sample_rate=f.sr, frames=frames)

    def write(self, f: _File, features: np.ndarray, frames: int) -> None:
        f.npy.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.save(buf, features.astype(np.float32), allow_pickle=False)
        atomic_write_bytes(f.npy, buf.getvalue())
        _append_line(self.manifest, self.record(f, features.shape, frames))

    def reconcile(self, files: Sequence[_File]) -> None:
        """Manifest lines for finished files that lack one (a kill between the .npy and its line)."""
        have = _read_manifest(self.manifest)
        for f in files:
            if f.npy.exists() and f.rel not in have:
                arr = np.load(f.npy, mmap_mode="r")
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


def _jobs(config: EmbedConfig, embedder: Embedder, files: Sequence[_File]) -> Iterator[_Job]:
    """Load and VQ-VAE-encode each file into prior windows (tokens filled in)."""
    info = embedder.info
    for f in files:
        try:
            audio, _ = load_mono_normalised(f.path, info.sr)
        except audio_lib.AudioError as e:
            raise EmbedError(str(e)) from None
        presets.check_length(config.preset, info, audio.shape[0], str(f.path))
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


def run(config: EmbedConfig, embedder: Optional[Embedder] = None) -> Dict[str, Any]:
    """Embed every audio file of `config.audio_dir` not yet in `config.out`; returns a summary."""
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
    files = _plan_files(config, embedder)
    out = pathlib.Path(config.out)
    writer = _Writer(config, embedder)
    mine = [f for i, f in enumerate(files) if i % jax.process_count() == jax.process_index()]
    pending = [f for f in mine if not f.npy.exists()]
    for f in pending:
        _check_content(f)
    out.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        writer.reconcile(files)
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
