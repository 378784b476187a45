"""The original README's `small_sep_enc_dec_prior` at its original size (a GPU recipe): 6144 top tokens of
the released VQ-VAE with cross-attention (attn_order 8) to a separate lyric encoder (width 256, depth 9) over 384
characters, v3 labels with timing for songs of 60 s to 10 min. On a laptop CPU use configs/my_music_prior.py.

Train (README recipe: --levels=3 --level=2 --sample_length=786432 --labels=True):
  python train.py --config=configs/small_sep_enc_dec_prior.py --config.vqvae_checkpoint=VQVAE \
      --config.data.dataset_dir=DATA --workdir=runs/small_sep_enc_dec_prior
"""
from configs._prior_defaults import prior_defaults


def get_config():
    c = prior_defaults(level=2)
    c.prior.update(dict(n_ctx=6144, prior_width=1024, prior_depth=50, heads=2, attn_order=8, blocks=64,
                        init_scale=0.7, c_res=1, prime_width=256, prime_depth=9, prime_heads=2,
                        prime_attn_order=2, prime_blocks=32, prime_init_scale=0.7, prime_c_res=1,
                        use_tokens=True, n_tokens=384, prime_loss_fraction=0.4, labels=True, labels_v3=True,
                        y_bins=(10, 100), max_bow_genre_size=1, min_duration=60.0, max_duration=600.0,
                        t_bins=64, n_vocab=79))
    c.data.max_bow_genre_size = 1
    c.optim.weight_decay = 0.01
    return c
