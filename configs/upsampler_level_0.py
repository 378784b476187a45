"""The released bottom-level upsampler (`5b/prior_level_0.pth.tar`): 8192 level-0 tokens (1.49 s),
conditioned on level-1 codes; 981,298,176 parameters.

Describe:  python train.py --config=configs/upsampler_level_0.py --describe --json
"""
from jukejax import presets


def get_config():
    return presets.upsampler_level_0()
