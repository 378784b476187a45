"""Windowed, hierarchical sampling of a song (original `jukebox/sample.py::sample_level`,
`sample_partial_window`, `get_starts`).

A level with `total` tokens to fill is sampled in windows of the prior's `n_ctx` tokens that start at
0, hop, 2 hop, ... (hop = int(hop_fraction[level] * n_ctx)), the last one clamped to total - n_ctx
(`get_starts`). Inside a window the tokens already there are the prime (one parallel prefill) and only the rest
is drawn, so a window that is already full is skipped: this is what makes `continue`, `primed` and resumed runs
the same loop as `ancestral`. When total < n_ctx a single partial window samples just `total` tokens.

Per window, as the original's `sample_single_window`:
- upsamplers read the upper level's codes [start / ratio, end / ratio) (`get_z_conds`), ratio = the
  conditioner's downsampling, which must divide both;
- the label vector y gets this level's sample_length, the window's offset and its lyric window
  (`set_y_for_window`, the original `get_y`), and the 5b_lyrics lyric encoder runs once on that window;
- the batch is split into chunks of `max_batch_size` samples.

Randomness: item i of the window starting at token s of level l draws with
fold_in(fold_in(fold_in(key(seed), l), s), i), and position t of it with fold_in(that, t) (`decode.draw`),
so a window's tokens depend only on its inputs and its key: not on max_batch_size, not on how many windows
ran before in the same process, and a resumed run reproduces an uninterrupted one token for token.

The levels run top -> L1 -> L0 (`jukejax.sample.run`), each over the whole length, each decoded by the VQ-VAE
(`decode_level`) before the next starts. `lyric_alignment` is the original `align.py`.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jukejax.config import VQVAEConfig
from jukejax.errors import UserError
from jukejax.prior.attention import CROSS, PRIME
from jukejax.prior.autoregressive import ConditionalAutoregressive
from jukejax.prior.conditioners import check_labels
from jukejax.prior.labels import set_y_for_window, split_y
from jukejax.prior.prior import Prior, PriorConfig
from jukejax.prior.transformer import ResAttnBlock
from jukejax.sample import decode
from jukejax.sample.cache import cache_spec, is_scanned
from jukejax.vqvae.model import VQVAE


class ScheduleError(UserError):
    """A sample length, hop or set of codes the windowed schedule cannot use."""


# ------------------------------------------------------------------------------------------------------------
# Windows

def get_starts(total: int, n_ctx: int, hop: int) -> List[int]:
    """Window starts 0, hop, 2 hop, ...; the last is clamped to total - n_ctx (original `get_starts`)."""
    starts = []
    for start in range(0, total - n_ctx + hop, hop):
        if start + n_ctx >= total:
            start = total - n_ctx  # the last window could be shorter; make it n_ctx to maximise context
        starts.append(start)
    return starts


@dataclasses.dataclass(frozen=True)
class Window:
    """Window of one level: token positions [start, end) with end = start + n_ctx; it is complete once
    positions [start, start + sample_tokens) exist (sample_tokens < n_ctx only for a partial window)."""
    start: int
    end: int
    sample_tokens: int

    @property
    def fill_to(self) -> int:
        return self.start + self.sample_tokens


def level_windows(total: int, n_ctx: int, hop: int) -> List[Window]:
    if total <= 0:
        raise ScheduleError(f"a level needs at least one token to sample, got total {total}")
    if total < n_ctx:
        return [Window(0, n_ctx, total)]  # the original's sample_partial_window
    return [Window(s, s + n_ctx, n_ctx) for s in get_starts(total, n_ctx, hop)]


def hop_tokens(config: PriorConfig, hop_fraction: float) -> int:
    """Tokens a window advances by: int(hop_fraction * n_ctx), checked against the conditioner's ratio."""
    level, n_ctx = config.level, config.n_ctx
    if not 0.0 < hop_fraction <= 1.0:
        raise ScheduleError(f"hop_fraction[{level}] {hop_fraction} must lie in (0, 1]")
    hop = int(hop_fraction * n_ctx)
    if hop < 1:
        raise ScheduleError(f"hop_fraction[{level}] {hop_fraction} gives a hop of 0 tokens for n_ctx {n_ctx}")
    if config.upsampler is not None and hop % config.upsampler.cond_downsample:
        raise ScheduleError(f"hop_fraction[{level}] {hop_fraction} gives a hop of {hop} tokens at level {level}, "
                            f"not a multiple of its conditioner's downsampling {config.upsampler.cond_downsample} "
                            f"(windows must start on an upper-level token)")
    return hop


