"""Notebook 05's GRPO design choices at the main run's budget, on several seeds (stored, printed by --load).

    python benchmarks/nb05_runs.py --save benchmarks/results/nb05_runs.json   # 5 arms x 3 seeds, ~30 min (2-core CPU)
    python benchmarks/nb05_runs.py --load benchmarks/results/nb05_runs.json   # the tables, from the stored counts
    python benchmarks/nb05_runs.py --seeds 0 --arms token --steps 20 --save /tmp/check.json   # a quick check

Every arm is notebook 05's main run (c11: tiny-arith + the arithmetic verifier, 150 steps of 64 prompts x G = 8
completions, lr 5e-4, group advantages, max_new_tokens = arith.MAX_NEW_TOKENS) with one design choice changed:

    token      the main run: loss_aggregation token, beta 0
    sequence   loss_aggregation sequence (the original GRPO's per-completion mean), beta 0
    constant   loss_aggregation constant (Dr. GRPO's constant divisor), beta 0
    kl-reward  kl_coef 0.1, the KL in the reward (k1), token
    kl-loss    kl_coef 0.1, the KL in the loss (GRPO's k3 term; the logged KL is then the k3 estimate), token

For each seed s: the held-out problems `arith.problems("heldout", 200, seed=s)` and, for the starting model and
each arm's final model, the number of correct answers of each problem among 64 samples
(`evaluate.sample_correct(policy, heldout, 64, seed=s + 1)`, as the notebook's c8 and c14). These per-problem
counts are stored raw, with each arm's per-step training metrics, so every number `--load` prints is recomputed
from them.

Error bars (the notebook's §4 convention): the s.e. of one pass@1 value is *clustered by problem* (the s.e. over
problems of the per-problem success rates c/64, not the binomial over problems x samples); a difference between
two models evaluated on the same problems is *paired by problem* (the s.e. over problems of the per-problem
differences). Both measure evaluation noise (which problems, which samples) for one trained model each: they do
not include the run-to-run noise of training. The between-seed s.e. (over the per-seed values) includes it, with
only len(seeds) - 1 degrees of freedom.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

FORMAT = "nb05_runs/1"
ARMS = {
    "token": dict(loss_aggregation="token", kl_coef=0.0),
    "sequence": dict(loss_aggregation="sequence", kl_coef=0.0),
    "constant": dict(loss_aggregation="constant", kl_coef=0.0),
    "kl-reward": dict(loss_aggregation="token", kl_coef=0.1, kl_in="reward", kl_estimator="k1"),
    "kl-loss": dict(loss_aggregation="token", kl_coef=0.1, kl_in="loss", kl_estimator="k3"),
}
BASELINE = "token"
COMPARISONS = {"loss aggregation (beta 0)": ("sequence", "constant"), "KL placement (beta 0.1)": ("kl-reward", "kl-loss")}
METRICS = ("reward_mean", "kl", "len_correct", "len_incorrect", "entropy", "zero_spread_frac", "loss", "heldout_pass1")
KS = (1, 2, 4, 8, 16, 32, 64)
LAST = 10  # steps at the end of a run over which KL, lengths and entropy are averaged


# ---------------------------------------------------------------- statistics (pure numpy: tested by hand)

def mean_se(x) -> tuple[float, float]:
    """Mean of x and its standard error sd(x, ddof=1) / sqrt(len(x)) (nan for one value)."""
    x = np.asarray(x, dtype=float).reshape(-1)
    if len(x) == 0:
        raise ValueError("mean_se of nothing")
    se = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")
    return float(x.mean()), se


def pass1_clustered(counts, n: int) -> tuple[float, float]:
    """pass@1 (mean over problems of c/n) and its s.e. clustered by problem: the s.e. over problems of c/n."""
    return mean_se(np.asarray(counts, dtype=float) / n)


def pass1_binomial_se(counts, n: int) -> float:
    """The s.e. that treats problems x samples as independent draws, sqrt(p(1 - p) / (P n)) (too small)."""
    c = np.asarray(counts, dtype=float)
    p = c.sum() / (len(c) * n)
    return float(math.sqrt(p * (1 - p) / (len(c) * n)))


def paired_diff(counts_a, counts_b, n: int) -> tuple[float, float]:
    """pass@1(a) - pass@1(b) on the same problems, and its paired s.e.: the s.e. over problems of (c_a - c_b) / n."""
    a, b = np.asarray(counts_a, dtype=float), np.asarray(counts_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired counts must have one shape, got {a.shape} and {b.shape}")
    return mean_se((a - b) / n)


def pass_at_k_table(n: int, counts, ks) -> np.ndarray:
    """(P, len(ks)) per-problem pass@k (Chen et al.'s unbiased estimator, `pgcore.lm.pass_at_k`)."""
    from pgcore.lm import pass_at_k

    return np.array([[pass_at_k(n, int(c), int(k)) for k in ks] for c in counts], dtype=float)


def paired_pass_at_k(n: int, counts_after, counts_before, ks):
    """Per k: (before, after, after - before, paired s.e. of the difference) over problems."""
    before, after = pass_at_k_table(n, counts_before, ks), pass_at_k_table(n, counts_after, ks)
    d = after - before
    se = d.std(axis=0, ddof=1) / math.sqrt(len(d))
    return before.mean(axis=0), after.mean(axis=0), d.mean(axis=0), se


def last_mean(values, last: int = LAST) -> float:
    """Mean of the last `last` finite entries of a per-step series (None / nan: a step without that metric)."""
    v = np.array([np.nan if x is None else x for x in values], dtype=float)[-last:]
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


# ---------------------------------------------------------------- the runs

def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def base_config(steps: int) -> dict:
    from pgcore.lm import arith

    # notebook 05, c3 and c11 (the main run); eval_every 20 as there, so `token` on seed 0 is c11's run
    return dict(model="tiny-arith", reward_model="arithmetic", steps=steps, batch_size=64, num_samples=8,
                max_new_tokens=arith.MAX_NEW_TOKENS, advantage="group", kl_coef=0.0, lr=5e-4, eval_every=20,
                save_every=0, checkpoint_dir=None, model_dir=None)


def run_arm(policy, reward, arm: str, seed: int, heldout, steps: int, eval_n: int) -> dict:
    """One engine run of `arm` on `seed` from a copy of `policy`; its final model's per-problem correct counts."""
    import copy

    import pandas as pd

    from pgcore import engine
    from pgcore.lm import evaluate

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"nb05_{arm}_{seed}_") as tmp:
        cfg = engine.LMConfig(**{**base_config(steps), **ARMS[arm]}, seed=seed, output_dir=f"{tmp}/metrics")
        result = engine.train(cfg, policy=copy.deepcopy(policy), reward=reward)
        frame = pd.read_csv(Path(tmp) / "metrics" / "training_metrics.csv")
    train_s = time.perf_counter() - t0
    counts = evaluate.sample_correct(result.policy, heldout, eval_n, seed=seed + 1).sum(axis=1)
    metrics = {m: [None if pd.isna(v) else float(v) for v in frame[m]] for m in METRICS if m in frame}
    s = result.summary
    return {"correct": [int(c) for c in counts], "metrics": metrics,
            "trainer_pass1_first": s.get("heldout_pass1_first"), "trainer_pass1_final": s.get("heldout_pass1_final"),
            "train_seconds": float(s["train_seconds"]), "seconds": time.perf_counter() - t0,
            "eval_seconds": time.perf_counter() - t0 - train_s}


