"""One benchmark run: machine limits, then every row (jukejax vs the port, alternating), then the table/JSON."""
from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import time
from typing import Dict, List, Optional

import jax
import torch

from jukejax.bench import machine
from jukejax.bench.harness import Row, table, write_json
from jukejax.bench.priors import BENCH_PRIORS, PriorPair, decode_rows, loss_parity, quiet_port_progress, train_row
from jukejax.bench.embed import embed_row
from jukejax.bench.vqvae import vqvae_row

ROWS = ("a", "b", "c", "train", "vqvae", "embed")


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much work each row does; `--quick` is the CI smoke test."""
    new_tokens: int = 256           # positions sampled per decode call (after the lyric prefix for (b))
    decode_batches: tuple = (1, 4)
    repeats: int = 7                # timed rounds; the median is reported
    warmup: int = 1                 # untimed rounds after the first (compiling) call
    train_batch: int = 2
    train_repeats: int = 7
    vqvae_seconds: float = 4.0
    vqvae_repeats: int = 7
    embed_batch: int = 1
    embed_repeats: int = 5
    bandwidth_mib: int = 512
    matmul_n: int = 4096
    parity: bool = True             # teacher-forced loss of both models on the same batch (same weights?)
    depth: Optional[int] = None     # layers of every bench prior (None: the shapes in the issue)


FULL = Settings()
# The CI smoke test: every row and code path, on 2-layer priors with a few tokens and one round, ~2 min.
QUICK = Settings(new_tokens=32, repeats=3, warmup=0, train_repeats=1, vqvae_seconds=0.5, vqvae_repeats=1, embed_repeats=1,
                 bandwidth_mib=128, matmul_n=1024, parity=False, depth=2)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(args: argparse.Namespace, thread_note: str) -> List[Row]:
    t_start = time.perf_counter()
    s = QUICK if args.quick else FULL
    if args.tokens:
        s = dataclasses.replace(s, new_tokens=args.tokens)
    if args.repeats:
        s = dataclasses.replace(s, repeats=args.repeats, train_repeats=args.repeats, vqvae_repeats=args.repeats,
                                embed_repeats=args.repeats)
    if args.depth:
        s = dataclasses.replace(s, depth=args.depth)
    selected = [r.strip() for r in args.rows.split(",")] if args.rows else list(ROWS)
    unknown = set(selected) - set(ROWS)
    if unknown:
        raise SystemExit(f"--rows: unknown {sorted(unknown)}; choose from {', '.join(ROWS)}")
    # Compile times are part of the report: never read them from a persistent cache.
    jax.config.update("jax_enable_compilation_cache", False)
    torch.set_num_threads(args.threads)
    quiet_port_progress()
    device = "cuda" if torch.cuda.is_available() and jax.default_backend() == "gpu" else "cpu"

    info = machine.describe()
    info["threads"] = args.threads
    info["thread_control"] = thread_note
    info["torch_device"] = device
    log(f"machine: {info['cpu_model']}, {info['schedulable_cpus']}/{info['nproc']} CPUs, "
        f"{info['memory_gib']} GiB, caches {info['caches']}, load {info['loadavg_start']}, jax on "
        f"{info['jax_device']}, {args.threads} threads ({thread_note})")
    if info["busy_processes_start"]:
        log("  other busy processes: " + "; ".join(info["busy_processes_start"]))

    limits: Dict[str, object] = {}
    limits["bandwidth_bytes_per_s"] = machine.memory_bandwidth(s.bandwidth_mib)
    limits["matmul_flops_float32"] = machine.matmul_rate(s.matmul_n, "float32")
    if args.dtype == "bfloat16":
        limits["matmul_flops_bfloat16"] = machine.matmul_rate(s.matmul_n, "bfloat16")
    limits.update(bandwidth_mib=s.bandwidth_mib, matmul_n=s.matmul_n)
    # This VM's read bandwidth drifts during a run (neighbours on the host, invisible to ps): it is sampled
    # again before each model and at the end; the floors use the best sample, the machine's capability.
    bandwidth_samples = [limits["bandwidth_bytes_per_s"]]
    matmul = limits[f"matmul_flops_{args.dtype}"]
    log(f"limits: read bandwidth {limits['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s (sum of {s.bandwidth_mib} MiB "
        f"fp32), matmul {limits['matmul_flops_float32'] / 1e9:.0f} GFLOP/s fp32 ({s.matmul_n}^2)"
        + (f", {limits['matmul_flops_bfloat16'] / 1e9:.0f} GFLOP/s bf16" if args.dtype == "bfloat16" else ""))

    rows: List[Row] = []
    parity: Dict[str, float] = {}

    def stopped(signum, frame):  # a long run stopped from outside still reports what it measured
        log(f"stopped by signal {signum}; rows measured so far:\n{table(rows)}")
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, stopped)
    for key in ("a", "b", "c"):
        if key not in selected and not (key == "a" and "train" in selected):
            continue
        bench = BENCH_PRIORS[key] if s.depth is None else BENCH_PRIORS[key].shallow(s.depth)
        log(f"prior ({key}) {bench.title}: building both models")
        bandwidth_samples.append(machine.memory_bandwidth(s.bandwidth_mib))
        pair = PriorPair(bench, args.dtype, device=device)
        if s.parity and key != "a":   # (a) is checked by its train row's first loss
            parity[key] = loss_parity(pair)
            log(f"  teacher-forced loss, jukejax vs port: rel err {parity[key]:.1e}")
        if key in selected:
            for batch in s.decode_batches:
                rows += decode_rows(pair, batch, s.new_tokens, s.repeats, limits["bandwidth_bytes_per_s"], matmul,
                                    warmup=s.warmup, log=log)
        if key == "a" and "train" in selected:
            train = train_row(pair, s.train_batch, s.train_repeats, matmul, warmup=s.warmup, log=log)
            parity["a"] = train.details["first_loss_rel_err"]
            rows.append(train)
        del pair
    if "vqvae" in selected:
        log("vqvae: released shapes")
        bandwidth_samples.append(machine.memory_bandwidth(s.bandwidth_mib))
        rows.append(vqvae_row(s.vqvae_seconds, s.vqvae_repeats, matmul, args.dtype, warmup=s.warmup,
                              device=device, log=log))

    if "embed" in selected:
        log("embed: jukemir-length clips through a 5b-shaped prior cut at half depth")
        bandwidth_samples.append(machine.memory_bandwidth(s.bandwidth_mib))
        rows.append(embed_row(s.embed_batch, s.embed_repeats, matmul, args.dtype, warmup=s.warmup, device=device,
                              log=log, depth=s.depth or 0))

    # The floors above used the first measurements; rescale them to the best samples, the machine's capability
    # (a neighbour can only lower a measurement).
    bandwidth_samples.append(machine.memory_bandwidth(s.bandwidth_mib))
    limits["bandwidth_samples"] = bandwidth_samples
    limits[f"matmul_flops_{args.dtype}_end"] = machine.matmul_rate(s.matmul_n, args.dtype)
    first = {"bandwidth": limits["bandwidth_bytes_per_s"], "matmul": limits[f"matmul_flops_{args.dtype}"]}
    best = {"bandwidth": max(bandwidth_samples), "matmul": max(first["matmul"],
                                                               limits[f"matmul_flops_{args.dtype}_end"])}
    for row in rows:
        row.floor *= best[row.floor_kind] / first[row.floor_kind]
    limits.update(bandwidth_used=best["bandwidth"], matmul_used=best["matmul"])
    bandwidth, matmul = best["bandwidth"], best["matmul"]
    info["loadavg_end"] = list(os.getloadavg())
    info["busy_processes_end"] = machine.busy_processes()
    info["wall_seconds"] = time.perf_counter() - t_start
    print(table(rows, markdown=args.markdown))
    print(f"\nread bandwidth {bandwidth / 1e9:.1f} GB/s (best of samples "
          f"{', '.join(f'{b / 1e9:.0f}' for b in bandwidth_samples)}), matmul {matmul / 1e9:.0f} GFLOP/s "
          f"({args.dtype}); floor = decode: batch * bandwidth / bytes read per step, train/vqvae: matmul rate / "
          f"model FLOPs; 'of floor' = jukejax / floor (MBU, MFU). Load average {info['loadavg_start']} -> "
          f"{info['loadavg_end']}; {info['wall_seconds']:.0f} s.")
    busy = info["busy_processes_start"] or info["busy_processes_end"]
    if busy or max(info["loadavg_start"][0], info["loadavg_end"][0]) > 0.5 + len(os.sched_getaffinity(0)):
        print("WARNING: other processes were using the CPUs during this run (see machine.busy_processes_* in the "
              "JSON); the PyTorch port's multi-threaded small ops slow down by up to 10x under contention, so "
              "rerun on an idle machine before quoting these numbers.")
    if args.json:
        settings = dict(dataclasses.asdict(s), quick=args.quick, dtype=args.dtype, threads=args.threads,
                        rows=selected, loss_parity_rel_err=parity)
        write_json(args.json, rows, info, settings, limits)
        log(f"wrote {args.json}")
    return rows
