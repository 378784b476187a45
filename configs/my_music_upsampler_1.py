"""The middle upsampler for your own music, sized for a laptop CPU: 512 level-1 codes (0.74 s) conditioned on
level-2 codes through the deconv + dilated-resnet conditioner, width 96, 6 layers (attn_order 2), v3
artist/genre labels (no timing; y_bins as configs/my_music_prior.py). A 10-step warm-up.

Train on the codes of configs/my_music_vqvae.py:
  python train.py --config=configs/my_music_upsampler_1.py --config.vqvae_checkpoint=runs/my_vqvae \
      --config.data.dataset_dir=DATA --workdir=runs/my_upsampler_1
"""
from jukejax import presets


def get_config():
    return presets.my_music_upsampler(1)
