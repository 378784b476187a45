"""Grain pipeline of random `sample_length` chunks with Jukebox labels (openai/jukebox
`data/files_dataset.py` `FilesAudioDataset` and `data/labels.py` `Labeller`).

Sampling follows the original `FilesAudioDataset`: the dataset is the concatenation of all songs cut into
`total // sample_length` items; item `i` starts at `i * sample_length`, shifted by U[-L/2, L/2) with
`aug_shift`; the song holding the chunk's midpoint is chosen and the chunk is moved inside it. So songs are
drawn in proportion to their length. The chunk is rebuilt from the consecutive stored windows it spans.

Everything is a pure function of (seed, position in the stream): an epoch is a seeded permutation of the
items (a different one each epoch), each position gets its own Philox stream for the shift and blend, and
processes take interleaved positions. A Grain iterator over it restores exactly from `get_state()`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import grain
import numpy as np

from jukejax import audio as audio_lib
from jukejax.config import ConfigError, DataConfig
from jukejax.data.builder import NAME, DatasetError, load_source, scan_windows

BATCH_FIELDS = ("audio", "total_length", "offset", "sample_length", "artist", "genre", "lyrics", "song_id")
_INT16_SCALE = np.float32(32768.0)


@dataclasses.dataclass(frozen=True)
class SongIndex:
    """Where each song's windows live, for songs at least `sample_length` long, in song_id order.

    Song `s` occupies [`ends[s] - lengths[s]`, `ends[s]`) of the concatenation; its windows are records
    `positions[first[s]:first[s + 1]]`, starting at song offsets `offsets[first[s]:first[s + 1]]`.
    """
    song_ids: np.ndarray
    lengths: np.ndarray
    ends: np.ndarray
    first: np.ndarray
    positions: np.ndarray
    offsets: np.ndarray

    @property
    def total(self) -> int:
        return int(self.ends[-1])


def window_table(source) -> Dict[str, np.ndarray]:
    """Per-record (song_id, window_index, offset, length, total_length): from the table a `MusicSource`
    carries, otherwise by reading every record once (fine for small or in-memory sources)."""
    table = getattr(source, "windows", None)
    return scan_windows(source) if table is None else table


def build_song_index(table: Dict[str, np.ndarray], sample_length: int, sample_rate: Optional[int] = None
                     ) -> SongIndex:
    """Group records by song and check each song's windows tile it exactly; drop songs under
    `sample_length` (the original's `min_duration >= sample_length / sr` filter)."""
    song_id = np.asarray(table["song_id"], dtype=np.int64)
    if song_id.size == 0:
        raise DatasetError("the data source has no records")
    order = np.lexsort((np.asarray(table["window_index"]), song_id))
    cols = {k: np.asarray(v, dtype=np.int64)[order] for k, v in table.items()}
    starts = np.flatnonzero(np.r_[True, cols["song_id"][1:] != cols["song_id"][:-1]])
    bounds = np.r_[starts, len(order)]
    keep, lengths, first, positions, offsets = [], [], [0], [], []
    longest = 0
    for a, b in zip(bounds[:-1], bounds[1:]):
        sid, total = int(cols["song_id"][a]), int(cols["total_length"][a])
        offs, lens = cols["offset"][a:b], cols["length"][a:b]
        tiles = (np.array_equal(cols["window_index"][a:b], np.arange(b - a)) and offs[0] == 0
                 and np.array_equal(offs[1:], (offs + lens)[:-1]) and offs[-1] + lens[-1] == total
                 and np.all(cols["total_length"][a:b] == total))
        if not tiles:
            raise DatasetError(f"song {sid}: its {b - a} stored window(s) do not tile its {total} samples "
                               f"(a split slice or a damaged dataset?)")
        longest = max(longest, total)
        if total < sample_length:
            continue
        keep.append(sid)
        lengths.append(total)
        positions.append(order[a:b])
        offsets.append(offs)
        first.append(first[-1] + (b - a))
    if not keep:
        secs = lambda n: f" ({n / sample_rate:.2f} s)" if sample_rate else ""  # noqa: E731
        raise DatasetError(f"every song is shorter than sample_length {sample_length}{secs(sample_length)}; "
                           f"the longest has {longest} samples{secs(longest)}")
    lengths = np.asarray(lengths, dtype=np.int64)
    return SongIndex(song_ids=np.asarray(keep, dtype=np.int64), lengths=lengths, ends=np.cumsum(lengths),
                     first=np.asarray(first, dtype=np.int64), positions=np.concatenate(positions),
                     offsets=np.concatenate(offsets))


def locate(index: SongIndex, item: int, shift: int, sample_length: int):
    """(song slot, chunk start within the song) for dataset item `item` shifted by `shift` samples.

    As the original's `get_index_offset`, except that a chunk overhanging its song is clamped to the song's
    edge (the original moves it back by half a chunk, which lands in the same place or further inside).
    """
    start = item * sample_length + shift
    mid = start + sample_length // 2
    slot = min(int(np.searchsorted(index.ends, mid, side="right")), len(index.ends) - 1)
    song_start = int(index.ends[slot] - index.lengths[slot])
    offset = min(max(start - song_start, 0), int(index.lengths[slot]) - sample_length)
    return slot, offset


class ChunkLoader:
    """Maps (item, rng) to one example: the chunk's audio and its labels in the original's y layout.

    A class rather than a closure so Grain worker processes can pickle it.
    """

    def __init__(self, source, index: SongIndex, *, sample_length: int, aug_shift: bool, aug_blend: bool,
                 mono: bool, max_bow_genre_size: int):
        self.source = source
        self.index = index
        self.sample_length = sample_length
        self.aug_shift = aug_shift
        self.aug_blend = aug_blend
        self.mono = mono
        self.max_bow_genre_size = max_bow_genre_size

    def _records(self, positions: Sequence[int]) -> List[Dict[str, Any]]:
        getitems = getattr(self.source, "__getitems__", None)
        if getitems is not None:
            return list(getitems([int(p) for p in positions]))
        return [self.source[int(p)] for p in positions]

    def __call__(self, item: int, rng: np.random.Generator) -> Dict[str, Any]:
        length = self.sample_length
        half = length // 2
        # Both draws are always made, so the shift of a position does not depend on the blend setting.
        shift = int(rng.integers(-half, half)) if half > 0 else 0
        mix = rng.uniform()
        slot, offset = locate(self.index, int(item), shift if self.aug_shift else 0, length)
        lo, hi = self.index.first[slot], self.index.first[slot + 1]
        offs = self.index.offsets[lo:hi]
        k0 = int(np.searchsorted(offs, offset, side="right")) - 1
        k1 = int(np.searchsorted(offs, offset + length - 1, side="right")) - 1
        records = self._records(self.index.positions[lo + k0:lo + k1 + 1])
        pcm = np.concatenate([r["audio"] for r in records], axis=0)
        start = offset - int(offs[k0])
        pcm = pcm[start:start + length]
        if len(pcm) != length:
            raise DatasetError(f"song {int(self.index.song_ids[slot])}: read {len(pcm)} samples at offset "
                               f"{offset}, expected {length}")
        x = pcm.astype(np.float32) / _INT16_SCALE
        if self.mono:
            x = audio_lib.blend(x, mix) if self.aug_blend else audio_lib.to_mono(x)
        head = records[0]
        genre = np.full((self.max_bow_genre_size,), -1, dtype=np.int64)
        genre[0] = int(head["genre"])
        lyrics = head["lyrics"]
        return {
            "audio": x,
            "total_length": np.int64(self.index.lengths[slot]),
            "offset": np.int64(offset),
            "sample_length": np.int64(length),
            "artist": np.int64(head["artist"]),
            "genre": genre,
            "lyrics": lyrics.decode("utf-8") if isinstance(lyrics, bytes) else str(lyrics),
            "song_id": np.int64(self.index.song_ids[slot]),
        }


def stack_examples(examples: Sequence[Dict[str, Any]]) -> Dict[str, np.ndarray]:
    """Stack examples along a new batch axis; lyrics become a 1-D object array of str (ragged text)."""
    out = {}
    for key in examples[0]:
        values = [e[key] for e in examples]
        if key == "lyrics":
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            out[key] = arr
        else:
            out[key] = np.stack(values)
    return out


def make_pipeline(source, *, sample_length: int, batch_size: int, seed: int, aug_shift: bool = True,
                  aug_blend: bool = True, mono: bool = True, shard_index: Optional[int] = None,
                  shard_count: Optional[int] = None, max_bow_genre_size: int = 1,
                  num_epochs: Optional[int] = None, num_threads: int = 4, prefetch_buffer_size: int = 4,
                  worker_count: int = 0) -> grain.DatasetIterator:
    """A Grain iterator of batches of random `sample_length` chunks from `source` (see module docstring).

    `source` is a `MusicSource` (or any random-access sequence of window records with the same fields).
    `batch_size` is global: this process gets `batch_size // shard_count` rows, and the shards of one step
    together are items `[step * batch_size, (step + 1) * batch_size)` of one seeded stream, so processes
    never see the same position. `shard_index`/`shard_count` default to `jax.process_index()/count()`.
    `num_epochs=None` repeats forever; otherwise the stream is cut to whole global batches.

    Batch (rows = batch_size // shard_count): `audio` float32 (rows, sample_length, 1 if mono else
    channels) in [-1, 1]; int64 `total_length`, `offset`, `sample_length`, `artist`, `song_id` (rows,);
    `genre` int64 (rows, max_bow_genre_size), the genre id then -1 padding; `lyrics` object (rows,) of str.

    `iterator.get_state()` / `set_state()` (or Grain's checkpoint handler) resume exactly.
    """
    shard_index, shard_count = check_stream(batch_size=batch_size, seed=seed, shard_index=shard_index,
                                            shard_count=shard_count, num_epochs=num_epochs, prefix="data.",
                                            sample_length=sample_length, max_bow_genre_size=max_bow_genre_size)
    index = build_song_index(window_table(source), sample_length, getattr(source, "sample_rate", None))
    num_items = index.total // sample_length
    shuffle_seed, map_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))

    loader = ChunkLoader(source, index, sample_length=sample_length, aug_shift=aug_shift,
                         aug_blend=aug_blend, mono=mono, max_bow_genre_size=max_bow_genre_size)
    return sharded_batches(grain.MapDataset.range(num_items).shuffle(seed=shuffle_seed), loader, map_seed=map_seed,
                           batch_size=batch_size, shard_index=shard_index, shard_count=shard_count,
                           num_epochs=num_epochs, items=f"{num_items} chunk(s) of {sample_length} samples",
                           num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size,
                           worker_count=worker_count)


