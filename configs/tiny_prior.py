"""A tiny top-level prior with artist/genre/timing labels over configs/tiny_vqvae.py's codes (tests, smoke runs).

Train:  python train.py --config=configs/tiny_prior.py --config.vqvae_checkpoint=runs/tiny \
            --config.data.dataset_dir=DATA --workdir=runs/tiny_prior
"""
from configs import tiny_vqvae
from configs._prior_defaults import prior_defaults


def get_config():
    c = prior_defaults(level=2)
    c.vqvae = tiny_vqvae.get_config().vqvae
    c.prior.update(dict(n_ctx=64, prior_width=32, prior_depth=3, heads=1, attn_order=2, blocks=8, init_scale=0.7,
                        labels=True, labels_v3=True, y_bins=(8, 8), max_bow_genre_size=1, t_bins=16,
                        min_duration=1.0, max_duration=60.0))
    c.data.update(dict(batch_size=8, max_bow_genre_size=1))
    c.optim.update(dict(lr=3e-3, lr_warmup=5))
    c.mesh.update(dict(data=-1, fsdp=1, tensor=1))
    c.train.update(dict(num_steps=60, log_every=10, eval_every=60, checkpoint_every=60, keep_checkpoints=2))
    return c
