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
- `bootstrap`: a percentile confidence interval by resampling each set with replacement: its rows, or whole
  groups of rows (`groups_x`/`groups_y`: e.g. the file each frame came from, since frames of one song are
  correlated and resampling them one by one makes the interval too narrow).
- `kernel_bootstrap`: the same for KAD, keeping each resample's MMD^2 unbiased: a resample holds some rows more
  than once, and the pair of a row with its own copy (kernel value 1) is left out of the within-set averages as
  the diagonal is in the full-set estimator.

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


def _group_codes(groups: Optional[np.ndarray], n: int, name: str, n_resamples: int) -> np.ndarray:
    """Group number (0..G-1, in order of first appearance) of each of n rows; each row its own group when
    `groups` is None. Resampling needs at least 2 groups."""
    if groups is None:
        return np.arange(n)
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.shape[0] != n:
        raise ValueError(f"{name}: expected one group label per row ({n} rows), got shape {groups.shape}")
    _, first, codes = np.unique(groups, return_index=True, return_inverse=True)
    if n_resamples and first.shape[0] < 2:
        raise ValueError(f"{name}: all {n} rows are in one group; resampling by group needs at least 2 groups")
    rank = np.empty_like(first)
    rank[np.argsort(first, kind="stable")] = np.arange(first.shape[0])
    return rank[codes.reshape(-1)]


def _draw_counts(rng: np.random.Generator, codes: np.ndarray) -> np.ndarray:
    """How many times each of the G groups is drawn when G groups are drawn with replacement."""
    n_groups = int(codes.max()) + 1
    return np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)


def _interval(value: float, draws: list, confidence: float) -> Dict[str, object]:
    draws = np.asarray(draws, np.float64)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(draws, [alpha, 1.0 - alpha]).tolist() if draws.size else [value, value]
    return dict(value=value, ci=[lo, hi], confidence=confidence, n_resamples=int(draws.size),
                std=float(draws.std()) if draws.size else 0.0)


def bootstrap(metric: Callable[[np.ndarray, np.ndarray], float], x: np.ndarray, y: np.ndarray,
              n_resamples: int = 100, confidence: float = 0.95, seed: int = 0,
              groups_x: Optional[np.ndarray] = None, groups_y: Optional[np.ndarray] = None) -> Dict[str, object]:
    """metric(x, y) with a percentile bootstrap interval over `n_resamples` resamples of x and y, each drawn
    with replacement: its rows, or (with `groups_x`/`groups_y`, one label per row) its groups of rows, a drawn
    group bringing all its rows. Returns {value, ci: [lo, hi], confidence, n_resamples, std}.

    Resampling rows treats them as independent draws; rows that are not (frames of one song) need their groups
    resampled, else the interval is too narrow. For KAD use `kernel_bootstrap`: the duplicate rows of a
    resample bias an unbiased MMD^2 computed on the resampled rows upward."""
    x, y = np.asarray(x), np.asarray(y)
    gx = _group_codes(groups_x, x.shape[0], "groups_x", n_resamples)
    gy = _group_codes(groups_y, y.shape[0], "groups_y", n_resamples)
    value = metric(x, y)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_resamples):
        cx = _draw_counts(rng, gx)[gx]                   # copies of each row in the resample
        cy = _draw_counts(rng, gy)[gy]
        draws.append(metric(np.repeat(x, cx, axis=0), np.repeat(y, cy, axis=0)))
    return _interval(value, draws, confidence)


