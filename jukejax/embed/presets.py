"""The two recipes: which audio the VQ-VAE sees, which token windows the prior sees, with which labels.

`jukemir` (p-lambda/jukemir `representations/jukebox/main.py`, the recipe of Castellon et al. 2021):
- the VQ-VAE encodes the first 25 s of the file (`get_z`: `audio[: 44100 * 25]`), top level only; the first
  n_ctx tokens (8192 = 23.8 s for 5b) are the clip. A file with fewer tokens is refused, as there ("Audio file
  is not long enough").
- labels (`get_cond`): artist and genre "unknown" (id 0; genre slots after the first are empty, -1), total length
  62 s floored to a multiple of the top hop (2,734,080 samples at 44.1 kHz), offset 0, and the window's
  `sample_length` n_ctx * hop (set by `SimplePrior.get_y`); lyrics do not enter (the 5b prior has none; a
  lyric prior gets an empty lyric window).
- activations mean-pooled over the clip's frames.

`frames` (chrisdonahue/sheetsage `sheetsage/representations/jukebox.py`, `Jukebox.__call__`):
- the whole file in windows of n_ctx * hop samples, the last one zero-padded; each window encoded on its own and
  its n_ctx codes fed to the prior as one window.
- labels per window: artist / genre unknown; total length = the file's length clamped to
  [min_duration * sr + 16, max_duration * sr - 96] (60 s and 600 s for 5b) and floored to the hop; offset of
  window i = i * n_ctx * hop, clamped to [0, total_length - n_ctx * hop].
- frame-level activations, cut to int(len(audio) / hop) frames; optionally resampled over time to `fps`
  frames per second as jukemirlib's `downsample` (librosa 'fft' = `scipy.signal.resample` to
  ceil(frames * fps / frame_rate) frames); EDGE uses 30.
"""
from __future__ import annotations

import dataclasses
import math
from typing import List, Optional

import numpy as np

from jukejax.embed.model import EmbedError, ModelInfo

PRESETS = ("jukemir", "frames")
JUKEMIR_ENCODE_SECONDS = 25
JUKEMIR_TOTAL_SECONDS = 62
# Sheet Sage keeps total_length strictly inside the 5b's [60 s, 600 s] timing range by these margins.
FRAMES_MIN_MARGIN = 16
FRAMES_MAX_MARGIN = 96


@dataclasses.dataclass
class Window:
    """One prior window: n_ctx top-level tokens (filled in after encoding), its label vector y, and how many
    of its frames hold audio."""
    y: np.ndarray
    n_valid: int
    tokens: Optional[np.ndarray] = None


def label_vector(info: ModelInfo, total_length: int, offset: int) -> np.ndarray:
    """[total_length, offset, sample_length, artist 0, genre 0, -1 ..., lyric window of zeros] (int64)."""
    genres = [0] + [-1] * (info.max_bow_genre_size - 1)
    return np.array([total_length, offset, info.window_samples, 0, *genres, *([0] * info.n_tokens)], np.int64)


def jukemir_encode_length(info: ModelInfo, n_samples: int) -> int:
    """Samples of the file the VQ-VAE encodes."""
    return min(n_samples, JUKEMIR_ENCODE_SECONDS * info.sr)


def check_length(preset: str, info: ModelInfo, n_samples: int, name: str) -> None:
    """The jukemir preset refuses files shorter than its clip; `frames` takes any non-empty file."""
    if preset == "jukemir" and n_samples // info.hop < info.n_ctx:
        raise EmbedError(f"{name}: {n_samples / info.sr:.2f} s is shorter than the jukemir preset's clip of "
                         f"{info.window_samples / info.sr:.2f} s ({info.n_ctx} top-level tokens); jukemir refuses "
                         f"such files (--preset=frames zero-pads them)")


def jukemir_windows(info: ModelInfo) -> List[Window]:
    total = (JUKEMIR_TOTAL_SECONDS * info.sr) // info.hop * info.hop
    return [Window(label_vector(info, total, 0), info.n_ctx)]


def frames_total_length(info: ModelInfo, n_samples: int) -> int:
    lo = int(info.min_duration * info.sr) + FRAMES_MIN_MARGIN
    hi = int(info.max_duration * info.sr) - FRAMES_MAX_MARGIN
    return min(max(n_samples, lo), hi) // info.hop * info.hop


def frames_windows(info: ModelInfo, n_samples: int) -> List[Window]:
    total = frames_total_length(info, n_samples)
    frames = n_samples // info.hop
    windows = []
    for i in range(math.ceil(n_samples / info.window_samples)):
        offset = max(min(i * info.window_samples, total - info.window_samples), 0)
        windows.append(Window(label_vector(info, total, offset), min(info.n_ctx, frames - i * info.n_ctx)))
    return windows


def frames_audio_windows(info: ModelInfo, audio: np.ndarray) -> np.ndarray:
    """(n_windows, n_ctx * hop) float32: the file cut into windows, the last zero-padded."""
    w = info.window_samples
    n = math.ceil(audio.shape[0] / w)
    out = np.zeros((n, w), np.float32)
    out.reshape(-1)[:audio.shape[0]] = audio
    return out


def resample_frames(frames: np.ndarray, frame_rate: float, fps: float) -> np.ndarray:
    """(T, ...) -> (ceil(T * fps / frame_rate), ...): jukemirlib's `downsample` (librosa 'fft' resampling)."""
    import scipy.signal

    n = int(np.ceil(frames.shape[0] * float(fps) / frame_rate))
    return scipy.signal.resample(frames, n, axis=0).astype(np.float32)
