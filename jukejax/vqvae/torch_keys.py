"""PyTorch VQ-VAE state dicts (openai/jukebox layout, or the HF transformers port's) -> jukejax variables.

The Flax tree mirrors the original state dict, so a key is the Flax path with `_<n>` turned into `.<n>`
and `kernel` into `weight` (`encoders_0/level_blocks_0/model_0_1/model_3/model_1/kernel` <->
`encoders.0.level_blocks.0.model.0.1.model.3.model.1.weight`). Only the layouts differ:
`nn.Conv1d` weights (out, in, k) become (k, in, out); `nn.ConvTranspose1d` weights (in, out, k) become
(k, in, out) flipped in time (see `resnet.conv1d`). The codebooks `bottleneck.level_blocks.L.k` go to the
"codebook" collection with the EMA state of the original's `restore_k`.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from flax import linen as nn
from flax import traverse_util

from jukejax.checkpoint import CheckpointError
from jukejax.config import VQVAEConfig
from jukejax.vqvae.bottleneck import restore_codebook
from jukejax.vqvae.model import abstract_variables

# Decoder transposed convs: `decoders.L.level_blocks.l.model.{i+1}.1.weight`.
_CONV_TRANSPOSE = re.compile(r"^decoders\.\d+\.level_blocks\.\d+\.model\.[1-9]\d*\.1\.weight$")
_CODEBOOK = re.compile(r"^bottleneck\.level_blocks\.(\d+)\.k$")


def torch_key_for(flax_path: Union[str, Sequence[str]]) -> str:
    """Original state-dict key of a Flax param path (a tuple of names or a '/'-joined string)."""
    parts = flax_path.split("/") if isinstance(flax_path, str) else list(flax_path)
    if parts[-1] == "kernel":
        parts[-1] = "weight"
    return re.sub(r"_(\d+)", r".\1", ".".join(parts))


def _to_flax(key: str, value: np.ndarray) -> np.ndarray:
    if key.endswith(".bias"):
        return value
    if _CONV_TRANSPOSE.match(key):
        return np.ascontiguousarray(value.transpose(2, 0, 1)[::-1])   # (in, out, k) -> flipped (k, in, out)
    return np.ascontiguousarray(value.transpose(2, 1, 0))             # (out, in, k) -> (k, in, out)


def load_torch_state_dict(state_dict: Mapping[str, Any], config: VQVAEConfig,
                          num_tokens: Optional[Sequence[int]] = None
                          ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(params, codebook) for `VQVAE(config)` from an openai/jukebox VQ-VAE state dict of numpy arrays.

    A `module.` prefix (DataParallel saves) is dropped. `num_tokens` (one per level) scales the restored
    EMA state for fine-tuning as the original does; leave it None to sample or evaluate. Every source key
    must be consumed and every parameter filled with the right shape, else a ValueError lists them all.
    """
    source = {}
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        source[key] = np.asarray(value, dtype=np.float32)
    abstract = abstract_variables(config)
    expected = traverse_util.flatten_dict(nn.unbox(abstract["params"]))
    params, missing, mismatched, used = {}, [], [], set()
    for path, leaf in expected.items():
        key = torch_key_for(path)
        if key not in source:
            missing.append(key)
            continue
        used.add(key)
        value = _to_flax(key, source[key])
        if value.shape != tuple(leaf.shape):
            mismatched.append(f"{key}: {source[key].shape} -> {value.shape}, expected {tuple(leaf.shape)} "
                              f"for {'/'.join(path)}")
            continue
        params[path] = value
    codebook = {}
    for level in range(config.levels):
        key = f"bottleneck.level_blocks.{level}.k"
        if key not in source:
            missing.append(key)
            continue
        used.add(key)
        if source[key].shape != (config.l_bins, config.emb_width):
            mismatched.append(f"{key}: {source[key].shape}, expected {(config.l_bins, config.emb_width)}")
            continue
        state = restore_codebook(source[key], None if num_tokens is None else num_tokens[level])
        codebook[f"level_blocks_{level}"] = state
    unused = sorted(set(source) - used)
    if missing or mismatched or unused:
        lines = ["VQ-VAE state dict does not match the config:"]
        lines += [f"  missing: {k}" for k in missing]
        lines += [f"  wrong shape: {m}" for m in mismatched]
        lines += [f"  unused: {k}" for k in unused]
        raise CheckpointError("\n".join(lines))
    return traverse_util.unflatten_dict(params), {"bottleneck": codebook}


