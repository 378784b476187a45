"""Train state, optimiser and the one jit-compiled train step shared by the VQ-VAE and the priors."""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import flax
import jax
import jax.numpy as jnp
import optax

from jukejax.config import OptimConfig

# loss_fn(params, extra, batch, rng, train) -> (loss, (new_extra, metrics)).
# `extra` holds the non-trainable variable collections (the VQ-VAE codebook), updated by the forward pass.
LossFn = Callable[[Any, Any, Dict[str, Any], jax.Array, bool], Tuple[jax.Array, Tuple[Any, Dict[str, jax.Array]]]]


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    extra: Any
    opt_state: Any
    ema_params: Any
    rng: jax.Array                 # raw uint32 key; each step folds in its step number, so resume is exact
    skipped: jax.Array             # steps skipped for a non-finite loss/gradient (or a too-large norm)
    skipped_in_a_row: jax.Array


def learning_rate(config: OptimConfig) -> optax.Schedule:
    """The original's LambdaLR: lr * min(1, step/warmup), optionally times a linear decay to zero."""
    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        warm = jnp.minimum(1.0, step / max(config.lr_warmup, 1)) if config.lr_warmup > 0 else 1.0
        if config.lr_use_linear_decay:
            decay = jnp.maximum(0.0, 1.0 - jnp.maximum(0.0, step - config.lr_start_linear_decay) / config.lr_decay)
            warm = warm * decay
        return config.lr * warm
    return schedule


def make_optimizer(config: OptimConfig) -> optax.GradientTransformation:
    """Adam with global-norm clipping and decoupled weight decay, as the original's train loop."""
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.adamw(learning_rate(config), b1=config.beta1, b2=config.beta2, eps=config.eps,
                    weight_decay=config.weight_decay),
    )


def init_state(variables: Dict[str, Any], tx: optax.GradientTransformation, rng: jax.Array,
               config: OptimConfig) -> TrainState:
    params = variables["params"]
    extra = {k: v for k, v in variables.items() if k != "params"}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, extra=extra, opt_state=tx.init(params),
                      ema_params=params if config.ema_mu > 0 else None, rng=rng,
                      skipped=jnp.zeros((), jnp.int32), skipped_in_a_row=jnp.zeros((), jnp.int32))


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, config: OptimConfig):
    """One optimisation step. A step whose loss, gradient norm or update is not finite (or whose gradient norm
    exceeds `ignore_grad_norm`) leaves params, optimiser state, EMA and codebook unchanged and is counted in
    `skipped` and `skipped_in_a_row`, on the device: the host reads them only when it logs or saves."""
    def train_step(state: TrainState, batch):
        rng = jax.random.fold_in(state.rng, state.step)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (extra, metrics)), grads = grad_fn(state.params, state.extra, batch, rng, True)
        grad_norm = optax.tree.norm(grads)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        if config.ignore_grad_norm > 0:
            ok &= grad_norm <= config.ignore_grad_norm
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ok &= jnp.isfinite(optax.tree.norm(updates))  # a finite gradient can still overflow the update
        ema = state.ema_params
        if ema is not None:
            mu = config.ema_mu
            ema = jax.tree.map(lambda e, p: mu * e + (1.0 - mu) * p, ema, params)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)  # noqa: E731
        new_state = state.replace(
            step=state.step + 1,
            params=keep(params, state.params),
            extra=keep(extra, state.extra),
            opt_state=keep(opt_state, state.opt_state),
            ema_params=None if ema is None else keep(ema, state.ema_params),
            skipped=state.skipped + (~ok).astype(jnp.int32),
            skipped_in_a_row=jnp.where(ok, 0, state.skipped_in_a_row + 1),
        )
        metrics = dict(metrics, loss=loss, grad_norm=grad_norm, lr=learning_rate(config)(state.step),
                       skipped=new_state.skipped, step_ok=ok)
        return new_state, metrics
    return train_step
