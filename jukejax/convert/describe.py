"""`python -m jukejax.convert --describe DIR`: parameter counts of a converted (or trained) folder, from
its checkpoint's metadata (no array is loaded) next to its config's."""
from __future__ import annotations

import logging
import pathlib
from typing import Any, Dict, List, Tuple

import numpy as np

from jukejax.convert.component import VQVAE, ConversionError


def _checkpoint_leaves(workdir: pathlib.Path) -> Tuple[int, Dict[str, Any]]:
    """(step, metadata tree of the latest checkpoint's state), read from Orbax metadata: no array is loaded."""
    import orbax.checkpoint as ocp

    from jukejax.checkpoint import CHECKPOINT_DIR

    directory = (workdir / CHECKPOINT_DIR).absolute()
    manager = ocp.CheckpointManager(directory)
    step = manager.latest_step()
    manager.close()
    if step is None:
        raise ConversionError(f"{directory}: holds no complete checkpoint")
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)    # Orbax warns that the item has no metadata file of its own
    try:
        metadata = ocp.StandardCheckpointer().metadata(directory / str(step) / "state")
    finally:
        absl_logger.setLevel(level)
    tree = getattr(metadata, "item_metadata", metadata)
    tree = getattr(tree, "tree", tree)
    return int(step), tree


def describe(out: str) -> List[Dict[str, Any]]:
    """Per component of a converted (or trained) directory: the parameter count of its checkpoint (sum of the
    stored params' sizes) next to the count its config gives (`count_params`), and whether they agree."""
    import jax

    from jukejax.checkpoint import CONFIG_FILE, read_config
    from jukejax.config import VQVAEConfig, build

    root = pathlib.Path(out)
    if (root / CONFIG_FILE).is_file():
        dirs = [root]                      # one workdir
    elif root.is_dir():
        dirs = sorted((d for d in root.iterdir() if (d / CONFIG_FILE).is_file()),
                      key=lambda d: (d.name != VQVAE, d.name))
    else:
        dirs = []
    if not dirs:
        raise ConversionError(f"{root}: no component workdirs (folders with {CONFIG_FILE}) here")
    rows = []
    for d in dirs:
        config = read_config(str(d))
        step, tree = _checkpoint_leaves(d)
        stored = int(sum(int(np.prod(leaf.shape, dtype=np.int64)) for leaf in jax.tree.leaves(tree["params"])))
        dtypes = sorted({str(leaf.dtype) for leaf in jax.tree.leaves(tree["params"])})
        if config.get("model") == "vqvae":
            from jukejax.vqvae.model import count_params
            expected = count_params(build(VQVAEConfig, config.vqvae, "vqvae"))
        elif config.get("model") == "prior":
            from jukejax.prior.prior import count_params, prior_config
            expected = count_params(prior_config(config))
        else:
            raise ConversionError(f"{d}: config.model is {config.get('model')!r}; expected vqvae or prior")
        codebooks = ((tree.get("extra") or {}).get("codebook") or {}).get("bottleneck") or {}
        rows.append({"component": d.name, "model": config.get("model"), "step": step, "checkpoint_params": stored,
                     "config_params": expected, "match": stored == expected, "dtypes": dtypes,
                     "codebook_values": int(sum(int(np.prod(level["k"].shape)) for level in codebooks.values()))})
    return rows
