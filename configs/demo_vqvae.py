"""The bundled demo's VQ-VAE: the released structure (3 levels, hops 8/32/128) shrunk to train on 2 CPU
cores in minutes, at 22.05 kHz on the rendered music21 corpus (scripts/make_demo_dataset.py).

Train (all demo stages): python scripts/train_demo.py --data=DEMO_DATA --out=models/demo
Alone:                   python train.py --config=configs/demo_vqvae.py --config.data.dataset_dir=DEMO_DATA/data \
                             --workdir=runs/demo/vqvae
"""
from configs import vqvae


def get_config():
    c = vqvae.get_config()
    c.vqvae.update(dict(sr=22050, levels=3, downs_t=(3, 2, 2), strides_t=(2, 2, 2), hvqvae_multipliers=(1, 1, 1),
                        emb_width=32, l_bins=256, width=32, depth=3, linf_k=512))
    c.data.update(dict(sample_length=8192, batch_size=4))
    c.optim.update(dict(lr=1e-3, lr_warmup=50, ema_mu=0.99))
    c.train.update(dict(num_steps=3000, log_every=50, eval_every=500, checkpoint_every=500, keep_checkpoints=1))
    return c
