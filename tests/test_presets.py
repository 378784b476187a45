"""The library stands alone: the released hyperparameters are in the package, and no module of jukejax reaches
into the checkout (configs/, scripts/, tests/) or edits sys.path, so an installed jukejax converts
`--model 1b_lyrics` anywhere."""
import ast
import pathlib

import ml_collections
import pytest

from jukejax import presets
from jukejax.config import ConfigError, DataConfig, OptimConfig, TrainConfig, VQVAEConfig, build, config_section
from jukejax.prior.prior import PriorHParams, prior_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHECKOUT_PACKAGES = {"configs", "scripts", "tests", "conftest", "tiny_configs"}


def _library_files():
    return sorted((ROOT / "jukejax").rglob("*.py"))


@pytest.mark.parametrize("path", _library_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_library_module_imports_nothing_from_the_checkout(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else []
        elif isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
            pytest.fail(f"{path.relative_to(ROOT)}:{node.lineno} uses sys.path")
        else:
            continue
        for name in names:
            assert name.split(".")[0] not in CHECKOUT_PACKAGES, f"{path.relative_to(ROOT)}:{node.lineno} imports {name}"


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_every_preset_builds_its_typed_config(name):
    config = presets.get(name)
    config.lock()                                   # as train.py runs it
    if config.model == "prior":
        prior_config(config)
    for section, cls in (("vqvae", VQVAEConfig), ("optim", OptimConfig), ("train", TrainConfig)):
        assert set(config[section]) == {f for f in cls.__dataclass_fields__}, section
    assert set(config.data) <= set(DataConfig.__dataclass_fields__)


def test_prior_section_holds_every_hparam_and_only_those():
    config = presets.prior(0)
    assert set(config.prior) == set(PriorHParams.__dataclass_fields__)
    assert prior_config(config).hps == PriorHParams(level=0)        # defaults come from the dataclass alone


def test_optional_fields_parse_as_their_type():
    section = config_section(PriorHParams)
    section.blocks = 64                              # a typed placeholder, not a None that takes anything
    with pytest.raises(TypeError):
        section.alignment_layer = "63"


def test_config_section_refuses_unknown_fields():
    with pytest.raises(ConfigError, match="no field"):
        config_section(PriorHParams, prior_widht=3)


def test_retired_fields_of_saved_configs_are_dropped():
    config = presets.prior_5b().to_dict()
    config["data"]["max_bow_genre_size"] = 5         # as in config.json files written before it was dropped
    saved = ml_collections.ConfigDict(config)
    assert prior_config(saved).hps == prior_config(presets.prior_5b()).hps
    assert build(DataConfig, saved.data, "data") == build(DataConfig, presets.prior_5b().data, "data")
