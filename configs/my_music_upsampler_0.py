"""The bottom upsampler for your own music, sized for a laptop CPU: 1024 level-0 codes (0.37 s) conditioned on
level-1 codes; otherwise as configs/my_music_upsampler_1.py.

Train on the codes of configs/my_music_vqvae.py:
  python train.py --config=configs/my_music_upsampler_0.py --config.vqvae_checkpoint=runs/my_vqvae \
      --config.data.dataset_dir=DATA --workdir=runs/my_upsampler_0
"""
from configs import my_music_upsampler_1


def get_config():
    c = my_music_upsampler_1.get_config(level=0)
    c.prior.update(dict(n_ctx=1024, blocks=32))
    return c
