"""The bundled demo's top prior: the 1b_lyrics structure shrunk — one sequence of 64 lyric characters + 256
top-level codes (2 s), attn_order 12 (row/column/previous-row, prime attention at layer 15), artist = composer,
genre = corpus collection, timing. y_bins are set from the dataset's name tables by scripts/train_demo.py.

Train: python scripts/train_demo.py --data=DEMO_DATA --out=models/demo
"""
from jukejax import presets


def get_config():
    return presets.demo_prior()
