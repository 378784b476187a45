"""Sample music from a jukejax model folder (every setting, with its help: jukejax/sample/settings.py).

  python sample.py --checkpoint=models/5b --workdir=runs/s1 --artist="Alan Jackson" --genre=Country \
      --sample_length_in_seconds=20 --total_sample_length_in_seconds=180 --n_samples=2
"""
import logging
import pathlib

from absl import flags
from ml_collections import config_flags

_DEFAULTS = str(pathlib.Path(__file__).resolve().parent / "configs" / "sample_defaults.py")
_DEMO = pathlib.Path(__file__).resolve().parent / "models" / "demo"


def _known(table: str) -> str:
    """Names in the bundled demo model's id table, for --help (empty when it is absent)."""
    path = _DEMO / "ids" / f"{table}_ids.txt"
    if not path.is_file():
        return ""
    names = [line.split(";")[0] for line in path.read_text().splitlines() if ";" in line]
    return f"; the demo model (models/demo) knows: {', '.join(names)}"


config_flags.DEFINE_config_file("config", _DEFAULTS, "sampling defaults (a configs/*.py file)")
flags.DEFINE_string("workdir", None, "where level_{l}/ outputs go (created; must be writable)")
from jukejax.cli import absl_entry_point, define_distributed_flags, initialize_distributed_from_flags  # noqa: E402
from jukejax.sample import settings as settings_lib  # noqa: E402

settings_lib.define_flags()  # one flag per setting of jukejax.sample.settings.SampleSettings
for _name, _table in (("artist", "artist"), ("genre", "genre")):
    flags.FLAGS[_name].help += _known(_table)
define_distributed_flags()
FLAGS = flags.FLAGS


def config_with_flags(config):
    """The config with every setting given on the command line written over it."""
    return settings_lib.config_with_flags(config)


def _main():
    from absl import logging as absl_logging
    from jukejax.sample import run as run_lib
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every restore at INFO
    config = config_with_flags(FLAGS.config)
    initialize_distributed_from_flags()
    run_lib.run(config, FLAGS.workdir)


main = absl_entry_point(_main, __name__, logging.WARNING)