_HF_RULES = (
    # encoder: downsample_block.{2i+j} -> model.i.j ; proj_out -> model.{down_t}
    (re.compile(r"^(encoders\.\d+\.level_blocks\.)(\d+)\.downsample_block\.(\d+)\.(.*)$"), "encoder"),
    (re.compile(r"^(encoders\.\d+\.level_blocks\.)(\d+)\.proj_out\.(.*)$"), "proj_out"),
    # decoder: proj_in -> model.0 ; upsample_block.{2i+j} -> model.{i+1}.j
    (re.compile(r"^(decoders\.\d+\.level_blocks\.\d+\.)proj_in\.(.*)$"), "proj_in"),
    (re.compile(r"^(decoders\.\d+\.level_blocks\.\d+\.)upsample_block\.(\d+)\.(.*)$"), "decoder"),
)


def hf_to_openai_key(key: str, config: VQVAEConfig) -> str:
    """Rename a key of transformers' `JukeboxVQVAE` state dict to the openai/jukebox layout
    (the inverse of the VQ-VAE rules in transformers'
    `models/deprecated/jukebox/convert_jukebox.py`)."""
    key = key[len("vqvae."):] if key.startswith("vqvae.") else key
    key = re.sub(r"resnet_block\.(\d+)\.conv1d_1\.", r"model.\1.model.1.", key)
    key = re.sub(r"resnet_block\.(\d+)\.conv1d_2\.", r"model.\1.model.3.", key)
    key = re.sub(r"^(bottleneck\.level_blocks\.\d+)\.codebook$", r"\1.k", key)
    for pattern, kind in _HF_RULES:
        m = pattern.match(key)
        if not m:
            continue
        if kind == "encoder":
            n = int(m.group(3))
            return f"{m.group(1)}{m.group(2)}.model.{n // 2}.{n % 2}.{m.group(4)}"
        if kind == "proj_out":
            return f"{m.group(1)}{m.group(2)}.model.{config.downs_t[int(m.group(2))]}.{m.group(3)}"
        if kind == "proj_in":
            return f"{m.group(1)}model.0.{m.group(2)}"
        n = int(m.group(2))
        return f"{m.group(1)}model.{n // 2 + 1}.{n % 2}.{m.group(3)}"
    return key


def load_hf_state_dict(state_dict: Mapping[str, Any], config: VQVAEConfig,
                       num_tokens: Optional[Sequence[int]] = None
                       ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """`load_torch_state_dict` for the HF port's key layout (`JukeboxVQVAE.state_dict()`, or the `vqvae.*`
    keys of a `JukeboxModel`)."""
    renamed = {}
    for key, value in state_dict.items():
        new = hf_to_openai_key(key, config)
        if new in renamed:
            raise ValueError(f"HF keys collide after renaming: {key} -> {new}")
        renamed[new] = value
    return load_torch_state_dict(renamed, config, num_tokens)


def original_key_shapes(config: VQVAEConfig) -> Dict[str, Tuple[int, ...]]:
    """Original state-dict key -> torch shape of every tensor `load_torch_state_dict` reads for `config`
    (the conversion table, inverted to the source side so a checkpoint can be checked before any read)."""
    params = traverse_util.flatten_dict(nn.unbox(abstract_variables(config)["params"]))
    table: Dict[str, Tuple[int, ...]] = {}
    for path, leaf in params.items():
        key, shape = torch_key_for(path), tuple(leaf.shape)
        if key.endswith(".bias"):
            table[key] = shape
        elif _CONV_TRANSPOSE.match(key):
            table[key] = (shape[1], shape[2], shape[0])      # flipped (k, in, out) <- (in, out, k)
        else:
            table[key] = shape[::-1]                        # (k, in, out) <- (out, in, k)
    for level in range(config.levels):
        table[f"bottleneck.level_blocks.{level}.k"] = (config.l_bins, config.emb_width)
    return table
