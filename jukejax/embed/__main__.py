"""python -m jukejax.embed --checkpoint=MODEL (--audio_dir=DIR | --data_dir=DATASET [--split=S]) --out=DIR
[--layers=36] [--preset=jukemir|frames] [--pool=mean|max|none] [--fps=N] [--batch_size=N]
[--dtype=float32|bfloat16]

The top prior's activations after the given layers as features, one .npy per audio file (or per song of a
dataset built by `python -m jukejax.data build`) plus manifest.jsonl (see jukejax/embed/run.py for the layout
and jukejax/embed/presets.py for the recipes). Bad flags, models or files are one line on stderr and exit
status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from jukejax.cli import add_traceback_argument, run_reporting_user_errors
from jukejax.embed.presets import PRESETS


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jukejax.embed", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="model folder (vqvae/ and prior_level_*/, as "
                                                       "jukejax.convert writes)")
    p.add_argument("--audio_dir", help="folder of audio files (recursive); or give --data_dir")
    p.add_argument("--data_dir", help="a jukejax_music dataset (python -m jukejax.data build): one output per "
                                      "song, named by its song key")
    p.add_argument("--split", help="with --data_dir: embed only this split (train, test); default every split, "
                                   "each song's split in the manifest")
    p.add_argument("--out", required=True, help="output folder: <name>.npy per file and manifest.jsonl")
    p.add_argument("--layers", default="36", help="comma-separated layers, 1-based (jukemir: 36, Sheet Sage: 53, "
                                                  "EDGE: 66)")
    p.add_argument("--preset", default="jukemir", choices=PRESETS)
    p.add_argument("--pool", default=None, choices=("mean", "max", "none"),
                   help="over time; default mean for jukemir, none for frames")
    p.add_argument("--fps", type=float, default=None, help="frames preset: resample frames to this rate")
    p.add_argument("--batch_size", type=int, default=0, help="prior windows per step over all devices "
                                                             "(default: one per device)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="prior compute dtype")
    p.add_argument("--no_progress", action="store_true", help="no tqdm bar")
    multi = p.add_argument_group(
        "multi-process", "every process runs the same command (with its own --process_id, or --distributed) and "
        "embeds its share of the files (file i on process i mod P) into the one --out")
    multi.add_argument("--distributed", action="store_true", help="join JAX's runtime from the cluster's "
                                                                  "environment (TPU pod, SLURM)")
    multi.add_argument("--coordinator_address", default=None, help="host:port of process 0")
    multi.add_argument("--num_processes", type=int, default=None, help="how many processes take part")
    multi.add_argument("--process_id", type=int, default=None, help="this process's index")
    add_traceback_argument(p)
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    return run_reporting_user_errors(lambda: _run(args), traceback=args.traceback)


def _run(args: argparse.Namespace) -> int:
    from jukejax import parallel
    from jukejax.embed.model import EmbedError
    from jukejax.embed.run import EmbedConfig, run

    try:
        layers = tuple(int(x) for x in args.layers.split(",") if x.strip())
    except ValueError:
        raise EmbedError(f"--layers {args.layers!r}: expected comma-separated integers") from None
    # Before any JAX computation: joining the other processes must come first.
    parallel.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id,
                                    args.distributed)
    config = EmbedConfig(checkpoint=args.checkpoint, out=args.out, audio_dir=args.audio_dir,
                         data_dir=args.data_dir, split=args.split, layers=layers,
                         preset=args.preset, pool=args.pool, fps=args.fps, batch_size=args.batch_size,
                         dtype=args.dtype, progress=not args.no_progress)
    config.check()
    print(json.dumps(run(config)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
