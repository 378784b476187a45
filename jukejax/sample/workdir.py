"""A sampling workdir: checked writable without leaving anything behind, held by one writer at a time, and
cleared of the temporary files a killed writer left.

The lock is `WORKDIR/.lock`, holding the writer's pid, host and start time (for the message a second writer
gets), and held with `fcntl.flock`: the kernel releases it when the holder dies however it dies (kill -9
included), so a lock file left by a dead process is simply taken over; a live holder makes the second run
stop with one line naming it. Leftover `.NAME.*.tmp` files (the atomic writers' temporaries) can only belong
to a dead writer once the lock is held, so they are deleted then.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import pathlib
import socket
import time
from typing import List, Optional

from jukejax.errors import check_workdir
from jukejax.sample.settings import SampleError

LOCK_FILE = ".lock"


def check_writable(workdir) -> pathlib.Path:
    """`jukejax.errors.check_workdir` (created, a probe file written), then every folder this check created is
    removed again: a run that stops on a later check leaves nothing behind."""
    if not workdir:
        raise SampleError("--workdir is required")
    path = pathlib.Path(workdir)
    created: List[pathlib.Path] = []
    missing = path
    while not missing.exists() and missing != missing.parent:
        created.append(missing)
        missing = missing.parent
    try:
        return check_workdir(path)
    finally:
        for folder in created:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                pass


class WorkdirLock:
    """`with WorkdirLock(workdir):` the only writer of `workdir` (created if missing)."""

    def __init__(self, workdir):
        self.workdir = pathlib.Path(workdir)
        self.path = self.workdir / LOCK_FILE
        self._fd: Optional[int] = None

    def holder(self) -> str:
        try:
            info = json.loads(self.path.read_text())
            return f"pid {info['pid']} on {info['host']} since {info['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def acquire(self) -> "WorkdirLock":
        self.workdir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise SampleError(f"workdir {self.workdir} is in use by {self.holder()} (lock file "
                                      f"{self.path}); wait for it to finish, or use another --workdir") from None
                raise
            # The holder we waited on may have removed the file after we opened it: lock the file on disk.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        info = dict(pid=os.getpid(), host=socket.gethostname(),
                    since=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # before unlocking: a waiter then re-opens a fresh file
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def remove_leftovers(workdir) -> List[pathlib.Path]:
    """Delete the temporary files (`.NAME.HEX.tmp`) of atomic writes a killed writer left in the workdir and its
    level folders; call only while holding the lock. Returns what was removed."""
    workdir = pathlib.Path(workdir)
    removed = []
    for folder in [workdir, *sorted(p for p in workdir.glob("level_*") if p.is_dir())]:
        for path in folder.glob(".*.tmp"):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
        for path in folder.glob(".write_probe_*"):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
