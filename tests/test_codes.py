"""jukejax.data.codes: pre-encoding songs to VQ-VAE codes (chunked, exact lengths, labels, atomic build, CLI)
and the Grain pipeline of prior training windows (alignment of z / z_cond / y, determinism, sharding, resume,
short songs), on synthetic songs with a fake deterministic encoder and a tiny random VQ-VAE, without TF."""
import dataclasses
import json
import pathlib
import re
import sys

import jax
import numpy as np
import pytest
import soundfile as sf
from flax import linen as nn
import tensorflow_datasets as tfds

from jukejax import audio
from jukejax.config import ConfigError, VQVAEConfig, build
from jukejax.data import (ChunkPlan, DatasetError, build_dataset, build_window_index, codes_path, dataset_path,
                          encode_dataset, encode_song, load_codes_source, load_source, make_prior_pipeline,
                          window_table)
from jukejax.data import __main__ as data_cli
from jukejax.data import BuildConfig, build_song_index

SR = 8000
HOPS = (4, 16, 64)            # fake encoder: ratio 4 between levels, as Jukebox's upsamplers
SCALE = 8000.0                # fake code = round(mean of the hop's mono samples * SCALE)
LONG_LYRICS = "Hello darkness, my old friend. I've come to talk with you again! " * 3

# key -> (seconds, channels, metadata or None)
SONGS = {
    "s0.wav": (2.0, 2, {"artist": "Alpha", "genre": "rock", "lyrics": LONG_LYRICS}),
    "s1.wav": (1.5, 1, {"artist": "Beta", "genre": "pop", "lyrics": "la la"}),
    "s2.wav": (3.1, 2, {"artist": "Alpha", "genre": "jazz", "lyrics": LONG_LYRICS[::-1]}),
    "s3.wav": (1.17, 2, None),
    "short.wav": (0.3, 2, {"artist": "Gamma", "genre": "pop", "lyrics": "short"}),
}


