"""The released 1B top prior with lyrics (`1b_lyrics/prior_level_2.pth.tar`): 384 lyric characters +
6144 top tokens in one sequence, width 2048, 72 layers; 942,643,200 parameters.

Describe:  python train.py --config=configs/prior_1b_lyrics.py --describe --json
"""
from jukejax import presets


def get_config():
    return presets.prior_1b_lyrics()
