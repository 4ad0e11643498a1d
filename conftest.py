"""Root pytest configuration: offline, one CPU thread per process, and time tables at the end.

The README's test command runs the files on every core with pytest-xdist (`-n auto`; pyproject's
`--dist loadfile` keeps a notebook's cells, and a test module's fixtures, on one worker). Each
process then computes on one thread: the models here are small, a second thread gains little, and
threads of two busy processes waiting on each other make a run many times slower. The numbers
printed and compared do not depend on the thread count.
"""
from __future__ import annotations

import os
from collections import defaultdict

# Before torch is imported anywhere: the workers, notebook kernels and CLI subprocesses inherit it.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
# Nothing in the tests or the notebooks (kernels inherit this environment) may reach the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BROWSER_TIMING = "browser_seconds"  # recorded by tests/test_browser.py with record_property

# Longest files first; the rest keep their order. With pyproject's `--dist loadfile
# --no-loadscope-reorder` the workers take whole files in this order, so that no long file starts
# last and leaves the other cores idle (seconds per file: the table at the end of a run).
LONGEST_FIRST = ("tests/test_browser.py", "tests/test_lm_cli.py", "notebooks/05_", "notebooks/04_", "notebooks/02_",
                 "tests/test_lm_distributed.py", "tests/test_site.py", "notebooks/03_", "tests/test_lm_verifiable_cli.py")

_durations: dict[str, float] = defaultdict(float)
_browser: list[tuple[str, list[float]]] = []


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        path = item.nodeid.split("::")[0]
        return next((i for i, prefix in enumerate(LONGEST_FIRST) if path.startswith(prefix)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: a notebook's cells and a module's tests keep their order


def pytest_runtest_logreport(report):
    """Runs in the controller for every worker's reports too, so the tables cover the whole run."""
    if report.when in ("setup", "call"):
        _durations[report.nodeid.split("::")[0]] += report.duration
    if report.when == "call":
        for key, value in report.user_properties:
            if key == BROWSER_TIMING:
                _browser.append((report.nodeid.split("[")[-1].rstrip("]"), value))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    tr = terminalreporter
    if _durations:
        notebooks = {k: v for k, v in _durations.items() if k.endswith(".ipynb")}
        others = {k: v for k, v in _durations.items() if not k.endswith(".ipynb")}
        tr.section("time per notebook / test file (seconds of test time, summed over workers)")
        for path, secs in sorted(notebooks.items()):
            tr.write_line(f"{secs:8.1f} s  {path}")
        for path, secs in sorted(others.items(), key=lambda kv: -kv[1]):
            tr.write_line(f"{secs:8.1f} s  {path}")
        tr.write_line(f"{sum(_durations.values()):8.1f} s  total")
    if _browser:
        tr.section("browser test: seconds per notebook (wall clock)")
        tr.write_line(f"{'notebook':<45} {'open':>7} {'run all':>8} {'widget':>7} {'shots':>7} {'total':>7}")
        for name, secs in sorted(_browser):
            tr.write_line(f"{name:<45} " + " ".join(f"{t:{w}.1f}s" for t, w in zip(secs, (6, 7, 6, 6)))
                          + f" {sum(secs):6.1f}s")
