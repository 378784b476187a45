"""Compile jukejax's own steps for a TPU slice ahead of time, on any machine, and say whether they fit.

    python -m jukejax.aot --config=configs/prior_1b_lyrics.py --compile_for=v5e:2x2 [--sample --n_samples=4]
    python train.py --config=configs/prior_5b_lyrics.py --compile_for=v5p:4x4x4 --json

The TPU compiler ships in libtpu (`pip install 'jukejax[tpu]'`) and runs on a CPU: a topology name such as
`v5e:2x2`, `v5p:2x2x1` or `v4:2x2x1` gives devices to place abstract inputs on (`v5e:1x1` is one chip of a
`v5e:2x2`). The functions compiled are the ones that run: the train step (loss, gradients, optimizer, EMA) with
the train state and batch sharded as the trainer shards them, and per sampling level the window (prefill +
token loop, caches donated) plus the VQ-VAE decoder. Per device the report gives the compiler's memory plan
(arguments, outputs, temporaries, generated code) against the chip's HBM, its FLOPs, its own estimate of the
step time (the `estimated_cycles` of every op, loops counted per trip, at the chip's clock) beside the
roofline bound (FLOPs at peak, or the bytes that must cross HBM at its bandwidth), the collectives, and the
compile time. A plan over HBM is refused in one line naming the largest inputs and what would fit.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import NamedSharding

from jukejax import hlo, parallel
from jukejax.config import MeshConfig
from jukejax.errors import UserError


class AOTError(UserError):
    """A topology that cannot be compiled for, or a plan that does not fit its chips."""


@dataclasses.dataclass(frozen=True)
class Chip:
    """Public per-chip figures. `clock_hz` converts the compiler's cycle estimates to seconds."""
    name: str
    hbm_bytes: float
    hbm_bandwidth: float     # bytes/s
    peak_flops: float        # dense bf16 FLOP/s
    clock_hz: float


CHIPS = {
    "v4": Chip("TPU v4", 32 * 2**30, 1.2e12, 275e12, 1.05e9),
    "v5e": Chip("TPU v5e", 16e9, 0.82e12, 197e12, 1.5e9),
    "v5p": Chip("TPU v5p", 95e9, 2.77e12, 459e12, 1.75e9),
    "v6e": Chip("TPU v6e", 32e9, 1.64e12, 918e12, 1.75e9),
    # For comparison in the docs only (the TPU compiler cannot target them).
    "h100": Chip("H100 SXM", 80e9, 3.35e12, 989e12, 1.83e9),
    "h200": Chip("H200", 141e9, 4.8e12, 989e12, 1.83e9),
}
TPU_CHIPS = ("v4", "v5e", "v5p", "v6e")
HLO_DIR: Optional[str] = None   # --hlo_dir: where to write each compiled module's optimised HLO


@dataclasses.dataclass
class Target:
    """A TPU slice to compile for: its devices and the figures of one device (a megacore chip or a core)."""
    topology: str
    chip: Chip
    devices: List[Any]
    per_device: float        # the fraction of a chip one device is (0.5 where each core is its own device)

    @property
    def hbm_bytes(self) -> float:
        return self.chip.hbm_bytes * self.per_device

    @property
    def hbm_bandwidth(self) -> float:
        return self.chip.hbm_bandwidth * self.per_device

    @property
    def peak_flops(self) -> float:
        return self.chip.peak_flops * self.per_device