def level_total(config: PriorConfig, sample_length: int) -> int:
    """Tokens of this level in `sample_length` audio samples; the hop must divide it."""
    hop = config.raw_to_tokens
    if sample_length % hop:
        raise ScheduleError(f"sample_length {sample_length} is not a multiple of level {config.level}'s hop "
                            f"length {hop}")
    total = sample_length // hop
    if config.upsampler is not None and total < config.n_ctx:
        raise ScheduleError(f"upsampling level {config.level} needs at least one full window: sample_length "
                            f"{sample_length} gives {total} tokens < n_ctx {config.n_ctx} (at least "
                            f"{config.n_ctx * hop / config.vqvae.sr:g} s)")
    return total


def window_key(level_key: jax.Array, start: int) -> jax.Array:
    return jax.random.fold_in(level_key, start)


def item_keys(key: jax.Array, lo: int, hi: int) -> jax.Array:
    """Keys of items lo..hi-1 of a window: fold_in of the item's index in the whole batch."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(lo, hi, dtype=jnp.uint32))


# ------------------------------------------------------------------------------------------------------------
# Compiled pieces

@functools.partial(jax.jit, static_argnames=("config",))
def _conditioning(params, z_cond, y, *, config: PriorConfig):
    """(x_cond, y_cond, encoder_kv, prime) of a window, as the original `get_cond` + `get_encoder_kv`; for the
    single enc-dec model x_cond is zero over the lyric prefix (`prior_preprocess`)."""
    model = Prior(config)
    variables = {"params": params}
    x_cond, y_cond, prime = model.apply(variables, z_cond, y, method=Prior.get_cond)
    encoder_kv = None
    if config.lyric_encoder is not None:
        encoder_kv = model.apply(variables, prime, method=Prior.encoder_kv)
    if config.hps.single_enc_dec and x_cond is not None:
        _, x_cond = model.apply(variables, prime, prime[:, :0], x_cond, method=Prior.preprocess_single)
    return x_cond, y_cond, encoder_kv, prime


def _x_cond_at(x_cond, t):
    if x_cond is None or x_cond.shape[1] == 1:
        return x_cond
    return jax.lax.dynamic_slice_in_dim(x_cond, t, 1, axis=1)


def _sample_rows(params, cache, keys, buffer, x_cond, y_cond, encoder_kv, temperature, *, config, n_prefix,
                 n_total, top_k, top_p):
    """`decode.sample_window` with one key per row (the item's), so a row's tokens do not depend on which
    other rows share its batch."""
    params = decode.decode_params(params, config, scan=is_scanned(cache))  # a no-op on params cast at load
    cache, logits = decode.prefill(params, config, buffer[:, :n_prefix], x_cond, y_cond, encoder_kv, cache=cache)
    first = decode.draw(keys, logits, jnp.int32(n_prefix), temperature, top_k, top_p)
    buffer = buffer.at[:, n_prefix].set(first)

    def body(t, carry):
        buffer, cache = carry
        token = jax.lax.dynamic_index_in_dim(buffer, t - 1, axis=1, keepdims=False)
        logits, cache = decode.step(params, config, cache, token, t, _x_cond_at(x_cond, t), y_cond)
        token = decode.draw(keys, logits, t, temperature, top_k, top_p)
        return jax.lax.dynamic_update_index_in_dim(buffer, token, t, axis=1), cache

    return jax.lax.fori_loop(n_prefix + 1, n_total, body, (buffer, cache))


@functools.lru_cache(maxsize=None)
def sample_rows_jit(config, n_prefix: int, n_total: int, top_k: int, top_p: float):
    """`_sample_rows` for one window shape, jitted with the caches donated and kept in the layout the compiler
    picks for the token loop (`Layout.AUTO` in and out). Lower it with the cache as `jax.ShapeDtypeStruct`s,
    then hold the cache in the compiled `input_formats`.

    With the default argument layout the TPU compiler relaid the caches out on entry and back on exit, and
    held the loop's copy as temporaries (a transpose-block cache, then (N, bc, blocks, S), arrived with `blocks`
    minor; the loop writes one position's (N, S) per step and keeps (N, S) as the minor tile): for the
    released upsampler at batch 4 on v5e the window's temporaries were 2.12 GB, now 0.45 GB. Other backends
    pick their default layout, so nothing changes there."""
    from jax.experimental.layout import Format, Layout
    fn = functools.partial(_sample_rows, config=config, n_prefix=n_prefix, n_total=n_total, top_k=top_k,
                           top_p=top_p)
    auto = Format(Layout.AUTO)
    return jax.jit(fn, in_shardings=(None, auto) + (None,) * 6, out_shardings=(None, auto), donate_argnums=1)


@functools.partial(jax.jit, static_argnames=("config", "layer", "head"))
def _alignment_probs(params, tokens, x_cond, y_cond, encoder_kv, *, config: PriorConfig, layer: int, head: int):
    """Teacher-forced pass up to `layer`; that layer's attention probabilities of `head` from the music
    queries to the lyric keys, (N, n_ctx, n_tokens) (original `z_forward(get_attn_weights={layer})`)."""
    c = config.transformer
    ar_params = params["prior"]
    model = ConditionalAutoregressive(c).bind({"params": ar_params})
    h, _ = model.embed(tokens, x_cond, y_cond)
    x = h.astype(c.compute_dtype)
    funcs = c.attn_funcs
    for d in range(layer + 1):
        block = ResAttnBlock(c, funcs[d]).bind({"params": decode.layer_params(ar_params["transformer"], c, d)})
        enc = encoder_kv if funcs[d] == CROSS else None
        if d < layer:
            x = block(x, enc)
        else:
            probs = block.attn_probs(x, enc)[:, head]
    if funcs[layer] == PRIME:  # the original keeps only music queries and lyric keys
        n_tokens = config.n_tokens
        probs = probs[:, n_tokens:, :n_tokens]
    return probs


@functools.partial(jax.jit, static_argnames=("config", "level"))
def _decode(variables, z, *, config: VQVAEConfig, level: int):
    return VQVAE(config).apply(variables, [z], start_level=level, end_level=level + 1, method=VQVAE.decode)


def decode_level(vqvae_config: VQVAEConfig, variables: Any, z: np.ndarray, level: int) -> np.ndarray:
    """Audio (N, T * hop) float32 of one level's codes, decoded by that level's decoder one item at a time
    (the original's bs_chunks = n_samples)."""
    return np.concatenate([np.asarray(_decode(variables, jnp.asarray(z[i:i + 1], jnp.int32), config=vqvae_config,
                                              level=level))[..., 0] for i in range(z.shape[0])], axis=0)


# ------------------------------------------------------------------------------------------------------------
# One level

@dataclasses.dataclass
class LevelJob:
    """Everything one level's windows need. `y` is the song's (N, y_width) label vector at offset 0 (None
    without labels); `full_tokens` each item's full lyric tokens (priors with lyrics)."""
    config: PriorConfig
    params: Any
    key: jax.Array
    y: Optional[np.ndarray]
    full_tokens: Optional[Sequence[np.ndarray]]
    temperature: float
    top_k: int
    top_p: float
    hop: int
    max_batch_size: int
    cache_dtype: Optional[str] = None
    scan: bool = False        # layers grouped as `cache.layer_groups(scan)`, like the params (`decode_params`)
    mesh: Any = None          # a jax Mesh: each batch chunk is split over its batch axes (data x fsdp)
    _caches: Dict[int, Any] = dataclasses.field(default_factory=dict)
    _windows: Dict[Tuple[int, int, int], Any] = dataclasses.field(default_factory=dict)

    @property
    def level(self) -> int:
        return self.config.level

    def window_y(self, start: int) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """(y, lyric indices) of the window starting at token `start`, labels checked on the host."""
        c = self.config
        if self.y is None:
            return None, None
        y, indices = set_y_for_window(self.y, start, c.sample_length, c.raw_to_tokens, self.full_tokens, c.n_tokens)
        check_labels(split_y(y, c.n_tokens)[0], c.labels)
        return y, indices

    def z_cond(self, zs: Dict[int, np.ndarray], window: Window) -> Optional[np.ndarray]:
        c = self.config
        if c.upsampler is None:
            return None
        ratio = c.upsampler.cond_downsample
        if window.start % ratio or window.end % ratio:
            raise ScheduleError(f"level {c.level} window [{window.start}, {window.end}) does not start and end on "
                                f"level-{c.level + 1} tokens (ratio {ratio})")
        upper = zs.get(c.level + 1)
        lo, hi = window.start // ratio, window.end // ratio
        if upper is None or upper.shape[1] < hi:
            have = 0 if upper is None else upper.shape[1]
            raise ScheduleError(f"level {c.level} window [{window.start}, {window.end}) needs level-{c.level + 1} "
                                f"codes [{lo}, {hi}); only {have} exist")
        return upper[:, lo:hi]

    def _window(self, batch: int, n_prefix: int, n_total: int, args: Tuple[Any, ...]):
        """The compiled window for `batch` rows (`sample_rows_jit`), lowered once per batch and window shape;
        args as it is called, with the cache (args[1]) in any layout."""
        key = (batch, n_prefix, n_total)
        if key not in self._windows:
            spec = cache_spec(self.config.transformer, batch, self.cache_dtype, self.scan)
            spec = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self._sharding(s.shape)),
                                spec)
            jitted = sample_rows_jit(self.config.transformer, n_prefix, n_total, int(self.top_k), float(self.top_p))
            self._windows[key] = jitted.lower(args[0], spec, *args[2:]).compile()
        return self._windows[key]

    def _cache(self, batch: int, window):
        """The cache of `batch` rows in the layout `window` takes: the previous window's (relaid out only if
        this window's compile chose another layout), or zeros allocated in that layout."""
        formats = window.input_formats[0][1]
        if batch not in self._caches:
            spec = cache_spec(self.config.transformer, batch, self.cache_dtype, self.scan)
            return jax.jit(lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), spec),
                           out_shardings=formats)()
        return jax.device_put(self._caches.pop(batch), formats)

    def _sharding(self, shape):
        if self.mesh is None:
            return None
        from jukejax import parallel
        return parallel.fitted_batch_sharding(self.mesh, shape)

    def _place(self, tree):
        """Split the leading (batch) axis over the mesh's batch axes where it divides; no-op without a mesh."""
        if self.mesh is None:
            return tree
        from jukejax import parallel
        return jax.tree.map(lambda x: parallel.put_global(x, self._sharding(x.shape)), tree)

    def sample_window(self, zs: Dict[int, np.ndarray], window: Window,
                      on_batch: Optional[Callable[[int], None]] = None) -> Optional[np.ndarray]:
        """The new tokens (N, new) of one window, or None when it is already full."""
        c = self.config
        z = zs[c.level]
        if z.shape[1] < window.start:
            raise ScheduleError(f"level {c.level} has {z.shape[1]} tokens; window [{window.start}, {window.end}) "
                                f"would leave a gap")
        prefix = z[:, window.start:window.fill_to]
        n_prefix, new = prefix.shape[1], window.sample_tokens - prefix.shape[1]
        if new <= 0:
            return None
        z_cond = self.z_cond(zs, window)
        y, _ = self.window_y(window.start)
        wkey = window_key(self.key, window.start)
        shift = c.hps.n_vocab if c.hps.single_enc_dec else 0
        lead = c.n_tokens if c.hps.single_enc_dec else 0
        n = z.shape[0]
        out = []
        for lo in range(0, n, self.max_batch_size):
            hi = min(n, lo + self.max_batch_size)
            x_cond, y_cond, encoder_kv, prime = _conditioning(
                self.params, None if z_cond is None else jnp.asarray(z_cond[lo:hi], jnp.int32),
                None if y is None else jnp.asarray(y[lo:hi], jnp.int32), config=c)
            tokens = prefix[lo:hi].astype(np.int32) + shift
            if lead:
                tokens = np.concatenate([np.asarray(prime, np.int32), tokens], axis=1)
            buffer = np.zeros((hi - lo, c.transformer.n_ctx), np.int32)
            buffer[:, :tokens.shape[1]] = tokens
            args = (self.params["prior"], None, self._place(item_keys(wkey, lo, hi)),
                    self._place(jnp.asarray(buffer)), x_cond, y_cond, encoder_kv, jnp.float32(self.temperature))
            run = self._window(hi - lo, lead + n_prefix, lead + window.sample_tokens, args)
            sampled, cache = run(args[0], self._cache(hi - lo, run), *args[2:])
            self._caches[hi - lo] = cache
            if not sampled.is_fully_addressable:  # multi-host: every process gets every item's tokens
                from jax.experimental import multihost_utils
                sampled = multihost_utils.process_allgather(sampled, tiled=True)
            new_tokens = np.asarray(sampled[:, lead + n_prefix:lead + window.sample_tokens]) - shift
            # The single enc-dec head can pick a lyric id at a music position; the original clamps it to 0
            # after the unshift (`prior_postprocess`).
            out.append(np.maximum(new_tokens, 0).astype(np.int32))
            if on_batch is not None:
                on_batch((hi - lo) * new)
        return np.concatenate(out, axis=0)


