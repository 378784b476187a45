"""Assemble training runs into the model folder that `sample.py --checkpoint` and `python -m jukejax.vqvae` read.

  python -m jukejax.bundle --vqvae=runs/my_vqvae --prior=runs/my_prior --upsampler=runs/my_upsampler_1 \
      --upsampler=runs/my_upsampler_0 --data_dir=DATA --out=models/my_music

Writes (layout of `jukejax.sample.bundle`):

    OUT/vqvae/                  the VQ-VAE's EMA weights and codebooks + its config.json
    OUT/prior_level_{l}/        each prior's EMA weights + config.json (the level comes from its config)
    OUT/ids/artist_ids.txt      the dataset's name tables (`name;id`, id = the id the priors were trained on)
    OUT/ids/genre_ids.txt
    OUT/bundle.json             where each part came from (run, step) and the dataset

A part may also be a folder of an existing model (`models/1b_lyrics/prior_level_1`): its weights are copied,
and that model's version-specific name tables (`ids/v2_*`, `ids/v3_*`) come along for the label versions that
no prior trained on `--data_dir` uses (a fine-tuned 1b_lyrics top prior uses the dataset's extended v3 tables,
its released upsamplers keep their v2 tables).

Everything is checked before anything is written, and a mismatch stops with one line: a level missing or given
twice, a prior whose VQ-VAE (config, or the checkpoint that encoded its codes) is not `--vqvae`, a labelled
prior without `--data_dir`, name tables that do not fit a prior's `y_bins` or differ from the ones its codes
carry. The folder is written under a hidden temporary name beside `--out`, loaded back as `sample.py` would,
and only then renamed into place: there is never a half-written model folder.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence

from jukejax.cli import add_traceback_argument, run_reporting_user_errors
from jukejax.errors import UserError, atomic_write_text

IDS_DIR = "ids"
MANIFEST = "bundle.json"
TABLES = (("artist", "artists.txt"), ("genre", "genres.txt"))


class BundleError(UserError):
    """The runs given to `jukejax.bundle` do not make one model."""


@dataclasses.dataclass
class Part:
    """One component: where it is, its config, and (priors) what it was trained on."""
    name: str                   # vqvae | prior_level_{l}
    source: pathlib.Path
    config: Any                 # ConfigDict (config.json)
    level: Optional[int] = None

    @property
    def model_folder(self) -> Optional[pathlib.Path]:
        """The model folder this part is a component of (it has ids/ beside it), or None for a training run."""
        source = self.source.resolve()
        return source.parent if source.name == self.name and (source.parent / IDS_DIR).is_dir() else None


def _read(source: str, flag: str, want_model: str) -> Part:
    from jukejax.checkpoint import CheckpointError, read_config
    path = pathlib.Path(source)
    try:
        config = read_config(str(path))
    except CheckpointError as e:
        raise BundleError(f"--{flag}={source}: {e}") from None
    if _latest_step(path) is None:
        raise BundleError(f"--{flag}={source}: holds no finished checkpoint yet; train it first")
    model = config.get("model")
    if model != want_model:
        raise BundleError(f"--{flag}={source}: holds a {model!r} model; expected a {want_model}")
    if want_model == "vqvae":
        return Part("vqvae", path, config)
    level = int(config.prior.level)
    return Part(f"prior_level_{level}", path, config, level)


def _vqvae_config(part: Part):
    from jukejax.config import ConfigError, VQVAEConfig, build
    try:
        return build(VQVAEConfig, part.config.get("vqvae"), "vqvae")
    except ConfigError as e:
        raise BundleError(f"{part.source}: {e}") from None


def _latest_step(workdir: pathlib.Path) -> Optional[int]:
    from jukejax.checkpoint import CHECKPOINT_DIR
    steps = [int(p.name) for p in (workdir / CHECKPOINT_DIR).glob("*") if p.name.isdigit()]
    return max(steps) if steps else None


def _same_path(a: str, b: pathlib.Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _codes_summary(prior: Part) -> Optional[Dict[str, Any]]:
    """The summary of the codes dataset the prior trained on (None when it trained on raw audio or the codes
    are gone)."""
    from jukejax.data.codes import codes_path
    data = prior.config.get("data") or {}
    if data.get("raw_audio"):
        return None
    codes_dir = data.get("codes_dir") or str(prior.source / "codes")
    path = codes_path(codes_dir) / "summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def check_vqvae(prior: Part, vqvae: Part, vq_config) -> None:
    """The prior was trained on codes of this VQ-VAE: same config, and (where recorded) the same checkpoint."""
    ours = _vqvae_config(prior)
    for field in dataclasses.fields(vq_config):
        a, b = getattr(ours, field.name), getattr(vq_config, field.name)
        if a != b:
            raise BundleError(f"{prior.source}: its config.vqvae.{field.name} is {a}, the VQ-VAE {vqvae.source} "
                              f"has {b}; the prior was trained on another VQ-VAE's codes")
    if prior.model_folder is not None:      # a model's own component: trained with that model's VQ-VAE
        sibling = prior.model_folder / "vqvae"
        if not _same_path(str(sibling), vqvae.source):
            raise BundleError(f"{prior.source}: belongs with the VQ-VAE {sibling}, not --vqvae={vqvae.source}")
        return
    encoder = (_codes_summary(prior) or {}).get("encoder") or {}
    trained_on = encoder.get("vqvae_checkpoint") or prior.config.get("vqvae_checkpoint") or ""
    if trained_on and not _same_path(trained_on, vqvae.source):
        raise BundleError(f"{prior.source}: was trained on the codes of {trained_on}, not of --vqvae={vqvae.source}")
    if encoder.get("step") is not None and _same_path(encoder.get("vqvae_checkpoint", ""), vqvae.source):
        latest = _latest_step(vqvae.source)
        if latest is not None and int(encoder["step"]) != latest:
            raise BundleError(f"{prior.source}: its codes were encoded by {vqvae.source} at step {encoder['step']}, "
                              f"but that VQ-VAE's latest checkpoint is step {latest}; re-encode and retrain the prior")


def _tables(data_dir: str) -> Dict[str, str]:
    """The dataset's name tables, as text, keyed artist / genre."""
    from jukejax.data.builder import dataset_path
    base = dataset_path(data_dir)
    out = {}
    for kind, filename in TABLES:
        path = base / filename
        if not path.is_file():
            raise BundleError(f"--data_dir={data_dir}: no {path}; expected a dataset built by "
                              f"`python -m jukejax.data build`")
        out[kind] = path.read_text(encoding="utf-8")
    return out


