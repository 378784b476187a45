"""`python -m jukejax.convert` against transformers' PyTorch port, on random weights (fp32, CPU).

Two `JukeboxModel`s are built with every parameter randomised (codebooks drawn near encoder outputs, so codes
are not trivial):
  (a) TINY: a 3-level VQ-VAE with 32 codes; a 1b_lyrics-like top prior (single encoder-decoder,
      enc_dec_with_lyrics, 16 layers, 16 lyric tokens, v3-like labels with timing) and two raw_column upsamplers
      with a small conditioner (level 1 with conv_res_scale, as released);
  (b) RELEASED VQ-VAE shapes (levels 3, downs (3, 2, 2), 2048 x 64 codes, widths 32 x (2, 1, 1), depth 4)
      with tiny priors, the top one 5b_lyrics-like (separate lyric encoder, cross-attention, merged decoder).
Both are configured as the original behaves (mask=True; merged_decoder False except the 5b-like top).
Each is saved in the HF layout (`save_pretrained`: model.safetensors, and sharded pytorch_model-*.bin) and in
the openai/jukebox layout (HF's documented renames run backwards, written here independently of jukejax:
`vqvae.pth.tar` = {"model": ...}, `prior_level_{l}.pth.tar` = {"model": ...}; the VQ-VAE and top prior in the
legacy non-zip torch.save format of the 2020 release, the top prior's Conv1D weights in fp16 as the released
5B files, the upsamplers in the zip format). Every layout converts to bitwise the same params, and the params
reproduce the PyTorch model's outputs.
"""
import json
import os
import pathlib
import pickle
import re
import shutil
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch")
pytest.importorskip("transformers", reason="the PyTorch reference is transformers' Jukebox port")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
from transformers.models.deprecated.jukebox import (JukeboxConfig, JukeboxModel, JukeboxPriorConfig,  # noqa: E402
                                                    JukeboxVQVAEConfig)

from jukejax import presets  # noqa: E402
from jukejax.checkpoint import load_variables  # noqa: E402
from jukejax.config import VQVAEConfig, build  # noqa: E402
from jukejax.convert import ConversionError, convert_hf, convert_openai, describe, hf_config  # noqa: E402
from jukejax.convert import torch_io  # noqa: E402
from jukejax.convert.__main__ import main as convert_main  # noqa: E402
from jukejax.prior.prior import Prior, prior_config  # noqa: E402
from jukejax.vqvae.model import VQVAE  # noqa: E402

pytestmark = pytest.mark.torch
TOL = 1e-5

# ---------------------------------------------------------------------------------------------------------------
# The two models, in HF settings and in jukejax settings written by hand (not through jukejax.convert.hf_config).

TINY_VQ_HF = dict(levels=3, res_downs_t=[2, 1, 1], res_strides_t=[2, 2, 2], embed_dim=8, nb_discrete_codes=32,
                  multipliers=[2, 1, 1], res_conv_width=8, res_conv_depth=2, res_dilation_growth_rate=3,
                  res_dilation_cycle=None, sample_length=2048)
TINY_VQ = dict(sr=8000, levels=3, downs_t=(2, 1, 1), strides_t=(2, 2, 2), emb_width=8, l_bins=32,
               hvqvae_multipliers=(2, 1, 1), width=8, depth=2, m_conv=1.0, dilation_growth_rate=3, dilation_cycle=None)
RELEASED_VQ_HF = dict(sample_length=8192)          # HF's VQ-VAE defaults are the released shapes
RELEASED_VQ = dict(sr=44100)                       # presets.vqvae() is the released VQ-VAE
MODEL_HF = dict(timing_dims=8, min_duration=1.0, max_duration=100.0)
N_CTX, N_TOKENS = 64, 16


def hf_prior(**kw):
    base = dict(mask=True, act_fn="quick_gelu", attention_multiplier=0.25, mlp_multiplier=1.0, spread=None,
                attn_res_scale=False, zero_out=False, emb_dropout=0.0, attn_dropout=0.0, resid_dropout=0.0, n_ctx=N_CTX)
    base.update(kw)
    return base


def hf_upsampler(vq_downs, res_scale):
    return hf_prior(hidden_size=32, num_layers=3, n_heads=1, attention_pattern="raw_column_previous_row_attention",
                    blocks=8, init_scale=0.4, res_conv_width=16, res_conv_depth=2, res_dilation_growth_rate=3,
                    res_dilation_cycle=2, conv_res_scale=res_scale, metadata_dims=[7, 11], is_encoder_decoder=False,
                    nb_relevant_lyric_tokens=0, merged_decoder=False, res_downs_t=vq_downs, res_strides_t=[2, 2, 2])


def ours_upsampler(level, res_scale):
    return dict(level=level, n_ctx=N_CTX, prior_width=32, prior_depth=3, heads=1, attn_order=2, blocks=8,
                init_scale=0.4, y_bins=(7, 11), cond_width=16, cond_depth=2, cond_dilation_growth_rate=3,
                cond_dilation_cycle=2, cond_res_scale=res_scale)


TINY_HF_PRIORS = [
    hf_prior(hidden_size=32, num_layers=16, n_heads=2, attention_pattern="enc_dec_with_lyrics", blocks=8,
             init_scale=0.2, metadata_dims=[5, 9], is_encoder_decoder=True, nb_relevant_lyric_tokens=N_TOKENS,
             lyric_vocab_size=79, merged_decoder=False, encoder_loss_fraction=0.4, alignment_layer=15,
             alignment_head=0, res_downs_t=[2, 1, 1], res_strides_t=[2, 2, 2]),
    hf_upsampler([2, 1, 1], True),
    hf_upsampler([2, 1, 1], None)]
TINY_PRIORS = {
    2: dict(level=2, n_ctx=N_CTX, prior_width=32, prior_depth=16, heads=2, attn_order=12, blocks=8, init_scale=0.2,
            labels_v3=True, y_bins=(5, 9), n_vocab=79, use_tokens=True, n_tokens=N_TOKENS, prime_loss_fraction=0.4,
            single_enc_dec=True, alignment_layer=15, alignment_head=0),
    1: ours_upsampler(1, True),
    0: ours_upsampler(0, False)}

ENCODER_HF = dict(hidden_size=16, num_layers=3, n_heads=1, attention_pattern="raw_column_previous_row_attention",
                  blocks=4, init_scale=0.7, mask=True, attention_multiplier=0.25, mlp_multiplier=1.0,
                  act_fn="quick_gelu", attn_res_scale=False, n_ctx=N_TOKENS, lyric_vocab_size=80, merged_decoder=False)
