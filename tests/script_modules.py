"""Loading a tool of scripts/ in a test: scripts are run as files (`python scripts/x.py`), not installed, so a
test loads one by its path, under its file name, as running it would (its sibling scripts import the same way)."""
import importlib.util
import pathlib
import sys

SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    """The module of scripts/<name>.py, registered in sys.modules (dataclasses and pickling look it up there)."""
    if name in sys.modules:
        return sys.modules[name]
    if str(SCRIPTS) not in sys.path:      # running `python scripts/x.py` puts scripts/ first on the path
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
