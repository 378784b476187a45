"""Hierarchical VQ-VAE: conv encoders/decoders, EMA codebooks with restarts, the model, checkpoint import.

Losses live in `jukejax.vqvae.losses`.
"""
from jukejax.vqvae.bottleneck import Bottleneck, BottleneckBlock, restore_codebook
from jukejax.vqvae.encdec import Decoder, DecoderConvBlock, Encoder, EncoderConvBlock
from jukejax.vqvae.model import VQVAE, abstract_variables, count_params
from jukejax.vqvae.resnet import ResConv1DBlock, Resnet1D, conv1d
from jukejax.vqvae.torch_keys import (hf_to_openai_key, load_hf_state_dict, load_torch_state_dict,
                                      torch_key_for)

__all__ = [
    "Bottleneck", "BottleneckBlock", "Decoder", "DecoderConvBlock", "Encoder", "EncoderConvBlock",
    "ResConv1DBlock", "Resnet1D", "VQVAE", "abstract_variables", "conv1d", "count_params",
    "hf_to_openai_key", "load_hf_state_dict", "load_torch_state_dict", "restore_codebook", "torch_key_for",
]
