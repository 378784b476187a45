"""Device mesh and logical-axis sharding, in one place.

Every array that matters names its axes logically ("batch", "embed", "mlp", "heads", "kv", "vocab",
"conv_in", "conv_out", ...). `LOGICAL_RULES` maps those names onto the physical mesh axes
("data", "fsdp", "tensor"); a config may replace the rules. Data parallelism is the "data" axis plus the
"fsdp" axis for the batch; parameters are split over "fsdp" (ZeRO-3 style) and "tensor" (Megatron style).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jukejax.config import ConfigError, MeshConfig

MESH_AXES = ("data", "fsdp", "tensor")

# (logical name, mesh axis or axes). The batch is split over every axis that replicates computation.
LOGICAL_RULES: Tuple[Tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("length", None),
    ("conv_in", None),
    ("conv_out", "fsdp"),
    ("kernel", None),
    ("codebook", None),
)


def initialize_distributed(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
                           process_id: Optional[int] = None, from_environment: bool = False) -> bool:
    """Join JAX's multi-process runtime when asked: explicitly (coordinator address, process count and id)
    or from the cluster's environment (TPU pods, SLURM, Open MPI: `from_environment`). Returns whether it
    did. On CPU, processes talk through gloo collectives."""
    if not (coordinator_address or from_environment):
        return False
    # Only the CPU backend reads this; GPUs and TPUs keep their own collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator_address:
        if num_processes is None or process_id is None:
            raise ConfigError("--coordinator_address needs --num_processes and --process_id")
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id)
    else:
        jax.distributed.initialize()
    return True


def mesh_shape(config: MeshConfig, n_devices: int) -> Tuple[int, int, int]:
    """Resolve -1 to the remaining devices and check the mesh fits on `n_devices`."""
    sizes = [config.data, config.fsdp, config.tensor]
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if n_devices % known:
            raise ConfigError(f"mesh: {n_devices} devices cannot be split with fixed axes of product {known} "
                              f"(data={config.data} fsdp={config.fsdp} tensor={config.tensor})")
        sizes[sizes.index(-1)] = n_devices // known
    if int(np.prod(sizes)) > n_devices:
        raise ConfigError(f"mesh: data*fsdp*tensor = {int(np.prod(sizes))} but only {n_devices} devices are "
                          f"available (data={sizes[0]} fsdp={sizes[1]} tensor={sizes[2]})")
    return tuple(sizes)


def make_mesh(config: Optional[MeshConfig] = None, devices: Optional[Sequence[Any]] = None) -> Mesh:
    """One mesh with axes ("data", "fsdp", "tensor") over `devices` (default: all devices)."""
    config = config or MeshConfig()
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(config, len(devices))
    devices = devices[:int(np.prod(shape))]  # fixed sizes smaller than the device count use the first ones
    # Auto axes: GSPMD propagates shardings from the inputs and logical constraints (topology-aware device
    # order on TPU/GPU; a plain reshape on CPU).
    return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def logical_to_spec(logical_axes: Sequence[Optional[str]], rules=LOGICAL_RULES) -> P:
    return nn.logical_to_mesh_axes(tuple(logical_axes), rules)


def _fit_spec(spec: P, shape: Tuple[int, ...], mesh: Mesh) -> P:
    """Drop mesh axes from dimensions they do not divide, so any shape can be placed on any mesh."""
    out = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        kept = []
        size = 1
        for name in names:
            if dim % (size * mesh.shape[name]) == 0:
                kept.append(name)
                size *= mesh.shape[name]
        out.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return P(*out)


def replicated_params(abstract_tree: Any, mesh: Mesh, rules=LOGICAL_RULES) -> list:
    """Every parameter a mesh axis was asked to split but does not divide, so `_fit_spec` keeps it whole on
    each device: [{"param", "shape", "dropped": {dim: axes}, "bytes"}] (bytes held per device), largest first.
    Works on an `AbstractMesh` too (shapes alone)."""
    specs = nn.logical_to_mesh(nn.get_partition_spec(abstract_tree), rules)
    unboxed = nn.unbox(abstract_tree)
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(unboxed)[0]]
    pairs = jax.tree.leaves(jax.tree.map(lambda spec, leaf: [(spec if isinstance(spec, P) else P(), leaf)], specs,
                                         unboxed, is_leaf=lambda x: isinstance(x, P) or x is None),
                            is_leaf=lambda x: isinstance(x, list))
    out = []
    for path, [(spec, leaf)] in zip(paths, pairs):
        shape = tuple(leaf.shape)
        fitted = _fit_spec(spec, shape, mesh)
        dropped = {}
        pad = (None,) * len(shape)
        for dim, (want, got) in enumerate(zip((tuple(spec) + pad)[:len(shape)], (tuple(fitted) + pad)[:len(shape)])):
            want_axes = (want,) if isinstance(want, str) else tuple(want or ())
            got_axes = (got,) if isinstance(got, str) else tuple(got or ())
            lost = [a for a in want_axes if a not in got_axes and mesh.shape[a] > 1]
            if lost:
                dropped[dim] = lost
        if dropped:
            kept = 1
            for axes in fitted:
                for a in ((axes,) if isinstance(axes, str) else tuple(axes or ())):
                    kept *= mesh.shape[a]
            out.append({"param": jax.tree_util.keystr(path), "shape": list(shape), "dropped": dropped,
                        "bytes": int(np.prod(shape)) * jnp.dtype(leaf.dtype).itemsize // kept})
    return sorted(out, key=lambda r: -r["bytes"])


def constrain_activations(x: jax.Array, logical_axes: Sequence[Optional[str]] = ("batch",),
                          rules=LOGICAL_RULES) -> jax.Array:
    """Pin activations at a block boundary to their logical layout (by default rows over the batch axes, the
    rest replicated), so the compiler keeps the data/fsdp batch split through the model instead of choosing
    layouts op by op (big_vision `vit.py`, MaxText `attentions.py` do the same). A no-op outside a mesh
    context; axes that do not divide a dimension are left out, as for params."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return x
    axes = tuple(logical_axes) + (None,) * (x.ndim - len(logical_axes))
    return jax.lax.with_sharding_constraint(x, _fit_spec(logical_to_spec(axes, rules), tuple(x.shape), mesh))


