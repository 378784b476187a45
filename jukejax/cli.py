"""Shared bits of the absl entry points: flag parsing that reports bad flags in one line."""
from __future__ import annotations

import sys
from typing import List

from absl import flags


def parse_flags_or_exit(argv: List[str]) -> List[str]:
    """absl's parser, but a bad flag or config override (`--config.data.foo=1`, a missing config file) is
    one line on stderr and exit status 2, not a traceback."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, (AttributeError, KeyError)):
            field = message.strip("\"'")
            message = f"unknown config field {field!r} (the config file lists the fields it has)"
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def define_distributed_flags() -> None:
    """--coordinator_address/--num_processes/--process_id/--distributed, shared by train.py and sample.py."""
    flags.DEFINE_string("coordinator_address", None, "multi-process: host:port of process 0")
    flags.DEFINE_integer("num_processes", None, "multi-process: how many processes take part")
    flags.DEFINE_integer("process_id", None, "multi-process: this process's index")
    flags.DEFINE_bool("distributed", False, "multi-process: join using the cluster's environment (TPU pod, SLURM)")


def initialize_distributed_from_flags() -> bool:
    from jukejax import parallel
    f = flags.FLAGS
    return parallel.initialize_distributed(f.coordinator_address, f.num_processes, f.process_id, f.distributed)
