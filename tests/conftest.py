"""Test-session setup: 8 fake CPU devices (set before jax is imported) and a persistent compile cache."""
import os
import pathlib

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = pathlib.Path(__file__).resolve().parents[1]

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir", str(ROOT / ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


import logging  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """A CLI run in-process (`logging.basicConfig(force=True)` in `python -m jukejax.data`'s main) puts a
    handler on the root logger that writes to the stream pytest had captured for that test; once the stream is
    closed, any later warning prints a "Logging error" traceback into another test's captured stderr. Each test
    gets the root logger's handlers and level back as they were."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
