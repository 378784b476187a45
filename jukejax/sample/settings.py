"""Every setting of a sampling run, defined once: `SampleSettings` (type, default, help, how a command-line
string parses, whether it changes tokens).

From it come `configs/sample_defaults.py`'s ConfigDict (`defaults_config`), sample.py's absl flags
(`define_flags`) and the typed, validated settings the run reads (`from_config`). Nothing else lists settings.

Per-level settings (hop_fraction, temperature, max_batch_size) take one value for every level or one per level
(level 0 first); left empty they come from the model folder (`per_level_defaults`): every level samples at
temperature 0.99 in batches of up to 16, the top prior's windows advance by 1/8 of its context and the
upsamplers' by 1/2 (the original sample.py's hop_fraction [0.5, 0.5, 0.125] for levels 0, 1, 2), so a model of
any number of levels needs none of them.
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any, Dict, List, Mapping, Tuple

from jukejax.errors import UserError

MODES = ("ancestral", "primed", "continue", "upsample")

# Temperature divides the logits. Below 0.01 sampling is greedy for every practical purpose and logits / t
# leaves the range a bf16 computation holds (1e-40 turns every logit into inf and the tokens into garbage);
# above 10 every token is close to equally likely (noise).
MIN_TEMPERATURE = 0.01
MAX_TEMPERATURE = 10.0

DEFAULT_TEMPERATURE = 0.99
DEFAULT_MAX_BATCH_SIZE = 16
TOP_HOP_FRACTION = 0.125
UPSAMPLER_HOP_FRACTION = 0.5


class SampleError(UserError):
    """A setting or input a sampling run cannot use; the message names it (sample.py prints it, exits 2)."""


def _setting(default, help: str, kind: str, recorded: bool = True):
    """kind: how a command-line string parses: str, int, float, bool, floats/ints (comma-separated, one per
    level or one for all), items ('a|b': one per item), files (comma-separated). recorded: the value changes
    the tokens, so `--resume` must see the same one."""
    return dataclasses.field(default=default, metadata=dict(help=help, kind=kind, recorded=recorded))


@dataclasses.dataclass(frozen=True)
class SampleSettings:
    checkpoint: str = _setting("", "model folder: vqvae/, prior_level_{l}/, optional ids/ (required)", "str")
    mode: str = _setting("ancestral", "what to start from: " + " | ".join(MODES), "str")
    artist: Tuple[str, ...] = _setting((), "artist name or id; 'a|b' gives one per item (default: unknown, or the "
                                           "codes file's)", "items")
    genre: Tuple[str, ...] = _setting((), "genre name(s) or id; 'a|b' gives one per item (default: unknown, or "
                                          "the codes file's)", "items")
    lyrics: str = _setting("", "lyrics text (default: none, or the codes file's)", "str")
    lyrics_file: str = _setting("", "read the lyrics from this UTF-8 file instead", "str")
    sample_length_in_seconds: float = _setting(
        0.0, "audio to generate, rounded down to whole top-level tokens (continue --keep: how much to add; "
             "upsample: 0 = all top-level codes)", "float")
    total_sample_length_in_seconds: float = _setting(
        0.0, "length of the whole song the timing labels describe (0 = the sample's, or the codes file's)", "float")
    n_samples: int = _setting(-1, "number of samples (-1 = 1; primed: one per audio file; continue/upsample: "
                                  "the codes file's or --keep's)", "int")
    hop_fraction: Tuple[float, ...] = _setting(
        (), "per level (level 0 first) or one for all: a window advances hop_fraction * n_ctx tokens "
            "(default: 0.5 for upsamplers, 0.125 for the top prior)", "floats")
    temperature: Tuple[float, ...] = _setting(
        (), f"per level or one for all, in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}] "
            f"(default {DEFAULT_TEMPERATURE})", "floats")
    top_k: int = _setting(0, "top-k filtering (0 = off)", "int")
    top_p: float = _setting(0.0, "nucleus filtering in [0, 1] (0 = off; not with top_k)", "float")
    levels: Tuple[int, ...] = _setting((), "levels to sample, e.g. 2 (default: what the mode samples)", "ints")
    max_batch_size: Tuple[int, ...] = _setting(
        (), f"samples per compiled batch, per level or one for all (default {DEFAULT_MAX_BATCH_SIZE})", "ints",
        recorded=False)
    seed: int = _setting(0, "random seed", "int")
    audio_file: Tuple[str, ...] = _setting((), "primed: comma-separated audio files", "files")
    prompt_length_in_seconds: float = _setting(
        0.0, "primed: prompt length; continue: cut the codes to this (0 = no cut)", "float")
    codes_file: str = _setting("", "continue/upsample: a level_*/codes.npz of an earlier run", "str")
    keep: Tuple[int, ...] = _setting((), "continue: rows of the codes file to keep, e.g. 2,5 (co-composition)",
                                     "ints")
    resume: bool = _setting(False, "go on with a killed run in --workdir (same command plus --resume)", "bool",
                            recorded=False)
    dtype: str = _setting("", "prior compute dtype override, e.g. bfloat16 ('' = the checkpoint's)", "str")
    cache_dtype: str = _setting("", "KV-cache dtype ('' = the compute dtype)", "str")
    decode_scan: bool = _setting(False, "decode repeated units of layers as one scan each: the window compiles "
                                        "several times faster (TPU), each token step runs slower", "bool",
                                 recorded=False)
    mesh: Tuple[int, ...] = _setting((-1, 1, 1), "data,fsdp,tensor device mesh (-1 = the remaining devices; "
                                                 "tokens do not depend on it)", "ints", recorded=False)
    alignment: bool = _setting(True, "lyric alignment for the html pages (priors with lyrics)", "bool",
                               recorded=False)
    progress: bool = _setting(True, "progress bars per level (tokens/s)", "bool", recorded=False)

    # ----------------------------------------------------------------------------------------------------
    def per_level(self, name: str, level: int, n_levels: int, default):
        """The value of per-level setting `name` at `level`: its one value, its level-th value, or `default`
        when it is empty."""
        values = getattr(self, name)
        if not values:
            return default
        if len(values) == 1:
            return values[0]
        if len(values) != n_levels:
            raise SampleError(f"{name} has {len(values)} values {list(values)}; give one, or one per level "
                              f"(this model has {n_levels} levels, 0..{n_levels - 1})")
        return values[level]

    def recorded(self) -> Dict[str, Any]:
        """The settings that decide the tokens (what run.json keeps for `--resume`)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata["recorded"]}


