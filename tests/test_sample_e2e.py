"""sample.py end to end on a tiny 3-level bundle with random weights (jukejax.sample.run, in process).

Bundle: tiny_configs.vqvae() (sr 8000, hops 4 / 8 / 16), the tiny top prior (level 2, n_ctx 64, v3 labels
with timing), the tiny upsampler at level 1 and the same upsampler at level 0. Every run asks for 0.256 s
(128 / 256 / 512 tokens) with hop_fraction 0.5, so the top level takes 3 windows, level 1 7 and level 0 15, and
every run shares the same compiled shapes (windows primed with 0 or 32 tokens).
"""
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf
from flax import linen as nn

import tiny_configs
from configs import sample_defaults
from jukejax.checkpoint import save_variables
from jukejax.config import VQVAEConfig, build
from jukejax.prior.prior import Prior, prior_config
from jukejax.sample import modes, outputs
from jukejax.sample import run as run_lib
from jukejax.sample.bundle import load_bundle
from jukejax.testing import fast_compiles, melody
from jukejax.vqvae.model import VQVAE

SR = 8000
SECONDS = 0.256                     # 2048 samples
TOKENS = {2: 128, 1: 256, 0: 512}   # per level
WINDOWS = {2: 3, 1: 7, 0: 15}       # hop_fraction 0.5 of n_ctx 64
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def _fast_compiles():
    with fast_compiles():
        yield


def _save_prior(directory: pathlib.Path, cd, seed: int) -> None:
    pc = prior_config(cd)
    z = jnp.zeros((1, pc.n_ctx), jnp.int32)
    z_cond = jnp.zeros((1, pc.cond_length), jnp.int32) if pc.upsampler else None
    y = jnp.zeros((1, pc.y_width), jnp.int32)
    # jit: the labels are traced, so init does not range-check the dummy y.
    params = jax.jit(Prior(pc).init)(jax.random.key(seed), z, z_cond, y)
    save_variables(str(directory), cd, nn.unbox(params))


def _save_vqvae(directory: pathlib.Path) -> None:
    cd = tiny_configs.vqvae()
    config = build(VQVAEConfig, cd.vqvae, "vqvae")
    variables = jax.jit(VQVAE(config).init)({"params": jax.random.key(1)}, jnp.zeros((1, 64, 1)))
    save_variables(str(directory), cd, nn.unbox(variables))


def level0_config():
    cd = tiny_configs.upsampler()
    cd.prior.level = 0
    return cd


def _write_ids(root: pathlib.Path) -> None:
    (root / "ids").mkdir(parents=True, exist_ok=True)
    (root / "ids" / "artist_ids.txt").write_text("unknown;0\nalan jackson;1\nella fitzgerald;2\n")
    (root / "ids" / "genre_ids.txt").write_text("unknown;0\ncountry;1\njazz;2\n")


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("bundle")
    _save_vqvae(root / "vqvae")
    for level, cd in ((2, tiny_configs.prior()), (1, tiny_configs.upsampler()), (0, level0_config())):
        _save_prior(root / f"prior_level_{level}", cd, 10 + level)
    _write_ids(root)
    return root


