"""The EMA codebook (initialisation, EMA step, dead-code restarts, straight-through), the VQ-VAE's training
call and its parameter count, checked against numpy restatements of openai/jukebox's `bottleneck.py`."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import tiny_configs

from jukejax import presets
from jukejax.config import VQVAEConfig, build
from jukejax.vqvae import VQVAE, BottleneckBlock, count_params

L_BINS, WIDTH, MU = 16, 4, 0.99
BLOCK = BottleneckBlock(L_BINS, WIDTH, MU)


def _state(k, k_sum, k_elem, initialized=True):
    return {"codebook": {"k": jnp.asarray(k, jnp.float32), "k_sum": jnp.asarray(k_sum, jnp.float32),
                         "k_elem": jnp.asarray(k_elem, jnp.float32), "initialized": jnp.asarray(initialized)}}


def _train_step(variables, x, seed=0):
    (codes, x_q, commit, metrics), updates = BLOCK.apply(
        variables, x, train=True, rngs={"codebook": jax.random.key(seed)}, mutable=["codebook"])
    return codes, x_q, commit, metrics, jax.tree.map(np.asarray, updates["codebook"])


def _np_codes(x, k):
    distance = (x ** 2).sum(-1, keepdims=True) - 2 * x @ k.T + (k ** 2).sum(-1)[None]
    return distance.argmin(-1), distance.min(-1)


def _row_matches(rows, x, atol):
    """For each row, whether it equals (within atol) some row of x."""
    return np.array([np.any(np.all(np.abs(x - r) <= atol, axis=-1)) for r in rows])


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


def test_init_leaves_the_codebook_uninitialised():
    variables = BLOCK.init(jax.random.key(0), jnp.ones((2, 8, WIDTH)), train=True)
    assert not bool(variables["codebook"]["initialized"])
    assert float(jnp.abs(variables["codebook"]["k"]).max()) == 0.0


@pytest.mark.parametrize("rows", [64, 6])   # more rows than codes, and fewer (tiled + noise)
def test_first_batch_initialises_codebook_from_encoder_outputs(rows, rng):
    x = rng.standard_normal((2, rows // 2, WIDTH)).astype(np.float32)
    flat = x.reshape(-1, WIDTH)
    variables = BLOCK.init(jax.random.key(0), jnp.asarray(x))
    codes, _, _, _, new = _train_step(variables, x)
    assert bool(new["initialized"])
    codes = np.asarray(codes).reshape(-1)
    counts = np.bincount(codes, minlength=L_BINS)
    # k_elem started at 1 and k_sum at k0 (original `init_k`); undo the EMA step to recover k0.
    np.testing.assert_allclose(new["k_elem"], MU + (1 - MU) * counts, rtol=1e-6)
    batch_sum = np.zeros((L_BINS, WIDTH), np.float32)
    np.add.at(batch_sum, codes, flat)
    k0 = (new["k_sum"] - (1 - MU) * batch_sum) / MU
    noise_std = 0.01 / np.sqrt(WIDTH)
    atol = 1e-5 if rows >= L_BINS else 6 * noise_std
    assert _row_matches(k0, flat, atol).all(), "initial codes must be encoder outputs of the first batch"
    if rows >= L_BINS:
        assert len({tuple(r) for r in np.round(k0, 4)}) == L_BINS, "drawn without replacement"
    # This batch was quantised with the freshly initialised codebook.
    np.testing.assert_array_equal(codes, _np_codes(flat, k0)[0])


def test_ema_update_matches_numpy(rng):
    k = rng.standard_normal((L_BINS, WIDTH)).astype(np.float32)
    k_elem = rng.uniform(0.5, 3.0, L_BINS).astype(np.float32)     # some codes fall below the threshold
    k_sum = k * k_elem[:, None]
    x = rng.standard_normal((4, 16, WIDTH)).astype(np.float32)
    flat = x.reshape(-1, WIDTH)
    codes, x_q, commit, metrics, new = _train_step(_state(k, k_sum, k_elem), x)

    np_codes, min_dist = _np_codes(flat, k)
    np.testing.assert_array_equal(np.asarray(codes).reshape(-1), np_codes)
    onehot = np.eye(L_BINS, dtype=np.float64)[np_codes]                     # (M, l_bins)
    want_sum = MU * k_sum + (1 - MU) * (onehot.T @ flat)
    want_elem = MU * k_elem + (1 - MU) * onehot.sum(0)
    np.testing.assert_allclose(new["k_sum"], want_sum, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new["k_elem"], want_elem, rtol=1e-6)
    used = want_elem >= 1.0
    assert 0 < used.sum() < L_BINS
    np.testing.assert_allclose(new["k"][used], want_sum[used] / want_elem[used, None], rtol=1e-5, atol=1e-6)
    assert _row_matches(new["k"][~used], flat, 1e-6).all(), "dead codes restart at encoder outputs"

    prob = onehot.sum(0) / onehot.sum()
    np.testing.assert_allclose(metrics["entropy"], -(prob * np.log(prob + 1e-8)).sum(), rtol=1e-5)
    assert float(metrics["used_curr"]) == (onehot.sum(0) >= 1.0).sum()
    assert float(metrics["usage"]) == used.sum()
    np.testing.assert_allclose(metrics["dk"], np.linalg.norm(new["k"] - k) / np.sqrt(k.size), rtol=1e-5)
    np.testing.assert_allclose(metrics["fit"], min_dist.mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["pn"], np.linalg.norm(flat - flat.mean()) / np.sqrt(flat.size), rtol=1e-5)
    np.testing.assert_allclose(commit, ((k[np_codes] - flat) ** 2).mean(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(x_q).reshape(-1, WIDTH), k[np_codes], atol=1e-6)


def test_dead_codes_restart_and_get_used(rng):
    k = rng.standard_normal((L_BINS, WIDTH)).astype(np.float32)
    ones = np.ones(L_BINS, np.float32)                  # every code just at the revival threshold
    # A batch of 8 vectors (fewer than l_bins: tiled with noise) that all sit near codes 0 and 1.
    flat = np.concatenate([k[0] + 0.1 * rng.standard_normal((4, WIDTH)),
                           k[1] + 0.1 * rng.standard_normal((4, WIDTH))]).astype(np.float32)
    x = flat.reshape(2, 4, WIDTH)
    codes, _, _, metrics, new = _train_step(_state(k, k * ones[:, None], ones), x, seed=1)
    assert set(np.unique(codes)) == {0, 1}
    assert float(metrics["used_curr"]) == 2 and float(metrics["usage"]) == 2
    noise_std = 0.01 / np.sqrt(WIDTH)
    assert _row_matches(new["k"][2:], flat, 6 * noise_std).all(), "dead codes restart near encoder outputs"
    assert not _row_matches(new["k"][2:], flat, 1e-7).any(), "restarts from a tiled batch carry noise"
    # Next step on the same batch: the restarted codes now take over most vectors.
    codes2, _, _, metrics2, _ = _train_step({"codebook": new}, x, seed=2)
    assert len(np.unique(codes2)) > 2
    assert float(metrics2["used_curr"]) > 2


def test_straight_through_gradient_and_commit_loss(rng):
    k = rng.standard_normal((L_BINS, WIDTH)).astype(np.float32)
    variables = _state(k, k, np.ones(L_BINS))
    x = jnp.asarray(rng.standard_normal((2, 8, WIDTH)), jnp.float32)
    w = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)

    def through(x, train):
        (_, x_q, commit, _), _ = BLOCK.apply(variables, x, train=train, rngs={"codebook": jax.random.key(0)},
                                            mutable=["codebook"])
        return jnp.sum(w * x_q), commit
    grad_train = jax.grad(lambda x: through(x, True)[0])(x)
    np.testing.assert_allclose(grad_train, w, atol=1e-7)          # d x_q / d x = identity
    grad_eval = jax.grad(lambda x: through(x, False)[0])(x)
    assert float(jnp.abs(grad_eval).max()) == 0.0                  # eval output is detached
    grad_commit = jax.grad(lambda x: through(x, True)[1])(x)
    x_d = k[_np_codes(np.asarray(x).reshape(-1, WIDTH), k)[0]].reshape(x.shape)
    np.testing.assert_allclose(grad_commit, 2 * (np.asarray(x) - x_d) / x.size, rtol=1e-5, atol=1e-8)


def test_eval_leaves_codebook_unchanged(rng):
    k = rng.standard_normal((L_BINS, WIDTH)).astype(np.float32)
    variables = _state(k, 2 * k, 2 * np.ones(L_BINS))
    x = rng.standard_normal((2, 8, WIDTH)).astype(np.float32)
    (codes, x_q, _, metrics), updates = BLOCK.apply(variables, x, train=False, mutable=["codebook"])
    jax.tree.map(np.testing.assert_array_equal, updates, variables)
    assert set(metrics) == {"fit", "pn"}
    want = _np_codes(x.reshape(-1, WIDTH), k)[0]
    np.testing.assert_array_equal(np.asarray(codes).reshape(-1), want)
    np.testing.assert_allclose(np.asarray(x_q).reshape(-1, WIDTH), k[want], atol=1e-6)
    np.testing.assert_array_equal(BLOCK.apply(variables, x, method=BLOCK.encode), codes)


def test_batch_statistics_are_global_under_data_parallel_sharding(rng):
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    k = rng.standard_normal((L_BINS, WIDTH)).astype(np.float32)
    k_elem = rng.uniform(0.5, 3.0, L_BINS).astype(np.float32)
    variables = _state(k, k * k_elem[:, None], k_elem)
    x = rng.standard_normal((8, 16, WIDTH)).astype(np.float32)
    step = jax.jit(lambda v, x: _train_step_traced(v, x))
    single = step(variables, jnp.asarray(x))
    sharded = step(variables, jax.device_put(x, NamedSharding(mesh, P("data"))))
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(sharded)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def _train_step_traced(variables, x):
    (codes, _, commit, metrics), updates = BLOCK.apply(
        variables, x, train=True, rngs={"codebook": jax.random.key(3)}, mutable=["codebook"])
    return codes, commit, metrics, updates


def test_released_vqvae_param_count():
    config = build(VQVAEConfig, presets.vqvae().vqvae, "vqvae")
    n = count_params(config)
    assert n == 1_485_763, f"{n} trainable params, the released VQ-VAE has 1,485,763"


@pytest.mark.slow  # compiles the VQ-VAE training call
def test_vqvae_training_call_tiny():
    config = build(VQVAEConfig, tiny_configs.vqvae().vqvae, "vqvae")
    model = VQVAE(config)
    x = jnp.asarray(np.random.default_rng(1).uniform(-0.5, 0.5, (2, 512, 1)), jnp.float32)
    variables = model.init({"params": jax.random.key(0)}, x, train=True)
    assert not any(bool(v["initialized"]) for v in variables["codebook"]["bottleneck"].values())

    def loss(params, codebook):
        out, updates = model.apply({"params": params, "codebook": codebook}, x, train=True,
                                   rngs={"codebook": jax.random.key(1)}, mutable=["codebook"])
        recon = sum(jnp.mean((x_out - x) ** 2) for x_out in out["x_outs"])
        return recon + config.commit * sum(out["commit_losses"]), (out, updates)
    params = nn.unbox(variables["params"])        # conv params are boxed with logical axis names
    (_, (out, updates)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, variables["codebook"])
    levels = config.levels
    assert [o.shape for o in out["x_outs"]] == [x.shape] * levels
    assert [z.shape for z in out["zs"]] == [(2, 512 // hop) for hop in config.hop_lengths]
    assert set(out["metrics"]) == {"fit", "pn", "entropy", "used_curr", "usage", "dk"}
    assert all(v.shape == (levels,) for v in out["metrics"].values())
    assert all(bool(v["initialized"]) for v in updates["codebook"]["bottleneck"].values())
    # The reconstruction loss reaches every encoder through the straight-through estimator.
    for level in range(levels):
        g = grads[f"encoders_{level}"]["level_blocks_0"]["model_0_0"]["kernel"]
        assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0