def _table_size(text: str) -> int:
    ids = [int(line.rpartition(";")[2]) for line in text.splitlines() if line.strip()]
    return max(ids) + 1 if ids else 0


def check_labels(prior: Part, tables: Optional[Dict[str, str]], data_dir: Optional[str]) -> None:
    """A prior trained on the dataset has labels that the dataset's tables name, and the tables fit its y_bins."""
    hps = prior.config.prior
    if not hps.get("labels"):
        return
    if tables is None:
        raise BundleError(f"{prior.source}: has artist/genre labels; pass --data_dir=DATASET (the dataset it was "
                          f"trained on) so the model folder gets its name tables")
    genre_bins, artist_bins = (int(b) for b in hps.y_bins)
    for kind, bins in (("artist", artist_bins), ("genre", genre_bins)):
        size = _table_size(tables[kind])
        if size > bins:
            raise BundleError(f"{prior.source}: --data_dir={data_dir} has {size} {kind} ids but the prior's y_bins "
                              f"(genres, artists) = ({genre_bins}, {artist_bins}) hold {bins}; it was not trained "
                              f"on this dataset")
    summary = _codes_summary(prior)
    if summary is not None:
        from jukejax.data.codes import codes_path
        codes_dir = (prior.config.get("data") or {}).get("codes_dir") or str(prior.source / "codes")
        for kind, filename in TABLES:
            path = codes_path(codes_dir) / filename
            if path.is_file() and path.read_text(encoding="utf-8") != tables[kind]:
                raise BundleError(f"{prior.source}: was trained on codes whose {filename} ({path}) differs from "
                                  f"--data_dir={data_dir}'s; pass the dataset the prior was trained on")


def plan(vqvae: str, priors: Sequence[str], data_dir: Optional[str]):
    """Read and check every part; returns (vqvae part, {level: prior part}, tables or None)."""
    vq = _read(vqvae, "vqvae", "vqvae")
    vq_config = _vqvae_config(vq)
    top = vq_config.levels - 1
    by_level: Dict[int, Part] = {}
    for flag, source in priors:
        part = _read(source, flag, "prior")
        level = part.level
        if flag == "prior" and level != top:
            raise BundleError(f"--prior={source} is a level-{level} prior; the top prior of this {vq_config.levels}-"
                              f"level VQ-VAE is level {top} (pass lower levels with --upsampler)")
        if flag == "upsampler" and level == top:
            raise BundleError(f"--upsampler={source} is the top-level (level {top}) prior; pass it with --prior")
        if not 0 <= level <= top:
            raise BundleError(f"{source}: level {level} does not exist in the {vq_config.levels}-level VQ-VAE")
        if level in by_level:
            raise BundleError(f"level {level} is given twice: {by_level[level].source} and {source}")
        by_level[level] = part
    missing = [level for level in range(top, -1, -1) if level not in by_level]
    if missing:
        names = ", ".join(f"prior_level_{m}" for m in missing)
        raise BundleError(f"missing {names}: a {vq_config.levels}-level model needs --prior (level {top}) and "
                          f"--upsampler runs for levels {', '.join(map(str, range(top - 1, -1, -1))) or 'none'}")
    tables = _tables(data_dir) if data_dir else None
    for level in sorted(by_level, reverse=True):
        part = by_level[level]
        check_vqvae(part, vq, vq_config)
        if part.model_folder is None:
            check_labels(part, tables, data_dir)
    return vq, by_level, tables


