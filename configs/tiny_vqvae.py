"""A tiny 3-level VQ-VAE for tests and CPU smoke runs (seconds per step on 2 cores).

Train:  python train.py --config=configs/tiny_vqvae.py --config.data.dataset_dir=DATA --workdir=runs/tiny
"""
from configs import vqvae


def get_config():
    c = vqvae.get_config()
    c.vqvae.update(dict(sr=8000, levels=3, downs_t=(2, 1, 1), strides_t=(2, 2, 2), hvqvae_multipliers=(1, 1, 1),
                        emb_width=8, l_bins=32, width=8, depth=2, linf_k=64,
                        multispec_loss_n_fft=(256, 128, 64), multispec_loss_hop_length=(64, 32, 16),
                        multispec_loss_window_size=(128, 64, 32), n_fft=256, hop_length=64, window_size=192))
    c.data.update(dict(sample_length=2048, batch_size=8))
    c.optim.update(dict(lr=1e-3, lr_warmup=10))
    c.train.update(dict(num_steps=200, log_every=20, eval_every=100, checkpoint_every=100, keep_checkpoints=2))
    return c
