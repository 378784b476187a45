"""The prior's transformer stack (original `transformer/transformer.py`, `factored_attention.py`, `ops.py`).

Parameter tree (unscanned) vs the original state dict, a pure rename (`.w` -> `kernel` is already (in, out)):

    _attn_mods_{d}/attn/c_attn/{kernel,bias}    <- _attn_mods.{d}.attn.c_attn.{w,b}
    _attn_mods_{d}/attn/c_enc_kv/{kernel,bias}  <- _attn_mods.{d}.attn.c_enc_kv.{w,b}   (type-6 layers only)
    _attn_mods_{d}/attn/c_proj/{kernel,bias}    <- _attn_mods.{d}.attn.c_proj.{w,b}
    _attn_mods_{d}/mlp/c_fc/{kernel,bias}       <- _attn_mods.{d}.mlp.c_fc.{w,b}
    _attn_mods_{d}/mlp/c_proj/{kernel,bias}     <- _attn_mods.{d}.mlp.c_proj.{w,b}
    _attn_mods_{d}/ln_{0,1}/{scale,bias}        <- _attn_mods.{d}.ln_{0,1}.{weight,bias}

With `scan`, the layers are grouped by the period P of the attention pattern: `_attn_period/_attn_mods_{j}/...`
holds layers d = r*P + j stacked on a leading "layers" axis (`stack_layers` / `unstack_layers` convert).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

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


class _PeriodBlock(nn.Module):
    """One period of the attention pattern, the body of the layer scan: (x, encoder_kv) -> (x, None)."""
    config: TransformerConfig
    attn_funcs: Tuple[int, ...]

    @nn.compact
    def __call__(self, x, encoder_kv):
        for j, f in enumerate(self.attn_funcs):
            x = ResAttnBlock(self.config, f, name=f"_attn_mods_{j}")(x, encoder_kv if f == CROSS else None)
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
        if c.scan:
            period = c.period
            body = nn.remat(_PeriodBlock, prevent_cse=False) if c.remat else _PeriodBlock
            scanned = nn.scan(body, variable_axes={"params": 0}, split_rngs={"params": True},
                              in_axes=(nn.broadcast,), length=c.depth // period,
                              metadata_params={nn.PARTITION_NAME: "layers"})
            x, _ = scanned(c, tuple(funcs[:period]), name="_attn_period")(x, encoder_kv)
        else:
            block = nn.remat(ResAttnBlock) if c.remat else ResAttnBlock
            for d, f in enumerate(funcs):
                x = constrain_activations(block(c, f, name=f"_attn_mods_{d}")(x, encoder_kv if f == CROSS else None))
        return x.astype(jnp.float32)  # original fp16_out=False


def stack_layers(params: Dict[str, Any], config: TransformerConfig) -> Dict[str, Any]:
    """Unscanned transformer params {_attn_mods_d: ...} -> the scanned layout {_attn_period: {_attn_mods_j}}."""
    period, reps = config.period, config.depth // config.period
    period_params = {}
    for j in range(period):
        layers = [params[f"_attn_mods_{r * period + j}"] for r in range(reps)]
        period_params[f"_attn_mods_{j}"] = jax.tree.map(lambda *xs: np.stack([np.asarray(a) for a in xs]),
                                                        *layers)
    return {"_attn_period": period_params}


def unstack_layers(params: Dict[str, Any], config: TransformerConfig) -> Dict[str, Any]:
    """Inverse of `stack_layers`."""
    period, reps = config.period, config.depth // config.period
    out = {}
    for j in range(period):
        stacked = params["_attn_period"][f"_attn_mods_{j}"]
        for r in range(reps):
            out[f"_attn_mods_{r * period + j}"] = jax.tree.map(lambda a: a[r], stacked)
    return out
