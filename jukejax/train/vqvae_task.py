"""The VQ-VAE as a training task: model, losses, data, bandwidth normalisers and `--describe`."""
from __future__ import annotations

import json
import logging
import pathlib
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jukejax import parallel
from jukejax.config import ConfigError, DataConfig, MeshConfig, VQVAEConfig, build
from jukejax.data import pipeline as data_pipeline
from jukejax.errors import atomic_write_text
from jukejax.train import checks
from jukejax.vqvae import losses
from jukejax.vqvae.model import VQVAE, abstract_variables, count_params

log = logging.getLogger("jukejax.train")
BANDWIDTH_FILE = "bandwidth.json"
EVAL_BATCHES = 2


def _level_metrics(per_level: Dict[str, jax.Array]) -> Dict[str, jax.Array]:
    """(levels,) codebook metrics -> scalars named like the original's logs (`usage_l1` = bottom level)."""
    out = {}
    for name, values in per_level.items():
        for level in range(values.shape[0]):
            out[f"{name}_l{level + 1}"] = values[level]
    return out


class VQVAETask:
    name = "vqvae"

    def __init__(self, config: VQVAEConfig, data: DataConfig, bandwidth: losses.Bandwidth):
        self.config, self.data, self.bandwidth = config, data, bandwidth
        self.model = VQVAE(config)
        self._reconstruct = jax.jit(lambda p, e, x: self.model.apply({"params": p, **e}, x, train=False))

    def init_variables(self, rng, batch):
        return self.model.init({"params": rng}, batch["audio"], train=False)

    def loss_fn(self, params, extra, batch, rng, train: bool):
        x = batch["audio"]
        variables = {"params": params, **extra}
        if train:
            out, mutated = self.model.apply(variables, x, train=True, rngs={"codebook": rng},
                                            mutable=["codebook"])
            extra = {**extra, **mutated}
        else:
            out = self.model.apply(variables, x, train=False)
        loss, metrics = losses.vqvae_loss(x, out["x_outs"], out["commit_losses"], self.bandwidth, self.config)
        per_level = dict(out["metrics"])
        if "usage" in per_level:
            # Codes below the usage threshold are the ones restarted from encoder outputs this step.
            per_level["restarts"] = self.config.l_bins - per_level["usage"]
        return loss, (extra, {**metrics, **_level_metrics(per_level)})

    def train_iterator(self, seed: int):
        return data_pipeline.make_pipeline_from_config(self.data)

    def eval_batches(self):
        try:
            source = data_pipeline.load_source(self.data.dataset_dir, "test")
        except (ValueError, OSError):
            return None
        if len(source) == 0:
            return None
        iterator = data_pipeline.make_pipeline(
            source, sample_length=self.data.sample_length, batch_size=self.data.batch_size, seed=1234,
            aug_shift=False, aug_blend=False, mono=True)
        try:
            return [next(iterator) for _ in range(EVAL_BATCHES)]
        except (StopIteration, ValueError):
            return None

    def metadata(self) -> Dict[str, Any]:
        return {"bandwidth": self.bandwidth.to_dict()}

    def summaries(self, writer, step, params, extra, batch) -> None:
        x = batch["audio"][:1]
        out = self._reconstruct(params, extra, x)
        writer.add_audio("audio/input", np.asarray(x[0, :, 0]), step, sample_rate=self.config.sr)
        for level, x_out in enumerate(out["x_outs"]):
            audio = np.clip(np.asarray(x_out[0, :, 0]), -1.0, 1.0)
            writer.add_audio(f"audio/reconstruction_level_{level}", audio, step, sample_rate=self.config.sr)


def bandwidth_for(data: DataConfig, config: VQVAEConfig, workdir: str, seconds: float = 600.0) -> losses.Bandwidth:
    """Estimate the loss normalisers from the training data once; later runs read them from the workdir."""
    path = pathlib.Path(workdir) / BANDWIDTH_FILE
    if path.exists():
        try:
            return losses.Bandwidth.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError) as e:
            raise ConfigError(f"{path}: not a bandwidth record ({e}); delete it to estimate it again") from None
    iterator = data_pipeline.make_pipeline(
        data_pipeline.load_source(data.dataset_dir, data.split), sample_length=data.sample_length,
        batch_size=data.batch_size, seed=data.seed + 1, aug_shift=False, aug_blend=False, mono=True,
        shard_index=0, shard_count=1, num_epochs=1)
    audio = (batch["audio"] for batch in iterator)
    bandwidth = losses.estimate_bandwidth(audio, config, duration=seconds)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(bandwidth.to_dict()))
    log.info("bandwidth normalisers from %.0f s of training audio: %s", seconds, bandwidth.to_dict())
    return bandwidth


def make_task(config, workdir: str) -> VQVAETask:
    vq = build(VQVAEConfig, config.get("vqvae"), "vqvae")
    data = build(DataConfig, config.get("data"), "data")
    if data.sample_length % vq.hop_lengths[-1]:
        raise ConfigError(f"data.sample_length {data.sample_length} is not a multiple of the top hop length "
                         f"{vq.hop_lengths[-1]}")
    checks.check_audio_dataset(data.dataset_dir, sr=vq.sr, sr_field="config.vqvae.sr", mono=data.mono)
    return VQVAETask(vq, data, bandwidth_for(data, vq, workdir))


def describe(config) -> Dict[str, Any]:
    vq = build(VQVAEConfig, config.get("vqvae"), "vqvae")
    boxed = abstract_variables(vq)["params"]
    params = nn.unbox(boxed)
    by_module = {name: int(sum(np.prod(l.shape) for l in jax.tree.leaves(tree))) for name, tree in params.items()}
    return {
        "model": "vqvae",
        "params": count_params(vq),
        "params_by_module": by_module,
        "codebook_entries": [[vq.l_bins, vq.emb_width] for _ in range(vq.levels)],
        "codebook_values": vq.levels * vq.l_bins * vq.emb_width,
        "hop_lengths": list(vq.hop_lengths),
        "tokens_per_second": [vq.sr / hop for hop in vq.hop_lengths],
        "sample_rate": vq.sr,
        "memory_plan": parallel.memory_plan(boxed, build(MeshConfig, config.get("mesh"), "mesh")),
    }
