"""The autoregressive token model (original
`prior/autoregressive.py::ConditionalAutoregressive2D`).

Teacher-forced forward for tokens x (N, D):

    h = x_emb(x) shifted right by one; h[:, 0] = y_cond (labels) or the learned start_token
    h = h + pos_emb + x_cond                         x_cond: (N, D, w) or (N, 1, w), zeros when absent
    h = transformer(h, encoder_kv)
    h = h + x_cond                                   unless merged_decoder
    logits = h @ x_emb^T                             x_out tied to x_emb unless merged_decoder
    loss = CE(logits, x) / ln 2                      bits per token

Parameter tree vs the original state dict (`prior.` prefix inside SimplePrior):

    x_emb/embedding         <- x_emb.weight                       (bins, w)
    pos_emb/pos_emb         <- pos_emb.pos_emb                    (n_ctx, w)
    start_token             <- start_token                        (1, w), only without y_cond
    x_out/kernel            <- x_out.weight^T                     (w, bins), only when merged_decoder
    transformer/...         <- transformer._attn_mods...          (see transformer.py)

`load_torch_autoregressive` applies this table to an original or HF state dict.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jukejax.checkpoint import CheckpointError
from jukejax.prior.attention import CROSS
from jukejax.prior.config import AutoregressiveConfig
from jukejax.prior.transformer import Transformer, flat_dot_general, stack_layers

LN2 = float(np.log(2.0))


def _torch_linear_init(key, shape, dtype=jnp.float32):
    # nn.Linear's default (kaiming_uniform, a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the original never
    # re-initialises the untied x_out.
    bound = 1.0 / np.sqrt(shape[0])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


class PositionEmbedding(nn.Module):
    """Learned absolute positions (original `PositionEmbedding`, pos_init=False)."""
    n_ctx: int
    width: int
    init_scale: float = 1.0

    @nn.compact
    def __call__(self) -> jax.Array:
        init = nn.with_logical_partitioning(nn.initializers.normal(0.01 * self.init_scale), ("length", "embed"))
        return self.param("pos_emb", init, (self.n_ctx, self.width), jnp.float32)


class ConditionalAutoregressive(nn.Module):
    """ConditionalAutoregressive2D. `__call__` returns fp32 logits (N, D, bins), or the hidden states
    (N, D, w) when `only_encode` (the 5b_lyrics lyric encoder)."""
    config: AutoregressiveConfig

    def setup(self):
        c = self.config
        self.x_emb = nn.Embed(c.bins, c.width, dtype=jnp.float32, param_dtype=jnp.float32,
                              embedding_init=nn.with_logical_partitioning(
                                  nn.initializers.normal(0.02 * c.init_scale), ("vocab", "embed")))
        if not c.y_cond:
            self.start_token = self.param(
                "start_token",
                nn.with_logical_partitioning(nn.initializers.normal(0.01 * c.init_scale), (None, "embed")),
                (1, c.width), jnp.float32)
        self.pos_emb = PositionEmbedding(c.n_ctx, c.width, c.init_scale)
        self.transformer = Transformer(c)
        if not c.only_encode and not c.tied_output:
            self.x_out = nn.Dense(c.bins, use_bias=False, dtype=jnp.float32, param_dtype=jnp.float32,
                                  dot_general=flat_dot_general,
                                  kernel_init=nn.with_logical_partitioning(_torch_linear_init, ("embed", "vocab")))

    def _check_conds(self, n: int, d: int, x_cond, y_cond) -> jax.Array:
        c = self.config
        if c.y_cond:
            if y_cond is None or y_cond.shape != (n, 1, c.width):
                raise ValueError(f"y_cond must have shape {(n, 1, c.width)} (config.y_cond is set), got "
                                 f"{None if y_cond is None else y_cond.shape}")
        elif y_cond is not None:
            raise ValueError("y_cond given but config.y_cond is False (the model uses its start_token)")
        if c.x_cond:
            if x_cond is None or x_cond.shape not in ((n, d, c.width), (n, 1, c.width)):
                raise ValueError(f"x_cond must have shape {(n, d, c.width)} or {(n, 1, c.width)} (config.x_cond "
                                 f"is set), got {None if x_cond is None else x_cond.shape}")
            return x_cond.astype(jnp.float32)
        if x_cond is not None:
            raise ValueError("x_cond given but config.x_cond is False")
        return jnp.zeros((n, 1, c.width), jnp.float32)

    def embed(self, x: jax.Array, x_cond: Optional[jax.Array] = None,
              y_cond: Optional[jax.Array] = None) -> Tuple[jax.Array, jax.Array]:
        """Input states of the stack (N, D, w) and the x_cond to add again after it."""
        c = self.config
        n, d = x.shape
        if d != c.n_ctx:
            raise ValueError(f"tokens have length {d}, expected n_ctx {c.n_ctx}")
        x_cond = self._check_conds(n, d, x_cond, y_cond)
        h = self.x_emb(x)
        start = (y_cond.astype(jnp.float32) if c.y_cond
                 else jnp.broadcast_to(self.start_token[None], (n, 1, c.width)))
        h = jnp.concatenate([start, h[:, :-1]], axis=1)  # roll right by one, position 0 = start
        return h + self.pos_emb() + x_cond, x_cond

    def embed_at(self, token: jax.Array, t: jax.Array, x_cond_t: Optional[jax.Array] = None,
                 y_cond: Optional[jax.Array] = None) -> Tuple[jax.Array, jax.Array]:
        """`embed` at the single position t (cached decoding; original `get_emb`): (N, 1, w) states, x_cond_t.

        token (N,) is x[t-1], the input of position t after the shift; position 0 takes y_cond / start_token
        instead (t may be traced). x_cond_t is x_cond at position t, (N, 1, w), or None without x_cond.
        """
        c = self.config
        n = token.shape[0]
        x_cond_t = self._check_conds(n, 1, x_cond_t, y_cond)
        h = self.x_emb(token)[:, None]
        start = (y_cond.astype(jnp.float32) if c.y_cond
                 else jnp.broadcast_to(self.start_token[None], (n, 1, c.width)))
        h = jnp.where(t == 0, start, h)
        pos = jax.lax.dynamic_slice_in_dim(self.pos_emb(), t, 1, axis=0)
        return h + pos + x_cond_t, x_cond_t

    def head(self, h: jax.Array, x_cond: jax.Array) -> jax.Array:
        """Hidden states (fp32) after the stack -> logits, or the activations when only_encode."""
        c = self.config
        if c.add_cond_after_transformer:
            h = h + x_cond
        if c.only_encode:
            return h
        if c.tied_output:
            return self.x_emb.attend(h.reshape(-1, h.shape[-1])).reshape(*h.shape[:-1], -1)  # 2-D: see flat_dot_general
        return self.x_out(h)

    def __call__(self, x: jax.Array, x_cond: Optional[jax.Array] = None, y_cond: Optional[jax.Array] = None,
                 encoder_kv: Optional[jax.Array] = None) -> jax.Array:
        h, x_cond = self.embed(x, x_cond, y_cond)
        if CROSS in self.config.attn_funcs and (encoder_kv is None or encoder_kv.shape[1:] != (
                self.config.encoder_dims, self.config.width)):
            raise ValueError(f"encoder_kv must have shape (N, {self.config.encoder_dims}, {self.config.width}), "
                             f"got {None if encoder_kv is None else encoder_kv.shape}")
        return self.head(self.transformer(h, encoder_kv), x_cond)


def bits_per_token(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean cross-entropy in bits (original `F.cross_entropy(...) / np.log(2.)`)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return jnp.mean(nll) / LN2


def get_sep_loss(logits: jax.Array, targets: jax.Array, prime_len: int) -> Tuple[jax.Array, jax.Array]:
    """Single enc-dec split: (prime_loss over positions < prime_len, gen_loss over the rest), in bits."""
    return (bits_per_token(logits[:, :prime_len], targets[:, :prime_len]),
            bits_per_token(logits[:, prime_len:], targets[:, prime_len:]))


# ------------------------------------------------------------------------------------------------------------
# PyTorch state dicts (openai/jukebox or the HF port) -> params.

# HF module names -> original names (HF `convert_jukebox.py` run backwards, restricted to this module).
_HF_RENAMES = (("embed_tokens.", "x_emb."), ("fc_proj_out.", "x_out."),
               ("layer_norm_0.", "ln_0."), ("layer_norm_1.", "ln_1."))
_LAYER_KEY = re.compile(r"^transformer\._attn_mods\.(\d+)\.(attn\.c_attn|attn\.c_enc_kv|attn\.c_proj|mlp\.c_fc|"
                        r"mlp\.c_proj|ln_0|ln_1)\.(w|b|weight|bias)$")


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; fp16 checkpoints become fp32 master params
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def original_key_name(key: str) -> str:
    """An HF-port key of this module under its openai/jukebox name (original names pass through)."""
    for hf, orig in _HF_RENAMES:
        key = key.replace(hf, orig)
    m = _LAYER_KEY.match(key)
    if m and m.group(2) not in ("ln_0", "ln_1"):  # Conv1D weight/bias -> w/b
        key = key[:m.start(3)] + {"weight": "w", "bias": "b"}.get(m.group(3), m.group(3))
    return key


def load_torch_autoregressive(state_dict: Mapping[str, Any], config: AutoregressiveConfig,
                              prefix: str = "") -> Dict[str, Any]:
    """Params of `ConditionalAutoregressive(config)` from a PyTorch state dict.

    Accepts original keys (`x_emb.weight`, `transformer._attn_mods.3.attn.c_attn.w`, `ln_0.weight`, ...) or
    the HF port's (`embed_tokens.weight`, `...c_attn.weight`, `layer_norm_0.weight`, `fc_proj_out.weight`).
    Only keys under `prefix` (e.g. "prior." or "priors.0.prior.") are read; every one of them must be used and
    every param must be found. A tied `x_out.weight` is checked against `x_emb.weight` and dropped.
    """
    sd = {original_key_name(k[len(prefix):]): v for k, v in state_dict.items() if k.startswith(prefix)}
    c = config
    pending = dict(sd)

    def take(key: str, shape: Tuple[int, ...], transpose: bool = False) -> np.ndarray:
        if key not in pending:
            raise CheckpointError(f"state dict has no {prefix}{key} (after HF renames)")
        value = _to_numpy(pending.pop(key))
        if transpose:
            value = value.T
        if value.shape != shape:
            raise CheckpointError(f"{prefix}{key} has shape {value.shape}, expected {shape}"
                             f"{' after transposing' if transpose else ''}")
        return value

    params: Dict[str, Any] = {
        "x_emb": {"embedding": take("x_emb.weight", (c.bins, c.width))},
        "pos_emb": {"pos_emb": take("pos_emb.pos_emb", (c.n_ctx, c.width))},
    }
    if not c.y_cond:
        params["start_token"] = take("start_token", (1, c.width))
    if not c.only_encode:
        if c.tied_output:
            if "x_out.weight" in pending:
                tied = _to_numpy(pending.pop("x_out.weight"))
                if not np.array_equal(tied, params["x_emb"]["embedding"]):
                    raise CheckpointError(f"{prefix}x_out.weight differs from x_emb.weight but merged_decoder is False "
                                     f"(x_out must be tied)")
        else:
            params["x_out"] = {"kernel": take("x_out.weight", (c.width, c.bins), transpose=True)}

    w, s, h = c.width, c.n_state, c.n_mlp
    layers = {}
    for d, f in enumerate(c.attn_funcs):
        pre = f"transformer._attn_mods.{d}."
        conv = lambda name, n_in, n_out: {"kernel": take(pre + name + ".w", (n_in, n_out)),
                                          "bias": take(pre + name + ".b", (n_out,))}
        ln = lambda name: {"scale": take(pre + name + ".weight", (w,)), "bias": take(pre + name + ".bias", (w,))}
        attn = {"c_attn": conv("attn.c_attn", w, s if f == CROSS else 3 * s), "c_proj": conv("attn.c_proj", s, w)}
        if f == CROSS:
            attn["c_enc_kv"] = conv("attn.c_enc_kv", w, 2 * s)
        layers[f"_attn_mods_{d}"] = {"attn": attn, "ln_0": ln("ln_0"),
                                     "mlp": {"c_fc": conv("mlp.c_fc", w, h), "c_proj": conv("mlp.c_proj", h, w)},
                                     "ln_1": ln("ln_1")}
    if pending:
        raise CheckpointError(f"unused state-dict keys under {prefix!r}: {sorted(prefix + k for k in pending)}")
    params["transformer"] = stack_layers(layers, c) if c.scan else layers
    return params
