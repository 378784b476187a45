"""python -m jukejax.bundle: training runs -> a model folder sample.py reads; every mismatch is one line and
leaves nothing behind. Runs are tiny random-weight workdirs (tests/tiny_configs.py), written as train.py writes them."""
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import pytest
from flax import linen as nn

import tiny_configs
from jukejax import bundle as bundle_lib
from jukejax.checkpoint import load_variables, save_variables
from jukejax.config import VQVAEConfig, build
from jukejax.prior.prior import Prior, prior_config
from jukejax.vqvae.model import VQVAE

pytestmark = pytest.mark.slow  # every test needs the module's tiny trained-run workdirs (about a minute)


def _prior_cd(level: int, vqvae_dir: pathlib.Path, dataset: pathlib.Path):
    cd = tiny_configs.prior() if level == 2 else tiny_configs.upsampler()
    cd.prior.level = level
    cd.vqvae_checkpoint = str(vqvae_dir)
    cd.data.dataset_dir = str(dataset)
    return cd


def _save_prior(directory: pathlib.Path, cd, seed: int) -> None:
    pc = prior_config(cd)
    z_cond = jnp.zeros((1, pc.cond_length), jnp.int32) if pc.upsampler else None
    params = jax.jit(Prior(pc).init)(jax.random.key(seed), jnp.zeros((1, pc.n_ctx), jnp.int32), z_cond,
                                     jnp.zeros((1, pc.y_width), jnp.int32))
    variables = nn.unbox(params)
    # what train.py saves: raw params and their EMA (the bundle must take the EMA)
    ema = jax.tree.map(lambda x: x + 1.0, variables["params"])
    save_variables(str(directory), cd, {"params": variables["params"]})
    import orbax.checkpoint as ocp
    manager = ocp.CheckpointManager((directory / "checkpoints").absolute())
    manager.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(
        {"params": variables["params"], "ema_params": ema, "extra": {}, "step": 7})), force=True)
    manager.wait_until_finished()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    dataset = root / "DATA" / "jukejax_music" / "1.0.0"
    dataset.mkdir(parents=True)
    (dataset / "artists.txt").write_text("unknown;0\njane_pianist;1\nbob_drummer;2\n")
    (dataset / "genres.txt").write_text("unknown;0\njazz;1\n")
    cd = tiny_configs.vqvae()
    variables = jax.jit(VQVAE(build(VQVAEConfig, cd.vqvae, "vqvae")).init)({"params": jax.random.key(1)},
                                                                           jnp.zeros((1, 64, 1)))
    save_variables(str(root / "vqvae"), cd, nn.unbox(variables), step=3)
    for level in (2, 1, 0):
        _save_prior(root / f"prior_{level}", _prior_cd(level, root / "vqvae", root / "DATA"), 10 + level)
    return root


def args(root, out, **change):
    a = dict(vqvae=root / "vqvae", prior=root / "prior_2", upsampler=[root / "prior_1", root / "prior_0"],
             data_dir=root / "DATA", out=out)
    a.update(change)
    argv = [f"--vqvae={a['vqvae']}", f"--prior={a['prior']}", f"--out={a['out']}"]
    argv += [f"--upsampler={u}" for u in a["upsampler"]]
    if a["data_dir"]:
        argv.append(f"--data_dir={a['data_dir']}")
    return argv


def test_bundle_writes_ema_weights_configs_and_name_tables(runs, tmp_path, capsys):
    from jukejax.sample.bundle import load_bundle
    out = tmp_path / "models" / "mine"
    assert bundle_lib.main(args(runs, out)) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["parts"]["prior_level_2"]["step"] == 7
    assert (out / "ids" / "artist_ids.txt").read_text() == "unknown;0\njane_pianist;1\nbob_drummer;2\n"
    assert (out / "ids" / "genre_ids.txt").read_text() == "unknown;0\njazz;1\n"
    loaded = load_bundle(out)
    assert sorted(loaded.priors) == [0, 1, 2]
    assert loaded.priors[2].labeller.artist_table["jane_pianist"] == 1
    _, ema, _ = load_variables(str(runs / "prior_2"))
    _, got, _ = load_variables(str(out / "prior_level_2"))
    for a, b in zip(jax.tree.leaves(ema["params"]), jax.tree.leaves(got["params"])):
        assert (a == b).all()
    config = json.loads((out / "prior_level_2" / "config.json").read_text())
    assert config["vqvae_checkpoint"] == "" and config["data"]["dataset_dir"] == ""   # no training-machine paths
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)
    assert [p.name for p in out.parent.iterdir()] == ["mine"]


def _one_line_error(capsys, argv, match):
    assert bundle_lib.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert match in err, err


@pytest.mark.parametrize("change, match", [
    (dict(upsampler=[]), "missing prior_level_1, prior_level_0"),
    (dict(prior="prior_1"), "is a level-1 prior; the top prior"),
    (dict(upsampler=["prior_1", "prior_1"]), "level 1 is given twice"),
    (dict(data_dir=None), "pass --data_dir=DATASET"),
    (dict(prior="vqvae"), "holds a 'vqvae' model; expected a prior"),
    (dict(prior="nowhere"), "config.json: not found"),
])
def test_mismatches_stop_with_one_line_and_write_nothing(runs, tmp_path, capsys, change, match):
    change = {k: ([runs / u for u in v] if isinstance(v, list) else runs / v if isinstance(v, str) else v)
              for k, v in change.items()}
    _one_line_error(capsys, args(runs, tmp_path / "out", **change), match)
    assert not any(tmp_path.iterdir())


def test_a_prior_of_another_vqvae_is_refused(runs, tmp_path, capsys):
    other = tmp_path / "other_vqvae"
    shutil.copytree(runs / "vqvae", other)
    _one_line_error(capsys, args(runs, tmp_path / "out", vqvae=other), "was trained on the codes of")
    shutil.copytree(runs / "vqvae", tmp_path / "wider")     # the config is checked before any weights are read
    config = json.loads((tmp_path / "wider" / "config.json").read_text())
    config["vqvae"]["l_bins"] = 64
    (tmp_path / "wider" / "config.json").write_text(json.dumps(config))
    _one_line_error(capsys, args(runs, tmp_path / "out", vqvae=tmp_path / "wider"), "config.vqvae.l_bins is 32")
    assert not (tmp_path / "out").exists()


def test_name_tables_that_do_not_fit_y_bins_are_refused(runs, tmp_path, capsys):
    data = tmp_path / "BIG" / "jukejax_music" / "1.0.0"
    data.mkdir(parents=True)
    (data / "artists.txt").write_text("".join(f"a{i};{i}\n" for i in range(9)))   # tiny_configs.prior(): y_bins (8, 8)
    (data / "genres.txt").write_text("unknown;0\n")
    _one_line_error(capsys, args(runs, tmp_path / "out", data_dir=tmp_path / "BIG"), "has 9 artist ids")


def test_an_existing_folder_is_kept_unless_overwrite(runs, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep").write_text("x")
    _one_line_error(capsys, args(runs, out), "already exists")
    assert (out / "keep").exists()
    assert bundle_lib.main(args(runs, out) + ["--overwrite"]) == 0
    assert not (out / "keep").exists() and (out / "prior_level_0").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
