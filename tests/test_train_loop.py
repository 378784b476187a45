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


def _config(steps, mesh=MeshConfig(data=-1), log_every=5, checkpoint_every=5, **train):
    return loop.LoopConfig(optim=OptimConfig(lr=0.3, lr_warmup=2, ema_mu=0.9),
                           train=TrainConfig(**{"num_steps": steps, "log_every": log_every, "eval_every": 10,
                                                "checkpoint_every": checkpoint_every, "keep_checkpoints": 2, **train}),
                           mesh=mesh)


def _losses(history):
    return [entry["loss"] for entry in history["logs"]]


def test_learns_and_resumes_exactly(tmp_path):
    full = loop.Trainer(_ToyTask(), _config(20, log_every=1), str(tmp_path / "a")).run()
    assert _losses(full)[-1] < 0.1 * _losses(full)[0]

    part = loop.Trainer(_ToyTask(), _config(20, log_every=1), str(tmp_path / "b"))
    first = part.run(stop_after=10)
    assert part.manager.latest_step() == 10 and first["last_step"] == 10
    rest = loop.Trainer(_ToyTask(), _config(20, log_every=1), str(tmp_path / "b")).run()
    assert rest["logs"][0]["step"] == 11
    # bit-for-bit equal losses after the restart
    assert _losses(first) + _losses(rest) == _losses(full)


def test_sharded_mesh_gives_same_losses(tmp_path):
    """Through 6 Adam steps: the first loss sees identical params and data (summation order only); later
    ones see params that moved by lr-sized steps. Measured <= 2e-7 relative."""
    a = _losses(loop.Trainer(_ToyTask(), _config(6, MeshConfig(data=1), log_every=1), str(tmp_path / "one")).run())
    b = _losses(loop.Trainer(_ToyTask(), _config(6, MeshConfig(data=2, fsdp=2, tensor=2), log_every=1),
                             str(tmp_path / "m")).run())
    err = np.abs(np.subtract(a, b)) / np.abs(a)
    print(f"relative loss differences by step: {err}")
    assert err.max() <= 1e-5


def test_non_finite_step_is_skipped_and_counted(tmp_path):
    trainer = loop.Trainer(_ToyTask(poison_at=(3,)), _config(6, log_every=1), str(tmp_path))
    hist = trainer.run()
    assert np.isnan(_losses(hist)[3])
    assert int(trainer.state.skipped) == 1
    assert np.isfinite(np.asarray(jax.tree.leaves(trainer.state.params)[0])).all()


def test_too_many_non_finite_steps_stop_naming_the_last_good_checkpoint(tmp_path):
    """Steps 13.. are non-finite: checkpoints 5 and 10 are saved, 15 and 20 are not (they would hold the
    same weights under a later step). From the deferred save at 15 on, the counter is read every step, so the
    stop comes at 16; it waits for the saves and names 10."""
    trainer = loop.Trainer(_ToyTask(poison_at=range(12, 100)), _config(50, max_consecutive_skips=3), str(tmp_path))
    with pytest.raises(loop.TrainingDiverged) as info:
        trainer.run()
    message = str(info.value)
    print(message)
    assert "4 steps in a row (steps 13-16)" in message and "step 10" in message and "\n" not in message
    assert sorted(trainer.manager.all_steps()) == [5, 10]
    assert not list((tmp_path / "checkpoints").glob("*tmp*"))
    from ml_collections import ConfigDict
    from jukejax.checkpoint import load_variables, write_config
    write_config(str(tmp_path), ConfigDict({"model": "toy"}))  # what train.py writes beside the checkpoints
    _, variables, step = load_variables(str(tmp_path), use_ema=False)
    assert step == 10 and all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(variables))
    # the same command resumes from it (and stops again, as nothing changed)
    with pytest.raises(loop.TrainingDiverged, match="step 10"):
        loop.Trainer(_ToyTask(poison_at=range(12, 100)), _config(50, max_consecutive_skips=3), str(tmp_path)).run()


def test_a_run_whose_every_step_is_non_finite_fails(tmp_path):
    """Fewer steps than the limit, all non-finite: the run must not end as if it had trained."""
    trainer = loop.Trainer(_ToyTask(poison_at=range(100)), _config(6), str(tmp_path))
    with pytest.raises(loop.TrainingDiverged, match="ended on 6 non-finite step.* no checkpoint was saved"):
        trainer.run()
    assert trainer.manager.all_steps() == []


def test_a_non_finite_checkpoint_step_saves_after_the_next_good_step(tmp_path):
    trainer = loop.Trainer(_ToyTask(poison_at=(4,)), _config(8), str(tmp_path))  # step 5 is the bad one
    trainer.run()
    assert sorted(trainer.manager.all_steps()) == [6, 8]


def test_the_host_syncs_only_at_log_eval_and_checkpoint_steps(tmp_path, monkeypatch):
    """Metrics and the skip counters are fetched at log/eval/checkpoint steps only, and nothing else
    transfers implicitly (a `float(loss)` per step would raise under the transfer guard)."""
    fetched = []
    real = loop._fetch
    monkeypatch.setattr(loop, "_fetch", lambda tree: fetched.append(1) or real(tree))
    trainer = loop.Trainer(_ToyTask(), _config(12, log_every=4, checkpoint_every=12, eval_every=100),
                           str(tmp_path))
    with jax.transfer_guard_device_to_host("disallow"):
        history = trainer.run()
    assert [entry["step"] for entry in history["logs"]] == [4, 8, 12]
    # start step, then per sync step (4, 8, 12): skip counter + metrics, + eval at 12, + the save's step;
    # and the end-of-run skip check
    assert len(fetched) <= 1 + 3 * 2 + 2 + 1 + 1, len(fetched)


