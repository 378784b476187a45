"""The prior's transformer stack (original `transformer/transformer.py`, `factored_attention.py`, `ops.py`).

Parameter tree (unscanned) vs the original state dict, a pure rename (`.w` -> `kernel` is already (in, out)):

    _attn_mods_{d}/attn/c_attn/{kernel,bias}    <- _attn_mods.{d}.attn.c_attn.{w,b}
    _attn_mods_{d}/attn/c_enc_kv/{kernel,bias}  <- _attn_mods.{d}.attn.c_enc_kv.{w,b}   (type-6 layers only)
    _attn_mods_{d}/attn/c_proj/{kernel,bias}    <- _attn_mods.{d}.attn.c_proj.{w,b}
    _attn_mods_{d}/mlp/c_fc/{kernel,bias}       <- _attn_mods.{d}.mlp.c_fc.{w,b}
    _attn_mods_{d}/mlp/c_proj/{kernel,bias}     <- _attn_mods.{d}.mlp.c_proj.{w,b}
    _attn_mods_{d}/ln_{0,1}/{scale,bias}        <- _attn_mods.{d}.ln_{0,1}.{weight,bias}

With `scan`, the layers are grouped (`layer_groups`): a run of `reps` > 1 repeats of a short unit of attention
types starting at layer s is one `nn.scan`, its params `_attn_scan_{s}/_attn_mods_{j}/...` holding layers
d = s + r * len(unit) + j (r < reps) stacked on a leading "layers" axis; every other layer keeps its
`_attn_mods_{d}/...` as above. The decoder's scanned caches use the same groups and names. `stack_layers` /
`unstack_layers` / `restack_like` convert between the layouts; `unstack_layers` also reads the earlier
scanned layout `_attn_period/_attn_mods_{j}/...` (layers d = r * P + j for the pattern's period P), which only
existed for depths P divides.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jukejax.parallel import constrain_activations
from jukejax.prior import attention as attn_lib
from jukejax.prior.attention import CROSS
from jukejax.prior.config import TransformerConfig


def quick_gelu(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(1.702 * x)


def flat_dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers, *args, **kwargs) -> jax.Array:
    """`lax.dot_general` for a dense layer, (..., in) x (in, out), computed on (prod(...), in).

    Same numbers; the point is the backward pass: the kernel gradient then contracts one dimension instead of
    (batch, time), which XLA's CPU backend runs ~2.4x faster (62 vs 148 ms for (2, 2048, 512) x (512, 2048)).
    """
    (contract_l, contract_r), (batch_l, batch_r) = dimension_numbers
    if lhs.ndim <= 2 or batch_l or batch_r or tuple(contract_l) != (lhs.ndim - 1,) or tuple(contract_r) != (0,):
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, *args, **kwargs)
    flat = jax.lax.dot_general(lhs.reshape(-1, lhs.shape[-1]), rhs, (((1,), (0,)), ((), ())), *args, **kwargs)
    return flat.reshape(*lhs.shape[:-1], *rhs.shape[1:])


def _logical(init, axes):
    return nn.with_logical_partitioning(init, axes)


def conv1d(features: int, axes: Tuple[str, str], config: TransformerConfig, zero_out: bool = False,
           name: Optional[str] = None) -> nn.Dense:
    """The original `Conv1D(n_in, n_out)`: an affine map with weight (in, out), N(0, 0.02*init_scale) or zeros."""
    init = nn.initializers.zeros if zero_out else nn.initializers.normal(0.02 * config.init_scale)
    return nn.Dense(features, dtype=config.compute_dtype, param_dtype=jnp.float32,
                    kernel_init=_logical(init, axes), bias_init=_logical(nn.initializers.zeros, axes[1:]),
                    dot_general=flat_dot_general, name=name)


def layer_norm(name: str) -> nn.LayerNorm:
    # eps 1e-5, statistics and affine in fp32 (original `LayerNorm.forward(input.float())`); two-pass variance
    # like torch.
    return nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, param_dtype=jnp.float32, use_fast_variance=False,
                        scale_init=_logical(nn.initializers.ones, ("embed",)),
                        bias_init=_logical(nn.initializers.zeros, ("embed",)), name=name)


class FactoredAttention(nn.Module):
    """One attention layer of type `attn_func`: projections + a factorised attend step.

    `qkv` and `project_out` are separate methods so a cached decoder can reuse them around its own attend.
    """
    config: TransformerConfig
    attn_func: int
    zero_out: bool = False

    def setup(self):
        c = self.config
        if self.attn_func == CROSS:
            self.c_attn = conv1d(c.n_state, ("embed", "heads"), c)
            self.c_enc_kv = conv1d(2 * c.n_state, ("embed", "heads"), c)
        else:
            self.c_attn = conv1d(3 * c.n_state, ("embed", "heads"), c)
        self.c_proj = conv1d(c.width, ("heads", "embed"), c, zero_out=self.zero_out)

    def qkv(self, x: jax.Array, encoder_kv: Optional[jax.Array] = None):
        """q (N, T, n_state) from x; k, v from x, or from encoder_kv (N, encoder_dims, width) for type 6."""
        if self.attn_func == CROSS:
            if encoder_kv is None:
                raise ValueError("a cross-attention (type 6) layer needs encoder_kv")
            k, v = jnp.split(self.c_enc_kv(encoder_kv.astype(x.dtype)), 2, axis=-1)
            return self.c_attn(x), k, v
        if encoder_kv is not None:
            raise ValueError(f"attention type {self.attn_func} takes no encoder_kv")
        q, k, v = jnp.split(self.c_attn(x), 3, axis=-1)
        return q, k, v

    def attend(self, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        c = self.config
        return attn_lib.factored_attention(self.attn_func, q, k, v, n_head=c.heads, blocks=c.blocks,
                                           spread=c.spread, prime_attn_len=c.prime_attn_len)

    def project_out(self, a: jax.Array) -> jax.Array:
        return self.c_proj(a)

    def query(self, x: jax.Array) -> jax.Array:
        """q alone: a cached cross-attention (type 6) layer has its encoder K/V already projected."""
        if self.attn_func == CROSS:
            return self.c_attn(x)
        return self.qkv(x)[0]

    def encoder_kv_proj(self, encoder_kv: jax.Array) -> Tuple[jax.Array, jax.Array]:
        """k, v of a type-6 layer from encoder_kv, as `qkv` computes them (in the compute dtype)."""
        k, v = jnp.split(self.c_enc_kv(encoder_kv.astype(self.config.compute_dtype)), 2, axis=-1)
        return k, v

    def attention_probs(self, q: jax.Array, k: jax.Array) -> jax.Array:
        """Softmax probabilities (N, heads, T, K) fp32 of a dense (0), cross (6) or prime (7) layer over
        full-length q and k: what the original's `record_attn` stores for lyric alignment (`self.w`), computed
        as `attn_lib.attend` does (q and k each scaled by head_dim**-0.25, masked scores -1e9). A prime layer's
        keys are its first prime_attn_len positions."""
        c = self.config
        if self.attn_func == CROSS:
            mask = None
        elif self.attn_func == attn_lib.PRIME:
            k = k[:, :c.prime_attn_len]
            mask = attn_lib.causal_mask(q.shape[1], k.shape[1])
        elif self.attn_func == attn_lib.DENSE:
            mask = attn_lib.causal_mask(q.shape[1], k.shape[1])
        else:
            raise ValueError(f"attention probabilities are kept for dense, cross and prime layers (types 0, 6, "
                             f"7), not type {self.attn_func}")
        scale = c.head_dim ** -0.25
        w = jnp.einsum("nqhd,nkhd->nhqk", attn_lib.split_heads(q * scale, c.heads),
                       attn_lib.split_heads(k * scale, c.heads), preferred_element_type=jnp.float32)
        if mask is not None:
            w = jnp.where(mask, w, jnp.float32(-1e9))
        return jax.nn.softmax(w, axis=-1)

    def __call__(self, x: jax.Array, encoder_kv: Optional[jax.Array] = None) -> jax.Array:
        if self.attn_func == CROSS and encoder_kv is not None and encoder_kv.shape[1] != self.config.encoder_dims:
            raise ValueError(f"encoder_kv has length {encoder_kv.shape[1]}, expected encoder_dims "
                             f"{self.config.encoder_dims}")
        if self.attn_func != CROSS and x.shape[1] != self.config.n_ctx:
            raise ValueError(f"the teacher-forced pass needs the full n_ctx {self.config.n_ctx} positions, "
                             f"got {x.shape[1]}")
        return self.project_out(self.attend(*self.qkv(x, encoder_kv)))


class MLP(nn.Module):
    config: TransformerConfig
    zero_out: bool = False

    def setup(self):
        c = self.config
        self.c_fc = conv1d(c.n_mlp, ("embed", "mlp"), c)
        self.c_proj = conv1d(c.width, ("mlp", "embed"), c, zero_out=self.zero_out)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.c_proj(quick_gelu(self.c_fc(x)))


class ResAttnBlock(nn.Module):
    """Pre-LN block: `a = attn(ln_0(x))`, `m = mlp(ln_1(x + a))`, `x + a + m` (or `x + res_scale*(a + m)`)."""
    config: TransformerConfig
    attn_func: int

    def setup(self):
        c = self.config
        zero_out = c.zero_out or self.attn_func == CROSS  # original forces zero_out on type-6 layers
        self.attn = FactoredAttention(c, self.attn_func, zero_out=zero_out)
        self.ln_0 = layer_norm("ln_0")
        self.mlp = MLP(c, zero_out=zero_out)
        self.ln_1 = layer_norm("ln_1")

    @property
    def res_scale(self) -> float:
        return 1.0 / self.config.depth if self.config.res_scale else 1.0

    def norm(self, ln: nn.LayerNorm, x: jax.Array) -> jax.Array:
        return ln(x.astype(jnp.float32)).astype(x.dtype)

    def residual(self, x: jax.Array, a: jax.Array) -> jax.Array:
        """The rest of the block once the attention output `a` is known (shared with cached decoding)."""
        m = self.mlp(self.norm(self.ln_1, x + a))
        if self.res_scale == 1.0:
            return x + a + m
        return x + self.res_scale * (a + m)

    def __call__(self, x: jax.Array, encoder_kv: Optional[jax.Array] = None) -> jax.Array:
        return self.residual(x, self.attn(self.norm(self.ln_0, x), encoder_kv))

    # Cached decoding (jukejax.sample) runs a block in two halves around its own cache-reading attend.
    def attn_qkv(self, x: jax.Array, encoder_kv: Optional[jax.Array] = None):
        """ln_0 then the attention projections: q, k, v (k, v from encoder_kv for type 6)."""
        return self.attn.qkv(self.norm(self.ln_0, x), encoder_kv)

    def attn_query(self, x: jax.Array) -> jax.Array:
        """ln_0 then q alone (type-6 layers while sampling: the encoder K/V are cached)."""
        return self.attn.query(self.norm(self.ln_0, x))

    def attn_encoder_kv(self, encoder_kv: jax.Array) -> Tuple[jax.Array, jax.Array]:
        """k, v of a type-6 layer, computed once per window while sampling."""
        return self.attn.encoder_kv_proj(encoder_kv)

    def attn_probs(self, x: jax.Array, encoder_kv: Optional[jax.Array] = None) -> jax.Array:
        """The block's attention probabilities (N, heads, T, K) for input x (lyric alignment)."""
        q, k, _ = self.attn_qkv(x, encoder_kv)
        return self.attn.attention_probs(q, k)

    def attn_residual(self, x: jax.Array, a: jax.Array) -> jax.Array:
        """The block's output from its input x and the attended values a (before c_proj)."""
        return self.residual(x, self.attn.project_out(a))


