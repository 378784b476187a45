"""A VQ-VAE for your own music, sized for a laptop CPU and clips of a few seconds and up: the released structure
(3 levels, hops 8/32/128) at 22,050 Hz, 32 wide, 256 codes per level, trained on 0.37 s windows. About half a
second per step on 2 CPU cores; a 10-step warm-up, so a few dozen steps already reconstruct the rough spectrum
(the bundled demo model's VQ-VAE is this size, trained for 3000 steps).

Build the dataset at this sample rate, then train (README, "Train on your own music"):
  python -m jukejax.data build --audio_dir=MUSIC --data_dir=DATA --sr=22050 --channels=1
  python train.py --config=configs/my_music_vqvae.py --config.data.dataset_dir=DATA --workdir=runs/my_vqvae
"""
from jukejax import presets


def get_config():
    return presets.my_music_vqvae()
