"""Fine-tune a model's prior on your own music: the prior's own config (read from the model folder), started
from its EMA weights (`train.init_from`), its artist/genre tables given room for your new names, and the
model's VQ-VAE encoding your dataset. The argument after `:` is the prior's folder in a model folder, e.g. a
converted 1b_lyrics (`python -m jukejax.convert ... --out models/1b_lyrics`).

Build the dataset at the model's sample rate with its name tables extended (known names keep their ids, new
ones are appended), then fine-tune (README, "Fine-tune a released model on your music"):
  python -m jukejax.data build --audio_dir=MUSIC --data_dir=DATA_1B \
      --artist_ids=models/1b_lyrics/ids/v3_artist_ids.txt --genre_ids=models/1b_lyrics/ids/v3_genre_ids.txt
  python train.py --config=configs/my_music_finetune.py:models/1b_lyrics/prior_level_2 \
      --config.data.dataset_dir=DATA_1B --workdir=runs/my_1b_prior

y_bins grows by (16 genres, 64 artists) over the model's: the new rows of the label embeddings start fresh, the
model's rows are kept. More new names than that: raise `--config.prior.y_bins`.
"""
import json
import pathlib

import ml_collections

from jukejax import presets

NEW_GENRES, NEW_ARTISTS = 16, 64


def get_config(prior_dir: str = ""):
    if not prior_dir:
        raise ValueError("name the prior to fine-tune after the config file: "
                         "--config=configs/my_music_finetune.py:MODEL/prior_level_2")
    folder = pathlib.Path(prior_dir)
    path = folder / "config.json"
    if not path.is_file():
        raise ValueError(f"{path}: not found; expected a prior folder of a model folder (MODEL/prior_level_L)")
    model = ml_collections.ConfigDict(json.loads(path.read_text()))
    c = presets.prior(int(model.prior.level), model.vqvae)
    c.prior.update(model.prior.to_dict())
    if c.prior.labels:
        genres, artists = c.prior.y_bins
        c.prior.y_bins = (genres + NEW_GENRES, artists + NEW_ARTISTS)
    c.vqvae_checkpoint = str(folder.parent / "vqvae")
    c.data.batch_size = 4
    if "max_bow_genre_size" in c.data:
        c.data.max_bow_genre_size = c.prior.max_bow_genre_size
    c.optim.update(dict(lr=1e-4, lr_warmup=10))
    c.train.update(dict(init_from=str(folder), num_steps=2000, log_every=50, eval_every=1000, checkpoint_every=500,
                        keep_checkpoints=1))
    return c