FIELDS = {f.name: f for f in dataclasses.fields(SampleSettings)}


def per_level_defaults(n_levels: int) -> Dict[str, Tuple]:
    """hop_fraction, temperature and max_batch_size per level of a model of `n_levels` levels (level 0 first)."""
    top = n_levels - 1
    return dict(hop_fraction=tuple(TOP_HOP_FRACTION if level == top else UPSAMPLER_HOP_FRACTION
                                   for level in range(n_levels)),
                temperature=(DEFAULT_TEMPERATURE,) * n_levels,
                max_batch_size=(DEFAULT_MAX_BATCH_SIZE,) * n_levels)


# ------------------------------------------------------------------------------------------------------------
# Parsing

def _split(value: Any, sep: str = ",") -> List[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(sep) if v.strip()]
    if isinstance(value, (int, float)):
        return [str(value)]
    return [str(v).strip() for v in (value or ()) if str(v).strip()]


def parse_value(name: str, value: Any) -> Any:
    """A setting's value from a command-line string or a config value, typed as its field says."""
    kind = FIELDS[name].metadata["kind"]
    try:
        if kind == "str":
            return "" if value is None else str(value)
        if kind == "bool":
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                return value.lower() in ("true", "1")
            return bool(value)
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "floats":
            return tuple(float(v) for v in _split(value))
        if kind == "ints":
            return tuple(int(v) for v in _split(value))
        if kind == "items":
            return tuple(_split(value, "|"))
        if kind == "files":
            return tuple(_split(value))
    except (TypeError, ValueError):
        expected = {"int": "an integer", "float": "a number", "bool": "true or false",
                    "floats": "numbers separated by commas", "ints": "integers separated by commas"}[kind]
        raise SampleError(f"{name} {value!r}: expected {expected}") from None
    raise AssertionError(f"unknown setting kind {kind!r}")


