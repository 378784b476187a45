"""Greedy cached sampling against the HF transformers port of Jukebox (same random weights, fp32, CPU).

The port's `JukeboxConditionalAutoregressive.sample` / `primed_sample` reproduce the original's cached
sampling bit for bit (identical tokens and per-step logits, measured on tiny random-weight models) when configured as the original behaves: `mask=True`,
`merged_decoder=False` for an upsampler. With top_k=1 its `filter_logits` leaves only the argmax finite, so
its categorical draw is deterministic and the token sequences must be equal.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from transformers.models.deprecated.jukebox import configuration_jukebox as hf_cfg  # noqa: E402
from transformers.models.deprecated.jukebox import modeling_jukebox as hf  # noqa: E402

from jukejax.prior.autoregressive import load_torch_autoregressive  # noqa: E402
from jukejax.prior.config import AutoregressiveConfig  # noqa: E402
from jukejax.sample import decode  # noqa: E402

pytestmark = pytest.mark.torch

# Upsampler-like: attn_order 2 (row, column, previous row), x_cond (N, n_ctx, w), y_cond, tied x_out.
N_CTX, BLOCKS, WIDTH, DEPTH, HEADS, BINS, BATCH, PRIME = 256, 16, 32, 3, 2, 48, 2, 40


@pytest.fixture(scope="module")
def models():
    cfg = hf_cfg.JukeboxPriorConfig(
        act_fn="quick_gelu", attention_multiplier=0.25, mlp_multiplier=1.0, attn_res_scale=False, emb_dropout=0.0,
        attn_dropout=0.0, resid_dropout=0.0, zero_out=False, init_scale=1.0, mask=True, spread=None,
        nb_relevant_lyric_tokens=0, hidden_size=WIDTH, n_heads=HEADS, num_layers=DEPTH, blocks=BLOCKS,
        attention_pattern="raw_column_previous_row_attention", merged_decoder=False, n_ctx=N_CTX,
        music_vocab_size=BINS)
    model = hf.JukeboxConditionalAutoregressive(cfg, n_ctx=N_CTX, embed_dim=BINS, audio_conditioning=True,
                                                metadata_conditioning=True)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # every parameter random, LayerNorm gains around 1
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if "layer_norm" in name and name.endswith("weight") else 0.1 * noise)
    model.eval()
    x_cond = torch.randn(BATCH, N_CTX, WIDTH, generator=gen)
    y_cond = torch.randn(BATCH, 1, WIDTH, generator=gen)
    prefix = torch.randint(0, BINS, (BATCH, PRIME), generator=gen)
    ours = AutoregressiveConfig(n_ctx=N_CTX, bins=BINS, width=WIDTH, depth=DEPTH, heads=HEADS, attn_order=2,
                                blocks=BLOCKS, x_cond=True, y_cond=True)
    params = load_torch_autoregressive(model.state_dict(), ours)
    return dict(model=model, x_cond=x_cond, y_cond=y_cond, prefix=prefix, ours=ours, params=params)


@pytest.fixture(autouse=True)
def quiet_tqdm(monkeypatch):
    monkeypatch.setattr(hf, "tqdm", functools.partial(hf.tqdm, disable=True))


def j(t):
    return jnp.asarray(t.numpy())


def test_greedy_ancestral_tokens_equal_hf(models):
    m = models
    with torch.no_grad():
        want, want_logits = m["model"].sample(BATCH, audio_conditioning=m["x_cond"], metadata_conditioning=m["y_cond"],
                                              top_k=1, get_preds=True)
    with jax.default_matmul_precision("highest"):
        got, _ = decode.sample_window(m["params"], m["ours"], jax.random.PRNGKey(0), jnp.zeros((BATCH, 0), jnp.int32),
                                      0, N_CTX, j(m["x_cond"]), j(m["y_cond"]), top_k=1)
        got_logits = decode.teacher_forced_logits_cached(m["params"], m["ours"], got, j(m["x_cond"]),
                                                         j(m["y_cond"]))
    want, got = want.numpy(), np.asarray(got)
    assert want.shape == got.shape == (BATCH, N_CTX)
    mismatch = np.argwhere(got != want)
    assert mismatch.size == 0, f"{len(mismatch)} tokens differ, first at (row, t) = {tuple(mismatch[0])}"
    assert len(np.unique(got)) > 5  # a real trajectory, not a constant
    want_logits = want_logits.numpy()
    err = np.abs(np.asarray(got_logits) - want_logits).max() / np.abs(want_logits).max()
    assert err <= 1e-5, f"per-step logits max_rel_err {err:.2e}"


def test_greedy_primed_tokens_equal_hf(models):
    m = models
    with torch.no_grad():  # chunked prefill of the 40 known tokens, then token by token
        want = m["model"].primed_sample(BATCH, m["prefix"], audio_conditioning=m["x_cond"],
                                        metadata_conditioning=m["y_cond"], top_k=1, chunk_size=16)
    with jax.default_matmul_precision("highest"):
        got, _ = decode.sample_window(m["params"], m["ours"], jax.random.PRNGKey(1), j(m["prefix"]), PRIME, N_CTX,
                                      j(m["x_cond"]), j(m["y_cond"]), top_k=1)
    want, got = want.numpy(), np.asarray(got)
    np.testing.assert_array_equal(got[:, :PRIME], m["prefix"].numpy())
    mismatch = np.argwhere(got != want)
    assert mismatch.size == 0, f"{len(mismatch)} tokens differ, first at (row, t) = {tuple(mismatch[0])}"
