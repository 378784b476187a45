"""Listening proxies for `make sample`'s output: do the samples have notes, and does each level keep the notes
of the level above?

  python scripts/demo_quality.py --samples samples/DIR [--samples samples/DIR2 ...] [--data DEMO_DATA]
      [--label TEXT ...] [--json OUT.json] [--update_card MODEL]

Per level of each sample folder (level_{l}/item_*.wav, as sample.py writes them) it measures

- pitch clarity: per 2048-sample frame, the highest normalised autocorrelation r(lag) / r(0) at lags of
  60-1000 Hz pitches, averaged over the frames that are not silent. A held note or chord scores near 1, white
  noise near 0;
- chroma similarity to the level above: the mean cosine of the 12 pitch-class energies of level l's audio and
  level l+1's, frame by frame (`check_reconstructions.chroma_similarity`). An upsampler that keeps the notes it
  was given scores near 1; unrelated music scores about 0.5.

With --data it measures the same pitch clarity on the held-out songs (the target) and on noise shaped to each
held-out song's average spectrum (what a sample without notes scores). --update_card stores the numbers (each
sample folder under its --label) in MODEL/training.json (key `listening`) and rewrites MODEL/MODEL_CARD.md.
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

from check_reconstructions import chroma_similarity, test_songs  # noqa: E402

from jukejax.cli import add_traceback_argument, run_reporting_user_errors  # noqa: E402
from jukejax.errors import UserError, atomic_write_text  # noqa: E402

FRAME = 2048
HOP = 512


def pitch_clarity(x: np.ndarray, sr: int, fmin: float = 60.0, fmax: float = 1000.0,
                  silence_db: float = -40.0) -> float:
    """Mean over non-silent frames of max_{lag in [sr/fmax, sr/fmin]} r(lag) / r(0), r the frame's
    autocorrelation (computed through a zero-padded FFT)."""
    x = np.asarray(x, np.float64)
    if x.ndim != 1 or x.shape[0] < FRAME:
        raise ValueError(f"need mono audio of at least {FRAME} samples, got shape {x.shape}")
    frames = np.lib.stride_tricks.sliding_window_view(x, FRAME)[::HOP]
    frames = frames - frames.mean(-1, keepdims=True)
    energy = (frames ** 2).sum(-1)
    loud = energy > energy.max() * 10 ** (silence_db / 10)
    frames, energy = frames[loud], energy[loud]
    spec = np.fft.rfft(frames, n=2 * FRAME, axis=-1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=-1)[:, :FRAME]
    lo, hi = int(np.floor(sr / fmax)), int(np.ceil(sr / fmin))
    return float((ac[:, lo:hi + 1].max(-1) / np.maximum(energy, 1e-20)).mean())


def matched_noise(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """White noise filtered to `x`'s average magnitude spectrum (same length, same RMS)."""
    rng = np.random.default_rng(seed)
    spectrum = np.abs(np.fft.rfft(x))
    phase = np.exp(2j * np.pi * rng.random(spectrum.shape))
    y = np.fft.irfft(spectrum * phase, n=x.shape[0])
    return (y * (np.sqrt(np.mean(x ** 2)) / max(np.sqrt(np.mean(y ** 2)), 1e-12))).astype(np.float32)


def _read(path: pathlib.Path):
    import soundfile as sf
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001  (soundfile raises several types)
        raise UserError(f"{path}: cannot read audio ({e})") from None
    return audio.mean(-1), sr


