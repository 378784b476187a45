"""Label and upsampler conditioners: shapes, range errors, the state-dict table, and parity with the HF port."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util

from jukejax.config import ConfigError
from jukejax.prior.conditioners import (CONV, CONV_TRANSPOSE, Conditioner, LabelConditioner,
                                        LabelConditionerConfig, RangeEmbedding, UpsamplerConditionerConfig,
                                        check_labels, hf_to_original_conditioner_key, label_conditioner_torch_keys,
                                        load_torch_label_conditioner, load_torch_upsampler_conditioner,
                                        upsampler_conditioner_torch_keys)

SR = 44100


def label_config(include_time_signal=True, **kw):
    base = dict(y_bins=(12, 20), max_bow_genre_size=3, width=32, n_ctx=16, include_time_signal=include_time_signal,
                t_bins=64, sr=SR, min_duration=17.84, max_duration=600.0, init_scale=0.7)
    base.update(kw)
    return LabelConditionerConfig(**base)


def upsampler_config(**kw):
    base = dict(bins=24, width=32, n_ctx=32, down_t=2, stride_t=2, cond_width=16, cond_depth=2, cond_m_conv=1.0,
                cond_dilation_growth_rate=3, cond_dilation_cycle=2, init_scale=0.4)
    base.update(kw)
    return UpsamplerConditionerConfig(**base)


def make_labels(config, n=5, seed=0, sample_length=8192 * 128):
    """Valid label rows: songs longer than min_duration, windows that may run past the end of the song."""
    rng = np.random.default_rng(seed)
    (t_min, t_max), (_, a_max), _ = config.t_ranges
    total = rng.integers(int(np.ceil(t_min)), int(t_max) - sample_length, n)
    offset = (rng.random(n) * total).astype(np.int64)
    offset[0], offset[-1] = 0, total[-1] - sample_length // 2   # song start; a window running past the end
    length = np.full(n, sample_length)
    artist = rng.integers(0, config.artist_bins, n)
    genre = rng.integers(0, config.genre_bins, (n, config.max_bow_genre_size))
    genre[1, 1:] = -1                                    # empty genre slots
    genre[2, :] = -1
    return np.concatenate([np.stack([total, offset, length, artist], 1), genre], 1).astype(np.int64)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def to_original_state_dict(params, table):
    """Inverse of the loader: a numpy state dict with original key names from Flax params."""
    flat = traverse_util.flatten_dict(nn.unbox(params))
    out = {}
    for path, (key, layout) in table.items():
        value = np.asarray(flat[path])
        if layout == CONV:
            value = value.transpose(2, 1, 0)
        elif layout == CONV_TRANSPOSE:
            value = value[::-1].transpose(1, 2, 0)
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------------------------
# Without torch

def test_label_conditioner_sums_artist_and_present_genres():
    config = label_config(include_time_signal=False)
    labels = make_labels(label_config())
    model = LabelConditioner(config)
    params = model.init(jax.random.PRNGKey(0), labels)["params"]
    y_cond, y_pos = model.apply({"params": params}, labels)
    assert y_cond.shape == (5, 1, 32) and y_pos is None
    artist = np.asarray(nn.unbox(params["artist_emb"]["emb"]["embedding"]))
    genre = np.asarray(nn.unbox(params["bow_genre_emb"]["emb"]["embedding"]))
    expected = artist[labels[:, 3]] + np.stack([genre[row[row >= 0]].sum(0) for row in labels[:, 4:]])
    np.testing.assert_allclose(np.asarray(y_cond)[:, 0], expected, rtol=1e-6, atol=1e-7)
    # init N(0, 0.01 * init_scale) as the original SimpleEmbedding
    assert abs(float(artist.std()) - 0.007) < 0.0015


def test_label_conditioner_timing_shapes_and_jit():
    config = label_config()
    labels = make_labels(config)
    model = LabelConditioner(config)
    params = model.init(jax.random.PRNGKey(0), labels)["params"]
    assert set(params) == {"artist_emb", "bow_genre_emb", "total_length_emb", "absolute_pos_emb",
                           "relative_pos_emb"}
    y_cond, y_pos = model.apply({"params": params}, labels)
    y_cond_jit, y_pos_jit = jax.jit(model.apply)({"params": params}, labels)
    assert y_pos.shape == (5, 16, 32)
    np.testing.assert_array_equal(np.asarray(y_pos), np.asarray(y_pos_jit))
    np.testing.assert_array_equal(np.asarray(y_cond), np.asarray(y_cond_jit))


def test_label_range_errors_eager_and_nan_under_jit():
    config = label_config()
    labels = make_labels(config)
    model = LabelConditioner(config)
    params = model.init(jax.random.PRNGKey(0), labels)["params"]
    bad = labels.copy()
    bad[0, 0] = 10 * SR                                   # song shorter than min_duration
    with pytest.raises(ValueError, match="total_length"):
        model.apply({"params": params}, bad)
    _, y_pos = jax.jit(model.apply)({"params": params}, bad)
    assert np.isnan(np.asarray(y_pos[0])).all() and np.isfinite(np.asarray(y_pos[1:])).all()
    bad = labels.copy()
    bad[1, 3] = config.artist_bins                        # artist id past the table
    with pytest.raises(ValueError, match="artist ids"):
        check_labels(bad, config)
    y_cond, _ = jax.jit(model.apply)({"params": params}, bad)
    assert np.isnan(np.asarray(y_cond[1])).all() and np.isfinite(np.asarray(y_cond[0])).all()
    bad = labels.copy()
    bad[2, 1] = bad[2, 0]                                 # offset at the end of the song
    with pytest.raises(ValueError, match="offset"):
        check_labels(bad, config)
    # One sample short of max_duration is max_duration in float32, as the original's total_length.float().
    emb = RangeEmbedding(1, 64, config.t_ranges[0], 8, name="total_length_emb")
    p = emb.init(jax.random.PRNGKey(0), jnp.array([[60 * SR]], jnp.float32))
    with pytest.raises(ValueError, match=r"total_length_emb: range is \[786744.0, 26460000.0\), got start"):
        emb.apply(p, jnp.array([[600 * SR - 1]], jnp.float32))
    # A start just below 1 passes the range check, but interpolated positions round up to 1.0 (bin t_bins).
    emb = RangeEmbedding(16, 64, (0.0, 1.0), 8, clamp=True, name="relative_pos_emb")
    p = emb.init(jax.random.PRNGKey(0), jnp.zeros((1, 1)), jnp.full((1, 1), 0.5))
    with pytest.raises(ValueError, match=r"bins \[64\] outside \[0, 64\)"):
        emb.apply(p, jnp.full((1, 1), 0.9999999), jnp.full((1, 1), 1.3))


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="min_duration"):
        label_config(min_duration=None)
    with pytest.raises(ConfigError, match="y_bins"):
        label_config(y_bins=(12,))
    with pytest.raises(ConfigError, match="n_ctx 30 is not a multiple"):
        upsampler_config(n_ctx=30)
    c = UpsamplerConditionerConfig.for_level(0, (3, 1, 2), (2, 4, 2), bins=8, width=8, n_ctx=16)
    assert (c.down_t, c.stride_t, c.input_length) == (1, 4, 4)   # level 0 is conditioned on level 1
    with pytest.raises(ConfigError, match="no upper level"):
        UpsamplerConditionerConfig.for_level(2, (3, 2, 2), (2, 2, 2), bins=8, width=8, n_ctx=16)


def test_upsampler_conditioner_shapes_names_and_table_roundtrip():
    config = upsampler_config()
    model = Conditioner(config)
    z = np.random.default_rng(0).integers(0, config.bins, (2, config.input_length))
    params = model.init(jax.random.PRNGKey(1), z)["params"]
    flat = traverse_util.flatten_dict(nn.unbox(params))
    table = upsampler_conditioner_torch_keys(config)
    assert set(flat) == set(table)
    assert table[("cond", "model_1_0", "model_1", "model_1", "kernel")] == (
        "cond.model.1.0.blocks.1.model.1.weight", CONV)
    x_cond = model.apply({"params": params}, z)
    assert x_cond.shape == (2, config.n_ctx, config.width) and x_cond.dtype == jnp.float32
    std = float(np.asarray(flat[("x_emb", "embedding")]).std())
    assert abs(std - 0.02 * 0.4) < 0.002
    sd = {"conditioner_blocks.0." + k: v for k, v in to_original_state_dict(params, table).items()}
    loaded = load_torch_upsampler_conditioner(sd, config)
    for path, value in traverse_util.flatten_dict(loaded).items():
        np.testing.assert_array_equal(value, np.asarray(flat[path]))
    # `model.d` (checkpoint_res=0) spelling of the resnet keys is accepted too; leftovers and gaps are reported.
    sd_model = {k.replace(".0.blocks.", ".0.model."): v for k, v in sd.items()}
    load_torch_upsampler_conditioner(sd_model, config)
    sd_model["conditioner_blocks.0.extra.weight"] = np.zeros(1)
    del sd_model["conditioner_blocks.0.ln.bias"]
    with pytest.raises(ValueError, match=r"(?s)missing: conditioner_blocks.0.ln.bias.*unused: "
                                         r"conditioner_blocks.0.extra.weight"):
        load_torch_upsampler_conditioner(sd_model, config)
    with pytest.raises(ValueError, match="must lie in"):
        model.apply({"params": params}, np.full_like(z, config.bins))


def test_label_table_roundtrip():
    config = label_config()
    labels = make_labels(config)
    params = LabelConditioner(config).init(jax.random.PRNGKey(2), labels)["params"]
    table = label_conditioner_torch_keys(config)
    assert table[("relative_pos_emb", "emb", "embedding")][0] == "relative_pos_emb.emb.weight"
    sd = {"y_emb." + k: v for k, v in to_original_state_dict(params, table).items()}
    loaded = load_torch_label_conditioner(sd, config)
    flat = traverse_util.flatten_dict(nn.unbox(params))
    for path, value in traverse_util.flatten_dict(loaded).items():
        np.testing.assert_array_equal(value, np.asarray(flat[path]))


def test_hf_key_renames():
    cases = {
        "priors.0.metadata_embedding.artist_emb.weight": "priors.0.y_emb.artist_emb.emb.weight",
        "priors.0.metadata_embedding.bow_genre_emb.weight": "priors.0.y_emb.bow_genre_emb.emb.weight",
        "priors.0.metadata_embedding.absolute_pos_emb.emb.weight": "priors.0.y_emb.absolute_pos_emb.emb.weight",
        "priors.1.conditioner_blocks.embed_tokens.weight": "priors.1.conditioner_blocks.0.x_emb.weight",
        "priors.1.conditioner_blocks.upsampler.proj_in.bias": "priors.1.conditioner_blocks.0.cond.model.0.bias",
        "priors.1.conditioner_blocks.upsampler.upsample_block.2.resnet_block.5.conv1d_2.weight":
            "priors.1.conditioner_blocks.0.cond.model.2.0.model.5.model.3.weight",
        "priors.1.conditioner_blocks.upsampler.upsample_block.3.weight":
            "priors.1.conditioner_blocks.0.cond.model.2.1.weight",
        "priors.1.conditioner_blocks.layer_norm.weight": "priors.1.conditioner_blocks.0.ln.weight",
        "vqvae.decoders.0.level_blocks.0.upsample_block.0.resnet_block.0.conv1d_1.weight":
            "vqvae.decoders.0.level_blocks.0.upsample_block.0.resnet_block.0.conv1d_1.weight",
    }
    for hf, original in cases.items():
        assert hf_to_original_conditioner_key(hf) == original


# ---------------------------------------------------------------------------------------------------------------
# Parity with transformers' JukeboxLabelConditioner / JukeboxMusicTokenConditioner (random weights, fp32)

def _hf():
    pytest.importorskip("torch", reason="torch is needed for the *_vs_torch parity tests")
    pytest.importorskip("transformers", reason="transformers is needed for the *_vs_torch parity tests")
    import torch
    from transformers.models.deprecated.jukebox import modeling_jukebox as mj
    from transformers.models.deprecated.jukebox.configuration_jukebox import JukeboxPriorConfig
    return torch, mj, JukeboxPriorConfig


def _randomise(module, torch, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


@pytest.mark.torch
@pytest.mark.parametrize("include_time_signal", [True, False])
def test_label_conditioner_vs_torch(include_time_signal):
    torch, mj, JukeboxPriorConfig = _hf()
    config = label_config(include_time_signal)
    hf_config = JukeboxPriorConfig(hidden_size=config.width, timing_dims=config.t_bins, sampling_rate=config.sr,
                                   metadata_dims=list(config.y_bins), n_ctx=config.n_ctx,
                                   max_nb_genres=config.max_bow_genre_size, min_duration=config.min_duration,
                                   max_duration=config.max_duration)
    hf = mj.JukeboxLabelConditioner(hf_config, include_time_signal).eval()
    _randomise(hf, torch, seed=3)
    sd = {hf_to_original_conditioner_key("metadata_embedding." + k): v for k, v in hf.state_dict().items()}
    params = load_torch_label_conditioner(sd, config)
    labels = make_labels(config, n=6, seed=4)
    with torch.no_grad():
        want_cond, want_pos = hf(torch.from_numpy(labels))
    with jax.default_matmul_precision("highest"):
        y_cond, y_pos = LabelConditioner(config).apply({"params": params}, labels)
    assert rel_err(y_cond, want_cond.numpy()) <= 1e-5
    if include_time_signal:
        assert rel_err(y_pos, want_pos.numpy()) <= 1e-5
    else:
        assert y_pos is None and want_pos is None


@pytest.mark.torch
def test_range_embedding_bins_vs_torch():
    """Bin indices at and around bin edges, eager and jitted, equal the port's float32 binning."""
    torch, mj, _ = _hf()
    bins, n_time = 64, 16
    rng = np.random.default_rng(5)
    for pos_range, clamp in (((786744.0000000001, 26460000.0), False), ((0.0, 26460000.0), False),
                             ((0.0, 1.0), True)):
        lo, hi = pos_range
        edges = lo + (hi - lo) * np.arange(bins) / bins
        starts = np.concatenate([edges, np.nextafter(edges.astype(np.float32), np.float32(hi)),
                                 lo + (hi - lo) * rng.random(64)]).astype(np.float32)[:, None]
        ends = np.minimum(starts + (hi - lo) * rng.random(starts.shape) * (1.3 if clamp else 1.0),
                          hi * (1.2 if clamp else 1.0)).astype(np.float32)
        if not clamp:
            ends = np.minimum(ends, np.float32(hi))
        hf = mj.JukeboxRangeEmbedding(n_time, bins, pos_range, 1, clamp=clamp)
        with torch.no_grad():
            hf.emb.weight.copy_(torch.arange(bins, dtype=torch.float32)[:, None])
            want = hf(torch.from_numpy(starts), torch.from_numpy(ends))[..., 0].numpy().astype(np.int64)
        emb = RangeEmbedding(n_time, bins, pos_range, 1, clamp=clamp)
        got = np.asarray(emb.bin_indices(jnp.asarray(starts), jnp.asarray(ends)))
        got_jit = np.asarray(jax.jit(emb.bin_indices)(jnp.asarray(starts), jnp.asarray(ends)))
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got_jit, want)


