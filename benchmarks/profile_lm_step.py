"""Profile: where the milliseconds of one `pgcore.lm` engine step go on the tiny tiers.

Two workloads, each the engine's `Trainer.step()` with the settings of its command:
  tiny-arith  README's `python -m pgcore.lm --model tiny-arith --reward-model arithmetic --advantage group
              --batch-size 64 --num-samples 8 --max-new-tokens 6 --lr 5e-4 --kl-coef 0` (its --eval-every
              25 is left out: the held-out evaluation runs once every 25 steps, not in a step)
  tiny        notebook 04's main run: tiny + tiny-sentiment, batch 8, 4 samples, 12 new tokens, lr 3e-4, beta 0.1

For each: warm-up steps, then `--steps` timed steps (wall and CPU seconds, the engine's own split:
generate / reward / reference / policy forward+backward / optimizer), counts of the model's forward calls
and of all nn.Module calls per step, a torch.profiler table of the top operators by self CPU time, and
the arithmetic of a step (matmul FLOPs of the model's token passes) against this CPU's measured matmul
throughput, the floor a step cannot go under. Nothing in pgcore is changed.

  python benchmarks/profile_lm_step.py [--threads 1] [--steps 10] --save benchmarks/results/profile_lm_step.json
  python benchmarks/profile_lm_step.py --load benchmarks/results/profile_lm_step.json
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
from pathlib import Path

import torch

from pgcore.files import atomic_write_text

WORKLOADS = {
    "tiny-arith": dict(model="tiny-arith", reward_model="arithmetic", advantage="group", batch_size=64,
                       num_samples=8, max_new_tokens=6, lr=5e-4, kl_coef=0.0),
    "tiny": dict(model="tiny", reward_model="tiny-sentiment", batch_size=8, num_samples=4, max_new_tokens=12,
                 lr=3e-4, kl_coef=0.1),
}
PHASES = ("generate", "reward", "reference", "policy", "optimizer")


def matmul_gflops(m: int, k: int, n: int, seconds: float = 0.5) -> float:
    """Measured fp32 GFLOP/s of (m, k) @ (k, n) on this CPU at the current thread count."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    return 2 * m * k * n * reps / (time.perf_counter() - start) / 1e9


def step_flops(model, rows: int, prompt_len: float, completion_len: float, reference: float,
               prompt_rows: int | None = None) -> dict:
    """Matmul FLOPs of one step's token passes (2 * weights per token forward, 3x that with the backward;
    attention scores and the vocabulary projection included; layer norms, softmax and GELU left out).
    reference: the share of steps that run the reference forward (1: every step); prompt_rows: the rows the
    prompt positions run for (the distinct prompts with a shared prompt; None: every row)."""
    c = model.config
    d, L, V = c.n_embd, c.n_layer, c.vocab_size
    per_token = L * (12 * d * d) * 2 + 2 * d * V          # QKV + proj + MLP (4d) per layer, and the LM head
    ctx = prompt_len + completion_len
    attn = lambda n_tok, span: L * 2 * 2 * d * span * n_tok  # QK^T and AV
    tokens = (rows if prompt_rows is None else prompt_rows) * prompt_len + rows * completion_len
    fwd = tokens * per_token + attn(tokens, ctx / 2)       # cached generation too: each position runs once
    out = {"generate": fwd, "policy": 3 * fwd, "reference": reference * fwd}
    out["total"] = sum(out.values())
    return out


