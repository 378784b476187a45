"""The bundled demo's bottom upsampler: 1024 level-0 codes (0.5 s) conditioned on level-1 codes.

Train: python scripts/train_demo.py --data=DEMO_DATA --out=models/demo
"""
from configs import demo_upsampler_1


def get_config():
    c = demo_upsampler_1.get_config(level=0)
    c.prior.update(dict(n_ctx=1024, blocks=32))
    return c