def from_config(config: Mapping[str, Any]) -> SampleSettings:
    """Typed, checked settings from a ConfigDict (or dict) with any subset of the fields; unknown names are an
    error. The lyrics file is read here, so a missing one stops the run before it writes anything."""
    unknown = sorted(set(config.keys()) - set(FIELDS))
    if unknown:
        raise SampleError(f"unknown sampling setting(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}")
    values = {name: parse_value(name, config[name]) for name in config.keys()}
    s = SampleSettings(**values)
    if s.lyrics_file:
        path = pathlib.Path(s.lyrics_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise SampleError(f"lyrics_file {path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
        s = dataclasses.replace(s, lyrics=text)
    check(s)
    return s


def check(s: SampleSettings) -> None:
    """Everything about the settings that needs no model (the model-dependent checks come in the run's plan)."""
    if not s.checkpoint:
        raise SampleError("--checkpoint is required (a model folder with vqvae/ and prior_level_*/)")
    if s.mode not in MODES:
        raise SampleError(f"mode {s.mode!r} is not one of {', '.join(MODES)}")
    if s.n_samples != -1 and s.n_samples < 1:
        raise SampleError(f"n_samples {s.n_samples}: must be at least 1")
    for t in s.temperature:
        if not t > 0:
            raise SampleError(f"temperature {t:g}: must be > 0")
        if not MIN_TEMPERATURE <= t <= MAX_TEMPERATURE:
            raise SampleError(f"temperature {t:g}: must lie in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}] (below "
                              f"{MIN_TEMPERATURE:g} is greedy decoding and overflows the logits; above "
                              f"{MAX_TEMPERATURE:g} is noise)")
    if s.top_k < 0:
        raise SampleError(f"top_k {s.top_k}: must be >= 0 (0 turns it off)")
    if not 0.0 <= s.top_p <= 1.0:
        raise SampleError(f"top_p {s.top_p:g}: must lie in [0, 1] (0 turns it off)")
    if s.top_k > 0 and s.top_p > 0:
        raise SampleError(f"top_k {s.top_k} and top_p {s.top_p:g} cannot be used together (as in the original); "
                          f"set one of them to 0")
    if any(b < 1 for b in s.max_batch_size):
        raise SampleError(f"max_batch_size {list(s.max_batch_size)}: must be at least 1")
    for h in s.hop_fraction:
        if not 0.0 < h <= 1.0:
            raise SampleError(f"hop_fraction {h:g}: must lie in (0, 1]")
    for name in ("sample_length_in_seconds", "total_sample_length_in_seconds", "prompt_length_in_seconds"):
        value = getattr(s, name)
        if not (math.isfinite(value) and value >= 0):
            raise SampleError(f"{name} {value:g}: must be a finite number >= 0")
    if any(level < 0 for level in s.levels):
        raise SampleError(f"levels {list(s.levels)}: levels are numbered from 0 (the bottom)")
    if len(s.mesh) != 3:
        raise SampleError(f"mesh {list(s.mesh)}: expected three sizes data,fsdp,tensor (-1 = the remaining "
                          f"devices)")
    if s.mode == "primed" and not s.audio_file:
        raise SampleError("mode primed needs --audio_file (comma-separated files)")
    if s.mode == "primed" and not s.prompt_length_in_seconds > 0:
        raise SampleError("mode primed needs --prompt_length_in_seconds > 0")
    for path in s.audio_file:
        if not pathlib.Path(path).is_file():
            raise SampleError(f"audio_file {path}: not found")
    if s.mode in ("continue", "upsample") and not s.codes_file:
        raise SampleError(f"mode {s.mode} needs --codes_file (a level_*/codes.npz written by an earlier run)")
    if s.codes_file and not pathlib.Path(s.codes_file).is_file():
        raise SampleError(f"codes_file {s.codes_file}: not found")
    if s.keep and s.mode != "continue":
        raise SampleError("--keep (co-composition) works with --mode=continue")
    if (s.mode in ("ancestral", "primed")
            and 0 < s.total_sample_length_in_seconds < s.sample_length_in_seconds):
        raise SampleError(f"total_sample_length_in_seconds {s.total_sample_length_in_seconds:g} is shorter than "
                          f"sample_length_in_seconds {s.sample_length_in_seconds:g}")


# ------------------------------------------------------------------------------------------------------------
# The two front ends built from the fields

_TEXT_KINDS = ("str", "items", "files")   # kept as the text the user wrote in the ConfigDict, parsed by from_config


def defaults_config():
    """configs/sample_defaults.py's ConfigDict: every field at its default (items and files as text, '' = none)."""
    import ml_collections
    return ml_collections.ConfigDict({name: "" if f.metadata["kind"] in ("items", "files") else f.default
                                      for name, f in FIELDS.items()})


def define_flags(flag_values=None) -> None:
    """One absl flag per setting (`--temperature=0.9,0.8`), default None = not given (the --config file's
    value stands)."""
    from absl import flags
    fv = flag_values or flags.FLAGS
    for name, f in FIELDS.items():
        define = {"bool": flags.DEFINE_bool, "int": flags.DEFINE_integer, "float": flags.DEFINE_float
                  }.get(f.metadata["kind"], flags.DEFINE_string)
        define(name, None, f.metadata["help"], flag_values=fv)


def config_with_flags(config, flag_values=None):
    """A copy of `config` with every setting given as a flag written over it (parsed as its field says)."""
    from absl import flags
    fv = flag_values or flags.FLAGS
    config = config.copy_and_resolve_references()
    with config.unlocked():
        for name in FIELDS:
            value = fv[name].value
            if value is not None:
                config[name] = value if FIELDS[name].metadata["kind"] in _TEXT_KINDS else parse_value(name, value)
    return config
