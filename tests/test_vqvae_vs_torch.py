"""jukejax's VQ-VAE against transformers' PyTorch port on random weights (fp32, CPU).

Only the port's `encode`/`decode` are used: its `forward` quantises level L with the codebook of level
levels-1-L (its bottleneck indexes `level_blocks[-level-1]`), whereas jukejax follows openai/jukebox, where level L uses its
own codebook. `encode`/`decode` of the port were measured equal to the original's.
"""
import numpy as np
import pytest

pytest.importorskip("torch", reason="the PyTorch reference needs torch")
pytest.importorskip("transformers", reason="the PyTorch reference is transformers' Jukebox port")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import torch  # noqa: E402
from transformers.models.deprecated.jukebox import JukeboxVQVAE, JukeboxVQVAEConfig  # noqa: E402

import tiny_configs  # noqa: E402

from jukejax import presets  # noqa: E402
from jukejax.config import VQVAEConfig, build  # noqa: E402
from jukejax.convert.hf_config import hf_vqvae_kwargs  # noqa: E402
from jukejax.vqvae import VQVAE, hf_to_openai_key, load_hf_state_dict, load_torch_state_dict  # noqa: E402

pytestmark = pytest.mark.torch


def _hf_model(config: VQVAEConfig, sample_length: int, seed: int) -> JukeboxVQVAE:
    if config.m_conv != int(config.m_conv):
        pytest.skip("the HF port only takes an integer res_convolution_multiplier")
    hf_config = JukeboxVQVAEConfig(**hf_vqvae_kwargs(config, sample_length))
    torch.manual_seed(seed)
    model = JukeboxVQVAE(hf_config)
    model.post_init()
    model.eval()
    # Random codebooks near real encoder outputs (the buffers start at zero, which makes every code 0).
    audio = torch.randn(2, sample_length, 1) * 0.3
    with torch.no_grad():
        for level in range(config.levels):
            h = model.encoders[level](audio.permute(0, 2, 1))[-1]
            h = h.permute(0, 2, 1).reshape(-1, config.emb_width)
            rows = h[torch.randint(0, h.shape[0], (config.l_bins,))]
            codebook = rows + 0.1 * h.std() * torch.randn_like(rows)
            model.bottleneck.level_blocks[level].codebook.copy_(codebook)
    return model


class Pair:
    """An HF model, the jukejax variables loaded from it, one input, and jukejax's outputs on it."""

    def __init__(self, make_config, batch: int, sample_length: int, seed: int, with_call: bool):
        self.config = build(VQVAEConfig, make_config().vqvae, "vqvae")
        self.hf = _hf_model(self.config, sample_length, seed)
        self.state_dict = {k: v.numpy() for k, v in self.hf.state_dict().items()}
        params, codebook = load_hf_state_dict(self.state_dict, self.config)
        self.variables = {"params": params, "codebook": codebook}
        rng = np.random.default_rng(seed)
        self.x = np.clip(0.3 * rng.standard_normal((batch, sample_length, 1)), -1, 1).astype(np.float32)
        with torch.no_grad():
            x_t = torch.from_numpy(self.x)
            self.hf_codes = [z.numpy() for z in self.hf.encode(x_t)]
            self.hf_audio = [self.hf.decode([torch.from_numpy(z) for z in self.hf_codes[start:]],
                                            start_level=start).numpy()
                             for start in range(self.config.levels)]
        model = VQVAE(self.config)
        levels = self.config.levels

        def run(variables, x, zs):
            out = dict(codes=model.apply(variables, x, method=model.encode),
                       audio=[model.apply(variables, list(zs[start:]), start_level=start, method=model.decode)
                              for start in range(levels)])
            if with_call:
                out["call"] = model.apply(variables, x, train=False)
            return out
        with jax.default_matmul_precision("highest"):
            out = jax.jit(run)(self.variables, self.x, [jnp.asarray(z, jnp.int32) for z in self.hf_codes])
        self.out = jax.tree.map(np.asarray, out)


def _max_rel_err(a, b):
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def tiny():
    return Pair(tiny_configs.vqvae, batch=2, sample_length=2048, seed=0, with_call=True)


