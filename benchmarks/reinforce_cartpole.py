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
import os
import platform
import time

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
    args = parser.parse_args()

    cfg = ReinforceConfig()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"REINFORCE on CartPole-v1, default ReinforceConfig: lr={cfg.lr}, gamma={cfg.gamma}, "
          f"num_envs={cfg.num_envs}, hidden={cfg.hidden_sizes}, weighting={cfg.weighting}, "
          f"baseline={cfg.baseline}, normalize_adv={cfg.normalize_adv}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, device {pg.get_device()}, load average {load:.2f} at start\n")

    header = f"{'seed':>4} {'env steps':>10} {'updates':>8} {'seconds':>8} {'cpu s':>7} {'steps/s':>8} {'score (20 ep)':>14} {'solved':>7}"
    print(header)
    print("-" * len(header))
    rows = []
    for seed in range(args.seeds):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = train("CartPole-v1", seed=seed, progress=False)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        score = float(evaluate(result.policy, "CartPole-v1", episodes=20, seed=10_000 + seed).mean())
        solved = score >= SCORE and result.env_steps <= MAX_STEPS and wall <= MAX_SECONDS
        rows.append((result.env_steps, wall, cpu, score, solved))
        print(f"{seed:>4} {result.env_steps:>10,} {len(result.history):>8} {wall:>8.1f} {cpu:>7.1f} "
              f"{result.env_steps / wall:>8,.0f} {score:>14.1f} {'yes' if solved else 'NO':>7}", flush=True)

    steps, walls, cpus, scores, solved = map(np.array, zip(*rows))
    print("-" * len(header))
    print(f"solved {int(solved.sum())}/{len(rows)} seeds (score >= {SCORE:.0f} over 20 fresh episodes, "
          f"<= {MAX_STEPS:,} env steps, <= {MAX_SECONDS:.0f} s)")
    print(f"env steps: median {np.median(steps):,.0f}, max {steps.max():,}; seconds: median {np.median(walls):.1f}, "
          f"max {walls.max():.1f} (CPU {np.median(cpus):.1f} median)")
    print(f"training throughput: {steps.sum() / walls.sum():,.0f} env steps/s (collection + updates + confirmations)")
    print(f"raw CartPoleVectorEnv (256 copies, random actions, no policy): {raw_vector_env_speed():,.0f} env steps/s")


if __name__ == "__main__":
    main()
