"""What a training run's data must agree with in its config, checked before the first step.

A dataset built at another sample rate trains without an error and learns the wrong thing (44.1 kHz windows
read as 22.05 kHz audio); songs outside the timing embedding's range, or more artists/genres than the label
embeddings hold, make every step non-finite or index past a table. Each check raises one `ConfigError` naming
the dataset's value, the config field and its value.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from jukejax.config import ConfigError

log = logging.getLogger("jukejax.train")


def check_audio_dataset(dataset_dir: str, *, sr: int, sr_field: str, mono: bool = True) -> None:
    """An audio dataset (`python -m jukejax.data build`) against the model's sample rate (`sr_field` = `sr`)
    and channels: every jukejax model takes one channel, as the original's (stereo is mixed to mono by the
    pipeline when `data.mono`)."""
    from jukejax.data.builder import load_summary
    summary = load_summary(dataset_dir)
    rate, channels = int(summary["sample_rate"]), int(summary["channels"])
    if rate != sr:
        raise ConfigError(f"dataset {dataset_dir} holds {rate} Hz audio but {sr_field} is {sr} Hz: rebuild it "
                          f"with `python -m jukejax.data build --sr={sr}` (or use a config at {rate} Hz)")
    if channels != 1 and not mono:
        raise ConfigError(f"dataset {dataset_dir} holds {channels}-channel audio but data.mono is false; the "
                          f"model takes one channel: set data.mono=true (mixes or blends the channels)")


def check_codes_dataset(codes_dir: str, *, sr: int, sr_field: str) -> None:
    """A codes dataset (`python -m jukejax.data encode`) against the prior's VQ-VAE sample rate (its hop
    lengths are checked by the pipeline)."""
    from jukejax.data import codes as codes_lib
    source = codes_lib.load_codes_source(codes_dir, "train")
    if source.sample_rate != sr:
        raise ConfigError(f"codes dataset {codes_dir} was encoded from {source.sample_rate} Hz audio but "
                          f"{sr_field} is {sr} Hz: encode a dataset built at {sr} Hz")


def check_labels(*, artists: Sequence[str], genres: Sequence[str], total_lengths: np.ndarray, sr: int,
                 y_bins: Sequence[int], min_duration: float, max_duration: float, where: str) -> None:
    """The dataset's artist/genre tables and song durations against the label settings.

    `y_bins` is (genre bins, artist bins), the original's order (`jukebox/prior/conditioners.py`,
    `LabelConditioner`: `bow_genre_bins, artist_bins = y_bins`; 1b_lyrics (604, 7898)). Each song's length
    must lie in [min_duration, max_duration) seconds, the range of the original's total-length embedding
    (`RangeEmbedding`, which asserts it); a song outside it has no valid timing label.
    """
    genre_bins, artist_bins = (int(b) for b in y_bins)
    if len(genres) > genre_bins or len(artists) > artist_bins:
        raise ConfigError(f"{where} has {len(genres)} genres and {len(artists)} artists but prior.y_bins is "
                          f"{tuple(y_bins)} (genre bins, artist bins): set prior.y_bins=({max(len(genres), 1)}, "
                          f"{max(len(artists), 1)}) or more")
    seconds = np.asarray(total_lengths, np.float64) / sr
    if seconds.size == 0:
        return
    shortest, longest = float(seconds.min()), float(seconds.max())
    if shortest < min_duration or longest >= max_duration:
        raise ConfigError(f"{where}: songs last {shortest:.1f} to {longest:.1f} s but prior.min_duration is "
                          f"{min_duration:g} and prior.max_duration {max_duration:g} (the timing labels cover "
                          f"[min_duration, max_duration)): set prior.min_duration<={np.floor(shortest * 10) / 10:g} "
                          f"and prior.max_duration>{longest:.1f}")