def _song(n, seed, channels):
    """A ramp (so each hop's mean, hence each fake code, tells where in the song it is) plus a tone; the
    channels differ, so the mono mix matters."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    ramp = 0.7 * (2 * t / n - 1)
    cols = [ramp + 0.1 * np.sin(2 * np.pi * 50 * t / SR + k) + rng.uniform(-0.02, 0.02, n) for k in range(channels)]
    return np.clip(np.round(np.stack(cols, axis=1) * 32768), -32768, 32767).astype(np.int16)


def fake_encode(x):
    x = np.asarray(x, np.float64)[..., 0]
    n, t = x.shape
    return [np.round(x.reshape(n, t // h, h).mean(-1) * SCALE).astype(np.int32) for h in HOPS]


def _one_shot(mono, encode=fake_encode, hops=HOPS):
    """Codes of the whole song in one call, padded to the top hop and cut to T // hop."""
    total = len(mono)
    padded = np.zeros(-(-total // hops[-1]) * hops[-1], np.float32)
    padded[:total] = mono
    return [np.asarray(z)[0, :total // h] for z, h in zip(encode(padded[None, :, None]), hops)]


@pytest.fixture(scope="module")
def audio_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("songs")
    lines = []
    for i, (key, (seconds, channels, meta)) in enumerate(SONGS.items()):
        sf.write(root / key, _song(int(seconds * SR), i, channels), SR, subtype="PCM_16")
        if meta:
            lines.append(json.dumps({"file": key, **meta}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path_factory.mktemp("audio_data")
    tf_before = "tensorflow" in sys.modules
    build_dataset(BuildConfig(audio_dir=str(root), sr=SR, window_seconds=0.25, test_fraction=0.25), out)
    return out, tf_before


def _songs_of(data_dir):
    """song_id -> (split, mono float32 audio rebuilt from the stored windows, first window record)."""
    songs = {}
    for split in ("train", "test"):
        source = load_source(data_dir, split)
        index = build_song_index(window_table(source), 1)
        for slot, sid in enumerate(index.song_ids):
            positions = index.positions[index.first[slot]:index.first[slot + 1]]
            records = [source[int(p)] for p in positions]
            pcm = np.concatenate([r["audio"] for r in records])
            songs[int(sid)] = (split, audio.to_mono(pcm.astype(np.float32) / 32768.0)[:, 0], records[0])
    return songs


class Recorder:
    def __init__(self, fn, fail_after=None):
        self.fn, self.shapes, self.fail_after = fn, [], fail_after

    def __call__(self, x):
        self.shapes.append(np.shape(x))
        if self.fail_after is not None and len(self.shapes) > self.fail_after:
            raise RuntimeError("encoder crashed")
        return self.fn(x)


@pytest.fixture(scope="module")
def codes(audio_data, tmp_path_factory):
    data_dir, _ = audio_data
    out = tmp_path_factory.mktemp("codes")
    encoder = Recorder(fake_encode)
    # 0.1 s chunks = 768 samples (rounded down to 12 top hops), 0.02 s context = 192 samples (3 top hops).
    summary = encode_dataset(data_dir, out, encoder, hop_lengths=HOPS, chunk_seconds=0.1, context_seconds=0.02,
                             chunk_batch=2, encoder_info={"name": "fake"})
    sources = {split: load_codes_source(out, split) for split in ("train", "test")}
    return out, summary, sources, encoder, _songs_of(data_dir)


def _records(source):
    return {int(source[i]["song_id"]): source[i] for i in range(len(source))}


def test_codes_have_total_length_over_hop_and_equal_one_shot_encoding(codes):
    out, summary, sources, encoder, songs = codes
    seen = set()
    for split, source in sources.items():
        for sid, r in _records(source).items():
            want_split, mono, _ = songs[sid]
            assert split == want_split and int(r["total_length"]) == len(mono)
            one_shot = _one_shot(mono)
            for level, hop in enumerate(HOPS):
                z = r[f"codes_{level}"]
                assert z.dtype == np.int16 and len(z) == len(mono) // hop
                np.testing.assert_array_equal(z, one_shot[level])
            seen.add(sid)
    assert seen == set(songs)
    # One compiled shape: (chunk_batch, chunk + 2 * context, 1), tail chunks and batches zero-padded.
    assert set(encoder.shapes) == {(2, 768 + 2 * 192, 1)}


def test_chunking_is_exact_for_a_local_encoder_and_chunk_lengths_are_top_hops():
    mono = audio.to_mono(_song(5000, 7, 2).astype(np.float32) / 32768.0)[:, 0]
    ref = _one_shot(mono)
    for chunk, context, batch in [(64, 0, 1), (128, 64, 3), (640, 128, 2), (64 * 100, 0, 1)]:
        got = encode_song(mono, fake_encode, ChunkPlan(HOPS, chunk, context, batch))
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b)
    plan = ChunkPlan.from_seconds(HOPS, SR, chunk_seconds=0.1, context_seconds=0.001)
    assert (plan.chunk_length, plan.context) == (768, 64)
    assert ChunkPlan.from_seconds(HOPS, SR, chunk_seconds=1e-6).chunk_length == 64
    with pytest.raises(ConfigError, match="chunk_length 100 is not a positive multiple of the top hop 64"):
        ChunkPlan(HOPS, 100)
    with pytest.raises(ConfigError, match="multiple of the one below"):
        ChunkPlan((4, 6), 12)
    with pytest.raises(ValueError, match=r"encode_fn level 1: codes of shape"):
        encode_song(mono, lambda x: [z[:, :-1] if i == 1 else z for i, z in enumerate(fake_encode(x))],
                    ChunkPlan(HOPS, 64))


def test_records_keep_labels_split_tables_and_summary(audio_data, codes):
    data_dir, _ = audio_data
    out, summary, sources, _, songs = codes
    for split, source in sources.items():
        for sid, r in _records(source).items():
            head = songs[sid][2]
            for field in ("artist", "genre", "lyrics", "song_key", "sample_rate"):
                assert r[field] == head[field], field
            np.testing.assert_array_equal(r["hop_lengths"], HOPS)
        # songs-{split}.npz matches the records at every position
        for i in range(len(source)):
            r = source[i]
            assert source.songs["song_id"][i] == r["song_id"]
            assert source.songs["total_length"][i] == r["total_length"]
            for level in range(3):
                assert source.lengths(level)[i] == len(r[f"codes_{level}"])
    path = codes_path(out)
    for name in ("artists.txt", "genres.txt"):
        assert (path / name).read_bytes() == (dataset_path(data_dir) / name).read_bytes()
    for source in sources.values():
        for r in _records(source).values():
            meta = SONGS[r["song_key"].decode()][2]
            assert source.artists[int(r["artist"])] == (meta["artist"].lower() if meta else "unknown")
            assert source.genres[int(r["genre"])] == (meta["genre"] if meta else "unknown")
    saved = json.loads((path / "summary.json").read_text())
    assert saved == summary and summary["hop_lengths"] == list(HOPS) and summary["levels"] == [0, 1, 2]
    assert summary["songs"] == {s: len(src) for s, src in sources.items()}
    assert summary["tokens"]["train"]["0"] == int(sources["train"].lengths(0).sum())
    assert (summary["chunk_length"], summary["context_length"], summary["encoder"]) == (768, 192, {"name": "fake"})
    assert not [p for p in pathlib.Path(out).iterdir() if p.name.startswith(".")]


def test_tensorflow_is_never_imported(audio_data, codes):
    _, tf_before = audio_data
    out, summary, *_ = codes
    by_name = tfds.data_source("jukejax_codes", data_dir=out, split="train", download=False)
    assert len(by_name) == summary["songs"]["train"]
    assert not tf_before and "tensorflow" not in sys.modules


def test_subset_of_levels_splits_and_existing_dataset(audio_data, codes, tmp_path):
    data_dir, _ = audio_data
    summary = encode_dataset(data_dir, tmp_path, fake_encode, hop_lengths=HOPS, levels=[2, 1], splits=["test"],
                             chunk_seconds=0.5, context_seconds=0)
    source = load_codes_source(tmp_path, "test")
    assert source.levels == (1, 2) and set(summary["songs"]) == {"test"}
    assert "codes_0" not in source[0] and "codes_2" in source[0]
    with pytest.raises(DatasetError, match="split 'train' not in"):
        load_codes_source(tmp_path, "train")
    with pytest.raises(DatasetError, match="already exists"):
        encode_dataset(data_dir, tmp_path, fake_encode, hop_lengths=HOPS)
    with pytest.raises(ConfigError, match=r"levels \(3,\) must be distinct level indices"):
        encode_dataset(data_dir, tmp_path / "x", fake_encode, hop_lengths=HOPS, levels=[3])
    with pytest.raises(DatasetError, match=r"split\(s\) \['valid'\] not in"):
        encode_dataset(data_dir, tmp_path / "x", fake_encode, hop_lengths=HOPS, splits=["valid"])
    with pytest.raises(ConfigError, match=f"the dataset .* is at {SR} Hz but the VQ-VAE encodes vqvae.sr 22050 Hz; "
                                          "rebuild the dataset with --sr 22050"):
        encode_dataset(data_dir, tmp_path / "z", fake_encode, hop_lengths=HOPS, sample_rate=22050)
    with pytest.raises(DatasetError, match="outside code_dtype int16"):
        encode_dataset(data_dir, tmp_path / "y", lambda x: [z * 100 for z in fake_encode(x)], hop_lengths=HOPS)


def test_a_killed_encoding_leaves_no_dataset_and_resumes_from_finished_shards(audio_data, codes, tmp_path):
    data_dir, _ = audio_data
    kw = dict(hop_lengths=HOPS, chunk_seconds=0.1, context_seconds=0.02, chunk_batch=2, songs_per_shard=1,
              encoder_info={"name": "fake"})
    crashing = Recorder(fake_encode, fail_after=12)
    with pytest.raises(RuntimeError, match="encoder crashed"):
        encode_dataset(data_dir, tmp_path, crashing, **kw)
    assert [p.name for p in tmp_path.iterdir()] == [".jukejax_codes.incomplete"]  # nothing looks complete
    done = tmp_path / ".jukejax_codes.incomplete" / ".done"
    finished = [json.loads(p.read_text())["rows"] for p in done.iterdir()]
    assert 0 < len(finished) < 5
    # Encoder calls those songs took: 768-sample chunks, two per call.
    finished_calls = sum(-(-max(1, -(-row[1] // 768)) // 2) for rows in finished for row in rows)
    with pytest.raises(DatasetError, match="no jukejax_codes dataset"):
        load_codes_source(tmp_path, "train")
    resumed = Recorder(fake_encode)
    summary = encode_dataset(data_dir, tmp_path, resumed, **kw)
    full = Recorder(fake_encode)
    encode_dataset(data_dir, tmp_path / "again", full, **kw)
    assert len(resumed.shapes) == len(full.shapes) - finished_calls   # the finished shards were not redone
    assert [p.name for p in tmp_path.iterdir() if p.name != "again"] == ["jukejax_codes"]
    ref = codes[0]
    for split in ("train", "test"):
        a, b = load_codes_source(tmp_path, split), load_codes_source(ref, split)
        assert [_as_lists(a[i]) for i in range(len(a))] == [_as_lists(b[i]) for i in range(len(b))]
    assert summary["songs"] == codes[1]["songs"] and summary["tokens"] == codes[1]["tokens"]
    # Another encoder (or levels, chunking) does not reuse shards of the killed run: it starts over.
    with pytest.raises(RuntimeError, match="encoder crashed"):
        encode_dataset(data_dir, tmp_path / "x", Recorder(fake_encode, fail_after=12), **kw)
    other = Recorder(fake_encode)
    encode_dataset(data_dir, tmp_path / "x", other, **{**kw, "encoder_info": {"name": "another"}})
    assert len(other.shapes) == len(full.shapes)


def _as_lists(record):
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in record.items()}


def _tiny_vqvae(sr=SR, devices=None):
    import tiny_configs
    from jukejax.vqvae.model import VQVAE, abstract_variables

    vq = build(VQVAEConfig, tiny_configs.vqvae().vqvae, "vqvae")
    vq = dataclasses.replace(vq, sr=sr)
    model = VQVAE(vq)
    # Random weights drawn from the abstract shapes (a real `init` costs seconds of CPU compile here), with a
    # random codebook: `init` leaves it at zero, which would make every code 0.
    rng = np.random.default_rng(0)

    def fill(path, a):
        if path[-1].key in ("bias", "k_sum", "k_elem", "initialized"):
            return np.zeros(a.shape, a.dtype)
        fan_in = int(np.prod(a.shape[:-1])) if path[-1].key != "k" else 400
        return (rng.standard_normal(a.shape) / np.sqrt(fan_in)).astype(a.dtype)

    variables = jax.tree_util.tree_map_with_path(fill, nn.meta.unbox(abstract_variables(vq)))
    return data_cli.VQVAEEncodeFn(model, variables, vq, {"name": "tiny random"}, devices=devices)


def test_tiny_vqvae_encodes_the_dataset(audio_data, codes, tmp_path):
    data_dir, _ = audio_data
    songs = codes[4]
    encode_fn = _tiny_vqvae()
    vq = encode_fn.config
    summary = encode_dataset(data_dir, tmp_path, encode_fn, hop_lengths=vq.hop_lengths, chunk_seconds=0.5,
                             context_seconds=0.05, encoder_info=encode_fn.info)
    assert summary["encoder"] == {"name": "tiny random"}
    distinct = set()
    for split in ("train", "test"):
        for sid, r in _records(load_codes_source(tmp_path, split)).items():
            for level, hop in enumerate(vq.hop_lengths):
                z = r[f"codes_{level}"]
                assert len(z) == len(songs[sid][1]) // hop and 0 <= z.min() and z.max() < vq.l_bins
                distinct.update(np.unique(z).tolist())
    assert len(distinct) > 1
    # With context past the receptive field, chunk edges do not change the codes: chunked == one shot except
    # at the song's own two ends (zero audio outside the song is not the same as zero padding inside the
    # encoder's layers). Without context, codes near every chunk edge differ.
    mono = songs[max(songs, key=lambda s: len(songs[s][1]))][1]
    one_shot = _one_shot(mono, encode_fn, vq.hop_lengths)
    chunked = encode_song(mono, encode_fn, ChunkPlan(vq.hop_lengths, 1024, 400))
    bare = encode_song(mono, encode_fn, ChunkPlan(vq.hop_lengths, 1024, 0))
    for a, b, c in zip(chunked, one_shot, bare):
        np.testing.assert_array_equal(a[4:-4], b[4:-4])
        assert np.any(c[4:-4] != b[4:-4])


# ---------------------------------------------------------------------------------------------------------
# Prior windows

N_CTX, COND = 160, 40         # level 1 (hop 16): 2560 samples; 40 level-2 tokens; short.wav has 150 < 160


def _pipe(source, **kw):
    args = dict(level=1, n_ctx=N_CTX, cond_length=COND, hop_lengths=HOPS, batch_size=4, seed=0,
                max_bow_genre_size=3, shard_index=0, shard_count=1)
    args.update(kw)
    return make_prior_pipeline(source, **args)


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_upsampler_windows_are_aligned_with_the_level_above(codes):
    _, _, sources, _, songs = codes
    source = sources["train"]
    records = _records(source)
    short = [sid for sid, (_, mono, _) in songs.items() if len(mono) // 16 < N_CTX]
    assert short
    seen = set()
    for batch in _take(_pipe(source), 8):
        assert batch["z"].shape == (4, N_CTX) and batch["z"].dtype == np.int32
        assert batch["z_cond"].shape == (4, COND) and batch["z_cond"].dtype == np.int32
        assert batch["y"].shape == (4, 4 + 3) and batch["y"].dtype == np.int64
        for z, z_cond, y, sid, start in zip(batch["z"], batch["z_cond"], batch["y"], batch["song_id"],
                                            batch["start"]):
            r, mono = records[int(sid)], songs[int(sid)][1]
            assert start % 4 == 0 and start + N_CTX <= len(mono) // 16
            np.testing.assert_array_equal(z, r["codes_1"][start:start + N_CTX])
            np.testing.assert_array_equal(z_cond, r["codes_2"][start // 4:start // 4 + COND])
            # Same audio span, checked on the audio itself: a level-2 hop is the mean of 4 level-1 hops.
            np.testing.assert_array_equal(z_cond, _one_shot(mono[start * 16:(start + N_CTX) * 16])[2])
            assert np.abs(z.reshape(COND, 4).mean(1) - z_cond).max() <= 1.0
            np.testing.assert_array_equal(y, [len(mono), start * 16, N_CTX * 16, r["artist"], r["genre"], -1, -1])
            seen.add(int(sid))
    assert not seen & set(short)


def test_top_prior_windows_carry_the_lyric_window(codes):
    from jukejax.prior import lyrics as lyrics_lib

    _, _, sources, _, songs = codes
    source = sources["train"]
    records = _records(source)
    n_ctx, n_tokens = 24, 32
    it = _pipe(source, level=2, n_ctx=n_ctx, cond_length=None, n_tokens=n_tokens, max_bow_genre_size=1)
    short_lyrics = long_lyrics = 0
    for batch in _take(it, 6):
        assert "z_cond" not in batch and batch["y"].shape == (4, 4 + 1 + n_tokens)
        for z, y, sid, start in zip(batch["z"], batch["y"], batch["song_id"], batch["start"]):
            r, total = records[int(sid)], len(songs[int(sid)][1])
            np.testing.assert_array_equal(z, r["codes_2"][start:start + n_ctx])
            tokens = lyrics_lib.tokenize(lyrics_lib.clean_lyrics(r["lyrics"].decode()))
            window, _ = lyrics_lib.lyric_window(tokens, total, start * 64, n_ctx * 64, n_tokens)
            np.testing.assert_array_equal(y, [total, start * 64, n_ctx * 64, r["artist"], r["genre"], *window])
            short_lyrics += len(tokens) < n_tokens
            long_lyrics += len(tokens) >= n_tokens
    assert long_lyrics  # windows move with the offset; short lyrics are left-padded with 0
    without = next(_pipe(source, level=2, n_ctx=n_ctx, cond_length=0, labels=False))
    assert set(without) == {"z", "song_id", "start"}


def test_starts_cover_every_valid_position_once():
    table = {"song_id": np.array([5, 2, 9]), "total_length": np.array([0, 0, 0]),
             "length_1": np.array([170, 100, 200]), "length_2": np.array([42, 25, 50])}
    index = build_window_index(table, level=1, n_ctx=N_CTX, ratio=4, cond_level=2, cond_length=COND)
    assert index.song_ids.tolist() == [5, 9]              # song 2 has 100 < 160 codes
    assert index.n_starts.tolist() == [(170 - 160) // 4 + 1, (200 - 160) // 4 + 1]
    got = [(int(index.song_ids[s]), st) for s, st in map(index.locate, range(index.total))]
    want = [(5, s) for s in range(0, 11, 4)] + [(9, s) for s in range(0, 41, 4)]
    assert got == want
    # The upper codes bound the starts too (a song whose upper level is cut short).
    index = build_window_index(dict(table, length_2=np.array([40, 25, 41])), level=1, n_ctx=N_CTX, ratio=4,
                               cond_level=2, cond_length=COND)
    assert index.n_starts.tolist() == [1, 2]


def test_pipeline_is_deterministic_per_seed(codes):
    source = codes[2]["train"]
    a, b, c = (_take(_pipe(source, seed=s), 3) for s in (0, 0, 1))
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    assert any(not np.array_equal(x["start"], y["start"]) or not np.array_equal(x["song_id"], y["song_id"])
               for x, y in zip(a, c))


def test_process_shards_are_disjoint_parts_of_the_global_batch(codes):
    source = codes[2]["train"]
    full = _take(_pipe(source, batch_size=4), 3)
    shards = [_take(_pipe(source, batch_size=4, shard_index=i, shard_count=2), 3) for i in range(2)]
    for step, batch in enumerate(full):
        for k in batch:
            assert shards[0][step][k].shape[0] == 2
            np.testing.assert_array_equal(batch[k][0::2], shards[0][step][k])
            np.testing.assert_array_equal(batch[k][1::2], shards[1][step][k])


def test_state_restores_the_exact_stream(codes):
    source = codes[2]["train"]
    it = _pipe(source)
    _take(it, 2)
    state = it.get_state()
    want = _take(it, 3)
    again = _pipe(source)
    again.set_state(state)
    for x, y in zip(want, _take(again, 3)):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_finite_epochs_and_validation(codes):
    source = codes[2]["train"]
    epoch = list(_pipe(source, num_epochs=1, batch_size=1))
    tokens = int(source.lengths(1)[source.lengths(1) >= N_CTX].sum())
    assert len(epoch) == tokens // N_CTX
    longest = int(source.lengths(1).max())
    with pytest.raises(DatasetError, match=f"shorter than n_ctx 4096 tokens at level 1 .*the longest "
                                           rf"\(song_id \d+\) has {longest} tokens"):
        _pipe(source, n_ctx=4096, cond_length=1024)
    with pytest.raises(ConfigError, match=r"n_ctx 160 / cond_length 80 = 2, but level 2 has hop 64"):
        _pipe(source, cond_length=80)
    with pytest.raises(ConfigError, match="differ from the codes dataset's"):
        _pipe(source, hop_lengths=(8, 32, 128))
    with pytest.raises(ConfigError, match="level 3 is not stored"):
        _pipe(source, level=3)
    with pytest.raises(ConfigError, match=r"4 genre ids but y_bins \(genres, artists\) allows 1"):
        _pipe(source, y_bins=(1, 100))
    with pytest.raises(ConfigError, match="batch_size 3 is not divisible by the 2 processes"):
        _pipe(source, batch_size=3, shard_count=2)


def test_worker_processes_give_the_same_batches(codes):
    source = codes[2]["train"]
    ref = _take(_pipe(source), 2)
    it = _pipe(source, worker_count=1)
    try:
        for x, y in zip(ref, _take(it, 2)):
            for k in x:
                np.testing.assert_array_equal(x[k], y[k])
    finally:
        it.close()


def test_cli_encodes_with_a_vqvae(audio_data, tmp_path, monkeypatch, capsys):
    data_dir, _ = audio_data
    loaded = []

    def fake_loader(workdir, step=None, devices=None):
        loaded.append((workdir, step))
        return _tiny_vqvae(sr=int(workdir.rsplit("_", 1)[1]), devices=devices)

    monkeypatch.setattr(data_cli, "make_vqvae_encode_fn", fake_loader)
    out = tmp_path / "codes"
    assert data_cli.main(["encode", "--data_dir", str(data_dir), "--vqvae_checkpoint", f"run_{SR}",
                          "--out_dir", str(out), "--levels", "1,2", "--chunk_seconds", "0.5",
                          "--context_seconds", "0.05", "--splits", "train"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["levels"] == [1, 2] and printed["hop_lengths"] == [4, 8, 16] and list(printed["songs"]) == ["train"]
    assert load_codes_source(out, "train").levels == (1, 2) and loaded == [(f"run_{SR}", None)]
    assert data_cli.main(["info", "--data_dir", str(codes_path(out))]) == 0
    assert json.loads(capsys.readouterr().out) == printed
    assert data_cli.main(["encode", "--data_dir", str(data_dir), "--vqvae_checkpoint", "run_16000",
                          "--out_dir", str(tmp_path / "other")]) == 2
    assert "vqvae.sr 16000" in capsys.readouterr().err
    assert data_cli.main(["encode", "--data_dir", str(data_dir), "--vqvae_checkpoint", f"run_{SR}",
                          "--out_dir", str(out)]) == 2
    assert "already exists; remove it or pass --overwrite" in capsys.readouterr().err
    assert "tensorflow" not in sys.modules   # also after the VQ-VAE and the prior's lyric helpers were used


def test_make_vqvae_encode_fn_loads_a_training_workdir(tmp_path):
    import orbax.checkpoint as ocp
    import tiny_configs
    from jukejax.checkpoint import write_config

    reference = _tiny_vqvae()
    variables = {k: v for k, v in reference._variables.items()}
    state = {"step": np.int32(3), "params": variables["params"], "ema_params": variables["params"],
             "extra": {"codebook": variables["codebook"]}}
    config = tiny_configs.vqvae()
    write_config(str(tmp_path), config)
    with ocp.CheckpointManager((tmp_path / "checkpoints").absolute()) as manager:
        manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
        manager.wait_until_finished()
    encode_fn = data_cli.make_vqvae_encode_fn(str(tmp_path))
    assert encode_fn.config.hop_lengths == (4, 8, 16) and encode_fn.info["step"] == 3
    x = np.asarray(_song(256, 3, 1), np.float32)[None] / 32768.0
    for a, b in zip(encode_fn(x), reference(x)):
        np.testing.assert_array_equal(a, b)


def _save_vqvae_workdir(workdir):
    """A training workdir (config + Orbax checkpoint) holding the tiny random VQ-VAE of `_tiny_vqvae`."""
    import orbax.checkpoint as ocp
    import tiny_configs
    from jukejax.checkpoint import write_config

    variables = dict(_tiny_vqvae()._variables)
    state = {"step": np.int32(1), "params": variables["params"], "ema_params": variables["params"],
             "extra": {"codebook": variables["codebook"]}}
    write_config(str(workdir), tiny_configs.vqvae())
    with ocp.CheckpointManager((pathlib.Path(workdir) / "checkpoints").absolute()) as manager:
        manager.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
        manager.wait_until_finished()


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # three JAX processes start and compile the encoder: ~1 min on 2 loaded cores
def test_two_processes_encode_the_codes_one_process_encodes(audio_data, tmp_path):
    """`python -m jukejax.data encode` on 2 processes x 2 devices (each encodes its shards on its own
    devices, process 0 publishes) writes the records one process with one device writes."""
    import os
    import subprocess

    data_dir, _ = audio_data
    _save_vqvae_workdir(tmp_path / "vqvae")
    root = pathlib.Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "jukejax.data", "encode", f"--data_dir={data_dir}",
           f"--vqvae_checkpoint={tmp_path / 'vqvae'}", "--chunk_seconds=0.1", "--context_seconds=0.02",
           "--songs_per_shard=1"]

    def env(devices):
        return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                    JAX_CPU_GET_LOCAL_TOPOLOGY_TIMEOUT_MINUTES="10", JAX_CPU_GET_GLOBAL_TOPOLOGY_TIMEOUT_MINUTES="10")

    port = _free_port()
    procs = [subprocess.Popen(cmd + [f"--out_dir={tmp_path / 'two'}", "--chunk_batch=1",
                                     f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                                     f"--process_id={i}"], cwd=root, env=env(2), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    procs.append(subprocess.Popen(cmd + [f"--out_dir={tmp_path / 'one'}", "--chunk_batch=2"], cwd=root,
                                  env=env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for p in procs:   # never leave a process behind
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i} failed:\n{out[-3000:]}"
    # Each of the 2 processes encoded its own shards (5 songs, one per shard: 3 and 2).
    for i, n in ((0, 3), (1, 2)):
        assert len(re.findall(r"jukejax_codes-\w+\.array_record-\d+-of-\d+: 1 song", outs[i])) == n, outs[i][-2000:]
    for split in ("train", "test"):
        a, b = load_codes_source(tmp_path / "two", split), load_codes_source(tmp_path / "one", split)
        assert len(a) == len(b) > 0
        assert [_as_lists(a[i]) for i in range(len(a))] == [_as_lists(b[i]) for i in range(len(b))]
        assert {k: v.tolist() for k, v in a.songs.items()} == {k: v.tolist() for k, v in b.songs.items()}
    assert len(np.unique(load_codes_source(tmp_path / "one", "train")[0]["codes_0"])) > 1   # not a constant
    assert not list((tmp_path / "two").glob(".*"))  # the work folder is gone
