"""jukejax.audio: decode/encode round trips, band-limited resampling, mono mixes, atomic writes, bad files."""
import os

import numpy as np
import pytest
import soundfile as sf

from jukejax import audio

SR = 16000


def tone(freq, seconds=1.0, sr=SR, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def chirp(seconds=1.0, sr=SR, f0=100.0, f1=4000.0, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * seconds))
    return (amp * np.sin(phase)).astype(np.float32)


def peak_hz(x, sr):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spectrum) * sr / len(x)


def stereo(n=SR, seed=0):
    noise = np.random.default_rng(seed).uniform(-0.3, 0.3, n).astype(np.float32)
    return np.stack([chirp(n / SR), noise], axis=1)


@pytest.mark.parametrize("ext", [".wav", ".flac"])
def test_lossless_round_trip_is_bit_exact_on_the_int16_grid(tmp_path, ext):
    x = stereo()
    path = audio.write_audio(tmp_path / f"a{ext}", x, SR)
    y, sr = audio.read_audio(path)
    assert sr == SR and y.dtype == np.float32 and y.shape == x.shape
    want = np.clip(np.round(x * 32768), -32768, 32767) / 32768
    assert np.array_equal(y, want.astype(np.float32))
    # Reading then re-writing a 16-bit file changes nothing.
    audio.write_audio(tmp_path / f"b{ext}", y, SR)
    assert np.array_equal(audio.read_audio(tmp_path / f"b{ext}")[0], y)


@pytest.mark.parametrize("fmt,subtype,ext", [("OGG", "VORBIS", ".ogg"), ("MP3", "MPEG_LAYER_III", ".mp3")])
def test_lossy_formats_decode_with_the_tone_intact(tmp_path, fmt, subtype, ext):
    if not sf.check_format(fmt, subtype):
        pytest.skip(f"this libsndfile cannot write {fmt}")
    x = np.stack([tone(440.0, 1.0, 44100)] * 2, axis=1)
    path = tmp_path / f"t{ext}"
    sf.write(path, x, 44100, format=fmt, subtype=subtype)
    y, sr = audio.read_audio(path)
    assert sr == 44100 and y.shape[1] == 2
    assert abs(len(y) - len(x)) < 0.1 * 44100  # codecs pad by up to a few frames
    assert abs(peak_hz(y[:, 0], sr) - 440.0) < 2.0
    assert abs(audio.duration(path) - 1.0) < 0.1


def test_resample_keeps_a_tone_and_its_level():
    x = tone(440.0, 1.0, 44100)
    y = audio.resample(x, 44100, 22050)
    assert y.shape == (22050,) and y.dtype == np.float32
    assert abs(peak_hz(y, 22050) - 440.0) < 1.0
    core = slice(2000, -2000)  # away from the filter's edge transients
    rms_ratio = np.sqrt(np.mean(y[core] ** 2)) / (0.5 / np.sqrt(2))
    assert abs(rms_ratio - 1.0) < 1e-3


def test_resample_suppresses_content_above_the_new_nyquist():
    x = tone(15000.0, 1.0, 44100)  # above 11025 Hz: naive decimation would alias it to 7050 Hz
    naive = x[::2]
    y = audio.resample(x, 44100, 22050)
    core = slice(2000, -2000)
    assert np.sqrt(np.mean(naive[core] ** 2)) > 0.3
    assert np.sqrt(np.mean(y[core] ** 2)) < 1e-4 * np.sqrt(np.mean(x ** 2))


