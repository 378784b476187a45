"""HF transformers `JukeboxConfig` (config.json of a `JukeboxModel`) -> jukejax ConfigDicts.

The port renamed the original hparams (`hidden_size` = prior_width, `num_layers` = depth, ...); this file maps them back, one table per config class.
HF numbers its priors from the top (`prior_config_list[0]` is the top prior), jukejax by VQ-VAE level, so HF
prior i is jukejax level `levels - 1 - i`.

`JukeboxModel.set_shared_params` overwrites six fields of every prior with the model-level values
(`sampling_rate, timing_dims, min_duration, max_duration, max_nb_genres, metadata_conditioning`); the model-level
values are therefore the ones the HF model runs with, and the ones read here. A config.json may leave fields out
(transformers can save nested configs as a diff from the defaults); missing fields take the defaults below,
those of transformers 4.57.6 (`configuration_jukebox.py`; tests/test_convert.py checks they still agree).

VQ-VAE (`vqvae_config`, JukeboxVQVAEConfig) -> `vqvae` section, HF name -> jukejax name:

    levels -> levels;  res_downs_t, res_strides_t -> downs_t, strides_t;  embed_dim -> emb_width
    nb_discrete_codes -> l_bins;  lmu -> l_mu;  commit -> commit
    multipliers (None: all 1) -> hvqvae_multipliers;  res_conv_width, res_conv_depth -> width, depth
    res_convolution_multiplier -> m_conv;  res_dilation_growth_rate -> dilation_growth_rate
    res_dilation_cycle -> dilation_cycle;  (model) sampling_rate -> sr
    act_fn, conv_input_shape, conv_res_scale: must be relu, 1, false (the only VQ-VAE the original builds)
    init_scale, zero_out: initialisation only;  sample_length, hop_fraction: sampling schedule (noted)

Prior (`prior_config_list[i]`, JukeboxPriorConfig) -> `prior` section of level `levels - 1 - i`:

    hidden_size, num_layers, n_heads -> prior_width, prior_depth, heads
    attention_pattern -> attn_order: full_dense_attention 0, raw_column_previous_row_attention 2,
        large_separated_enc_dec_w_lyrics 10, enc_dec_with_lyrics 12
    blocks, spread, init_scale, zero_out -> same;  attn_res_scale -> res_scale
    attention_multiplier, mlp_multiplier -> m_attn, m_mlp
    n_ctx -> n_ctx (music tokens per window);  merged_decoder -> merged_decoder
    nb_relevant_lyric_tokens -> n_tokens, use_tokens = n_tokens > 0;  lyric_vocab_size -> n_vocab
    is_encoder_decoder (with lyrics) -> single_enc_dec: HF's flag is the original's single encoder-decoder (1b)
    music_vocab_size: must equal the VQ-VAE's nb_discrete_codes
    (model) metadata_conditioning -> labels;  metadata_dims -> y_bins ((genres, artists), the original's order)
    (model) timing_dims, max_nb_genres -> t_bins, max_bow_genre_size;  (model) min/max_duration -> same
    encoder_loss_fraction -> prime_loss_fraction (0 without lyrics)
    alignment_layer, alignment_head -> same, with lyrics and inside the stack only (else unset, noted)
    encoder_config (5b_lyrics lyric encoder): hidden_size, num_layers, n_heads, attention_pattern, blocks,
        init_scale, attention_multiplier, mlp_multiplier, zero_out, attn_res_scale -> prime_width, prime_depth,
        prime_heads, prime_attn_order, prime_blocks, prime_init_scale, prime_m_attn, prime_m_mlp, prime_zero_out,
        prime_res_scale
    upsampler conditioner: res_conv_width, res_conv_depth, res_convolution_multiplier, res_dilation_growth_rate,
        res_dilation_cycle, conv_res_scale (None: false), zero_out -> cond_width, cond_depth, cond_m_conv,
        cond_dilation_growth_rate, cond_dilation_cycle, cond_res_scale, cond_zero_out
    res_downs_t[i], res_strides_t[i]: must equal the VQ-VAE's downs_t, strides_t[level + 1] (HF indexes them with
        its own prior number; the original with the level above; equal for the released (3, 2, 2))
    act_fn: must be quick_gelu;  *_dropout: training only (jukejax has none)
    mask: ignored; jukejax priors are always causal, as the original (HF's default false is not; noted)
    -> labels_v3: true when the lyric vocabulary has 79 characters or metadata_dims is the v3 (604, 7898)
"""
from __future__ import annotations

