"""The demo's "same music?" measure (scripts/check_reconstructions.py): chroma similarity is 1 for the same
audio, stays high when only the timbre or a little noise changes, and drops for different notes."""
import numpy as np
import pytest

from jukejax.testing import melody
from script_modules import load_script

SR = 22050
check = load_script("check_reconstructions")


def test_chroma_similarity_tells_same_notes_from_different_ones():
    x = melody(np.random.default_rng(0), 4.0, SR)
    other = melody(np.random.default_rng(1), 4.0, SR)
    noisy = x + 0.02 * np.random.default_rng(2).normal(size=x.shape).astype(np.float32)
    darker = np.convolve(x, np.ones(4) / 4, mode="same")           # same notes, duller timbre
    assert check.chroma_similarity(x, x, SR) == pytest.approx(1.0, abs=1e-9)
    assert check.chroma_similarity(x, noisy, SR) > 0.95
    assert check.chroma_similarity(x, darker, SR) > 0.95
    assert check.chroma_similarity(x, other, SR) < 0.8


def test_chroma_folds_octaves_onto_one_pitch_class():
    t = np.arange(SR) / SR
    a3, a4 = np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 440 * t)
    assert check.chroma(a3, SR).mean(0).argmax() == check.chroma(a4, SR).mean(0).argmax() == 9  # A
    with pytest.raises(ValueError, match="shorter than one"):
        check.chroma(a3[:100], SR)
