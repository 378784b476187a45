"""VQ-VAE throughput at the released shapes (`jukejax.presets.vqvae`): encode all 3 levels + decode level 0.

The port's `JukeboxVQVAE` is built with the same shapes and random weights (its init, plus random codebooks),
and jukejax's variables come from it through `jukejax.vqvae.load_hf_state_dict`. The work timed per call is
`encode(x)` (codes of levels 0, 1, 2) then `decode([z0], start_level=0, end_level=1)` back to audio, batch 1.
audio-seconds/s = batch * seconds of audio / seconds. The floor is the matmul rate over the convolution FLOPs
XLA counts for the jukejax function (a compute roofline: the convs are wide enough to be FLOP-bound).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch

from jukejax import presets
from jukejax.bench.harness import Row, alternate, check_number
from jukejax.config import VQVAEConfig, build
from jukejax.convert.hf_config import hf_vqvae_kwargs
from jukejax.vqvae import VQVAE, load_hf_state_dict


def released_config() -> VQVAEConfig:
    return build(VQVAEConfig, presets.vqvae().vqvae, "vqvae")


def hf_vqvae(config: VQVAEConfig, sample_length: int, seed: int = 0):
    from transformers.models.deprecated.jukebox import JukeboxVQVAE, JukeboxVQVAEConfig
    hf_config = JukeboxVQVAEConfig(**hf_vqvae_kwargs(config, sample_length))
    torch.manual_seed(seed)
    model = JukeboxVQVAE(hf_config)
    model.post_init()
    with torch.no_grad():  # the codebook buffers start at zero; any values do for timing
        for block in model.bottleneck.level_blocks:
            block.codebook.copy_(0.1 * torch.randn_like(block.codebook))
    return model.eval()


def vqvae_row(seconds_of_audio: float, repeats: int, matmul_flops: float, dtype: str = "float32",
              warmup: int = 1, device: str = "cpu", log: Callable[[str], None] = print) -> Row:
    config = released_config()
    hop = config.hop_lengths[-1]
    length = int(round(seconds_of_audio * config.sr / hop)) * hop
    audio_s = length / config.sr
    hf = hf_vqvae(config, length)
    state = {k: v.numpy() for k, v in hf.state_dict().items()}
    params, codebook = load_hf_state_dict(state, config)
    variables = jax.tree.map(jnp.asarray, {"params": params, "codebook": codebook})
    hf.to(device)
    x = np.clip(0.3 * np.random.default_rng(0).standard_normal((1, length, 1)), -1, 1).astype(np.float32)
    model = VQVAE(config, dtype=jnp.dtype(dtype))

    def encode_decode(variables, x):
        zs = model.apply(variables, x, method=model.encode)
        audio = model.apply(variables, zs[:1], start_level=0, end_level=1, method=model.decode)
        return zs, audio

    fn = jax.jit(encode_decode)
    x_jax = jnp.asarray(x)
    flops = float((fn.lower(variables, x_jax).cost_analysis() or {}).get("flops", 0.0))

    def jax_call():
        jax.block_until_ready(fn(variables, x_jax))

    x_torch = torch.from_numpy(x).to(device)

    def torch_call():
        with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=torch.bfloat16,
                                             enabled=dtype == "bfloat16"):
            zs = hf.encode(x_torch)
            hf.decode(zs[:1], start_level=0, end_level=1)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    timings = alternate({"jukejax": jax_call, "pytorch": torch_call}, repeats, warmup)
    t = timings["jukejax"]
    row = Row(name="vqvae released: encode 3 levels + decode level 0", section="vqvae", unit="audio-s/s", batch=1,
              jukejax=check_number("jukejax vqvae", audio_s / t.median_s),
              pytorch=check_number("pytorch vqvae", audio_s / timings["pytorch"].median_s),
              floor=audio_s * matmul_flops / flops if flops > 0 else float("nan"), floor_kind="matmul",
              compile_s=t.compile_s, dtype=dtype,
              details=dict(audio_seconds=audio_s, samples=length, model_flops=flops, repeats=repeats,
                           jukejax_seconds=t.seconds, pytorch_seconds=timings["pytorch"].seconds))
    log(f"  {row.name}: jukejax {row.jukejax:.2f} audio-s/s, port {row.pytorch:.2f}, "
        f"MFU {100 * row.floor_fraction:.0f}%, compile {t.compile_s:.1f} s")
    return row
