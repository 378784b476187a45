"""The bundled demo's middle upsampler: 512 level-1 codes (1 s) conditioned on level-2 codes through the
deconv + dilated-resnet conditioner, artist/genre labels (no timing), attn_order 2.

Train: python scripts/train_demo.py --data=DEMO_DATA --out=models/demo
"""
from jukejax import presets


def get_config():
    return presets.demo_upsampler(1)
