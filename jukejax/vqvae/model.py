"""The hierarchical VQ-VAE (original `vqvae/vqvae.py::VQVAE`).

Each level L has its own encoder (L + 1 EncoderConvBlocks from the audio down to hop_lengths[L]), its own
codebook and its own decoder back to audio; nothing is shared between levels. Widths and depths of level L
are multiplied by hvqvae_multipliers[L]. Variables: "params" (convs) and "codebook" (see bottleneck.py).

    model = VQVAE(config)
    variables = model.init({"params": rng}, x)                   # x (N, T, 1)
    out, updates = model.apply(variables, x, train=True, rngs={"codebook": rng}, mutable=["codebook"])
    zs = model.apply(variables, x, method=model.encode)          # [(N, T // hop_l)] for each level
    x_hat = model.apply(variables, zs[1:], start_level=1, method=model.decode)
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jukejax.config import VQVAEConfig
from jukejax.vqvae.bottleneck import Bottleneck
from jukejax.vqvae.encdec import Decoder, Encoder

AUDIO_CHANNELS = 1  # the original downmixes to mono before the VQ-VAE (input_shape = (sample_length, 1))


class VQVAE(nn.Module):
    config: VQVAEConfig
    dtype: Any = jnp.float32       # compute dtype of the convs; params and the bottleneck stay fp32

    def setup(self):
        c = self.config
        self.encoders = [Encoder(c.emb_width, c.downs_t[:level + 1], c.strides_t[:level + 1],
                                 **self._block_kwargs(level)) for level in range(c.levels)]
        self.decoders = [Decoder(AUDIO_CHANNELS, c.emb_width, c.downs_t[:level + 1], c.strides_t[:level + 1],
                                 reverse_decoder_dilation=c.reverse_decoder_dilation, **self._block_kwargs(level))
                         for level in range(c.levels)]
        self.bottleneck = Bottleneck(c.l_bins, c.emb_width, c.l_mu, c.levels, threshold=c.revival_threshold)

    def _block_kwargs(self, level: int) -> Dict[str, Any]:
        c = self.config
        multiplier = c.hvqvae_multipliers[level]
        return dict(width=c.width * multiplier, depth=c.depth * multiplier, m_conv=c.m_conv,
                    dilation_growth_rate=c.dilation_growth_rate, dilation_cycle=c.dilation_cycle,
                    dtype=self.dtype)

    def _check_audio(self, x: jax.Array, top_level: int) -> None:
        if x.ndim != 3 or x.shape[-1] != AUDIO_CHANNELS:
            raise ValueError(f"VQVAE expects audio of shape (batch, time, {AUDIO_CHANNELS}), got {x.shape}")
        hop = self.config.hop_lengths[top_level]
        if x.shape[1] % hop:
            raise ValueError(f"audio length {x.shape[1]} is not a multiple of the hop length {hop} of "
                             f"level {top_level}")

    def _levels(self, start_level: int, end_level: Optional[int]) -> range:
        end_level = self.config.levels if end_level is None else end_level
        if not 0 <= start_level < end_level <= self.config.levels:
            raise ValueError(f"need 0 <= start_level < end_level <= {self.config.levels}, got "
                             f"start_level={start_level} end_level={end_level}")
        return range(start_level, end_level)

    def __call__(self, x: jax.Array, train: bool = False) -> Dict[str, Any]:
        """Encode, quantise and decode every level.

        Returns dict(x_outs=[(N, T, 1)] per level (each level's own reconstruction), zs=[(N, T // hop_l)],
        commit_losses=[scalar] per level, metrics={name: (levels,) array}) with the bottleneck metrics
        fit, pn and, when training, entropy, used_curr, usage, dk.
        """
        levels = self.config.levels
        self._check_audio(x, levels - 1)
        xs = [self.encoders[level](x)[-1] for level in range(levels)]
        zs, xs_quantised, commit_losses, metrics = self.bottleneck(xs, train)
        x_outs = [self.decoders[level](xs_quantised[level:level + 1], all_levels=False) for level in range(levels)]
        stacked = {name: jnp.stack([m[name] for m in metrics]) for name in metrics[0]}
        return dict(x_outs=x_outs, zs=zs, commit_losses=commit_losses, metrics=stacked)

    def encode(self, x: jax.Array, start_level: int = 0, end_level: Optional[int] = None) -> List[jax.Array]:
        """Codes int32 (N, T // hop_lengths[l]) for l in [start_level, end_level)."""
        levels = self._levels(start_level, end_level)
        self._check_audio(x, levels[-1])
        xs = [self.encoders[level](x)[-1] for level in levels]
        return self.bottleneck.encode(xs, start_level=start_level)

    def decode(self, zs: Sequence[jax.Array], start_level: int = 0, end_level: Optional[int] = None) -> jax.Array:
        """Audio (N, T, 1) from the codes of levels [start_level, end_level), decoded as the original does:
        only zs[0] is used, by the decoder of start_level (the others are looked up and dropped)."""
        levels = self._levels(start_level, end_level)
        if len(zs) != len(levels):
            raise ValueError(f"decode from start_level={start_level} to end_level={levels[-1] + 1} takes "
                             f"{len(levels)} code arrays, got {len(zs)}")
        x_quantised = self.bottleneck.decode(zs[:1], start_level=start_level)
        return self.decoders[start_level](x_quantised, all_levels=False)


def abstract_variables(config: VQVAEConfig) -> Dict[str, Any]:
    """Shapes and dtypes of every variable collection (logical-axis boxes kept), without allocating."""
    x = jax.ShapeDtypeStruct((1, config.hop_lengths[-1], AUDIO_CHANNELS), jnp.float32)
    return jax.eval_shape(lambda: VQVAE(config).init({"params": jax.random.key(0)}, jnp.zeros(x.shape, x.dtype)))


def count_params(config: VQVAEConfig) -> int:
    """Number of trainable parameters (codebooks excluded), counted from shapes only."""
    params = nn.unbox(abstract_variables(config)["params"])
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(params)))
