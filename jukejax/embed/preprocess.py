"""Audio preprocessing of the published Jukebox-representation recipes, reproduced sample for sample.

p-lambda/jukemir `representations/jukebox/main.py::load_audio_from_file` (and jukemirlib, Sheet Sage's
`Jukebox.decode_audio`) read a file with `librosa.load(path, sr=44100)` under librosa 0.7.2 (the version
openai/jukebox pins), which

1. decodes with libsndfile to float32 `(channels, time)`,
2. mixes to mono by the mean over channels (float32),
3. resamples with resampy 0.2.2's `kaiser_best` filter when the file's rate differs, then zero-pads or trims the
   result to `ceil(n * sr_new / sr_orig)` samples (`librosa.util.fix_length`),

and then the recipe divides by the peak absolute sample of the whole file (skipped when it is 0).

`resample_kaiser_best` is resampy 0.2.2's band-limited interpolation (`resampy/core.py::resample`,
`interpn.py::resample_f`) written with numpy: a windowed-sinc table of 64 zero crossings x 512 samples per
crossing, Kaiser window (beta 14.769656459379492), roll-off 0.9475937167399596 of Nyquist, linearly interpolated
between table entries; each output sample accumulates the left wing then the right wing in float32, as the
numba loop does for float32 input. The table is rebuilt here from those parameters (it equals the one resampy
0.2.2 ships to within 2.3e-16).
"""
from __future__ import annotations

import functools
import math
import os
from typing import Tuple, Union

import numpy as np
import soundfile as sf

from jukejax.audio import AudioError

KAISER_BEST_ZEROS = 64
KAISER_BEST_PRECISION = 512          # table entries per zero crossing (2**9)
KAISER_BEST_BETA = 14.769656459379492
KAISER_BEST_ROLLOFF = 0.9475937167399596


@functools.lru_cache(maxsize=1)
def kaiser_best_window() -> np.ndarray:
    """Right half of resampy 0.2.2's `kaiser_best` interpolation filter, float64 (64 * 512 + 1,)."""
    import scipy.signal

    n = KAISER_BEST_PRECISION * KAISER_BEST_ZEROS
    sinc = KAISER_BEST_ROLLOFF * np.sinc(KAISER_BEST_ROLLOFF * np.linspace(0, KAISER_BEST_ZEROS, num=n + 1))
    taper = scipy.signal.windows.kaiser(2 * n + 1, KAISER_BEST_BETA)[n:]
    return taper * sinc


def resample_kaiser_best(x: np.ndarray, sr_orig: int, sr_new: int, chunk: int = 1 << 16) -> np.ndarray:
    """`librosa.resample(x, sr_orig, sr_new)` of librosa 0.7.2 (res_type 'kaiser_best', fix=True) for 1-D
    float32 `x`: resampy 0.2.2's interpolation, then zero-padded to `ceil(len(x) * sr_new / sr_orig)`."""
    x = np.asarray(x, np.float32)
    if x.ndim != 1:
        raise ValueError(f"resample_kaiser_best takes mono (time,) audio, got shape {x.shape}")
    if sr_orig == sr_new:
        return x
    ratio = float(sr_new) / sr_orig
    n_out = int(x.shape[0] * ratio)
    n_fixed = int(np.ceil(x.shape[0] * ratio))
    if n_out < 1:
        raise AudioError(f"{x.shape[0]} samples are too few to resample from {sr_orig} Hz to {sr_new} Hz")
    win = kaiser_best_window()
    if ratio < 1:
        win = win * ratio
    delta = np.zeros_like(win)
    delta[:-1] = np.diff(win)
    scale = min(1.0, ratio)
    step = int(scale * KAISER_BEST_PRECISION)
    nwin = win.shape[0]
    # The numba loop adds 1/ratio to a float64 register once per output sample; cumsum adds in the same order.
    time_register = np.concatenate([[0.0], np.cumsum(np.full(n_out - 1, 1.0 / ratio))])
    y = np.zeros(n_fixed, np.float32)
    n_orig = x.shape[0]
    for lo in range(0, n_out, chunk):
        tr = time_register[lo:lo + chunk]
        n = tr.astype(np.int64)
        acc = np.zeros(tr.shape[0], np.float32)
        for wing in (0, 1):
            frac = scale * (tr - n)
            if wing:
                frac = scale - frac
            index_frac = frac * KAISER_BEST_PRECISION
            offset = index_frac.astype(np.int64)
            eta = index_frac - offset
            taps = (nwin - offset) // step
            taps = np.minimum(n + 1, taps) if wing == 0 else np.minimum(n_orig - n - 1, taps)
            for i in range(int(taps.max(initial=0))):
                live = i < taps
                idx = np.where(live, offset + i * step, 0)
                weight = win[idx] + eta * delta[idx]
                src = np.clip(n - i if wing == 0 else n + i + 1, 0, n_orig - 1)
                # float32 += float64 * float32: the product and sum in float64, stored back as float32
                acc = np.where(live, (acc.astype(np.float64) + weight * x[src]).astype(np.float32), acc)
        y[lo:lo + tr.shape[0]] = acc
    return y


def read_file(path: Union[str, os.PathLike]) -> Tuple[np.ndarray, int]:
    """(float32 (time, channels) samples, sample rate) of an audio file, decoded by libsndfile as librosa 0.7.2
    decodes it; an undecodable file is an `AudioError` naming it."""
    try:
        data, file_sr = sf.read(os.fspath(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError, TypeError) as err:
        raise AudioError(f"{path}: cannot decode audio ({' '.join(str(err).split()) or type(err).__name__})"
                         ) from None
    return data, int(file_sr)


def check_content(data: np.ndarray, name: str) -> None:
    """Decoded audio is non-empty, finite and not silent: else an `AudioError` naming it (jukemir would feed a
    silent file to the model unnormalised; its features are then those of digital silence, not of music)."""
    if data.shape[0] == 0:
        raise AudioError(f"{name}: no audio samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{name}: audio has NaN or infinite samples")
    if not np.abs(data).max(initial=0.0) > 0:
        raise AudioError(f"{name}: audio is silent (every sample is 0); its features would be those of digital "
                         f"silence")


def mono_normalised(data: np.ndarray, data_sr: int, sr: int, name: str) -> np.ndarray:
    """Decoded float32 (time, channels) audio at `data_sr` as the jukemir recipe prepares it: mono (the float32
    mean of the channels), resampled to `sr`, peak 1. Problems are `AudioError`s naming `name`."""
    check_content(data, name)
    mono = data.T.mean(axis=0) if data.shape[1] > 1 else data[:, 0]
    mono = resample_kaiser_best(mono, int(data_sr), int(sr))
    peak = np.abs(mono).max()
    if peak == 0:
        raise AudioError(f"{name}: audio is silent (every sample is 0)")
    return mono / peak


def load_mono_normalised(path: Union[str, os.PathLike], sr: int) -> Tuple[np.ndarray, int]:
    """(audio, sample rate of the file) as the jukemir recipe loads it: float32 mono at `sr`, peak 1.
    Unreadable, empty, non-finite or silent files are `AudioError`s naming the file."""
    data, file_sr = read_file(path)
    return mono_normalised(data, file_sr, sr, str(path)), file_sr


def frames_after_resampling(n_frames: int, sr_orig: int, sr_new: int) -> int:
    """Length of a file of `n_frames` samples at `sr_orig` once `resample_kaiser_best` brings it to `sr_new`."""
    return n_frames if sr_orig == sr_new else int(math.ceil(n_frames * float(sr_new) / sr_orig))
