"""A whole prior of one level (the original `SimplePrior`): conditioners + autoregressive transformer + loss.

Sub-modules carry the original's attribute names (`prior`, `y_emb`, `conditioner_blocks_0`, `prime_prior`,
`prime_state_proj`, `prime_state_ln`, `prime_x_out`), so a released checkpoint maps onto it key by key.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from jukejax.config import ConfigError, VQVAEConfig, build
from jukejax.prior.attention import ATTN_NAMES, attention_pattern, lyric_attention_layers
from jukejax.prior.autoregressive import ConditionalAutoregressive, bits_per_token, get_sep_loss
from jukejax.prior.conditioners import (Conditioner, LabelConditioner, LabelConditionerConfig,
                                        UpsamplerConditionerConfig)
from jukejax.prior.config import AutoregressiveConfig
from jukejax.prior.labels import N_LABEL_FIELDS
from jukejax.prior.transformer import conv1d, flat_dot_general


@dataclasses.dataclass(frozen=True)
class PriorHParams:
    """The `prior` section of a config: the one definition of every prior setting and its default.

    Names and defaults are the original's (`jukebox/hparams.py`, `DEFAULTS` of `prior_attn_block`, `labels`,
    `prime_attn_block`, `cond_conv_block`, `sample`), plus `dtype` and `scan`, which are jukejax's. The
    ConfigDict section users override is made from these fields (`jukejax.config.config_section`), and
    `prior_config` derives the module configs from them.
    """
    level: int = 0
    n_ctx: int = 1024
    prior_width: int = 128
    prior_depth: int = 3
    heads: int = 1
    attn_order: int = 0
    blocks: Optional[int] = None
    spread: Optional[int] = None
    zero_out: bool = False
    res_scale: bool = False
    init_scale: float = 1.0
    m_attn: float = 0.25
    m_mlp: float = 1.0
    c_res: int = 0
    merged_decoder: bool = False
    single_enc_dec: bool = False
    labels: bool = True
    labels_v3: bool = False
    y_bins: Tuple[int, ...] = (120, 4111)
    t_bins: int = 128
    max_bow_genre_size: int = 5
    min_duration: float = 0.0
    max_duration: float = 600.0
    use_tokens: bool = False
    n_tokens: int = 0
    n_vocab: int = 80
    prime_loss_fraction: float = 0.0
    prime_width: int = 128
    prime_depth: int = 3
    prime_heads: int = 1
    prime_attn_order: int = 0
    prime_blocks: Optional[int] = None
    prime_init_scale: float = 1.0
    prime_m_attn: float = 0.25
    prime_m_mlp: float = 1.0
    prime_zero_out: bool = False
    prime_res_scale: bool = False
    prime_c_res: int = 0
    cond_width: int = 128
    cond_depth: int = 3
    cond_m_conv: float = 1.0
    cond_zero_out: bool = False
    cond_res_scale: bool = False
    cond_dilation_growth_rate: int = 1
    cond_dilation_cycle: Optional[int] = None
    cond_c_res: int = 0
    fp16_params: bool = False     # the original stored Conv1D weights in fp16 (5b, 5b_lyrics); jukejax keeps fp32
                                  # master params, and jukejax.embed rounds them as the original computed
    alignment_layer: Optional[int] = None
    alignment_head: Optional[int] = None
    dtype: str = "float32"        # compute dtype (bfloat16 for mixed precision); params stay fp32
    scan: bool = False            # nn.scan over repeated units of layers (the prior and its lyric encoder)


@dataclasses.dataclass(frozen=True)
class PriorConfig:
    """Everything a `Prior` needs, derived once from the hparams and the VQ-VAE (validated)."""
    hps: PriorHParams
    vqvae: VQVAEConfig
    transformer: AutoregressiveConfig
    labels: Optional[LabelConditionerConfig]
    upsampler: Optional[UpsamplerConditionerConfig]
    lyric_encoder: Optional[AutoregressiveConfig]

    @property
    def level(self) -> int:
        return self.hps.level

    @property
    def is_upsampler(self) -> bool:
        """Levels below the top are conditioned on the codes of the level above (original `x_cond`)."""
        return self.hps.level != self.vqvae.levels - 1

    @property
    def n_ctx(self) -> int:
        """Music tokens per window."""
        return self.hps.n_ctx

    @property
    def n_tokens(self) -> int:
        """Lyric tokens per window (0 without lyrics)."""
        return self.hps.n_tokens if self.hps.use_tokens else 0

    @property
    def raw_to_tokens(self) -> int:
        return self.vqvae.hop_lengths[self.hps.level]

    @property
    def sample_length(self) -> int:
        """Audio samples one window covers (original `make_prior`: n_ctx * raw_to_tokens)."""
        return self.n_ctx * self.raw_to_tokens

    @property
    def y_width(self) -> int:
        return N_LABEL_FIELDS + self.hps.max_bow_genre_size + self.n_tokens if self.hps.labels else 0

    @property
    def prime_loss_dims(self) -> int:
        return self.n_tokens

    @property
    def gen_loss_dims(self) -> int:
        return self.n_ctx

    @property
    def cond_length(self) -> int:
        """Upper-level tokens per window (upsamplers)."""
        return self.upsampler.input_length if self.upsampler else 0


def prior_config(config) -> PriorConfig:
    """Build and validate a `PriorConfig` from a full ConfigDict (`config.prior` + `config.vqvae`)."""
    hps = build(PriorHParams, config.get("prior"), "prior")
    vq = build(VQVAEConfig, config.get("vqvae"), "vqvae")
    if not 0 <= hps.level < vq.levels:
        raise ConfigError(f"prior.level {hps.level} must lie in [0, vqvae.levels={vq.levels})")
    is_upsampler = hps.level != vq.levels - 1
    n_tokens = hps.n_tokens if hps.use_tokens else 0
    if hps.use_tokens and n_tokens <= 0:
        raise ConfigError("prior.n_tokens must be positive when prior.use_tokens is true")
    if hps.single_enc_dec and not hps.use_tokens:
        raise ConfigError("prior.single_enc_dec needs prior.use_tokens (the lyric prefix)")
    if hps.use_tokens and not hps.labels:
        raise ConfigError("prior.use_tokens needs prior.labels: lyrics travel in the label vector y")
    labels = None
    if hps.labels:
        labels = LabelConditionerConfig(
            y_bins=tuple(hps.y_bins), max_bow_genre_size=hps.max_bow_genre_size, width=hps.prior_width,
            n_ctx=hps.n_ctx, include_time_signal=not is_upsampler, t_bins=hps.t_bins, sr=vq.sr,
            min_duration=hps.min_duration, max_duration=hps.max_duration, init_scale=hps.init_scale)
    upsampler = None
    if is_upsampler:
        upsampler = UpsamplerConditionerConfig.for_level(
            hps.level, vq.downs_t, vq.strides_t, bins=vq.l_bins, width=hps.prior_width, n_ctx=hps.n_ctx,
            cond_width=hps.cond_width, cond_depth=hps.cond_depth, cond_m_conv=hps.cond_m_conv,
            cond_dilation_growth_rate=hps.cond_dilation_growth_rate, cond_dilation_cycle=hps.cond_dilation_cycle,
            cond_zero_out=hps.cond_zero_out, cond_res_scale=hps.cond_res_scale, init_scale=hps.init_scale,
            remat=hps.cond_c_res > 0, dtype=hps.dtype)
    common = dict(width=hps.prior_width, depth=hps.prior_depth, heads=hps.heads, attn_order=hps.attn_order,
                  blocks=hps.blocks, spread=hps.spread, m_attn=hps.m_attn, m_mlp=hps.m_mlp,
                  init_scale=hps.init_scale, zero_out=hps.zero_out, res_scale=hps.res_scale,
                  merged_decoder=hps.merged_decoder, remat=hps.c_res > 0, dtype=hps.dtype, scan=hps.scan)
    lyric_encoder = None
    if hps.single_enc_dec:
        # One sequence: n_tokens lyric characters, then n_ctx music tokens shifted past the lyric vocabulary.
        transformer = AutoregressiveConfig(n_ctx=n_tokens + hps.n_ctx, bins=hps.n_vocab + vq.l_bins,
                                           x_cond=is_upsampler or hps.labels, y_cond=True, prime_len=n_tokens,
                                           **common)
    else:
        transformer = AutoregressiveConfig(n_ctx=hps.n_ctx, bins=vq.l_bins, x_cond=is_upsampler or hps.labels,
                                           y_cond=hps.labels, encoder_dims=n_tokens, **common)
        if n_tokens:
            lyric_encoder = AutoregressiveConfig(
                n_ctx=n_tokens, bins=hps.n_vocab, width=hps.prime_width, depth=hps.prime_depth,
                heads=hps.prime_heads, attn_order=hps.prime_attn_order, blocks=hps.prime_blocks,
                m_attn=hps.prime_m_attn, m_mlp=hps.prime_m_mlp, init_scale=hps.prime_init_scale,
                zero_out=hps.prime_zero_out, res_scale=hps.prime_res_scale, remat=hps.prime_c_res > 0,
                dtype=hps.dtype, scan=hps.scan, only_encode=True)
    check_alignment(hps)
    return PriorConfig(hps=hps, vqvae=vq, transformer=transformer, labels=labels, upsampler=upsampler,
                       lyric_encoder=lyric_encoder)


def check_alignment(hps: "PriorHParams") -> None:
    """`alignment_layer` / `alignment_head` name a lyric-attending layer and one of its heads (the original's
    `align.py` reads that head's attention probabilities; any other layer would align nothing)."""
    if hps.alignment_layer is None:
        return
    layer, head = hps.alignment_layer, hps.alignment_head
    if not 0 <= layer < hps.prior_depth:
        raise ConfigError(f"prior.alignment_layer {layer} must lie in [0, prior_depth={hps.prior_depth})")
    lyric_layers = lyric_attention_layers(hps.attn_order, hps.prior_depth)
    if layer not in lyric_layers:
        kind = ATTN_NAMES[attention_pattern(hps.attn_order, hps.prior_depth)[layer]]
        raise ConfigError(f"prior.alignment_layer {layer} is a {kind} layer; lyric alignment needs a cross- or "
                          f"prime-attention layer of attn_order {hps.attn_order}: {list(lyric_layers) or 'none'}")
    if head is None or not 0 <= head < hps.heads:
        raise ConfigError(f"prior.alignment_head {head} must lie in [0, heads={hps.heads})")


class Prior(nn.Module):
    """One level's prior. `__call__(z, z_cond, y)` -> (loss, metrics, logits) in the original's weighting."""
    config: PriorConfig

    def setup(self):
        c = self.config
        self.prior = ConditionalAutoregressive(c.transformer)
        if c.labels is not None:
            self.y_emb = LabelConditioner(c.labels)
        if c.upsampler is not None:
            self.conditioner_blocks_0 = Conditioner(c.upsampler)
        if c.lyric_encoder is not None:
            self.prime_prior = ConditionalAutoregressive(c.lyric_encoder)
            self.prime_state_proj = conv1d(c.transformer.width, ("mlp", "embed"), c.lyric_encoder)
            self.prime_state_ln = nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, use_fast_variance=False)
            self.prime_x_out = nn.Dense(c.hps.n_vocab, use_bias=False, dtype=jnp.float32,
                                        dot_general=flat_dot_general, kernel_init=nn.with_logical_partitioning(
                                            nn.initializers.normal(0.02 * c.hps.init_scale), ("embed", "vocab")))

    def get_cond(self, z_cond: Optional[jax.Array], y: Optional[jax.Array]):
        """(x_cond, y_cond, lyric tokens) as the original `get_cond`."""
        c = self.config
        y_cond = y_pos = prime = None
        if c.labels is not None:
            if y is None or y.shape[-1] != c.y_width:
                raise ValueError(f"y must have shape (N, {c.y_width}) = (N, 4 + max_bow_genre_size "
                                 f"{c.hps.max_bow_genre_size} + n_tokens {c.n_tokens}); got "
                                 f"{None if y is None else y.shape}")
            labels, prime = y[:, :c.y_width - c.n_tokens], y[:, c.y_width - c.n_tokens:]
            y_cond, y_pos = self.y_emb(labels)
        if c.upsampler is not None:
            if z_cond is None:
                raise ValueError(f"an upsampler (level {c.level}) needs the upper level's codes z_cond of shape "
                                 f"(N, {c.cond_length})")
            x_cond = self.conditioner_blocks_0(z_cond)
        else:
            x_cond = y_pos
        return x_cond, y_cond, (prime if c.n_tokens else None)

    def encoder_kv(self, prime: jax.Array) -> jax.Array:
        """5b_lyrics: lyric tokens -> (N, n_tokens, width) states the cross-attention layers read."""
        h = self.prime_prior(prime)
        return self.prime_state_ln(self.prime_state_proj(h).astype(jnp.float32))

    def preprocess_single(self, prime: jax.Array, z: jax.Array, x_cond: Optional[jax.Array]):
        """Single enc-dec: lyric ids first, music ids shifted past the lyric vocabulary; x_cond zero on lyrics."""
        c = self.config
        tokens = jnp.concatenate([prime.astype(jnp.int32), z.astype(jnp.int32) + c.hps.n_vocab], axis=1)
        if x_cond is not None:
            n, _, width = x_cond.shape
            x_cond = jnp.concatenate([jnp.zeros((n, c.n_tokens, width), x_cond.dtype),
                                      jnp.broadcast_to(x_cond, (n, c.n_ctx, width))], axis=1)
        return tokens, x_cond

    def __call__(self, z: jax.Array, z_cond: Optional[jax.Array] = None, y: Optional[jax.Array] = None
                 ) -> Tuple[jax.Array, Dict[str, jax.Array], jax.Array]:
        c = self.config
        x_cond, y_cond, prime = self.get_cond(z_cond, y)
        if c.hps.single_enc_dec:
            tokens, x_cond = self.preprocess_single(prime, z, x_cond)
            logits = self.prior(tokens, x_cond, y_cond)
            prime_loss, gen_loss = get_sep_loss(logits, tokens, c.n_tokens)
        else:
            encoder_kv = None
            prime_loss = jnp.zeros((), jnp.float32)
            if c.lyric_encoder is not None:
                encoder_kv = self.encoder_kv(prime)
                prime_logits = self.prime_x_out(encoder_kv)
                prime_loss = bits_per_token(prime_logits, prime)
            logits = self.prior(z, x_cond, y_cond, encoder_kv)
            gen_loss = bits_per_token(logits, z)
        total = c.prime_loss_dims + c.gen_loss_dims
        loss = (c.hps.prime_loss_fraction * prime_loss * c.prime_loss_dims / total
                + gen_loss * c.gen_loss_dims / total)
        metrics = {"bpd": gen_loss, "gen_loss": gen_loss, "prime_loss": prime_loss}
        return loss, metrics, logits


def abstract_params(config: PriorConfig) -> Any:
    """Shapes of the params (logical-axis boxes kept) without allocating anything."""
    n = 1
    z = jax.ShapeDtypeStruct((n, config.n_ctx), jnp.int32)
    z_cond = jax.ShapeDtypeStruct((n, config.cond_length), jnp.int32) if config.upsampler else None
    y = jax.ShapeDtypeStruct((n, config.y_width), jnp.int32) if config.labels else None
    model = Prior(config)
    return jax.eval_shape(lambda z, zc, y: model.init(jax.random.key(0), z, zc, y), z, z_cond, y)["params"]


def count_params(config: PriorConfig) -> int:
    import numpy as np
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(nn.unbox(abstract_params(config)))))
