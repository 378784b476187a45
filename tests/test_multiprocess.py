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


def _env():
    # 2 fake CPU devices per process. On a loaded 2-core machine a process can take more than the default
    # 2 minutes to reach backend start-up, where the processes exchange topologies: allow 10.
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
                JAX_CPU_GET_LOCAL_TOPOLOGY_TIMEOUT_MINUTES="10", JAX_CPU_GET_GLOBAL_TOPOLOGY_TIMEOUT_MINUTES="10")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_and_share_one_checkpoint(codes_dir, tmp_path):
    port = _free_port()
    workdir = tmp_path / "run"
    env = _env()
    common = [sys.executable, str(ROOT / "train.py"), "--config=tests/tiny_configs.py:prior",
              f"--config.data.codes_dir={codes_dir}", "--config.train.num_steps=3", "--config.train.log_every=1",
              "--config.train.checkpoint_every=3", "--config.mesh.data=-1", f"--workdir={workdir}",
              f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
    procs = [subprocess.Popen(common + [f"--process_id={i}"], cwd=str(ROOT), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        outs = [p.communicate(timeout=900)[0] for p in procs]
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


SAMPLE_ARGS = ["sample.py", "--checkpoint=models/demo", "--mode=ancestral", "--artist=johann_sebastian_bach",
               "--genre=chorale", "--lyrics=Ach Gott", "--sample_length_in_seconds=1.5",
               "--total_sample_length_in_seconds=60", "--n_samples=2", "--temperature=0.98", "--seed=0"]


@pytest.mark.slow
def test_two_processes_sample_the_tokens_one_process_samples(tmp_path):
    """sample.py on 2 processes x 2 devices: every process samples every token, process 0 alone writes, and
    the codes equal a single-process run's."""
    from jukejax.sample import outputs
    port = _free_port()
    env = _env()
    multi, single = tmp_path / "multi", tmp_path / "single"
    procs = [subprocess.Popen([sys.executable, *SAMPLE_ARGS, f"--workdir={multi}",
                               f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
                              cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    try:
        outs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i} failed:\n{out[-1500:]}\nother process:\n{outs[1 - i][-1500:]}"
    assert "wavs, spectrograms" in outs[0] and "wavs, spectrograms" not in outs[1]  # one writer
    done = subprocess.run([sys.executable, *SAMPLE_ARGS, f"--workdir={single}"], cwd=str(ROOT),
                          env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=""), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    for level in (2, 1, 0):
        got = outputs.read_codes(outputs.level_dir(multi, level) / outputs.CODES_FILE)
        want = outputs.read_codes(outputs.level_dir(single, level) / outputs.CODES_FILE)
        assert got.complete and got.outputs_done
        np.testing.assert_array_equal(got.z, want.z)
        assert (outputs.level_dir(multi, level) / "item_1.wav").is_file()
