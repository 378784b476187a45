"""The original README's `small_sep_enc_dec_prior` at its original size (a GPU recipe): 6144 top tokens of
the released VQ-VAE with cross-attention (attn_order 8) to a separate lyric encoder (width 256, depth 9) over 384
characters, v3 labels with timing for songs of 60 s to 10 min. On a laptop CPU use configs/my_music_prior.py.

Train (README recipe: --levels=3 --level=2 --sample_length=786432 --labels=True):
  python train.py --config=configs/small_sep_enc_dec_prior.py --config.vqvae_checkpoint=VQVAE \
      --config.data.dataset_dir=DATA --workdir=runs/small_sep_enc_dec_prior
"""
from jukejax import presets


def get_config():
    return presets.small_sep_enc_dec_prior()
