"""The top prior for your own music, sized for a laptop CPU and clips of a few seconds: the 1b_lyrics
structure shrunk (as the bundled demo model's) — 64 lyric characters + 256 top-level codes (1.5 s) in one
sequence, width 128, 16 layers (attn_order 12: row/column/previous-row, prime attention at layer 15),
v3 artist/genre labels with timing. y_bins (genres, artists) = (32, 128) leaves room for a personal collection's
names (the dataset's genres.txt / artists.txt must fit); timing covers songs of 1 s to 10 min. A 10-step
warm-up, so a few dozen steps already lower the loss. About 0.3 s per step on 2 CPU cores.

Train on the codes of configs/my_music_vqvae.py (pre-encoded once into WORKDIR/codes):
  python train.py --config=configs/my_music_prior.py --config.vqvae_checkpoint=runs/my_vqvae \
      --config.data.dataset_dir=DATA --workdir=runs/my_prior
"""
from jukejax import presets


def get_config():
    return presets.my_music_prior()
