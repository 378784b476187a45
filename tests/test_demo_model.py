"""The bundled demo model (models/demo) samples end to end, shortened: what `make sample` runs."""
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo"


def test_bundle_is_complete_and_small():
    for part in ("vqvae", "prior_level_0", "prior_level_1", "prior_level_2", "ids/artist_ids.txt",
                 "ids/genre_ids.txt", "MODEL_CARD.md"):
        assert (DEMO / part).exists(), part
    size = sum(f.stat().st_size for f in DEMO.rglob("*") if f.is_file())
    assert size <= 30 * 2**20, size


@pytest.mark.slow
def test_make_sample_command_on_a_shortened_length(tmp_path):
    out = tmp_path / "samples"
    cmd = [sys.executable, "sample.py", "--checkpoint=models/demo", f"--workdir={out}", "--mode=ancestral",
           "--artist=johann_sebastian_bach", "--genre=chorale", "--lyrics=Ach Gott, vom Himmel sieh darein",
           "--sample_length_in_seconds=1.5", "--total_sample_length_in_seconds=60", "--n_samples=1",
           "--temperature=0.98", "--seed=0"]
    done = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for level in (0, 1, 2):
        wav = out / f"level_{level}" / "item_0.wav"
        audio, sr = sf.read(wav)
        assert sr == 22050 and audio.shape[0] > 0.5 * sr and np.isfinite(audio).all()
        assert (out / f"level_{level}" / "index.html").is_file()
        assert (out / f"level_{level}" / "item_0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out) in done.stdout  # says where the music is


def test_help_lists_the_demo_artists_and_genres():
    done = subprocess.run([sys.executable, "sample.py", "--help"], cwd=str(ROOT), capture_output=True, text=True)
    names = [line.split(";")[0] for line in (DEMO / "ids" / "artist_ids.txt").read_text().splitlines()]
    text = done.stdout + done.stderr
    assert all(name in text for name in names if name)
