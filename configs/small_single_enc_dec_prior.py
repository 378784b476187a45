"""The original README's `small_single_enc_dec_prior` at its original size (a GPU recipe): 384 lyric
characters + 6144 top tokens in one sequence (attn_order 12, prime attention), v3 labels with timing for songs of
60 s to 10 min, on the released VQ-VAE. On a laptop CPU use configs/my_music_prior.py (the same structure shrunk).

Train (README recipe: --levels=3 --level=2 --sample_length=786432 --labels=True):
  python train.py --config=configs/small_single_enc_dec_prior.py --config.vqvae_checkpoint=VQVAE \
      --config.data.dataset_dir=DATA --workdir=runs/small_single_enc_dec_prior
"""
from jukejax import presets


def get_config():
    return presets.small_single_enc_dec_prior()
