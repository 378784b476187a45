"""jukejax.data: the TFDS builder (windows, labels, split, summary, atomic build) and the Grain pipeline
(chunk values, labels, determinism, process sharding, exact resume), all on synthetic songs, without TF."""
import json
import logging
import os
import pathlib
import sys

import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds

from jukejax import audio
from jukejax.config import ConfigError, DataConfig, build
from jukejax.data import builder as builder_mod
from jukejax.data import pipeline as pipeline_mod
from jukejax.data import (BATCH_FIELDS, BuildConfig, DatasetError, build_dataset, dataset_path, load_source,
                          load_summary, make_pipeline, make_pipeline_from_config, read_name_table,
                          scan_windows)
from jukejax.data.__main__ import main as cli_main

SR = 16000
WINDOW = 8000                 # 0.5 s windows, so a 12000-sample chunk spans two or three records
L = 12000


def _noise_chirp(n, seed, channels=2):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    chirp = 0.4 * np.sin(2 * np.pi * (200 + 1500 * t) * t)
    cols = [chirp] + [rng.uniform(-0.3, 0.3, n) for _ in range(channels - 1)]
    return np.clip(np.round(np.stack(cols, axis=1) * 32768), -32768, 32767).astype(np.int16)


# key -> (seconds, file sample rate, channels, metadata or None)
SONGS = {
    "a/song0.wav": (1.3, SR, 2, {"artist": "The Beatles", "genre": "Blues Rock", "lyrics": "hey jude"}),
    "a/song1.flac": (2.05, SR, 2, {"artist": "Björk", "genre": "pop", "lyrics": "army of me"}),
    "b/song2.wav": (1.6, SR, 1, None),
    "b/c/song3.wav": (1.2, 22050, 2, {"artist": "the beatles", "genre": "rock"}),
    "song4.wav": (3.1, SR, 2, {"artist": "Unknown", "genre": "", "lyrics": "last one"}),
}


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    """A folder of 5 songs (wav/flac, mono/stereo, one at another rate) and the int16 stereo each should
    become at SR."""
    root = tmp_path_factory.mktemp("songs")
    expected, lines = {}, []
    for i, (key, (seconds, sr, channels, meta)) in enumerate(SONGS.items()):
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        pcm = _noise_chirp(int(seconds * sr), seed=i, channels=channels)
        sf.write(path, pcm, sr, subtype="PCM_16")
        if sr == SR:
            want = pcm
        else:  # resampled songs must equal read_audio's output, quantised like the builder does
            want = builder_mod._to_int16(audio.read_audio(path, sr=SR)[0])
        expected[key] = np.repeat(want, 2, axis=1) if channels == 1 else want
        if meta is not None:
            lines.append(json.dumps({"file": key, **meta}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root, expected


def _config(root, **kw):
    return BuildConfig(audio_dir=str(root), sr=SR, window_seconds=WINDOW / SR, test_fraction=0.4, **kw)


@pytest.fixture(scope="module")
def built(songs, tmp_path_factory):
    """The dataset, built and read back through the pipeline once; TF must not have been imported."""
    root, _ = songs
    out = tmp_path_factory.mktemp("data")
    tf_before = "tensorflow" in sys.modules
    summary = build_dataset(_config(root), out)
    sources = {split: load_source(out, split) for split in ("train", "test")}
    next(make_pipeline(sources["train"], sample_length=L, batch_size=2, seed=0, shard_index=0, shard_count=1))
    return out, summary, sources, tf_before


def _records_by_song(source):
    by_song = {}
    for i in range(len(source)):
        r = source[i]
        by_song.setdefault(int(r["song_id"]), []).append(r)
    return {s: sorted(rs, key=lambda r: int(r["window_index"])) for s, rs in by_song.items()}


def _song_audio(sources):
    """song_id -> stored int16 audio, rebuilt from all windows of both splits."""
    return {sid: np.concatenate([r["audio"] for r in rs])
            for src in sources.values() for sid, rs in _records_by_song(src).items()}


def test_tensorflow_is_never_imported(built):
    out, summary, sources, tf_before = built
    assert not tf_before and "tensorflow" not in sys.modules
    assert len(sources["train"]) == summary["windows"]["train"]
    # Plain TFDS reads the prepared files by name too (the builder class is not registered).
    by_name = tfds.data_source("jukejax_music", data_dir=out, split="test", download=False)
    assert len(by_name) == summary["windows"]["test"]
    assert "tensorflow" not in sys.modules


def test_records_round_trip_the_source_audio_and_labels(songs, built):
    _, expected = songs
    out, summary, sources, _ = built
    artists, genres = read_name_table(dataset_path(out) / "artists.txt"), read_name_table(
        dataset_path(out) / "genres.txt")
    keys = sorted(SONGS)  # song ids follow sorted relative paths
    seen = set()
    for split, source in sources.items():
        for sid, records in _records_by_song(source).items():
            key = records[0]["song_key"].decode()
            seen.add(key)
            assert sid == keys.index(key)
            want = expected[key]
            for k, r in enumerate(records):
                assert int(r["window_index"]) == k and int(r["offset"]) == k * WINDOW
                assert int(r["total_length"]) == len(want) and int(r["sample_rate"]) == SR
                assert r["audio"].dtype == np.int16 and r["audio"].shape[1] == 2
                assert len(r["audio"]) == min(WINDOW, len(want) - k * WINDOW)  # last window keeps the rest
                assert np.array_equal(r["audio"], want[k * WINDOW:(k + 1) * WINDOW])
            assert len(records) == -(-len(want) // WINDOW)
            meta = SONGS[key][3] or {}
            assert artists[int(records[0]["artist"])] == builder_mod.normalize_name(meta.get("artist", ""))
            assert genres[int(records[0]["genre"])] == builder_mod.normalize_name(meta.get("genre", ""))
            assert records[0]["lyrics"].decode() == meta.get("lyrics", "")
    assert seen == set(SONGS)
    for source in sources.values():  # the stored position table agrees with every record's own fields
        scanned = scan_windows(source)
        assert all(np.array_equal(scanned[k], source.windows[k]) for k in builder_mod.WINDOW_FIELDS)
    # TFDS shuffles storage; the table, not record order, is what finds a song's windows.
    assert any(np.any(np.diff(src.windows["song_id"]) < 0) for src in sources.values())


def test_name_tables_are_sorted_with_unknown_first(built):
    out, summary, _, _ = built
    path = dataset_path(out)
    assert (path / "artists.txt").read_text() == "unknown;0\nbj_rk;1\nthe_beatles;2\n"
    assert (path / "genres.txt").read_text() == "unknown;0\nblues_rock;1\npop;2\nrock;3\n"
    assert summary["artists"] == 3 and summary["genres"] == 4


def test_split_is_by_song_disjoint_and_reproducible(songs, built, tmp_path):
    root, _ = songs
    out, summary, sources, _ = built
    train = set(sources["train"].windows["song_id"].tolist())
    test = set(sources["test"].windows["song_id"].tolist())
    assert not train & test and train | test == set(range(5))
    assert summary["songs"] == {"train": 3, "test": 2}  # round(5 * 0.4)
    again = build_dataset(_config(root), tmp_path)
    a, b = dataset_path(out), dataset_path(tmp_path)
    for name in sorted(os.listdir(a)):
        if name.endswith(".npz"):
            with np.load(a / name) as x, np.load(b / name) as y:
                assert all(np.array_equal(x[k], y[k]) for k in x.files)
        elif "array_record" in name or name.endswith(".txt"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert {k: v for k, v in again.items() if k != "dataset_dir"} == {
        k: v for k, v in summary.items() if k != "dataset_dir"}


def test_summary_is_saved_and_counts_hours(built):
    out, summary, _, _ = built
    assert load_summary(out) == summary
    total = sum(int(seconds * SR) for seconds, *_ in SONGS.values())
    assert abs(sum(summary["hours"].values()) * 3600 * SR - total) < 5
    assert summary["num_skipped"] == 0 and summary["window_length"] == WINDOW


def test_existing_dataset_needs_overwrite(songs, built):
    root, _ = songs
    out, summary, _, _ = built
    with pytest.raises(DatasetError, match="already exists"):
        build_dataset(_config(root), out)


def test_a_killed_builds_leftovers_go_with_the_next_build(songs, tmp_path):
    """kill -9 leaves `.jukejax_music.incomplete-<host>-<pid>-*`; the next successful build removes those of
    dead processes on this host and keeps those of live ones (a build running beside it)."""
    import socket
    import subprocess
    root, _ = songs
    out = tmp_path / "data"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    killed = out / f"{builder_mod.INCOMPLETE_PREFIX}{host}-{dead.pid}-abc123"
    live = out / f"{builder_mod.INCOMPLETE_PREFIX}{host}-{os.getppid()}-def456"
    other_host = out / f"{builder_mod.INCOMPLETE_PREFIX}elsewhere-{dead.pid}-ghi789"
    for leftover in (killed, live, other_host):
        (leftover / "partial").mkdir(parents=True)
    build_dataset(_config(root), out)
    assert not killed.exists()
    assert live.exists() and other_host.exists()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == sorted([live.name, other_host.name])


def _write(path, seconds, sr=SR, channels=2):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, _noise_chirp(int(seconds * sr), seed=7, channels=channels), sr, subtype="PCM_16")


def test_bad_inputs_are_skipped_with_reasons(tmp_path, caplog):
    root = tmp_path / "in"
    _write(root / "good1.wav", 1.0)
    _write(root / "sub/good2.flac", 1.0)
    _write(root / "badmeta.wav", 1.0)
    _write(root / "short.wav", 0.1)
    _write(root / "long.wav", 3.0)
    _write(root / "quad.wav", 1.0, channels=4)
    (root / "corrupt.wav").write_bytes(b"RIFF" + os.urandom(3000))
    (root / "empty.wav").write_bytes(b"")
    sf.write(root / "noframes.wav", np.zeros((0, 2), np.int16), SR)
    (root / "notes.txt").write_text("not audio")
    (root / ".DS_Store").write_bytes(b"\0")
    (root / "metadata.jsonl").write_text("\n".join([
        json.dumps({"file": "good1.wav", "artist": "A", "genre": "g"}),
        json.dumps({"file": "badmeta.wav", "artist": 7}),
        json.dumps({"file": "gone.wav", "artist": "B"}),
        "{not json",
        json.dumps({"artist": "no file"}),
    ]) + "\n")
    with caplog.at_level(logging.WARNING, logger="jukejax.data.builder"):
        summary = build_dataset(BuildConfig(str(root), sr=SR, window_seconds=0.5, min_duration=0.5,
                                            max_duration=2.0, test_fraction=0.0), tmp_path / "out")
    reasons = {s["file"]: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == {"badmeta.wav", "short.wav", "long.wav", "quad.wav", "corrupt.wav", "empty.wav",
                            "noframes.wav", "notes.txt", "gone.wav", "metadata.jsonl:4", "metadata.jsonl:5"}
    assert "\"artist\" is 7 (int); expected a string" in reasons["badmeta.wav"]
    assert "below min_duration 0.5" in reasons["short.wav"]
    assert "not below max_duration 2.0" in reasons["long.wav"]
    assert "4 channels" in reasons["quad.wav"]
    assert "cannot read audio header" in reasons["corrupt.wav"]
    assert reasons["empty.wav"] == "zero-length file"
    assert "no audio frames" in reasons["noframes.wav"]
    assert "unsupported extension '.txt'" in reasons["notes.txt"]
    assert "not found" in reasons["gone.wav"]
    assert "not valid JSON" in reasons["metadata.jsonl:4"]
    assert '"file"' in reasons["metadata.jsonl:5"]
    assert summary["num_skipped"] == 11 and summary["songs"] == {"train": 2}
    logged = caplog.text
    assert all(f"skipping {f}: " in logged for f in reasons)
    assert "differs from the predicted one" not in logged  # the position table came from the keys alone
    assert "test" not in summary["windows"]


def test_decode_failure_during_generation_skips_the_song(tmp_path, monkeypatch):
    root = tmp_path / "in"
    for name in ("x.wav", "y.wav", "z.wav"):
        _write(root / name, 1.0)
    real = audio.read_audio

    def fail_on_y(path, **kw):
        if pathlib.Path(path).name == "y.wav":
            raise audio.AudioError(f"{path}: every sample is NaN or infinite")
        return real(path, **kw)

    monkeypatch.setattr(audio, "read_audio", fail_on_y)
    summary = build_dataset(BuildConfig(str(root), sr=SR, test_fraction=0.0), tmp_path / "out")
    assert summary["skipped"] == [{"file": "y.wav", "reason": "every sample is NaN or infinite"}]
    assert summary["songs"] == {"train": 2}


def test_split_with_no_decodable_song_fails_cleanly(tmp_path, monkeypatch):
    root = tmp_path / "in"
    for name in ("x.wav", "y.wav"):
        _write(root / name, 1.0)

    def never(path, **kw):
        raise audio.AudioError(f"{path}: cannot decode audio (bad frame)")

    monkeypatch.setattr(audio, "read_audio", never)
    with pytest.raises(DatasetError, match="none of its 2 song"):
        build_dataset(BuildConfig(str(root), sr=SR, test_fraction=0.0), tmp_path / "out")
    _assert_nothing_left(tmp_path / "out")


def test_data_dir_inside_audio_dir_is_not_read_as_songs(tmp_path):
    root = tmp_path / "in"
    _write(root / "x.wav", 1.0)
    _write(root / "y.wav", 1.5)
    config = BuildConfig(str(root), sr=SR, test_fraction=0.0)
    first = build_dataset(config, root / "data")
    again = build_dataset(config, root / "data", overwrite=True)
    assert first["num_skipped"] == again["num_skipped"] == 0 and again["songs"] == {"train": 2}
    assert sorted(os.listdir(root / "data")) == ["jukejax_music"]  # the replaced copy is gone too
    assert len(load_source(root / "data")) == 2  # one 24 s window per song


def test_window_table_falls_back_to_a_scan_if_the_order_prediction_is_wrong(tmp_path, monkeypatch, caplog):
    root = tmp_path / "in"
    for name, seconds in (("x.wav", 1.0), ("y.wav", 0.7), ("z.wav", 1.3)):
        _write(root / name, seconds)
    monkeypatch.setattr(builder_mod, "_predicted_order", lambda split, keys: list(range(len(keys)))[::-1])
    with caplog.at_level(logging.WARNING, logger="jukejax.data.builder"):
        build_dataset(BuildConfig(str(root), sr=SR, window_seconds=0.25, test_fraction=0.0), tmp_path / "o")
    assert "differs from the predicted one" in caplog.text
    source = load_source(tmp_path / "o")
    scanned = scan_windows(source)
    assert all(np.array_equal(scanned[k], source.windows[k]) for k in builder_mod.WINDOW_FIELDS)


def _assert_nothing_left(data_dir):
    assert not data_dir.exists() or sorted(os.listdir(data_dir)) == []


def test_nothing_usable_is_one_line_error_and_no_dataset(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    (root / "corrupt.wav").write_bytes(b"garbage" * 100)
    (root / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="no usable audio") as info:
        build_dataset(BuildConfig(str(root)), tmp_path / "out")
    assert "\n" not in str(info.value) and "corrupt.wav" in str(info.value)
    _assert_nothing_left(tmp_path / "out")
    with pytest.raises(DatasetError, match="not a folder"):
        build_dataset(BuildConfig(str(tmp_path / "nowhere")), tmp_path / "out")


@pytest.mark.parametrize("where", ["generation", "tables"])
def test_failed_build_leaves_no_dataset_dir(tmp_path, monkeypatch, where):
    root = tmp_path / "in"
    for name in ("x.wav", "y.wav", "z.wav"):
        _write(root / name, 1.0)
    calls = []
    # generation: the second song fails to decode; tables: the per-split window tables (written after the
    # records, before the rename) fail
    fail_on = 2 if where == "generation" else 1

    def boom(*args, **kw):
        calls.append(args)
        if len(calls) == fail_on:
            raise RuntimeError("boom")
        return real(*args, **kw)

    target = (audio, "read_audio") if where == "generation" else (builder_mod, "_window_tables")
    real = getattr(*target)
    monkeypatch.setattr(*target, boom)
    with pytest.raises(RuntimeError, match="boom"):
        build_dataset(BuildConfig(str(root), sr=SR, test_fraction=0.0), tmp_path / "out")
    _assert_nothing_left(tmp_path / "out")
    with pytest.raises(DatasetError, match="no jukejax_music dataset"):
        load_source(tmp_path / "out")


def test_build_config_is_validated():
    with pytest.raises(ConfigError, match="channels"):
        BuildConfig("x", channels=3)
    with pytest.raises(ConfigError, match="test_fraction"):
        BuildConfig("x", test_fraction=1.0)
    with pytest.raises(ConfigError, match="max_duration"):
        BuildConfig("x", min_duration=5.0, max_duration=2.0)


# Pipeline ---------------------------------------------------------------------------------------------


def _pipe(source, **kw):
    args = dict(sample_length=L, batch_size=4, seed=0, shard_index=0, shard_count=1, mono=False)
    args.update(kw)
    return make_pipeline(source, **args)


def _take(it, n):
    return [next(it) for _ in range(n)]


def _rows(batch):
    return [(int(s), int(o), batch["audio"][i].tobytes())
            for i, (s, o) in enumerate(zip(batch["song_id"], batch["offset"]))]


def test_batches_hold_source_audio_at_their_offsets_with_labels(built):
    out, _, sources, _ = built
    stored = _song_audio(sources)
    source = sources["train"]
    heads = {sid: rs[0] for sid, rs in _records_by_song(source).items()}
    batches = _take(_pipe(source, max_bow_genre_size=3), 6)
    assert set(batches[0]) == set(BATCH_FIELDS)
    b = batches[0]
    assert b["audio"].dtype == np.float32 and b["audio"].shape == (4, L, 2)
    for name in ("total_length", "offset", "sample_length", "artist", "song_id"):
        assert b[name].dtype == np.int64 and b[name].shape == (4,)
    assert b["genre"].dtype == np.int64 and b["genre"].shape == (4, 3)
    assert b["lyrics"].dtype == object and all(isinstance(t, str) for t in b["lyrics"])
    spans = 0
    for b in batches:
        for i, sid in enumerate(b["song_id"]):
            sid, off = int(sid), int(b["offset"][i])
            song = stored[sid]
            assert 0 <= off <= len(song) - L
            assert np.array_equal(b["audio"][i], song[off:off + L].astype(np.float32) / 32768)
            head = heads[sid]
            assert int(b["total_length"][i]) == len(song) and int(b["sample_length"][i]) == L
            assert int(b["artist"][i]) == int(head["artist"])
            assert b["genre"][i].tolist() == [int(head["genre"]), -1, -1]
            assert b["lyrics"][i] == head["lyrics"].decode()
            spans += off // WINDOW != (off + L - 1) // WINDOW
    assert spans > 0  # some chunks were stitched from consecutive records


def test_mono_is_a_random_blend_or_the_mean(built):
    _, _, sources, _ = built
    stored = _song_audio(sources)
    for aug_blend in (True, False):
        b = next(_pipe(sources["train"], mono=True, aug_blend=aug_blend))
        assert b["audio"].shape == (4, L, 1)
        mixes = []
        for i, sid in enumerate(b["song_id"]):
            x = stored[int(sid)][int(b["offset"][i]):][:L].astype(np.float32) / 32768
            left, right, got = x[:, 0], x[:, 1], b["audio"][i, :, 0]
            if np.array_equal(left, right):  # a mono file stored as stereo: any mix gives it back
                assert np.array_equal(got, left)
                continue
            m = np.dot(left - right, got - right) / np.dot(left - right, left - right)
            assert np.max(np.abs(m * left + (1 - m) * right - got)) < 1e-6
            mixes.append(m)
        if aug_blend:
            assert all(0 <= m <= 1 for m in mixes) and len({round(m, 6) for m in mixes}) == len(mixes) > 1
        else:
            assert np.allclose(mixes, 0.5, atol=1e-4)


def test_pipeline_is_deterministic_per_seed(built):
    _, _, sources, _ = built
    a, b = _take(_pipe(sources["train"]), 4), _take(_pipe(sources["train"]), 4)
    assert all(_rows(x) == _rows(y) for x, y in zip(a, b))
    c = _take(_pipe(sources["train"], seed=1), 4)
    assert any(_rows(x) != _rows(y) for x, y in zip(a, c))


def test_record_order_does_not_matter(built):
    """TFDS may store records in any order: a shuffled plain list (indexed by scanning its fields) gives
    the same chunks as the MusicSource with its stored window table."""
    _, _, sources, _ = built
    src = sources["train"]
    perm = np.random.default_rng(3).permutation(len(src))
    shuffled = [src[int(i)] for i in perm]
    a, b = _take(_pipe(src), 3), _take(_pipe(shuffled), 3)
    assert all(_rows(x) == _rows(y) for x, y in zip(a, b))


def test_process_shards_are_disjoint_and_tile_the_global_batch(built):
    _, _, sources, _ = built
    src = sources["train"]
    whole = _take(_pipe(src, batch_size=4), 5)
    shards = [_take(_pipe(src, batch_size=4, shard_index=p, shard_count=2), 5) for p in range(2)]
    for step in range(5):
        s0, s1 = _rows(shards[0][step]), _rows(shards[1][step])
        assert len(s0) == len(s1) == 2
        assert sorted(s0 + s1) == sorted(_rows(whole[step]))
    with pytest.raises(ConfigError, match="not divisible"):
        _pipe(src, batch_size=3, shard_count=2)


def test_state_restores_the_exact_stream(built):
    _, _, sources, _ = built
    it = _pipe(sources["train"])
    _take(it, 3)
    state = json.loads(json.dumps(it.get_state()))  # survives being written to a checkpoint
    after = _take(it, 3)
    fresh = _pipe(sources["train"])
    fresh.set_state(state)
    assert [_rows(b) for b in _take(fresh, 3)] == [_rows(b) for b in after]
    it.set_state(state)  # and rewinding the same iterator
    assert [_rows(b) for b in _take(it, 3)] == [_rows(b) for b in after]


def test_one_epoch_visits_each_chunk_once(built):
    _, _, sources, _ = built
    src = sources["train"]
    index = pipeline_mod.build_song_index(src.windows, L)
    items = index.total // L
    it = _pipe(src, batch_size=2, aug_shift=False, num_epochs=1)
    rows = [r[:2] for b in it for r in _rows(b)]
    assert len(rows) == items // 2 * 2 and len(set(rows)) == len(rows)
    every = {(int(index.song_ids[s]), o) for s, o in (pipeline_mod.locate(index, i, 0, L)
                                                      for i in range(items))}
    assert set(rows) <= every


def test_chunks_are_drawn_in_proportion_to_song_length():
    lengths = np.array([1000, 3000, 6000])
    index = pipeline_mod.SongIndex(song_ids=np.arange(3), lengths=lengths, ends=np.cumsum(lengths),
                                   first=np.arange(4), positions=np.arange(3), offsets=np.zeros(3, int))
    rng = np.random.default_rng(0)
    counts = np.zeros(3)
    for item in range(100):
        for _ in range(20):
            slot, off = pipeline_mod.locate(index, item, int(rng.integers(-50, 50)), 100)
            assert 0 <= off <= lengths[slot] - 100
            counts[slot] += 1
    assert np.allclose(counts / counts.sum(), lengths / lengths.sum(), atol=0.01)


def test_short_songs_are_excluded_and_all_short_is_an_error(built):
    _, _, sources, _ = built
    src = sources["train"]
    totals = {int(s): int(t) for s, t in zip(src.windows["song_id"], src.windows["total_length"])}
    long_enough = sorted(s for s, t in totals.items() if t >= 25000)
    assert 0 < len(long_enough) < len(totals)
    seen = {int(s) for b in _take(_pipe(src, sample_length=25000), 5) for s in b["song_id"]}
    assert seen == set(long_enough)
    longest = max(totals.values())
    with pytest.raises(DatasetError, match=f"sample_length {longest + 1} .*longest has {longest} samples"):
        _pipe(src, sample_length=longest + 1)


def test_pipeline_from_data_config(built):
    out, _, _, _ = built
    cfg = build(DataConfig, {"dataset_dir": str(out), "sample_length": L, "batch_size": 2, "seed": 5,
                             "num_epochs": 1}, "data")
    batches = list(make_pipeline_from_config(cfg, shard_index=0, shard_count=1, max_bow_genre_size=5))
    assert batches and batches[0]["audio"].shape == (2, L, 1) and batches[0]["genre"].shape == (2, 5)
    with pytest.raises(ConfigError, match="num_epochs"):
        build(DataConfig, {"num_epochs": 0}, "data")
    with pytest.raises(DatasetError, match="split 'valid' not in"):
        load_source(out, "valid")


def test_worker_processes_give_the_same_batches(built):
    _, _, sources, _ = built
    ref = [_rows(b) for b in _take(_pipe(sources["train"]), 3)]
    it = _pipe(sources["train"], worker_count=1)
    try:
        assert [_rows(b) for b in _take(it, 3)] == ref
    finally:
        it.close()


def test_cli_builds_and_reports(songs, tmp_path, capsys):
    root, _ = songs
    assert cli_main(["build", "--audio_dir", str(root), "--data_dir", str(tmp_path), "--sr", str(SR),
                     "--window_seconds", "1.0", "--channels", "1", "--test_fraction", "0"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["songs"] == {"train": 5} and printed["channels"] == 1
    assert load_source(tmp_path, "train")[0]["audio"].shape[1] == 1
    assert cli_main(["info", "--data_dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == printed
    assert cli_main(["build", "--audio_dir", str(tmp_path / "none"), "--data_dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_every_bad_entry_is_built_or_skipped_with_its_reason(tmp_path):
    """Broken and looping symbolic links, a folder link back up the tree, invalid UTF-8 in metadata.jsonl,
    a UTF-8 byte-order mark, a 1-sample file and a header claiming 2^31-1 Hz: none aborts the build, each
    is built or listed."""
    root = tmp_path / "in"
    _write(root / "good.wav", 1.0)
    _write(root / "sub/good2.wav", 1.0)
    sf.write(root / "one.wav", np.ones((1, 2), np.int16), SR)
    sf.write(root / "one_at_48k.wav", np.ones((1, 2), np.int16), 48000)  # less than one sample at SR
    _write(root / "huge_rate.wav", 0.1)
    header = bytearray((root / "huge_rate.wav").read_bytes())
    header[24:28] = (2**31 - 1).to_bytes(4, "little")                    # the fmt chunk's sample rate
    (root / "huge_rate.wav").write_bytes(bytes(header))
    os.symlink(root / "missing.wav", root / "broken.wav")
    os.symlink(root / "loop_b.wav", root / "loop_a.wav")
    os.symlink(root / "loop_a.wav", root / "loop_b.wav")
    os.symlink("..", root / "sub/up")
    os.symlink(root / "good.wav", root / "sub/linked.wav")                # a link to a file is a song
    (root / "metadata.jsonl").write_bytes(
        "\ufeff".encode() + json.dumps({"file": "good.wav", "artist": "A", "genre": "g"}).encode() + b"\n"
        + b'{"file": "sub/good2.wav", "artist": "caf\xe9"}\n')
    summary = build_dataset(BuildConfig(str(root), sr=SR, test_fraction=0.0), tmp_path / "out")
    reasons = {s["file"]: s["reason"] for s in summary["skipped"]}
    assert reasons == {
        "metadata.jsonl:2": "not valid UTF-8 (byte 0xe9 at column 41)",
        "sub/up": f"symbolic link loop (folder {os.path.realpath(root)} is already read)",
        "broken.wav": f"broken symbolic link (to {root / 'missing.wav'})",
        "loop_a.wav": "symbolic link loop",
        "loop_b.wav": "symbolic link loop",
        "huge_rate.wav": "header claims a sample rate of 2147483647 Hz; expected 1000 to 768000 Hz",
        "one_at_48k.wav": "1 frame(s) at 48000 Hz is less than one sample at sr 16000",
    }
    assert summary["songs"] == {"train": 4}  # good, sub/good2, sub/linked, one
    source = load_source(tmp_path / "out")
    by_key = {r["song_key"].decode(): r for r in (source[i] for i in range(len(source)))}
    assert by_key["one.wav"]["audio"].shape == (1, 2)
    assert read_name_table(dataset_path(tmp_path / "out") / "artists.txt") == ["unknown", "a"]
    assert by_key["good.wav"]["artist"] == 1  # the BOM no longer hides the first line's labels


def test_a_song_that_resamples_to_nothing_is_skipped_not_lost(tmp_path, monkeypatch):
    root = tmp_path / "in"
    _write(root / "x.wav", 1.0)
    _write(root / "y.wav", 1.0)
    real = audio.read_audio
    monkeypatch.setattr(audio, "read_audio", lambda path, **kw: (real(path, **kw)[0][:0], SR)
                        if pathlib.Path(path).name == "y.wav" else real(path, **kw))
    summary = build_dataset(BuildConfig(str(root), sr=SR, test_fraction=0.0), tmp_path / "out")
    assert summary["skipped"] == [{"file": "y.wav", "reason": f"no samples left after resampling to sr {SR}"}]


def test_cli_user_errors_exit_2_and_name_the_flag(songs, tmp_path, capsys, monkeypatch):
    root, _ = songs
    args = ["build", "--audio_dir", str(root), "--data_dir", str(tmp_path), "--sr", str(SR), "--test_fraction",
            "0", "--window_seconds", "1.0"]
    assert cli_main(args) == 0
    capsys.readouterr()
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {dataset_path(tmp_path)} already exists; remove it or pass --overwrite"
    assert cli_main(args + ["--beam_options", "direct_num_workers=2"]) == 2
    assert "--beam_options needs --runner" in capsys.readouterr().err
    # Without Apache Beam installed, --runner says what to install.
    monkeypatch.setitem(sys.modules, "apache_beam", None)
    monkeypatch.delitem(sys.modules, "jukejax.data.beam_builder", raising=False)
    assert cli_main(args + ["--overwrite", "--runner", "DirectRunner"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'jukejax[beam]'" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):
        cli_main(["build", "--help"])
    helptext = " ".join(capsys.readouterr().out.split())
    assert "must equal the vqvae.sr of the VQ-VAE config" in helptext
