"""Attention types 0-7, attn_order patterns, causality, remat/scan and the prior's param layout."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jukejax.config import ConfigError
from jukejax.prior import attention as A
from jukejax.prior.autoregressive import ConditionalAutoregressive, bits_per_token, get_sep_loss
from jukejax.prior.config import AutoregressiveConfig, TransformerConfig
from jukejax.prior.transformer import (ResAttnBlock, Transformer, layer_groups, relayout, stack_layers,
                                       unstack_layers)

# Small factorised layout: 4 blocks of block_ctx 6; 2 heads of dim 4.
L, BLOCKS, SPREAD, PRIME_LEN, ENC, HEADS, D = 24, 4, 2, 5, 5, 2, 8
BLOCK_CTX = L // BLOCKS
PRIME_ATTN_LEN = (PRIME_LEN // BLOCKS + 1) * BLOCKS  # original `_prime_len`: 8


def brute_visible(t, i, j):
    """Whether query i sees key position j, straight from the original's mask rules
    (`transformer/factored_attention.py::get_mask` and the `*_attn` functions)."""
    bi, bj = i // BLOCK_CTX, j // BLOCK_CTX
    last_block = BLOCKS - 1
    return {
        A.DENSE: j <= i,
        A.BLOCK: j <= i and bi == bj,
        A.TRANSPOSE_BLOCK: j <= i and j % BLOCK_CTX == i % BLOCK_CTX,
        A.PREV_BLOCK: bj == bi - 1,
        A.SUMMARY: j <= i and j % BLOCK_CTX == BLOCK_CTX - 1 and bj < last_block,
        A.SUMMARY_SPREAD: j <= i and j % BLOCK_CTX >= BLOCK_CTX - SPREAD and bj < last_block,
        A.CROSS: True,
        A.PRIME: j <= i and j < PRIME_ATTN_LEN,
    }[t]


def brute_zero_keys(t, i):
    """All-zero key/value rows the original pads in for query i."""
    return {A.PREV_BLOCK: BLOCK_CTX if i < BLOCK_CTX else 0, A.SUMMARY: 1, A.SUMMARY_SPREAD: SPREAD}.get(t, 0)


def kv_len(t):
    return ENC if t == A.CROSS else L


def brute_mask(t):
    return np.array([[brute_visible(t, i, j) for j in range(kv_len(t))] for i in range(L)])


def run_type(t, q, k, v):
    return A.factored_attention(t, q, k, v, n_head=HEADS, blocks=BLOCKS, spread=SPREAD,
                                prime_attn_len=PRIME_ATTN_LEN)


def qkv(t, seed=0):
    kq, kk, kv = jax.random.split(jax.random.PRNGKey(seed), 3)
    return (jax.random.normal(kq, (2, L, D)), jax.random.normal(kk, (2, kv_len(t), D)),
            jax.random.normal(kv, (2, kv_len(t), D)))


ALL_TYPES = list(range(8))


@pytest.mark.parametrize("t", ALL_TYPES, ids=[A.ATTN_NAMES[t] for t in ALL_TYPES])
def test_index_map_equals_brute_force_mask(t):
    """d out_i / d v_j is nonzero exactly where the brute-force mask says query i sees key j."""
    q, k, v = qkv(t)
    jac = jax.jit(jax.jacobian(lambda v_: run_type(t, q[:1], k[:1], v_)))(v[:1])  # (1, L, D, 1, Lk, D)
    seen = np.asarray(jnp.abs(jac[0, :, :, 0]).sum(axis=(1, 3)) > 0)  # (L, Lk)
    np.testing.assert_array_equal(seen, brute_mask(t))


@pytest.mark.parametrize("t", ALL_TYPES, ids=[A.ATTN_NAMES[t] for t in ALL_TYPES])
def test_outputs_equal_dense_masked_attention(t):
    """Blocked layouts give the same numbers as dense attention with the brute-force mask + zero keys."""
    q, k, v = qkv(t, seed=1)
    zeros = max(brute_zero_keys(t, i) for i in range(L))
    mask = np.concatenate([np.array([[z < brute_zero_keys(t, i) for z in range(zeros)] for i in range(L)],
                                    dtype=bool).reshape(L, zeros), brute_mask(t)], axis=1)
    pad = lambda x: jnp.pad(x, ((0, 0), (zeros, 0), (0, 0)))
    with jax.default_matmul_precision("highest"):
        want = A.attend(q, pad(k), pad(v), jnp.asarray(mask), n_head=HEADS)
        got = run_type(t, q, k, v)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    if t == A.PREV_BLOCK:  # block 0 sees only zero keys: exactly zero output
        assert np.all(np.asarray(got)[:, :BLOCK_CTX] == 0)


def _block_config(**kw):
    base = dict(n_ctx=L, width=16, heads=HEADS, depth=1, blocks=BLOCKS, spread=SPREAD, prime_len=PRIME_LEN,
                encoder_dims=ENC, init_scale=5.0)
    base.update(kw)
    return TransformerConfig(**base)


@pytest.mark.parametrize("t", ALL_TYPES, ids=[A.ATTN_NAMES[t] for t in ALL_TYPES])
def test_block_is_causal(t):
    """A whole ResAttnBlock: output i never depends on inputs j > i (jacobian exactly zero), for every type."""
    block = ResAttnBlock(_block_config(), t)
    x = jax.random.normal(jax.random.PRNGKey(2), (1, L, 16))
    enc = jax.random.normal(jax.random.PRNGKey(3), (1, ENC, 16)) if t == A.CROSS else None
    params = jax.jit(block.init)(jax.random.PRNGKey(4), x, enc)
    jac = jax.jit(jax.jacobian(lambda x_: block.apply(params, x_, enc)))(x)[0, :, :, 0]  # (L, w, L, w)
    dep = np.asarray(jnp.abs(jac).sum(axis=(1, 3)))
    assert np.all(np.triu(dep, k=1) == 0), f"type {t}: max future dependence {np.triu(dep, k=1).max()}"
    assert np.all(np.diag(dep) > 0)


def test_patterns():
    assert A.attention_pattern(0, 5) == [0] * 5
    assert A.attention_pattern(2, 72) == [1, 2, 3] * 24
    assert A.attention_pattern(8, 20) == ([1, 2, 3] * 3 + [6]) * 2
    p10 = A.attention_pattern(10, 79)
    assert [d for d, t in enumerate(p10) if t == 6] == [18, 28, 38, 48, 58, 68, 78]
    assert p10 == [1, 2, 3] * 3 + ([1, 2, 3] * 3 + [6]) * 7
    p12 = A.attention_pattern(12, 72)
    assert [d for d, t in enumerate(p12) if t == 7] == [15, 31, 63]
    assert [d for d, t in enumerate(p12) if t == 0] == [47]
    assert all(p12[d] == [1, 2, 3][d % 3] for d in range(72) if d not in (15, 31, 47, 63))
    # The research orders, one line each (original `Transformer.__init__`).
    assert A.attention_pattern(1, 4) == [1, 2, 1, 2]
    assert A.attention_pattern(3, 4) == [1, 4, 1, 4]
    assert A.attention_pattern(4, 4) == [1, 5, 1, 5]
    assert A.attention_pattern(5, 8) == [1, 4, 1, 1] * 2
    assert A.attention_pattern(6, 8) == [1, 2, 3, 6] * 2
    assert A.attention_pattern(7, 16) == [1, 2, 3] * 5 + [6]
    assert A.attention_pattern(9, 8) == [1, 2, 3, 0] * 2
    assert [d for d, t in enumerate(A.attention_pattern(11, 48)) if t != [1, 2, 3][d % 3]] == [15, 31, 47]
    assert A.attention_pattern(11, 48)[15] == 6 and A.attention_pattern(11, 48)[47] == 0
    assert [A.order_period(o) for o in range(13)] == [1, 2, 3, 2, 2, 4, 4, 16, 10, 4, 79, 48, 48]
    with pytest.raises(ValueError, match="attn_order 13"):
        A.attention_pattern(13, 3)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="blocks"):
        TransformerConfig(n_ctx=64, attn_order=2, depth=3)
    with pytest.raises(ConfigError, match="blocks 5 must divide n_ctx 64"):
        TransformerConfig(n_ctx=64, attn_order=2, depth=3, blocks=5)
    with pytest.raises(ConfigError, match="heads"):
        TransformerConfig(n_ctx=64, width=32, heads=3)
    with pytest.raises(ConfigError, match="encoder_dims"):
        TransformerConfig(n_ctx=64, attn_order=8, depth=10, blocks=4)
    with pytest.raises(ConfigError, match="prime_len"):
        TransformerConfig(n_ctx=64, attn_order=12, depth=16, blocks=4)
    with pytest.raises(ConfigError, match="spread"):
        TransformerConfig(n_ctx=64, attn_order=4, depth=2, blocks=4)
    with pytest.raises(ConfigError, match="bins"):
        AutoregressiveConfig(n_ctx=64, bins=0)


# ------------------------------------------------------------------------------------------------------------
# Transformer stack: remat and scan give the same numbers.

STACK = dict(n_ctx=32, width=16, heads=2, depth=6, attn_order=2, blocks=4, init_scale=5.0)


@pytest.fixture(scope="module")
def stack_setup():
    cfg = TransformerConfig(**STACK)
    x = jax.random.normal(jax.random.PRNGKey(5), (2, 32, 16))
    params = nn.unbox(jax.jit(Transformer(cfg).init)(jax.random.PRNGKey(6), x))["params"]

    def run(c, p):
        f = lambda p_, x_: Transformer(c).apply({"params": p_}, x_)
        loss = lambda p_, x_: jnp.sum(f(p_, x_) ** 2)
        return jax.jit(f)(p, x), jax.jit(jax.grad(loss))(p, x)
    return cfg, params, run(cfg, params), run


@pytest.mark.slow  # compiles the stack's gradient three more ways
@pytest.mark.parametrize("remat,scan", [(True, False), (False, True), (True, True)])
def test_remat_and_scan_match(stack_setup, remat, scan):
    cfg, params, (out, grads), run = stack_setup
    c = TransformerConfig(**STACK, remat=remat, scan=scan)
    p = stack_layers(params, c) if scan else params
    out2, grads2 = run(c, p)
    if scan:
        grads2 = unstack_layers(grads2)
    if not scan:  # remat recomputes the same forward: identical numbers
        np.testing.assert_array_equal(np.asarray(out2), np.asarray(out))
    np.testing.assert_allclose(np.asarray(out2), np.asarray(out), rtol=1e-6, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6),
                 grads2, grads)
    # A scanned init has exactly the stacked layout (with a "layers" logical axis on the stacked dim).
    if scan:
        boxed = jax.eval_shape(Transformer(c).init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 16)))["params"]
        assert jax.tree.map(jnp.shape, nn.unbox(boxed)) == jax.tree.map(jnp.shape, p)
        spec = nn.get_partition_spec(boxed)["_attn_scan_0"]["_attn_mods_0"]["attn"]["c_attn"]["kernel"]
        assert tuple(spec) == ("layers", "embed", "heads")


def _rel(a, b) -> float:
    a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _tree_rel(a, b) -> float:
    """Norm-relative difference of two trees of the same structure, over all leaves at once."""
    flat = lambda t: np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(t)])  # noqa: E731
    return _rel(flat(a), flat(b))


def _random_like(shapes, seed: int):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (0.2 * rng.standard_normal(s.shape)).astype(np.float32), shapes)


def test_layer_groups_of_the_released_orders():
    """The scan's groups: the fewest layer bodies to compile, every layer in exactly one group, in order."""
    def groups(order, depth, **kw):
        c = TransformerConfig(n_ctx=64, attn_order=order, depth=depth, blocks=4, **kw)
        gs = layer_groups(c, scan=True)
        layers = [g.start + r * len(g.funcs) + j for g in gs for r in range(g.reps) for j in range(len(g.funcs))]
        assert layers == list(range(depth))
        assert all(c.attn_funcs[g.start + r * len(g.funcs) + j] == f
                   for g in gs for r in range(g.reps) for j, f in enumerate(g.funcs))
        return [(len(g.funcs), g.reps) for g in gs]
    assert groups(2, 72) == [(3, 24)]                          # upsamplers and 5b
    assert groups(10, 79, encoder_dims=8) == [(3, 3), (10, 7)]  # 5b_lyrics (period 79)
    b1 = groups(12, 72, prime_len=5)                            # 1b_lyrics (period 48)
    assert sum(u for u, _ in b1) == 21 and len(b1) == 11
    assert groups(2, 7) == [(1, 1), (3, 2)]