def target(topology: str) -> Target:
    """The devices of a TPU topology such as `v5e:2x2`, `v5p:2x2x1`, `v4:2x2x1`; `CHIP:1x1` is one chip."""
    kind, _, shape = topology.partition(":")
    if kind not in TPU_CHIPS or not shape or not all(p.isdigit() and int(p) > 0 for p in shape.split("x")):
        raise AOTError(f"--compile_for {topology!r}: expected CHIP:AxB[xC] with CHIP one of {', '.join(TPU_CHIPS)} "
                       f"(e.g. v5e:2x2, v5p:2x2x1)")
    dims = [int(p) for p in shape.split("x")]
    chips = math.prod(dims)
    one_chip = chips == 1
    if one_chip:  # single-chip names are refused by the topology service; take one chip of a 2x2
        shape = "x".join(["2", "2"] + ["1"] * (len(dims) - 2))
    try:
        from jax.experimental import topologies
        # Compiling needs no exclusive hold on a TPU: let several compiling processes load libtpu at once.
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
        desc = topologies.get_topology_desc(platform="tpu", topology_name=f"{kind}:{shape}")
    except Exception as e:  # noqa: BLE001 - libtpu missing, or a topology it does not know
        message = " ".join(str(e).split())[:300]
        hint = " (install the TPU compiler: pip install 'jukejax[tpu]')" if "libtpu" in message.lower() or \
            "tpu" not in message.lower() else ""
        raise AOTError(f"--compile_for {topology}: the TPU compiler cannot make this topology: {message}{hint}") \
            from None
    devices = list(desc.devices)
    built_chips = 4 if one_chip else chips
    per_device = built_chips / len(devices)
    if one_chip:
        devices = devices[:max(1, len(devices) // 4)]
    return Target(topology, CHIPS[kind], devices, per_device)


def mesh_for(tgt: Target, mesh: MeshConfig):
    return parallel.make_mesh(mesh, devices=tgt.devices)


def _fmt_seconds(t: float) -> str:
    return f"{t:.2f} s" if t >= 1 else f"{t * 1e3:.2f} ms" if t >= 1e-3 else f"{t * 1e6:.1f} us"


def _fmt_bytes(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


# ------------------------------------------------------------------------------------------------------------
# The report of one compiled function

def analyse(name: str, compiled, tgt: Target, compile_seconds: float, must_move_bytes: Optional[float] = None,
            loop_floor_bytes: Optional[float] = None) -> Dict[str, Any]:
    """Per-device figures of one compiled executable (see the module docstring).

    must_move_bytes: bytes the whole call must move through HBM (default: its arguments read once and its
    outputs written once). loop_floor_bytes: for a token loop, what one trip must read (weights plus the
    cache slots it attends to); its body's estimate is then reported per trip beside that floor.
    """
    mem = compiled.memory_analysis()
    memory = {"argument_bytes": int(mem.argument_size_in_bytes), "output_bytes": int(mem.output_size_in_bytes),
              "alias_bytes": int(mem.alias_size_in_bytes), "temp_bytes": int(mem.temp_size_in_bytes),
              "generated_code_bytes": int(mem.generated_code_size_in_bytes)}
    total = (memory["argument_bytes"] + memory["output_bytes"] - memory["alias_bytes"] + memory["temp_bytes"]
             + memory["generated_code_bytes"])
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0
    text = compiled.as_text()
    if HLO_DIR:
        os.makedirs(HLO_DIR, exist_ok=True)
        with open(os.path.join(HLO_DIR, f"{name.replace(' ', '_')}.{tgt.topology.replace(':', '_')}.hlo"), "w") as f:
            f.write(text)
    module = hlo.Module(text)
    cycles, exact = module.cycles()
    if must_move_bytes is None:
        must_move_bytes = memory["argument_bytes"] + memory["output_bytes"]
    bound = max(flops / tgt.peak_flops, must_move_bytes / tgt.hbm_bandwidth)
    estimate = cycles / tgt.chip.clock_hz
    report = {
        "name": name, "topology": tgt.topology, "chip": tgt.chip.name, "devices": len(tgt.devices),
        "memory_per_device": dict(memory, total_bytes=total), "hbm_bytes_per_device": int(tgt.hbm_bytes),
        "fits": total <= tgt.hbm_bytes, "hbm_fraction": total / tgt.hbm_bytes,
        "flops_per_device": flops,
        "estimated_seconds": estimate, "estimate_loops_exact": exact,
        "roofline_seconds": bound, "roofline": {"compute_seconds": flops / tgt.peak_flops,
                                                "memory_seconds": must_move_bytes / tgt.hbm_bandwidth,
                                                "must_move_bytes": int(must_move_bytes)},
        "estimate_over_roofline": estimate / bound if bound > 0 else None,
        "collectives": module.collectives(), "compile_seconds": compile_seconds,
    }
    if loop_floor_bytes is not None:
        loops = sorted(module.loops(), key=lambda l: -(l[1] or 0))
        if loops:
            body, trips, trip_cycles = loops[0]
            floor = loop_floor_bytes / tgt.hbm_bandwidth
            rate = compiler_stream_rate(tgt)
            sync = trip_cycles / tgt.chip.clock_hz
            streamed = module.async_copy_bytes(body) / tgt.hbm_bandwidth
            report["step"] = {"trips": trips, "estimated_seconds": sync,
                              # the summed estimates leave out the asynchronous copies (weights streamed into
                              # on-chip memory); with them, the step takes between these two
                              "async_copy_bytes": module.async_copy_bytes(body),
                              "overlapped_seconds": max(sync, streamed), "serial_seconds": sync + streamed,
                              "overlapped_over_floor": max(sync, streamed) / floor,
                              "floor_bytes": int(loop_floor_bytes), "floor_seconds": floor,
                              "estimate_over_floor": trip_cycles / tgt.chip.clock_hz / floor,
                              "compiler_stream_bytes_per_cycle": rate,
                              "estimate_over_compiler_floor": trip_cycles / (loop_floor_bytes / rate),
                              "largest_ops": module.largest(body, 6),
                              "large_per_step_rewrites": _large_rewrites(module, body)}
    return report


_STREAM_RATES: Dict[str, float] = {}


def compiler_stream_rate(tgt: Target) -> float:
    """Bytes per cycle at which the compiler's own cost model streams weights from HBM at best: its estimate
    for an (8, 8192) x (8192, 8192) bf16 product on one device (128 MB read, almost nothing computed). On v5e
    this is ~407 bytes/cycle = 0.61 TB/s at 1.5 GHz, 74% of the 0.82 TB/s specification (v5p: ~1011, 64%), so
    no step the compiler estimates can come nearer its specification floor than that; dividing by this rate
    gives the floor in the estimate's own terms."""
    key = tgt.chip.name
    if key not in _STREAM_RATES:
        mesh = jax.sharding.Mesh(np.array(tgt.devices[:1]), ("d",))
        spec = lambda shape: jax.ShapeDtypeStruct(shape, jnp.bfloat16,  # noqa: E731
                                                  sharding=NamedSharding(mesh, jax.sharding.PartitionSpec()))
        n = 8192
        compiled, _ = _compile(jax.jit(lambda x, w: x @ w), spec((8, n)), spec((n, n)))
        _STREAM_RATES[key] = n * n * 2 / hlo.Module(compiled.as_text()).cycles()[0]
    return _STREAM_RATES[key]


def _large_rewrites(module: hlo.Module, body: str, threshold: int = 1 << 20) -> List[Dict[str, Any]]:
    """Converts, selects and copies of 1 MB or more inside a token loop's body (fusions included): what a
    per-step weight conversion, a table read through a select or a cache copy compiles to. Empty when the
    step touches only what it must."""
    out = []
    for opcode in ("convert", "select", "copy"):
        for inst in module.ops_in(body, opcode):
            if inst.bytes >= threshold:
                out.append({"op": inst.name, "opcode": opcode, "bytes": inst.bytes, "shape": inst.shape.split("{")[0]})
    return sorted(out, key=lambda r: -r["bytes"])


def refuse_if_over(report: Dict[str, Any], largest_inputs: Sequence[Tuple[str, int]], advice: str) -> None:
    """One line naming what does not fit and what would, when the plan exceeds HBM."""
    if report["fits"]:
        return
    m = report["memory_per_device"]
    inputs = ", ".join(f"{name} {_fmt_bytes(b)}" for name, b in largest_inputs[:3])
    raise AOTError(f"{report['name']} does not fit {report['topology']}: {_fmt_bytes(m['total_bytes'])} per device "
                   f"of {_fmt_bytes(report['hbm_bytes_per_device'])} HBM (arguments {_fmt_bytes(m['argument_bytes'])}, "
                   f"temporaries {_fmt_bytes(m['temp_bytes'])}; largest inputs: {inputs}); {advice}")


def _largest_leaves(tree: Any, prefix: str = "") -> List[Tuple[str, int]]:
    """(path, bytes on one device) of the leaves of a tree of sharded ShapeDtypeStructs, largest first."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        shape = leaf.sharding.shard_shape(tuple(leaf.shape)) if leaf.sharding is not None else leaf.shape
        out.append((prefix + jax.tree_util.keystr(path), int(np.prod(shape)) * jnp.dtype(leaf.dtype).itemsize))
    return sorted(out, key=lambda x: -x[1])


def _bytes(tree: Any) -> int:
    return sum(b for _, b in _largest_leaves(tree))


def _abstract(tree: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings)


class _OutOfHBM(Exception):
    """The TPU compiler's own refusal: its temporaries alone exceed HBM (no memory plan to report)."""

    def __init__(self, message: str, temp_bytes: Optional[float]):
        super().__init__(message)
        self.temp_bytes = temp_bytes


def _compile_or_refuse(what: str, tgt: Target, largest: Sequence[Tuple[str, int]], advice, fn, *args, **kwargs):
    """`_compile`, with the compiler's out-of-HBM error turned into the one-line refusal; `advice(temp_bytes)`
    says what would fit."""
    try:
        return _compile(fn, *args, **kwargs)
    except _OutOfHBM as e:
        temp = f"{_fmt_bytes(e.temp_bytes)} of temporaries" if e.temp_bytes else "its temporaries"
        inputs = ", ".join(f"{name} {_fmt_bytes(b)}" for name, b in largest[:3])
        raise AOTError(f"{what} does not fit {tgt.topology}: the compiler needs {temp} per device of "
                       f"{_fmt_bytes(tgt.hbm_bytes)} HBM (largest inputs: {inputs}); {advice(e.temp_bytes)}") from None


def _compile(fn, *args, **kwargs):
    # A TPU executable cannot be read back on this machine: keep it out of the persistent compilation cache
    # (once the cache is in use, only its minimum compile time keeps an entry out).
    min_seconds = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float("inf"))
    try:
        start = time.perf_counter()
        try:
            compiled = fn.lower(*args, **kwargs).compile()
        except jax.errors.JaxRuntimeError as e:
            message = str(e)
            if "RESOURCE_EXHAUSTED" not in message:
                raise
            found = re.search(r"temporaries \(([\d.]+)G\)", message)
            raise _OutOfHBM(message, float(found.group(1)) * 2**30 if found else None) from None
        return compiled, time.perf_counter() - start
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_seconds)


# ------------------------------------------------------------------------------------------------------------
# Training

def _abstract_batch(config, mesh) -> Dict[str, jax.ShapeDtypeStruct]:
    """The host batch a task's pipeline yields, as sharded abstract arrays."""
    from jukejax.config import DataConfig, build
    data = build(DataConfig, config.get("data"), "data")
    b = data.batch_size
    if config.get("model") == "vqvae":
        shapes = {"audio": ((b, data.sample_length, 1), jnp.float32)}
    else:
        from jukejax.prior.prior import prior_config
        pc = prior_config(config)
        shapes = {"z": ((b, pc.n_ctx), jnp.int32)}
        if pc.upsampler is not None:
            shapes["z_cond"] = ((b, pc.cond_length), jnp.int32)
        if pc.labels:
            shapes["y"] = ((b, pc.y_width), jnp.int32)
    return {k: jax.ShapeDtypeStruct(s, d, sharding=parallel.fitted_batch_sharding(mesh, s))
            for k, (s, d) in shapes.items()}


def _task(config):
    from jukejax.config import DataConfig, VQVAEConfig, build
    data = build(DataConfig, config.get("data"), "data")
    if config.get("model") == "vqvae":
        from jukejax.train import vqvae_task
        from jukejax.vqvae import losses
        # The loss normalisers are data statistics, scalars in the compiled step: any values compile the same.
        return vqvae_task.VQVAETask(build(VQVAEConfig, config.get("vqvae"), "vqvae"), data,
                                    losses.Bandwidth(l1=1.0, l2=1.0, spec=1.0))
    from jukejax.prior.prior import prior_config
    from jukejax.train import prior_task
    return prior_task.PriorTask(prior_config(config), data, codes_dir="")


def compile_train(config, topology: str) -> Dict[str, Any]:
    """Compile `train.py`'s step for `config` on `topology` (the config's mesh and global batch)."""
    from jukejax.train import loop, run as train_run
    from jukejax.train import state as state_lib
    tgt = target(topology)
    lc = train_run.loop_config(config)
    mesh = mesh_for(tgt, lc.mesh)
    task = _task(config)
    tx = state_lib.make_optimizer(lc.optim)
    batch = _abstract_batch(config, mesh)
    shardings, abstract = loop.train_state_shardings(task, tx, lc, mesh, batch)
    state = _abstract(abstract, shardings)
    largest = _largest_leaves(state.params, "params") + _largest_leaves(batch, "batch")
    largest.sort(key=lambda x: -x[1])
    state_bytes = _bytes(state)
    if state_bytes > tgt.hbm_bytes:  # refuse before a long compile: the train state alone is too big
        raise AOTError(f"train step does not fit {topology}: its train state alone is {_fmt_bytes(state_bytes)} "
                       f"per device of {_fmt_bytes(tgt.hbm_bytes)} HBM (largest: "
                       f"{', '.join(f'{n} {_fmt_bytes(b)}' for n, b in largest[:3])}); "
                       f"{_train_advice(config, tgt, mesh, state_bytes, None)}")
    def advice(temp_bytes):
        room = 0.9 * tgt.hbm_bytes - state_bytes
        if temp_bytes and room > 0:
            return _activation_advice(config, mesh, int(batch[next(iter(batch))].shape[0]), room, temp_bytes)
        return _train_advice(config, tgt, mesh, state_bytes, None)
    with jax.set_mesh(mesh):
        compiled, seconds = _compile_or_refuse("train step", tgt, largest, advice,
                                               loop.jit_train_step(task, tx, lc.optim), state, batch)
    report = analyse("train step", compiled, tgt, seconds)
    if config.get("model") == "prior":
        # cost_analysis counts a scanned layer stack's body once; 6 x matmul params x tokens does not
        _model_flops(report, config, tgt, batch)
    report.update(mesh=dict(zip(parallel.MESH_AXES, mesh.devices.shape)), global_batch=int(batch[next(iter(batch))]
                                                                                           .shape[0]),
                  train_state_bytes_per_device=state_bytes,
                  replicated_params=parallel.replicated_params(
                      _boxed_params(config), mesh))
    refuse_if_over(report, largest, _train_advice(config, tgt, mesh, state_bytes, report))
    return report


def _model_flops(report: Dict[str, Any], config, tgt: Target, batch) -> None:
    """Adds the prior's model FLOPs per device (6 x the transformer's params x tokens, attention left out)
    and takes them as the compute bound where they exceed what the compiler counted."""
    from jukejax.prior.prior import abstract_params, prior_config
    pc = prior_config(config)
    params = nn.unbox(abstract_params(pc))["prior"]["transformer"]
    n = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))
    tokens = batch["z"].shape[0] * pc.transformer.n_ctx
    flops = 6.0 * n * tokens / len(tgt.devices)
    report["model_flops_per_device"] = flops
    if flops > report["flops_per_device"]:
        compute = flops / tgt.peak_flops
        report["roofline"]["compute_seconds"] = compute
        report["roofline_seconds"] = max(compute, report["roofline"]["memory_seconds"])
        report["estimate_over_roofline"] = report["estimated_seconds"] / report["roofline_seconds"]