def measure_samples(folder: str) -> Dict[str, object]:
    """Per level of one sample.py output folder: pitch clarity, and chroma similarity to the level above."""
    root = pathlib.Path(folder)
    levels = sorted(int(p.name.split("_")[1]) for p in root.glob("level_*") if p.is_dir())
    if not levels:
        raise UserError(f"--samples {folder}: no level_*/ folders (expected sample.py's output)")
    audio = {}
    for level in levels:
        wavs = sorted((root / f"level_{level}").glob("item_*.wav"))
        if not wavs:
            raise UserError(f"--samples {folder}: level_{level}/ has no item_*.wav")
        audio[level] = [_read(w) for w in wavs]
    out = {"folder": str(root), "items": len(audio[levels[0]]), "levels": {}}
    for level in levels:
        row = {"pitch_clarity": float(np.mean([pitch_clarity(a, sr) for a, sr in audio[level]]))}
        if level + 1 in audio:
            sims = []
            for (a, sr), (b, _) in zip(audio[level], audio[level + 1]):
                n = min(a.shape[0], b.shape[0])
                sims.append(chroma_similarity(b[:n], a[:n], sr))
            row["chroma_vs_above"] = float(np.mean(sims))
        out["levels"][str(level)] = row
    return out


def measure_held_out(data: str, seconds: float) -> Dict[str, float]:
    songs = test_songs(str(pathlib.Path(data) / "data"), seconds, skip_seconds=5.0)
    real = [pitch_clarity(s["audio"], s["sr"]) for s in songs]
    noise = [pitch_clarity(matched_noise(s["audio"], i), s["sr"]) for i, s in enumerate(songs)]
    return {"songs": len(songs), "seconds": seconds, "pitch_clarity": float(np.mean(real)),
            "noise_pitch_clarity": float(np.mean(noise))}


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", action="append", default=[], help="a sample.py --workdir (repeatable)")
    p.add_argument("--data", default="", help="the folder scripts/make_demo_dataset.py wrote (held-out songs)")
    p.add_argument("--seconds", type=float, default=8.0, help="held-out audio per song")
    p.add_argument("--label", action="append", default=[],
                   help="what each --samples folder is, for the model card (one per --samples)")
    p.add_argument("--json", default="", help="also write the numbers here")
    p.add_argument("--update_card", metavar="MODEL", default="",
                   help="store the numbers in MODEL/training.json and rewrite MODEL/MODEL_CARD.md")
    add_traceback_argument(p)
    args = p.parse_args(argv)
    return run_reporting_user_errors(lambda: _run(args), traceback=args.traceback)


def _run(args) -> int:
    if args.label and len(args.label) != len(args.samples):
        raise UserError(f"--label: {len(args.label)} labels for {len(args.samples)} --samples folders; give one "
                        "per folder")
    card_path = pathlib.Path(args.update_card) / "training.json" if args.update_card else None
    if card_path is not None and not card_path.exists():
        raise UserError(f"--update_card {args.update_card}: no training.json (expected a model folder written by "
                        "scripts/train_demo.py)")
    result = {"samples": [measure_samples(f) for f in args.samples]}
    for s, label in zip(result["samples"], args.label):
        s["label"] = label
    if args.data:
        result["held_out"] = measure_held_out(args.data, args.seconds)
    for s in result["samples"]:
        print(f"{s['folder']} ({s['items']} items)")
        for level, row in sorted(s["levels"].items(), reverse=True):
            chroma = f"{row['chroma_vs_above']:.3f}" if "chroma_vs_above" in row else "-"
            print(f"  level {level}: pitch clarity {row['pitch_clarity']:.3f}, chroma vs level above {chroma}")
    if "held_out" in result:
        h = result["held_out"]
        print(f"held-out ({h['songs']} songs, {h['seconds']:g} s): pitch clarity {h['pitch_clarity']:.3f}; "
              f"spectrally matched noise {h['noise_pitch_clarity']:.3f}")
    if args.json:
        atomic_write_text(pathlib.Path(args.json), json.dumps(result, indent=2))
    if card_path is not None:
        from model_card import write_model_card
        card = json.loads(card_path.read_text())
        card["listening"] = result
        atomic_write_text(card_path, json.dumps(card, indent=2, default=float) + "\n")
        print(f"updated {write_model_card(card_path.parent, card)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
