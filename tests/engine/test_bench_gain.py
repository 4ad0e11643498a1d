"""The arithmetic behind benchmarks/lm_vs_trl.py's gain columns (the README's TRL table rests on it): the reward
slope, the gain over the starting model, and the pooled ratios. Pure Python on made-up runs whose answers are
known; TRL is not imported (it stays out of the tests' path)."""
from __future__ import annotations

import importlib.util
import json
import random
import re
from argparse import Namespace
from pathlib import Path

import pytest

from pgcore.lm.algorithm import step_prompt_indices

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "lm_vs_trl.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("lm_vs_trl", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ARGS = Namespace(seed=0, batch_size=8, model="smollm2-135m", num_samples=4, max_new_tokens=24, lr=3e-5, kl_coef=0.05,
                 threads=2)
STEPS = 40


def start_result(rng: random.Random, n_prompts: int = 40) -> dict:
    return {"runner": "start", "model": ARGS.model, "prompt_rewards": [rng.uniform(-0.3, 0.6) for _ in range(n_prompts)],
            "samples": 32, "seconds": 1.0}


def run(runner: str, seed: int, rewards: list[float], seconds: float) -> dict:
    return {"runner": runner, "steps": len(rewards), "seconds": seconds, "rewards": rewards, "seed": seed,
            "prompts": "pgcore", "split": {}, "tokens": 1, "peak_mb": 1.0}


def test_reward_fit_recovers_a_line(bench):
    slope, se, resid, _ = bench.reward_fit([0.2 + 0.01 * i for i in range(STEPS)])
    assert slope == pytest.approx(0.01) and se == pytest.approx(0.0, abs=1e-12)
    assert max(abs(e) for e in resid) < 1e-12


def test_start_baseline_is_the_starting_models_reward_on_each_steps_prompts(bench):
    start = start_result(random.Random(1))
    base = bench.start_baseline(start, ARGS, seed=3, steps=STEPS)
    r = start["prompt_rewards"]
    for step in (1, 17, STEPS):  # by hand: the mean over the prompts the trainer draws at that step
        idx = step_prompt_indices(3, step, len(r), ARGS.batch_size)
        assert base[step - 1] == pytest.approx(sum(r[i] for i in idx) / len(idx))


def test_gain_over_start_removes_the_prompts_difficulty(bench):
    """A run whose reward is the starting model's on each step's prompts plus a ramp: its gain over start is the
    ramp's last-5 mean, whatever the prompts' difficulty; first 5 -> last 5 would mix in the prompts."""
    start = start_result(random.Random(2))
    base = bench.start_baseline(start, ARGS, seed=0, steps=STEPS)
    ramp = [min(0.5, 0.025 * i) for i in range(STEPS)]  # levels off at step 20
    gain, se, excess = bench.over_start(run("pgcore", 0, [b + g for b, g in zip(base, ramp)], 10.0), start, ARGS)
    assert gain == pytest.approx(0.5) and se == pytest.approx(0.0, abs=1e-12)
    assert excess == pytest.approx(ramp)
    assert all(x != x for x in bench.over_start(run("pgcore", 0, ramp, 10.0), None, ARGS)[:2])  # NaN: no start


def test_pooled_gain_per_second_is_speed_times_gain_ratio(bench):
    """Two seeds, pgcore three times as fast with 0.9 and 1.1 of TRL's gain: gain/s over start = 3 x 1.0."""
    start = start_result(random.Random(3))
    results = [start]
    for seed, ratio in ((0, 0.9), (1, 1.1)):
        base = bench.start_baseline(start, ARGS, seed=seed, steps=STEPS)
        ramp = [min(0.4, 0.02 * i) for i in range(STEPS)]
        results.append(run("trl-rloo", seed, [b + g for b, g in zip(base, ramp)], 30.0 * STEPS))
        results.append(run("pgcore", seed, [b + ratio * g for b, g in zip(base, ramp)], 10.0 * STEPS))
    line = bench.pooled(results, ARGS)
    assert "3.00x steps/s" in line
    assert re.search(r"ratio 1\.00 \(s\.e\. 0\.10 between seeds: 0\.90, 1\.10\); gain/s over start 3\.00x \(s\.e\. 0\.30\)",
                     line), line
    assert "2.70x gain/s over start" in bench.table([start, *results[1:3]], ARGS)  # seed 0 alone: 3 x 0.9


def test_load_refuses_a_start_result_of_another_model(bench, tmp_path, capsys):
    path = tmp_path / "start.json"
    path.write_text(json.dumps([start_result(random.Random(4))]))
    assert bench.main(["--load", str(path), "--model", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'smollm2-135m'" in err[0] and "accepted" in err[0]
