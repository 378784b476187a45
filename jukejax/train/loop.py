"""The training loop, written once: the VQ-VAE and the priors plug in a `Task`.

Mesh-sharded, jit-compiled steps; Orbax checkpoints (keep N, async, resume from the latest automatically,
with the data iterator's state and the task's metadata); TensorBoard scalars and audio; a tqdm bar.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import signal
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import linen as nn

from jukejax import parallel
from jukejax.checkpoint import CheckpointError, load_variables, short_reason, variables_metadata
from jukejax.config import ConfigError, MeshConfig, OptimConfig, TrainConfig
from jukejax.prior.transformer import abstract_index, abstract_stack, relayout
from jukejax.errors import UserError, check_workdir
from jukejax.train import state as state_lib

log = logging.getLogger("jukejax.train")
METRICS_FILE = "metrics.jsonl"


class Task(Protocol):
    """What a model brings to the loop."""
    name: str

    def init_variables(self, rng: jax.Array, batch: Dict[str, Any]) -> Dict[str, Any]:
        """All variable collections ("params" and e.g. "codebook"), possibly boxed with logical axes."""

    def loss_fn(self, params, extra, batch, rng, train: bool):
        """(loss, (new_extra, metrics)); see `state_lib.LossFn`."""

    def train_iterator(self, seed: int) -> Iterator[Dict[str, np.ndarray]]:
        """Endless iterator of host batches with `get_state()`/`set_state()` (Grain)."""

    def eval_batches(self) -> Optional[Iterator[Dict[str, np.ndarray]]]:
        """A few held-out batches, or None."""

    def metadata(self) -> Dict[str, Any]:
        """JSON saved with every checkpoint (e.g. the bandwidth normalisers)."""

    def summaries(self, writer, step: int, params, extra, batch) -> None:
        """Extra TensorBoard output (audio of reconstructions)."""


@dataclasses.dataclass
class LoopConfig:
    optim: OptimConfig
    train: TrainConfig
    mesh: MeshConfig


def _iterator_state(iterator) -> Any:
    state = iterator.get_state()
    return state.decode("latin-1") if isinstance(state, bytes) else state


def _set_iterator_state(iterator, state) -> None:
    try:
        iterator.set_state(state)
    except TypeError:
        iterator.set_state(state.encode("latin-1"))


_LABEL_TABLES = ("['artist_emb']", "['bow_genre_emb']")


def _grows_label_table(name: str, got: tuple, want: tuple) -> bool:
    """An artist/genre embedding table with more rows here than in the checkpoint, same width."""
    return (any(t in name for t in _LABEL_TABLES) and len(got) == len(want) == 2 and got[1] == want[1]
            and got[0] < want[0])


class TrainingDiverged(UserError):
    """Too many non-finite steps in a row (or a run that ended on them): usually a learning rate too high for
    the data, or data the labels cannot describe (e.g. songs shorter than `prior.min_duration`)."""


class _Profile:
    """A `jax.profiler` trace of steps `train.profile_start`..`train.profile_stop` (1-based, inclusive) into
    WORKDIR/profile, for TensorBoard's profile tab or Perfetto; off when `profile_stop` is 0."""

    def __init__(self, cfg: TrainConfig, workdir: pathlib.Path):
        self.first, self.last = cfg.profile_start, cfg.profile_stop
        self.directory = workdir / "profile"
        self.active = False

    def before(self, step: int) -> None:
        if self.last and step == self.first and not self.active:
            jax.profiler.start_trace(str(self.directory))
            self.active = True

    def after(self, step: int, state) -> None:
        if self.active and step >= self.last:
            jax.block_until_ready(state)
            self.close()

    def close(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
            log.info("profile of steps %d-%d written to %s", self.first, self.last, self.directory)


class Trainer:
    """Owns the mesh, the compiled step and the checkpoint manager for one task."""

    def __init__(self, task: Task, config: LoopConfig, workdir: str):
        self.task, self.config = task, config
        self.workdir = check_workdir(workdir)
        self.mesh = parallel.make_mesh(config.mesh)
        self.tx = state_lib.make_optimizer(config.optim)
        self.manager = ocp.CheckpointManager(
            (self.workdir / "checkpoints").absolute(),
            # cleanup_tmp_directories: the partial steps (`N.orbax-checkpoint-tmp`) a kill left behind go.
            options=ocp.CheckpointManagerOptions(max_to_keep=config.train.keep_checkpoints, create=True,
                                                 enable_async_checkpointing=True, cleanup_tmp_directories=True),
        )
        self._step_fn = self._eval_fn = None

    # ----- state -------------------------------------------------------------------------------------
    def state_shardings(self, batch) -> Any:
        return train_state_shardings(self.task, self.tx, self.config, self.mesh, batch)

    def init(self, batch) -> state_lib.TrainState:
        shardings, abstract = self.state_shardings(batch)
        rng = jax.random.PRNGKey(self.config.train.seed)
        if self.config.train.init_from:
            variables = self._pretrained(abstract, shardings, batch)
            with jax.set_mesh(self.mesh):
                return jax.jit(lambda v, rng: state_lib.init_state(v, self.tx, rng, self.config.optim),
                               out_shardings=shardings)(variables, rng)

        def make(rng, batch):
            variables = nn.unbox(self.task.init_variables(rng, batch))
            return state_lib.init_state(variables, self.tx, rng, self.config.optim)
        with jax.set_mesh(self.mesh):
            return jax.jit(make, out_shardings=shardings)(rng, batch)

    def _pretrained(self, abstract, shardings, batch) -> Dict[str, Any]:
        """`train.init_from`'s variables (its EMA weights where it has them), checked against this model's tree
        before anything is read: every collection, key and shape must match, except that the artist/genre
        embeddings may have more rows here (names appended to the model's tables; the new rows are initialised
        afresh) and that a prior's layers may be stacked otherwise (scanned or not: regrouped as this model
        runs them). Restored straight into this mesh's shardings in this model's dtypes."""
        source = self.config.train.init_from
        config, saved, step = variables_metadata(source)
        want = {"params": abstract.params, **abstract.extra}
        # layer stacks compared (and later read) in this model's layout, whichever the source has
        variables = relayout(saved, want, abstract_stack, abstract_index)
        where = f"train.init_from {source}"
        if set(variables) != set(want):
            raise ConfigError(f"{where}: holds collections {sorted(variables)} (a {config.get('model')} model); "
                              f"this {self.task.name} needs {sorted(want)}")
        got_leaves = dict(jax.tree_util.tree_flatten_with_path(variables)[0])
        want_leaves = dict(jax.tree_util.tree_flatten_with_path(want)[0])
        for path in sorted(set(got_leaves) | set(want_leaves), key=str):
            name = jax.tree_util.keystr(path)
            if path not in got_leaves or path not in want_leaves:
                side = "missing from it" if path not in got_leaves else "not in this model"
                raise ConfigError(f"{where}: parameter {name} is {side}; the model configs differ")
            got_shape, want_shape = tuple(got_leaves[path].shape), tuple(want_leaves[path].shape)
            if got_shape != want_shape and not _grows_label_table(name, got_shape, want_shape):
                raise ConfigError(f"{where}: parameter {name} has shape {got_shape}; this model's is {want_shape}")
        grown = {path: (got_leaves[path].shape[0], want_leaves[path].shape[0]) for path in got_leaves
                 if tuple(got_leaves[path].shape) != tuple(want_leaves[path].shape)}
        place = {"params": shardings.params, **shardings.extra}
        rep = parallel.replicated(self.mesh)
        # a grown table is read at its saved shape (replicated), then extended and placed
        target = jax.tree_util.tree_map_with_path(
            lambda path, a, sh: jax.ShapeDtypeStruct(got_leaves[path].shape if path in grown else a.shape, a.dtype,
                                                     sharding=rep if path in grown else sh), want, place)
        saved_target = relayout(target, saved, abstract_stack, abstract_index)
        _, variables, step = load_variables(source, step=step, target=saved_target)
        if saved_target is not target:
            variables = self._regrouped(variables, target)
        if grown:
            # New artist/genre names (a dataset built with --artist_ids/--genre_ids from the model's tables) get
            # new embedding rows, freshly initialised as this model initialises them; the model's rows stay.
            init = jax.jit(self.task.init_variables)(jax.random.PRNGKey(self.config.train.seed), batch)
            fresh = dict(jax.tree_util.tree_flatten_with_path({"params": nn.unbox(init["params"])})[0])
            for path, (old_rows, new_rows) in grown.items():
                log.info("%s: %s grows from %d to %d rows (new labels)", where, jax.tree_util.keystr(path),
                         old_rows, new_rows)
            variables = jax.tree_util.tree_map_with_path(
                lambda path, x, sh: parallel.put_global(
                    np.concatenate([np.asarray(x), np.asarray(fresh[path])[x.shape[0]:]]), sh)
                if path in grown else x, variables, place)
        log.info("%s: initialised from %s (step %d)", self.task.name, source, step)
        return variables

    # ----- checkpoints -------------------------------------------------------------------------------
    def save(self, state, iterator_state, force: bool = False) -> None:
        """Start an asynchronous save of `state` with the data iterator's position `iterator_state`."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave({"iterator": iterator_state}),
            meta=ocp.args.JsonSave(self.task.metadata()),
        )
        self.manager.save(int(_fetch(state.step)), args=args, force=force)

    def restore(self, batch, iterator, step: Optional[int] = None):
        """The latest checkpoint (or `step`), restored straight into this mesh's shardings; None if there is none.

        A checkpoint that cannot be read (a disk error, a file cut short) is reported in one warning and the
        one before it is tried, so a damaged latest checkpoint costs one interval, not the run."""
        steps = sorted(self.manager.all_steps(), reverse=True) if step is None else [step]
        if not steps:
            return None
        shardings, abstract = self.state_shardings(batch)
        target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
        for i, candidate in enumerate(steps):
            try:
                # A prior's layer stacks are read in the layout the checkpoint has (per layer, scanned, or the
                # earlier period-scanned one) and regrouped as this config runs them.
                saved = _state_metadata(self.manager.directory / str(candidate) / "state")
                saved_target = relayout(target, saved, abstract_stack, abstract_index)
                restored = self.manager.restore(candidate, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(saved_target), data=ocp.args.JsonRestore()))
            except Exception as e:  # Orbax/TensorStore raise many types for damaged files
                where = self.manager.directory / str(candidate)
                if i + 1 == len(steps):
                    raise CheckpointError(f"{where}: cannot be restored ({short_reason(e)}); no earlier checkpoint "
                                          f"is intact; move {self.manager.directory} away to start afresh") from None
                log.warning("%s: cannot be restored (%s); falling back to step %d", where, short_reason(e),
                            steps[i + 1])
                continue
            if iterator is not None:
                _set_iterator_state(iterator, restored["data"]["iterator"])
            if saved_target is not target:
                return self._regrouped(restored["state"], target)
            return restored["state"]

    def _regrouped(self, tree: Any, target: Any) -> Any:
        """`tree`, restored in a checkpoint's layer-stack layout, regrouped as `target` (abstract arrays with
        shardings) lays out its layers, placed on target's shardings."""
        with jax.set_mesh(self.mesh):
            return jax.jit(lambda t: relayout(t, target, jnp.stack),
                           out_shardings=jax.tree.map(lambda t: t.sharding, target))(tree)

    # ----- the loop ----------------------------------------------------------------------------------
    def compiled_step(self):
        if self._step_fn is None:
            self._step_fn = jit_train_step(self.task, self.tx, self.config.optim)
        return self._step_fn

    def run(self, stop_after: Optional[int] = None) -> Dict[str, Any]:
        """Train until `train.num_steps` (or `stop_after` more steps). Returns {"logs": one dict of scalars per
        log step, "last_step": the step reached}.

        SIGTERM/SIGINT (preemption, Ctrl-C) finish the current step, save a checkpoint and return. Saves are
        asynchronous but each is committed while the step after it computes, before that step is reported, so
        a `kill -9` loses at most the steps since the last checkpoint (under one interval), and the restarted
        run repeats them exactly (same batches, same keys). More than `train.max_consecutive_skips` non-finite
        steps in a row, or a run that ends on a non-finite step, raise `TrainingDiverged` naming the last good
        checkpoint."""
        self._stop_signal = None
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self._request_stop)
        try:
            return self._run(stop_after)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            # Every save started is finished (or has failed) before the caller sees a result or an error.
            self.manager.wait_until_finished()

    def _request_stop(self, signum, frame):
        self._stop_signal = signum

    def _diverged(self, step: int, in_a_row: int, ended: bool) -> "TrainingDiverged":
        """The stop after non-finite steps: every checkpoint is saved after a finite step and none is saved
        during a run of non-finite ones, so the latest checkpoint is the last one before the first of them."""
        self.manager.wait_until_finished()
        first = step - in_a_row + 1
        good = [s for s in self.manager.all_steps() if s < first]
        what = (f"the run ended on {in_a_row} non-finite step(s) in a row (steps {first}-{step})" if ended else
                f"{in_a_row} steps in a row (steps {first}-{step}) had a non-finite loss or gradient, more than "
                f"train.max_consecutive_skips={self.config.train.max_consecutive_skips}")
        if good:
            where = f"last good checkpoint: {self.manager.directory / str(max(good))} (step {max(good)}, saved " \
                    f"before the first of them; the same command resumes from it)"
        else:
            where = "no checkpoint was saved before the first of them"
        return TrainingDiverged(f"{what}; stopped; {where}; check the data or lower optim.lr")

    def _run(self, stop_after: Optional[int]) -> Dict[str, Any]:
        cfg = self.config.train
        iterator = self.task.train_iterator(cfg.seed)
        host_batch = next(iterator)
        with jax.set_mesh(self.mesh):
            batch = parallel.shard_batch(host_batch, self.mesh)
            state = self.restore(batch, iterator)
            resumed = state is not None
            if state is None:
                state = self.init(batch)
            else:
                host_batch = next(iterator)  # the restored iterator's position: the batch after the checkpoint
                batch = parallel.shard_batch(host_batch, self.mesh)
        start = int(_fetch(state.step))
        log.info("%s: %s at step %d in %s", self.task.name, "resumed" if resumed else "started", start,
                 self.workdir)
        writer = _writer(self.workdir) if jax.process_index() == 0 else None
        logs: List[Dict[str, float]] = []
        step_fn = self.compiled_step()
        end = cfg.num_steps if stop_after is None else min(cfg.num_steps, start + stop_after)
        profile = _Profile(cfg, self.workdir)
        bar = _progress(start, cfg.num_steps)
        t0 = t_last = time.time()
        step, step_last = start, start
        save_due = False  # a checkpoint step fell inside a run of non-finite steps: save after the next good one
        saving = False    # a save was started after the previous step
        try:
            with jax.set_mesh(self.mesh):
                while step < end:
                    profile.before(step + 1)
                    state, metrics = step_fn(state, batch)  # dispatched; the host runs on while it computes
                    step += 1
                    if saving:
                        # The previous step's checkpoint is committed while this step computes, before this
                        # step can be reported: a kill never loses more than the steps since the last one.
                        self.manager.wait_until_finished()
                        saving = False
                    # The data position a checkpoint of this step resumes from: before the next batch is drawn.
                    iterator_state = _iterator_state(iterator)
                    if step < end:
                        host_batch_used, host_batch = host_batch, next(iterator)
                        batch = parallel.shard_batch(host_batch, self.mesh)
                    else:
                        host_batch_used = host_batch
                    profile.after(step, state)
                    if bar is not None:
                        bar.update(1)
                    is_log = step % cfg.log_every == 0 or step == end
                    is_checkpoint = step % cfg.checkpoint_every == 0 or step == end or save_due
                    stopping = self._stop_signal is not None or (cfg.max_seconds > 0
                                                                 and time.time() - t0 > cfg.max_seconds)
                    if not (is_log or is_checkpoint or stopping or step % cfg.eval_every == 0):
                        continue
                    # The only host syncs: here, at log/eval/checkpoint steps (and at a stop).
                    in_a_row = int(_fetch(state.skipped_in_a_row))
                    if in_a_row > cfg.max_consecutive_skips:
                        raise self._diverged(step, in_a_row, ended=False)
                    if is_log:
                        now = time.time()
                        scalars = {k: float(v) for k, v in _fetch(metrics).items() if np.ndim(v) == 0}
                        scalars["steps_per_second"] = (step - step_last) / max(now - t_last, 1e-9)
                        t_last, step_last = now, step
                        self._log(scalars, step, writer, logs)
                        if bar is not None:
                            bar.set_postfix(loss=f"{scalars['loss']:.4f}")
                    if step % cfg.eval_every == 0 or step == end:
                        self.evaluate(state, step, writer, host_batch_used)
                    if is_checkpoint or stopping:
                        if in_a_row == 0:
                            self.save(state, iterator_state, force=stopping)
                            save_due, saving = False, True
                        elif is_checkpoint and not save_due:
                            log.warning("step %d: not saving a checkpoint after %d non-finite step(s); saving "
                                        "after the next finite one", step, in_a_row)
                            save_due = True
                    if stopping:
                        reason = (f"{signal.Signals(self._stop_signal).name} received" if self._stop_signal
                                  is not None else f"train.max_seconds {cfg.max_seconds:g} reached")
                        log.warning("%s: %s at step %d and stopped", reason,
                                    "saved a checkpoint" if in_a_row == 0 else
                                    f"no checkpoint saved ({in_a_row} non-finite steps just before)", step)
                        break
            in_a_row = int(_fetch(state.skipped_in_a_row))
            if in_a_row > 0 and step == end and self._stop_signal is None:
                raise self._diverged(step, in_a_row, ended=True)
        finally:
            profile.close()
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        log.info("%s: %d steps in %.1f s", self.task.name, step - start, time.time() - t0)
        self.state = state
        return {"logs": logs, "last_step": step}

    def _log(self, scalars: Dict[str, float], step: int, writer, logs: List[Dict[str, float]]) -> None:
        entry = dict(scalars, step=step)
        logs.append(entry)
        if not np.isfinite(scalars.get("loss", 0.0)):
            log.warning("step %d: non-finite loss (steps skipped so far: %d)", step, int(scalars["skipped"]))
        if writer is not None:
            for k, v in scalars.items():
                writer.add_scalar(f"train/{k}", v, step)
        if jax.process_index() == 0:
            with open(self.workdir / METRICS_FILE, "a") as f:  # exact floats, for resume checks
                f.write(json.dumps(entry) + "\n")
        log.info("step %d: %s", step, json.dumps({k: round(v, 5) for k, v in scalars.items()}))

    def evaluate(self, state, step: int, writer, host_batch) -> Dict[str, float]:
        params = state.ema_params if state.ema_params is not None else state.params
        batches = self.task.eval_batches()
        totals: Dict[str, list] = {}
        if self._eval_fn is None:
            self._eval_fn = jax.jit(lambda p, e, b: self.task.loss_fn(p, e, b, jax.random.PRNGKey(0), False))
        eval_fn = self._eval_fn
        for eval_batch in (batches or []):
            loss, (_, metrics) = eval_fn(params, state.extra, parallel.shard_batch(eval_batch, self.mesh))
            for k, v in _fetch(dict(metrics, loss=loss)).items():
                if np.ndim(v) == 0:
                    totals.setdefault(k, []).append(float(v))
        means = {k: float(np.mean(v)) for k, v in totals.items()}
        if writer is not None:
            for k, v in means.items():
                writer.add_scalar(f"eval/{k}", v, step)
            self.task.summaries(writer, step, params, state.extra, parallel.shard_batch(host_batch, self.mesh))
        if means:
            log.info("eval step %d: %s", step, json.dumps({k: round(v, 5) for k, v in means.items()}))
        return means


