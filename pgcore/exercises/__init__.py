"""Exercises that check themselves: one module per notebook, each exercise with `check`, `hint`, `solution`.

In a notebook:

    from pgcore.exercises import nb02 as ex
    def reward_to_go(rew, done, gamma):
        ...                                   # your code
    ex.reward_to_go.check(reward_to_go)       # not answered yet / correct / names the mistake
    ex.reward_to_go.hint()
    ex.reward_to_go.solution()

Teachers: `python -m pgcore.exercises` runs every reference solution and every recognized wrong
answer through its check and prints a table (exit status 1 if any check misbehaves).

The notebook modules load on first use (`pgcore.exercises.nb01`, ...): `import pgcore` stays light.
Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
"""
from __future__ import annotations

import importlib

from .._lazy import lazy_submodules
from .core import Exercise, Result, WrongAnswer

MODULES = ("nb01", "nb02", "nb03", "nb04", "nb05", "nb06")

__all__ = ["Exercise", "Result", "WrongAnswer", "MODULES", "all_exercises", *MODULES]


def all_exercises() -> list[tuple[str, Exercise]]:
    """Every exercise of every notebook module, as (module name, exercise), in course order."""
    out = []
    for name in MODULES:
        module = importlib.import_module(f".{name}", __name__)
        out.extend((name, ex) for ex in module.EXERCISES)
    return out


__getattr__, __dir__ = lazy_submodules(__name__, MODULES)