class _WithinSet:
    """The within-set term of the unbiased MMD^2 for resamples of one set: the mean kernel value over pairs of
    resampled rows that are not copies of one original row, and (resampling groups) not rows of two different
    copies of one group. A group drawn twice is to its copy what a row drawn twice is to its copy: pairs between
    the two copies have no counterpart among the set's own pairs, and keeping them would weigh the pairs within
    a group (alike when the group is one song) about twice as much as pairs across groups."""

    def __init__(self, k: np.ndarray, codes: np.ndarray):
        """k: the set's kernel matrix (its diagonal is overwritten); codes: `_group_codes` of its rows."""
        self.k0 = k                                      # pairs of distinct original rows: no diagonal
        np.fill_diagonal(self.k0, 0.0)
        self.codes = codes
        size = np.bincount(codes).astype(np.float64)
        per_row = np.zeros(k.shape[0])                   # each row's kernel sum with the other rows of its group
        if size.max() > 1:
            for rows in np.split(np.argsort(codes, kind="stable"), np.cumsum(size.astype(np.int64))[:-1]):
                per_row[rows] = self.k0[np.ix_(rows, rows)].sum(axis=1)
        self.group_sum = np.bincount(codes, weights=per_row)   # ordered pairs within each group
        self.group_pairs = size * (size - 1)

    def mean(self, counts: np.ndarray) -> Tuple[float, np.ndarray]:
        """(mean kernel over the counted pairs, copies of each row) for a resample drawing group g counts[g]
        times."""
        w = counts[self.codes].astype(np.float64)
        across_copies = counts * (counts - 1.0)         # ordered pairs of two different copies of one group
        total = w @ self.k0 @ w - across_copies @ self.group_sum
        pairs = w.sum() ** 2 - w @ w - across_copies @ self.group_pairs
        return (total / pairs if pairs > 0 else np.nan), w


def kernel_bootstrap(x: np.ndarray, y: np.ndarray, bandwidth: Optional[float] = None, n_resamples: int = 100,
                     confidence: float = 0.95, seed: int = 0, groups_x: Optional[np.ndarray] = None,
                     groups_y: Optional[np.ndarray] = None) -> Dict[str, object]:
    """`kernel_distance(x, y, bandwidth)` with a percentile bootstrap interval, resampling as `bootstrap` does
    (rows, or groups with `groups_x`/`groups_y`; the same draws for one seed); the kernel width stays the full
    sets' (default: their median distance).

    The unbiased MMD^2 (Gretton et al. 2012, eq. 3) averages the kernel over pairs of distinct rows. A resample
    holds some rows more than once, and a row paired with its own copy has kernel value 1; counted as a distinct
    pair it biases the resample's MMD^2 upward by about (1 - mean k(x, x'))/n + (1 - mean k(y, y'))/m. Each
    resample's within-set means here leave out the pairs of copies of one original row, and with groups every
    pair from two copies of one group, so the resamples centre on the full-set value again (the cross term has
    no such pairs; resampling G groups, a pair within a group still weighs G/(G-1) times as much as a pair
    across groups on average). A resample without any counted within-set pair (a set of a few single-row groups
    all drawn the same) is drawn again. The kernel matrices are computed once; a resample costs two
    matrix-vector products per set."""
    x, y = _as_rows(x, "reference"), _as_rows(y, "generated")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"embedding sizes differ: {x.shape[1]} vs {y.shape[1]}")
    gx = _group_codes(groups_x, x.shape[0], "groups_x", n_resamples)
    gy = _group_codes(groups_y, y.shape[0], "groups_y", n_resamples)
    sigma = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
    value = kernel_distance(x, y, sigma)
    if not n_resamples:
        return _interval(value, [], confidence)
    g = -1.0 / (2.0 * sigma * sigma)
    within_x, within_y = _WithinSet(np.exp(g * _sq_dists(x, x)), gx), _WithinSet(np.exp(g * _sq_dists(y, y)), gy)
    kxy = np.exp(g * _sq_dists(x, y))
    rng = np.random.default_rng(seed)
    draws = []
    while len(draws) < n_resamples:
        (mx, wx), (my, wy) = within_x.mean(_draw_counts(rng, gx)), within_y.mean(_draw_counts(rng, gy))
        if np.isfinite(mx) and np.isfinite(my):
            draws.append(mx + my - 2.0 * (wx @ kxy @ wy) / (wx.sum() * wy.sum()))
    return _interval(value, draws, confidence)
