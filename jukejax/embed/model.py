"""The top prior's activations after chosen layers: what Castellon et al. 2021 (p-lambda/jukemir), jukemirlib,
Sheet Sage and EDGE use as music features.

Layer L (1-based, as jukemir's `prior_depth=36` and jukemirlib's `layers=[36]`) is the output of the L-th
`ResAttnBlock` of the top prior's transformer (openai/jukebox `prior/autoregressive.py,
ConditionalAutoregressive2D.forward` with `only_encode` on a prior truncated to L layers: the token embedding
shifted right with the label embedding at position 0, plus position and timing embeddings, then L blocks). For
the 5b models (merged decoder) that is exactly the truncated model's `only_encode` output; priors without a
merged decoder would add the timing embedding again after their last layer, which these features leave out
(as jukemirlib does). For a prior with a lyric prefix (1b_lyrics-like single encoder-decoder) the features are
the music positions only.

Only the layers up to the deepest one requested are loaded and computed, and the VQ-VAE encodes the top level
only.
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jukejax import parallel
from jukejax.checkpoint import CHECKPOINT_DIR, CheckpointError
from jukejax.config import MeshConfig
from jukejax.errors import UserError
from jukejax.prior.prior import Prior, PriorConfig, abstract_params
from jukejax.prior.transformer import ResAttnBlock, unstack_layers
from jukejax.sample.bundle import Bundle, load_bundle, prior_dir


class EmbedError(UserError):
    """A bad embedding request: a layer the model does not have, a model without a top prior, bad audio."""


def truncated_config(config: PriorConfig, depth: int) -> PriorConfig:
    """The prior cut to its first `depth` layers (original `make_prior` with `prior_depth=depth`), unscanned and
    without rematerialisation (there is no backward pass)."""
    transformer = dataclasses.replace(config.transformer, depth=depth, scan=False, remat=False)
    hps = dataclasses.replace(config.hps, prior_depth=depth, scan=False, c_res=0, prime_c_res=0,
                              alignment_layer=None)
    lyric_encoder = config.lyric_encoder and dataclasses.replace(config.lyric_encoder, scan=False, remat=False)
    return dataclasses.replace(config, hps=hps, transformer=transformer, lyric_encoder=lyric_encoder)


class PriorActivations(Prior):
    """A `Prior` that stops after its transformer stack (same parameter names, so a checkpoint applies)."""

    def activations(self, z: jax.Array, y: Optional[jax.Array]) -> jax.Array:
        c = self.config
        x_cond, y_cond, prime = self.get_cond(None, y)
        encoder_kv = None
        if c.hps.single_enc_dec:
            tokens, x_cond = self.preprocess_single(prime, z, x_cond)
        else:
            tokens = z
            if c.lyric_encoder is not None:
                encoder_kv = self.encoder_kv(prime)
        h, _ = self.prior.embed(tokens, x_cond, y_cond)
        return self.prior.transformer(h, encoder_kv)


def _keep_param(path: Tuple[str, ...], depth: int) -> bool:
    """Whether a prior param is needed by the first `depth` layers (embeddings, conditioners, lyric encoder)."""
    if len(path) >= 3 and path[0] == "prior" and path[1] == "transformer" and path[2].startswith("_attn_mods_"):
        return int(path[2][len("_attn_mods_"):]) < depth
    return not (path[0] == "prior" and path[1] == "x_out")


def _path_keys(path) -> Tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def load_truncated_params(workdir: pathlib.Path, full: PriorConfig, config: PriorConfig, mesh: Mesh,
                          param_dtype: Optional[str] = None) -> Any:
    """The params of `config` (a truncation of `full`) read from a prior workdir, each placed on `mesh` as its
    logical axes say, floating-point ones cast to `param_dtype` when given (bf16 weights halve the memory of
    an inference-only model). Layers past the truncation are not read (unless the checkpoint stacks layers for
    a scan, where the stack is read whole and cut)."""
    import orbax.checkpoint as ocp

    depth = config.transformer.depth
    want = nn.unbox(abstract_params(config))
    shardings = parallel.param_shardings(abstract_params(config), mesh)
    directory = (pathlib.Path(workdir) / CHECKPOINT_DIR).absolute()
    manager = ocp.CheckpointManager(directory, item_handlers={"state": ocp.StandardCheckpointHandler()})
    step = manager.latest_step()
    if step is None:
        raise CheckpointError(f"{directory}: holds no complete checkpoint")
    state_dir = directory / str(step) / "state"
    checkpointer = ocp.PyTreeCheckpointer()
    try:
        metadata = checkpointer.metadata(state_dir)
        metadata = dict(getattr(metadata, "item_metadata", metadata).tree)
    except Exception as e:  # noqa: BLE001 - orbax raises many types for truncated or foreign directories
        raise CheckpointError(f"{state_dir}: cannot read the checkpoint's metadata ({type(e).__name__})") from None
    key = "ema_params" if metadata.get("ema_params") is not None else "params"
    stored = metadata[key]
    # Layer-scanned stacks (`_attn_scan_*`, or the earlier `_attn_period`) are read whole, then cut per layer.
    scanned = [head for head in ("prior", "prime_prior")
               if any(not name.startswith("_attn_mods_") for name in stored.get(head, {}).get("transformer", {}))]
    replicated = NamedSharding(mesh, P())
    flat_want = {_path_keys(p): (leaf, s) for (p, leaf), s in zip(
        jax.tree_util.tree_flatten_with_path(want)[0], jax.tree.leaves(shardings))
        if _keep_param(_path_keys(p), depth)}

    def target(path, meta):
        keys = _path_keys(path)
        if keys[0] in scanned and keys[1] == "transformer" and not keys[2].startswith("_attn_mods_"):
            return jax.ShapeDtypeStruct(meta.shape, meta.dtype, sharding=replicated)
        if keys not in flat_want:
            return None
        leaf, sharding = flat_want[keys]
        if tuple(meta.shape) != tuple(leaf.shape):
            raise CheckpointError(f"{workdir}: param {'/'.join(keys)} has shape {tuple(meta.shape)}, the config "
                                  f"gives {tuple(leaf.shape)}")
        dtype = meta.dtype
        if param_dtype is not None and jnp.issubdtype(dtype, jnp.floating):
            dtype = jnp.dtype(param_dtype)
        return jax.ShapeDtypeStruct(meta.shape, dtype, sharding=sharding)

    is_meta = lambda m: hasattr(m, "shape") and hasattr(m, "dtype")  # noqa: E731
    tree = {key: _prune(jax.tree_util.tree_map_with_path(target, stored, is_leaf=is_meta))}
    restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s.sharding), tree)
    try:
        restored = checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
            item=tree, restore_args=restore_args, partial_restore=True))
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{state_dir}: cannot be restored ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    params = dict(restored[key])
    for head in scanned:
        layers = unstack_layers(params[head]["transformer"])
        keep = depth if head == "prior" else len(layers)
        params[head] = dict(params[head])
        params[head]["transformer"] = {
            f"_attn_mods_{d}": jax.tree.map(lambda a, s: jax.device_put(a, s), layers[f"_attn_mods_{d}"],
                                            _subtree(shardings, (head, "transformer", f"_attn_mods_{d}")))
            for d in range(keep)}
    missing = [k for k in flat_want if _get(params, k) is None]
    if missing:
        raise CheckpointError(f"{workdir}: the checkpoint has no param {'/'.join(missing[0])}")
    return params


_CONV1D = ("c_attn", "c_proj", "c_fc", "c_enc_kv", "prime_state_proj")


def round_conv1d_weights_to_fp16(params: Any) -> Any:
    """The original's `fp16_params` (5b, 5b_lyrics): `make_prior` turns every `Conv1D.w` into fp16 before
    restoring the checkpoint (`transformer/ops.py, _convert_conv_weights_to_fp16`), and `Conv1D.forward` casts it
    back to the input's fp32 (`self.w.type_as(x)`). So the model computes in fp32 with fp16-rounded Conv1D
    weights (biases untouched); this rounds the same kernels (a no-op for weights stored in fp16)."""
    def visit(path, leaf):
        keys = _path_keys(path)
        if keys[-1] == "kernel" and len(keys) >= 2 and keys[-2] in _CONV1D and leaf.dtype == jnp.float32:
            return leaf.astype(jnp.float16).astype(jnp.float32)
        return leaf
    return jax.tree_util.tree_map_with_path(visit, params)


def _prune(tree: Any) -> Any:
    if isinstance(tree, dict):
        out = {k: _prune(v) for k, v in tree.items()}
        return {k: v for k, v in out.items() if v is not None and v != {}}
    return tree


def _get(tree: Any, keys: Sequence[str]) -> Any:
    for k in keys:
        if not isinstance(tree, dict) or k not in tree:
            return None
        tree = tree[k]
    return tree


def _subtree(tree: Any, keys: Sequence[str]) -> Any:
    for k in keys:
        tree = tree[k]
    return tree


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What a run needs to know about the model, for the manifest and the presets."""
    checkpoint: str
    sr: int
    hop: int                       # audio samples per top-level token
    n_ctx: int                     # top-level tokens per window
    width: int
    depth: int                     # layers of the full top prior
    y_width: int
    max_bow_genre_size: int
    n_tokens: int
    min_duration: float
    max_duration: float

    @property
    def window_samples(self) -> int:
        return self.n_ctx * self.hop

    @property
    def frame_rate(self) -> float:
        return self.sr / self.hop


