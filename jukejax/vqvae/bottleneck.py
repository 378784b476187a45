"""Vector quantisation with an EMA codebook and dead-code restarts (original `vqvae/bottleneck.py`).

The codebook of each level lives in the mutable collection "codebook" as `k` (l_bins, emb_width), `k_sum`,
`k_elem` (the EMA statistics) and `initialized`. There is no codebook loss: the codebook follows the
encoder outputs by EMA and is only written when `train=True` (apply with `mutable=["codebook"]` and an rng
named "codebook"). Batch statistics are global sums over the whole (possibly sharded) batch, and the random
restart vectors come from one replicated key, so under jit on a data-parallel mesh GSPMD all-reduces the
sums and every device computes the same codebook, as the original's all_reduce + broadcast from rank 0 do.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax import lax

Metrics = Dict[str, jax.Array]


def random_rows(key: jax.Array, x: jax.Array, n: int) -> jax.Array:
    """`n` rows of x (M, C) drawn without replacement, as the original's `_tile` + `randperm[:n]`.

    With fewer rows than n, x is tiled ceil(n / M) times and Gaussian noise of std 0.01 / sqrt(C) is added.
    """
    x = jnp.asarray(x)
    m, width = x.shape
    if m >= n:
        return x[jax.random.permutation(key, m)[:n]]
    repeats = -(-n // m)
    perm_key, noise_key = jax.random.split(key)
    idx = jax.random.permutation(perm_key, m * repeats)[:n]
    noise = jax.random.normal(noise_key, (n, width), x.dtype) * (0.01 / math.sqrt(width))
    return x[idx % m] + noise


def quantise(x: jax.Array, k: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """Nearest code by squared L2, ||x||^2 - 2 x.k^T + ||k||^2; returns (codes int32 (M,), fit = mean min distance).

    The distances use full fp32 matmul precision: the original computed them in fp32, and a code choice is
    discrete, so reduced-precision (TF32/bf16) passes would change tokens.
    """
    distance = (jnp.sum(x ** 2, axis=-1, keepdims=True)
                - 2.0 * jnp.matmul(x, k.T, precision=lax.Precision.HIGHEST)
                + jnp.sum(k ** 2, axis=-1)[None, :])
    codes = jnp.argmin(distance, axis=-1).astype(jnp.int32)
    fit = jnp.mean(jnp.min(distance, axis=-1))
    return codes, fit


def prenorm(x: jax.Array) -> jax.Array:
    """The original's `pn` metric: ||x - mean(x)|| / sqrt(numel)."""
    return jnp.linalg.norm(x - jnp.mean(x)) / math.sqrt(x.size)


def ema_update(k: jax.Array, k_sum: jax.Array, k_elem: jax.Array, x: jax.Array, codes: jax.Array,
               k_rand: jax.Array, mu: float, threshold: float
               ) -> Tuple[jax.Array, jax.Array, jax.Array, Metrics]:
    """One EMA step of the codebook (original `update_k`), given the batch x (M, C) and its codes.

    k_sum <- mu k_sum + (1 - mu) onehot^T x; k_elem <- mu k_elem + (1 - mu) counts; codes whose k_elem stays
    >= threshold move to k_sum / k_elem, the others restart at the rows of k_rand.
    """
    l_bins, width = k.shape
    batch_sum = jax.ops.segment_sum(x, codes, num_segments=l_bins)                 # onehot^T x
    batch_elem = jax.ops.segment_sum(jnp.ones_like(codes, x.dtype), codes, num_segments=l_bins)
    new_sum = mu * k_sum + (1.0 - mu) * batch_sum
    new_elem = mu * k_elem + (1.0 - mu) * batch_elem
    usage = new_elem >= threshold
    centres = new_sum / jnp.where(usage, new_elem, 1.0)[:, None]
    new_k = jnp.where(usage[:, None], centres, k_rand)
    prob = batch_elem / jnp.sum(batch_elem)
    metrics = dict(
        entropy=-jnp.sum(prob * jnp.log(prob + 1e-8)),          # how evenly this batch uses the codes
        used_curr=jnp.sum(batch_elem >= threshold).astype(jnp.float32),
        usage=jnp.sum(usage).astype(jnp.float32),               # codes kept (not restarted)
        dk=jnp.linalg.norm(new_k - k) / math.sqrt(k.size),
    )
    return new_k, new_sum, new_elem, metrics


