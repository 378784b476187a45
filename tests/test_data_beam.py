"""jukejax.data on Apache Beam: the DirectRunner (2 worker processes) builds the same dataset as the local
path from the same folder, bad files included; a failed job leaves nothing and a rerun does not duplicate."""
import json
import os
import struct
import sys

import numpy as np
import pytest
import soundfile as sf

from jukejax.data import builder as builder_mod
from jukejax.data import BuildConfig, DatasetError, build_dataset, load_source, load_summary

beam = pytest.importorskip("apache_beam", reason="the Beam builder needs the [beam] extra")

SR = 8000
MULTI_PROCESS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def _write(path, seconds, seed, channels=2, sr=SR):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, rng.integers(-20000, 20000, (int(seconds * sr), channels), dtype=np.int16), sr,
             subtype="PCM_16")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """6 good songs (mono/stereo, one at another rate, with and without metadata), and bad entries refused
    before the pipeline (garbage bytes, too short by its header, bad metadata line) and inside it (a wav
    cut to a third: its header is intact, its frames do not decode)."""
    root = tmp_path_factory.mktemp("songs")
    for i, seconds in enumerate((1.0, 0.7, 1.6, 0.55, 1.2)):
        _write(root / f"{'ab'[i % 2]}/song{i}.wav", seconds, seed=i, channels=1 + i % 2)
    _write(root / "other_rate.flac", 0.9, seed=9, sr=11025)
    (root / "corrupt.wav").write_bytes(b"RIFF" + os.urandom(2000))
    _write(root / "short.wav", 0.2, seed=10)
    _write(root / "truncated.flac", 2.0, seed=11)
    data = (root / "truncated.flac").read_bytes()
    (root / "truncated.flac").write_bytes(data[:len(data) // 3])
    assert sf.info(root / "truncated.flac").frames == 2 * SR  # the header is intact: the plan keeps it
    lines = [json.dumps({"file": "a/song0.wav", "artist": "Jane Pianist", "genre": "Jazz", "lyrics": "la"}),
             json.dumps({"file": "b/song1.wav", "artist": "Bo", "genre": "rock"}),
             json.dumps({"file": "other_rate.flac", "artist": "jane pianist", "lyrics": "é"}),
             "{broken"]
    (root / "metadata.jsonl").write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    return root


def _config(root):
    return BuildConfig(audio_dir=str(root), sr=SR, window_seconds=0.25, min_duration=0.5, test_fraction=0.34)


def _windows(data_dir):
    """split -> sorted (song_key, window_index, offset, total, song_id, artist, genre, lyrics, audio bytes)."""
    out = {}
    for split in load_summary(data_dir)["windows"]:
        source = load_source(data_dir, split)
        out[split] = sorted((r["song_key"], int(r["window_index"]), int(r["offset"]), int(r["total_length"]),
                             int(r["song_id"]), int(r["artist"]), int(r["genre"]), r["lyrics"],
                             r["audio"].shape, r["audio"].tobytes())
                            for r in (source[i] for i in range(len(source))))
    return out


def _same_except_location(a, b):
    a, b = dict(a), dict(b)
    a.pop("dataset_dir"), b.pop("dataset_dir")
    return a == b


@pytest.mark.slow  # two Beam worker processes start: 25 s idle, ~85 s on 2 loaded cores
def test_direct_runner_multi_process_builds_the_local_dataset(folder, tmp_path):
    local = build_dataset(_config(folder), tmp_path / "local")
    tf_before = "tensorflow" in sys.modules
    on_beam = build_dataset(_config(folder), tmp_path / "beam", runner="DirectRunner", beam_options=MULTI_PROCESS)
    assert not tf_before and "tensorflow" not in sys.modules
    assert _same_except_location(local, on_beam), (local, on_beam)
    reasons = {s["file"]: s["reason"] for s in on_beam["skipped"]}
    assert set(reasons) == {"corrupt.wav", "short.wav", "truncated.flac", "metadata.jsonl:4"}
    assert reasons["truncated.flac"].startswith("cannot decode audio")
    assert on_beam["songs"] == {"train": 4, "test": 2} and on_beam["artists"] == 3  # unknown, bo, jane_pianist
    assert _windows(tmp_path / "local") == _windows(tmp_path / "beam")
    for name in ("artists.txt", "genres.txt", "windows-train.npz", "windows-test.npz"):
        a = (builder_mod.dataset_path(tmp_path / "local") / name).read_bytes()
        assert a == (builder_mod.dataset_path(tmp_path / "beam") / name).read_bytes(), name


@pytest.mark.slow  # two in-process Beam builds: 17 s on an idle machine, ~1 min loaded
def test_failed_job_leaves_nothing_and_a_rerun_does_not_duplicate(folder, tmp_path, monkeypatch):
    real = builder_mod.song_examples
    calls = []

    def fail_on_third_song(song, pcm, config):
        calls.append(song.key)
        if len(calls) == 3:
            raise RuntimeError("worker crashed")
        return real(song, pcm, config)

    # In-process DirectRunner, so the patch reaches the transform.
    monkeypatch.setattr(builder_mod, "song_examples", fail_on_third_song)
    from jukejax.data import beam_builder
    monkeypatch.setattr(beam_builder, "song_examples", fail_on_third_song)
    with pytest.raises(Exception, match="worker crashed"):
        build_dataset(_config(folder), tmp_path / "out", runner="DirectRunner")
    assert os.listdir(tmp_path / "out") == []
    monkeypatch.setattr(beam_builder, "song_examples", real)
    summary = build_dataset(_config(folder), tmp_path / "out", runner="DirectRunner")
    assert sum(summary["windows"].values()) == sum(len(v) for v in _windows(tmp_path / "out").values())
    assert sorted(os.listdir(tmp_path / "out")) == ["jukejax_music"]


def test_a_split_with_no_decodable_song_is_the_local_error(tmp_path):
    root = tmp_path / "in"
    _write(root / "x.flac", 2.0, seed=1)
    data = (root / "x.flac").read_bytes()
    (root / "x.flac").write_bytes(data[:len(data) // 3])
    with pytest.raises(DatasetError, match="none of its 1 song"):
        build_dataset(BuildConfig(str(root), sr=SR, min_duration=0.5, test_fraction=0.0), tmp_path / "out",
                      runner="DirectRunner")
    assert os.listdir(tmp_path / "out") == []


def test_unknown_runner_is_one_line(folder, tmp_path):
    from jukejax.config import ConfigError
    with pytest.raises(ConfigError, match="--runner 'NoSuchRunner'"):
        build_dataset(_config(folder), tmp_path / "out", runner="NoSuchRunner")
