"""Train a jukejax model, or describe it without allocating anything.

  python train.py --config=configs/small_vqvae.py --config.data.dataset_dir=DATA --workdir=runs/x
  python train.py --config=configs/vqvae.py --describe --json
"""
import json
import logging
import sys

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "a configs/*.py file", lock_config=True)
flags.DEFINE_string("workdir", None, "where checkpoints and TensorBoard logs go (resumed if present)")
flags.DEFINE_bool("describe", False, "print the model's shapes and parameter counts, then exit")
flags.DEFINE_bool("json", False, "with --describe: print one JSON object")
from jukejax.cli import define_distributed_flags  # noqa: E402

define_distributed_flags()
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from jukejax.config import ConfigError
    from jukejax.train import run as run_lib
    config = FLAGS.config
    try:
        if config is None:
            raise ConfigError("--config is required (one of the files in configs/)")
        if FLAGS.describe:
            info = run_lib.describe(config)
            print(json.dumps(info) if FLAGS.json else json.dumps(info, indent=2))
            return 0
        if not FLAGS.workdir:
            raise ConfigError("--workdir is required for training")
        from jukejax.cli import initialize_distributed_from_flags
        initialize_distributed_from_flags()
        run_lib.train(config, FLAGS.workdir)
    except (ConfigError, OSError, ValueError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from jukejax.cli import parse_flags_or_exit
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=parse_flags_or_exit)
