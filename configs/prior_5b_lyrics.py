"""The released 5B top prior with lyrics (`5b_lyrics/prior_level_2.pth.tar`): 79 layers with
cross-attention to an 18-layer lyric encoder over 512 characters; 5,640,506,800 parameters.

Describe:  python train.py --config=configs/prior_5b_lyrics.py --describe --json
"""
from jukejax import presets


def get_config():
    return presets.prior_5b_lyrics()
