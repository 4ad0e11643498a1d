"""Submodules that load on first use: one loader for every package of pgcore that needs it.

    __getattr__, __dir__ = lazy_submodules(__name__, ("lm", "widgets"))

in a package's `__init__.py` makes `package.lm` import `package/lm` when first used (PEP 562), so
`import pgcore` never pays for transformers, matplotlib or ipywidgets.
"""
from __future__ import annotations

import importlib
import sys
from typing import Callable, Iterable


def lazy_submodules(package: str, submodules: Iterable[str], names: dict[str, str] | None = None
                    ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """`(__getattr__, __dir__)` for `package`: each of `submodules` is imported on first use, and each key
    of `names` ({attribute: submodule}) is taken from its submodule. A listed submodule that does not
    exist is an AttributeError when used, not an error at import time."""
    submodules, names = tuple(submodules), dict(names or {})

    def __getattr__(name: str):
        if name not in submodules and name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module_name = f"{package}.{names.get(name, name)}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:  # the submodule exists, something it imports is missing
                raise
            raise AttributeError(f"module {package!r} has no attribute {name!r} ({module_name} not found)") from e
        value = getattr(module, name) if name in names else module
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(submodules) | set(names))

    return __getattr__, __dir__
