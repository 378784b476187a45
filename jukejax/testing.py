"""Synthetic music for tests and smoke runs: nothing can be downloaded, so tests make their own songs."""
from __future__ import annotations

import contextlib
import json
import pathlib
from typing import Optional, Sequence

import numpy as np


def melody(rng: np.random.Generator, seconds: float, sr: int, note_seconds: float = 0.25) -> np.ndarray:
    """A melody of decaying harmonic notes plus a little noise, float32 in [-0.4, 0.4]."""
    t = np.arange(int(seconds * sr)) / sr
    out = np.zeros_like(t)
    for start in np.arange(0, seconds, note_seconds):
        f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
        mask = (t >= start) & (t < start + note_seconds)
        env = np.exp(-6 * (t[mask] - start))
        for h in range(1, 5):
            out[mask] += env * np.sin(2 * np.pi * f0 * h * t[mask]) / h
    out += 0.01 * rng.normal(size=t.shape)
    return (0.4 * out / np.abs(out).max()).astype(np.float32)


def write_songs(folder, n: int, seconds: float, sr: int, seed: int = 0,
                artists: Optional[Sequence[str]] = None, genres: Optional[Sequence[str]] = None,
                lyrics: Optional[Sequence[str]] = None) -> pathlib.Path:
    """`n` wav files (`song{i}.wav`) and, when labels are given, a `metadata.jsonl` cycling through them."""
    import soundfile as sf

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        name = f"song{i}.wav"
        sf.write(folder / name, melody(rng, seconds, sr), sr)
        if artists:
            lines.append({"file": name, "artist": artists[i % len(artists)],
                          "genre": (genres or ["unknown"])[i % len(genres or ["unknown"])],
                          "lyrics": (lyrics or [""])[i % len(lyrics or [""])]})
    if lines:
        (folder / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def fake_encode_fn(hop_lengths: Sequence[int], bins: int = 32):
    """A deterministic stand-in for a VQ-VAE encoder: each hop's mean level quantised to `bins` codes."""
    def encode(audio):
        out = []
        for hop in hop_lengths:
            frames = audio[:, : audio.shape[1] // hop * hop, 0].reshape(audio.shape[0], -1, hop).mean(-1)
            out.append(np.clip(((frames + 0.4) / 0.8 * bins).astype(np.int64), 0, bins - 1))
        return out
    return encode


def make_codes_dataset(root, hop_lengths: Sequence[int] = (4, 8, 16), sr: int = 8000, n_songs: int = 4,
                       seconds: float = 4.0) -> pathlib.Path:
    """Songs -> audio dataset -> codes dataset (fake encoder) under `root`; returns the codes dir. For tests of
    prior training that do not need a trained VQ-VAE."""
    from jukejax.data import BuildConfig, build_dataset
    from jukejax.data import codes as codes_lib

    root = pathlib.Path(root)
    audio = write_songs(root / "audio", n_songs, seconds, sr, artists=["a", "b"], genres=["x", "y"])
    build_dataset(BuildConfig(audio_dir=str(audio), sr=sr, channels=1, window_seconds=2.0, test_fraction=0.25),
                  str(root / "data"))
    codes_lib.encode_dataset(str(root / "data"), str(root / "codes"), fake_encode_fn(hop_lengths),
                             hop_lengths=hop_lengths, chunk_seconds=1.0, context_seconds=0.0)
    return root / "codes"


@contextlib.contextmanager
def fast_compiles():
    """XLA with most optimisations off, for tests of tiny programs where compiling dominates and XLA's
    optimisations are not what is under test."""
    import jax
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)
