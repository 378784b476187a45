"""Checks every file of VQ-VAE codes passes before a model reads it (sampling's codes.npz, `jukejax.vqvae decode`).

A code is an index into a level's codebook: an integer in [0, l_bins). A float array (NaN would become an
arbitrary integer when cast), a code outside the codebook (an embedding lookup would read past the table or
wrap around and decode to noise or NaN) or an array of the wrong rank is refused with one line naming the file.
"""
from __future__ import annotations

import os
import zipfile
from typing import Optional, Union

import numpy as np

from jukejax.errors import UserError

_NPZ_MAGIC = b"PK\x03\x04"    # an npz is a zip archive
_NPY_MAGIC = b"\x93NUMPY"


class CodesError(UserError):
    """A codes file that is missing, unreadable, not one jukejax writes, or whose codes the model cannot use."""


def open_npz(path: Union[str, os.PathLike]):
    """`np.load` of an npz file that must exist and be an npz (a zip of .npy arrays); anything else (random
    bytes, a pickle, a truncated zip) is a CodesError naming the file, never numpy's "pickled data" message."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CodesError(f"codes file {path}: not found")
    with open(path, "rb") as f:
        head = f.read(len(_NPY_MAGIC))
    if not head.startswith(_NPZ_MAGIC):
        what = "an .npy array, not an npz" if head.startswith(_NPY_MAGIC) else f"starts with {head[:4]!r}"
        raise CodesError(f"codes file {path}: not an npz file ({what}); expected the codes.npz a jukejax run "
                         f"wrote")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CodesError(f"codes file {path}: cannot be read ({type(e).__name__}: {e})") from None


def check_codes(z, *, l_bins: Optional[int], name: str, rank: int = 2) -> np.ndarray:
    """`z` (as int32 when l_bins is given) after checking it holds codes of a codebook of `l_bins` entries: an integer dtype (bool
    and floats refused), `rank` dimensions, every value in [0, l_bins) (l_bins None: only >= 0, for a file
    read before its model is known). `name` says where it came from (`codes file F: z_level_1`)."""
    z = np.asarray(z)
    if z.dtype.kind not in "iu":
        raise CodesError(f"{name}: dtype {z.dtype}; codes are integers (codebook indices)")
    if z.ndim != rank:
        raise CodesError(f"{name}: shape {z.shape}; expected {rank} dimensions "
                         f"({'(samples, tokens)' if rank == 2 else '(tokens,)'})")
    if z.size:
        lo, hi = int(z.min()), int(z.max())
        if lo < 0 and l_bins is None:
            raise CodesError(f"{name}: code {lo} is negative; codes index a codebook from 0")
        if lo < 0 or (l_bins is not None and hi >= l_bins):
            bad = lo if lo < 0 else hi
            raise CodesError(f"{name}: code {bad} outside the codebook [0, {l_bins}) "
                             f"(values span [{lo}, {hi}])")
    # Cast only once the range is known to fit: 2**32 + 5 in an int64 file must not become code 5.
    return z if l_bins is None else z.astype(np.int32)
