"""Faults a run meets that are not the user's input: a full disk, a reward function that fails mid-run.

A full disk shows up in many costumes: `OSError(ENOSPC)` from Python's writes, `RuntimeError: basic_ios::clear:
iostream error` or `PytorchStreamWriter failed writing file` from `torch.save` (its C++ stream), a
`SafetensorError` from safetensors. `disk_full(path, needed)` turns any of them, raised inside the block, into
one `DiskFullError` naming the path, the bytes needed and the bytes free; the atomic writers
(`pgcore.files.atomic_dir` / `atomic_path`) have already removed their partial output by then.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Iterator

__all__ = ["DiskFullError", "disk_full", "is_disk_full", "free_bytes", "folder_bytes", "EXIT_REWARD_FN", "EXIT_DISK_FULL"]

EXIT_REWARD_FN = 3
"""exit status of a run stopped by a reward function that failed after the first step (a checkpoint is kept)"""
EXIT_DISK_FULL = 4
"""exit status of a run stopped by a full disk (the last complete checkpoint is kept)"""

_MARKERS = ("no space left", "basic_ios::clear", "iostream error", "failed writing file", "disk quota exceeded",
            "file too large")


class DiskFullError(OSError):
    """A write found no space left on its file system. `path`, `needed` and `free` say where and how much."""

    def __init__(self, path: str | os.PathLike, needed: int | None, free: int | None):
        self.path, self.needed, self.free = Path(path), needed, free
        need = f"about {needed:,} bytes needed" if needed else "bytes needed unknown"
        have = f"{free:,} bytes free" if free is not None else "free space unknown"
        super().__init__(errno.ENOSPC, f"no space left on the device writing {self.path}: {need}, {have}")

    def __str__(self) -> str:
        return self.args[1]


def is_disk_full(e: BaseException) -> bool:
    """Whether an exception, or one it was raised while handling (torch.save's stream error is followed by
    "unexpected pos" from closing the zip), is a full disk in one of its costumes (see the module docstring)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DiskFullError):
            return True
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
        if (isinstance(e, (OSError, RuntimeError)) or type(e).__name__ == "SafetensorError") \
                and any(m in str(e).lower() for m in _MARKERS):
            return True
        e = e.__cause__ or e.__context__
    return False


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the file system holding `path` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def folder_bytes(path: str | os.PathLike) -> int:
    """Bytes of the files in a folder (or of one file); 0 when it does not exist."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else 0


@contextlib.contextmanager
def disk_full(path: str | os.PathLike, needed: int | None = None) -> Iterator[None]:
    """Turn a full disk while writing `path` into `DiskFullError(path, needed, free)`; other errors pass."""
    try:
        yield
    except Exception as e:
        if isinstance(e, DiskFullError) or not is_disk_full(e):
            raise
        raise DiskFullError(path, needed, free_bytes(path)) from None
