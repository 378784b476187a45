"""The original README's `small_upsampler` on top of `small_vqvae`, at its original size (a GPU recipe):
level-0 prior of 8192 tokens (11.9 s) conditioned on level-1 codes (conditioner width 512, depth 16, dilation
cycle 8), width 1024, 48 layers, no labels. On a laptop CPU use configs/my_music_upsampler_{1,0}.py.

Train (README recipe: --levels=2 --level=0 --sample_length=262144):
  python train.py --config=configs/small_upsampler.py --config.vqvae_checkpoint=runs/small_vqvae \
      --config.data.dataset_dir=DATA --workdir=runs/small_upsampler
"""
from configs import small_vqvae
from configs._prior_defaults import prior_defaults


def get_config():
    c = prior_defaults(level=0)
    c.vqvae = small_vqvae.get_config().vqvae
    c.prior.update(dict(n_ctx=8192, prior_width=1024, prior_depth=48, heads=1, c_res=1, attn_order=2, blocks=64,
                        init_scale=0.7, cond_width=512, cond_depth=16, cond_dilation_growth_rate=3,
                        cond_dilation_cycle=8, cond_c_res=1, labels=False))
    c.optim.weight_decay = 0.01
    return c
