"""Sample music from a jukejax model bundle (see configs/sample_defaults.py for every setting).

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
flags.DEFINE_string("checkpoint", None, "model bundle directory: vqvae/, prior_level_{l}/, optional ids/")
flags.DEFINE_enum("mode", None, ["ancestral", "primed", "continue", "upsample"], "what to start from")
flags.DEFINE_string("artist", None, "artist name or id ('a|b' gives one per item)" + _known("artist"))
flags.DEFINE_string("genre", None, "genre name(s) or id ('a|b' gives one per item)" + _known("genre"))
flags.DEFINE_string("lyrics", None, "lyrics text")
flags.DEFINE_string("lyrics_file", None, "file holding the lyrics")
flags.DEFINE_float("sample_length_in_seconds", None, "audio to generate (continue --keep: to add)")
flags.DEFINE_float("total_sample_length_in_seconds", None, "length of the whole song, for the labels")
flags.DEFINE_integer("n_samples", None, "number of samples")
flags.DEFINE_string("hop_fraction", None, "per level, comma separated, e.g. 0.5,0.5,0.125")
flags.DEFINE_string("temperature", None, "one value, or one per level")
flags.DEFINE_integer("top_k", None, "top-k filtering (0 = off)")
flags.DEFINE_float("top_p", None, "nucleus filtering (0 = off)")
flags.DEFINE_string("levels", None, "levels to sample, comma separated (default: what the mode samples)")
flags.DEFINE_string("max_batch_size", None, "one value, or one per level")
flags.DEFINE_integer("seed", None, "random seed")
flags.DEFINE_string("audio_file", None, "primed: comma-separated audio files")
flags.DEFINE_float("prompt_length_in_seconds", None, "primed: prompt length; continue: cut the codes")
flags.DEFINE_string("codes_file", None, "continue/upsample: level_*/codes.npz of an earlier run")
flags.DEFINE_string("keep", None, "continue: rows of the codes file to keep, e.g. 2,5 (co-composition)")
flags.DEFINE_bool("resume", None, "go on with a killed run in --workdir")
from jukejax.cli import (absl_main, define_distributed_flags, initialize_distributed_from_flags,  # noqa: E402
                         run_absl)

define_distributed_flags()
FLAGS = flags.FLAGS

_OVERRIDES = ("checkpoint", "mode", "artist", "genre", "lyrics", "lyrics_file", "sample_length_in_seconds",
              "total_sample_length_in_seconds", "n_samples", "hop_fraction", "temperature", "top_k", "top_p",
              "levels", "max_batch_size", "seed", "audio_file", "prompt_length_in_seconds", "codes_file", "keep",
              "resume")


def config_with_flags(config):
    """The config with every flag given on the command line written over it (lists parsed by run.py)."""
    from jukejax.sample import run as run_lib
    config = config.copy_and_resolve_references()
    parsers = {"hop_fraction": run_lib.parse_floats, "temperature": run_lib.parse_floats,
               "levels": run_lib.parse_ints, "max_batch_size": run_lib.parse_ints, "keep": run_lib.parse_ints}
    with config.unlocked():
        for name in _OVERRIDES:
            value = getattr(FLAGS, name)
            if value is None:
                continue
            config[name] = parsers[name](value, name) if name in parsers else value
    return config


def _main() -> int:
    from absl import logging as absl_logging
    from jukejax.sample import run as run_lib
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every restore at INFO
    config = config_with_flags(FLAGS.config)
    initialize_distributed_from_flags()
    run_lib.run(config, FLAGS.workdir)
    return 0


main = absl_main(_main)

if __name__ == "__main__":
    run_absl(main, logging.WARNING)
