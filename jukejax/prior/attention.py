"""Factorised attention of the Jukebox priors (original `transformer/factored_attention.py`).

Everything here is a pure function of arrays with static shapes. The eight attention types are reshapes of
the full sequence into `[blocks, block_ctx]` views plus static causal masks, exactly as the original does it,
so a layer costs O(L * block_ctx) or O(L * blocks) instead of O(L^2):

| type | name                     | query at position i sees                                              | zero keys |
|------|--------------------------|-----------------------------------------------------------------------|-----------|
| 0    | dense                    | every position j <= i                                                 | 0         |
| 1    | block (row)              | j <= i in i's own block                                               | 0         |
| 2    | transpose block (column) | j <= i with j = i (mod block_ctx)                                     | 0         |
| 3    | previous block (prev row)| the whole previous block, no mask                                     | block_ctx in block 0 |
| 4    | summary                  | the last position of each block b < blocks-1 that is <= i             | 1         |
| 5    | summary-spread           | the last `spread` positions of each block b < blocks-1 that are <= i  | spread    |
| 6    | cross (enc-dec)          | every encoder state, no mask                                          | 0         |
| 7    | prime                    | j <= i among the first prime_attn_len positions                       | 0         |

"Zero keys" are the all-zero key/value rows the original pads in (block 0 of type 3, the first summary slot
of types 4 and 5); they take part in the softmax with score 0, so they are reproduced rather than masked.

The pieces a KV cache needs are separate: `attend` is the masked softmax attention over whatever keys a
cache holds (any mask broadcastable to (..., heads, q, k)), the `*_attn` functions are the teacher-forced
layouts, and the q/k/v projections live in `transformer.FactoredAttention.qkv`.
"""
from __future__ import annotations

import functools
from typing import List, Optional, Tuple

import jax
import jax.numpy as jnp

DENSE, BLOCK, TRANSPOSE_BLOCK, PREV_BLOCK, SUMMARY, SUMMARY_SPREAD, CROSS, PRIME = range(8)

ATTN_NAMES = {
    DENSE: "dense_attn",
    BLOCK: "block_attn",
    TRANSPOSE_BLOCK: "transpose_block_attn",
    PREV_BLOCK: "prev_block_attn",
    SUMMARY: "summary_attn",
    SUMMARY_SPREAD: "summary_spread_attn",
    CROSS: "cross_attention",
    PRIME: "prime_attn",
}
# Types that view the sequence as [blocks, block_ctx] (type 7 rounds its length up to a multiple of blocks).
BLOCK_TYPES = frozenset({BLOCK, TRANSPOSE_BLOCK, PREV_BLOCK, SUMMARY, SUMMARY_SPREAD, PRIME})

_RCP = (BLOCK, TRANSPOSE_BLOCK, PREV_BLOCK)  # row, column, previous row
_ORDER_10 = (*_RCP * 3, *((*_RCP * 3, CROSS) * 7))  # 9 + 7 * 10 = 79 layers


def _order_fn(attn_order: int):
    # Original `Transformer.__init__` attn_func table; comments give its names for the released orders.
    return {
        0: lambda d: DENSE,                                           # full dense
        1: lambda d: (BLOCK, TRANSPOSE_BLOCK)[d % 2],
        2: lambda d: _RCP[d % 3],                                     # upsamplers, 5b, 5b lyric encoder
        3: lambda d: (BLOCK, SUMMARY)[d % 2],
        4: lambda d: (BLOCK, SUMMARY_SPREAD)[d % 2],
        5: lambda d: (BLOCK, SUMMARY, BLOCK, BLOCK)[d % 4],
        6: lambda d: (*_RCP, CROSS)[d % 4],
        7: lambda d: (*_RCP * 5, CROSS)[d % 16],
        8: lambda d: (*_RCP * 3, CROSS)[d % 10],                      # small separated enc-dec with lyrics
        9: lambda d: (*_RCP, DENSE)[d % 4],
        10: lambda d: _ORDER_10[d % 79],                               # 5b_lyrics
        11: lambda d: (CROSS, CROSS, DENSE)[d % 3] if d % 16 == 15 else _RCP[d % 3],
        12: lambda d: (PRIME, PRIME, DENSE)[d % 3] if d % 16 == 15 else _RCP[d % 3],  # 1b_lyrics
    }.get(attn_order)


