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

from configs import tiny_prior
from jukejax.data import BuildConfig, build_dataset
from jukejax.data import codes as codes_lib
from jukejax.testing import write_songs

ROOT = pathlib.Path(__file__).resolve().parents[1]
SR = 8000
HOPS = (4, 8, 16)  # configs/tiny_vqvae.py


def _fake_encode(audio):
    """Deterministic stand-in for a VQ-VAE: each hop's mean level quantised to 32 codes."""
    out = []
    for hop in HOPS:
        frames = audio[:, : audio.shape[1] // hop * hop, 0].reshape(audio.shape[0], -1, hop).mean(-1)
        out.append(np.clip(((frames + 0.4) / 0.8 * 32).astype(np.int64), 0, 31))
    return out


@pytest.fixture(scope="module")
def codes_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("mp")
    audio = write_songs(root / "audio", 4, 4.0, SR, artists=["a", "b"], genres=["x", "y"])
    build_dataset(BuildConfig(audio_dir=str(audio), sr=SR, channels=1, window_seconds=2.0, test_fraction=0.25),
                  str(root / "data"))
    codes_lib.encode_dataset(str(root / "data"), str(root / "codes"), _fake_encode, hop_lengths=HOPS,
                             chunk_seconds=1.0, context_seconds=0.0)
    return root / "codes"


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
