"""KV caches for sampling a prior: one fixed-shape layout per attention type (the
original's `transformer/factored_attention.py::FactoredAttention` caches, as `sample` uses them).

The original grows each layer's cache with `torch.cat` and trims it to `_suff_cache_len` after every token.
Here every layer's cache is allocated once for the whole window and addressed by the position t, so one
compiled loop can run a window with no shape changes. Per layer, `k` and `v` each have the shape below,
heads-major (N samples, H heads of D = S / H, S = n_state = m_attn * width; bc = block_ctx = n_ctx // blocks):

| type | layout (per array)          | slot of position p                   | step at t reads                         |
|------|-----------------------------|--------------------------------------|-----------------------------------------|
| 0    | (N, H, n_ctx, D)            | p                                    | every slot, visible if slot <= t        |
| 1    | ring (N, H, bc, D)          | p % bc                               | every slot, visible if slot <= t % bc   |
| 2    | (N, H, bc, blocks, D)       | [p % bc, p // bc] (column-major)     | column t % bc, (N, H, blocks, D),       |
|      |                             |                                      | visible if row <= t // bc               |
| 3    | ring (N, H, 2 bc, D)        | p % (2 bc)                           | the bc slots of block t // bc - 1, no   |
|      |                             |                                      | mask; output 0 in block 0               |
| 4, 5 | (N, H, blocks * spread, D)  | (p // bc + 1) * spread + p % bc      | the spread zero slots first, then every |
|      |                             | - (bc - spread), for the last spread | slot whose position <= t                |
|      |                             | positions of blocks 0..blocks-2      |                                         |
| 6    | (N, H, encoder_dims, D)     | encoder position, filled once        | every slot, no mask                     |
| 7    | (N, H, prime_attn_len, D)   | p, while p < prime_attn_len          | every slot, visible if slot <= t        |

(spread is 1 for type 4.) A step reads each head's keys as one contiguous (slots, D) run, the layout the TPU
matrix unit's 8-row products want; stored (N, slots, S), the compiler copied every cache it read into that
layout every step (two 26.7 MB copies per step for 1b_lyrics' dense layer at batch 4; at 28 samples,
138 copies of 365 MB in all, mostly the block caches and transpose-block columns).

The original keeps the same keys (`_suff_cache_len`): the current block for 1, the previous and the current
block for 3, the first `_prime_len` positions for 7, the encoder K/V for 6, and everything for 0 and 2 (2
reads one column of it). It has no sampling path for types 4 and 5
(`_suff_cache_len` raises for 4, `summary_spread_attn` asserts "Not yet implemented" for 5); the layout here
samples both and is checked against the teacher-forced pass like every other type.

Stale or never-written slots are harmless: every read is masked to positions <= t, which this window has
written, so a cache can be reused for the next window without clearing it.

With `scan=True`, layers are grouped for decoding as a layer-scanned prior trains
(`jukejax.prior.transformer.layer_groups`): a run of `reps` repeats of a short unit of attention types
(the upsamplers' row, column, previous row x 24; 1b_lyrics' five such triples between its prime and dense
layers; 5b_lyrics' ten-layer unit with cross-attention x 7) is one `lax.scan` over the repeats, so the
compiler sees the unit once instead of every layer. Such a group's caches are stacked on axis 1 (the batch
stays axis 0, as every placement expects): `{"_attn_scan_{first layer}": {"_attn_mods_{j}": {"k", "v"}}}`
with (N, reps, ...) arrays, layer first + r * len(unit) + j at [:, r]. A layer in no repeated unit keeps its
own `{"_attn_mods_{d}": {"k", "v"}}`, as every layer does with `scan=False` (the default).

Scanning trades step time for compile time, so it is not the default for decoding. The TPU compiler compiles
the released upsampler's window 12x faster scanned (1b_lyrics' 3x), but estimates its token step at 5.4 ms
instead of 2.7 ms (4.3 ms if none of the unrolled loop's weight prefetches overlapped its ops): in a loop over
stacked layers it streams the weights inside the matmuls instead of prefetching them. On CPU the scanned loop
is as fast for models 512 wide and more, but slower for small ones (the demo prior's shape: 8.7 k vs 14.4 k
tokens/s at batch 4).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jukejax.prior.attention import (BLOCK, CROSS, DENSE, PREV_BLOCK, PRIME, SUMMARY, SUMMARY_SPREAD,
                                     TRANSPOSE_BLOCK, merge_heads, split_heads)
from jukejax.prior.config import TransformerConfig
from jukejax.prior.transformer import LayerGroup, layer_groups, layer_name  # noqa: F401 - the grouping, shared

Cache = Dict[str, Any]  # {"_attn_mods_{d}": {"k", "v"}} and {"_attn_scan_{d}": {"_attn_mods_{j}": {"k", "v"}}}


def is_scanned(cache: Cache) -> bool:
    """Whether a cache has scanned groups (made with `init_cache(..., scan=True)` where a unit repeats)."""
    return any(name.startswith("_attn_scan_") for name in cache)


def summary_spread(config: TransformerConfig, attn_func: int) -> int:
    return 1 if attn_func == SUMMARY else config.spread


def layer_shape(config: TransformerConfig, attn_func: int, batch: int) -> Tuple[int, ...]:
    """Shape of one layer's k (and v) cache."""
    c = config
    heads, head_dim = (batch, c.heads), (c.n_state // c.heads,)
    if attn_func == DENSE:
        return heads + (c.n_ctx,) + head_dim
    if attn_func == BLOCK:
        return heads + (c.block_ctx,) + head_dim
    if attn_func == TRANSPOSE_BLOCK:
        return heads + (c.block_ctx, c.blocks) + head_dim
    if attn_func == PREV_BLOCK:
        return heads + (2 * c.block_ctx,) + head_dim
    if attn_func in (SUMMARY, SUMMARY_SPREAD):
        return heads + (c.blocks * summary_spread(c, attn_func),) + head_dim
    if attn_func == CROSS:
        return heads + (c.encoder_dims,) + head_dim
    if attn_func == PRIME:
        return heads + (c.prime_attn_len,) + head_dim
    raise ValueError(f"attn_func {attn_func!r} is not one of the attention types 0-7")


def layer_logical_axes(attn_func: int) -> Tuple[Optional[str], ...]:
    """Logical axis names of a layer's k/v cache (`jukejax.parallel` rules): samples over the batch axes,
    the heads over "heads" like c_attn's output."""
    if attn_func == TRANSPOSE_BLOCK:
        return ("batch", "heads", None, None, None)
    return ("batch", "heads", None, None)


def _grouped(config: TransformerConfig, scan: bool, leaf) -> Cache:
    """{group name: ...} with leaf(attn_func, reps or None) for each layer of an unrolled group / unit
    position of a scanned one."""
    out = {}
    for g in layer_groups(config, scan):
        if g.scanned:
            out[g.name] = {layer_name(j): leaf(f, g.reps) for j, f in enumerate(g.funcs)}
        else:
            out[g.name] = leaf(g.funcs[0], None)
    return out


def cache_spec(config: TransformerConfig, batch: int, dtype: Any = None, scan: bool = False) -> Cache:
    """The cache as a tree of `jax.ShapeDtypeStruct` (nothing allocated), layers grouped as `layer_groups`."""
    dtype = jnp.dtype(dtype or config.compute_dtype)

    def leaf(f, reps):
        shape = layer_shape(config, f, batch)
        if reps is not None:
            shape = shape[:1] + (reps,) + shape[1:]
        return {"k": jax.ShapeDtypeStruct(shape, dtype), "v": jax.ShapeDtypeStruct(shape, dtype)}
    return _grouped(config, scan, leaf)


def init_cache(config: TransformerConfig, batch: int, dtype: Any = None, scan: bool = False) -> Cache:
    """Zero caches for every layer of `config` (dtype defaults to the compute dtype)."""
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), cache_spec(config, batch, dtype, scan))