def profile_workload(name: str, steps: int, warmup: int) -> dict:
    from pgcore.engine import LMConfig, Trainer

    cfg = LMConfig(**WORKLOADS[name], steps=warmup + steps + 3, seed=0, eval_every=0, output_dir=None,
                   checkpoint_dir=None, model_dir=None)
    trainer = Trainer(cfg)
    model = trainer.model
    calls = {"model": 0, "modules": 0}

    forward = model.forward

    @functools.wraps(forward)  # not a hook: a model with hooks runs its own forward, not the engine's (gpt2.py)
    def count_model(*args, **kwargs):
        calls["model"] += 1
        return forward(*args, **kwargs)

    def count_module(*_):
        calls["modules"] += 1

    model.forward = count_model
    handle = torch.nn.modules.module.register_module_forward_pre_hook(count_module)
    for _ in range(warmup):
        trainer.step()
    calls.update(model=0, modules=0)
    rows, cpu0, wall0 = [], time.process_time(), time.perf_counter()
    for _ in range(steps):
        rows.append(trainer.step())
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    handle.remove()
    per_step = {k: v / steps for k, v in calls.items()}
    split = {p: sum(r[f"time_{p}"] for r in rows) / steps for p in PHASES}

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            trainer.step()
    events = prof.key_averages()
    total_self = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    ops = [{"op": e.key, "calls": e.count / 3, "self_ms": e.self_cpu_time_total / 3 / 1e3} for e in top]
    n_ops = sum(e.count for e in events if e.key.startswith("aten::")) / 3
    by_calls = sorted(events, key=lambda e: e.count, reverse=True)[:8]
    most_called = [{"op": e.key, "calls": e.count / 3, "self_ms": e.self_cpu_time_total / 3 / 1e3} for e in by_calls]

    b = trainer.last_batch
    prompt_len = float(b.prompt_mask.sum(dim=1).float().mean())
    completion_len = float(b.completion_mask.sum(dim=1).float().mean())
    ref_share = 1.0 if cfg.kl_coef > 0 else (1 / cfg.kl_log_every if cfg.kl_log_every else 0.0)
    prompt_rows = len(b) // cfg.num_samples if trainer.share_prompt else None
    flops = step_flops(model, len(b), prompt_len, completion_len, ref_share, prompt_rows)
    d = model.config.n_embd
    tokens = int(len(b) * (prompt_len + completion_len))
    return {"name": name, "settings": WORKLOADS[name], "params": sum(p.numel() for p in model.parameters()),
            "rows": len(b), "prompt_len": prompt_len, "completion_len": completion_len,
            "steps": steps, "wall_s_per_step": wall / steps, "cpu_s_per_step": cpu / steps, "split_s": split,
            "model_calls_per_step": per_step["model"], "module_calls_per_step": per_step["modules"],
            "aten_ops_per_step": n_ops, "most_called_ops": most_called, "profiler_self_ms_per_step": total_self / 3 / 1e3, "top_ops": ops,
            "flops": flops, "gflops_at_model_shape": matmul_gflops(tokens, d, 4 * d),
            "gflops_big": matmul_gflops(1024, 1024, 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per workload")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--only", choices=sorted(WORKLOADS), default=None)
    parser.add_argument("--save", default=None)
    parser.add_argument("--load", default=None)
    args = parser.parse_args()
    if args.load:
        print_report(json.loads(Path(args.load).read_text()))
        return
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    names = [args.only] if args.only else list(WORKLOADS)
    result = {"workloads": [profile_workload(n, args.steps, args.warmup) for n in names]}
    result["machine"] = (f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} "
                         f"thread(s), load average {load0:.1f} -> {os.getloadavg()[0]:.1f}, "
                         f"measured {time.strftime('%Y-%m-%d')}")
    if args.save:
        atomic_write_text(args.save, json.dumps(result, indent=1) + "\n")
    print_report(result)


def print_report(result: dict) -> None:
    print(f"machine: {result['machine']}")
    for w in result["workloads"]:
        s, f = w["split_s"], w["flops"]
        print(f"\n{w['name']}: {w['params']:,} parameters; {w['rows']} completions of {w['completion_len']:.1f} tokens "
              f"after prompts of {w['prompt_len']:.1f}; {w['steps']} timed steps")
        print(f"  step: {w['wall_s_per_step'] * 1e3:.0f} ms wall, {w['cpu_s_per_step'] * 1e3:.0f} ms CPU")
        print("  split (ms): " + ", ".join(f"{p} {s[p] * 1e3:.0f}" for p in PHASES))
        print(f"  per step: {w['model_calls_per_step']:.0f} model forward calls, {w['module_calls_per_step']:,.0f} "
              f"nn.Module calls, {w['aten_ops_per_step']:,.0f} aten operator calls")
        print(f"  arithmetic: {f['total'] / 1e9:.3f} GFLOP a step (generate {f['generate'] / 1e9:.3f}, policy "
              f"fwd+bwd {f['policy'] / 1e9:.3f}, reference {f['reference'] / 1e9:.3f})")
        print(f"  this CPU: {w['gflops_at_model_shape']:.0f} GFLOP/s on the model's (tokens x d) @ (d x 4d) matmul, "
              f"{w['gflops_big']:.0f} on 1024^3; the floor of the arithmetic: "
              f"{f['total'] / 1e9 / w['gflops_at_model_shape'] * 1e3:.1f} ms a step")
        print(f"  top operators by self CPU time (profiler, ms per step; profiled total "
              f"{w['profiler_self_ms_per_step']:.0f} ms):")
        for op in w["top_ops"][:10]:
            print(f"    {op['op']:<42} {op['calls']:>8.0f} calls {op['self_ms']:>8.1f} ms")
        print("  most called operators (calls and ms per step):")
        for op in w.get("most_called_ops", [])[:6]:
            print(f"    {op['op']:<42} {op['calls']:>8.0f} calls {op['self_ms']:>8.1f} ms")


if __name__ == "__main__":
    main()