def _boxed_params(config):
    if config.get("model") == "vqvae":
        from jukejax.config import VQVAEConfig, build
        from jukejax.vqvae.model import abstract_variables
        return abstract_variables(build(VQVAEConfig, config.get("vqvae"), "vqvae"))["params"]
    from jukejax.prior.prior import abstract_params, prior_config
    return abstract_params(prior_config(config))


def _train_advice(config, tgt: Target, mesh, state_bytes: int, report: Optional[Dict[str, Any]]) -> str:
    """A mesh or batch that would fit, from how the plan splits: the train state shrinks with fsdp, the
    temporaries (activations) with the per-device batch."""
    hbm = tgt.hbm_bytes
    fsdp = mesh.shape["fsdp"]
    need = state_bytes if report is None else report["memory_per_device"]["total_bytes"]
    factor = 2 ** math.ceil(math.log2(max(need / (0.9 * hbm), 1.0)))
    parts = [f"try mesh fsdp={fsdp * factor} ({len(tgt.devices) * factor} devices, the train state split "
             f"{factor}x further)"]
    if report is not None:
        temp = report["memory_per_device"]["temp_bytes"]
        room = 0.9 * hbm - report["memory_per_device"]["argument_bytes"]
        if room > 0 and temp > room:
            parts.append("or " + _activation_advice(config, mesh, report["global_batch"], room, temp))
    return " ".join(parts)


