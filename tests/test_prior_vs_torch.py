"""Teacher-forced parity with the HF transformers port of Jukebox on random weights (fp32, CPU).

The HF port is configured as the original behaves (the port's teacher-forced logits then equal
openai/jukebox's bit for bit on tiny random-weight models): `mask=True`, and
`merged_decoder` False for upsampler/1b-like models, True for 5b-like ones. Where the port deviates from
openai/jukebox, jukejax follows the original:
- HF's `_init_weights` does not force zero_out on cross-attention layers (the original does). Weights are
  random here, so this does not affect the comparison; jukejax's init follows the original
  (test_prior_attention.py::test_init_layout_and_scales).
- HF's `JukeboxLayerNorm` does not upcast to fp32 (the original does); identical in fp32.
- HF's eval-mode attention scales q.k by head_dim**-0.5 after the product; jukejax scales q and k by
  head_dim**-0.25 each, as the original in training. The two differ by float rounding only.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from transformers.models.deprecated.jukebox import configuration_jukebox as hf_cfg  # noqa: E402
from transformers.models.deprecated.jukebox import modeling_jukebox as hf  # noqa: E402

from jukejax.checkpoint import CheckpointError  # noqa: E402
from jukejax.prior import attention as A  # noqa: E402
from jukejax.prior.autoregressive import (ConditionalAutoregressive, original_key_name, bits_per_token,  # noqa: E402
                                          get_sep_loss, load_torch_autoregressive)
from jukejax.prior.config import AutoregressiveConfig, TransformerConfig  # noqa: E402
from jukejax.prior.transformer import FactoredAttention  # noqa: E402

pytestmark = pytest.mark.torch

HF_ORDER_NAMES = {2: "raw_column_previous_row_attention", 10: "large_separated_enc_dec_w_lyrics",
                  12: "enc_dec_with_lyrics"}
HF_TYPE = {name: t for t, name in A.ATTN_NAMES.items()}
TOL = 1e-5


def max_rel_err(got, want) -> float:
    """max |got - want| relative to the largest |want| (elementwise ratios blow up near zero logits)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


def hf_config(**kw):
    base = dict(act_fn="quick_gelu", attention_multiplier=0.25, mlp_multiplier=1.0, attn_res_scale=False,
                emb_dropout=0.0, attn_dropout=0.0, resid_dropout=0.0, zero_out=False, init_scale=1.0,
                mask=True, spread=None, nb_relevant_lyric_tokens=0)
    base.update(kw)
    return hf_cfg.JukeboxPriorConfig(**base)


