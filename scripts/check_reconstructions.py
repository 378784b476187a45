"""Held-out reconstructions of a VQ-VAE, written as wav files and measured: is it still the same music?

  python scripts/check_reconstructions.py --data DEMO_DATA --model models/demo --out recon/ [--update_card]

For each song of the test split (pieces the VQ-VAE never saw) it takes `--seconds` of audio, encodes it at
every level and decodes each level's codes back to audio, then writes `<song>_original.wav` and
`<song>_level<l>.wav` and measures per level:

- spectral convergence in dB (||S - S_hat|| / ||S||, the paper's figure; lower is better);
- chroma similarity: the mean cosine between the 12 pitch-class energies of the original and of the
  reconstruction, frame by frame. The same number between the original and the reconstruction of a
  *different* test piece is the baseline any music reaches; a reconstruction that keeps the notes scores near 1
  and well above that baseline.

`--update_card` stores the result in the model folder's training.json (key `reconstruction_check`) and rewrites
its MODEL_CARD.md.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Dict, List

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jukejax.cli import add_traceback_argument, run_reporting_user_errors  # noqa: E402
from jukejax.errors import UserError  # noqa: E402


def chroma(x: np.ndarray, sr: int, n_fft: int = 4096, hop: int = 1024, fmin: float = 60.0,
           fmax: float = 2000.0) -> np.ndarray:
    """(frames, 12) pitch-class energies (magnitude STFT bins folded onto the 12 semitones), one row per frame."""
    if x.shape[0] < n_fft:
        raise ValueError(f"{x.shape[0]} samples is shorter than one {n_fft}-sample frame")
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    mag = np.abs(np.fft.rfft(frames, axis=-1))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    keep = (freqs >= fmin) & (freqs <= fmax)
    pitch_class = np.round(12 * np.log2(freqs[keep] / 440.0) + 69).astype(int) % 12
    out = np.zeros((mag.shape[0], 12))
    for pc in range(12):
        out[:, pc] = mag[:, keep][:, pitch_class == pc].sum(-1)
    return out


def chroma_similarity(a: np.ndarray, b: np.ndarray, sr: int) -> float:
    """Mean cosine of the two chroma sequences over the frames where the reference `a` is not silent."""
    ca, cb = chroma(a, sr), chroma(b, sr)
    n = min(len(ca), len(cb))
    ca, cb = ca[:n], cb[:n]
    na, nb = np.linalg.norm(ca, axis=-1), np.linalg.norm(cb, axis=-1)
    loud = na > 1e-3 * na.max()
    cos = (ca * cb).sum(-1)[loud] / np.maximum(na[loud] * nb[loud], 1e-12)
    return float(cos.mean())


def test_songs(data_dir: str, seconds: float, skip_seconds: float) -> List[Dict[str, object]]:
    """Each test-split song's audio (mono float32), `seconds` long after the first `skip_seconds`."""
    from jukejax.data import load_source
    source = load_source(data_dir, "test")
    w = source.windows
    songs = []
    for song_id in np.unique(w["song_id"]):
        rows = np.flatnonzero(w["song_id"] == song_id)
        rows = rows[np.argsort(w["window_index"][rows])]
        records = [source[int(i)] for i in rows]
        audio = np.concatenate([r["audio"] for r in records]).astype(np.float32).mean(-1) / 32768.0
        start = int(skip_seconds * source.sample_rate)
        clip = audio[start:start + int(seconds * source.sample_rate)]
        if clip.shape[0] < int(seconds * source.sample_rate):
            clip = audio[:int(seconds * source.sample_rate)]
        key = records[0]["song_key"]
        songs.append(dict(key=key.decode() if isinstance(key, bytes) else str(key), audio=clip,
                          sr=source.sample_rate))
    if not songs:
        raise UserError(f"{data_dir}: the test split has no songs")
    return songs


