"""PyTorch Jukebox checkpoints (openai/jukebox files or the HF transformers port) -> jukejax workdirs.

  python -m jukejax.convert --from openai --vqvae vqvae.pth.tar --prior prior_level_0.pth.tar \\
      --prior prior_level_1.pth.tar --prior prior_level_2.pth.tar --model 1b_lyrics --out DIR
  python -m jukejax.convert --from hf HF_MODEL_DIR --out DIR
  python -m jukejax.convert --describe DIR

Output: one workdir per component, each readable by `jukejax.checkpoint.load_variables` and the tools built on
it (`python -m jukejax.vqvae encode ... --checkpoint DIR/vqvae`):

    DIR/vqvae/config.json                     the full ConfigDict (model="vqvae")
    DIR/vqvae/checkpoints/0/                  Orbax: state = {"params", "extra": {"codebook"}, "step"}
    DIR/prior_level_{l}/config.json           model="prior", its vqvae section, vqvae_checkpoint=DIR/vqvae
    DIR/prior_level_{l}/checkpoints/0/        Orbax: state = {"params", "step"}
    DIR/ids/                                  artist/genre id files given with --artist_ids/--genre_ids
                                              (and an HF model's artists/genres/lyrics.json)
    DIR/manifest.json, DIR/README.txt         components, source files (size, sha256), parameter counts, notes

Conversion is a table, not code with special cases: each component's config gives the exact set of original
state-dict keys and torch shapes it needs (`vqvae.torch_keys.original_key_shapes`,
`prior.torch_keys.original_key_shapes`); the checkpoint's keys (HF names renamed to the original's first) must
be exactly that set, or one `ConversionError` lists every missing, unexpected and misshapen key with its
shapes, before a single tensor is read. Then the per-module loaders (`load_torch_state_dict`,
`load_torch_prior`) fill the params, and the filled count is checked against the config's `count_params`.

Memory: tensors are read one at a time from the memory-mapped source (`torch_io`) and converted straight to a
numpy array of the target layout, and the Orbax write adds no copy (`write_workdir`), so peak memory is about one
copy of the converted params (4 bytes a parameter in fp32; with `--dtype bfloat16` the fp32 params are cast leaf
by leaf at the end, so the peak stays one fp32 copy) plus the largest tensor in flight, plus the page cache of
the mapped source, which the OS reclaims as needed (it is not the process's own memory). Measured: a
182M-parameter prior from a 388 MB legacy fp16 file peaks at 925 MB RSS = 190 MB of Python/JAX + 694 MB of fp32
params + 40 MB. A 5B prior (10 GB fp16 file) needs about 20 GB, never file + params + a save copy.
Components are converted and written one after the other, so only one is held at a time.

The VQ-VAE and its codebooks are always stored in fp32: code assignment is an argmin, and reduced precision
changes codes. `--dtype` applies to the priors (fp32 master params by default, whatever the source precision:
the released 5B files hold fp16 Conv1D weights).
"""
from __future__ import annotations

import dataclasses
import datetime
import glob
import importlib
import importlib.util
import json
import logging
import os
import pathlib
import re
import shutil
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import ml_collections
import ml_dtypes
import numpy as np

from jukejax.convert import hf_config as hf_config_lib
from jukejax.convert import torch_io
from jukejax.convert.torch_io import CheckpointReadError, LazyTensor, UnsafeCheckpointError
from jukejax.errors import UserError

__all__ = ["ConversionError", "CheckpointReadError", "UnsafeCheckpointError", "RELEASED_MODELS",
           "convert_openai", "convert_hf", "describe", "load_config_file"]

VQVAE = "vqvae"
MANIFEST = "manifest.json"
README = "README.txt"
IDS = "ids"
DTYPES = ("float32", "bfloat16")
# `--model`: the configs/ modules of openai/jukebox's `make_models.MODELS` (VQ-VAE, upsamplers, top prior).
RELEASED_MODELS = {
    "5b": ("vqvae", "upsampler_level_0", "upsampler_level_1", "prior_5b"),
    "5b_lyrics": ("vqvae", "upsampler_level_0", "upsampler_level_1", "prior_5b_lyrics"),
    "1b_lyrics": ("vqvae", "upsampler_level_0", "upsampler_level_1", "prior_1b_lyrics"),
}
RELEASED_PRIORS = sorted({name for names in RELEASED_MODELS.values() for name in names[1:]})
HF_TOKENIZER_FILES = ("artists.json", "genres.json", "lyrics.json")
_LIST_LIMIT = 40