def _state_metadata(path: pathlib.Path) -> Any:
    """A saved train state's tree of array metadata (shapes and dtypes), read without loading an array."""
    metadata = ocp.PyTreeCheckpointer().metadata(path)
    metadata = getattr(metadata, "item_metadata", metadata)
    return getattr(metadata, "tree", metadata)


def train_state_shardings(task: Task, tx, config: LoopConfig, mesh, batch) -> Any:
    """(shardings, abstract train state) for `batch` on `mesh`: params by their logical axes, the optimizer
    moments and the EMA like the params, everything else replicated. Shapes only; nothing is allocated."""
    rng = jax.random.PRNGKey(config.train.seed)

    def make(rng, batch):
        variables = task.init_variables(rng, batch)
        return state_lib.init_state(nn.unbox(variables), tx, rng, config.optim), variables
    abstract, boxed = jax.eval_shape(make, rng, batch)
    param_sh = parallel.param_shardings(boxed["params"], mesh)
    rep = parallel.replicated(mesh)
    return abstract.replace(
        step=rep, params=param_sh, extra=jax.tree.map(lambda _: rep, abstract.extra),
        opt_state=_map_param_like(abstract.opt_state, abstract.params, param_sh, rep),
        ema_params=None if abstract.ema_params is None else param_sh,
        rng=rep, skipped=rep, skipped_in_a_row=rep), abstract


