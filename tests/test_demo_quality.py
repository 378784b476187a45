"""The demo's listening proxies (scripts/demo_quality.py): pitch clarity tells notes from noise, and the model
card shows fine-tuned and kept stages of scripts/train_demo.py as such."""
import numpy as np
import pytest
import soundfile as sf

from jukejax.testing import melody
from script_modules import load_script

SR = 22050
quality = load_script("demo_quality")


def test_pitch_clarity_is_high_for_notes_and_low_for_noise():
    x = melody(np.random.default_rng(0), 4.0, SR)
    noise = quality.matched_noise(x)
    white = np.random.default_rng(1).normal(size=x.shape)
    assert quality.pitch_clarity(x, SR) > 0.8
    assert quality.pitch_clarity(white, SR) < 0.15
    assert quality.pitch_clarity(noise, SR) < 0.5 * quality.pitch_clarity(x, SR)
    # the same spectrum (but for the real-valued DC and Nyquist bins): only the periodicity differs
    np.testing.assert_allclose(np.abs(np.fft.rfft(noise))[1:-1], np.abs(np.fft.rfft(x))[1:-1], rtol=1e-3, atol=1e-3)
    half = x + 0.5 * np.std(x) * white
    assert quality.pitch_clarity(noise, SR) < quality.pitch_clarity(half, SR) < quality.pitch_clarity(x, SR)
    with pytest.raises(ValueError, match="at least"):
        quality.pitch_clarity(x[:100], SR)


def test_sample_folder_is_measured_per_level(tmp_path):
    rng = np.random.default_rng(0)
    notes = melody(rng, 3.0, SR)
    for level, audio in ((2, notes), (1, notes + 0.1 * rng.normal(size=notes.shape)),
                         (0, melody(np.random.default_rng(5), 3.0, SR))):
        (tmp_path / f"level_{level}").mkdir()
        sf.write(tmp_path / f"level_{level}" / "item_0.wav", audio.astype(np.float32), SR)
    got = quality.measure_samples(str(tmp_path))["levels"]
    assert "chroma_vs_above" not in got["2"]
    assert got["1"]["chroma_vs_above"] > 0.9             # kept the notes of level 2
    assert got["0"]["chroma_vs_above"] < 0.8             # other notes than level 1's
    assert got["1"]["pitch_clarity"] < got["2"]["pitch_clarity"]
    with pytest.raises(quality.UserError, match="no level_"):
        quality.measure_samples(str(tmp_path / "level_0"))


def test_model_card_shows_fine_tuned_and_kept_stages(tmp_path):
    model_card = load_script("model_card")
    log = lambda loss: {"loss": loss}  # noqa: E731
    card = {"stages": {
        "vqvae": {"config": "configs/demo_vqvae.py", "steps": 3000, "wall_seconds": 600, "first_log": log(4.0),
                  "last_log": log(0.9), "kept_from": "old"},
        "prior_level_1": {"config": "configs/demo_upsampler_1.py", "steps": 500, "wall_seconds": 120,
                          "first_log": log(5.0), "last_log": log(4.0),
                          "started_from": {"steps": 2000, "wall_seconds": 540, "first_log": log(7.5)}}},
        "train_args": "--minutes 1,2,3,4 --start_from old --keep vqvae"}
    text = model_card.write_model_card(tmp_path, card).read_text()
    assert "| vqvae (kept from the earlier model) | `configs/demo_vqvae.py` | 3000 | 10.0 min | 4.000 | 0.900 |" in text
    assert "| prior_level_1 | `configs/demo_upsampler_1.py` | 2000 + 500 | 9.0 + 2.0 min | 7.500 | 4.000 |" in text
    assert "--start_from old --keep vqvae" in text


def test_listening_table_in_the_model_card(tmp_path):
    model_card = load_script("model_card")
    levels = {"2": {"pitch_clarity": 0.55}, "1": {"pitch_clarity": 0.386, "chroma_vs_above": 0.967},
              "0": {"pitch_clarity": 0.357, "chroma_vs_above": 0.997}}
    card = {"listening": {"samples": [{"folder": "x", "label": "before", "items": 2, "levels": levels}],
                          "held_out": {"songs": 13, "seconds": 8.0, "pitch_clarity": 0.706,
                                       "noise_pitch_clarity": 0.472}}}
    text = model_card.write_model_card(tmp_path, card).read_text()
    assert "| before (2 items) | 0.550 | 0.386 (0.967) | 0.357 (0.997) |" in text
    assert "pitch clarity 0.706; noise with each song's average spectrum: 0.472." in text
