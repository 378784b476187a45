#!/usr/bin/env python
"""Render a demo dataset of real public-domain music from music21's bundled corpus, and build it.

    python scripts/make_demo_dataset.py --out /work/demo_data [--sr 22050] [--max_pieces 20]
        [--max_seconds 240] [--collections bach monteverdi ...]

writes
    OUT/audio/<collection>/*.wav   mono PCM-16 renders (FluidSynth + a General MIDI soundfont)
    OUT/audio/metadata.jsonl       {"file", "artist", "genre", "lyrics", "lyric_times", ...} per piece
    OUT/midi/                      the MIDI files that were rendered
    OUT/render_summary.json        what was rendered, what was skipped and why
    OUT/data/jukejax_music/1.0.0   the TFDS dataset (jukejax.data.build_dataset; test split by piece)

and prints a summary: pieces per collection, hours rendered, skipped pieces and why, wall time. The recipe
lives in scripts/music21_corpus.py. Needs `pip install music21` and, to render, Debian's `fluidsynth`
and `fluid-soundfont-gm` (or `timgm6mb-soundfont`); `--install` installs those with apt-get when root.
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import pathlib
import re
import shutil
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import music21_corpus as mc  # noqa: E402  (scripts/ is this script's directory)

from jukejax.cli import add_traceback_argument, run_reporting_user_errors  # noqa: E402
from jukejax.errors import atomic_write_text  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (audio/, midi/, data/ go under it)")
    p.add_argument("--sr", type=int, default=22050, help="sample rate of the built dataset")
    p.add_argument("--render_sr", type=int, default=None,
                   help="sample rate of the rendered wavs (default: --sr; the builder resamples to --sr); "
                        "44100 keeps a full-rate copy for later builds at any rate")
    p.add_argument("--max_pieces", type=int, default=20,
                   help="pieces per collection, evenly spaced over its sorted list (0 or less: all)")
    p.add_argument("--max_seconds", type=float, default=240.0,
                   help="longest piece, after repeats; longer ones are truncated or skipped (--on_long)")
    p.add_argument("--on_long", choices=("truncate", "skip"), default="truncate",
                   help="what to do with a piece longer than --max_seconds: cut it at a bar line, or skip it")
    p.add_argument("--collections", nargs="+", default=list(mc.DEFAULT_COLLECTIONS),
                   choices=list(mc.COLLECTIONS), metavar="NAME",
                   help=f"music21 corpus collections; known: {', '.join(mc.COLLECTIONS)}")
    p.add_argument("--window_seconds", type=float, default=24.0, help="dataset window length")
    p.add_argument("--test_fraction", type=float, default=0.1, help="share of pieces held out as test")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    p.add_argument("--soundfont", default=None, help="General MIDI .sf2 (default: Debian's, if installed)")
    p.add_argument("--gain", type=float, default=0.5, help="FluidSynth gain (output is peak-normalised)")
    p.add_argument("--install", action="store_true",
                   help=f"apt-get install {' '.join(mc.APT_PACKAGES)} if missing (needs root)")
    p.add_argument("--no_build", action="store_true", help="render only; do not build the TFDS dataset")
    p.add_argument("--overwrite", action="store_true",
                   help="remove OUT/audio, OUT/midi, OUT/data and OUT/render_summary.json first")
    p.add_argument("--quiet", action="store_true", help="no line per piece")
    add_traceback_argument(p)
    return p.parse_args(argv)


def _clear(out: pathlib.Path) -> None:
    for name in ("audio", "midi", "data"):
        shutil.rmtree(out / name, ignore_errors=True)
    (out / mc.RENDER_SUMMARY_FILE).unlink(missing_ok=True)


def print_summary(render: dict, build: dict | None, wall: dict) -> None:
    print("\n=== rendered ===")
    print(f"{'collection':<16}{'selected':>9}{'rendered':>9}{'skipped':>8}{'hours':>8}{'lyrics':>7}"
          f"{'cut':>5}")
    for name, c in render["per_collection"].items():
        print(f"{name:<16}{c['selected']:>9}{c['rendered']:>9}{c['skipped']:>8}{c['hours']:>8.3f}"
              f"{c['with_lyrics']:>7}{c['truncated']:>5}")
    print(f"total: {render['pieces_rendered']} of {render['pieces_selected']} pieces, "
          f"{render['hours_rendered']:.3f} h at {render['sample_rate']} Hz mono "
          f"({render['hours_rendered'] * 60:.1f} min)")
    if render["skipped"]:
        print(f"\n=== skipped: {len(render['skipped'])} ===")
        # grouped: numbers become N, and an exception's message is cut at its first parenthesis
        why = collections.Counter(re.sub(r"\d+(\.\d+)?", "N", s["reason"].split(" (")[0])[:100]
                                  for s in render["skipped"])
        for s in render["skipped"]:
            print(f"  {s['piece']}: {s['reason']}")
        if len(why) < len(render["skipped"]):
            print("  by reason: " + "; ".join(f"{n} x {r}" for r, n in why.most_common()))
    if build is not None:
        print("\n=== dataset ===")
        print(f"{build['dataset_dir']} ({build['sample_rate']} Hz, {build['channels']} channel, "
              f"{build['window_length']}-sample windows)")
        print(f"songs {build['songs']}, windows {build['windows']}, "
              f"hours { {k: round(v, 3) for k, v in build['hours'].items()} }, "
              f"artists {build['artists']}, genres {build['genres']} (ids include 'unknown'), "
              f"builder skipped {build['num_skipped']}")
        for s in build["skipped"]:
            print(f"  builder skipped {s['file']}: {s['reason']}")
    print("\n=== wall time ===")
    print("  " + ", ".join(f"{k} {v:.1f} s" for k, v in wall.items()))


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_reporting_user_errors(lambda: _run(args), traceback=args.traceback)


def _run(args) -> int:
    t0 = time.time()
    out = pathlib.Path(args.out).resolve()
    renderer = mc.find_renderer(soundfont=args.soundfont, install=args.install, gain=args.gain)
    mc.corpus_root()  # says clearly if music21 is missing
    if args.overwrite:
        _clear(out)
    elif (out / "data").exists():
        raise mc.Music21CorpusError(f"{out / 'data'} exists; pass --overwrite to rebuild")
    out.mkdir(parents=True, exist_ok=True)

    pieces = mc.select_pieces(args.collections, args.max_pieces if args.max_pieces > 0 else None)
    t_select = time.time() - t0
    render_sr = args.render_sr or args.sr
    print(f"{len(pieces)} pieces from {', '.join(args.collections)}; rendering at {render_sr} Hz with "
          f"{renderer.soundfont}", flush=True)

    def progress(i, n, piece, status, dt):
        if not args.quiet:
            print(f"[{i + 1}/{n}] {piece.id}: {status} ({dt:.1f} s)", flush=True)

    t1 = time.time()
    render = mc.make_audio_folder(out, pieces, renderer, sr=render_sr, max_seconds=args.max_seconds,
                                  on_long=args.on_long, progress=progress)
    t_render = time.time() - t1
    build = None
    t_build = 0.0
    if not args.no_build and render["pieces_rendered"]:
        from jukejax.data import BuildConfig, build_dataset
        t2 = time.time()
        build = build_dataset(BuildConfig(audio_dir=str(out / "audio"), sr=args.sr, channels=1,
                                          window_seconds=args.window_seconds,
                                          test_fraction=args.test_fraction, seed=args.seed), out / "data")
        t_build = time.time() - t2
    wall = {"select": t_select, "render": t_render, "build": t_build, "total": time.time() - t0}
    print_summary(render, build, wall)
    # The run's wall times beside what was rendered, for the record.
    summary_path = out / mc.RENDER_SUMMARY_FILE
    saved = json.loads(summary_path.read_text(encoding="utf-8"))
    saved["wall_s"] = {k: round(v, 1) for k, v in wall.items()}
    saved["args"] = vars(args)
    if build is not None:
        saved["dataset"] = {k: build[k] for k in ("dataset_dir", "songs", "windows", "hours", "artists",
                                                  "genres", "num_skipped")}
    atomic_write_text(summary_path, json.dumps(saved, indent=2, ensure_ascii=False) + "\n")
    return 0 if render["pieces_rendered"] else 1


if __name__ == "__main__":
    sys.exit(main())
