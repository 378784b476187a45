"""The released Jukebox hyperparameters, the original README's small recipes, the bundled demo's and a laptop
recipe for your own music, as named presets.

Each preset is a whole ConfigDict (`model`, `vqvae`, `prior`, `data`, `optim`, `mesh`, `train`) whose sections
are made from the typed dataclasses (`jukejax.config.config_section`), so every default is defined once, in
the dataclass, and a preset states only what its model changes. The released values are openai/jukebox's
`jukebox/hparams.py` (`vqvae`, `upsamplers`, `prior_5b`, `prior_5b_lyrics`, `prior_1b_lyrics`) and its
`make_models.MODELS` (`MODELS` here). `configs/*.py` are thin `get_config()` files over these presets;
`python -m jukejax.convert --model 1b_lyrics` reads them, so an installed jukejax needs no checkout.

    presets.get("prior_1b_lyrics")              # a fresh ConfigDict, safe to change
    presets.MODELS["5b"]                        # ("vqvae", "upsampler_level_0", "upsampler_level_1", "prior_5b")
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import ml_collections

from jukejax.config import ConfigError, DataConfig, MeshConfig, OptimConfig, TrainConfig, VQVAEConfig, config_section
from jukejax.prior.prior import PriorHParams

# Data fields a prior does not read: its window is n_ctx tokens of its level, audio is always mixed to mono,
# and it reads pre-encoded codes (or encodes the jukejax_music dataset) forever.
PRIOR_DATA_OMIT = ("sample_length", "mono", "dataset_name", "num_epochs")
# Data fields only a prior reads.
VQVAE_DATA_OMIT = ("raw_audio", "codes_dir")


# ------------------------------------------------------------------------------------------------------------
# Bases


def vqvae() -> ml_collections.ConfigDict:
    """The released VQ-VAE (`hparams.py` `vqvae`; the `VQVAEConfig` defaults): 44.1 kHz, 3 levels with hop
    lengths 8/32/128, 2048 codes of width 64 per level, lmix + multi-scale spectral + commit losses;
    1,485,763 parameters. Trained as in the paper: 9-second clips (393,216 samples), batch 256, lr 3e-4,
    384k steps."""
    c = ml_collections.ConfigDict()
    c.model = "vqvae"
    c.vqvae = config_section(VQVAEConfig)
    c.data = config_section(DataConfig, omit=VQVAE_DATA_OMIT, sample_length=393216, batch_size=256)
    c.optim = config_section(OptimConfig)
    c.mesh = config_section(MeshConfig)
    c.train = config_section(TrainConfig, num_steps=384_000, eval_every=5000, checkpoint_every=5000)
    return c


def prior(level: int, vqvae_section: ml_collections.ConfigDict | None = None, **hps) -> ml_collections.ConfigDict:
    """A prior at VQ-VAE `level` with the `PriorHParams` defaults (the original `hparams.py` DEFAULTS) changed
    by `hps`, over `vqvae_section` (default: the released VQ-VAE's). Parameters split over `fsdp`."""
    c = ml_collections.ConfigDict()
    c.model = "prior"
    c.vqvae = vqvae_section if vqvae_section is not None else vqvae().vqvae   # whose codes this prior models
    c.vqvae_checkpoint = ""          # a VQ-VAE workdir, for pre-encoding and sampling
    c.prior = config_section(PriorHParams, level=level, **hps)
    c.data = config_section(DataConfig, omit=PRIOR_DATA_OMIT)
    c.optim = config_section(OptimConfig)
    c.mesh = config_section(MeshConfig, data=1, fsdp=-1)
    c.train = config_section(TrainConfig, num_steps=1_000_000, eval_every=5000)
    return c


# ------------------------------------------------------------------------------------------------------------
# The released models


def _upsampler(level: int, cond_res_scale: bool) -> ml_collections.ConfigDict:
    return prior(level, n_ctx=8192, prior_width=1920, prior_depth=72, heads=1, attn_order=2, blocks=128,
                 init_scale=0.4, c_res=1, cond_width=1024, cond_depth=16, cond_dilation_growth_rate=3,
                 cond_dilation_cycle=8, cond_c_res=1, cond_res_scale=cond_res_scale)


def upsampler_level_0() -> ml_collections.ConfigDict:
    """The released bottom-level upsampler (`5b/prior_level_0.pth.tar`, `hparams.py` `upsampler_level_0`):
    8192 level-0 tokens (1.49 s), 1920 wide, 72 layers, 1 head, attn_order 2, conditioned on level-1 codes
    through the deconv + dilated-resnet conditioner; 981,298,176 parameters."""
    return _upsampler(0, cond_res_scale=False)


def upsampler_level_1() -> ml_collections.ConfigDict:
    """The released middle-level upsampler (`5b/prior_level_1.pth.tar`): 8192 level-1 tokens (5.94 s), as
    level 0 but its conditioner scales residuals by 1/sqrt(depth) (`cond_res_scale`); 981,298,176 parameters."""
    return _upsampler(1, cond_res_scale=True)


def prior_5b() -> ml_collections.ConfigDict:
    """The released 5B top prior without lyrics (`5b/prior_level_2.pth.tar`): 8192 top tokens (23.8 s), width
    4800, 72 layers, 8 heads, attn_order 2, v2 labels with timing; 5,060,452,800 parameters."""
    c = prior(2, n_ctx=8192, prior_width=4800, prior_depth=72, heads=8, attn_order=2, blocks=128, init_scale=0.1,
              c_res=1, min_duration=60.0, max_duration=600.0, merged_decoder=True, fp16_params=True)
    c.optim.beta2 = 0.925
    return c


def prior_5b_lyrics() -> ml_collections.ConfigDict:
    """The released 5B top prior with lyrics (`5b_lyrics/prior_level_2.pth.tar`): 79 layers (attn_order 10,
    cross-attention to a separate 18-layer lyric encoder over 512 characters), v2 labels with timing;
    5,640,506,800 parameters with the lyric encoder. Lyric alignment: layer 68, head 2."""
    return prior(2, n_ctx=8192, prior_width=4800, prior_depth=79, heads=8, attn_order=10, blocks=128,
                 init_scale=0.1, c_res=1, prime_width=1280, prime_depth=18, prime_heads=4, prime_attn_order=2,
                 prime_blocks=32, prime_init_scale=0.7, prime_c_res=1, min_duration=23.8, max_duration=600.0,
                 use_tokens=True, n_tokens=512, prime_loss_fraction=0.4, merged_decoder=True, fp16_params=True,
                 alignment_layer=68, alignment_head=2)


def prior_1b_lyrics() -> ml_collections.ConfigDict:
    """The released 1B top prior with lyrics (`1b_lyrics/prior_level_2.pth.tar`): one sequence of 384 lyric
    characters + 6144 top tokens (17.8 s), width 2048, 72 layers, 2 heads, attn_order 12 (prime attention),
    v3 labels with timing, output tied to the embedding; 942,643,200 parameters. Lyric alignment: layer 63,
    head 0."""
    return prior(2, n_ctx=6144, prior_width=2048, prior_depth=72, heads=2, attn_order=12, blocks=64,
                 init_scale=0.2, c_res=1, labels_v3=True, y_bins=(604, 7898), t_bins=64, max_bow_genre_size=1,
                 n_vocab=79, min_duration=17.84, max_duration=600.0, use_tokens=True, n_tokens=384,
                 prime_loss_fraction=0.4, single_enc_dec=True, alignment_layer=63, alignment_head=0)


# ------------------------------------------------------------------------------------------------------------
# The original README's small recipes (`hparams.py` `small_vqvae`, `small_prior`, ...), to train from scratch


def small_vqvae() -> ml_collections.ConfigDict:
    """`small_vqvae`: 22,050 Hz, 2 levels with downs_t (5, 3) (hops 32 and 256), 1024 codes per level, plain
    l2 reconstruction loss (the README's run: --sample_length=262144 --bs=4 --aug_shift --aug_blend)."""
    c = vqvae()
    c.vqvae.update(dict(sr=22050, levels=2, downs_t=(5, 3), strides_t=(2, 2), hvqvae_multipliers=(1, 1),
                        l_bins=1024, loss_fn="l2"))
    c.data.update(dict(sample_length=262144, batch_size=4))
    c.train.update(dict(num_steps=100_000, checkpoint_every=1000))
    return c


def _small(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    c.optim.weight_decay = 0.01
    return c


def small_prior() -> ml_collections.ConfigDict:
    """`small_prior` on top of `small_vqvae`: a top (level 1) prior of 8192 tokens, width 1024, 48 layers,
    1 head, attn_order 2, no labels (README recipe: --levels=2 --level=1 --sample_length=2097152)."""
    return _small(prior(1, small_vqvae().vqvae, n_ctx=8192, prior_width=1024, prior_depth=48, heads=1, c_res=1,
                        attn_order=2, blocks=64, init_scale=0.7, labels=False))


def small_upsampler() -> ml_collections.ConfigDict:
    """`small_upsampler` on top of `small_vqvae`: a level-0 prior of 8192 tokens conditioned on level-1 codes
    (conditioner width 512, depth 16, dilation cycle 8), no labels (README recipe: --levels=2 --level=0
    --sample_length=262144)."""
    return _small(prior(0, small_vqvae().vqvae, n_ctx=8192, prior_width=1024, prior_depth=48, heads=1, c_res=1,
                        attn_order=2, blocks=64, init_scale=0.7, cond_width=512, cond_depth=16,
                        cond_dilation_growth_rate=3, cond_dilation_cycle=8, cond_c_res=1, labels=False))


# v3-style labels with timing for a new dataset: set y_bins to (genres, artists) of yours.
_SMALL_LABELS = dict(labels=True, labels_v3=True, y_bins=(10, 100), max_bow_genre_size=1, min_duration=60.0,
                     max_duration=600.0, t_bins=64)


def small_labelled_prior() -> ml_collections.ConfigDict:
    """`small_labelled_prior`: `small_prior` with v3 artist/genre labels and timing, as a new top prior on the
    released VQ-VAE (README recipe: --levels=3 --level=2 --sample_length=1048576 --labels=True)."""
    return _small(prior(2, n_ctx=8192, prior_width=1024, prior_depth=48, heads=1, c_res=1, attn_order=2,
                        blocks=64, init_scale=0.7, **_SMALL_LABELS))


def small_single_enc_dec_prior() -> ml_collections.ConfigDict:
    """`small_single_enc_dec_prior`: 384 lyric characters + 6144 top tokens in one sequence (attn_order 12,
    prime attention), v3 labels with timing, on the released VQ-VAE (README recipe: --levels=3 --level=2
    --sample_length=786432 --labels=True)."""
    return _small(prior(2, n_ctx=6144, prior_width=1024, prior_depth=48, heads=2, attn_order=12, blocks=64,
                        init_scale=0.7, c_res=1, use_tokens=True, n_tokens=384, prime_loss_fraction=0.4,
                        single_enc_dec=True, n_vocab=79, **_SMALL_LABELS))


def small_sep_enc_dec_prior() -> ml_collections.ConfigDict:
    """`small_sep_enc_dec_prior`: 6144 top tokens with cross-attention (attn_order 8) to a separate lyric
    encoder (width 256, depth 9) over 384 characters, v3 labels with timing (README recipe: --levels=3
    --level=2 --sample_length=786432 --labels=True)."""
    return _small(prior(2, n_ctx=6144, prior_width=1024, prior_depth=50, heads=2, attn_order=8, blocks=64,
                        init_scale=0.7, c_res=1, prime_width=256, prime_depth=9, prime_heads=2, prime_attn_order=2,
                        prime_blocks=32, prime_init_scale=0.7, prime_c_res=1, use_tokens=True, n_tokens=384,
                        prime_loss_fraction=0.4, n_vocab=79, **_SMALL_LABELS))


# ------------------------------------------------------------------------------------------------------------
# The bundled demo model (models/demo, trained by scripts/train_demo.py on rendered music21 scores)


def demo_vqvae() -> ml_collections.ConfigDict:
    """The released VQ-VAE structure (3 levels, hops 8/32/128) shrunk to train on 2 CPU cores in minutes, at
    22.05 kHz."""
    c = vqvae()
    c.vqvae.update(dict(sr=22050, hvqvae_multipliers=(1, 1, 1), emb_width=32, l_bins=256, depth=3, linf_k=512))
    c.data.update(dict(sample_length=8192, batch_size=4))
    c.optim.update(dict(lr=1e-3, lr_warmup=50, ema_mu=0.99))
    c.train.update(dict(num_steps=3000, log_every=50, eval_every=500, checkpoint_every=500, keep_checkpoints=1))
    return c


def _demo_training(c: ml_collections.ConfigDict, num_steps: int) -> ml_collections.ConfigDict:
    c.data.batch_size = 16
    c.optim.update(dict(lr=1e-3, lr_warmup=100, ema_mu=0.99, weight_decay=0.01))
    c.mesh.update(dict(data=1, fsdp=1, tensor=1))
    c.train.update(dict(num_steps=num_steps, log_every=50, eval_every=1000, checkpoint_every=1000,
                        keep_checkpoints=1))
    return c


def demo_prior() -> ml_collections.ConfigDict:
    """The demo's top prior, the 1b_lyrics structure shrunk: one sequence of 64 lyric characters + 256 top
    codes (2 s), attn_order 12 (prime attention at layer 15), artist = composer, genre = corpus collection,
    timing. scripts/train_demo.py sets y_bins from the dataset's name tables."""
    c = prior(2, demo_vqvae().vqvae, n_ctx=256, prior_width=128, prior_depth=16, heads=2, attn_order=12,
              blocks=16, init_scale=0.5, labels_v3=True, y_bins=(16, 16), max_bow_genre_size=1, t_bins=32,
              n_vocab=79, min_duration=1.0, max_duration=600.0, use_tokens=True, n_tokens=64,
              prime_loss_fraction=0.4, single_enc_dec=True, alignment_layer=15, alignment_head=0)
    return _demo_training(c, num_steps=3000)


def demo_upsampler(level: int) -> ml_collections.ConfigDict:
    """The demo's upsamplers: 512 level-1 codes (1 s) or 1024 level-0 codes (0.5 s), conditioned on the
    codes above through the deconv + dilated-resnet conditioner, artist/genre labels (no timing), attn_order 2."""
    n_ctx, blocks = {1: (512, 16), 0: (1024, 32)}[level]
    c = prior(level, demo_vqvae().vqvae, n_ctx=n_ctx, prior_width=96, prior_depth=6, heads=1, attn_order=2,
              blocks=blocks, init_scale=0.5, cond_width=64, cond_depth=4, cond_dilation_growth_rate=3,
              cond_dilation_cycle=4, cond_res_scale=level == 1, labels_v3=True, y_bins=(16, 16),
              max_bow_genre_size=1)
    return _demo_training(c, num_steps=2000)


# ------------------------------------------------------------------------------------------------------------
# Your own music on a laptop CPU: the demo's structure, trained with a shorter warm-up and smaller batches


def _my_music(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    c.optim.lr_warmup = 10
    c.mesh.update(dict(data=1, fsdp=1, tensor=1))
    if c.model == "prior":
        c.prior.y_bins = (32, 128)       # (genres, artists): room for a personal collection's names
        c.data.batch_size = 8
        c.train.checkpoint_every = 500
    return c


def my_music_vqvae() -> ml_collections.ConfigDict:
    """`demo_vqvae` for your own music at 22,050 Hz: 0.37 s windows, a 10-step warm-up."""
    return _my_music(demo_vqvae())


def my_music_prior() -> ml_collections.ConfigDict:
    """`demo_prior` for your own music: y_bins (32, 128), batch 8, a 10-step warm-up."""
    return _my_music(demo_prior())


def my_music_upsampler(level: int) -> ml_collections.ConfigDict:
    """`demo_upsampler(level)` for your own music: y_bins (32, 128), batch 8, a 10-step warm-up."""
    return _my_music(demo_upsampler(level))


PRESETS: Dict[str, Callable[[], ml_collections.ConfigDict]] = {
    "vqvae": vqvae,
    "upsampler_level_0": upsampler_level_0,
    "upsampler_level_1": upsampler_level_1,
    "prior_5b": prior_5b,
    "prior_5b_lyrics": prior_5b_lyrics,
    "prior_1b_lyrics": prior_1b_lyrics,
    "small_vqvae": small_vqvae,
    "small_prior": small_prior,
    "small_upsampler": small_upsampler,
    "small_labelled_prior": small_labelled_prior,
    "small_single_enc_dec_prior": small_single_enc_dec_prior,
    "small_sep_enc_dec_prior": small_sep_enc_dec_prior,
    "demo_vqvae": demo_vqvae,
    "demo_prior": demo_prior,
    "demo_upsampler_1": lambda: demo_upsampler(1),
    "demo_upsampler_0": lambda: demo_upsampler(0),
    "my_music_vqvae": my_music_vqvae,
    "my_music_prior": my_music_prior,
    "my_music_upsampler_1": lambda: my_music_upsampler(1),
    "my_music_upsampler_0": lambda: my_music_upsampler(0),
}

# openai/jukebox `make_models.MODELS`: the presets of each released model, VQ-VAE then levels 0, 1, 2.
MODELS: Dict[str, Tuple[str, ...]] = {
    "5b": ("vqvae", "upsampler_level_0", "upsampler_level_1", "prior_5b"),
    "5b_lyrics": ("vqvae", "upsampler_level_0", "upsampler_level_1", "prior_5b_lyrics"),
    "1b_lyrics": ("vqvae", "upsampler_level_0", "upsampler_level_1", "prior_1b_lyrics"),
}


def get(name: str) -> ml_collections.ConfigDict:
    """A fresh ConfigDict of the preset `name` (one of `PRESETS`)."""
    if name not in PRESETS:
        raise ConfigError(f"no preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]()
