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
from configs import my_music_vqvae
from configs._prior_defaults import prior_defaults


def get_config():
    c = prior_defaults(level=2)
    c.vqvae = my_music_vqvae.get_config().vqvae
    c.prior.update(dict(n_ctx=256, prior_width=128, prior_depth=16, heads=2, attn_order=12, blocks=16,
                        init_scale=0.5, labels=True, labels_v3=True, y_bins=(32, 128), max_bow_genre_size=1,
                        t_bins=32, n_vocab=79, min_duration=1.0, max_duration=600.0, use_tokens=True, n_tokens=64,
                        prime_loss_fraction=0.4, single_enc_dec=True, alignment_layer=15, alignment_head=0))
    c.data.update(dict(batch_size=8, max_bow_genre_size=1))
    c.optim.update(dict(lr=1e-3, lr_warmup=10, ema_mu=0.99, weight_decay=0.01))
    c.mesh.update(dict(data=1, fsdp=1, tensor=1))
    c.train.update(dict(num_steps=3000, log_every=50, eval_every=1000, checkpoint_every=500, keep_checkpoints=1))
    return c
