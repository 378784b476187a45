"""Train the bundled demo model, every stage, and write the model folder `make sample` uses.

  python scripts/make_demo_dataset.py --out DEMO_DATA         # render the music21 corpus (once)
  python scripts/train_demo.py --data DEMO_DATA --out models/demo --runs runs/demo
  # retrain the upsamplers only, warm-started from an earlier model folder, keeping its VQ-VAE and top prior:
  python scripts/train_demo.py --data DEMO_DATA --start_from OLD_MODEL --keep vqvae,prior_level_2 ...

Stages: VQ-VAE (configs/demo_vqvae.py) -> codes of every song, once -> top prior (configs/demo_prior.py) ->
middle and bottom upsamplers (configs/demo_upsampler_{1,0}.py). Each stage stops at its step count or its
time budget (--minutes), with a checkpoint. Then the held-out split is evaluated (spectral convergence of each
level's reconstruction, bits per token of each prior), the EMA weights are copied into --out as a model folder
(vqvae/, prior_level_{l}/, ids/), the held-out reconstructions are written to RUNS/reconstructions and checked
(scripts/check_reconstructions.py), and MODEL_CARD.md is written with the measured numbers.

Every stage trained here decays its learning rate linearly to zero over the second half of its steps (set the
step counts with --steps so that they end near the time budget). With --start_from, the stages named by --keep
are copied from that model folder unchanged (with their training record) and every other stage starts from
that folder's weights. --stages trains only the named stages and stops, so that stages can run side by side in
separate processes; a last invocation without it evaluates and writes the model folder.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# scripts/ is this script's directory, so its sibling modules import as top-level modules.
from check_reconstructions import check as check_reconstructions  # noqa: E402
from model_card import write_model_card  # noqa: E402

from jukejax.cli import add_traceback_argument, run_reporting_user_errors  # noqa: E402
from jukejax.errors import UserError, atomic_write_text  # noqa: E402  (a kill mid-write must not leave half a record)

STAGE_FILE = "demo_stage.json"      # in each stage's workdir once it has finished: what the model card reports
ENCODE_FILE = "encode.json"          # in --runs once every song is pre-encoded
STAGES = (("vqvae", "demo_vqvae"), ("prior_level_2", "demo_prior"), ("prior_level_1", "demo_upsampler_1"),
          ("prior_level_0", "demo_upsampler_0"))


def _config(name: str):
    from jukejax import presets
    return presets.get(name)


def _name_tables(data_dir: pathlib.Path):
    from jukejax.data import dataset_path, read_name_table
    base = dataset_path(str(data_dir))
    return read_name_table(base / "artists.txt"), read_name_table(base / "genres.txt"), base


def _mean_metrics(task, variables_params, extra, batches):
    import jax
    import numpy as np
    fn = jax.jit(lambda p, e, b: task.loss_fn(p, e, b, jax.random.PRNGKey(0), False))
    totals = {}
    for batch in batches:
        batch = {k: v for k, v in batch.items() if np.asarray(v).dtype.kind not in "OUS"}
        loss, (_, metrics) = fn(variables_params, extra, batch)
        for k, v in dict(metrics, loss=loss).items():
            if np.ndim(v) == 0:
                totals.setdefault(k, []).append(float(v))
    return {k: float(np.mean(v)) for k, v in totals.items()}


def _stage_list(text: str, flag: str, names) -> list:
    stages = [s for s in text.split(",") if s]
    unknown = [s for s in stages if s not in names]
    if unknown:
        raise UserError(f"{flag}: unknown stage(s) {', '.join(unknown)}; the stages are {', '.join(names)}")
    return stages


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder written by scripts/make_demo_dataset.py")
    parser.add_argument("--out", default=str(ROOT / "models" / "demo"))
    parser.add_argument("--runs", default=str(ROOT / "runs" / "demo"))
    parser.add_argument("--minutes", default="30,25,20,20",
                        help="time budget per stage: vqvae, top prior, upsampler 1, upsampler 0")
    parser.add_argument("--steps", default="", help="override step counts per stage, e.g. 3000,3000,2000,2000")
    parser.add_argument("--start_from", default="",
                        help="an earlier model folder (written by this script): --keep's stages are copied from it, "
                             "the others start from its weights")
    parser.add_argument("--keep", default="",
                        help="with --start_from: stages to take unchanged, e.g. vqvae,prior_level_2")
    parser.add_argument("--stages", default="",
                        help="train only these stages, then stop (default: every stage, then evaluate and bundle)")
    add_traceback_argument(parser)
    args = parser.parse_args(argv)
    return run_reporting_user_errors(lambda: _run(args), traceback=args.traceback)


def _run(args) -> int:
    import jax
    from jukejax.checkpoint import load_variables, save_variables
    from jukejax.data import codes as codes_lib
    from jukejax.data.__main__ import make_vqvae_encode_fn
    from jukejax.train import run as run_lib
    from jukejax.train.prior_task import make_task as make_prior_task
    from jukejax.train.vqvae_task import make_task as make_vqvae_task

    data = pathlib.Path(args.data) / "data"
    runs, out = pathlib.Path(args.runs), pathlib.Path(args.out)
    minutes = [float(m) for m in args.minutes.split(",")]
    steps = [int(s) for s in args.steps.split(",")] if args.steps else [None] * 4
    names = [component for component, _ in STAGES]
    keep, only = _stage_list(args.keep, "--keep", names), _stage_list(args.stages, "--stages", names)
    start_from = pathlib.Path(args.start_from) if args.start_from else None
    if keep and start_from is None:
        raise UserError("--keep needs --start_from (the model folder to keep the stages from)")
    previous = {}
    if start_from is not None:
        record = start_from / "training.json"
        missing = [c for c in names if not (start_from / c).is_dir()]
        if missing or not record.exists():
            raise UserError(f"--start_from {start_from}: expected a model folder written by this script "
                            f"(training.json and {', '.join(names)}/); missing: "
                            f"{', '.join(missing + ([] if record.exists() else ['training.json']))}")
        previous = json.loads(record.read_text()).get("stages", {})
    artists, genres, dataset_base = _name_tables(data)
    y_bins = (len(genres), len(artists))
    codes_dir = runs / "codes"
    card = {"stages": {}, "data": json.loads((dataset_base / "summary.json").read_text())
            if (dataset_base / "summary.json").exists() else {}}

    for (component, config_name), budget, n_steps in zip(STAGES, minutes, steps):
        done = runs / component / STAGE_FILE
        if component in keep and not done.exists():
            shutil.rmtree(runs / component, ignore_errors=True)
            shutil.copytree(start_from / component, runs / component)
            atomic_write_text(done, json.dumps(dict(previous.get(component, {}), kept_from=str(start_from)),
                                               default=float))
        if done.exists():  # finished by an earlier invocation: the script picks up where it stopped
            card["stages"][component] = json.loads(done.read_text())
            print(f"== {component}: done already ({done})", flush=True)
            continue
        if only and component not in only:
            continue
        config = _config(config_name)
        config.train.max_seconds = budget * 60
        if n_steps:
            config.train.num_steps = n_steps
        half = config.train.num_steps // 2
        config.optim.update(dict(lr_use_linear_decay=True, lr_start_linear_decay=half,
                                 lr_decay=config.train.num_steps - half))
        if start_from is not None:
            config.train.init_from = str(start_from / component)
        if component == "vqvae":
            config.data.dataset_dir = str(data)
        else:
            config.prior.y_bins = y_bins
            config.data.codes_dir = str(codes_dir)
            if not codes_lib.codes_path(str(codes_dir)).exists():
                t = time.time()
                encode_fn = make_vqvae_encode_fn(str(runs / "vqvae"))
                codes_lib.encode_dataset(str(data), str(codes_dir), encode_fn,
                                         hop_lengths=encode_fn.config.hop_lengths)
                atomic_write_text(runs / ENCODE_FILE, json.dumps({"encode_seconds": time.time() - t}))
        print(f"== {component}: {config_name}, up to {config.train.num_steps} steps or {budget:g} min", flush=True)
        t = time.time()
        history = run_lib.train(config, str(runs / component))
        wall = time.time() - t
        logs = history["logs"]
        card["stages"][component] = dict(config=f"configs/{config_name}.py", steps=history["last_step"],
                                         wall_seconds=wall,
                                         first_log=logs[0] if logs else {}, last_log=logs[-1] if logs else {})
        if start_from is not None:
            card["stages"][component]["started_from"] = dict(previous.get(component, {}), folder=str(start_from))
        atomic_write_text(done, json.dumps(card["stages"][component], default=float))

    left = [c for c in names if not (runs / c / STAGE_FILE).exists()]
    if left:
        print(f"== stopped after --stages {args.stages}; not trained yet: {', '.join(left)}", flush=True)
        return 0
    if (runs / ENCODE_FILE).exists():
        card.update(json.loads((runs / ENCODE_FILE).read_text()))

    # held-out evaluation with the EMA weights
    evaluation = {}
    for component, config_name in STAGES:
        config = _config(config_name)
        _, variables, _ = load_variables(str(runs / component))
        params = variables.pop("params")
        if component == "vqvae":
            config.data.dataset_dir = str(data)
            task = make_vqvae_task(config, str(runs / component))
        else:
            config.prior.y_bins = y_bins
            config.data.codes_dir = str(codes_dir)
            task = make_prior_task(config, str(runs / component))
        batches = task.eval_batches() or []
        evaluation[component] = _mean_metrics(task, jax.device_put(params), variables, batches)
    card["held_out"] = evaluation

    # the model folder
    if out.exists():
        shutil.rmtree(out)
    for component, config_name in STAGES:
        config, variables, _ = load_variables(str(runs / component))
        config.train.init_from = ""     # a path on the training machine; the card records where it started
        if component != "vqvae":
            config.vqvae_checkpoint = ""
            config.data.codes_dir = ""
        save_variables(str(out / component), config, variables)
    ids = out / "ids"
    ids.mkdir(parents=True, exist_ok=True)
    shutil.copy(dataset_base / "artists.txt", ids / "artist_ids.txt")
    shutil.copy(dataset_base / "genres.txt", ids / "genre_ids.txt")
    card["minutes"] = args.minutes
    card["train_args"] = " ".join(f"--{k} {v}" for k, v in (("minutes", args.minutes), ("steps", args.steps),
                                                              ("start_from", args.start_from), ("keep", args.keep))
                                  if v)
    card["reconstruction_check"] = check_reconstructions(str(data), str(out), str(runs / "reconstructions"))
    atomic_write_text(out / "training.json", json.dumps(card, indent=2, default=float))
    write_model_card(out, card)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(json.dumps({"out": str(out), "bytes": size, "held_out": evaluation,
                      "wall_seconds": {k: v["wall_seconds"] for k, v in card["stages"].items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