def jit_train_step(task: Task, tx, optim: OptimConfig):
    """The jitted train step the loop runs (the state donated); `jukejax.aot` compiles the same one."""
    return jax.jit(state_lib.make_train_step(task.loss_fn, tx, optim), donate_argnums=0)


def _fetch(tree):
    """Device -> host, explicitly: the loop's only syncs with the device (at log, eval and checkpoint steps)."""
    return jax.device_get(tree)


def _map_param_like(tree, params, param_sh, rep):
    """Shard every sub-tree of the optimiser state that has the params' structure like the params."""
    params_def = jax.tree.structure(params)

    def visit(node):
        if jax.tree.structure(node) == params_def:
            return param_sh
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            return type(node)(*[visit(c) for c in node])
        if isinstance(node, (tuple, list)):
            return type(node)(visit(c) for c in node)
        if isinstance(node, dict):
            return {k: visit(v) for k, v in node.items()}
        return jax.tree.map(lambda _: rep, node)
    return visit(tree)


def _writer(workdir: pathlib.Path):
    from tensorboardX import SummaryWriter
    return SummaryWriter(str(workdir / "tensorboard"))


def _progress(start: int, total: int):
    if jax.process_index() != 0:
        return None
    from tqdm import tqdm
    return tqdm(initial=start, total=total, dynamic_ncols=True, mininterval=2.0)
