"""The machine: what it is (CPU, memory, load) and its two roofline limits, measured with JAX.

- Memory read bandwidth: the sum of a large fp32 array (default 512 MiB, far beyond any cache) on JAX's
  default device, best of three allocations. A reduction reads every byte once and does one add per 4 bytes,
  so it is bound by the read stream on CPUs and GPUs alike.
- Matmul rate: a square matmul (default 4096^2 fp32, plus bf16 when benchmarking bf16): 2 n^3 FLOPs.

Both run on `jax.devices()[0]`, so on a GPU or TPU the same code measures that device's HBM bandwidth and
matmul rate.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Dict, List, Tuple

import jax
import jax.numpy as jnp


def _median_time(fn, repeats: int) -> float:
    fn()  # compile and first touch
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def memory_bandwidth(mib: int = 512, repeats: int = 10, tries: int = 3) -> float:
    """Bytes/s read by `jnp.sum` of an fp32 array of `mib` MiB on the default device: the best of `tries`
    freshly allocated arrays, each the median of `repeats` sums. (On the 2-core CPU the same reduction
    sometimes runs at one core's ~37 GB/s and sometimes at both cores' ~65 GB/s; the ceiling is the latter.)"""
    n = mib * 2 ** 20 // 4
    total = jax.jit(jnp.sum)
    best = 0.0
    for k in range(tries):
        x = jax.device_put(jnp.arange(n, dtype=jnp.float32) * (1e-9 * (k + 1)))
        seconds = _median_time(lambda: total(x).block_until_ready(), repeats)
        best = max(best, n * 4 / seconds)
        del x
    return best


def matmul_rate(n: int = 4096, dtype: str = "float32", repeats: int = 5) -> float:
    """FLOP/s of an (n, n) @ (n, n) matmul in `dtype` (fp32 accumulation for bf16) on the default device."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
    mm = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
    seconds = _median_time(lambda: mm(a, b).block_until_ready(), repeats)
    return 2 * n ** 3 / seconds


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_gib() -> float:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2 ** 20
    return float("nan")


def cache_sizes() -> Dict[str, str]:
    """CPU cache sizes per level as sysfs gives them (cpu0's view; an L3 is usually shared)."""
    out = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    for entry in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        level = _read(f"{base}/{entry}/level").strip()
        kind = _read(f"{base}/{entry}/type").strip()
        size = _read(f"{base}/{entry}/size").strip()
        if level and size:
            out[f"L{level}{'d' if kind == 'Data' else 'i' if kind == 'Instruction' else ''}"] = size
    return out


def _cpu_ticks() -> Dict[int, Tuple[int, str]]:
    ticks = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read(f"/proc/{entry}/stat")
        if ")" not in stat:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        ticks[int(entry)] = (int(fields[11]) + int(fields[12]), stat[stat.find("(") + 1:stat.rfind(")")])
    return ticks


def busy_processes(seconds: float = 1.0, min_cpu: float = 20.0) -> List[str]:
    """Other processes that used more than `min_cpu` % of a core over the next `seconds` (from /proc), to
    judge whether this run had the machine to itself."""
    if not os.path.isdir("/proc"):
        return []
    before = _cpu_ticks()
    time.sleep(seconds)
    after = _cpu_ticks()
    hz = os.sysconf("SC_CLK_TCK")
    mine = {os.getpid()}
    busy = []
    for pid, (t1, name) in after.items():
        if pid in mine or pid not in before:
            continue
        pct = 100.0 * (t1 - before[pid][0]) / hz / seconds
        if pct >= min_cpu:
            args = _read(f"/proc/{pid}/cmdline").replace("\0", " ").strip() or name
            busy.append(f"{pid} {pct:.0f}% {args[:100]}")
    return busy


def describe() -> Dict[str, object]:
    """What the numbers were measured on."""
    import flax
    import torch
    import transformers
    device = jax.devices()[0]
    return dict(
        nproc=os.cpu_count(), schedulable_cpus=len(os.sched_getaffinity(0)), cpu_model=cpu_model(),
        caches=cache_sizes(), memory_gib=round(memory_gib(), 1), loadavg_start=list(os.getloadavg()),
        jax_device=f"{device.platform}:{getattr(device, 'device_kind', '')}", jax=jax.__version__,
        flax=flax.__version__, torch=torch.__version__, transformers=transformers.__version__,
        xla_flags=os.environ.get("XLA_FLAGS", ""), torch_threads=torch.get_num_threads(),
        busy_processes_start=busy_processes())