def measure(args) -> dict:
    import torch

    from pgcore.files import atomic_write_text
    from pgcore.lm import arith, evaluate, models, rewards

    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    policy = models.load_policy("tiny-arith")
    reward = rewards.load_reward("arithmetic")
    result = {
        "format": FORMAT,
        "config": {"base": base_config(args.steps), "arms": {a: ARMS[a] for a in args.arms},
                   "eval_problems": args.eval_problems, "eval_n": args.eval_n,
                   "heldout": "arith.problems('heldout', eval_problems, seed=seed)",
                   "sampling": "evaluate.sample_correct(policy, heldout, eval_n, seed=seed + 1)"},
        "machine": {"pgcore_commit": git_commit(), "torch": torch.__version__,
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                    "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "measured": time.strftime("%Y-%m-%d")},
        "seeds": {},
        "seconds": 0.0,
        "complete": False,
    }

    def save():
        result["seconds"] = time.perf_counter() - t_all
        if args.save:
            atomic_write_text(args.save, json.dumps(result, indent=1) + "\n")

    for seed in args.seeds:
        heldout = arith.problems("heldout", args.eval_problems, seed=seed)
        t0 = time.perf_counter()
        start = evaluate.sample_correct(policy, heldout, args.eval_n, seed=seed + 1).sum(axis=1)
        entry = {"heldout": [list(p) for p in heldout],
                 "start": {"correct": [int(c) for c in start], "seconds": time.perf_counter() - t0}, "arms": {}}
        result["seeds"][str(seed)] = entry
        save()
        for arm in args.arms:
            entry["arms"][arm] = run_arm(policy, reward, arm, seed, heldout, args.steps, args.eval_n)
            r = entry["arms"][arm]
            print(f"seed {seed} {arm:>9}: pass@1 {np.mean(start) / args.eval_n:.3f} -> "
                  f"{np.mean(r['correct']) / args.eval_n:.3f} ({r['seconds']:.0f} s)", flush=True)
            save()
    result["complete"] = True
    save()
    return result


# ---------------------------------------------------------------- the tables

def merge(results: list[dict], fmt: str = FORMAT) -> dict:
    """Several --save files as one: their seeds together, and a seed's arms together when the seed is in several
    files (one configuration; the same arm of a seed in two files is an error). Also benchmarks/nb06_reuse.py's."""
    if not results:
        raise ValueError("nothing to load")
    merged = {**results[0], "seeds": {}, "seconds": 0.0, "machines": [], "complete": True}
    for r in results:
        if r.get("format") != fmt:
            raise ValueError(f"not a {fmt} file (format {r.get('format')!r})")
        if r["config"]["base"] != results[0]["config"]["base"] or r["config"]["eval_n"] != results[0]["config"]["eval_n"]:
            raise ValueError("the files were measured with different configurations")
        for seed, entry in r["seeds"].items():
            have = merged["seeds"].setdefault(seed, {**entry, "arms": {}})
            if have["start"] != entry["start"]:
                raise ValueError(f"seed {seed}: the files evaluated different starting models")
            twice = sorted(set(have["arms"]) & set(entry["arms"]))
            if twice:
                raise ValueError(f"seed {seed}: arms {', '.join(twice)} are in two files")
            have["arms"].update(entry["arms"])
        merged["seconds"] += r["seconds"]
        merged["machines"].append(r["machine"])
        merged["complete"] = merged["complete"] and r.get("complete", False)
    return merged


def _z(mean: float, se: float) -> str:
    return f"{mean / se:+5.1f}" if se and np.isfinite(se) and se > 0 else "  nan"


def _pm(mean: float, se: float, digits: int = 3, sign: bool = False) -> str:
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    return f"{f.format(mean)} ± {se:.{digits}f}" if np.isfinite(se) else f"{f.format(mean)} ± nan"


def report(result: dict) -> str:
    """The tables of one measurement (just measured, or merged from --save files), as text."""
    out: list[str] = []
    p = out.append
    n = int(result["config"]["eval_n"])
    base = result["config"]["base"]
    seeds = sorted(result["seeds"], key=int)
    arms_all = [a for a in ARMS if all(a in result["seeds"][s]["arms"] for s in seeds)]
    machines = result.get("machines", [result["machine"]])
    P = len(result["seeds"][seeds[0]]["start"]["correct"])
    p(f"Notebook 05's design choices at the main run's budget: {base['steps']} steps x {base['batch_size']} prompts x "
      f"G = {base['num_samples']}, lr {base['lr']}, {base['advantage']} advantages, max_new_tokens "
      f"{base['max_new_tokens']}; seeds {', '.join(seeds)}; held-out pass@k from {P} problems x {n} samples per "
      f"seed and model.")
    for m in machines:
        p(f"measured {m['measured']}: pgcore {m['pgcore_commit'][:12]}, torch {m['torch']}, CPU {m['cpu_capability']}, "
          f"{m['threads']} thread(s)")
    p(f"total {result['seconds'] / 60:.1f} min" + ("" if result.get("complete", False) else " (INCOMPLETE run)"))
    missing = [a for a in ARMS if a not in arms_all]
    if missing:
        p(f"arms not on every seed (left out): {', '.join(missing)}")
    p("s.e.: 'clustered' = over problems of per-problem rates c/n; 'paired' = over problems of per-problem "
      "differences (both: evaluation noise only); 'between-seed' = over the per-seed values (includes training "
      f"noise; {len(seeds) - 1} degrees of freedom). z = mean / s.e.")

    def counts(seed, arm):
        e = result["seeds"][seed]
        return np.array(e["start"]["correct"] if arm == "start" else e["arms"][arm]["correct"])

    # -- 1. did every arm learn?
    p("")
    p("1. Did every arm learn? Held-out pass@1 start -> end (± clustered s.e.), the rise (end - start, ± paired "
      "s.e.), pass@64 start -> end")
    p(f"{'arm':>10} {'seed':>4}  {'pass@1 start':>14}  {'pass@1 end':>14}  {'rise (paired)':>16}  {'z':>5}  "
      f"{'pass@64':>13}  {'binom. s.e.':>11}  {'min':>4}")
    learned = {}
    for arm in arms_all:
        rises = []
        for seed in seeds:
            c0, c1 = counts(seed, "start"), counts(seed, arm)
            s0, s1, (d, dse) = pass1_clustered(c0, n), pass1_clustered(c1, n), paired_diff(c1, c0, n)
            rises.append(d)
            learned[(arm, seed)] = d > 2 * dse
            p64 = f"{np.mean(c0 > 0):.3f}->{np.mean(c1 > 0):.3f}"
            minutes = result["seeds"][seed]["arms"][arm]["seconds"] / 60
            p(f"{arm:>10} {seed:>4}  {_pm(*s0):>14}  {_pm(*s1):>14}  {_pm(d, dse, sign=True):>16}  {_z(d, dse)}  "
              f"{p64:>13}  {pass1_binomial_se(c1, n):>11.3f}  {minutes:>4.1f}")
        m, se = mean_se(rises)
        p(f"{arm:>10} {'mean':>4}  {'':>14}  {'':>14}  {_pm(m, se, sign=True):>16}  {_z(m, se)}  (between-seed s.e.)")
    ok = all(learned.values())
    p(f"every arm's rise > 2 paired s.e. on every seed: {'yes' if ok else 'NO: ' + ', '.join(f'{a} seed {s}' for (a, s), v in learned.items() if not v)}")
    p("(binom. s.e.: the binomial s.e. of the end value over problems x samples, for comparison with the clustered one)")

    # -- 2. and 3. paired differences against token
    def last(seed, arm, metric):
        return last_mean(result["seeds"][seed]["arms"][arm]["metrics"][metric])

    for k, (title, arms) in enumerate(COMPARISONS.items(), start=2):
        arms = [a for a in arms if a in arms_all]
        if BASELINE not in arms_all or not arms:
            continue
        p("")
        p(f"{k}. {title}: end pass@1 minus {BASELINE}'s, paired by problem (same seed, same problems, same samples' seed)")
        p(f"{'arm':>10}  " + "  ".join(f"{'seed ' + s:>21}" for s in seeds) + f"  {'pooled: between-seed':>22}  "
          f"{'pooled: per-problem':>21}")
        for arm in arms:
            cells, diffs, all_d = [], [], []
            for seed in seeds:
                d, dse = paired_diff(counts(seed, arm), counts(seed, BASELINE), n)
                diffs.append(d)
                all_d.append((counts(seed, arm) - counts(seed, BASELINE)) / n)
                cells.append(f"{_pm(d, dse, sign=True)} ({_z(d, dse).strip()})")
            m, se = mean_se(diffs)
            m2, se2 = mean_se(np.concatenate(all_d))
            p(f"{arm:>10}  " + "  ".join(f"{c:>21}" for c in cells) + f"  {_pm(m, se, sign=True) + ' (' + _z(m, se).strip() + ')':>22}"
              f"  {_pm(m2, se2, sign=True) + ' (' + _z(m2, se2).strip() + ')':>21}")
        p("(pooled: the mean of the per-seed differences, ± the s.e. over seeds (between-seed) or ± the s.e. over all "
          f"{len(seeds)} x {P} per-problem differences (per-problem: evaluation noise only))")
        if k == 2:
            p(f"lengths (tokens, EOS included) and entropy, mean of the last {LAST} steps: per seed, then mean ± "
              "between-seed s.e.")
            rows = ["len_incorrect", "len_correct", "entropy"]
        else:
            est = {a: ARMS[a].get("kl_estimator", "k1") for a in [BASELINE, *arms]}
            p(f"KL to the start (per completion, the logged estimate: "
              f"{', '.join(f'{a} {e}' for a, e in est.items())}), mean of the last {LAST} steps: per seed, then "
              f"mean ± between-seed s.e.; and minus {BASELINE}'s, paired by seed")
            rows = ["kl"]
        for metric in rows:
            for arm in [BASELINE, *arms]:
                v = [last(s, arm, metric) for s in seeds]
                line = f"{metric:>14} {arm:>10}: " + " ".join(f"{x:6.3f}" for x in v) + f"   {_pm(*mean_se(v))}"
                if metric == "kl" and arm != BASELINE:
                    dv = [x - last(s, BASELINE, metric) for s, x in zip(seeds, v)]
                    line += f"   minus {BASELINE}: {_pm(*mean_se(dv), sign=True)} ({_z(*mean_se(dv)).strip()})"
                p(line)

    # -- 4. pass@k of token, before and after
    if BASELINE in arms_all:
        p("")
        p(f"4. pass@k (Chen et al.'s unbiased estimator, n = {n}) of the start and of {BASELINE}'s final model, "
          "paired s.e. over problems")
        ks_all = list(range(1, n + 1))
        low, high = [], []
        for seed in seeds:
            c0, c1 = counts(seed, "start"), counts(seed, BASELINE)
            b, a, d, se = paired_pass_at_k(n, c1, c0, KS)
            _, _, d_all, _ = paired_pass_at_k(n, c1, c0, ks_all)
            below = [k for k, x in zip(ks_all, d_all) if x < 0]
            p(f"seed {seed}:  k " + " ".join(f"{k:>7}" for k in KS))
            p("   before    " + " ".join(f"{x:7.3f}" for x in b))
            p("   after     " + " ".join(f"{x:7.3f}" for x in a))
            p("   after-bef " + " ".join(f"{x:+7.3f}" for x in d))
            p("   ± paired  " + " ".join(f"{x:7.3f}" for x in se))
            p(f"   pass@1 {_pm(d[0], se[0], sign=True)} ({_z(d[0], se[0]).strip()}), pass@{n} "
              f"{_pm(d[-1], se[-1], sign=True)} ({_z(d[-1], se[-1]).strip()}); after < before first at k = "
              f"{below[0] if below else 'none'}" + (f" (and at every larger k: {'yes' if below == ks_all[below[0] - 1:] else 'no'})" if below else "")
              + f"; never solved in {n}: {np.sum(c0 == 0)} before, {np.sum(c1 == 0)} after; solved only after: "
              f"{np.sum((c0 == 0) & (c1 > 0))}, only before: {np.sum((c0 > 0) & (c1 == 0))}")
            low.append(d[0])
            high.append(d[-1])
        p(f"mean over seeds (between-seed s.e.): pass@1 {_pm(*mean_se(low), sign=True)}, pass@{n} "
          f"{_pm(*mean_se(high), sign=True)}; pass@{n} lower after training on {sum(x < 0 for x in high)} of "
          f"{len(seeds)} seeds")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run seeds (default: 0 1 2)")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="arms (default: all)")
    p.add_argument("--steps", type=int, default=150, help="steps of every run (default: 150, the main run's)")
    p.add_argument("--eval-problems", type=int, default=200, help="held-out problems per seed (default: 200)")
    p.add_argument("--eval-n", type=int, default=64, help="samples per held-out problem (default: 64)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default: 1)")
    p.add_argument("--save", default=None, help="write the raw results to this JSON file (after every run, atomically)")
    p.add_argument("--load", nargs="+", default=None, help="print the tables of --save files (and run nothing); "
                                                           "several files: their seeds together")
    args = p.parse_args(argv)
    if args.load:
        print(report(merge([json.loads(Path(f).read_text()) for f in args.load])))
        return 0
    print(report(measure(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
