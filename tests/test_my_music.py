"""README "Train on your own music", run exactly as written (commands parsed from README.md, with the quick-run
overrides the README gives) on a synthetic folder of songs with artists, genres and lyrics: dataset, VQ-VAE,
codes, top prior, both upsamplers, model folder, sampled wavs. Then its fine-tuning commands on a tiny model in
the layout `jukejax.convert` writes (v3 tables for the top prior, v2 for the upsamplers, as 1b_lyrics).

Each command runs in a subprocess from a scratch folder, as a user would run it from the repository root:
`.venv/bin/python` is this interpreter, `train.py`, `sample.py` and `configs/` are the repository's.
"""
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

ROOT = pathlib.Path(__file__).resolve().parents[1]
SECTION = "## Train on your own music"

ARTISTS = ["Jane Pianist", "Bob Drummer"]          # the README's sample command asks for "jane pianist"
GENRES = ["jazz", "Rock"]
LYRICS = ["la la la, a lovely day", "hello world, sing along"]


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start:end if end > 0 else None]


def bash_blocks(section: str):
    """Each ```bash block as a list of argv lists (backslash continuations joined)."""
    blocks = []
    for body in re.findall(r"```bash\n(.*?)```", section, re.S):
        joined = body.replace("\\\n", " ")
        blocks.append([shlex.split(line) for line in joined.splitlines() if line.strip()
                       and not line.lstrip().startswith("#")])
    return blocks


def quick_overrides(section: str):
    """The README's quick-run overrides: (flags added to train.py, flags replaced in sample.py)."""
    flat = " ".join(section.split())
    match = re.search(r"add `([^`]+)` to each `train\.py` command and give `sample\.py` `([^`]+)`", flat)
    assert match, "the README section no longer states its quick-run overrides"
    return shlex.split(match.group(1)), shlex.split(match.group(2))


def runnable(argv, train_extra, sample_extra):
    """A README command as this test runs it: the same arguments, with the quick overrides."""
    assert argv[0] == ".venv/bin/python", argv
    argv = [sys.executable] + argv[1:]
    script = argv[1]
    if script in ("train.py", "sample.py"):
        argv[1] = str(ROOT / script)
    argv = [re.sub(r"^--config=configs/", f"--config={ROOT}/configs/", a) for a in argv]
    if script == "train.py":
        argv += train_extra
    if script == "sample.py":
        names = {a.split("=")[0] for a in sample_extra}
        argv = [a for a in argv if a.split("=")[0] not in names] + sample_extra
    return argv


def run_all(commands, cwd, log):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=str(ROOT / ".jax_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="1")
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "")  # 1 device
    for argv in commands:
        t = time.time()
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
        log.append((" ".join(argv[1:3]), round(time.time() - t, 1)))
        assert proc.returncode == 0, f"{shlex.join(argv)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return log


def write_music(folder: pathlib.Path, n: int = 6, seconds: float = 3.0, sr: int = 22050) -> None:
    from jukejax.testing import melody
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        sf.write(folder / f"song{i}.wav", melody(rng, seconds, sr), sr)
        lines.append({"file": f"song{i}.wav", "artist": ARTISTS[i % 2], "genre": GENRES[i % 2],
                      "lyrics": LYRICS[i % 2]})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_readme_commands_parse():
    """The section has the path and the fine-tuning blocks, and every command is one this test can run."""
    section = readme_section()
    path, finetune = bash_blocks(section)
    train, sample = quick_overrides(section)
    assert [a[1:3] for a in path] == [["-m", "jukejax.data"], ["train.py", "--config=configs/my_music_vqvae.py"],
                                      ["-m", "jukejax.data"], ["train.py", "--config=configs/my_music_prior.py"],
                                      ["train.py", "--config=configs/my_music_upsampler_1.py"],
                                      ["train.py", "--config=configs/my_music_upsampler_0.py"],
                                      ["-m", "jukejax.bundle"], ["sample.py", "--checkpoint=models/my_music"]]
    assert any("--lyrics=" in a for a in path[-1]) and any("--artist=" in a for a in path[-1])
    assert [a[1:3] for a in finetune][1] == ["train.py",
                                             "--config=configs/my_music_finetune.py:models/1b_lyrics/prior_level_2"]
    assert any(a.startswith("--config.train.num_steps=") for a in train)
    assert [a.split("=")[0] for a in sample] == ["--sample_length_in_seconds"]


@pytest.mark.slow
def test_train_on_your_own_music_as_the_readme_says(tmp_path):
    section = readme_section()
    path, _ = bash_blocks(section)
    train, sample = quick_overrides(section)
    write_music(tmp_path / "MUSIC")
    log = []
    began = time.time()
    run_all([runnable(a, train, sample) for a in path], tmp_path, log)
    print(f"\nREADME path: {time.time() - began:.0f} s; per command: {log}")
    model = tmp_path / "models" / "my_music"
    assert (model / "ids" / "artist_ids.txt").read_text() == (
        tmp_path / "DATA" / "jukejax_music" / "1.0.0" / "artists.txt").read_text()
    wavs = sorted((tmp_path / "samples" / "my_music" / "level_0").glob("item_*.wav"))
    assert len(wavs) == 2
    audio, sr = sf.read(wavs[0])
    assert sr == 22050 and len(audio) >= int(0.7 * sr) and np.isfinite(audio).all()