def _clean(config):
    """The config as the model folder stores it: paths of the training machine removed."""
    config = config.copy_and_resolve_references()
    with config.unlocked():
        if "vqvae_checkpoint" in config:
            config.vqvae_checkpoint = ""
        if "data" in config:
            for key in ("dataset_dir", "codes_dir"):
                if key in config.data:
                    config.data[key] = ""
        if "train" in config and "init_from" in config.train:
            config.train.init_from = ""
    return config


def _copy_part(part: Part, dest: pathlib.Path) -> int:
    from jukejax.checkpoint import load_variables, save_variables
    _, variables, step = load_variables(str(part.source))     # EMA weights where the run has them
    save_variables(str(dest), _clean(part.config), variables, step=step)
    return step


def _write_ids(out: pathlib.Path, parts: List[Part], tables: Optional[Dict[str, str]]) -> List[str]:
    ids = out / IDS_DIR
    written = []
    trained_versions = {bool(p.config.prior.get("labels_v3")) for p in parts
                        if p.name != "vqvae" and p.model_folder is None and p.config.prior.get("labels")}
    if tables is not None:
        ids.mkdir(parents=True, exist_ok=True)
        for kind, _ in TABLES:
            atomic_write_text(ids / f"{kind}_ids.txt", tables[kind])
            written.append(f"{kind}_ids.txt")
    for part in parts:
        folder = part.model_folder
        if folder is None:
            continue
        for path in sorted((folder / IDS_DIR).glob("v[23]_*_ids.txt")):
            version_v3 = path.name.startswith("v3_")
            if version_v3 in trained_versions or (ids / path.name).exists():
                continue
            ids.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, ids / path.name)
            written.append(path.name)
        if tables is None and not trained_versions:
            for kind, _ in TABLES:
                plain = folder / IDS_DIR / f"{kind}_ids.txt"
                if plain.is_file() and not (ids / plain.name).exists():
                    ids.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(plain, ids / plain.name)
                    written.append(plain.name)
    return written


def bundle(vqvae: str, priors: Sequence[Any], out: str, data_dir: Optional[str] = None,
           overwrite: bool = False) -> Dict[str, Any]:
    """Check the runs, write the model folder `out` atomically; returns the manifest (also OUT/bundle.json).
    `priors` holds ("prior" | "upsampler", run) pairs."""
    out_path = pathlib.Path(out)
    if out_path.exists() and not overwrite:
        raise BundleError(f"--out={out}: already exists; remove it or pass --overwrite")
    vq, by_level, tables = plan(vqvae, priors, data_dir)
    parts = [vq] + [by_level[level] for level in sorted(by_level, reverse=True)]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_path.name}.incomplete-", dir=out_path.parent))
    try:
        steps = {part.name: _copy_part(part, tmp / part.name) for part in parts}
        ids = _write_ids(tmp, parts, tables)
        manifest = {"parts": {p.name: {"source": os.path.abspath(p.source), "step": steps[p.name]} for p in parts},
                    "data_dir": os.path.abspath(data_dir) if data_dir else None, "ids": ids}
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        from jukejax.sample.bundle import load_bundle
        load_bundle(tmp)        # read back as sample.py will, before it takes the name
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)   # mkdtemp made it private; the model folder is an ordinary one
        if out_path.exists():
            old = tmp / ".replaced"
            os.rename(out_path, old)
        os.rename(tmp, out_path)
        tmp = None
        manifest["out"] = os.path.abspath(out_path)
        shutil.rmtree(out_path / ".replaced", ignore_errors=True)
        return manifest
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jukejax.bundle", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--vqvae", required=True, help="VQ-VAE training workdir (train.py --workdir), or a model "
                                                       "folder's vqvae/")
    parser.add_argument("--prior", required=True, help="top-level prior workdir (or a model folder's "
                                                       "prior_level_{top}/)")
    parser.add_argument("--upsampler", action="append", default=[],
                        help="upsampler workdir, once per lower level (its level is read from its config)")
    parser.add_argument("--data_dir", default=None, help="the dataset the priors were trained on (`python -m "
                                                         "jukejax.data build --data_dir`): its artist/genre tables "
                                                         "become OUT/ids/; needed when a trained prior has labels")
    parser.add_argument("--out", required=True, help="the model folder to write (must not exist)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_traceback_argument(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.ERROR)  # orbax logs every save and restore, and warns of the
    # training runs' iterator state that a model folder does not keep

    def run() -> int:
        priors = [("prior", args.prior)] + [("upsampler", u) for u in args.upsampler]
        print(json.dumps(bundle(args.vqvae, priors, args.out, args.data_dir, args.overwrite), indent=2))
        return 0
    return run_reporting_user_errors(run, traceback=args.traceback)


if __name__ == "__main__":
    sys.exit(main())
