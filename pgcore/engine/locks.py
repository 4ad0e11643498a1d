"""One run at a time in a folder (`FolderLock`), and output places checked before a run starts."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..files import atomic_write_text

__all__ = ["check_writable_dir", "FolderLock", "FolderInUseError"]


def check_writable_dir(path: str | os.PathLike, what: str = "folder") -> Path:
    """Raise a one-line ValueError unless `path` is a folder this process can write, or can create.

    Caught before a run starts: `path` is an existing file, `path` lies inside a file, or the
    nearest existing folder is not writable. Creates nothing. Returns `Path(path)`.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{what} {str(p)!r} is a file; accepted: a folder (existing or new)")
    ancestor = p
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{what} {str(p)!r} lies inside the file {str(ancestor)!r}; accepted: a folder path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {str(p)!r}: no permission to write in {str(ancestor)!r}; accepted: a folder "
                         "you can write to")
    return p


class FolderInUseError(ValueError):
    """Another live run holds the folder (see `FolderLock`)."""


class FolderLock:
    """One run at a time in a folder: an OS file lock on `<folder>/.pgcore-run.lock`.

    `acquire()` fails at once with `FolderInUseError` naming the holder (pid, host, start time,
    command, read from `<folder>/.pgcore-run.json`) when another process holds it. The OS drops
    the lock when its process dies, so a stale lock from a killed run is simply taken over.
    `release()` removes both files. Use as a context manager or call `acquire()` / `release()`.
    """

    LOCK_NAME = ".pgcore-run.lock"
    INFO_NAME = ".pgcore-run.json"

    def __init__(self, folder: str | os.PathLike, what: str = "folder"):
        self.folder = Path(folder)
        self.what = what
        self._lock = None

    def acquire(self) -> "FolderLock":
        import json
        import socket
        import sys
        import time

        from filelock import FileLock, Timeout

        self.folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.folder / self.LOCK_NAME), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            try:
                holder = json.loads((self.folder / self.INFO_NAME).read_text(encoding="utf-8"))
                who = (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: "
                       f"{holder.get('command')}")
            except (OSError, ValueError):
                who = "another process"
            raise FolderInUseError(f"{self.what} {str(self.folder)!r} is in use by a running run ({who}); accepted: "
                                   "another folder, or wait for that run to end") from None
        self._lock = lock
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}
        atomic_write_text(self.folder / self.INFO_NAME, json.dumps(info) + "\n")
        return self

    def release(self) -> None:
        if self._lock is None:
            return
        with contextlib.suppress(OSError):
            (self.folder / self.INFO_NAME).unlink()
        with contextlib.suppress(OSError):  # still held: no other run can be between our unlink and release
            (self.folder / self.LOCK_NAME).unlink()
        self._lock.release()
        self._lock = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
