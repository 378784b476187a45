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


def _run_two(argv, timeout=600):
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "jukejax.embed", *argv, f"--coordinator_address=127.0.0.1:{port}",
                               "--num_processes=2", f"--process_id={i}"], cwd=str(ROOT), env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        return [(p.wait(timeout=timeout), *p.communicate()) for p in procs]
    finally:
        for p in procs:  # never leave a process behind, whatever happened
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.slow  # two JAX processes start, load the demo model and compile its first layer
def test_two_processes_embed_a_folder_once_into_one_manifest(tmp_path):
    """`python -m jukejax.embed` on 2 processes x 2 devices: each file is embedded by exactly one process (file i
    by process i mod 2), the features equal a single-process run's, and the one manifest lists every file."""
    from jukejax.embed import Embedder
    from jukejax.embed.run import EmbedConfig, run
    from jukejax.testing import write_songs

    demo = ROOT / "models" / "demo"
    songs = write_songs(tmp_path / "songs", 4, 1.6, 22050)
    write_songs(songs / "more", 1, 1.8, 16000, seed=1)
    out = tmp_path / "two"
    argv = [f"--checkpoint={demo}", f"--audio_dir={songs}", f"--out={out}", "--layers=1", "--no_progress"]
    results = _run_two(argv)
    for i, (rc, stdout, stderr) in enumerate(results):
        assert rc == 0, f"process {i} failed:\n{stderr[-2000:]}"
    summaries = [json.loads(stdout.strip().splitlines()[-1]) for _, stdout, _ in results]
    assert [(s["files"], s["embedded"], s["skipped"]) for s in summaries] == [(5, 3, 0), (5, 2, 0)]
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    files = ["more/song0.wav", "song0.wav", "song1.wav", "song2.wav", "song3.wav"]
    assert sorted(r["file"] for r in lines) == files     # every file once
    assert not list(out.rglob(".*.tmp"))

    single = tmp_path / "one"
    run(EmbedConfig(checkpoint=str(demo), out=str(single), audio_dir=str(songs), layers=(1,), progress=False),
        Embedder(str(demo), layers=(1,)))
    for f in files:
        npy = pathlib.Path(f).with_suffix(".npy")
        np.testing.assert_array_equal(np.load(out / npy), np.load(single / npy), err_msg=f)

    # a rerun by both processes skips everything and leaves the manifest as it was
    before = (out / "manifest.jsonl").read_bytes()
    results = _run_two(argv)
    assert [json.loads(stdout.strip().splitlines()[-1])["embedded"] for _, stdout, _ in results] == [0, 0]
    assert (out / "manifest.jsonl").read_bytes() == before

    # a silent file (index 1: process 1's) refuses the run on both processes before anything is written
    import shutil
    import soundfile as sf
    bad = tmp_path / "bad"
    shutil.copytree(songs, bad)
    sf.write(bad / "silent.wav", np.zeros(2 * 22050, np.float32), 22050)
    results = _run_two([f"--checkpoint={demo}", f"--audio_dir={bad}", f"--out={tmp_path / 'refused'}",
                        "--layers=1", "--no_progress"])
    (rc0, _, err0), (rc1, _, err1) = results
    assert (rc0, rc1) == (2, 2), (err0[-1500:], err1[-1500:])
    assert "silent.wav: audio is silent" in err1.strip().splitlines()[-1], err1[-1500:]
    assert "another process refused" in err0.strip().splitlines()[-1], err0[-1500:]
    assert not (tmp_path / "refused").exists()
