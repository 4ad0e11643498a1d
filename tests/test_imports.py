"""The shape of pgcore's imports, read from the source (AST, no import): no cycles, the teaching core never
imports the engine, no module over 400 lines.

Every `import` and `from ... import` counts, also those inside functions (lazy imports); the string-named
submodules of `pgcore._lazy` do not.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pgcore"
MAX_LINES = 400

# Known cycles, each exempt only while it is exactly this set of modules (none).
KNOWN_CYCLES: list[frozenset[str]] = []

# Modules allowed over MAX_LINES, until they are split (none).
LONG_MODULES: set[str] = set()

# Outside pgcore/engine/, only these may import the engine: the command line's entry point, and the LM
# panel, which runs whole training runs through the engine so that it shows the CLI's numbers.
ENGINE_IMPORTERS = {"pgcore/lm/__main__.py", "pgcore/widgets/lm.py"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports(path: Path) -> list[str]:
    """The pgcore modules `path` imports, fully qualified: `from .x import y` gives pgcore...x.y when y is a
    module, else pgcore...x (`from pgcore import engine` gives pgcore.engine even where it does not exist)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.split(".")[0] == "pgcore"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "pgcore":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.append(sub if is_module(sub) or sub == "pgcore.engine" else target)
    return out


def graph() -> dict[str, set[str]]:
    return {module_name(p): set(imports(p)) - {module_name(p)} for p in sorted(PACKAGE.rglob("*.py"))}


def cycles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue  # a module that does not exist here (e.g. pgcore.engine on a branch without it)
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(frozenset(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_among_pgcore_modules():
    found = cycles(graph())
    unexpected = [sorted(c) for c in found if c not in KNOWN_CYCLES]
    assert not unexpected, f"import cycles: {unexpected}"


def test_the_teaching_core_never_imports_the_engine():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("pgcore/engine/") or rel in ENGINE_IMPORTERS:
            continue
        bad += [f"{rel} imports {m}" for m in imports(path) if m == "pgcore.engine" or m.startswith("pgcore.engine.")]
    assert not bad, "outside pgcore/engine/ only the CLI and the LM panels may import the engine:\n" + "\n".join(bad)


def test_no_private_name_crosses_a_package():
    """`from pgcore.a import _x` only within package a: a private name is its package's own business."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                home = target if is_module(target) and (ROOT.joinpath(*target.split(".")) / "__init__.py").exists() \
                    else target.rpartition(".")[0]
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private and home != package and not target.startswith("pgcore._") and home != "pgcore":
                    bad.append(f"{path.relative_to(ROOT)} imports {private} from {target}")
    assert not bad, "\n".join(bad)


def test_no_module_is_over_400_lines():
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in PACKAGE.rglob("*.py")}
    long = {rel: n for rel, n in sorted(sizes.items()) if n > MAX_LINES}
    print("modules over", MAX_LINES, "lines:", long)
    offenders = {rel: n for rel, n in long.items() if rel not in LONG_MODULES}
    assert not offenders, f"over {MAX_LINES} lines (split them): {offenders}"


def test_the_import_scan_resolves_imports_and_finds_cycles():
    update = imports(PACKAGE / "actor_critic" / "update.py")
    assert {"pgcore._checks", "pgcore.estimators", "pgcore.returns", "pgcore.actor_critic.config"} <= set(update)
    assert "pgcore.envs" in imports(PACKAGE / "reinforce" / "loop.py")  # from .. import envs as _envs
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}}) == [frozenset("abc")]