def test_stack_unstack_round_trip_in_every_layout():
    """Per layer -> scanned -> per layer is the identity; the earlier period-scanned checkpoint layout
    `_attn_period` (layer r * period + j at [r] of `_attn_mods_{j}`) reads as the same layers and regroups."""
    c = TransformerConfig(**dict(STACK, depth=7, scan=True))
    shapes = nn.unbox(jax.eval_shape(Transformer(dataclasses.replace(c, scan=False)).init, jax.random.PRNGKey(0),
                                     jnp.zeros((1, 32, 16)))["params"])
    layers = _random_like(shapes, 1)
    scanned = stack_layers(layers, c)
    assert sorted(scanned) == ["_attn_mods_0", "_attn_scan_1"]
    np.testing.assert_array_equal(scanned["_attn_scan_1"]["_attn_mods_2"]["ln_0"]["scale"][1],
                                  layers["_attn_mods_6"]["ln_0"]["scale"])  # layer 1 + 1 * 3 + 2
    eq = lambda a, b: jax.tree.all(jax.tree.map(np.array_equal, a, b))  # noqa: E731
    assert eq(unstack_layers(scanned), layers)
    six = {f"_attn_mods_{d}": layers[f"_attn_mods_{d}"] for d in range(6)}
    legacy = {"_attn_period": {f"_attn_mods_{j}": jax.tree.map(lambda *xs: np.stack(xs), six[f"_attn_mods_{j}"],
                                                                 six[f"_attn_mods_{j + 3}"]) for j in range(3)}}
    assert eq(unstack_layers(legacy), six)
    c6 = dataclasses.replace(c, depth=6)
    regrouped = relayout({"prior": {"transformer": legacy}}, {"prior": {"transformer": stack_layers(six, c6)}})
    assert eq(regrouped["prior"]["transformer"], stack_layers(six, c6))


