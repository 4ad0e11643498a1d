"""pgcore: the small shared package of the Policy Gradient course.

Every notebook starts with `import pgcore as pg`. Submodules load on first use
(`pg.bandit`, `pg.reinforce`, `pg.lm`, ...), so `import pgcore` stays fast and never imports
transformers; only `pgcore.lm` does.
"""
from __future__ import annotations

import importlib

from .pg import pg_loss
from .utils import get_device, set_seed

__version__ = "0.1.0"

_SUBMODULES = (
    "utils", "pg", "advantages", "bandit", "envs", "returns", "policies", "reinforce", "variance",
    "files", "engine", "plotting", "widgets", "lm", "actor_critic", "exercises",
)

__all__ = ["pg_loss", "set_seed", "get_device", "__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'pgcore' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))
