"""The bundled demo's middle upsampler: 512 level-1 codes (1 s) conditioned on level-2 codes through the
deconv + dilated-resnet conditioner, artist/genre labels (no timing), attn_order 2.

Train: python scripts/train_demo.py --data=DEMO_DATA --out=models/demo
"""
from configs import demo_vqvae
from configs._prior_defaults import prior_defaults


def get_config(level: int = 1):
    c = prior_defaults(level=level)
    c.vqvae = demo_vqvae.get_config().vqvae
    c.prior.update(dict(n_ctx=512, prior_width=96, prior_depth=6, heads=1, attn_order=2, blocks=16, init_scale=0.5,
                        cond_width=64, cond_depth=4, cond_dilation_growth_rate=3, cond_dilation_cycle=4,
                        cond_res_scale=level == 1, labels=True, labels_v3=True, y_bins=(16, 16),
                        max_bow_genre_size=1))
    c.data.update(dict(batch_size=16, max_bow_genre_size=1))
    c.optim.update(dict(lr=1e-3, lr_warmup=100, ema_mu=0.99, weight_decay=0.01))
    c.mesh.update(dict(data=1, fsdp=1, tensor=1))
    c.train.update(dict(num_steps=2000, log_every=50, eval_every=1000, checkpoint_every=1000, keep_checkpoints=1))
    return c