def make_config(bundle_dir, **overrides):
    cfg = sample_defaults.get_config()
    cfg.update(dict(checkpoint=str(bundle_dir), sample_length_in_seconds=SECONDS, total_sample_length_in_seconds=2.0,
                    n_samples=2, hop_fraction=(0.5, 0.5, 0.5), artist="Alan Jackson", genre="country",
                    progress=False, seed=0))
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="module")
def ancestral(bundle_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ancestral")
    windows = []
    result = run_lib.run(make_config(bundle_dir), workdir, on_window=lambda level, start: windows.append((level, start)))
    return result, windows


@pytest.fixture(scope="module")
def single_window(bundle_dir, tmp_path_factory):
    """The top level alone, one window (0.128 s = 64 tokens), same seed, batches of one sample."""
    workdir = tmp_path_factory.mktemp("single")
    return run_lib.run(make_config(bundle_dir, sample_length_in_seconds=0.128, levels=(2,), max_batch_size=(1,)),
                       workdir)


def test_ancestral_writes_every_output(ancestral):
    result, windows = ancestral
    assert result.levels == [2, 1, 0]
    assert [sum(1 for lw in windows if lw[0] == level) for level in (2, 1, 0)] == [3, 7, 15]
    for level in (2, 1, 0):
        directory = result.workdir / f"level_{level}"
        codes = np.load(directory / "codes.npz", allow_pickle=False)
        assert codes["z"].dtype == np.int32 and codes["z"].shape == (2, TOKENS[level])
        assert int(codes["level"]) == level and int(codes["sr"]) == SR and int(codes["hop_length"]) == 2048 // TOKENS[level]
        assert codes["windows_done"].tolist() == [s for lv, s in windows if lv == level]
        assert bool(codes["complete"]) and bool(codes["outputs_done"])
        assert codes["artist"].tolist() == ["Alan Jackson"] * 2 and codes["genre"].tolist() == ["country"] * 2
        assert codes["y"].shape[0] == 2 and codes["y"][0, 3] == 1  # artist id of 'alan jackson'
        np.testing.assert_array_equal(codes["z"], result.zs[level])
        assert 0 <= codes["z"].min() and codes["z"].max() < 32
        html = (directory / "index.html").read_text()
        for i in range(2):
            audio, sr = sf.read(directory / f"item_{i}.wav")
            assert sr == SR and audio.shape == (2048,)
            assert f"item_{i}.wav" in html and f"item_{i}.png" in html
            assert (directory / f"item_{i}.png").read_bytes()[:8] == PNG_SIGNATURE
    # Upper levels are recorded in the lower levels' codes files (what continue / upsample read).
    low = np.load(result.workdir / "level_0" / "codes.npz")
    np.testing.assert_array_equal(low["z_level_2"], result.zs[2])
    np.testing.assert_array_equal(low["z_level_1"], result.zs[1])


def test_first_window_matches_single_window_run(ancestral, single_window):
    """Multi-window top level (3 windows, hop 32) vs one 64-token window, same seed, other batch size: the
    first window's tokens are the same, so keys depend on the item and window only."""
    result, _ = ancestral
    assert single_window.zs[2].shape == (2, 64)
    np.testing.assert_array_equal(single_window.zs[2], result.zs[2][:, :64])
    assert not np.array_equal(result.zs[2][0], result.zs[2][1])  # items get their own keys


def test_primed_keeps_prompt_codes(bundle_dir, tmp_path):
    files = []
    for i in range(2):
        path = tmp_path / f"prompt{i}.wav"
        sf.write(path, melody(np.random.default_rng(i), 0.3, SR), SR)
        files.append(str(path))
    result = run_lib.run(make_config(bundle_dir, mode="primed", audio_file=",".join(files),
                                     prompt_length_in_seconds=0.13, n_samples=3, seed=3), tmp_path / "out")
    bundle = load_bundle(bundle_dir)
    prompts = modes.load_prompts(files, 1024, SR, 3)  # 0.13 s -> 1040 samples -> 64 top tokens = 1024 samples
    assert np.array_equal(prompts[2], prompts[0])      # files repeated to n_samples
    prompt_codes = modes.encode(bundle, prompts)
    for level in (2, 1, 0):
        n_prompt = 1024 // (2048 // TOKENS[level])
        assert result.zs[level].shape == (3, TOKENS[level])
        np.testing.assert_array_equal(result.zs[level][:, :n_prompt], prompt_codes[level])
        assert (tmp_path / "out" / f"level_{level}" / "item_2.wav").is_file()


def test_continue_extends_codes(bundle_dir, single_window, tmp_path):
    codes_file = single_window.workdir / "level_2" / "codes.npz"
    result = run_lib.run(make_config(bundle_dir, mode="continue", codes_file=str(codes_file), levels=(2,), seed=7,
                                     n_samples=-1, artist="", genre=""), tmp_path)
    z = result.zs[2]
    assert z.shape == (2, 128)
    np.testing.assert_array_equal(z[:, :64], single_window.zs[2])
    codes = outputs.read_codes(tmp_path / "level_2" / "codes.npz")
    assert codes.windows_done.tolist() == [32, 64]  # window 0 was full
    assert codes.artist == ["Alan Jackson"] * 2      # labels come from the codes file


def test_continue_cut_by_prompt_length_keeps_the_cut(bundle_dir, ancestral, tmp_path):
    base, _ = ancestral
    result = run_lib.run(make_config(bundle_dir, mode="continue", codes_file=str(base.workdir / "level_0" / "codes.npz"),
                                     prompt_length_in_seconds=0.128, n_samples=-1, seed=5), tmp_path)
    for level in (2, 1, 0):
        kept = TOKENS[level] // 2
        assert result.zs[level].shape == (2, TOKENS[level])
        np.testing.assert_array_equal(result.zs[level][:, :kept], base.zs[level][:, :kept])
        assert not np.array_equal(result.zs[level][:, kept:], base.zs[level][:, kept:])


def test_upsample_keeps_top_codes(bundle_dir, ancestral, tmp_path):
    base, _ = ancestral
    # level_0/codes.npz holds all three levels; upsample keeps only the top and re-samples the others.
    result = run_lib.run(make_config(bundle_dir, mode="upsample", codes_file=str(base.workdir / "level_0" / "codes.npz"),
                                     sample_length_in_seconds=0.0, n_samples=-1, seed=11), tmp_path)
    assert result.levels == [1, 0]
    np.testing.assert_array_equal(result.zs[2], base.zs[2])
    assert not (tmp_path / "level_2").exists()
    for level in (1, 0):
        assert result.zs[level].shape == (2, TOKENS[level])
        assert not np.array_equal(result.zs[level], base.zs[level])  # another seed
        assert sf.info(str(tmp_path / f"level_{level}" / "item_1.wav")).frames == 2048


def test_co_composition_keeps_chosen_rows(bundle_dir, single_window, tmp_path):
    codes_file = single_window.workdir / "level_2" / "codes.npz"
    result = run_lib.run(make_config(bundle_dir, mode="continue", codes_file=str(codes_file), keep=(1,), n_samples=2,
                                     levels=(2,), sample_length_in_seconds=0.128, artist="", genre=""), tmp_path)
    z = result.zs[2]
    assert z.shape == (2, 128)  # 64 kept + 64 more
    np.testing.assert_array_equal(z[:, :64], np.repeat(single_window.zs[2][1:2], 2, axis=0))
    assert not np.array_equal(z[0, 64:], z[1, 64:])


def test_resume_after_interruption(bundle_dir, ancestral, tmp_path):
    base, base_windows = ancestral
    sampled = []

    def stop_after_five(level, start):
        sampled.append((level, start))
        if len(sampled) == 5:  # the 5th window is level 1's 2nd
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_lib.run(make_config(bundle_dir), tmp_path, on_window=stop_after_five)
    assert sampled[-1][0] == 1 and not (tmp_path / "level_0").exists()
    with pytest.raises(run_lib.SampleError, match="already holds a sampling run"):
        run_lib.run(make_config(bundle_dir), tmp_path)

    resumed = []
    result = run_lib.run(make_config(bundle_dir, resume=True, max_batch_size=(1,)), tmp_path,
                         on_window=lambda level, start: resumed.append((level, start)))
    assert not set(sampled) & set(resumed)                            # no window sampled twice
    assert sorted(sampled + resumed) == sorted(base_windows)          # none lost
    assert result.stats[1].windows_sampled == 5 and 2 not in result.stats
    for level in (2, 1, 0):
        np.testing.assert_array_equal(result.zs[level], base.zs[level])  # same codes as uninterrupted
    with pytest.raises(run_lib.SampleError, match="seed is 1 but the run .* used 0"):
        run_lib.run(make_config(bundle_dir, resume=True, seed=1), tmp_path)


def test_unknown_artist_warns_and_uses_id_0(bundle_dir):
    labeller = load_bundle(bundle_dir).priors[2].labeller
    with pytest.warns(UserWarning, match="using id 0"):
        assert labeller.artist_id("Nobody Known") == 0
    assert labeller.artist_id("5") == 5  # numeric ids pass through


def test_bundle_without_id_tables(bundle_dir, tmp_path):
    root = tmp_path / "noids"
    shutil.copytree(bundle_dir, root, ignore=shutil.ignore_patterns("ids"))
    labeller = load_bundle(root, levels=[2]).priors[2].labeller
    with pytest.raises(ValueError, match="no ids/genre_ids.txt, so only 'unknown' \\(id 0\\) and numeric ids"):
        labeller.genre_ids("country")
    assert labeller.genre_ids("unknown") == [0] and labeller.genre_ids("3") == [3]


@pytest.mark.parametrize("overrides, message", [
    (dict(genre="countri"), "close known genres 'country'"),
    (dict(n_samples=0), "n_samples 0: must be at least 1"),
    (dict(temperature=(-0.5,)), "temperature -0.5: must be > 0"),
    (dict(top_k=5, top_p=0.9), "cannot be used together"),
    (dict(hop_fraction=(0.3, 0.3, 0.5)), "hop of 19 tokens at level 1, not a multiple of its conditioner's"),
    (dict(sample_length_in_seconds=0.001), "shorter than one top-level token \\(16 samples"),
    (dict(levels=(1, 0)), "level 1 is conditioned on level-2 codes, which cover 0 s"),
    (dict(total_sample_length_in_seconds=0.5), "total_length \\[4000, 4000\\] must lie in \\[min_duration"),
    (dict(mode="primed", audio_file="PROMPT", prompt_length_in_seconds=0.5), "is longer than the sample"),
    (dict(mode="primed", audio_file="x.wav", prompt_length_in_seconds=0.1), "audio_file x.wav: not found"),
    (dict(mode="continue"), "mode continue needs --codes_file"),
])
def test_bad_settings_are_one_line_errors(bundle_dir, tmp_path, overrides, message):
    if overrides.get("audio_file") == "PROMPT":
        overrides = dict(overrides, audio_file=str(tmp_path / "prompt.wav"))
        sf.write(overrides["audio_file"], melody(np.random.default_rng(0), 1.0, SR), SR)
    with pytest.raises(run_lib.USER_ERRORS, match=message) as info:
        run_lib.run(make_config(bundle_dir, **overrides), tmp_path / "out")
    assert "\n" not in str(info.value)


def test_unwritable_workdir_is_checked_first(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match="not writable"):
        run_lib.run(make_config(tmp_path / "no_such_bundle"), blocker / "out")


def test_checkpoint_that_does_not_match_its_config(bundle_dir, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(bundle_dir, root)
    config_path = root / "prior_level_1" / "config.json"
    cd = json.loads(config_path.read_text())
    cd["prior"]["prior_width"] = 48
    config_path.write_text(json.dumps(cd))
    with pytest.raises(run_lib.USER_ERRORS, match="prior_level_1: checkpoint does not match its config: param "):
        run_lib.run(make_config(root), tmp_path / "out")


@pytest.mark.filterwarnings("ignore:the load_module")  # ml_collections loading the --config file
def test_cli_prints_one_line_and_exits_2(bundle_dir, tmp_path, capsys):
    import sample  # the repo-root entry point
    from absl import flags
    import logging
    argv = ["sample.py", f"--checkpoint={bundle_dir}", f"--workdir={tmp_path / 'out'}", "--n_samples=0"]
    # absl logs unparse_flags() at INFO; a handler an earlier test left on a closed capture stream would print
    # "--- Logging error ---" into this test's stderr, which is not what sample.py printed
    logging.disable(logging.INFO)
    flags.FLAGS.unparse_flags()
    flags.FLAGS(argv)
    try:
        assert sample.main([]) == 2
    finally:
        flags.FLAGS.unparse_flags()
        logging.disable(logging.NOTSET)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: n_samples 0: must be at least 1"]


# ------------------------------------------------------------------------------------------------------------
# Top priors with lyrics: 1b_lyrics-like (one sequence of lyrics + music, prime attention) and 5b_lyrics-like
# (separate lyric encoder, cross-attention); alignment from their attention probabilities.

LYRIC_PRIORS = {
    # Layer 15 of attn_order 12 is a prime-attention layer (d % 16 == 15).
    "single_enc_dec": dict(single_enc_dec=True, attn_order=12, prior_depth=16, heads=2, alignment_layer=15,
                           alignment_head=1),
    # attn_order 8 = [1, 2, 3] * 3 + [6]: layer 9 is the first cross-attention layer.
    "separate_encoder": dict(attn_order=8, prior_depth=10, heads=2, alignment_layer=9, alignment_head=0,
                             merged_decoder=True, prime_width=16, prime_depth=3, prime_heads=1, prime_attn_order=2,
                             prime_blocks=4),
}


@pytest.mark.parametrize("kind", sorted(LYRIC_PRIORS))
def test_lyrics_priors_and_alignment(bundle_dir, tmp_path, kind):
    cd = tiny_configs.prior()
    cd.prior.update(dict(use_tokens=True, n_tokens=16, n_vocab=79, blocks=8, prime_loss_fraction=0.4,
                         **LYRIC_PRIORS[kind]))
    root = tmp_path / "lyrics_bundle"
    shutil.copytree(bundle_dir / "vqvae", root / "vqvae")
    _write_ids(root)
    _save_prior(root / "prior_level_2", cd, 42)
    lyrics = "Hello darkness, my old friend.\nI've come to talk with you again!"
    result = run_lib.run(make_config(root, lyrics=lyrics, levels=(2,), sample_length_in_seconds=0.128), tmp_path / "out")
    z = result.zs[2]
    assert z.shape == (2, 64) and 0 <= z.min() and z.max() < 32
    n_chars = len(lyrics)  # every character is in the v3 vocabulary
    assert [a.shape for a in result.alignments] == [(64, n_chars)] * 2
    for a in result.alignments:
        assert (a >= 0).all() and (a.sum(axis=1) <= 1 + 1e-5).all()
        assert (a.sum(axis=1) > 0).all()  # every music token attends to the lyric keys
        if kind == "separate_encoder":    # cross-attention sees only lyric keys
            np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-2)
    html = (tmp_path / "out" / "level_2" / "index.html").read_text()
    # The song's lyric window is characters 0..15 (mid clamped to n_tokens / 2); key j is character j - 1, so
    # characters 0..14 get a time, each character its own span.
    timed = outputs.char_timings(result.alignments[0], n_chars, 16, SR)
    assert [t is not None for t in timed] == [True] * 15 + [False] * (n_chars - 15)
    assert html.count("data-t='") == 2 * 15 and "<span data-t='" in html and "Hello" not in html
    assert (tmp_path / "out" / run_lib.ALIGNMENT_FILE).is_file()


@pytest.mark.parametrize("attn_order, depth, layer", [(12, 16, 15), (8, 10, 9)])
def test_alignment_probs_are_the_layers_attention(attn_order, depth, layer):
    """`ResAttnBlock.attn_probs` are the softmax the layer attends with (probs @ v = its attention output),
    not projection weights (the HF port's defect)."""
    from jukejax.prior.attention import CROSS
    from jukejax.prior.config import AutoregressiveConfig
    from jukejax.prior.transformer import ResAttnBlock
    cfg = AutoregressiveConfig(n_ctx=48, bins=40, width=32, heads=2, depth=depth, attn_order=attn_order, blocks=8,
                               prime_len=12 if attn_order == 12 else None, encoder_dims=12 if attn_order == 8 else 0)
    f = cfg.attn_funcs[layer]
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (2, 48, 32))
    enc = jax.random.normal(keys[1], (2, 12, 32)) if f == CROSS else None
    block = ResAttnBlock(cfg, f)
    params = nn.unbox(block.init(keys[2], x, enc))
    bound = block.bind(params)
    probs = bound.attn_probs(x, enc)
    q, k, v = bound.attn_qkv(x, enc)
    want = bound.attn.attend(q, k, v)
    vh = v.reshape(2, v.shape[1], 2, 4)[:, :probs.shape[-1]]  # n_state 8 = 2 heads x 4
    got = jnp.einsum("nhqk,nkhd->nqhd", probs, vh).reshape(2, 48, 8)
    assert probs.shape == (2, 2, 48, 12 if f == CROSS else cfg.prime_attn_len)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_windows_follow_get_starts():
    from jukejax.sample.schedule import Window, get_starts, level_windows
    assert get_starts(128, 64, 32) == [0, 32, 64]
    assert get_starts(100, 64, 32) == [0, 32, 36]       # the last window is clamped to total - n_ctx
    assert get_starts(64, 64, 8) == [0]
    assert level_windows(40, 64, 32) == [Window(0, 64, 40)]  # partial window: only `total` tokens


