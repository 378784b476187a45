"""Sampling with the batch sharded over the mesh's data axis (and params over fsdp/tensor) gives the same
tokens, with the same keys, as on one device."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jukejax import parallel
from jukejax.config import MeshConfig
from jukejax.prior.autoregressive import ConditionalAutoregressive
from jukejax.prior.config import AutoregressiveConfig
from jukejax.sample import decode

CONFIG = AutoregressiveConfig(n_ctx=64, bins=32, width=32, depth=3, heads=2, attn_order=2, blocks=8,
                              x_cond=True, y_cond=True)
N = 8


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    model = ConditionalAutoregressive(CONFIG)
    x_cond = rng.normal(size=(N, CONFIG.n_ctx, CONFIG.width)).astype(np.float32) * 0.1
    y_cond = rng.normal(size=(N, 1, CONFIG.width)).astype(np.float32) * 0.1
    prefix = rng.integers(0, CONFIG.bins, (N, CONFIG.n_ctx)).astype(np.int32)
    variables = model.init(jax.random.key(0), jnp.asarray(prefix), jnp.asarray(x_cond), jnp.asarray(y_cond))
    return variables["params"], prefix, x_cond, y_cond


def _sample(params, prefix, x_cond, y_cond, mesh=None):
    if mesh is not None:
        params = parallel.shard_params(params, mesh)
        placed = parallel.shard_batch({"prefix": prefix, "x_cond": x_cond, "y_cond": y_cond}, mesh)
        prefix, x_cond, y_cond = placed["prefix"], placed["x_cond"], placed["y_cond"]
    else:
        params = nn.unbox(params)
    tokens, _ = decode.sample_window(params, CONFIG, jax.random.key(7), prefix, 13, x_cond=x_cond,
                                     y_cond=y_cond, temperature=0.9)
    return tokens


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (2, 2, 2), (4, 2, 1)])
def test_sharded_sampling_equals_one_device(inputs, mesh_shape):
    params, prefix, x_cond, y_cond = inputs
    want = np.asarray(_sample(params, prefix, x_cond, y_cond))
    mesh = parallel.make_mesh(MeshConfig(*mesh_shape))
    with jax.set_mesh(mesh):
        got = _sample(params, prefix, x_cond, y_cond, mesh)
    assert {s.data.shape[0] for s in got.addressable_shards} == {N // (mesh_shape[0] * mesh_shape[1])}
    np.testing.assert_array_equal(np.asarray(got), want)
    assert (want[:, :13] == prefix[:, :13]).all() and not (want[:, 13:] == prefix[:, 13:]).all()
