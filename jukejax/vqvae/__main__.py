"""Encode audio to VQ-VAE codes and decode codes back to audio, with a trained checkpoint.

  python -m jukejax.vqvae encode song.wav --checkpoint runs/vqvae --out codes.npz
  python -m jukejax.vqvae decode codes.npz --checkpoint runs/vqvae --level 0 --out out.wav

`--checkpoint` is a VQ-VAE training workdir or a model folder (its `vqvae/` is used: `models/demo`, a
`jukejax.convert` or `jukejax.bundle` output).

Codes are stored as npz (never pickle): `level_{l}` int32 arrays of shape (1, tokens), `sample_rate`,
`hop_lengths`.
"""
from __future__ import annotations

import argparse
import io
import pathlib
import sys
import zipfile
import zlib
from typing import Optional, Sequence

import numpy as np

from jukejax.cli import add_traceback_argument, run_reporting_user_errors
from jukejax.errors import UserError, atomic_write_bytes


class CodesFileError(UserError):
    """A codes file this VQ-VAE cannot decode: not an npz, no such level, wrong dtype/rank, codes out of range."""


def resolve_checkpoint(checkpoint: str) -> str:
    """A VQ-VAE workdir as given, or a model folder's `vqvae/` workdir."""
    from jukejax.checkpoint import CONFIG_FILE
    folder = pathlib.Path(checkpoint)
    if not (folder / CONFIG_FILE).is_file() and (folder / "vqvae" / CONFIG_FILE).is_file():
        return str(folder / "vqvae")
    return checkpoint


def _load(checkpoint: str):
    import jax
    from jukejax.checkpoint import CheckpointError, load_variables
    from jukejax.config import VQVAEConfig, build
    from jukejax.vqvae.model import VQVAE

    checkpoint = resolve_checkpoint(checkpoint)
    config, variables, _ = load_variables(checkpoint)
    if config.get("model") != "vqvae":
        raise CheckpointError(f"{checkpoint}: holds a {config.get('model')!r} model; expected a vqvae")
    vq = build(VQVAEConfig, config.vqvae, "vqvae")
    variables = jax.tree.map(np.asarray, variables)
    return vq, VQVAE(vq), variables


def encode(audio_path: str, checkpoint: str, out: str) -> pathlib.Path:
    import jax
    from jukejax import audio

    vq, model, variables = _load(checkpoint)
    x, _ = audio.read_audio(audio_path, sr=vq.sr, mono=True)
    top = vq.hop_lengths[-1]
    usable = x.shape[0] // top * top
    if usable == 0:
        raise audio.AudioError(f"{audio_path}: {x.shape[0]} samples is shorter than one top-level hop "
                               f"({top} samples)")
    zs = jax.jit(lambda v, x: model.apply(v, x, method=model.encode))(variables, x[None, :usable])
    arrays = {f"level_{level}": np.asarray(z, np.int32) for level, z in enumerate(zs)}
    return _save_npz(out, dict(arrays, sample_rate=np.int64(vq.sr), hop_lengths=np.asarray(vq.hop_lengths)))


def read_level_codes(codes_path: str, level: int, levels: int, l_bins: int) -> np.ndarray:
    """Level `level`'s codes of an `encode` output as int32 (N, T), checked against a VQ-VAE with `levels`
    levels and `l_bins` codes: an npz (random bytes or a pickle are named as such), integer dtype, rank 1 or 2,
    at least one token, every code in [0, l_bins) (`jukejax.vqvae.codes.check_codes`)."""
    from jukejax.vqvae.codes import check_codes, open_npz
    if not 0 <= level < levels:
        raise CodesFileError(f"--level {level}: the VQ-VAE has levels 0..{levels - 1}")
    key = f"level_{level}"
    with open_npz(codes_path) as codes:
        if key not in codes.files:
            raise CodesFileError(f"{codes_path}: has no {key}; it holds {', '.join(sorted(codes.files))}")
        try:
            z = codes[key]
        except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:   # e.g. a pickled object array
            raise CodesFileError(f"{codes_path}: {key} cannot be read ({type(e).__name__}: {e})") from None
    if z.ndim == 1:
        z = z[None]
    if z.ndim == 2 and z.size == 0:
        raise CodesFileError(f"{codes_path}: {key} has shape {z.shape}; expected at least one token")
    return check_codes(z, l_bins=l_bins, name=f"{codes_path}: {key}")


def decode(codes_path: str, checkpoint: str, level: int, out: str) -> pathlib.Path:
    import jax
    from jukejax import audio

    audio.check_writable_audio_path(out)
    vq, model, variables = _load(checkpoint)
    z = read_level_codes(codes_path, level, vq.levels, vq.l_bins)
    x = jax.jit(lambda v, z: model.apply(v, [z], start_level=level, end_level=level + 1,
                                         method=model.decode))(variables, z)
    return audio.write_audio(out, np.asarray(x[0]), vq.sr)


def _save_npz(out: str, arrays) -> pathlib.Path:
    path = pathlib.Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jukejax.vqvae", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encode", help="audio file -> codes.npz (all levels)")
    where = "a VQ-VAE training workdir or a model folder (its vqvae/)"
    enc.add_argument("audio", help="audio file (wav, flac, ogg, mp3); resampled to the VQ-VAE's rate, mono")
    enc.add_argument("--checkpoint", required=True, help=where)
    enc.add_argument("--out", required=True, help="codes file to write (.npz: level_{l}, sample_rate, "
                                                  "hop_lengths)")
    dec = sub.add_parser("decode", help="codes.npz -> audio, with the decoder of one level")
    dec.add_argument("codes", help="codes file (.npz from encode, or a sampling run's level_{l}/codes.npz)")
    dec.add_argument("--checkpoint", required=True, help=where)
    dec.add_argument("--level", type=int, default=0, help="which level's codes to decode (0 = bottom)")
    dec.add_argument("--out", required=True, help="wav file to write")
    add_traceback_argument(parser)
    args = parser.parse_args(argv)

    def run() -> int:
        if args.command == "encode":
            path = encode(args.audio, args.checkpoint, args.out)
        else:
            path = decode(args.codes, args.checkpoint, args.level, args.out)
        print(path)
        return 0

    return run_reporting_user_errors(run, traceback=args.traceback)


if __name__ == "__main__":
    sys.exit(main())
