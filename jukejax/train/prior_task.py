"""A prior (top level or upsampler) as a training task over pre-encoded codes, with the VQ-VAE frozen;
and `--describe`."""
from __future__ import annotations

import logging
import pathlib
from typing import Any, Dict, Optional

import jax
import numpy as np
from flax import linen as nn

from jukejax.config import ConfigError, DataConfig, build
from jukejax.data import codes as codes_lib
from jukejax.prior.attention import ATTN_NAMES
from jukejax.prior.prior import Prior, PriorConfig, abstract_params, prior_config

log = logging.getLogger("jukejax.train")
EVAL_BATCHES = 2


class PriorTask:
    name = "prior"

    def __init__(self, config: PriorConfig, data: DataConfig, codes_dir: str):
        self.config, self.data, self.codes_dir = config, data, codes_dir
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
        return self._pipeline(self.data.split, self.data.seed)

    def eval_batches(self):
        try:
            iterator = self._pipeline("test", 1234)
            return [next(iterator) for _ in range(EVAL_BATCHES)]
        except (ValueError, OSError, StopIteration):
            return None

    def metadata(self) -> Dict[str, Any]:
        return {"codes_dir": str(self.codes_dir), "level": self.config.level}

    def summaries(self, writer, step, params, extra, batch) -> None:
        pass


def make_task(config, workdir: str) -> PriorTask:
    pc = prior_config(config)
    data = build(DataConfig, config.get("data"), "data")
    codes_dir = data.codes_dir or str(pathlib.Path(workdir) / "codes")
    if not codes_lib.codes_path(codes_dir).exists():
        vqvae_checkpoint = config.get("vqvae_checkpoint")
        if not vqvae_checkpoint or not data.dataset_dir:
            raise ConfigError(f"no pre-encoded codes at {codes_dir}: set data.codes_dir, or data.dataset_dir and "
                              f"vqvae_checkpoint to encode them first")
        from jukejax.data.__main__ import make_vqvae_encode_fn
        log.info("pre-encoding %s with the VQ-VAE at %s into %s", data.dataset_dir, vqvae_checkpoint, codes_dir)
        encode_fn = make_vqvae_encode_fn(vqvae_checkpoint)
        hops = encode_fn.config.hop_lengths
        if tuple(hops) != tuple(pc.vqvae.hop_lengths):
            raise ConfigError(f"vqvae_checkpoint {vqvae_checkpoint} has hop lengths {tuple(hops)}; the prior's "
                              f"config.vqvae has {tuple(pc.vqvae.hop_lengths)}")
        codes_lib.encode_dataset(data.dataset_dir, codes_dir, encode_fn, hop_lengths=hops)
    return PriorTask(pc, data, codes_dir)


def _count(tree) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def describe(config) -> Dict[str, Any]:
    pc: PriorConfig = prior_config(config)
    params = nn.unbox(abstract_params(pc))
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
    }
