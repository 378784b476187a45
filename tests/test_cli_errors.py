"""How the command-line entry points report errors: a user error (jukejax.errors.UserError) or OSError is one
line and exit status 2; anything else is a bug and keeps its traceback; `--traceback` shows it for user errors."""
import os
import pathlib
import subprocess
import sys

import pytest

from jukejax import cli
from jukejax.config import ConfigError
from jukejax.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Runs train.py as `python train.py ...` would, with jukejax.train.run.describe replaced by a failing shape check.
_TRAIN_WITH_A_BUG = """
import runpy, sys
from jukejax.train import run
def describe(config):
    assert config.vqvae.levels == 99, "shape check failed"
run.describe = describe
sys.argv = ["train.py"] + sys.argv[1:]
runpy.run_path("train.py", run_name="__main__")
"""


def _train(*args, bug=False):
    command = [sys.executable, "-c", _TRAIN_WITH_A_BUG] if bug else [sys.executable, "train.py"]
    return subprocess.run(command + ["--config=tests/tiny_configs.py:vqvae", "--describe", *args], cwd=str(ROOT),
                          capture_output=True, text=True)


def test_every_error_class_of_the_package_is_a_user_error():
    import jukejax.audio
    import jukejax.checkpoint
    import jukejax.convert
    import jukejax.data.builder
    import jukejax.prior.labels
    import jukejax.sample.run
    import jukejax.vqvae.__main__
    classes = [jukejax.audio.AudioError, ConfigError, jukejax.checkpoint.CheckpointError,
               jukejax.convert.ConversionError, jukejax.convert.CheckpointReadError,
               jukejax.convert.hf_config.HFConfigError, jukejax.data.builder.DatasetError,
               jukejax.prior.labels.LabelError, jukejax.sample.run.SampleError,
               jukejax.sample.modes.ModeError, jukejax.sample.schedule.ScheduleError,
               jukejax.sample.outputs.CodesError, jukejax.vqvae.__main__.CodesFileError]
    assert [c for c in classes if not issubclass(c, UserError)] == []


def test_a_bug_inside_train_py_keeps_its_traceback():
    out = _train(bug=True)
    assert out.returncode == 1, out.stderr
    assert "Traceback (most recent call last)" in out.stderr
    assert "AssertionError: shape check failed" in out.stderr
    assert "error: shape check failed" not in out.stderr


@pytest.mark.slow  # several train.py processes
def test_a_user_error_is_one_line_and_traceback_shows_it():
    plain = _train("--config.vqvae.levels=2")
    assert plain.returncode == 2
    assert plain.stderr.startswith("error: vqvae.downs_t") and plain.stderr.count("\n") == 1, plain.stderr
    shown = _train("--config.vqvae.levels=2", "--traceback")
    assert shown.returncode == 1
    assert "Traceback (most recent call last)" in shown.stderr and "ConfigError: vqvae.downs_t" in shown.stderr


def test_traceback_flag_on_a_bad_override_at_parse_time():
    out = _train("--config.data.foo=1", "--traceback")
    assert out.returncode == 1
    assert "Traceback (most recent call last)" in out.stderr and "KeyError" in out.stderr


def test_argparse_entry_points_report_user_errors_and_pass_bugs_through(tmp_path, monkeypatch, capsys):
    from jukejax import convert
    from jukejax.convert import __main__ as convert_main
    args = ["--from", "openai", "--vqvae", str(tmp_path / "missing.pth.tar"), "--model", "1b_lyrics",
            "--out", str(tmp_path / "out")]
    assert convert_main.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "missing.pth.tar" in err, err
    with pytest.raises(cli.USER_ERRORS):
        convert_main.main(args + ["--traceback"])

    def buggy(*a, **k):
        raise IndexError("tuple index out of range")
    monkeypatch.setattr(convert, "convert_openai", buggy)
    with pytest.raises(IndexError):
        convert_main.main(args)


@pytest.mark.parametrize("error, code", [(ConfigError("bad"), 2), (FileNotFoundError(2, "gone", "f"), 2)])
def test_run_reporting_user_errors(error, code, capsys):
    def body():
        raise error
    assert cli.run_reporting_user_errors(body) == code
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(type(error)):
        cli.run_reporting_user_errors(body, traceback=True)
    with pytest.raises(ValueError):  # a plain ValueError is not a user error: a bug
        cli.run_reporting_user_errors(lambda: int("x"))


def test_convert_names_the_file_once_and_an_out_it_cannot_create(tmp_path, capsys):
    from jukejax.convert import __main__ as convert_main
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"x")
    assert convert_main.main(["--from", "hf", str(weights), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count(str(tmp_path / "config.json")) == 1 and "cannot be read" in err, err
    assert convert_main.main(["--from", "openai", "--vqvae", str(weights), "--model", "1b_lyrics",
                              "--out", str(weights / "sub")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --out {weights / 'sub'}: cannot be created (Not a directory)\n", err


def test_cpu_only_machine_needs_no_tpu_and_no_gpu():
    assert cli.cpu_only_machine(0, False)
    assert not cli.cpu_only_machine(4, False)
    assert not cli.cpu_only_machine(0, True)


_PLATFORM_OF_A_CLI_RUN = """
import jax
from jukejax.cli import run_reporting_user_errors
run_reporting_user_errors(lambda: print(jax.default_backend()) or 0)
"""


def test_a_cli_on_a_cpu_machine_with_libtpu_installed_prints_no_tpu_probe_errors():
    import importlib.util
    from jax._src import hardware_utils
    if importlib.util.find_spec("libtpu") is None:
        pytest.skip("libtpu is not installed: jax does not probe for TPUs")
    if hardware_utils.num_available_tpu_chips_and_device_id()[0] or hardware_utils.has_visible_nvidia_gpu():
        pytest.skip("this machine has an accelerator")
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    run = subprocess.run([sys.executable, "-c", _PLATFORM_OF_A_CLI_RUN], cwd=str(ROOT), env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "cpu"
    assert "TPU" not in run.stderr and "E0000" not in run.stderr, run.stderr
