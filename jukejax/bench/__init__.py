"""Benchmarks of jukejax against transformers' PyTorch Jukebox port: `python -m jukejax.bench --help`.

Rows (docs/benchmarks.md): cached decode of three bench priors at batch 1 and 4, one training step of the
upsampler-shaped prior, and the released VQ-VAE's encode + decode, each next to the machine's roofline
(read bandwidth for decode, matmul rate for the rest), both measured in the same run.

This package imports nothing heavy at import time: `__main__` limits the threads before JAX starts.
"""
