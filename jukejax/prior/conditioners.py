"""Conditioners of a prior (original `prior/conditioners.py`: `LabelConditioner`, `Conditioner`).

- `LabelConditioner` (the original `y_emb`): artist + bag-of-genre embeddings give the start embedding `y_cond`
  (N, 1, w) that replaces token 0; with `include_time_signal` (top prior only) three `RangeEmbedding`s of the
  song length and of the window's absolute and relative position give `y_pos` (N, n_ctx, w), the top prior's
  x_cond.
- `Conditioner` (the original `conditioner_blocks.0`): an upsampler's embedding of the upper level's codes,
  upsampled by the VQ-VAE's `DecoderConvBlock` (stride_t ** down_t) and layer-normed into x_cond (N, n_ctx, w).

Parameter tree vs the original state dict (a table, see `label_conditioner_torch_keys` and
`upsampler_conditioner_torch_keys`):

    y_emb:
      artist_emb/emb/embedding              <- y_emb.artist_emb.emb.weight            (artist bins, w)
      bow_genre_emb/emb/embedding           <- y_emb.bow_genre_emb.emb.weight         (genre bins, w)
      {total_length,absolute_pos,relative_pos}_emb/emb/embedding
                                            <- y_emb.{...}_emb.emb.weight             (t_bins, w)
    conditioner_blocks.0:
      x_emb/embedding                       <- x_emb.weight                           (bins, w)
      cond/model_0/{kernel,bias}            <- cond.model.0.{weight,bias}             Conv1d (out,in,k)->(k,in,out)
      cond/model_{i}_0/model_{d}/model_{1,3}/{kernel,bias}
                                            <- cond.model.{i}.0.blocks.{d}.model.{1,3}.*  (`model.{d}` without
                                               checkpoint_res); Conv1d
      cond/model_{i}_1/{kernel,bias}        <- cond.model.{i}.1.*                     ConvTranspose1d (in,out,k) ->
                                                                                      (k,in,out) flipped in time
      ln/{scale,bias}                       <- ln.{weight,bias}

Ids outside an embedding's table cannot raise inside `jit`: such rows come out as NaN there, so they cannot
pass unnoticed. Called outside `jit` (concrete inputs), the modules raise the original's range errors instead.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from jukejax.checkpoint import CheckpointError
from jukejax.config import ConfigError
from jukejax.vqvae.encdec import DecoderConvBlock

N_LABEL_FIELDS = 4  # total_length, offset, sample_length, artist; then max_bow_genre_size genre ids
_DTYPES = ("float32", "bfloat16", "float16")


def _int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------------------------
# Settings

@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelConditionerConfig:
    """`LabelConditioner` settings, named as the original hparams (`y_cond_kwargs` of `make_prior`).

    Released values: v2 `y_bins=(120, 4111)`, `t_bins=128`, `max_bow_genre_size=5`; v3 (1b_lyrics)
    `y_bins=(604, 7898)`, `t_bins=64`, `max_bow_genre_size=1`; `min_duration` 60 / 23.8 / 17.84 s and
    `max_duration` 600 s for 5b / 5b_lyrics / 1b_lyrics. Only the top prior has `include_time_signal`.
    """
    y_bins: Tuple[int, int]            # (genre bins, artist bins), the original's order
    max_bow_genre_size: int            # genre slots in y (empty ones are -1)
    width: int                         # the prior's width (the original's out_width)
    n_ctx: int                         # music tokens per window (the original's n_time)
    include_time_signal: bool          # timing embeddings: True only for a prior without an upper level
    t_bins: int = 64
    sr: int = 44100
    min_duration: Optional[float] = None   # seconds; needed with include_time_signal
    max_duration: Optional[float] = None
    init_scale: float = 1.0

    def __post_init__(self):
        if len(self.y_bins) != 2 or not all(_int(b) and b > 0 for b in self.y_bins):
            raise ConfigError(f"prior.y_bins is {self.y_bins!r}; expected (genre bins, artist bins), two positive "
                              f"integers")
        for name in ("max_bow_genre_size", "width", "n_ctx", "t_bins", "sr"):
            value = getattr(self, name)
            if not _int(value) or value <= 0:
                raise ConfigError(f"prior.{name} is {value!r}; expected a positive integer")
        if not isinstance(self.include_time_signal, bool):
            raise ConfigError(f"prior.include_time_signal is {self.include_time_signal!r}; expected true or false")
        if not self.init_scale > 0:
            raise ConfigError(f"prior.init_scale is {self.init_scale!r}; expected a positive number")
        if self.include_time_signal:
            if self.min_duration is None or self.max_duration is None:
                raise ConfigError("prior.min_duration and prior.max_duration are needed for the timing embeddings "
                                  "(include_time_signal)")
            if not 0 < self.min_duration < self.max_duration:
                raise ConfigError(f"prior.min_duration {self.min_duration} and max_duration {self.max_duration} "
                                  f"must satisfy 0 < min_duration < max_duration")

    @property
    def genre_bins(self) -> int:
        return self.y_bins[0]

    @property
    def artist_bins(self) -> int:
        return self.y_bins[1]

    @property
    def n_labels(self) -> int:
        """Label entries of y before the lyric tokens: 4 + max_bow_genre_size."""
        return N_LABEL_FIELDS + self.max_bow_genre_size

    @property
    def t_ranges(self) -> Tuple[Tuple[float, float], Tuple[float, float], Tuple[float, float]]:
        """[min, max) of the total length and absolute position (audio samples) and of the relative position."""
        return ((self.min_duration * self.sr, self.max_duration * self.sr), (0.0, self.max_duration * self.sr),
                (0.0, 1.0))


@dataclasses.dataclass(frozen=True, kw_only=True)
class UpsamplerConditionerConfig:
    """Upsampler `Conditioner` settings, named as the original hparams (`x_cond_kwargs` of `make_prior`).

    An upsampler at VQ-VAE level L is conditioned on the codes of level L + 1, so `down_t` and `stride_t` are
    `downs_t[L + 1]` and `strides_t[L + 1]` (see `for_level`; the HF port indexes them with its own level
    number, which only agrees for the released (3, 2, 2)). Released: `cond_width=1024, cond_depth=16,
    cond_dilation_growth_rate=3, cond_dilation_cycle=8`, `cond_res_scale` True for level 1 only, `init_scale=0.4`,
    width 1920, n_ctx 8192, down_t 2, stride_t 2.
    """
    bins: int                          # the VQ-VAE's l_bins: codes of the upper level
    width: int                         # the prior's width (the original's out_width)
    n_ctx: int                         # music tokens per window of this level (length of x_cond)
    down_t: int
    stride_t: int
    cond_width: int = 128
    cond_depth: int = 3
    cond_m_conv: float = 1.0
    cond_dilation_growth_rate: int = 1
    cond_dilation_cycle: Optional[int] = None
    cond_zero_out: bool = False
    cond_res_scale: bool = False       # True: every residual branch scaled by 1/sqrt(cond_depth)
    init_scale: float = 1.0
    remat: bool = False                # recompute each resnet block in the backward pass (original cond_c_res)
    dtype: str = "float32"             # compute dtype of the conv stack; params, LayerNorm and output are fp32

    def __post_init__(self):
        for name in ("bins", "width", "n_ctx", "stride_t", "cond_width", "cond_depth",
                     "cond_dilation_growth_rate"):
            value = getattr(self, name)
            if not _int(value) or value <= 0:
                raise ConfigError(f"prior.{name} is {value!r}; expected a positive integer")
        if not _int(self.down_t) or self.down_t < 0:
            raise ConfigError(f"prior.down_t is {self.down_t!r}; expected a non-negative integer")
        if self.cond_dilation_cycle is not None and (not _int(self.cond_dilation_cycle)
                                                     or self.cond_dilation_cycle <= 0):
            raise ConfigError(f"prior.cond_dilation_cycle is {self.cond_dilation_cycle!r}; expected a positive "
                              f"integer or None")
        if not self.cond_m_conv > 0 or int(self.cond_m_conv * self.cond_width) <= 0:
            raise ConfigError(f"prior.cond_m_conv {self.cond_m_conv} gives an empty resnet for cond_width "
                              f"{self.cond_width}")
        if not self.init_scale > 0:
            raise ConfigError(f"prior.init_scale is {self.init_scale!r}; expected a positive number")
        if self.n_ctx % self.cond_downsample:
            raise ConfigError(f"prior.n_ctx {self.n_ctx} is not a multiple of the conditioner's upsampling "
                              f"stride_t ** down_t = {self.cond_downsample}")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"prior.dtype {self.dtype!r} must be one of {', '.join(_DTYPES)}")

    @classmethod
    def for_level(cls, level: int, downs_t: Tuple[int, ...], strides_t: Tuple[int, ...], **kwargs
                  ) -> "UpsamplerConditionerConfig":
        """Settings for the upsampler at VQ-VAE level `level` (0 = bottom), conditioned on level + 1."""
        if not 0 <= level < len(downs_t) - 1:
            raise ConfigError(f"level {level} has no upper level to condition on (levels 0..{len(downs_t) - 1}; "
                              f"only levels below the top have an upsampler conditioner)")
        return cls(down_t=downs_t[level + 1], stride_t=strides_t[level + 1], **kwargs)

    @property
    def cond_downsample(self) -> int:
        """Tokens of this level per upper-level token."""
        return self.stride_t ** self.down_t

    @property
    def input_length(self) -> int:
        """Upper-level tokens per window: n_ctx // cond_downsample."""
        return self.n_ctx // self.cond_downsample


