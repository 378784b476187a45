"""The bundled demo's VQ-VAE: the released structure (3 levels, hops 8/32/128) shrunk to train on 2 CPU
cores in minutes, at 22.05 kHz on the rendered music21 corpus (scripts/make_demo_dataset.py).

Train (all demo stages): python scripts/train_demo.py --data=DEMO_DATA --out=models/demo
Alone:                   python train.py --config=configs/demo_vqvae.py --config.data.dataset_dir=DEMO_DATA/data \
                             --workdir=runs/demo/vqvae
"""
from jukejax import presets


def get_config():
    return presets.demo_vqvae()