def _activation_advice(config, mesh, batch: int, room: float, temp: float) -> str:
    """What brings the temporaries (mostly activations kept for the backward pass) under `room` bytes: a prior
    that does not recompute its layers' activations should (the original trains every prior with c_res=1);
    then a smaller global batch, still a multiple of the chips it is split over; at one sample per chip, only
    splitting each layer over chips (the mesh's tensor axis) is left."""
    parts = []
    if config.get("model") == "prior" and not config.prior.get("c_res", 0):
        parts.append("prior.c_res=1 (recompute each layer's activations in the backward pass)")
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    fit = int(batch * room / temp) // shards * shards
    if shards <= fit < batch:
        parts.append(f"data.batch_size {fit} (temporaries grow with the batch; {fit // shards} per chip)")
    elif batch <= shards:
        parts.append(f"mesh tensor=2 (data.batch_size {batch} is already one sample per chip: split each "
                     f"layer over 2 chips)")
    else:
        parts.append(f"data.batch_size {shards} (one sample per chip), or fewer per chip with more chips")
    return "try " + ", or ".join(parts)


# ------------------------------------------------------------------------------------------------------------
# Sampling

def decode_floor_bytes(config, n: int, param_bytes: int, cache_dtype) -> int:
    """Bytes one decode step must read from HBM: the transformer's and head's weights once, and the cache slots
    each layer's attention reads for `n` samples (every slot for dense/cross/prime layers, a ring for block and
    previous-block layers, one column for transpose-block layers, the summaries for 4/5)."""
    from jukejax.sample import cache as cache_lib
    c = config
    itemsize = jnp.dtype(cache_dtype).itemsize
    slots = 0
    for f in c.attn_funcs:
        shape = cache_lib.layer_shape(c, f, 1)
        if f == 2:            # transpose block: one column of (H, bc, blocks, D)
            slots += shape[3]
        elif f == 3:          # previous block: bc of its 2 bc slots
            slots += c.block_ctx
        else:                 # every slot, whatever the layout
            slots += math.prod(shape[1:]) // c.n_state
    return param_bytes + 2 * n * slots * c.n_state * itemsize


