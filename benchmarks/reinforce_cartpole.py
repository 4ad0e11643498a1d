"""Benchmark: default REINFORCE (`pgcore.reinforce.train("CartPole-v1")`) on groups of seeds.

For each seed: the env steps of training, its updates, the env steps of the solved checks
(confirmation episodes, not training data), the CPU seconds of training (time.process_time) and
its wall seconds, the score (mean return over 20 fresh Gymnasium CartPole-v1 episodes, sampled
actions, `pgcore.reinforce.evaluate` with seed 10_000 + seed), and whether it is solved: train
confirmed it before its budget ran out (`result.solved`) and the score is >= 475. Then per group
the solved count, the median and maximum env steps and CPU seconds; and, for reference, the raw
speed of Gymnasium's numpy CartPoleVectorEnv under random actions.

Run when the machine is quiet (CPU seconds grow when other processes share the cores):
  python benchmarks/reinforce_cartpole.py --seeds 100-129 --seeds 0-9,1000-1009 --save FILE
  python benchmarks/reinforce_cartpole.py --load FILE          (prints the table again, runs nothing)
  python benchmarks/reinforce_cartpole.py --set lr=0.02 ...    (ReinforceConfig fields other than the defaults)
Prints a table; asserts nothing (speed is never a test).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

import pgcore as pg
from pgcore.files import atomic_write_text
from pgcore.reinforce import ReinforceConfig, evaluate, train

SCORE = 475.0


def parse_seeds(text: str) -> list[int]:
    """ "0-9,1000-1002" -> [0, ..., 9, 1000, 1001, 1002]."""
    seeds = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds += list(range(int(lo), int(hi or lo) + 1))
    return seeds


def raw_vector_env_speed(num_envs: int = 256, steps: int = 2000) -> float:
    """Env steps per CPU second of CartPoleVectorEnv with random actions (no policy): the env's own cost."""
    envs = pg.envs.make_env("CartPole-v1", num_envs=num_envs, seed=0)
    actions = np.random.default_rng(0).integers(0, 2, size=(steps, num_envs))
    start = time.process_time()
    for t in range(steps):
        envs.step(actions[t])
    seconds = time.process_time() - start
    envs.close()
    return num_envs * steps / seconds


def run_seed(seed: int, cfg: ReinforceConfig) -> dict:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    run = train("CartPole-v1", seed=seed, config=cfg, progress=False)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    score = float(evaluate(run.policy, "CartPole-v1", episodes=20, seed=10_000 + seed).mean())
    return {"seed": seed, "env_steps": int(run.env_steps), "updates": len(run.history),
            "confirm_env_steps": int(run.confirm_env_steps), "confirmations": sum(h["eval_return"] == h["eval_return"]
                                                                            for h in run.history),
            "train_solved": bool(run.solved), "cpu_seconds": cpu, "seconds": wall, "score": score}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", action="append", default=None,
                        help="a group of seeds, e.g. 0-9,1000-1009 (repeat for several groups; default 0-9)")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="ReinforceConfig fields to change")
    parser.add_argument("--save", default=None, help="also write the measured rows to this JSON file")
    parser.add_argument("--load", default=None, help="print the table of a --save file (and run nothing)")
    args = parser.parse_args()
    if args.load:
        print_table(json.loads(Path(args.load).read_text()))
        return

    torch.set_num_threads(1)
    changes = {k: ast.literal_eval(v) for k, v in (item.split("=", 1) for item in args.set)}
    cfg = ReinforceConfig(**changes)
    loads = [os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")]
    fields = ("lr", "gamma", "num_envs", "hidden_sizes", "weighting", "baseline", "normalize_adv", "max_env_steps",
              "stop_window", "confirm_episodes", "confirm_margin")
    result = {"config": ", ".join(f"{k}={getattr(cfg, k)}" for k in fields),
              "changed": ", ".join(args.set) or "none (the defaults)", "groups": []}
    for text in args.seeds or ["0-9"]:
        rows = [run_seed(seed, cfg) for seed in parse_seeds(text)]
        result["groups"].append({"seeds": text, "rows": rows})
        loads.append(os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"))
    result["raw_vector_env_steps_per_cpu_s"] = raw_vector_env_speed()
    result["machine"] = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
                         f" (1 thread), load average {' -> '.join(f'{x:.1f}' for x in loads)}, "
                         f"measured {time.strftime('%Y-%m-%d')}")
    if args.save:
        atomic_write_text(args.save, json.dumps(result, indent=1) + "\n")
    print_table(result)


def print_table(result: dict) -> None:
    """The table of one measurement (just measured, or read back from a --save file)."""
    print(f"REINFORCE on CartPole-v1, ReinforceConfig changed: {result['changed']}")
    print(f"config: {result['config']}")
    print(f"machine: {result['machine']}")
    header = (f"{'seed':>5} {'env steps':>10} {'updates':>7} {'checks':>6} {'check steps':>11} {'cpu s':>6} "
              f"{'wall s':>6} {'score (20 ep)':>13} {'solved':>6}")
    for group in result["groups"]:
        rows = group["rows"]
        print(f"\nseeds {group['seeds']}:")
        print(header)
        print("-" * len(header))
        solved = []
        for r in rows:
            ok = r["train_solved"] and r["score"] >= SCORE
            solved.append(ok)
            print(f"{r['seed']:>5} {r['env_steps']:>10,} {r['updates']:>7} {r['confirmations']:>6} "
                  f"{r['confirm_env_steps']:>11,} {r['cpu_seconds']:>6.2f} {r['seconds']:>6.2f} {r['score']:>13.1f} "
                  f"{'yes' if ok else 'NO':>6}")
        steps, cpus = (np.array([r[k] for r in rows]) for k in ("env_steps", "cpu_seconds"))
        print("-" * len(header))
        print(f"solved {sum(solved)}/{len(solved)} (train confirmed it within its budget and the score >= {SCORE:.0f}); "
              f"env steps median {np.median(steps):,.0f}, max {steps.max():,}; "
              f"CPU s median {np.median(cpus):.2f}, max {cpus.max():.2f}")
    print(f"\nraw CartPoleVectorEnv (256 copies, random actions, no policy): "
          f"{result['raw_vector_env_steps_per_cpu_s']:,.0f} env steps per CPU second")


if __name__ == "__main__":
    main()
