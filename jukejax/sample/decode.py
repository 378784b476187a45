"""Cached decoding of one prior window: prefill, step, and the compiled sampling loop
(original `prior/autoregressive.py::ConditionalAutoregressive2D.sample` / `primed_sample`).

The original samples a window token by token from Python, growing `torch.cat` caches (`sample`), after feeding
a known prefix in chunks (`primed_sample`). Here:

- `prefill` runs the known tokens x[0..L-1] as ONE parallel forward pass over positions 0..L (L static per
  compile, padded up to a block boundary so the teacher-forced layouts apply unchanged), fills every layer's
  cache (`jukejax.sample.cache`) and returns the logits at position L, i.e. the distribution of x[L].
- `step` takes x[t-1] through all layers at position t, reading only the caches.
- `sample_window` is prefill + one compiled `lax.fori_loop` over the remaining positions, tokens written
  into a fixed (N, n_ctx) buffer, caches donated and returned for the next window.

With a cache made with `scan=True`, repeated units of layers run as one `lax.scan` each over their stacked
params and caches (`cache.layer_groups`), so the compiler sees each unit once, in the prefill and in the step
(a faster compile, a slower step: see there); `decode_params(scan=True)` stacks the params once at load.

Model math (embeddings, LayerNorms, projections, MLP, head) is the prior modules' own, called through
`ConditionalAutoregressive.embed` / `embed_at` / `head` and `ResAttnBlock.attn_qkv` / `attn_residual`; this
module owns only the caches and the loops. Everything is row-wise in the batch, so a batch sharded over the
"data" axis (`cache.cache_logical_axes`) decodes without communication.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec

from jukejax.prior import attention as attn_lib
from jukejax.prior.attention import (CROSS, DENSE, PRIME, SUMMARY, SUMMARY_SPREAD, attend, causal_mask)
from jukejax.prior.autoregressive import ConditionalAutoregressive
from jukejax.prior.config import AutoregressiveConfig
from jukejax.prior.transformer import ResAttnBlock, unstack_layers
from jukejax.sample.cache import (Cache, attend_step, init_cache, is_scanned, layer_groups,
                                  layer_name, summary_spread, write_prefix, write_step)


# ------------------------------------------------------------------------------------------------------------
# Binding params to the prior's modules; the layers' params, grouped as the caches are (`cache.layer_groups`).

def _model(params: Any, config: AutoregressiveConfig) -> ConditionalAutoregressive:
    return ConditionalAutoregressive(config).bind({"params": params})


def _group_layers(layers: Any, config: AutoregressiveConfig, scan: bool,
                  prepare: Callable[[Any, Any], Any] = lambda path, x: x, stack: Callable = jnp.stack,
                  index: Callable = lambda a, r: a[r]) -> Any:
    """The transformer's params grouped for decoding: a scanned group's layers stacked per unit position
    (reps first), other layers as they are; `prepare(path within a layer, leaf)` is applied to each layer's
    leaves before stacking (`index(leaf, r)` takes repeat r of a leaf stacked as stored). Params already
    grouped for `scan` (as a layer-scanned prior trains them, when `scan`) are only prepared."""
    groups = layer_groups(config, scan)
    if set(layers) == {g.name for g in groups}:
        return jax.tree_util.tree_map_with_path(prepare, layers)
    raw = unstack_layers(layers, index)
    out = {}
    for g in groups:
        if not g.scanned:
            out[g.name] = jax.tree_util.tree_map_with_path(prepare, raw[g.name])
            continue
        unit = len(g.funcs)
        out[g.name] = {layer_name(j): jax.tree_util.tree_map_with_path(
            lambda path, *xs: stack([prepare(path, x) for x in xs]),
            *[raw[layer_name(g.start + r * unit + j)] for r in range(g.reps)]) for j in range(unit)}
    return out


def layer_params(layers: Any, config: AutoregressiveConfig, d: int) -> Any:
    """Layer d's params from the transformer's params in any layout (stored, layer-scanned)."""
    return unstack_layers(layers)[layer_name(d)]



def decode_params(params: Any, config, scan: bool = False) -> Any:
    """Params as decoding reads them, made once at load: every transformer dense layer's kernel and bias in
    the compute dtype (exactly what each `nn.Dense` casts them to on every call, so the cast changes no
    number), and the layers grouped as `cache.layer_groups(scan)` runs them (with scan, a scanned group's
    layers stacked). Sampling does this when it loads a level (half the HBM for bf16
    weights; each stack is built from cast layers, so no second copy of the weights stays) and again inside
    the window function, outside its token loop, where it is then a no-op: no step re-reads fp32 weights to
    convert them and nothing is stacked per window. LayerNorms and the embedding tables stay as stored.
    `params` is a whole prior's tree (with "prior") or the autoregressive model's (with "transformer");
    `config` a PriorConfig or its transformer config."""
    tc = getattr(config, "transformer", config)
    dtype = jnp.dtype(tc.compute_dtype)

    def cast(path, x):
        names = [getattr(k, "key", None) for k in path]
        if not any(n in ("ln_0", "ln_1") for n in names) and jnp.issubdtype(x.dtype, jnp.floating):
            return x.astype(dtype)
        return x
    return _with_ar_layers(params, lambda layers: _group_layers(layers, tc, scan, cast))


def decode_shardings(shardings: Any, config, scan: bool = False) -> Any:
    """`NamedSharding`s of the params (`parallel.param_shardings`) for their `decode_params` layout: a stacked
    layer is placed as its layers were, the repeats axis whole."""
    tc = getattr(config, "transformer", config)

    def stack(xs):
        return NamedSharding(xs[0].mesh, PartitionSpec(None, *xs[0].spec))

    def index(s, r):
        return NamedSharding(s.mesh, PartitionSpec(*s.spec[1:]))
    return _with_ar_layers(shardings, lambda layers: _group_layers(layers, tc, scan, stack=stack, index=index))


def _with_ar_layers(params: Any, fn: Callable[[Any], Any]) -> Any:
    ar = params["prior"] if "prior" in params else params
    ar = dict(ar, transformer=fn(ar["transformer"]))
    return dict(params, prior=ar) if "prior" in params else ar


def _pack_vectors(group: Any) -> Tuple[Any, Callable[[Any], Any]]:
    """A scanned group's stacked params with every bias and LayerNorm vector, (reps, n) each, concatenated
    into one (reps, total) array per dtype, and the function that rebuilds the tree from one repeat's slice.
    The scan then slices one array per dtype per repeat instead of each vector: on TPU each slice is an op of
    its own (about 2 k cycles in the compiler's estimate, 8-10 per layer). The concatenation is loop-invariant
    (a few MB for the released models)."""
    leaves, treedef = jax.tree.flatten(group)
    small = {}
    for i, leaf in enumerate(leaves):
        if leaf.ndim == 2:
            small.setdefault(jnp.dtype(leaf.dtype).name, []).append(i)
    packed = {dtype: jnp.concatenate([leaves[i] for i in idx], axis=1) for dtype, idx in small.items()}
    rest = {i: leaf for i, leaf in enumerate(leaves) if leaf.ndim != 2}

    def unpack(xs):
        big, vectors = xs
        out = dict(big)
        for dtype, idx in small.items():
            offset = 0
            for i in idx:
                size = leaves[i].shape[1]
                out[i] = vectors[dtype][offset:offset + size]
                offset += size
        return jax.tree.unflatten(treedef, [out[i] for i in range(len(leaves))])
    return (rest, packed), unpack


def _run_layers(params: Any, config: AutoregressiveConfig, cache: Cache, x: jax.Array,
                layer_fn: Callable) -> Tuple[jax.Array, Cache]:
    """x through every layer, grouped as the cache is: `layer_fn(block, attn_func, layer_cache, x, rep)` ->
    (x, layer_cache), where rep is None for an unrolled layer and the repeat index within a scanned group's
    stacked cache. A scanned group is one `lax.scan` over its repeats (the compiler sees its unit once)."""
    c = config
    scan = is_scanned(cache)
    groups = layer_groups(c, scan)
    if set(cache) != {g.name for g in groups}:
        raise ValueError(f"the cache's layers {sorted(cache)[:4]}... are not grouped as attn_order "
                         f"{c.attn_order}, depth {c.depth} decodes ({'scanned' if scan else 'unrolled'}); make it "
                         f"with init_cache")
    layers = _group_layers(params["transformer"], c, scan)
    out = {}
    for g in groups:
        if not g.scanned:
            block = ResAttnBlock(c, g.funcs[0]).bind({"params": layers[g.name]})
            x, out[g.name] = layer_fn(block, g.funcs[0], cache[g.name], x, None)
            continue

        vectors, unpack = _pack_vectors(layers[g.name])

        def body(carry, xs, g=g, unpack=unpack):
            x, group_cache = carry
            packed, rep = xs
            group_params = unpack(packed)
            group_cache = dict(group_cache)
            for j, f in enumerate(g.funcs):
                block = ResAttnBlock(c, f).bind({"params": group_params[layer_name(j)]})
                x, group_cache[layer_name(j)] = layer_fn(block, f, group_cache[layer_name(j)], x, rep)
            return (x, group_cache), None

        (x, out[g.name]), _ = jax.lax.scan(body, (x, cache[g.name]),
                                           (vectors, jnp.arange(g.reps, dtype=jnp.int32)))
    return x, out


def _check_inputs(config: AutoregressiveConfig, encoder_kv: Optional[jax.Array]) -> None:
    if config.only_encode:
        raise ValueError("an only_encode model (the lyric encoder) has no logits to sample from")
    if CROSS in config.attn_funcs:
        if encoder_kv is None or encoder_kv.shape[1:] != (config.encoder_dims, config.width):
            raise ValueError(f"encoder_kv must have shape (N, {config.encoder_dims}, {config.width}), got "
                             f"{None if encoder_kv is None else encoder_kv.shape}")
    elif encoder_kv is not None:
        raise ValueError(f"attn_order {config.attn_order} has no cross-attention layers; encoder_kv must be None")


def _x_cond_at(x_cond: Optional[jax.Array], t: jax.Array) -> Optional[jax.Array]:
    """x_cond (N, n_ctx, w) at position t as (N, 1, w); an (N, 1, w) condition is the same at every t."""
    if x_cond is None or x_cond.shape[1] == 1:
        return x_cond
    return jax.lax.dynamic_slice_in_dim(x_cond, t, 1, axis=1)


def _as_cache_dtype(x: jax.Array, cache_dtype: jnp.dtype) -> jax.Array:
    # The prefix attends to k, v rounded exactly as the cache stores them, so stepping on from the prefill
    # sees the same numbers the prefill saw.
    return x.astype(cache_dtype).astype(x.dtype)


# ------------------------------------------------------------------------------------------------------------
# Prefill.

def prefill_length(config: AutoregressiveConfig, n_known: int) -> int:
    """Positions the parallel prefill of n_known tokens runs: 0..n_known, rounded up to whole blocks.

    Summary layers (4, 5) see the last `spread` positions of every earlier block, including the block of the
    query itself only through the full-length layout; one more block of padding keeps that layout exact.
    """
    c, length = config, n_known + 1
    if c.blocks is None:
        return length
    if SUMMARY in c.attn_funcs or SUMMARY_SPREAD in c.attn_funcs:
        length += max(summary_spread(c, f) for f in c.attn_funcs if f in (SUMMARY, SUMMARY_SPREAD))
    return min(c.n_ctx, -(-length // c.block_ctx) * c.block_ctx)


def _prefix_attention(attn_func: int, q, k, v, config: AutoregressiveConfig):
    """Teacher-forced attention over the first P positions (P a multiple of block_ctx for blocked types)."""
    c, length = config, q.shape[1]
    if attn_func == DENSE:
        return attn_lib.dense_attn(q, k, v, n_head=c.heads)
    if attn_func == CROSS:
        return attn_lib.cross_attn(q, k, v, n_head=c.heads)
    if attn_func == PRIME:
        m = min(length, c.prime_attn_len)
        return attend(q, k[:, :m], v[:, :m], causal_mask(length, m), n_head=c.heads)
    return attn_lib.factored_attention(attn_func, q, k, v, n_head=c.heads, blocks=length // c.block_ctx,
                                       spread=c.spread)


def _prefill(params, config: AutoregressiveConfig, cache: Cache, tokens: jax.Array, x_cond, y_cond,
             encoder_kv) -> Tuple[Cache, jax.Array]:
    """Cache holding positions 0..L (L = tokens.shape[1]) and the logits (N, L+1, bins) at those positions."""
    c = config
    n, n_known = tokens.shape
    if not 0 <= n_known < c.n_ctx:
        raise ValueError(f"prefill of {n_known} known tokens: expected 0 <= L < n_ctx {c.n_ctx} (position L is "
                         f"the first one predicted)")
    _check_inputs(c, encoder_kv)
    length = prefill_length(c, n_known)
    model = _model(params, c)
    padded = jnp.zeros((n, c.n_ctx), jnp.int32).at[:, :n_known].set(tokens.astype(jnp.int32))
    h, x_cond = model.embed(padded, x_cond, y_cond)

    def layer(block, f, layer_cache, x, rep):
        cache_dtype = layer_cache["k"].dtype
        if f == CROSS:
            q = block.attn_query(x)
            k, v = block.attn_encoder_kv(encoder_kv)
        else:
            q, k, v = block.attn_qkv(x)
        layer_cache = write_prefix(f, layer_cache, k, v, n_known, c, rep)
        k, v = _as_cache_dtype(k, cache_dtype), _as_cache_dtype(v, cache_dtype)
        return block.attn_residual(x, _prefix_attention(f, q, k, v, c)), layer_cache

    x, out = _run_layers(params, c, cache, h[:, :length].astype(c.compute_dtype), layer)
    h = x[:, :n_known + 1].astype(jnp.float32)
    x_cond = x_cond if x_cond.shape[1] == 1 else x_cond[:, :n_known + 1]
    return out, model.head(h, x_cond)


def prefill(params, config: AutoregressiveConfig, tokens: jax.Array, x_cond: Optional[jax.Array] = None,
            y_cond: Optional[jax.Array] = None, encoder_kv: Optional[jax.Array] = None, *,
            cache: Optional[Cache] = None, cache_dtype: Any = None) -> Tuple[Cache, jax.Array]:
    """Prime a window with its known tokens in one parallel forward pass.

    tokens (N, L): x[0..L-1], L static and < n_ctx (L = 0 runs the start position alone). x_cond is the
    window's (N, n_ctx, w) or (N, 1, w) condition; y_cond (N, 1, w) the label embedding; encoder_kv
    (N, encoder_dims, w) the lyric encoder's states for type-6 layers. Writes into `cache` (a fresh
    `init_cache` when None) and returns it with the fp32 logits (N, bins) at position L (x[L]'s distribution).
    """
    if cache is None:
        cache = init_cache(config, tokens.shape[0], cache_dtype)
    cache, logits = _prefill(params, config, cache, tokens, x_cond, y_cond, encoder_kv)
    return cache, logits[:, -1]


def fill_encoder(params, config: AutoregressiveConfig, cache: Cache, encoder_kv: jax.Array) -> Cache:
    """Project encoder_kv into the type-6 layers' caches (what `prefill` does, for decoding from t = 0)."""
    _check_inputs(config, encoder_kv)

    def layer(block, f, layer_cache, x, rep):
        if f == CROSS:
            k, v = block.attn_encoder_kv(encoder_kv)
            layer_cache = write_prefix(f, layer_cache, k, v, 0, config, rep)
        return x, layer_cache
    return _run_layers(params, config, cache, jnp.zeros((), config.compute_dtype), layer)[1]


# ------------------------------------------------------------------------------------------------------------
# One token.

def step(params, config: AutoregressiveConfig, cache: Cache, token: jax.Array, t: jax.Array,
         x_cond_t: Optional[jax.Array] = None, y_cond: Optional[jax.Array] = None) -> Tuple[jax.Array, Cache]:
    """Position t through every layer from the caches: (fp32 logits (N, bins) of x[t], updated cache).

    token (N,) is x[t-1] (ignored at t = 0, which takes y_cond / the start token: pass y_cond whenever
    config.y_cond). x_cond_t is x_cond at position t, (N, 1, w). The cache must hold positions 0..t-1
    (and the encoder K/V for type-6 layers: `prefill` or `fill_encoder`). To drive it from the host, jit it
    with the cache donated (`jax.jit(step, static_argnums=1, donate_argnums=2)`); `sample_window` runs it
    inside one loop instead.
    """
    c = config
    t = jnp.asarray(t, jnp.int32)
    model = _model(params, c)
    h, x_cond_t = model.embed_at(token.astype(jnp.int32), t, x_cond_t, y_cond)

    def layer(block, f, layer_cache, x, rep):
        if f == CROSS:
            q = block.attn_query(x)
        else:
            q, k, v = block.attn_qkv(x)
            layer_cache = write_step(f, layer_cache, k, v, t, c, rep)
        return block.attn_residual(x, attend_step(f, layer_cache, q, t, c, rep)), layer_cache

    x, out = _run_layers(params, c, cache, h.astype(c.compute_dtype), layer)
    return model.head(x.astype(jnp.float32), x_cond_t)[:, 0], out


# ------------------------------------------------------------------------------------------------------------
# Token choice.

def _check_filter(top_k: int, top_p: float) -> None:
    if top_k < 0:
        raise ValueError(f"top_k {top_k} must be >= 0 (0 disables it)")
    if not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_p {top_p} must lie in [0, 1] (0 disables it)")
    if top_k > 0 and top_p > 0.0:
        # The original asserts the same in `filter_logits` use sites (sample.py never sets both).
        raise ValueError(f"top_k {top_k} and top_p {top_p} cannot be used together; set one of them to 0")


def filter_logits(logits: jax.Array, top_k: int = 0, top_p: float = 0.0) -> jax.Array:
    """Original `filter_logits` over the last axis: entries outside the top-k or the nucleus become -inf.

    top-k keeps logits >= the k-th largest. top-p keeps, in descending order, every token whose preceding
    cumulative probability is <= top_p, so the most likely token always stays. top_k and top_p are static.
    """
    _check_filter(top_k, top_p)
    logits = logits.astype(jnp.float32)
    if top_k > 0:
        kth = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p > 0.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        # Original: remove where cum > p, shifted right by one so the first token above p stays.
        remove = jnp.concatenate([jnp.zeros_like(cum[..., :1], bool), cum[..., :-1] > top_p], axis=-1)
        remove = jnp.take_along_axis(remove, jnp.argsort(order, axis=-1), axis=-1)
        logits = jnp.where(remove, -jnp.inf, logits)
    return logits


def row_keys(key: jax.Array, batch: int) -> jax.Array:
    """Independent keys for the batch rows: fold_in of the (global) row index."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(batch))


def draw(keys: jax.Array, logits: jax.Array, t: jax.Array, temperature: jax.Array, top_k: int = 0,
         top_p: float = 0.0) -> jax.Array:
    """Token (N,) int32 for position t: logits / temperature, filtered, categorical with key fold_in(row, t)."""
    filtered = filter_logits(logits.astype(jnp.float32) / temperature, top_k, top_p)
    keys_t = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, t)
    return jax.vmap(jax.random.categorical)(keys_t, filtered).astype(jnp.int32)


# ------------------------------------------------------------------------------------------------------------
# One window, one compiled call.

def _sample_window(params, cache, key, buffer, x_cond, y_cond, encoder_kv, temperature, *, config, n_prefix,
                   n_total, top_k, top_p):
    params = decode_params(params, config, scan=is_scanned(cache))
    n = buffer.shape[0]
    keys = row_keys(key, n)
    cache, logits = _prefill(params, config, cache, buffer[:, :n_prefix], x_cond, y_cond, encoder_kv)
    first = draw(keys, logits[:, -1], jnp.int32(n_prefix), temperature, top_k, top_p)
    buffer = buffer.at[:, n_prefix].set(first)

    def body(t, carry):
        buffer, cache = carry
        token = jax.lax.dynamic_index_in_dim(buffer, t - 1, axis=1, keepdims=False)
        logits, cache = step(params, config, cache, token, t, _x_cond_at(x_cond, t), y_cond)
        token = draw(keys, logits, t, temperature, top_k, top_p)
        return jax.lax.dynamic_update_index_in_dim(buffer, token, t, axis=1), cache

    return jax.lax.fori_loop(n_prefix + 1, n_total, body, (buffer, cache))


_sample_window_jit = jax.jit(_sample_window, static_argnames=("config", "n_prefix", "n_total", "top_k", "top_p"),
                             donate_argnames=("cache",))


def sample_window(params, config: AutoregressiveConfig, key: jax.Array, prefix_tokens: jax.Array, n_prefix: int,
                  n_total: Optional[int] = None, x_cond: Optional[jax.Array] = None,
                  y_cond: Optional[jax.Array] = None, encoder_kv: Optional[jax.Array] = None, *,
                  temperature: float = 1.0, top_k: int = 0, top_p: float = 0.0, cache: Optional[Cache] = None,
                  cache_dtype: Any = None) -> Tuple[jax.Array, Cache]:
    """Sample positions n_prefix..n_total-1 of a window given x[0..n_prefix-1]: (tokens (N, n_ctx), cache).

    prefix_tokens (N, T), n_prefix <= T <= n_ctx: only its first n_prefix columns are read. n_total
    (default n_ctx) is the original's `sample_tokens`; the returned buffer holds the prefix, the sampled
    tokens, and zeros after n_total. Temperature, then top-k or top-p (not both, as in the original), then a
    categorical draw per row with key fold_in(fold_in(key, row), position). The prefill and the token loop
    are one jitted call (compiled once per config, n_prefix, n_total, top_k, top_p); `cache` (e.g. the one
    returned by the previous window) is donated to it, and a fresh one is allocated when None.
    """
    c = config
    n_total = c.n_ctx if n_total is None else n_total
    if not 0 <= n_prefix < n_total <= c.n_ctx:
        raise ValueError(f"sample_window needs 0 <= n_prefix ({n_prefix}) < n_total ({n_total}) <= n_ctx "
                         f"({c.n_ctx})")
    if not n_prefix <= prefix_tokens.shape[1] <= c.n_ctx:
        raise ValueError(f"prefix_tokens has {prefix_tokens.shape[1]} columns; expected n_prefix ({n_prefix}) "
                         f"to n_ctx ({c.n_ctx})")
    if not temperature > 0:
        raise ValueError(f"temperature {temperature} must be > 0")
    _check_filter(top_k, top_p)
    _check_inputs(c, encoder_kv)
    n = prefix_tokens.shape[0]
    buffer = jnp.zeros((n, c.n_ctx), jnp.int32).at[:, :n_prefix].set(
        jnp.asarray(prefix_tokens[:, :n_prefix], jnp.int32))
    if cache is None:
        cache = init_cache(c, n, cache_dtype)
    return _sample_window_jit(nn.unbox(params), cache, key, buffer, x_cond, y_cond, encoder_kv,
                              jnp.float32(temperature), config=c, n_prefix=n_prefix, n_total=n_total,
                              top_k=int(top_k), top_p=float(top_p))


# ------------------------------------------------------------------------------------------------------------
# Teacher forcing through the caches (the consistency check).

@functools.partial(jax.jit, static_argnames=("config", "n_prefill", "cache_dtype", "scan"))
def _teacher_forced(params, tokens, x_cond, y_cond, encoder_kv, *, config, n_prefill, cache_dtype, scan):
    c = config
    n, length = tokens.shape
    cache = init_cache(c, n, cache_dtype, scan)
    if n_prefill is None:
        start, pre = 0, []
        if CROSS in c.attn_funcs:
            cache = fill_encoder(params, c, cache, encoder_kv)
    else:
        cache, logits = _prefill(params, c, cache, tokens[:, :n_prefill], x_cond, y_cond, encoder_kv)
        start, pre = n_prefill + 1, [logits]
    if start == length:
        return jnp.concatenate(pre, axis=1)

    def body(cache, t):
        token = jax.lax.dynamic_index_in_dim(tokens, jnp.maximum(t - 1, 0), axis=1, keepdims=False)
        logits, cache = step(params, c, cache, token, t, _x_cond_at(x_cond, t), y_cond)
        return cache, logits

    _, logits = jax.lax.scan(body, cache, jnp.arange(start, length, dtype=jnp.int32))
    return jnp.concatenate(pre + [logits.swapaxes(0, 1)], axis=1)


def teacher_forced_logits_cached(params, config: AutoregressiveConfig, tokens: jax.Array,
                                 x_cond: Optional[jax.Array] = None, y_cond: Optional[jax.Array] = None,
                                 encoder_kv: Optional[jax.Array] = None, *, n_prefill: Optional[int] = None,
                                 cache_dtype: Any = None, scan: bool = False) -> jax.Array:
    """Logits (N, T, bins) of positions 0..T-1 of `tokens` (N, T), decoded through the caches.

    n_prefill None: every position, 0 included, is a `step`. n_prefill = L: `prefill` of x[0..L-1] gives
    positions 0..L, then `step` feeds the true tokens for L+1..T-1. Equals the full forward pass
    `ConditionalAutoregressive.__call__` up to float rounding. scan: the layers grouped as
    `cache.layer_groups(scan)`.
    """
    if n_prefill is not None and not 0 <= n_prefill < tokens.shape[1]:
        raise ValueError(f"n_prefill {n_prefill} must lie in [0, {tokens.shape[1]})")
    _check_inputs(config, encoder_kv)
    dtype = jnp.dtype(cache_dtype or config.compute_dtype)
    return _teacher_forced(nn.unbox(params), tokens, x_cond, y_cond, encoder_kv, config=config,
                           n_prefill=n_prefill, cache_dtype=dtype,
                           scan=bool(scan))
