"""python -m jukejax.bench [--json out.json] [--quick] [--dtype float32|bfloat16] [--threads N] [--markdown]

Thread control has to happen before JAX creates its CPU client, so this module sets it up first and only then
imports the benchmark (which imports jax and torch).
"""
from __future__ import annotations

import argparse
import os
import sys

from jukejax.cli import add_traceback_argument, run_reporting_user_errors


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jukejax.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="write one entry per row (and the machine, limits, settings) to this file")
    p.add_argument("--quick", action="store_true", help="CI smoke test: fewer tokens/repeats, 1 s of audio")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="compute dtype of both sides; bfloat16 also runs jukejax with bf16 weights")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="CPU threads for both sides (default: the CPUs this process may run on)")
    p.add_argument("--rows", help="comma-separated subset of a,b,c,train,vqvae,embed (default: all)")
    p.add_argument("--tokens", type=int, help="override the decode positions sampled per call")
    p.add_argument("--repeats", type=int, help="override the timed rounds of every row")
    p.add_argument("--markdown", action="store_true", help="print the table in Markdown (docs/benchmarks.md)")
    p.add_argument("--depth", type=int, help="override the layers of every bench prior (--quick uses 2)")
    add_traceback_argument(p)
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error(f"--threads {args.threads} must be >= 1")
    for name in ("tokens", "repeats", "depth"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name} {getattr(args, name)} must be >= 1")
    return args


def limit_threads(n: int) -> str:
    """Give XLA's CPU client n threads; returns how.

    XLA has no intra-op thread-count flag (TensorFlow's `intra_op_parallelism_threads` is not one: XLA_FLAGS
    rejects it). Its CPU client sizes its intra-op pool by the CPUs the process may run on
    (sched_getaffinity), so the process is pinned to n of them before JAX starts; with n = 1 Eigen's
    multi-threading is also switched off (`--xla_cpu_multi_thread_eigen=false`). torch gets
    `torch.set_num_threads(n)` in the run itself.
    """
    cpus = sorted(os.sched_getaffinity(0))
    notes = []
    if n < len(cpus):
        os.sched_setaffinity(0, cpus[:n])
        notes.append(f"pinned to CPUs {cpus[:n]}")
    elif n > len(cpus):
        notes.append(f"only {len(cpus)} CPUs available: XLA uses {len(cpus)} threads, torch {n}")
    else:
        notes.append(f"all {len(cpus)} CPUs (XLA's pool = schedulable CPUs)")
    if n == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
        notes.append("--xla_cpu_multi_thread_eigen=false")
    return "; ".join(notes)


def main(argv=None) -> int:
    args = parse_args(argv)
    if "jax" in sys.modules and getattr(sys.modules["jax"], "_src", None) is not None:
        # Imported already (e.g. from a test process): the CPU client may exist; the pinning still limits it
        # if it does not.
        pass
    note = limit_threads(args.threads)

    def body() -> int:
        from jukejax.bench import run
        run.main(args, note)
        return 0
    return run_reporting_user_errors(body, traceback=args.traceback)


if __name__ == "__main__":
    sys.exit(main())
