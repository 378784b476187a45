"""The middle upsampler for your own music, sized for a laptop CPU: 512 level-1 codes (0.74 s) conditioned on
level-2 codes through the deconv + dilated-resnet conditioner, width 96, 6 layers (attn_order 2), v3
artist/genre labels (no timing; y_bins as configs/my_music_prior.py). A 10-step warm-up.

Train on the codes of configs/my_music_vqvae.py:
  python train.py --config=configs/my_music_upsampler_1.py --config.vqvae_checkpoint=runs/my_vqvae \
      --config.data.dataset_dir=DATA --workdir=runs/my_upsampler_1
"""
from configs import my_music_prior, my_music_vqvae
from configs._prior_defaults import prior_defaults


def get_config(level: int = 1):
    c = prior_defaults(level=level)
    c.vqvae = my_music_vqvae.get_config().vqvae
    top = my_music_prior.get_config().prior
    c.prior.update(dict(n_ctx=512, prior_width=96, prior_depth=6, heads=1, attn_order=2, blocks=16, init_scale=0.5,
                        cond_width=64, cond_depth=4, cond_dilation_growth_rate=3, cond_dilation_cycle=4,
                        cond_res_scale=level == 1, labels=True, labels_v3=True, y_bins=top.y_bins,
                        max_bow_genre_size=1))
    c.data.update(dict(batch_size=8, max_bow_genre_size=1))
    c.optim.update(dict(lr=1e-3, lr_warmup=10, ema_mu=0.99, weight_decay=0.01))
    c.mesh.update(dict(data=1, fsdp=1, tensor=1))
    c.train.update(dict(num_steps=2000, log_every=50, eval_every=1000, checkpoint_every=500, keep_checkpoints=1))
    return c
