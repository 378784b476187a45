"""Cached decoding (jukejax.sample) against the full forward pass, and the compiled sampling loop.

Teacher-forced logits computed through the caches, token by token from t = 0 and after a parallel prefill,
must equal one `ConditionalAutoregressive.__call__` (the original's `check_sample` / `check_chunks`, for whole
models). Tiny configs: n_ctx 64, blocks 8 (block_ctx 8), so the block ring (8 slots) and the previous-block
ring (16 slots) wrap around several times; prefills of 13 and 21 tokens end mid-block.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jukejax.prior import attention as A
from jukejax.prior.autoregressive import ConditionalAutoregressive
from jukejax.prior.config import AutoregressiveConfig
from jukejax.sample import cache as C
from jukejax.sample import decode
from jukejax.testing import fast_compiles

N_CTX, WIDTH, BINS, BATCH = 64, 32, 40, 2
TOL = 1e-5

CASES = {
    "dense_0": dict(attn_order=0, depth=2),
    "upsampler_2": dict(attn_order=2, depth=3, blocks=8),
    # 5b_lyrics-like: attn_order 10 up to its first cross-attention layer (d = 18), merged decoder.
    "enc_dec_10": dict(attn_order=10, depth=19, blocks=8, encoder_dims=12, merged_decoder=True),
    # 1b_lyrics-like single enc-dec: prime attention at d = 15 over the first (12 // 8 + 1) * 8 = 16 positions.
    "prime_12": dict(attn_order=12, depth=16, blocks=8, prime_len=12),
    # Summary types, which the original cannot sample.
    "summary_3": dict(attn_order=3, depth=2, blocks=8),
    "summary_spread_4": dict(attn_order=4, depth=2, blocks=8, spread=3),
    # Layer-scanned params (`scan=True`) are unstacked for decoding.
    "scanned_2": dict(attn_order=2, depth=6, blocks=8, scan=True),
}
# Depths the attention pattern's period does not divide: order 12 (period 48) at 19 layers scans (B, T, P) x 5
# and unrolls the prime layer and the three after it; order 10 (period 79) at 39 layers scans (B, T, P) x 3 and
# its ten-layer unit with cross-attention x 3.
SCANNED = {"prime_12_depth_19": dict(attn_order=12, depth=19, blocks=8, prime_len=12),
           "enc_dec_10_depth_39": dict(attn_order=10, depth=39, blocks=8, encoder_dims=12, merged_decoder=True)}
# (case, n_prefill): None decodes every position with `step`; an int primes that many tokens first.
CONSISTENCY = [(name, None) for name in CASES if name != "scanned_2"] + [(name, 13) for name in CASES] + [
    ("upsampler_2", 0), ("upsampler_2", 21), ("prime_12", 37)]


@pytest.fixture(scope="module", autouse=True)
def _fast_compiles():
    with fast_compiles():
        yield


def max_rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


def make_case(name):
    cfg = AutoregressiveConfig(n_ctx=N_CTX, bins=BINS, width=WIDTH, heads=2, x_cond=True, y_cond=True,
                               **{**CASES, **SCANNED}[name])
    keys = jax.random.split(jax.random.PRNGKey(sum(map(ord, name))), 6)
    tokens = jax.random.randint(keys[0], (BATCH, N_CTX), 0, BINS)
    x_cond = jax.random.normal(keys[1], (BATCH, N_CTX, WIDTH))
    y_cond = jax.random.normal(keys[2], (BATCH, 1, WIDTH))
    enc = jax.random.normal(keys[3], (BATCH, cfg.encoder_dims, WIDTH)) if cfg.encoder_dims else None
    params = nn.unbox(ConditionalAutoregressive(cfg).init(keys[4], tokens, x_cond, y_cond, enc)["params"])
    # Perturb every param: zero-initialised biases and the zero_out cross-attention projections would
    # otherwise hide a wrong cache.
    leaves, tree = jax.tree.flatten(params)
    noise_keys = jax.random.split(keys[5], len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, noise_keys)])
    with jax.default_matmul_precision("highest"):
        full = jax.jit(ConditionalAutoregressive(cfg).apply)({"params": params}, tokens, x_cond, y_cond, enc)
    return dict(cfg=cfg, params=params, tokens=tokens, x_cond=x_cond, y_cond=y_cond, enc=enc, full=full)


@functools.lru_cache(maxsize=None)
def case(name):
    return make_case(name)


@pytest.mark.slow  # one compiled decode and one full forward per attention type and prefill (~15 min loaded)
@pytest.mark.parametrize("name,n_prefill", CONSISTENCY, ids=[f"{n}-{p}" for n, p in CONSISTENCY])
def test_cached_logits_equal_full_forward(name, n_prefill):
    c = case(name)
    with jax.default_matmul_precision("highest"):
        got = decode.teacher_forced_logits_cached(c["params"], c["cfg"], c["tokens"], c["x_cond"], c["y_cond"],
                                                  c["enc"], n_prefill=n_prefill)
    assert got.shape == c["full"].shape
    err = max_rel_err(got, c["full"])
    assert err <= TOL, f"{name} n_prefill={n_prefill}: max_rel_err {err:.2e}"


def test_prefill_returns_next_token_logits():
    c = case("prime_12")
    with jax.default_matmul_precision("highest"):
        cache, logits = jax.jit(decode.prefill, static_argnums=1)(c["params"], c["cfg"], c["tokens"][:, :13],
                                                                  c["x_cond"], c["y_cond"])
    assert logits.shape == (BATCH, BINS)
    assert max_rel_err(logits, c["full"][:, 13]) <= TOL
    assert jax.tree.map(lambda a: a.shape, cache) == jax.tree.map(lambda a: a.shape, C.init_cache(c["cfg"], BATCH))


def test_bf16_cache_tracks_fp32():
    c = case("upsampler_2")
    with jax.default_matmul_precision("highest"):
        got = decode.teacher_forced_logits_cached(c["params"], c["cfg"], c["tokens"], c["x_cond"], c["y_cond"],
                                                  n_prefill=13, cache_dtype=jnp.bfloat16)
    assert max_rel_err(got, c["full"]) <= 2e-2


# ------------------------------------------------------------------------------------------------------------
# Cache layouts and sizes.

def test_cache_layouts_and_bytes():
    cfg = case("prime_12")["cfg"]
    s, bc = cfg.n_state, cfg.block_ctx
    h, hd = 2, s // 2  # every cache is heads-major
    want = {A.BLOCK: (BATCH, h, bc, hd), A.TRANSPOSE_BLOCK: (BATCH, h, bc, 8, hd), A.PREV_BLOCK: (BATCH, h, 2 * bc, hd),
            A.PRIME: (BATCH, h, 16, hd)}
    cache = C.init_cache(cfg, BATCH, jnp.bfloat16)
    for d, f in enumerate(cfg.attn_funcs):
        assert cache[f"_attn_mods_{d}"]["k"].shape == want[f], (d, f)
    assert C.cache_bytes(cfg, BATCH, jnp.bfloat16) == sum(a.nbytes for a in jax.tree.leaves(cache))
    other = {A.DENSE: (BATCH, h, N_CTX, hd), A.CROSS: (BATCH, h, 12, hd), A.SUMMARY: (BATCH, h, 8, hd)}
    for f, shape in other.items():
        assert C.layer_shape(case("enc_dec_10")["cfg"], f, BATCH) == shape
    assert C.layer_shape(case("summary_spread_4")["cfg"], A.SUMMARY_SPREAD, BATCH) == (BATCH, h, 8 * 3, hd)


def test_released_cache_bytes_per_sample():
    """README: about 400 MB per sample for 1b_lyrics and 1 GB for 5b_lyrics (bf16 caches)."""
    prior_1b = AutoregressiveConfig(n_ctx=6144 + 384, bins=2048 + 79, width=2048, depth=72, heads=2, attn_order=12,
                                    blocks=64, prime_len=384, x_cond=True, y_cond=True)
    prior_5b = AutoregressiveConfig(n_ctx=8192, bins=2048, width=4800, depth=79, heads=8, attn_order=10, blocks=128,
                                    encoder_dims=512, x_cond=True, y_cond=True, merged_decoder=True)
    b1, b5 = C.cache_bytes(prior_1b, 1, jnp.bfloat16), C.cache_bytes(prior_5b, 1, jnp.bfloat16)
    assert b1 == 337_821_696 and b1 <= 0.4e9
    assert b5 == 983_040_000 and b5 <= 1.0e9


# ------------------------------------------------------------------------------------------------------------
# Token choice.

def reference_filter(logits: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """The original `filter_logits`, in numpy: which entries stay finite."""
    keep = np.ones_like(logits, bool)
    if top_k > 0:
        keep &= logits >= np.sort(logits, axis=-1)[..., -top_k:][..., :1]
    if top_p > 0:
        order = np.argsort(-logits, axis=-1, kind="stable")
        srt = np.take_along_axis(logits, order, -1)
        probs = np.exp(srt - srt.max(-1, keepdims=True))
        cum = np.cumsum(probs / probs.sum(-1, keepdims=True), -1)
        remove = cum > top_p
        remove[..., 1:] = remove[..., :-1].copy()
        remove[..., 0] = False
        np.put_along_axis(keep, order, ~remove, -1)
    return keep


def test_filter_logits_matches_original_rule():
    logits = jax.random.normal(jax.random.PRNGKey(3), (6, 50)) * 1.5
    for top_k, top_p in [(1, 0.0), (5, 0.0), (0, 1e-9), (0, 0.3), (0, 0.6), (0, 0.9)]:
        got = np.isfinite(np.asarray(decode.filter_logits(logits, top_k, top_p)))
        np.testing.assert_array_equal(got, reference_filter(np.asarray(logits), top_k, top_p), f"{top_k} {top_p}")
        assert got[np.arange(6), np.asarray(logits.argmax(-1))].all()  # the most likely token always stays
    assert (np.isfinite(np.asarray(decode.filter_logits(logits, 0, 1e-9))).sum(-1) == 1).all()
    with pytest.raises(ValueError, match="together"):
        decode.filter_logits(logits, top_k=5, top_p=0.9)


def test_top_k_1_draw_is_argmax():
    logits = jax.random.normal(jax.random.PRNGKey(4), (4, 50))
    keys = decode.row_keys(jax.random.PRNGKey(5), 4)
    for t in range(8):
        drawn = decode.draw(keys, logits, jnp.int32(t), jnp.float32(1.0), top_k=1)
        np.testing.assert_array_equal(drawn, logits.argmax(-1))


# ------------------------------------------------------------------------------------------------------------
# The window loop.

def sample(c, key, prefix, n_prefix, n_total=N_CTX, **kw):
    return decode.sample_window(c["params"], c["cfg"], key, prefix, n_prefix, n_total, c["x_cond"], c["y_cond"],
                                c["enc"], **kw)


def test_greedy_window_is_argmax_of_full_forward():
    c = case("upsampler_2")
    with jax.default_matmul_precision("highest"):
        tokens, _ = sample(c, jax.random.PRNGKey(0), c["tokens"], 13, 60, top_k=1, temperature=0.7)
        again, _ = sample(c, jax.random.PRNGKey(1), c["tokens"], 13, 60, top_k=1)
        full = ConditionalAutoregressive(c["cfg"]).apply({"params": c["params"]}, tokens, c["x_cond"], c["y_cond"])
    tokens = np.asarray(tokens)
    np.testing.assert_array_equal(tokens[:, :13], np.asarray(c["tokens"][:, :13]))  # the prefix is kept
    np.testing.assert_array_equal(tokens[:, 13:60], np.asarray(full.argmax(-1))[:, 13:60])
    assert (tokens[:, 60:] == 0).all()
    np.testing.assert_array_equal(tokens, np.asarray(again))  # greedy ignores the key and the temperature
    assert len(np.unique(tokens[:, 13:60])) > 3


def test_window_is_one_compiled_loop(monkeypatch):
    c = case("upsampler_2")
    traces = []
    real_step = decode.step
    monkeypatch.setattr(decode, "step", lambda *a, **k: traces.append(1) or real_step(*a, **k))
    before = decode._sample_window_jit._cache_size()
    for seed, temperature in [(0, 1.0), (1, 0.9)]:  # new key, temperature and prefix: no retrace
        prefix = jax.random.randint(jax.random.PRNGKey(seed), (BATCH, N_CTX), 0, BINS)
        sample(c, jax.random.PRNGKey(seed), prefix, 11, 57, temperature=temperature)
    assert decode._sample_window_jit._cache_size() == before + 1
    assert len(traces) == 1  # one step traced: the per-token work is the body of a single loop

    def jaxpr(n_total):
        fn = functools.partial(decode._sample_window, config=c["cfg"], n_prefix=11, n_total=n_total, top_k=0,
                               top_p=0.0)
        return jax.make_jaxpr(fn)(c["params"], C.init_cache(c["cfg"], BATCH), jax.random.PRNGKey(0), c["tokens"],
                                  c["x_cond"], c["y_cond"], None, jnp.float32(1.0)).jaxpr
    short, long = jaxpr(20), jaxpr(64)
    loops = [e.primitive.name for e in long.eqns if e.primitive.name in ("while", "scan")]
    assert loops in (["while"], ["scan"])
    assert len(short.eqns) == len(long.eqns)  # nothing unrolled per token


def test_donated_cache_is_reused_and_rows_draw_independently():
    c = case("prime_12")
    same_rows = jnp.broadcast_to(c["tokens"][:1], c["tokens"].shape)
    c = dict(c, x_cond=jnp.broadcast_to(c["x_cond"][:1], c["x_cond"].shape),
             y_cond=jnp.broadcast_to(c["y_cond"][:1], c["y_cond"].shape))
    first, cache = sample(c, jax.random.PRNGKey(0), same_rows, 20)
    leaves = jax.tree.leaves(cache)
    second, cache2 = sample(c, jax.random.PRNGKey(1), first, 30, cache=cache)
    assert all(leaf.is_deleted() for leaf in leaves)  # donated to the window call
    fresh, _ = sample(c, jax.random.PRNGKey(1), first, 30)
    np.testing.assert_array_equal(second, fresh)  # stale entries of a reused cache are never read
    repeat, _ = sample(c, jax.random.PRNGKey(0), same_rows, 20, cache=cache2)
    np.testing.assert_array_equal(repeat, first)  # same key, same tokens
    first = np.asarray(first)
    assert (first[0, 20:] != first[1, 20:]).any()  # identical rows, independent keys


def test_invalid_requests_fail_early():
    c = case("upsampler_2")
    with pytest.raises(ValueError, match="together"):
        sample(c, jax.random.PRNGKey(0), c["tokens"], 5, top_k=5, top_p=0.9)
    with pytest.raises(ValueError, match="n_total"):
        sample(c, jax.random.PRNGKey(0), c["tokens"], 5, N_CTX + 1)
    with pytest.raises(ValueError, match="temperature"):
        sample(c, jax.random.PRNGKey(0), c["tokens"], 5, temperature=0.0)
    with pytest.raises(ValueError, match="encoder_kv"):
        sample(dict(case("enc_dec_10"), enc=None), jax.random.PRNGKey(0), c["tokens"], 5)


# ------------------------------------------------------------------------------------------------------------
# Scanned layer groups (what sample.py runs on TPU) against every layer unrolled.

def unstack_cache(cache, cfg):
    """A scanned cache as one {"k", "v"} per layer, like the unrolled one."""
    out = {}
    for g in C.layer_groups(cfg, scan=True):
        for j in range(len(g.funcs)):
            for r in range(g.reps):
                layer = cache[g.name][C.layer_name(j)] if g.scanned else cache[g.name]
                out[C.layer_name(g.start + r * len(g.funcs) + j)] = (
                    jax.tree.map(lambda a, r=r: a[:, r], layer) if g.scanned else layer)
    return out


@pytest.mark.parametrize("name", list(SCANNED))
def test_scanned_layers_sample_the_same_tokens(name):
    c = case(name)
    cfg = c["cfg"]
    groups = C.layer_groups(cfg, scan=True)
    assert any(g.scanned for g in groups) and cfg.depth % cfg.period
    assert sum(len(g.funcs) * g.reps for g in groups) == cfg.depth
    scanned_cache = C.init_cache(cfg, BATCH, scan=True)
    assert C.is_scanned(scanned_cache) and not C.is_scanned(C.init_cache(cfg, BATCH, scan=False))
    assert C.cache_bytes(cfg, BATCH) == sum(a.nbytes for a in jax.tree.leaves(scanned_cache))
    params = {False: decode.decode_params(c["params"], cfg, scan=False),
              True: decode.decode_params(c["params"], cfg, scan=True)}
    assert set(params[True]["transformer"]) == {g.name for g in groups}
    got = {}
    for scan in (False, True):  # temperature 1, no filter: a draw from the whole distribution at every step
        got[scan] = sample(dict(c, params=params[scan]), jax.random.PRNGKey(3), c["tokens"], 13,
                           cache=C.init_cache(cfg, BATCH, scan=scan))
    np.testing.assert_array_equal(np.asarray(got[True][0]), np.asarray(got[False][0]))
    assert len(np.unique(np.asarray(got[True][0])[:, 13:])) > 5
    unrolled, scanned = got[False][1], unstack_cache(got[True][1], cfg)
    assert set(scanned) == set(unrolled)
    for layer in unrolled:  # the same keys and values in every layer (XLA may fuse ops differently in a loop)
        for kv in ("k", "v"):
            np.testing.assert_allclose(scanned[layer][kv], unrolled[layer][kv], rtol=1e-5, atol=1e-5)
    with jax.default_matmul_precision("highest"):
        logits = decode.teacher_forced_logits_cached(c["params"], cfg, c["tokens"], c["x_cond"], c["y_cond"],
                                                     c["enc"], n_prefill=13, scan=True)
    assert max_rel_err(logits, c["full"]) <= TOL
