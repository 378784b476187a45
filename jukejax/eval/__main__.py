"""python -m jukejax.eval fad|kad --ref DIR --gen DIR [--checkpoint MODEL] [--layer L] [--preset jukemir|frames]
[--fps N] [--n_bootstrap 100] [--seed 0] [--cache DIR] [--bandwidth S]

FAD (Fréchet audio distance, Kilgour et al. 2019) or KAD (unbiased kernel MMD^2) between the top-prior
embeddings of two folders, with a bootstrap confidence interval; prints one JSON object. A folder is either
the output of `python -m jukejax.embed` (its manifest says what it holds) or audio, embedded with --checkpoint
at --layer (default 36) by --preset (jukemir: one mean-pooled row per file; frames: one row per frame).
The bootstrap resamples files: a file drawn brings all its rows (frames of one song are not independent draws,
so resampling them one by one would make the interval too narrow); with one row per file that is resampling
rows.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from jukejax.cli import add_traceback_argument, run_reporting_user_errors


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jukejax.eval", description=__doc__.split("\n\n")[0])
    p.add_argument("metric", choices=("fad", "kad"))
    p.add_argument("--ref", required=True, help="reference folder (audio, or a jukejax.embed output)")
    p.add_argument("--gen", required=True, help="generated folder (audio, or a jukejax.embed output)")
    p.add_argument("--checkpoint", help="model folder, to embed folders of audio")
    p.add_argument("--layer", type=int, help="layer of the top prior (default 36, or the only one embedded)")
    p.add_argument("--preset", default="jukemir", choices=("jukemir", "frames"))
    p.add_argument("--fps", type=float, help="frames preset: frame rate of the rows")
    p.add_argument("--n_bootstrap", type=int, default=100, help="bootstrap resamples for the interval")
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bandwidth", type=float, help="kad: Gaussian kernel width (default: median distance)")
    p.add_argument("--cache", help="keep the embeddings of audio folders here (ref/, gen/) for reuse")
    add_traceback_argument(p)
    return p.parse_args(argv)


def evaluate(args: argparse.Namespace) -> dict:
    from jukejax.embed.model import EmbedError, Embedder
    from jukejax.eval import metrics
    from jukejax.eval.features import rows_for

    if args.n_bootstrap < 0:
        raise EmbedError(f"--n_bootstrap {args.n_bootstrap}: expected >= 0")
    if not 0 < args.confidence < 1:
        raise EmbedError(f"--confidence {args.confidence}: expected a number in (0, 1)")
    embedder = None
    if args.checkpoint:
        embedder = Embedder(args.checkpoint, layers=(36 if args.layer is None else args.layer,))
    ref, ref_info = rows_for(args.ref, args.checkpoint, args.layer, args.preset, args.fps, args.cache, "ref",
                             embedder)
    gen, gen_info = rows_for(args.gen, args.checkpoint, args.layer, args.preset, args.fps, args.cache, "gen",
                             embedder)
    if ref.shape[1] != gen.shape[1]:
        raise EmbedError(f"--ref has {ref.shape[1]}-dim embeddings, --gen {gen.shape[1]}-dim: not the same model")
    if ref_info["layer"] != gen_info["layer"]:
        raise EmbedError(f"--ref holds layer {ref_info['layer']}, --gen layer {gen_info['layer']}")
    for name, rows, info in (("ref", ref, ref_info), ("gen", gen, gen_info)):
        if rows.shape[0] < 2:
            raise EmbedError(f"--{name}: {rows.shape[0]} embedding row(s); a distribution needs at least 2")
        if args.n_bootstrap and info["files"] < 2:
            raise EmbedError(f"--{name}: 1 file; the bootstrap resamples files (its {rows.shape[0]} rows are not "
                             f"independent draws): give at least 2 files, or --n_bootstrap 0")
    resampling = dict(n_resamples=args.n_bootstrap, confidence=args.confidence, seed=args.seed,
                      groups_x=ref_info["row_file"], groups_y=gen_info["row_file"])
    if args.metric == "fad":
        result = metrics.bootstrap(metrics.frechet_distance, ref, gen, **resampling)
    else:
        bandwidth = args.bandwidth or metrics.median_bandwidth(ref, gen)
        result = metrics.kernel_bootstrap(ref, gen, bandwidth, **resampling)
    out = dict(metric=args.metric, **result, resampled="files", n_ref=int(ref.shape[0]),
               n_gen=int(gen.shape[0]), ref_files=ref_info["files"], gen_files=gen_info["files"],
               layer=ref_info["layer"], preset=ref_info["preset"], dim=int(ref.shape[1]))
    if args.metric == "kad":
        out["bandwidth"] = bandwidth
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        print(json.dumps(evaluate(args)))
        return 0
    return run_reporting_user_errors(body, traceback=args.traceback)


if __name__ == "__main__":
    sys.exit(main())
