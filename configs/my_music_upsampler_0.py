"""The bottom upsampler for your own music, sized for a laptop CPU: 1024 level-0 codes (0.37 s) conditioned on
level-1 codes; otherwise as configs/my_music_upsampler_1.py.

Train on the codes of configs/my_music_vqvae.py:
  python train.py --config=configs/my_music_upsampler_0.py --config.vqvae_checkpoint=runs/my_vqvae \
      --config.data.dataset_dir=DATA --workdir=runs/my_upsampler_0
"""
from jukejax import presets


def get_config():
    return presets.my_music_upsampler(0)
