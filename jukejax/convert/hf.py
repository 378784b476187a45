"""An HF transformers `JukeboxModel` folder or weights file -> a jukejax model folder
(`python -m jukejax.convert --from hf`)."""
from __future__ import annotations

import re
from typing import Any, Callable, Dict, Optional, Sequence

from jukejax import presets
from jukejax.convert import hf_config as hf_config_lib
from jukejax.convert import torch_io
from jukejax.convert.component import (DTYPES, HF_TOKENIZER_FILES, LIST_LIMIT, RELEASED_PRIORS, VQVAE, Component,
                                       ConversionError, prior_component)
from jukejax.convert.configs import released_config
from jukejax.convert.output import OutputDir, copy_ids, file_record, write_components, write_output
from jukejax.convert.torch_io import LazyTensor


_HF_PRIOR = re.compile(r"^priors\.(\d+)\.(.+)$")


def convert_hf(source: str, out: str, dtype: str = "float32", artist_ids: Sequence[str] = (),
               genre_ids: Sequence[str] = (), progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Convert an HF `JukeboxModel` folder (or weights file with config.json beside). Returns the manifest."""
    from jukejax.prior.torch_keys import original_key
    from jukejax.vqvae.torch_keys import hf_to_openai_key

    if dtype not in DTYPES:
        raise ConversionError(f"--dtype {dtype!r} must be one of {', '.join(DTYPES)}")
    weights, config_path = torch_io.find_hf_weights(source)
    try:
        hf = hf_config_lib.read_hf_config(config_path)
        released = {name: released_config(name).prior for name in RELEASED_PRIORS}
        vq_cfg, prior_cfgs, notes = hf_config_lib.jukejax_configs(hf, presets.vqvae(), presets.prior, released)
    except hf_config_lib.HFConfigError as e:
        message = str(e)
        raise ConversionError(message if message.startswith(str(config_path)) else f"{config_path}: {message}"
                              ) from None
    levels = int(vq_cfg.vqvae.levels)
    output = OutputDir(out)

    def build() -> Dict[str, Any]:
        extra_ids = [str(config_path.parent / n) for n in HF_TOKENIZER_FILES if (config_path.parent / n).is_file()]
        ids = copy_ids(output, list(artist_ids) + list(genre_ids) + extra_ids)
        tensors, files = torch_io.open_hf_weights(weights)
        from jukejax.config import VQVAEConfig, build as build_section
        vq = build_section(VQVAEConfig, vq_cfg.vqvae, "vqvae")
        split: Dict[str, Dict[str, LazyTensor]] = {VQVAE: {}}
        split.update({prior_component(level): {} for level in prior_cfgs})
        stray = []
        for key, value in tensors.items():
            m = _HF_PRIOR.match(key)
            if key.startswith("vqvae."):
                name, new = VQVAE, hf_to_openai_key(key, vq)
            elif m and int(m.group(1)) < levels:
                name, new = prior_component(levels - 1 - int(m.group(1))), original_key(m.group(2), hf=True)
            else:
                stray.append(f"{key} {value.shape}")
                continue
            if new in split[name]:
                raise ConversionError(f"{weights}: two HF keys map to {new} in {name}")
            split[name][new] = value
        if stray:
            raise ConversionError(f"{weights}: {len(stray)} key(s) belong to no VQ-VAE or prior: "
                                  f"{', '.join(sorted(stray)[:LIST_LIMIT])}")
        components = [Component(VQVAE, vq_cfg, split[VQVAE], f"{weights} (vqvae.*)")]
        for level in sorted(prior_cfgs):
            index = levels - 1 - level
            components.append(Component(prior_component(level), prior_cfgs[level], split[prior_component(level)],
                                        f"{weights} (priors.{index}.*)", level, f"HF prior index {index}"))
        source_info = {"from": "hf", "config": str(config_path.absolute()),
                       "files": [file_record(p) for p in [config_path] + files]}
        return write_components(output, components, source_info, dtype, ids, notes, progress)
    return write_output(output, build)
