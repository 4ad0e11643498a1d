"""benchmarks/nb06_reuse.py: its stored results (notebook 06, section 3) against what `--load` prints, recomputed
here from the raw per-problem counts and per-step times; the merge of several files; and one tiny real run of
the script, so the stored files can be made again."""
from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "nb06_reuse.py"
STORED = sorted((ROOT / "benchmarks" / "results").glob("nb06_reuse*.json"))
PM = r"([+-]?\d+\.\d{3}) ± (\d+\.\d{3}|nan)"


def _module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("nb06_reuse", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def nb06():
    return _module()


@pytest.fixture(scope="module")
def files():
    return [json.loads(p.read_text()) for p in STORED]


@pytest.fixture(scope="module")
def merged(nb06, files):
    return nb06.merge(files)


@pytest.fixture(scope="module")
def printed():
    return subprocess.run([sys.executable, str(SCRIPT), "--load", *map(str, STORED)], capture_output=True, text=True,
                          check=True).stdout


def test_stored_results_are_complete(nb06, files, merged):
    from pgcore.lm import arith

    assert len(STORED) >= 2 and all(f["format"] == "nb06_reuse/1" and f["complete"] for f in files)
    base = merged["config"]["base"]
    assert (base["steps"], base["batch_size"], base["num_samples"], base["lr"], base["advantage"]) == (150, 64, 8, 5e-4, "group")
    assert base["max_new_tokens"] == arith.MAX_NEW_TOKENS and base["kl_coef"] == 0.0
    assert len(merged["seeds"]) >= 6, "tuned on 3 seeds, confirmed on 3 others"
    for seed, entry in merged["seeds"].items():
        assert set(entry["arms"]) == set(nb06.ARMS), f"seed {seed}: {sorted(entry['arms'])}"
        assert len(entry["start"]) == 200 and all(0 <= c <= 64 for c in entry["start"])
        for arm, run in entry["arms"].items():
            end = 150 if arm == nb06.BASELINE else 75
            assert run["steps"] == end and set(run["correct"]) == {str(s) for s in (*nb06.CHECKPOINTS, end)}
            assert len(run["metrics"]["time"]) == end


def test_merge_takes_a_seeds_arms_from_several_files_but_not_one_arm_twice(nb06, files):
    with pytest.raises(ValueError, match="two files"):
        nb06.merge([files[0], files[0]])
    with pytest.raises(ValueError, match="format"):
        nb06.merge([{**files[0], "format": "nb05_runs/1"}])


def test_load_prints_the_target_table(nb06, merged, printed):
    """Table 2, recomputed: each arm's pass@1 at its last step minus the baseline's final, paired by seed, with the
    between-seed s.e.; the seconds ratio from the median step time of each seed, smallest over seeds."""
    text = printed.split("\n2. ")[1].split("\n3. ")[0]
    seeds = sorted(merged["seeds"], key=int)
    n = merged["config"]["eval_n"]
    secs = {arm: min(np.median(merged["seeds"][s]["arms"][arm]["metrics"]["time"][1:]) for s in seeds)
            for arm in nb06.ARMS}
    for arm in nb06.ARMS:
        at = 150 if arm == nb06.BASELINE else 75
        d = np.array([(np.mean(merged["seeds"][s]["arms"][arm]["correct"][str(at)]) -
                       np.mean(merged["seeds"][s]["arms"][nb06.BASELINE]["correct"]["150"])) / n for s in seeds])
        line = next(l for l in text.splitlines() if l.split() and l.split()[0] == arm)
        m, se = map(float, re.search(PM, line).groups())
        assert abs(m - d.mean()) <= 5e-4 and abs(se - d.std(ddof=1) / math.sqrt(len(d))) <= 5e-4
        assert f"{sum(d >= 0)} of {len(d)}" in line
        ratio = float(line.split()[-3])
        assert abs(ratio - at * secs[arm] / (150 * secs[nb06.BASELINE])) <= 5e-3


def test_the_script_runs_and_its_file_loads(tmp_path):
    """A real, tiny run: two arms, 4 and 2 steps, 8 held-out problems x 2 samples, then --load of what it saved."""
    out = tmp_path / "check.json"
    subprocess.run([sys.executable, str(SCRIPT), "--seeds", "0", "--arms", "pg-mu1", "ppo-mu2", "--steps", "4",
                    "--reuse-steps", "2", "--eval-problems", "8", "--eval-n", "2", "--save", str(out)],
                   capture_output=True, text=True, check=True, timeout=600)
    saved = json.loads(out.read_text())
    runs = saved["seeds"]["0"]["arms"]
    assert saved["complete"] and runs["pg-mu1"]["steps"] == 4 and runs["ppo-mu2"]["steps"] == 2
    assert set(runs["ppo-mu2"]["correct"]) == {"2"} and len(runs["ppo-mu2"]["correct"]["2"]) == 8
    assert all(k >= 0 for k in runs["ppo-mu2"]["metrics"]["kl_old"])  # KL(pi_old || pi) by k3: never negative
    table = subprocess.run([sys.executable, str(SCRIPT), "--load", str(out)], capture_output=True, text=True,
                           check=True).stdout
    assert "ppo-mu2" in table.split("\n2. ")[1]