RELEASED_HF_PRIORS = [
    hf_prior(hidden_size=32, num_layers=19, n_heads=2, attention_pattern="large_separated_enc_dec_w_lyrics",
             blocks=8, init_scale=0.1, metadata_dims=[7, 11], is_encoder_decoder=False,
             nb_relevant_lyric_tokens=N_TOKENS, lyric_vocab_size=80, merged_decoder=True, encoder_loss_fraction=0.4,
             encoder_config=ENCODER_HF, alignment_layer=18, alignment_head=1),
    hf_upsampler([3, 2, 2], True),
    hf_upsampler([3, 2, 2], None)]
RELEASED_PRIORS = {
    2: dict(level=2, n_ctx=N_CTX, prior_width=32, prior_depth=19, heads=2, attn_order=10, blocks=8, init_scale=0.1,
            y_bins=(7, 11), n_vocab=80, use_tokens=True, n_tokens=N_TOKENS, prime_loss_fraction=0.4,
            merged_decoder=True, prime_width=16, prime_depth=3, prime_heads=1, prime_attn_order=2, prime_blocks=4,
            prime_init_scale=0.7, alignment_layer=18, alignment_head=1),
    1: ours_upsampler(1, True),
    0: ours_upsampler(0, False)}
SHARED = dict(t_bins=8, min_duration=1.0, max_duration=100.0)


def jukejax_configs(vq_fields, priors, genres):
    vq = presets.vqvae()
    vq.vqvae.update(vq_fields)
    out = {}
    for level, fields in priors.items():
        c = presets.prior(level)
        c.vqvae = ml_collections.ConfigDict(vq.vqvae.to_dict())
        c.prior.update(dict(SHARED, max_bow_genre_size=genres, **fields))
        out[level] = c
    return vq, out


# ---------------------------------------------------------------------------------------------------------------
# HF keys -> openai/jukebox keys (the renames of transformers'
# models/deprecated/jukebox/convert_jukebox.py, run backwards)

_CONV1D = re.compile(r"\.(attn\.c_attn|attn\.c_enc_kv|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.(weight|bias)$")


def _resnet(key):
    key = re.sub(r"resnet_block\.(\d+)\.conv1d_1\.", r"model.\1.model.1.", key)
    return re.sub(r"resnet_block\.(\d+)\.conv1d_2\.", r"model.\1.model.3.", key)


def openai_vqvae_key(key, downs_t):
    key = _resnet(key[len("vqvae."):])
    m = re.fullmatch(r"bottleneck\.level_blocks\.(\d+)\.codebook", key)
    if m:
        return f"bottleneck.level_blocks.{m[1]}.k"
    m = re.fullmatch(r"(encoders\.\d+\.level_blocks\.)(\d+)\.downsample_block\.(\d+)\.(.+)", key)
    if m:
        n = int(m[3])
        return f"{m[1]}{m[2]}.model.{n // 2}.{n % 2}.{m[4]}"
    m = re.fullmatch(r"(encoders\.\d+\.level_blocks\.)(\d+)\.proj_out\.(.+)", key)
    if m:
        return f"{m[1]}{m[2]}.model.{downs_t[int(m[2])]}.{m[3]}"
    m = re.fullmatch(r"(decoders\.\d+\.level_blocks\.\d+\.)proj_in\.(.+)", key)
    if m:
        return f"{m[1]}model.0.{m[2]}"
    m = re.fullmatch(r"(decoders\.\d+\.level_blocks\.\d+\.)upsample_block\.(\d+)\.(.+)", key)
    if m:
        n = int(m[2]) + 2
        return f"{m[1]}model.{n // 2}.{n % 2}.{m[3]}"
    return key


def openai_prior_key(key):
    """A key of one HF `priors.N` module (prefix removed) under its openai/jukebox name; the conditioner's resnet
    blocks as `blocks.{d}`, as the released upsamplers (trained with checkpoint_res=1) store them."""
    if key.startswith("metadata_embedding."):
        key = "y_emb." + key[len("metadata_embedding."):]
        return re.sub(r"^y_emb\.(artist_emb|bow_genre_emb)\.weight$", r"y_emb.\1.emb.weight", key)
    if key.startswith("conditioner_blocks."):
        rest = key[len("conditioner_blocks."):]
        for hf, orig in (("embed_tokens.", "x_emb."), ("layer_norm.", "ln."), ("upsampler.proj_in.", "cond.model.0.")):
            if rest.startswith(hf):
                return "conditioner_blocks.0." + orig + rest[len(hf):]
        m = re.fullmatch(r"upsampler\.upsample_block\.(\d+)\.resnet_block\.(\d+)\.conv1d_([12])\.(weight|bias)", rest)
        if m:
            n = int(m[1]) + 2
            return f"conditioner_blocks.0.cond.model.{n // 2}.{n % 2}.blocks.{m[2]}.model.{2 * int(m[3]) - 1}.{m[4]}"
        m = re.fullmatch(r"upsampler\.upsample_block\.(\d+)\.(weight|bias)", rest)
        n = int(m[1]) + 2
        return f"conditioner_blocks.0.cond.model.{n // 2}.{n % 2}.{m[2]}"
    if key in ("encoder.proj_in.weight", "encoder.proj_in.bias"):       # a Conv1D: .w / .b
        return {"encoder.proj_in.weight": "prime_state_proj.w", "encoder.proj_in.bias": "prime_state_proj.b"}[key]
    for hf, orig in (("encoder.final_layer_norm.", "prime_state_ln."), ("encoder.lm_head.", "prime_x_out."),
                     ("encoder.", "prime_prior.")):
        if key.startswith(hf):
            key = orig + key[len(hf):]
            break
    for hf, orig in (("embed_tokens", "x_emb"), ("fc_proj_out", "x_out"), ("layer_norm_0", "ln_0"),
                     ("layer_norm_1", "ln_1")):
        key = key.replace(hf, orig)
    return _CONV1D.sub(lambda m: f".{m[1]}.{'w' if m[2] == 'weight' else 'b'}", key)


# ---------------------------------------------------------------------------------------------------------------
# Building, randomising and saving