# ------------------------------------------------------------------------------------------------------------
# Fine-tuning: a tiny model in the converted layout (what `jukejax.convert --from openai ... --artist_ids
# v3_artist_ids.txt --genre_ids v3_genre_ids.txt` writes), at the released 44.1 kHz and hops 8/32/128.

def _random_like(abstract, seed: int):
    """Random weights of the given shapes (N(0, 0.02)): a converted checkpoint's values do not matter here, and
    drawing them costs nothing where compiling each model's init costs minutes on a loaded machine."""
    import jax
    from flax import linen as nn
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: rng.normal(0.0, 0.02, a.shape).astype(a.dtype), nn.unbox(abstract))


def _tiny_converted_model(out: pathlib.Path) -> None:
    import tiny_configs
    from jukejax import presets
    from jukejax.checkpoint import save_variables
    from jukejax.config import VQVAEConfig, build
    from jukejax.prior.prior import abstract_params, prior_config
    from jukejax.vqvae.model import abstract_variables

    vq = tiny_configs.vqvae()
    vq.vqvae.update(dict(sr=44100, downs_t=(3, 2, 2)))
    save_variables(str(out / "vqvae"), vq, _random_like(abstract_variables(build(VQVAEConfig, vq.vqvae, "vqvae")), 1))
    shared = dict(prior_width=16, heads=1, init_scale=0.7, labels=True, max_bow_genre_size=1)
    priors = {
        # the 1b_lyrics top prior's structure: lyrics + music in one sequence, v3 labels with timing
        2: dict(shared, n_ctx=128, prior_depth=16, attn_order=12, blocks=8, labels_v3=True, y_bins=(3, 4),
                t_bins=16, n_vocab=79, min_duration=1.0, max_duration=600.0, use_tokens=True, n_tokens=16,
                prime_loss_fraction=0.4, single_enc_dec=True, alignment_layer=15, alignment_head=0),
        # its upsamplers: v2 labels, conditioned on the level above
        1: dict(shared, n_ctx=256, prior_depth=2, attn_order=2, blocks=8, labels_v3=False, y_bins=(4, 5),
                cond_width=8, cond_depth=2, cond_dilation_growth_rate=3, cond_dilation_cycle=2),
        0: dict(shared, n_ctx=512, prior_depth=2, attn_order=2, blocks=16, labels_v3=False, y_bins=(4, 5),
                cond_width=8, cond_depth=2, cond_dilation_growth_rate=3, cond_dilation_cycle=2),
    }
    for level, fields in priors.items():
        c = presets.prior(level, vq.vqvae, **fields)
        c.vqvae_checkpoint = str(out / "vqvae")
        save_variables(str(out / f"prior_level_{level}"), c,
                       {"params": _random_like(abstract_params(prior_config(c)), 10 + level)})
    ids = out / "ids"
    ids.mkdir()
    (ids / "v3_artist_ids.txt").write_text("unknown;0\nbob drummer;1\nella fitzgerald;2\nalan jackson;3\n")
    (ids / "v3_genre_ids.txt").write_text("unknown;0\nrock;1\ncountry;2\n")
    (ids / "v2_artist_ids.txt").write_text("unknown;0\nbob_drummer;1\nella_fitzgerald;2\nalan_jackson;3\nx;4\n")
    (ids / "v2_genre_ids.txt").write_text("unknown;0\nrock;1\ncountry;2\njazz;3\n")  # the released v2 table has jazz


