"""Encoding one song into VQ-VAE codes in fixed-shape chunks with context, so memory stays bounded and the
encoder compiles once (the boundary effect is described in `jukejax.data.codes`)."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, List, Sequence, Tuple

import numpy as np

from jukejax import audio as audio_lib
from jukejax.config import ConfigError

EncodeFn = Callable[[np.ndarray], Sequence[Any]]
_INT16_SCALE = np.float32(32768.0)


def check_hops(hop_lengths: Sequence[int]) -> Tuple[int, ...]:
    """`hop_lengths` as ints, checked: positive, one per level, each a multiple of the one below."""
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
        top = check_hops(self.hop_lengths)[-1]
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
        top = check_hops(hop_lengths)[-1]
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


def encode_chunks(read: Callable[[int, int], np.ndarray], total: int, encode_fn: EncodeFn, plan: ChunkPlan
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

    return encode_chunks(read, total, encode_fn, plan)


class SongReader:
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


