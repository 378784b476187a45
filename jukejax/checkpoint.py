"""Read a trained model back from a workdir: `config.json` + the latest Orbax checkpoint.

Kept below `train/` so that command-line tools (VQ-VAE encode/decode, sampling) can load weights without
building an optimiser.
"""
from __future__ import annotations

import json
import logging
import pathlib
from typing import Any, Dict, Optional, Tuple

import ml_collections
import numpy as np

from jukejax.errors import UserError, atomic_write_text

log = logging.getLogger("jukejax.checkpoint")
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


def short_reason(e: BaseException) -> str:
    """One short line for an Orbax/TensorStore failure, whose messages run to thousands of characters."""
    text = " ".join(str(e).split())
    for marker in (" [source locations]", " === Source Location"):
        text = text.split(marker)[0]
    return f"{type(e).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


def _open(workdir: str, step: Optional[int]):
    import orbax.checkpoint as ocp

    config = read_config(workdir)
    directory = (pathlib.Path(workdir) / CHECKPOINT_DIR).absolute()
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no checkpoints; train first or point --checkpoint at a workdir")
    manager = ocp.CheckpointManager(directory, item_handlers={"state": ocp.PyTreeCheckpointHandler()})
    steps = sorted(manager.all_steps(), reverse=True) if step is None else [step]
    if not steps:
        raise CheckpointError(f"{directory}: holds no complete checkpoint")
    return config, manager, directory, steps


def _variables_tree(state: Dict[str, Any], use_ema: bool) -> Tuple[str, Dict[str, Any]]:
    """Which key of a saved train state holds the weights (EMA where kept and wanted), and the variables."""
    key = "ema_params" if use_ema and state.get("ema_params") is not None else "params"
    return key, {"params": state[key], **(state.get("extra") or {})}


def variables_metadata(workdir: str, step: Optional[int] = None, use_ema: bool = True
                       ) -> Tuple[ml_collections.ConfigDict, Dict[str, Any], int]:
    """(config, variables as `jax.ShapeDtypeStruct`s, step) of the latest checkpoint (or `step`), read from its
    metadata without loading an array: to check a checkpoint against a model before restoring it."""
    import jax
    config, manager, directory, steps = _open(workdir, step)
    try:
        tree = manager.item_metadata(steps[0])["state"]
    except Exception as e:  # orbax raises many types for truncated or foreign directories
        raise CheckpointError(f"{directory}/{steps[0]}: cannot be read ({short_reason(e)})") from None
    tree = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), dict(getattr(tree, "tree", tree)),
                        is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))
    return config, _variables_tree(tree, use_ema)[1], steps[0]


def load_variables(workdir: str, step: Optional[int] = None, use_ema: bool = True, target: Any = None
                   ) -> Tuple[ml_collections.ConfigDict, Dict[str, Any], int]:
    """(config, variables, step): `variables` = {"params": EMA (or raw) params, other collections...}.

    Only the weights are read (not the optimiser state). `target`, a tree like `variables` of
    `jax.ShapeDtypeStruct`s with shardings, restores each array straight into its sharding and dtype (each
    device reads its own shard: a model larger than one device's memory loads onto a mesh); without it every
    array lands whole on this process's first device in its saved dtype. The latest checkpoint that cannot
    be read falls back to the one before it, with a warning."""
    import jax
    import orbax.checkpoint as ocp

    config, manager, directory, steps = _open(workdir, step)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    for i, candidate in enumerate(steps):
        try:
            saved = manager.item_metadata(candidate)["state"]
            saved = dict(getattr(saved, "tree", saved))
            key, saved_variables = _variables_tree(saved, use_ema)
            want = saved_variables if target is None else target
            # Without a target, this process's first device: the saved metadata's own sharding names the
            # devices of the run that wrote it, which another process or topology does not have.
            restore_args = jax.tree.map(
                lambda m: ocp.ArrayRestoreArgs(
                    sharding=(getattr(m, "sharding", None) if target is not None else None) or device,
                    dtype=m.dtype),
                want, is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))
            item = {key: want["params"], "extra": {k: v for k, v in want.items() if k != "params"}}
            args = {key: restore_args["params"], "extra": {k: v for k, v in restore_args.items() if k != "params"}}
            if not item["extra"]:
                del item["extra"], args["extra"]
            restored = manager.restore(candidate, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
                item=item, restore_args=args, partial_restore=True)))["state"]
        except Exception as e:  # orbax raises many types for truncated or foreign directories
            if i + 1 == len(steps):
                raise CheckpointError(f"{directory}/{candidate}: cannot be restored ({short_reason(e)})") from None
            log.warning("%s/%d: cannot be restored (%s); falling back to step %d", directory, candidate,
                        short_reason(e), steps[i + 1])
            continue
        variables = {"params": restored[key], **(restored.get("extra") or {})}
        check_finite(variables, f"{directory}/{candidate}")
        return config, variables, int(candidate)


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
            # shard by shard on the host: no computation is placed on a mesh (a leaf restored onto a training
            # mesh, or onto one device inside one, is checked the same way)
            finite = all(np.isfinite(np.asarray(shard.data)).all() for shard in leaf.addressable_shards)
        if not bool(finite):
            bad = sum(int(np.size(shard.data) - np.count_nonzero(np.isfinite(np.asarray(shard.data))))
                      for shard in leaf.addressable_shards if shard.replica_id == 0) \
                if not isinstance(leaf, np.ndarray) else \
                int(np.size(leaf) - np.count_nonzero(np.isfinite(leaf)))
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
