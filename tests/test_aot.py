"""`jukejax.aot`: the TPU compiler (libtpu) compiles a tiny prior's train step and sampling window for a
v5e:2x2 slice on this CPU machine, reports the compiler's memory plan and estimates, and refuses a plan over
HBM in one line before compiling."""
import json

import pytest

pytest.importorskip("libtpu", reason="the TPU compiler comes with jukejax[tpu] / jukejax[test]")

import tiny_configs  # noqa: E402
from jukejax import aot  # noqa: E402
from jukejax.prior.prior import prior_config  # noqa: E402

TOPOLOGY = "v5e:2x2"


@pytest.fixture(scope="module")
def train_report():
    return aot.compile_train(tiny_configs.prior(), TOPOLOGY)


@pytest.fixture(scope="module")
def window_report():
    return aot.compile_sampling(prior_config(tiny_configs.prior()), TOPOLOGY, n_samples=4, vqvae=False)["reports"][0]


def _check_common(report):
    assert report["topology"] == TOPOLOGY and report["devices"] == 4 and report["chip"] == "TPU v5e"
    m = report["memory_per_device"]
    assert m["argument_bytes"] > 0 and m["generated_code_bytes"] > 0
    assert m["total_bytes"] == (m["argument_bytes"] + m["output_bytes"] - m["alias_bytes"] + m["temp_bytes"]
                                + m["generated_code_bytes"])
    assert report["hbm_bytes_per_device"] == 16_000_000_000 and report["fits"]
    assert report["flops_per_device"] > 0
    assert report["estimated_seconds"] > 0 and report["roofline_seconds"] > 0
    assert report["compile_seconds"] > 0
    json.dumps(report)  # --json prints it


def test_train_step_report(train_report):
    _check_common(train_report)
    assert train_report["name"] == "train step"
    assert train_report["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1}  # the config's data=-1
    # data parallel: the gradients are summed across the 4 devices
    assert "all-reduce" in train_report["collectives"], train_report["collectives"]
    # the donated train state comes back in place
    m = train_report["memory_per_device"]
    assert m["alias_bytes"] >= 0.9 * m["output_bytes"] > 0
    assert train_report["estimate_loops_exact"]


def test_window_report(window_report):
    _check_common(window_report)
    step = window_report["step"]
    n_ctx = prior_config(tiny_configs.prior()).n_ctx
    assert step["trips"] == n_ctx - 1  # position 0 comes from the prefill
    assert step["estimated_seconds"] > 0 and step["floor_seconds"] > 0
    assert step["compiler_stream_bytes_per_cycle"] > 100 and step["estimate_over_compiler_floor"] > 0
    assert step["large_per_step_rewrites"] == []
    assert step["estimated_seconds"] <= step["overlapped_seconds"] <= step["serial_seconds"]
    assert window_report["mesh"]["data"] == 4 and window_report["collectives"] == {}  # rows decode independently
    assert aot.format_report(window_report).count("\n") >= 4


def test_over_hbm_refused_in_one_line_before_compiling():
    config = tiny_configs.prior()
    with config.unlocked():
        config.prior.prior_width = 16384  # 2.4 B params: a 39 GB fp32 train state on every 16 GB chip
    with pytest.raises(aot.AOTError) as e:
        aot.compile_train(config, TOPOLOGY)
    message = str(e.value)
    assert "\n" not in message
    assert "does not fit v5e:2x2" in message and "16.00 GB HBM" in message
    assert "params['prior']['transformer']" in message and "try mesh fsdp=" in message


def test_bad_topology_named():
    with pytest.raises(aot.AOTError, match="expected CHIP:AxB"):
        aot.target("v9x:2x2")


def test_command_line_reports_a_bad_topology_in_one_line():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "jukejax.aot", "--config=tests/tiny_configs.py:prior", "--compile_for=v9:2x2"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: --compile_for 'v9:2x2': expected CHIP:AxB")


@pytest.mark.slow
def test_compiler_out_of_hbm_refused_in_one_line():
    """Temporaries over HBM (the VQ-VAE's activations at a huge batch): the compiler refuses, and so do we, in
    one line with a batch that would fit."""
    config = tiny_configs.vqvae()
    with config.unlocked():
        config.data.batch_size = 262144
    with pytest.raises(aot.AOTError) as e:
        aot.compile_train(config, TOPOLOGY)
    message = str(e.value)
    assert "\n" not in message
    assert "does not fit v5e:2x2: the compiler needs" in message and "of temporaries per device" in message
    assert "data.batch_size" in message


def test_scanned_window_report():
    """`--decode_scan`: the layers (order 2 at depth 7: one unrolled, (T, P, B) x 2 scanned) compile as a loop
    inside the token loop, with the params stacked and split over fsdp as the unstacked ones are."""
    config = tiny_configs.prior()
    config.prior.prior_depth = 7
    report = aot.compile_sampling(prior_config(config), TOPOLOGY, n_samples=4, mesh=aot.MeshConfig(data=2, fsdp=2),
                                  vqvae=False, scan=True)["reports"][0]
    _check_common(report)
    unrolled = aot.compile_sampling(prior_config(config), TOPOLOGY, n_samples=4,
                                    mesh=aot.MeshConfig(data=2, fsdp=2), vqvae=False)["reports"][0]
    # the same weights and caches per device, only grouped differently
    assert report["weights_bytes_per_device"] == unrolled["weights_bytes_per_device"]
    assert report["cache_bytes_per_device"] == unrolled["cache_bytes_per_device"]
    assert report["step"]["trips"] == unrolled["step"]["trips"] and report["estimate_loops_exact"]
    assert report["step"]["large_per_step_rewrites"] == []