def randomize(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.startswith("vqvae."):
                scale = float(p.std()) if p.numel() > 1 and float(p.std()) > 0 else 0.01
                p.add_(0.1 * scale * noise)
            elif "layer_norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)
            if name.startswith("priors.0.") and openai_prior_key(name[len("priors.0."):]).endswith(".w"):
                p.copy_(p.half().float())       # Conv1D weights: fp16 in the openai file, like the released 5B
        vq = model.vqvae
        audio = torch.randn(2, vq.sample_length, 1, generator=gen) * 0.3
        for level, block in enumerate(vq.bottleneck.level_blocks):
            h = vq.encoders[level](audio.permute(0, 2, 1))[-1].permute(0, 2, 1).reshape(-1, block.codebook_width)
            rows = h[torch.randint(0, h.shape[0], (block.nb_discrete_codes,), generator=gen)]
            block.codebook.copy_(rows + 0.1 * h.std() * torch.randn(rows.shape, generator=gen))
    model.eval()


class Source:
    """One randomised HF JukeboxModel, saved in every layout, and the jukejax configs written by hand."""

    def __init__(self, root, vq_hf, priors_hf, vq_ours, priors_ours, genres, sr, seed, safetensors=True):
        self.root = root
        priors_hf = [dict(p, music_vocab_size=vq_hf.get("nb_discrete_codes", 2048)) for p in priors_hf]
        config = JukeboxConfig(vqvae_config=vq_hf, prior_config_list=priors_hf, sampling_rate=sr,
                               max_nb_genres=genres, **MODEL_HF)
        torch.manual_seed(seed)
        self.model = JukeboxModel(config)
        self.model.post_init()
        randomize(self.model, seed)
        self.vq_cfg, self.prior_cfgs = jukejax_configs(vq_ours, priors_ours, genres)
        self.downs_t = tuple(self.vq_cfg.vqvae.downs_t)
        self.genres = genres
        self.state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        # HF layouts: save_pretrained drops the tied fc_proj_out for safetensors; the .bin keeps it (shared storage).
        self.model._tied_weights_keys = [f"priors.{i}.prior.fc_proj_out.weight" for i in range(3)
                                         if not priors_hf[i]["merged_decoder"]]
        if safetensors:
            self.model.save_pretrained(root / "hf_st")
        self.model.save_pretrained(root / "hf_bin", safe_serialization=False, max_shard_size="300KB")
        # openai layout
        self.openai = root / "openai"
        self.openai.mkdir()
        self.openai_keys = {}
        vq = {openai_vqvae_key(k, self.downs_t): v for k, v in self.state.items() if k.startswith("vqvae.")}
        self.openai_keys["vqvae"] = set(vq)
        torch.save({"model": vq}, self.openai / "vqvae.pth.tar", _use_new_zipfile_serialization=False)
        for index in range(3):
            level = 2 - index
            prefix = f"priors.{index}."
            sd = {openai_prior_key(k[len(prefix):]): v for k, v in self.state.items() if k.startswith(prefix)}
            self.openai_keys[level] = set(sd)
            if level == 2:
                sd = {k: (v.half() if k.endswith(".w") else v) for k, v in sd.items()}
                torch.save({"model": sd}, self.openai / "prior_level_2.pth.tar", _use_new_zipfile_serialization=False)
            elif level == 1:        # a training save: hps (a plain dict, as make_models.save_checkpoint writes)
                torch.save({"hps": {"level": 1, "name": "upsampler"}, "model": sd, "opt": None, "step": 7},
                           self.openai / "prior_level_1.pth.tar")
            else:
                torch.save({"model": sd}, self.openai / "prior_level_0.pth.tar")
        self.config_files = {}
        for name, cfg in [("vqvae", self.vq_cfg)] + [(f"prior_{lv}", c) for lv, c in self.prior_cfgs.items()]:
            path = root / f"{name}_config.py"
            path.write_text("import json\nimport ml_collections\n\n\ndef get_config():\n"
                            f"    return ml_collections.ConfigDict(json.loads({cfg.to_json()!r}))\n")
            self.config_files[name] = str(path)

    def openai_args(self, out):
        """CLI arguments converting the openai files, priors given out of level order."""
        args = ["--from", "openai", "--vqvae", self.openai / "vqvae.pth.tar", "--out", out,
                "--vqvae_config", self.config_files["vqvae"]]
        for level in (2, 0, 1):
            args += ["--prior", self.openai / f"prior_level_{level}.pth.tar"]
        for level in (0, 1, 2):
            args += ["--prior_config", self.config_files[f"prior_{level}"]]
        return args


def cli(args):
    return convert_main([str(a) for a in args])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    src = Source(root, TINY_VQ_HF, TINY_HF_PRIORS, TINY_VQ, TINY_PRIORS, genres=1, sr=8000, seed=0)
    (root / "hf_st" / "artists.json").write_text('{"unknown": 0, "a_band": 1}')   # JukeboxTokenizer's vocab
    (root / "v3_artist_ids.txt").write_text("unknown;0\na band;1\n")
    (root / "v3_genre_ids.txt").write_text("unknown;0\nrock;1\n")
    assert cli(["--from", "hf", root / "hf_st", "--out", root / "out_st"]) == 0
    assert cli(["--from", "hf", root / "hf_bin", "--out", root / "out_bin"]) == 0
    assert cli(src.openai_args(root / "out_openai") + ["--artist_ids", root / "v3_artist_ids.txt",
                                                        "--genre_ids", root / "v3_genre_ids.txt"]) == 0
    src.outs = {"hf_st": root / "out_st", "hf_bin": root / "out_bin", "openai": root / "out_openai"}
    return src


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    src = Source(root, RELEASED_VQ_HF, RELEASED_HF_PRIORS, RELEASED_VQ, RELEASED_PRIORS, genres=2, sr=44100, seed=1,
                 safetensors=False)
    assert cli(["--from", "hf", root / "hf_bin", "--out", root / "out_bin"]) == 0
    assert cli(src.openai_args(root / "out_openai")) == 0
    src.outs = {"hf_bin": root / "out_bin", "openai": root / "out_openai"}
    return src


def components(out):
    return {name: load_variables(str(out / name)) for name in ("vqvae", "prior_level_0", "prior_level_1",
                                                                  "prior_level_2")}


def rel_err(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


# ---------------------------------------------------------------------------------------------------------------
# Layouts, configs, counts


@pytest.mark.slow  # converts a released-size VQ-VAE in every layout
@pytest.mark.parametrize("name", ["tiny", "released"])
def test_every_layout_converts_to_the_same_params(name, request):
    src = request.getfixturevalue(name)
    loaded = {layout: components(out) for layout, out in src.outs.items()}
    reference = loaded["hf_bin"]
    for layout, comps in loaded.items():
        for comp, (config, variables, step) in comps.items():
            assert step == 0
            ref = jax.tree_util.tree_leaves_with_path(reference[comp][1])
            got = jax.tree_util.tree_leaves_with_path(variables)
            assert [p for p, _ in got] == [p for p, _ in ref], f"{layout} {comp}: different trees"
            for (path, a), (_, b) in zip(got, ref):
                assert np.asarray(a).dtype == np.asarray(b).dtype
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"{layout} {comp} {path}")
            assert config.get("vqvae_checkpoint", str(src.outs[layout] / "vqvae")) == str(src.outs[layout] / "vqvae")


@pytest.mark.parametrize("name", ["tiny", "released"])
def test_hf_config_maps_to_the_hand_written_configs(name, request):
    src = request.getfixturevalue(name)
    hf_out = src.outs["hf_bin"]
    vq = json.loads((hf_out / "vqvae" / "config.json").read_text())
    assert vq["vqvae"] == json.loads(src.vq_cfg.to_json())["vqvae"]
    assert vq["model"] == "vqvae"
    for level, want in src.prior_cfgs.items():
        got = json.loads((hf_out / f"prior_level_{level}" / "config.json").read_text())
        want = json.loads(want.to_json())
        assert got["model"] == "prior"
        assert got["prior"] == want["prior"], level
        assert got["vqvae"] == want["vqvae"]
        assert got["data"] == want["data"]          # one copy of max_bow_genre_size: prior's


def test_original_key_names(tiny, released):
    # Literal names of the original state dicts (keys of the released openai .pth.tar files).
    for key in ["encoders.0.level_blocks.0.model.0.0.weight",
                "encoders.0.level_blocks.0.model.0.1.model.1.model.3.bias",
                "encoders.2.level_blocks.1.model.1.weight", "decoders.0.level_blocks.0.model.0.weight",
                "decoders.1.level_blocks.1.model.1.0.model.0.model.1.weight",
                "decoders.0.level_blocks.0.model.2.1.weight", "decoders.2.out.bias", "bottleneck.level_blocks.2.k"]:
        assert key in tiny.openai_keys["vqvae"], key
    assert "encoders.0.level_blocks.0.model.3.weight" in released.openai_keys["vqvae"]       # down_t 3 -> proj
    for key in ["prior.x_emb.weight", "prior.pos_emb.pos_emb", "prior.x_out.weight",
                "prior.transformer._attn_mods.0.attn.c_attn.w", "prior.transformer._attn_mods.15.attn.c_proj.b",
                "prior.transformer._attn_mods.15.ln_1.bias", "y_emb.artist_emb.emb.weight",
                "y_emb.bow_genre_emb.emb.weight", "y_emb.total_length_emb.emb.weight",
                "y_emb.relative_pos_emb.emb.weight"]:
        assert key in tiny.openai_keys[2], key
    for key in ["conditioner_blocks.0.x_emb.weight", "conditioner_blocks.0.cond.model.0.weight",
                "conditioner_blocks.0.cond.model.1.0.blocks.1.model.3.weight",
                "conditioner_blocks.0.cond.model.1.1.bias",
                "conditioner_blocks.0.ln.weight", "y_emb.artist_emb.emb.weight"]:
        assert key in tiny.openai_keys[1], key
    assert "conditioner_blocks.0.cond.model.2.1.weight" in released.openai_keys[0]           # down_t 2
    for key in ["prime_prior.x_emb.weight", "prime_prior.start_token", "prime_prior.pos_emb.pos_emb",
                "prime_prior.transformer._attn_mods.2.mlp.c_fc.w", "prime_state_proj.w", "prime_state_proj.b",
                "prime_state_ln.weight", "prime_x_out.weight", "prior.x_out.weight",
                "prior.transformer._attn_mods.18.attn.c_enc_kv.w"]:
        assert key in released.openai_keys[2], key


@pytest.mark.parametrize("name", ["tiny", "released"])
def test_describe_matches_the_torch_parameter_count(name, request, capsys):
    """`--describe` counts the stored params; torch counts `parameters()`, where a tied fc_proj_out (the same
    Parameter as embed_tokens) appears once. The state dict lists it twice (`prior.fc_proj_out.weight` shares
    embed_tokens' storage), so summing state-dict sizes over-counts by bins x width per tied prior; jukejax has no
    x_out param when tied. Codebooks are buffers in torch and a separate collection in jukejax: not params."""
    src = request.getfixturevalue(name)
    rows = {r["component"]: r for r in describe(str(src.outs["hf_bin"]))}
    torch_counts = {"vqvae": sum(p.numel() for p in src.model.vqvae.parameters())}
    for index, prior in enumerate(src.model.priors):
        torch_counts[f"prior_level_{2 - index}"] = sum(p.numel() for p in prior.parameters())
        state_sum = sum(v.numel() for k, v in src.state.items() if k.startswith(f"priors.{index}."))
        tied = prior.prior.fc_proj_out.weight is prior.prior.embed_tokens.weight
        assert state_sum - (prior.prior.embed_tokens.weight.numel() if tied else 0) == torch_counts[
            f"prior_level_{2 - index}"]
    for comp, count in torch_counts.items():
        assert rows[comp]["checkpoint_params"] == rows[comp]["config_params"] == count, comp
    vq = src.model.vqvae.bottleneck.level_blocks
    assert rows["vqvae"]["codebook_values"] == sum(b.codebook.numel() for b in vq)
    capsys.readouterr()
    assert cli(["--describe", src.outs["openai"]]) == 0
    printed = capsys.readouterr().out
    for comp, count in torch_counts.items():
        assert re.search(rf"^{comp}\s+{count:,}\s+{count:,}\s+yes", printed, re.M), printed


def test_output_layout_and_manifest(tiny):
    out = tiny.outs["openai"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["components"]) == {"vqvae", "prior_level_0", "prior_level_1", "prior_level_2"}
    assert (out / "README.txt").read_text().startswith("Jukebox weights converted")
    levels_from = {k: v.get("level_from", "") for k, v in manifest["components"].items()}
    assert "keys" in levels_from["prior_level_2"] and "hps" in levels_from["prior_level_1"]
    assert "file name" in levels_from["prior_level_0"]
    assert manifest["components"]["prior_level_2"]["source_dtypes"]["float16"] > 0    # released-5B-style fp16
    assert all(len(f["sha256"]) == 64 for f in manifest["source"]["files"])
    assert not list(out.parent.glob("*.partial-*"))
    assert manifest["ids"] == ["ids/v3_artist_ids.txt", "ids/v3_genre_ids.txt"]
    assert (out / "ids" / "v3_genre_ids.txt").read_text() == (tiny.root / "v3_genre_ids.txt").read_text()
    assert (tiny.outs["hf_st"] / "ids" / "artists.json").is_file()
    # the codebooks restored as the original's restore_k: k_sum = k, k_elem = 1, initialized
    _, variables, _ = load_variables(str(out / "vqvae"))
    for level in range(3):
        book = variables["codebook"]["bottleneck"][f"level_blocks_{level}"]
        np.testing.assert_array_equal(book["k"], tiny.state[f"vqvae.bottleneck.level_blocks.{level}.codebook"].numpy())
        np.testing.assert_array_equal(book["k_sum"], book["k"])
        assert np.all(np.asarray(book["k_elem"]) == 1.0) and bool(book["initialized"])


def test_model_flag_uses_the_released_configs(released, tmp_path):
    # --model picks presets.vqvae() etc.; the released-shape VQ-VAE converts with it alone.
    assert cli(["--from", "openai", "--model", "1b_lyrics", "--vqvae", released.openai / "vqvae.pth.tar",
                "--out", tmp_path / "out"]) == 0
    config, got, _ = load_variables(str(tmp_path / "out" / "vqvae"))
    _, ref, _ = load_variables(str(released.outs["openai"] / "vqvae"))
    assert json.loads(config.to_json())["vqvae"] == json.loads(presets.vqvae().to_json())["vqvae"]
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), got, ref)


