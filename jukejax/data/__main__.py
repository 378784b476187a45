"""Command line for datasets: `python -m jukejax.data build --audio_dir DIR --data_dir OUT [--sr 44100 ...]`,
`python -m jukejax.data info --data_dir OUT`, and
`python -m jukejax.data encode --data_dir OUT --vqvae_checkpoint WORKDIR --out_dir CODES [--chunk_seconds 60 ...]`
(pre-encode every song into a `jukejax_codes` dataset for prior training, on one process or on every
process of a pod with --distributed; see jukejax/data/codes/)."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from jukejax.cli import add_traceback_argument, run_reporting_user_errors
from jukejax.config import ConfigError
from jukejax.data.codes import SONGS_PER_SHARD, encode_dataset
from jukejax.data.builder import (BuildConfig, DatasetError, DatasetExistsError, build_dataset, load_summary,
                                  parse_beam_options)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jukejax.data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build a jukejax_music dataset from a folder of audio")
    build.add_argument("--audio_dir", required=True, help="folder of songs (recursive), with optional "
                                                          "metadata.jsonl")
    build.add_argument("--data_dir", required=True, help="output TFDS data_dir")
    defaults = BuildConfig(audio_dir="-")
    build.add_argument("--sr", type=int, default=defaults.sr,
                       help="sample rate every song is resampled to, in Hz; must equal the vqvae.sr of the "
                            "VQ-VAE config you will train or encode with (configs/small_vqvae.py: 22050; the "
                            "released models: 44100)")
    build.add_argument("--channels", type=int, default=defaults.channels, choices=(1, 2),
                       help="channels stored per window (mono files are upmixed for 2); the VQ-VAE takes one "
                            "channel and training mixes stereo down (data.mono), so 1 halves the dataset")
    build.add_argument("--window_seconds", type=float, default=defaults.window_seconds,
                       help="length of a stored record in seconds; training chunks (data.sample_length / "
                            "vqvae.sr) are cut across records, so this only sets the read granularity")
    build.add_argument("--min_duration", type=float, default=defaults.min_duration,
                       help="skip songs shorter than this many seconds; set it to at least the training "
                            "chunk (sample_length / sr) of the config you will use, or such songs are "
                            "never drawn")
    build.add_argument("--max_duration", type=float, default=defaults.max_duration,
                       help="skip songs this long or longer, in seconds (default: no limit)")
    build.add_argument("--test_fraction", type=float, default=defaults.test_fraction,
                       help="fraction of songs (whole songs, chosen by a seeded hash of the path) in the "
                            "test split")
    build.add_argument("--seed", type=int, default=defaults.seed, help="seed of the train/test split")
    build.add_argument("--artist_ids", default="",
                       help="fine-tuning: a model's artist table to extend (e.g. models/1b_lyrics/ids/"
                            "v3_artist_ids.txt): names it knows keep their ids, new names get the next ids")
    build.add_argument("--genre_ids", default="", help="fine-tuning: a model's genre table to extend, as --artist_ids")
    build.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    build.add_argument("--runner", default=None,
                       help="build on Apache Beam with this runner (DirectRunner, DataflowRunner, FlinkRunner, "
                            "SparkRunner; needs `pip install 'jukejax[beam]'`): the same dataset, with "
                            "decoding and windowing in the pipeline; default: in this process")
    build.add_argument("--beam_options", default="",
                       help="with --runner: comma-separated Beam pipeline options, e.g. "
                            "'direct_num_workers=4,direct_running_mode=multi_processing' or "
                            "'project=P,region=R,temp_location=gs://B/tmp'")
    info = commands.add_parser("info", help="print the build summary of a dataset")
    info.add_argument("--data_dir", required=True,
                      help="data_dir of `build` (or a dataset's versioned folder, e.g. CODES/jukejax_codes/1.0.0)")
    encode = commands.add_parser("encode", help="encode every song of a jukejax_music dataset with a trained "
                                                "VQ-VAE into a jukejax_codes dataset")
    encode.add_argument("--data_dir", required=True,
                        help="the audio dataset (data_dir of `build`); its sample rate must equal the "
                             "VQ-VAE's vqvae.sr")
    encode.add_argument("--vqvae_checkpoint", required=True, help="workdir of a trained VQ-VAE (train.py)")
    encode.add_argument("--out_dir", required=True, help="output TFDS data_dir for the codes")
    encode.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    encode.add_argument("--splits", default=None, help="comma-separated splits (default: all)")
    encode.add_argument("--levels", default=None, help="comma-separated levels to store (default: all)")
    encode.add_argument("--chunk_seconds", type=float, default=60.0,
                        help="audio per encoder call (rounded down to top hops); bounds memory")
    encode.add_argument("--context_seconds", type=float, default=1.0,
                        help="audio encoded and dropped either side of each chunk, against edge effects")
    encode.add_argument("--chunk_batch", type=int, default=1,
                        help="chunks per encoder call (per device: the batch is split over this process's "
                             "devices)")
    encode.add_argument("--overwrite", action="store_true", help="replace an existing codes dataset")
    encode.add_argument("--songs_per_shard", type=int, default=SONGS_PER_SHARD,
                        help="songs per output shard: the unit of work of a process and of resuming")
    multi = encode.add_argument_group(
        "multi-process", "every process runs the same command (with its own --process_id, or --distributed), "
        "encodes its share of the shards on its own devices, and process 0 publishes the dataset")
    multi.add_argument("--distributed", action="store_true",
                       help="join the other processes using the cluster's environment (TPU pod, SLURM)")
    multi.add_argument("--coordinator_address", default=None, help="host:port of process 0")
    multi.add_argument("--num_processes", type=int, default=None, help="how many processes take part")
    multi.add_argument("--process_id", type=int, default=None, help="this process's index")
    for command in (build, info, encode):
        add_traceback_argument(command)
    return parser


class VQVAEEncodeFn:
    """`encode_fn` of `jukejax.data.codes.encode_dataset` from a VQ-VAE: float32 audio (N, T, 1) -> codes
    (N, T // hop_l) int32 for every level, one jitted `VQVAE.encode`. `config` is its VQVAEConfig.

    With `devices` (this process's own: `jax.local_devices()`), the weights are replicated on them and each
    call's batch is split across them, so N must be a multiple of their number. Without, a plain `jax.jit`
    (which also runs inside a caller's mesh context, as prior training's pre-encoding does)."""

    def __init__(self, model, variables, config, info: Optional[Dict[str, Any]] = None, devices=None):
        import jax
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        self.config = config
        self.info = dict(info or {})
        self.devices = list(devices or [])
        apply = lambda v, x: model.apply(v, x, method=model.encode)  # noqa: E731
        if self.devices:
            mesh = Mesh(np.asarray(self.devices), ("batch",))
            replicated = NamedSharding(mesh, PartitionSpec())
            self._batch = NamedSharding(mesh, PartitionSpec("batch"))
            self._variables = jax.device_put(variables, replicated)
            self._encode = jax.jit(apply, in_shardings=(replicated, self._batch), out_shardings=self._batch)
        else:
            self._batch = None
            self._variables = jax.device_put(variables)
            self._encode = jax.jit(apply)

    def __call__(self, x) -> List[np.ndarray]:
        import jax

        x = np.asarray(x, np.float32)
        if self._batch is not None:
            if len(x) % len(self.devices):
                raise ValueError(f"VQVAEEncodeFn: batch {len(x)} is not a multiple of its {len(self.devices)} "
                                 f"devices")
            x = jax.device_put(x, self._batch)
        return [np.asarray(z) for z in self._encode(self._variables, x)]


def make_vqvae_encode_fn(vqvae_workdir: str, step: Optional[int] = None, devices=None) -> VQVAEEncodeFn:
    """Load a trained VQ-VAE (EMA weights) from its workdir and wrap its encoder as an `encode_fn` (on
    `devices`, default one).

    The VQ-VAE is imported here, not at module level: data sits below the models (STYLE.md)."""
    import jax

    from jukejax.checkpoint import load_variables
    from jukejax.config import VQVAEConfig, build
    from jukejax.vqvae.model import VQVAE

    config, variables, step = load_variables(vqvae_workdir, step=step)
    if config.get("model") != "vqvae":
        raise ConfigError(f"{vqvae_workdir}: holds a {config.get('model')!r} model; expected a vqvae")
    vq = build(VQVAEConfig, config.vqvae, "vqvae")
    variables = jax.tree.map(np.asarray, variables)
    info = {"vqvae_checkpoint": os.path.abspath(vqvae_workdir), "step": step, "l_bins": vq.l_bins,
            "levels": vq.levels}
    return VQVAEEncodeFn(VQVAE(vq), variables, vq, info, devices=devices)


def _int_list(text: Optional[str], what: str) -> Optional[List[int]]:
    if text is None:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--{what} is {text!r}; expected comma-separated integers") from None


def encode(args) -> Dict[str, Any]:
    from jukejax import parallel

    sample_rate = int(load_summary(args.data_dir)["sample_rate"])
    # Before any JAX computation: joining the other processes must come first.
    parallel.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id,
                                    args.distributed)
    import jax

    devices = jax.local_devices()
    encode_fn = make_vqvae_encode_fn(args.vqvae_checkpoint, step=args.step, devices=devices)
    vq = encode_fn.config
    if vq.sr != sample_rate:
        raise ConfigError(f"the VQ-VAE in {args.vqvae_checkpoint} was trained at vqvae.sr {vq.sr} but the "
                          f"dataset {args.data_dir} is at {sample_rate} Hz; rebuild it with --sr {vq.sr}")
    splits = None if args.splits is None else [s.strip() for s in args.splits.split(",") if s.strip()]
    if args.chunk_batch <= 0:
        raise ConfigError(f"--chunk_batch is {args.chunk_batch}; expected a positive integer")
    return encode_dataset(args.data_dir, args.out_dir, encode_fn, hop_lengths=vq.hop_lengths,
                          levels=_int_list(args.levels, "levels"), splits=splits,
                          chunk_seconds=args.chunk_seconds, context_seconds=args.context_seconds,
                          chunk_batch=args.chunk_batch * len(devices),
                          code_dtype="int16" if vq.l_bins <= 2**15 else "int32", encoder_info=encode_fn.info,
                          overwrite=args.overwrite, sample_rate=vq.sr, songs_per_shard=args.songs_per_shard,
                          process_index=jax.process_index(), process_count=jax.process_count())


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    # force: absl (imported by JAX and TFDS) puts a WARNING-level handler on the root logger first.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    return run_reporting_user_errors(lambda: _run(args), traceback=args.traceback)


def _run(args) -> int:
    try:
        return _command(args)
    except DatasetExistsError as err:  # the library's message names its keyword argument, not the flag
        raise DatasetError(f"{err.path} already exists; remove it or pass --overwrite") from None


def _command(args) -> int:
    if args.command == "build":
        config = BuildConfig(audio_dir=args.audio_dir, sr=args.sr, channels=args.channels,
                             window_seconds=args.window_seconds, min_duration=args.min_duration,
                             max_duration=args.max_duration, test_fraction=args.test_fraction,
                             seed=args.seed, artist_ids=args.artist_ids, genre_ids=args.genre_ids)
        if args.beam_options and not args.runner:
            raise ConfigError("--beam_options needs --runner (e.g. --runner=DirectRunner)")
        # TFDS prints progress to stdout; keep stdout for the summary JSON so it can be piped.
        with contextlib.redirect_stdout(sys.stderr):
            summary = build_dataset(config, args.data_dir, overwrite=args.overwrite, runner=args.runner,
                                    beam_options=parse_beam_options(args.beam_options))
    elif args.command == "encode":
        with contextlib.redirect_stdout(sys.stderr):
            summary = encode(args)
    else:
        summary = load_summary(args.data_dir)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