@pytest.fixture(scope="module")
def released():
    return Pair(presets.vqvae, batch=1, sample_length=8192, seed=1, with_call=False)


@pytest.mark.parametrize("name", ["tiny", "released"])
def test_codes_equal_at_every_level(name, request):
    pair = request.getfixturevalue(name)
    for level, (ours, theirs) in enumerate(zip(pair.out["codes"], pair.hf_codes)):
        hop = pair.config.hop_lengths[level]
        assert ours.shape == theirs.shape == (pair.x.shape[0], pair.x.shape[1] // hop)
        assert len(np.unique(theirs)) > 1, f"level {level}: trivial codes, the test would prove nothing"
        np.testing.assert_array_equal(ours, theirs, err_msg=f"codes differ at level {level}")


@pytest.mark.parametrize("name", ["tiny", "released"])
def test_decode_from_every_start_level(name, request):
    pair = request.getfixturevalue(name)
    for start, (ours, theirs) in enumerate(zip(pair.out["audio"], pair.hf_audio)):
        assert ours.shape == theirs.shape == pair.x.shape
        err = _max_rel_err(ours, theirs)
        assert err <= 1e-5, f"decode from start_level={start}: max_rel_err {err:.2e} > 1e-5"


def test_eval_call_reconstructs_each_level_with_its_own_codebook(tiny):
    # openai/jukebox's forward: level L is quantised with codebook L and decoded by decoder L alone.
    call = tiny.out["call"]
    for level in range(tiny.config.levels):
        np.testing.assert_array_equal(call["zs"][level], tiny.hf_codes[level])
        err = _max_rel_err(call["x_outs"][level], tiny.hf_audio[level])
        assert err <= 1e-5, f"x_outs[{level}] max_rel_err {err:.2e} > 1e-5"
        assert call["commit_losses"][level] > 0


def test_hf_keys_map_to_the_original_layout(released):
    config = released.config
    assert hf_to_openai_key("encoders.0.level_blocks.0.downsample_block.1.resnet_block.3.conv1d_2.weight",
                            config) == "encoders.0.level_blocks.0.model.0.1.model.3.model.3.weight"
    assert hf_to_openai_key("encoders.2.level_blocks.0.proj_out.bias", config) == \
        "encoders.2.level_blocks.0.model.3.bias"
    assert hf_to_openai_key("decoders.1.level_blocks.1.proj_in.weight", config) == \
        "decoders.1.level_blocks.1.model.0.weight"
    assert hf_to_openai_key("decoders.0.level_blocks.0.upsample_block.5.weight", config) == \
        "decoders.0.level_blocks.0.model.3.1.weight"
    assert hf_to_openai_key("decoders.0.level_blocks.0.upsample_block.4.resnet_block.7.conv1d_1.bias", config) \
        == "decoders.0.level_blocks.0.model.3.0.model.7.model.1.bias"
    assert hf_to_openai_key("vqvae.bottleneck.level_blocks.2.codebook", config) == "bottleneck.level_blocks.2.k"


def test_loader_lists_missing_unused_and_misshaped_keys(tiny):
    original = {hf_to_openai_key(k, tiny.config): v for k, v in tiny.state_dict.items()}
    params, codebook = load_torch_state_dict(original, tiny.config)       # the original layout loads as is
    np.testing.assert_array_equal(codebook["bottleneck"]["level_blocks_1"]["k"],
                                  original["bottleneck.level_blocks.1.k"])
    assert bool(codebook["bottleneck"]["level_blocks_1"]["initialized"])
    broken = dict(original)
    del broken["decoders.2.out.weight"]
    broken["encoders.0.level_blocks.0.model.0.0.weight"] = np.zeros((3, 3, 3), np.float32)
    broken["prior.x_emb.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError) as info:
        load_torch_state_dict(broken, tiny.config)
    message = str(info.value)
    assert "missing: decoders.2.out.weight" in message
    assert "unused: prior.x_emb.weight" in message
    assert "wrong shape: encoders.0.level_blocks.0.model.0.0.weight" in message
