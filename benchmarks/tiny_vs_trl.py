"""The course's tiny tiers: `pgcore.lm` against TRL on the same work, seconds per step and learning per step.

    pip install -c .ci/constraints.txt -e ".[bench]"                    # TRL, pinned to the version measured
    python benchmarks/tiny_vs_trl.py --tier tiny-arith --save benchmarks/results/tiny_vs_trl_arith.json
    python benchmarks/tiny_vs_trl.py --tier tiny --save benchmarks/results/tiny_vs_trl_tiny.json
    python benchmarks/tiny_vs_trl.py --load benchmarks/results/tiny_vs_trl_arith.json benchmarks/results/tiny_vs_trl_tiny.json

Tiers (the work of the course's own runs):
  tiny-arith  the README's command: tiny-arith and the arithmetic verifier, 64 prompts x 8 completions, 6 new
              tokens, lr 5e-4, beta 0, group advantages ((r - mean) / std in each prompt's group), the token mean
              of the loss over the batch. TRL: GRPOTrainer with its defaults for exactly that (beta 0,
              loss_type "dapo", scale_rewards "group"), its reward function the same verifier
              (`pgcore.lm.arith.arithmetic_reward`). After training, every runner's model is scored on the same
              200 held-out problems x 16 samples (`pgcore.lm.evaluate.sample_correct`): held-out pass@1.
  tiny        notebook 04's main run: tiny and tiny-sentiment, 8 prompts x 4 samples, 12 new tokens, lr 3e-4,
              beta 0.1 (k1, in the reward), RLOO advantages, the loss summed over each completion's tokens (TRL
              RLOOTrainer's loss). TRL: RLOOTrainer (beta 0.1), its reward function tiny-sentiment's score.
Both: a constant learning rate, gradient-norm clip 1, temperature 1 with no top-k / top-p, fp32, the same
prompts in the same order step by step (pgcore's seeded draw; TRL's shuffle off, checked), `--threads` threads.

Runners, each in its own process (model loading not timed): `pgcore` (the engine's defaults), `pgcore-naive`
(the engine with every fast path of issue 29 swapped for its naive twin: `share_prompt` off, so Hugging Face
`generate` and one forward over every prompt + completion row; transformers' own GELU; the log-softmax one
row at a time; the reference run at every step, `kl_log_every` 1: the engine as it was before them), and `trl` (the tier's TRL trainer).
Seconds per step and their split are means over steps 2.. (step 1 pays one-time warm-up). `--save` keeps the raw results;
`--load` prints the tables again. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lm_vs_trl as base  # noqa: E402  (the TRL runner and its timing hooks)
import naive as naive_twins  # noqa: E402  (the engine before issue 29's fast paths)

TIERS = {
    "tiny-arith": dict(model="tiny-arith", reward_model="arithmetic", batch_size=64, num_samples=8, max_new_tokens=6,
                       lr=5e-4, kl_coef=0.0, advantage="group", loss_aggregation="token"),
    "tiny": dict(model="tiny", reward_model="tiny-sentiment", batch_size=8, num_samples=4, max_new_tokens=12,
                 lr=3e-4, kl_coef=0.1, advantage="rloo", loss_aggregation="sum"),
}
RUNNERS = ("pgcore", "pgcore-naive", "trl")
HELDOUT = dict(problems=200, samples=16, seed=0)


def heldout_pass1(model, tokenizer) -> float:
    """Held-out pass@1 of a trained tiny-arith model: the same problems and samples for every runner."""
    from pgcore.lm import arith, evaluate
    from pgcore.lm.models import Policy

    policy = Policy(model=model.eval(), tokenizer=tokenizer, name="tiny-arith", chat_template=False)
    pairs = arith.problems("heldout", HELDOUT["problems"], seed=HELDOUT["seed"])
    return float(evaluate.sample_correct(policy, pairs, HELDOUT["samples"], seed=HELDOUT["seed"] + 1).mean())


def run_pgcore(args, naive: bool) -> dict:
    import torch

    from pgcore.engine import LMConfig, Trainer

    torch.set_num_threads(args.threads)
    if naive:
        naive_twins.use_naive_twins()
    cfg = LMConfig(**TIERS[args.tier], steps=args.steps, seed=args.seed, kl_estimator="k1", lr_scheduler="constant",
                   max_grad_norm=1.0, output_dir=None, checkpoint_dir=None, model_dir=None,
                   **(naive_twins.NAIVE_CONFIG if naive else {}))
    trainer = Trainer(cfg)
    start = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - start
    h = result.history
    split = {k: sum(r[f"time_{k}"] for r in h) for k in base.SPLIT}
    warm = {k: sum(r[f"time_{k}"] for r in h[1:]) for k in base.SPLIT}  # steps 2.. (step 1: warm-up)
    out = {"runner": "pgcore-naive" if naive else "pgcore", "tier": args.tier, "steps": len(h), "seconds": wall,
           "split": split, "split_warm": warm, "step_seconds": [r["time"] for r in h], "tokens": sum(r["tokens"] for r in h),
           "rewards": [r["reward_mean"] for r in h], "peak_mb": base.peak_mb(), "seed": args.seed,
           "threads": args.threads, "share_prompt": trainer.share_prompt}
    if args.tier == "tiny-arith":
        out["heldout_pass1"] = heldout_pass1(trainer.model, trainer.tokenizer)
    return out


def run_trl(args) -> dict:
    from pgcore.lm.models import load_prompts
    from pgcore.lm.rewards import load_reward
    from pgcore.lm.tiny import tiny_dir
    from pgcore.lm.tiny_arith import tiny_arith_dir

    t = TIERS[args.tier]
    for k in ("batch_size", "num_samples", "max_new_tokens", "lr", "kl_coef"):
        setattr(args, k, t[k])
    reward = load_reward(t["reward_model"])
    if args.tier == "tiny-arith":
        from pgcore.lm.arith import arithmetic_reward

        rows, path, kind, extra = reward.default_prompts(), tiny_arith_dir(), "trl-grpo", dict(beta=0.0)

        def score(texts, prompts):
            return arithmetic_reward(prompts, texts).tolist()
    else:
        rows, path, kind, extra = load_prompts(None), tiny_dir(), "trl-rloo", dict(beta=t["kl_coef"])

        def score(texts, prompts):
            return reward.score(texts).tolist()

    def finish(model):
        if args.tier != "tiny-arith":
            return {}
        from pgcore.lm import load_policy

        return {"heldout_pass1": heldout_pass1(model, load_policy("tiny-arith").tokenizer)}

    out = base.trl_train(args, kind, str(path), rows, score, extra, finish=finish)
    return {**out, "runner": "trl", "trainer": kind, "tier": args.tier, "threads": args.threads}


def mean_step(r: dict) -> float:
    s = r["step_seconds"][1:] or r["step_seconds"]
    return sum(s) / len(s)


def table(results: list[dict]) -> str:
    lines = []
    for tier in TIERS:
        rs = [r for r in results if r["tier"] == tier]
        if not rs:
            continue
        trl = next((r for r in rs if r["runner"] == "trl"), None)
        lines.append(f"\n{tier}: {rs[0]['threads']} thread(s), seed {rs[0]['seed']}, {rs[0]['steps']} steps; "
                     f"TRL = {trl['trainer'] if trl else '-'}")
        head = (f"{'runner':<13} {'s/step':>7} " + " ".join(f"{k:>9}" for k in base.SPLIT) +
                f" {'vs TRL':>7} {'reward first5 -> last5':>23} {'held-out pass@1':>15} {'peak MB':>8}")
        lines += [head, "-" * len(head)]
        for r in rs:
            n = r["steps"] - 1
            split = " ".join(f"{r['split_warm'].get(k, 0.0) / n:9.3f}" for k in base.SPLIT)
            speed = f"{mean_step(trl) / mean_step(r):6.2f}x" if trl else "      -"
            rw = r["rewards"]
            first, last = sum(rw[:5]) / len(rw[:5]), sum(rw[-5:]) / len(rw[-5:])
            p1 = f"{r['heldout_pass1']:.3f}" if r.get("heldout_pass1") is not None else "-"
            lines.append(f"{r['runner']:<13} {mean_step(r):7.3f} {split} {speed:>7} {first:>11.3f} -> {last:<8.3f} "
                         f"{p1:>15} {r['peak_mb']:8.0f}")
    return "\n".join(lines).lstrip("\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tier", choices=sorted(TIERS), default="tiny-arith")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runners", default=",".join(RUNNERS), help=f"comma-separated, from {', '.join(RUNNERS)}")
    p.add_argument("--save", default=None, help="write every runner's raw result to this JSON file")
    p.add_argument("--load", nargs="+", default=None, help="print the tables of --save files (and run nothing)")
    p.add_argument("--worker", choices=RUNNERS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        result = run_trl(args) if args.worker == "trl" else run_pgcore(args, naive=args.worker == "pgcore-naive")
        print("RESULT " + json.dumps(result))
        return 0
    if args.load:  # one table per file (each file is one measurement)
        print("\n".join(table(json.loads(Path(f).read_text())) for f in args.load))
        return 0
    runners = [r.strip() for r in args.runners.split(",") if r.strip()]
    bad = [r for r in runners if r not in RUNNERS]
    if bad or args.steps < 2:
        print(f"tiny_vs_trl.py: error: runner {bad[0]!r} unknown; accepted: {', '.join(RUNNERS)}" if bad else
              f"tiny_vs_trl.py: error: --steps {args.steps}; accepted: 2 or more", file=sys.stderr)
        return 2
    results = []
    for runner in runners:
        cmd = [sys.executable, __file__, "--worker", runner, "--tier", args.tier, "--steps", str(args.steps),
               "--seed", str(args.seed), "--threads", str(args.threads)]
        result = base.run_worker(cmd, args.threads, f"{runner} on {args.tier}")
        if result is None:
            return 1
        results.append(result)
        if args.save:
            from pgcore.files import atomic_write_text  # here: importing pgcore imports torch

            atomic_write_text(args.save, json.dumps(results, indent=1))
        print(table(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
