"""The released 5B top prior with lyrics (`5b_lyrics/prior_level_2.pth.tar`): 79 layers (attn_order 10,
cross-attention to a separate 18-layer lyric encoder over 512 characters), v2 labels with timing;
~5.64 B parameters with the lyric encoder. Alignment: layer 68, head 2.

Describe:  python train.py --config=configs/prior_5b_lyrics.py --describe --json
"""
from configs._prior_defaults import prior_defaults


def get_config():
    c = prior_defaults(level=2)
    c.prior.update(dict(n_ctx=8192, prior_width=4800, prior_depth=79, heads=8, attn_order=10, blocks=128,
                        init_scale=0.1, c_res=1, prime_width=1280, prime_depth=18, prime_heads=4,
                        prime_attn_order=2, prime_blocks=32, prime_init_scale=0.7, prime_c_res=1,
                        min_duration=23.8, max_duration=600.0, use_tokens=True, n_tokens=512,
                        prime_loss_fraction=0.4, merged_decoder=True, fp16_params=True,
                        alignment_layer=68, alignment_head=2))
    return c