@pytest.fixture(scope="module")
def uneven_stack():
    """Order 2 (period 3) at 7 layers: layer 0 on its own, then (2, 3, 1) x 2 scanned with remat."""
    cfg = TransformerConfig(**dict(STACK, depth=7))
    x = jax.random.normal(jax.random.PRNGKey(5), (2, 32, 16))
    shapes = nn.unbox(jax.eval_shape(Transformer(cfg).init, jax.random.PRNGKey(6), x)["params"])
    params = _random_like(shapes, 2)

    def run(c, p):
        def loss(p_):
            out = Transformer(c).apply({"params": p_}, x)
            return jnp.sum(out ** 2), out
        with jax.default_matmul_precision("highest"):
            (_, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(p)
        return out, grads
    return cfg, params, run


def test_scan_matches_unrolled_when_the_period_does_not_divide_the_depth(uneven_stack):
    cfg, params, run = uneven_stack
    out, grads = run(cfg, params)
    c = dataclasses.replace(cfg, scan=True, remat=True)
    out2, grads2 = run(c, stack_layers(params, c))
    assert set(grads2) == {"_attn_mods_0", "_attn_scan_1"}
    # fp32, highest precision: the same ops in another order
    assert _rel(out2, out) < 1e-5
    assert _tree_rel(unstack_layers(grads2), grads) < 1e-5


LYRIC_PRIOR = dict(n_ctx=32, prior_width=16, prior_depth=9, heads=2, attn_order=6, blocks=4, init_scale=1.0,
                   labels=True, y_bins=(7, 11), max_bow_genre_size=2, t_bins=8, n_vocab=80, min_duration=1.0,
                   max_duration=100.0, use_tokens=True, n_tokens=8, prime_loss_fraction=0.4, merged_decoder=True,
                   prime_width=16, prime_depth=6, prime_heads=1, prime_attn_order=2, prime_blocks=4,
                   prime_init_scale=0.7)


def _lyric_prior(scan: bool):
    from jukejax import presets
    from jukejax.prior.prior import prior_config
    c = presets.prior(2, **LYRIC_PRIOR, scan=scan)
    c.vqvae.l_bins = 32
    return prior_config(c)


def test_scanned_lyric_prior_matches_unrolled():
    """An encoder-decoder lyrics prior (order 6 at 9 layers: one layer, then the unit (2, 3, 6, 1) x 2 with its
    cross-attention layer scanned; its lyric encoder order 2 at 6 layers, (1, 2, 3) x 2): the loss and every
    gradient, scanned vs unrolled, from the same weights."""
    from jukejax.prior.prior import Prior, abstract_params
    unrolled, scanned = _lyric_prior(False), _lyric_prior(True)
    assert [(len(g.funcs), g.reps) for g in layer_groups(scanned.transformer, True)] == [(1, 1), (4, 2)]
    params = _random_like(nn.unbox(abstract_params(unrolled)), 3)
    stacked = relayout(params, nn.unbox(abstract_params(scanned)))
    assert set(stacked["prior"]["transformer"]) == {"_attn_mods_0", "_attn_scan_1"}
    assert set(stacked["prime_prior"]["transformer"]) == {"_attn_scan_0"}
    rng = np.random.default_rng(4)
    z = rng.integers(0, 32, (2, 32)).astype(np.int32)
    y = np.asarray([[44100 * 50, 44100 * 7, 32 * 128, 5, 1, 6, *rng.integers(1, 80, 8)]] * 2, np.int32)

    def loss_and_grads(config, p):
        loss = lambda p_: Prior(config).apply({"params": p_}, z, None, y)[0]  # noqa: E731
        with jax.default_matmul_precision("highest"):
            return jax.jit(jax.value_and_grad(loss))(p)
    loss, grads = loss_and_grads(unrolled, params)
    loss2, grads2 = loss_and_grads(scanned, stacked)
    assert _rel(loss2, loss) < 1e-5
    back = relayout(grads2, params)
    for head in ("prior", "prime_prior"):
        err = _tree_rel(back[head]["transformer"], grads[head]["transformer"])
        assert err < 1e-5, (head, err)  # measured 8e-8 (prior), 5e-11 (prime_prior)
    assert _tree_rel(back, grads) < 1e-5


def test_scanned_bf16_cross_attention_model_close_to_fp32():
    """attn_order 6 (period [1, 2, 3, 6]) scanned twice in bf16 vs the unscanned fp32 model."""
    base = dict(n_ctx=16, width=16, heads=2, depth=8, attn_order=6, blocks=4, encoder_dims=6, bins=30,
                x_cond=True, y_cond=True, init_scale=5.0)
    ks = jax.random.split(jax.random.PRNGKey(8), 5)
    x = jax.random.randint(ks[0], (2, 16), 0, 30)
    x_cond, y_cond = jax.random.normal(ks[1], (2, 1, 16)), jax.random.normal(ks[2], (2, 1, 16))
    enc = jax.random.normal(ks[3], (2, 6, 16))
    fp32 = AutoregressiveConfig(**base)
    # Random params of the init's shapes (an init compile costs more than the test; zero-init cross c_proj
    # layers would also not count).
    shapes = jax.eval_shape(ConditionalAutoregressive(fp32).init, ks[4], x, x_cond, y_cond, enc)["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(0.2 * rng.standard_normal(s.shape), jnp.float32), nn.unbox(shapes))
    want = jax.jit(ConditionalAutoregressive(fp32).apply)({"params": params}, x, x_cond, y_cond, enc)
    bf16 = AutoregressiveConfig(**base, dtype="bfloat16", scan=True)
    scanned = {**params, "transformer": stack_layers(params["transformer"], bf16)}
    got = jax.jit(ConditionalAutoregressive(bf16).apply)({"params": scanned}, x, x_cond, y_cond, enc)
    assert got.dtype == jnp.float32
    assert float(jnp.abs(got - want).max() / jnp.abs(want).max()) < 3e-2


# ------------------------------------------------------------------------------------------------------------
# The autoregressive model: init as the original, tied output, sep loss, only_encode, causality.

def test_init_layout_and_scales():
    cfg = AutoregressiveConfig(n_ctx=40, width=32, heads=2, depth=10, attn_order=8, blocks=4, encoder_dims=6,
                               bins=300, init_scale=0.5, merged_decoder=True)
    model = ConditionalAutoregressive(cfg)
    boxed = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 40), jnp.int32),
                                encoder_kv=jnp.zeros((1, 6, 32)))["params"]
    p = nn.unbox(boxed)
    assert set(p) == {"x_emb", "start_token", "pos_emb", "transformer", "x_out"}
    assert set(p["transformer"]) == {f"_attn_mods_{d}" for d in range(10)}
    np.testing.assert_allclose(np.std(p["x_emb"]["embedding"]), 0.02 * 0.5, rtol=0.05)
    np.testing.assert_allclose(np.std(p["pos_emb"]["pos_emb"]), 0.01 * 0.5, rtol=0.1)
    layer = p["transformer"]["_attn_mods_0"]
    np.testing.assert_allclose(np.std(layer["attn"]["c_attn"]["kernel"]), 0.02 * 0.5, rtol=0.1)
    assert np.all(layer["attn"]["c_attn"]["bias"] == 0) and np.std(layer["attn"]["c_proj"]["kernel"]) > 0
    cross = p["transformer"]["_attn_mods_9"]  # type 6: zero_out forced on both output projections
    assert cross["attn"]["c_attn"]["kernel"].shape == (32, 8) and cross["attn"]["c_enc_kv"]["kernel"].shape == (32, 16)
    assert np.all(cross["attn"]["c_proj"]["kernel"] == 0) and np.all(cross["mlp"]["c_proj"]["kernel"] == 0)
    assert np.abs(p["x_out"]["kernel"]).max() <= 1 / np.sqrt(32)  # torch nn.Linear default init
    specs = nn.get_partition_spec(boxed)
    assert tuple(specs["x_emb"]["embedding"]) == ("vocab", "embed")
    assert tuple(specs["transformer"]["_attn_mods_0"]["mlp"]["c_fc"]["kernel"]) == ("embed", "mlp")