# ---------------------------------------------------------------------------------------------------------------
# Parity with the PyTorch model


def vqvae_parity(src, out, batch, length, seed):
    config, variables, _ = load_variables(str(out / "vqvae"))
    vq = build(VQVAEConfig, config.vqvae, "vqvae")
    model = VQVAE(vq)
    x = np.clip(0.3 * np.random.default_rng(seed).standard_normal((batch, length, 1)), -1, 1).astype(np.float32)
    with torch.no_grad():
        hf_codes = [z.numpy() for z in src.model.vqvae.encode(torch.from_numpy(x))]
        hf_audio = [src.model.vqvae.decode([torch.from_numpy(z) for z in hf_codes[s:]], start_level=s).numpy()
                    for s in range(vq.levels)]

    def run(variables, x, zs):
        return (model.apply(variables, x, method=model.encode),
                [model.apply(variables, list(zs[s:]), start_level=s, method=model.decode) for s in range(vq.levels)])
    with jax.default_matmul_precision("highest"):
        codes, audio = jax.jit(run)(variables, x, [jnp.asarray(z, jnp.int32) for z in hf_codes])
    for level in range(vq.levels):
        assert len(np.unique(hf_codes[level])) > 1, "trivial codes: the test would prove nothing"
        np.testing.assert_array_equal(np.asarray(codes[level]), hf_codes[level], err_msg=f"level {level}")
    errors = [rel_err(a, b) for a, b in zip(audio, hf_audio)]
    print(f"decode max_rel_err by start level: {errors}")
    assert max(errors) <= TOL, errors


