"""Benchmark of `pgcore.lm`: does the default tiny tier learn, and how fast? (printed, never asserted)

    python benchmarks/lm.py                        # tiny + tiny-sentiment, LMConfig defaults (200 steps)
    python benchmarks/lm.py --smollm2 --smollm2-steps 60   # also SmolLM2-135M-Instruct + vader
    python benchmarks/lm.py --skip-tiny --arith-seeds 0 1 2  # only the verifiable-reward tier (notebook 05)

Targets (issue "pgcore.lm"): tiny tier reward rise >= 0.30 (mean of the last 20 steps minus the first
10) within 200 steps and <= 2 minutes on a 2-core CPU; SmolLM2-135M + vader: +0.3 within 60 steps
(met with lr 1e-4 and KL coefficient 0.02, the --smollm2 defaults; ~17 min on a 2-core CPU); tiny-arith +
arithmetic (the README's GRPO command line): held-out pass@1 rise >= 0.15 within 3 minutes.
Prints steps/s, completion tokens/s, peak memory and the split of each step's time between sampling,
reward scoring and the update. Judge CPU time (user+sys / threads) on a busy machine. A reward that
rises is not yet a policy that writes well: the table also shows the reward and distinct-2 (share of
distinct word pairs; low = repetitive) of fresh samples before and after training, and a few of those
samples are printed to be read.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pgcore.engine import LMConfig, train  # noqa: E402
from pgcore.files import atomic_write_text  # noqa: E402


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def fresh_samples(policy, reward, config: LMConfig, num_prompts: int = 8, seed: int = 12345) -> dict:
    """Two seeded samples for each of the first `num_prompts` prompts: texts, mean reward, distinct-2."""
    from pgcore.lm.models import format_prompts, load_prompts
    from pgcore.lm.sampling import generate
    from pgcore.widgets.lm import text_stats

    prompts = load_prompts(config.prompts)[:num_prompts]
    batch = generate(policy.model, policy.tokenizer, format_prompts(policy, prompts), 2, config.max_new_tokens,
                     config.temperature, seed=seed, add_special_tokens=not policy.chat_template)
    return {"prompts": [p for p in prompts for _ in range(2)], "texts": batch.texts,
            "reward": float(reward.score(batch.texts).mean()), "distinct2": text_stats(batch.texts)["distinct_n"]}


def bench(label: str, config: LMConfig, target_rise: float, target_seconds: float | None) -> tuple[dict, dict, dict]:
    from pgcore.lm.models import load_policy
    from pgcore.lm.rewards import load_reward

    t0 = time.perf_counter()
    policy = load_policy(config.model)
    reward = load_reward(config.reward_model, label=config.reward_label, device=next(policy.model.parameters()).device)
    load_s = time.perf_counter() - t0
    before = fresh_samples(policy, reward, config)
    t1, c1 = time.perf_counter(), cpu_seconds()
    result = train(config, policy=policy, reward=reward, progress=True)
    wall, cpu = time.perf_counter() - t1, cpu_seconds() - c1
    h = result.history
    step_time = sum(r["time"] for r in h)
    split = {k: sum(r[f"time_{k}"] for r in h) / step_time for k in ("generate", "reward", "update")}
    rise = result.reward_rise
    after = fresh_samples(policy, reward, config)
    row = {
        "tier": label,
        "steps": len(h),
        "reward first10": float(np.mean([r["reward_mean"] for r in h[:10]])),
        "reward last20": float(np.mean([r["reward_mean"] for r in h[-20:]])),
        "rise": rise,
        "target rise": target_rise,
        "wall s": wall,
        "cpu s": cpu,
        "cpu s / threads": cpu / torch.get_num_threads(),
        "load s": load_s,
        "steps/s": len(h) / step_time,
        "tokens/s": sum(r["tokens"] for r in h) / step_time,
        "generate %": 100 * split["generate"],
        "reward %": 100 * split["reward"],
        "update %": 100 * split["update"],
        "peak MB": peak_memory_mb(),
        "KL last20": float(np.mean([r["kl"] for r in h[-20:]])),
        "samples: reward before": before["reward"],
        "samples: reward after": after["reward"],
        "samples: distinct-2 before": before["distinct2"],
        "samples: distinct-2 after": after["distinct2"],
        "ok": rise >= target_rise and (target_seconds is None or min(wall, cpu / torch.get_num_threads()) <= target_seconds),
    }
    return row, before, after


def bench_arith(config: LMConfig, target_rise: float = 0.15, target_seconds: float = 180.0) -> dict:
    """The verifiable-reward tier (notebook 05): held-out pass@1 before -> after a GRPO run, and its seconds."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    result = train(config, progress=True)  # loads tiny-arith (cached) and the arithmetic verifier itself
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    s = result.summary
    rise = s["heldout_pass1_final"] - s["heldout_pass1_first"]
    return {"tier": f"tiny-arith + arithmetic, seed {config.seed}", "steps": len(result.history),
            "pass@1 before": s["heldout_pass1_first"], "pass@1 after": s["heldout_pass1_final"], "rise": rise,
            "wall s": wall, "cpu s": cpu, "ok": rise >= target_rise and wall <= target_seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=LMConfig().steps, help="tiny tier steps (default: LMConfig)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smollm2", action="store_true", help="also run SmolLM2-135M-Instruct with vader")
    p.add_argument("--smollm2-steps", type=int, default=60)
    p.add_argument("--smollm2-lr", type=float, default=1e-4)
    p.add_argument("--smollm2-max-new-tokens", type=int, default=16)
    p.add_argument("--smollm2-kl-coef", type=float, default=0.02)
    p.add_argument("--smollm2-prompts", default=str(Path(__file__).resolve().parents[1] / "data" / "chat_prompts.txt"),
                   help="prompt file of the SmolLM2 run (default: data/chat_prompts.txt, review requests)")
    p.add_argument("--skip-tiny", action="store_true")
    p.add_argument("--skip-arith", action="store_true", help="skip the tiny-arith + arithmetic (GRPO) tier")
    p.add_argument("--arith-seeds", type=int, nargs="+", default=[0, 1],
                   help="seeds of the tiny-arith tier (the README's command line, one run per seed)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--naive", action="store_true", help="the engine with issue 29's fast paths swapped for their "
                   "naive twins (benchmarks/naive.py): the same runs as before them")
    p.add_argument("--save", default=None, help="also write the measured rows to this JSON file")
    p.add_argument("--load", nargs="+", default=None, help="print the tables of a --save file (and run nothing); "
                   "two files: both, then their arithmetic tiers compared seed by seed")
    args = p.parse_args(argv)
    if args.load:
        results = [json.loads(Path(f).read_text()) for f in args.load]
        for result in results:
            print_tables(result)
        if len(results) == 2:
            print_paired(*results)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    twins = {}
    if args.naive:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import naive

        naive.use_naive_twins()
        twins = naive.NAIVE_CONFIG
    rows, samples = [], []
    with tempfile.TemporaryDirectory() as tmp:
        places = dict(output_dir=f"{tmp}/out", checkpoint_dir=f"{tmp}/ckpt", model_dir=f"{tmp}/models", save_every=0)
        if not args.skip_tiny:
            cfg = LMConfig(reward_model="tiny-sentiment", steps=args.steps, seed=args.seed, **places, **twins)
            row, before, after = bench("tiny + tiny-sentiment", cfg, 0.30, 120.0)
            rows.append(row)
            samples.append((row["tier"], before, after))
        if args.smollm2:
            cfg = LMConfig(model="smollm2-135m", reward_model="vader", steps=args.smollm2_steps, seed=args.seed,
                           batch_size=4, num_samples=4, max_new_tokens=args.smollm2_max_new_tokens,
                           lr=args.smollm2_lr, kl_coef=args.smollm2_kl_coef, prompts=args.smollm2_prompts, **places)
            row, before, after = bench("smollm2-135m + vader", cfg, 0.30, None)
            rows.append(row)
            samples.append((row["tier"], before, after))
        arith_rows = []
        if not args.skip_arith:
            # the README's command line: python -m pgcore.lm --model tiny-arith --reward-model arithmetic ...
            for seed in args.arith_seeds:
                cfg = LMConfig(model="tiny-arith", reward_model="arithmetic", advantage="group", batch_size=64,
                               num_samples=8, max_new_tokens=6, lr=5e-4, kl_coef=0.0, steps=150, eval_every=25,
                               seed=seed, **places, **twins)
                arith_rows.append(bench_arith(cfg))
    result = {"rows": rows, "arith_rows": arith_rows, "samples": samples,
              "machine": f"torch {torch.__version__}, {torch.get_num_threads()} threads, device "
                         f"{'cuda' if torch.cuda.is_available() else 'cpu'}, {os.cpu_count()} CPUs, "
                         f"measured {time.strftime('%Y-%m-%d')}" + (", naive twins" if args.naive else "")}
    if args.save:
        atomic_write_text(args.save, json.dumps(result, indent=1) + "\n")
    print_tables(result)
    return 0


