"""Encode audio to VQ-VAE codes and decode codes back to audio, with a trained checkpoint.

  python -m jukejax.vqvae encode song.wav --checkpoint runs/vqvae --out codes.npz
  python -m jukejax.vqvae decode codes.npz --checkpoint runs/vqvae --level 0 --out out.wav

Codes are stored as npz (never pickle): `level_{l}` int32 arrays of shape (1, tokens), `sample_rate`,
`hop_lengths`.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Optional, Sequence

import numpy as np


def _load(checkpoint: str):
    import jax
    from jukejax.checkpoint import load_variables
    from jukejax.config import VQVAEConfig, build
    from jukejax.vqvae.model import VQVAE

    config, variables, _ = load_variables(checkpoint)
    if config.get("model") != "vqvae":
        raise ValueError(f"{checkpoint}: holds a {config.get('model')!r} model; expected a vqvae")
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
        raise ValueError(f"{audio_path}: {x.shape[0]} samples is shorter than one top-level hop ({top} samples)")
    zs = jax.jit(lambda v, x: model.apply(v, x, method=model.encode))(variables, x[None, :usable])
    arrays = {f"level_{level}": np.asarray(z, np.int32) for level, z in enumerate(zs)}
    return _save_npz(out, dict(arrays, sample_rate=np.int64(vq.sr), hop_lengths=np.asarray(vq.hop_lengths)))


def decode(codes_path: str, checkpoint: str, level: int, out: str) -> pathlib.Path:
    import jax
    from jukejax import audio

    vq, model, variables = _load(checkpoint)
    try:
        codes = np.load(codes_path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{codes_path}: not a codes npz file ({e})") from None
    key = f"level_{level}"
    if key not in codes:
        raise ValueError(f"{codes_path}: has no {key}; it holds {', '.join(sorted(codes.files))}")
    z = np.asarray(codes[key], np.int32)
    if z.ndim == 1:
        z = z[None]
    if z.min() < 0 or z.max() >= vq.l_bins:
        raise ValueError(f"{codes_path}: {key} has codes outside [0, {vq.l_bins})")
    x = jax.jit(lambda v, z: model.apply(v, [z], start_level=level, end_level=level + 1, method=model.decode))(variables, z)
    return audio.write_audio(out, np.asarray(x[0]), vq.sr)


def _save_npz(out: str, arrays) -> pathlib.Path:
    path = pathlib.Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    try:
        np.savez(tmp, **arrays)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jukejax.vqvae", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encode", help="audio file -> codes.npz (all levels)")
    enc.add_argument("audio")
    enc.add_argument("--checkpoint", required=True, help="a VQ-VAE training workdir")
    enc.add_argument("--out", required=True)
    dec = sub.add_parser("decode", help="codes.npz -> audio, with the decoder of one level")
    dec.add_argument("codes")
    dec.add_argument("--checkpoint", required=True)
    dec.add_argument("--level", type=int, default=0)
    dec.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "encode":
            path = encode(args.audio, args.checkpoint, args.out)
        else:
            path = decode(args.codes, args.checkpoint, args.level, args.out)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
