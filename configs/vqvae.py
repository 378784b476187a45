"""The released Jukebox VQ-VAE (registry name `vqvae` in the original `hparams.py`): 44.1 kHz, 3 levels with
hop lengths 8/32/128, 2048 codes of width 64 per level, lmix + multi-scale spectral + commit losses.

Describe:  python train.py --config=configs/vqvae.py --describe --json
Train:     python train.py --config=configs/vqvae.py --config.data.dataset_dir=DATA --workdir=runs/vqvae
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.model = "vqvae"
    c.vqvae = ml_collections.ConfigDict(dict(
        sr=44100, levels=3, downs_t=(3, 2, 2), strides_t=(2, 2, 2), emb_width=64, l_bins=2048, l_mu=0.99,
        commit=0.02, spectral=0.0, multispectral=1.0, hvqvae_multipliers=(2, 1, 1), loss_fn="lmix",
        lmix_l2=1.0, lmix_linf=0.02, lmix_l1=0.0, linf_k=2048, width=32, depth=4, m_conv=1.0,
        dilation_growth_rate=3, dilation_cycle=None, reverse_decoder_dilation=True, revival_threshold=1.0,
    ))
    # Paper: 9-second clips (393,216 samples), batch 256, lr 3e-4.
    c.data = ml_collections.ConfigDict(dict(dataset_dir="", split="train", sample_length=393216, batch_size=256,
                                            aug_shift=True, aug_blend=True, seed=0, worker_count=0))
    c.optim = ml_collections.ConfigDict(dict(lr=3e-4, weight_decay=0.0, lr_warmup=100, grad_clip=1.0,
                                             ema_mu=0.999))
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    c.train = ml_collections.ConfigDict(dict(num_steps=384_000, log_every=100, eval_every=5000,
                                             checkpoint_every=5000, keep_checkpoints=3, seed=0,
                                             max_seconds=0.0, init_from=""))
    return c
