"""Train a jukejax model, or describe it without allocating anything.

  python train.py --config=configs/small_vqvae.py --config.data.dataset_dir=DATA --workdir=runs/x
  python train.py --config=configs/vqvae.py --describe --json
"""
import json
import logging
from typing import List, Optional

from absl import flags
from ml_collections import config_flags

from jukejax.cli import absl_entry_point, define_distributed_flags, initialize_distributed_from_flags

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS, argv: Optional[List[str]] = None) -> None:
    """train.py's flags. Tests parse the documented command lines with them into a fresh FlagValues, giving
    `argv` (config_flags reads the `--config.*` overrides from it; default sys.argv)."""
    config_flags.DEFINE_config_file("config", None, "a configs/*.py file", lock_config=True, flag_values=flag_values,
                                    sys_argv=argv)
    flags.DEFINE_string("workdir", None, "where checkpoints and TensorBoard logs go (resumed if present)",
                        flag_values=flag_values)
    flags.DEFINE_bool("describe", False, "print the model's shapes and parameter counts, then exit",
                      flag_values=flag_values)
    flags.DEFINE_bool("json", False, "with --describe or --compile_for: print one JSON object", flag_values=flag_values)
    flags.DEFINE_string("compile_for", None, "compile the train step for a TPU slice (e.g. v5e:2x2, v5p:4x4x4) with "
                        "the TPU compiler, print its memory plan and cost, and exit (needs jukejax[tpu])",
                        flag_values=flag_values)
    define_distributed_flags(flag_values)


def _main():
    from jukejax.config import ConfigError
    from jukejax.train import run as run_lib
    config = FLAGS.config
    if config is None:
        raise ConfigError("--config is required (one of the files in configs/)")
    if FLAGS.compile_for:
        from jukejax import aot
        report = aot.compile_train(config, FLAGS.compile_for)
        print(json.dumps(report) if FLAGS.json else aot.format_report(report))
        return 0
    if FLAGS.describe:
        info = run_lib.describe(config)
        print(json.dumps(info) if FLAGS.json else json.dumps(info, indent=2))
        return 0
    if not FLAGS.workdir:
        raise ConfigError("--workdir is required for training")
    initialize_distributed_from_flags()
    run_lib.train(config, FLAGS.workdir)


if __name__ == "__main__":     # imported (by the documented-commands test), it defines no global flags
    define_flags()
main = absl_entry_point(_main, __name__, logging.INFO)
