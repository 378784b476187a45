"""A tiny level-1 upsampler over configs/tiny_vqvae.py's codes, conditioned on level-2 codes (tests).

Train:  python train.py --config=configs/tiny_upsampler.py --config.vqvae_checkpoint=runs/tiny \
            --config.data.dataset_dir=DATA --workdir=runs/tiny_upsampler
"""
from configs import tiny_prior


def get_config():
    c = tiny_prior.get_config()
    c.prior.update(dict(level=1, cond_width=16, cond_depth=2, cond_dilation_growth_rate=3, cond_dilation_cycle=2))
    return c
