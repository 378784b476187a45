"""The released bottom-level upsampler (`5b/prior_level_0.pth.tar`): 8192 level-0 tokens (1.49 s),
conditioned on level-1 codes through the deconv + dilated-resnet conditioner; ~0.98 B parameters.

Describe:  python train.py --config=configs/upsampler_level_0.py --describe --json
"""
from configs._prior_defaults import upsampler


def get_config():
    return upsampler(level=0)
