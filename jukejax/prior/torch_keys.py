"""A whole prior's params from a PyTorch state dict (original openai/jukebox or HF-port key names).

The per-module tables live beside their modules (`autoregressive`, `conditioners`); this file only routes
the prefixes of `SimplePrior` (`prior.`, `y_emb.`, `conditioner_blocks.0.`, `prime_prior.`, ...) to them, so
every key is consumed exactly once and anything left over is an error listing it. `original_key_shapes` gives
the same table from the source side (original key -> torch shape), so a checkpoint can be checked whole, before
any tensor is read (`jukejax.convert`); `original_key` brings any key to the names that table uses.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, Mapping, Tuple

import numpy as np
from flax import linen as nn
from flax import traverse_util

from jukejax.checkpoint import CheckpointError
from jukejax.prior.autoregressive import _to_numpy, load_torch_autoregressive, original_key_name
from jukejax.prior.conditioners import (CONV, CONV_TRANSPOSE, hf_to_original_conditioner_key,
                                        label_conditioner_torch_keys, load_torch_label_conditioner,
                                        load_torch_upsampler_conditioner, upsampler_conditioner_torch_keys)
from jukejax.prior.prior import PriorConfig, abstract_params

# HF `JukeboxPrior` names of the 5b_lyrics lyric encoder, inverted from transformers'
# `models/deprecated/jukebox/convert_jukebox.py`.
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
        raise CheckpointError(f"state dict has no {key}")
    value = _to_numpy(pending.pop(key))
    value = value.T if transpose else value
    if value.shape != tuple(shape):
        raise CheckpointError(f"{key} has shape {value.shape}, expected {tuple(shape)}")
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
        raise CheckpointError(f"{len(left)} state-dict key(s) not used by a level-{config.level} prior: {shapes}"
                         f"{' ...' if len(left) > 20 else ''}")
    return params


_LN = {"scale": "weight", "bias": "bias"}
_CONV1D = {"kernel": "w", "bias": "b"}
_COND_RESNET = re.compile(r"^(conditioner_blocks\.0\.cond\.model\.\d+\.0\.)model\.(\d+\.model\.)")


def original_key(key: str, hf: bool = False) -> str:
    """The original `SimplePrior` name of a state-dict key, as `original_key_shapes` lists it: HF-port keys
    (one `priors.N` module, prefix removed) are renamed with `hf=True`; a `module.` prefix is dropped and
    conditioner resnet blocks are called `blocks.{d}` (the released checkpoints' name) either way."""
    key = key[len("module."):] if key.startswith("module.") else key
    if hf:
        key = hf_to_original_prior_key(key)
        for prefix in ("prior.", "prime_prior."):
            if key.startswith(prefix):
                key = prefix + original_key_name(key[len(prefix):])
    return _COND_RESNET.sub(r"\1blocks.\2", key)


def _autoregressive_key(path: Tuple[str, ...], shape: Tuple[int, ...]) -> Tuple[str, Tuple[int, ...]]:
    """(original key, torch shape) of a `ConditionalAutoregressive` param (see its module doc's table)."""
    head = path[0]
    if path == ("x_emb", "embedding"):
        return "x_emb.weight", shape
    if path == ("pos_emb", "pos_emb"):
        return "pos_emb.pos_emb", shape
    if path == ("start_token",):
        return "start_token", shape
    if path == ("x_out", "kernel"):
        return "x_out.weight", shape[::-1]
    if head == "transformer" and len(path) in (4, 5):
        layer = path[1][len("_attn_mods_"):]
        if path[2] in ("ln_0", "ln_1"):
            return f"transformer._attn_mods.{layer}.{path[2]}.{_LN[path[3]]}", shape
        return f"transformer._attn_mods.{layer}.{path[2]}.{path[3]}.{_CONV1D[path[4]]}", shape
    raise ValueError(f"no original key for prior param {'/'.join(path)}")


def original_key_shapes(config: PriorConfig) -> Tuple[Dict[str, Tuple[int, ...]], Dict[str, Tuple[int, ...]]]:
    """(required, optional): original `SimplePrior` key -> torch shape of every tensor `load_torch_prior` reads,
    and the keys a checkpoint may hold or not (`prior.x_out.weight` when tied to x_emb, which the original
    lists in its state dict and HF's safetensors drop). Conditioner resnet blocks are named `blocks.{d}`."""
    if config.hps.scan:       # the table is per layer; the loader stacks scanned layers itself
        unscanned = {name: dataclasses.replace(getattr(config, name), scan=False)
                     for name in ("transformer", "lyric_encoder") if getattr(config, name) is not None}
        config = dataclasses.replace(config, hps=dataclasses.replace(config.hps, scan=False), **unscanned)
    flat = traverse_util.flatten_dict(nn.unbox(abstract_params(config)))
    conditioner_tables = {}
    if config.labels is not None:
        conditioner_tables["y_emb"] = label_conditioner_torch_keys(config.labels)
    if config.upsampler is not None:
        conditioner_tables["conditioner_blocks_0"] = upsampler_conditioner_torch_keys(config.upsampler)
    own = {("prime_state_proj", "kernel"): ("prime_state_proj.w", False),
           ("prime_state_proj", "bias"): ("prime_state_proj.b", False),
           ("prime_state_ln", "scale"): ("prime_state_ln.weight", False),
           ("prime_state_ln", "bias"): ("prime_state_ln.bias", False),
           ("prime_x_out", "kernel"): ("prime_x_out.weight", True)}
    required: Dict[str, Tuple[int, ...]] = {}
    for path, leaf in flat.items():
        shape, head, rest = tuple(leaf.shape), path[0], tuple(path[1:])
        if head in ("prior", "prime_prior"):
            key, torch_shape = _autoregressive_key(rest, shape)
            key = f"{head}.{key}"
        elif head in conditioner_tables:
            name, layout = conditioner_tables[head][rest]
            key = ("y_emb." if head == "y_emb" else "conditioner_blocks.0.") + name
            torch_shape = (shape[::-1] if layout == CONV else
                           (shape[1], shape[2], shape[0]) if layout == CONV_TRANSPOSE else shape)
        elif path in own:
            key, transposed = own[path]
            torch_shape = shape[::-1] if transposed else shape
        else:
            raise ValueError(f"no original key for prior param {'/'.join(path)}")
        required[key] = torch_shape
    optional = {}
    if config.transformer.tied_output:
        optional["prior.x_out.weight"] = (config.transformer.bins, config.transformer.width)
    return required, optional
