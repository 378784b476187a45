"""Convert PyTorch Jukebox checkpoints to jukejax workdirs, or describe a converted directory.

  python -m jukejax.convert --from openai --vqvae vqvae.pth.tar --prior prior_level_0.pth.tar \\
      --prior prior_level_1.pth.tar --prior prior_level_2.pth.tar --model 1b_lyrics --out DIR \\
      [--artist_ids v3_artist_ids.txt --genre_ids v3_genre_ids.txt] [--dtype float32|bfloat16]
  python -m jukejax.convert --from openai --vqvae V.pth.tar --prior P.pth.tar --vqvae_config my_vqvae.py \\
      --prior_config my_prior.py --out DIR                      # custom models: configs/*.py-style files
  python -m jukejax.convert --from hf HF_MODEL_DIR_OR_WEIGHTS_FILE --out DIR
  python -m jukejax.convert --describe DIR                    # params in the checkpoint vs from the config

A prior file's level comes from its `hps` (training saves), else its keys (no upsampler conditioner: the top
prior), else its file name (`prior_level_N`), else the order of --prior among the upsamplers.
Exit status: 0 done, 1 --describe found a mismatch, 2 error (one message on stderr).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from jukejax.cli import add_traceback_argument


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jukejax.convert", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--from", dest="source_kind", choices=("openai", "hf"),
                   help="openai: openai/jukebox .pth.tar files; hf: a transformers JukeboxModel")
    p.add_argument("source", nargs="?", help="with --from hf: the model folder or its weights file")
    p.add_argument("--out", help="output directory (must not exist or be empty)")
    p.add_argument("--vqvae", help="openai: vqvae.pth.tar")
    p.add_argument("--prior", action="append", default=[], help="openai: a prior_level_N.pth.tar (repeat)")
    p.add_argument("--model", choices=("5b", "5b_lyrics", "1b_lyrics"),
                   help="openai: use the released configs of this model (VQ-VAE, upsamplers, top prior)")
    p.add_argument("--vqvae_config", help="openai: a configs/*.py-style file for the VQ-VAE (overrides --model)")
    p.add_argument("--prior_config", action="append", default=[],
                   help="openai: a configs/*.py-style prior config; its prior.level says which file (repeat)")
    p.add_argument("--artist_ids", action="append", default=[], help="artist id file to copy into DIR/ids")
    p.add_argument("--genre_ids", action="append", default=[], help="genre id file to copy into DIR/ids")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="stored dtype of the prior params (the VQ-VAE stays float32)")
    p.add_argument("--describe", metavar="DIR", help="print parameter counts of a converted directory")
    p.add_argument("--json", action="store_true", help="with --describe: one JSON object")
    add_traceback_argument(p)
    return p


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _print_describe(rows, as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows))
        return
    print(f"{'component':<16} {'checkpoint params':>18} {'config params':>15}  match  dtypes")
    for r in rows:
        extra = f", codebooks {r['codebook_values']:,} values" if r["codebook_values"] else ""
        print(f"{r['component']:<16} {r['checkpoint_params']:>18,} {r['config_params']:>15,}  "
              f"{'yes' if r['match'] else 'NO':<5}  {','.join(r['dtypes'])}{extra}")


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from jukejax.convert import convert_hf, convert_openai, describe

    if args.describe:
        rows = describe(args.describe)
        _print_describe(rows, args.json)
        return 0 if all(r["match"] for r in rows) else 1
    if not args.source_kind or not args.out:
        parser.error("give --from openai|hf and --out (or --describe DIR)")
    if args.source_kind == "hf":
        if not args.source:
            parser.error("--from hf needs the HF model folder or weights file")
        for flag in ("vqvae", "model", "vqvae_config"):
            if getattr(args, flag):
                parser.error(f"--{flag} is for --from openai; an HF model carries its own config")
        if args.prior or args.prior_config:
            parser.error("--prior/--prior_config are for --from openai")
        manifest = convert_hf(args.source, args.out, dtype=args.dtype, artist_ids=args.artist_ids,
                              genre_ids=args.genre_ids, progress=_progress)
    else:
        if args.source:
            parser.error(f"unexpected argument {args.source!r}: openai files go in --vqvae/--prior")
        manifest = convert_openai(args.out, vqvae=args.vqvae, priors=args.prior, model=args.model,
                                  vqvae_config=args.vqvae_config, prior_configs=args.prior_config,
                                  artist_ids=args.artist_ids, genre_ids=args.genre_ids, dtype=args.dtype,
                                  progress=_progress)
    print(args.out)
    for name, entry in manifest["components"].items():
        print(f"  {name}: {entry['params']:,} params ({entry['stored_dtype']})")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    from jukejax.cli import run_reporting_user_errors
    parser = _parser()
    args = parser.parse_args(argv)
    return run_reporting_user_errors(lambda: _run(parser, args), traceback=args.traceback)


if __name__ == "__main__":
    sys.exit(main())
