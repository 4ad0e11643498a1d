"""`pgcore.lm` side by side with Hugging Face TRL's RLOOTrainer (and GRPOTrainer, beta = 0): same model,
prompts, batch, tokens, learning rate, KL and seed (printed, never asserted).

    pip install -e ".[bench]"                          # TRL, pinned to the version measured
    python benchmarks/lm_vs_trl.py                     # the issue's configuration (about 1 h on a 2-core CPU)
    python benchmarks/lm_vs_trl.py --model tiny --steps 10     # a quick check that every runner works

The configuration (defaults): SmolLM2-135M-Instruct in fp32 (pgcore's converted cache), the `vader`
reward, data/chat_prompts.txt through the chat template, 8 prompts x 4 samples, 24 new tokens, lr 3e-5,
KL coefficient 0.05 (k1 estimate, subtracted from the reward), RLOO advantages, a constant learning rate,
gradient-norm clip 1.0, sampling at temperature 1 with top_k = 0 and top_p = 1, `--threads` CPU threads.
The same loss: pgcore runs with `loss_aggregation="sum"`, TRL RLOOTrainer's (each completion's summed
log-prob times its advantage, averaged over completions). pgcore's default, the token mean, has the same
direction but a loss about max_new_tokens times smaller, so the clip at norm 1 acts on fewer of its steps
and late in a run its steps are smaller: a different update (`--loss-aggregation token` measures it).
Every runner trains on the same prompts in the same order, step by step (pgcore's seeded draw,
`step_prompt_indices`; TRL's shuffle off, checked): a paired comparison, in which the difficulty of
the prompts a step happens to draw cancels.

Batch semantics: in TRL 1.16 `per_device_train_batch_size` counts *completions* (prompts x
num_generations), not prompts; with `steps_per_generation = 1` one TRL step is one generation round and
one optimizer update, as one `pgcore.lm` step is.

Runners: `pgcore` (`share_prompt`, its default for a chat model: each prompt prefilled and run once for its
samples, the system turn every prompt starts with once for all), `pgcore-plain` (`share_prompt=False`: Hugging
Face `generate`, one forward over every prompt + completion row), `trl-rloo`, `trl-grpo` (beta 0), and `start`,
which trains nothing: the starting model's mean reward on each prompt of the file (`--start-samples` completions
each, independent of the seed), the zero from which every runner's gain is measured. Each runner is a fresh
subprocess (model loading is not timed; peak memory is its own maximum resident set). Columns: seconds per step
and its split (generate / reward / reference forward / policy forward + backward / optimizer; TRL's split is
measured with hooks around its generate, reward function, reference model and optimizer step, the policy part
is the remainder), completion tokens per second, the reward (mean of the first 5 steps -> last 5; and its
least-squares slope per step, with its standard error), the gain per second of training by that slope (the s.e.
of the ratio of two runners' gains takes their pairing into account), with a `start` result the gain over the
starting model (the last 5 steps' reward minus the starting model's on those steps' prompts) and its gain per
second, and the peak memory. `--save results.json` keeps the raw results, `--load a.json b.json ...` prints their
tables again (one per seed; a `start` result serves every seed) and, with several seeds, the pooled comparison.

Why the gain over the starting model: first 5 -> last 5 starts from 5 batches of 32 completions, noisy and already
4 updates in; a straight line fitted to a reward curve that levels off by step ~20 weighs its first steps
heavily. The starting model is the same for every runner, so its reward on the very prompts of a step (from many
samples) is the exact zero of that step's gain.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
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

RUNNERS = ("pgcore", "pgcore-plain", "trl-rloo", "trl-grpo")
START = "start"  # not a trainer: the starting model's expected reward on each prompt (the gain's zero)
SPLIT = ("generate", "reward", "reference", "policy", "optimizer")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="smollm2-135m (default) or tiny")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=8, help="prompts per step")
    p.add_argument("--num-samples", type=int, default=4, help="completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--loss-aggregation", default="sum", help="pgcore's (default sum: TRL RLOOTrainer's loss; see above)")
    p.add_argument("--runners", default=",".join((START,) + RUNNERS),
                   help=f"comma-separated, from {', '.join((START,) + RUNNERS)} ({START}: the starting model's reward on "
                        "each prompt, the zero of every runner's gain; independent of the seed)")
    p.add_argument("--prompts", default=None, help="prompt file (default: data/chat_prompts.txt for chat models, "
                                                  "data/prompts.txt for tiny)")
    p.add_argument("--save", default=None, help="also write every runner's result to this JSON file (after each "
                                                "runner)")
    p.add_argument("--load", nargs="+", default=None, help="print the tables of --save files (and run nothing): one table "
                                                            "per seed, and with several seeds their pooled comparison")
    p.add_argument("--start-samples", type=int, default=32, help="completions per prompt with which the `start` runner "
                                                                 "estimates the starting model's reward on each prompt")
    p.add_argument("--worker", choices=RUNNERS + (START,), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def prompts_file(args) -> str:
    if args.prompts:
        return args.prompts
    return str(ROOT / "data" / ("prompts.txt" if args.model == "tiny" else "chat_prompts.txt"))


# ---------------------------------------------------------------------------------------------- pgcore
def run_pgcore(args, share_prompt: bool = True) -> dict:
    import torch

    from pgcore.engine import LMConfig
    from pgcore.engine import Trainer

    torch.set_num_threads(args.threads)
    cfg = LMConfig(model=args.model, reward_model="vader", prompts=prompts_file(args), steps=args.steps, seed=args.seed,
                   batch_size=args.batch_size, num_samples=args.num_samples, max_new_tokens=args.max_new_tokens,
                   lr=args.lr, kl_coef=args.kl_coef, kl_estimator="k1", advantage="rloo", lr_scheduler="constant",
                   max_grad_norm=1.0, output_dir=None, checkpoint_dir=None, model_dir=None, share_prompt=share_prompt,
                   loss_aggregation=args.loss_aggregation)
    trainer = Trainer(cfg)
    start = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - start
    h = result.history
    split = {"generate": sum(r["time_generate"] for r in h), "reward": sum(r["time_reward"] for r in h)}
    if "time_reference" in h[0]:  # the update split into its parts
        split.update(reference=sum(r["time_reference"] for r in h), policy=sum(r["time_policy"] for r in h),
                     optimizer=sum(r["time_optimizer"] for r in h))
    else:
        split["policy"] = sum(r["time_update"] for r in h)
    return {"runner": "pgcore" if share_prompt else "pgcore-plain", "steps": len(h), "seconds": wall, "split": split,
            "tokens": sum(r["tokens"] for r in h), "rewards": [r["reward_mean"] for r in h], "peak_mb": peak_mb(),
            "prompts": "pgcore", "seed": args.seed, "grad_norms": [r["grad_norm"] for r in h],
            "loss_aggregation": args.loss_aggregation}


# ----------------------------------------------------------------------------------------------- start
def run_start(args) -> dict:
    """The starting model (every runner's step 1 samples from it): its mean reward on each prompt of the file, from
    `--start-samples` completions each, sampled as pgcore samples (temperature 1, no truncation). Independent of the
    seed and of the runner; the zero from which each runner's gain is measured, prompt by prompt."""
    import torch

    from pgcore.lm.models import format_prompts, load_policy, load_prompts
    from pgcore.lm.rewards import VaderReward
    from pgcore.lm.sampling import generate

    torch.set_num_threads(args.threads)
    policy = load_policy(args.model)
    prompts = format_prompts(policy, load_prompts(prompts_file(args)))
    vader, k, means = VaderReward(), args.start_samples, []
    start = time.perf_counter()
    for i in range(0, len(prompts), args.batch_size):
        batch = generate(policy, None, prompts[i:i + args.batch_size], k, args.max_new_tokens, seed=10_000 + i,
                         add_special_tokens=not policy.chat_template, share_prompt=k > 1)
        means += vader.score(batch.texts).view(-1, k).mean(dim=1).tolist()
    return {"runner": START, "model": args.model, "prompt_rewards": means, "samples": k,
            "seconds": time.perf_counter() - start}


def start_baseline(start: dict, args, seed: int, steps: int) -> list[float]:
    """Step by step, the starting model's expected reward on the prompts that step trained on (the same prompts
    for every runner): what the reward would have been with no training at all."""
    from pgcore.lm.algorithm import step_prompt_indices

    r = start["prompt_rewards"]
    return [sum(r[i] for i in idx) / len(idx)
            for idx in (step_prompt_indices(seed, step, len(r), args.batch_size) for step in range(1, steps + 1))]


# ------------------------------------------------------------------------------------------------- TRL
def run_trl(args, kind: str) -> dict:
    """TRL's RLOOTrainer (`kind` trl-rloo, beta = --kl-coef) or GRPOTrainer (trl-grpo, beta 0) with vader."""
    from pgcore.lm.models import load_policy, load_prompts
    from pgcore.lm.rewards import VaderReward
    from pgcore.lm.smollm2 import smollm2_dir
    from pgcore.lm.tiny import tiny_dir

    model_path = str(tiny_dir() if args.model == "tiny" else smollm2_dir())
    chat = load_policy(args.model).chat_template
    prompts = load_prompts(prompts_file(args))
    rows = [[{"role": "user", "content": p}] for p in prompts] if chat else prompts
    vader = VaderReward()
    beta = args.kl_coef if kind == "trl-rloo" else 0.0
    return trl_train(args, kind, model_path, rows, lambda texts, prompts: vader.score(texts).tolist(), dict(beta=beta))


def trl_train(args, kind: str, model_path: str, rows: list, score, extra: dict, finish=None) -> dict:
    """Train `kind` (trl-rloo or trl-grpo) on `rows` (prompts or chats) in pgcore's prompt order, rewarded by
    `score(texts, prompts) -> list[float]`, with `extra` config fields (beta, loss_type, ...); timed with hooks.
    `finish(model) -> dict`, when given, adds its entries to the result (e.g. the trained model's held-out pass@1)."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    from pgcore.lm.algorithm import step_prompt_indices

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    # pgcore's prompts, step by step, in its order (TRL's shuffle off): both runners see the same batches, so the
    # difficulty of the prompts drawn cancels in the comparison of their reward curves
    order = [i for step in range(1, args.steps + 1)
             for i in step_prompt_indices(args.seed, step, len(rows), args.batch_size)]
    dataset = Dataset.from_dict({"prompt": [rows[i] for i in order]})
    times = {k: 0.0 for k in SPLIT}
    tokens = [0]
    seen = []  # the prompts TRL scored, step by step (checked against `order` after training)

    def reward_func(completions, **kwargs):
        t = time.perf_counter()
        seen.extend(kwargs["prompts"][::args.num_samples])
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        out = score(texts, kwargs["prompts"])
        times["reward"] += time.perf_counter() - t
        return out

    common = dict(output_dir=tempfile.mkdtemp(prefix="trl-bench-"), per_device_train_batch_size=args.batch_size *
                  args.num_samples, num_generations=args.num_samples, max_completion_length=args.max_new_tokens,
                  learning_rate=args.lr, steps_per_generation=1, num_iterations=1, max_steps=args.steps,
                  logging_steps=1, report_to="none", seed=args.seed, use_cpu=True, save_strategy="no",
                  lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, weight_decay=0.0,
                  temperature=1.0, top_k=0, top_p=1.0, bf16=False, gradient_accumulation_steps=1,
                  dataloader_num_workers=0, disable_tqdm=True, shuffle_dataset=False)
    if kind == "trl-rloo":
        from trl import RLOOConfig as Config, RLOOTrainer as Trainer
    else:
        from trl import GRPOConfig as Config, GRPOTrainer as Trainer
    config = Config(**common, **extra)

    class Timer(TrainerCallback):
        def __init__(self):
            self.step_start, self.opt_start, self.step_seconds, self.after_first = 0.0, 0.0, [], None

        def on_step_begin(self, a, state, control, **kw):
            self.step_start = time.perf_counter()

        def on_pre_optimizer_step(self, a, state, control, **kw):
            self.opt_start = time.perf_counter()

        def on_optimizer_step(self, a, state, control, **kw):
            times["optimizer"] += time.perf_counter() - self.opt_start

        def on_step_end(self, a, state, control, **kw):
            self.step_seconds.append(time.perf_counter() - self.step_start)
            self.after_first = self.after_first or dict(times)  # the split so far, once step 1 is over

    timer = Timer()
    trainer = Trainer(model=model_path, reward_funcs=reward_func, args=config, train_dataset=dataset,
                      callbacks=[timer])
    model = trainer.accelerator.unwrap_model(trainer.model)
    generate = model.generate

    def timed_generate(*a, **kw):
        t = time.perf_counter()
        out = generate(*a, **kw)
        times["generate"] += time.perf_counter() - t
        seqs = out.sequences if hasattr(out, "sequences") else out
        prompt_len = (kw.get("input_ids") if "input_ids" in kw else a[0]).shape[1]
        completion = seqs[:, prompt_len:]
        pad = trainer.processing_class.pad_token_id
        tokens[0] += int((completion != pad).sum()) + int((completion == pad).any(dim=1).sum())  # + one EOS a row
        return out

    model.generate = timed_generate
    ref = getattr(trainer, "ref_model", None)
    if ref is not None:
        started = {}
        ref.register_forward_pre_hook(lambda m, i: started.__setitem__("t", time.perf_counter()))
        ref.register_forward_hook(lambda m, i, o: times.__setitem__("reference", times["reference"] +
                                                                    time.perf_counter() - started["t"]))
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    total = sum(timer.step_seconds)
    times["policy"] = total - times["generate"] - times["reward"] - times["reference"] - times["optimizer"]
    warm = {k: times[k] - timer.after_first[k] for k in SPLIT if k != "policy"}  # steps 2.. (step 1: warm-up)
    warm["policy"] = sum(timer.step_seconds[1:]) - sum(warm.values())
    rewards = [e["reward"] for e in trainer.state.log_history if "reward" in e]
    if seen != [rows[i] for i in order]:
        raise RuntimeError("TRL did not train on pgcore's prompts in pgcore's order; the comparison is not paired")
    return {"runner": kind, "steps": len(timer.step_seconds), "seconds": wall, "split": times, "tokens": tokens[0],
            "rewards": rewards, "peak_mb": peak_mb(), "prompts": "pgcore", "seed": args.seed,
            "grad_norms": [e["grad_norm"] for e in trainer.state.log_history if "grad_norm" in e],
            "step_seconds": timer.step_seconds, "split_warm": warm, **(finish(model) if finish else {})}


# ------------------------------------------------------------------------------------------------ table
def reward_fit(rewards: list[float]) -> tuple[float, float, list[float], float]:
    """Least-squares line of the reward over steps: its slope (reward gain per step), the slope's standard
    error, the residuals and sum (x - mean x)^2. Every step's batch mean counts, where first-5 -> last-5 uses
    ten of them."""
    n = len(rewards)
    if n < 3:
        return float("nan"), float("nan"), [], float("nan")
    x = [i - (n - 1) / 2 for i in range(n)]
    mean = sum(rewards) / n
    sxx = sum(v * v for v in x)
    slope = sum(v * (r - mean) for v, r in zip(x, rewards)) / sxx
    resid = [r - mean - slope * v for v, r in zip(x, rewards)]
    return slope, (sum(e * e for e in resid) / (n - 2) / sxx) ** 0.5, resid, sxx


def gain_ratio_se(r: dict, base: dict) -> float:
    """Standard error of the ratio of two runs' gains per second, by the delta method: their slopes' relative
    standard errors add in quadrature, less twice their correlation when both runs trained on the same prompts
    step by step (paired: the residual covariance of the two reward curves, step by step)."""
    a, b = r["gain_per_s"], base["gain_per_s"]
    if not a or not b:
        return float("nan")
    var = (r["gain_se"] / a) ** 2 + (base["gain_se"] / b) ** 2
    slope_a, _, resid_a, sxx = reward_fit(r["rewards"])
    slope_b, _, resid_b, _ = reward_fit(base["rewards"])
    if r.get("prompts") == base.get("prompts") == "pgcore" and len(resid_a) == len(resid_b) > 2:
        cov = sum(u * v for u, v in zip(resid_a, resid_b)) / (len(resid_a) - 2) / sxx  # cov of the two slopes
        var -= 2 * cov / (slope_a * slope_b)
    return abs(a / b) * max(var, 0.0) ** 0.5


def mean_se(xs: list[float]) -> tuple[float, float]:
    """The mean of xs and its standard error (NaN with fewer than two values)."""
    m = sum(xs) / len(xs)
    return m, (sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs)) ** 0.5 if len(xs) > 1 else float("nan")


def pooled(results: list[dict], args) -> str:
    """Each runner against trl-rloo over the seeds present in both: mean seconds per step, and the ratio of their
    gains (over the starting model, with a `start` result; and of their per-step reward slopes) as the mean over
    seeds with its standard error *between* seeds (what one run's trajectory happens to reach varies from seed to
    seed more than the noise within a run says); gain/s ratio = steps/s ratio x gain ratio."""
    start = next((r for r in results if r["runner"] == START), None)
    by = {}
    for r in results:
        if r["runner"] != START:
            by.setdefault(r["runner"], {})[r.get("seed", args.seed)] = r
    base = by.get("trl-rloo", {})

    def listed(xs: list[float], fmt: str = ".2f") -> str:
        return ", ".join(f"{x:{fmt}}" for x in xs)

    lines = []
    for runner, runs in by.items():
        seeds = sorted(set(runs) & set(base))
        if runner == "trl-rloo" or len(seeds) < 2:
            continue
        per_step = [runs[s]["seconds"] / runs[s]["steps"] for s in seeds]
        base_step = [base[s]["seconds"] / base[s]["steps"] for s in seeds]
        speed = (sum(base_step) / len(seeds)) / (sum(per_step) / len(seeds))
        slopes = [reward_fit(runs[s]["rewards"])[0] / reward_fit(base[s]["rewards"])[0] for s in seeds]
        slope, slope_se = mean_se(slopes)
        # the two reward curves step by step (same prompts): their mean difference over the run, per seed
        diffs = [sum(u - v for u, v in zip(runs[s]["rewards"], base[s]["rewards"])) / len(base[s]["rewards"])
                 for s in seeds]
        d_mean, d_se = mean_se(diffs)
        line = (f"{runner} vs trl-rloo over seeds {', '.join(map(str, seeds))}: {speed:.2f}x steps/s (s/step "
                f"{sum(per_step) / len(seeds):.2f} vs {sum(base_step) / len(seeds):.2f})")
        if start:
            gains = [over_start(runs[s], start, args)[0] for s in seeds]
            base_gains = [over_start(base[s], start, args)[0] for s in seeds]
            ratios = [g / b for g, b in zip(gains, base_gains)]
            g_mean, g_se = mean_se(ratios)
            line += (f"; gain over the starting model {sum(gains) / len(gains):.3f} vs {sum(base_gains) / len(base_gains):.3f}"
                     f", ratio {g_mean:.2f} (s.e. {g_se:.2f} between seeds: {listed(ratios)}); gain/s over start "
                     f"{speed * g_mean:.2f}x (s.e. {speed * g_se:.2f})")
        line += (f"; per-step reward slope ratio {slope:.2f} (s.e. {slope_se:.2f}: {listed(slopes)}); gain/s by the "
                 f"slope {speed * slope:.2f}x (s.e. {speed * slope_se:.2f}); reward, step for step, {runner} minus "
                 f"trl-rloo: {d_mean:+.3f} (s.e. {d_se:.3f}: {listed(diffs, '+.3f')})")
        lines.append(line)
    return "\n".join(lines)


def over_start(r: dict, start: dict | None, args) -> tuple[float, float, list[float]]:
    """The run's gain over the starting model: the mean reward of its last 5 steps minus what the starting model
    scores on those steps' prompts (`start_baseline`), with its standard error (from the 5 steps), and the excess
    reward of every step. NaN without a `start` result. Unlike first 5 -> last 5, the zero is the starting model
    itself, on the same prompts, from many samples: not 5 noisy batches that already hold 4 updates."""
    if start is None:
        return float("nan"), float("nan"), []
    base = start_baseline(start, args, r.get("seed", args.seed), len(r["rewards"]))
    excess = [u - v for u, v in zip(r["rewards"], base)]
    return (*mean_se(excess[-5:]), excess)


def table(results: list[dict], args) -> str:
    start = next((r for r in results if r["runner"] == START), None)
    runs = [r for r in results if r["runner"] != START]
    head = (f"{'runner':<12} {'steps':>5} {'s/step':>7} " + " ".join(f"{k[:9]:>9}" for k in SPLIT)
            + f" {'tokens/s':>8} {'reward first5 -> last5':>22} {'slope/step (s.e.)':>18} {'gain/s':>9}"
            + (f" {'gain over start (s.e.)':>22} {'gain/s':>9}" if start else "") + f" {'peak MB':>8}")
    lines = [head]
    base = next((r for r in runs if r["runner"] == "trl-rloo"), None)
    for r in runs:
        n = max(r["steps"], 1)
        rew = r["rewards"]
        first, last = sum(rew[:5]) / max(len(rew[:5]), 1), sum(rew[-5:]) / max(len(rew[-5:]), 1)
        slope, se, _, _ = reward_fit(rew)
        r["gain_per_s"], r["gain_se"] = slope * n / r["seconds"], se * n / r["seconds"]  # per second of training
        gain, gain_se, _ = over_start(r, start, args)
        split = " ".join(f"{r['split'].get(k, 0.0) / n:9.2f}" for k in SPLIT)
        lines.append(f"{r['runner']:<12} {r['steps']:>5} {r['seconds'] / n:7.2f} {split} {r['tokens'] / r['seconds']:8.1f} "
                     f"{first:10.3f} -> {last:.3f} {slope:9.4f} ({se:.4f}) {r['gain_per_s']:9.2e}"
                     + (f" {gain:14.3f} ({gain_se:.3f}) {gain / r['seconds']:9.2e}" if start else "")
                     + f" {r['peak_mb']:8.0f}")
    if base is not None:
        for r in runs:
            if r is not base:
                ratio = r["gain_per_s"] / base["gain_per_s"] if base["gain_per_s"] else float("nan")
                paired = " paired" if r.get("prompts") == base.get("prompts") == "pgcore" else ""
                speed = base["seconds"] / base["steps"] / (r["seconds"] / r["steps"])
                over = ""
                if start:
                    (g, g_se, _), (b, b_se, _) = over_start(r, start, args), over_start(base, start, args)
                    ratio_start = (g / r["seconds"]) / (b / base["seconds"]) if g and b else float("nan")
                    ratio_se = abs(ratio_start) * ((g_se / g) ** 2 + (b_se / b) ** 2) ** 0.5 if g and b else float("nan")
                    over = f"{ratio_start:.2f}x gain/s over start (s.e. {ratio_se:.2f}), "
                lines.append(f"{r['runner']} vs trl-rloo: {speed:.2f}x steps/s, {over}{ratio:.2f}x gain/s by the slope "
                             f"({paired.strip() or 'independent'} s.e. {gain_ratio_se(r, base):.2f}), "
                             f"{r['peak_mb'] / base['peak_mb']:.2f}x peak memory")
    aggregation = next((r.get("loss_aggregation", "token") for r in runs if r["runner"].startswith("pgcore")), "-")
    lines.append(f"(model {args.model}, vader, {args.batch_size} prompts x {args.num_samples} samples, {args.max_new_tokens} "
                 f"new tokens, lr {args.lr:g}, KL {args.kl_coef:g} (TRL GRPO: 0), {args.threads} threads, seed {args.seed}, "
                 f"pgcore loss {aggregation}; gain/s = least-squares reward slope per step / seconds per step"
                 + (f"; gain over start = last 5 steps' reward - the starting model's on the same prompts "
                    f"({start['samples']} samples a prompt), per second of training" if start else "") + ")")
    return "\n".join(lines)


def run_worker(cmd: list[str], threads: int, label: str) -> dict | None:
    """Run one runner in its own process with `threads` compute threads: its RESULT line's dict, or None (the
    failure and the end of its stderr printed)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    print(f"running {label} ...", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        print(f"{label} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(line[len("RESULT "):])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        if args.worker == START:
            result = run_start(args)
        elif args.worker.startswith("pgcore"):
            result = run_pgcore(args, share_prompt=args.worker == "pgcore")
        else:
            result = run_trl(args, args.worker)
        print("RESULT " + json.dumps(result))
        return 0
    if args.load:
        results = [r for f in args.load for r in json.loads(Path(f).read_text())]
        start = [r for r in results if r["runner"] == START][-1:]  # seed-free: one for every seed's table
        if start and start[0]["model"] != args.model:
            print(f"lm_vs_trl.py: error: the start result is of model {start[0]['model']!r}, the tables of "
                  f"{args.model!r}; accepted: --model {start[0]['model']} or a start result of {args.model}", file=sys.stderr)
            return 2
        seeds = sorted({r.get("seed", args.seed) for r in results if r["runner"] != START})
        for seed in seeds:
            print(table(start + [r for r in results if r["runner"] != START and r.get("seed", args.seed) == seed],
                        argparse.Namespace(**{**vars(args), "seed": seed})))
        if len(seeds) > 1:
            print(pooled(results, args))
        return 0
    runners = [r.strip() for r in args.runners.split(",") if r.strip()]
    bad = [r for r in runners if r not in RUNNERS + (START,)]
    if bad:
        print(f"lm_vs_trl.py: error: runner {bad[0]!r} unknown; accepted: {', '.join((START,) + RUNNERS)}",
              file=sys.stderr)
        return 2
    results = []
    for runner in runners:
        cmd = [sys.executable, __file__, "--worker", runner, "--model", args.model, "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--num-samples", str(args.num_samples), "--max-new-tokens",
               str(args.max_new_tokens), "--lr", str(args.lr), "--kl-coef", str(args.kl_coef), "--seed", str(args.seed),
               "--threads", str(args.threads), "--loss-aggregation", args.loss_aggregation,
               "--start-samples", str(args.start_samples),
               *(["--prompts", args.prompts] if args.prompts else [])]
        result = run_worker(cmd, args.threads, runner)
        if result is None:
            return 1
        results.append(result)
        if args.save:
            from pgcore.files import atomic_write_text  # here: importing pgcore imports torch

            atomic_write_text(args.save, json.dumps(results, indent=1))
        print(table(results, args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
