"""Artist / genre ids and the label vector y (original `data/artist_genre_processor.py`, `data/labels.py`,
`prior/prior.py::SimplePrior.get_y`).

The y vector of one sample (int64):

    [total_length, offset, sample_length, artist_id, genre_id_1 .. genre_id_G, lyric_tok_1 .. lyric_tok_n_tokens]

Lengths are in audio samples; G = `max_bow_genre_size` (5 for v2 labels, 1 for v3) with empty genre slots -1;
the lyric tokens are the window of `lyrics.lyric_window` (none when n_tokens = 0).

Name tables are the original's `data/ids/{v2,v3}_{artist,genre}_ids.txt`: one `name;id` line per name, several
names may share an id (aliases), id 0 is "unknown". v2 names are normalised (lowercase, runs of characters
other than a-z0-9 -> one `_`, stripped) and a genre string becomes a bag of words (`blues rock` -> blues, rock);
v3 names are only lowercased and a genre string is one genre.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import warnings
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from jukejax.errors import UserError
from jukejax.names import name_key
from jukejax.prior import lyrics as lyrics_lib

N_LABEL_FIELDS = 4  # total_length, offset, sample_length, artist


def normalise_name(name: str, v3: bool = False) -> str:
    """The original's key for an artist or genre name: v3 lowercases; v2 (`norm`) also maps every character
    outside a-z0-9 to `_`, collapses runs of `_` and strips them at both ends (`jukejax.names.name_key`, the
    key the dataset builder stores)."""
    return name.lower() if v3 else name_key(name)


_CANONICAL: Dict[int, Tuple[Mapping[str, int], Dict[str, str]]] = {}


def table_key(name: str, table: Mapping[str, int], v3: bool) -> str:
    """The key under which `table` knows `name`: the original's (`normalise_name`) when the table has it, else
    the table name with the same `name_key` (so "jane pianist" finds a built dataset's `jane_pianist` in a v3
    prior's table, and "Alan_Jackson" finds the released v3 table's "alan jackson"), else the original's key."""
    key = normalise_name(name, v3)
    if key in table:
        return key
    cached = _CANONICAL.get(id(table))
    if cached is None or cached[0] is not table:
        index: Dict[str, str] = {}
        for known in table:
            index.setdefault(name_key(known), known)
        cached = _CANONICAL[id(table)] = (table, index)
    return cached[1].get(name_key(name), key)


class LabelError(UserError):
    """An artist/genre id table or a genre name that cannot be used; the message names the file or name."""


def load_id_table(path: Union[str, os.PathLike]) -> Dict[str, int]:
    """`name;id` lines -> {lowercased name: id}. Blank lines are skipped; anything else malformed is an error
    naming the file and line."""
    table: Dict[str, int] = {}
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            name, sep, value = line.rpartition(";")
            if not sep or not (value.isascii() and value.isdigit()):
                raise LabelError(f"{path}:{lineno}: expected 'name;id', got {line!r}")
            table[name.lower()] = int(value)
    if not table:
        raise LabelError(f"{path} holds no 'name;id' lines")
    return table


def _reverse(table: Mapping[str, int]) -> Dict[int, str]:
    # Several names can share an id; the original shows them joined, sorted, with '_'.
    names: Dict[int, List[str]] = {}
    for name, i in table.items():
        names.setdefault(i, []).append(name)
    return {i: "_".join(sorted(n)) for i, n in names.items()}


def _suggest(key: str, known: Sequence[str], n: int = 5) -> str:
    close = difflib.get_close_matches(key, known, n=n, cutoff=0.6) or sorted(k for k in known if k)[:n]
    return ", ".join(repr(k) for k in close)


