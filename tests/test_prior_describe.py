"""`train.py --describe` for priors: parameter counts of the released configs, computed with eval_shape."""
import importlib

import pytest

from jukejax.train import run as run_lib

# What the PyTorch port counts for the same shapes , and the original's parameter layout.
RELEASED = {
    "prior_5b_lyrics": 5_640_506_800,
    "prior_1b_lyrics": 947_003_392,
    "upsampler_level_0": 981_298_176,
    "upsampler_level_1": 981_298_176,
    "prior_5b": 5_060_000_000,
}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_param_counts(name):
    info = run_lib.describe(importlib.import_module(f"configs.{name}").get_config())
    assert abs(info["params"] - RELEASED[name]) <= 0.01 * RELEASED[name], info["params"]
    assert len(info["attention_pattern"]) == {"prior_5b_lyrics": 79}.get(name, 72)
    assert info["params"] == sum(info["params_by_module"].values())


def test_describe_fields_for_the_1b_top_prior():
    info = run_lib.describe(importlib.import_module("configs.prior_1b_lyrics").get_config())
    assert info["level"] == 2 and info["n_ctx"] == 6144 and info["n_tokens"] == 384
    assert abs(info["context_seconds"] - 6144 * 128 / 44100) < 1e-9
    pattern = info["attention_pattern"]
    assert [d for d, t in enumerate(pattern) if t == "prime_attn"] == [15, 31, 63]
    assert [d for d, t in enumerate(pattern) if t == "dense_attn"] == [47]


@pytest.mark.parametrize("name", ["small_prior", "small_upsampler", "small_labelled_prior",
                                  "small_single_enc_dec_prior", "small_sep_enc_dec_prior"])
def test_small_recipes_build(name):
    info = run_lib.describe(importlib.import_module(f"configs.{name}").get_config())
    assert info["params"] > 1e8


@pytest.mark.parametrize("name,limit", [("prior_1b_lyrics", 0.4e9), ("prior_5b_lyrics", 1.0e9)])
def test_kv_cache_fits_the_original_readme(name, limit):
    info = run_lib.describe(importlib.import_module(f"configs.{name}").get_config())
    print(name, info["kv_cache_bytes_per_sample"])
    assert 0 < info["kv_cache_bytes_per_sample"] <= limit


def test_memory_plan_for_fine_tuning_5b_lyrics_on_16_chips():
    config = importlib.import_module("configs.prior_5b_lyrics").get_config()
    config.mesh.update(dict(data=1, fsdp=16, tensor=1))
    info = run_lib.describe(config)
    plan = info["memory_plan"]
    assert plan["mesh"] == {"data": 1, "fsdp": 16, "tensor": 1}
    full = info["params"] * 4
    # fsdp splits (almost) every weight 16 ways; replicated LayerNorm gains and biases cost < 1%
    assert full / 16 <= plan["params_bytes_per_device"] <= 1.01 * full / 16
    assert plan["train_state_bytes_per_device"] < 16e9 / 2  # params + Adam + EMA leave room for activations
