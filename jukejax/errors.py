"""What a user can get wrong, apart from what is a bug, and the one way files appear on disk.

`UserError` is the base of every error caused by input the user controls: a bad flag or config value, a bad
audio/codes/metadata file, a checkpoint that does not match its config. The command-line entry points print
these (and `OSError`) as one line and exit 2; anything else is a bug and keeps its traceback.
It derives from ValueError so library callers that catch ValueError keep working.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import socket
import uuid
from typing import List, Union


class UserError(ValueError):
    """Bad input, bad config or bad checkpoint: reported as one line naming the file/field and what was expected."""


# What the command-line entry points report as one line (exit 2): the user's input, or the machine's (a missing
# file, a full disk).
USER_ERRORS = (UserError, OSError)


def check_workdir(workdir: Union[str, os.PathLike]) -> pathlib.Path:
    """Create `workdir` (with its parents) and prove it writable with a 4 KiB probe file, before any work: an
    `OSError` `workdir W: not writable (reason)` for a read-only place, a path through a file, or a full disk."""
    path = pathlib.Path(workdir)
    probe = path / f".write_probe_{os.getpid()}_{uuid.uuid4().hex}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise OSError(f"workdir {path}: not writable ({e.strerror or e})") from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass
    return path


def atomic_write_bytes(path: Union[str, os.PathLike], data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a part: a hidden
    temporary file in the same directory, fsync'ed, then renamed over `path` (removed if anything fails)."""
    path = pathlib.Path(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Union[str, os.PathLike], text: str) -> None:
    """`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def process_running(pid: int) -> bool:
    """Whether process `pid` exists on this host (another user's process counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def partial_dir_name(prefix: str) -> str:
    """`<prefix><host>-<pid>-`: the start of a work folder's name that says which process owns it, so that
    `remove_dead_partials` can tell a killed run's leftovers from a live run's folder."""
    return f"{prefix}{socket.gethostname()}-{os.getpid()}-"


def remove_dead_partials(parent: Union[str, os.PathLike], prefix: str) -> List[pathlib.Path]:
    """Delete the `partial_dir_name(prefix)*` folders in `parent` whose owner process on this host is gone
    (a run killed with -9 cannot clean up after itself). Folders of other hosts or of live processes stay."""
    host = socket.gethostname()
    removed = []
    for path in pathlib.Path(parent).glob(f"{prefix}*"):
        parts = path.name[len(prefix):].rsplit("-", 2)  # host (may hold '-'), pid, mkdtemp's suffix
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid != os.getpid() and not process_running(pid) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