import copy
import json
import pathlib
from typing import Any, Dict, List, Mapping, Tuple

import ml_collections

from jukejax.errors import UserError
from jukejax.prior.attention import lyric_attention_layers

# transformers 4.57.6 JukeboxVQVAEConfig / JukeboxPriorConfig / JukeboxConfig defaults.
HF_VQVAE_DEFAULTS: Dict[str, Any] = dict(
    act_fn="relu", nb_discrete_codes=2048, commit=0.02, conv_input_shape=1, conv_res_scale=False, embed_dim=64,
    hop_fraction=[0.125, 0.5, 0.5], levels=3, lmu=0.99, multipliers=[2, 1, 1], res_conv_depth=4, res_conv_width=32,
    res_convolution_multiplier=1, res_dilation_cycle=None, res_dilation_growth_rate=3, res_downs_t=[3, 2, 2],
    res_strides_t=[2, 2, 2], sample_length=1058304, init_scale=0.2, zero_out=False)
HF_PRIOR_DEFAULTS: Dict[str, Any] = dict(
    act_fn="quick_gelu", level=0, alignment_head=2, alignment_layer=68, attention_multiplier=0.25,
    attention_pattern="enc_dec_with_lyrics", attn_dropout=0, attn_res_scale=False, blocks=64, conv_res_scale=None,
    num_layers=72, emb_dropout=0, encoder_config=None, encoder_loss_fraction=0.4, hidden_size=2048, init_scale=0.2,
    is_encoder_decoder=True, lyric_vocab_size=80, mask=False, max_duration=600, max_nb_genres=1,
    merged_decoder=True, metadata_conditioning=True, metadata_dims=[604, 7898], min_duration=0,
    mlp_multiplier=1.0, music_vocab_size=2048, n_ctx=6144, n_heads=2, nb_relevant_lyric_tokens=384,
    res_conv_depth=3, res_conv_width=128, res_convolution_multiplier=1, res_dilation_cycle=None,
    res_dilation_growth_rate=1, res_downs_t=[3, 2, 2], res_strides_t=[2, 2, 2], resid_dropout=0,
    sampling_rate=44100, spread=None, timing_dims=64, zero_out=False)
HF_MODEL_DEFAULTS: Dict[str, Any] = dict(
    nb_priors=3, sampling_rate=44100, timing_dims=64, min_duration=0, max_duration=600.0, max_nb_genres=5,
    metadata_conditioning=True)
SHARED_PRIOR_FIELDS = ("sampling_rate", "timing_dims", "min_duration", "max_duration", "max_nb_genres",
                       "metadata_conditioning")
ATTENTION_PATTERNS = {"full_dense_attention": 0, "raw_column_previous_row_attention": 2,
                      "large_separated_enc_dec_w_lyrics": 10, "enc_dec_with_lyrics": 12}
V3_METADATA_DIMS = (604, 7898)
V3_LYRIC_VOCAB = 79


class HFConfigError(UserError):
    """An HF Jukebox config.json that does not describe a model jukejax (and the original) can run."""


