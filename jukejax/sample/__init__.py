"""Sampling the priors: fixed-shape KV caches per attention type and the compiled window decode."""
from jukejax.sample.cache import (cache_bytes, cache_logical_axes, cache_spec, init_cache, layer_shape)
from jukejax.sample.decode import (draw, fill_encoder, filter_logits, prefill, prefill_length, row_keys,
                                   sample_window, step, teacher_forced_logits_cached)

__all__ = [
    "cache_bytes", "cache_logical_axes", "cache_spec", "init_cache", "layer_shape", "draw", "fill_encoder",
    "filter_logits", "prefill", "prefill_length", "row_keys", "sample_window", "step",
    "teacher_forced_logits_cached",
]