def compile_sampling(pc, topology: str, n_samples: int, mesh: MeshConfig = MeshConfig(data=-1),
                     cache_dtype: Optional[str] = None, vqvae: bool = True, scan: bool = False) -> Dict[str, Any]:
    """Compile one level's first window (prefill of 0 tokens + the token loop over n_ctx positions) as
    `sample.py` runs it on a TPU, for `n_samples` samples split over the mesh's batch axes, and the level's
    VQ-VAE decoder for one item. scan: repeated layer units as one scan each (`cache.layer_groups`), as
    sample.py --decode_scan runs them."""
    from jukejax.prior.prior import abstract_params
    from jukejax.sample import cache as cache_lib
    from jukejax.sample import decode, schedule
    tgt = target(topology)
    mesh_ = mesh_for(tgt, mesh)
    c = pc.transformer
    cache_dtype = jnp.dtype(cache_dtype or c.compute_dtype)
    boxed = abstract_params(pc)
    shardings = decode.decode_shardings(parallel.param_shardings(boxed, mesh_), pc, scan=scan)
    params = _abstract(jax.eval_shape(lambda p: decode.decode_params(p, pc, scan=scan), nn.unbox(boxed)), shardings)
    batch_sh = lambda s: parallel.fitted_batch_sharding(mesh_, s)  # noqa: E731
    z_cond = (jax.ShapeDtypeStruct((n_samples, pc.cond_length), jnp.int32,
                                   sharding=batch_sh((n_samples, pc.cond_length)))
              if pc.upsampler is not None else None)
    y = (jax.ShapeDtypeStruct((n_samples, pc.y_width), jnp.int32, sharding=batch_sh((n_samples, pc.y_width)))
         if pc.labels else None)
    conds = jax.eval_shape(lambda p, zc, yy: schedule._conditioning(p, zc, yy, config=pc), nn.unbox(boxed),
                           z_cond, y)
    x_cond, y_cond, encoder_kv, _ = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=batch_sh(a.shape)), conds)
    cache = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=batch_sh(a.shape)),
                         cache_lib.cache_spec(c, n_samples, cache_dtype, scan=scan))
    keys = jax.eval_shape(lambda: schedule.item_keys(jax.random.key(0), 0, n_samples))
    keys = jax.ShapeDtypeStruct(keys.shape, keys.dtype, sharding=batch_sh(keys.shape))
    buffer = jax.ShapeDtypeStruct((n_samples, c.n_ctx), jnp.int32, sharding=batch_sh((n_samples, c.n_ctx)))
    temperature = jax.ShapeDtypeStruct((), jnp.float32, sharding=parallel.replicated(mesh_))
    prior_params = params["prior"]
    args_bytes = _bytes(prior_params) + _bytes(cache)
    largest = sorted(_largest_leaves(prior_params, "params") + _largest_leaves(cache, "cache"), key=lambda x: -x[1])
    advice = functools.partial(_sampling_advice, tgt, mesh_, n_samples, _bytes(prior_params), _bytes(cache),
                               cache_dtype=cache_dtype)
    if args_bytes > tgt.hbm_bytes:
        raise AOTError(f"level {pc.level} window does not fit {topology}: its weights and caches alone are "
                       f"{_fmt_bytes(args_bytes)} per device of {_fmt_bytes(tgt.hbm_bytes)} HBM (largest: "
                       f"{', '.join(f'{n} {_fmt_bytes(b)}' for n, b in largest[:3])}); {advice()}")
    with jax.set_mesh(mesh_):
        compiled, seconds = _compile_or_refuse(
            f"level {pc.level} window", tgt, largest, advice,
            schedule.sample_rows_jit(c, 0, c.n_ctx, 0, 0.0), prior_params, cache, keys, buffer, x_cond, y_cond,
            encoder_kv, temperature)
    ar_weight_bytes = _bytes(_without(prior_params, ("pos_emb",)))
    first = jax.tree.leaves(cache)[0]
    per_device_n = first.sharding.shard_shape(tuple(first.shape))[0]
    floor = decode_floor_bytes(c, per_device_n, ar_weight_bytes, cache_dtype)
    # The whole window: n_ctx - 1 token steps each at its floor (the prefill of position 0 is negligible).
    report = analyse(f"level {pc.level} window", compiled, tgt, seconds, must_move_bytes=floor * (c.n_ctx - 1),
                     loop_floor_bytes=floor)
    report.update(level=pc.level, n_samples=n_samples, mesh=dict(zip(parallel.MESH_AXES, mesh_.devices.shape)),
                  cache_dtype=str(cache_dtype), compute_dtype=str(c.compute_dtype),
                  weights_bytes_per_device=_bytes(prior_params), cache_bytes_per_device=_bytes(cache),
                  replicated_params=parallel.replicated_params(boxed, mesh_))
    refuse_if_over(report, largest, advice(report["memory_per_device"]["temp_bytes"]))
    reports = [report]
    if vqvae:
        reports.append(_compile_vqvae_decode(pc, tgt))
    return {"level": pc.level, "reports": reports}


