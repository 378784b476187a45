"""Distances between two sets of embeddings (rows), for judging generated audio against real audio.

- `frechet_distance`: the Fréchet audio distance (FAD) of Kilgour, Zuluaga, Roblek, Sharifi, "Fréchet Audio
  Distance: A Reference-Free Metric for Evaluating Music Enhancement Algorithms" (Interspeech 2019): fit a
  Gaussian to each set (mean, unbiased covariance) and take the Fréchet (2-Wasserstein) distance between them,
  ||mu_r - mu_g||^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2)). The matrix square root's trace is computed as the sum
  of square roots of the eigenvalues of S_r^(1/2) S_g S_r^(1/2) (symmetric positive semi-definite, so this is
  stable where a general `sqrtm(S_r S_g)` returns complex noise); identical in exact arithmetic.
- `kernel_distance`: KAD, the unbiased squared maximum mean discrepancy (Gretton et al., "A Kernel Two-Sample
  Test", JMLR 2012, eq. 3) with a Gaussian kernel exp(-||x - y||^2 / (2 sigma^2)); sigma defaults to the median
  pairwise distance of the two sets together (symmetric in the sets). No Gaussian assumption; unbiased, so it can
  be slightly negative when the sets come from one distribution. Chung et al. 2025 ("KAD: No More FAD!") use it
  for audio.
- `bootstrap`: a percentile confidence interval by resampling the rows of each set with replacement.

Everything is computed in float64 with numpy.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np


def _as_rows(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name}: expected (n >= 2, dim) embeddings, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: embeddings contain NaN or infinite values")
    return x


def gaussian_fit(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(mean, unbiased covariance) of the rows of x."""
    x = _as_rows(x, "embeddings")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_from_stats(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(s1) + tr(s2) - 2 tr((s1 s2)^(1/2)) for PSD covariances."""
    r = _psd_sqrt(s1)
    m = r @ s2 @ r
    tr_sqrt = float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None))))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """FAD between the Gaussian fits of embeddings x (n, d) and y (m, d)."""
    x, y = _as_rows(x, "reference"), _as_rows(y, "generated")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"embedding sizes differ: {x.shape[1]} vs {y.shape[1]}")
    return frechet_from_stats(*gaussian_fit(x), *gaussian_fit(y))


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.sum(a * a, axis=1)[:, None] + np.sum(b * b, axis=1)[None, :] - 2.0 * a @ b.T
    return np.clip(d, 0.0, None)


def median_bandwidth(x: np.ndarray, y: np.ndarray) -> float:
    """The median pairwise Euclidean distance among the rows of x and y together (distinct pairs)."""
    z = np.concatenate([x, y])
    d = _sq_dists(z, z)[np.triu_indices(z.shape[0], k=1)]
    sigma = float(np.sqrt(np.median(d)))
    return sigma if sigma > 0 else 1.0


def kernel_distance(x: np.ndarray, y: np.ndarray, bandwidth: Optional[float] = None) -> float:
    """Unbiased MMD^2 between x (n, d) and y (m, d) with a Gaussian kernel of width `bandwidth` (default: the
    median heuristic)."""
    x, y = _as_rows(x, "reference"), _as_rows(y, "generated")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"embedding sizes differ: {x.shape[1]} vs {y.shape[1]}")
    sigma = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
    if not sigma > 0:
        raise ValueError(f"kernel bandwidth {bandwidth} must be positive")
    g = -1.0 / (2.0 * sigma * sigma)
    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = np.exp(g * _sq_dists(x, x)), np.exp(g * _sq_dists(y, y)), np.exp(g * _sq_dists(x, y))
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2.0 * kxy.mean())


def bootstrap(metric: Callable[[np.ndarray, np.ndarray], float], x: np.ndarray, y: np.ndarray,
              n_resamples: int = 100, confidence: float = 0.95, seed: int = 0) -> Dict[str, object]:
    """metric(x, y) with a percentile bootstrap interval: rows of x and of y resampled with replacement
    `n_resamples` times. Returns {value, ci: [lo, hi], confidence, n_resamples, std}."""
    value = metric(x, y)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_resamples):
        xi = x[rng.integers(0, x.shape[0], x.shape[0])]
        yi = y[rng.integers(0, y.shape[0], y.shape[0])]
        draws.append(metric(xi, yi))
    draws = np.asarray(draws)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = (np.quantile(draws, [alpha, 1.0 - alpha]).tolist() if n_resamples else [value, value])
    return dict(value=value, ci=[lo, hi], confidence=confidence, n_resamples=n_resamples,
                std=float(draws.std()) if n_resamples else 0.0)