def check(data_dir: str, model_dir: str, out_dir: str, seconds: float = 10.0, skip_seconds: float = 5.0):
    import jax
    import jax.numpy as jnp
    from jukejax import audio as audio_lib
    from jukejax.checkpoint import load_variables
    from jukejax.config import VQVAEConfig, build
    from jukejax.vqvae.losses import ratio_to_db, spectral_convergence
    from jukejax.vqvae.model import VQVAE

    config, variables, _ = load_variables(str(pathlib.Path(model_dir) / "vqvae"))
    vq = build(VQVAEConfig, config.vqvae, "vqvae")
    model = VQVAE(vq)
    encode = jax.jit(lambda v, x: model.apply(v, x, method=model.encode))
    decode = {level: jax.jit(lambda v, z, level=level: model.apply(v, [z], start_level=level, end_level=level + 1,
                                                                   method=model.decode))
              for level in range(vq.levels)}
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    songs = test_songs(data_dir, seconds, skip_seconds)
    top = vq.hop_lengths[-1]
    recons = []
    for song in songs:
        if song["sr"] != vq.sr:
            raise UserError(f"{data_dir}: sample rate {song['sr']} but the VQ-VAE expects {vq.sr}")
        x = song["audio"][:song["audio"].shape[0] // top * top]
        song["audio"] = x
        zs = encode(variables, jnp.asarray(x)[None, :, None])
        levels = [np.asarray(decode[level](variables, zs[level]))[0, :, 0] for level in range(vq.levels)]
        recons.append(levels)
        name = str(pathlib.PurePosixPath(song["key"]).with_suffix("")).replace("/", "_")
        audio_lib.write_audio(out / f"{name}_original.wav", x[:, None], vq.sr)
        for level, y in enumerate(levels):
            audio_lib.write_audio(out / f"{name}_level{level}.wav", np.clip(y, -1, 1)[:, None], vq.sr)

    per_song = []
    for i, (song, levels) in enumerate(zip(songs, recons)):
        x = song["audio"]
        other = recons[(i + 1) % len(recons)] if len(recons) > 1 else None
        row = dict(song=song["key"], seconds=x.shape[0] / vq.sr)
        for level, y in enumerate(levels):
            sc = spectral_convergence(jnp.asarray(x)[None, :, None], jnp.asarray(y)[None, :, None], vq)
            row[f"sc_db_l{level}"] = float(ratio_to_db(sc)[0])
            row[f"chroma_l{level}"] = chroma_similarity(x, y, vq.sr)
            if other is not None:
                n = min(x.shape[0], other[level].shape[0])
                row[f"chroma_other_l{level}"] = chroma_similarity(x[:n], other[level][:n], vq.sr)
        per_song.append(row)
    keys = [k for k in per_song[0] if k not in ("song", "seconds")]
    mean = {k: float(np.mean([r[k] for r in per_song if k in r])) for k in keys}
    return dict(songs=len(per_song), seconds_per_song=seconds, mean=mean, per_song=per_song)


def print_table(result: dict, levels: int, wav_dir: str) -> None:
    m = result["mean"]
    print(f"{result['songs']} held-out songs, {result['seconds_per_song']:g} s each; wav files in {wav_dir}")
    print("level  spectral convergence  chroma similarity  chroma vs another piece")
    for level in range(levels):
        print(f"{level:>5}  {m[f'sc_db_l{level}']:>17.1f} dB  {m[f'chroma_l{level}']:>17.3f}  "
              f"{m.get(f'chroma_other_l{level}', float('nan')):>23.3f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder written by scripts/make_demo_dataset.py")
    parser.add_argument("--model", default=str(ROOT / "models" / "demo"), help="model folder (with vqvae/)")
    parser.add_argument("--out", required=True, help="folder for the wav files")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--skip_seconds", type=float, default=5.0, help="start this far into each song")
    parser.add_argument("--update_card", action="store_true",
                        help="store the result in MODEL/training.json and rewrite MODEL/MODEL_CARD.md")
    add_traceback_argument(parser)
    args = parser.parse_args(argv)
    return run_reporting_user_errors(lambda: _run(args), traceback=args.traceback)


def _run(args) -> int:
    data = pathlib.Path(args.data)
    data_dir = data / "data" if (data / "data").is_dir() else data
    result = check(str(data_dir), args.model, args.out, args.seconds, args.skip_seconds)
    levels = sum(1 for k in result["mean"] if k.startswith("sc_db_l"))
    print_table(result, levels, args.out)
    if args.update_card:
        from jukejax.errors import atomic_write_text
        from model_card import write_model_card  # scripts/ is this script's directory
        model = pathlib.Path(args.model)
        card = json.loads((model / "training.json").read_text())
        card["reconstruction_check"] = result
        atomic_write_text(model / "training.json", json.dumps(card, indent=2, default=float))
        write_model_card(model, card)
        print(f"updated {model / 'training.json'} and {model / 'MODEL_CARD.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