def _without(tree, names):
    return {k: (_without(v, names) if isinstance(v, dict) else v) for k, v in tree.items() if k not in names}


def _sampling_advice(tgt: Target, mesh, n: int, weights: int, cache: int, temp: Optional[float] = None,
                     cache_dtype=None) -> str:
    """How many samples would fit: the HBM left beside the weights over what each sample takes, its caches and
    (when known) its share of the temporaries, which grow with the batch like the caches (measured: the
    released upsampler's window plans 1.02 GB of temporaries at 16 samples, 1.51 GB at 24)."""
    room = 0.9 * tgt.hbm_bytes - weights
    if room <= 0:
        return (f"the weights alone need {_fmt_bytes(weights)}: split them with --mesh 1,{mesh.shape['fsdp'] * 2},1 "
                f"(fsdp) or use a chip with more HBM")
    per_sample = (cache + (temp or 0)) / max(n, 1)
    fit = int(room // per_sample) if per_sample else n
    advice = f"about {fit} samples per device fit (sample.py --max_batch_size)"
    if cache_dtype is not None and jnp.dtype(cache_dtype).itemsize > 2:
        advice += ", or a bf16 cache (--cache_dtype=bfloat16) holds twice as many"
    return advice


def _compile_vqvae_decode(pc, tgt: Target) -> Dict[str, Any]:
    """The VQ-VAE decoder of this level for one item of one window's codes, as `sample.py` decodes."""
    from jukejax.sample import schedule
    from jukejax.vqvae.model import abstract_variables
    vq = pc.vqvae
    mesh_ = mesh_for(Target(tgt.topology, tgt.chip, tgt.devices[:1], tgt.per_device), MeshConfig(data=1))
    rep = parallel.replicated(mesh_)
    with jax.set_mesh(mesh_):
        variables = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep),
                                 nn.unbox(abstract_variables(vq)))
        z = jax.ShapeDtypeStruct((1, pc.n_ctx), jnp.int32, sharding=rep)
        compiled, seconds = _compile(schedule._decode, variables, z, config=vq, level=pc.level)
    report = analyse(f"level {pc.level} VQ-VAE decode", compiled, tgt, seconds)
    report["tokens"] = pc.n_ctx
    return report


