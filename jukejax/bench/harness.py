"""Timing and reporting: warm-up, alternating repeats, medians; the result rows, their table and JSON.

Every row compares callables that each do the same work once and return when it is finished (the jukejax
ones block on their outputs). They run in ONE process, interleaved round by round, so a neighbour's load or
a frequency change hits both sides alike; the median of the rounds is reported.
"""
from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from typing import Callable, Dict, List, Optional


@dataclasses.dataclass
class Timing:
    first_s: float          # the very first call: includes tracing and XLA compilation for a jitted callable
    seconds: List[float]    # the timed rounds

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def compile_s(self) -> float:
        """First call minus a steady one: tracing + XLA compilation (+ first-touch allocation)."""
        return max(self.first_s - self.median_s, 0.0)


def alternate(candidates: Dict[str, Callable[[], None]], repeats: int, warmup: int = 1) -> Dict[str, Timing]:
    """Time each candidate: one first call, `warmup` more untimed calls, then `repeats` rounds in which every
    candidate runs once, the order rotated by one each round (so no side always runs right after the other)."""
    if repeats < 1:
        raise ValueError(f"repeats {repeats} must be >= 1")
    names = list(candidates)
    first = {}
    for name in names:
        t0 = time.perf_counter()
        candidates[name]()
        first[name] = time.perf_counter() - t0
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    seconds: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t0 = time.perf_counter()
            candidates[name]()
            seconds[name].append(time.perf_counter() - t0)
    return {name: Timing(first[name], seconds[name]) for name in names}


@dataclasses.dataclass
class Row:
    """One line of the table: a rate (`unit`, higher is better) of jukejax and of the PyTorch port.

    `floor` is the roofline ceiling of the rate on this machine: for decode, batch * bandwidth / bytes read
    per step; for training and the VQ-VAE, matmul rate / model FLOPs per step. `floor_fraction` is the
    fraction of it jukejax reaches (MBU for decode, MFU for the others).
    """
    name: str
    section: str            # decode | train | vqvae
    unit: str
    batch: int
    jukejax: float
    pytorch: float
    floor: float
    floor_kind: str         # "bandwidth" (bytes per step / read bandwidth) or "matmul" (FLOPs / matmul rate)
    compile_s: float        # jukejax's XLA compile (+ trace) time, outside the steady-state numbers
    dtype: str = "float32"
    details: Dict[str, object] = dataclasses.field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.jukejax / self.pytorch

    @property
    def floor_fraction(self) -> float:
        return self.jukejax / self.floor

    @property
    def pytorch_floor_fraction(self) -> float:
        return self.pytorch / self.floor

    def to_json(self) -> Dict[str, object]:
        return dict(name=self.name, section=self.section, unit=self.unit, batch=self.batch, dtype=self.dtype,
                    jukejax=self.jukejax, pytorch=self.pytorch, ratio=self.ratio, floor=self.floor,
                    floor_kind=self.floor_kind, floor_fraction=self.floor_fraction,
                    pytorch_floor_fraction=self.pytorch_floor_fraction, compile_seconds=self.compile_s,
                    details=self.details)


def _num(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def table(rows: List[Row], markdown: bool = False) -> str:
    """The rows as a fixed-width text table (or a Markdown one)."""
    head = ["row", "batch", "unit", "jukejax", "PyTorch", "ratio", "floor", "of floor", "compile s"]
    body = [[r.name, str(r.batch), r.unit, _num(r.jukejax), _num(r.pytorch), f"{r.ratio:.2f}x", _num(r.floor),
             f"{100 * r.floor_fraction:.0f}%", f"{r.compile_s:.1f}"] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


def write_json(path: str, rows: List[Row], machine: Dict[str, object], settings: Dict[str, object],
               limits: Dict[str, object]) -> None:
    with open(path, "w") as f:
        json.dump(dict(settings=settings, machine=machine, limits=limits, rows=[r.to_json() for r in rows]), f,
                  indent=2, default=float)
        f.write("\n")


def check_number(name: str, value: Optional[float]) -> float:
    """A measured rate must be a positive finite number; anything else is a bug in the benchmark."""
    if value is None or not math.isfinite(value) or value <= 0:
        raise RuntimeError(f"{name} measured {value!r}; expected a positive finite number")
    return float(value)
