"""Tiny configs for tests and CPU smoke runs (seconds per step on 2 cores), built from `jukejax.presets`.

In tests: `tiny_configs.vqvae()`, `.prior()`, `.upsampler()`. From the command line (absl passes the text after
the colon to `get_config`):

    python train.py --config=tests/tiny_configs.py:vqvae --config.data.dataset_dir=DATA --workdir=runs/tiny
    python train.py --config=tests/tiny_configs.py:prior --config.vqvae_checkpoint=runs/tiny \\
        --config.data.dataset_dir=DATA --workdir=runs/tiny_prior
"""
import ml_collections

from jukejax import presets


def vqvae() -> ml_collections.ConfigDict:
    """A 3-level VQ-VAE at 8 kHz with hops 4 / 8 / 16, 32 codes of width 8."""
    c = presets.vqvae()
    c.vqvae.update(dict(sr=8000, downs_t=(2, 1, 1), hvqvae_multipliers=(1, 1, 1), emb_width=8, l_bins=32, width=8,
                        depth=2, linf_k=64, multispec_loss_n_fft=(256, 128, 64),
                        multispec_loss_hop_length=(64, 32, 16), multispec_loss_window_size=(128, 64, 32), n_fft=256,
                        hop_length=64, window_size=192))
    c.data.update(dict(sample_length=2048, batch_size=8))
    c.optim.update(dict(lr=1e-3, lr_warmup=10))
    c.train.update(dict(num_steps=200, log_every=20, eval_every=100, checkpoint_every=100, keep_checkpoints=2))
    return c


def prior() -> ml_collections.ConfigDict:
    """A top-level prior over `vqvae()`'s codes: 64 tokens, width 32, 3 layers, v3 artist/genre/timing labels."""
    c = presets.prior(2, vqvae().vqvae, n_ctx=64, prior_width=32, prior_depth=3, heads=1, attn_order=2, blocks=8,
                      init_scale=0.7, labels=True, labels_v3=True, y_bins=(8, 8), max_bow_genre_size=1, t_bins=16,
                      min_duration=1.0, max_duration=60.0)
    c.data.batch_size = 8
    c.optim.update(dict(lr=3e-3, lr_warmup=5))
    c.mesh.update(dict(data=-1, fsdp=1, tensor=1))
    c.train.update(dict(num_steps=60, log_every=10, eval_every=60, checkpoint_every=60, keep_checkpoints=2))
    return c


def upsampler() -> ml_collections.ConfigDict:
    """`prior()` moved to level 1, conditioned on level-2 codes through a 2-block conditioner."""
    c = prior()
    c.prior.update(dict(level=1, cond_width=16, cond_depth=2, cond_dilation_growth_rate=3, cond_dilation_cycle=2))
    return c


def get_config(name: str) -> ml_collections.ConfigDict:
    """`--config=tests/tiny_configs.py:NAME` with NAME one of vqvae, prior, upsampler."""
    return {"vqvae": vqvae, "prior": prior, "upsampler": upsampler}[name]()