# ------------------------------------------------------------------------------------------------------------
# Printing and the command line

def format_report(report: Dict[str, Any]) -> str:
    m = report["memory_per_device"]
    lines = [f"{report['name']} on {report['topology']} ({report['devices']} x {report['chip']} devices): "
             f"compiled in {report['compile_seconds']:.1f} s",
             f"  per device: arguments {_fmt_bytes(m['argument_bytes'])}, outputs {_fmt_bytes(m['output_bytes'])} "
             f"(aliased {_fmt_bytes(m['alias_bytes'])}), temporaries {_fmt_bytes(m['temp_bytes'])}, code "
             f"{_fmt_bytes(m['generated_code_bytes'])}: total {_fmt_bytes(m['total_bytes'])} of "
             f"{_fmt_bytes(report['hbm_bytes_per_device'])} HBM ({100 * report['hbm_fraction']:.0f}%)",
             f"  {max(report['flops_per_device'], report.get('model_flops_per_device', 0)) / 1e9:.4g} GFLOP per "
             f"device; compiler's estimate "
             f"{_fmt_seconds(report['estimated_seconds'])} vs roofline {_fmt_seconds(report['roofline_seconds'])} "
             f"(compute {_fmt_seconds(report['roofline']['compute_seconds'])}, HBM "
             f"{_fmt_seconds(report['roofline']['memory_seconds'])})"]
    if "step" in report:
        s = report["step"]
        lines.append(f"  one token step: {_fmt_seconds(s['estimated_seconds'])} estimated vs HBM floor "
                     f"{_fmt_seconds(s['floor_seconds'])} ({_fmt_bytes(s['floor_bytes'])}): "
                     f"{s['estimate_over_floor']:.2f}x ({s['estimate_over_compiler_floor']:.2f}x of the floor at the "
                     f"compiler's best streaming rate, {s['compiler_stream_bytes_per_cycle']:.0f} bytes/cycle); "
                     f"{s['trips']} steps per window")
        lines.append(f"  with its {_fmt_bytes(s['async_copy_bytes'])} of asynchronous copies (in no op's estimate): "
                     f"{_fmt_seconds(s['overlapped_seconds'])} if they overlap the ops "
                     f"({s['overlapped_over_floor']:.2f}x floor), {_fmt_seconds(s['serial_seconds'])} if not")
        rewrites = s["large_per_step_rewrites"]
        lines.append("  inside the token loop: " + (
            f"{len(rewrites)} large converts/selects/copies, largest {rewrites[0]['opcode']} {rewrites[0]['shape']}"
            if rewrites else "no weight conversions, table-sized selects or cache-sized copies"))
    coll = report["collectives"]
    lines.append("  collectives: " + (", ".join(f"{k} x{v['count']} ({_fmt_bytes(v['bytes'])})"
                                                for k, v in sorted(coll.items())) or "none"))
    rep = report.get("replicated_params")
    if rep:
        lines.append(f"  replicated where a mesh axis does not divide: {len(rep)} params, "
                     f"{_fmt_bytes(sum(r['bytes'] for r in rep))} (largest {rep[0]['param']} {rep[0]['shape']})")
    return "\n".join(lines)