@pytest.mark.slow
def test_fine_tune_a_converted_model_as_the_readme_says(tmp_path):
    import jax
    from jukejax.checkpoint import load_variables

    section = readme_section()
    _, finetune = bash_blocks(section)
    train, sample = quick_overrides(section)
    write_music(tmp_path / "MUSIC")
    _tiny_converted_model(tmp_path / "models" / "1b_lyrics")
    log = []
    began = time.time()
    run_all([runnable(a, train, sample) for a in finetune], tmp_path, log)
    print(f"\nREADME fine-tuning: {time.time() - began:.0f} s; per command: {log}")

    # the model's names keep their ids, the new ones are appended
    tables = tmp_path / "DATA_1B" / "jukejax_music" / "1.0.0"
    assert (tables / "artists.txt").read_text().splitlines() == [
        "unknown;0", "bob drummer;1", "ella fitzgerald;2", "alan jackson;3", "jane_pianist;4"]
    assert (tables / "genres.txt").read_text().splitlines() == ["unknown;0", "rock;1", "country;2", "jazz;3"]
    # the fine-tuned prior kept the model's label rows and grew new ones
    _, before, _ = load_variables(str(tmp_path / "models" / "1b_lyrics" / "prior_level_2"))
    _, after, _ = load_variables(str(tmp_path / "runs" / "my_1b_prior"), use_ema=False)
    flat = lambda t: {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(t)[0]}
    old, new = flat(before["params"]), flat(after["params"])
    key = next(k for k in old if "artist_emb" in k)
    assert old[key].shape[0] == 4 and new[key].shape[0] == 4 + 64
    assert np.abs(new[key][:4] - old[key]).max() < 0.05 and np.abs(new[key][4:]).max() > 0
    # the bundle: extended tables for the top prior, the model's v2 tables for its upsamplers
    model = tmp_path / "models" / "my_1b"
    assert (model / "ids" / "artist_ids.txt").read_text() == (tables / "artists.txt").read_text()
    assert (model / "ids" / "v2_artist_ids.txt").is_file() and not (model / "ids" / "v3_artist_ids.txt").exists()
    wavs = sorted((tmp_path / "samples" / "my_1b" / "level_0").glob("item_*.wav"))
    assert wavs and sf.info(str(wavs[0])).samplerate == 44100


def test_name_tables_extend_a_model_s_tables(tmp_path):
    """data build --artist_ids/--genre_ids: the model's lines stay as they are (aliases too), names it knows keep
    their ids whatever their spelling, new names get the next ids; a malformed table is one line naming it."""
    from jukejax.data import BuildConfig, DatasetError, build_dataset
    from jukejax.testing import write_songs

    write_songs(tmp_path / "music", 3, 0.5, 8000, artists=["Miles  Davis", "Jane Pianist", "HEY ROSETTA!"],
                genres=["jazz", "Piano Jazz", "rock"])
    (tmp_path / "a.txt").write_text("unknown;0\nmiles davis;1\nmiles;1\nhey rosetta!;7\n")
    (tmp_path / "g.txt").write_text("unknown;0\nrock;1\njazz;2\n")
    config = BuildConfig(audio_dir=str(tmp_path / "music"), sr=8000, channels=1, test_fraction=0.0,
                         artist_ids=str(tmp_path / "a.txt"), genre_ids=str(tmp_path / "g.txt"))
    summary = build_dataset(config, tmp_path / "data")
    base = tmp_path / "data" / "jukejax_music" / "1.0.0"
    assert (base / "artists.txt").read_text().splitlines() == [
        "unknown;0", "miles davis;1", "miles;1", "hey rosetta!;7", "jane_pianist;8"]
    assert (base / "genres.txt").read_text().splitlines() == ["unknown;0", "rock;1", "jazz;2", "piano_jazz;3"]
    assert summary["artists"] == 9 and summary["genres"] == 4       # rows the prior's embeddings need
    from jukejax.data import load_source
    source = load_source(str(tmp_path / "data"), "train")
    by_key = {str(r["song_key"].decode() if isinstance(r["song_key"], bytes) else r["song_key"]): int(r["artist"])
              for r in (source[i] for i in range(len(source)))}
    assert sorted(set(by_key.values())) == [1, 7, 8]

    (tmp_path / "bad.txt").write_text("unknown;0\nno id here\n")
    with pytest.raises(DatasetError, match=r"--artist_ids .*bad.txt:2: expected 'name;id'"):
        build_dataset(BuildConfig(audio_dir=str(tmp_path / "music"), sr=8000, artist_ids=str(tmp_path / "bad.txt")),
                      tmp_path / "data2")
    assert not (tmp_path / "data2").exists()


def test_my_music_configs_fit_a_cpu_and_short_clips():
    """The README's configs: every level's window under 1.5 s of audio, timing for songs from 1 s, a warm-up a
    few dozen steps get past, priors small enough for a laptop (the original "small" recipes: 12-95 s windows,
    min_duration 60 s, 100 warm-up steps, ~10^8-10^9 parameters)."""
    import importlib
    from jukejax.prior.prior import prior_config

    vq = importlib.import_module("configs.my_music_vqvae").get_config()
    assert vq.data.sample_length / vq.vqvae.sr < 1.0 and vq.optim.lr_warmup <= 10
    levels = set()
    for name in ("my_music_prior", "my_music_upsampler_1", "my_music_upsampler_0"):
        cd = importlib.import_module(f"configs.{name}").get_config()
        pc = prior_config(cd)
        levels.add(pc.level)
        assert cd.vqvae.to_dict() == vq.vqvae.to_dict(), name
        assert pc.sample_length / pc.vqvae.sr <= 1.5, (name, pc.sample_length)
        assert cd.optim.lr_warmup <= 10 and cd.prior.prior_width <= 128 and cd.prior.labels, name
        if pc.level == 2:
            assert cd.prior.min_duration <= 1.0 and pc.n_tokens > 0      # timing for short songs, lyrics
    assert levels == {0, 1, 2}
