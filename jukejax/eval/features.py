"""Rows of embeddings for a metric: from a `jukejax.embed` output folder, or embedded from a folder of audio.

One row per file for pooled features (the jukemir preset), one row per frame of every file for frame-level ones
(the frames preset, optionally at --fps).
"""
from __future__ import annotations

import json
import pathlib
import tempfile
from typing import Optional, Tuple

import numpy as np

from jukejax.embed.model import EmbedError
from jukejax.embed.run import MANIFEST, EmbedConfig, run


def load_rows(features_dir: pathlib.Path, layer: Optional[int]) -> Tuple[np.ndarray, dict]:
    """(rows (n, width), description) of the `layer` features in an embed output folder, the files in manifest
    order; the description's `row_file` (n,) is the index of the file each row came from (the frames preset
    gives a file several rows, which a bootstrap should resample together)."""
    manifest = features_dir / MANIFEST
    records = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not records:
        raise EmbedError(f"{manifest}: no finished files")
    layers = records[0]["layers"]
    if layer is None:
        if len(layers) != 1:
            raise EmbedError(f"{features_dir}: holds layers {layers}; choose one with --layer")
        layer = layers[0]
    if layer not in layers:
        raise EmbedError(f"--layer {layer}: {features_dir} holds layers {layers}")
    index = layers.index(layer)
    rows, row_file = [], []
    for i, r in enumerate(records):
        if r["layers"] != layers or r["preset"] != records[0]["preset"] or r["pool"] != records[0]["pool"]:
            raise EmbedError(f"{manifest}: {r['file']} was embedded with other settings than {records[0]['file']}")
        a = np.load(features_dir / r["npy"])
        if len(layers) > 1:
            a = a[index]
        rows.append(a.reshape(-1, a.shape[-1]))
        row_file.append(np.full(rows[-1].shape[0], i))
    return np.concatenate(rows).astype(np.float64), dict(layer=layer, preset=records[0]["preset"],
                                                         pool=records[0]["pool"], files=len(records),
                                                         model=records[0]["model"],
                                                         row_file=np.concatenate(row_file))


def rows_for(directory: str, checkpoint: Optional[str], layer: Optional[int], preset: str,
             fps: Optional[float], cache: Optional[str], name: str, embedder=None) -> Tuple[np.ndarray, dict]:
    """Rows of `directory`: its embed manifest if it has one, else its audio embedded with `checkpoint`
    (into `cache/name`, or a temporary folder)."""
    path = pathlib.Path(directory)
    if not path.is_dir():
        raise EmbedError(f"--{name} {directory}: no such folder")
    if (path / MANIFEST).exists():
        return load_rows(path, layer)
    if not checkpoint:
        raise EmbedError(f"--{name} {directory}: a folder of audio needs --checkpoint (or pass a folder written by "
                         f"python -m jukejax.embed)")
    layer = 36 if layer is None else layer
    pool = "mean" if preset == "jukemir" else "none"

    def embed(out: str):
        config = EmbedConfig(checkpoint=checkpoint, out=out, audio_dir=directory, layers=(layer,), preset=preset,
                             pool=pool, fps=fps, progress=False)
        run(config, embedder)
        return load_rows(pathlib.Path(out), layer)

    if cache:
        return embed(str(pathlib.Path(cache) / name))
    with tempfile.TemporaryDirectory(prefix=f"jukejax-{name}-") as tmp:
        return embed(tmp)
