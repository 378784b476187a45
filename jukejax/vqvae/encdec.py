"""Strided conv encoders and transposed-conv decoders of the VQ-VAE (original `vqvae/encdec.py`).

One `EncoderConvBlock` downsamples by stride_t ** down_t; the encoder of VQ-VAE level L chains L + 1 of
them (`level_blocks_0` .. `level_blocks_L`). The decoder of level L walks its blocks in reverse and ends in
a k=3 conv to the audio channels (`out`). The conv blocks take plain fields so the upsamplers'
conditioner (original `prior/conditioners.py::Conditioner`) can reuse `DecoderConvBlock` with its own widths.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from jukejax.vqvae.resnet import Resnet1D, conv1d


class EncoderConvBlock(nn.Module):
    """down_t x [Conv1d(k=2s, stride s, pad s//2) -> Resnet1D], then Conv1d(width -> output_width, k=3).

    Names: `model_{i}_0` (strided conv), `model_{i}_1` (resnet), `model_{down_t}` (projection).
    """
    output_width: int
    down_t: int
    stride_t: int
    width: int
    depth: int
    m_conv: float = 1.0
    dilation_growth_rate: int = 1
    dilation_cycle: Optional[int] = None
    zero_out: bool = False
    res_scale: bool = False
    remat: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.down_t == 0:  # the original builds an empty nn.Sequential: the identity
            return x
        filter_t, pad_t = self.stride_t * 2, self.stride_t // 2
        for i in range(self.down_t):
            x = conv1d(self.width, filter_t, in_features=x.shape[-1], stride=self.stride_t, padding=pad_t,
                       dtype=self.dtype, name=f"model_{i}_0")(x)
            x = Resnet1D(self.depth, self.m_conv, self.dilation_growth_rate, self.dilation_cycle,
                         zero_out=self.zero_out, res_scale=self.res_scale, remat=self.remat, dtype=self.dtype,
                         name=f"model_{i}_1")(x)
        return conv1d(self.output_width, 3, in_features=self.width, padding=1, dtype=self.dtype,
                      name=f"model_{self.down_t}")(x)


class DecoderConvBlock(nn.Module):
    """Conv1d(in -> width, k=3), then down_t x [Resnet1D -> ConvTranspose1d(k=2s, stride s, pad s//2)].

    Every transposed conv multiplies the length by stride_t; the last one maps width -> output_width
    (the original's `input_emb_width`). Names: `model_0`, `model_{i+1}_0` (resnet), `model_{i+1}_1`
    (transposed conv). The original class is spelled `DecoderConvBock`.
    """
    output_width: int
    down_t: int
    stride_t: int
    width: int
    depth: int
    m_conv: float = 1.0
    dilation_growth_rate: int = 1
    dilation_cycle: Optional[int] = None
    zero_out: bool = False
    res_scale: bool = False
    reverse_dilation: bool = False
    remat: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.down_t == 0:
            return x
        filter_t, pad_t = self.stride_t * 2, self.stride_t // 2
        x = conv1d(self.width, 3, in_features=x.shape[-1], padding=1, dtype=self.dtype, name="model_0")(x)
        for i in range(self.down_t):
            x = Resnet1D(self.depth, self.m_conv, self.dilation_growth_rate, self.dilation_cycle,
                         zero_out=self.zero_out, res_scale=self.res_scale, reverse_dilation=self.reverse_dilation,
                         remat=self.remat, dtype=self.dtype, name=f"model_{i + 1}_0")(x)
            features = self.output_width if i == self.down_t - 1 else self.width
            x = conv1d(features, filter_t, in_features=self.width, stride=self.stride_t, padding=pad_t,
                       transposed=True, dtype=self.dtype, name=f"model_{i + 1}_1")(x)
        return x


class Encoder(nn.Module):
    """The encoder of one VQ-VAE level: len(downs_t) EncoderConvBlocks, each ending at emb_width.

    Returns the output of every block (the original's `xs`); the VQ-VAE quantises the last one.
    """
    emb_width: int
    downs_t: Sequence[int]
    strides_t: Sequence[int]
    width: int
    depth: int
    m_conv: float = 1.0
    dilation_growth_rate: int = 1
    dilation_cycle: Optional[int] = None
    zero_out: bool = False
    res_scale: bool = False
    remat: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> List[jax.Array]:
        xs = []
        for level, (down_t, stride_t) in enumerate(zip(self.downs_t, self.strides_t)):
            x = EncoderConvBlock(self.emb_width, down_t, stride_t, self.width, self.depth, self.m_conv,
                                 self.dilation_growth_rate, self.dilation_cycle, self.zero_out, self.res_scale,
                                 remat=self.remat, dtype=self.dtype, name=f"level_blocks_{level}")(x)
            xs.append(x)
        return xs


class Decoder(nn.Module):
    """The decoder of one VQ-VAE level: DecoderConvBlocks from the top block down, then `out`.

    `xs` holds one (N, T_l, emb_width) tensor per block, bottom first; with `all_levels=False` (the only
    mode the VQ-VAE uses: each level decodes its own codes alone) it holds just the top one.
    """
    output_width: int              # audio channels (1)
    emb_width: int
    downs_t: Sequence[int]
    strides_t: Sequence[int]
    width: int
    depth: int
    m_conv: float = 1.0
    dilation_growth_rate: int = 1
    dilation_cycle: Optional[int] = None
    zero_out: bool = False
    res_scale: bool = False
    reverse_decoder_dilation: bool = False
    remat: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, xs: Sequence[jax.Array], all_levels: bool = False) -> jax.Array:
        levels = len(self.downs_t)
        expected = levels if all_levels else 1
        if len(xs) != expected:
            raise ValueError(f"Decoder with all_levels={all_levels} takes {expected} input(s), got {len(xs)}")
        x = xs[-1]
        for level in reversed(range(levels)):
            x = DecoderConvBlock(self.emb_width, self.downs_t[level], self.strides_t[level], self.width,
                                 self.depth, self.m_conv, self.dilation_growth_rate, self.dilation_cycle,
                                 self.zero_out, self.res_scale, self.reverse_decoder_dilation, remat=self.remat,
                                 dtype=self.dtype, name=f"level_blocks_{level}")(x)
            if level != 0 and all_levels:
                x = x + xs[level - 1]
        return conv1d(self.output_width, 3, in_features=self.emb_width, padding=1, dtype=self.dtype,
                      name="out")(x)