@dataclasses.dataclass(frozen=True)
class Labeller:
    """Name tables plus the label layout of one prior (the original `Labeller` with its `ArtistGenreProcessor`
    and `TextProcessor`). Build it with `Labeller.from_files`."""
    artist_table: Mapping[str, int]    # normalised name -> id
    genre_table: Mapping[str, int]
    labels_v3: bool = False
    max_bow_genre_size: int = 5
    n_tokens: int = 0
    artist_source: str = "artist table"   # file names, for messages
    genre_source: str = "genre table"

    def __post_init__(self):
        if not isinstance(self.max_bow_genre_size, int) or self.max_bow_genre_size <= 0:
            raise LabelError(f"max_bow_genre_size is {self.max_bow_genre_size!r}; expected a positive integer")
        if not isinstance(self.n_tokens, int) or self.n_tokens < 0 or self.n_tokens % 2:
            raise LabelError(f"n_tokens is {self.n_tokens!r}; expected an even non-negative integer")

    @classmethod
    def from_files(cls, artist_ids_path: Union[str, os.PathLike], genre_ids_path: Union[str, os.PathLike], *,
                   labels_v3: bool = False, max_bow_genre_size: int = 5, n_tokens: int = 0) -> "Labeller":
        return cls(load_id_table(artist_ids_path), load_id_table(genre_ids_path), labels_v3, max_bow_genre_size,
                   n_tokens, os.fspath(artist_ids_path), os.fspath(genre_ids_path))

    @property
    def y_width(self) -> int:
        """Length of a y vector: 4 + max_bow_genre_size + n_tokens (9 for v2 without lyrics, 521 / 389 for
        5b_lyrics / 1b_lyrics)."""
        return N_LABEL_FIELDS + self.max_bow_genre_size + self.n_tokens

    def artist_id(self, artist: str) -> int:
        """Id of an artist name; an unknown name warns (with close known names) and gives 0 = unknown."""
        key = table_key(artist, self.artist_table, self.labels_v3)
        if key not in self.artist_table:
            warnings.warn(f"artist {artist!r} (looked up as {key!r}) is not in {self.artist_source}; using id 0 "
                          f"(unknown). Close known names: {_suggest(key, list(self.artist_table))}", stacklevel=2)
            return 0
        return self.artist_table[key]

    def genre_ids(self, genres: Union[str, Sequence[str]]) -> List[int]:
        """Ids of a genre string (v2: its bag of words; v3: one genre) or of a list of such strings, padded
        with -1 to max_bow_genre_size. An unknown genre word is an error, as in the original."""
        items = [genres] if isinstance(genres, str) else list(genres)
        if self.labels_v3:
            keys = [table_key(g, self.genre_table, True) for g in items]
        else:
            keys = [word for g in items for word in normalise_name(g).split("_")]
        unknown = [k for k in keys if k not in self.genre_table]
        if unknown:
            hints = "; ".join(f"{k!r}: close known genres {_suggest(k, list(self.genre_table))}" for k in unknown)
            raise LabelError(f"genre {genres!r} has names not in {self.genre_source} ({hints})")
        if len(keys) > self.max_bow_genre_size:
            raise LabelError(f"genre {genres!r} gives {len(keys)} genre ids {keys}, more than max_bow_genre_size "
                             f"{self.max_bow_genre_size}")
        ids = [self.genre_table[k] for k in keys]
        return ids + [-1] * (self.max_bow_genre_size - len(ids))

    def full_tokens(self, lyrics: str) -> np.ndarray:
        """Token ids of the whole (cleaned) lyrics of a song."""
        return lyrics_lib.tokenize(lyrics_lib.clean_lyrics(lyrics, self.labels_v3), self.labels_v3)

    def artist_name(self, artist_id: int) -> str:
        return _reverse(self.artist_table)[int(artist_id)]

    def genre_name(self, genre_ids: Sequence[int]) -> str:
        table = _reverse(self.genre_table)
        return "_".join(table[int(g)] for g in genre_ids if g >= 0)

    def describe_y(self, y: np.ndarray) -> Dict[str, str]:
        """Artist, genre and lyric window of one y vector, as text (the original `describe_label`)."""
        y = np.asarray(y)
        check_y_width(y, self.max_bow_genre_size, self.n_tokens)
        labels, tokens = split_y(y, self.n_tokens)
        return dict(artist=self.artist_name(labels[3]), genre=self.genre_name(labels[4:]),
                    lyrics=lyrics_lib.detokenize(tokens, self.labels_v3))


