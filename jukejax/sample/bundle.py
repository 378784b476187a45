"""The model bundle a sampling run reads: one VQ-VAE, one prior per level, artist/genre id tables.

Layout of `--checkpoint DIR` (the weight converter writes the same):

    DIR/vqvae/                    a workdir `jukejax.checkpoint.load_variables` reads (config.json + checkpoints/)
    DIR/prior_level_{l}/          one per level that can be sampled, same kind of workdir
    DIR/ids/artist_ids.txt        optional `name;id` lines (the original's data/ids tables)
    DIR/ids/genre_ids.txt         optional
    DIR/ids/v2_artist_ids.txt     optional, version-specific tables; used before the plain ones by priors
    DIR/ids/v3_artist_ids.txt     with that label version (the 1b top prior is v3, its upsamplers v2)
    ...

`load_bundle` checks everything that can go wrong before any sampling starts: every prior's `config.vqvae`
agrees with the VQ-VAE (levels, sample rate, hop lengths, codebook size), and every checkpoint's param tree
has the shapes its config gives (read from the checkpoint's metadata, without loading arrays). Prior params
themselves are loaded one level at a time (`BundlePrior.load_params`), as the original moves one prior at a
time onto the GPU, so no run ever holds every prior in device memory.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import pathlib
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
from flax import linen as nn

from jukejax.checkpoint import CHECKPOINT_DIR, CheckpointError, load_variables, read_config
from jukejax.config import ConfigError, VQVAEConfig, build
from jukejax.prior.labels import LabelError, Labeller, load_id_table, normalise_name, table_key
from jukejax.prior.prior import PriorConfig, abstract_params, prior_config
from jukejax.prior.transformer import abstract_index, abstract_stack, relayout
from jukejax.vqvae.model import VQVAE, abstract_variables

VQVAE_DIR = "vqvae"
IDS_DIR = "ids"
UNKNOWN = "unknown"


def prior_dir(level: int) -> str:
    return f"prior_level_{level}"


# ------------------------------------------------------------------------------------------------------------
# Labels

def _is_id(key: str) -> bool:
    """A numeric id typed as a name (`--artist=17`): ASCII digits only (str.isdigit also accepts '²')."""
    return key.isascii() and key.isdigit()


@dataclasses.dataclass(frozen=True)
class BundleLabeller(Labeller):
    """A `Labeller` that also accepts numeric ids (`--artist=17`) and works without id tables.

    Without id files only the name 'unknown' (id 0) and numeric ids are known: an unknown artist warns and
    uses id 0 (as the original does), an unknown genre is an error that says the tables are absent.
    """
    tables_present: bool = True

    def artist_id(self, artist: str) -> int:
        key = table_key(str(artist), self.artist_table, self.labels_v3)
        if _is_id(key):
            return int(key)
        if not self.tables_present and key not in self.artist_table:
            warnings.warn(f"artist {artist!r}: the bundle has no {IDS_DIR}/artist_ids.txt, so only 'unknown' "
                          f"(id 0) and numeric ids are known; using id 0", stacklevel=2)
            return 0
        return super().artist_id(artist)

    def genre_ids(self, genres: Union[str, Sequence[str]]) -> List[int]:
        items = [genres] if isinstance(genres, str) else list(genres)
        if self.labels_v3:
            keys = [table_key(g, self.genre_table, True) for g in items]
        else:
            keys = [word for g in items for word in normalise_name(g).split("_") if word]
        unknown = [k for k in keys if not _is_id(k) and k not in self.genre_table]
        if unknown and not self.tables_present:
            raise LabelError(f"genre {genres!r}: {', '.join(map(repr, unknown))} unknown; the bundle has no "
                             f"{IDS_DIR}/genre_ids.txt, so only 'unknown' (id 0) and numeric ids are accepted")
        if unknown:
            return super().genre_ids(genres)  # its error lists close known genres
        if len(keys) > self.max_bow_genre_size:
            raise LabelError(f"genre {genres!r} gives {len(keys)} genre ids {keys}, more than max_bow_genre_size "
                             f"{self.max_bow_genre_size}")
        ids = [int(k) if _is_id(k) else self.genre_table[k] for k in keys]
        return ids + [-1] * (self.max_bow_genre_size - len(ids))


def _id_table_path(directory: pathlib.Path, kind: str, v3: bool) -> Optional[pathlib.Path]:
    for name in (f"{'v3' if v3 else 'v2'}_{kind}_ids.txt", f"{kind}_ids.txt"):
        path = directory / IDS_DIR / name
        if path.is_file():
            return path
    return None


def make_labeller(directory: Union[str, os.PathLike], config: PriorConfig) -> Optional[BundleLabeller]:
    """The labeller of one prior from the bundle's id tables (None for a prior without labels)."""
    if config.labels is None:
        return None
    directory = pathlib.Path(directory)
    hps = config.hps
    kwargs = dict(labels_v3=hps.labels_v3, max_bow_genre_size=hps.max_bow_genre_size, n_tokens=config.n_tokens)
    paths = [_id_table_path(directory, kind, hps.labels_v3) for kind in ("artist", "genre")]
    if all(p is not None for p in paths):
        try:
            tables = [load_id_table(p) for p in paths]
        except (OSError, ValueError) as e:
            raise CheckpointError(f"id table: {e}") from None
        return BundleLabeller(tables[0], tables[1], **kwargs, artist_source=str(paths[0]),
                              genre_source=str(paths[1]), tables_present=True)
    if any(p is not None for p in paths):
        missing = directory / IDS_DIR / ("artist_ids.txt" if paths[0] is None else "genre_ids.txt")
        raise CheckpointError(f"{missing}: missing; the bundle's {IDS_DIR}/ needs both artist and genre tables")
    return BundleLabeller({UNKNOWN: 0}, {UNKNOWN: 0}, **kwargs, artist_source="(no id tables)",
                          genre_source="(no id tables)", tables_present=False)


