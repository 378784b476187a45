"""The released middle-level upsampler (`5b/prior_level_1.pth.tar`): 8192 level-1 tokens (5.94 s),
conditioned on level-2 codes; 981,298,176 parameters.

Describe:  python train.py --config=configs/upsampler_level_1.py --describe --json
"""
from jukejax import presets


def get_config():
    return presets.upsampler_level_1()