def attention_pattern(attn_order: int, depth: int) -> List[int]:
    """Attention type of each of `depth` layers for the original's `attn_order` (0-12)."""
    fn = _order_fn(attn_order)
    if fn is None:
        raise ValueError(f"attn_order {attn_order!r} is not one of the original's orders 0-12")
    return [fn(d) for d in range(depth)]


def lyric_attention_layers(attn_order: int, depth: int) -> Tuple[int, ...]:
    """The layers that attend to the lyrics: cross-attention (type 6, to a separate lyric encoder) and prime
    attention (type 7, within one encoder-decoder sequence). Only these can align lyrics with music."""
    return tuple(i for i, f in enumerate(attention_pattern(attn_order, depth)) if f in (CROSS, PRIME))


@functools.lru_cache(maxsize=None)
def order_period(attn_order: int) -> int:
    """Smallest p with pattern[d] == pattern[d + p] for every d: the unit a layer scan repeats.

    3 for order 2, 10 for 8, 79 for 10, and 48 for 11 and 12 (the d % 16 == 15 layers cycle through
    [7, 7, 0] with d % 3, so the original's `attn_cycle` of 16 is not a period of the types).
    """
    fn = _order_fn(attn_order)
    if fn is None:
        raise ValueError(f"attn_order {attn_order!r} is not one of the original's orders 0-12")
    horizon = 4 * 79 * 48
    return next(p for p in range(1, horizon) if all(fn(d) == fn(d + p) for d in range(horizon)))


# ------------------------------------------------------------------------------------------------------------
# Masks (True = visible). Built from iotas so XLA fuses them instead of embedding L x L constants.

def causal_mask(q_len: int, kv_len: int, offset: int = 0) -> jax.Array:
    """`ones(q_len, kv_len).tril(offset)`: query i sees key j iff j <= i + offset."""
    return jnp.arange(kv_len)[None, :] <= jnp.arange(q_len)[:, None] + offset


def summary_mask(n_ctx: int, blocks: int, spread: int) -> jax.Array:
    """Original 'summary' mask over the (blocks * spread) summary keys built by `summary_spread_attn`.

    Slot (b, s) of block b >= 1 holds position (b-1)*block_ctx + block_ctx - spread + s; the `spread` slots of
    b = 0 are the zero keys and always visible.
    """
    block_ctx = n_ctx // blocks
    slot = jnp.arange(blocks * spread)
    b, s = slot // spread, slot % spread
    pos = (b - 1) * block_ctx + block_ctx - spread + s
    return (b[None, :] == 0) | (pos[None, :] <= jnp.arange(n_ctx)[:, None])


# ------------------------------------------------------------------------------------------------------------
# The attend step shared by every type (and by cached decoding).

