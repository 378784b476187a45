"""The three bench priors, built twice with the same random weights (HF port -> `load_torch_prior`), and their
decode and training benchmarks with roofline floors.

(a) upsampler-shaped: width 512, 12 layers, 1 head (attention width 128), n_ctx 2048, blocks 32, attn_order 2,
    music-token conditioner of width 128 and depth 4, v2 labels, 2048 codes. ~10.5 M params read per step.
(b) 1b_lyrics-shaped top prior: width 512, 16 layers, 2 heads, n_ctx 1024 + 128 lyric tokens in one
    encoder-decoder sequence (attn_order 12: block/column/previous-block + a prime-attention layer), v3 labels
    with timing.
(c) overhead-bound: (a) at width 128 (attention width 32): ~0.9 M params, so per-token dispatch dominates.

Decode samples N new positions per call with the cached samplers: the port's
`JukeboxConditionalAutoregressive.sample` (a, c) / `primed_sample` after the 128 lyric tokens (b), and jukejax's
`sample_window` (n_prefix 0 or 128, n_total = n_prefix + N). Both take the conditioning from their own
`get_cond` outside the timed call, temperature 1, top_k 0. tokens/s = batch * N / seconds.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from jukejax import presets
from jukejax.bench.harness import Row, alternate, check_number
from jukejax.prior.attention import (BLOCK, CROSS, DENSE, PREV_BLOCK, PRIME, SUMMARY, SUMMARY_SPREAD,
                                     TRANSPOSE_BLOCK)
from jukejax.prior.prior import Prior, PriorConfig, prior_config
from jukejax.prior.torch_keys import load_torch_prior
from jukejax.sample import decode
from jukejax.sample.cache import layer_shape


@dataclasses.dataclass(frozen=True)
class BenchPrior:
    key: str
    title: str
    level: int                   # VQ-VAE level (0 = bottom); the HF port numbers its priors from the top
    prior: Tuple[Tuple[str, Any], ...]   # PriorHParams changed from their defaults (jukejax.presets.prior)

    @property
    def hps(self) -> Dict[str, Any]:
        return dict(self.prior)

    def shallow(self, depth: int) -> "BenchPrior":
        """The same prior with `depth` layers (the --quick smoke test: same code paths, a fraction of the
        compile time)."""
        hps = dict(self.prior, prior_depth=depth)
        title = self.title.rsplit(" d", 1)[0] + f" d{depth}"
        return dataclasses.replace(self, title=title, prior=tuple(hps.items()))


_UPSAMPLER = (("n_ctx", 2048), ("heads", 1), ("attn_order", 2), ("blocks", 32), ("cond_width", 128),
              ("cond_depth", 4), ("cond_dilation_growth_rate", 3), ("cond_dilation_cycle", 8), ("t_bins", 64))

BENCH_PRIORS = {
    "a": BenchPrior("a", "upsampler w512 d12", 1, _UPSAMPLER + (("prior_width", 512), ("prior_depth", 12))),
    "b": BenchPrior("b", "1b_lyrics-like w512 d16", 2, (
        ("n_ctx", 1024), ("prior_width", 512), ("prior_depth", 16), ("heads", 2), ("attn_order", 12),
        ("blocks", 16), ("labels_v3", True), ("y_bins", (604, 7898)), ("t_bins", 64), ("max_bow_genre_size", 1),
        ("n_vocab", 79), ("min_duration", 1.0), ("max_duration", 600.0), ("use_tokens", True), ("n_tokens", 128),
        ("prime_loss_fraction", 0.4), ("single_enc_dec", True))),
    "c": BenchPrior("c", "overhead w128 d12", 1, _UPSAMPLER + (("prior_width", 128), ("prior_depth", 12))),
}

_ATTENTION_PATTERN = {2: "raw_column_previous_row_attention", 12: "enc_dec_with_lyrics"}


def jukejax_config(bench: BenchPrior, dtype: str = "float32") -> PriorConfig:
    return prior_config(presets.prior(bench.level, **bench.hps, dtype=dtype))


def hf_prior_kwargs(pc: PriorConfig) -> Dict[str, Any]:
    """`JukeboxPriorConfig` kwargs of the same model, configured as the original behaves: mask=True
    (the port's default False is not causal for block layers), merged_decoder False for upsamplers and 1b, no
    dropout."""
    h, vq = pc.hps, pc.vqvae
    return dict(
        act_fn="quick_gelu", attention_multiplier=h.m_attn, mlp_multiplier=h.m_mlp, attn_res_scale=h.res_scale,
        emb_dropout=0.0, attn_dropout=0.0, resid_dropout=0.0, zero_out=h.zero_out, init_scale=h.init_scale,
        mask=True, spread=h.spread, music_vocab_size=vq.l_bins, sampling_rate=vq.sr, res_downs_t=list(vq.downs_t),
        res_strides_t=list(vq.strides_t), level=vq.levels - 1 - h.level, hidden_size=h.prior_width,
        num_layers=h.prior_depth, n_heads=h.heads, attention_pattern=_ATTENTION_PATTERN[h.attn_order],
        blocks=h.blocks, n_ctx=h.n_ctx, res_conv_width=h.cond_width, res_conv_depth=h.cond_depth,
        res_convolution_multiplier=int(h.cond_m_conv), res_dilation_growth_rate=h.cond_dilation_growth_rate,
        res_dilation_cycle=h.cond_dilation_cycle, conv_res_scale=h.cond_res_scale,
        metadata_conditioning=h.labels, metadata_dims=list(h.y_bins), max_nb_genres=h.max_bow_genre_size,
        timing_dims=h.t_bins, min_duration=h.min_duration, max_duration=h.max_duration,
        is_encoder_decoder=h.single_enc_dec, nb_relevant_lyric_tokens=pc.n_tokens, lyric_vocab_size=h.n_vocab,
        merged_decoder=h.merged_decoder, encoder_loss_fraction=h.prime_loss_fraction)


def hf_prior(pc: PriorConfig, seed: int = 0):
    """The port's JukeboxPrior with every parameter random (N(0, 0.02), LayerNorm gains 1 + N(0, 0.02))."""
    from transformers.models.deprecated.jukebox import configuration_jukebox as hf_cfg
    from transformers.models.deprecated.jukebox import modeling_jukebox as hf
    kw = hf_prior_kwargs(pc)
    model = hf.JukeboxPrior(hf_cfg.JukeboxPriorConfig(**kw), level=kw["level"], nb_priors=pc.vqvae.levels)
    model.post_init()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = 0.02 * torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + noise if "layer_norm" in name and name.endswith("weight") else noise)
    return model.eval()


