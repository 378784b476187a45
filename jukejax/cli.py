"""Shared bits of the command-line entry points: how errors are reported, flag parsing, distributed flags.

A user error (`jukejax.errors.UserError`: bad flag, config, file or checkpoint) or an `OSError` is one line on
stderr, `error: ...`, and exit status 2. Anything else is a bug and keeps its traceback. `--traceback` shows the
traceback for user errors too (absl entry points: the shared flag below; argparse ones: `add_traceback_argument`).
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from typing import Callable, List, Optional, Sequence

from absl import app, flags

from jukejax.errors import USER_ERRORS, UserError

_TRACEBACK_HELP = "on a user error (bad flag/config/file), show the traceback instead of one line"
flags.DEFINE_bool("traceback", False, _TRACEBACK_HELP)


def add_traceback_argument(parser: argparse.ArgumentParser) -> None:
    """`--traceback` for the argparse entry points (`python -m jukejax.convert`, `.vqvae`, `.data`, `.bench`)."""
    parser.add_argument("--traceback", action="store_true", help=_TRACEBACK_HELP)


def one_line(error: BaseException) -> str:
    """The error's message on one line (its type's name when it has none)."""
    return " ".join(str(error).split()) or type(error).__name__


def print_error(error: BaseException) -> int:
    """Print `error: <message>` on stderr; returns the exit status of a user error, 2."""
    print(f"error: {one_line(error)}", file=sys.stderr, flush=True)
    return 2


def cpu_only_machine(tpu_chips: int, gpu_visible: bool) -> bool:
    """No TPU chip on the PCI bus and no NVIDIA or AMD GPU device node."""
    return tpu_chips == 0 and not gpu_visible


def skip_absent_tpu() -> None:
    """Run on the CPU directly where libtpu is installed (the `tpu` extra, which the tests' AOT compiles use) but
    the machine has no accelerator and JAX_PLATFORMS is unset. Otherwise jax starts libtpu to look for chips,
    and libtpu prints several lines of errors about TPU worker hostnames before jax falls back to the CPU. It
    changes nothing where JAX_PLATFORMS is set or any TPU chip or GPU is visible, and compiling for a TPU
    topology (`--compile_for`) loads libtpu's compiler on its own."""
    if os.environ.get("JAX_PLATFORMS") or importlib.util.find_spec("libtpu") is None:
        return
    import jax
    from jax._src import hardware_utils
    if jax.config.jax_platforms:
        return
    gpu = hardware_utils.has_visible_nvidia_gpu() or os.path.exists("/dev/kfd")
    if cpu_only_machine(hardware_utils.num_available_tpu_chips_and_device_id()[0], gpu):
        jax.config.update("jax_platforms", "cpu")


def run_reporting_user_errors(body: Callable[[], int], traceback: bool = False) -> int:
    """`body()`'s exit status; a user error or OSError is printed as one line and gives 2 (re-raised with its
    traceback when `traceback`). Anything else propagates: a bug must show where it happened. Every entry
    point runs through here, so a CPU-only machine skips the TPU probe first (`skip_absent_tpu`)."""
    skip_absent_tpu()
    try:
        return body()
    except USER_ERRORS as e:
        if traceback:
            raise
        return print_error(e)


def absl_entry_point(body: Callable[[], Optional[int]], module_name: str, log_level: int
                     ) -> Callable[[List[str]], int]:
    """The `main(argv)` of an absl entry point whose work is `body()` (its exit status; None is 0), errors
    reported as above. Run as a script (`module_name == "__main__"`), it starts too: log format and level,
    flags parsed by `parse_flags_or_exit`, the exit status."""
    def main(argv: List[str]) -> int:
        del argv
        return run_reporting_user_errors(lambda: body() or 0, traceback=flags.FLAGS.traceback)
    if module_name == "__main__":
        logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        app.run(lambda argv: sys.exit(main(argv)), flags_parser=parse_flags_or_exit)
    return main


def _unknown_config_field(error: BaseException) -> bool:
    """ml_collections reports `--config.x.unknown=1` as an AttributeError wrapping the KeyError of the field."""
    return isinstance(error, AttributeError) and bool(error.args) and isinstance(error.args[0], KeyError)


def parse_flags_or_exit(argv: List[str]) -> List[str]:
    """absl's parser, but a bad flag or config override (`--config.data.foo=1`, a missing config file) is
    one line on stderr and exit status 2, not a traceback (with `--traceback` among the flags: the traceback).
    A bug in a config file's `get_config()` keeps its traceback."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, UserError, OSError, AttributeError) as e:
        unknown_field = _unknown_config_field(e)
        if (isinstance(e, AttributeError) and not unknown_field) or _wants_traceback(argv):
            raise
        if unknown_field:
            field = one_line(e.args[0]).strip("\"'")
            print(f"error: unknown config field {field!r} (the config file lists the fields it has)",
                  file=sys.stderr)
            sys.exit(2)
        sys.exit(print_error(e))


def _wants_traceback(argv: Sequence[str]) -> bool:
    return any(a in ("--traceback", "--traceback=true", "--traceback=True", "--traceback=1") for a in argv)


def define_distributed_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """--coordinator_address/--num_processes/--process_id/--distributed, shared by train.py and sample.py."""
    flags.DEFINE_string("coordinator_address", None, "multi-process: host:port of process 0", flag_values=flag_values)
    flags.DEFINE_integer("num_processes", None, "multi-process: how many processes take part",
                         flag_values=flag_values)
    flags.DEFINE_integer("process_id", None, "multi-process: this process's index", flag_values=flag_values)
    flags.DEFINE_bool("distributed", False, "multi-process: join using the cluster's environment (TPU pod, SLURM)",
                      flag_values=flag_values)


def initialize_distributed_from_flags() -> bool:
    from jukejax import parallel
    f = flags.FLAGS
    return parallel.initialize_distributed(f.coordinator_address, f.num_processes, f.process_id, f.distributed)