# ------------------------------------------------------------------------------------------------------------
# Checking param trees against configs

def _flat_shapes(tree: Any) -> Dict[str, Tuple[int, ...]]:
    leaves = jax.tree_util.tree_flatten_with_path(nn.unbox(tree))[0]
    return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): tuple(leaf.shape)
            for path, leaf in leaves if leaf is not None}


def first_mismatch(expected: Any, actual: Any) -> Optional[str]:
    """The first difference between two param trees' shapes, in words (None when they agree)."""
    want, got = _flat_shapes(expected), _flat_shapes(actual)
    for name in sorted(set(want) | set(got)):
        if name not in got:
            return f"param {name} {want[name]} is missing from the checkpoint"
        if name not in want:
            return f"the checkpoint has a param {name} {got[name]} that the config does not"
        if want[name] != got[name]:
            return f"param {name} has shape {got[name]} in the checkpoint, the config gives {want[name]}"
    return None


@functools.lru_cache(maxsize=None)
def _expected_prior_params(config: PriorConfig) -> Any:
    # Tracing the model for its shapes costs as much as a small compile; configs are frozen and hashable.
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), nn.unbox(abstract_params(config)))


@functools.lru_cache(maxsize=None)
def _expected_vqvae_variables(config: VQVAEConfig) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), nn.unbox(abstract_variables(config)))


def _checkpoint_param_shapes(workdir: pathlib.Path) -> Optional[Any]:
    """Shapes of the params `load_variables` would return (EMA when present), from the checkpoint's metadata
    alone; None when the metadata cannot be read (the check then happens when the params are loaded)."""
    import orbax.checkpoint as ocp

    directory = (workdir / CHECKPOINT_DIR).absolute()
    try:
        manager = ocp.CheckpointManager(directory, item_handlers={"state": ocp.StandardCheckpointHandler()})
        step = manager.latest_step()
        if step is None:
            return None
        tree = dict(manager.item_metadata(step)["state"])
    except Exception:  # noqa: BLE001 - metadata layouts vary between orbax versions; loading checks again
        return None
    params = tree.get("ema_params") if tree.get("ema_params") is not None else tree.get("params")
    return params


def _component_error(name: str, message: str) -> CheckpointError:
    return CheckpointError(f"{name}: checkpoint does not match its config: {message}")


# Files up to this size are hashed whole; bigger ones by size and their first and last MiB, so fingerprinting
# reads at most 2 MiB per file of a 5b_lyrics model (tens of GB) while retraining (new files, new sizes, new
# bytes at either end of a shard) still changes it.
_HASH_WHOLE_BYTES = 4 << 20
_EDGE_BYTES = 1 << 20


def fingerprint(directory: Union[str, os.PathLike]) -> str:
    """A hash of a model folder component's weights and config (every file under it, by relative path):
    `--resume` compares it to see whether the checkpoint changed since the run started."""
    directory = pathlib.Path(directory)
    h = hashlib.blake2b(digest_size=16)
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        size = path.stat().st_size
        h.update(f"{path.relative_to(directory).as_posix()}\0{size}\0".encode())
        with open(path, "rb") as f:
            if size <= _HASH_WHOLE_BYTES:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            else:
                h.update(f.read(_EDGE_BYTES))
                f.seek(size - _EDGE_BYTES)
                h.update(f.read(_EDGE_BYTES))
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------------------
# The bundle

