#!/usr/bin/env python
"""FAD / KAD of the demo model's samples against its held-out songs, with the floor and the ceiling.

    python scripts/demo_fad.py --samples SAMPLES_DIR --work WORK [--data DEMO_DATA] [--max_seconds 60]
        [--layer 8] [--fps 10]

1. takes the demo dataset's test split from --data (the folder scripts/make_demo_dataset.py wrote), each song
   cut to --max_seconds; without --data it re-renders that split: the pieces `scripts/make_demo_dataset.py` selects with the demo's
   arguments (15 per default collection), ranked by the builder's seeded split hash (seed 0), rendered in that
   order: the first round(0.1 * 129) = 13 are the held-out ones (all 129 were built), each cut to --max_seconds,
   within --render_budget seconds (pieces not rendered in time are listed in the report);
2. embeds with `jukejax.embed` (frames preset, --layer of the top prior, --fps frame rate): held-out songs,
   the samples (`SAMPLES_DIR/**/*.wav`, e.g. a `make sample` run's level_0/), and noise with each held-out
   song's magnitude spectrum and random phase;
3. prints a Markdown table: FAD and KAD with 95% bootstrap intervals (resampling whole files: the frames of one
   song or sample are not independent draws) for held-out half A vs half B (the floor), samples vs held-out,
   noise vs held-out (the ceiling), and writes it to WORK/fad.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import shutil
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "scripts"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import music21_corpus as mc  # noqa: E402

N_SONGS = 129      # songs in the built demo dataset (MODEL_CARD.md: train 116 + test 13)
TEST_FRACTION = 0.1
SEED = 0


def held_out_pieces(max_pieces: int = 15):
    pieces = mc.select_pieces(list(mc.DEFAULT_COLLECTIONS), max_pieces)
    return sorted(pieces, key=lambda p: hashlib.sha256(f"{SEED}\0{p.audio_key}".encode()).hexdigest())


def render_held_out(work: pathlib.Path, sr: int, max_seconds: float, budget_s: float) -> pathlib.Path:
    """Render the test split (the first 13 pieces in split-hash order: all 129 selected pieces were built),
    each cut to `max_seconds`; pieces whose parsing outlasts the time limit on this machine are left out, and
    rendering stops once `budget_s` seconds have gone (the report says how many songs it got)."""
    audio = work / "held_out" / "audio"
    if (work / "held_out" / "done.json").exists():
        return audio
    renderer = mc.find_renderer()
    n_test = int(round(N_SONGS * TEST_FRACTION))
    began = time.time()
    rendered, missing = [], []
    for i, piece in enumerate(held_out_pieces()[:n_test]):
        if time.time() - began > budget_s:
            missing.append(f"{piece.id} (render budget spent)")
            continue
        summary = mc.make_audio_folder(work / "held_out" / f"piece{i:02d}", [piece], renderer, sr=sr,
                                       max_seconds=max_seconds, on_long="truncate", parse_timeout=240.0)
        (rendered if summary["pieces_rendered"] else missing).append(piece.id)
        print(f"held-out {i + 1}/{n_test}: {piece.id}: {'rendered' if summary['pieces_rendered'] else 'skipped'}",
              flush=True)
    audio.mkdir(parents=True, exist_ok=True)
    for wav in sorted((work / "held_out").glob("piece*/audio/**/*.wav")):
        (audio / f"{wav.parent.parent.parent.name}_{wav.name}").write_bytes(wav.read_bytes())
    (work / "held_out" / "done.json").write_text(json.dumps({"rendered": rendered, "missing": missing,
                                                              "seconds": time.time() - began}))
    return audio


def held_out_from_dataset(work: pathlib.Path, data: str, max_seconds: float) -> pathlib.Path:
    """The built dataset's test songs, the first `max_seconds` of each, as wav files."""
    import soundfile as sf
    from check_reconstructions import test_songs

    audio = work / "held_out" / "audio"
    if (work / "held_out" / "done.json").exists():
        return audio
    began = time.time()
    audio.mkdir(parents=True, exist_ok=True)
    songs = test_songs(str(pathlib.Path(data) / "data"), max_seconds, skip_seconds=0.0)
    for song in songs:
        name = str(pathlib.PurePosixPath(song["key"]).with_suffix("")).replace("/", "_")
        sf.write(audio / f"{name}.wav", song["audio"], song["sr"], subtype="PCM_16")
    (work / "held_out" / "done.json").write_text(json.dumps({"rendered": [s["key"] for s in songs], "missing": [],
                                                              "seconds": time.time() - began, "source": data}))
    return audio


