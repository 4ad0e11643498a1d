"""Notebook 06, section 3: does reusing a batch pay? mu updates per sampled batch on tiny-arith, several seeds.

    python benchmarks/nb06_reuse.py --arms pg-mu1 ppo-mu2 ppo-mu4 ppo-high-mu4 cispo-mu4 gspo-mu4 ppo-mb4 \
        --save benchmarks/results/nb06_reuse.json                                    # 3 seeds, ~25 min
    python benchmarks/nb06_reuse.py --seeds 3 4 5 --save benchmarks/results/nb06_reuse_confirm.json   # other seeds
    python benchmarks/nb06_reuse.py --seeds 0 1 2 --arms cispo-tight-mu4 --save benchmarks/results/nb06_reuse_cispo.json
    python benchmarks/nb06_reuse.py --load benchmarks/results/nb06_reuse*.json         # the tables, from stored counts
    python benchmarks/nb06_reuse.py --seeds 0 --arms pg-mu1 ppo-mu4 --steps 20 --save /tmp/check.json   # quick

Every arm is notebook 05's main run (tiny-arith + the arithmetic verifier, 64 prompts x G = 8 completions, lr 5e-4,
group advantages, beta 0, the token mean) with the policy loss and the reuse of each batch changed:

    pg-mu1        the baseline: one update per batch, plain policy gradient (the ratio is 1)
    ppo-mu2       PPO's clipped surrogate (eps 0.2), mu = 2 passes over each batch
    ppo-mu4       the same, mu = 4
    ppo-high-mu4  clip-higher (DAPO): eps_low 0.2, eps_high 0.28, mu = 4
    cispo-mu4     CISPO: the ratio capped at 1 + 4 (TRL's cispo epsilon_high 5) and detached, mu = 4
    cispo-tight-mu4  CISPO with the cap at 1.28 (DAPO's eps_high), mu = 4 (added after cispo-mu4 fell on seeds 0-1)
    gspo-mu4      GSPO: PPO's clip on the length-normalized sequence ratio, eps 3e-4 / 4e-4 (the GSPO paper's), mu = 4
    ppo-mb4       mu = 1 pass in 4 minibatches (TRL's steps_per_generation 4): 4 updates per batch, 1 pass of compute

The baseline runs `--steps` steps; every other arm `--reuse-steps` (half as many by default: half the sampled
completions). For each seed s: held-out problems `arith.problems("heldout", 200, seed=s)`, and at the steps in
CHECKPOINTS (and each run's end) the number of correct answers of each problem among 64 samples
(`evaluate.sample_correct(policy, heldout, 64, seed=s + 1)`, as notebook 05). The per-step metrics (with each
step's seconds, evaluation excluded) are stored raw too, so every number `--load` prints is recomputed from them.
Error bars: benchmarks/nb05_runs.py's (paired by problem within a seed; between-seed over seeds).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

import nb05_runs as base  # noqa: E402  (notebook 05's base run, its error bars, its machine record)

FORMAT = "nb06_reuse/1"
BASELINE = "pg-mu1"
ARMS = {
    "pg-mu1": dict(policy_loss="pg"),
    "ppo-mu2": dict(policy_loss="ppo", clip_eps=0.2, updates_per_batch=2),
    "ppo-mu4": dict(policy_loss="ppo", clip_eps=0.2, updates_per_batch=4),
    "ppo-high-mu4": dict(policy_loss="ppo", clip_eps=0.2, clip_eps_high=0.28, updates_per_batch=4),
    "cispo-mu4": dict(policy_loss="cispo", clip_eps_high=4.0, updates_per_batch=4),
    "gspo-mu4": dict(policy_loss="ppo", ratio_level="sequence", clip_eps=3e-4, clip_eps_high=4e-4, updates_per_batch=4),
    "ppo-mb4": dict(policy_loss="ppo", clip_eps=0.2, minibatches=4),
    "cispo-tight-mu4": dict(policy_loss="cispo", clip_eps_high=0.28, updates_per_batch=4),
}
METRICS = ("reward_mean", "entropy", "time", "time_generate", "time_update", "heldout_pass1", "clip_low_frac",
           "clip_high_frac", "grad_token_frac", "ratio_max", "kl_old")
CHECKPOINTS = (25, 50, 75)  # steps at which every run's model is evaluated on the held-out problems (and its end)


def run_arm(policy, reward, arm: str, seed: int, heldout, steps: int, eval_n: int) -> dict:
    """One engine run of `arm` from a copy of `policy`; the per-problem correct counts at CHECKPOINTS and the end."""
    import copy

    import pandas as pd

    from pgcore import engine
    from pgcore.lm import evaluate

    evals = {}

    def evaluate_at(trainer, row):  # the model after this step's update(s); not counted in the step's seconds
        if row["step"] in CHECKPOINTS or row["step"] == steps:
            evals[str(row["step"])] = [int(c) for c in
                                       evaluate.sample_correct(trainer.policy, heldout, eval_n, seed=seed + 1).sum(axis=1)]

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"nb06_{arm}_{seed}_") as tmp:
        cfg = engine.LMConfig(**{**base.base_config(steps), "eval_every": 15, **ARMS[arm]}, seed=seed,
                              output_dir=f"{tmp}/metrics")
        result = engine.train(cfg, policy=copy.deepcopy(policy), reward=reward, callbacks=[evaluate_at])
        frame = pd.read_csv(Path(tmp) / "metrics" / "training_metrics.csv")
    metrics = {m: [None if pd.isna(v) else float(v) for v in frame[m]] for m in METRICS if m in frame}
    return {"steps": steps, "correct": evals, "metrics": metrics, "train_seconds": float(result.summary["train_seconds"]),
            "seconds": time.perf_counter() - t0}


def measure(args) -> dict:
    import torch

    from pgcore.files import atomic_write_text
    from pgcore.lm import arith, evaluate, models, rewards

    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    policy = models.load_policy("tiny-arith")
    reward = rewards.load_reward("arithmetic")
    steps = {a: args.steps if a == BASELINE else args.reuse_steps for a in args.arms}
    result = {"format": FORMAT,
              "config": {"base": {**base.base_config(args.steps), "eval_every": 15}, "arms": {a: ARMS[a] for a in args.arms},
                         "steps": steps, "eval_problems": args.eval_problems, "eval_n": args.eval_n,
                         "heldout": "arith.problems('heldout', eval_problems, seed=seed)",
                         "sampling": "evaluate.sample_correct(policy, heldout, eval_n, seed=seed + 1)"},
              "machine": {"pgcore_commit": base.git_commit(), "torch": torch.__version__,
                          "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                          "measured": time.strftime("%Y-%m-%d")},
              "seeds": {}, "seconds": 0.0, "complete": False}

    def save():
        result["seconds"] = time.perf_counter() - t_all
        if args.save:
            atomic_write_text(args.save, json.dumps(result, indent=1) + "\n")

    for seed in args.seeds:
        heldout = arith.problems("heldout", args.eval_problems, seed=seed)
        start = evaluate.sample_correct(policy, heldout, args.eval_n, seed=seed + 1).sum(axis=1)
        entry = {"start": [int(c) for c in start], "arms": {}}
        result["seeds"][str(seed)] = entry
        for arm in args.arms:
            entry["arms"][arm] = r = run_arm(policy, reward, arm, seed, heldout, steps[arm], args.eval_n)
            print(f"seed {seed} {arm:>12}: pass@1 {np.mean(start) / args.eval_n:.3f} -> "
                  f"{np.mean(r['correct'][str(steps[arm])]) / args.eval_n:.3f} after {steps[arm]} steps "
                  f"({r['train_seconds']:.0f} s of training)", flush=True)
            save()
    result["complete"] = True
    save()
    return result


# ---------------------------------------------------------------- the tables

def merge(results: list[dict]) -> dict:
    """Several --save files as one (benchmarks/nb05_runs.py's merge): a seed's arms may come from several files."""
    return base.merge(results, FORMAT)


def step_seconds(result: dict, arm: str) -> float:
    """Seconds per step of `arm`: the median of its per-step wall times (steps 2..; evaluations excluded) on each
    seed, then the smallest over seeds. This machine's other jobs slow some runs for a while; the median ignores
    short bursts and the minimum the seeds that ran beside a long one."""
    return float(min(np.median(np.asarray(e["arms"][arm]["metrics"]["time"][1:], dtype=float))
                     for e in result["seeds"].values() if arm in e["arms"]))


def summarize(result: dict) -> dict:  # noqa: C901
    """Per arm and seed: completions, seconds and held-out pass@1 at each evaluated step, and the target's test
    (the arm's pass@1 at half the baseline's completions against the baseline's final, paired by problem)."""
    n = int(result["config"]["eval_n"])
    per_step = result["config"]["base"]["batch_size"] * result["config"]["base"]["num_samples"]
    out = {}
    for seed, entry in result["seeds"].items():
        b = entry["arms"][BASELINE]
        b_end = np.array(b["correct"][str(b["steps"])])
        for arm, run in entry["arms"].items():
            rows = []
            for step, c in sorted(run["correct"].items(), key=lambda kv: int(kv[0])):
                c = np.array(c)
                d, dse = base.paired_diff(c, b_end, n)
                rows.append({"step": int(step), "completions": int(step) * per_step,
                             "seconds": int(step) * step_seconds(result, arm), "pass1": float(c.mean() / n),
                             "minus_base_final": d, "se": dse})
            out[(arm, seed)] = rows
    return out


def report(result: dict) -> str:
    out: list[str] = []
    p = out.append
    cfg, n = result["config"], int(result["config"]["eval_n"])
    seeds = sorted(result["seeds"], key=int)
    arms = [a for a in ARMS if all(a in result["seeds"][s]["arms"] for s in seeds)]
    base_steps = result["seeds"][seeds[0]]["arms"][BASELINE]["steps"]
    P = len(result["seeds"][seeds[0]]["start"])
    p(f"Reusing a batch on tiny-arith: {cfg['base']['batch_size']} prompts x G = {cfg['base']['num_samples']}, lr "
      f"{cfg['base']['lr']}, group advantages; {BASELINE} runs {base_steps} steps; seeds {', '.join(seeds)}; held-out "
      f"pass@1 from {P} problems x {n} samples.")
    for m in result.get("machines", [result["machine"]]):
        p(f"measured {m['measured']}: pgcore {m['pgcore_commit'][:12]}, torch {m['torch']}, CPU {m['cpu_capability']}, "
          f"{m['threads']} thread(s)")
    s = summarize(result)
    p("")
    p(f"1. Held-out pass@1 at each evaluated step, and minus {BASELINE}'s final (paired by problem, ± s.e.); "
      "completions sampled and training seconds to that step (steps x s/step, table 2)")
    p(f"{'arm':>12} {'seed':>4} {'step':>4} {'completions':>11} {'seconds':>7}  {'pass@1':>6}  {'minus base final':>17}")
    for arm in arms:
        for seed in seeds:
            for r in s[(arm, seed)]:
                p(f"{arm:>12} {seed:>4} {r['step']:>4} {r['completions']:>11,} {r['seconds']:>7.1f}  {r['pass1']:>6.3f}  "
                  f"{base._pm(r['minus_base_final'], r['se'], sign=True):>17}")
    p("")
    half = base_steps // 2
    p(f"2. The target: an arm reaches {BASELINE}'s final pass@1 (step {base_steps}) at its step {half} (half the "
      f"completions) and in <= 0.8x the seconds. Per arm: the mean over seeds (between-seed s.e.) of pass@1 at step "
      f"{half} minus {BASELINE}'s final; seconds to step {half} over {BASELINE}'s seconds to step {base_steps}")
    p(f"{'arm':>12}  {'pass@1 minus base final':>24}  {'seeds >= base':>13}  {'seconds ratio':>13}  {'s/step':>6}  "
      f"{'update share':>12}")
    for arm in arms:
        diffs, ratios, ok = [], [], 0
        for seed in seeds:
            row = next((r for r in s[(arm, seed)] if r["step"] == half), None) if arm != BASELINE else s[(arm, seed)][-1]
            if row is None:
                continue
            diffs.append(row["minus_base_final"])
            ok += row["minus_base_final"] >= 0
            ratios.append(row["seconds"] / (base_steps * step_seconds(result, BASELINE)))
        runs = [result["seeds"][sd]["arms"][arm] for sd in seeds]
        per_step = step_seconds(result, arm)
        upd = np.mean([np.sum(np.asarray(r["metrics"]["time_update"][1:], dtype=float)) /
                       np.sum(np.asarray(r["metrics"]["time"][1:], dtype=float)) for r in runs])
        if diffs:
            p(f"{arm:>12}  {base._pm(*base.mean_se(diffs), sign=True):>24}  {ok:>6} of {len(diffs):<4}  "
              f"{np.mean(ratios):>13.2f}  {per_step:>6.3f}  {upd:>12.2f}")
    p(f"({BASELINE}'s own row: its final minus itself, 0 by construction. Seconds = steps x s/step, s/step = the "
      "median step of each seed, smallest over seeds (other jobs shared this machine); the update's share of a "
      "step: steps 2.., mean over seeds)")
    p("")
    p("3. What the ratio did (mean over steps and seeds of the per-step metrics): clipped token shares, tokens with "
      "a gradient, the largest ratio, KL(pi_old || pi) of the last update (k3); entropy of the last 10 steps")
    p(f"{'arm':>12}  {'clip low':>8}  {'clip high':>9}  {'grad tokens':>11}  {'ratio max':>9}  {'kl_old':>8}  "
      f"{'entropy':>7}")
    for arm in arms:
        runs = [result["seeds"][sd]["arms"][arm]["metrics"] for sd in seeds]
        col = lambda k: float(np.nanmean([np.nanmean(np.array(r[k], dtype=float)) for r in runs])) if k in runs[0] \
            else float("nan")  # noqa: E731
        ent = float(np.mean([base.last_mean(r["entropy"]) for r in runs]))
        p(f"{arm:>12}  {col('clip_low_frac'):>8.4f}  {col('clip_high_frac'):>9.4f}  {col('grad_token_frac'):>11.3f}  "
          f"{col('ratio_max'):>9.3f}  {col('kl_old'):>8.5f}  {ent:>7.3f}")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run seeds (default: 0 1 2)")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="arms (default: all)")
    p.add_argument("--steps", type=int, default=150, help=f"steps of {BASELINE} (default: 150, notebook 05's run)")
    p.add_argument("--reuse-steps", type=int, default=75, help="steps of every other arm (default: 75)")
    p.add_argument("--eval-problems", type=int, default=200, help="held-out problems per seed (default: 200)")
    p.add_argument("--eval-n", type=int, default=64, help="samples per held-out problem (default: 64)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default: 1)")
    p.add_argument("--save", default=None, help="write the raw results to this JSON file (after every run, atomically)")
    p.add_argument("--load", nargs="+", default=None, help="print the tables of --save files (run nothing)")
    args = p.parse_args(argv)
    if args.load:
        print(report(merge([json.loads(Path(f).read_text()) for f in args.load])))
        return 0
    result = measure(args)
    if BASELINE in args.arms:  # else: arms added to seeds whose baseline is in another file (print with --load)
        print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
