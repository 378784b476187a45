"""`jukejax.embed` against the recipes run on transformers' PyTorch port, on tiny random weights (fp32).

The reference side re-implements, from their source, what p-lambda/jukemir `representations/jukebox/main.py`
and chrisdonahue/sheetsage `sheetsage/representations/jukebox.py` do:
- audio: `librosa.load(path, sr)` of librosa 0.7.2 (libsndfile float32, channel mean, resampy 0.2.2
  `kaiser_best` written out as its scalar loop, `fix_length` to ceil), then division by the peak;
- codes: the port's `JukeboxVQVAE.encode` of the first 25 s (jukemir) or of each zero-padded window (Sheet
  Sage), top level;
- labels: artist/genre 0, total length 62 s floored to the hop and offset 0 (jukemir), or the clamped song
  length and per-window offsets (Sheet Sage), `sample_length` n_ctx * hop;
- activations: jukemirlib's `get_activations_custom` on the port's prior: embedding, shift, label embedding at
  position 0, position + timing embedding, then the first L `_attn_mods` blocks.
The model is 5b-shaped (top prior without lyrics, merged decoder, attention order 2, v2 labels with timing).
"""
import json
import math
import pathlib

import jax
import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
import scipy.signal  # noqa: E402
from transformers.models.deprecated.jukebox import JukeboxVQVAE, JukeboxVQVAEConfig  # noqa: E402
from transformers.models.deprecated.jukebox import configuration_jukebox as hf_cfg  # noqa: E402
from transformers.models.deprecated.jukebox import modeling_jukebox as hf  # noqa: E402

import tiny_configs  # noqa: E402

from jukejax import presets  # noqa: E402
from jukejax.checkpoint import save_variables  # noqa: E402
from jukejax.config import VQVAEConfig, build  # noqa: E402
from jukejax.convert.hf_config import hf_vqvae_kwargs  # noqa: E402
from jukejax.embed import Embedder  # noqa: E402
from jukejax.embed import preprocess  # noqa: E402
from jukejax.embed.run import EmbedConfig, run  # noqa: E402
from jukejax.prior.prior import prior_config  # noqa: E402
from jukejax.prior.torch_keys import load_torch_prior  # noqa: E402
from torch_reference import randomize  # noqa: E402
from jukejax.testing import melody  # noqa: E402
from jukejax.vqvae import load_hf_state_dict  # noqa: E402

pytestmark = pytest.mark.torch
TOL = 1e-5
SR = 8000          # the tiny VQ-VAE's rate; top hop 16
N_CTX = 64         # top tokens per window: 1024 samples
DEPTH = 6
LAYERS = (2, 5)


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


# ------------------------------------------------------------------------------------------------------------
# The reference recipes