def cache_bytes(config: TransformerConfig, batch: int = 1, dtype: Any = None) -> int:
    """Bytes of the caches of `batch` samples, from the shapes alone."""
    return sum(math.prod(s.shape) * s.dtype.itemsize for s in jax.tree.leaves(cache_spec(config, batch, dtype)))


def cache_logical_axes(config: TransformerConfig, scan: bool = False) -> Cache:
    """Logical axes of every cache leaf, for `jukejax.parallel.logical_to_spec` (a scanned group's repeats
    axis is "layers", kept whole)."""
    def leaf(f, reps):
        axes = layer_logical_axes(f)
        if reps is not None:
            axes = axes[:1] + ("layers",) + axes[1:]
        return {"k": axes, "v": axes}
    return _grouped(config, scan, leaf)


# ------------------------------------------------------------------------------------------------------------
# Index maps (static numpy: which position each slot holds).

def ring_positions(size: int, last: int) -> np.ndarray:
    """Position held by each slot of a ring of `size` once positions 0..last are written (-1: none)."""
    slots = np.arange(size)
    return last - (last - slots) % size


def summary_positions(config: TransformerConfig, attn_func: int) -> np.ndarray:
    """Position of each summary slot (b, s): (b-1)*bc + bc - spread + s; -1 for the zero keys of b = 0."""
    spread, bc = summary_spread(config, attn_func), config.block_ctx
    slot = np.arange(config.blocks * spread)
    b, s = slot // spread, slot % spread
    return np.where(b == 0, -1, (b - 1) * bc + bc - spread + s)