class ConversionError(UserError):
    """The inputs cannot be converted; the message says which file or field and why."""


def prior_component(level: int) -> str:
    return f"prior_level_{level}"


# ------------------------------------------------------------------------------------------------------------
# Configs


def _repo_configs() -> None:
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
    _repo_configs()
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
    _repo_configs()
    name = "_jukejax_convert_config_" + re.sub(r"\W", "_", str(p.resolve()))
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise ConversionError(f"{p}: not a Python config file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConversionError(f"{p}: has no get_config()")
    return module.get_config()


def _model_type(config: ml_collections.ConfigDict, where: str, want: str) -> None:
    if config.get("model") != want:
        raise ConversionError(f"{where}: config.model is {config.get('model')!r}, expected {want!r}")


# ------------------------------------------------------------------------------------------------------------
# One component: check the key table, load, count


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
        lines.extend(f"  {label}: {row}" for row in rows[:_LIST_LIMIT])
        if len(rows) > _LIST_LIMIT:
            lines.append(f"  ... and {len(rows) - _LIST_LIMIT} more {label}")
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

            _model_type(c.config, c.name, "vqvae")
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

            _model_type(c.config, c.name, "prior")
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


# ------------------------------------------------------------------------------------------------------------
# Output directory


class _Output:
    """Writes into DIR.partial-<pid> and renames it to DIR at the end, so a failed run leaves no half DIR. The
    partial folders of killed runs (their pid no longer runs) are removed when the next run starts."""

    def __init__(self, out: str):
        self.final = pathlib.Path(out).absolute()
        if self.final.exists() and (not self.final.is_dir() or any(self.final.iterdir())):
            raise ConversionError(f"{self.final}: already exists and is not empty; choose a new --out")
        for stale in self.final.parent.glob(f"{glob.escape(self.final.name)}.partial-*"):
            pid = stale.name.rsplit("-", 1)[1]
            if pid.isdigit() and (int(pid) == os.getpid() or not _running(int(pid))):
                shutil.rmtree(stale, ignore_errors=True)
        self.tmp = self.final.with_name(f"{self.final.name}.partial-{os.getpid()}")
        try:
            self.tmp.mkdir(parents=True)
        except OSError as e:
            raise ConversionError(f"--out {self.final}: cannot be created ({e.strerror or e})") from None

    def finish(self) -> pathlib.Path:
        if self.final.exists():
            self.final.rmdir()
        self.tmp.rename(self.final)
        return self.final

    def abandon(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # another user's process
        return True
    return True


def _copy_ids(output: _Output, paths: Sequence[str]) -> List[str]:
    copied = []
    for p in paths:
        src = pathlib.Path(p)
        if not src.is_file():
            raise ConversionError(f"{src}: id file not found")
        dst = output.tmp / IDS / src.name
        if dst.exists():
            raise ConversionError(f"{src}: another id file named {src.name} was already given")
        dst.parent.mkdir(exist_ok=True)
        shutil.copyfile(src, dst)
        copied.append(f"{IDS}/{src.name}")
    return copied


def _file_record(path: pathlib.Path) -> Dict[str, Any]:
    return {"path": str(path.absolute()), "bytes": path.stat().st_size, "sha256": torch_io.sha256(path)}


def _write_all(output: _Output, components: List[Component], source: Dict[str, Any], dtype: str,
               ids: List[str], notes: List[str], progress: Optional[Callable[[str], None]]) -> Dict[str, Any]:
    manifest: Dict[str, Any] = {
        "format": "jukejax-converted-v1",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source, "dtype": dtype, "components": {}, "ids": ids, "notes": notes}
    vqvae_dir = str(output.final / VQVAE) if any(c.name == VQVAE for c in components) else ""
    for component in components:
        if component.name != VQVAE and vqvae_dir:
            component.config.vqvae_checkpoint = vqvae_dir
        state, entry = convert_component(component, dtype)
        write_workdir(output.tmp / component.name, component.config, state)
        del state
        manifest["components"][component.name] = entry
        if progress:
            progress(f"{component.name}: {entry['params']:,} params from {component.source}")
    (output.tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    (output.tmp / README).write_text(_readme(manifest, output.final))
    return manifest


def _readme(manifest: Dict[str, Any], final: pathlib.Path) -> str:
    lines = ["Jukebox weights converted to jukejax (python -m jukejax.convert).", "",
             f"Source: {manifest['source']['from']} checkpoint(s)"]
    lines += [f"  {f['path']} ({f['bytes']:,} bytes, sha256 {f['sha256']})" for f in manifest["source"]["files"]]
    lines += ["", "Components (one jukejax workdir each: config.json + checkpoints/0, Orbax):"]
    for name, e in manifest["components"].items():
        lines.append(f"  {name}/  {e['params']:,} params ({e['stored_dtype']}), config count "
                     f"{e['params_from_config']:,}, from {e['source']}")
    if manifest["ids"]:
        lines += ["", "Artist/genre ids: " + ", ".join(manifest["ids"])]
    if manifest["notes"]:
        lines += ["", "Notes:"] + [f"  - {n}" for n in manifest["notes"]]
    lines += ["", "Use:",
              f"  python -m jukejax.convert --describe {final}          # param counts, checkpoint vs config"]
    if VQVAE in manifest["components"]:
        lines += [f"  python -m jukejax.vqvae encode song.wav --checkpoint {final / VQVAE} --out codes.npz",
                  f"  python -m jukejax.vqvae decode codes.npz --checkpoint {final / VQVAE} --level 0 --out x.wav"]
    lines += ["  In Python: jukejax.checkpoint.load_variables(DIR/<component>) -> (config, variables, step)",
              "", "The Jukebox weights are released under OpenAI's non-commercial license.", ""]
    return "\n".join(lines)


def _run(output: _Output, build) -> Dict[str, Any]:
    try:
        manifest = build()
    except BaseException:
        output.abandon()
        raise
    output.finish()
    return manifest


# ------------------------------------------------------------------------------------------------------------
# openai/jukebox files


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
    _model_type(vq_cfg, vqvae_config or f"--model {model}", "vqvae")
    levels = int(vq_cfg.vqvae.levels)
    prior_cfgs: Dict[int, ml_collections.ConfigDict] = {}
    if model:
        for level, name in enumerate(RELEASED_MODELS[model][1:]):
            prior_cfgs[level] = released_config(name)
    for path in prior_configs:
        cfg = load_config_file(path)
        _model_type(cfg, path, "prior")
        prior_cfgs[int(cfg.prior.level)] = cfg
    notes: List[str] = []
    for level, cfg in prior_cfgs.items():
        if vqvae and cfg.vqvae.to_dict() != vq_cfg.vqvae.to_dict():
            notes.append(f"prior level {level}: its config's vqvae section was replaced by the converted VQ-VAE's")
        if vqvae:
            cfg.vqvae = ml_collections.ConfigDict(vq_cfg.vqvae.to_dict())
    output = _Output(out)

    def build() -> Dict[str, Any]:
        ids = _copy_ids(output, list(artist_ids) + list(genre_ids))
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
                  "files": [_file_record(pathlib.Path(f)) for f in files]}
        return _write_all(output, components, source, dtype, ids, notes, progress)
    return _run(output, build)


# ------------------------------------------------------------------------------------------------------------
# HF transformers JukeboxModel


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
        _repo_configs()
        from configs import vqvae as vqvae_configs
        from configs._prior_defaults import prior_defaults
        released = {name: released_config(name).prior for name in RELEASED_PRIORS}
        vq_cfg, prior_cfgs, notes = hf_config_lib.jukejax_configs(hf, vqvae_configs.get_config(), prior_defaults,
                                                                  released)
    except hf_config_lib.HFConfigError as e:
        message = str(e)
        raise ConversionError(message if message.startswith(str(config_path)) else f"{config_path}: {message}"
                              ) from None
    levels = int(vq_cfg.vqvae.levels)
    output = _Output(out)

    def build() -> Dict[str, Any]:
        extra_ids = [str(config_path.parent / n) for n in HF_TOKENIZER_FILES if (config_path.parent / n).is_file()]
        ids = _copy_ids(output, list(artist_ids) + list(genre_ids) + extra_ids)
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
                                  f"{', '.join(sorted(stray)[:_LIST_LIMIT])}")
        components = [Component(VQVAE, vq_cfg, split[VQVAE], f"{weights} (vqvae.*)")]
        for level in sorted(prior_cfgs):
            index = levels - 1 - level
            components.append(Component(prior_component(level), prior_cfgs[level], split[prior_component(level)],
                                        f"{weights} (priors.{index}.*)", level, f"HF prior index {index}"))
        source_info = {"from": "hf", "config": str(config_path.absolute()),
                       "files": [_file_record(p) for p in [config_path] + files]}
        return _write_all(output, components, source_info, dtype, ids, notes, progress)
    return _run(output, build)


# ------------------------------------------------------------------------------------------------------------
# --describe


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
