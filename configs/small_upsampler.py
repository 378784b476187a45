"""The original README's `small_upsampler` on top of `small_vqvae`, at its original size (a GPU recipe):
level-0 prior of 8192 tokens (11.9 s) conditioned on level-1 codes (conditioner width 512, depth 16, dilation
cycle 8), width 1024, 48 layers, no labels. On a laptop CPU use configs/my_music_upsampler_{1,0}.py.

Train (README recipe: --levels=2 --level=0 --sample_length=262144):
  python train.py --config=configs/small_upsampler.py --config.vqvae_checkpoint=runs/small_vqvae \
      --config.data.dataset_dir=DATA --workdir=runs/small_upsampler
"""
from jukejax import presets


def get_config():
    return presets.small_upsampler()
