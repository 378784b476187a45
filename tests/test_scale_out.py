"""Sharded training equals single-device training: params, optimiser state and EMA sharded over the mesh.

Meshes (data, fsdp, tensor) = (8,1,1), (2,4,1), (2,2,2) on 8 fake CPU devices against (1,1,1), 3 steps.
"""
import jax
import numpy as np
import pytest

import tiny_configs

from jukejax import parallel
from jukejax.config import DataConfig, MeshConfig, VQVAEConfig, build
from jukejax.prior.prior import prior_config
from jukejax.train import loop, run as run_lib
from jukejax.train.prior_task import PriorTask
from jukejax.train.vqvae_task import VQVAETask
from jukejax.vqvae.losses import Bandwidth

MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2)]
STEPS = 3
# A sharded run against one device, relative errors. Measured on 2 cores under load (3 meshes x prior/upsampler/
# VQ-VAE): losses <= 3e-7, gradient norms <= 5e-7, params/EMA <= 3.4e-6 (always a zero-initialised bias, whose
# norm is that of its 3 updates). A mis-sharded batch gives 3e-5, 0.2 and 1.0
# (test_the_comparison_catches_a_mis_sharded_batch).
LOSS_BAR = 1e-5
GRAD_BAR = 1e-5
PARAM_BAR = 3e-5


class _Batches:
    """Deterministic synthetic batches with a Grain-like state."""

    def __init__(self, make):
        self.make, self.i = make, 0

    def __iter__(self):
        return self

    def __next__(self):
        batch = self.make(np.random.default_rng(self.i))
        self.i += 1
        return batch

    def get_state(self):
        return {"i": self.i}

    def set_state(self, state):
        self.i = state["i"]


def _prior_task(config):
    pc = prior_config(config)
    task = PriorTask(pc, build(DataConfig, config.data, "data"), codes_dir="")
    n = 8

    def make(rng):
        batch = {"z": rng.integers(0, pc.vqvae.l_bins, (n, pc.n_ctx)).astype(np.int32),
                 "y": np.array([[pc.vqvae.sr * 20, pc.vqvae.sr * i, pc.sample_length, i % 3, i % 2] for i in range(n)],
                               np.int64)}
        if pc.upsampler is not None:
            batch["z_cond"] = rng.integers(0, pc.vqvae.l_bins, (n, pc.cond_length)).astype(np.int32)
        return batch
    task.train_iterator = lambda seed: _Batches(make)
    task.eval_batches = lambda: None
    return task


def _vqvae_task(config):
    vq = build(VQVAEConfig, config.vqvae, "vqvae")
    task = VQVAETask(vq, build(DataConfig, config.data, "data"), Bandwidth(l1=0.1, l2=0.02, spec=5.0))
    t = np.arange(config.data.sample_length) / vq.sr

    def make(rng):
        # Noisy tones: periodic signals give near-identical encoder outputs whose code assignments tie, and a
        # tie broken differently by float summation order flips an EMA count (1 - mu) = 1e-2.
        f = rng.uniform(100, 900, (8, 1))
        audio = 0.3 * np.sin(2 * np.pi * f * t) + 0.05 * rng.normal(size=(8, t.size))
        return {"audio": audio[..., None].astype(np.float32)}
    task.train_iterator = lambda seed: _Batches(make)
    task.eval_batches = lambda: None
    return task


def _run(make_task, config, mesh, workdir):
    config = config.copy_and_resolve_references()
    config.mesh.update(dict(data=mesh[0], fsdp=mesh[1], tensor=mesh[2]))
    config.train.update(dict(num_steps=STEPS, log_every=1, eval_every=1000, checkpoint_every=1000))
    trainer = loop.Trainer(make_task(config), run_lib.loop_config(config), str(workdir))
    history = trainer.run()
    state = trainer.state
    trainer.history = history
    losses = [entry["loss"] for entry in history["logs"]]  # log_every=1: one entry per step
    return losses, jax.tree.map(np.asarray, (state.params, state.ema_params, state.extra)), trainer


def _norm_rel_err(a, b):
    """max over tensors of |a - b| / |b| (Frobenius norms), and the tensor where it is largest.

    Per tensor, not per element: after Adam steps an element whose gradient is near zero moves by up to
    lr * sign(g), and the sign of a near-zero gradient flips with float summation order (which varies with
    the mesh and, on a loaded CPU, with thread scheduling). Such elements dominate a per-element or max-norm
    error without saying anything about whether the sharded step computes the same thing."""
    errs = {}
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        errs[jax.tree_util.keystr(path)] = np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-12)
    worst = max(errs, key=errs.get)
    return float(errs[worst]), worst


def _compare(got_losses, got_logs, got_trees, losses, logs, trees):
    """(loss err, grad-norm err, params/EMA err), all relative. Step 1's loss sees identical params and data,
    so it differs only by summation order; later losses and the gradient norms see the updated params."""
    loss_err = float(np.max(np.abs(np.subtract(got_losses, losses)) / np.abs(losses)))
    got_gn, gn = [e["grad_norm"] for e in got_logs], [e["grad_norm"] for e in logs]
    grad_err = float(np.max(np.abs(np.subtract(got_gn, gn)) / np.abs(gn)))
    param_err, where = _norm_rel_err(got_trees[:2], trees[:2])  # params and their EMA
    return loss_err, grad_err, param_err, where