@dataclasses.dataclass
class LevelStats:
    level: int
    windows_sampled: int = 0
    tokens: int = 0          # tokens drawn, summed over the samples
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def sample_level(job: LevelJob, zs: Dict[int, np.ndarray], total: int, *,
                 on_window: Optional[Callable[[Window, np.ndarray], None]] = None,
                 progress: bool = True) -> Tuple[np.ndarray, LevelStats]:
    """Fill level `job.level` of `zs` up to `total` tokens, window by window. `on_window(window, z)` runs after
    every sampled window with the level's codes so far (the caller saves them); returns (codes, stats)."""
    c = job.config
    level = c.level
    z = zs[level]
    if z.shape[1] > total:
        raise ScheduleError(f"level {level} already holds {z.shape[1]} tokens, more than the {total} asked for")
    zs = dict(zs)
    zs[level] = z
    windows = level_windows(total, c.n_ctx, job.hop)
    stats = LevelStats(level)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=z.shape[0] * (total - z.shape[1]), unit="tok", unit_scale=True, dynamic_ncols=True,
                   desc=f"level {level}", mininterval=1.0, leave=True)
    try:
        for window in windows:
            t0 = time.perf_counter()
            new = job.sample_window(zs, window, on_batch=bar.update if bar is not None else None)
            if new is None:
                continue
            z = np.concatenate([zs[level], new], axis=1)
            zs[level] = z
            stats.windows_sampled += 1
            stats.tokens += new.size
            stats.seconds += time.perf_counter() - t0
            if on_window is not None:
                on_window(window, z)
    finally:
        if bar is not None:
            bar.close()
    return zs[level], stats


