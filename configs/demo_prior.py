"""The bundled demo's top prior: the 1b_lyrics structure shrunk — one sequence of 64 lyric characters + 256
top-level codes (2 s), attn_order 12 (row/column/previous-row, prime attention at layer 15), artist = composer,
genre = corpus collection, timing. y_bins are set from the dataset's name tables by scripts/train_demo.py.

Train: python scripts/train_demo.py --data=DEMO_DATA --out=models/demo
"""
from configs import demo_vqvae
from configs._prior_defaults import prior_defaults


def get_config():
    c = prior_defaults(level=2)
    c.vqvae = demo_vqvae.get_config().vqvae
    c.prior.update(dict(n_ctx=256, prior_width=128, prior_depth=16, heads=2, attn_order=12, blocks=16,
                        init_scale=0.5, labels=True, labels_v3=True, y_bins=(16, 16), max_bow_genre_size=1,
                        t_bins=32, n_vocab=79, min_duration=1.0, max_duration=600.0, use_tokens=True, n_tokens=64,
                        prime_loss_fraction=0.4, single_enc_dec=True, alignment_layer=15, alignment_head=0))
    c.data.update(dict(batch_size=16, max_bow_genre_size=1))
    c.optim.update(dict(lr=1e-3, lr_warmup=100, ema_mu=0.99, weight_decay=0.01))
    c.mesh.update(dict(data=1, fsdp=1, tensor=1))
    c.train.update(dict(num_steps=3000, log_every=50, eval_every=1000, checkpoint_every=1000, keep_checkpoints=1))
    return c
