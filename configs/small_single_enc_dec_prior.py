"""The original README's `small_single_enc_dec_prior` at its original size (a GPU recipe): 384 lyric
characters + 6144 top tokens in one sequence (attn_order 12, prime attention), v3 labels with timing for songs of
60 s to 10 min, on the released VQ-VAE. On a laptop CPU use configs/my_music_prior.py (the same structure shrunk).

Train (README recipe: --levels=3 --level=2 --sample_length=786432 --labels=True):
  python train.py --config=configs/small_single_enc_dec_prior.py --config.vqvae_checkpoint=VQVAE \
      --config.data.dataset_dir=DATA --workdir=runs/small_single_enc_dec_prior
"""
from configs._prior_defaults import prior_defaults


def get_config():
    c = prior_defaults(level=2)
    c.prior.update(dict(n_ctx=6144, prior_width=1024, prior_depth=48, heads=2, attn_order=12, blocks=64,
                        init_scale=0.7, c_res=1, use_tokens=True, n_tokens=384, prime_loss_fraction=0.4,
                        single_enc_dec=True, labels=True, labels_v3=True, y_bins=(10, 100),
                        max_bow_genre_size=1, min_duration=60.0, max_duration=600.0, t_bins=64, n_vocab=79))
    c.data.max_bow_genre_size = 1
    c.optim.weight_decay = 0.01
    return c