@dataclasses.dataclass(frozen=True)
class BundlePrior:
    """One level's prior: its config and labeller now, its params on demand."""
    level: int
    config: PriorConfig
    workdir: pathlib.Path
    labeller: Optional[BundleLabeller]

    @property
    def name(self) -> str:
        return prior_dir(self.level)

    def load_params(self) -> Any:
        """The prior's params (EMA when the checkpoint has them), checked against the config's shapes."""
        _, variables, _ = load_variables(str(self.workdir))
        expected = _expected_prior_params(self.config)
        params = relayout(nn.unbox(variables["params"]), expected)  # layer stacks grouped as the config runs them
        problem = first_mismatch(expected, params)
        if problem:
            raise _component_error(self.name, problem)
        return jax.tree.map(jnp.asarray, params)  # load_variables refused non-finite values


@dataclasses.dataclass(frozen=True)
class Bundle:
    directory: pathlib.Path
    vqvae_config: VQVAEConfig
    vqvae_variables: Any
    priors: Mapping[int, BundlePrior]

    @property
    def vqvae(self) -> VQVAE:
        return VQVAE(self.vqvae_config)

    @property
    def sr(self) -> int:
        return self.vqvae_config.sr

    @property
    def levels(self) -> int:
        return self.vqvae_config.levels

    @property
    def top_level(self) -> int:
        return self.vqvae_config.levels - 1

    @property
    def hop_lengths(self) -> Tuple[int, ...]:
        return self.vqvae_config.hop_lengths


def _check_vqvae_match(name: str, prior: VQVAEConfig, vqvae: VQVAEConfig) -> None:
    for field, a, b in (("levels", prior.levels, vqvae.levels), ("sr", prior.sr, vqvae.sr),
                        ("hop_lengths", prior.hop_lengths, vqvae.hop_lengths), ("l_bins", prior.l_bins, vqvae.l_bins)):
        if a != b:
            raise CheckpointError(f"{name}: its config.vqvae has {field} {a}, but the bundle's {VQVAE_DIR} has {b}; "
                                  f"the prior was trained on another VQ-VAE's codes")


def load_bundle(directory: Union[str, os.PathLike], levels: Optional[Sequence[int]] = None,
                dtype: Optional[str] = None) -> Bundle:
    """Read a bundle: VQ-VAE variables, prior configs and labellers for `levels` (default: every
    `prior_level_*` present), all validated. `dtype` overrides the priors' compute dtype (e.g. bfloat16)."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such bundle directory (expected {VQVAE_DIR}/ and "
                              f"prior_level_*/ inside)")
    vq_dir = directory / VQVAE_DIR
    vq_cd = read_config(str(vq_dir))
    try:
        vq_config = build(VQVAEConfig, vq_cd.get("vqvae"), "vqvae")
    except ConfigError as e:
        raise CheckpointError(f"{vq_dir}: {e}") from None
    _, vq_variables, _ = load_variables(str(vq_dir))
    vq_variables = nn.unbox(vq_variables)
    problem = first_mismatch(_expected_vqvae_variables(vq_config), vq_variables)
    if problem:
        raise _component_error(VQVAE_DIR, problem)
    vq_variables = jax.tree.map(jnp.asarray, vq_variables)  # load_variables refused non-finite values

    present = [level for level in range(vq_config.levels) if (directory / prior_dir(level)).is_dir()]
    if levels is None:
        levels = present
    missing = [level for level in levels if level not in present]
    if missing:
        raise CheckpointError(f"{directory}: no {', '.join(prior_dir(m) for m in missing)} (present: "
                              f"{', '.join(prior_dir(p) for p in present) or 'none'})")
    priors = {}
    for level in sorted(set(levels), reverse=True):
        workdir = directory / prior_dir(level)
        cd = read_config(str(workdir))
        if dtype:
            cd.prior.dtype = dtype
        try:
            config = prior_config(cd)
        except ConfigError as e:
            raise CheckpointError(f"{workdir}: {e}") from None
        if config.level != level:
            raise CheckpointError(f"{workdir}: config.prior.level is {config.level}, expected {level}")
        _check_vqvae_match(prior_dir(level), config.vqvae, vq_config)
        shapes = _checkpoint_param_shapes(workdir)
        if shapes is not None:
            expected = _expected_prior_params(config)
            problem = first_mismatch(expected, relayout(shapes, expected, abstract_stack, abstract_index))
            if problem:
                raise _component_error(prior_dir(level), problem)
        priors[level] = BundlePrior(level, config, workdir, make_labeller(directory, config))
    return Bundle(directory, vq_config, vq_variables, priors)
