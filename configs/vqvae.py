"""The released Jukebox VQ-VAE: 44.1 kHz, 3 levels with hop lengths 8/32/128, 2048 codes of width 64 per
level, lmix + multi-scale spectral + commit losses; 1,485,763 parameters.

Describe:  python train.py --config=configs/vqvae.py --describe --json
Train:     python train.py --config=configs/vqvae.py --config.data.dataset_dir=DATA --workdir=runs/vqvae
"""
from jukejax import presets


def get_config():
    return presets.vqvae()
