"""benchmarks/nb05_runs.py: its error bars on hand examples, and its stored results (notebook 05's design choices at
the main run's budget) against what `--load` prints, recomputed here from the raw per-problem counts.
No training: the stored file is read, the printing is a subprocess."""
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
SCRIPT = ROOT / "benchmarks" / "nb05_runs.py"
STORED = ROOT / "benchmarks" / "results" / "nb05_runs.json"
ARMS = ("token", "sequence", "constant", "kl-reward", "kl-loss")
NUM = r"([+-]?\d+\.\d{3})"
PM = NUM + r" ± " + r"(\d+\.\d{3}|nan)"


def _module():
    spec = importlib.util.spec_from_file_location("nb05_runs", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def nb05():
    return _module()


@pytest.fixture(scope="module")
def stored():
    return json.loads(STORED.read_text())


@pytest.fixture(scope="module")
def printed():
    return subprocess.run([sys.executable, str(SCRIPT), "--load", str(STORED)], capture_output=True, text=True,
                          check=True).stdout


# ------------------------------------------------------------------ the error bars, by hand

def test_paired_se_by_hand(nb05):
    # per-problem differences (3-1, 1-1, 2-0)/4 = (1/2, 0, 1/2): mean 1/3, sd sqrt(1/12), s.e. sqrt(1/12)/sqrt(3) = 1/6
    mean, se = nb05.paired_diff([3, 1, 2], [1, 1, 0], 4)
    assert math.isclose(mean, 1 / 3) and math.isclose(se, 1 / 6)
    # pairing removes the problems' common difficulty: unpaired, the same counts give a far larger s.e.
    a, b = np.array([60, 2, 33]), np.array([58, 0, 31])
    assert nb05.paired_diff(a, b, 64) == (pytest.approx(2 / 64), 0.0)
    with pytest.raises(ValueError):
        nb05.paired_diff([1, 2], [1, 2, 3], 4)


def test_clustered_se_by_hand(nb05):
    # one problem always solved, one never: pass@1 1/2; rates (1, 0), sd sqrt(1/2), s.e. sqrt(1/2)/sqrt(2) = 1/2
    mean, se = nb05.pass1_clustered([4, 0], 4)
    assert mean == 0.5 and math.isclose(se, 0.5)
    # the binomial s.e. treats the 8 samples as independent: sqrt(1/4 / 8), much smaller
    assert math.isclose(nb05.pass1_binomial_se([4, 0], 4), math.sqrt(0.25 / 8))
    # every problem at the same rate: the clustered s.e. is 0 (no spread over problems)
    assert nb05.pass1_clustered([2, 2, 2], 4) == (0.5, 0.0)


def test_between_seed_se_and_last_steps_by_hand(nb05):
    mean, se = nb05.mean_se([0.1, 0.2, 0.3])
    assert math.isclose(mean, 0.2) and math.isclose(se, 0.1 / math.sqrt(3))
    assert math.isnan(nb05.mean_se([0.4])[1])
    assert nb05.last_mean([9.0, None, 1.0, 2.0, float("nan"), 3.0], last=4) == 2.0  # the last 4 steps, gaps skipped


def test_paired_pass_at_k_by_hand(nb05):
    # n = 4 samples; problem 1: c 1 -> 3, problem 2: c 2 -> 0. pass@2 = 1 - C(4-c, 2)/C(4, 2)
    before, after, d, se = nb05.paired_pass_at_k(4, [3, 0], [1, 2], [1, 2, 4])
    assert np.allclose(before, [(1 / 4 + 2 / 4) / 2, (1 / 2 + 5 / 6) / 2, 1.0])
    assert np.allclose(after, [(3 / 4 + 0) / 2, (1 + 0) / 2, 0.5])
    per_problem_d = np.array([[2 / 4, 1 / 2, 0.0], [-2 / 4, -5 / 6, -1.0]])
    assert np.allclose(d, per_problem_d.mean(axis=0))
    assert np.allclose(se, per_problem_d.std(axis=0, ddof=1) / math.sqrt(2))


def test_merge_refuses_a_seed_twice(nb05, stored):
    with pytest.raises(ValueError, match="two files"):
        nb05.merge([stored, stored])
    one = {**stored, "seeds": {s: e for s, e in stored["seeds"].items() if s == "0"}}
    rest = {**stored, "seeds": {s: e for s, e in stored["seeds"].items() if s != "0"}}
    # the tables of two files holding the seeds between them are the tables of one file holding all
    assert nb05.report(nb05.merge([one, rest])).split("\n1. ")[1] == nb05.report(nb05.merge([stored])).split("\n1. ")[1]


# ------------------------------------------------------------------ the stored results

def test_stored_results_are_complete(stored):
    from pgcore.lm import arith

    assert stored["format"] == "nb05_runs/1" and stored["complete"]
    base = stored["config"]["base"]
    assert (base["steps"], base["batch_size"], base["num_samples"], base["lr"], base["advantage"]) == (150, 64, 8, 5e-4, "group")
    assert base["max_new_tokens"] == arith.MAX_NEW_TOKENS and base["kl_coef"] == 0.0
    assert stored["config"]["eval_n"] == 64
    assert len(stored["seeds"]) >= 3
    for seed, entry in stored["seeds"].items():
        assert entry["heldout"] == [list(p) for p in arith.problems("heldout", 200, seed=int(seed))]
        assert set(entry["arms"]) == set(ARMS)
        for counts in [entry["start"]["correct"], *(a["correct"] for a in entry["arms"].values())]:
            assert len(counts) == 200 and all(isinstance(c, int) and 0 <= c <= 64 for c in counts)
        for arm in entry["arms"].values():
            for metric in ("reward_mean", "kl", "len_correct", "len_incorrect", "entropy"):
                assert len(arm["metrics"][metric]) == 150
    for key in ("pgcore_commit", "torch", "cpu_capability"):
        assert stored["machine"][key]


def _row_numbers(line: str) -> list[float]:
    return [float(m) for pair in re.findall(PM, line) for m in pair]


def _close(printed_value: float, value: float) -> bool:
    return abs(printed_value - value) <= 0.0005 + 1e-9  # printed with 3 decimals


def test_load_prints_the_rise_of_each_arm(stored, printed):
    section = printed.split("\n1. ")[1].split("\n2. ")[0]
    for seed, entry in stored["seeds"].items():
        c0 = np.array(entry["start"]["correct"]) / 64
        for arm in ARMS:
            c1 = np.array(entry["arms"][arm]["correct"]) / 64
            line = next(l for l in section.splitlines() if re.match(rf"\s*{re.escape(arm)}\s+{seed}\s", l))
            s0, s0se, s1, s1se, rise, rise_se = _row_numbers(line)[:6]
            assert _close(s0, c0.mean()) and _close(s0se, c0.std(ddof=1) / math.sqrt(200))
            assert _close(s1, c1.mean()) and _close(s1se, c1.std(ddof=1) / math.sqrt(200))
            assert _close(rise, (c1 - c0).mean()) and _close(rise_se, (c1 - c0).std(ddof=1) / math.sqrt(200))


@pytest.mark.parametrize("arm,section", [("sequence", 2), ("constant", 2), ("kl-reward", 3), ("kl-loss", 3)])
def test_load_prints_the_paired_differences(stored, printed, arm, section):
    text = printed.split(f"\n{section}. ")[1].split(f"\n{section + 1}. ")[0]
    line = next(l for l in text.splitlines() if l.strip().startswith(arm + " "))
    numbers = _row_numbers(line)
    seeds = sorted(stored["seeds"], key=int)
    per_seed, pooled = [], []
    for k, seed in enumerate(seeds):
        arms = stored["seeds"][seed]["arms"]
        d = (np.array(arms[arm]["correct"]) - np.array(arms["token"]["correct"])) / 64
        assert _close(numbers[2 * k], d.mean()) and _close(numbers[2 * k + 1], d.std(ddof=1) / math.sqrt(len(d)))
        per_seed.append(d.mean())
        pooled.append(d)
    between, all_d = np.array(per_seed), np.concatenate(pooled)
    m, se, m2, se2 = numbers[2 * len(seeds):]
    assert _close(m, between.mean()) and _close(se, between.std(ddof=1) / math.sqrt(len(seeds)))
    assert _close(m2, all_d.mean()) and _close(se2, all_d.std(ddof=1) / math.sqrt(len(all_d)))


def test_load_prints_the_kl_to_the_start(stored, printed):
    text = printed.split("\n3. ")[1].split("\n4. ")[0]
    seeds = sorted(stored["seeds"], key=int)
    for arm in ("token", "kl-reward", "kl-loss"):
        line = next(l for l in text.splitlines() if re.match(rf"\s*kl\s+{re.escape(arm)}:", l))
        values = [float(x) for x in line.split(":", 1)[1].split()[:len(seeds)]]
        for seed, value in zip(seeds, values):
            kl = [x for x in stored["seeds"][seed]["arms"][arm]["metrics"]["kl"][-10:] if x is not None]
            assert _close(value, float(np.mean(kl)))


def test_load_prints_pass_at_64_of_token(stored, printed):
    """pass@1 = c/n and pass@n = [c > 0]: Chen's estimator at its ends, by hand."""
    text = printed.split("\n4. ")[1]
    lines = [l for l in text.splitlines() if l.strip().startswith("pass@1 ")]
    assert len(lines) == len(stored["seeds"])
    for seed, line in zip(sorted(stored["seeds"], key=int), lines):
        entry = stored["seeds"][seed]
        c0, c1 = np.array(entry["start"]["correct"]), np.array(entry["arms"]["token"]["correct"])
        d1, se1, d64, se64 = _row_numbers(line)
        assert _close(d1, ((c1 - c0) / 64).mean()) and _close(se1, ((c1 - c0) / 64).std(ddof=1) / math.sqrt(200))
        dk = (c1 > 0).astype(float) - (c0 > 0)
        assert _close(d64, dk.mean()) and _close(se64, dk.std(ddof=1) / math.sqrt(200))
        assert f"solved only after: {np.sum((c0 == 0) & (c1 > 0))}, only before: {np.sum((c0 > 0) & (c1 == 0))}" in line
