"""`python -m jukejax.embed` on the bundled demo model: outputs, manifest, resume, bad input (one line, exit 2,
nothing written)."""
import json
import re
import pathlib
import shutil

import numpy as np
import pytest
import soundfile as sf

from jukejax.embed import EmbedError, Embedder
from jukejax.embed import presets
from jukejax.embed.__main__ import main
from jukejax.embed.run import EmbedConfig, run
from jukejax.testing import write_songs

DEMO = pathlib.Path(__file__).resolve().parents[1] / "models" / "demo"
SR = 22050   # the demo model's rate; its top prior: n_ctx 256, hop 128 (1.49 s), width 128, 16 layers


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    folder = write_songs(tmp_path_factory.mktemp("embed_songs"), 2, 2.0, SR)
    write_songs(folder / "more", 1, 3.5, 16000, seed=2)  # resampled; frames: 3 windows
    return folder


@pytest.fixture(scope="module")
def embedder():
    return Embedder(str(DEMO), layers=(1, 3))


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow  # runs the demo model's prior
def test_cli_on_demo_model_then_resume(audio, embedder, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [f"--checkpoint={DEMO}", f"--audio_dir={audio}", f"--out={out}", "--layers=1,3", "--no_progress"]
    config = EmbedConfig(checkpoint=str(DEMO), out=str(out), audio_dir=str(audio), layers=(1, 3), progress=False)
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["embedded"] == 3 and summary["skipped"] == 0
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*.npy"))
    assert names == ["more/song0.npy", "song0.npy", "song1.npy"]
    assert np.load(out / "song0.npy").shape == (2, 128)
    records = {r["file"]: r for r in _lines(out / "manifest.jsonl")}
    assert set(records) == {"song0.wav", "song1.wav", "more/song0.wav"}
    r = records["more/song0.wav"]
    assert (r["shape"], r["layers"], r["preset"], r["pool"], r["sample_rate"]) == ([2, 128], [1, 3], "jukemir", "mean", 16000)
    assert r["duration"] == pytest.approx(3.5) and r["frames"] == 256
    # a kill between a file's .npy and its manifest line: the rerun adds the line and embeds nothing again
    before = (out / "song1.npy").read_bytes()
    (out / "manifest.jsonl").write_text("".join(json.dumps(records[k]) + "\n" for k in ("song0.wav",)))
    summary = run(config, embedder)
    assert summary["embedded"] == 0 and summary["skipped"] == 3
    assert {r["file"] for r in _lines(out / "manifest.jsonl")} == set(records)
    assert (out / "song1.npy").read_bytes() == before
    # a killed run: a missing .npy is embedded again, identically
    (out / "song1.npy").unlink()
    assert run(config, embedder)["embedded"] == 1
    assert (out / "song1.npy").read_bytes() == before
    assert not list(out.rglob(".*.tmp"))


@pytest.mark.slow  # runs the demo model's prior
def test_frames_layers_pool_and_fps(audio, embedder, tmp_path):
    summary = run(EmbedConfig(checkpoint=str(DEMO), out=str(tmp_path / "f"), audio_dir=str(audio), layers=(1, 3),
                              preset="frames", progress=False), embedder)
    assert summary["embedded"] == 3
    info = embedder.info
    n = int(np.ceil(3.5 * SR))
    frames = np.load(tmp_path / "f" / "more" / "song0.npy")
    assert frames.shape == (2, n // info.hop, 128)
    run(EmbedConfig(checkpoint=str(DEMO), out=str(tmp_path / "p"), audio_dir=str(audio), layers=(1, 3),
                    preset="frames", pool="mean", progress=False), embedder)
    np.testing.assert_allclose(np.load(tmp_path / "p" / "more" / "song0.npy"), frames.mean(axis=1), rtol=2e-5,
                               atol=2e-6)
    run(EmbedConfig(checkpoint=str(DEMO), out=str(tmp_path / "r"), audio_dir=str(audio), layers=(1, 3),
                    preset="frames", fps=30.0, progress=False), embedder)
    resampled = np.load(tmp_path / "r" / "more" / "song0.npy")
    assert resampled.shape == (2, int(np.ceil(frames.shape[1] * 30.0 / info.frame_rate)), 128)


def test_frames_windows_follow_sheet_sage():
    info = presets.ModelInfo(checkpoint="-", sr=44100, hop=128, n_ctx=8192, width=4800, depth=72, y_width=9,
                             max_bow_genre_size=5, n_tokens=0, min_duration=60.0, max_duration=600.0)
    n = 100 * 44100 + 5
    windows = presets.frames_windows(info, n)
    total = (100 * 44100 + 5) // 128 * 128
    assert [int(w.y[1]) for w in windows] == [0, 1048576, 2097152, 3145728, total - 1048576]
    assert all(int(w.y[0]) == total and int(w.y[2]) == 1048576 for w in windows)
    assert [w.n_valid for w in windows] == [8192] * 4 + [n // 128 - 4 * 8192]
    short = presets.frames_windows(info, 10 * 44100)   # clamped up to 60 s + 16 samples, floored to the hop
    assert int(short[0].y[0]) == (60 * 44100 + 16) // 128 * 128
    (w,) = presets.jukemir_windows(info)
    assert w.y.tolist() == [2734080, 0, 1048576, 0, 0, -1, -1, -1, -1]


def _expect_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for needle in needles:
        assert needle in err, err


def test_bad_flags_and_models_are_one_line(audio, tmp_path, capsys):
    out = tmp_path / "out"
    base = [f"--checkpoint={DEMO}", f"--out={out}", "--no_progress", "--layers=1"]
    _expect_error(capsys, base + [f"--audio_dir={audio}", "--layers=17"], "--layers 17", "1..16")
    _expect_error(capsys, base + [f"--audio_dir={audio}", "--layers=0,x"], "--layers")
    no_top = tmp_path / "no_top"
    no_top.mkdir()
    for name in ("vqvae", "prior_level_1", "ids"):
        shutil.copytree(DEMO / name, no_top / name)
    _expect_error(capsys, [f"--checkpoint={no_top}", f"--out={out}", f"--audio_dir={audio}"], "prior_level_2")
    _expect_error(capsys, base + [f"--audio_dir={audio}", "--fps=30"], "--fps")
    assert not out.exists()


def _expect_run_error(embedder, audio_dir, out, *needles):
    config = EmbedConfig(checkpoint=str(DEMO), out=str(out), audio_dir=str(audio_dir), layers=(1, 3), progress=False)
    with pytest.raises(EmbedError) as e:
        run(config, embedder)
    message = str(e.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_bad_files_are_named_before_anything_is_written(audio, embedder, tmp_path):
    out = tmp_path / "out"
    bad = tmp_path / "bad"
    shutil.copytree(audio, bad)
    (bad / "song1.wav").write_bytes(b"RIFF not really a wav")
    _expect_run_error(embedder, bad, out, str(bad / "song1.wav"))
    (bad / "song1.wav").unlink()
    sf.write(bad / "silent.wav", np.zeros(SR * 2, np.float32), SR)
    _expect_run_error(embedder, bad, out, str(bad / "silent.wav"), "silent")
    (bad / "silent.wav").unlink()
    sf.write(bad / "short.wav", np.full(SR, 0.1, np.float32), SR)   # 1 s < the 1.49 s clip
    _expect_run_error(embedder, bad, out, str(bad / "short.wav"), "shorter than", "--preset=frames")
    (bad / "short.wav").unlink()
    sf.write(bad / "song0.flac", np.full(SR * 2, 0.1, np.float32), SR)
    _expect_run_error(embedder, bad, out, "song0.npy", "both")
    assert not out.exists()


@pytest.mark.slow  # runs the demo model's prior
def test_bfloat16_reads_bf16_weights_and_stays_close(embedder):
    import jax

    bf16 = Embedder(str(DEMO), layers=(1, 3), dtype="bfloat16")
    assert {leaf.dtype.name for leaf in jax.tree.leaves(bf16.params)} == {"bfloat16"}
    tokens = np.random.default_rng(0).integers(0, 256, (8, 256)).astype(np.int32)
    y = np.tile(presets.label_vector(embedder.info, 62 * SR // 128 * 128, 0), (8, 1))
    want, got = embedder.activations(tokens, y, pool="mean"), bf16.activations(tokens, y, pool="mean")
    for layer in (1, 3):
        err = float(np.abs(np.asarray(got[layer]) - np.asarray(want[layer])).max() / np.abs(np.asarray(want[layer])).max())
        assert err < 1e-2, (layer, err)


def test_fp16_params_rounds_conv1d_kernels_like_the_original():
    import jax.numpy as jnp

    from jukejax.embed.model import round_conv1d_weights_to_fp16

    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.standard_normal((4, 6)), jnp.float32)
    params = {"prior": {"transformer": {"_attn_mods_0": {"attn": {"c_attn": {"kernel": w, "bias": w[0]}},
                                                         "ln_0": {"scale": w[0]}}},
                        "x_emb": {"embedding": w}}}
    out = round_conv1d_weights_to_fp16(params)
    block = out["prior"]["transformer"]["_attn_mods_0"]
    np.testing.assert_array_equal(block["attn"]["c_attn"]["kernel"], np.asarray(w).astype(np.float16).astype(np.float32))
    assert not np.array_equal(block["attn"]["c_attn"]["kernel"], w)
    for kept, original in ((block["attn"]["c_attn"]["bias"], w[0]), (block["ln_0"]["scale"], w[0]),
                           (out["prior"]["x_emb"]["embedding"], w)):
        np.testing.assert_array_equal(kept, original)


@pytest.fixture(scope="module")
def dataset_and_folder(tmp_path_factory):
    """A tiny jukejax_music dataset at 16 kHz (the demo model's rate is 22.05 kHz: both paths resample), and a
    folder of PCM_16 wavs holding exactly its int16 samples under its song keys."""
    from jukejax.data import BuildConfig, build_dataset, load_source

    songs = write_songs(tmp_path_factory.mktemp("ds_songs"), 3, 2.0, 16000, seed=3)
    write_songs(songs / "more", 1, 2.5, 16000, seed=4)
    data = tmp_path_factory.mktemp("ds")
    build_dataset(BuildConfig(audio_dir=str(songs), sr=16000, channels=2, window_seconds=0.5, test_fraction=0.25),
                  data)
    folder = tmp_path_factory.mktemp("ds_as_wavs")
    splits = {}
    for split in ("train", "test"):
        source = load_source(data, split)
        w = source.windows
        for song_id in np.unique(w["song_id"]):
            rows = np.flatnonzero(w["song_id"] == song_id)
            records = [source[int(i)] for i in rows[np.argsort(w["window_index"][rows])]]
            key = records[0]["song_key"].decode()
            (folder / key).parent.mkdir(parents=True, exist_ok=True)
            sf.write(folder / key, np.concatenate([r["audio"] for r in records]), 16000, subtype="PCM_16")
            splits[key] = split
    assert sorted(splits) == ["more/song0.wav", "song0.wav", "song1.wav", "song2.wav"]
    assert sorted(splits.values()) == ["test", "train", "train", "train"]
    return data, folder, splits


@pytest.mark.slow  # runs the demo model's prior
def test_data_dir_equals_audio_dir_over_the_same_samples_and_resumes(dataset_and_folder, embedder, tmp_path,
                                                                     capsys):
    data, folder, splits = dataset_and_folder
    want = tmp_path / "from_wavs"
    run(EmbedConfig(checkpoint=str(DEMO), out=str(want), audio_dir=str(folder), layers=(1, 3), progress=False),
        embedder)
    got = tmp_path / "from_dataset"
    config = EmbedConfig(checkpoint=str(DEMO), out=str(got), data_dir=str(data), layers=(1, 3), progress=False)
    summary = run(config, embedder)
    assert (summary["embedded"], summary["skipped"]) == (4, 0)
    names = sorted(str(p.relative_to(got)) for p in got.rglob("*.npy"))
    assert names == ["more/song0.npy", "song0.npy", "song1.npy", "song2.npy"]
    for name in names:
        np.testing.assert_array_equal(np.load(got / name), np.load(want / name), err_msg=name)
    records = {r["file"]: r for r in _lines(got / "manifest.jsonl")}
    assert {k: r["split"] for k, r in records.items()} == splits
    from jukejax.data import dataset_path
    assert {r["dataset"] for r in records.values()} == {str(dataset_path(data).resolve())}
    r, w = records["more/song0.wav"], {r["file"]: r for r in _lines(want / "manifest.jsonl")}["more/song0.wav"]
    assert (r["shape"], r["sample_rate"], r["duration"], r["npy"]) == (w["shape"], 16000, w["duration"], w["npy"])
    # a rerun skips every finished song
    before = {n: (got / n).stat().st_mtime_ns for n in names}
    assert (lambda s: (s["embedded"], s["skipped"]))(run(config, embedder)) == (0, 4)
    assert {n: (got / n).stat().st_mtime_ns for n in names} == before
    assert len(_lines(got / "manifest.jsonl")) == 4
    # one split, through the command line
    test_key = next(k for k, s in splits.items() if s == "test")
    out = tmp_path / "test_split"
    assert main([f"--checkpoint={DEMO}", f"--data_dir={data}", "--split=test", f"--out={out}", "--layers=1,3",
                 "--no_progress"]) == 0
    (line,) = _lines(out / "manifest.jsonl")
    assert (line["file"], line["split"]) == (test_key, "test")
    np.testing.assert_array_equal(np.load(out / line["npy"]), np.load(want / line["npy"]))


def test_data_dir_flags_are_checked_in_one_line(dataset_and_folder, tmp_path, capsys):
    data, folder, _ = dataset_and_folder
    out = tmp_path / "out"
    base = [f"--checkpoint={DEMO}", f"--out={out}", "--no_progress", "--layers=1"]
    _expect_error(capsys, base, "exactly one of --audio_dir", "--data_dir")
    _expect_error(capsys, base + [f"--audio_dir={folder}", f"--data_dir={data}"], "exactly one of --audio_dir")
    _expect_error(capsys, base + [f"--data_dir={tmp_path / 'missing'}"], "--data_dir", "no such folder")
    _expect_error(capsys, base + [f"--data_dir={folder}"], f"--data_dir {folder}", "no jukejax_music dataset")
    _expect_error(capsys, base + [f"--data_dir={data}", "--split=validation"], "--split validation", "test, train")
    _expect_error(capsys, base + [f"--audio_dir={folder}", "--split=test"], "--split")
    assert not out.exists()


def test_song_output_names_are_safe_and_unique():
    from jukejax.embed.inputs import song_output_names

    keys = ["a/song.wav", "a/Song.flac", "a/song.mp3", "x/../y.wav", ".hidden.wav", 'we:ird?<name>.wav',
            "Beyoncé – Halo.flac", "b/" + "é" * 150 + ".wav", "plain.wav"]
    names = song_output_names(keys)
    assert names["plain.wav"] == "plain.npy" and names["Beyoncé – Halo.flac"] == "Beyoncé – Halo.npy"
    assert names["x/../y.wav"] == "x/_/y.npy" and names[".hidden.wav"] == "_hidden.npy"
    assert names['we:ird?<name>.wav'] == "we_ird__name_.npy"
    assert len({n.casefold() for n in names.values()}) == len(keys)
    for key in ("a/song.wav", "a/Song.flac", "a/song.mp3"):    # equal up to case: each gets its key's hash
        assert re.fullmatch(r"a/[sS]ong-[0-9a-f]{8}\.npy", names[key]), names[key]
    for name in names.values():
        assert all(part not in ("", ".", "..") and not part.startswith(".") and len(part.encode()) <= 200
                   for part in name.split("/")), name
    assert song_output_names(["a/song.wav"]) == {"a/song.wav": "a/song.npy"}
