"""`python -m jukejax.bench --quick --json ...` end to end, as CI runs it: every row is there, well formed, and
every measured number is positive and finite. Speeds are reported (docs/benchmarks.md), never asserted: the
CI machine is shared."""
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("torch", reason="the benchmark compares against the PyTorch port")
pytest.importorskip("transformers", reason="the benchmark compares against transformers' Jukebox port")

pytestmark = [pytest.mark.slow, pytest.mark.torch]

ROOT = pathlib.Path(__file__).resolve().parents[1]
ROW_KEYS = {"name", "section", "unit", "batch", "dtype", "jukejax", "pytorch", "ratio", "floor", "floor_kind",
            "floor_fraction", "pytorch_floor_fraction", "compile_seconds", "details"}
RATES = ("jukejax", "pytorch", "ratio", "floor", "floor_fraction", "pytorch_floor_fraction")


def _bench(tmp_path, *args):
    out = tmp_path / "bench.json"
    env = dict(os.environ)
    # The test session's 8 fake devices and compile cache (conftest.py) are not what a user runs.
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if not f.startswith("--xla_force_host_platform_device_count"))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    proc = subprocess.run([sys.executable, "-m", "jukejax.bench", "--quick", "--json", str(out), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"bench failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(out.read_text()), proc.stdout


def _positive(where, value):
    assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, f"{where} = {value!r}"


def _check_rows(rows):
    for row in rows:
        assert ROW_KEYS <= set(row), f"{row.get('name')}: missing {sorted(ROW_KEYS - set(row))}"
        for key in RATES:
            _positive(f"{row['name']} b{row['batch']} {key}", row[key])
        assert isinstance(row["batch"], int) and row["batch"] >= 1
        assert math.isfinite(row["compile_seconds"]) and row["compile_seconds"] >= 0, row["compile_seconds"]
        assert abs(row["ratio"] - row["jukejax"] / row["pytorch"]) <= 1e-9 * row["ratio"]
        assert abs(row["floor_fraction"] - row["jukejax"] / row["floor"]) <= 1e-9 * row["floor_fraction"]
        assert row["floor_kind"] in ("bandwidth", "matmul")


def test_quick_bench_writes_every_row(tmp_path):
    data, stdout = _bench(tmp_path)
    rows = data["rows"]
    _check_rows(rows)
    got = {(r["section"], r["name"].partition(")")[0] + r["name"].partition(")")[1], r["batch"]) for r in rows}
    want = {("decode", f"decode ({k})", b) for k in "abc" for b in (1, 4)}
    want |= {("prefill", "prefill (b)", b) for b in (1, 4)}
    want |= {("train", "train (a)", 2), ("vqvae", "vqvae released: encode 3 levels + decode level 0", 1)}
    want |= {("embed", "embed 5b-like w256 d2: 8192-token clips, mean-pooled", 1)}
    assert got == want
    assert {r["unit"] for r in rows} == {"tokens/s", "steps/s", "audio-s/s", "emb/s"}
    for key in ("bandwidth_bytes_per_s", "matmul_flops_float32"):
        _positive(key, data["limits"][key])
    assert data["settings"]["quick"] is True and data["settings"]["threads"] >= 1
    assert data["machine"]["nproc"] >= 1 and data["machine"]["cpu_model"]
    # same weights on both sides: the training step's first loss agrees
    train = next(r for r in rows if r["section"] == "train")
    assert train["details"]["first_loss_rel_err"] < 1e-4
    embed = next(r for r in rows if r["section"] == "embed")
    assert embed["details"]["rel_err_vs_port"] < 1e-5 and embed["details"]["tokens"] == 8192
    assert "ratio" in stdout and "of floor" in stdout
    assert all(" d2" in r["name"] for r in rows if r["section"] in ("decode", "train")), "--quick uses 2 layers"


def test_quick_bench_bfloat16_adds_bf16_weight_rows(tmp_path):
    data, _ = _bench(tmp_path, "--dtype", "bfloat16", "--rows", "c", "--threads", "1")
    rows = data["rows"]
    _check_rows(rows)
    assert [(r["name"].endswith("bf16w"), r["batch"]) for r in rows] == [(False, 1), (True, 1), (False, 4),
                                                                         (True, 4)]
    assert {r["dtype"] for r in rows} == {"bfloat16"}
    _positive("matmul bf16", data["limits"]["matmul_flops_bfloat16"])
    assert data["settings"]["threads"] == 1
