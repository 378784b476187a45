"""Read a trained model back from a workdir: `config.json` + the latest Orbax checkpoint.

Kept below `train/` so that command-line tools (VQ-VAE encode/decode, sampling) can load weights without
building an optimiser.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any, Dict, Optional, Tuple

import ml_collections
import numpy as np

from jukejax.errors import UserError, atomic_write_text

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


class CheckpointError(UserError):
    """A checkpoint directory is missing, incomplete or does not match its config."""


def write_config(workdir: str, config: ml_collections.ConfigDict) -> pathlib.Path:
    """Store the run's config beside its checkpoints (atomically), so tools can rebuild the model."""
    path = pathlib.Path(workdir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, config.to_json(indent=2))
    return path


def read_config(workdir: str) -> ml_collections.ConfigDict:
    path = pathlib.Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; expected a training workdir written by train.py")
    try:
        return ml_collections.ConfigDict(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def load_variables(workdir: str, step: Optional[int] = None, use_ema: bool = True
                   ) -> Tuple[ml_collections.ConfigDict, Dict[str, Any], int]:
    """(config, variables, step): `variables` = {"params": EMA (or raw) params, other collections...}."""
    import orbax.checkpoint as ocp

    config = read_config(workdir)
    directory = (pathlib.Path(workdir) / CHECKPOINT_DIR).absolute()
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no checkpoints; train first or point --checkpoint at a workdir")
    manager = ocp.CheckpointManager(directory, item_handlers={"state": ocp.StandardCheckpointHandler()})
    step = manager.latest_step() if step is None else step
    if step is None:
        raise CheckpointError(f"{directory}: holds no complete checkpoint")
    try:
        # Restore onto this process's first device whatever mesh wrote it (a pod checkpoint on one host).
        import jax
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        metadata = manager.item_metadata(step)["state"]
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata,
                              is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    except Exception as e:  # orbax raises many types for truncated or foreign directories
        raise CheckpointError(f"{directory}/{step}: cannot be restored ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    state = restored["state"]
    params = state.get("ema_params") if use_ema and state.get("ema_params") is not None else state["params"]
    variables = {"params": params, **(state.get("extra") or {})}
    check_finite(variables, f"{directory}/{step}")
    return config, variables, int(step)


def check_finite(variables: Any, where: str) -> None:
    """A `CheckpointError` naming the first parameter with a NaN or infinite value: such weights would run and
    sample silently (all-zero tokens), so a model folder that holds them is refused when it is loaded."""
    import jax
    import jax.numpy as jnp

    for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
        if not jnp.issubdtype(leaf.dtype, jnp.inexact):
            continue
        if isinstance(leaf, np.ndarray):
            finite = np.isfinite(leaf).all()
        else:
            # on the leaf's own devices: a caller inside a training mesh (train.init_from) would otherwise
            # have this reduction refused for running on one device of that mesh
            own = jax.sharding.Mesh(np.asarray(list(leaf.devices())), ("d",),
                                    axis_types=(jax.sharding.AxisType.Auto,))
            with jax.set_mesh(own):
                finite = jnp.isfinite(leaf).all()
        if not bool(finite):
            bad = int(np.size(leaf) - np.count_nonzero(np.isfinite(np.asarray(leaf))))
            raise CheckpointError(f"{where}: parameter {jax.tree_util.keystr(path)} holds {bad} NaN or infinite "
                                  f"value(s) of {np.size(leaf)}; these weights cannot be used")


def save_variables(workdir: str, config: ml_collections.ConfigDict, variables: Dict[str, Any], step: int = 0
                   ) -> pathlib.Path:
    """Write a workdir that `load_variables` reads: config.json + an Orbax checkpoint of `variables`
    ({"params": ..., other collections...}) at `step`, in the layout the training loop uses."""
    import orbax.checkpoint as ocp

    path = pathlib.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    state = {"params": variables["params"], "extra": {k: v for k, v in variables.items() if k != "params"},
             "step": step}
    manager = ocp.CheckpointManager((path / CHECKPOINT_DIR).absolute(),
                                    options=ocp.CheckpointManagerOptions(create=True))
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=True)
    manager.wait_until_finished()
    write_config(workdir, config)
    return path
