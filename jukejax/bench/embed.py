"""Embedding throughput: jukemir-length clips (8192 top-level tokens) through a 5b-shaped top prior cut at half
its depth (jukemir takes layer 36 of 72), mean-pooled, jukejax vs the PyTorch port.

The prior is bench-sized (width 256, 12 layers, 4 heads, attention order 2 with 128 blocks, merged decoder,
v2 labels with timing: the 5b's structure). The work timed per call: label/timing embeddings, token embedding,
the first 6 blocks, mean over the 8192 frames, for a batch of clips. The port side is jukemirlib's
`get_activations_custom` on `transformers`' JukeboxPrior (embedding, shift, label embedding at position 0,
position + timing embedding, then `_attn_mods[:6]`). The VQ-VAE encode of the clip is not timed (see the vqvae
row). embeddings/s = batch / seconds; the floor is the matmul rate over the FLOPs XLA counts for the function.
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import torch

from jukejax.bench.harness import Row, alternate, check_number
from jukejax.bench.priors import BenchPrior, hf_prior, jukejax_config
from jukejax.embed.model import PriorActivations, _keep_param, truncated_config
from jukejax.embed.presets import JUKEMIR_TOTAL_SECONDS
from jukejax.prior.torch_keys import load_torch_prior

EMBED_PRIOR = BenchPrior("embed", "5b-like w256 d12, layer 6", 2, (
    ("n_ctx", 8192), ("prior_width", 256), ("prior_depth", 12), ("heads", 4), ("attn_order", 2), ("blocks", 128),
    ("min_duration", 60.0), ("max_duration", 600.0), ("merged_decoder", True)))
LAYER = 6


def port_activations(prior, tokens: torch.Tensor, y: torch.Tensor, layer: int) -> torch.Tensor:
    """The port's hidden state after `layer` blocks (jukemirlib `get_activations_custom`), (N, T, width)."""
    x_cond, y_cond, _ = prior.get_cond(None, y)
    ar = prior.prior
    h = ar.embed_tokens(tokens)
    h = torch.cat((h[:, -1:], h[:, :-1]), dim=1)
    h[:, 0] = y_cond.view(tokens.shape[0], ar.width)
    h = h + ar.pos_emb() + x_cond
    for block in ar.transformer._attn_mods[:layer]:
        h = block(h, last_encoder_hidden_states=None)
    return h


def jukemir_labels(pc, batch: int) -> np.ndarray:
    hop = pc.raw_to_tokens
    total = JUKEMIR_TOTAL_SECONDS * pc.vqvae.sr // hop * hop
    genres = [0] + [-1] * (pc.hps.max_bow_genre_size - 1)
    return np.asarray([[total, 0, pc.sample_length, 0, *genres]] * batch, np.int64)


def embed_row(batch: int, repeats: int, matmul_flops: float, dtype: str = "float32", warmup: int = 1,
              device: str = "cpu", log: Callable[[str], None] = print, depth: int = 0) -> Row:
    bench = EMBED_PRIOR if not depth else EMBED_PRIOR.shallow(max(depth, 2))
    layer = min(LAYER, bench.hps["prior_depth"] // 2)
    full = jukejax_config(bench, dtype)
    config = truncated_config(full, layer)
    hf = hf_prior(jukejax_config(bench, "float32"), seed=0)
    params = load_torch_prior(hf.state_dict(), jukejax_config(bench, "float32"), hf=True)
    params = _prune_tree(params, layer)
    params = jax.tree.map(jnp.asarray, params)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, full.vqvae.l_bins, (batch, full.n_ctx)).astype(np.int32)
    y = jukemir_labels(full, batch)
    model = PriorActivations(config)

    def embed(params, tokens, y):
        h = model.apply({"params": params}, tokens, y, method=PriorActivations.activations)
        return jnp.mean(h, axis=1)

    fn = jax.jit(embed)
    args = (params, jnp.asarray(tokens), jnp.asarray(y))
    flops = float((fn.lower(*args).cost_analysis() or {}).get("flops", 0.0))

    def jax_call():
        jax.block_until_ready(fn(*args))

    hf.to(device)
    t_tokens, t_y = torch.from_numpy(tokens.astype(np.int64)).to(device), torch.from_numpy(y).to(device)

    def torch_call():
        with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=torch.bfloat16,
                                             enabled=dtype == "bfloat16"):
            port_activations(hf, t_tokens, t_y, layer).mean(dim=1)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    with torch.no_grad():
        want = port_activations(hf, t_tokens, t_y, layer).mean(dim=1).float().cpu().numpy()
    got = np.asarray(fn(*args))
    parity = float(np.abs(got - want).max() / np.abs(want).max())
    timings = alternate({"jukejax": jax_call, "pytorch": torch_call}, repeats, warmup)
    t = timings["jukejax"]
    row = Row(name=f"embed {bench.title}: {full.n_ctx}-token clips, mean-pooled", section="embed",
              unit="emb/s", batch=batch, jukejax=check_number("jukejax embed", batch / t.median_s),
              pytorch=check_number("pytorch embed", batch / timings["pytorch"].median_s),
              floor=batch * matmul_flops / flops if flops > 0 else float("nan"), floor_kind="matmul",
              compile_s=t.compile_s, dtype=dtype,
              details=dict(tokens=full.n_ctx, layer=layer, depth=full.transformer.depth, model_flops=flops,
                           repeats=repeats, rel_err_vs_port=parity, jukejax_seconds=t.seconds,
                           pytorch_seconds=timings["pytorch"].seconds))
    log(f"  {row.name}: jukejax {row.jukejax:.3f} emb/s, port {row.pytorch:.3f}, MFU {100 * row.floor_fraction:.0f}%, "
        f"compile {t.compile_s:.1f} s, rel err vs port {parity:.1e}")
    return row


def _prune_tree(params: Dict, depth: int) -> Dict:
    def walk(tree, path):
        if not isinstance(tree, dict):
            return tree
        out = {}
        for k, v in tree.items():
            keys = path + (k,)
            if not isinstance(v, dict) and not _keep_param(keys, depth):
                continue
            if isinstance(v, dict) and len(keys) == 3 and not _keep_param(keys, depth):
                continue
            if isinstance(v, dict) and keys == ("prior", "x_out"):
                continue
            out[k] = walk(v, keys)
        return out
    return walk(params, ())


__all__: Sequence[str] = ("embed_row", "port_activations", "EMBED_PRIOR")
