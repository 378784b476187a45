"""jukejax.vqvae.losses against the original's formulas (openai/jukebox `audio_utils.py`, `vqvae.py`).

The torch references below are written from the original's definitions: torch.stft magnitudes (its
`spec`), `norm`, `squeeze`, `_loss_fn` and the per-level accumulation of `VQVAE.forward`.
"""
import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jukejax.config import VQVAEConfig
from jukejax.vqvae import losses

T = 2400  # > n_fft // 2 = 1024 for the largest STFT, and not a multiple of any hop
CONFIG = VQVAEConfig(linf_k=64, lmix_l1=0.5, spectral=1.0)
BANDWIDTH = losses.Bandwidth(l1=0.3, l2=0.15, spec=40.0)
STFT_SETTINGS = [(2048, 240, 1200), (1024, 120, 600), (512, 50, 240), (2048, 256, 1536),
                 (512, 64, 241)]  # the last: odd n_fft - window_size, so the window's central padding is lopsided


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="torch is needed for the *_vs_torch parity checks")


def _max_rel_err(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


# --- torch references, following the original's formulas -------------------------------------------------

def t_spec(torch, x, setting):
    n_fft, hop_length, window_size = setting
    if x.dim() == 3:  # squeeze
        x = x.mean(-1)
    s = torch.stft(x, n_fft, hop_length, win_length=window_size,
                   window=torch.hann_window(window_size, dtype=x.dtype), center=True, pad_mode="reflect",
                   normalized=False, onesided=True, return_complex=True)
    return torch.view_as_real(s).norm(p=2, dim=-1)  # torch 1.4 returned (..., 2); spec() took this norm


def t_norm(x):
    return (x.reshape(x.shape[0], -1) ** 2).sum(dim=-1).sqrt()


def t_spectral(torch, x_in, x_out, setting):
    return t_norm(t_spec(torch, x_in, setting) - t_spec(torch, x_out, setting))


def t_multispectral(torch, x_in, x_out, cfg):
    settings = list(zip(cfg.multispec_loss_n_fft, cfg.multispec_loss_hop_length, cfg.multispec_loss_window_size))
    return sum(t_spectral(torch, x_in, x_out, s) for s in settings) / len(settings)


def t_spectral_convergence(torch, x_in, x_out, cfg, epsilon=2e-3):
    s_in = t_spec(torch, x_in, (cfg.n_fft, cfg.hop_length, cfg.window_size))
    s_out = t_spec(torch, x_out, (cfg.n_fft, cfg.hop_length, cfg.window_size))
    gt_norm, residual_norm = t_norm(s_in), t_norm(s_in - s_out)
    return residual_norm * (gt_norm > epsilon).float() / torch.clamp(gt_norm, min=epsilon)


def t_loss_fn(torch, name, x_target, x_pred, bw, cfg):
    if name == "l1":
        return torch.mean(torch.abs(x_pred - x_target)) / bw.l1
    if name == "l2":
        return torch.mean((x_pred - x_target) ** 2) / bw.l2
    if name == "linf":
        residual = ((x_pred - x_target) ** 2).reshape(x_target.shape[0], -1)
        values, _ = torch.topk(residual, cfg.linf_k, dim=1)
        return torch.mean(values) / bw.l2
    loss = 0.0
    if cfg.lmix_l1:
        loss += cfg.lmix_l1 * t_loss_fn(torch, "l1", x_target, x_pred, bw, cfg)
    if cfg.lmix_l2:
        loss += cfg.lmix_l2 * t_loss_fn(torch, "l2", x_target, x_pred, bw, cfg)
    if cfg.lmix_linf:
        loss += cfg.lmix_linf * t_loss_fn(torch, "linf", x_target, x_pred, bw, cfg)
    return loss


def t_vqvae_loss(torch, x, x_outs, commit_losses, bw, cfg):
    metrics, recons, spec_loss, multispec = {}, 0.0, 0.0, 0.0
    single = (cfg.n_fft, cfg.hop_length, cfg.window_size)
    for level in reversed(range(len(x_outs))):
        x_out = x_outs[level]
        r = t_loss_fn(torch, cfg.loss_fn, x, x_out, bw, cfg)
        s = torch.mean(t_spectral(torch, x, x_out, single) / bw.spec)
        m = torch.mean(t_multispectral(torch, x, x_out, cfg) / bw.spec)
        metrics[f"recons_loss_l{level + 1}"], metrics[f"spectral_loss_l{level + 1}"] = r, s
        metrics[f"multispectral_loss_l{level + 1}"] = m
        recons, spec_loss, multispec = recons + r, spec_loss + s, multispec + m
    commit = sum(commit_losses)
    loss = recons + cfg.spectral * spec_loss + cfg.multispectral * multispec + cfg.commit * commit
    metrics.update(recons_loss=recons, spectral_loss=spec_loss, multispectral_loss=multispec, commit_loss=commit,
                   spectral_convergence=torch.mean(t_spectral_convergence(torch, x, x_out, cfg)),
                   l2_loss=t_loss_fn(torch, "l2", x, x_out, bw, cfg), l1_loss=t_loss_fn(torch, "l1", x, x_out, bw, cfg),
                   linf_loss=t_loss_fn(torch, "linf", x, x_out, bw, cfg))
    return loss, metrics


def _audio(seed, shape, scale=0.3):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


# --- tests ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("setting", STFT_SETTINGS, ids=lambda s: "-".join(map(str, s)))
def test_stft_magnitude_vs_torch(torch, setting):
    x = _audio(0, (2, T))
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(losses.stft_magnitude(jnp.asarray(x), *setting))
    ref = t_spec(torch, torch.from_numpy(x), setting).numpy().transpose(0, 2, 1)  # -> (N, frames, bins)
    assert ours.shape == ref.shape == (2, losses.num_frames(T, setting[0], setting[1]), setting[0] // 2 + 1)
    assert _max_rel_err(ours, ref) <= 1e-5


def test_spectral_losses_vs_torch(torch):
    x = _audio(1, (3, T, 2))
    x[2] = 0.0  # silent target: masked out of spectral convergence
    x_hat = x + _audio(2, (3, T, 2), scale=0.05)
    tx, tx_hat = torch.from_numpy(x), torch.from_numpy(x_hat)
    single = (CONFIG.n_fft, CONFIG.hop_length, CONFIG.window_size)
    with jax.default_matmul_precision("highest"):
        spectral = losses.spectral_loss(x, x_hat, BANDWIDTH, CONFIG)
        multispectral = losses.multispectral_loss(x, x_hat, BANDWIDTH, CONFIG)
        convergence = losses.spectral_convergence(x, x_hat, CONFIG)
    ref_spectral = torch.mean(t_spectral(torch, tx, tx_hat, single) / BANDWIDTH.spec).item()
    ref_multispectral = torch.mean(t_multispectral(torch, tx, tx_hat, CONFIG) / BANDWIDTH.spec).item()
    ref_convergence = t_spectral_convergence(torch, tx, tx_hat, CONFIG).numpy()
    assert abs(float(spectral) / ref_spectral - 1) <= 1e-5
    assert abs(float(multispectral) / ref_multispectral - 1) <= 1e-5
    assert convergence[2] == 0.0 and ref_convergence[2] == 0.0
    assert _max_rel_err(convergence, ref_convergence) <= 1e-5
    db = losses.ratio_to_db(convergence[:2])
    np.testing.assert_allclose(db, 20 * np.log10(ref_convergence[:2]), atol=1e-4)
    assert float(losses.ratio_to_db(jnp.float32(0.0))) == pytest.approx(-200.0)


@pytest.mark.parametrize("name", ["l1", "l2", "linf", "lmix"])
def test_loss_fn_vs_torch(torch, name):
    x, x_hat = _audio(3, (2, T, 1)), _audio(4, (2, T, 1))
    ours = float(losses.loss_fn(name, x, x_hat, BANDWIDTH, CONFIG))
    ref = float(t_loss_fn(torch, name, torch.from_numpy(x), torch.from_numpy(x_hat), BANDWIDTH, CONFIG))
    assert abs(ours / ref - 1) <= 1e-6


def test_linf_k_larger_than_example_names_the_field():
    x = jnp.zeros((1, 32, 1))
    with pytest.raises(ValueError, match="linf_k 64"):
        losses.loss_fn("linf", x, x, BANDWIDTH, CONFIG)


def _numpy_stft_magnitude(mono, n_fft, hop_length, window_size):
    """Definition by frames: centrally zero-padded periodic Hann window, reflect-padded signal, float64."""
    window = np.zeros(n_fft)
    left = (n_fft - window_size) // 2
    window[left:left + window_size] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window_size) / window_size)
    padded = np.pad(mono, n_fft // 2, mode="reflect")
    starts = range(0, len(padded) - n_fft + 1, hop_length)
    return np.abs(np.stack([np.fft.rfft(padded[s:s + n_fft] * window) for s in starts]))


def test_estimate_bandwidth_vs_numpy():
    cfg = VQVAEConfig(sr=1000)
    batches = [_audio(10 + i, (2, T, 2)) for i in range(3)]
    # Budget of 10 s at 1 kHz = 10,000 values; each stereo example has 4,800, so exactly 3 examples are used.
    bandwidth = losses.estimate_bandwidth(iter(batches), cfg, duration=10.0)
    used = np.concatenate(batches)[:3].astype(np.float64)
    spec_norms = [np.linalg.norm(_numpy_stft_magnitude(ex.mean(-1), cfg.n_fft, cfg.hop_length, cfg.window_size))
                  for ex in used]
    np.testing.assert_allclose(bandwidth.l2, used.var(), rtol=1e-10)
    np.testing.assert_allclose(bandwidth.l1, np.abs(used).mean(), rtol=1e-10)
    np.testing.assert_allclose(bandwidth.spec, np.mean(spec_norms), rtol=1e-10)
    everything = losses.estimate_bandwidth(np.concatenate(batches), cfg, duration=None)
    np.testing.assert_allclose(everything.l2, np.concatenate(batches).astype(np.float64).var(), rtol=1e-10)

    restored = losses.Bandwidth.from_dict(json.loads(json.dumps(bandwidth.to_dict())))
    assert restored == bandwidth
    with pytest.raises(ValueError, match="spec"):
        losses.Bandwidth.from_dict({"l1": 1.0, "l2": 1.0})


def _level_inputs(n_levels=3):
    x = _audio(20, (2, T, 1))
    x_outs = [x + _audio(21 + level, (2, T, 1), scale=0.05 * (level + 1)) for level in range(n_levels)]
    commit_losses = [np.float32(0.1 * (level + 1)) for level in range(n_levels)]
    return x, x_outs, commit_losses


def test_vqvae_loss_vs_torch(torch):
    x, x_outs, commit_losses = _level_inputs()
    loss_and_grad = jax.jit(jax.value_and_grad(losses.vqvae_loss, argnums=1, has_aux=True), static_argnums=4)
    with jax.default_matmul_precision("highest"):
        (loss, metrics), grads = loss_and_grad(jnp.asarray(x), [jnp.asarray(o) for o in x_outs],
                                               [jnp.asarray(c) for c in commit_losses], BANDWIDTH, CONFIG)
    tx = torch.from_numpy(x)
    tx_outs = [torch.from_numpy(o).requires_grad_() for o in x_outs]
    ref_loss, ref_metrics = t_vqvae_loss(torch, tx, tx_outs, [torch.tensor(c) for c in commit_losses],
                                         BANDWIDTH, CONFIG)
    ref_loss.backward()
    assert abs(float(loss) / ref_loss.item() - 1) <= 1e-5
    for key, ref in ref_metrics.items():
        assert abs(float(metrics[key]) / float(ref.detach()) - 1) <= 1e-5, key
    np.testing.assert_allclose(metrics["spectral_convergence_l1"],
                               20 * math.log10(ref_metrics["spectral_convergence"].item()), atol=1e-4)
    for level in range(3):
        assert _max_rel_err(grads[level], tx_outs[level].grad.numpy()) <= 1e-5, level


@pytest.mark.parametrize("spectral", [0.0, 1.0])
def test_vqvae_loss_jit_grad_finite_with_a_perfect_level(spectral):
    x, x_outs, commit_losses = _level_inputs()
    x_outs[1] = x.copy()  # zero residual: the norms' gradients must stay finite
    cfg = dataclasses.replace(CONFIG, spectral=spectral)
    grad_fn = jax.jit(jax.grad(lambda xo, bw: losses.vqvae_loss(jnp.asarray(x), xo, commit_losses, bw, cfg)[0]))
    grads = grad_fn([jnp.asarray(o) for o in x_outs], BANDWIDTH)  # bandwidth traced as a pytree argument
    for g in grads:
        assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g)))
    assert float(jnp.max(jnp.abs(grads[0]))) > 0
