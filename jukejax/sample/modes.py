"""Where a sampling run starts from: the original `jukebox/sample.py`'s `--mode`s
(ancestral, primed, continue, upsample).

Every mode only chooses the codes each level starts with; the windowed schedule then fills every sampled
level to the sample length, skipping the windows those codes already fill.

| mode        | starts from                                                       | samples by default          |
|-------------|-------------------------------------------------------------------|-----------------------------|
| ancestral   | nothing                                                           | every level, top first      |
| primed      | audio files (mono, model sr, tiled to n_samples, cut to a whole   | every level                 |
|             | number of top-level tokens) encoded at every level                |                             |
| continue    | a codes.npz of an earlier run, optionally cut to                  | every level                 |
|             | prompt_length_in_seconds; with `keep` (co-composition) the chosen |                             |
|             | rows, repeated to n_samples, extended by sample_length_in_seconds |                             |
| upsample    | the top-level codes of a codes.npz (lower levels start empty)     | every level below the top   |
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jukejax.audio import read_audio
from jukejax.config import VQVAEConfig
from jukejax.errors import UserError
from jukejax.sample.bundle import Bundle
from jukejax.sample.outputs import read_codes
from jukejax.vqvae.codes import check_codes
from jukejax.vqvae.model import VQVAE

MODES = ("ancestral", "primed", "continue", "upsample")


class ModeError(UserError):
    """Inputs of a mode (audio prompts, codes files, lengths) that cannot be used."""


@dataclasses.dataclass
class Start:
    """Codes every level starts from and what the mode decided about the run.

    zs: (n_samples, tokens) int32 per level (empty where nothing is known); sample_length: audio samples every
    sampled level is filled to; labels/total_length: what a codes file recorded (None otherwise)."""
    zs: Dict[int, np.ndarray]
    default_levels: List[int]
    sample_length: int
    n_samples: int
    labels: Optional[Tuple[List[str], List[str], List[str]]] = None
    total_length: Optional[int] = None


def whole_tokens(seconds: float, sr: int, top_hop: int, name: str) -> int:
    """`seconds` in audio samples rounded down to a whole number of top-level tokens (the original's
    `sample_length_in_seconds * sr // top_raw_to_tokens * top_raw_to_tokens`); at least one token."""
    samples = int(seconds * sr) // top_hop * top_hop
    if samples <= 0:
        raise ModeError(f"{name} {seconds:g} is shorter than one top-level token ({top_hop} samples = "
                        f"{top_hop / sr:g} s at {sr} Hz)")
    return samples


def _empty(bundle: Bundle, n: int) -> Dict[int, np.ndarray]:
    return {level: np.zeros((n, 0), np.int32) for level in range(bundle.levels)}


def ancestral(bundle: Bundle, n_samples: int, sample_seconds: float) -> Start:
    sample_length = whole_tokens(sample_seconds, bundle.sr, bundle.hop_lengths[-1], "sample_length_in_seconds")
    return Start(_empty(bundle, n_samples), list(range(bundle.levels))[::-1], sample_length, n_samples)


# ------------------------------------------------------------------------------------------------------------
# primed

def load_prompts(audio_files: Sequence[str], duration: int, sr: int, n_samples: int) -> np.ndarray:
    """(n_samples, duration, 1) float32: the first `duration` samples of each file at `sr`, mono, the files
    repeated in order until there are n_samples (original `load_prompts`)."""
    if not audio_files:
        raise ModeError("mode primed needs --audio_file (one or more files, comma separated)")
    prompts = []
    for path in audio_files:
        x, _ = read_audio(path, sr=sr, mono=True)
        if x.shape[0] < duration:
            raise ModeError(f"{path}: {x.shape[0] / sr:g} s long, shorter than the prompt of {duration / sr:g} s "
                            f"({duration} samples at {sr} Hz)")
        prompts.append(x[:duration])
    return np.stack([prompts[i % len(prompts)] for i in range(n_samples)]).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("config",))
def _encode(variables, x, *, config: VQVAEConfig):
    return VQVAE(config).apply(variables, x, start_level=0, end_level=config.levels, method=VQVAE.encode)


def encode(bundle: Bundle, x: np.ndarray) -> Dict[int, np.ndarray]:
    """Codes of audio (N, T, 1) at every level, one item at a time (the original's bs_chunks = N)."""
    per_item = [_encode(bundle.vqvae_variables, jnp.asarray(x[i:i + 1]), config=bundle.vqvae_config)
                for i in range(x.shape[0])]
    return {level: np.concatenate([np.asarray(z[level], np.int32) for z in per_item], axis=0)
            for level in range(bundle.levels)}


def primed(bundle: Bundle, n_samples: int, sample_seconds: float, audio_files: Sequence[str],
           prompt_seconds: float) -> Start:
    top_hop = bundle.hop_lengths[-1]
    sample_length = whole_tokens(sample_seconds, bundle.sr, top_hop, "sample_length_in_seconds")
    if not prompt_seconds > 0:
        raise ModeError("mode primed needs --prompt_length_in_seconds > 0")
    duration = whole_tokens(prompt_seconds, bundle.sr, top_hop, "prompt_length_in_seconds")
    if duration > sample_length:
        raise ModeError(f"prompt_length_in_seconds {prompt_seconds:g} ({duration} samples) is longer than the sample "
                        f"({sample_seconds:g} s, {sample_length} samples)")
    x = load_prompts(audio_files, duration, bundle.sr, n_samples)
    return Start(encode(bundle, x), list(range(bundle.levels))[::-1], sample_length, n_samples)


# ------------------------------------------------------------------------------------------------------------
# continue / upsample (and co-composition)

def from_codes(bundle: Bundle, mode: str, codes_file: str, n_samples: Optional[int], sample_seconds: float,
               prompt_seconds: float, keep: Sequence[int]) -> Start:
    """Start of a `continue` or `upsample` run from an earlier run's codes.npz (any level's: each holds every
    level known when it was written)."""
    if not codes_file:
        raise ModeError(f"mode {mode} needs --codes_file (a level_*/codes.npz of an earlier run)")
    codes = read_codes(codes_file)
    sr, hops, top = bundle.sr, bundle.hop_lengths, bundle.top_level
    if codes.sr != sr or tuple(codes.hop_lengths) != tuple(hops):
        raise ModeError(f"codes file {codes_file} holds codes of a VQ-VAE at {codes.sr} Hz with hop lengths "
                        f"{tuple(codes.hop_lengths)}; the bundle's VQ-VAE has {sr} Hz, {tuple(hops)}")
    n_codes = codes.n_samples
    zs = {level: codes.zs.get(level, np.zeros((n_codes, 0), np.int32)) for level in range(bundle.levels)}
    zs[codes.level] = codes.z
    l_bins = bundle.vqvae_config.l_bins
    for level, z in zs.items():  # every code must index the bundle's codebooks
        name = f"codes file {codes_file}: " + ("z" if level == codes.level else f"z_level_{level}")
        zs[level] = check_codes(z, l_bins=l_bins, name=name)
    labels = (list(codes.artist), list(codes.genre), list(codes.lyrics))

    if prompt_seconds > 0:  # the original's load_codes(duration): cut every level to the prompt
        duration = whole_tokens(prompt_seconds, sr, hops[-1], "prompt_length_in_seconds")
        have = zs[top].shape[1] * hops[-1]
        if duration > have:
            raise ModeError(f"prompt_length_in_seconds {prompt_seconds:g} is longer than the {have / sr:g} s of "
                            f"top-level codes in {codes_file}")
        zs = {level: z[:, :duration // hops[level]] for level, z in zs.items()}

    if keep:
        if mode != "continue":
            raise ModeError("--keep (co-composition) works with mode continue")
        bad = [k for k in keep if not 0 <= k < n_codes]
        if bad:
            raise ModeError(f"--keep {', '.join(map(str, bad))} out of range: {codes_file} has {n_codes} samples "
                            f"(rows 0..{n_codes - 1})")
        n_samples = n_samples or len(keep)
        rows = [keep[i % len(keep)] for i in range(n_samples)]
        zs = {level: z[rows] for level, z in zs.items()}
        labels = tuple([values[r] for r in rows] for values in labels)
    else:
        if n_samples is not None and n_samples != n_codes:
            raise ModeError(f"codes file {codes_file} has {n_codes} samples but n_samples is {n_samples}; leave "
                            f"n_samples unset, or choose and repeat rows with --keep")
        n_samples = n_codes

    have_top = zs[top].shape[1] * hops[-1]
    if mode == "upsample":
        if have_top == 0:
            raise ModeError(f"mode upsample needs top-level (level {top}) codes; {codes_file} has none")
        sample_length = have_top
        if sample_seconds > 0:
            sample_length = whole_tokens(sample_seconds, sr, hops[-1], "sample_length_in_seconds")
            if sample_length > have_top:
                raise ModeError(f"sample_length_in_seconds {sample_seconds:g} is longer than the {have_top / sr:g} s "
                                f"of top-level codes in {codes_file}; upsample only adds lower levels")
            zs = {level: z[:, :sample_length // hops[level]] for level, z in zs.items()}
        # Lower levels start empty: upsampling re-samples them from the top codes whatever the file holds.
        zs = {level: (z if level == top else z[:, :0]) for level, z in zs.items()}
        default_levels = list(range(top))[::-1]
    else:
        if not sample_seconds > 0:
            raise ModeError("mode continue needs --sample_length_in_seconds > 0 (with --keep: how much to add)")
        more = whole_tokens(sample_seconds, sr, hops[-1], "sample_length_in_seconds")
        if keep:  # co-composition (the notebook): extend the kept rows by sample_length_in_seconds
            sample_length = have_top + more
        else:
            sample_length = more
            if have_top > sample_length:
                raise ModeError(f"{codes_file} already holds {have_top / sr:g} s of top-level codes, more than "
                                f"sample_length_in_seconds {sample_seconds:g}; cut them with "
                                f"--prompt_length_in_seconds or ask for a longer sample")
        default_levels = list(range(bundle.levels))[::-1]
    for level, z in zs.items():
        if z.shape[1] * hops[level] > sample_length:
            raise ModeError(f"{codes_file}: level {level} holds {z.shape[1] * hops[level] / sr:g} s of codes, more than "
                            f"the {sample_length / sr:g} s sample")
    return Start(zs, default_levels, sample_length, n_samples, labels=labels,
                 total_length=codes.total_length or None)


def prepare(bundle: Bundle, mode: str, *, n_samples: Optional[int], sample_seconds: float,
            audio_files: Sequence[str] = (), prompt_seconds: float = 0.0, codes_file: str = "",
            keep: Sequence[int] = ()) -> Start:
    """The Start of `mode` (see the module table)."""
    if mode not in MODES:
        raise ModeError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if keep and mode != "continue":
        raise ModeError("--keep (co-composition) works with mode continue")
    if mode in ("ancestral", "primed"):
        n = n_samples or (len(audio_files) if mode == "primed" and audio_files else 1)
        if not sample_seconds > 0:
            raise ModeError(f"mode {mode} needs --sample_length_in_seconds > 0")
        if mode == "ancestral":
            return ancestral(bundle, n, sample_seconds)
        return primed(bundle, n, sample_seconds, audio_files, prompt_seconds)
    return from_codes(bundle, mode, codes_file, n_samples, sample_seconds, prompt_seconds, keep)