def test_resample_multichannel_identity_and_errors():
    x = stereo()
    y = audio.resample(x, SR, 8000)
    assert y.shape == (SR // 2, 2)
    assert audio.resample(x, SR, SR) is x
    with pytest.raises(ValueError, match="sr_out"):
        audio.resample(x, SR, 0)
    with pytest.raises(ValueError, match="shape"):
        audio.resample(np.zeros((2, 2, 2)), SR, 8000)


def test_read_audio_resamples_and_mixes_down(tmp_path):
    x = np.stack([tone(440.0, 1.0, 44100), tone(880.0, 1.0, 44100)], axis=1)
    sf.write(tmp_path / "s.wav", x, 44100, subtype="FLOAT")
    y, sr = audio.read_audio(tmp_path / "s.wav", sr=22050, mono=True)
    assert sr == 22050 and y.shape == (22050, 1)
    want = audio.resample(x.mean(axis=1, keepdims=True), 44100, 22050)
    assert np.max(np.abs(y - want)) < 1e-6


def test_read_audio_clips_float_files_over_full_scale(tmp_path):
    x = np.linspace(-2.0, 2.0, 1000, dtype=np.float32)
    sf.write(tmp_path / "loud.wav", x, SR, subtype="FLOAT")
    y, _ = audio.read_audio(tmp_path / "loud.wav")
    assert y.min() == -1.0 and y.max() == 1.0


def test_to_mono_and_blend():
    x = stereo()
    assert np.allclose(audio.to_mono(x)[:, 0], (x[:, 0] + x[:, 1]) / 2, atol=1e-7)
    assert audio.to_mono(x).shape == (len(x), 1)
    assert np.array_equal(audio.blend(x, 1.0)[:, 0], x[:, 0])
    assert np.array_equal(audio.blend(x, 0.0)[:, 0], x[:, 1])
    assert np.allclose(audio.blend(x, 0.25)[:, 0], 0.25 * x[:, 0] + 0.75 * x[:, 1], atol=1e-7)
    mono = x[:, :1]
    assert audio.blend(mono, 0.3) is mono
    with pytest.raises(ValueError, match="shape"):
        audio.blend(np.zeros((10, 3)), 0.5)


def test_duration_reads_the_header(tmp_path):
    sf.write(tmp_path / "d.flac", np.zeros((12345, 2), np.float32), SR)
    assert audio.duration(tmp_path / "d.flac") == 12345 / SR
    assert audio.probe(tmp_path / "d.flac") == (12345, SR, 2)
    with pytest.raises(audio.AudioError, match="d.wav"):
        audio.duration(tmp_path / "d.wav")


def _leftovers(folder):
    return sorted(os.listdir(folder))


def test_write_is_atomic_when_encoding_fails(tmp_path, monkeypatch):
    target = tmp_path / "out.wav"
    audio.write_audio(target, tone(440.0), SR)
    before = target.read_bytes()
    real_write = sf.SoundFile.write

    def write_half_then_fail(self, data):
        real_write(self, data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(sf.SoundFile, "write", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        audio.write_audio(target, chirp(), SR)
    with pytest.raises(OSError, match="disk full"):
        audio.write_audio(tmp_path / "new.flac", chirp(), SR)
    assert _leftovers(tmp_path) == ["out.wav"]  # no temp file, no half-written new.flac
    assert target.read_bytes() == before        # the old file was never touched


def test_write_is_atomic_when_rename_fails(tmp_path, monkeypatch):
    def fail(*args):
        raise PermissionError("read-only")

    monkeypatch.setattr(audio.os, "replace", fail)
    with pytest.raises(PermissionError):
        audio.write_audio(tmp_path / "x.wav", tone(440.0), SR)
    assert _leftovers(tmp_path) == []


def test_write_rejects_bad_requests(tmp_path):
    with pytest.raises(audio.AudioError, match=r"\.mp4"):
        audio.write_audio(tmp_path / "x.mp4", tone(440.0), SR)
    with pytest.raises(audio.AudioError, match="NaN"):
        audio.write_audio(tmp_path / "x.wav", np.full(10, np.nan, np.float32), SR)
    with pytest.raises(audio.AudioError, match="subtype"):
        audio.write_audio(tmp_path / "x.flac", tone(440.0), SR, subtype="FLOAT")
    assert _leftovers(tmp_path) == []


def _one_line_error(path, match):
    with pytest.raises(audio.AudioError, match=match) as info:
        audio.read_audio(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


def test_bad_files_raise_one_line_errors_naming_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF" + os.urandom(2000))
    _one_line_error(corrupt, "cannot decode")
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    _one_line_error(empty, "cannot decode")
    no_frames = tmp_path / "no_frames.wav"
    sf.write(no_frames, np.zeros((0, 2), np.float32), SR)
    _one_line_error(no_frames, "no audio frames")
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full((100, 1), np.nan, np.float32), SR, subtype="FLOAT")
    _one_line_error(nan, "NaN or infinite")
    _one_line_error(tmp_path / "missing.ogg", "cannot decode")
    assert issubclass(audio.AudioError, ValueError)


def test_a_few_nans_are_zeroed_with_a_warning(tmp_path):
    x = tone(440.0)
    x[[10, 20, 30]] = [np.nan, np.inf, -np.inf]
    sf.write(tmp_path / "some_nan.wav", x, SR, subtype="FLOAT")
    with pytest.warns(audio.AudioWarning, match=r"some_nan\.wav: 3 of"):
        y, _ = audio.read_audio(tmp_path / "some_nan.wav")
    assert np.all(y[[10, 20, 30], 0] == 0) and np.isfinite(y).all()


def test_audio_extensions_are_readable_formats():
    assert ".wav" in audio.AUDIO_EXTENSIONS and ".flac" in audio.AUDIO_EXTENSIONS
    assert all(e.startswith(".") and e == e.lower() for e in audio.AUDIO_EXTENSIONS)