def resampy_022_kaiser_best(x, sr_orig, sr_new):
    """resampy 0.2.2 `resample(x, sr_orig, sr_new, filter='kaiser_best')` for 1-D float32 x, its numba loop
    (`interpn.py::resample_f`) as plain Python; the filter table from `filters.py::sinc_window` with the
    parameters of the shipped `kaiser_best.npz`."""
    n = 512 * 64
    rolloff = 0.9475937167399596
    win = scipy.signal.windows.kaiser(2 * n + 1, 14.769656459379492)[n:] * rolloff * np.sinc(
        rolloff * np.linspace(0, 64, num=n + 1, endpoint=True))
    sample_ratio = float(sr_new) / sr_orig
    y = np.zeros(int(x.shape[0] * sample_ratio), dtype=x.dtype)
    if sample_ratio < 1:
        win = win * sample_ratio
    delta = np.zeros_like(win)
    delta[:-1] = np.diff(win)
    num_table, scale = 512, min(1.0, sample_ratio)
    time_increment, index_step = 1.0 / sample_ratio, int(scale * num_table)
    time_register, nwin, n_orig = 0.0, win.shape[0], x.shape[0]
    win_l, delta_l, x_l = win.tolist(), delta.tolist(), x.astype(np.float64).tolist()
    for t in range(y.shape[0]):
        acc = np.float32(0.0)
        n_in = int(time_register)
        frac = scale * (time_register - n_in)
        index_frac = frac * num_table
        offset = int(index_frac)
        eta = index_frac - offset
        for i in range(min(n_in + 1, (nwin - offset) // index_step)):
            acc = np.float32(float(acc) + (win_l[offset + i * index_step] + eta * delta_l[offset + i * index_step])
                             * x_l[n_in - i])
        frac = scale - frac
        index_frac = frac * num_table
        offset = int(index_frac)
        eta = index_frac - offset
        for k in range(min(n_orig - n_in - 1, (nwin - offset) // index_step)):
            acc = np.float32(float(acc) + (win_l[offset + k * index_step] + eta * delta_l[offset + k * index_step])
                             * x_l[n_in + k + 1])
        y[t] = acc
        time_register += time_increment
    return y


def librosa_072_load(path, sr):
    """librosa 0.7.2 `load(path, sr=sr)` (mono=True) followed by jukemir's peak normalisation."""
    y, sr_native = sf.read(str(path), dtype="float32", always_2d=False)
    y = y.T
    if y.ndim > 1:
        y = np.mean(y, axis=0)
    if sr_native != sr:
        n_samples = int(np.ceil(y.shape[-1] * float(sr) / sr_native))
        y = resampy_022_kaiser_best(y, sr_native, sr)
        y = np.pad(y, (0, max(0, n_samples - y.shape[0])))[:n_samples]
    y = np.ascontiguousarray(y, dtype=np.float32)
    norm = np.abs(y).max()
    if norm > 0:
        y /= norm
    return y


def hf_activations(prior, tokens, y, layers):
    """jukemirlib `get_activations_custom` on the port's top prior: {layer: (n, T, width)}."""
    x_cond, y_cond, _ = prior.get_cond(None, torch.from_numpy(y))
    ar = prior.prior
    x = torch.from_numpy(np.asarray(tokens, np.int64))
    h = ar.embed_tokens(x)
    h = torch.cat((h[:, -1:], h[:, :-1]), dim=1)
    h[:, 0] = y_cond.view(x.shape[0], ar.width)
    h = h + ar.pos_emb() + x_cond
    out = {}
    for i, layer in enumerate(ar.transformer._attn_mods[:max(layers)]):
        h = layer(h, last_encoder_hidden_states=None)
        if i + 1 in layers:
            out[i + 1] = h.numpy()
    return out


# ------------------------------------------------------------------------------------------------------------
# One model, two implementations

class Pair:
    def __init__(self, root: pathlib.Path):
        torch.manual_seed(0)
        vq_cd = tiny_configs.vqvae()
        vq = build(VQVAEConfig, vq_cd.vqvae, "vqvae")
        self.vq = vq
        self.hf_vqvae = JukeboxVQVAE(JukeboxVQVAEConfig(**hf_vqvae_kwargs(vq, 2048)))
        self.hf_vqvae.post_init()
        self.hf_vqvae.eval()
        audio = torch.from_numpy(melody(np.random.default_rng(0), 0.5, SR))[None, :, None]
        with torch.no_grad():  # codebooks near real encoder outputs, so codes vary
            for level in range(vq.levels):
                h = self.hf_vqvae.encoders[level](audio.permute(0, 2, 1))[-1].permute(0, 2, 1).reshape(-1, vq.emb_width)
                rows = h[torch.randint(0, h.shape[0], (vq.l_bins,))]
                self.hf_vqvae.bottleneck.level_blocks[level].codebook.copy_(rows + 0.1 * h.std() * torch.randn_like(rows))
        params, codebook = load_hf_state_dict({k: v.numpy() for k, v in self.hf_vqvae.state_dict().items()}, vq)
        save_variables(str(root / "vqvae"), vq_cd, {"params": params, "codebook": codebook})

        cd = presets.prior(2, vq_cd.vqvae, n_ctx=N_CTX, prior_width=32, prior_depth=DEPTH, heads=2, attn_order=2,
                           blocks=8, labels=True, y_bins=(7, 11), max_bow_genre_size=5, t_bins=8, min_duration=1.0,
                           max_duration=100.0, merged_decoder=True)
        self.prior_config = prior_config(cd)
        self.hf_prior = hf.JukeboxPrior(hf_cfg.JukeboxPriorConfig(
            act_fn="quick_gelu", attention_multiplier=0.25, mlp_multiplier=1.0, attn_res_scale=False,
            emb_dropout=0.0, attn_dropout=0.0, resid_dropout=0.0, zero_out=False, init_scale=1.0, mask=True,
            spread=None, music_vocab_size=vq.l_bins, sampling_rate=SR, res_downs_t=list(vq.downs_t),
            res_strides_t=list(vq.strides_t), level=0, hidden_size=32, num_layers=DEPTH, n_heads=2,
            attention_pattern="raw_column_previous_row_attention", blocks=8, n_ctx=N_CTX, metadata_dims=[7, 11],
            max_nb_genres=5, timing_dims=8, is_encoder_decoder=False, nb_relevant_lyric_tokens=0,
            merged_decoder=True, min_duration=1.0, max_duration=100.0), level=0, nb_priors=3)
        self.hf_prior.post_init()
        randomize(self.hf_prior, seed=1)
        params = load_torch_prior(dict(self.hf_prior.state_dict()), self.prior_config, hf=True)
        save_variables(str(root / "prior_level_2"), cd, {"params": params})
        self.root = root


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return Pair(tmp_path_factory.mktemp("embed_model"))


@pytest.fixture(scope="module")
def embedder(pair):
    with jax.default_matmul_precision("highest"):
        return Embedder(str(pair.root), layers=LAYERS)


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    """A stereo file at the model's rate, a mono one at 11025 Hz (resampled) and a long one (frames: 3 windows
    and a partial one); lengths not multiples of the hop."""
    folder = tmp_path_factory.mktemp("embed_audio")
    rng = np.random.default_rng(5)
    left, right = melody(rng, 0.4, SR), melody(rng, 0.4, SR)
    sf.write(folder / "a_stereo.wav", np.stack([left, 0.5 * right], axis=1)[:3203], SR, subtype="FLOAT")
    sf.write(folder / "b_11k.wav", melody(rng, 0.3, 11025)[:3301], 11025, subtype="FLOAT")
    sf.write(folder / "c_long.wav", melody(rng, 0.45, SR)[:3500], SR, subtype="PCM_16")
    return folder


def test_preprocessing_matches_librosa_072_and_resampy_022(songs):
    for name in ("a_stereo.wav", "b_11k.wav", "c_long.wav"):
        got, _ = preprocess.load_mono_normalised(songs / name, SR)
        want = librosa_072_load(songs / name, SR)
        assert got.shape == want.shape, name
        assert got.dtype == np.float32
        err = rel_err(got, want)
        print(name, "audio max rel err", err)
        assert err <= 1e-6, name


def _reference_jukemir(pair, songs, name):
    audio = librosa_072_load(songs / name, SR)
    hop = pair.vq.hop_lengths[-1]
    with torch.no_grad():
        codes = pair.hf_vqvae.encode(torch.from_numpy(audio[:SR * 25])[None, :, None])[-1].numpy()
    tokens = codes[:, :N_CTX]
    total = int(62 * SR) // hop * hop
    y = np.array([[total, 0, N_CTX * hop, 0, 0, -1, -1, -1, -1]], np.int64)
    with torch.no_grad():
        acts = hf_activations(pair.hf_prior, tokens, y, LAYERS)
    return tokens, {layer: a[0].mean(axis=0) for layer, a in acts.items()}, {layer: a[0] for layer, a in acts.items()}


def test_jukemir_preset_matches_port(pair, songs, embedder, tmp_path):
    with jax.default_matmul_precision("highest"):
        summary = run(EmbedConfig(checkpoint=str(pair.root), out=str(tmp_path), audio_dir=str(songs),
                                  layers=LAYERS, preset="jukemir", batch_size=8, progress=False), embedder)
    assert summary["embedded"] == 3
    manifest = {json.loads(line)["file"]: json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()}
    worst = 0.0
    for name in ("a_stereo.wav", "b_11k.wav", "c_long.wav"):
        tokens, pooled, frames = _reference_jukemir(pair, songs, name)
        got = np.load(tmp_path / name.replace(".wav", ".npy"))
        assert got.shape == (len(LAYERS), 32) and manifest[name]["shape"] == [len(LAYERS), 32]
        # the codes themselves
        audio, _ = preprocess.load_mono_normalised(songs / name, SR)
        with jax.default_matmul_precision("highest"):
            ours = np.asarray(embedder.encode(audio[None, :SR * 25]))[:, :N_CTX]
        np.testing.assert_array_equal(ours, tokens)
        for k, layer in enumerate(LAYERS):
            worst = max(worst, rel_err(got[k], pooled[layer]))
        # frame-level activations of the same clip, straight from the Embedder
        y = np.array([[int(62 * SR) // 16 * 16, 0, N_CTX * 16, 0, 0, -1, -1, -1, -1]], np.int64)
        with jax.default_matmul_precision("highest"):
            acts = embedder.activations(np.tile(tokens, (8, 1)).astype(np.int32), np.tile(y, (8, 1)))
        for layer in LAYERS:
            worst = max(worst, rel_err(np.asarray(acts[layer])[0], frames[layer]))
    print("jukemir preset: max rel err", worst)
    assert worst <= TOL
    assert manifest["b_11k.wav"]["sample_rate"] == 11025
    assert abs(manifest["b_11k.wav"]["duration"] - 3301 / 11025) < 1e-9


def test_frames_preset_matches_port(pair, songs, embedder, tmp_path):
    with jax.default_matmul_precision("highest"):
        run(EmbedConfig(checkpoint=str(pair.root), out=str(tmp_path), audio_dir=str(songs), layers=LAYERS,
                        preset="frames", batch_size=8, progress=False), embedder)
    hop, window = 16, N_CTX * 16
    worst = 0.0
    for name in ("a_stereo.wav", "c_long.wav"):
        audio = librosa_072_load(songs / name, SR)
        n_windows = math.ceil(audio.shape[0] / window)
        chunks = np.zeros((n_windows * window,), np.float32)
        chunks[:audio.shape[0]] = audio
        total = min(max(audio.shape[0], SR * 1 + 16), SR * 100 - 96) // hop * hop
        acts = []
        for i in range(n_windows):
            with torch.no_grad():
                codes = pair.hf_vqvae.encode(torch.from_numpy(chunks[i * window:(i + 1) * window])[None, :, None])[-1]
            offset = max(min(i * window, total - window), 0)
            y = np.array([[total, offset, window, 0, 0, -1, -1, -1, -1]], np.int64)
            with torch.no_grad():
                acts.append(hf_activations(pair.hf_prior, codes.numpy(), y, (5,))[5][0])
        want = np.concatenate(acts)[:int(audio.shape[0] / hop)]
        got = np.load(tmp_path / name.replace(".wav", ".npy"))[1]
        assert got.shape == want.shape, name
        worst = max(worst, rel_err(got, want))
    print("frames preset: max rel err", worst)
    assert worst <= TOL


def test_truncation_reads_and_runs_only_the_requested_layers(pair, embedder):
    blocks = embedder.params["prior"]["transformer"]
    assert sorted(blocks) == [f"_attn_mods_{d}" for d in range(max(LAYERS))]
    assert "x_out" not in embedder.params["prior"]
    assert embedder.config.transformer.depth == max(LAYERS) and embedder.full_config.transformer.depth == DEPTH
    # the port's full forward ends where the manual one does
    tokens = np.random.default_rng(0).integers(0, pair.vq.l_bins, (1, N_CTX))
    y = np.array([[SR * 10, SR, N_CTX * 16, 0, 3, -1, -1, -1, -1]], np.int64)
    with torch.no_grad():
        x_cond, y_cond, _ = pair.hf_prior.get_cond(None, torch.from_numpy(y))
        _, full = pair.hf_prior.prior(torch.from_numpy(tokens), x_cond, y_cond, None, get_acts=True)
        manual = hf_activations(pair.hf_prior, tokens, y, (DEPTH,))[DEPTH]
    assert rel_err(manual, full.numpy()) == 0.0
