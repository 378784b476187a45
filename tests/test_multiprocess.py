"""Two JAX processes on 127.0.0.1 (gloo CPU collectives, 2 fake devices each) train a tiny prior together."""
import json
import os
import re
import socket
import subprocess
import sys
import pathlib

import numpy as np
import pytest

from jukejax.testing import make_codes_dataset

ROOT = pathlib.Path(__file__).resolve().parents[1]
@pytest.fixture(scope="module")
def codes_dir(tmp_path_factory):
    return make_codes_dataset(tmp_path_factory.mktemp("mp"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_and_share_one_checkpoint(codes_dir, tmp_path):
    port = _free_port()
    workdir = tmp_path / "run"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    common = [sys.executable, str(ROOT / "train.py"), "--config=configs/tiny_prior.py",
              f"--config.data.codes_dir={codes_dir}", "--config.train.num_steps=3", "--config.train.log_every=1",
              "--config.train.checkpoint_every=3", "--config.mesh.data=-1", f"--workdir={workdir}",
              f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
    procs = [subprocess.Popen(common + [f"--process_id={i}"], cwd=str(ROOT), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        outs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:  # never leave a process behind, whatever happened
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i} failed:\n{out[-1500:]}\nother process:\n{outs[1 - i][-1500:]}"
    losses = []
    for out in outs:
        steps = {int(m.group(1)): json.loads(m.group(2))["loss"]
                 for m in re.finditer(r"step (\d+): (\{.*\})", out)}
        assert sorted(steps) == [1, 2, 3]
        losses.append([steps[s] for s in (1, 2, 3)])
    print("per-process losses", losses)
    assert losses[0] == losses[1]
    assert np.isfinite(losses[0]).all()

    # one checkpoint, restorable by a single process
    from jukejax.checkpoint import load_variables
    config, variables, step = load_variables(str(workdir))
    assert step == 3 and config.model == "prior"
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in __import__("jax").tree.leaves(variables))
