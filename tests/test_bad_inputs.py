"""The bad-input catalogue (docs/errors.md): each case gives a one-line error naming the input and what was
expected, or documented handling, never a traceback or a half-written output."""
import errno
import json
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import pytest
import soundfile as sf

from jukejax import audio
from jukejax.config import ConfigError, VQVAEConfig, build
from jukejax.data import BuildConfig, build_dataset, load_summary
from jukejax.prior import labels as labels_lib
from jukejax.prior import lyrics as lyrics_lib
from jukejax.testing import melody

ROOT = pathlib.Path(__file__).resolve().parents[1]
SR = 8000


def one_line(err) -> str:
    text = str(err.value if hasattr(err, "value") else err)
    assert "\n" not in text.strip(), text
    return text


# ---------------------------------------------------------------- audio files

def test_corrupt_audio(tmp_path):
    path = tmp_path / "bad.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(100))
    with pytest.raises(audio.AudioError) as e:
        audio.read_audio(path)
    assert "bad.wav" in one_line(e)


def test_empty_audio(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros((0, 1), np.float32), SR)
    with pytest.raises(audio.AudioError, match="empty") as e:
        audio.read_audio(path)
    assert "empty.wav" in one_line(e)


def test_silent_audio_is_valid_audio(tmp_path):
    """Documented: silence is music's rests; it is read (and trained on) like any audio."""
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros((SR, 1), np.float32), SR)
    x, sr = audio.read_audio(path)
    assert sr == SR and x.shape == (SR, 1) and not x.any()


def test_nan_samples_are_zeroed_with_a_warning(tmp_path):
    path = tmp_path / "nan.wav"
    x = melody(np.random.default_rng(0), 0.5, SR)[:, None]
    x[100:110] = np.nan
    sf.write(path, x, SR, subtype="FLOAT")
    with pytest.warns(audio.AudioWarning, match="nan.wav"):
        y, _ = audio.read_audio(path)
    assert np.isfinite(y).all() and (y[100:110] == 0).all()


def test_all_nan_audio(tmp_path):
    path = tmp_path / "allnan.wav"
    sf.write(path, np.full((100, 1), np.nan, np.float32), SR, subtype="FLOAT")
    with pytest.raises(audio.AudioError) as e:
        audio.read_audio(path)
    assert "allnan.wav" in one_line(e)


def test_six_channel_audio_mixes_to_mono(tmp_path):
    path = tmp_path / "surround.wav"
    sf.write(path, np.random.default_rng(0).uniform(-0.5, 0.5, (SR, 6)).astype(np.float32), SR)
    x, _ = audio.read_audio(path, mono=True)
    assert x.shape == (SR, 1)