ONE_B = dict(n_ctx=48, width=32, heads=2, depth=16, attn_order=12, blocks=4, prime_len=12, bins=50,
             x_cond=True, y_cond=True, init_scale=5.0)


@pytest.fixture(scope="module")
def one_b():
    cfg = AutoregressiveConfig(**ONE_B)
    model = ConditionalAutoregressive(cfg)
    ks = jax.random.split(jax.random.PRNGKey(7), 4)
    x = jax.random.randint(ks[0], (2, 48), 0, 50)
    x_cond = jax.random.normal(ks[1], (2, 48, 32))
    y_cond = jax.random.normal(ks[2], (2, 1, 32))
    params = jax.jit(model.init)(ks[3], x, x_cond, y_cond)
    return cfg, jax.jit(model.apply), params, x, x_cond, y_cond


def test_model_is_causal_in_tokens(one_b):
    """Logits at position t (predicting token t) never change when tokens >= t change."""
    cfg, apply, params, x, x_cond, y_cond = one_b
    base = np.asarray(apply(params, x, x_cond, y_cond))
    assert base.shape == (2, 48, 50)
    for t in (3, 12, 25, 47):
        x2 = x.at[:, t:].set((x[:, t:] + 7) % 50)
        got = np.asarray(apply(params, x2, x_cond, y_cond))
        np.testing.assert_array_equal(got[:, :t + 1], base[:, :t + 1])
        assert np.abs(got[:, t + 1:] - base[:, t + 1:]).max() > 0 if t < 47 else True