def test_tiny_vqvae_matches_torch(tiny):
    vqvae_parity(tiny, tiny.outs["hf_st"], batch=2, length=2048, seed=3)


@pytest.mark.slow  # builds the released VQ-VAE in torch and jax
def test_released_vqvae_shapes_match_torch(released):
    vqvae_parity(released, released.outs["openai"], batch=1, length=8192, seed=4)


def labels(total, offset, length, artist, genres, lyrics=()):
    return np.asarray([[total, offset, length, artist, *genres, *lyrics]], np.int64)


def prior_parity(src, out, level, z, z_cond, y):
    config, variables, _ = load_variables(str(out / f"prior_level_{level}"))
    pc = prior_config(config)
    hf = src.model.priors[2 - level]
    with torch.no_grad():
        if level == 2:
            _, metrics = hf.forward_tokens(torch.from_numpy(z).long(), [], torch.from_numpy(y), get_preds=True)
            want = metrics["preds"].numpy()
        else:
            x_cond, y_cond, _ = hf.get_cond([torch.from_numpy(z_cond).long()], torch.from_numpy(y))
            _, want = hf.prior(torch.from_numpy(z).long(), x_cond, y_cond, None, get_preds=True)
            want = want.numpy()
    with jax.default_matmul_precision("highest"):
        _, _, logits = jax.jit(Prior(pc).apply)(variables, z, z_cond, y)
    err = rel_err(logits, want)
    print(f"level-{level} prior logits max_rel_err {err:.2e}")
    assert err <= TOL


@pytest.mark.parametrize("level", [2, 1, 0])
def test_tiny_priors_match_torch(tiny, level):
    rng = np.random.default_rng(10 + level)
    z = rng.integers(0, 32, (1, N_CTX)).astype(np.int32)
    if level == 2:
        y = labels(8000 * 50, 8000 * 3, N_CTX * 16, 4, [2], rng.integers(0, 79, N_TOKENS))
        prior_parity(tiny, tiny.outs["hf_st"], 2, z, None, y)
    else:
        z_cond = rng.integers(0, 32, (1, N_CTX // 2)).astype(np.int32)
        prior_parity(tiny, tiny.outs["openai"], level, z, z_cond, labels(8000 * 30, 8000, N_CTX * 4, 5, [3]))


def test_released_5b_lyrics_like_top_prior_matches_torch(released):
    rng = np.random.default_rng(20)
    z = rng.integers(0, 2048, (1, N_CTX)).astype(np.int32)
    y = labels(44100 * 50, 44100 * 7, N_CTX * 128, 9, [1, 6], rng.integers(0, 80, N_TOKENS))
    prior_parity(released, released.outs["openai"], 2, z, None, y)


def test_vqvae_cli_encodes_with_the_converted_checkpoint(tiny, tmp_path):
    from jukejax import audio
    from jukejax.vqvae.__main__ import main as vqvae_main

    wav = audio.write_audio(str(tmp_path / "x.wav"), 0.3 * np.sin(np.arange(2048) / 5.0)[:, None], 8000)
    assert vqvae_main(["encode", str(wav), "--checkpoint", str(tiny.outs["hf_bin"] / "vqvae"),
                       "--out", str(tmp_path / "codes.npz")]) == 0
    codes = np.load(tmp_path / "codes.npz")
    assert [codes[f"level_{lv}"].shape for lv in range(3)] == [(1, 512), (1, 256), (1, 128)]


def test_vqvae_cli_bad_codes_bad_outputs_and_a_full_disk(tiny, tmp_path, capsys, monkeypatch):
    """`python -m jukejax.vqvae` on a bad day: every bad codes file, level or output is one line naming it and
    writes nothing; a disk that fills while writing leaves no partial file."""
    import errno

    from jukejax import errors
    from jukejax.vqvae.__main__ import main as vqvae_main
    vq = str(tiny.outs["openai"] / "vqvae")
    good = np.random.default_rng(0).integers(0, 32, (1, 64))
    cases = {"float.npz": (dict(level_0=good.astype(np.float32)), "dtype float32; codes are integers"),
             "nan.npz": (dict(level_0=np.full((1, 8), np.nan)), "dtype float64"),
             "negative.npz": (dict(level_0=good - 40), "outside the codebook [0, 32) (values span [-40"),
             "big.npz": (dict(level_0=good + 9999), "outside the codebook [0, 32)"),
             "rank3.npz": (dict(level_0=good[None]), "shape (1, 1, 64); expected 2 dimensions"),
             "empty.npz": (dict(level_0=np.zeros((1, 0), np.int32)), "at least one token"),
             "other.npz": (dict(level_1=good), "has no level_0; it holds level_1"),
             "pickled.npz": (dict(level_0=np.empty(2, dtype=object)), "Object arrays cannot be loaded")}
    for name, (arrays, words) in cases.items():
        np.savez(tmp_path / name, **arrays)
    (tmp_path / "random.npz").write_bytes(np.random.default_rng(1).bytes(300))
    cases["random.npz"] = (None, "not an npz file")

    def error(args):
        capsys.readouterr()
        assert vqvae_main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        return err
    for name, (_, words) in cases.items():
        err = error(["decode", str(tmp_path / name), "--checkpoint", vq, "--out", str(tmp_path / "x.wav")])
        assert f"{tmp_path / name}" in err and words in err, err
    np.savez(tmp_path / "codes.npz", level_0=good)
    assert "--level 7: the VQ-VAE has levels 0..2" in error(
        ["decode", str(tmp_path / "codes.npz"), "--checkpoint", vq, "--level", "7", "--out", str(tmp_path / "x.wav")])
    assert "cannot write extension '.mp3'" in error(
        ["decode", str(tmp_path / "codes.npz"), "--checkpoint", vq, "--out", str(tmp_path / "x.mp3")])
    assert not list(tmp_path.glob("x.*")) and not list(tmp_path.glob(".x.*"))

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(errors.os, "fsync", full)
    assert "No space left on device" in error(
        ["decode", str(tmp_path / "codes.npz"), "--checkpoint", vq, "--out", str(tmp_path / "x.wav")])
    assert not list(tmp_path.glob("*x.wav*"))


# ---------------------------------------------------------------------------------------------------------------
# dtype, level detection, torch not needed


@pytest.mark.slow  # converts and loads a whole model folder
def test_bfloat16_priors_keep_a_float32_vqvae(tiny, tmp_path):
    assert cli(tiny.openai_args(tmp_path / "bf16") + ["--dtype", "bfloat16"]) == 0
    for name in ("vqvae", "prior_level_2"):
        _, got, _ = load_variables(str(tmp_path / "bf16" / name))
        _, ref, _ = load_variables(str(tiny.outs["openai"] / name))
        for a, b in zip(jax.tree.leaves(got["params"]), jax.tree.leaves(ref["params"])):
            if name == "vqvae":
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
            else:
                assert np.asarray(a).dtype == jnp.bfloat16
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b).astype(jnp.bfloat16))
    rows = {r["component"]: r for r in describe(str(tmp_path / "bf16"))}
    assert rows["prior_level_2"]["dtypes"] == ["bfloat16"] and rows["vqvae"]["dtypes"] == ["float32"]
    assert all(r["match"] for r in rows.values())


