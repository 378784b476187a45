"""1-D convolutions and the dilated residual stacks of the VQ-VAE (original `vqvae/resnet.py`).

Layout is (batch, time, channels). Parameter names follow the original state dict: a `nn.Sequential`
child `model.3` becomes the Flax module `model_3`, so `jukejax.vqvae.torch_keys` is a table of renames.
Initialisation reproduces PyTorch's defaults for `nn.Conv1d` / `nn.ConvTranspose1d` (uniform in
+-1/sqrt(fan_in) for weight and bias), because the original trains from them.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import linen as nn

# Logical axis names of a conv kernel (k, in, out) and bias; `jukejax.parallel.LOGICAL_RULES` maps them.
KERNEL_AXES = ("kernel", "conv_in", "conv_out")
BIAS_AXES = ("conv_out",)


def _uniform(bound: float) -> nn.initializers.Initializer:
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def transposed_conv1d(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """PyTorch's ConvTranspose1d on (N, T, C) with a (k, in, out) kernel already flipped in time: the conv of
    the input dilated by `stride` and padded by k - 1 - padding, of length (T - 1) * stride - 2 padding + k.

    Computed phase by phase instead of as a conv with input dilation: output position s*m + r only meets the
    kernel taps j with (r + j - pad) divisible by s, each a time-shifted matmul of the undilated input. Same
    result, no multiplications by the inserted zeros, and its gradient is plain matmuls (XLA's CPU kernel
    gradient of an input-dilated conv is ~40x slower than the forward: 0.7 s for the upsamplers' last
    conditioner conv).
    """
    n, length, _ = x.shape
    k, pad, s = kernel.shape[0], kernel.shape[0] - 1 - padding, stride
    out_length = (length - 1) * s - 2 * padding + k
    m = -(-out_length // s)
    taps = [[(j, (r + j - pad) // s) for j in range(k) if (r + j - pad) % s == 0] for r in range(s)]
    shifts = [d for phase in taps for _, d in phase]
    left, right = max(-min(shifts), 0), max(m + max(shifts) - length, 0)
    xp = jnp.pad(x, ((0, 0), (left, right), (0, 0)))
    phases = []
    for phase in taps:
        if not phase:  # no tap reaches this phase (only when k < s): PyTorch gives zeros there
            phases.append(jnp.zeros((n, m, kernel.shape[-1]), jnp.result_type(x, kernel)))
            continue
        phases.append(sum(jnp.einsum("ntc,co->nto", xp[:, left + d:left + d + m], kernel[j]) for j, d in phase))
    return jnp.stack(phases, axis=2).reshape(n, m * s, -1)[:, :out_length]


class ConvTranspose1d(nn.Module):
    """`nn.ConvTranspose1d(in, features, k, stride, padding)` on (N, T, C): parameters `kernel` (k, in, out)
    and `bias` as `nn.Conv` names them, computed by `transposed_conv1d`."""
    features: int
    kernel_size: int
    stride: int
    padding: int
    kernel_init: Any
    bias_init: Any
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (self.kernel_size, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return transposed_conv1d(x, kernel, self.stride, self.padding) + bias


def conv1d(features: int, kernel_size: int, *, in_features: int, stride: int = 1, padding: int = 0,
           dilation: int = 1, transposed: bool = False, zero_init: bool = False, dtype: Any = jnp.float32,
           name: Optional[str] = None) -> nn.Module:
    """`nn.Conv1d(in, features, kernel_size, stride, padding, dilation)`, or with `transposed=True`
    `nn.ConvTranspose1d(in, features, kernel_size, stride, padding)`, as a Flax module on (N, T, C).

    Kernels are stored (k, in, out). The transposed conv is the forward conv of its adjoint with the kernel
    PyTorch's kernel flipped in time (the loader flips it), giving PyTorch's output length
    (T - 1) * stride - 2 p + k (see `transposed_conv1d`).
    """
    if transposed:
        if dilation != 1:
            raise ValueError("a transposed conv1d with dilation is not used by Jukebox and not supported")
        fan_in = features * kernel_size        # PyTorch reads fan_in off dim 1 of its (in, out, k) weight
        kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_out", "uniform")
    else:
        fan_in = in_features * kernel_size
        kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
    bias_init = _uniform(1.0 / math.sqrt(fan_in))
    if zero_init:
        kernel_init = bias_init = nn.initializers.zeros_init()
    kernel_init = nn.with_logical_partitioning(kernel_init, KERNEL_AXES)
    bias_init = nn.with_logical_partitioning(bias_init, BIAS_AXES)
    if transposed:
        return ConvTranspose1d(features, kernel_size, stride, padding, kernel_init, bias_init, dtype=dtype,
                               name=name)
    return nn.Conv(features, kernel_size=(kernel_size,), use_bias=True, dtype=dtype, param_dtype=jnp.float32,
                   kernel_init=kernel_init, bias_init=bias_init, name=name, strides=(stride,),
                   padding=((padding, padding),), kernel_dilation=(dilation,))


class ResConv1DBlock(nn.Module):
    """Pre-activation residual block: x + res_scale * conv1x1(relu(conv3_dilated(relu(x))))."""
    n_state: int                   # inner width (m_conv * width)
    dilation: int = 1
    zero_out: bool = False         # zero-initialise the last conv, so the block starts as the identity
    res_scale: float = 1.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n_in = x.shape[-1]
        h = nn.relu(x)
        h = conv1d(self.n_state, 3, in_features=n_in, padding=self.dilation, dilation=self.dilation,
                   dtype=self.dtype, name="model_1")(h)
        h = nn.relu(h)
        h = conv1d(n_in, 1, in_features=self.n_state, zero_init=self.zero_out, dtype=self.dtype,
                   name="model_3")(h)
        return x + self.res_scale * h


class Resnet1D(nn.Module):
    """`depth` ResConv1DBlocks whose dilation grows as growth_rate ** (d % cycle).

    `reverse_dilation` runs the blocks from the largest dilation down (the VQ-VAE decoder); block names
    `model_d` follow the order of execution, as the original's `nn.Sequential(*blocks[::-1])` does.
    `res_scale=True` scales every residual branch by 1/sqrt(depth) (the upsamplers' conditioner).
    `remat` recomputes each block in the backward pass (the original's `checkpoint_res`; it stores the
    blocks as `blocks.d` instead of `model.d`, a rename left to the checkpoint converter).
    """
    depth: int
    m_conv: float = 1.0
    dilation_growth_rate: int = 1
    dilation_cycle: Optional[int] = None
    zero_out: bool = False
    res_scale: bool = False
    reverse_dilation: bool = False
    remat: bool = False
    dtype: Any = jnp.float32

    def dilations(self) -> Tuple[int, ...]:
        """Dilation of each block in execution order."""
        def exponent(d):
            return d if self.dilation_cycle is None else d % self.dilation_cycle
        dilations = tuple(self.dilation_growth_rate ** exponent(d) for d in range(self.depth))
        return dilations[::-1] if self.reverse_dilation else dilations

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n_state = int(self.m_conv * x.shape[-1])
        scale = 1.0 / math.sqrt(self.depth) if self.res_scale else 1.0
        block_cls = nn.remat(ResConv1DBlock) if self.remat else ResConv1DBlock
        for d, dilation in enumerate(self.dilations()):
            x = block_cls(n_state, dilation=dilation, zero_out=self.zero_out, res_scale=scale, dtype=self.dtype,
                          name=f"model_{d}")(x)
        return x