def randomize(module: "torch.nn.Module", seed: int) -> None:
    """Every parameter random (LayerNorm gains around 1), so no zero-init path hides a mismatch."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "layer_norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)
    module.eval()


def test_patterns_match_hf():
    for order, name in HF_ORDER_NAMES.items():
        depth = 79 if order == 10 else 72
        hf_pattern = [HF_TYPE[hf_cfg.ATTENTION_PATTERNS[name](d)] for d in range(depth)]
        assert A.attention_pattern(order, depth) == hf_pattern, order


# ------------------------------------------------------------------------------------------------------------
# One attention layer of each type vs HF JukeboxAttention.

L, BLOCKS, WIDTH, HEADS, ENC, SPREAD, PRIME = 24, 4, 32, 2, 5, 2, 5


@pytest.mark.parametrize("t", range(8), ids=[A.ATTN_NAMES[t] for t in range(8)])
def test_attention_layer_matches_hf(t):
    cfg = hf_config(hidden_size=WIDTH, n_heads=HEADS, blocks=BLOCKS, spread=SPREAD, num_layers=1,
                    nb_relevant_lyric_tokens=PRIME)
    layer = hf.JukeboxAttention(cfg, L, attn_func=A.ATTN_NAMES[t])
    randomize(layer, seed=t)
    ours = TransformerConfig(n_ctx=L, width=WIDTH, heads=HEADS, depth=1, blocks=BLOCKS, spread=SPREAD,
                             prime_len=PRIME, encoder_dims=ENC)
    gen = torch.Generator().manual_seed(100 + t)
    x = torch.randn(2, L, WIDTH, generator=gen)
    enc = torch.randn(2, ENC, WIDTH, generator=gen) if t == A.CROSS else None
    with torch.no_grad():
        want = layer(x, enc).numpy()
    conv = lambda m: {"kernel": m.weight.detach().numpy(), "bias": m.bias.detach().numpy()}
    params = {"c_attn": conv(layer.c_attn), "c_proj": conv(layer.c_proj)}
    if t == A.CROSS:
        params["c_enc_kv"] = conv(layer.c_enc_kv)
    with jax.default_matmul_precision("highest"):
        got = FactoredAttention(ours, t).apply({"params": params}, jnp.asarray(x.numpy()),
                                               None if enc is None else jnp.asarray(enc.numpy()))
    err = max_rel_err(got, want)
    assert err <= TOL, f"type {t}: max_rel_err {err:.2e}"


# ------------------------------------------------------------------------------------------------------------
# Whole ConditionalAutoregressive models: logits and loss.

CASES = {
    # Upsampler-like: attn_order 2, x_cond (N, D, w) from the conditioner, y_cond labels, tied x_out.
    "upsampler": dict(order=2, depth=3, width=64, heads=2, blocks=8, n_ctx=64, bins=48, merged=False,
                      n_tokens=0, encoder_dims=0),
    # The same with res_scale (residual branches scaled by 1/depth), an original option no released model uses.
    "res_scale": dict(order=2, depth=3, width=64, heads=2, blocks=8, n_ctx=64, bins=48, merged=False,
                      n_tokens=0, encoder_dims=0, res_scale=True),
    # 1b_lyrics-like single enc-dec: 12 lyric tokens (vocab 10) + 52 music tokens (vocab 40) in one sequence,
    # prime attention at layer 15, merged_decoder False, loss split by get_sep_loss.
    "1b_lyrics": dict(order=12, depth=16, width=32, heads=2, blocks=4, n_ctx=64, bins=50, merged=False,
                      n_tokens=12, encoder_dims=0),
    # 5b_lyrics-like decoder: attn_order 10 up to its first cross-attention layer (d = 18) on 12 encoder
    # states, merged_decoder True (untied x_out, x_cond not added after the stack).
    "5b_lyrics": dict(order=10, depth=19, width=32, heads=2, blocks=4, n_ctx=64, bins=48, merged=True,
                      n_tokens=12, encoder_dims=12),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    name, c = request.param, CASES[request.param]
    n, width = 2, c["width"]
    cfg = hf_config(hidden_size=width, n_heads=c["heads"], num_layers=c["depth"], blocks=c["blocks"],
                    attention_pattern=HF_ORDER_NAMES[c["order"]], merged_decoder=c["merged"],
                    nb_relevant_lyric_tokens=c["n_tokens"], n_ctx=c["n_ctx"], music_vocab_size=c["bins"],
                    attn_res_scale=c.get("res_scale", False))
    model = hf.JukeboxConditionalAutoregressive(cfg, n_ctx=c["n_ctx"], embed_dim=c["bins"],
                                                audio_conditioning=True, metadata_conditioning=True)
    randomize(model, seed=7)
    gen = torch.Generator().manual_seed(11)
    x = torch.randint(0, c["bins"], (n, c["n_ctx"]), generator=gen)
    x_cond = torch.randn(n, c["n_ctx"], width, generator=gen)
    y_cond = torch.randn(n, 1, width, generator=gen)
    enc = torch.randn(n, c["encoder_dims"], width, generator=gen) if c["encoder_dims"] else None
    single_enc_dec = name == "1b_lyrics"
    if single_enc_dec:  # lyric ids < 10, music ids shifted by +10; no timing/upper condition on lyric positions
        x[:, :12] %= 10
        x[:, 12:] = 10 + x[:, 12:] % 40
        x_cond[:, :12] = 0.0
    with torch.no_grad():
        loss, logits = model(x, audio_conditioning=x_cond, metadata_conditioning=y_cond,
                             last_encoder_hidden_states=enc, get_preds=True, get_sep_loss=single_enc_dec)
    want_loss = [float(v) for v in loss] if single_enc_dec else [float(loss)]

    ours = AutoregressiveConfig(n_ctx=c["n_ctx"], bins=c["bins"], width=width, depth=c["depth"],
                                heads=c["heads"], attn_order=c["order"], blocks=c["blocks"],
                                x_cond=True, y_cond=True, merged_decoder=c["merged"],
                                encoder_dims=c["encoder_dims"], prime_len=12 if single_enc_dec else None,
                                res_scale=c.get("res_scale", False))
    params = load_torch_autoregressive(model.state_dict(), ours)
    j = lambda a: None if a is None else jnp.asarray(a.numpy())
    with jax.default_matmul_precision("highest"):
        got_logits = jax.jit(ConditionalAutoregressive(ours).apply)({"params": params}, j(x), j(x_cond),
                                                                     j(y_cond), j(enc))
        tokens = j(x)
        got_loss = (list(get_sep_loss(got_logits, tokens, 12)) if single_enc_dec
                    else [bits_per_token(got_logits, tokens)])
    return dict(name=name, model=model, params=params, ours=ours, want_logits=logits.numpy(),
                want_loss=want_loss, got_logits=np.asarray(got_logits), got_loss=[float(v) for v in got_loss])


def test_logits_match_hf(case):
    err = max_rel_err(case["got_logits"], case["want_logits"])
    assert err <= TOL, f"{case['name']}: logits max_rel_err {err:.2e}"
    assert np.abs(case["want_logits"]).max() > 1.0  # random weights give non-trivial logits


def test_loss_matches_hf(case):
    for got, want in zip(case["got_loss"], case["want_loss"], strict=True):
        assert abs(got - want) / abs(want) <= TOL, f"{case['name']}: loss {got} vs {want}"


def test_original_key_names_load_identically(case):
    """The same weights under openai/jukebox's names (SimplePrior's `prior.` prefix) give the same params."""
    original = {}
    for key, value in case["model"].state_dict().items():
        key = original_key_name(key)  # HF -> original rename, e.g. layer_norm_0 -> ln_0, c_attn.weight -> c_attn.w
        original["prior." + key] = value
    original["y_emb.artist_emb.emb.weight"] = torch.zeros(3, 4)  # other SimplePrior modules are ignored
    assert any(k.endswith("attn.c_attn.w") for k in original) and any(".ln_0.weight" in k for k in original)
    params = load_torch_autoregressive(original, case["ours"], prefix="prior.")
    jax.tree.map(np.testing.assert_array_equal, params, case["params"])
    with pytest.raises(CheckpointError, match="unused"):
        load_torch_autoregressive({**original, "prior.transformer.extra": torch.zeros(1)}, case["ours"],
                                  prefix="prior.")
