"""The Grain pipeline of prior training windows over a `jukejax_codes` dataset: windows of `n_ctx` codes
drawn uniformly over every valid start of every song, with the upper level's codes for upsamplers and the
original's y labels (artist, genre, timing and the lyric window)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import grain
import numpy as np

from jukejax.config import ConfigError
from jukejax.data.builder import DatasetError
from jukejax.data.codes.builder import CodesSource, codes_key, text
from jukejax.data.pipeline import check_stream, sharded_batches, stack_examples

PRIOR_BATCH_FIELDS = ("z", "z_cond", "y", "song_id", "start")


@dataclasses.dataclass(frozen=True)
class WindowIndex:
    """Valid window starts of every song long enough: song `s` (record `positions[s]`) has `n_starts[s]`
    starts, `0, ratio, 2 * ratio, ...`; `ends = cumsum(n_starts)` numbers them all consecutively."""
    song_ids: np.ndarray
    positions: np.ndarray
    lengths: np.ndarray       # codes at the prior's level
    n_starts: np.ndarray
    ends: np.ndarray
    ratio: int

    @property
    def total(self) -> int:
        return int(self.ends[-1])

    def locate(self, u: int) -> Tuple[int, int]:
        """(song slot, token start) of window number `u` in [0, total)."""
        slot = int(np.searchsorted(self.ends, u, side="right"))
        first = int(self.ends[slot - 1]) if slot else 0
        return slot, (int(u) - first) * self.ratio


def build_window_index(songs: Mapping[str, np.ndarray], *, level: int, n_ctx: int, ratio: int = 1,
                       cond_level: Optional[int] = None, cond_length: int = 0,
                       sample_rate: Optional[int] = None, hop_length: Optional[int] = None) -> WindowIndex:
    """Window starts per song (a songs-{split}.npz table): starts are multiples of `ratio` with the window
    [start, start + n_ctx) inside the song's level codes and, with `cond_level`, the upper window
    [start / ratio, start / ratio + cond_length) inside its upper codes. Songs without one are skipped."""
    lengths = np.asarray(songs[f"length_{level}"], np.int64)
    if lengths.size == 0:
        raise DatasetError("the codes source has no songs")
    room = (lengths - n_ctx) // ratio
    if cond_level is not None:
        room = np.minimum(room, np.asarray(songs[f"length_{cond_level}"], np.int64) - cond_length)
    keep = np.flatnonzero(room >= 0)
    if keep.size == 0:
        slot = int(np.argmax(lengths))
        longest = int(lengths[slot])

        def secs(n: int) -> str:
            return f" ({n * hop_length / sample_rate:.2f} s)" if sample_rate and hop_length else ""

        raise DatasetError(f"every song is shorter than n_ctx {n_ctx} tokens at level {level}{secs(n_ctx)}; the "
                           f"longest (song_id {int(songs['song_id'][slot])}) has {longest} tokens{secs(longest)}")
    order = keep[np.argsort(np.asarray(songs["song_id"])[keep], kind="stable")]
    n_starts = room[order] + 1
    return WindowIndex(song_ids=np.asarray(songs["song_id"], np.int64)[order], positions=order.astype(np.int64),
                       lengths=lengths[order], n_starts=n_starts, ends=np.cumsum(n_starts), ratio=int(ratio))


def _prior_lyric_tokens(text: str, v3: bool) -> np.ndarray:
    # Lazy: data never imports prior at module level (the package pulls in flax); the lyric vocabulary and
    # cleaning are the prior's, so it is the one place to take them from.
    from jukejax.prior import lyrics as lyrics_lib
    return lyrics_lib.tokenize(lyrics_lib.clean_lyrics(text, v3), v3)


def _prior_lyric_window(tokens, total_length, offset, duration, n_tokens):
    from jukejax.prior import lyrics as lyrics_lib
    return lyrics_lib.lyric_window(tokens, total_length, offset, duration, n_tokens)


class WindowLoader:
    """Maps (item, rng) to one prior training example; a class so Grain worker processes can pickle it."""

    def __init__(self, source, index: WindowIndex, *, level: int, n_ctx: int, hop_length: int,
                 cond_level: Optional[int], cond_length: int, labels: bool, max_bow_genre_size: int,
                 n_tokens: int, labels_v3: bool, lyric_tokens: Optional[Callable[[str], np.ndarray]],
                 lyric_window: Optional[Callable]):
        self.source, self.index = source, index
        self.level, self.n_ctx, self.hop_length = level, n_ctx, hop_length
        self.cond_level, self.cond_length = cond_level, cond_length
        self.labels, self.max_bow_genre_size = labels, max_bow_genre_size
        self.n_tokens, self.labels_v3 = n_tokens, labels_v3
        self.lyric_tokens, self.lyric_window = lyric_tokens, lyric_window

    def _y(self, record: Dict[str, Any], total: int, offset: int) -> np.ndarray:
        sample_length = self.n_ctx * self.hop_length
        genre = [int(record["genre"])] + [-1] * (self.max_bow_genre_size - 1)
        y = [total, offset, sample_length, int(record["artist"]), *genre]
        if self.n_tokens:
            lyrics = text(record["lyrics"])
            tokens = (self.lyric_tokens(lyrics) if self.lyric_tokens is not None
                      else _prior_lyric_tokens(lyrics, self.labels_v3))
            window_fn = self.lyric_window if self.lyric_window is not None else _prior_lyric_window
            window, _ = window_fn(tokens, total, offset, sample_length, self.n_tokens)
            y.extend(int(t) for t in np.asarray(window).reshape(-1))
        return np.asarray(y, np.int64)

    def __call__(self, item: int, rng: np.random.Generator) -> Dict[str, Any]:
        del item  # every position draws its own window: uniform over all valid starts of all songs
        slot, start = self.index.locate(int(rng.integers(self.index.total)))
        record = self.source[int(self.index.positions[slot])]
        z = np.asarray(record[codes_key(self.level)][start:start + self.n_ctx], np.int32)
        song_id = int(self.index.song_ids[slot])
        if len(z) != self.n_ctx:
            raise DatasetError(f"song {song_id}: read {len(z)} level-{self.level} codes at {start}, expected "
                               f"{self.n_ctx}")
        example = {"z": z}
        if self.cond_level is not None:
            # The upper window covers the same audio: token t of level L spans samples [t, t + 1) * hop_L.
            a = start // self.index.ratio
            z_cond = np.asarray(record[codes_key(self.cond_level)][a:a + self.cond_length], np.int32)
            if len(z_cond) != self.cond_length:
                raise DatasetError(f"song {song_id}: read {len(z_cond)} level-{self.cond_level} codes at {a}, "
                                   f"expected {self.cond_length}")
            example["z_cond"] = z_cond
        if self.labels:
            example["y"] = self._y(record, int(record["total_length"]), start * self.hop_length)
        example["song_id"] = np.int64(song_id)
        example["start"] = np.int64(start)
        return example


def make_prior_pipeline(codes_source: CodesSource, *, level: int, n_ctx: int, batch_size: int, seed: int,
                        hop_lengths: Optional[Sequence[int]] = None, cond_length: Optional[int] = None,
                        labels: bool = True, max_bow_genre_size: int = 1, n_tokens: int = 0,
                        labels_v3: bool = False, y_bins: Optional[Tuple[int, int]] = None,
                        lyric_tokens: Optional[Callable[[str], np.ndarray]] = None,
                        lyric_window: Optional[Callable] = None, shard_index: Optional[int] = None,
                        shard_count: Optional[int] = None, num_epochs: Optional[int] = None,
                        num_threads: int = 4, prefetch_buffer_size: int = 4,
                        worker_count: int = 0) -> grain.DatasetIterator:
    """A Grain iterator of batches of prior training windows of `n_ctx` codes at `level`.

    Each example is a window drawn uniformly over every valid start of every song with at least `n_ctx`
    codes (so songs are drawn in proportion to their length, as the original's chunk sampler does).
    With `cond_length` (upsamplers: `PriorConfig.cond_length`; None or 0 for the top prior) the window is
    conditioned on level + 1: `ratio = n_ctx // cond_length` must equal the hop ratio of the two levels,
    starts are multiples of `ratio`, and `z_cond` is upper codes [start / ratio, start / ratio + cond_length),
    the same span of audio. `hop_lengths` (all levels, e.g. `PriorConfig.vqvae.hop_lengths`) is checked
    against the dataset's.

    Labels, in the y layout of openai/jukebox `data/labels.py` `Labeller`: [total_length, offset = start * hop, sample_length =
    n_ctx * hop, artist, genre, -1 x (max_bow_genre_size - 1), lyric window of `n_tokens`]. Artist and genre
    ids are the audio dataset's (its artists.txt / genres.txt, copied beside the codes; `y_bins` checks they
    fit the prior's embeddings). The lyric window is `lyric_window(lyric_tokens(lyrics), total_length,
    offset, sample_length, n_tokens)`, by default `jukejax.prior.lyrics`' cleaning, tokens (v3 vocabulary
    with `labels_v3`) and linear window, imported only when `n_tokens > 0`.

    Batch (rows = batch_size // shard_count): `z` int32 (rows, n_ctx); `z_cond` int32 (rows, cond_length)
    only with `cond_length`; `y` int64 (rows, 4 + max_bow_genre_size + n_tokens) only with `labels`;
    `song_id`, `start` (token start at `level`) int64 (rows,).

    Determinism, sharding and resume are those of `make_pipeline`: position p of the global stream draws
    its window from its own seeded generator, process `shard_index` takes positions
    `shard_index::shard_count` (default: this JAX process), so a step's shards are disjoint parts of one
    global batch; `iterator.get_state()` / `set_state()` restore the exact stream. An epoch
    (`num_epochs`) is `min(windows, codes // n_ctx)` draws.
    """
    shard_index, shard_count = check_stream(batch_size=batch_size, seed=seed, shard_index=shard_index,
                                            shard_count=shard_count, num_epochs=num_epochs, n_ctx=n_ctx,
                                            max_bow_genre_size=max_bow_genre_size)
    if isinstance(n_tokens, bool) or n_tokens < 0 or n_tokens % 2:
        raise ConfigError(f"n_tokens is {n_tokens!r}; expected an even integer >= 0")
    hops = tuple(codes_source.hop_lengths)
    if hop_lengths is not None and tuple(int(h) for h in hop_lengths) != hops:
        raise ConfigError(f"hop_lengths {tuple(hop_lengths)} differ from the codes dataset's {hops} "
                          f"({getattr(codes_source, 'path', 'source')}): encoded with another VQ-VAE?")
    stored = tuple(codes_source.levels)
    if level not in stored:
        raise ConfigError(f"level {level} is not stored in the codes dataset; stored levels: {stored}")
    cond_length = int(cond_length or 0)
    cond_level, ratio = None, 1
    if cond_length:
        cond_level = level + 1
        if cond_level not in stored:
            raise ConfigError(f"cond_length {cond_length} conditions level {level} on level {cond_level}, which "
                              f"is not stored in the codes dataset (stored levels: {stored})")
        if n_ctx % cond_length:
            raise ConfigError(f"n_ctx {n_ctx} is not a multiple of cond_length {cond_length}")
        ratio = n_ctx // cond_length
        if hops[cond_level] != ratio * hops[level]:
            raise ConfigError(f"n_ctx {n_ctx} / cond_length {cond_length} = {ratio}, but level {cond_level} has "
                              f"hop {hops[cond_level]} = {hops[cond_level] / hops[level]:g} x level {level}'s "
                              f"{hops[level]}: the two windows would not cover the same audio")
    if labels and y_bins is not None:
        # (genre bins, artist bins): the original's order (jukebox/prior/conditioners.py, LabelConditioner)
        for what, names, bins in (("genre", codes_source.genres, y_bins[0]),
                                  ("artist", codes_source.artists, y_bins[1])):
            if len(names) > bins:
                raise ConfigError(f"the codes dataset has {len(names)} {what} ids but y_bins (genres, artists) "
                                  f"allows {bins}")

    index = build_window_index(codes_source.songs, level=level, n_ctx=n_ctx, ratio=ratio, cond_level=cond_level,
                               cond_length=cond_length, sample_rate=getattr(codes_source, "sample_rate", None),
                               hop_length=hops[level])
    num_items = max(1, min(index.total, int(index.lengths.sum()) // n_ctx))
    map_seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
    loader = WindowLoader(codes_source, index, level=level, n_ctx=n_ctx, hop_length=hops[level],
                          cond_level=cond_level, cond_length=cond_length, labels=labels,
                          max_bow_genre_size=max_bow_genre_size, n_tokens=int(n_tokens), labels_v3=labels_v3,
                          lyric_tokens=lyric_tokens, lyric_window=lyric_window)
    return sharded_batches(grain.MapDataset.range(num_items), loader, map_seed=map_seed, batch_size=batch_size,
                           shard_index=shard_index, shard_count=shard_count, num_epochs=num_epochs,
                           items=f"{num_items} window(s) of {n_ctx} tokens", num_threads=num_threads,
                           prefetch_buffer_size=prefetch_buffer_size, worker_count=worker_count)
