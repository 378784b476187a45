"""Preemption: SIGTERM saves and exits cleanly; kill -9 then the same command repeats the lost steps with
bit-identical losses (CPU)."""
import json
import os
import pathlib
import re
import shutil
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


class _Losses(dict):
    """Losses by step, and the workdir of the run that logged them."""

    def __init__(self, losses, workdir):
        super().__init__(losses)
        self.workdir = workdir


@pytest.fixture(scope="module")
def uninterrupted(codes_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("full")
    subprocess.run(_command(codes_dir, workdir), cwd=str(ROOT), env=_env(), check=True, capture_output=True)
    losses = _losses(workdir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    return _Losses(losses, workdir)


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


def _resumed_step(stderr: str) -> int:
    match = re.search(r"resumed at step (\d+)", stderr)
    assert match, stderr[-2000:]
    return int(match.group(1))


@pytest.mark.slow
def test_kill_9_loses_at_most_one_checkpoint_interval(codes_dir, uninterrupted, tmp_path):
    """Killed at step K with checkpoints every 4: the restart resumes at K - 4 or later (a save takes longer
    than 4 steps of this model, so before each save was committed while the next step ran, two intervals
    were lost); the partial step directory a kill leaves is cleaned up."""
    proc = _start_and_wait(codes_dir, tmp_path, 9)  # checkpoints every 4 steps: 4, 8 saved, 12 maybe in flight
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(_losses(tmp_path))
    done = subprocess.run(_command(codes_dir, tmp_path), cwd=str(ROOT), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = _resumed_step(done.stderr)
    print(f"killed at step {killed_at}, resumed at {resumed}")
    assert resumed >= killed_at - 4
    assert _losses(tmp_path) == uninterrupted
    assert not list((tmp_path / "checkpoints").glob("*orbax-checkpoint-tmp*"))


@pytest.mark.slow
def test_a_corrupt_latest_checkpoint_falls_back_to_the_one_before(codes_dir, uninterrupted, tmp_path):
    """The latest checkpoint's array files damaged (a disk error, a copy cut short): one short warning, the
    run resumes from the previous checkpoint and repeats the lost steps exactly; a leftover partial step
    directory from an earlier kill is removed."""
    shutil.copytree(pathlib.Path(uninterrupted.workdir) / "checkpoints", tmp_path / "checkpoints")
    shutil.copy(pathlib.Path(uninterrupted.workdir) / "config.json", tmp_path / "config.json")
    latest = max(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    for f in (tmp_path / "checkpoints" / str(latest) / "state").rglob("*"):
        if f.is_file() and f.parent.name == "d":  # the array data (TensorStore's OCDBT data files)
            f.write_bytes(b"\0" * 16)
    (tmp_path / "checkpoints" / f"{latest + 4}.orbax-checkpoint-tmp").mkdir()
    done = subprocess.run(_command(codes_dir, tmp_path), cwd=str(ROOT), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    warning = [line for line in done.stderr.splitlines() if "cannot be restored" in line]
    print(warning)
    assert len(warning) == 1 and len(warning[0]) < 600 and f"falling back to step {latest - 4}" in warning[0]
    assert _resumed_step(done.stderr) == latest - 4
    losses = _losses(tmp_path)
    assert all(losses[s] == uninterrupted[s] for s in range(latest - 3, STEPS + 1))
    assert not list((tmp_path / "checkpoints").glob("*orbax-checkpoint-tmp*"))