def restore_codebook(k: np.ndarray, num_tokens: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Codebook state for trained codes `k` (original `restore_k`): k_sum = k, k_elem = 1, or, to fine-tune
    with `num_tokens` tokens per step, both scaled by the expected usage num_tokens / l_bins (the original
    passes (sample_length // hop_length) * world_size)."""
    k = np.asarray(k, np.float32)
    scale = 1.0 if num_tokens is None else num_tokens / k.shape[0]
    return dict(k=k, k_sum=k * np.float32(scale), k_elem=np.full((k.shape[0],), scale, np.float32),
                initialized=np.array(True))


class BottleneckBlock(nn.Module):
    """The codebook of one level."""
    l_bins: int
    emb_width: int
    mu: float
    threshold: float = 1.0         # the original's `threshold` (1.0; `revival_threshold` when restored)

    def setup(self):
        shape = (self.l_bins, self.emb_width)
        self.k = self.variable("codebook", "k", jnp.zeros, shape, jnp.float32)
        self.k_sum = self.variable("codebook", "k_sum", jnp.zeros, shape, jnp.float32)
        self.k_elem = self.variable("codebook", "k_elem", jnp.zeros, (self.l_bins,), jnp.float32)
        self.initialized = self.variable("codebook", "initialized", jnp.zeros, (), jnp.bool_)

    def _flatten(self, x: jax.Array) -> jax.Array:
        if x.shape[-1] != self.emb_width:
            raise ValueError(f"bottleneck input has width {x.shape[-1]}, expected emb_width {self.emb_width}")
        return jnp.asarray(x).reshape(-1, self.emb_width).astype(jnp.float32)

    def encode(self, x: jax.Array) -> jax.Array:
        """(N, T, emb_width) -> codes int32 (N, T)."""
        codes, _ = quantise(self._flatten(x), self.k.value)
        return codes.reshape(x.shape[:-1])

    def decode(self, codes: jax.Array) -> jax.Array:
        """codes (N, T) -> codebook vectors (N, T, emb_width)."""
        return jnp.take(self.k.value, codes, axis=0)

    def __call__(self, x: jax.Array, train: bool = False
                 ) -> Tuple[jax.Array, jax.Array, jax.Array, Metrics]:
        """Returns (codes (N, T), x_q (N, T, C), commit_loss, metrics).

        Training: x_q = x + stop_grad(k[codes] - x) (straight-through), the codebook is initialised from the
        first batch if needed, quantises this batch, then takes one EMA step. Eval: x_q is detached and the
        codebook is read-only. Metrics: fit, pn, and when training entropy, used_curr, usage, dk.
        """
        flat = self._flatten(x)
        data = lax.stop_gradient(flat)
        update = train and not self.is_initializing()   # `init` must not consume its dummy batch
        k = self.k.value
        if update:
            init_key, restart_key = jax.random.split(self.make_rng("codebook"))

            def first_batch():
                k0 = random_rows(init_key, data, self.l_bins)
                return k0, k0, jnp.ones((self.l_bins,), jnp.float32)
            k, k_sum, k_elem = lax.cond(self.initialized.value,
                                        lambda: (k, self.k_sum.value, self.k_elem.value), first_batch)
        codes, fit = quantise(data, k)
        x_d = jnp.take(k, codes, axis=0)
        metrics = dict(fit=fit, pn=prenorm(data))
        if update:
            k_rand = random_rows(restart_key, data, self.l_bins)
            new_k, new_sum, new_elem, update_metrics = ema_update(k, k_sum, k_elem, data, codes, k_rand,
                                                                  self.mu, self.threshold)
            self.k.value, self.k_sum.value, self.k_elem.value = new_k, new_sum, new_elem
            self.initialized.value = jnp.ones((), jnp.bool_)
            metrics.update(update_metrics)
        commit_loss = jnp.mean((lax.stop_gradient(x_d) - flat) ** 2)
        x_q = flat + lax.stop_gradient(x_d - flat)
        if not train:
            x_q = lax.stop_gradient(x_q)
        metrics = {name: lax.stop_gradient(value) for name, value in metrics.items()}
        return codes.reshape(x.shape[:-1]), x_q.reshape(x.shape[:-1] + (self.emb_width,)), commit_loss, metrics


class Bottleneck(nn.Module):
    """One BottleneckBlock per level (`level_blocks_L`), level 0 = bottom."""
    l_bins: int
    emb_width: int
    mu: float
    levels: int
    threshold: float = 1.0

    def setup(self):
        self.level_blocks = [BottleneckBlock(self.l_bins, self.emb_width, self.mu, self.threshold)
                             for _ in range(self.levels)]

    def encode(self, xs: Sequence[jax.Array], start_level: int = 0) -> List[jax.Array]:
        """Codes of xs, which hold the encoder outputs of levels start_level, start_level + 1, ..."""
        return [self.level_blocks[start_level + i].encode(x) for i, x in enumerate(xs)]

    def decode(self, zs: Sequence[jax.Array], start_level: int = 0) -> List[jax.Array]:
        """Codebook vectors of zs, which hold the codes of levels start_level, start_level + 1, ..."""
        return [self.level_blocks[start_level + i].decode(z) for i, z in enumerate(zs)]

    def __call__(self, xs: Sequence[jax.Array], train: bool = False):
        """Returns lists over levels: codes, quantised vectors, commit losses, metrics dicts."""
        if len(xs) != self.levels:
            raise ValueError(f"Bottleneck has {self.levels} levels, got {len(xs)} inputs")
        out = [block(x, train) for block, x in zip(self.level_blocks, xs)]
        zs, xs_quantised, commit_losses, metrics = (list(items) for items in zip(*out))
        return zs, xs_quantised, commit_losses, metrics
