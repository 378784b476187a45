"""The original README's `small_vqvae` recipe at its original size (a GPU recipe, not a small model): 22,050 Hz,
2 levels with downs_t (5, 3) (hops 32 and 256), 1024 codes per level, plain l2 reconstruction loss, 11.9 s
training windows (songs shorter than one window are never drawn), 100k steps. On a laptop CPU or with short
clips use configs/my_music_vqvae.py (README, "Train on your own music").

Train:  python train.py --config=configs/small_vqvae.py --config.data.dataset_dir=DATA --workdir=runs/small_vqvae
(the README's run used --sample_length=262144 --bs=4 --aug_shift --aug_blend)
"""
from jukejax import presets


def get_config():
    return presets.small_vqvae()