# ---------------------------------------------------------------------------------------------------------------
# Modules

def _concrete(x) -> Optional[np.ndarray]:
    """The value of `x` when it is known now (not traced), else None."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def _divide(x: jax.Array, divisor: float) -> jax.Array:
    # A true float32 division, as PyTorch on CPU (and the HF port) computes it. XLA rewrites a division by a
    # broadcast scalar as a multiplication by its reciprocal, which moves positions on a bin edge into the next
    # bin; a full-shape divisor behind a barrier keeps the division. (PyTorch on CUDA also multiplies by the
    # reciprocal of a Python-scalar divisor, so the original run on a GPU can differ from this by one bin
    # exactly at an edge.)
    return x / jax.lax.optimization_barrier(jnp.full(x.shape, divisor, jnp.float32))


def _rounded(x: jax.Array) -> jax.Array:
    # The identity, but XLA cannot contract a product passed through it with a following add into one fused
    # multiply-add: the original rounds the product and the sum separately, and one rounding fewer moves some
    # positions on a bin edge into the next bin under jit.
    return jnp.where(jnp.isnan(x), jnp.full_like(x, jnp.nan), x)


def _embed(name: str, bins: int, width: int, std: float) -> nn.Embed:
    init = nn.with_logical_partitioning(nn.initializers.normal(std), ("vocab", "embed"))
    return nn.Embed(bins, width, dtype=jnp.float32, param_dtype=jnp.float32, embedding_init=init, name=name)


def _lookup(table: nn.Embed, ids: jax.Array) -> jax.Array:
    # Rows of ids outside [0, bins) are NaN (see the module docstring), never a silently wrapped row.
    valid = (ids >= 0) & (ids < table.num_embeddings)
    out = table(jnp.clip(ids, 0, table.num_embeddings - 1))
    return jnp.where(valid[..., None], out, jnp.nan)


class SimpleEmbedding(nn.Module):
    """Embedding of integer labels (N, K) -> (N, K, width), init N(0, 0.01 * init_scale)."""
    bins: int
    width: int
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, y: jax.Array) -> jax.Array:
        if y.ndim != 2:
            raise ValueError(f"{self.name}: expected labels of shape (N, K), got {y.shape}")
        value = _concrete(y)
        if value is not None and ((value < 0).any() or (value >= self.bins).any()):
            raise ValueError(f"{self.name}: labels must lie in [0, {self.bins}), got {value.tolist()}")
        return _lookup(_embed("emb", self.bins, self.width, 0.01 * self.init_scale), y)


class RangeEmbedding(nn.Module):
    """Embedding of a position in [range[0], range[1]), binned into `bins` equal bins (original RangeEmbedding).

    With `n_time` > 1 the positions are interpolated over n_time steps, `pos_i = start + (end - start) * i/n_time`
    for i < n_time; with n_time = 1 only `pos_start` is used. `bin = floor(bins * (pos - min) / (max - min))`,
    in float32 like the original. `clamp` clips `pos_end` into [min, max] first (the relative position, whose
    window may run past the end of the song). Outside jit, a start outside [min, max) or an end outside
    [min, max] raises as the original's assertions do; inside jit they give NaN rows.
    """
    n_time: int
    bins: int
    range: Tuple[float, float]
    width: int
    init_scale: float = 1.0
    clamp: bool = False

    def bin_indices(self, pos_start: jax.Array, pos_end: Optional[jax.Array] = None) -> jax.Array:
        """(N, n_time) bin of each interpolated position (may lie outside [0, bins) for bad inputs)."""
        pos_min, pos_max = self.range
        start = jnp.asarray(pos_start).astype(jnp.float32)
        if self.n_time == 1:
            position = start
        else:
            if pos_end is None:
                raise ValueError(f"{self.name}: n_time {self.n_time} > 1 interpolates from pos_start to pos_end; "
                                 f"pos_end is required")
            end = jnp.asarray(pos_end).astype(jnp.float32)
            if self.clamp:
                end = jnp.clip(end, pos_min, pos_max)
            step = _divide(jnp.arange(self.n_time, dtype=jnp.float32)[None, :], self.n_time)
            position = start + _rounded((end - start) * step)
        normalised = _divide(position - pos_min, pos_max - pos_min)
        return jnp.floor(self.bins * normalised).astype(jnp.int32)

    def _check(self, pos_start, pos_end) -> None:
        pos_min, pos_max = (np.float32(v) for v in self.range)
        start = _concrete(pos_start)
        if start is not None:
            start = start.astype(np.float32)
            if not ((pos_min <= start) & (start < pos_max)).all():
                raise ValueError(f"{self.name}: range is [{self.range[0]}, {self.range[1]}), got start "
                                 f"{start.ravel().tolist()}")
        end = None if pos_end is None else _concrete(pos_end)
        if end is not None:
            end = end.astype(np.float32)
            if self.clamp:
                end = np.clip(end, pos_min, pos_max)
            if not ((pos_min <= end) & (end <= pos_max)).all():
                raise ValueError(f"{self.name}: range is [{self.range[0]}, {self.range[1]}], got end "
                                 f"{end.ravel().tolist()}")

    @nn.compact
    def __call__(self, pos_start: jax.Array, pos_end: Optional[jax.Array] = None) -> jax.Array:
        if pos_start.ndim != 2 or (pos_end is not None and pos_end.ndim != 2):
            raise ValueError(f"{self.name}: expected positions of shape (N, 1), got {pos_start.shape}"
                             f"{'' if pos_end is None else f' and {pos_end.shape}'}")
        self._check(pos_start, pos_end)
        idx = self.bin_indices(pos_start, pos_end)
        value = _concrete(idx)
        if value is not None and ((value < 0) | (value >= self.bins)).any():
            outside = sorted(set(value[(value < 0) | (value >= self.bins)].tolist()))
            raise ValueError(f"{self.name}: positions fall in bins {outside[:8]} "
                             f"outside [0, {self.bins}) after float32 rounding (range [{self.range[0]}, "
                             f"{self.range[1]}))")
        return _lookup(_embed("emb", self.bins, self.width, 0.01 * self.init_scale), idx)


def check_labels(labels, config: LabelConditionerConfig) -> None:
    """Raise a ValueError naming the field if label rows (N, 4 + max_bow_genre_size) are outside what the
    embeddings cover. Call it on the host before a jitted apply (inside jit, bad ids only show as NaN)."""
    y = np.asarray(labels)
    if y.ndim != 2 or y.shape[1] != config.n_labels:
        raise ValueError(f"labels must have shape (N, 4 + max_bow_genre_size = {config.n_labels}), got {y.shape}")
    artist, genre = y[:, 3], y[:, 4:]
    if ((artist < 0) | (artist >= config.artist_bins)).any():
        raise ValueError(f"artist ids {artist.tolist()} must lie in [0, artist bins {config.artist_bins})")
    if (genre >= config.genre_bins).any():
        raise ValueError(f"genre ids {genre.tolist()} must be < genre bins {config.genre_bins} (-1: empty slot)")
    if not config.include_time_signal:
        return
    f = np.float32
    total, offset, length = y[:, 0], y[:, 1], y[:, 2]
    (t_min, t_max), (_, a_max), _ = config.t_ranges
    sr = config.sr
    if not ((f(t_min) <= total.astype(f)) & (total.astype(f) < f(t_max))).all():
        raise ValueError(f"total_length {total.tolist()} must lie in [min_duration * sr, max_duration * sr) = "
                         f"[{t_min}, {t_max}) samples ({config.min_duration} to {config.max_duration} s at "
                         f"{sr} Hz)")
    if not ((offset >= 0) & (offset.astype(f) < f(a_max)) & (offset < total)).all():
        raise ValueError(f"offset {offset.tolist()} must lie in [0, total_length {total.tolist()}) and below "
                         f"max_duration * sr = {a_max}")
    if not ((offset + length).astype(f) <= f(a_max)).all():
        raise ValueError(f"offset + sample_length {(offset + length).tolist()} must not pass max_duration * sr = "
                         f"{a_max} (max_duration {config.max_duration} s)")


class LabelConditioner(nn.Module):
    """Artist/genre start embedding and (top prior) timing embeddings from the label part of y.

    `labels` (N, 4 + G) = [total_length, offset, sample_length, artist, genre_1..G] (see `labels.split_y`).
    Returns y_cond (N, 1, w) = artist_emb + sum of bow_genre_emb over genre slots >= 0, and y_pos (N, n_ctx, w) =
    total_length_emb + absolute_pos_emb + relative_pos_emb with include_time_signal, else None.
    """
    config: LabelConditionerConfig

    @nn.compact
    def __call__(self, labels: jax.Array) -> Tuple[jax.Array, Optional[jax.Array]]:
        c = self.config
        if labels.ndim != 2 or labels.shape[1] != c.n_labels:
            raise ValueError(f"labels must have shape (N, 4 + max_bow_genre_size = {c.n_labels}), got "
                             f"{labels.shape}")
        if _concrete(labels) is not None:
            check_labels(labels, c)
        labels = jnp.asarray(labels)
        artist, genre = labels[:, 3:4], labels[:, 4:]
        artist_emb = SimpleEmbedding(c.artist_bins, c.width, c.init_scale, name="artist_emb")(artist)
        present = (genre >= 0).astype(jnp.float32)[..., None]
        genre_emb = SimpleEmbedding(c.genre_bins, c.width, c.init_scale, name="bow_genre_emb")(
            jnp.maximum(genre, 0))
        y_cond = (genre_emb * present).sum(axis=1, keepdims=True) + artist_emb
        if not c.include_time_signal:
            return y_cond, None
        total_range, absolute_range, relative_range = c.t_ranges
        total = labels[:, 0:1].astype(jnp.float32)
        start = labels[:, 1:2].astype(jnp.float32)
        end = (labels[:, 1:2] + labels[:, 2:3]).astype(jnp.float32)
        y_pos = (RangeEmbedding(1, c.t_bins, total_range, c.width, c.init_scale, name="total_length_emb")(total)
                 + RangeEmbedding(c.n_ctx, c.t_bins, absolute_range, c.width, c.init_scale,
                                  name="absolute_pos_emb")(start, end)
                 + RangeEmbedding(c.n_ctx, c.t_bins, relative_range, c.width, c.init_scale, clamp=True,
                                  name="relative_pos_emb")(start / total, end / total))
        return y_cond, y_pos


class Conditioner(nn.Module):
    """Upsampler conditioner: upper-level codes (N, n_ctx // cond_downsample) -> x_cond (N, n_ctx, w), fp32.

    x_emb (init N(0, 0.02 * init_scale)), plus an optional x_cond of the same shape from a conditioner further
    up (unused by the released models), then `DecoderConvBlock(w -> w)` with the cond_* settings and
    reverse_dilation False, then LayerNorm(w) with eps 1e-5 in fp32.
    """
    config: UpsamplerConditionerConfig

    @nn.compact
    def __call__(self, z_upper: jax.Array, x_cond: Optional[jax.Array] = None) -> jax.Array:
        c = self.config
        n = z_upper.shape[0]
        if z_upper.shape != (n, c.input_length):
            raise ValueError(f"upper-level codes must have shape (N, n_ctx // stride_t ** down_t = "
                             f"{c.input_length}), got {z_upper.shape}")
        if x_cond is not None and x_cond.shape != (n, c.input_length, c.width):
            raise ValueError(f"x_cond from the level above must have shape {(n, c.input_length, c.width)}, got "
                             f"{x_cond.shape}")
        value = _concrete(z_upper)
        if value is not None and ((value < 0) | (value >= c.bins)).any():
            raise ValueError(f"upper-level codes must lie in [0, bins {c.bins}), got values "
                             f"{sorted(set(value[(value < 0) | (value >= c.bins)].tolist()))[:8]}")
        h = _lookup(_embed("x_emb", c.bins, c.width, 0.02 * c.init_scale), z_upper)
        if x_cond is not None:
            h = h + x_cond.astype(jnp.float32)
        dtype = jnp.dtype(c.dtype)
        h = DecoderConvBlock(c.width, c.down_t, c.stride_t, c.cond_width, c.cond_depth, c.cond_m_conv,
                             c.cond_dilation_growth_rate, c.cond_dilation_cycle, c.cond_zero_out, c.cond_res_scale,
                             reverse_dilation=False, remat=c.remat, dtype=dtype, name="cond")(h.astype(dtype))
        ln = nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, param_dtype=jnp.float32, use_fast_variance=False,
                          scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                          bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), name="ln")
        return ln(h.astype(jnp.float32))


# ---------------------------------------------------------------------------------------------------------------
# PyTorch state dicts

# How a torch tensor becomes a Flax leaf.
EMBED, CONV, CONV_TRANSPOSE, VECTOR = "embed", "conv", "conv_transpose", "vector"


def label_conditioner_torch_keys(config: LabelConditionerConfig) -> Dict[Tuple[str, ...], Tuple[str, str]]:
    """Flax param path of `LabelConditioner` -> (original key below `y_emb.`, layout)."""
    names = ["artist_emb", "bow_genre_emb"]
    if config.include_time_signal:
        names += ["total_length_emb", "absolute_pos_emb", "relative_pos_emb"]
    return {(name, "emb", "embedding"): (f"{name}.emb.weight", EMBED) for name in names}


def upsampler_conditioner_torch_keys(config: UpsamplerConditionerConfig
                                     ) -> Dict[Tuple[str, ...], Tuple[str, str]]:
    """Flax param path of `Conditioner` -> (original key below `conditioner_blocks.0.`, layout).

    Resnet blocks are listed as `cond.model.{i}.0.blocks.{d}...` (the released checkpoints, trained with
    checkpoint_res=1); the loaders also accept `...0.model.{d}...`.
    """
    table: Dict[Tuple[str, ...], Tuple[str, str]] = {("x_emb", "embedding"): ("x_emb.weight", EMBED)}

    def conv(path: Tuple[str, ...], key: str, layout: str) -> None:
        table[path + ("kernel",)] = (key + ".weight", layout)
        table[path + ("bias",)] = (key + ".bias", VECTOR)

    if config.down_t > 0:
        conv(("cond", "model_0"), "cond.model.0", CONV)
        for i in range(1, config.down_t + 1):
            for d in range(config.cond_depth):
                for j in (1, 3):
                    conv(("cond", f"model_{i}_0", f"model_{d}", f"model_{j}"),
                         f"cond.model.{i}.0.blocks.{d}.model.{j}", CONV)
            conv(("cond", f"model_{i}_1"), f"cond.model.{i}.1", CONV_TRANSPOSE)
    table[("ln", "scale")] = ("ln.weight", VECTOR)
    table[("ln", "bias")] = ("ln.bias", VECTOR)
    return table


_HF_LABEL_RULES = (
    (re.compile(r"metadata_embedding\."), "y_emb."),
    (re.compile(r"y_emb\.(artist_emb|bow_genre_emb)\.weight$"), r"y_emb.\1.emb.weight"),
)
_HF_UPSAMPLER_RULES = (
    (re.compile(r"conditioner_blocks\.embed_tokens\."), "conditioner_blocks.0.x_emb."),
    (re.compile(r"conditioner_blocks\.layer_norm\."), "conditioner_blocks.0.ln."),
    (re.compile(r"conditioner_blocks\.upsampler\.proj_in\."), "conditioner_blocks.0.cond.model.0."),
    (re.compile(r"resnet_block\.(\d+)\.conv1d_1\."), r"model.\1.model.1."),
    (re.compile(r"resnet_block\.(\d+)\.conv1d_2\."), r"model.\1.model.3."),
)
_HF_UPSAMPLE = re.compile(r"conditioner_blocks\.upsampler\.upsample_block\.(\d+)\.")


def hf_to_original_conditioner_key(key: str) -> str:
    """Rename a conditioner key of the HF port (`...metadata_embedding.*`, `...conditioner_blocks.*`) to the
    original's (`...y_emb.*`, `...conditioner_blocks.0.*`), inverting transformers'
    `models/deprecated/jukebox/convert_jukebox.py`.
    Other keys come back unchanged."""
    if "metadata_embedding." in key:
        for pattern, repl in _HF_LABEL_RULES:
            key = pattern.sub(repl, key)
    if "conditioner_blocks." not in key:
        return key
    for pattern, repl in _HF_UPSAMPLER_RULES:
        key = pattern.sub(repl, key)
    m = _HF_UPSAMPLE.search(key)
    if m:
        n = int(m.group(1))  # HF flattens model.{i}.{j} (i >= 1) to upsample_block.{2i + j - 2}
        key = f"{key[:m.start()]}conditioner_blocks.0.cond.model.{n // 2 + 1}.{n % 2}.{key[m.end():]}"
    return key


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def _to_flax(value: np.ndarray, layout: str) -> np.ndarray:
    if layout == CONV:
        return np.ascontiguousarray(value.transpose(2, 1, 0))        # (out, in, k) -> (k, in, out)
    if layout == CONV_TRANSPOSE:
        return np.ascontiguousarray(value.transpose(2, 0, 1)[::-1])  # (in, out, k) -> flipped (k, in, out)
    return value


def _load(state_dict: Mapping[str, Any], prefix: str, table: Mapping[Tuple[str, ...], Tuple[str, str]],
          abstract: Mapping[Tuple[str, ...], Any], what: str) -> Dict[str, Any]:
    source = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    # Released checkpoints name resnet blocks `blocks.d` (checkpoint_res=1); accept `model.d` as well.
    source = {re.sub(r"^(cond\.model\.\d+\.0\.)model\.(\d+\.model\.)", r"\1blocks.\2", k): v
              for k, v in source.items()}
    params, missing, mismatched = {}, [], []
    for path, (key, layout) in table.items():
        if key not in source:
            missing.append(prefix + key)
            continue
        value = _to_flax(_to_numpy(source.pop(key)), layout)
        want = tuple(abstract[path].shape)
        if value.shape != want:
            mismatched.append(f"{prefix}{key}: {value.shape} after layout change, expected {want} for "
                              f"{'/'.join(path)}")
            continue
        params[path] = value
    if missing or mismatched or source:
        lines = [f"{what} state dict does not match the config:"]
        lines += [f"  missing: {k}" for k in missing]
        lines += [f"  wrong shape: {m}" for m in mismatched]
        lines += [f"  unused: {prefix}{k}" for k in sorted(source)]
        raise CheckpointError("\n".join(lines))
    return traverse_util.unflatten_dict(params)


def _abstract_params(module: nn.Module, *args) -> Dict[Tuple[str, ...], Any]:
    shapes = jax.eval_shape(lambda *a: module.init(jax.random.PRNGKey(0), *a), *args)
    return traverse_util.flatten_dict(nn.unbox(shapes["params"]))


def load_torch_label_conditioner(state_dict: Mapping[str, Any], config: LabelConditionerConfig,
                                 prefix: str = "y_emb.") -> Dict[str, Any]:
    """Params of `LabelConditioner(config)` from an original (openai/jukebox) state dict.

    Reads the keys under `prefix` (e.g. "y_emb."); every one must be used and every param found, else a
    ValueError lists them all. Values may be numpy arrays or torch tensors. For HF state dicts rename the keys
    with `hf_to_original_conditioner_key` first.
    """
    labels = jax.ShapeDtypeStruct((1, config.n_labels), jnp.int32)
    abstract = _abstract_params(LabelConditioner(config), labels)
    return _load(state_dict, prefix, label_conditioner_torch_keys(config), abstract, "label conditioner")


def load_torch_upsampler_conditioner(state_dict: Mapping[str, Any], config: UpsamplerConditionerConfig,
                                     prefix: str = "conditioner_blocks.0.") -> Dict[str, Any]:
    """Params of `Conditioner(config)` from an original state dict (keys under `prefix`); see
    `load_torch_label_conditioner`."""
    z = jax.ShapeDtypeStruct((1, config.input_length), jnp.int32)
    abstract = _abstract_params(Conditioner(config), z)
    return _load(state_dict, prefix, upsampler_conditioner_torch_keys(config), abstract, "upsampler conditioner")