def put_global(x: Any, sharding: NamedSharding) -> jax.Array:
    """Place an array that every process holds in full (same seed, same inputs) as one global array; works
    for one process or many, and for PRNG key arrays."""
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = np.asarray(jax.random.key_data(x))
        spec = P(*(tuple(sharding.spec) + (None,) * (data.ndim - len(sharding.spec))))
        placed = jax.make_array_from_callback(data.shape, NamedSharding(sharding.mesh, spec), lambda i: data[i])
        return jax.random.wrap_key_data(placed, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda i: host[i])


def fitted_batch_sharding(mesh: Mesh, shape: Tuple[int, ...], rules=LOGICAL_RULES) -> NamedSharding:
    """Leading axis over the batch axes (as far as it divides), the rest replicated."""
    return NamedSharding(mesh, _fit_spec(batch_sharding(mesh, len(shape), rules).spec, tuple(shape), mesh))


def batch_sharding(mesh: Mesh, ndim: int, rules=LOGICAL_RULES) -> NamedSharding:
    """Leading axis split over the batch axes, the rest replicated."""
    return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1), rules))


def shard_batch(batch: Any, mesh: Mesh, rules=LOGICAL_RULES) -> Any:
    """Place a host batch (a pytree of arrays with a leading batch axis) on the mesh.

    Single process: the arrays are the global batch. Multi-process: each process passes its own rows and
    the result is the global array assembled from all processes. Text fields (raw lyrics) cannot live on
    a device and are left out: tokenise them on the host first.
    """
    batch = {k: v for k, v in batch.items() if np.asarray(v).dtype.kind not in "OUS"}
    def place(x):
        x = np.asarray(x)
        sharding = NamedSharding(mesh, _fit_spec(batch_sharding(mesh, x.ndim, rules).spec, x.shape, mesh))
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        return jax.make_array_from_process_local_data(sharding, x)
    return jax.tree.map(place, batch)


def param_shardings(abstract_tree: Any, mesh: Mesh, rules=LOGICAL_RULES) -> Any:
    """NamedShardings for a tree of (possibly `nn.Partitioned`-boxed) abstract params.

    Leaves boxed with logical names (`nn.with_logical_partitioning`) get the mapped spec, unboxed leaves are
    replicated. Axes that do not divide a dimension are dropped rather than failing; `replicated_params` lists
    the params this happens to (`describe` and `jukejax.aot` report them).
    """
    logical = nn.get_partition_spec(abstract_tree)
    specs = nn.logical_to_mesh(logical, rules)
    unboxed = nn.unbox(abstract_tree)

    def to_sharding(spec, leaf):
        spec = spec if isinstance(spec, P) else P()
        return NamedSharding(mesh, _fit_spec(spec, tuple(leaf.shape), mesh))
    return jax.tree.map(to_sharding, specs, unboxed, is_leaf=lambda x: isinstance(x, P) or x is None)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def shard_params(tree: Any, mesh: Mesh, rules=LOGICAL_RULES) -> Any:
    """Place a concrete param tree on the mesh following its logical axes (replicated where unnamed)."""
    shardings = param_shardings(jax.eval_shape(lambda: tree), mesh, rules)
    return jax.tree.map(lambda x, s: jax.device_put(x, s), nn.unbox(tree), shardings)


def memory_plan(abstract_params: Any, config: MeshConfig, n_devices: Optional[int] = None,
                rules=LOGICAL_RULES) -> dict:
    """Per-device bytes of fp32 params, Adam moments and the weight EMA on a mesh of `config`'s shape,
    from shapes alone (an abstract mesh: the devices need not exist here), and every param that a mesh axis
    does not divide (kept whole on each device). Activations are not counted."""
    shape = mesh_shape(config, n_devices or (int(np.prod([s for s in (config.data, config.fsdp, config.tensor)]))
                                              if -1 not in (config.data, config.fsdp, config.tensor)
                                              else jax.device_count()))
    mesh = jax.sharding.AbstractMesh(shape, MESH_AXES)
    shardings = param_shardings(abstract_params, mesh, rules)
    params = bytes_per_device(abstract_params, shardings)
    replicated = replicated_params(abstract_params, mesh, rules)
    return {"mesh": dict(zip(MESH_AXES, shape)), "params_bytes_per_device": params,
            "opt_state_bytes_per_device": 2 * params,  # Adam's two moments, sharded like the params
            "ema_bytes_per_device": params,
            "train_state_bytes_per_device": 4 * params,
            # params a mesh axis does not divide, held whole (per device) instead of split
            "replicated_params": replicated,
            "replicated_params_bytes_per_device": sum(r["bytes"] for r in replicated)}


def bytes_per_device(abstract_tree: Any, shardings: Any) -> int:
    """Bytes one device holds for `abstract_tree` placed with `shardings` (no allocation)."""
    total = 0
    for leaf, sharding in zip(jax.tree.leaves(nn.unbox(abstract_tree)), jax.tree.leaves(shardings)):
        shard = sharding.shard_shape(tuple(leaf.shape))
        total += int(np.prod(shard)) * jnp.dtype(leaf.dtype).itemsize
    return total
