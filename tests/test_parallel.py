import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jukejax import parallel
from jukejax.config import ConfigError, MeshConfig, build


def test_eight_fake_devices():
    assert jax.device_count() == 8


@pytest.mark.parametrize("sizes,expected", [
    (dict(data=-1), (8, 1, 1)),
    (dict(data=2, fsdp=4), (2, 4, 1)),
    (dict(data=2, fsdp=2, tensor=2), (2, 2, 2)),
    (dict(data=2, fsdp=-1, tensor=2), (2, 2, 2)),
])
def test_mesh_shapes(sizes, expected):
    mesh = parallel.make_mesh(build(MeshConfig, sizes, "mesh"))
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert tuple(mesh.shape[a] for a in mesh.axis_names) == expected


def test_mesh_on_subset_of_devices():
    assert parallel.make_mesh(MeshConfig(data=1), devices=jax.devices()[:1]).size == 1
    assert parallel.make_mesh(MeshConfig(data=2, fsdp=1, tensor=1)).size == 2


@pytest.mark.parametrize("sizes,match", [
    (dict(data=16), "but only 8 devices"),
    (dict(data=3, fsdp=-1), "cannot be split"),
    (dict(data=-1, fsdp=-1), "at most one axis"),
    (dict(data=0), "positive or -1"),
    (dict(data="two"), "config.mesh.data"),
    (dict(datta=2), "unknown field"),
])
def test_mesh_errors_name_the_field(sizes, match):
    with pytest.raises(ConfigError, match=match):
        parallel.make_mesh(build(MeshConfig, sizes, "mesh"))


def test_shard_batch_splits_leading_axis():
    mesh = parallel.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    batch = {"audio": np.arange(8 * 6, dtype=np.float32).reshape(8, 6, 1), "artist": np.arange(8),
             "lyrics": np.array(["a"] * 8, dtype=object)}
    placed = parallel.shard_batch(batch, mesh)
    audio = placed["audio"]
    np.testing.assert_array_equal(np.asarray(audio), batch["audio"])
    # batch split 4 ways (data x fsdp), replicated over tensor
    assert {s.data.shape for s in audio.addressable_shards} == {(2, 6, 1)}
    assert "lyrics" not in placed  # text stays on the host


class _Tiny(nn.Module):
    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.with_logical_partitioning(nn.initializers.ones, ("embed", "mlp")), (8, 4))
        b = self.param("b", nn.initializers.zeros, (4,))
        return x @ w + b


def test_param_shardings_follow_logical_axes_and_bytes():
    mesh = parallel.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    model = _Tiny()
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 8)))["params"]
    shardings = parallel.param_shardings(abstract, mesh)
    assert shardings["w"].spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert shardings["b"].is_fully_replicated
    # w: 8x4 fp32 split 2x2 -> 32 B; b replicated -> 16 B
    assert parallel.bytes_per_device(abstract, shardings) == 8 * 4 * 4 // 4 + 16
    params = parallel.shard_params(model.init(jax.random.key(0), jnp.ones((1, 8)))["params"], mesh)
    assert params["w"].sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    out = jax.jit(model.apply)({"params": params}, jnp.ones((2, 8)))
    np.testing.assert_allclose(np.asarray(out), 8.0)


def test_indivisible_axes_are_dropped():
    mesh = parallel.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    spec = parallel._fit_spec(jax.sharding.PartitionSpec("fsdp", "tensor"), (3, 4), mesh)
    assert spec == jax.sharding.PartitionSpec(None, "tensor")


def test_replicated_params_listed_with_their_bytes():
    """A mesh axis that does not divide a dimension leaves the param whole on every device: the memory plan
    says which params and how many bytes, instead of replicating them silently."""
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            init = nn.with_logical_partitioning(nn.initializers.zeros, ("embed", "mlp"))
            a = self.param("a", init, (12, 16), jnp.float32)      # 12 = 3 x 4: fsdp=4 divides it
            b = self.param("b", init, (10, 16), jnp.float32)      # 10: fsdp=4 does not
            return x @ a + x[:, :10] @ b
    boxed = jax.eval_shape(lambda: Net().init(jax.random.key(0), jnp.zeros((1, 12))))["params"]
    plan = parallel.memory_plan(boxed, MeshConfig(data=1, fsdp=4, tensor=1))
    assert plan["replicated_params"] == [{"param": "['b']", "shape": [10, 16], "dropped": {0: ["fsdp"]},
                                          "bytes": 10 * 16 * 4}]
    assert plan["replicated_params_bytes_per_device"] == 640
    assert plan["params_bytes_per_device"] == 12 * 16 * 4 // 4 + 640
    assert parallel.replicated_params(boxed, jax.sharding.AbstractMesh((1, 2, 1), parallel.MESH_AXES)) == []


def test_activations_keep_the_batch_split_at_block_boundaries():
    mesh = parallel.make_mesh(MeshConfig(data=2, fsdp=4, tensor=1))
    x = jax.device_put(jnp.ones((8, 5, 6)), parallel.replicated(mesh))
    with jax.set_mesh(mesh):
        y = jax.jit(lambda x: parallel.constrain_activations(x * 2))(x)
    assert y.sharding.spec[0] == ("data", "fsdp")
    odd = jax.jit(parallel.constrain_activations)(jnp.ones((3, 4)))  # no mesh: unchanged, no error
    assert odd.shape == (3, 4)
    with jax.set_mesh(mesh):  # 3 rows: no batch axis divides them, so they stay whole
        spec = jax.jit(parallel.constrain_activations)(jnp.ones((3, 4))).sharding.spec
    assert tuple(spec)[:1] in ((), (None,))
