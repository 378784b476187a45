"""Reading, writing and resampling audio: the first and last step of the data flow
(the original's `utils/io.py::load_audio` and `data/files_dataset.py`).

Arrays are float32 `(time, channels)` in [-1, 1], the layout the original's loader returns after its
transpose. Decoding goes through libsndfile (soundfile), so anything libsndfile reads works (wav, flac,
ogg/vorbis, opus, mp3, aiff); the original used PyAV, which also read m4a/aac. Resampling is soxr's
band-limited 'VHQ' filter, the quality PyAV's swresample gives the original.
"""
from __future__ import annotations

import io
import os
import pathlib
import warnings
from typing import Optional, Tuple, Union

import numpy as np
import soundfile as sf
import soxr

from jukejax.errors import UserError, atomic_write_bytes

PathLike = Union[str, os.PathLike]

# Extensions libsndfile decodes; the dataset builder offers only these files to `read_audio`.
AUDIO_EXTENSIONS: Tuple[str, ...] = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif")

# What `write_audio` produces; wav and flac are lossless, so written samples read back bit-exact.
_WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}


class AudioError(UserError):
    """An audio file cannot be used: unreadable, corrupt, empty or not finite."""


class AudioWarning(UserWarning):
    """An audio file was usable only after a repair (non-finite samples set to zero)."""


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def read_audio(path: PathLike, sr: Optional[int] = None, mono: bool = False) -> Tuple[np.ndarray, int]:
    """Decode `path` to float32 `(time, channels)` in [-1, 1]; returns `(audio, sample_rate)`.

    With `sr`, the audio is resampled to `sr` and `sr` is returned. With `mono`, channels are averaged
    first (the original's downmix), which also makes resampling cheaper.

    Non-finite samples: a file that has some is repaired (those samples become 0, with an `AudioWarning`
    naming the file and the count) because a few bad samples from an encoder glitch should not cost a whole
    song; a file with no finite sample at all is an `AudioError`. Float files can exceed full scale; they are
    clipped to [-1, 1], which int16 storage downstream would do anyway.
    """
    try:
        audio, file_sr = sf.read(os.fspath(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError, TypeError) as err:
        raise AudioError(f"{path}: cannot decode audio ({_one_line(err)})") from None
    if audio.shape[0] == 0:
        raise AudioError(f"{path}: no audio frames (empty file)")
    finite = np.isfinite(audio)
    if not finite.all():
        if not finite.any():
            raise AudioError(f"{path}: every sample is NaN or infinite")
        bad = int(audio.size - np.count_nonzero(finite))
        warnings.warn(f"{path}: {bad} of {audio.size} samples were NaN or infinite and were set to 0",
                      AudioWarning, stacklevel=2)
        audio = np.where(finite, audio, np.float32(0.0))
    if mono:
        audio = to_mono(audio)
    if sr is not None and sr != file_sr:
        audio = resample(audio, file_sr, sr)
        file_sr = sr
    return np.clip(audio, -1.0, 1.0, out=audio), int(file_sr)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling of `(time,)` or `(time, channels)` audio from `sr_in` to `sr_out` Hz.

    Output length is `len * sr_out / sr_in` rounded to the nearest integer. Content above the new Nyquist
    frequency is filtered out rather than aliased (soxr 'VHQ': steep low-pass, linear phase).
    """
    for name, rate in (("sr_in", sr_in), ("sr_out", sr_out)):
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise ValueError(f"resample: {name} is {rate!r}; expected a positive integer sample rate")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim not in (1, 2):
        raise ValueError(f"resample: audio has shape {x.shape}; expected (time,) or (time, channels)")
    if sr_in == sr_out:
        return x
    return soxr.resample(np.ascontiguousarray(x), int(sr_in), int(sr_out), quality="VHQ")


def to_mono(x: np.ndarray) -> np.ndarray:
    """Average the channels of `(time, channels)` audio to `(time, 1)`, the original's mono mix."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"to_mono: audio has shape {x.shape}; expected (time, channels)")
    return x.mean(axis=1, keepdims=True, dtype=np.float32)


def blend(x: np.ndarray, m) -> np.ndarray:
    """`m * left + (1 - m) * right` as `(time, 1)`: the original's `aug_blend` mix; mono passes through.

    `m` is a scalar in [0, 1]; the training pipeline draws it from U(0, 1) per example.
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] not in (1, 2):
        raise ValueError(f"blend: audio has shape {x.shape}; expected (time, 1) or (time, 2)")
    if x.shape[1] == 1:
        return x
    m = np.float32(m)
    return m * x[:, :1] + (np.float32(1.0) - m) * x[:, 1:]


def probe(path: PathLike) -> Tuple[int, int, int]:
    """`(frames, sample_rate, channels)` of `path` from its header only (no full decode)."""
    try:
        info = sf.info(os.fspath(path))
    except (sf.SoundFileError, RuntimeError, OSError, TypeError) as err:
        raise AudioError(f"{path}: cannot read audio header ({_one_line(err)})") from None
    if info.samplerate <= 0:
        raise AudioError(f"{path}: header has sample rate {info.samplerate}")
    return int(info.frames), int(info.samplerate), int(info.channels)


def duration(path: PathLike) -> float:
    """Length of `path` in seconds, from the header only (no full decode)."""
    frames, sample_rate, _ = probe(path)
    return frames / sample_rate


def check_writable_audio_path(path: PathLike, subtype: str = "PCM_16") -> str:
    """The libsndfile format `write_audio` would use for `path` (from its extension); an `AudioError` when
    the extension or subtype cannot be written. Callers check this before long work whose result goes there."""
    path = pathlib.Path(path)
    fmt = _WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(f"{path}: cannot write extension {path.suffix!r}; "
                         f"supported: {', '.join(sorted(_WRITE_FORMATS))}")
    if not sf.check_format(fmt, subtype):
        raise AudioError(f"{path}: subtype {subtype!r} is not valid for {fmt}")
    return fmt


def write_audio(path: PathLike, x: np.ndarray, sr: int, subtype: str = "PCM_16") -> pathlib.Path:
    """Write `(time,)` or `(time, channels)` audio to a .wav or .flac file, clipped to [-1, 1].

    `subtype` is a libsndfile subtype valid for the format ('PCM_16', 'PCM_24', 'FLOAT' for wav only).

    The file appears atomically: samples go to a hidden temporary file in the same directory, which is
    renamed over `path` only once it is complete, so a crash or error never leaves a truncated file that
    looks like a finished sample. On failure the temporary file is removed and the error re-raised.
    """
    path = pathlib.Path(path)
    fmt = check_writable_audio_path(path, subtype)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise AudioError(f"{path}: audio has shape {x.shape}; expected non-empty (time, channels)")
    if not np.isfinite(x).all():
        raise AudioError(f"{path}: audio to write contains NaN or infinite samples")
    x = np.clip(x, -1.0, 1.0)
    if subtype == "PCM_16":
        # libsndfile scales floats by 32767 on write but 1/32768 on read; quantising with read's scale makes
        # read -> write of a 16-bit file lossless.
        x = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
    encoded = io.BytesIO()
    sf.write(encoded, x, int(sr), subtype=subtype, format=fmt)
    atomic_write_bytes(path, encoded.getvalue())
    return path
