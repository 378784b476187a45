"""One component (the VQ-VAE or one prior) of a PyTorch checkpoint -> jukejax params: the key table is
checked first (every missing, unexpected and misshapen key in one error), then the per-module loaders fill the
params, the count is checked against the config, and the result is written as a jukejax workdir."""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Dict, List, Mapping, Optional, Tuple

import ml_collections
import ml_dtypes
import numpy as np

from jukejax import presets
from jukejax.convert.torch_io import LazyTensor
from jukejax.errors import UserError

VQVAE = "vqvae"
MANIFEST = "manifest.json"
README = "README.txt"
IDS = "ids"
DTYPES = ("float32", "bfloat16")
# `--model`: the presets of openai/jukebox's `make_models.MODELS` (VQ-VAE, upsamplers, top prior).
RELEASED_MODELS = presets.MODELS
RELEASED_PRIORS = sorted({name for names in RELEASED_MODELS.values() for name in names[1:]})
HF_TOKENIZER_FILES = ("artists.json", "genres.json", "lyrics.json")
LIST_LIMIT = 40


class ConversionError(UserError):
    """The inputs cannot be converted; the message says which file or field and why."""


def prior_component(level: int) -> str:
    return f"prior_level_{level}"





def check_model_type(config: ml_collections.ConfigDict, where: str, want: str) -> None:
    if config.get("model") != want:
        raise ConversionError(f"{where}: config.model is {config.get('model')!r}, expected {want!r}")


@dataclasses.dataclass
class Component:
    name: str                                  # "vqvae" or "prior_level_{l}"
    config: ml_collections.ConfigDict
    tensors: Dict[str, LazyTensor]             # original openai/jukebox key -> tensor
    source: str                                # where the tensors come from (for messages and the manifest)
    level: Optional[int] = None
    how: str = ""                              # how the level was found (openai priors)


def _shape(value: Any) -> Tuple[int, ...]:
    return tuple(value.shape)


def check_keys(what: str, tensors: Mapping[str, Any], required: Mapping[str, Tuple[int, ...]],
               optional: Mapping[str, Tuple[int, ...]] = ()) -> None:
    """Raise one ConversionError listing every missing, unexpected and misshapen key (with shapes)."""
    optional = dict(optional or {})
    missing = [(k, s) for k, s in required.items() if k not in tensors]
    unexpected = [(k, _shape(v)) for k, v in tensors.items() if k not in required and k not in optional]
    wrong = [(k, _shape(tensors[k]), s) for k, s in {**required, **optional}.items()
             if k in tensors and _shape(tensors[k]) != tuple(s)]
    if not (missing or unexpected or wrong):
        return
    lines = [f"{what}: the checkpoint does not match the config ({len(missing)} missing, {len(unexpected)} "
             f"unexpected, {len(wrong)} with the wrong shape; keys in openai/jukebox names, torch shapes):"]

    def block(label: str, rows: List[str]) -> None:
        lines.extend(f"  {label}: {row}" for row in rows[:LIST_LIMIT])
        if len(rows) > LIST_LIMIT:
            lines.append(f"  ... and {len(rows) - LIST_LIMIT} more {label}")
    block("missing", [f"{k} {tuple(s)}" for k, s in sorted(missing)])
    block("unexpected", [f"{k} {s}" for k, s in sorted(unexpected)])
    block("wrong shape", [f"{k} {got}, expected {tuple(want)}" for k, got, want in sorted(wrong)])
    raise ConversionError("\n".join(lines))


def _size(tree: Any) -> int:
    import jax
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(tree)))


def _cast(params: Dict[str, Any], dtype: str) -> Dict[str, Any]:
    """Cast every leaf, dropping each fp32 leaf as soon as its copy exists (peak: one fp32 copy + one leaf)."""
    from flax import traverse_util

    if dtype == "float32":
        return params
    target = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    flat = traverse_util.flatten_dict(params)
    params.clear()
    for key in list(flat):
        flat[key] = np.asarray(flat[key]).astype(target)
    return traverse_util.unflatten_dict(flat)


