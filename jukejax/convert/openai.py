"""openai/jukebox `.pth.tar` files -> a jukejax model folder (`python -m jukejax.convert --from openai`)."""
from __future__ import annotations

import pathlib
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import ml_collections

from jukejax.convert import torch_io
from jukejax.convert.component import (DTYPES, RELEASED_MODELS, VQVAE, Component, ConversionError, check_model_type,
                                       prior_component)
from jukejax.convert.configs import load_config_file, released_config
from jukejax.convert.output import OutputDir, copy_ids, file_record, write_components, write_output
from jukejax.convert.torch_io import LazyTensor


def _detect_level(path: str, obj: Any, tensors: Mapping[str, Any], levels: int) -> Tuple[Optional[int], str]:
    """(level, how) of an openai/jukebox prior file; level None when only the order can tell."""
    hps = obj.get("hps") if isinstance(obj, dict) else None
    if isinstance(hps, dict) and isinstance(hps.get("level"), int) and not isinstance(hps.get("level"), bool):
        return int(hps["level"]), "the checkpoint's hps"
    if not any(k.startswith("conditioner_blocks.0.") for k in tensors):
        return levels - 1, "its keys (no upsampler conditioner: the top prior)"
    if levels == 2:
        return 0, "its keys (the only upsampler level)"
    m = re.search(r"level_(\d+)", pathlib.Path(path).name)
    if m and int(m.group(1)) < levels - 1:
        return int(m.group(1)), "its file name (an upsampler, by its keys)"
    return None, ""


def _strip_module(tensors: Mapping[str, LazyTensor]) -> Dict[str, LazyTensor]:
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in tensors.items()}


def convert_openai(out: str, vqvae: Optional[str] = None, priors: Sequence[str] = (), model: Optional[str] = None,
                   vqvae_config: Optional[str] = None, prior_configs: Sequence[str] = (),
                   artist_ids: Sequence[str] = (), genre_ids: Sequence[str] = (), dtype: str = "float32",
                   progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Convert openai/jukebox `.pth.tar` files (see the module doc). Returns the manifest."""
    from jukejax.prior.torch_keys import original_key

    if dtype not in DTYPES:
        raise ConversionError(f"--dtype {dtype!r} must be one of {', '.join(DTYPES)}")
    if not vqvae and not priors:
        raise ConversionError("nothing to convert: give --vqvae and/or --prior files")
    if model is not None and model not in RELEASED_MODELS:
        raise ConversionError(f"--model {model!r} must be one of {', '.join(RELEASED_MODELS)}")
    # Configs: the released ones for --model, replaced by --vqvae_config / --prior_config where given.
    vq_cfg = load_config_file(vqvae_config) if vqvae_config else (
        released_config(RELEASED_MODELS[model][0]) if model else None)
    if vq_cfg is None:
        raise ConversionError("no VQ-VAE config: give --model (5b, 5b_lyrics, 1b_lyrics) or --vqvae_config")
    check_model_type(vq_cfg, vqvae_config or f"--model {model}", "vqvae")
    levels = int(vq_cfg.vqvae.levels)
    prior_cfgs: Dict[int, ml_collections.ConfigDict] = {}
    if model:
        for level, name in enumerate(RELEASED_MODELS[model][1:]):
            prior_cfgs[level] = released_config(name)
    for path in prior_configs:
        cfg = load_config_file(path)
        check_model_type(cfg, path, "prior")
        prior_cfgs[int(cfg.prior.level)] = cfg
    notes: List[str] = []
    for level, cfg in prior_cfgs.items():
        if vqvae and cfg.vqvae.to_dict() != vq_cfg.vqvae.to_dict():
            notes.append(f"prior level {level}: its config's vqvae section was replaced by the converted VQ-VAE's")
        if vqvae:
            cfg.vqvae = ml_collections.ConfigDict(vq_cfg.vqvae.to_dict())
    output = OutputDir(out)

    def build() -> Dict[str, Any]:
        ids = copy_ids(output, list(artist_ids) + list(genre_ids))
        files: List[str] = []
        components: List[Component] = []
        if vqvae:
            tensors = _strip_module(torch_io.state_dict_in(torch_io.load_torch_file(vqvae), vqvae))
            components.append(Component(VQVAE, vq_cfg, tensors, vqvae))
            files.append(vqvae)
        loaded = []
        for path in priors:
            obj = torch_io.load_torch_file(path)
            tensors = {original_key(k): v for k, v in torch_io.state_dict_in(obj, path).items()}
            level, how = _detect_level(path, obj, tensors, levels)
            loaded.append([path, tensors, level, how])
            files.append(path)
        taken: Dict[int, str] = {}
        for path, _, level, _ in loaded:
            if level is not None:
                if not 0 <= level < levels:
                    raise ConversionError(f"{path}: level {level} is outside the VQ-VAE's {levels} levels")
                if level in taken:
                    raise ConversionError(f"{path} and {taken[level]} are both level-{level} priors")
                taken[level] = path
        free = [lv for lv in range(levels - 1) if lv not in taken]   # upsampler levels, filled in --prior order
        for item in loaded:
            if item[2] is None:
                if not free:
                    raise ConversionError(f"{item[0]}: an upsampler, but every upsampler level already has a file")
                item[2], item[3] = free.pop(0), "the order of --prior (an upsampler, by its keys)"
        for path, tensors, level, how in sorted(loaded, key=lambda item: item[2]):
            if level not in prior_cfgs:
                raise ConversionError(f"{path}: a level-{level} prior (from {how}) but no config for level {level}: "
                                      f"give --model or --prior_config")
            components.append(Component(prior_component(level), prior_cfgs[level], tensors, path, level, how))
        source = {"from": "openai", "model": model,
                  "files": [file_record(pathlib.Path(f)) for f in files]}
        return write_components(output, components, source, dtype, ids, notes, progress)
    return write_output(output, build)