def test_sep_loss_and_tied_output(one_b):
    cfg, apply, params, x, x_cond, y_cond = one_b
    assert "x_out" not in params["params"]  # merged_decoder False: x_out is x_emb
    logits = apply(params, x, x_cond, y_cond)
    prime, gen = get_sep_loss(logits, x, cfg.prime_len)
    total = bits_per_token(logits, x)
    n = cfg.n_ctx
    np.testing.assert_allclose(float(prime * 12 / n + gen * (n - 12) / n), float(total), rtol=1e-6)
    logp = jax.nn.log_softmax(logits[:, :12])
    want = -np.mean(np.take_along_axis(np.asarray(logp), np.asarray(x[:, :12, None]), -1)) / np.log(2)
    np.testing.assert_allclose(float(prime), want, rtol=1e-6)


def test_only_encode_returns_hidden_states():
    cfg = AutoregressiveConfig(n_ctx=16, width=16, heads=1, depth=3, attn_order=2, blocks=4, bins=10,
                               only_encode=True)
    model = ConditionalAutoregressive(cfg)
    x = jnp.arange(32).reshape(2, 16) % 10
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
    assert "x_out" not in variables["params"] and "start_token" in variables["params"]
    h = jax.jit(model.apply)(variables, x)
    assert h.shape == (2, 16, 16) and h.dtype == jnp.float32
    with pytest.raises(ValueError, match="y_cond"):
        model.apply(variables, x, y_cond=jnp.zeros((2, 1, 16)))