def quiet_port_progress() -> None:
    """The port's samplers refresh a tqdm description every token; that is console I/O, not model time."""
    from transformers.models.deprecated.jukebox import modeling_jukebox as hf
    if not isinstance(hf.tqdm, functools.partial):
        hf.tqdm = functools.partial(hf.tqdm, disable=True)


def labels(pc: PriorConfig, batch: int, rng: np.random.Generator) -> np.ndarray:
    """y (N, y_width): total length, offset, window length (samples), artist, genres, lyric tokens."""
    h = pc.hps
    length = pc.sample_length
    genres = [int(rng.integers(0, h.y_bins[0]))] + [-1] * (h.max_bow_genre_size - 1)
    rows = []
    for _ in range(batch):
        lyrics = rng.integers(0, h.n_vocab, pc.n_tokens).tolist() if pc.n_tokens else []
        rows.append([length * 8, length * 2, length, int(rng.integers(0, h.y_bins[1])), *genres, *lyrics])
    return np.asarray(rows, np.int64)


class PriorPair:
    """One bench prior as the HF port (torch) and as jukejax, same weights; conditioning for both."""

    def __init__(self, bench: BenchPrior, dtype: str = "float32", seed: int = 0, device: str = "cpu"):
        self.bench = bench
        self.dtype = dtype
        self.config = jukejax_config(bench, "float32")
        self.config_dtype = jukejax_config(bench, dtype)
        self.device = device
        self.hf = hf_prior(self.config, seed)
        self.params = load_torch_prior(self.hf.state_dict(), self.config, hf=True)
        self.params = jax.tree.map(jnp.asarray, self.params)
        self.hf.to(device)
        if dtype == "bfloat16":
            self.hf_decode = hf_prior(self.config, seed).to(device=device, dtype=torch.bfloat16).eval()
        else:
            self.hf_decode = self.hf
        self.seed = seed

    @property
    def transformer(self):
        return self.config_dtype.transformer

    @property
    def single(self) -> bool:
        return self.config.hps.single_enc_dec

    def inputs(self, batch: int, seed: int = 1) -> Dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        pc = self.config
        z = rng.integers(0, pc.vqvae.l_bins, (batch, pc.n_ctx))
        z_cond = rng.integers(0, pc.vqvae.l_bins, (batch, pc.cond_length)) if pc.upsampler else None
        return dict(z=z, z_cond=z_cond, y=labels(pc, batch, rng))

    # -- conditioning ------------------------------------------------------------------------------------
    def jax_conds(self, batch: int):
        """(x_cond, y_cond, prefix tokens (N, n_prefix)) for jukejax's sampler, from jukejax's get_cond."""
        inp = self.inputs(batch)
        z_cond = None if inp["z_cond"] is None else jnp.asarray(inp["z_cond"], jnp.int32)
        model = Prior(self.config)
        x_cond, y_cond, prime = jax.jit(functools.partial(model.apply, method=Prior.get_cond))(
            {"params": self.params}, z_cond, jnp.asarray(inp["y"], jnp.int32))
        if self.single:
            zeros = jnp.zeros((batch, self.config.n_ctx), jnp.int32)
            prefix, x_cond = model.apply({"params": self.params}, prime, zeros, x_cond,
                                         method=Prior.preprocess_single)
            prefix = prefix[:, :self.config.n_tokens]
        else:
            prefix = jnp.zeros((batch, 0), jnp.int32)
        cast = lambda x: None if x is None else x.astype(self.transformer.compute_dtype)  # noqa: E731
        return cast(x_cond), cast(y_cond), prefix

    def hf_conds(self, batch: int, model=None):
        """(audio_conditioning, metadata_conditioning, prefix tokens) for the port's sampler."""
        model = model or self.hf_decode
        inp = self.inputs(batch)
        dtype = next(model.parameters()).dtype
        with torch.no_grad():
            conds = [torch.from_numpy(inp["z_cond"]).to(self.device)] if inp["z_cond"] is not None else []
            xc, yc, lyrics = model.get_cond(conds, torch.from_numpy(inp["y"]).to(self.device))
            if self.single:
                prefix, xc = model.prior_preprocess([lyrics], [None, xc])
            else:
                prefix = None
        return xc.to(dtype), yc.to(dtype), prefix

    # -- roofline ----------------------------------------------------------------------------------------
    def decode_bytes(self, batch: int, weight_bytes: int, cache_bytes: int) -> Dict[str, float]:
        """Bytes one sampling step reads: every weight of the stack and the output head (the tied x_emb, read
        whole for the logits) once, one row each of the embeddings and x_cond per sample, and the cache keys
        and values the step attends to (block: block_ctx, column: blocks, previous block: block_ctx, prime:
        prime_attn_len, dense: n_ctx, per layer)."""
        tc = self.config.transformer
        p = self.params["prior"]
        n_weights = sum(x.size for x in jax.tree.leaves(p)) - p["pos_emb"]["pos_emb"].size
        if not tc.tied_output:
            n_weights -= p["x_emb"]["embedding"].size
        rows = batch * tc.width * 3 * 4
        cache = 0
        for f in tc.attn_funcs:
            shape = layer_shape(tc, f, batch)
            slots = {TRANSPOSE_BLOCK: tc.blocks, PREV_BLOCK: tc.block_ctx}.get(f, math.prod(shape[1:]) // tc.n_state)
            cache += 2 * batch * slots * tc.n_state * cache_bytes
        return dict(weights=n_weights * weight_bytes, rows=rows, cache=cache,
                    total=n_weights * weight_bytes + rows + cache, n_weights=n_weights)

    def train_flops(self, batch: int) -> Dict[str, float]:
        """Model FLOPs of one training step: 6 * matmul params * tokens for the stack and the output head,
        12 * keys * attention width per token and layer for QK^T and AV (forward + backward), and three
        times the forward FLOPs XLA counts for the conditioners (get_cond)."""
        tc, pc = self.config.transformer, self.config
        tokens = batch * tc.n_ctx
        per_layer = tc.width * 3 * tc.n_state + tc.n_state * tc.width + 2 * tc.width * tc.n_mlp
        matmul_params = tc.depth * per_layer + tc.bins * tc.width
        keys = {DENSE: tc.n_ctx, BLOCK: tc.block_ctx, TRANSPOSE_BLOCK: tc.blocks, PREV_BLOCK: tc.block_ctx,
                PRIME: tc.prime_attn_len, CROSS: tc.encoder_dims}
        attention = sum(12 * tokens * keys.get(f, tc.n_ctx) * tc.n_state for f in tc.attn_funcs)
        inp = self.inputs(batch)
        z_cond = None if inp["z_cond"] is None else jnp.asarray(inp["z_cond"], jnp.int32)
        lowered = jax.jit(functools.partial(Prior(pc).apply, method=Prior.get_cond)).lower(
            {"params": self.params}, z_cond, jnp.asarray(inp["y"], jnp.int32))
        cond = 3 * float((lowered.cost_analysis() or {}).get("flops", 0.0))
        dense = 6 * matmul_params * tokens
        return dict(dense=dense, attention=attention, conditioner=cond, total=dense + attention + cond,
                    matmul_params=matmul_params)


# ------------------------------------------------------------------------------------------------------------
# Decode.

def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def decode_rows(pair: PriorPair, batch: int, n_new: int, repeats: int, bandwidth: float, matmul_flops: float,
                temperature: float = 1.0, warmup: int = 1, log: Callable[[str], None] = print) -> List[Row]:
    """tokens/s of the two cached samplers (and of jukejax with bf16 weights when the dtype is bfloat16).

    With a lyric prefix (b), each side also runs a call that only primes the prefix and samples one token;
    the decode rate is batch * (N - 1) / (t(N) - t(1)), the steady per-token rate without the prefill, and
    the prefill gets its own row (prefix tokens/s against a roofline of max(weights / bandwidth, FLOPs /
    matmul rate)).
    """
    tc = pair.transformer
    x_cond, y_cond, prefix = pair.jax_conds(batch)
    n_prefix = prefix.shape[1]
    xc, yc, hf_prefix = pair.hf_conds(batch)
    params = pair.params["prior"]
    key = jax.random.key(pair.seed)

    def jax_sampler(params, n):
        state = {"cache": None, "i": 0}

        def run():
            state["i"] += 1
            tokens, state["cache"] = decode.sample_window(
                params, tc, jax.random.fold_in(key, state["i"]), prefix, n_prefix, n_prefix + n, x_cond,
                y_cond, temperature=temperature, top_k=0, cache=state["cache"])
            tokens.block_until_ready()
        return run

    def hf_sampler(n):
        def run():
            with torch.no_grad():
                if pair.single:
                    pair.hf_decode.prior.primed_sample(batch, hf_prefix, xc, yc, temp=temperature, top_k=0,
                                                       sample_tokens=n_prefix + n)
                else:
                    pair.hf_decode.prior.sample(batch, xc, yc, temp=temperature, top_k=0, sample_tokens=n)
            _sync(pair.device)
        return run

    bf16_weights = pair.dtype == "bfloat16"
    variants = [("jukejax", params, 4, "")]
    if bf16_weights:
        variants.append(("jukejax_bf16_weights", jax.tree.map(lambda x: x.astype(jnp.bfloat16), params), 2,
                         " bf16w"))
    candidates = {"pytorch": hf_sampler(n_new)}
    for name, p, _, _ in variants:
        candidates[name] = jax_sampler(p, n_new)
    if n_prefix:
        candidates["pytorch_prefill"] = hf_sampler(1)
        for name, p, _, _ in variants:
            candidates[name + "_prefill"] = jax_sampler(p, 1)
    timings = alternate(candidates, repeats, warmup)

    subtracted = {}

    def rate(name: str) -> float:
        t = timings[name].median_s
        if n_prefix:  # steady decode: the prefill call's time taken off
            steady = t - timings[name + "_prefill"].median_s
            # A few tokens on a busy machine (--quick) can time the prefill-only call as long as the whole one;
            # then the rate includes the prefill, and the row's details say so.
            subtracted[name] = steady > 0.05 * t
            if subtracted[name]:
                return check_number(f"{name} decode ({pair.bench.key})", batch * (n_new - 1) / steady)
        return check_number(f"{name} decode ({pair.bench.key})", batch * n_new / t)

    torch_rate = rate("pytorch")
    itemsize = jnp.dtype(tc.compute_dtype).itemsize
    rows = []
    for name, _, weight_bytes, suffix in variants:
        t = timings[name]
        read = pair.decode_bytes(batch, weight_bytes, itemsize)
        floor = batch * bandwidth / read["total"]
        row = Row(name=f"decode ({pair.bench.key}) {pair.bench.title}{suffix}", section="decode",
                  unit="tokens/s", batch=batch, jukejax=rate(name), pytorch=torch_rate, floor=floor,
                  floor_kind="bandwidth", compile_s=t.compile_s, dtype=pair.dtype,
                  details=dict(new_tokens=n_new, prefix_tokens=n_prefix, repeats=repeats,
                               bytes_per_step=read["total"], weight_bytes=read["weights"],
                               cache_bytes_read=read["cache"], params_read=read["n_weights"],
                               jukejax_seconds=t.seconds, pytorch_seconds=timings["pytorch"].seconds,
                               weights_dtype="bfloat16" if weight_bytes == 2 else "float32",
                               prefill_subtracted=dict(jukejax=subtracted.get(name, False),
                                                       pytorch=subtracted.get("pytorch", False)),
                               compute_dtype=str(tc.compute_dtype)))
        log(f"  {row.name} b{batch}: jukejax {row.jukejax:,.0f} tok/s, port {torch_rate:,.0f} tok/s, "
            f"floor {floor:,.0f} ({100 * row.floor_fraction:.0f}%), compile {t.compile_s:.1f} s")
        rows.append(row)
        if n_prefix:
            tp, hp = timings[name + "_prefill"], timings["pytorch_prefill"]
            positions = n_prefix + 1
            flops = 2 * batch * positions * read["n_weights"]
            floor_s = max(read["weights"] / bandwidth, flops / matmul_flops)
            row = Row(name=f"prefill ({pair.bench.key}) {n_prefix} lyric tokens{suffix}", section="prefill",
                      unit="tokens/s", batch=batch,
                      jukejax=check_number(f"{name} prefill", batch * n_prefix / tp.median_s),
                      pytorch=check_number("pytorch prefill", batch * n_prefix / hp.median_s),
                      floor=batch * n_prefix / floor_s,
                      floor_kind="bandwidth" if read["weights"] / bandwidth >= flops / matmul_flops else "matmul",
                      compile_s=tp.compile_s, dtype=pair.dtype,
                      details=dict(prefix_tokens=n_prefix, repeats=repeats, model_flops=flops,
                                   jukejax_seconds=tp.seconds, pytorch_seconds=hp.seconds,
                                   note="one call primes the prefix in one parallel pass and samples 1 token"))
            log(f"  {row.name} b{batch}: jukejax {row.jukejax:,.0f} tok/s, port {row.pytorch:,.0f} tok/s, "
                f"floor {row.floor:,.0f} ({100 * row.floor_fraction:.0f}%)")
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------------------
# Training.

def hf_loss(model, inp: Dict[str, np.ndarray], device: str):
    """The port's training loss as `forward_tokens` computes it, via get_cond + the prior's forward
    (`forward_tokens` crashes on a prior without lyrics: its `get_encoder_loss` calls `.device` on None)."""
    conds = [torch.from_numpy(inp["z_cond"]).to(device)] if inp["z_cond"] is not None else []
    z = torch.from_numpy(inp["z"]).to(device)
    xc, yc, lyrics = model.get_cond(conds, torch.from_numpy(inp["y"]).to(device))
    if model.is_encoder_decoder:
        tokens, xc = model.prior_preprocess([lyrics, z], [None, xc])
        (prime_loss, gen_loss), _ = model.prior(tokens, xc, yc, get_sep_loss=True)
        loss = model.encoder_loss_fraction * prime_loss * model.nb_relevant_lyric_tokens / model.total_loss_dims
        return loss + gen_loss * model.next_token_prediction_loss_dims / model.total_loss_dims
    return model.prior(z, xc, yc)[0]


def train_row(pair: PriorPair, batch: int, repeats: int, matmul_flops: float, lr: float = 1e-4, warmup: int = 1,
              log: Callable[[str], None] = print) -> Row:
    """steps/s of forward + backward + Adam at full context: jukejax (jit, donated state) vs the port + torch Adam."""
    inp = pair.inputs(batch, seed=2)
    model = Prior(pair.config_dtype)
    tx = optax.adam(lr)
    z = jnp.asarray(inp["z"], jnp.int32)
    z_cond = None if inp["z_cond"] is None else jnp.asarray(inp["z_cond"], jnp.int32)
    y = jnp.asarray(inp["y"], jnp.int32)

    def loss_fn(params):
        return model.apply({"params": params}, z, z_cond, y)[0]

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    state = {"params": jax.tree.map(jnp.copy, pair.params)}
    state["opt"] = tx.init(state["params"])
    losses = {}

    def jax_step():
        state["params"], state["opt"], loss = step(state["params"], state["opt"])
        losses.setdefault("jukejax", float(loss))
        loss.block_until_ready()

    hf = pair.hf.train()
    opt = torch.optim.Adam(hf.parameters(), lr=lr)
    autocast = pair.dtype == "bfloat16"

    def torch_step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(pair.device.split(":")[0], dtype=torch.bfloat16, enabled=autocast):
            loss = hf_loss(hf, inp, pair.device)
        loss.backward()
        opt.step()
        losses.setdefault("pytorch", loss.item())
        _sync(pair.device)

    timings = alternate({"jukejax": jax_step, "pytorch": torch_step}, repeats, warmup)
    hf.eval()
    flops = pair.train_flops(batch)
    t = timings["jukejax"]
    rate = check_number("jukejax train", 1.0 / t.median_s)
    loss_err = abs(losses["jukejax"] - losses["pytorch"]) / abs(losses["pytorch"])
    row = Row(name=f"train ({pair.bench.key}) {pair.bench.title} fwd+bwd+Adam", section="train", unit="steps/s",
              batch=batch, jukejax=rate, pytorch=check_number("pytorch train", 1.0 / timings["pytorch"].median_s),
              floor=matmul_flops / flops["total"], floor_kind="matmul", compile_s=t.compile_s, dtype=pair.dtype,
              details=dict(tokens_per_step=batch * pair.config.transformer.n_ctx, model_flops=flops["total"],
                           flops_dense=flops["dense"], flops_attention=flops["attention"],
                           flops_conditioner=flops["conditioner"], matmul_params=flops["matmul_params"],
                           first_loss_jukejax=losses["jukejax"], first_loss_pytorch=losses["pytorch"],
                           first_loss_rel_err=loss_err, repeats=repeats, jukejax_seconds=t.seconds,
                           pytorch_seconds=timings["pytorch"].seconds))
    log(f"  {row.name} b{batch}: jukejax {rate:.2f} steps/s, port {row.pytorch:.2f} steps/s, "
        f"MFU {100 * row.floor_fraction:.0f}%, compile {t.compile_s:.1f} s, first-loss rel err {loss_err:.1e}")
    return row


def loss_parity(pair: PriorPair) -> float:
    """Relative difference of the teacher-forced loss (batch 1, fp32): the two models really are the same."""
    inp = pair.inputs(1, seed=3)
    z_cond = None if inp["z_cond"] is None else jnp.asarray(inp["z_cond"], jnp.int32)
    loss = jax.jit(lambda p: Prior(pair.config).apply({"params": p}, jnp.asarray(inp["z"], jnp.int32), z_cond,
                                                       jnp.asarray(inp["y"], jnp.int32))[0])(pair.params)
    with torch.no_grad():
        want = float(hf_loss(pair.hf, inp, pair.device))
    return abs(float(loss) - want) / abs(want)
