"""pgcore.utils: seeding, device choice, atomic writes."""
from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest
import torch

import pgcore as pg
from pgcore.files import atomic_dir, atomic_path, atomic_write_bytes, atomic_write_text, build_once
from pgcore.utils import get_device, set_seed


def _draw():
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()


def test_set_seed_makes_every_rng_reproducible():
    gen = set_seed(123)
    first, g_first = _draw(), torch.rand(2, generator=gen).tolist()
    gen = set_seed(123)
    assert _draw() == first
    assert torch.rand(2, generator=gen).tolist() == g_first
    set_seed(124)
    other = _draw()
    assert all(a != b for a, b in zip(other, first)), "a different seed must change every stream"


def test_set_seed_accepts_numpy_ints_and_rejects_non_ints():
    set_seed(np.int64(7))
    a = _draw()
    set_seed(7)
    assert _draw() == a
    for bad in (1.5, "3", True, None):
        with pytest.raises(ValueError, match="seed must be an int"):
            set_seed(bad)


def test_get_device_is_cuda_iff_available():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert get_device().type == expected
    assert pg.get_device is get_device
    assert get_device("cpu") == torch.device("cpu")


def test_get_device_both_branches(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert get_device() == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        get_device("cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        get_device(torch.device("cuda", 0))


def test_atomic_write_text_and_bytes(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    assert atomic_write_text(target, "héllo\n") == target
    assert target.read_text(encoding="utf-8") == "héllo\n"
    atomic_write_bytes(target, b"\x00\x01")  # overwrite
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"], "no temp files may be left"


def test_atomic_writes_get_the_mode_open_would_give(tmp_path):
    """mkstemp/mkdtemp make 0600/0700 files; an atomic write must not: a shared model cache or run folder
    (PGCORE_HOME on a cluster) stays readable by the others, and an existing file keeps its mode."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "new.txt", "x")
        assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o644
        (tmp_path / "exec.sh").write_text("")
        os.chmod(tmp_path / "exec.sh", 0o750)
        atomic_write_text(tmp_path / "exec.sh", "y")
        assert stat.S_IMODE((tmp_path / "exec.sh").stat().st_mode) == 0o750
        with atomic_dir(tmp_path / "model") as d:
            (d / "w.bin").write_bytes(b"")
        assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755
    finally:
        os.umask(old)


def test_atomic_path_success_and_failure(tmp_path):
    target = tmp_path / "metrics.csv"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_text("new")
        assert target.read_text() == "old", "the target changes only when the block succeeds"
    assert target.read_text() == "new"

    with pytest.raises(RuntimeError, match="crash"):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("crash")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_atomic_dir_replaces_whole_folder_or_nothing(tmp_path):
    target = tmp_path / "checkpoint-10"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt", "b.txt"]

    with atomic_dir(target) as tmp:  # replace: old files must not survive
        (tmp / "c.txt").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]

    with pytest.raises(RuntimeError, match="crash"):
        with atomic_dir(target) as tmp:
            (tmp / "d.txt").write_text("4")
            raise RuntimeError("crash")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"] and (target / "c.txt").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10"], "no temp folders may be left"


def test_build_once_builds_a_shared_cache_once_under_concurrency(tmp_path):
    calls = []

    def build(path):
        calls.append(path)
        time.sleep(0.3)  # long enough that every other caller arrives while this one builds
        with atomic_dir(path) as tmp:
            (tmp / "done.json").write_text("{}")

    target = tmp_path / "cache" / "model-abc"
    results = []
    threads = [threading.Thread(target=lambda: results.append(build_once(target, build, "done.json")))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(calls) == 1, f"built {len(calls)} times"
    assert results == [target] * 4 and (target / "done.json").is_file()
    assert build_once(target, build, "done.json") == target and len(calls) == 1, "a finished cache is reused"


def test_a_failed_build_leaves_nothing_and_the_next_call_builds_again(tmp_path):
    def failing(path):
        with atomic_dir(path) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("boom")

    def working(path):
        with atomic_dir(path) as tmp:
            (tmp / "done.json").write_text("{}")

    target = tmp_path / "model-xyz"
    with pytest.raises(RuntimeError, match="boom"):
        build_once(target, failing, "done.json")
    assert not target.exists(), "no half-built cache"
    # the lock was released and nothing marks the cache as built: the next call builds it
    done = threading.Event()
    worker = threading.Thread(target=lambda: (build_once(target, working, "done.json"), done.set()))
    worker.start()
    worker.join(timeout=30)
    assert done.is_set(), "the next call hung on the lock of the failed build"
    assert (target / "done.json").is_file()
