"""`train.py --describe`: exact parameter counts of the released models, computed with eval_shape."""
import pytest

from jukejax import presets
from jukejax.train import run as run_lib

# The released checkpoints' parameter counts: the sum of the tensor sizes of openai/jukebox's state dicts
# (loaded strictly by the original), which the PyTorch port matches for the same hyperparameters. 1b_lyrics has
# a 79-character lyric vocabulary and its output matrix tied to the embedding (transformers' default
# JukeboxPriorConfig, vocab 80 and an untied output, counts 947,003,392: not the released model). The VQ-VAE
# count excludes the codebooks (buffers, 3 x 2048 x 64).
RELEASED = {
    "vqvae": 1_485_763,
    "upsampler_level_0": 981_298_176,
    "upsampler_level_1": 981_298_176,
    "prior_5b": 5_060_452_800,
    "prior_5b_lyrics": 5_640_506_800,
    "prior_1b_lyrics": 942_643_200,
}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_param_counts(name):
    info = run_lib.describe(presets.get(name))
    assert info["params"] == RELEASED[name]
    assert info["params"] == sum(info["params_by_module"].values())
    if name != "vqvae":
        assert len(info["attention_pattern"]) == {"prior_5b_lyrics": 79}.get(name, 72)


def test_every_released_model_is_counted():
    assert {name for model in presets.MODELS.values() for name in model} == set(RELEASED)


def test_describe_fields_for_the_1b_top_prior():
    info = run_lib.describe(presets.prior_1b_lyrics())
    assert info["level"] == 2 and info["n_ctx"] == 6144 and info["n_tokens"] == 384
    assert abs(info["context_seconds"] - 6144 * 128 / 44100) < 1e-9
    pattern = info["attention_pattern"]
    assert [d for d, t in enumerate(pattern) if t == "prime_attn"] == [15, 31, 63]
    assert [d for d, t in enumerate(pattern) if t == "dense_attn"] == [47]


@pytest.mark.parametrize("name", ["small_prior", "small_upsampler", "small_labelled_prior",
                                  "small_single_enc_dec_prior", "small_sep_enc_dec_prior"])
def test_small_recipes_build(name):
    info = run_lib.describe(presets.get(name))
    assert info["params"] > 1e8


@pytest.mark.parametrize("name,limit", [("prior_1b_lyrics", 0.4e9), ("prior_5b_lyrics", 1.0e9)])
def test_kv_cache_fits_the_original_readme(name, limit):
    info = run_lib.describe(presets.get(name))
    print(name, info["kv_cache_bytes_per_sample"])
    assert 0 < info["kv_cache_bytes_per_sample"] <= limit


def test_memory_plan_for_fine_tuning_5b_lyrics_on_16_chips():
    config = presets.prior_5b_lyrics()
    config.mesh.update(dict(data=1, fsdp=16, tensor=1))
    info = run_lib.describe(config)
    plan = info["memory_plan"]
    assert plan["mesh"] == {"data": 1, "fsdp": 16, "tensor": 1}
    full = info["params"] * 4
    # fsdp splits (almost) every weight 16 ways; replicated LayerNorm gains and biases cost < 1%
    assert full / 16 <= plan["params_bytes_per_device"] <= 1.01 * full / 16
    assert plan["train_state_bytes_per_device"] < 16e9 / 2  # params + Adam + EMA leave room for activations
