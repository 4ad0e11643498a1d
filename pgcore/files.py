"""Files: atomic writes, build-once model folders, the shipped data and the user cache.

The course's tiny models ship built (`MODELS_DIR`); a model built on this machine (another recipe's tiny model, the
converted SmolLM2) is written once into `cache_dir()`, atomically, so an interrupted build never leaves half a
model behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["atomic_write_text", "atomic_write_bytes", "atomic_path", "atomic_dir", "build_once", "data_path",
           "cache_dir", "quiet_transformers", "MODELS_DIR", "shipped_model", "model_dir"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside `path`; on success rename it over `path` atomically.

    On an exception the temporary file is removed and `path` is left as it was, so a crash
    never leaves a half-written output. Use it for writers that want a filename
    (`fig.savefig(tmp)`, `torch.save(obj, tmp)`, `df.to_csv(tmp)`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp makes the file 0600; give it the mode `open` would (a shared cache or run folder stays readable)
    os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (temp file, fsync, rename). Returns the path.

    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically. Returns the path.

    """
    return atomic_write_bytes(path, text.encode(encoding))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success it replaces `path` as a whole.

    For multi-file products (a checkpoint folder, a `save_pretrained` model): a reader sees the
    old folder or the complete new one, never a mix. On an exception the temporary folder is
    deleted and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700: others sharing the cache could not read it
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

    """
    return DATA_DIR / name


MODELS_DIR = Path(__file__).resolve().parent / "models"
"""the built models pgcore ships as package data (`tiny`, `tiny-sentiment`, `tiny-arith`): the same bits on every
CPU, where a build at first use would give each CPU's kernels their own weights (`python -m pgcore.lm.shipped`)"""


def shipped_model(kind: str, fingerprint: str, marker: str = "pgcore_build.json") -> Path | None:
    """The shipped folder of `kind` if it was built from the recipe whose fingerprint is `fingerprint`, else None.

    The fingerprint is read from the folder's `marker` file, so a changed recipe (config, corpus, build code)
    never loads stale weights: it builds into the cache instead.
    """
    path = MODELS_DIR / kind
    try:
        built = json.loads((path / marker).read_text())
    except (OSError, ValueError):
        return None
    return path if built.get("fingerprint") == fingerprint else None


def model_dir(kind: str, fingerprint: str, build: Callable[[Path], object], cache: str | os.PathLike | None = None,
              marker: str = "pgcore_build.json") -> Path:
    """The folder of a built model: the shipped one when its fingerprint matches, else `build` run once into
    `cache/<kind>-<fingerprint>` (`cache` defaults to `cache_dir()`; see `build_once`)."""
    shipped = shipped_model(kind, fingerprint, marker)
    if shipped is not None:
        return shipped
    cache = Path(cache) if cache is not None else cache_dir()
    return build_once(cache / f"{kind}-{fingerprint}", build, marker)


def cache_dir() -> Path:
    """Where built and converted models are cached: `$PGCORE_HOME/models` when PGCORE_HOME is set,
    else the platform's user cache folder (`~/.cache/pgcore/models` on Linux, via platformdirs).
    Never beside the installed package, so a pip-installed pgcore caches in a writable place.
    """
    home = os.environ.get("PGCORE_HOME", "").strip()
    if home:
        return Path(home).expanduser() / "models"
    import platformdirs

    return Path(platformdirs.user_cache_dir("pgcore", appauthor=False)) / "models"


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars and info logs for a save/load (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
