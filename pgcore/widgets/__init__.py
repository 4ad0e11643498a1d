"""ipywidgets panels, one submodule per notebook.

Each panel is a thin wrapper over a plain function that returns numbers (and optionally draws);
tests call the plain function directly, the browser test moves the widget. ipywidgets is
imported only when a panel is built.

Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
"""
from __future__ import annotations

import importlib

_SUBMODULES = ("bandit", "reinforce", "variance", "lm", "grpo")


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'pgcore.widgets' has no attribute {name!r}")
