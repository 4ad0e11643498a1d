"""Every "Introduced in notebooks/<file>" tag in pgcore's docstrings is true: that notebook's code names it.

A module, class or function (methods too) carrying the tag must appear in the code cells of the cited
notebook: imported from pgcore (`from pgcore.lm import trainer`) or reached through an attribute chain
from a pgcore import (`pg.reinforce.train`, `ex.rloo.check`). A module counts by its name (`bandit` for
pgcore/bandit/__init__.py). Markdown cells do not count.
"""
from __future__ import annotations

import ast
import json
import re
from functools import cache
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
TAG = re.compile(r"Introduced\s+in\s+notebooks/([\w.-]+?\.ipynb)")

@cache
def notebook_names(name: str) -> frozenset[str]:
    """The pgcore names the code cells of notebooks/<name> use (empty when there is no such notebook)."""
    path = ROOT / "notebooks" / name
    if not path.exists():
        return frozenset()
    trees = []
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] == "code":
            lines = "".join(cell["source"]).splitlines()
            trees.append(ast.parse("\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in lines)))
    names, roots = set(), set()
    for node in (n for t in trees for n in ast.walk(t)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "pgcore":
                    names.update(alias.name.split("."))
                    roots.add(alias.asname or "pgcore")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "pgcore":
            names.update(node.module.split("."))
            for alias in node.names:
                names.add(alias.name)
                roots.add(alias.asname or alias.name)
    for node in (n for t in trees for n in ast.walk(t)):
        if isinstance(node, ast.Attribute):
            chain = []
            while isinstance(node, ast.Attribute):
                chain.append(node.attr)
                node = node.value
            if isinstance(node, ast.Name) and node.id in roots:
                names.update(chain)
    return frozenset(names)


def tags(path: Path) -> list[tuple[str, str, int]]:
    """(tagged name, notebook file, line) for every tag in the docstrings of `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = path.parent.name if path.name == "__init__.py" else path.stem
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            owner = module if isinstance(node, ast.Module) else node.name
            for m in TAG.finditer(ast.get_docstring(node, clean=False) or ""):
                out.append((owner, m.group(1), getattr(node, "lineno", 1)))
    return out


def false_tags() -> list[str]:
    bad = []
    for path in sorted((ROOT / "pgcore").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        found = tags(path)
        if len(found) != len(TAG.findall(path.read_text(encoding="utf-8"))):
            bad.append(f"{rel}: a tag outside a module, class or function docstring")
        bad += [f"{rel}:{line}: {name!r} is not named in the code of notebooks/{nb}"
                for name, nb, line in found if name not in notebook_names(nb)]
    return bad


def test_every_introduced_in_tag_names_something_its_notebook_uses():
    bad = false_tags()
    assert not bad, f"{len(bad)} false 'Introduced in' tags (retag to the notebook that uses the name, or drop):\n" \
                    + "\n".join(bad)
