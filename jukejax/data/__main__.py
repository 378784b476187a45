"""Command line for datasets: `python -m jukejax.data build --audio_dir DIR --data_dir OUT [--sr 44100 ...]`
and `python -m jukejax.data info --data_dir OUT`."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from typing import Optional, Sequence

from jukejax.config import ConfigError
from jukejax.data.builder import BuildConfig, DatasetError, build_dataset, load_summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jukejax.data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build a jukejax_music dataset from a folder of audio")
    build.add_argument("--audio_dir", required=True, help="folder of songs (recursive), with optional "
                                                          "metadata.jsonl")
    build.add_argument("--data_dir", required=True, help="output TFDS data_dir")
    defaults = BuildConfig(audio_dir="-")
    build.add_argument("--sr", type=int, default=defaults.sr)
    build.add_argument("--channels", type=int, default=defaults.channels, choices=(1, 2))
    build.add_argument("--window_seconds", type=float, default=defaults.window_seconds)
    build.add_argument("--min_duration", type=float, default=defaults.min_duration)
    build.add_argument("--max_duration", type=float, default=defaults.max_duration)
    build.add_argument("--test_fraction", type=float, default=defaults.test_fraction)
    build.add_argument("--seed", type=int, default=defaults.seed)
    build.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    info = commands.add_parser("info", help="print the build summary of a dataset")
    info.add_argument("--data_dir", required=True)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "build":
            config = BuildConfig(audio_dir=args.audio_dir, sr=args.sr, channels=args.channels,
                                 window_seconds=args.window_seconds, min_duration=args.min_duration,
                                 max_duration=args.max_duration, test_fraction=args.test_fraction,
                                 seed=args.seed)
            # TFDS prints progress to stdout; keep stdout for the summary JSON so it can be piped.
            with contextlib.redirect_stdout(sys.stderr):
                summary = build_dataset(config, args.data_dir, overwrite=args.overwrite)
        else:
            summary = load_summary(args.data_dir)
    except (ConfigError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
