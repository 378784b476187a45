"""A prior (top level or upsampler) as a training task, over pre-encoded codes; and `--describe`."""
from __future__ import annotations

from typing import Any, Dict

import jax
import numpy as np
from flax import linen as nn

from jukejax.prior.attention import ATTN_NAMES
from jukejax.prior.prior import Prior, PriorConfig, abstract_params, prior_config


def _count(tree) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def describe(config) -> Dict[str, Any]:
    pc: PriorConfig = prior_config(config)
    params = nn.unbox(abstract_params(pc))
    hop = pc.raw_to_tokens
    return {
        "model": "prior",
        "level": pc.level,
        "params": _count(params),
        "params_by_module": {name: _count(tree) for name, tree in params.items()},
        "n_ctx": pc.n_ctx,
        "n_tokens": pc.n_tokens,
        "hop_length": hop,
        "sample_length": pc.sample_length,
        "context_seconds": pc.sample_length / pc.vqvae.sr,
        "tokens_per_second": pc.vqvae.sr / hop,
        "attention_pattern": [ATTN_NAMES[f] for f in pc.transformer.attn_funcs],
        "sample_rate": pc.vqvae.sr,
    }
