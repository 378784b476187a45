"""A whole prior's params from a PyTorch state dict (original openai/jukebox or HF-port key names).

The per-module tables live beside their modules (`autoregressive`, `conditioners`); this file only routes
the prefixes of `SimplePrior` (`prior.`, `y_emb.`, `conditioner_blocks.0.`, `prime_prior.`, ...) to them, so
every key is consumed exactly once and anything left over is an error listing it.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Mapping

import numpy as np

from jukejax.prior.autoregressive import _to_numpy, load_torch_autoregressive
from jukejax.prior.conditioners import (hf_to_original_conditioner_key, load_torch_label_conditioner,
                                        load_torch_upsampler_conditioner)
from jukejax.prior.prior import PriorConfig

# HF `JukeboxPrior` names of the 5b_lyrics lyric encoder, inverted from its convert_jukebox.py (reference §5.3).
_HF_ENCODER_RULES = (
    (re.compile(r"^encoder\.proj_in\.weight$"), "prime_state_proj.w"),
    (re.compile(r"^encoder\.proj_in\.bias$"), "prime_state_proj.b"),
    (re.compile(r"^encoder\.final_layer_norm\."), "prime_state_ln."),
    (re.compile(r"^encoder\.lm_head\."), "prime_x_out."),
    (re.compile(r"^encoder\."), "prime_prior."),
)


def hf_to_original_prior_key(key: str) -> str:
    """An HF `JukeboxPrior` key (without the `priors.N.` prefix) under the original `SimplePrior` name."""
    key = hf_to_original_conditioner_key(key)
    for pattern, repl in _HF_ENCODER_RULES:
        if pattern.search(key):
            return pattern.sub(repl, key)
    return key


def _take(pending: Dict[str, Any], key: str, shape, transpose: bool = False) -> np.ndarray:
    if key not in pending:
        raise KeyError(f"state dict has no {key}")
    value = _to_numpy(pending.pop(key))
    value = value.T if transpose else value
    if value.shape != tuple(shape):
        raise ValueError(f"{key} has shape {value.shape}, expected {tuple(shape)}")
    return value


def load_torch_prior(state_dict: Mapping[str, Any], config: PriorConfig, hf: bool = False) -> Dict[str, Any]:
    """Params of `Prior(config)`. Keys are the original's (`prior.x_emb.weight`, `y_emb...`), or the HF
    port's with `hf=True` (keys of one `priors.N` module with that prefix removed)."""
    sd = {(hf_to_original_prior_key(k) if hf else k): v for k, v in state_dict.items()}
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    params: Dict[str, Any] = {"prior": load_torch_autoregressive(sd, config.transformer, prefix="prior.")}
    used = {k for k in sd if k.startswith("prior.")}
    if config.labels is not None:
        params["y_emb"] = load_torch_label_conditioner(sd, config.labels, prefix="y_emb.")
        used |= {k for k in sd if k.startswith("y_emb.")}
    if config.upsampler is not None:
        params["conditioner_blocks_0"] = load_torch_upsampler_conditioner(sd, config.upsampler,
                                                                        prefix="conditioner_blocks.0.")
        used |= {k for k in sd if k.startswith("conditioner_blocks.0.")}
    if config.lyric_encoder is not None:
        enc, width = config.lyric_encoder, config.transformer.width
        params["prime_prior"] = load_torch_autoregressive(sd, enc, prefix="prime_prior.")
        used |= {k for k in sd if k.startswith("prime_prior.")}
        pending = {k: v for k, v in sd.items() if k not in used}
        params["prime_state_proj"] = {"kernel": _take(pending, "prime_state_proj.w", (enc.width, width)),
                                      "bias": _take(pending, "prime_state_proj.b", (width,))}
        params["prime_state_ln"] = {"scale": _take(pending, "prime_state_ln.weight", (width,)),
                                    "bias": _take(pending, "prime_state_ln.bias", (width,))}
        params["prime_x_out"] = {"kernel": _take(pending, "prime_x_out.weight", (width, config.hps.n_vocab),
                                                 transpose=True)}
        used |= {"prime_state_proj.w", "prime_state_proj.b", "prime_state_ln.weight", "prime_state_ln.bias",
                 "prime_x_out.weight"}
    left = sorted(k for k in sd if k not in used)
    if left:
        shapes = ", ".join(f"{k} {tuple(np.shape(_to_numpy(sd[k])))}" for k in left[:20])
        raise ValueError(f"{len(left)} state-dict key(s) not used by a level-{config.level} prior: {shapes}"
                         f"{' ...' if len(left) > 20 else ''}")
    return params