@pytest.fixture(scope="module", params=["prior", "upsampler", "vqvae"])
def reference(request, tmp_path_factory):
    make_task, config = {"prior": (_prior_task, tiny_configs.prior()),
                         "upsampler": (_prior_task, tiny_configs.upsampler()),
                         "vqvae": (_vqvae_task, tiny_configs.vqvae())}[request.param]
    losses, trees, trainer = _run(make_task, config, (1, 1, 1), tmp_path_factory.mktemp("one"))
    assert np.isfinite(losses).all()
    return request.param, make_task, config, losses, trees, trainer.history["logs"]


@pytest.mark.slow
@pytest.mark.parametrize("mesh", MESHES, ids=[f"{d}x{f}x{t}" for d, f, t in MESHES])
def test_sharded_training_equals_one_device(reference, mesh, tmp_path):
    name, make_task, config, losses, trees, logs = reference
    got_losses, got_trees, trainer = _run(make_task, config, mesh, tmp_path)
    loss_err, grad_err, param_err, where = _compare(got_losses, trainer.history["logs"], got_trees, losses, logs,
                                                    trees)
    print(f"{name} mesh {mesh}: rel err of losses {loss_err:.2e}, grad norms {grad_err:.2e}, "
          f"params/EMA (norm-relative) {param_err:.2e} at {where}")
    assert loss_err <= LOSS_BAR and grad_err <= GRAD_BAR and param_err <= PARAM_BAR
    if name == "vqvae":
        _check_codebook(trainer, got_trees[2], trees[2], trainer.history["logs"], logs, config.vqvae.l_mu)
    # params really are split: some leaf is sharded over fsdp or tensor when those axes exist
    if mesh[1] * mesh[2] > 1 and name != "vqvae":
        specs = {str(leaf.sharding.spec) for leaf in jax.tree.leaves(trainer.state.params)}
        assert any("fsdp" in s or "tensor" in s for s in specs), specs


def _misplaced_batch(batch, mesh):
    """A mis-sharded batch: the device that should hold the second data shard holds a copy of the first (as
    when two hosts read the same shard of the dataset). Every other row is where it belongs."""
    def place(x):
        x = np.asarray(x)
        sharding = parallel.fitted_batch_sharding(mesh, x.shape)
        rows = x.shape[0] // mesh.shape["data"]
        return jax.make_array_from_callback(
            x.shape, sharding, lambda index: x[(slice(0, rows),) + index[1:]] if index[0].start == rows else x[index])
    return jax.tree.map(place, {k: v for k, v in batch.items() if np.asarray(v).dtype.kind not in "OUS"})


@pytest.mark.slow
def test_the_comparison_catches_a_mis_sharded_batch(reference, tmp_path, monkeypatch):
    """The bars above fail on a real sharding bug, by orders of magnitude."""
    name, make_task, config, losses, trees, logs = reference
    if name != "prior":
        pytest.skip("one model is enough to show it")
    monkeypatch.setattr(parallel, "shard_batch", _misplaced_batch)
    got_losses, got_trees, trainer = _run(make_task, config, (8, 1, 1), tmp_path)
    loss_err, grad_err, param_err, where = _compare(got_losses, trainer.history["logs"], got_trees, losses, logs,
                                                    trees)
    print(f"mis-sharded batch: rel err of losses {loss_err:.2e}, grad norms {grad_err:.2e}, params/EMA "
          f"{param_err:.2e} at {where}")
    # Random tokens give every row a loss near log(l_bins), so the loss moves least; the gradients and the
    # updated params show the bug at once.
    assert loss_err > LOSS_BAR and grad_err > 1000 * GRAD_BAR and param_err > 1000 * PARAM_BAR


def _check_codebook(trainer, got, want, got_logs, want_logs, mu):
    """Every replica holds the same codebook statistics (one global array, all shards identical), restarts
    agree with one device, and EMA counts differ from one device by at most one assignment per code.

    Encoder outputs of a sharded run differ from one device's by float summation order (~5e-7 relative);
    an input vector whose two nearest codes are that close may pick the other one, which moves two codes'
    k_elem by (1 - mu). Measured: the trainable params agree to < 1e-6 all the same."""
    for leaf in jax.tree.leaves(trainer.state.extra):
        shards = [np.asarray(s.data) for s in leaf.addressable_shards]
        assert all(np.array_equal(shards[0], s) for s in shards[1:])
    for key in [k for k in want_logs[-1] if k.startswith("usage_l") or k.startswith("restarts_l")]:
        assert got_logs[-1][key] == want_logs[-1][key], key
    for level, block in want["codebook"]["bottleneck"].items():
        diff = np.abs(np.asarray(got["codebook"]["bottleneck"][level]["k_elem"]) - np.asarray(block["k_elem"]))
        print(f"  {level}: k_elem max diff {diff.max():.4f} on {(diff > 1e-5).sum()} codes")
        assert diff.max() <= (1 - mu) + 1e-5
