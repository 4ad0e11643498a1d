"""ipywidgets panels, one submodule per notebook.

Each panel is a thin wrapper over a plain function that returns numbers (and optionally draws);
tests call the plain function directly, the browser test moves the widget. ipywidgets is
imported only when a panel is built.

Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
"""
from __future__ import annotations

from .._lazy import lazy_submodules

__getattr__, __dir__ = lazy_submodules(__name__, ("bandit", "reinforce", "variance", "lm", "grpo", "reuse"))
