"""`train.py`'s two jobs, for any model the config names: describe it, or train it."""
from __future__ import annotations

from typing import Any, Dict

from jukejax.checkpoint import write_config
from jukejax.config import ConfigError, MeshConfig, OptimConfig, TrainConfig, build
from jukejax.train import loop


def _task_module(config):
    model = config.get("model")
    if model == "vqvae":
        from jukejax.train import vqvae_task
        return vqvae_task
    if model == "prior":
        from jukejax.train import prior_task
        return prior_task
    raise ConfigError(f"config.model is {model!r}; expected 'vqvae' or 'prior'")


def loop_config(config) -> loop.LoopConfig:
    return loop.LoopConfig(optim=build(OptimConfig, config.get("optim"), "optim"),
                           train=build(TrainConfig, config.get("train"), "train"),
                           mesh=build(MeshConfig, config.get("mesh"), "mesh"))


def describe(config) -> Dict[str, Any]:
    return _task_module(config).describe(config)


def train(config, workdir: str) -> Dict[str, list]:
    module = _task_module(config)
    loop.check_workdir(workdir)
    task = module.make_task(config, workdir)
    write_config(workdir, config)
    return loop.Trainer(task, loop_config(config), workdir).run()
