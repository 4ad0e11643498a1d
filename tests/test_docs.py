"""The README stays a newcomer's page, the docs' links lead somewhere, and the stored benchmark tables in
docs/benchmarks.md are what the command shown above them prints."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_is_a_newcomers_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 170, f"README.md has {len(lines)} lines; the rest belongs in docs/"
    lm = [line for line in lines if line.startswith("python -m pgcore.lm")]
    assert lm and lm[0].startswith("python -m pgcore.lm --model tiny-arith --reward-model arithmetic"), lm
    assert len(lm) == 1, f"the README shows one LM command line, found {len(lm)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_a_file_and_heading(page):
    text = page.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: link to {target} leads nowhere"
        if anchor:
            headings = re.findall(r"^#+ (.*)$", file.read_text(), flags=re.M)
            assert anchor in {_slug(h) for h in headings}, f"{page.name}: {target}: no such heading"


def test_named_benchmark_scripts_and_results_exist():
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    for script in set(re.findall(r"benchmarks/(\w+\.py)", text)):
        assert (ROOT / "benchmarks" / script).is_file(), f"docs/benchmarks.md names a missing benchmarks/{script}"
    for result in set(re.findall(r"results/(\w+\.json)", text)) | set(re.findall(r"(lm_vs_trl_\w+\.json)", text)):
        assert (ROOT / "benchmarks" / "results" / result).is_file(), f"missing benchmarks/results/{result}"


def _squash(text: str) -> str:
    return " ".join(text.split())


def test_stored_trl_tables_are_what_load_prints():
    """The seed-0 table, the per-seed table and the pooled line of docs/benchmarks.md, against
    `lm_vs_trl.py --load` on benchmarks/results/."""
    results = ROOT / "benchmarks" / "results"
    files = ["lm_vs_trl_start.json"] + [f"lm_vs_trl_seed{s}.json" for s in range(6)]
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lm_vs_trl.py"), "--load", *files], cwd=results,
                         capture_output=True, text=True, check=True).stdout
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    section = text[text.index("### `pgcore.lm` vs TRL RLOO"):text.index("A few more numbers")]
    assert "python ../lm_vs_trl.py --load lm_vs_trl_start.json lm_vs_trl_seed{0..5}.json" in section
    blocks = [b for lang, b in re.findall(r"```(\w*)\n(.*?)```", section, flags=re.S) if not lang]
    assert len(blocks) == 2, "the seed-0 table and the pooled line"
    for block in blocks:
        assert _squash(block) in _squash(out), f"not printed by --load:\n{block}"

    tables = out.split("runner       steps")[1:]  # one per seed, in seed order
    rows = re.findall(r"^\| (\d) \| (.*) \|$", section, flags=re.M)
    assert [int(seed) for seed, _ in rows] == list(range(6))
    for seed, cells in rows:
        for number in re.findall(r"\d+\.\d+", cells):
            assert number in tables[int(seed)], f"seed {seed}: {number} is not in the table --load prints"


@pytest.mark.parametrize("script,stored,heading", [
    ("reinforce_cartpole.py", "reinforce_cartpole.json", "### REINFORCE on CartPole-v1"),
    ("reinforce_cartpole.py", "reinforce_cartpole_none.json", "### REINFORCE on CartPole-v1, baseline \"none\""),
    ("reinforce_cartpole.py", "reinforce_cartpole_before.json", "### REINFORCE on CartPole-v1, the old defaults"),
    ("reinforce_cartpole.py", "reinforce_cartpole_branch.json", "### REINFORCE on CartPole-v1, every check played"),
    ("lm.py", "lm_tiers.json", "### The LM tiers"),
    ("lm.py", "lm_tiers.json", "### GRPO on arithmetic"),
    ("nb05_runs.py", "nb05_runs.json", "### Notebook 05's design choices"),
    ("nb06_reuse.py", "nb06_reuse.json nb06_reuse_cispo.json nb06_reuse_confirm.json",
     "### Notebook 06: reusing a batch"),
    ("tiny_vs_trl.py", "tiny_vs_trl_arith_run2.json", "### The tiny tiers against TRL"),
    ("tiny_vs_trl.py", "tiny_vs_trl_tiny_run3.json tiny_vs_trl_tiny_run4.json", "### Notebook 04's tier against TRL RLOO"),
    ("lm.py", "lm_arith.json lm_arith_naive.json", "### The README's run before and after"),
])
def test_stored_tables_are_what_load_prints(script, stored, heading):
    """Each code block of the section is printed, line for line, by `<script> --load <stored>` (one file or
    several, space-separated)."""
    files = [str(ROOT / "benchmarks" / "results" / f) for f in stored.split()]
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--load", *files],
                         capture_output=True, text=True, check=True).stdout
    stored = " benchmarks/results/".join(stored.split())
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    start = text.index(heading)
    end = text.find("\n### ", start + 1)
    section = text[start:end if end > 0 else len(text)]
    assert f"--load benchmarks/results/{stored}" in section or "The same `--load`" in section
    blocks = [b for lang, b in re.findall(r"```(\w*)\n(.*?)```", section, flags=re.S) if not lang]
    assert blocks, f"{heading}: no table"
    for block in blocks:
        assert block.strip() in out, f"not printed by {script} --load {stored}:\n{block}"


def _parser_flags() -> set[str]:
    from pgcore.engine.cli import build_parser

    return {o for a in build_parser()._actions for o in a.option_strings}


def test_the_trl_table_names_only_flags_the_cli_has():
    """docs/trl.md: each row is a TRL option, a pgcore.lm flag (or none), a status; every flag exists."""
    text = (ROOT / "docs" / "trl.md").read_text()
    rows = [r for r in re.findall(r"^\|(.*)\|$", text, flags=re.M) if not set(r) <= set("-| ")][1:]
    assert len(rows) >= 30, "the table"
    flags = _parser_flags()
    named = set()
    for row in rows:
        trl, ours, status, _ = [c.strip() for c in row.split("|")]
        assert trl and status in {"same", "renamed", "different", "missing"}, row
        assert (status != "missing" or ours == "") and (ours or status in ("missing", "different")), row
        named |= set(re.findall(r"`(--[a-z-]+)", ours))
        for flag in re.findall(r"`(--[a-z-]+)", ours):
            assert flag in flags, f"docs/trl.md names {flag}, which pgcore.lm does not have"
    assert {"--reward-fn", "--reward-weights", "--reward-aggregation", "--report-to", "--prompts"} <= named


def test_every_flag_is_in_the_lm_page():
    """docs/lm.md names every flag of the CLI (its Flags table and the sections above it)."""
    text = (ROOT / "docs" / "lm.md").read_text()
    missing = sorted(f for f in _parser_flags() if f.startswith("--") and f != "--help" and f"`{f}" not in text)
    assert not missing, f"docs/lm.md does not name {missing}"
