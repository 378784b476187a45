"""Typed, frozen configuration built once from an ml_collections ConfigDict.

Each setting is defined once, as a field of a frozen dataclass (here, and `PriorHParams` in
`jukejax.prior.prior`). `config_section(cls, **values)` turns a dataclass into the ConfigDict section that
`jukejax.presets` and `configs/*.py` start from, so every field and its default comes from the dataclass and
every field can be set from the command line (`--config.prior.dtype=bfloat16`); model and data code only
ever sees the frozen dataclasses. `build(cls, section, name)` validates every field once, early, and names
the field and what was expected, so a typo or a wrong type never reaches a traceback deep in JAX.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Optional, Tuple

import ml_collections
from ml_collections import config_dict

from jukejax.errors import UserError


class ConfigError(UserError):
    """A configuration field is missing, unknown or has a wrong value."""


@dataclasses.dataclass(frozen=True)
class VQVAEConfig:
    """Hyperparameters of the hierarchical VQ-VAE (names of the original `hparams.py`, registry entry `vqvae`)."""
    sr: int = 44100
    levels: int = 3
    downs_t: Tuple[int, ...] = (3, 2, 2)
    strides_t: Tuple[int, ...] = (2, 2, 2)
    emb_width: int = 64
    l_bins: int = 2048
    l_mu: float = 0.99
    commit: float = 0.02
    spectral: float = 0.0
    multispectral: float = 1.0
    hvqvae_multipliers: Tuple[int, ...] = (2, 1, 1)
    loss_fn: str = "lmix"
    lmix_l2: float = 1.0
    lmix_linf: float = 0.02
    lmix_l1: float = 0.0
    linf_k: int = 2048
    width: int = 32
    depth: int = 4
    m_conv: float = 1.0
    dilation_growth_rate: int = 3
    dilation_cycle: Optional[int] = None
    reverse_decoder_dilation: bool = True
    revival_threshold: float = 1.0
    multispec_loss_n_fft: Tuple[int, ...] = (2048, 1024, 512)
    multispec_loss_hop_length: Tuple[int, ...] = (240, 120, 50)
    multispec_loss_window_size: Tuple[int, ...] = (1200, 600, 240)
    # Single-STFT loss and the spectral bandwidth normaliser use the original's DefaultSTFTValues.
    n_fft: int = 2048
    hop_length: int = 256
    window_size: int = 1536

    def __post_init__(self):
        for name in ("downs_t", "strides_t", "hvqvae_multipliers"):
            if len(getattr(self, name)) != self.levels:
                raise ConfigError(f"vqvae.{name} {getattr(self, name)} must have one entry per level "
                                  f"(levels={self.levels})")
        n = len(self.multispec_loss_n_fft)
        for name in ("multispec_loss_hop_length", "multispec_loss_window_size"):
            if len(getattr(self, name)) != n:
                raise ConfigError(f"vqvae.{name} must have {n} entries like multispec_loss_n_fft")
        if self.loss_fn not in ("l1", "l2", "linf", "lmix"):
            raise ConfigError(f"vqvae.loss_fn {self.loss_fn!r} must be one of l1, l2, linf, lmix")
        _positive(self, "vqvae", "sr", "levels", "emb_width", "l_bins", "width", "depth", "linf_k")
        if not 0.0 < self.l_mu < 1.0:
            raise ConfigError(f"vqvae.l_mu {self.l_mu} must lie in (0, 1)")

    @property
    def hop_lengths(self) -> Tuple[int, ...]:
        """Cumulative downsampling of each level in audio samples (8, 32, 128 for the released model)."""
        hops, hop = [], 1
        for down, stride in zip(self.downs_t, self.strides_t):
            hop *= stride ** down
            hops.append(hop)
        return tuple(hops)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where training audio comes from and how windows are cut (the original's `data/files_dataset.py`)."""
    dataset_dir: str = ""           # a TFDS data_dir written by `jukejax.data.build_dataset`
    raw_audio: bool = False         # priors: encode audio batches with the frozen VQ-VAE every step instead
                                    # of reading pre-encoded codes (the original's way; slower)
    codes_dir: str = ""             # priors: pre-encoded codes (`python -m jukejax.data encode`); empty: made
                                    # in WORKDIR/codes from dataset_dir with config.vqvae_checkpoint
    dataset_name: str = "jukejax_music"
    split: str = "train"
    sample_length: int = 393216     # samples per training example (9 s at 44.1 kHz for the VQ-VAE)
    batch_size: int = 4             # global batch, split across processes and devices
    aug_shift: bool = True
    aug_blend: bool = True
    seed: int = 0
    worker_count: int = 0           # Grain worker processes (0: threads in the training process)
    mono: bool = True               # mix to one channel (random blend with aug_blend), as the released models
    num_epochs: Optional[int] = None  # None repeats forever
    # Fields that older config.json files hold and that mean nothing now (see `build`): the genre slots of a
    # prior's labels are `prior.max_bow_genre_size`, the only copy.
    RETIRED = frozenset({"max_bow_genre_size"})

    def __post_init__(self):
        _positive(self, "data", "sample_length", "batch_size")
        if self.worker_count < 0:
            raise ConfigError(f"data.worker_count is {self.worker_count}; expected 0 or more")
        if self.num_epochs is not None and self.num_epochs <= 0:
            raise ConfigError(f"data.num_epochs is {self.num_epochs}; expected a positive integer or None")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Adam with warmup, optional linear decay, global-norm clipping and decoupled weight decay
    (the original `train.py::get_optimizer`)."""
    lr: float = 3e-4
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    lr_warmup: int = 100
    lr_use_linear_decay: bool = False
    lr_start_linear_decay: int = 0
    lr_decay: int = 10_000_000_000
    grad_clip: float = 1.0
    ema_mu: float = 0.999           # EMA of weights; 0 disables it
    ignore_grad_norm: float = 0.0   # skip steps whose grad norm exceeds this (0 = never)

    def __post_init__(self):
        _positive(self, "optim", "lr", "grad_clip")
        if not 0.0 <= self.ema_mu < 1.0:
            raise ConfigError(f"optim.ema_mu {self.ema_mu} must lie in [0, 1)")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh sizes for the axes ("data", "fsdp", "tensor"); -1 means all remaining devices."""
    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    def __post_init__(self):
        sizes = (self.data, self.fsdp, self.tensor)
        if sum(s == -1 for s in sizes) > 1:
            raise ConfigError(f"mesh: at most one axis may be -1, got data={self.data} fsdp={self.fsdp} "
                              f"tensor={self.tensor}")
        if any(s == 0 or s < -1 for s in sizes):
            raise ConfigError(f"mesh sizes must be positive or -1, got data={self.data} fsdp={self.fsdp} "
                              f"tensor={self.tensor}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    num_steps: int = 100_000
    log_every: int = 100
    eval_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    seed: int = 0
    max_seconds: float = 0.0        # stop (with a checkpoint) after this much wall time; 0 = no limit
    init_from: str = ""             # fine-tune: start from this model folder's (EMA) weights, e.g. a converted
                                    # release (python -m jukejax.convert) or another run; "" = random init
    max_consecutive_skips: int = 20  # stop (exit 2) after more non-finite steps than this in a row; checked at
                                    # log and checkpoint steps, so the host never waits on the device in between
    profile_start: int = 0          # write a jax.profiler trace of steps profile_start..profile_stop (1-based,
    profile_stop: int = 0           # inclusive) to WORKDIR/profile; profile_stop 0 = no trace

    def __post_init__(self):
        _positive(self, "train", "num_steps", "log_every", "checkpoint_every", "keep_checkpoints")
        if self.max_consecutive_skips < 0:
            raise ConfigError(f"train.max_consecutive_skips is {self.max_consecutive_skips}; expected >= 0")
        if self.profile_stop and not 1 <= self.profile_start <= self.profile_stop:
            raise ConfigError(f"train.profile_start {self.profile_start} and profile_stop {self.profile_stop}: "
                              f"expected 1 <= profile_start <= profile_stop (steps are counted from 1)")


def _positive(obj, section: str, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            raise ConfigError(f"{section}.{name} is {value}; expected a positive number")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check `value` against a dataclass field annotation, converting lists to tuples."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if origin in (tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} is {value!r}; expected a tuple")
        (item_type, *_rest) = typing.get_args(annotation)
        return tuple(_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} is {value!r}; expected true or false")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where} is {value!r}; expected an integer")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where} is {value!r}; expected a finite number")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} is {value!r}; expected a string")
        return value
    return value