@pytest.mark.parametrize("rate", [8000, 192000])
def test_other_sample_rates_are_resampled(tmp_path, rate):
    path = tmp_path / f"tone{rate}.wav"
    t = np.arange(rate // 2) / rate
    sf.write(path, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
    x, sr = audio.read_audio(path, sr=44100)
    assert sr == 44100 and abs(x.shape[0] - 22050) <= 1
    spectrum = np.abs(np.fft.rfft(x[:, 0]))
    assert abs(np.argmax(spectrum) * 44100 / x.shape[0] - 440) < 5


def test_unsupported_extension_for_writing(tmp_path):
    with pytest.raises(ValueError) as e:
        audio.write_audio(tmp_path / "out.xyz", np.zeros((10, 1), np.float32), SR)
    assert "out.xyz" in one_line(e)
    assert not list(tmp_path.iterdir())  # nothing half-written


# ---------------------------------------------------------------- dataset metadata

def test_bad_metadata_lines_are_skipped_and_counted(tmp_path):
    songs = tmp_path / "songs"
    songs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        sf.write(songs / f"s{i}.wav", melody(rng, 2.0, SR), SR)
    (songs / "notes.xyz").write_text("not audio")
    lines = [{"file": "s0.wav", "artist": "bach", "genre": "chorale", "lyrics": ""},
             {"file": "s1.wav", "artist": 42, "genre": "chorale", "lyrics": ""},      # wrong type
             {"file": "s2.wav", "genre": "chorale"},                                   # missing fields
             {"file": "missing.wav", "artist": "x", "genre": "y", "lyrics": ""}]       # no such file
    (songs / "metadata.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    summary = build_dataset(BuildConfig(audio_dir=str(songs), sr=SR, channels=1, window_seconds=1.0,
                                        test_fraction=0.0), str(tmp_path / "data"))
    reasons = json.dumps(summary)
    for name in ("missing.wav", "notes.xyz", "s1.wav"):
        assert name in reasons, name
    # documented: a line without artist/genre/lyrics labels that song "unknown" / no lyrics, like no line
    assert "s2.wav" not in reasons
    assert json.dumps(load_summary(str(tmp_path / "data"))) == reasons  # saved beside the dataset


# ---------------------------------------------------------------- labels and lyrics

@pytest.fixture()
def labeller(tmp_path):
    (tmp_path / "artists.txt").write_text("unknown;0\nbach;1\npalestrina;2\n")
    (tmp_path / "genres.txt").write_text("unknown;0\nchorale;1\nmadrigal;2\n")
    return labels_lib.Labeller.from_files(tmp_path / "artists.txt", tmp_path / "genres.txt", labels_v3=True,
                                          max_bow_genre_size=1, n_tokens=8)


def test_unknown_artist_uses_id_0_with_a_warning(labeller):
    with pytest.warns(UserWarning, match="mozart"):
        assert labeller.artist_id("Mozart") == 0


def test_unknown_genre_is_an_error_listing_names(labeller):
    with pytest.raises(ValueError) as e:
        labeller.genre_ids("chorales")
    assert "chorale" in one_line(e)


def test_empty_lyrics_give_a_padded_window(labeller):
    y = labels_lib.make_y("bach", "chorale", "", 8000 * 30, 0, 8000, labeller)
    assert (y[-8:] == 0).all()


def test_non_ascii_and_emoji_lyrics_are_transliterated():
    assert lyrics_lib.clean_lyrics("Kýrie eléison 🎵", v3=True) == "Kyrie eleison "
    tokens = lyrics_lib.tokenize(lyrics_lib.clean_lyrics("Ça va? 🎶 naïve", v3=True), v3=True)
    assert tokens.min() > 0


# ---------------------------------------------------------------- configs and workdirs

def test_inconsistent_levels_and_hops():
    with pytest.raises(ConfigError) as e:
        build(VQVAEConfig, dict(levels=2, downs_t=(3, 2, 2)), "vqvae")
    assert "vqvae.downs_t" in one_line(e)


def test_unknown_config_override_is_one_line_on_the_command_line():
    out = subprocess.run([sys.executable, "train.py", "--config=tests/tiny_configs.py:vqvae", "--config.data.foo=1",
                          "--describe"], cwd=str(ROOT), capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: unknown config field 'foo' (the config file lists the fields it has)"


def test_unwritable_workdir_is_checked_before_work(tmp_path):
    from jukejax.train import loop
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="not writable") as e:
        loop.check_workdir(str(tmp_path / "file" / "run"))
    one_line(e)


def test_full_disk_is_checked_before_work(tmp_path, monkeypatch):
    from jukejax import errors
    from jukejax.train import loop

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(errors.os, "fsync", full)
    with pytest.raises(OSError, match="No space left") as e:
        loop.check_workdir(str(tmp_path / "run"))
    assert "run" in one_line(e)


def test_truncated_checkpoint(tmp_path):
    from jukejax.checkpoint import CheckpointError, load_variables, save_variables
    import tiny_configs
    save_variables(str(tmp_path), tiny_configs.vqvae(), {"params": {"w": np.ones((4, 4), np.float32)}})
    for f in (tmp_path / "checkpoints" / "0" / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 64 and "manifest" not in f.name:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError) as e:
        load_variables(str(tmp_path))
    assert str(tmp_path) in one_line(e)


# ---------------------------------------------------------------- sampling settings

def test_negative_temperature_and_top_k_with_top_p():
    import jax
    import jax.numpy as jnp
    from jukejax.prior.autoregressive import ConditionalAutoregressive
    from jukejax.prior.config import AutoregressiveConfig
    from jukejax.sample import decode
    config = AutoregressiveConfig(n_ctx=16, bins=8, width=16, depth=1, heads=1, attn_order=0)
    params = ConditionalAutoregressive(config).init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))["params"]
    prefix = jnp.zeros((1, 16), jnp.int32)
    with pytest.raises(ValueError, match="temperature") as e:
        decode.sample_window(params, config, jax.random.key(0), prefix, 0, temperature=-0.5)
    one_line(e)
    with pytest.raises(ValueError, match="top") as e:
        decode.sample_window(params, config, jax.random.key(0), prefix, 0, top_k=5, top_p=0.9)
    one_line(e)


# ---------------------------------------------------------------- crashes mid-write

def test_codes_and_html_survive_a_crash_mid_write(tmp_path, monkeypatch):
    """A failure while writing leaves the previous complete file and no temporary file."""
    import os
    from jukejax.sample import outputs
    page = tmp_path / "index.html"
    outputs.write_index_html(page, "level 0", [outputs.HtmlItem("item_0.wav", "item_0.png", "bach", "chorale",
                                                                "Ach Gott")])
    before = page.read_bytes()

    def crash(fd):
        raise OSError(errno.EIO, "simulated crash mid-write")
    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="simulated"):
        outputs.write_index_html(page, "level 0 again", [])
    assert page.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html"]


def test_audio_survives_a_crash_mid_write(tmp_path, monkeypatch):
    path = tmp_path / "item_0.wav"
    audio.write_audio(path, np.zeros((100, 1), np.float32), SR)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError(errno.EIO, "simulated crash mid-write")
    monkeypatch.setattr(sf, "write", crash)
    with pytest.raises(OSError):
        audio.write_audio(path, np.ones((100, 1), np.float32) * 0.5, SR)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["item_0.wav"]
