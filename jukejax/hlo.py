"""Reading an optimised HLO module's text (`compiled.as_text()`): the TPU compiler's own cycle estimates,
loop trip counts, collectives and the largest ops of a loop body.

The TPU backend writes an `"estimated_cycles"` figure into the backend config of each scheduled op. Summed
over the ops a step executes (a while loop's body once per trip), they are the compiler's sequential estimate
of the step's time: it ignores the overlap of asynchronous copies and collectives with compute, so it is an
upper bound of what its own schedule achieves.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, List, Optional, Tuple

_COMPUTATION = re.compile(r"^(ENTRY )?%([\w.\-]+) \(.*\) -> .* \{$")
_INSTRUCTION = re.compile(r"^\s*(ROOT )?%([\w.\-]+) = (.+?) ([\w\-]+)\((.*)$")
_CYCLES = re.compile(r'"estimated_cycles":"(\d+)"')
_CONSTANT = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = \w+\[\]\S* constant\((-?\d+)\)")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4,
                "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1, "s4": 1, "u4": 1}
_SHAPE = re.compile(r"\b([a-z]+\d*(?:e\dm\d\w*)?)\[([\d,]*)\]")
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


@dataclasses.dataclass
class Instruction:
    name: str
    shape: str        # the result type text, e.g. "bf16[4,1,1920]{2,1,0:T(4,128)(2,1)}"
    opcode: str
    rest: str         # operands and attributes

    @property
    def cycles(self) -> int:
        m = _CYCLES.search(self.rest)
        return int(m.group(1)) if m else 0

    @property
    def bytes(self) -> int:
        """Bytes of the result (summed over a tuple's elements)."""
        total = 0
        for dtype, dims in _SHAPE.findall(self.shape):
            if dtype in _DTYPE_BYTES:
                total += _DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
        return total

    def attribute(self, name: str) -> Optional[str]:
        m = re.search(rf"\b{name}=%([\w.\-]+)", self.rest)
        return m.group(1) if m else None

    @property
    def operands(self) -> List[str]:
        depth, end = 1, 0
        for i, ch in enumerate(self.rest):  # the operand list ends at the parenthesis that closes it
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                end = i
                break
        return re.findall(r"%([\w.\-]+)", self.rest[:end])


class Module:
    """The computations of one HLO module, with cycle sums that follow while loops and calls."""

    def __init__(self, text: str):
        self.computations: Dict[str, List[Instruction]] = {}
        self.constants: Dict[str, Dict[str, int]] = {}
        self.entry: Optional[str] = None
        self._cycles: Dict[str, Tuple[int, bool]] = {}
        current = None
        for line in text.splitlines():
            m = _COMPUTATION.match(line)
            if m:
                current = m.group(2)
                self.computations[current] = []
                self.constants[current] = {}
                if m.group(1):
                    self.entry = current
                continue
            if current is None:
                continue
            if line.startswith("}"):
                current = None
                continue
            c = _CONSTANT.match(line)
            if c:
                self.constants[current][c.group(1)] = int(c.group(2))
            m = _INSTRUCTION.match(line)
            if m:
                self.computations[current].append(Instruction(m.group(2), m.group(3), m.group(4), m.group(5)))

    def _find(self, computation: str, name: str) -> Optional[Instruction]:
        for inst in self.computations.get(computation, ()):
            if inst.name == name:
                return inst
        return None

    def trip_count(self, computation: str, loop: Instruction) -> Optional[int]:
        """Trips of a while loop `i = start; while i < bound` whose start and bound are constants (what
        `lax.fori_loop` with static bounds and `lax.scan` compile to); None when they are not."""
        cond = loop.attribute("condition")
        root = next((i for i in reversed(self.computations.get(cond, ())) if i.opcode == "compare"), None)
        if root is None:
            return None
        direction = re.search(r"direction=(\w+)", root.rest)
        operands = root.operands
        if direction is None or len(operands) != 2:
            return None
        consts = self.constants.get(cond, {})
        if operands[1] in consts:
            counter, bound, flip = operands[0], consts[operands[1]], False
        elif operands[0] in consts:
            counter, bound, flip = operands[1], consts[operands[0]], True
        else:
            return None
        gte = self._find(cond, counter)
        index = re.search(r"index=(\d+)", gte.rest) if gte is not None and gte.opcode == "get-tuple-element" else None
        init = self._find(computation, loop.operands[0]) if loop.operands else None
        if index is None or init is None or init.opcode != "tuple":
            return None
        start = self._constant_through_copies(computation, init.operands[int(index.group(1))])
        if start is None:
            return None
        op = {"LT": "GT", "LE": "GE", "GT": "LT", "GE": "LE"}[direction.group(1)] if flip else direction.group(1)
        trips = {"LT": bound - start, "LE": bound - start + 1, "GT": start - bound, "GE": start - bound + 1}.get(op)
        return max(trips, 0) if trips is not None else None

    def _constant_through_copies(self, computation: str, name: str) -> Optional[int]:
        for _ in range(4):
            if name in self.constants.get(computation, {}):
                return self.constants[computation][name]
            inst = self._find(computation, name)
            if inst is None or inst.opcode not in ("copy", "bitcast", "convert") or not inst.operands:
                return None
            name = inst.operands[0]
        return None

    def cycles(self, computation: Optional[str] = None) -> Tuple[int, bool]:
        """(estimated cycles of one execution of `computation` (default: the entry), every while loop's
        body counted once per trip; whether every loop's trip count was known)."""
        computation = computation or self.entry
        if computation not in self._cycles:
            self._cycles[computation] = self._count_cycles(computation)
        return self._cycles[computation]

    def _count_cycles(self, computation: str) -> Tuple[int, bool]:
        total, exact = 0, True
        for inst in self.computations.get(computation, ()):
            total += inst.cycles
            if inst.opcode == "while":
                trips = self.trip_count(computation, inst)
                body, body_exact = self.cycles(inst.attribute("body"))
                cond, _ = self.cycles(inst.attribute("condition"))
                exact &= body_exact and trips is not None
                total += (trips if trips is not None else 1) * (body + cond)
            elif inst.opcode in ("call", "async-start"):
                called = inst.attribute("to_apply") or inst.attribute("calls")
                if called:
                    sub, sub_exact = self.cycles(called)
                    total, exact = total + sub, exact and sub_exact
            elif inst.opcode == "conditional":
                branches = re.findall(r"%([\w.\-]+)", (re.search(r"branch_computations=\{([^}]*)\}", inst.rest)
                                                       or re.search(r"()", "")).group(1))
                if branches:
                    total += max(self.cycles(b)[0] for b in branches)
        return total, exact

    def loops(self, computation: Optional[str] = None) -> List[Tuple[str, Optional[int], int]]:
        """(body name, trip count, cycles of one trip) of every while loop in `computation` (default entry)."""
        computation = computation or self.entry
        out = []
        for inst in self.computations.get(computation, ()):
            if inst.opcode == "while":
                body = inst.attribute("body")
                trip = self.cycles(body)[0] + self.cycles(inst.attribute("condition"))[0]
                out.append((body, self.trip_count(computation, inst), trip))
        return out

    def async_copy_bytes(self, computation: str) -> int:
        """Bytes the asynchronous copies of `computation` move (`copy-start` / `slice-start`: on TPU, weights
        and cache slices streamed from HBM into on-chip memory while other ops run). Their time is not in
        any op's `estimated_cycles`."""
        total = 0
        for inst in self.computations.get(computation, ()):
            if inst.opcode in ("copy-start", "slice-start"):
                arrays = _SHAPE.findall(inst.shape)
                if len(arrays) >= 2:  # (source(s), destination, context): the destination is the last array but one
                    dtype, dims = arrays[-2]
                    total += _DTYPE_BYTES.get(dtype, 0) * math.prod(int(d) for d in dims.split(",") if d)
        return total

    def collectives(self) -> Dict[str, Dict[str, int]]:
        """{kind: {"count", "bytes"}} of the collectives anywhere in the module (each op once, not per trip)."""
        out: Dict[str, Dict[str, int]] = {}
        for instructions in self.computations.values():
            for inst in instructions:
                kind = inst.opcode[:-len("-start")] if inst.opcode.endswith("-start") else inst.opcode
                if kind in COLLECTIVES:
                    entry = out.setdefault(kind, {"count": 0, "bytes": 0})
                    entry["count"] += 1
                    entry["bytes"] += inst.bytes
        return out

    def largest(self, computation: str, n: int = 5) -> List[Dict[str, object]]:
        """The n ops of `computation` with the most estimated cycles: name, opcode, result bytes, cycles, and
        the JAX operation it came from."""
        ops = sorted(self.computations.get(computation, ()), key=lambda i: -i.cycles)[:n]
        out = []
        for inst in ops:
            source = re.search(r'op_name="([^"]*)"', inst.rest)
            out.append({"op": inst.name, "opcode": inst.opcode, "bytes": inst.bytes, "cycles": inst.cycles,
                        "source": source.group(1) if source else ""})
        return out

    def ops_in(self, computation: str, opcode: str) -> List[Instruction]:
        """Every `opcode` op inside `computation` and the fusions it calls."""
        out, seen, todo = [], set(), [computation]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            for inst in self.computations.get(name, ()):
                if inst.opcode == opcode:
                    out.append(inst)
                if inst.opcode == "fusion":
                    todo.append(inst.attribute("calls"))
        return out