def _placeholder_type(annotation: Any) -> type:
    """The type a command-line override of an `Optional[X] = None` field is parsed as."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return typing.get_origin(args[0]) or args[0]


def config_section(cls, omit: Tuple[str, ...] = (), **values: Any) -> ml_collections.ConfigDict:
    """A ConfigDict section with the fields of the dataclass `cls`: its defaults, replaced by `values`.

    The dataclass is the one definition of each setting; the section only mirrors it. A field whose default
    is None becomes a typed placeholder, so `--config.prior.blocks=64` parses as an integer. `omit` leaves
    out fields that do not apply to a kind of model (a prior's `data.sample_length` is its window); `build`
    gives them their defaults.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in omit}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    out = ml_collections.ConfigDict()
    for name, field in fields.items():
        if field.default is dataclasses.MISSING:
            raise ConfigError(f"{cls.__name__}.{name} has no default; a config section needs one")
        value = values.get(name, field.default)
        if field.default is None:
            out[name] = config_dict.placeholder(_placeholder_type(hints[name]))
            if value is not None:
                out[name] = value
        else:
            out[name] = value
    return out


def build(cls, section: Any, name: str):
    """Build the frozen dataclass `cls` from a ConfigDict/dict section, validating every field.

    Keys named in the class's `RETIRED` set (fields of older versions, kept in saved config.json files) are
    dropped; a config made by `config_section` cannot hold them, so the command line still refuses them.
    """
    if section is None:
        section = {}
    items = dict(section.items()) if hasattr(section, "items") else None
    if items is None:
        raise ConfigError(f"config.{name} must be a mapping, got {type(section).__name__}")
    for key in getattr(cls, "RETIRED", ()):
        items.pop(key, None)
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(items) - fields)
    if unknown:
        raise ConfigError(f"config.{name} has unknown field(s) {', '.join(unknown)}; "
                          f"known fields: {', '.join(sorted(fields))}")
    kwargs = {k: _coerce(v, hints[k], f"config.{name}.{k}") for k, v in items.items()}
    return cls(**kwargs)