def split_heads(x: jax.Array, n_head: int) -> jax.Array:
    """(..., T, n_state) -> (..., T, heads, head_dim)."""
    return x.reshape(*x.shape[:-1], n_head, x.shape[-1] // n_head)


def merge_heads(x: jax.Array) -> jax.Array:
    """(..., T, heads, head_dim) -> (..., T, n_state)."""
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: Optional[jax.Array], *, n_head: int) -> jax.Array:
    """Masked multi-head softmax attention: q (..., Tq, n_state), k and v (..., Tk, n_state).

    `mask` (True = visible) broadcasts against the scores (..., heads, Tq, Tk); None attends everywhere.
    As the original in training: q and k are each scaled by head_dim**-0.25, scores and softmax are fp32, and
    masked scores are replaced by -1e9 (what `w*mask - 1e9*(1-mask)` gives), so a row of masked scores still
    normalises. The scores accumulate in fp32 even for bf16/fp16 inputs (the original multiplies in fp16).
    """
    scale = (q.shape[-1] // n_head) ** -0.25
    qh = split_heads(q * scale, n_head)
    kh = split_heads(k * scale, n_head)
    w = jnp.einsum("...qhd,...khd->...hqk", qh, kh, preferred_element_type=jnp.float32)
    if mask is not None:
        w = jnp.where(mask, w, jnp.float32(-1e9))
    p = jax.nn.softmax(w, axis=-1).astype(v.dtype)
    a = jnp.einsum("...hqk,...khd->...qhd", p, split_heads(v, n_head))
    return merge_heads(a)


# ------------------------------------------------------------------------------------------------------------
# Teacher-forced layouts, one per type. q, k, v: (N, L, n_state) for the full sequence; output (N, L, n_state).

def dense_attn(q, k, v, *, n_head):
    return attend(q, k, v, causal_mask(q.shape[1], k.shape[1]), n_head=n_head)


def _blocked(x, blocks):
    n, l, d = x.shape
    return x.reshape(n, blocks, l // blocks, d)


def block_attn(q, k, v, *, n_head, blocks):
    n, l, d = q.shape
    block_ctx = l // blocks
    a = attend(_blocked(q, blocks), _blocked(k, blocks), _blocked(v, blocks), causal_mask(block_ctx, block_ctx),
               n_head=n_head)
    return a.reshape(n, l, d)


def transpose_block_attn(q, k, v, *, n_head, blocks):
    n, l, d = q.shape
    col = lambda x: _blocked(x, blocks).swapaxes(1, 2)  # (N, block_ctx, blocks, d): one row per column
    a = attend(col(q), col(k), col(v), causal_mask(blocks, blocks), n_head=n_head)
    return a.swapaxes(1, 2).reshape(n, l, d)


def prev_block_attn(q, k, v, *, n_head, blocks):
    n, l, d = q.shape
    # Block b attends to block b-1 unmasked; block 0 attends to block_ctx zero keys (output exactly 0).
    prev = lambda x: jnp.pad(_blocked(x, blocks)[:, :-1], ((0, 0), (1, 0), (0, 0), (0, 0)))
    a = attend(_blocked(q, blocks), prev(k), prev(v), None, n_head=n_head)
    return a.reshape(n, l, d)


def summary_spread_attn(q, k, v, *, n_head, blocks, spread):
    n, l, d = q.shape
    # The last `spread` positions of blocks 0..blocks-2, behind `spread` zero keys: (N, blocks * spread, d).
    summ = lambda x: jnp.pad(_blocked(x, blocks)[:, :-1, -spread:],
                             ((0, 0), (1, 0), (0, 0), (0, 0))).reshape(n, blocks * spread, d)
    return attend(q, summ(k), summ(v), summary_mask(l, blocks, spread), n_head=n_head)


def summary_attn(q, k, v, *, n_head, blocks):
    return summary_spread_attn(q, k, v, n_head=n_head, blocks=blocks, spread=1)


def prime_attn(q, k, v, *, n_head, prime_attn_len):
    # Keys are the first prime_attn_len positions (lyrics + the start of the music), causal ('prime' mask).
    k, v = k[:, :prime_attn_len], v[:, :prime_attn_len]
    return attend(q, k, v, causal_mask(q.shape[1], prime_attn_len), n_head=n_head)


def cross_attn(q, k, v, *, n_head):
    # k, v come from the encoder states (c_enc_kv); every query sees all of them.
    return attend(q, k, v, None, n_head=n_head)


def factored_attention(attn_func: int, q: jax.Array, k: jax.Array, v: jax.Array, *, n_head: int,
                       blocks: Optional[int] = None, spread: Optional[int] = None,
                       prime_attn_len: Optional[int] = None) -> jax.Array:
    """Teacher-forced attention of type `attn_func` over full-length q, k, v (k, v: encoder length for 6)."""
    if attn_func == DENSE:
        return dense_attn(q, k, v, n_head=n_head)
    if attn_func == BLOCK:
        return block_attn(q, k, v, n_head=n_head, blocks=blocks)
    if attn_func == TRANSPOSE_BLOCK:
        return transpose_block_attn(q, k, v, n_head=n_head, blocks=blocks)
    if attn_func == PREV_BLOCK:
        return prev_block_attn(q, k, v, n_head=n_head, blocks=blocks)
    if attn_func == SUMMARY:
        return summary_attn(q, k, v, n_head=n_head, blocks=blocks)
    if attn_func == SUMMARY_SPREAD:
        return summary_spread_attn(q, k, v, n_head=n_head, blocks=blocks, spread=spread)
    if attn_func == CROSS:
        return cross_attn(q, k, v, n_head=n_head)
    if attn_func == PRIME:
        return prime_attn(q, k, v, n_head=n_head, prime_attn_len=prime_attn_len)
    raise ValueError(f"attn_func {attn_func!r} is not one of the attention types 0-7")