def test_profile_writes_a_trace_of_the_chosen_steps(tmp_path):
    loop.Trainer(_ToyTask(), _config(6, profile_start=2, profile_stop=3), str(tmp_path)).run()
    assert list((tmp_path / "profile").rglob("*.xplane.pb"))


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


def test_load_variables_restores_into_the_target_shardings_and_dtype(tmp_path):
    """Each device reads its own shard in the target dtype: nothing is gathered on one device."""
    from jax.sharding import NamedSharding, PartitionSpec as P
    from ml_collections import ConfigDict
    from jukejax.checkpoint import load_variables, save_variables
    w = np.arange(32, dtype=np.float32).reshape(8, 4)
    save_variables(str(tmp_path), ConfigDict({"model": "toy"}), {"params": {"w": w}, "stats": {"n": np.ones(3)}})
    mesh = jax.make_mesh((8,), ("data",))
    target = {"params": {"w": jax.ShapeDtypeStruct((8, 4), jnp.bfloat16, sharding=NamedSharding(mesh, P("data")))},
              "stats": {"n": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=NamedSharding(mesh, P()))}}
    _, got, step = load_variables(str(tmp_path), target=target)
    assert step == 0 and got["params"]["w"].dtype == jnp.bfloat16
    assert got["params"]["w"].sharding.spec == P("data")
    assert {s.data.shape for s in got["params"]["w"].addressable_shards} == {(1, 4)}
    np.testing.assert_array_equal(np.asarray(got["params"]["w"], np.float32), w)
    np.testing.assert_array_equal(np.asarray(got["stats"]["n"]), np.ones(3))


# ------------------------------------------------------------------------------------------------------------
# A prior's layer stacks are restored in whichever layout the checkpoint has and regrouped as the model runs
# them: a run resumed from the earlier period-scanned layout (`_attn_period`, the only scanned layout before
# repeated units were scanned for any depth) continues exactly.

_DEPTH = 6
_LEGACY = {"_attn_period": [[0, 3], [1, 4], [2, 5]]}  # _attn_mods_j holds layers r * 3 + j
_GROUPED = {"_attn_mods_0": 0, "_attn_scan_1": [[1, 3], [2, 4]], "_attn_mods_5": 5}  # as a scan of (a, b) x 2


def _stack(layout, leaf):
    """{name: leaf(d) or {_attn_mods_j: stack of leaf(d) over the repeats}} for a layout table."""
    out = {}
    for name, spec in layout.items():
        if isinstance(spec, int):
            out[name] = leaf(spec)
        else:
            out[name] = {f"_attn_mods_{j}": jax.tree.map(lambda *xs: jnp.stack(xs), *[leaf(d) for d in layers])
                         for j, layers in enumerate(spec)}
    return out


class _LayerStackTask(_ToyTask):
    """The toy regression with its weight split over six "layers", stored in `layout`."""

    def __init__(self, layout):
        super().__init__()
        self.layout = layout

    def init_variables(self, rng, batch):
        return {"params": {"prior": {"transformer": _stack(self.layout, lambda d: {"w": jnp.full((4,), 0.01 * d)})}}}

    def loss_fn(self, params, extra, batch, rng, train):
        from jukejax.prior.transformer import unstack_layers
        layers = unstack_layers(params["prior"]["transformer"])
        w = sum((d + 1) * layers[f"_attn_mods_{d}"]["w"] for d in range(_DEPTH)) / _DEPTH
        loss = jnp.mean((batch["x"] @ w[:, None] - batch["y"]) ** 2)
        return loss, (extra, {"mse": loss})


def test_resumes_a_checkpoint_with_another_layer_stack_layout(tmp_path):
    full = loop.Trainer(_LayerStackTask(_GROUPED), _config(12, log_every=1), str(tmp_path / "a")).run()
    old = loop.Trainer(_LayerStackTask(_LEGACY), _config(12, log_every=1), str(tmp_path / "b"))
    first = old.run(stop_after=6)
    assert old.manager.latest_step() == 6
    new = loop.Trainer(_LayerStackTask(_GROUPED), _config(12, log_every=1), str(tmp_path / "b"))
    rest = new.run()
    assert rest["logs"][0]["step"] == 7
    np.testing.assert_allclose(_losses(first) + _losses(rest), _losses(full), rtol=1e-6)
    state = new.restore(next(_Iter(0)), None)
    assert set(state.params["prior"]["transformer"]) == set(_GROUPED)
    assert set(state.opt_state[1][0].mu["prior"]["transformer"]) == set(_GROUPED)


def test_init_from_a_model_with_another_layer_stack_layout(tmp_path):
    from ml_collections import ConfigDict
    from jukejax.checkpoint import save_variables
    layer = lambda d: {"w": jnp.arange(4.0) + 10 * d}  # noqa: E731
    save_variables(str(tmp_path / "old"), ConfigDict({"model": "toy"}),
                   {"params": {"prior": {"transformer": _stack(_LEGACY, layer)}}})
    trainer = loop.Trainer(_LayerStackTask(_GROUPED), _config(1, init_from=str(tmp_path / "old")),
                           str(tmp_path / "new"))
    got = trainer.init(next(_Iter(0))).params["prior"]["transformer"]
    want = _stack(_GROUPED, layer)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), got, want)