@pytest.mark.torch
@pytest.mark.parametrize("settings", [
    dict(down_t=2, stride_t=2, cond_dilation_cycle=2, cond_res_scale=False),
    dict(down_t=1, stride_t=4, cond_depth=3, cond_dilation_cycle=None, cond_res_scale=True, cond_m_conv=2.0),
], ids=["down2x2-cycle2", "down1x4-resscale"])
def test_upsampler_conditioner_vs_torch(settings):
    torch, mj, JukeboxPriorConfig = _hf()
    config = upsampler_config(**settings)
    # HF reads res_downs_t[level] with its own level number (1 = middle); fill every slot with this down_t.
    hf_config = JukeboxPriorConfig(
        hidden_size=config.width, music_vocab_size=config.bins, res_conv_width=config.cond_width,
        res_conv_depth=config.cond_depth, res_convolution_multiplier=int(config.cond_m_conv),
        res_dilation_growth_rate=config.cond_dilation_growth_rate, res_dilation_cycle=config.cond_dilation_cycle,
        conv_res_scale=config.cond_res_scale, res_downs_t=[config.down_t] * 3, res_strides_t=[config.stride_t] * 3)
    hf = mj.JukeboxMusicTokenConditioner(hf_config, level=1).eval()
    _randomise(hf, torch, seed=6)
    sd = {hf_to_original_conditioner_key("conditioner_blocks." + k): v for k, v in hf.state_dict().items()}
    params = load_torch_upsampler_conditioner(sd, config)
    z = np.random.default_rng(7).integers(0, config.bins, (3, config.input_length))
    x_cond = np.random.default_rng(8).normal(size=(3, config.input_length, config.width)).astype(np.float32)
    with torch.no_grad():
        want = hf(torch.from_numpy(z), torch.from_numpy(x_cond)).numpy()
        want_plain = hf(torch.from_numpy(z)).numpy()
    with jax.default_matmul_precision("highest"):
        got = Conditioner(config).apply({"params": params}, z, x_cond)
        got_plain = jax.jit(Conditioner(config).apply)({"params": params}, z)
    assert got.shape == want.shape == (3, config.n_ctx, config.width)
    assert rel_err(got, want) <= 1e-5
    assert rel_err(got_plain, want_plain) <= 1e-5