# ------------------------------------------------------------------------------------------------------------
# Writing: one position while stepping, or a whole primed prefix at once.

def to_heads(x: jax.Array, config: TransformerConfig) -> jax.Array:
    """(N, T, S) -> the heads-major (N, H, T, D) of dense and prime caches."""
    return split_heads(x, config.heads).swapaxes(1, 2)


def _store(buf: jax.Array, value: jax.Array, index: Tuple[Any, ...], write: Any = True,
           rep: Optional[jax.Array] = None) -> jax.Array:
    """dynamic_update_slice of value (same rank as one layer's buffer) at index; where `write` is False the
    slot is kept. With `rep`, buf is a scanned group's (N, reps, ...) and repeat `rep` is written."""
    value = value.astype(buf.dtype)
    if rep is not None:
        value, index = value[:, None], (index[0], rep) + tuple(index[1:])
    if write is not True:
        value = jnp.where(write, value, jax.lax.dynamic_slice(buf, index, value.shape))
    return jax.lax.dynamic_update_slice(buf, value, index)


def write_step(attn_func: int, layer: Dict[str, jax.Array], k: jax.Array, v: jax.Array, t: jax.Array,
               config: TransformerConfig, rep: Optional[jax.Array] = None) -> Dict[str, jax.Array]:
    """Store the k, v (N, 1, S) of position t in a self-attention layer's cache (repeat `rep` of a scanned
    group's stacked cache when given)."""
    c = config
    zero = jnp.zeros((), jnp.int32)
    k, v, write = to_heads(k, c), to_heads(v, c), True  # (N, H, 1, D)
    if attn_func == TRANSPOSE_BLOCK:
        index, k, v = (zero, zero, t % c.block_ctx, t // c.block_ctx, zero), k[:, :, None], v[:, :, None]
    elif attn_func in (SUMMARY, SUMMARY_SPREAD):
        spread, bc = summary_spread(c, attn_func), c.block_ctx
        r, b = t % bc, t // bc
        write = (r >= bc - spread) & (b < c.blocks - 1)
        slot = jnp.where(write, (b + 1) * spread + r - (bc - spread), 0)
        index = (zero, zero, slot, zero)
    elif attn_func == PRIME:
        write = t < c.prime_attn_len
        index = (zero, zero, jnp.minimum(t, c.prime_attn_len - 1), zero)
    elif attn_func == DENSE:
        index = (zero, zero, t, zero)
    else:
        size = c.block_ctx if attn_func == BLOCK else 2 * c.block_ctx
        index = (zero, zero, t % size, zero)
    return {"k": _store(layer["k"], k, index, write, rep), "v": _store(layer["v"], v, index, write, rep)}


def write_prefix(attn_func: int, layer: Dict[str, jax.Array], k: jax.Array, v: jax.Array, last: int,
                 config: TransformerConfig, rep: Optional[jax.Array] = None) -> Dict[str, jax.Array]:
    """Store positions 0..last (static) of k, v (N, P, S), P > last, as if stepped through one by one.

    For type 6, k and v are the encoder K/V (N, encoder_dims, S) and replace the cache. With `rep`, `layer`
    is a scanned group's stacked cache and its repeat `rep` is written.
    """
    if rep is not None:
        one = {n: _read(layer[n], rep) for n in ("k", "v")}
        one = write_prefix(attn_func, one, k, v, last, config)
        zero = jnp.zeros((), jnp.int32)
        return {n: jax.lax.dynamic_update_slice(layer[n], one[n][:, None], (zero, rep) + (zero,) * (one[n].ndim - 1))
                for n in ("k", "v")}
    c = config

    def fill(buf, x):
        x = x.astype(buf.dtype)
        if attn_func == CROSS:
            return to_heads(x, c)
        if attn_func in (DENSE, PRIME):
            n = min(last + 1, buf.shape[2])
            return jax.lax.dynamic_update_slice_in_dim(buf, to_heads(x[:, :n], c), 0, axis=2)
        if attn_func == TRANSPOSE_BLOCK:
            bc = c.block_ctx
            rows = -(-(last + 1) // bc)
            x = x[:, :rows * bc]
            if x.shape[1] < rows * bc:  # P need not be a multiple of bc for a pure prefix read
                x = jnp.pad(x, ((0, 0), (0, rows * bc - x.shape[1]), (0, 0)))
            x = to_heads(x, c)
            x = x.reshape(x.shape[:2] + (rows, bc, x.shape[-1])).swapaxes(2, 3)  # (N, H, bc, rows, D)
            written = (np.arange(rows)[None, :] * bc + np.arange(bc)[:, None]) <= last
            x = jnp.where(written[None, None, :, :, None], x, buf[:, :, :, :rows])
            return jax.lax.dynamic_update_slice_in_dim(buf, x, 0, axis=3)
        if attn_func in (BLOCK, PREV_BLOCK):
            pos = ring_positions(buf.shape[2], last)
        else:  # summary
            pos = summary_positions(c, attn_func)
            pos = np.where(pos <= last, pos, -1)
        written = pos >= 0
        gathered = to_heads(x[:, np.clip(pos, 0, x.shape[1] - 1)], c)
        return jnp.where(written[None, None, :, None], gathered, buf)

    return {"k": fill(layer["k"], k), "v": fill(layer["v"], v)}


# ------------------------------------------------------------------------------------------------------------
# Reading: the attention of the query at position t over one layer's cache.

_TPU_QUERY_ROWS = 8


def attend_one(q: jax.Array, k: jax.Array, v: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
    """`attend` for the single query (N, 1, S) of a decode step against a heads-major cache k, v (N, H, K, D):
    the same products (q and k each scaled by head_dim**-0.25, fp32 scores, masked scores -1e9).

    On TPU, a one-row query makes the compiler run both products as a vector multiply-and-reduce and
    materialise k * head_dim**-0.25 in fp32 over the whole cache every step: for 1b_lyrics' dense layer
    (4 samples x 6528 keys) it estimates 1.41 M cycles on v5e, ten times what reading k and v takes. There the
    query is repeated to 8 rows (the matrix unit's smallest tile), both scales are folded into it
    (q * head_dim**-0.5, k read as cached) and row 0 is kept: 93 k cycles.
    """
    n, _, s = q.shape
    n_head, head_dim = k.shape[1], k.shape[-1]

    def on_tpu(q, k, v):
        qh = split_heads(jnp.broadcast_to(q * head_dim ** -0.5, (n, _TPU_QUERY_ROWS, s)), n_head)
        return scores_and_values(qh, k, v, jnp.float32)[:, :1]

    def default(q, k, v):
        scale = head_dim ** -0.25
        return scores_and_values(split_heads(q * scale, n_head), k * scale, v, None)

    def scores_and_values(qh, k, v, accumulate):
        w = jnp.einsum("nqhd,nhkd->nhqk", qh, k, preferred_element_type=jnp.float32)
        if mask is not None:
            w = jnp.where(mask, w, jnp.float32(-1e9))
        p = jax.nn.softmax(w, axis=-1).astype(v.dtype)
        a = jnp.einsum("nhqk,nhkd->nqhd", p, v, preferred_element_type=accumulate)
        return merge_heads(a).astype(v.dtype)

    return jax.lax.platform_dependent(q, k, v, tpu=on_tpu, default=default)


def _read(buf: jax.Array, rep: Optional[jax.Array], axis: Optional[int] = None, start: Any = 0,
          size: int = 1) -> jax.Array:
    """One layer's cache, or positions start..start+size-1 of it along `axis` (of the one-layer layout), as
    one dynamic slice: of buf itself, or of repeat `rep` of a scanned group's (N, reps, ...) buf."""
    if rep is None:
        return buf if axis is None else jax.lax.dynamic_slice_in_dim(buf, start, size, axis)
    zero = jnp.zeros((), jnp.int32)
    starts, sizes = [zero] * buf.ndim, list(buf.shape)
    starts[1], sizes[1] = rep, 1
    if axis is not None:
        starts[axis + 1], sizes[axis + 1] = start, size
    part = jax.lax.dynamic_slice(buf, starts, sizes)
    return part.reshape(part.shape[:1] + part.shape[2:])


def attend_step(attn_func: int, layer: Dict[str, jax.Array], q: jax.Array, t: jax.Array,
                config: TransformerConfig, rep: Optional[jax.Array] = None) -> jax.Array:
    """Attention output (N, 1, S), before c_proj, of the query q (N, 1, S) at position t.

    The cache must already hold position t (`write_step`) for self-attention types. With `rep`, `layer` is a
    scanned group's stacked cache and its repeat `rep` is read.
    """
    c = config
    read = lambda axis=None, start=0, size=1: tuple(  # noqa: E731
        _read(layer[n], rep, axis, start, size).astype(q.dtype) for n in ("k", "v"))
    if attn_func == DENSE:
        (k, v), mask = read(), jnp.arange(c.n_ctx) <= t
    elif attn_func == BLOCK:
        (k, v), mask = read(), jnp.arange(c.block_ctx) <= t % c.block_ctx
    elif attn_func == TRANSPOSE_BLOCK:
        k, v = (x[:, :, 0] for x in read(2, t % c.block_ctx))  # column t % bc: (N, H, blocks, D)
        mask = jnp.arange(c.blocks) <= t // c.block_ctx
    elif attn_func == PREV_BLOCK:
        bc = c.block_ctx
        k, v = read(2, ((t // bc - 1) % 2) * bc, bc)
        a = attend_one(q, k, v, None)
        # Block 0 attends to block_ctx zero keys and values in the original: the output is exactly 0.
        return jnp.where(t >= bc, a, jnp.zeros_like(a))
    elif attn_func in (SUMMARY, SUMMARY_SPREAD):
        pos = summary_positions(c, attn_func)
        (k, v), mask = read(), (pos < 0) | (pos <= t)
    elif attn_func == CROSS:
        (k, v), mask = read(), None
    elif attn_func == PRIME:
        (k, v), mask = read(), jnp.arange(c.prime_attn_len) <= t
    else:
        raise ValueError(f"attn_func {attn_func!r} is not one of the attention types 0-7")
    return attend_one(q, k, v, mask)