def _defaults(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(dict(defaults))
    out.update({k: v for k, v in values.items() if k in defaults})
    return out


def read_hf_config(path) -> Dict[str, Any]:
    """The effective HF settings of a `JukeboxModel` config.json: {"model": {...}, "vqvae": {...},
    "priors": [top, ..., bottom]} with HF's defaults filled in and the shared fields applied to every prior."""
    path = pathlib.Path(path)
    try:
        raw = json.loads(path.read_text())
    except OSError as e:
        raise HFConfigError(f"{path}: cannot be read ({e.strerror or e}); an HF model folder has a config.json "
                            f"beside its weights") from None
    except json.JSONDecodeError as e:
        raise HFConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(raw, dict) or raw.get("model_type") != "jukebox":
        raise HFConfigError(f"{path}: not a JukeboxModel config (model_type is "
                            f"{raw.get('model_type') if isinstance(raw, dict) else None!r}, expected 'jukebox')")
    model = _defaults(raw, HF_MODEL_DEFAULTS)
    vqvae = _defaults(raw.get("vqvae_config") or {}, HF_VQVAE_DEFAULTS)
    if raw.get("prior_config_list") is not None:
        prior_dicts = list(raw["prior_config_list"])
    else:
        prior_dicts = [raw.get(f"prior_{i}") or {} for i in range(int(model["nb_priors"]))]
    if len(prior_dicts) != int(model["nb_priors"]):
        raise HFConfigError(f"{path}: nb_priors is {model['nb_priors']} but {len(prior_dicts)} prior configs "
                            f"are listed")
    priors = []
    for values in prior_dicts:
        prior = _defaults(values, HF_PRIOR_DEFAULTS)
        if prior["encoder_config"] is not None:
            prior["encoder_config"] = _defaults(prior["encoder_config"], HF_PRIOR_DEFAULTS)
        prior.update({k: model[k] for k in SHARED_PRIOR_FIELDS})   # JukeboxModel.set_shared_params
        priors.append(prior)
    return {"model": model, "vqvae": vqvae, "priors": priors}


def _attn_order(pattern: Any, where: str) -> int:
    if pattern not in ATTENTION_PATTERNS:
        raise HFConfigError(f"{where}.attention_pattern {pattern!r} is not one of "
                            f"{', '.join(ATTENTION_PATTERNS)}")
    return ATTENTION_PATTERNS[pattern]


def vqvae_section(hf: Mapping[str, Any]) -> Dict[str, Any]:
    """The jukejax `vqvae` fields of an HF config (see the module doc's table)."""
    v = hf["vqvae"]
    for field, want in (("act_fn", "relu"), ("conv_input_shape", 1), ("conv_res_scale", False)):
        if v[field] != want:
            raise HFConfigError(f"vqvae_config.{field} is {v[field]!r}; the Jukebox VQ-VAE (original and jukejax) "
                                f"has {want!r}")
    levels = int(v["levels"])
    multipliers = v["multipliers"] if v["multipliers"] is not None else [1] * levels
    m_conv = v["res_convolution_multiplier"]
    return dict(sr=int(hf["model"]["sampling_rate"]), levels=levels, downs_t=tuple(v["res_downs_t"]),
                strides_t=tuple(v["res_strides_t"]), emb_width=int(v["embed_dim"]),
                l_bins=int(v["nb_discrete_codes"]), l_mu=float(v["lmu"]), commit=float(v["commit"]),
                hvqvae_multipliers=tuple(multipliers), width=int(v["res_conv_width"]),
                depth=int(v["res_conv_depth"]), m_conv=float(m_conv),
                dilation_growth_rate=int(v["res_dilation_growth_rate"]),
                dilation_cycle=None if v["res_dilation_cycle"] is None else int(v["res_dilation_cycle"]))


def prior_section(hf: Mapping[str, Any], index: int, vq: Mapping[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
    """(jukejax `prior` fields, notes) of HF prior `index` (0 = top), given the mapped `vqvae` section."""
    p = hf["priors"][index]
    where = f"prior_config_list[{index}]"
    levels = vq["levels"]
    level = levels - 1 - index
    notes: List[str] = []
    if p["act_fn"] != "quick_gelu":
        raise HFConfigError(f"{where}.act_fn is {p['act_fn']!r}; Jukebox priors use quick_gelu")
    if p["music_vocab_size"] != vq["l_bins"]:
        raise HFConfigError(f"{where}.music_vocab_size {p['music_vocab_size']} differs from the VQ-VAE's "
                            f"nb_discrete_codes {vq['l_bins']}")
    if not p["mask"]:
        notes.append(f"{where}.mask is false: HF's port would run this prior non-causally; jukejax runs it "
                     f"causally, as openai/jukebox trained it")
    n_tokens = int(p["nb_relevant_lyric_tokens"])
    lyrics = n_tokens > 0
    single = bool(p["is_encoder_decoder"])
    if single and not lyrics:
        raise HFConfigError(f"{where}.is_encoder_decoder is true without lyrics (nb_relevant_lyric_tokens 0): HF "
                            f"would build a lyric-shifted vocabulary with no lyrics, which no original model has")
    out: Dict[str, Any] = dict(
        level=level, n_ctx=int(p["n_ctx"]), prior_width=int(p["hidden_size"]), prior_depth=int(p["num_layers"]),
        heads=int(p["n_heads"]), attn_order=_attn_order(p["attention_pattern"], where),
        blocks=None if p["blocks"] is None else int(p["blocks"]),
        spread=None if p["spread"] is None else int(p["spread"]), zero_out=bool(p["zero_out"]),
        res_scale=bool(p["attn_res_scale"]), init_scale=float(p["init_scale"]),
        m_attn=float(p["attention_multiplier"]), m_mlp=float(p["mlp_multiplier"]),
        merged_decoder=bool(p["merged_decoder"]), single_enc_dec=single and lyrics,
        labels=bool(p["metadata_conditioning"]), y_bins=tuple(int(b) for b in p["metadata_dims"]),
        t_bins=int(p["timing_dims"]), max_bow_genre_size=int(p["max_nb_genres"]),
        min_duration=float(p["min_duration"]), max_duration=float(p["max_duration"]),
        use_tokens=lyrics, n_tokens=n_tokens, n_vocab=int(p["lyric_vocab_size"]),
        prime_loss_fraction=float(p["encoder_loss_fraction"]) if lyrics else 0.0,
        labels_v3=(lyrics and int(p["lyric_vocab_size"]) == V3_LYRIC_VOCAB)
        or tuple(p["metadata_dims"]) == V3_METADATA_DIMS)
    if lyrics and not single:
        enc = p["encoder_config"]
        if enc is None:
            raise HFConfigError(f"{where} has lyrics (nb_relevant_lyric_tokens {n_tokens}) and "
                                f"is_encoder_decoder false, so it needs an encoder_config (the lyric encoder)")
        if enc["act_fn"] != "quick_gelu":
            raise HFConfigError(f"{where}.encoder_config.act_fn is {enc['act_fn']!r}; expected quick_gelu")
        out.update(prime_width=int(enc["hidden_size"]), prime_depth=int(enc["num_layers"]),
                   prime_heads=int(enc["n_heads"]),
                   prime_attn_order=_attn_order(enc["attention_pattern"], where + ".encoder_config"),
                   prime_blocks=None if enc["blocks"] is None else int(enc["blocks"]),
                   prime_init_scale=float(enc["init_scale"]), prime_m_attn=float(enc["attention_multiplier"]),
                   prime_m_mlp=float(enc["mlp_multiplier"]), prime_zero_out=bool(enc["zero_out"]),
                   prime_res_scale=bool(enc["attn_res_scale"]))
    if lyrics and p["alignment_layer"] is not None:
        layer, head = int(p["alignment_layer"]), int(p["alignment_head"])
        lyric_layers = lyric_attention_layers(out["attn_order"], out["prior_depth"])
        if layer in lyric_layers and 0 <= head < out["heads"]:
            out.update(alignment_layer=layer, alignment_head=head)
        else:
            notes.append(f"{where}.alignment_layer {layer}, alignment_head {head} is not a lyric-attending layer "
                         f"and head of this prior (cross/prime-attention layers {list(lyric_layers)}, "
                         f"{out['heads']} heads); lyric alignment is left unset")
    if level < levels - 1:
        # HF's conditioner upsamples with res_downs_t/res_strides_t[index]; the original uses the VQ-VAE's
        # schedule of the level above. They agree for the released (3, 2, 2), not in general.
        down_t, stride_t = vq["downs_t"][level + 1], vq["strides_t"][level + 1]
        hf_down, hf_stride = p["res_downs_t"][index], p["res_strides_t"][index]
        if (hf_down, hf_stride) != (down_t, stride_t):
            raise HFConfigError(
                f"{where}: the HF conditioner upsamples with res_downs_t[{index}]={hf_down}, res_strides_t[{index}]="
                f"{hf_stride}, but level {level} sits under VQ-VAE level {level + 1} (downs_t {down_t}, strides_t "
                f"{stride_t}); such an HF model has no openai/jukebox counterpart")
        m_conv = p["res_convolution_multiplier"]
        out.update(cond_width=int(p["res_conv_width"]), cond_depth=int(p["res_conv_depth"]),
                   cond_m_conv=float(m_conv), cond_dilation_growth_rate=int(p["res_dilation_growth_rate"]),
                   cond_dilation_cycle=None if p["res_dilation_cycle"] is None else int(p["res_dilation_cycle"]),
                   cond_res_scale=bool(p["conv_res_scale"]), cond_zero_out=bool(p["zero_out"]))
    return out, notes


# What identifies a released prior (its weights' shapes) and what shapes its attention without changing any
# weight's shape, so that only a config can get it wrong (a 1b_lyrics config.json on the Hub says alignment
# layer 68, head 2: the 5b_lyrics values; layer 68 of the 1b prior does not attend to the lyrics).
RELEASED_IDENTITY = ("level", "prior_width", "prior_depth", "n_tokens", "single_enc_dec", "prime_width",
                     "prime_depth")
RELEASED_ATTENTION = ("n_ctx", "heads", "attn_order", "blocks", "spread", "alignment_layer", "alignment_head",
                      "prime_heads", "prime_attn_order", "prime_blocks")


def released_attention(fields: Dict[str, Any], released: Mapping[str, Mapping[str, Any]], where: str
                       ) -> List[str]:
    """If `fields` (a mapped `prior` section) has the shapes of a released prior (`released`: name -> its
    `prior` section), set every attention-shaping value that differs to the original's; returns a note per change."""
    def value(section: Mapping[str, Any], name: str) -> Any:
        v = section.get(name)
        return tuple(v) if isinstance(v, list) else v
    for name, orig in released.items():
        if all(value(fields, f) == value(orig, f) for f in RELEASED_IDENTITY if f in fields):
            break
    else:
        return []
    notes = []
    for f in RELEASED_ATTENTION:
        if f in fields or (f.startswith("alignment") and orig.get(f) is not None):
            if value(fields, f) != value(orig, f):
                notes.append(f"{where}: the weights are the released {name}'s, so {f} is the original's "
                             f"{value(orig, f)!r}, not the config's {value(fields, f)!r}")
                fields[f] = value(orig, f)
    return notes


def jukejax_configs(hf: Mapping[str, Any], vqvae_base: ml_collections.ConfigDict, prior_base,
                    released: Mapping[str, Mapping[str, Any]] = ()
                    ) -> Tuple[ml_collections.ConfigDict, Dict[int, ml_collections.ConfigDict], List[str]]:
    """(VQ-VAE config, {level: prior config}, notes) as full jukejax ConfigDicts.

    `released` (name -> `prior` section of each released prior) lets a prior with a released model's shapes
    take the original's attention-shaping values (`released_attention`), each change noted.

    `vqvae_base` is `jukejax.presets.vqvae()` and `prior_base(level)` is `jukejax.presets.prior`: fields HF does
    not know (losses, optimiser, data) keep the defaults there.
    """
    vq_fields = vqvae_section(hf)
    if int(hf["model"]["nb_priors"]) != vq_fields["levels"]:
        raise HFConfigError(f"nb_priors {hf['model']['nb_priors']} differs from vqvae_config.levels "
                            f"{vq_fields['levels']}: jukejax needs one prior per VQ-VAE level")
    vqvae_cfg = copy.deepcopy(vqvae_base)
    vqvae_cfg.vqvae.update(vq_fields)
    notes = [f"vqvae_config.hop_fraction {list(hf['vqvae']['hop_fraction'])} (sampling window overlap per HF "
             f"level, top first) is not part of the jukejax VQ-VAE config"]
    priors = {}
    for index in range(len(hf["priors"])):
        fields, prior_notes = prior_section(hf, index, vq_fields)
        notes += prior_notes + released_attention(fields, released or {}, f"prior_config_list[{index}]")
        cfg = prior_base(fields["level"])
        cfg.vqvae = copy.deepcopy(vqvae_cfg.vqvae)
        cfg.prior.update(fields)
        priors[fields["level"]] = cfg
    return vqvae_cfg, priors, notes


def hf_vqvae_kwargs(vq, sample_length: int) -> Dict[str, Any]:
    """The other way: `JukeboxVQVAEConfig` kwargs of the port's VQ-VAE with a jukejax `VQVAEConfig`'s shapes
    (the table above, inverted), for building the PyTorch reference beside a jukejax model."""
    if vq.m_conv != int(vq.m_conv):
        raise ValueError(f"vqvae.m_conv {vq.m_conv}: the port only takes an integer res_convolution_multiplier")
    return dict(levels=vq.levels, res_downs_t=list(vq.downs_t), res_strides_t=list(vq.strides_t),
                embed_dim=vq.emb_width, nb_discrete_codes=vq.l_bins, lmu=vq.l_mu, commit=vq.commit,
                multipliers=list(vq.hvqvae_multipliers), res_conv_width=vq.width, res_conv_depth=vq.depth,
                res_convolution_multiplier=int(vq.m_conv), res_dilation_growth_rate=vq.dilation_growth_rate,
                res_dilation_cycle=vq.dilation_cycle, conv_res_scale=False, conv_input_shape=1,
                sample_length=sample_length)
