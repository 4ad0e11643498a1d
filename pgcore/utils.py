"""Seeding, device choice and atomic writes: the plumbing every notebook and run shares.

Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
"""
from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

__all__ = [
    "set_seed",
    "get_device",
    "atomic_write_text",
    "atomic_write_bytes",
    "atomic_path",
    "atomic_dir",
    "build_once",
    "data_path",
    "cache_dir",
    "check_writable_dir",
    "FolderLock",
    "FolderInUseError",
    "weights_sha256",
]


def set_seed(seed: int) -> torch.Generator:
    """Seed Python's `random`, NumPy and torch (CPU and every CUDA device).

    Returns a fresh `torch.Generator` seeded with `seed`, for code that wants its own stream.
    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """The device to compute on: `prefer` if given, else CUDA when present, else CPU.

    Never hard-code "cpu": the same notebook then uses a learner's GPU when there is one.
    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    if prefer is not None:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {str(prefer)!r} requested but CUDA is not available; use 'cpu' or None")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside `path`; on success rename it over `path` atomically.

    On an exception the temporary file is removed and `path` is left as it was, so a crash
    never leaves a half-written output. Use it for writers that want a filename
    (`fig.savefig(tmp)`, `torch.save(obj, tmp)`, `df.to_csv(tmp)`).
    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (temp file, fsync, rename). Returns the path.

    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically. Returns the path.

    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    return atomic_write_bytes(path, text.encode(encoding))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success it replaces `path` as a whole.

    For multi-file products (a checkpoint folder, a `save_pretrained` model): a reader sees the
    old folder or the complete new one, never a mix. On an exception the temporary folder is
    deleted and `path` is untouched.
    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.rmdir(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def build_once(path: str | os.PathLike, build: Callable[[Path], object], marker: str) -> Path:
    """Return `path`, first calling `build(path)` unless the file `path/marker` exists.

    For caches that take a while to make (the tiny models): processes that need the same one at
    once (a notebook and a test, pytest-xdist workers) wait on a lock file beside it; the first
    builds (atomically, with `atomic_dir`), the others then find the finished folder.
    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    from filelock import FileLock

    path = Path(path)
    if (path / marker).is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.parent / f".{path.name}.lock")):
        if not (path / marker).is_file():
            build(path)
    return path


DATA_DIR = Path(__file__).resolve().parent / "data"
"""the data pgcore ships as package data (the course's top-level `data/` links here: one copy)"""


def data_path(name: str) -> Path:
    """The path of a file pgcore ships, e.g. `data_path("reviews.tsv")`, wherever pgcore is installed.

    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    return DATA_DIR / name


def cache_dir() -> Path:
    """Where built and converted models are cached: `$PGCORE_HOME/models` when PGCORE_HOME is set,
    else the platform's user cache folder (`~/.cache/pgcore/models` on Linux, via platformdirs).
    Never beside the installed package, so a pip-installed pgcore caches in a writable place.
    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    home = os.environ.get("PGCORE_HOME", "").strip()
    if home:
        return Path(home).expanduser() / "models"
    import platformdirs

    return Path(platformdirs.user_cache_dir("pgcore", appauthor=False)) / "models"


def check_writable_dir(path: str | os.PathLike, what: str = "folder") -> Path:
    """Raise a one-line ValueError unless `path` is a folder this process can write, or can create.

    Caught before a run starts: `path` is an existing file, `path` lies inside a file, or the
    nearest existing folder is not writable. Creates nothing. Returns `Path(path)`.
    Introduced in notebooks/04_lm_policy_gradient.ipynb.
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
    Introduced in notebooks/04_lm_policy_gradient.ipynb.
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


def weights_sha256(module: torch.nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers (names, dtypes, shapes and bytes), in state_dict order.

    Two models hash alike exactly when their weights are bit-identical. Introduced in
    notebooks/04_lm_policy_gradient.ipynb.
    """
    import hashlib

    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
