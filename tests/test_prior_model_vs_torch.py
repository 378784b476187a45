"""A whole prior (conditioners + lyrics + transformer + loss weighting) against transformers' JukeboxPrior.

Three small configs shaped like the released ones: (a) an upsampler (attn_order 2, music-token conditioner,
v2 labels without timing), (b) 1b_lyrics (single encoder-decoder, attn_order 12, prime attention, v3 labels,
timing), (c) 5b_lyrics (separate lyric encoder, attn_order 10 cross-attention, merged decoder). Random
weights in torch, copied through `load_torch_prior` (HF key names), fp32.

Where the port deviates from openai/jukebox we follow the original:
- `forward_tokens` crashes on priors without lyrics (`get_encoder_loss` calls `.device` on None), so (a) is computed
  with the port's `get_cond` + its transformer's forward, which is what `forward_tokens` does with lyrics.
- `forward_tokens` fails for batch > 1 with lyrics (`.view` of a non-contiguous slice): (b), (c) use batch 1.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from transformers.models.deprecated.jukebox import configuration_jukebox as hf_cfg  # noqa: E402
from transformers.models.deprecated.jukebox import modeling_jukebox as hf  # noqa: E402

from jukejax import presets  # noqa: E402
from jukejax.prior.prior import Prior, prior_config  # noqa: E402
from jukejax.prior.torch_keys import load_torch_prior  # noqa: E402
from torch_reference import randomize  # noqa: E402

pytestmark = pytest.mark.torch
L_BINS = 32
TOL = 1e-5


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def ours(level, **prior):
    c = presets.prior(level, **prior)
    c.vqvae.l_bins = L_BINS
    return prior_config(c)


def hf_prior(hf_level, **kw):
    base = dict(act_fn="quick_gelu", attention_multiplier=0.25, mlp_multiplier=1.0, attn_res_scale=False,
                emb_dropout=0.0, attn_dropout=0.0, resid_dropout=0.0, zero_out=False, init_scale=1.0, mask=True,
                spread=None, music_vocab_size=L_BINS, sampling_rate=44100, res_downs_t=[3, 2, 2],
                res_strides_t=[2, 2, 2], level=hf_level)
    base.update(kw)
    model = hf.JukeboxPrior(hf_cfg.JukeboxPriorConfig(**base), level=hf_level, nb_priors=3)
    model.post_init()
    return model


def labels_y(n, total, offset, length, artist, genres, lyrics=()):
    rows = [[total, offset, length, artist, *genres, *lyrics] for _ in range(n)]
    return np.asarray(rows, np.int64)


def compare(model_hf, config, z, z_cond, y, hf_loss_fn):
    randomize(model_hf, seed=0)
    sd = {k: v for k, v in model_hf.state_dict().items()}
    params = load_torch_prior(sd, config, hf=True)
    with torch.no_grad():
        want_loss, want_logits, want_metrics = hf_loss_fn(model_hf)
    with jax.default_matmul_precision("highest"):
        loss, metrics, logits = jax.jit(Prior(config).apply)({"params": params}, z, z_cond, y)
    compare.params = params
    return (rel_err(logits, want_logits), rel_err(loss, want_loss),
            {k: (float(metrics[k]), float(v)) for k, v in want_metrics.items()})


def test_upsampler_like_prior_matches_port():
    n, n_ctx = 2, 64
    config = ours(1, n_ctx=n_ctx, prior_width=32, prior_depth=3, heads=1, attn_order=2, blocks=8,
                  cond_width=16, cond_depth=2, cond_dilation_growth_rate=3, cond_dilation_cycle=2,
                  labels=True, y_bins=(7, 11), max_bow_genre_size=2, t_bins=8)
    model_hf = hf_prior(1, hidden_size=32, num_layers=3, n_heads=1,
                        attention_pattern="raw_column_previous_row_attention", blocks=8, n_ctx=n_ctx,
                        res_conv_width=16, res_conv_depth=2, res_dilation_growth_rate=3, res_dilation_cycle=2,
                        conv_res_scale=False, metadata_dims=[7, 11], max_nb_genres=2, timing_dims=8,
                        is_encoder_decoder=False, nb_relevant_lyric_tokens=0, merged_decoder=False,
                        min_duration=1.0, max_duration=600.0)
    rng = np.random.default_rng(1)
    z = rng.integers(0, L_BINS, (n, n_ctx)).astype(np.int32)
    z_cond = rng.integers(0, L_BINS, (n, n_ctx // 4)).astype(np.int32)
    y = labels_y(n, 44100 * 30, 44100, n_ctx * 32, 5, [3, -1])

    def hf_loss(m):
        x_cond, y_cond, _ = m.get_cond([torch.from_numpy(z_cond).long()], torch.from_numpy(y))
        gen_loss, logits = m.prior(torch.from_numpy(z).long(), x_cond, y_cond, None, get_preds=True)
        return gen_loss, logits, {"gen_loss": gen_loss}

    logits_err, loss_err, metrics = compare(model_hf, config, z, z_cond, y, hf_loss)
    print("upsampler-like", logits_err, loss_err, metrics)
    assert logits_err <= TOL and loss_err <= TOL
    assert config.upsampler is not None and config.labels.include_time_signal is False


def test_1b_lyrics_like_prior_matches_port():
    n_ctx, n_tokens = 64, 16
    config = ours(2, n_ctx=n_ctx, prior_width=32, prior_depth=16, heads=2, attn_order=12, blocks=8,
                  labels=True, labels_v3=True, y_bins=(5, 9), max_bow_genre_size=1, t_bins=8, n_vocab=79,
                  min_duration=1.0, max_duration=100.0, use_tokens=True, n_tokens=n_tokens,
                  prime_loss_fraction=0.4, single_enc_dec=True)
    model_hf = hf_prior(0, hidden_size=32, num_layers=16, n_heads=2, attention_pattern="enc_dec_with_lyrics",
                        blocks=8, n_ctx=n_ctx, metadata_dims=[5, 9], max_nb_genres=1, timing_dims=8,
                        is_encoder_decoder=True, nb_relevant_lyric_tokens=n_tokens, lyric_vocab_size=79,
                        merged_decoder=False, encoder_loss_fraction=0.4, min_duration=1.0, max_duration=100.0)
    rng = np.random.default_rng(2)
    z = rng.integers(0, L_BINS, (1, n_ctx)).astype(np.int32)
    lyrics = rng.integers(0, 79, n_tokens)
    y = labels_y(1, 44100 * 50, 44100 * 3, n_ctx * 128, 4, [2], lyrics)

    def hf_loss(m):
        loss, metrics = m.forward_tokens(torch.from_numpy(z).long(), [], torch.from_numpy(y), get_preds=True)
        return loss, metrics["preds"], {"gen_loss": metrics["next_token_prediction_loss"],
                                        "prime_loss": metrics["encoder_loss"]}

    logits_err, loss_err, metrics = compare(model_hf, config, z, None, y, hf_loss)
    print("1b-like", logits_err, loss_err, metrics)
    assert logits_err <= TOL and loss_err <= TOL
    for name, (got, want) in metrics.items():
        assert abs(got - want) <= TOL * abs(want), name


def test_5b_lyrics_like_prior_matches_port():
    n_ctx, n_tokens = 64, 16
    config = ours(2, n_ctx=n_ctx, prior_width=32, prior_depth=19, heads=2, attn_order=10, blocks=8,
                  labels=True, y_bins=(7, 11), max_bow_genre_size=2, t_bins=8, n_vocab=80, min_duration=1.0,
                  max_duration=100.0, use_tokens=True, n_tokens=n_tokens, prime_loss_fraction=0.4,
                  merged_decoder=True, prime_width=16, prime_depth=3, prime_heads=1, prime_attn_order=2,
                  prime_blocks=4, prime_init_scale=0.7)
    encoder = dict(hidden_size=16, num_layers=3, n_heads=1, attention_pattern="raw_column_previous_row_attention",
                   blocks=4, init_scale=0.7, mask=True, attention_multiplier=0.25, mlp_multiplier=1.0,
                   act_fn="quick_gelu", attn_res_scale=False, emb_dropout=0.0, attn_dropout=0.0,
                   resid_dropout=0.0, zero_out=False, spread=None, n_ctx=n_tokens, lyric_vocab_size=80,
                   merged_decoder=False)
    model_hf = hf_prior(0, hidden_size=32, num_layers=19, n_heads=2,
                        attention_pattern="large_separated_enc_dec_w_lyrics", blocks=8, n_ctx=n_ctx,
                        metadata_dims=[7, 11], max_nb_genres=2, timing_dims=8, is_encoder_decoder=False,
                        nb_relevant_lyric_tokens=n_tokens, lyric_vocab_size=80, merged_decoder=True,
                        encoder_loss_fraction=0.4, encoder_config=encoder, min_duration=1.0, max_duration=100.0)
    rng = np.random.default_rng(3)
    z = rng.integers(0, L_BINS, (1, n_ctx)).astype(np.int32)
    lyrics = rng.integers(0, 80, n_tokens)
    y = labels_y(1, 44100 * 50, 44100 * 7, n_ctx * 128, 9, [1, 6], lyrics)

    def hf_loss(m):
        loss, metrics = m.forward_tokens(torch.from_numpy(z).long(), [], torch.from_numpy(y), get_preds=True)
        return loss, metrics["preds"], {"gen_loss": metrics["next_token_prediction_loss"],
                                        "prime_loss": metrics["encoder_loss"]}

    logits_err, loss_err, metrics = compare(model_hf, config, z, None, y, hf_loss)
    # the lyric encoder's output states, which the cross-attention layers read
    with torch.no_grad():
        want_kv = model_hf.get_encoder_states(torch.from_numpy(lyrics[None]).long()).numpy()
    with jax.default_matmul_precision("highest"):
        got_kv = Prior(config).apply({"params": compare.params}, lyrics[None].astype(np.int32),
                                     method=Prior.encoder_kv)
    kv_err = rel_err(got_kv, want_kv)
    print("5b_lyrics-like", logits_err, loss_err, metrics, "encoder_kv", kv_err)
    assert logits_err <= TOL and loss_err <= TOL and kv_err <= TOL
    for name, (got, want) in metrics.items():
        assert abs(got - want) <= TOL * abs(want), name
