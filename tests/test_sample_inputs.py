"""What sampling does with bad inputs and settings, checked on the bundled demo model (models/demo) without
sampling a token: codes files (continue, upsample, `jukejax.vqvae decode`), settings and their one definition,
NaN weights, and that an early error leaves no workdir behind. Property tests (hypothesis) for codes, labels
and lyrics."""
import json
import pathlib
import re
import shlex
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from jukejax.sample import outputs
from jukejax.sample import run as run_lib
from jukejax.sample import settings as settings_lib
from jukejax.sample.bundle import load_bundle
from jukejax.testing import fast_compiles
from jukejax.vqvae.codes import CodesError, check_codes

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo"
SR, HOPS, L_BINS = 22050, (8, 32, 128), 256
pytestmark = pytest.mark.skipif(not (DEMO / "vqvae").is_dir(), reason="models/demo is not bundled")


@pytest.fixture(scope="module")
def demo():
    return load_bundle(DEMO)


@pytest.fixture
def loaded_once(demo, monkeypatch):
    """run() reads the demo model from memory (loading it is most of these tests' time)."""
    monkeypatch.setattr(run_lib, "load_bundle", lambda directory, dtype=None: demo)


def one_line(e) -> str:
    text = str(e.value if hasattr(e, "value") else e)
    assert "\n" not in text, text
    return text


def write_good_codes(path, n=2, tokens=8, **changes) -> pathlib.Path:
    """A codes.npz as a finished top-level run of the demo model writes it."""
    rng = np.random.default_rng(0)
    z = rng.integers(0, L_BINS, (n, tokens)).astype(np.int32)
    codes = outputs.Codes(level=2, z=z, zs={2: z, 1: z[:, :0], 0: z[:, :0]}, sr=SR, hop_lengths=HOPS,
                          artist=["unknown"] * n, genre=["unknown"] * n, lyrics=[""] * n,
                          y=np.zeros((n, 0), np.int64), total_length=0, sample_length=tokens * HOPS[2],
                          windows_done=np.zeros(1, np.int64), complete=True, outputs_done=True)
    outputs.write_codes(path, codes)
    if changes:
        with np.load(path) as data:
            arrays = dict(data)
        arrays.update(changes)
        np.savez(path, **arrays)
    return pathlib.Path(path)


def config(**overrides):
    cfg = settings_lib.defaults_config()
    cfg.update(dict(checkpoint=str(DEMO), sample_length_in_seconds=1.0, total_sample_length_in_seconds=10.0,
                    progress=False))
    cfg.update(overrides)
    return cfg


# ------------------------------------------------------------------------------------------------------------
# Codes files

def _bad_codes(tmp_path, kind):
    path = tmp_path / f"{kind}.npz"
    z = np.random.default_rng(0).integers(0, L_BINS, (2, 8))
    if kind == "negative":
        return write_good_codes(path, z=z - 300, z_level_2=z - 300), "z: code -[0-9]+ is negative"
    if kind == "too_big":
        return write_good_codes(path, z=z + 9999, z_level_2=z + 9999), "code 1[0-9]+ outside the codebook \\[0, 256\\)"
    if kind == "wraps_in_int32":
        big = z.astype(np.int64) + 2 ** 32  # 2**32 + k must not become code k
        return write_good_codes(path, z=big, z_level_2=big), "outside the codebook \\[0, 256\\)"
    if kind == "float_nan":
        f = z.astype(np.float32)
        f[0, 0] = np.nan
        return write_good_codes(path, z=f, z_level_2=f), "dtype float32; codes are integers"
    if kind == "one_dim":
        return write_good_codes(path, z=z[0], z_level_2=z[0]), "shape \\(8,\\); expected 2 dimensions"
    if kind == "level_7":
        return write_good_codes(path, level=np.int64(7)), "level 7, but its hop lengths \\(8, 32, 128\\) have levels"
    if kind == "random_bytes":
        path.write_bytes(np.random.default_rng(1).bytes(3000))
        return path, "not an npz file"
    if kind == "npy":
        np.save(path.with_suffix(".npy"), z)
        path.with_suffix(".npy").rename(path)
        return path, "an .npy array, not an npz"
    if kind == "truncated":
        good = write_good_codes(path)
        good.write_bytes(good.read_bytes()[:200])
        return path, "cannot be read"
    if kind == "rows_differ":
        return write_good_codes(path, z_level_1=np.zeros((3, 0), np.int32)), "z_level_1 has 3 rows, z has 2"
    raise AssertionError(kind)