def test_upsampler_levels_follow_the_order_of_prior_without_names(tiny, tmp_path, monkeypatch):
    # Files named without a level and without hps: only the keys (upsampler) and the --prior order tell.
    # torch is made unimportable: conversion must not need it.
    a, b = tmp_path / "first.pth.tar", tmp_path / "second.pth.tar"
    shutil.copy(tiny.openai / "prior_level_0.pth.tar", a)
    obj = torch.load(tiny.openai / "prior_level_1.pth.tar", weights_only=True)
    torch.save({"model": obj["model"]}, b)
    monkeypatch.setitem(sys.modules, "torch", None)
    manifest = convert_openai(str(tmp_path / "out"), priors=[str(a), str(b)], vqvae_config=tiny.config_files["vqvae"],
                              prior_configs=[tiny.config_files["prior_0"], tiny.config_files["prior_1"]])
    assert set(manifest["components"]) == {"prior_level_0", "prior_level_1"}
    for level, path in ((0, a), (1, b)):
        entry = manifest["components"][f"prior_level_{level}"]
        assert entry["source"] == str(path) and "order" in entry["level_from"]
        _, got, _ = load_variables(str(tmp_path / "out" / f"prior_level_{level}"))
        _, ref, _ = load_variables(str(tiny.outs["hf_st"] / f"prior_level_{level}"))
        jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), got, ref)


def test_reader_matches_torch_load(tmp_path):
    base = torch.randn(5, 6)
    sd = {"f32": torch.randn(3, 4), "t": torch.randn(4, 3).t(), "f16": torch.randn(7).half(),
          "bf16": torch.randn(3, 2).bfloat16(), "i64": torch.arange(5), "bool": torch.tensor([True, False]),
          "view": base[1:, 2:], "base": base, "empty": torch.zeros(0, 3), "scalar": torch.tensor(3.5),
          "param": torch.nn.Parameter(torch.randn(2, 2))}
    sd["tied"] = sd["f32"]
    for name, kw in (("zip", {}), ("legacy", {"_use_new_zipfile_serialization": False})):
        path = tmp_path / f"{name}.pth.tar"
        torch.save({"model": sd, "hps": {"level": 1, "downs_t": (3, 2, 2)}, "step": 3}, path, **kw)
        want = torch.load(path, weights_only=True)
        got = torch_io.load_torch_file(str(path))
        assert got["hps"] == want["hps"] and got["step"] == 3
        for key, value in want["model"].items():
            lazy = got["model"][key]
            ref = value.detach().float().numpy() if value.dtype == torch.bfloat16 else value.detach().numpy()
            arr = np.asarray(lazy, np.float32) if value.dtype == torch.bfloat16 else np.asarray(lazy)
            assert lazy.shape == tuple(value.shape) and arr.dtype == ref.dtype, key
            np.testing.assert_array_equal(arr, ref, err_msg=f"{name} {key}")
    save_file = pytest.importorskip("safetensors.torch").save_file
    save_file({"bf16": sd["bf16"], "f16": sd["f16"]}, str(tmp_path / "x.safetensors"))
    st = torch_io.open_safetensors(str(tmp_path / "x.safetensors"))
    np.testing.assert_array_equal(np.asarray(st["bf16"], np.float32), sd["bf16"].float().numpy())
    np.testing.assert_array_equal(np.asarray(st["f16"]), sd["f16"].numpy())


def test_hf_defaults_and_shared_fields_match_transformers(tiny):
    import inspect

    for cls, table in ((JukeboxPriorConfig, hf_config.HF_PRIOR_DEFAULTS),
                       (JukeboxVQVAEConfig, hf_config.HF_VQVAE_DEFAULTS), (JukeboxConfig, hf_config.HF_MODEL_DEFAULTS)):
        params = inspect.signature(cls.__init__).parameters
        defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
        assert {k: defaults[k] for k in table} == table, cls.__name__
        if cls is not JukeboxConfig:
            assert set(defaults) == set(table), cls.__name__
    parsed = hf_config.read_hf_config(tiny.root / "hf_st" / "config.json")
    reference = tiny.model.config          # JukeboxModel applied set_shared_params to its prior configs
    for index, prior in enumerate(parsed["priors"]):
        for field, value in prior.items():
            if field != "encoder_config":
                assert getattr(reference.prior_configs[index], field) == value, (index, field)
    for field, value in parsed["vqvae"].items():
        assert getattr(reference.vqvae_config, field) == value, field


