"""Prior training end to end: a tiny VQ-VAE, pre-encoding through train.py's prior task, loss going down."""
import numpy as np
import pytest

import tiny_configs
from jukejax.data import BuildConfig, build_dataset
from jukejax.testing import write_songs
from jukejax.train import run as run_lib

SR = 8000


@pytest.fixture(scope="module")
def vqvae_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("prior")
    audio = write_songs(root / "audio", 6, 6.0, SR, artists=["bach", "palestrina"],
                        genres=["chorale", "madrigal"], lyrics=["Kyrie eleison", ""])
    data = root / "data"
    build_dataset(BuildConfig(audio_dir=str(audio), sr=SR, channels=1, window_seconds=2.0, test_fraction=0.2),
                  str(data))
    config = tiny_configs.vqvae()
    config.data.dataset_dir = str(data)
    config.train.update(dict(num_steps=30, log_every=10, eval_every=30, checkpoint_every=30))
    run_lib.train(config, str(root / "vqvae"))
    return root, data


def _losses(history):
    return np.asarray([entry["loss"] for entry in history["logs"]])


@pytest.mark.slow
def test_top_prior_learns_from_pre_encoded_codes(vqvae_run):
    root, data = vqvae_run
    config = tiny_configs.prior()
    config.vqvae_checkpoint = str(root / "vqvae")
    config.data.dataset_dir = str(data)
    config.train.log_every = 1
    history = run_lib.train(config, str(root / "prior"))
    assert (root / "prior" / "codes").exists()  # pre-encoded once, beside the run
    losses = _losses(history)
    first, last = losses[:5].mean(), losses[-5:].mean()
    print(f"top prior loss {first:.3f} -> {last:.3f} bits/token (ratio {last / first:.3f})")
    assert last / first < 0.9
    logs = history["logs"][-1]
    assert {"bpd", "gen_loss", "prime_loss"} <= set(logs)


@pytest.mark.slow
def test_upsampler_trains_on_the_same_codes(vqvae_run):
    root, data = vqvae_run
    config = tiny_configs.upsampler()
    config.data.codes_dir = str(root / "prior" / "codes")
    config.train.num_steps = 30
    config.train.log_every = 1
    history = run_lib.train(config, str(root / "upsampler"))
    losses = _losses(history)
    print(f"upsampler loss {losses[:5].mean():.3f} -> {losses[-5:].mean():.3f}")
    assert losses[-5:].mean() < losses[:5].mean()


@pytest.mark.slow
def test_prior_trains_on_raw_audio_with_bf16_compute(vqvae_run):
    """The original's way (encode every batch with the frozen VQ-VAE), with bf16 compute / fp32 params."""
    root, data = vqvae_run
    config = tiny_configs.prior()
    config.vqvae_checkpoint = str(root / "vqvae")
    config.data.dataset_dir = str(data)
    config.data.raw_audio = True
    config.prior.dtype = "bfloat16"
    config.train.num_steps = 20
    config.train.log_every = 1
    history = run_lib.train(config, str(root / "raw"))
    losses = _losses(history)
    print(f"raw-audio bf16 prior loss {losses[:5].mean():.3f} -> {losses[-5:].mean():.3f}")
    assert np.isfinite(losses).all() and losses[-5:].mean() < losses[:5].mean()
    assert not (root / "raw" / "codes").exists()


def test_missing_codes_is_a_clear_error(tmp_path):
    config = tiny_configs.prior()
    with pytest.raises(ValueError, match="no pre-encoded codes"):
        run_lib.train(config, str(tmp_path))


def _init_state(config, workdir):
    import jax
    from jukejax import parallel
    from jukejax.train import loop, vqvae_task
    task = vqvae_task.make_task(config, workdir)
    trainer = loop.Trainer(task, run_lib.loop_config(config), workdir)
    with jax.set_mesh(trainer.mesh):
        batch = parallel.shard_batch(next(task.train_iterator(0)), trainer.mesh)
        return trainer.init(batch)


@pytest.mark.slow  # trains the tiny VQ-VAE it starts from
def test_fine_tuning_starts_from_a_model_folder(vqvae_run, tmp_path):
    """train.init_from: the new run's weights, EMA and codebooks are the folder's; step and Adam restart."""
    import jax
    from jukejax.checkpoint import load_variables
    root, data = vqvae_run
    config = tiny_configs.vqvae()
    config.data.dataset_dir = str(data)
    config.train.init_from = str(root / "vqvae")
    state = _init_state(config, str(tmp_path / "fine_tune"))
    _, want, _ = load_variables(str(root / "vqvae"))
    assert int(state.step) == 0
    # restored straight onto the mesh (every device holds its copy), not onto one device first
    assert all(len(leaf.sharding.device_set) == len(jax.devices()) for leaf in jax.tree.leaves(state.params))
    for got_tree, want_tree in ((state.params, want["params"]), (state.ema_params, want["params"]),
                                (state.extra["codebook"], want["codebook"])):
        assert jax.tree.structure(got_tree) == jax.tree.structure(want_tree)
        for got, ref in zip(jax.tree.leaves(got_tree), jax.tree.leaves(want_tree)):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))

    config.vqvae.width = config.vqvae.width * 2
    with pytest.raises(ValueError, match=r"train.init_from .*vqvae: parameter .* has shape"):
        _init_state(config, str(tmp_path / "other_shape"))


@pytest.fixture(scope="module")
def codes_dir(tmp_path_factory):
    from jukejax.testing import make_codes_dataset
    return make_codes_dataset(tmp_path_factory.mktemp("codes"))  # 4 s songs at 8 kHz, 2 artists, 2 genres


@pytest.mark.parametrize("field,value,message", [
    ("prior.min_duration", 30.0, r"songs last 4.0 to 4.0 s but prior.min_duration is 30 .*min_duration<=4"),
    ("prior.max_duration", 3.0, r"songs last 4.0 to 4.0 s .*prior.max_duration 3 .*max_duration>4.0"),
    ("prior.y_bins", (1, 8), r"3 genres and 3 artists but prior.y_bins is \(1, 8\) \(genre bins, artist bins\)"),
    ("prior.y_bins", (8, 1), r"3 genres and 3 artists but prior.y_bins is \(8, 1\)"),
    ("vqvae.sr", 16000, r"encoded from 8000 Hz audio but the prior's config.vqvae.sr is 16000 Hz"),
])
def test_label_and_rate_settings_are_checked_against_the_dataset(codes_dir, tmp_path, field, value, message):
    """Before any step: songs shorter than prior.min_duration made every step non-finite; too few label bins
    index past the embeddings; another sample rate trains on audio read at the wrong speed."""
    from jukejax.config import ConfigError
    from jukejax.train import prior_task
    config = tiny_configs.prior()
    config.data.codes_dir = str(codes_dir)
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(ConfigError, match=message):
        prior_task.make_task(config, str(tmp_path))
    config = tiny_configs.prior()
    config.data.codes_dir = str(codes_dir)
    prior_task.make_task(config, str(tmp_path))  # the unchanged config passes
