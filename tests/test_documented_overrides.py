"""Every train.py command line the documentation shows parses as users run it and reaches the typed config.

The commands are read from the text itself: README.md, docs/*.md, train.py's docstring and the docstrings of
configs/*.py and tests/tiny_configs.py (so a new documented command is tested without editing this file).
Each is parsed by train.py's own flags (`train.define_flags`, the locked `--config` file flag of
ml_collections' config_flags) into a fresh FlagValues; each `--config.a.b=v` override must then equal `v` in
the typed config the library builds (`PriorHParams`, `VQVAEConfig`, `DataConfig`, ...), and a prior setting
that shapes the model must reach the transformer's config (`--config.prior.dtype=bfloat16` -> compute dtype).
An override written in prose (README: "`--config.prior.dtype=bfloat16` computes in bf16") is applied to every
config that the same README section runs.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
import pathlib
import re
import shlex
from typing import Dict, List, Optional, Tuple

import pytest
from absl import flags

from jukejax.config import DataConfig, MeshConfig, OptimConfig, TrainConfig, VQVAEConfig, build
from jukejax.prior.prior import prior_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Placeholders of integer flags in the docs ("--num_processes=N --process_id=I"), given a value to parse.
PLACEHOLDERS = {"--num_processes=N": "--num_processes=4", "--process_id=I": "--process_id=0"}
# PriorHParams fields named differently in the transformer's config, and how their value shows there.
TRANSFORMER_FIELD = {"prior_width": ("width", lambda v: v), "prior_depth": ("depth", lambda v: v),
                     "c_res": ("remat", lambda v: v > 0)}
_COMMAND = re.compile(r"train\.py((?:[ \t]+--[^\s\"'`#]+)+)")
# Any command line (another script's, `python -m ...`): its overrides are not train.py's prose.
_ANY_COMMAND = re.compile(r"(?:\S+\.py|-m [\w.]+)(?:[ \t]+--[^\s\"'`#]+)+")
_OVERRIDE = re.compile(r"--config\.[\w.]+=[^\s\"'`#,;)]+")


def _doc_texts() -> List[Tuple[str, str]]:
    """(where, text) of every document that shows train.py commands."""
    texts = [("README.md", (ROOT / "README.md").read_text())]
    texts += [(str(p.relative_to(ROOT)), p.read_text()) for p in sorted((ROOT / "docs").glob("*.md"))]
    for path in [ROOT / "train.py", ROOT / "tests" / "tiny_configs.py", *sorted((ROOT / "configs").glob("*.py"))]:
        doc = ast.get_docstring(ast.parse(path.read_text()))
        if doc:
            texts.append((str(path.relative_to(ROOT)), doc))
    return texts


def _sections(where: str, text: str) -> List[Tuple[str, str]]:
    """A markdown file split at its `## ` headings; any other text is one section."""
    if not where.endswith(".md"):
        return [(where, text)]
    parts = re.split(r"^(## .*)$", text, flags=re.M)
    return [(f"{where} {parts[i].strip()}", parts[i + 1]) for i in range(1, len(parts) - 1, 2)] + \
        [(where, parts[0])]


@dataclasses.dataclass(frozen=True)
class Command:
    where: str
    args: Tuple[str, ...]      # train.py's arguments

    @property
    def config_file(self) -> Optional[str]:
        """None for a fragment that names flags only (`train.py --describe` in prose)."""
        return next((a.split("=", 1)[1] for a in self.args if a.startswith("--config=")), None)


def documented_commands() -> List[Command]:
    commands = []
    for where, text in _doc_texts():
        for section, body in _sections(where, text):
            joined = re.sub(r"\\\n\s*", " ", body)           # shell line continuations
            found = [Command(section, tuple(PLACEHOLDERS.get(a, a) for a in shlex.split(m.group(1))))
                     for m in _COMMAND.finditer(joined)]
            prose = _OVERRIDE.findall(_ANY_COMMAND.sub("", joined))
            configs = sorted({c.config_file for c in found if c.config_file})
            for config in configs if prose else ():
                found.append(Command(f"{section} (prose)", (f"--config={config}", *prose)))
            commands += found
    return commands


COMMANDS = documented_commands()


def _train_module():
    spec = importlib.util.spec_from_file_location("jukejax_train_cli", ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)     # defines no flags: train.py defines them only when run
    return module


@pytest.fixture(scope="module")
def train_cli():
    return _train_module()


def _parse(train_cli, argv: List[str]):
    """The config train.py would run with for `argv`, parsed by its own flags into a fresh FlagValues."""
    flag_values = flags.FlagValues()
    train_cli.define_flags(flag_values, argv)
    flag_values(argv)
    return flag_values.config


def test_the_docs_show_the_commands_this_test_relies_on():
    overrides = {a.split("=")[0] for c in COMMANDS for a in c.args}
    assert len(COMMANDS) >= 15, [c.args for c in COMMANDS]
    for flag in ("--config.prior.dtype", "--config.prior.c_res", "--config.data.raw_audio", "--config.mesh.fsdp",
                 "--config.train.init_from", "--config.vqvae_checkpoint", "--describe", "--distributed"):
        assert flag in overrides, flag
    assert {c.config_file for c in COMMANDS} >= {"configs/vqvae.py", "configs/small_prior.py",
                                                  "configs/prior_5b_lyrics.py", "configs/prior_1b_lyrics.py"}


def _typed_sections(config) -> Dict[str, object]:
    sections = {name: build(cls, config.get(name), name) for name, cls in
                (("data", DataConfig), ("optim", OptimConfig), ("train", TrainConfig), ("mesh", MeshConfig))}
    if config.model == "prior":
        pc = prior_config(config)
        sections.update(prior=pc.hps, vqvae=pc.vqvae, _prior_config=pc)
    else:
        sections["vqvae"] = build(VQVAEConfig, config.vqvae, "vqvae")
    return sections


# Configs that take an argument after `:` (the documented one).
CONFIG_ARGUMENTS = {"my_music_finetune.py": ":models/1b_lyrics/prior_level_2"}


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """The checkout as the docs assume it, plus what their commands name that a fresh clone lacks: a converted
    1b_lyrics model folder (`models/1b_lyrics/prior_level_2/config.json`, the released prior's config, which is
    all `configs/my_music_finetune.py` reads while parsing)."""
    from jukejax import presets
    root = tmp_path_factory.mktemp("checkout")
    for entry in ROOT.iterdir():
        if entry.name not in ("models", ".git", ".venv"):
            (root / entry.name).symlink_to(entry)
    (root / "models").mkdir()
    for entry in (ROOT / "models").iterdir():
        (root / "models" / entry.name).symlink_to(entry)
    prior_dir = root / "models" / "1b_lyrics" / "prior_level_2"
    prior_dir.mkdir(parents=True)
    (prior_dir / "config.json").write_text(presets.prior_1b_lyrics().to_json())
    return root


def _normal(value):
    return tuple(value) if isinstance(value, list) else value


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.where}: {' '.join(c.args)}")
def test_documented_command_parses_and_reaches_the_typed_config(command, train_cli, checkout, monkeypatch):
    monkeypatch.chdir(checkout)                         # the docs' paths are relative to the checkout
    if command.config_file is None:                     # flags named in prose (`train.py --describe`): they exist
        flag_values = flags.FlagValues()
        train_cli.define_flags(flag_values, ["train.py"])
        for arg in command.args:
            assert arg[2:].split("=")[0] in flag_values, arg
        return
    config = _parse(train_cli, ["train.py", *command.args])   # a bad flag or unknown config field raises here
    assert config.is_locked, "train.py must lock the config, or a typo would add a field silently"
    typed = _typed_sections(config)
    for arg in command.args:
        if not arg.startswith("--config."):
            continue
        path, text = arg[len("--config."):].split("=", 1)
        *parents, field = path.split(".")
        value = config
        for name in path.split("."):
            value = value[name]
        if not parents:                                 # top level (vqvae_checkpoint): read by the task as is
            assert str(value) == text
            continue
        section = typed[parents[0]]
        assert _normal(getattr(section, field)) == _normal(value), arg
        if parents[0] == "prior":
            transformer = typed["_prior_config"].transformer
            name, convert = TRANSFORMER_FIELD.get(field, (field, lambda v: v))
            if hasattr(transformer, name):
                assert getattr(transformer, name) == convert(value), f"{arg} does not reach the transformer"


def test_prior_dtype_override_reaches_every_module(train_cli, monkeypatch):
    monkeypatch.chdir(ROOT)
    pc = prior_config(_parse(train_cli, ["train.py", "--config=configs/small_upsampler.py",
                                         "--config.prior.dtype=bfloat16", "--config.prior.scan=True", "--describe"]))
    assert (pc.transformer.dtype, pc.upsampler.dtype, pc.transformer.scan) == ("bfloat16", "bfloat16", True)


@pytest.mark.parametrize("arg", ["--config.data.max_bow_genre_size=1",
                                 "--config.prior.dtpye=bfloat16"])
def test_retired_and_misspelt_fields_are_refused(arg, train_cli, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises((AttributeError, KeyError, flags.Error)):
        _parse(train_cli, ["train.py", "--config=configs/small_prior.py", arg])


@pytest.mark.parametrize("path", sorted(p.name for p in (ROOT / "configs").glob("*.py")))
def test_every_config_file_loads_locked_and_builds(path, train_cli, checkout, monkeypatch):
    monkeypatch.chdir(checkout)
    argument = CONFIG_ARGUMENTS.get(path, "")
    config = _parse(train_cli, ["train.py", f"--config=configs/{path}{argument}"])
    if config.get("model") in ("vqvae", "prior"):       # sample_defaults.py is sample.py's
        _typed_sections(config)
