"""The original README's `small_prior` on top of `small_vqvae`, at its original size (a GPU recipe): a top
(level 1) prior of 8192 tokens (95 s of audio per window), width 1024, 48 layers, 1 head, attn_order 2, no
labels, a 100-step warm-up. On a laptop CPU or with short clips use configs/my_music_prior.py.

Train (README recipe: --levels=2 --level=1 --sample_length=2097152):
  python train.py --config=configs/small_prior.py --config.vqvae_checkpoint=runs/small_vqvae \
      --config.data.dataset_dir=DATA --workdir=runs/small_prior
"""
from jukejax import presets


def get_config():
    return presets.small_prior()
