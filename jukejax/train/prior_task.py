"""A prior (top level or upsampler) as a training task over pre-encoded codes, with the VQ-VAE frozen;
and `--describe`."""
from __future__ import annotations

import logging
import pathlib
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jukejax import parallel
from jukejax.config import ConfigError, DataConfig, MeshConfig, build
from jukejax.data import codes as codes_lib
from jukejax.prior.attention import ATTN_NAMES
from jukejax.prior.prior import Prior, PriorConfig, abstract_params, prior_config
from jukejax.sample import cache as cache_lib
from jukejax.train import checks

log = logging.getLogger("jukejax.train")
EVAL_BATCHES = 2


class PriorTask:
    name = "prior"

    def __init__(self, config: PriorConfig, data: DataConfig, codes_dir: str, encode_fn=None):
        self.config, self.data, self.codes_dir = config, data, codes_dir
        self.encode_fn = encode_fn  # set: train on raw audio, encoded every step by the frozen VQ-VAE
        self.model = Prior(config)

    @staticmethod
    def _inputs(batch):
        return batch["z"], batch.get("z_cond"), batch.get("y")

    def init_variables(self, rng, batch):
        return self.model.init(rng, *self._inputs(batch))

    def loss_fn(self, params, extra, batch, rng, train: bool):
        loss, metrics, _ = self.model.apply({"params": params}, *self._inputs(batch))
        return loss, (extra, metrics)

    def _pipeline(self, split: str, seed: int, num_epochs: Optional[int] = None):
        c, hps = self.config, self.config.hps
        return codes_lib.make_prior_pipeline(
            codes_lib.load_codes_source(self.codes_dir, split), level=c.level, n_ctx=c.n_ctx,
            batch_size=self.data.batch_size, seed=seed, hop_lengths=c.vqvae.hop_lengths,
            cond_length=c.cond_length or None, labels=hps.labels, max_bow_genre_size=hps.max_bow_genre_size,
            n_tokens=c.n_tokens, labels_v3=hps.labels_v3, y_bins=tuple(hps.y_bins) if hps.labels else None,
            num_epochs=num_epochs, worker_count=self.data.worker_count)

    def train_iterator(self, seed: int):
        if self.encode_fn is not None:
            return self._raw_audio_pipeline()
        return self._pipeline(self.data.split, self.data.seed)

    def _raw_audio_pipeline(self):
        from jukejax.data import pipeline as audio_pipeline
        audio = audio_pipeline.make_pipeline(
            audio_pipeline.load_source(self.data.dataset_dir, self.data.split),
            sample_length=self.config.sample_length, batch_size=self.data.batch_size, seed=self.data.seed,
            aug_shift=self.data.aug_shift, aug_blend=self.data.aug_blend, mono=True,
            max_bow_genre_size=self.config.hps.max_bow_genre_size, worker_count=self.data.worker_count)
        return EncodingIterator(audio, self.encode_fn, self.config)

    def eval_batches(self):
        if self.encode_fn is not None:
            return None
        try:
            iterator = self._pipeline("test", 1234)
            return [next(iterator) for _ in range(EVAL_BATCHES)]
        except (ValueError, OSError, StopIteration):
            return None

    def metadata(self) -> Dict[str, Any]:
        return {"codes_dir": str(self.codes_dir), "level": self.config.level}

    def summaries(self, writer, step, params, extra, batch) -> None:
        pass


def _frozen_vqvae(config, pc: PriorConfig, data: DataConfig, why: str):
    vqvae_checkpoint = config.get("vqvae_checkpoint")
    if not vqvae_checkpoint or not data.dataset_dir:
        raise ConfigError(f"{why}: set data.dataset_dir and vqvae_checkpoint (a trained VQ-VAE workdir)")
    checks.check_audio_dataset(data.dataset_dir, sr=pc.vqvae.sr, sr_field="the prior's config.vqvae.sr")
    from jukejax.data.__main__ import make_vqvae_encode_fn
    encode_fn = make_vqvae_encode_fn(vqvae_checkpoint)
    hops = tuple(encode_fn.config.hop_lengths)
    if hops != tuple(pc.vqvae.hop_lengths) or encode_fn.config.sr != pc.vqvae.sr:
        raise ConfigError(f"vqvae_checkpoint {vqvae_checkpoint} has hop lengths {hops} at {encode_fn.config.sr} "
                          f"Hz; the prior's config.vqvae has {tuple(pc.vqvae.hop_lengths)} at {pc.vqvae.sr} Hz")
    return encode_fn


def _check_labels(pc: PriorConfig, data: DataConfig, source, where: str) -> None:
    """The dataset's artist/genre tables and song lengths against the prior's label settings."""
    hps = pc.hps
    if not hps.labels:
        return
    checks.check_labels(artists=source.artists, genres=source.genres,
                        total_lengths=source.table["total_length"], sr=pc.vqvae.sr, y_bins=hps.y_bins,
                        min_duration=hps.min_duration, max_duration=hps.max_duration, where=where)