@pytest.mark.parametrize("mesh", [(8, 1, 1), (2, 2, 2)])
def test_sampling_on_a_mesh_gives_one_devices_tokens(bundle_dir, tmp_path, mesh):
    """Items split over the data axis (params by logical axes) draw the same tokens as on one device."""
    def top_codes(mesh, name):
        result = run_lib.run(make_config(bundle_dir, n_samples=8, sample_length_in_seconds=0.256, levels=(2,),
                                         max_batch_size=(8,), mesh=mesh), tmp_path / name)
        return outputs.read_codes(tmp_path / name / "level_2" / outputs.CODES_FILE).z
    one = top_codes((1, 1, 1), "one")
    np.testing.assert_array_equal(top_codes(mesh, "mesh"), one)


# ------------------------------------------------------------------------------------------------------------
# The workdir: one writer, resume against changed weights, leftovers of kills, lyrics stored once, a full disk.
# Top level only, the shapes of the runs above (3 windows of 64 tokens, or one).

TOP_ONLY = dict(levels=(2,), max_batch_size=(1,))

_HOLD_LOCK = """
import sys, time
from jukejax.sample.workdir import WorkdirLock
WorkdirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_one_writer_per_workdir_and_a_dead_holders_lock_is_taken_over(bundle_dir, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    workdir = tmp_path / "w"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(workdir)], stdout=subprocess.PIPE,
                              cwd=pathlib.Path(__file__).resolve().parents[1], text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(run_lib.SampleError, match=f"is in use by pid {holder.pid} on ") as info:
            run_lib.run(make_config(bundle_dir, sample_length_in_seconds=0.128, resume=True, **TOP_ONLY), workdir)
        assert "\n" not in str(info.value) and not (workdir / run_lib.RUN_FILE).exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert (workdir / ".lock").is_file()  # left by the killed holder, naming a dead pid
    result = run_lib.run(make_config(bundle_dir, sample_length_in_seconds=0.128, **TOP_ONLY), workdir)
    assert result.zs[2].shape == (2, 64) and not (workdir / ".lock").exists()


def test_resume_refuses_changed_weights(bundle_dir, tmp_path):
    from jukejax.checkpoint import load_variables
    root = tmp_path / "model"
    shutil.copytree(bundle_dir, root)

    def stop(level, start):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_lib.run(make_config(root, **TOP_ONLY), tmp_path / "w", on_window=stop)
    cd, variables, _ = load_variables(str(root / "prior_level_2"))
    variables = jax.tree.map(lambda x: np.asarray(x) * 1.01, variables)  # "retrained"
    save_variables(str(root / "prior_level_2"), cd, variables, step=1)
    with pytest.raises(run_lib.SampleError, match="the weights of prior_level_2 in .* changed since the run"):
        run_lib.run(make_config(root, resume=True, **TOP_ONLY), tmp_path / "w")


def test_kill_leftovers_removed_and_lyrics_stored_once(bundle_dir, tmp_path):
    lyrics = "la la la, " * 10_000  # 100 kB, the same for both items
    config = make_config(bundle_dir, lyrics=lyrics, **TOP_ONLY)

    def stop(level, start):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_lib.run(config, tmp_path, on_window=stop)
    codes_path = tmp_path / "level_2" / "codes.npz"
    assert codes_path.stat().st_size < 20_000  # in-progress rewrites carry no lyrics text
    assert outputs.read_codes(codes_path).lyrics == [lyrics, lyrics]  # found in run.json
    assert len((tmp_path / "run.json").read_text()) < 1.2 * len(lyrics)  # once, not once per item
    leftovers = [tmp_path / ".run.json.0123abcd.tmp", tmp_path / "level_2" / ".codes.npz.0123abcd.tmp",
                 tmp_path / "level_2" / ".item_0.wav.0123abcd.tmp"]
    for path in leftovers:
        path.write_bytes(b"half written by a killed run")
    run_lib.run(make_config(bundle_dir, lyrics=lyrics, resume=True, **TOP_ONLY), tmp_path)
    assert not any(path.exists() for path in leftovers)
    with np.load(codes_path) as data:
        assert json.loads(data["lyrics_json"].tobytes()) == [lyrics] and list(data["lyrics_of_item"]) == [0, 0]
    assert lyrics.encode() in codes_path.read_bytes() and codes_path.stat().st_size < 1.5 * len(lyrics)


def test_full_disk_while_writing_wavs_is_one_line_and_resumable(bundle_dir, tmp_path, monkeypatch):
    from jukejax import audio as audio_lib

    def to_full_disk(path, data):  # the kernel's real ENOSPC, from /dev/full
        with open("/dev/full", "wb") as f:
            f.write(data)
            f.flush()
    config = make_config(bundle_dir, sample_length_in_seconds=0.128, **TOP_ONLY)
    with monkeypatch.context() as m:
        m.setattr(audio_lib, "atomic_write_bytes", to_full_disk)
        with pytest.raises(run_lib.SampleError, match="level 2: cannot write its wavs .*No space left on device"
                           ) as info:
            run_lib.run(config, tmp_path)
    assert "\n" not in str(info.value)
    assert outputs.read_codes(tmp_path / "level_2" / "codes.npz").complete
    assert not list((tmp_path / "level_2").glob("*.wav"))
    result = run_lib.run(make_config(bundle_dir, sample_length_in_seconds=0.128, resume=True, **TOP_ONLY), tmp_path)
    assert 2 not in result.stats and (tmp_path / "level_2" / "item_1.wav").is_file()  # decoded, not re-sampled