def layer_name(d: int) -> str:
    return f"_attn_mods_{d}"


class LayerGroup(NamedTuple):
    """Layers start + r * len(funcs) + j (r < reps, j < len(funcs)) have attention type funcs[j]; reps 1
    is one unrolled layer."""
    start: int
    funcs: Tuple[int, ...]
    reps: int

    @property
    def name(self) -> str:
        return layer_name(self.start) if self.reps == 1 else f"_attn_scan_{self.start}"

    @property
    def scanned(self) -> bool:
        return self.reps > 1


@functools.lru_cache(maxsize=None)
def _groups(funcs: Tuple[int, ...]) -> Tuple[LayerGroup, ...]:
    # Fewest layer bodies for the compiler to see: a scanned group costs its unit's length plus one (the
    # loop), an unrolled layer one. Dynamic programming over where the next group starts.
    n = len(funcs)
    best = [(0, ())] * (n + 1)
    for i in reversed(range(n)):
        options = [(best[i + 1][0] + 1, (LayerGroup(i, (funcs[i],), 1),) + best[i + 1][1])]
        for u in range(1, (n - i) // 2 + 1):
            unit, reps = funcs[i:i + u], 1
            while funcs[i + reps * u:i + (reps + 1) * u] == unit:
                reps += 1
                cost, rest = best[i + reps * u]
                options.append((cost + u + 1, (LayerGroup(i, unit, reps),) + rest))
        best[i] = min(options, key=lambda o: (o[0], len(o[1])))
    return best[0][1]


def layer_groups(config: TransformerConfig, scan: bool = False) -> Tuple[LayerGroup, ...]:
    """How the stack runs its layers: every layer on its own, or with scan=True repeated units scanned (fewest
    layer bodies to compile) and the rest one by one. Released orders: the upsamplers and 5b (order 2, 72
    layers) are one unit of 3 x 24; 1b_lyrics (order 12, 72) 21 layer bodies in 11 groups; 5b_lyrics (order
    10, 79) a unit of 3 x 3 and one of 10 x 7; its lyric encoder (order 2, 18) a unit of 3 x 6."""
    funcs = tuple(config.attn_funcs)
    if not scan:
        return tuple(LayerGroup(d, (f,), 1) for d, f in enumerate(funcs))
    return _groups(funcs)


class _UnitBlock(nn.Module):
    """One repeat of a group's unit of attention types, the body of its layer scan: (x, encoder_kv) -> (x, None)."""
    config: TransformerConfig
    attn_funcs: Tuple[int, ...]

    @nn.compact
    def __call__(self, x, encoder_kv):
        for j, f in enumerate(self.attn_funcs):
            x = ResAttnBlock(self.config, f, name=layer_name(j))(x, encoder_kv if f == CROSS else None)
            x = constrain_activations(x)
        return x, None


class Transformer(nn.Module):
    """`depth` ResAttnBlocks with per-layer attention types from `attn_order`. Returns fp32 hidden states."""
    config: TransformerConfig

    @nn.compact
    def __call__(self, x: jax.Array, encoder_kv: Optional[jax.Array] = None) -> jax.Array:
        c = self.config
        funcs = c.attn_funcs
        if CROSS in funcs and encoder_kv is None:
            raise ValueError(f"attn_order {c.attn_order} has cross-attention layers; pass encoder_kv "
                             f"(N, {c.encoder_dims}, {c.width})")
        if CROSS not in funcs:
            encoder_kv = None  # the original asserts None for non-cross layers; unused inputs are dropped
        x = x.astype(c.compute_dtype)
        block = nn.remat(ResAttnBlock) if c.remat else ResAttnBlock
        for g in layer_groups(c, c.scan):
            if g.scanned:
                body = nn.remat(_UnitBlock, prevent_cse=False) if c.remat else _UnitBlock
                scanned = nn.scan(body, variable_axes={"params": 0}, split_rngs={"params": True},
                                  in_axes=(nn.broadcast,), length=g.reps,
                                  metadata_params={nn.PARTITION_NAME: "layers"})
                x, _ = scanned(c, g.funcs, name=g.name)(x, encoder_kv)
            else:
                f = g.funcs[0]
                x = constrain_activations(block(c, f, name=g.name)(x, encoder_kv if f == CROSS else None))
        return x.astype(jnp.float32)  # original fp16_out=False


# ------------------------------------------------------------------------------------------------------------
# Param layouts: per layer {_attn_mods_d}, grouped for the scan {_attn_scan_s: {_attn_mods_j}, _attn_mods_d},
# and the earlier period-scanned {_attn_period: {_attn_mods_j}}, read for checkpoints written with it.

LEGACY_SCAN = "_attn_period"
_SCAN_GROUP = re.compile(r"^_attn_scan_(\d+)$")
_LAYER = re.compile(r"^_attn_mods_(\d+)$")


def _np_stack(xs):
    return np.stack([np.asarray(a) for a in xs])


def _row(a, r: int):
    return a[r]


def _leading(tree) -> int:
    return jax.tree.leaves(tree)[0].shape[0]


def is_layer_stack(tree: Any) -> bool:
    """Whether `tree` is a transformer's layer params in any layout (a dict of `_attn_mods_*`, `_attn_scan_*`
    or `_attn_period`)."""
    return (hasattr(tree, "keys") and len(tree) > 0
            and all(isinstance(k, str) and (_LAYER.match(k) or _SCAN_GROUP.match(k) or k == LEGACY_SCAN)
                    for k in tree.keys()))


def stack_depth(stack: Dict[str, Any]) -> int:
    """Number of layers of a layer stack in any layout."""
    return sum(len(ds) for name, entry in stack.items() for ds in _members(name, entry))


def stack_layers(layers: Dict[str, Any], config: TransformerConfig,
                 stack: Callable = _np_stack) -> Dict[str, Any]:
    """Per-layer params {_attn_mods_d: ...} (or any layout `unstack_layers` reads) -> the scanned layout of
    `layer_groups(config, scan=True)`; `stack(list of leaves)` makes one stacked leaf."""
    layers = unstack_layers(layers)
    out = {}
    for g in layer_groups(config, scan=True):
        if not g.scanned:
            out[g.name] = layers[g.name]
            continue
        unit = len(g.funcs)
        out[g.name] = {layer_name(j): jax.tree.map(lambda *xs: stack(list(xs)),
                                                   *[layers[layer_name(g.start + r * unit + j)] for r in range(g.reps)])
                       for j in range(unit)}
    return out


def _members(name: str, entry: Any) -> Tuple[Tuple[int, ...], ...]:
    """The layers a stack entry holds: [j][r] = layer d of `entry[_attn_mods_j]` at repeat r (one layer, d, for
    an unstacked `_attn_mods_d`)."""
    if _LAYER.match(name):
        return ((int(name[len("_attn_mods_"):]),),)
    reps, unit = _leading(entry), len(entry)
    if name == LEGACY_SCAN:
        return tuple(tuple(r * unit + j for r in range(reps)) for j in range(unit))
    start = int(_SCAN_GROUP.match(name).group(1))
    return tuple(tuple(start + r * unit + j for r in range(reps)) for j in range(unit))


def unstack_layers(params: Dict[str, Any], index: Callable = _row) -> Dict[str, Any]:
    """Per-layer params {_attn_mods_d: ...} from any layout: as they are, scanned (`_attn_scan_s`), or the earlier
    period-scanned `_attn_period`. The layout is read from the names and the stacked leaves' leading
    dimension; `index(leaf, r)` takes repeat r of a stacked leaf."""
    out = {}
    for name, entry in params.items():
        if _LAYER.match(name):
            out[name] = entry
            continue
        for j, layers in enumerate(_members(name, entry)):
            for r, d in enumerate(layers):
                out[layer_name(d)] = jax.tree.map(lambda a, r=r: index(a, r), entry[layer_name(j)])
    return dict(sorted(out.items(), key=lambda kv: int(kv[0][len("_attn_mods_"):])))


def restack_like(params: Dict[str, Any], like: Dict[str, Any], stack: Callable = _np_stack,
                 index: Callable = _row) -> Dict[str, Any]:
    """`params` (any layout) in the layout of `like` (a layer stack of any layout, e.g. of shapes)."""
    layers = unstack_layers(params, index)
    out = {}
    for name, entry in like.items():
        if _LAYER.match(name):
            out[name] = layers[name]
            continue
        out[name] = {layer_name(j): jax.tree.map(lambda *xs: stack(list(xs)), *[layers[layer_name(d)] for d in ds])
                     for j, ds in enumerate(_members(name, entry))}
    return out


def abstract_stack(xs) -> jax.ShapeDtypeStruct:
    """`stack` for `restack_like`/`relayout` over shapes: the stacked leaf, placed as its layers were with the
    new leading (repeats) axis whole."""
    x, sharding = xs[0], getattr(xs[0], "sharding", None)
    if not isinstance(sharding, jax.sharding.NamedSharding):
        sharding = None
    else:
        sharding = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(None, *sharding.spec))
    return jax.ShapeDtypeStruct((len(xs),) + tuple(x.shape), x.dtype, sharding=sharding)


