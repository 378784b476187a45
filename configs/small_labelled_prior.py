"""The original README's `small_labelled_prior` at its original size (a GPU recipe: 8192 tokens, width 1024,
48 layers): `small_prior` with v3-style artist/genre labels and timing, trained as a new top (level 2) prior on
the codes of the released 3-level 44.1 kHz VQ-VAE (configs/vqvae.py, e.g. a converted models/1b_lyrics/vqvae).
Timing covers songs of 60 s to 10 min (min_duration 60): shorter songs cannot be labelled. Set y_bins to
(genres, artists) of your dataset. On a laptop CPU or with short clips use configs/my_music_prior.py.

Train (README recipe: --levels=3 --level=2 --sample_length=1048576 --labels=True):
  python train.py --config=configs/small_labelled_prior.py --config.vqvae_checkpoint=VQVAE \
      --config.data.dataset_dir=DATA --workdir=runs/small_labelled_prior
"""
from jukejax import presets


def get_config():
    return presets.small_labelled_prior()
