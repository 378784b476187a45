"""Typed, frozen hyperparameters of the prior transformer and its autoregressive wrapper.

Field names are the original `hparams.py` / `ConditionalAutoregressive2D` keyword names,
so a released model's hps map onto these one to one:

| original (`prior_kwargs`)            | here                               |
|--------------------------------------|------------------------------------|
| `input_shape` (n_ctx,)               | `n_ctx` (n_tokens + n_ctx for the single enc-dec 1b model) |
| `bins`                               | `bins` (n_vocab + l_bins for the single enc-dec 1b model)  |
| `width, depth, heads`                | same                               |
| `attn_order, blocks, spread`         | same                               |
| `m_attn, m_mlp, init_scale`          | same                               |
| `zero_out, res_scale`                | same                               |
| `x_cond, y_cond, merged_decoder`     | same                               |
| `only_encode, encoder_dims`          | same                               |
| `prime_len`                          | same (= n_tokens for single enc-dec; type-7 layers see `prime_attn_len`) |

`mask=True` is implied: every released prior is causal, and a non-causal block layer is not the model.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import jax.numpy as jnp

from jukejax.config import ConfigError

from jukejax.prior.attention import (BLOCK_TYPES, CROSS, PRIME, SUMMARY_SPREAD, attention_pattern,
                                     order_period)

_DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransformerConfig:
    """The stack of `ResAttnBlock`s (`transformer/transformer.py::Transformer`)."""
    n_ctx: int                      # sequence length the stack sees (positions, not audio samples)
    width: int = 128
    depth: int = 2
    heads: int = 1
    attn_order: int = 0
    blocks: Optional[int] = None    # the sequence is viewed as [blocks, n_ctx // blocks]
    spread: Optional[int] = None    # only attention type 5 (summary-spread)
    m_attn: float = 0.25            # attention state width = m_attn * width
    m_mlp: float = 1.0              # MLP hidden width = m_mlp * width
    init_scale: float = 1.0
    zero_out: bool = False          # zero c_proj at init (forced on for cross-attention layers)
    res_scale: bool = False         # residual branches scaled by 1/depth
    encoder_dims: int = 0           # length of encoder_kv attended by type-6 layers (5b_lyrics: n_tokens)
    prime_len: Optional[int] = None  # lyric prefix length of the single enc-dec model (type 7, sep loss)
    dtype: str = "float32"          # compute dtype; params stay fp32, LayerNorm and softmax run in fp32
    remat: bool = False             # rematerialise each block in the backward pass (original checkpoint_res=1)
    scan: bool = False              # one nn.scan per repeated unit of attention types (`transformer.layer_groups`)

    def __post_init__(self):
        for name in ("n_ctx", "width", "depth", "heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"prior.{name} is {value!r}; expected a positive integer")
        for name in ("m_attn", "m_mlp", "init_scale"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"prior.{name} is {getattr(self, name)!r}; expected a positive number")
        for name in ("zero_out", "res_scale", "remat", "scan"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"prior.{name} is {getattr(self, name)!r}; expected true or false")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"prior.dtype {self.dtype!r} must be one of {', '.join(_DTYPES)}")
        try:
            pattern = attention_pattern(self.attn_order, self.depth)
        except ValueError as e:
            raise ConfigError(f"prior.attn_order: {e}") from None
        if self.n_state <= 0 or self.n_state % self.heads:
            raise ConfigError(f"prior.heads {self.heads} must divide the attention width "
                              f"int(m_attn * width) = {self.n_state}")
        if self.n_mlp <= 0:
            raise ConfigError(f"prior.m_mlp {self.m_mlp} gives an empty MLP for width {self.width}")
        types = set(pattern)
        if types & BLOCK_TYPES:
            if self.blocks is None or self.blocks <= 0:
                raise ConfigError(f"prior.blocks is {self.blocks!r}; attn_order {self.attn_order} uses factorised "
                                  f"attention types {sorted(types & BLOCK_TYPES)} and needs a positive blocks")
            if self.n_ctx % self.blocks:
                raise ConfigError(f"prior.blocks {self.blocks} must divide n_ctx {self.n_ctx}")
        if SUMMARY_SPREAD in types and not (self.spread and 0 < self.spread <= self.block_ctx):
            raise ConfigError(f"prior.spread is {self.spread!r}; attention type 5 needs 1 <= spread <= "
                              f"block_ctx {self.block_ctx}")
        if CROSS in types and self.encoder_dims <= 0:
            raise ConfigError(f"prior.encoder_dims is {self.encoder_dims}; attn_order {self.attn_order} has "
                              f"cross-attention layers and needs the encoder length")
        if PRIME in types:
            if self.prime_len is None or self.prime_len <= 0:
                raise ConfigError(f"prior.prime_len is {self.prime_len!r}; attn_order {self.attn_order} has "
                                  f"prime-attention layers and needs the lyric prefix length")
            if self.prime_attn_len > self.n_ctx:
                raise ConfigError(f"prior.prime_len {self.prime_len} gives a prime-attention length "
                                  f"{self.prime_attn_len} longer than n_ctx {self.n_ctx}")
        if self.prime_len is not None and not 0 < self.prime_len < self.n_ctx:
            raise ConfigError(f"prior.prime_len {self.prime_len} must lie in (0, n_ctx={self.n_ctx})")

    @property
    def n_state(self) -> int:
        """Width of q, k and v (original `int(m_attn * n_in)`)."""
        return int(self.m_attn * self.width)

    @property
    def n_mlp(self) -> int:
        return int(self.m_mlp * self.width)

    @property
    def head_dim(self) -> int:
        return self.n_state // self.heads

    @property
    def block_ctx(self) -> Optional[int]:
        return None if self.blocks is None else self.n_ctx // self.blocks

    @property
    def prime_attn_len(self) -> Optional[int]:
        """Keys a prime-attention layer sees: `(prime_len // blocks + 1) * blocks` (original `_prime_len`)."""
        if self.prime_len is None or self.blocks is None:
            return None
        return (self.prime_len // self.blocks + 1) * self.blocks

    @property
    def attn_funcs(self) -> Tuple[int, ...]:
        """Attention type of each layer."""
        return tuple(attention_pattern(self.attn_order, self.depth))

    @property
    def period(self) -> int:
        """Period of the attn_order's layer types."""
        return order_period(self.attn_order)

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AutoregressiveConfig(TransformerConfig):
    """`ConditionalAutoregressive2D`: token embedding, shift, position embedding, transformer, output head."""
    bins: int                       # vocabulary size
    x_cond: bool = False            # an (N, n_ctx, w) or (N, 1, w) condition is added (upsampler / timing)
    y_cond: bool = False            # position 0 holds the (N, 1, w) label embedding instead of start_token
    merged_decoder: bool = False    # 5b models: x_cond not added after the stack and x_out not tied
    only_encode: bool = False       # 5b_lyrics lyric encoder: return hidden states, no x_out

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or self.bins <= 0:
            raise ConfigError(f"prior.bins is {self.bins!r}; expected a positive integer")
        for name in ("x_cond", "y_cond", "merged_decoder", "only_encode"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"prior.{name} is {getattr(self, name)!r}; expected true or false")

    @property
    def tied_output(self) -> bool:
        """x_out shares x_emb's weight unless merged_decoder (original `share_x_emb_x_out`)."""
        return not self.merged_decoder

    @property
    def add_cond_after_transformer(self) -> bool:
        return not self.merged_decoder
