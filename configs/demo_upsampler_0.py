"""The bundled demo's bottom upsampler: 1024 level-0 codes (0.5 s) conditioned on level-1 codes.

Train: python scripts/train_demo.py --data=DEMO_DATA --out=models/demo
"""
from jukejax import presets


def get_config():
    return presets.demo_upsampler(0)
