"""The original README's `small_labelled_prior` at its original size (a GPU recipe: 8192 tokens, width 1024,
48 layers): `small_prior` with v3-style artist/genre labels and timing, trained as a new top (level 2) prior on
the codes of the released 3-level 44.1 kHz VQ-VAE (configs/vqvae.py, e.g. a converted models/1b_lyrics/vqvae).
Timing covers songs of 60 s to 10 min (min_duration 60): shorter songs cannot be labelled. Set y_bins to
(genres, artists) of your dataset. On a laptop CPU or with short clips use configs/my_music_prior.py.

Train (README recipe: --levels=3 --level=2 --sample_length=1048576 --labels=True):
  python train.py --config=configs/small_labelled_prior.py --config.vqvae_checkpoint=VQVAE \
      --config.data.dataset_dir=DATA --workdir=runs/small_labelled_prior
"""
from configs._prior_defaults import prior_defaults


def get_config():
    c = prior_defaults(level=2)
    c.prior.update(dict(n_ctx=8192, prior_width=1024, prior_depth=48, heads=1, c_res=1, attn_order=2, blocks=64,
                        init_scale=0.7, labels=True, labels_v3=True, y_bins=(10, 100), max_bow_genre_size=1,
                        min_duration=60.0, max_duration=600.0, t_bins=64))
    c.data.max_bow_genre_size = 1
    c.optim.weight_decay = 0.01
    return c