def matched_noise(src: pathlib.Path, dst: pathlib.Path, seed: int = 0) -> pathlib.Path:
    import soundfile as sf

    dst.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for wav in sorted(src.glob("*.wav")):
        x, sr = sf.read(wav, dtype="float32")
        spectrum = np.abs(np.fft.rfft(x))
        phase = np.exp(2j * np.pi * rng.random(spectrum.shape))
        noise = np.fft.irfft(spectrum * phase, n=x.shape[0])
        sf.write(dst / wav.name, (0.89 * noise / np.abs(noise).max()).astype(np.float32), sr, subtype="PCM_16")
    return dst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", action="append", required=True,
                   help="folder of sampled wavs (searched recursively); repeat it to compare several sets")
    p.add_argument("--label", action="append", default=[],
                   help="what each --samples set is, for the table (one per --samples)")
    p.add_argument("--checkpoint_note", default="",
                   help="which model the features come from, for the report (default: --checkpoint's path)")
    p.add_argument("--work", required=True, help="working folder (renders, embeddings, fad.md)")
    p.add_argument("--checkpoint", default=str(ROOT / "models" / "demo"))
    p.add_argument("--data", default="", help="the built demo dataset (make_demo_dataset.py --out): its test "
                                              "split is the held-out set (default: re-render that split)")
    p.add_argument("--max_seconds", type=float, default=60.0, help="held-out songs cut to this length")
    p.add_argument("--render_budget", type=float, default=900.0, help="seconds of rendering at most")
    p.add_argument("--layer", type=int, default=8)
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--n_bootstrap", type=int, default=100)
    p.add_argument("--samples_note", default="", help="how the samples were made, for the report")
    p.add_argument("--update_card", metavar="MODEL", help="store the table in MODEL/training.json and rewrite "
                                                          "MODEL/MODEL_CARD.md (e.g. models/demo)")
    args = p.parse_args(argv)
    if args.label and len(args.label) != len(args.samples):
        p.error(f"--label: {len(args.label)} labels for {len(args.samples)} --samples folders; give one per folder")

    from jukejax.embed import Embedder
    from jukejax.embed.run import EmbedConfig, run
    from jukejax.eval import metrics
    from jukejax.eval.features import load_rows

    work = pathlib.Path(args.work)
    t0 = time.time()
    embedder = Embedder(args.checkpoint, layers=(args.layer,))
    held = (held_out_from_dataset(work, args.data, args.max_seconds) if args.data
            else render_held_out(work, embedder.info.sr, args.max_seconds, args.render_budget))
    t_render = time.time() - t0
    files = sorted(held.glob("*.wav"))
    halves = {"held_out_a": files[0::2], "held_out_b": files[1::2]}
    for name, group in halves.items():
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        for f in group:
            (folder / f.name).write_bytes(f.read_bytes())
    sets = []
    for k, source_dir in enumerate(args.samples):
        samples = work / f"samples_{k}"
        shutil.rmtree(samples, ignore_errors=True)
        shutil.rmtree(work / "features" / f"samples_{k}", ignore_errors=True)
        samples.mkdir(parents=True)
        for i, wav in enumerate(sorted(pathlib.Path(source_dir).rglob("*.wav"))):
            (samples / f"{i:02d}_{wav.name}").write_bytes(wav.read_bytes())
        sets.append((f"samples_{k}", samples))
    noise = matched_noise(held, work / "noise")
    rows, files_of = {}, {}
    for name, folder in (("held_out", held), ("held_out_a", work / "held_out_a"), ("held_out_b", work / "held_out_b"),
                         *sets, ("noise", noise)):
        out = work / "features" / name
        run(EmbedConfig(checkpoint=args.checkpoint, out=str(out), audio_dir=str(folder), layers=(args.layer,),
                        preset="frames", fps=args.fps, progress=False), embedder)
        rows[name], info = load_rows(out, args.layer)
        files_of[name] = info["row_file"]
    seconds = {k: v.shape[0] / args.fps for k, v in rows.items()}
    results = []
    labels = args.label or [""] * len(sets)
    for label, a, b in (("held-out half A vs half B (floor)", "held_out_a", "held_out_b"),
                        *((f"samples{' (' + text + ')' if text else ''} vs held-out", name, "held_out")
                          for text, (name, _) in zip(labels, sets)),
                        ("spectrally matched noise vs held-out (ceiling)", "noise", "held_out")):
        x, y = rows[b], rows[a]
        by_file = dict(n_resamples=args.n_bootstrap, groups_x=files_of[b], groups_y=files_of[a])
        fad = metrics.bootstrap(metrics.frechet_distance, x, y, **by_file)
        kad = metrics.kernel_bootstrap(x, y, **by_file)
        results.append(dict(comparison=label, fad=fad["value"], fad_ci=fad["ci"], kad_x1000=1000 * kad["value"],
                            kad_x1000_ci=[1000 * v for v in kad["ci"]]))
    table = "\n".join(mc_table(results))
    done = json.loads((work / "held_out" / "done.json").read_text())
    source = ("taken from the built dataset's test split" if "source" in done
              else f"rendered: {len(done['rendered'])} of 13"
              + (f" (not rendered: {', '.join(done['missing'])})" if done["missing"] else ""))
    note = (f"Held-out songs {source}. "
            f"Features: top prior layer {args.layer} of {embedder.info.depth} of "
            f"{args.checkpoint_note or args.checkpoint}, frames preset at {args.fps:g} frames/s; "
            f"audio: held-out {seconds['held_out']:.0f} s ({len(files)} songs, cut to {args.max_seconds:g} s), "
            f"samples {', '.join(f'{seconds[name]:.0f} s' for name, _ in sets)}"
            f"{' (' + args.samples_note + ')' if args.samples_note else ''}, noise {seconds['noise']:.0f} s; "
            f"{args.n_bootstrap} bootstrap "
            f"resamples of whole files; preparing the held-out songs took {done['seconds']:.0f} s, embedding and metrics "
            f"{time.time() - t0 - t_render:.0f} s on the loaded 2-core machine.")
    (work / "fad.md").write_text(table + "\n\n" + note + "\n")
    print(table + "\n\n" + note)
    if args.update_card:
        from jukejax.errors import atomic_write_text
        from model_card import write_model_card

        model = pathlib.Path(args.update_card)
        card = json.loads((model / "training.json").read_text())
        card["embedding_distances"] = dict(rows=results, note=note)
        atomic_write_text(model / "training.json", json.dumps(card, indent=2) + "\n")
        print(f"updated {write_model_card(model, card)}")
    return 0


def mc_table(results):
    """The Markdown table of `results` (also what scripts/model_card.py prints)."""
    from model_card import embedding_distance_table
    return embedding_distance_table(results)


if __name__ == "__main__":
    sys.exit(main())