# ---------------------------------------------------------------------------------------------------------------
# Errors: unsafe pickles, corrupt files, key mismatches


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def cli_error(args, capsys):
    capsys.readouterr()
    rc = cli(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    return err


def test_a_pickle_that_runs_code_is_refused_before_anything_runs(tiny, tmp_path, capsys):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Evil(marker), protocol=2)
    pickle.loads(payload)                                   # the payload is live: unrestricted unpickling runs it
    assert marker.exists()
    marker.unlink()
    files = {"bare": tmp_path / "bare.pth.tar", "zip": tmp_path / "zip.pth.tar", "legacy": tmp_path / "legacy.pth.tar"}
    files["bare"].write_bytes(payload)
    obj = {"model": {"w": torch.zeros(2)}, "extra": Evil(marker)}
    torch.save(obj, files["zip"])
    torch.save(obj, files["legacy"], _use_new_zipfile_serialization=False)
    for kind, path in files.items():
        err = cli_error(["--from", "openai", "--vqvae", path, "--vqvae_config", tiny.config_files["vqvae"],
                         "--out", tmp_path / f"out_{kind}"], capsys)
        assert str(path) in err and "not a plain weights file" in err and "system" in err, err
        assert "could run code" in err
        assert not marker.exists(), kind
        assert not (tmp_path / f"out_{kind}").exists()
    # inside an HF sharded .bin as well
    hf = tmp_path / "hf"
    shutil.copytree(tiny.root / "hf_bin", hf)
    shard = sorted(hf.glob("pytorch_model-*.bin"))[0]
    state = torch.load(shard, weights_only=True)
    state["vqvae.evil"] = Evil(marker)
    torch.save(state, shard)
    err = cli_error(["--from", "hf", hf, "--out", tmp_path / "out_hf"], capsys)
    assert str(shard) in err and "not a plain weights file" in err and not marker.exists()


def test_truncated_and_corrupt_files_give_one_line_naming_them(tiny, tmp_path, capsys):
    def truncated(src, name, fraction):
        data = pathlib.Path(src).read_bytes()
        path = tmp_path / name
        path.write_bytes(data[:int(len(data) * fraction)])
        return path
    cases = [
        (truncated(tiny.openai / "prior_level_0.pth.tar", "zip_half.pth.tar", 0.5), "truncated or corrupt"),
        (truncated(tiny.openai / "vqvae.pth.tar", "legacy_cut.pth.tar", 0.9), "truncated"),
        (truncated(tiny.openai / "vqvae.pth.tar", "legacy_head.pth.tar", 0.01), "truncated or corrupt"),
    ]
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(b"this is not a checkpoint at all")
    cases.append((junk, "not a PyTorch checkpoint"))
    for path, words in cases:
        err = cli_error(["--from", "openai", "--vqvae", path, "--vqvae_config", tiny.config_files["vqvae"],
                         "--out", tmp_path / "out"], capsys)
        assert str(path) in err and words in err, err
    hf = tmp_path / "hf_st"
    shutil.copytree(tiny.root / "hf_st", hf)
    st = hf / "model.safetensors"
    st.write_bytes(st.read_bytes()[:-1000])
    err = cli_error(["--from", "hf", hf, "--out", tmp_path / "out"], capsys)
    assert str(st) in err and "safetensors" in err, err
    assert not (tmp_path / "out").exists()


def test_leftover_missing_and_misshapen_keys_are_listed_together(tiny, tmp_path):
    sd = dict(torch.load(tiny.openai / "prior_level_1.pth.tar", weights_only=True)["model"])
    del sd["prior.transformer._attn_mods.1.mlp.c_fc.w"]
    sd["prior.bogus.weight"] = torch.zeros(3, 3)
    sd["y_emb.artist_emb.emb.weight"] = torch.zeros(12, 32)
    bad = tmp_path / "prior_level_1.pth.tar"
    torch.save({"model": sd}, bad)
    with pytest.raises(ConversionError) as info:
        convert_openai(str(tmp_path / "out"), priors=[str(bad)], vqvae_config=tiny.config_files["vqvae"],
                       prior_configs=[tiny.config_files["prior_1"]])
    message = str(info.value)
    print(message)
    assert str(bad) in message and "1 missing, 1 unexpected, 1 with the wrong shape" in message
    assert "missing: prior.transformer._attn_mods.1.mlp.c_fc.w (32, 32)" in message
    assert "unexpected: prior.bogus.weight (3, 3)" in message
    assert "wrong shape: y_emb.artist_emb.emb.weight (12, 32), expected (11, 32)" in message
    assert not (tmp_path / "out").exists()
    # HF layout: a key outside every component, and one inside a prior the table does not know
    from safetensors.torch import load_file, save_file
    hf = tmp_path / "hf"
    shutil.copytree(tiny.root / "hf_st", hf)
    tensors = load_file(str(hf / "model.safetensors"))
    tensors["priors.1.prior.extra_head.weight"] = torch.zeros(2, 5)
    del tensors["vqvae.decoders.0.out.bias"]
    save_file(tensors, str(hf / "model.safetensors"))
    with pytest.raises(ConversionError) as info:
        convert_hf(str(hf), str(tmp_path / "out_hf"))
    message = str(info.value)
    assert "missing: decoders.0.out.bias (1,)" in message, message
    tensors["vqvae.decoders.0.out.bias"] = torch.zeros(1)
    tensors["text_encoder.weight"] = torch.zeros(4)
    save_file(tensors, str(hf / "model.safetensors"))
    with pytest.raises(ConversionError, match=r"belong to no VQ-VAE or prior: text_encoder.weight \(4,\)"):
        convert_hf(str(hf), str(tmp_path / "out_hf"))
    del tensors["text_encoder.weight"]
    save_file(tensors, str(hf / "model.safetensors"))
    with pytest.raises(ConversionError, match=r"unexpected: prior.extra_head.weight \(2, 5\)"):
        convert_hf(str(hf), str(tmp_path / "out_hf"))


def test_a_checkpoint_as_the_original_save_checkpoint_writes_it_converts(tiny, tmp_path):
    """openai/jukebox `make_models.save_checkpoint`: torch.save({'hps': {**hps} minus a few keys, 'model':
    state_dict, 'opt': ..., 'step': iters, **metrics}) of a model trained in fp16, in the legacy format of torch
    1.4. The hps dict holds tuples, lists, None, strings, bools, ints and floats."""
    sd = torch.load(tiny.openai / "prior_level_1.pth.tar", weights_only=True)["model"]
    hps = {"name": "upsampler_level_1", "level": 1, "levels": 3, "downs_t": (2, 1, 1), "strides_t": (2, 2, 2),
           "hvqvae_multipliers": (2, 1, 1), "y_bins": (7, 11), "labels": True, "labels_v3": False, "spread": None,
           "restore_prior": "", "restore_vqvae": "https://openaipublic.azureedge.net/jukebox/models/5b/vqvae.pth.tar",
           "lr": 0.00015, "beta2": 0.925, "prime_loss_fraction": 0.0, "cond_downs": [1], "alignment_layer": None,
           "fp16": True, "bs": 4, "argv": "jukebox/train.py --hps=vqvae,small_upsampler,all_fp16,cpu_ema"}
    path = tmp_path / "checkpoint_latest.pth.tar"
    torch.save({"hps": hps, "model": {k: v.half() for k, v in sd.items()}, "opt": None, "step": 123456,
                "loss": 1.875, "bpd": 1.8, "prime_loss": 0.0, "gen_loss": 1.8},
               path, _use_new_zipfile_serialization=False)
    out = tmp_path / "out"
    manifest = convert_openai(str(out), priors=[str(path)], vqvae_config=tiny.config_files["vqvae"],
                              prior_configs=[tiny.config_files["prior_1"]])
    assert manifest["components"]["prior_level_1"]["level_from"] == "the checkpoint's hps"
    assert manifest["components"]["prior_level_1"]["source_dtypes"] == {"float16": sum(v.numel() for v in sd.values())}
    _, got, _ = load_variables(str(out / "prior_level_1"))
    _, want, _ = load_variables(str(tiny.outs["openai"] / "prior_level_1"))   # the fp32 file, converted
    for (path_, g), w in zip(jax.tree_util.tree_flatten_with_path(got["params"])[0], jax.tree.leaves(want["params"])):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w).astype(np.float16).astype(np.float32),
                                      err_msg=jax.tree_util.keystr(path_))