def _print(reports: List[Dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(reports if len(reports) != 1 else reports[0]))
    else:
        print("\n".join(format_report(r) for r in reports))


def compile_bundle(s, topology: str) -> List[Dict[str, Any]]:
    """`sample.py --compile_for`: each level of the settings' model folder (its configs alone, no weights read)
    as `sample.py` would run it: batches of min(n_samples, the level's max_batch_size), its mesh, dtype and
    cache dtype. `s` is a `jukejax.sample.settings.SampleSettings`."""
    import pathlib
    from jukejax.checkpoint import read_config
    from jukejax.prior.prior import prior_config
    from jukejax.sample import settings as settings_lib
    from jukejax.sample.bundle import prior_dir
    root = pathlib.Path(s.checkpoint)
    present = sorted((int(p.name.rsplit("_", 1)[1]) for p in root.glob("prior_level_*") if p.is_dir()),
                     reverse=True)
    if not present:
        raise AOTError(f"--checkpoint {s.checkpoint}: no prior_level_*/ directories to compile")
    n_levels = max(present) + 1
    reports = []
    for level in [lv for lv in present if not s.levels or lv in s.levels]:
        cd = read_config(str(root / prior_dir(level)))
        if s.dtype:
            cd.prior.dtype = s.dtype
        default = settings_lib.per_level_defaults(n_levels)["max_batch_size"][level]
        batch = min(max(s.n_samples, 1), s.per_level("max_batch_size", level, n_levels, default))
        reports += compile_sampling(prior_config(cd), topology, batch, MeshConfig(*s.mesh), s.cache_dtype or None,
                                    vqvae=True, scan=s.decode_scan)["reports"]
    return reports


def with_prior_overrides(config, dtype: str = "", scan: bool = False):
    """The config with the prior's compute dtype and layer scan set (fields the recipe files leave at their
    defaults, fp32 and unrolled)."""
    if config.get("model") != "prior" or not (dtype or scan):
        return config
    config = config.copy_and_resolve_references()
    with config.unlocked():
        if dtype:
            config.prior.dtype = dtype
        if scan:
            config.prior.scan = True
    return config


def _define_flags() -> None:
    """The command line of `python -m jukejax.aot` (defined only when run as a program: train.py and sample.py
    define their own --config and --json)."""
    from absl import flags
    from ml_collections import config_flags
    config_flags.DEFINE_config_file("config", None, "a configs/*.py file (a VQ-VAE or a prior)", lock_config=True)
    flags.DEFINE_string("compile_for", None, "TPU topology, e.g. v5e:2x2, v5p:2x2x1, v4:2x2x1, v5e:1x1")
    flags.DEFINE_bool("sample", False, "compile the prior's sampling window instead of its train step")
    flags.DEFINE_integer("n_samples", 1, "with --sample: samples decoded together")
    flags.DEFINE_bool("vqvae", True, "with --sample: also compile the level's VQ-VAE decoder")
    flags.DEFINE_string("mesh", "-1,1,1", "with --sample: data,fsdp,tensor")
    flags.DEFINE_string("cache_dtype", "", "with --sample: KV-cache dtype ('' = the compute dtype)")
    flags.DEFINE_bool("decode_scan", False, "with --sample: decode repeated layer units as one scan each "
                                            "(sample.py --decode_scan): a faster compile, a slower step")
    flags.DEFINE_string("dtype", "", "prior compute dtype, e.g. bfloat16 ('' = the config's)")
    flags.DEFINE_bool("scan", False, "scan the prior's repeated units of layers, one nn.scan each (training)")
    flags.DEFINE_bool("json", False, "print one JSON object")
    flags.DEFINE_string("hlo_dir", "", "write each compiled module's optimised HLO text here")


def _main() -> int:
    from absl import flags
    fv = flags.FLAGS
    global HLO_DIR
    HLO_DIR = fv.hlo_dir or None
    if fv.config is None or not fv.compile_for:
        raise AOTError("--config and --compile_for are required")
    config = with_prior_overrides(fv.config, fv.dtype, fv.scan)
    if fv.sample:
        from jukejax.prior.prior import prior_config
        try:
            mesh = MeshConfig(*[int(x) for x in fv.mesh.split(",")])
        except ValueError:
            raise AOTError(f"--mesh {fv.mesh!r}: expected three integers data,fsdp,tensor") from None
        reports = compile_sampling(prior_config(config), fv.compile_for, fv.n_samples, mesh, fv.cache_dtype or None,
                                   vqvae=fv.vqvae, scan=fv.decode_scan)["reports"]
    else:
        reports = [compile_train(config, fv.compile_for)]
    _print(reports, fv.json)
    return 0


if __name__ == "__main__":
    import logging
    from jukejax.cli import absl_entry_point
    _define_flags()
    absl_entry_point(_main, __name__, logging.WARNING)