def print_paired(a: dict, b: dict) -> None:
    """The arithmetic tiers of two measurements, seed by seed: the first minus the second (the s.e. of the mean
    over seeds of the per-seed differences: training and evaluation noise, the seed's problems shared)."""
    rows_a = {r["tier"]: r for r in a["arith_rows"]}
    pairs = [(rows_a[r["tier"]], r) for r in b["arith_rows"] if r["tier"] in rows_a]
    if len(pairs) < 2:
        return
    n = len(pairs)
    print(f"\nthe first minus the second, paired by seed over {n} seeds:")
    for key in ("pass@1 after", "rise", "wall s"):
        d = np.array([x[key] - y[key] for x, y in pairs])
        print(f"  {key}: {d.mean():+.3f} (s.e. {d.std(ddof=1) / n ** 0.5:.3f}); per seed "
              + ", ".join(f"{v:+.3f}" for v in d))
    ratio = np.mean([y["wall s"] for _, y in pairs]) / np.mean([x["wall s"] for x, _ in pairs])
    print(f"  the second takes {ratio:.2f}x the first's wall seconds")


def print_tables(result: dict) -> None:
    """The tables of one measurement (just measured, or read back from a --save file)."""
    import pandas as pd

    pd.set_option("display.width", 200)
    rows, arith_rows, samples = result["rows"], result["arith_rows"], result["samples"]
    if arith_rows:
        print("verifiable rewards (notebook 05): held-out pass@1 (256 problems x 4 samples, T = 1), target rise >= 0.15 "
              "within 180 s")
        frame = pd.DataFrame(arith_rows).set_index("tier")
        print(frame.to_string(float_format=lambda v: f"{v:.3f}"))
        if len(frame) > 1:  # the s.e. between seeds: training noise and evaluation noise together
            se = lambda c: frame[c].std(ddof=1) / len(frame) ** 0.5
            print(f"mean over {len(frame)} seeds: pass@1 after {frame['pass@1 after'].mean():.3f} (s.e. "
                  f"{se('pass@1 after'):.3f}), rise {frame['rise'].mean():.3f} (s.e. {se('rise'):.3f}), wall s "
                  f"{frame['wall s'].mean():.1f}")
    print(result["machine"])
    if rows:
        print(pd.DataFrame(rows).set_index("tier").T.to_string(float_format=lambda v: f"{v:.3f}"))
    for tier, before, after in samples:
        print(f"\n{tier}: fresh samples (the same prompts and seed) before -> after training")
        for i in range(0, len(before["texts"]), 4):
            print(f"  prompt: {before['prompts'][i]!r}")
            print(f"    before: {before['texts'][i]!r}")
            print(f"    after:  {after['texts'][i]!r}")


if __name__ == "__main__":
    sys.exit(main())
