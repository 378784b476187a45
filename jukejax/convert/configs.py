"""The configs a conversion builds its components from: the released models' (`--model`, the presets in
`jukejax.presets`, part of the package), or a configs/*.py-style file or ConfigDict JSON (`--vqvae_config`,
`--prior_config`)."""
from __future__ import annotations

import importlib.util
import json
import pathlib
import re

import ml_collections

from jukejax import presets
from jukejax.convert.component import ConversionError


def released_config(name: str) -> ml_collections.ConfigDict:
    """The preset `name` of `jukejax.presets` (the released hyperparameters)."""
    return presets.get(name)


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """`get_config()` of a Python config file (a configs/*.py-style module) or a ConfigDict JSON file."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise ConversionError(f"{p}: config file not found")
    if p.suffix == ".json":
        try:
            return ml_collections.ConfigDict(json.loads(p.read_text()))
        except json.JSONDecodeError as e:
            raise ConversionError(f"{p}: not valid JSON ({e.msg} at line {e.lineno})") from None
    name = "_jukejax_convert_config_" + re.sub(r"\W", "_", str(p.resolve()))
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise ConversionError(f"{p}: not a Python config file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConversionError(f"{p}: has no get_config()")
    return module.get_config()