class Embedder:
    """The top prior of a model folder (`jukejax.convert` output or a trained bundle), cut after the deepest
    requested layer, placed on a mesh whose "data" (and "fsdp") axes split the batch.

    `encode(audio)` -> top-level codes; `activations(tokens, y)` -> {layer: (N, n_ctx, width)}, or pooled
    over time with `pool` ("mean" / "max"), as float32.
    """

    def __init__(self, checkpoint: str, layers: Sequence[int] = (36,), dtype: str = "float32",
                 mesh: Optional[Mesh] = None):
        checkpoint = str(checkpoint)
        directory = pathlib.Path(checkpoint)
        if not directory.is_dir():
            raise EmbedError(f"--checkpoint {checkpoint}: no such model folder")
        if dtype not in ("float32", "bfloat16"):
            raise EmbedError(f"--dtype {dtype!r}: expected float32 or bfloat16")
        bundle: Bundle = load_bundle(directory, levels=[])
        top = bundle.top_level
        if not (directory / prior_dir(top)).is_dir():
            raise EmbedError(f"--checkpoint {checkpoint}: has no {prior_dir(top)}/ (the top prior, whose "
                             f"activations are the features)")
        bundle = load_bundle(directory, levels=[top], dtype=dtype)
        full = bundle.priors[top].config
        layers = tuple(int(l) for l in layers)
        if not layers:
            raise EmbedError("--layers: give at least one layer")
        bad = [l for l in layers if not 1 <= l <= full.transformer.depth]
        if bad:
            raise EmbedError(f"--layers {bad[0]}: the top prior of {checkpoint} has layers 1..{full.transformer.depth}")
        if len(set(layers)) != len(layers):
            raise EmbedError(f"--layers {','.join(map(str, layers))}: a layer is listed twice")
        self.layers = layers
        self.dtype = dtype
        self.config = truncated_config(full, max(layers))
        self.full_config = full
        self.mesh = mesh if mesh is not None else parallel.make_mesh(MeshConfig(data=-1, fsdp=1, tensor=1))
        self.vqvae = bundle.vqvae
        # The VQ-VAE encode is per-process work (each process encodes its own files, whenever it reaches them):
        # on this process's first device, not a program over the whole mesh, which every process would have
        # to run together (and which would repeat the encode on every device).
        self.vqvae_variables = jax.device_put(bundle.vqvae_variables, jax.local_devices()[0])
        # bf16 compute reads bf16 weights (LayerNorm statistics and softmax stay fp32 in the model).
        self.params = load_truncated_params(bundle.priors[top].workdir, full, self.config, self.mesh,
                                            param_dtype="bfloat16" if dtype == "bfloat16" else None)
        if full.hps.fp16_params and dtype == "float32":
            self.params = round_conv1d_weights_to_fp16(self.params)
        hps = full.hps
        self.info = ModelInfo(checkpoint=checkpoint, sr=bundle.sr, hop=bundle.hop_lengths[top], n_ctx=full.n_ctx,
                              width=full.transformer.width, depth=full.transformer.depth, y_width=full.y_width,
                              max_bow_genre_size=hps.max_bow_genre_size, n_tokens=full.n_tokens,
                              min_duration=hps.min_duration, max_duration=hps.max_duration)
        self.top_level = top
        self._batch_axes = tuple(a for a in ("data", "fsdp") if self.mesh.shape[a] > 1)

    @property
    def batch_divisor(self) -> int:
        """Batch sizes must be multiples of this (the devices the batch is split over)."""
        return int(np.prod([self.mesh.shape[a] for a in ("data", "fsdp")]))

    def _batch_sharding(self, ndim: int) -> NamedSharding:
        return NamedSharding(self.mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))

    def place(self, x: np.ndarray) -> jax.Array:
        """A host batch (this process's rows) as a global array split over the batch axes."""
        sharding = self._batch_sharding(x.ndim)
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        return jax.make_array_from_process_local_data(sharding, x)

    def local(self, x: jax.Array) -> np.ndarray:
        """This process's rows of a global batch-split array, in the order `place` took them."""
        if jax.process_count() == 1:
            return np.asarray(x)
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.global_array_to_host_local_array(x, self.mesh, x.sharding.spec))

    @functools.cached_property
    def _encode_fn(self):
        vqvae, top = self.vqvae, self.top_level

        def encode(variables, audio):
            x = audio[..., None]
            return vqvae.apply(variables, x, method=lambda m, x: m.bottleneck.encode(
                [m.encoders[top](x)[-1]], start_level=top)[0])
        return jax.jit(encode)

    def encode(self, audio: jax.Array) -> jax.Array:
        """Top-level codes (N, T // hop) of mono audio (N, T); T need not be a multiple of the hop (the
        encoder's strided convolutions floor, as the original's do)."""
        return self._encode_fn(self.vqvae_variables, audio)

    @functools.lru_cache(maxsize=4)
    def _activations_fn(self, pool: str):
        config, layers = self.config, self.layers
        names = {f"_attn_mods_{l - 1}": l for l in layers}
        model = PriorActivations(config)
        music = slice(config.n_tokens, None) if config.hps.single_enc_dec else slice(None)

        def run(params, tokens, y, n_valid):
            # n_valid (N,): frames of each row that hold audio; pooling sees only those.
            out, state = model.apply({"params": params}, tokens, y, method=PriorActivations.activations,
                                     capture_intermediates=lambda m, name: (
                                         name == "__call__" and isinstance(m, ResAttnBlock) and m.name in names))
            blocks = state["intermediates"]["prior"]["transformer"]
            result = {}
            for name, layer in names.items():
                h = blocks[name]["__call__"][0].astype(jnp.float32)[:, music]
                if pool != "none":
                    valid = (jnp.arange(h.shape[1])[None, :] < n_valid[:, None])[..., None]
                    if pool == "mean":
                        h = jnp.sum(jnp.where(valid, h, 0.0), axis=1) / n_valid[:, None].astype(jnp.float32)
                    else:
                        h = jnp.max(jnp.where(valid, h, -jnp.inf), axis=1)
                result[layer] = h
            return result
        return jax.jit(run)

    def activations(self, tokens: jax.Array, y: jax.Array, pool: str = "none",
                    n_valid: Optional[jax.Array] = None) -> Dict[int, jax.Array]:
        """{layer: (N, n_ctx, width)} (pool "none") or {layer: (N, width)} ("mean" / "max" over the first
        n_valid frames of each row, all by default) for top-level tokens (N, n_ctx) and label vectors y."""
        if pool not in ("none", "mean", "max"):
            raise EmbedError(f"--pool {pool!r}: expected mean, max or none")
        if n_valid is None:
            n_valid = jnp.full((tokens.shape[0],), tokens.shape[1], jnp.int32)
        return self._activations_fn(pool)(self.params, tokens, y, n_valid)