# ------------------------------------------------------------------------------------------------------------
# Lyric alignment (original align.py)

def alignment_layer(config: PriorConfig) -> Optional[Tuple[int, int]]:
    """(layer, head) whose attention aligns lyrics and music, or None when the prior has no usable one."""
    hps = config.hps
    if config.n_tokens == 0 or config.upsampler is not None or hps.alignment_layer is None or hps.alignment_head is None:
        return None
    f = config.transformer.attn_funcs[hps.alignment_layer]
    if f not in (CROSS, PRIME) or not 0 <= hps.alignment_head < config.transformer.heads:
        return None
    return hps.alignment_layer, hps.alignment_head


def lyric_alignment(job: LevelJob, z: np.ndarray) -> List[np.ndarray]:
    """Per item, the (T, len(full lyrics)) attention of each top-level token to each lyric character.

    Windows at `get_starts(T, n_ctx, hop)` each get a teacher-forced pass over the sampled tokens (padded to
    n_ctx when T < n_ctx); the `alignment_head` of `alignment_layer` gives (n_ctx, n_tokens) probabilities from
    music queries to lyric keys, scattered to the song-level character indices of the window's lyric window.
    Earlier windows overwrite later ones where they overlap, as the original stitches them."""
    c = job.config
    layer_head = alignment_layer(c)
    if layer_head is None:
        raise ScheduleError(f"level {c.level} prior has no lyric alignment layer (alignment_layer "
                            f"{c.hps.alignment_layer}, alignment_head {c.hps.alignment_head}, n_tokens {c.n_tokens})")
    n, total = z.shape
    n_ctx = c.n_ctx
    padded = np.concatenate([z, np.zeros((n, max(0, n_ctx - total)), np.int32)], axis=1).astype(np.int32)
    starts = get_starts(padded.shape[1], n_ctx, job.hop)
    probs_at, indices_at = {}, {}
    for start in starts:
        y, indices = job.window_y(start)
        rows = []
        for lo in range(0, n, job.max_batch_size):
            hi = min(n, lo + job.max_batch_size)
            x_cond, y_cond, encoder_kv, prime = _conditioning(
                job.params, None, jnp.asarray(y[lo:hi], jnp.int32), config=c)
            tokens = jnp.asarray(padded[lo:hi, start:start + n_ctx])
            if c.hps.single_enc_dec:
                tokens = jnp.concatenate([prime.astype(jnp.int32), tokens + c.hps.n_vocab], axis=1)
            rows.append(np.asarray(_alignment_probs(job.params, tokens, x_cond, y_cond, encoder_kv, config=c,
                                                    layer=layer_head[0], head=layer_head[1])))
        probs_at[start], indices_at[start] = np.concatenate(rows, axis=0), indices
    alignments = []
    for item in range(n):
        n_chars = len(job.full_tokens[item])
        alignment = np.zeros((padded.shape[1], n_chars + 1), np.float32)  # last column: padding index -1
        for start in reversed(starts):
            alignment[start:start + n_ctx, indices_at[start][item]] = probs_at[start][item]
        alignments.append(alignment[:total, :-1])
    return alignments
