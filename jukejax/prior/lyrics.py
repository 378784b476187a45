"""Lyric text: character vocabularies, cleaning, tokens, and the linear lyric window (original
`data/text_processor.py` and `data/labels.py::get_relevant_lyric_tokens`).

Reproduces the original `data/text_processor.py::TextProcessor` and `data/labels.py::get_relevant_lyric_tokens`:

- v2 vocabulary (5b models): `A-Z a-z 0-9 . , : ; ! ? - + ' " ( ) [ ]`, space, tab, newline -> ids 1..79, with
  id 0 the unknown/padding token, so `n_vocab = 80`. v3 (1b_lyrics) drops `+`: ids 1..78, `n_vocab = 79`.
- Cleaning: `unidecode` to ASCII, backslash -> newline, then every character outside the vocabulary is dropped.
- Window: the lyrics are assumed to spread linearly over the song; a window of `n_tokens` characters is centred
  on the character that corresponds to the middle of the audio window.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np
from unidecode import unidecode

# The original's vocabulary strings; a character's id is its position + 1.
V2_VOCAB = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.,:;!?-+'\"()[] \t\n"
V3_VOCAB = V2_VOCAB.replace("+", "")
PAD = 0  # the original's '<unk>': padding of short lyrics, textised as ''


def vocab(v3: bool = False) -> str:
    """The characters of the v2 (80-token) or v3 (79-token) vocabulary, in id order starting at id 1."""
    return V3_VOCAB if v3 else V2_VOCAB


def n_vocab(v3: bool = False) -> int:
    """Lyric vocabulary size including the pad/unknown id 0: 80 for v2, 79 for v3."""
    return len(vocab(v3)) + 1


_CHAR_TO_ID = {v3: {c: i + 1 for i, c in enumerate(vocab(v3))} for v3 in (False, True)}
_ID_TO_CHAR = {v3: np.array([""] + list(vocab(v3)), dtype=object) for v3 in (False, True)}


def char_to_id(v3: bool = False) -> Dict[str, int]:
    """Character -> token id (1..n_vocab-1) of the vocabulary; id 0 has no character."""
    return dict(_CHAR_TO_ID[v3])


def clean_lyrics(text: str, v3: bool = False) -> str:
    """Transliterate to ASCII, turn backslashes into newlines and drop characters outside the vocabulary."""
    text = unidecode(text).replace("\\", "\n")
    table = _CHAR_TO_ID[v3]
    return "".join(c for c in text if c in table)


def tokenize(text: str, v3: bool = False) -> np.ndarray:
    """Token ids (int64, shape (len(text),)) of already cleaned text; see `clean_lyrics`.

    Like the original `tokenise`, characters outside the vocabulary are an error rather than silently dropped.
    """
    table = _CHAR_TO_ID[v3]
    unknown = sorted({c for c in text if c not in table})
    if unknown:
        raise ValueError(f"characters {unknown!r} are not in the {'v3' if v3 else 'v2'} lyric vocabulary; "
                         f"pass the text through clean_lyrics(text, v3={v3}) first")
    return np.fromiter((table[c] for c in text), dtype=np.int64, count=len(text))


def detokenize(tokens: Sequence[int], v3: bool = False) -> str:
    """Text of token ids; the pad/unknown id 0 becomes '' as in the original `textise`."""
    ids = np.asarray(tokens, dtype=np.int64).reshape(-1)
    bad = ids[(ids < 0) | (ids >= n_vocab(v3))]
    if bad.size:
        raise ValueError(f"lyric token ids {sorted(set(bad.tolist()))[:10]} are outside the "
                         f"{'v3' if v3 else 'v2'} vocabulary [0, {n_vocab(v3)})")
    return "".join(_ID_TO_CHAR[v3][ids])


def lyric_window(tokens: Sequence[int], total_length: int, offset: int, duration: int, n_tokens: int, *,
                 float32: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """The `n_tokens` lyric tokens conditioning the audio window [offset, offset + duration) of a song of
    `total_length` samples, and the index of each in `tokens` (original `get_relevant_lyric_tokens`).

    Lyrics shorter than `n_tokens` are left-padded with token 0 at index -1 and do not depend on the window.
    Otherwise the window is centred on `mid = int(len * (offset + duration / 2) / total_length)`, clamped to
    [n_tokens/2, len - n_tokens/2] so that it stays inside the lyrics. `mid` is computed in float64 like the
    original `Labeller.get_label`, or with `float32=True` in float32 like its per-window `set_y_lyric_tokens`
    (which reads the lengths from a torch LongTensor, so `duration / 2.0` is a float32 tensor); the two differ
    only when rounding moves `mid` across an integer, which needs positions beyond 2**24 samples.

    Returns (window tokens (n_tokens,) int64, indices (n_tokens,) int64).
    """
    full = np.asarray(tokens, dtype=np.int64).reshape(-1)
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, (int, np.integer)) or n_tokens < 0 or n_tokens % 2:
        raise ValueError(f"n_tokens is {n_tokens!r}; expected an even non-negative integer (the window is "
                         f"n_tokens/2 characters either side of its centre)")
    n_tokens = int(n_tokens)
    if len(full) < n_tokens:
        pad = n_tokens - len(full)
        window = np.concatenate([np.full(pad, PAD, np.int64), full])
        indices = np.concatenate([np.full(pad, -1, np.int64), np.arange(len(full), dtype=np.int64)])
        return window, indices
    if not 0 <= offset < total_length:
        raise ValueError(f"offset {offset} must lie in [0, total_length={total_length}) to place the lyric window")
    half = n_tokens // 2
    if float32:
        f = np.float32
        mid = int(f(len(full)) * (f(offset) + f(duration) / f(2.0)) / f(total_length))
    else:
        mid = int(len(full) * (offset + duration / 2.0) / total_length)
    mid = min(max(mid, half), len(full) - half)
    indices = np.arange(mid - half, mid + half, dtype=np.int64)
    return full[indices], indices
