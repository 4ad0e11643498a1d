"""The install surfaces agree with each other, and `import pgcore` stays light."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    wanted |= {_name(r) for r in project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_list = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    have = {_name(r) for r in pip_list if not r.startswith("-")}
    assert have == wanted, f"only in environment.yml: {sorted(have - wanted)}; only in pyproject: {sorted(wanted - have)}"
    assert "-e ." in pip_list, "environment.yml must install the course package itself"


def test_import_pgcore_does_not_import_transformers():
    code = "import sys, pgcore; pgcore.pg_loss; pgcore.utils; print('transformers' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"], f"import pgcore pulled heavy modules: transformers={out[0]}, matplotlib={out[1]}"


TEST_COMMAND = "pytest --nbval -n auto"  # every notebook and test, spread over the cores by pytest-xdist


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```(\w*)\n(.*?)```", readme, flags=re.S)  # every fenced block, with its language
    commands = [line.strip() for lang, b in blocks if lang in ("", "bash", "sh") for line in b.splitlines()]
    tests = [c for c in commands if c.startswith("pytest")]
    assert tests == [TEST_COMMAND], f"README must show the one test command {TEST_COMMAND!r}, found {tests}"
    assert f"\n{TEST_COMMAND}\n" in ci, ".ci/run must run exactly the README's test command"
    assert "torch==2.13.0" in ci.split("-e \".[dev]\"")[0], ".ci/run must pin the CPU torch before the project install"


def test_constraints_pin_every_dependency():
    """.ci/constraints.txt holds the versions the stored notebook outputs were made with: every dependency
    (torch is pinned by the install command itself) has an exact pin, so a new release cannot move a digit."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]} - {"torch"}
    pins = {}
    for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[_name(name)] = version
    assert wanted <= set(pins), f"not pinned in .ci/constraints.txt: {sorted(wanted - set(pins))}"
    assert "torch" not in pins, "torch is pinned by the install command (CPU or CUDA build), not here"
