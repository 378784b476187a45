"""The released 5B top prior without lyrics (`5b/prior_level_2.pth.tar`): 8192 top tokens (23.8 s),
width 4800, 72 layers, 8 heads; 5,060,452,800 parameters.

Describe:  python train.py --config=configs/prior_5b.py --describe --json
"""
from jukejax import presets


def get_config():
    return presets.prior_5b()