def check_stream(*, batch_size: int, seed: int, shard_index: Optional[int], shard_count: Optional[int],
                 num_epochs: Optional[int], prefix: str = "", **positive: int) -> Tuple[int, int]:
    """Checks a pipeline's stream arguments (`batch_size`, `shard_count` and each of `positive` positive
    integers; the shard in range and dividing the batch; `num_epochs` positive or None; a 32-bit seed),
    naming them with `prefix`. Returns (shard_index, shard_count), by default this JAX process's."""
    if shard_index is None or shard_count is None:
        import jax  # the default shard is this JAX process; imported late to keep reading jax-free
        shard_index = jax.process_index() if shard_index is None else shard_index
        shard_count = jax.process_count() if shard_count is None else shard_count
    for name, value in (*positive.items(), ("batch_size", batch_size), ("shard_count", shard_count)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ConfigError(f"{prefix}{name} is {value!r}; expected a positive integer")
    if not 0 <= shard_index < shard_count:
        raise ConfigError(f"shard_index {shard_index} must lie in [0, shard_count={shard_count})")
    if batch_size % shard_count:
        raise ConfigError(f"{prefix}batch_size {batch_size} is not divisible by the {shard_count} processes")
    if num_epochs is not None and num_epochs <= 0:
        raise ConfigError(f"{prefix}num_epochs is {num_epochs}; expected a positive integer or None")
    if not 0 <= seed < 2**32:
        raise ConfigError(f"{prefix}seed is {seed}; expected an integer in [0, 2**32)")
    return int(shard_index), int(shard_count)


def sharded_batches(items_ds: grain.MapDataset, loader, *, map_seed: int, batch_size: int, shard_index: int,
                    shard_count: int, num_epochs: Optional[int], items: str, num_threads: int,
                    prefetch_buffer_size: int, worker_count: int) -> grain.DatasetIterator:
    """The Grain iterator of this shard's batches: `items_ds` (one epoch of item ids, `items` describing them
    for errors) repeated `num_epochs` times (None: forever) and cut to whole global batches, each position
    mapped by `loader(item, rng)`, positions `shard_index::shard_count`, batches of `batch_size // shard_count`."""
    ds = items_ds.repeat(num_epochs)
    if num_epochs is not None:
        usable = len(ds) // batch_size * batch_size
        if usable == 0:
            raise DatasetError(f"{items} x {num_epochs} epoch(s) do not fill one batch of {batch_size}")
        ds = ds[:usable]
    # Randomness is keyed by the position in the global stream, before sharding, so a position yields
    # the same example whatever the number of processes.
    ds = ds.random_map(loader, seed=map_seed)
    ds = ds[shard_index::shard_count]
    # Batching before the iterator makes each batch a function of its index alone, so thread and worker
    # counts change speed but never content.
    ds = ds.batch(batch_size // shard_count, drop_remainder=True, batch_fn=stack_examples)
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                 prefetch_buffer_size=prefetch_buffer_size))
    if worker_count > 0:
        from absl import flags
        # Grain's workers read absl flags; outside `app.run` (notebooks, tests) they were never parsed.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return iter(it_ds)


def make_pipeline_from_config(config: DataConfig, *, shard_index: Optional[int] = None,
                              shard_count: Optional[int] = None, max_bow_genre_size: int = 1
                              ) -> grain.DatasetIterator:
    """`make_pipeline` over `config.dataset_dir`/`config.split` with the config's sampling settings;
    `max_bow_genre_size` genre slots per row (a prior's `prior.max_bow_genre_size`; the VQ-VAE reads none)."""
    if not config.dataset_dir:
        raise ConfigError("data.dataset_dir is empty; point it at a folder written by "
                          "jukejax.data.build_dataset")
    if config.dataset_name != NAME:
        raise ConfigError(f"data.dataset_name is {config.dataset_name!r}; jukejax.data builds and reads "
                          f"{NAME!r} datasets only")
    source = load_source(config.dataset_dir, config.split)
    return make_pipeline(source, sample_length=config.sample_length, batch_size=config.batch_size,
                         seed=config.seed, aug_shift=config.aug_shift, aug_blend=config.aug_blend,
                         mono=config.mono, shard_index=shard_index, shard_count=shard_count,
                         max_bow_genre_size=max_bow_genre_size, num_epochs=config.num_epochs,
                         worker_count=config.worker_count)
