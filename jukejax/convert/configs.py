"""The configs a conversion builds its components from: the released models' (`--model`), or a
configs/*.py-style file or ConfigDict JSON (`--vqvae_config`, `--prior_config`)."""
from __future__ import annotations

import importlib
import importlib.util
import json
import pathlib
import re
import sys

import ml_collections

from jukejax.convert.component import ConversionError

def repo_configs() -> None:
    """Make the repository's `configs` package importable (it sits beside `jukejax/`, not inside it)."""
    try:
        importlib.import_module("configs._prior_defaults")
        return
    except ImportError:
        pass
    root = pathlib.Path(__file__).resolve().parents[2]
    if not (root / "configs" / "_prior_defaults.py").is_file():
        raise ConversionError(f"the repository's configs/ folder is not at {root / 'configs'}; run from a source "
                              f"checkout of jukejax")
    sys.path.insert(0, str(root))


def released_config(name: str) -> ml_collections.ConfigDict:
    """`configs/<name>.py`'s `get_config()`."""
    repo_configs()
    return importlib.import_module(f"configs.{name}").get_config()


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
    repo_configs()
    name = "_jukejax_convert_config_" + re.sub(r"\W", "_", str(p.resolve()))
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise ConversionError(f"{p}: not a Python config file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConversionError(f"{p}: has no get_config()")
    return module.get_config()
