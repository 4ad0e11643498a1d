"""The notebooks' sources as text: nothing a renderer would eat."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # every C0 control character but tab and newline, and DEL


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_control_characters_in_any_cell(path):
    """A "\\b" written into a string that should have been raw becomes a backspace: `\\beta` renders as "eta"."""
    nb = nbformat.read(path, as_version=4)
    bad = [(i, repr(m.group()), c.source[max(m.start() - 20, 0):m.end() + 20])
           for i, c in enumerate(nb.cells) for m in CONTROL.finditer(c.source)]
    assert not bad, f"control characters (cell, char, context): {bad}"


def test_the_check_catches_an_eaten_backslash():
    assert CONTROL.search("with a weight \beta of its own") and not CONTROL.search("a\tb\nc \\beta")
