"""The released middle-level upsampler (`5b/prior_level_1.pth.tar`): 8192 level-1 tokens (5.94 s),
conditioned on level-2 codes; its conditioner scales residuals by 1/sqrt(depth) (cond_res_scale).

Describe:  python train.py --config=configs/upsampler_level_1.py --describe --json
"""
from configs._prior_defaults import upsampler


def get_config():
    c = upsampler(level=1)
    c.prior.cond_res_scale = True
    return c
