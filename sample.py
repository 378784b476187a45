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
flags.adopt_module_key_flags(settings_lib)  # so --help lists them, not only --helpfull
for _name, _table in (("artist", "artist"), ("genre", "genre")):
    flags.FLAGS[_name].help += _known(_table)
flags.DEFINE_string("compile_for", None, "compile each level's sampling window and VQ-VAE decoder for a TPU slice "
                    "(e.g. v5e:1x1, v5e:2x2) with the TPU compiler, print the memory plan and cost, and exit")
flags.DEFINE_bool("json", False, "with --compile_for: print JSON")
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
    if FLAGS.compile_for:
        return _compile_for(config, FLAGS.compile_for)
    initialize_distributed_from_flags()
    run_lib.run(config, FLAGS.workdir)


def _compile_for(config, topology: str) -> int:
    """Each level of --checkpoint compiled as this run would sample it (batches of min(n_samples,
    max_batch_size), the mesh, dtype and cache dtype), without reading its weights."""
    import json
    from jukejax import aot
    from jukejax.sample import run as run_lib
    s = run_lib.resolve_settings(config)
    reports = aot.compile_bundle(s, topology)
    print(json.dumps(reports) if FLAGS.json else "\n".join(aot.format_report(r) for r in reports))
    return 0


main = absl_entry_point(_main, __name__, logging.WARNING)
