"""Defaults shared by every prior config: the original `hparams.py` DEFAULTS for priors, named as there."""
import ml_collections

from configs import vqvae


def prior_defaults(level: int):
    c = ml_collections.ConfigDict()
    c.model = "prior"
    c.vqvae = vqvae.get_config().vqvae          # the VQ-VAE whose codes this prior models
    c.vqvae_checkpoint = ""                     # a VQ-VAE workdir, for pre-encoding and sampling
    c.prior = ml_collections.ConfigDict(dict(
        level=level,
        # transformer (prior_attn_block)
        n_ctx=1024, prior_width=128, prior_depth=3, heads=1, attn_order=0, blocks=None, spread=None,
        zero_out=False, res_scale=False, init_scale=1.0, m_attn=0.25, m_mlp=1.0, c_res=0,
        merged_decoder=False, single_enc_dec=False,
        # labels (artist, genre, timing)
        labels=True, labels_v3=False, y_bins=(120, 4111), t_bins=128, max_bow_genre_size=5,
        min_duration=0.0, max_duration=600.0,
        # lyrics
        use_tokens=False, n_tokens=0, n_vocab=80, prime_loss_fraction=0.0,
        prime_width=128, prime_depth=3, prime_heads=1, prime_attn_order=0, prime_blocks=None,
        prime_init_scale=1.0, prime_m_attn=0.25, prime_m_mlp=1.0, prime_zero_out=False,
        prime_res_scale=False, prime_c_res=0,
        # upsampler conditioner (cond_conv_block)
        cond_width=128, cond_depth=3, cond_m_conv=1.0, cond_zero_out=False, cond_res_scale=False,
        cond_dilation_growth_rate=1, cond_dilation_cycle=None, cond_c_res=0,
        # sampling
        fp16_params=False, alignment_layer=None, alignment_head=None,
    ))
    # dataset_dir: audio (jukejax.data build); codes_dir: pre-encoded codes (made from dataset_dir with
    # vqvae_checkpoint when empty); raw_audio: encode audio every step instead.
    c.data = ml_collections.ConfigDict(dict(dataset_dir="", codes_dir="", raw_audio=False, split="train",
                                            batch_size=4, aug_shift=True, aug_blend=True, seed=0,
                                            max_bow_genre_size=5, worker_count=0))
    c.optim = ml_collections.ConfigDict(dict(lr=3e-4, beta2=0.999, weight_decay=0.0, lr_warmup=100,
                                             grad_clip=1.0, ema_mu=0.999))
    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
    c.train = ml_collections.ConfigDict(dict(num_steps=1_000_000, log_every=100, eval_every=5000,
                                             checkpoint_every=1000, keep_checkpoints=3, seed=0,
                                             max_seconds=0.0, init_from=""))
    return c


def upsampler(level: int):
    """The released upsamplers (original `upsamplers` hps): 1920 wide, 72 layers, 1 head, attn_order 2."""
    c = prior_defaults(level)
    c.prior.update(dict(n_ctx=8192, prior_width=1920, prior_depth=72, heads=1, attn_order=2, blocks=128,
                        init_scale=0.4, c_res=1, cond_width=1024, cond_depth=16, cond_dilation_growth_rate=3,
                        cond_dilation_cycle=8, cond_c_res=1, use_tokens=False, prime_loss_fraction=0.0,
                        fp16_params=False))
    return c
