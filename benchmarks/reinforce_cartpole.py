"""Benchmark: default REINFORCE (`pgcore.reinforce.train("CartPole-v1")`) over 5 seeds.

For each seed: env steps used, wall and CPU seconds of training, the score (mean return over 20
fresh Gymnasium CartPole-v1 episodes, sampled actions), and whether it counts as solved
(score >= 475 within 100k env steps and 60 s). Then the training throughput (env steps/s) and,
for reference, the raw speed of Gymnasium's numpy CartPoleVectorEnv under random actions.

Run when the machine is quiet:  python benchmarks/reinforce_cartpole.py [--seeds 5]
Prints a table; asserts nothing (speed is never a test).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

import pgcore as pg
from pgcore.reinforce import ReinforceConfig, evaluate, train

SCORE, MAX_STEPS, MAX_SECONDS = 475.0, 100_000, 60.0


def raw_vector_env_speed(num_envs: int = 256, steps: int = 2000) -> float:
    """Env steps/s of CartPoleVectorEnv with random actions (no policy): the env's own cost."""
    envs = pg.envs.make_env("CartPole-v1", num_envs=num_envs, seed=0)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 2, size=(steps, num_envs))
    start = time.perf_counter()
    for t in range(steps):
        envs.step(actions[t])
    seconds = time.perf_counter() - start
    envs.close()
    return num_envs * steps / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0, 1, ...)")
    parser.add_argument("--save", default=None, help="also write the measured rows to this JSON file")
    parser.add_argument("--load", default=None, help="print the table of a --save file (and run nothing)")
    args = parser.parse_args()
    if args.load:
        print_table(json.loads(Path(args.load).read_text()))
        return

    cfg = ReinforceConfig()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    result = {"config": f"lr={cfg.lr}, gamma={cfg.gamma}, num_envs={cfg.num_envs}, hidden={cfg.hidden_sizes}, "
                        f"weighting={cfg.weighting}, baseline={cfg.baseline}, normalize_adv={cfg.normalize_adv}",
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                         f"device {pg.get_device()}, load average {load:.2f} at start, measured {time.strftime('%Y-%m-%d')}",
              "rows": []}
    for seed in range(args.seeds):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        run = train("CartPole-v1", seed=seed, progress=False)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        score = float(evaluate(run.policy, "CartPole-v1", episodes=20, seed=10_000 + seed).mean())
        result["rows"].append({"seed": seed, "env_steps": run.env_steps, "updates": len(run.history), "seconds": wall,
                               "cpu_seconds": cpu, "score": score})
    result["raw_vector_env_steps_per_s"] = raw_vector_env_speed()
    if args.save:
        Path(args.save).write_text(json.dumps(result, indent=1) + "\n")
    print_table(result)


def print_table(result: dict) -> None:
    """The table of one measurement (just measured, or read back from a --save file)."""
    print(f"REINFORCE on CartPole-v1, default ReinforceConfig: {result['config']}")
    print(f"machine: {result['machine']}\n")
    header = f"{'seed':>4} {'env steps':>10} {'updates':>8} {'seconds':>8} {'cpu s':>7} {'steps/s':>8} {'score (20 ep)':>14} {'solved':>7}"
    print(header)
    print("-" * len(header))
    solved = []
    for r in result["rows"]:
        ok = r["score"] >= SCORE and r["env_steps"] <= MAX_STEPS and r["seconds"] <= MAX_SECONDS
        solved.append(ok)
        print(f"{r['seed']:>4} {r['env_steps']:>10,} {r['updates']:>8} {r['seconds']:>8.1f} {r['cpu_seconds']:>7.1f} "
              f"{r['env_steps'] / r['seconds']:>8,.0f} {r['score']:>14.1f} {'yes' if ok else 'NO':>7}")
    steps, walls, cpus = (np.array([r[k] for r in result["rows"]]) for k in ("env_steps", "seconds", "cpu_seconds"))
    print("-" * len(header))
    print(f"solved {sum(solved)}/{len(solved)} seeds (score >= {SCORE:.0f} over 20 fresh episodes, "
          f"<= {MAX_STEPS:,} env steps, <= {MAX_SECONDS:.0f} s)")
    print(f"env steps: median {np.median(steps):,.0f}, max {steps.max():,}; seconds: median {np.median(walls):.1f}, "
          f"max {walls.max():.1f} (CPU {np.median(cpus):.1f} median)")
    print(f"training throughput: {steps.sum() / walls.sum():,.0f} env steps/s (collection + updates + confirmations)")
    print(f"raw CartPoleVectorEnv (256 copies, random actions, no policy): "
          f"{result['raw_vector_env_steps_per_s']:,.0f} env steps/s")


if __name__ == "__main__":
    main()
