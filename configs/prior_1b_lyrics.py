"""The released 1B top prior with lyrics (`1b_lyrics/prior_level_2.pth.tar`): one sequence of 384 lyric
characters + 6144 top tokens (17.8 s), width 2048, 72 layers, 2 heads, attn_order 12 (prime attention),
v3 labels with timing; ~0.95 B parameters. Alignment: layer 63, head 0.

Describe:  python train.py --config=configs/prior_1b_lyrics.py --describe --json
"""
from configs._prior_defaults import prior_defaults


def get_config():
    c = prior_defaults(level=2)
    c.prior.update(dict(n_ctx=6144, prior_width=2048, prior_depth=72, heads=2, attn_order=12, blocks=64,
                        init_scale=0.2, labels_v3=True, y_bins=(604, 7898), t_bins=64, max_bow_genre_size=1,
                        n_vocab=79, min_duration=17.84, max_duration=600.0, use_tokens=True, n_tokens=384,
                        prime_loss_fraction=0.4, single_enc_dec=True, fp16_params=False,
                        alignment_layer=63, alignment_head=0))
    c.data.max_bow_genre_size = 1
    return c