def _source_dtypes(tensors: Mapping[str, LazyTensor]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for t in tensors.values():
        counts[t.dtype.name] = counts.get(t.dtype.name, 0) + t.size
    return dict(sorted(counts.items()))


def _finite(key: str, tensor: LazyTensor, source: str) -> LazyTensor:
    """`tensor`, refused with a ConversionError naming it when a read finds a NaN or infinite value."""
    def check(value: np.ndarray) -> None:
        if value.dtype.kind == "f" or value.dtype == ml_dtypes.bfloat16:
            finite = np.isfinite(value)
            if not finite.all():
                raise ConversionError(f"{source}: tensor {key} {tuple(value.shape)} holds "
                                      f"{value.size - int(np.count_nonzero(finite))} NaN or infinite value(s); "
                                      f"such weights would sample silence, so nothing is converted")
    return tensor.checked(check) if isinstance(tensor, LazyTensor) else tensor


def convert_component(component: Component, dtype: str = "float32") -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(Orbax state, manifest entry) of one component. Raises ConversionError on any mismatch or on a tensor
    with a NaN or infinite value."""
    from jukejax.checkpoint import CheckpointError
    from jukejax.config import ConfigError, VQVAEConfig, build

    c = dataclasses.replace(component, tensors={k: _finite(k, v, component.source)
                                                 for k, v in component.tensors.items()})
    try:
        if c.name == VQVAE:
            from jukejax.vqvae.model import count_params
            from jukejax.vqvae.torch_keys import load_torch_state_dict, original_key_shapes

            check_model_type(c.config, c.name, "vqvae")
            vq = build(VQVAEConfig, c.config.get("vqvae"), "vqvae")
            check_keys(f"{c.source} (VQ-VAE)", c.tensors, original_key_shapes(vq))
            params, codebook = load_torch_state_dict(c.tensors, vq)
            state = {"params": params, "extra": {"codebook": codebook}, "step": np.int32(0)}
            expected = count_params(vq)
            extra = {"codebook_values": int(sum(np.size(v["k"]) for v in codebook["bottleneck"].values())),
                     "stored_dtype": "float32"}
        else:
            from jukejax.prior.prior import count_params, prior_config
            from jukejax.prior.torch_keys import load_torch_prior, original_key_shapes

            check_model_type(c.config, c.name, "prior")
            pc = prior_config(c.config)
            required, optional = original_key_shapes(pc)
            check_keys(f"{c.source} (level-{pc.level} prior)", c.tensors, required, optional)
            params = load_torch_prior(c.tensors, pc)
            expected = count_params(pc)
            params = _cast(params, dtype)
            state = {"params": params, "step": np.int32(0)}
            extra = {"stored_dtype": dtype}
    except ConfigError as e:
        raise ConversionError(f"{c.name}: {e}") from None
    except CheckpointError as e:      # the state dict does not match the config (the loaders' own checks)
        raise ConversionError(f"{c.source}: {e}") from None
    got = _size(state["params"])
    if got != expected:
        raise ConversionError(f"{c.name}: filled {got} parameters but the config has {expected}")
    entry = {"workdir": c.name, "source": c.source, "params": got, "params_from_config": expected,
             "source_dtypes": _source_dtypes(c.tensors), **extra}
    if c.level is not None:
        entry["level"] = c.level
    if c.how:
        entry["level_from"] = c.how
    return state, entry


def write_workdir(workdir: pathlib.Path, config: ml_collections.ConfigDict, state: Dict[str, Any]) -> None:
    """config.json + an Orbax checkpoint at step 0, in the layout `jukejax.checkpoint.load_variables` reads.

    Written synchronously, uncompressed, and without Orbax's defensive copy of numpy leaves (nothing mutates them
    here), so saving adds no second copy of the params: with those defaults a 180M-parameter prior peaked at
    twice its size while saving. Uncompressed costs little on disk: trained weights barely compress."""
    import orbax.checkpoint as ocp

    from jukejax.checkpoint import CHECKPOINT_DIR, write_config

    write_config(str(workdir), config)
    th = ocp.type_handlers
    registry = th.create_type_handler_registry(*[
        (ty, th.NumpyHandler(deepcopy_host_arrays=False) if ty is np.ndarray else th.get_type_handler(ty))
        for ty in th.supported_types()])
    manager = ocp.CheckpointManager(
        (workdir / CHECKPOINT_DIR).absolute(),
        options=ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False),
        item_handlers={"state": ocp.PyTreeCheckpointHandler(type_handler_registry=registry, use_compression=False)})
    try:
        manager.save(0, args=ocp.args.Composite(state=ocp.args.PyTreeSave(state)))
        manager.wait_until_finished()
    finally:
        manager.close()
