"""Metrics on a prior's activations (jukejax.embed): Fréchet audio distance and kernel (MMD) distance with
bootstrap confidence intervals."""
from jukejax.eval.metrics import (bootstrap, frechet_distance, frechet_from_stats, gaussian_fit, kernel_bootstrap,
                                  kernel_distance, median_bandwidth)

__all__ = ["bootstrap", "frechet_distance", "frechet_from_stats", "gaussian_fit", "kernel_bootstrap",
           "kernel_distance", "median_bandwidth"]
