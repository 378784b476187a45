"""Preemption: SIGTERM saves and exits cleanly; kill -9 then the same command repeats the lost steps with
bit-identical losses (CPU)."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jukejax.testing import make_codes_dataset

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 16


@pytest.fixture(scope="module")
def codes_dir(tmp_path_factory):
    return make_codes_dataset(tmp_path_factory.mktemp("pre"))


def _command(codes_dir, workdir):
    return [sys.executable, str(ROOT / "train.py"), "--config=tests/tiny_configs.py:prior",
            f"--config.data.codes_dir={codes_dir}", f"--config.train.num_steps={STEPS}",
            "--config.train.log_every=1", "--config.train.checkpoint_every=4", "--config.train.eval_every=1000",
            "--config.mesh.data=1", f"--workdir={workdir}"]


def _env():
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")


def _losses(workdir):
    """The last logged loss of every step (a restarted run logs the repeated steps again)."""
    out = {}
    path = pathlib.Path(workdir) / "metrics.jsonl"
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut by kill -9
            continue
        out[entry["step"]] = entry["loss"]
    return out


def _start_and_wait(codes_dir, workdir, until_step):
    proc = subprocess.Popen(_command(codes_dir, workdir), cwd=str(ROOT), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline:
        if (pathlib.Path(workdir) / "metrics.jsonl").exists() and max(_losses(workdir), default=0) >= until_step:
            return proc
        if proc.poll() is not None:
            raise AssertionError(f"training exited early with {proc.returncode}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("training did not reach the step in time")


@pytest.fixture(scope="module")
def uninterrupted(codes_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("full")
    subprocess.run(_command(codes_dir, workdir), cwd=str(ROOT), env=_env(), check=True, capture_output=True)
    losses = _losses(workdir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    return losses


@pytest.mark.slow
def test_kill_9_then_restart_repeats_the_same_losses(codes_dir, uninterrupted, tmp_path):
    kill_at = int(np.random.default_rng().integers(5, STEPS - 2))
    proc = _start_and_wait(codes_dir, tmp_path, kill_at)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run(_command(codes_dir, tmp_path), cwd=str(ROOT), env=_env(), check=True, capture_output=True)
    resumed = _losses(tmp_path)
    print(f"killed at step >= {kill_at}; losses after restart equal: {resumed == uninterrupted}")
    assert resumed == uninterrupted  # bit for bit: JSON floats round-trip exactly


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(codes_dir, uninterrupted, tmp_path):
    proc = _start_and_wait(codes_dir, tmp_path, 6)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    from jukejax.checkpoint import load_variables
    stopped = max(_losses(tmp_path))
    _, _, step = load_variables(str(tmp_path))
    assert step == stopped < STEPS  # nothing since the signal was lost
    subprocess.run(_command(codes_dir, tmp_path), cwd=str(ROOT), env=_env(), check=True, capture_output=True)
    assert _losses(tmp_path) == uninterrupted
