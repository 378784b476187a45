"""The released 5B top prior without lyrics (`5b/prior_level_2.pth.tar`): 8192 top tokens (23.8 s),
width 4800, 72 layers, 8 heads, attn_order 2, v2 labels with timing; ~5.06 B parameters.

Describe:  python train.py --config=configs/prior_5b.py --describe --json
"""
from configs._prior_defaults import prior_defaults


def get_config():
    c = prior_defaults(level=2)
    c.prior.update(dict(n_ctx=8192, prior_width=4800, prior_depth=72, heads=8, attn_order=2, blocks=128,
                        init_scale=0.1, c_res=1, min_duration=60.0, max_duration=600.0, use_tokens=False,
                        n_tokens=0, prime_loss_fraction=0.0, merged_decoder=True, fp16_params=True))
    c.optim.beta2 = 0.925
    return c
