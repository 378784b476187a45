"""The shared training loop on a toy task: learning, skipping non-finite steps, exact resume."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jukejax.config import MeshConfig, OptimConfig, TrainConfig
from jukejax.train import loop, state as state_lib


class _Iter:
    """A deterministic endless batch stream with Grain-like get_state/set_state."""

    def __init__(self, seed, batch_size=8, poison_at=()):
        self.seed, self.i, self.batch_size, self.poison_at = seed, 0, batch_size, set(poison_at)

    def __iter__(self):
        return self

    def __next__(self):
        rng = np.random.default_rng([self.seed, self.i])
        x = rng.normal(size=(self.batch_size, 4)).astype(np.float32)
        y = x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32)[:, None]
        if self.i in self.poison_at:
            x[0, 0] = np.nan
        self.i += 1
        return {"x": x, "y": y.astype(np.float32)}

    def get_state(self):
        return json.dumps({"i": self.i}).encode()

    def set_state(self, state):
        self.i = json.loads(state)["i"]


class _ToyTask:
    name = "toy"

    def __init__(self, poison_at=()):
        self.model = nn.Dense(1, kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed", "mlp")))
        self.poison_at = poison_at

    def init_variables(self, rng, batch):
        return self.model.init(rng, batch["x"])

    def loss_fn(self, params, extra, batch, rng, train):
        pred = self.model.apply({"params": params}, batch["x"])
        loss = jnp.mean((pred - batch["y"]) ** 2)
        return loss, (extra, {"mse": loss})

    def train_iterator(self, seed):
        return _Iter(seed, poison_at=self.poison_at)

    def eval_batches(self):
        return [next(_Iter(999))]

    def metadata(self):
        return {"task": "toy"}

    def summaries(self, writer, step, params, extra, batch):
        pass


def _config(steps, mesh=MeshConfig(data=-1)):
    return loop.LoopConfig(optim=OptimConfig(lr=0.3, lr_warmup=2, ema_mu=0.9),
                           train=TrainConfig(num_steps=steps, log_every=5, eval_every=10, checkpoint_every=5,
                                             keep_checkpoints=2), mesh=mesh)


def test_learns_and_resumes_exactly(tmp_path):
    full = loop.Trainer(_ToyTask(), _config(20), str(tmp_path / "a")).run()
    assert full["loss"][-1] < 0.1 * full["loss"][0]

    part = loop.Trainer(_ToyTask(), _config(20), str(tmp_path / "b"))
    first = part.run(stop_after=10)
    assert part.manager.latest_step() == 10
    rest = loop.Trainer(_ToyTask(), _config(20), str(tmp_path / "b")).run()
    assert rest["step"][0] == 11
    # bit-for-bit equal losses after the restart
    assert first["loss"] + rest["loss"] == full["loss"]


def test_sharded_mesh_gives_same_losses(tmp_path):
    a = loop.Trainer(_ToyTask(), _config(6, MeshConfig(data=1)), str(tmp_path / "one")).run()["loss"]
    b = loop.Trainer(_ToyTask(), _config(6, MeshConfig(data=2, fsdp=2, tensor=2)), str(tmp_path / "m")).run()["loss"]
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_non_finite_step_is_skipped_and_counted(tmp_path):
    trainer = loop.Trainer(_ToyTask(poison_at=(3,)), _config(6), str(tmp_path))
    hist = trainer.run()
    assert np.isnan(hist["loss"][3])
    assert int(trainer.state.skipped) == 1
    assert np.isfinite(np.asarray(jax.tree.leaves(trainer.state.params)[0])).all()


def test_too_many_non_finite_steps_stop_with_a_message(tmp_path):
    trainer = loop.Trainer(_ToyTask(poison_at=range(100)), _config(50), str(tmp_path))
    with pytest.raises(FloatingPointError, match="in a row had a non-finite"):
        trainer.run(max_consecutive_skips=3)


def test_unwritable_workdir_fails_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="not writable"):
        loop.check_workdir(str(blocker / "sub"))


def test_learning_rate_schedule():
    sched = state_lib.learning_rate(OptimConfig(lr=1.0, lr_warmup=10, lr_use_linear_decay=True,
                                                lr_start_linear_decay=20, lr_decay=10))
    np.testing.assert_allclose([float(sched(s)) for s in (0, 5, 10, 20, 25, 30, 40)],
                               [0, 0.5, 1, 1, 0.5, 0, 0])
