"""Root pytest configuration: offline by default, and a per-notebook time table at the end."""
from __future__ import annotations

import os
import time
from collections import defaultdict

# Nothing in the tests or the notebooks (kernels inherit this environment) may reach the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_durations: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    if report.when == "call" or report.when == "setup":
        path = report.nodeid.split("::")[0]
        _durations[path] += report.duration


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _durations:
        return
    notebooks = {k: v for k, v in _durations.items() if k.endswith(".ipynb")}
    others = {k: v for k, v in _durations.items() if not k.endswith(".ipynb")}
    tr = terminalreporter
    tr.section("time per notebook / test file")
    for path, secs in sorted(notebooks.items()):
        tr.write_line(f"{secs:8.1f} s  {path}")
    for path, secs in sorted(others.items(), key=lambda kv: -kv[1]):
        tr.write_line(f"{secs:8.1f} s  {path}")
    tr.write_line(f"{sum(_durations.values()):8.1f} s  total")