def test_non_finite_weights_are_refused_at_conversion_and_at_loading(tiny, tmp_path, capsys):
    from jukejax.checkpoint import CheckpointError, save_variables
    from jukejax.vqvae.__main__ import main as vqvae_main
    sd = dict(torch.load(tiny.openai / "prior_level_1.pth.tar", weights_only=True)["model"])
    key = "prior.transformer._attn_mods.1.mlp.c_fc.w"
    sd[key] = sd[key].clone()
    sd[key][0, 3] = float("nan")
    sd[key][1, 2] = float("inf")
    bad = tmp_path / "prior_level_1.pth.tar"
    torch.save({"model": sd}, bad)
    err = cli_error(["--from", "openai", "--prior", bad, "--vqvae_config", tiny.config_files["vqvae"],
                     "--prior_config", tiny.config_files["prior_1"], "--out", tmp_path / "out"], capsys)
    assert f"{bad}: tensor {key} (32, 32) holds 2 NaN or infinite value(s)" in err, err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.partial-*"))
    # A model folder whose weights went non-finite after conversion (e.g. an edited or corrupted checkpoint).
    config, variables, _ = load_variables(str(tiny.outs["openai"] / "vqvae"))
    variables = jax.tree.map(np.array, variables)
    variables["params"]["decoders_0"]["out"]["kernel"][0, 0, 0] = np.nan
    save_variables(str(tmp_path / "vqvae_nan"), config, variables)
    with pytest.raises(CheckpointError, match=r"parameter \['params'\]\['decoders_0'\]\['out'\]\['kernel'\] holds 1 NaN"):
        load_variables(str(tmp_path / "vqvae_nan"))
    capsys.readouterr()
    assert vqvae_main(["decode", str(tmp_path / "none.npz"), "--checkpoint", str(tmp_path / "vqvae_nan"),
                       "--out", str(tmp_path / "x.wav")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NaN or infinite" in err and not (tmp_path / "x.wav").exists()


def test_alignment_and_attention_of_an_hf_config_are_checked_against_the_original(tmp_path):
    """transformers' JukeboxPriorConfig defaults describe the 1b_lyrics top prior but say alignment layer 68,
    head 2 (the 5b_lyrics values): layer 68 of attn_order 12 is a previous-row layer, so nothing would align.
    A prior with a released model's shapes takes the original's attention values, each change noted."""
    from jukejax.config import ConfigError
    from jukejax.convert import RELEASED_PRIORS, released_config
    released = {name: released_config(name).prior for name in RELEASED_PRIORS}
    path = tmp_path / "config.json"
    top = {"mask": True, "blocks": 32, "lyric_vocab_size": 79}                # HF defaults otherwise
    path.write_text(json.dumps({"model_type": "jukebox", "max_nb_genres": 1, "prior_config_list": [
        top, hf_upsampler([3, 2, 2], True), hf_upsampler([3, 2, 2], None)]}))
    hf = hf_config.read_hf_config(path)
    fields, notes = hf_config.prior_section(hf, 0, hf_config.vqvae_section(hf))
    assert "alignment_layer" not in fields
    assert notes[-1] == ("prior_config_list[0].alignment_layer 68, alignment_head 2 is not a lyric-attending layer "
                         "and head of this prior (cross/prime-attention layers [15, 31, 63], 2 heads); lyric "
                         "alignment is left unset")
    changes = hf_config.released_attention(fields, released, "prior_config_list[0]")
    assert (fields["alignment_layer"], fields["alignment_head"], fields["blocks"]) == (63, 0, 64)
    assert changes == [
        "prior_config_list[0]: the weights are the released prior_1b_lyrics's, so blocks is the original's 64, not "
        "the config's 32",
        "prior_config_list[0]: the weights are the released prior_1b_lyrics's, so alignment_layer is the "
        "original's 63, not the config's None",
        "prior_config_list[0]: the weights are the released prior_1b_lyrics's, so alignment_head is the "
        "original's 0, not the config's None"]
    # A prior of other shapes keeps its own values; a jukejax config naming a non-lyric layer is refused.
    small = dict(fields, prior_width=64, blocks=32, alignment_layer=15)
    assert hf_config.released_attention(small, released, "p") == [] and small["blocks"] == 32
    config = released_config("prior_1b_lyrics")
    config.prior.update(alignment_layer=68, alignment_head=2)
    with pytest.raises(ConfigError, match=r"alignment_layer 68 is a prev_block_attn layer; .*\[15, 31, 63\]"):
        prior_config(config)
    config.prior.update(alignment_layer=63, alignment_head=2)
    with pytest.raises(ConfigError, match=r"alignment_head 2 must lie in \[0, heads=2\)"):
        prior_config(config)


def test_a_killed_conversion_leaves_no_output_and_the_next_run_cleans_up(tiny, tmp_path, capsys, monkeypatch):
    """kill -9 mid-conversion: DIR does not exist (the run writes DIR.partial-<pid>); the next run removes the
    dead run's partial folder and converts. A disk that fills while writing: one line, nothing left."""
    import errno
    import signal
    import subprocess
    import time

    from jukejax import errors
    out = tmp_path / "out"
    args = [str(a) for a in tiny.openai_args(out)]
    proc = subprocess.Popen([sys.executable, "-m", "jukejax.convert", *args], cwd=str(pathlib.Path(__file__).parents[1]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / f"out.partial-{proc.pid}"
    deadline = time.time() + 300
    while not (partial / "vqvae").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert partial.exists() and not out.exists()
    assert cli(args) == 0
    assert not partial.exists() and (out / "manifest.json").is_file()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(errors.os, "fsync", full)
    err = cli_error(tiny.openai_args(tmp_path / "out2"), capsys)
    assert "No space left on device" in err
    assert not list(tmp_path.glob("out2*"))