def abstract_index(x, r: int) -> jax.ShapeDtypeStruct:
    """`index` for `restack_like`/`relayout` over shapes: one repeat of a stacked leaf."""
    sharding = getattr(x, "sharding", None)
    if not isinstance(sharding, jax.sharding.NamedSharding):
        sharding = None
    else:
        sharding = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*sharding.spec[1:]))
    return jax.ShapeDtypeStruct(tuple(x.shape[1:]), x.dtype, sharding=sharding)


def layer_stacks(tree: Any) -> Dict[Tuple[str, ...], Any]:
    """{path: layer stack} of every transformer layer stack in `tree`; a path's keys are strings, as a
    checkpoint's metadata names them (dict keys, attribute names, sequence indices)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_layer_stack)[0]:
        if is_layer_stack(leaf):
            out[_path_names(path)] = leaf
    return out


def _path_names(path) -> Tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def relayout(tree: Any, like: Any, stack: Callable = _np_stack, index: Callable = _row) -> Any:
    """`tree` (params, a train state, or a restore target of `jax.ShapeDtypeStruct`s with `abstract_stack` /
    `abstract_index`) with each transformer layer stack in the layout its counterpart at the same path of
    `like` (e.g. a checkpoint's metadata tree, any container types) has. Stacks that `like` lacks or holds in
    the same layout, or with another number of layers, are kept; `tree` itself is returned when all are."""
    saved_stacks = layer_stacks(like)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_layer_stack)
    out, changed = [], False
    for path, leaf in leaves:
        like = saved_stacks.get(_path_names(path))
        if (is_layer_stack(leaf) and like is not None and set(like) != set(leaf)
                and stack_depth(like) == stack_depth(leaf)):
            leaf, changed = restack_like(leaf, like, stack, index), True
        out.append(leaf)
    return treedef.unflatten(out) if changed else tree
