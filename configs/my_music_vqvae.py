"""A VQ-VAE for your own music, sized for a laptop CPU and clips of a few seconds and up: the released structure
(3 levels, hops 8/32/128) at 22,050 Hz, 32 wide, 256 codes per level, trained on 0.37 s windows. About half a
second per step on 2 CPU cores; a 10-step warm-up, so a few dozen steps already reconstruct the rough spectrum
(the bundled demo model's VQ-VAE is this size, trained for 3000 steps).

Build the dataset at this sample rate, then train (README, "Train on your own music"):
  python -m jukejax.data build --audio_dir=MUSIC --data_dir=DATA --sr=22050 --channels=1
  python train.py --config=configs/my_music_vqvae.py --config.data.dataset_dir=DATA --workdir=runs/my_vqvae
"""
from configs import vqvae


def get_config():
    c = vqvae.get_config()
    c.vqvae.update(dict(sr=22050, levels=3, downs_t=(3, 2, 2), strides_t=(2, 2, 2), hvqvae_multipliers=(1, 1, 1),
                        emb_width=32, l_bins=256, width=32, depth=3, linf_k=512))
    c.data.update(dict(sample_length=8192, batch_size=4))
    c.optim.update(dict(lr=1e-3, lr_warmup=10, ema_mu=0.99))
    c.mesh.update(dict(data=1, fsdp=1, tensor=1))
    c.train.update(dict(num_steps=3000, log_every=50, eval_every=500, checkpoint_every=500, keep_checkpoints=1))
    return c