def make_task(config, workdir: str) -> PriorTask:
    pc = prior_config(config)
    data = build(DataConfig, config.get("data"), "data")
    codes_dir = data.codes_dir or str(pathlib.Path(workdir) / "codes")
    if data.raw_audio:
        encode_fn = _frozen_vqvae(config, pc, data, "data.raw_audio needs audio")
        from jukejax.data import pipeline as audio_pipeline
        _check_labels(pc, data, audio_pipeline.load_source(data.dataset_dir, data.split),
                      f"dataset {data.dataset_dir}")
        return PriorTask(pc, data, codes_dir, encode_fn)
    if not codes_lib.codes_path(codes_dir).exists():
        encode_fn = _frozen_vqvae(config, pc, data, f"no pre-encoded codes at {codes_dir}")
        from jukejax.data import pipeline as audio_pipeline
        # checked before the encoding, which takes minutes
        _check_labels(pc, data, audio_pipeline.load_source(data.dataset_dir, data.split),
                      f"dataset {data.dataset_dir}")
        log.info("pre-encoding %s into %s", data.dataset_dir, codes_dir)
        codes_lib.encode_dataset(data.dataset_dir, codes_dir, encode_fn, hop_lengths=pc.vqvae.hop_lengths,
                                 encoder_info=encode_fn.info)
    checks.check_codes_dataset(codes_dir, sr=pc.vqvae.sr, sr_field="the prior's config.vqvae.sr")
    _check_labels(pc, data, codes_lib.load_codes_source(codes_dir, data.split), f"codes dataset {codes_dir}")
    return PriorTask(pc, data, codes_dir)


class EncodingIterator:
    """Audio batches -> prior batches: codes from the frozen VQ-VAE, y in the original layout built on the host.

    Resumable like the audio iterator it wraps (its state is the audio iterator's)."""

    def __init__(self, audio_iterator, encode_fn, config: PriorConfig):
        self.audio, self.encode_fn, self.config = audio_iterator, encode_fn, config

    def __iter__(self):
        return self

    def __next__(self) -> Dict[str, np.ndarray]:
        c, hps = self.config, self.config.hps
        batch = next(self.audio)
        codes = self.encode_fn(batch["audio"])
        out = {"z": np.asarray(codes[c.level], np.int32)}
        if c.upsampler is not None:
            out["z_cond"] = np.asarray(codes[c.level + 1], np.int32)
        if hps.labels:
            out["y"] = self._labels(batch)
        return out

    def _labels(self, batch) -> np.ndarray:
        from jukejax.prior import lyrics as lyrics_lib
        c, hps = self.config, self.config.hps
        rows = []
        for i in range(batch["audio"].shape[0]):
            total, offset = int(batch["total_length"][i]), int(batch["offset"][i])
            genres = list(np.asarray(batch["genre"][i]).reshape(-1))[:hps.max_bow_genre_size]
            genres += [-1] * (hps.max_bow_genre_size - len(genres))
            row = [total, offset, c.sample_length, int(batch["artist"][i]), *genres]
            if c.n_tokens:
                text = lyrics_lib.clean_lyrics(str(batch["lyrics"][i]), hps.labels_v3)
                window, _ = lyrics_lib.lyric_window(lyrics_lib.tokenize(text, hps.labels_v3), total, offset,
                                                    c.sample_length, c.n_tokens)
                row += list(window)
            rows.append(row)
        return np.asarray(rows, np.int64)

    def get_state(self):
        return self.audio.get_state()

    def set_state(self, state):
        self.audio.set_state(state)


def _count(tree) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def describe(config) -> Dict[str, Any]:
    pc: PriorConfig = prior_config(config)
    boxed = abstract_params(pc)
    params = nn.unbox(boxed)
    hop = pc.raw_to_tokens
    return {
        "model": "prior",
        "level": pc.level,
        "params": _count(params),
        "params_by_module": {name: _count(tree) for name, tree in params.items()},
        "n_ctx": pc.n_ctx,
        "n_tokens": pc.n_tokens,
        "hop_length": hop,
        "sample_length": pc.sample_length,
        "context_seconds": pc.sample_length / pc.vqvae.sr,
        "tokens_per_second": pc.vqvae.sr / hop,
        "attention_pattern": [ATTN_NAMES[f] for f in pc.transformer.attn_funcs],
        "sample_rate": pc.vqvae.sr,
        # fixed-shape sampling caches per sample in bf16 (the original README: ~0.4 GB for 1b_lyrics,
        # ~1 GB for 5b_lyrics)
        "kv_cache_bytes_per_sample": cache_lib.cache_bytes(pc.transformer, batch=1, dtype=jnp.bfloat16),
        # sampling: bf16 weights replicated on each data-parallel device (split over fsdp/tensor if set)
        "sampling_params_bytes_bf16": _count(params) * 2,
        "memory_plan": parallel.memory_plan(boxed, build(MeshConfig, config.get("mesh"), "mesh")),
    }
