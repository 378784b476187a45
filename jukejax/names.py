"""One key for artist and genre names, shared by the dataset builder (which writes the name tables) and the
labels at sampling time (which look names up in them), so `--artist="jane pianist"` finds the `jane_pianist`
a dataset stored from a metadata line `"artist": "Jane Pianist"`.

The key is the original's v2 `norm` (openai/jukebox `data/artist_genre_processor.py`): lowercase, every run of
characters outside a-z0-9 becomes one `_`, and `_` is stripped at both ends.
"""
from __future__ import annotations

import re

_NOT_ALNUM_RUN = re.compile(r"[^a-z0-9]+")


def name_key(name: str) -> str:
    """`"Jane  Pianist!"` -> `"jane_pianist"`; a name with no letter or digit gives ''."""
    return _NOT_ALNUM_RUN.sub("_", str(name).lower()).strip("_")