BAD_CODES = ["negative", "too_big", "wraps_in_int32", "float_nan", "one_dim", "level_7", "random_bytes", "npy",
             "truncated", "rows_differ"]


@pytest.mark.parametrize("mode", ["continue", "upsample"])
@pytest.mark.parametrize("kind", BAD_CODES)
def test_bad_codes_file_is_one_line_and_writes_nothing(tmp_path, kind, mode, loaded_once):
    path, message = _bad_codes(tmp_path, kind)
    workdir = tmp_path / "out"
    with pytest.raises(run_lib.USER_ERRORS, match=message) as e:
        run_lib.run(config(mode=mode, codes_file=str(path), sample_length_in_seconds=0.0 if mode == "upsample"
                           else 1.0), workdir)
    assert str(path) in one_line(e) and "pickled" not in str(e.value)
    assert not workdir.exists()


def test_missing_codes_file_names_it(tmp_path):
    with pytest.raises(run_lib.USER_ERRORS, match="codes_file .*nope.npz: not found"):
        run_lib.run(config(mode="continue", codes_file=str(tmp_path / "nope.npz")), tmp_path / "out")


@pytest.mark.parametrize("kind", ["negative", "float_nan", "random_bytes"])
def test_vqvae_decode_checks_codes(tmp_path, capsys, kind):
    from jukejax.vqvae.__main__ import main
    path, _ = _bad_codes(tmp_path, kind)
    if kind in ("negative", "too_big", "float_nan"):  # the decode CLI's layout: level_{l} arrays
        with np.load(path) as data:
            np.savez(path, level_2=data["z"])
    out = tmp_path / "x.wav"
    assert main(["decode", str(path), "--checkpoint", str(DEMO / "vqvae"), "--level", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "pickled" not in err[0], err
    assert not out.exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=st.sampled_from(["int8", "int16", "int32", "int64", "uint8", "uint32", "float32", "float64", "bool"]),
       shape=st.lists(st.integers(0, 4), min_size=0, max_size=3),
       lo=st.integers(-300, 300), span=st.integers(0, 600))
def test_check_codes_accepts_exactly_valid_codes(dtype, shape, lo, span):
    rng = np.random.default_rng(abs(lo) + span)
    values = rng.integers(lo, lo + span + 1, size=tuple(shape))
    with np.errstate(all="ignore"):
        z = values.astype(dtype)
    valid = (np.dtype(dtype).kind in "iu" and len(shape) == 2
             and (z.size == 0 or (int(z.min()) >= 0 and int(z.max()) < L_BINS)))
    if valid:
        out = check_codes(z, l_bins=L_BINS, name="f")
        assert out.dtype == np.int32 and np.array_equal(out, z)
    else:
        with pytest.raises(CodesError) as e:
            check_codes(z, l_bins=L_BINS, name="f")
        assert one_line(e).startswith("f: ")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(artists=st.lists(st.text(max_size=20), min_size=1, max_size=3),
       lyrics=st.lists(st.text(max_size=200), min_size=1, max_size=3))
def test_codes_round_trip_any_labels_and_lyrics(tmp_path_factory, artists, lyrics):
    n = max(len(artists), len(lyrics))
    path = tmp_path_factory.mktemp("codes") / "codes.npz"
    z = np.zeros((n, 4), np.int32)
    codes = outputs.Codes(level=2, z=z, zs={2: z}, sr=SR, hop_lengths=HOPS,
                          artist=[artists[i % len(artists)] for i in range(n)], genre=["g"] * n,
                          lyrics=[lyrics[i % len(lyrics)] for i in range(n)], y=np.zeros((n, 0), np.int64),
                          total_length=0, sample_length=4 * HOPS[2], windows_done=np.zeros(0, np.int64),
                          complete=True)
    outputs.write_codes(path, codes)
    back = outputs.read_codes(path)
    assert back.lyrics == codes.lyrics
    # numpy's str arrays drop trailing NULs; anything else comes back as written
    assert back.artist == [a.rstrip("\0") for a in codes.artist]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(artist=st.text(max_size=30), genre=st.text(max_size=30), lyrics=st.text(max_size=300))
def test_any_label_text_is_an_id_or_a_one_line_error(demo, artist, genre, lyrics):
    import warnings
    lab = demo.priors[2].labeller
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert 0 <= lab.artist_id(artist) < 1 << 31
    try:
        ids = lab.genre_ids(genre)
        assert len(ids) == lab.max_bow_genre_size
    except ValueError as e:
        one_line(e)
    tokens = lab.full_tokens(lyrics)
    n_vocab = demo.priors[2].config.hps.n_vocab
    assert tokens.ndim == 1 and (tokens.size == 0 or (tokens.min() >= 0 and tokens.max() < n_vocab))


# ------------------------------------------------------------------------------------------------------------
# Settings: checked before the workdir exists

@pytest.mark.parametrize("overrides, message", [
    (dict(temperature=(0.9, 0.8)), "temperature has 2 values \\[0.9, 0.8\\]; give one, or one per level \\(this "
                                   "model has 3 levels"),
    (dict(max_batch_size=(1, 2)), "max_batch_size has 2 values"),
    (dict(hop_fraction=(0.5, 0.5, 0.5, 0.5)), "hop_fraction has 4 values"),
    (dict(temperature=(float("inf"),)), "temperature inf: must lie in \\[0.01, 10\\]"),
    (dict(temperature=(1e-40,)), "temperature 1e-40: must lie in \\[0.01, 10\\]"),
    (dict(temperature=(0.0,)), "temperature 0: must be > 0"),
    (dict(temperature=(float("nan"),)), "temperature nan: must be > 0"),
    (dict(levels=(7,)), "levels \\[7\\]: this model has levels 0..2"),
    (dict(sample_length_in_seconds=float("inf")), "sample_length_in_seconds inf: must be a finite number"),
    (dict(lyrics_file="/no/such/lyrics.txt"), "lyrics_file /no/such/lyrics.txt: cannot be read"),
    (dict(mode="primed", audio_file="/no/such/prompt.wav", prompt_length_in_seconds=1.0),
     "audio_file /no/such/prompt.wav: not found"),
    (dict(checkpoint="/no/such/model"), "/no/such/model: no such bundle directory"),
    (dict(total_sample_length_in_seconds=0.0), "set --total_sample_length_in_seconds"),
])
def test_early_errors_leave_no_workdir(tmp_path, overrides, message, request):
    if "checkpoint" not in overrides:
        request.getfixturevalue("loaded_once")
    workdir = tmp_path / "a" / "b"
    with pytest.raises(run_lib.USER_ERRORS, match=message) as e:
        run_lib.run(config(**overrides), workdir)
    one_line(e)
    assert not (tmp_path / "a").exists()


@settings(max_examples=60, deadline=None)
@given(t=st.floats(allow_nan=True, allow_infinity=True, width=64))
def test_temperature_accepted_exactly_in_its_range(t):
    cfg = config(temperature=(t,))
    if settings_lib.MIN_TEMPERATURE <= t <= settings_lib.MAX_TEMPERATURE:
        assert settings_lib.from_config(cfg).temperature == (t,)
    else:
        with pytest.raises(settings_lib.SampleError) as e:
            settings_lib.from_config(cfg)
        one_line(e)


def test_two_level_defaults_come_from_the_model():
    assert settings_lib.per_level_defaults(2) == dict(hop_fraction=(0.5, 0.125), temperature=(0.99, 0.99),
                                                      max_batch_size=(16, 16))
    assert settings_lib.per_level_defaults(3)["hop_fraction"] == (0.5, 0.5, 0.125)  # the original's


def test_nan_weights_are_refused_at_load(tmp_path):
    from jukejax.checkpoint import load_variables, save_variables
    root = tmp_path / "model"
    shutil.copytree(DEMO, root, ignore=shutil.ignore_patterns("prior_level_0", "prior_level_2"))
    for component in ("vqvae", "prior_level_1"):
        shutil.rmtree(root / component)
        cd, variables, _ = load_variables(str(DEMO / component))
        variables = {k: v for k, v in variables.items()}
        leaves, treedef = __import__("jax").tree_util.tree_flatten(variables["params"])
        leaves = [np.array(x) for x in leaves]
        leaves[0].reshape(-1)[:3] = np.nan
        variables["params"] = __import__("jax").tree_util.tree_unflatten(treedef, leaves)
        save_variables(str(root / component), cd, variables)
    with pytest.raises(run_lib.USER_ERRORS, match="vqvae/checkpoints/0: parameter .* holds 3 NaN or infinite value") as e:
        load_bundle(root)
    one_line(e)
    shutil.rmtree(root / "vqvae")
    shutil.copytree(DEMO / "vqvae", root / "vqvae")
    with pytest.raises(run_lib.USER_ERRORS, match="prior_level_1/checkpoints/0: parameter .* holds 3 NaN or infinite value"):
        load_bundle(root).priors[1].load_params()


# ------------------------------------------------------------------------------------------------------------
# One definition per setting, and every documented flag reaches the settings

def test_every_setting_has_one_definition():
    import sample  # noqa: F401  (defines the flags)
    from absl import flags
    cfg = settings_lib.defaults_config()
    assert set(cfg.keys()) == set(settings_lib.FIELDS)
    cfg.checkpoint = "m"
    assert settings_lib.from_config(cfg) == settings_lib.SampleSettings(checkpoint="m")
    for name, field in settings_lib.FIELDS.items():
        assert name in flags.FLAGS and flags.FLAGS[name].help.startswith(field.metadata["help"])


def _documented_sample_commands():
    """Every `sample.py ...` command in the README, the Makefile and the docstrings of sample.py and
    configs/sample_defaults.py, with Makefile variables and shell continuations resolved."""
    texts = [(ROOT / "README.md").read_text(), (ROOT / "sample.py").read_text(),
             (ROOT / "configs" / "sample_defaults.py").read_text(),
             re.sub(r"\$\((\w+)\)", "1", (ROOT / "Makefile").read_text())]
    commands = []
    for text in texts:
        text = text.replace("\\\n", " ")
        for line in text.splitlines():
            if "sample.py --" in line and not line.rstrip().endswith("--help"):
                commands.append(line[line.index("sample.py"):].split("`")[0].strip())
    prose = (ROOT / "configs" / "sample_defaults.py").read_text().split("Other modes:")[1].split('"""')[0]
    prose += (ROOT / "README.md").read_text().split("## Sampling")[1].split("Modes:")[1].split("\n\n")[0]
    commands += ["sample.py " + " ".join(m.split()).rstrip(".,`")
                 for m in re.findall(r"--\w+=[^\s;`]+(?:\s+--\w+=[^\s;`]+)*", prose.replace("`", " "))]
    return commands


def test_every_documented_flag_parses_and_reaches_the_settings(tmp_path):
    import sample  # noqa: F401
    from absl import flags
    commands = _documented_sample_commands()
    assert len(commands) >= 5
    seen = set()
    for command in commands:
        argv = [a for a in shlex.split(command) if re.fullmatch(r"--\w+(=.*)?", a) and a != "--help"]
        flags.FLAGS.unparse_flags()
        try:
            flags.FLAGS(["sample.py", *argv])
            cfg = settings_lib.config_with_flags(flags.FLAGS.config)
        finally:
            flags.FLAGS.unparse_flags()
        s = settings_lib.SampleSettings(**{k: settings_lib.parse_value(k, cfg[k]) for k in cfg.keys()})
        for arg in argv:
            name, _, value = arg[2:].partition("=")
            if name in settings_lib.FIELDS:
                assert getattr(s, name) == settings_lib.parse_value(name, value), (command, name)
                seen.add(name)
    assert {"checkpoint", "artist", "genre", "temperature", "mode", "codes_file", "keep", "levels",
            "hop_fraction", "audio_file", "prompt_length_in_seconds"} <= seen


@pytest.mark.slow  # samples two levels end to end
def test_a_two_level_model_samples_without_per_level_flags(tmp_path):
    """Defaults come from the model folder: a 2-level model needs no --levels, --hop_fraction, --temperature or
    --max_batch_size (the top prior advances 1/8 of its context, the upsampler 1/2)."""
    import jax
    import jax.numpy as jnp
    from flax import linen as nn
    import tiny_configs
    from jukejax.checkpoint import save_variables
    from jukejax.config import VQVAEConfig, build
    from jukejax.prior.prior import Prior, prior_config
    from jukejax.vqvae.model import VQVAE

    vq = tiny_configs.vqvae()
    vq.vqvae.update(dict(levels=2, downs_t=(2, 1), strides_t=(2, 2), hvqvae_multipliers=(1, 1)))
    root = tmp_path / "model"
    variables = jax.jit(VQVAE(build(VQVAEConfig, vq.vqvae, "vqvae")).init)(
        {"params": jax.random.key(1)}, jnp.zeros((1, 64, 1)))
    save_variables(str(root / "vqvae"), vq, nn.unbox(variables))
    for level, cd in ((1, tiny_configs.prior()), (0, tiny_configs.upsampler())):
        cd.vqvae = vq.vqvae
        cd.prior.level = level
        pc = prior_config(cd)
        z_cond = jnp.zeros((1, pc.cond_length), jnp.int32) if pc.upsampler else None
        params = jax.jit(Prior(pc).init)(jax.random.key(level), jnp.zeros((1, pc.n_ctx), jnp.int32), z_cond,
                                         jnp.zeros((1, pc.y_width), jnp.int32))
        save_variables(str(root / f"prior_level_{level}"), cd, nn.unbox(params))
    with fast_compiles():
        result = run_lib.run(dict(checkpoint=str(root), sample_length_in_seconds=0.128, n_samples=1,
                                  total_sample_length_in_seconds=2.0,
                                  progress=False, alignment=False), tmp_path / "out")
    assert result.levels == [1, 0] and result.zs[1].shape == (1, 128) and result.zs[0].shape == (1, 256)
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["per_level"] == {"1": dict(hop=8, temperature=0.99), "0": dict(hop=32, temperature=0.99)}
    assert (tmp_path / "out" / "level_0" / "item_0.wav").is_file()


@pytest.mark.parametrize("typed, stored", [("jane pianist", "jane_pianist"), ("Jane  Pianist!", "jane_pianist"),
                                           ("Alan_Jackson", "alan jackson"), ("alan jackson", "alan jackson")])
def test_names_are_found_the_way_the_dataset_stored_them(typed, stored):
    """A name typed with spaces, case or punctuation finds the table's entry whichever way the table spells it
    (a dataset built by `jukejax.data build` stores `name_key`; the released v3 tables keep spaces)."""
    from jukejax.data.builder import normalize_name
    from jukejax.prior.labels import Labeller
    assert normalize_name("Jane Pianist") == "jane_pianist"
    for v3 in (True, False):
        lab = Labeller({"unknown": 0, stored: 7}, {"unknown": 0, "folk": 1}, labels_v3=v3, max_bow_genre_size=1)
        if v3 or "_" in stored:
            assert lab.artist_id(typed) == 7
    lab = Labeller({"unknown": 0}, {"unknown": 0, "irish_folk_tune": 4}, labels_v3=True, max_bow_genre_size=1)
    assert lab.genre_ids("Irish folk tune") == [4]


# ------------------------------------------------------------------------------------------------------------
# Spectrograms a person can read

def test_spectrogram_is_mel_scaled_large_and_titled(tmp_path):
    import struct
    sr = 22050
    t = np.arange(2 * sr) / sr
    octave = 0.2 * (np.sin(2 * np.pi * 220 * t) + np.sin(2 * np.pi * 440 * t))
    spec = outputs.spectrogram(octave, sr)
    assert spec.shape == (256, 1024)
    profile = spec.mean(axis=1)[::-1]  # row 0 = lowest band
    fmin, fmax = 30.0, sr / 2
    rows = [int(round((outputs.hz_to_mel(f) - outputs.hz_to_mel(fmin))
                      / (outputs.hz_to_mel(fmax) - outputs.hz_to_mel(fmin)) * 255)) for f in (220, 440)]
    peaks = sorted(np.argsort(profile)[-2:])
    assert all(abs(p - r) <= 2 for p, r in zip(peaks, rows)), (peaks, rows)  # each note where the mel axis puts it
    assert profile[(rows[0] + rows[1]) // 2] < profile[rows[0]] - 0.2          # and the octave apart, not merged
    png = outputs.write_spectrogram_png(tmp_path / "s.png", octave, sr, "level 0, item 1").read_bytes()
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 1024 and height >= 256
    img = outputs.spectrogram_image(octave, sr, "level 0, item 1")
    title_band, axis_band = img[:outputs._TOP], img[-outputs._BOTTOM:]
    assert (title_band < 128).any() and (axis_band < 128).any()                # title and time labels drawn


def test_index_shows_each_spectrogram_beside_its_player(tmp_path):
    page = outputs.write_index_html(tmp_path / "index.html", "level 0", [
        outputs.HtmlItem("item_0.wav", "item_0.png", "a", "g", ""),
        outputs.HtmlItem("item_1.wav", "item_1.png", "a", "g", "")]).read_text()
    for i in range(2):
        row = re.search(f"<div class='row'>(.*?)</div></div>", page.split(f"item {i}</h2>")[1], re.S).group(1)
        assert f"src='item_{i}.wav'" in row and f"src='item_{i}.png'" in row
    assert "height:128px" not in page