def check_y_width(y: np.ndarray, max_bow_genre_size: int, n_tokens: int) -> None:
    want = N_LABEL_FIELDS + max_bow_genre_size + n_tokens
    if y.shape[-1] != want:
        raise ValueError(f"y has {y.shape[-1]} entries per sample; expected 4 + max_bow_genre_size "
                         f"{max_bow_genre_size} + n_tokens {n_tokens} = {want}")


def split_y(y, n_tokens: int):
    """(labels (..., 4 + G), lyric window (..., n_tokens)) of y, as the original `get_cond` splits it."""
    n_labels = y.shape[-1] - n_tokens
    return y[..., :n_labels], y[..., n_labels:]


def make_y(artist: str, genres: Union[str, Sequence[str]], lyrics: str, total_length: int, offset: int,
           sample_length: int, labeller: Labeller) -> np.ndarray:
    """The y vector (int64, (4 + G + n_tokens,)) of a sample of `sample_length` audio samples at `offset` in a
    song of `total_length` samples (the original `Labeller.get_label`). The lyric window is chosen for
    [offset, offset + sample_length); `set_y_for_window` moves it for each sampling window."""
    if total_length <= 0 or sample_length <= 0 or offset < 0:
        raise ValueError(f"need total_length > 0, sample_length > 0 and offset >= 0; got total_length "
                         f"{total_length}, sample_length {sample_length}, offset {offset}")
    artist_id = labeller.artist_id(artist)
    genre_ids = labeller.genre_ids(genres)
    window, _ = lyrics_lib.lyric_window(labeller.full_tokens(lyrics), total_length, offset, sample_length,
                                        labeller.n_tokens)
    return np.array([total_length, offset, sample_length, artist_id, *genre_ids, *window.tolist()], np.int64)


def set_y_for_window(y: np.ndarray, start: int, sample_length: int, raw_to_tokens: int,
                     full_tokens: Optional[Sequence[Sequence[int]]], n_tokens: int
                     ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """y of the sampling window that starts at token `start` of a prior level (the original `SimplePrior.get_y`).

    `y` (N, 4 + G + n_tokens) holds the song's labels with offset the start of the song's sampled span.
    Returns a copy with `sample_length` (this level's `n_ctx * raw_to_tokens`), offset moved by
    `start * raw_to_tokens` audio samples and, when n_tokens > 0, the lyric window reselected from each row's
    `full_tokens` for the new span (in float32 like the original; see `lyric_window`), together with the
    (N, n_tokens) indices of the window's characters in the full lyrics (None when n_tokens = 0).
    """
    y = np.array(y, dtype=np.int64, copy=True)
    if y.ndim != 2 or y.shape[1] < N_LABEL_FIELDS + n_tokens + 1:
        raise ValueError(f"y must be (N, 4 + G + n_tokens={n_tokens}) with G >= 1, got shape {y.shape}")
    y[:, 2] = int(sample_length)
    y[:, 1] += int(start * raw_to_tokens)
    if n_tokens == 0:
        return y, None
    if full_tokens is None or len(full_tokens) != y.shape[0]:
        raise ValueError(f"full_tokens must hold the full lyric tokens of each of the {y.shape[0]} rows of y, got "
                         f"{None if full_tokens is None else len(full_tokens)}")
    windows, indices = [], []
    for row, tokens in zip(y, full_tokens):
        w, i = lyrics_lib.lyric_window(tokens, int(row[0]), int(row[1]), int(row[2]), n_tokens, float32=True)
        windows.append(w)
        indices.append(i)
    y[:, -n_tokens:] = np.stack(windows)
    return y, np.stack(indices)
