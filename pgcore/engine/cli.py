"""Command line: train a causal LM with the policy gradient against a reward model.

    python -m pgcore.lm --reward-model tiny-sentiment            # the tiny tier, ~1 min on a CPU
    pgcore-lm --model smollm2-135m --reward-model vader --steps 60 --batch-size 4
    pgcore-lm --reward-model tiny-sentiment --resume             # continue from the newest checkpoint
    torchrun --nproc_per_node 2 -m pgcore.lm --reward-model tiny-sentiment      # data parallel (or accelerate launch)

Writes output/policy_gradient_metrics/ (training_metrics.csv, log_history.json, summary.json,
training_curves.png), checkpoints/checkpoint-<step>/ and the final model in models/<run-name>/.
Exit status: 0 done, 2 bad input (one line on stderr, nothing written; also when another run holds
the output or checkpoint folder), 1 the loss became NaN/inf (the last good checkpoint is kept), 130
interrupted by Ctrl-C, 143 stopped by SIGTERM (for both: a checkpoint and the outputs are saved;
continue with --resume). training_metrics.csv grows row by row as the run goes (`tail -f` it).
Launched on several processes (`accelerate launch`, `torchrun`: WORLD_SIZE > 1), it trains data-parallel
with `pgcore.lm.distributed.AccelerateTrainer`: every process exits with the same status, only the main
process prints progress and writes files, and an error is printed once per machine.

"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

PROG = "pgcore-lm"


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (no usage block), exit status 2."""

    def error(self, message):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message}\n" if _speaks() else None)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show "(default: X)" only when there is a default worth showing."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool) or action.required:
            return action.help
        return super()._get_help_string(action)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; accepted: an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not positive; accepted: an integer >= 1")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; accepted: an integer >= 0") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative; accepted: an integer >= 0")
    return value


def _float(lower: float, strict: bool):
    def parse(text: str) -> float:
        accepted = f"a number {'>' if strict else '>='} {lower:g}"
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; accepted: {accepted}") from None
        if not math.isfinite(value) or value < lower or (strict and value == lower):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; accepted: {accepted}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (defaults come from `LMConfig`)."""
    from .config import ADVANTAGES, KL_ESTIMATORS, KL_PLACEMENTS, LOSS_AGGREGATIONS, LMConfig

    d = LMConfig()
    p = _Parser(
        prog=PROG,
        description="Train a causal language model with the policy gradient (REINFORCE with RLOO / group / mean "
                    "baselines) against a reward model. Offline by default: the tiny tier builds itself from data/.",
        formatter_class=_Formatter,
        epilog="exit status: 0 done; 1 the loss became NaN/inf (the last good checkpoint is kept); 2 bad input "
               "(nothing written), or another run holds the output/checkpoint folder; 130 interrupted with Ctrl-C, "
               "143 stopped by SIGTERM (both save a checkpoint and the outputs first: continue with --resume)",
    )
    m = p.add_argument_group("models and data")
    m.add_argument("--reward-model", required=True, metavar="NAME_OR_PATH",
                   help="reward: tiny-sentiment (small classifier trained on data/), vader (rule-based), arithmetic "
                        "(a verifier: 1 when the completion of '{a}+{b}=' is the sum, else 0; its training problems "
                        "are the default prompts, held-out ones are never trained on), or an HF "
                        "sequence-classification model name / local path")
    m.add_argument("--reward-label", default=None, metavar="NAME",
                   help="the classifier label whose probability is the reward (default: the label named "
                        "positive/pos; required when the model has several outputs and no such label)")
    m.add_argument("--model", default=d.model, metavar="NAME_OR_PATH",
                   help="policy: tiny, tiny-arith (for --reward-model arithmetic), smollm2-135m (chat template "
                        "applied), an HF causal-LM name or local path")
    m.add_argument("--prompts", default=None, metavar="FILE",
                   help="text file with one prompt per line (default: data/prompts.txt)")
    t = p.add_argument_group("the policy-gradient loop")
    t.add_argument("--steps", type=_positive_int, default=d.steps,
                   help="optimizer steps (total, counting resumed ones)")
    t.add_argument("--seed", type=_nonneg_int, default=d.seed, help="seed of prompts, sampling and everything else")
    t.add_argument("--lr", type=_float(0, strict=True), default=d.lr, help="AdamW learning rate")
    t.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help="prompts per step")
    t.add_argument("--num-samples", type=_positive_int, default=d.num_samples,
                   help="completions per prompt (>= 2 for rloo and group)")
    t.add_argument("--max-new-tokens", type=_positive_int, default=d.max_new_tokens, help="longest completion")
    t.add_argument("--temperature", type=_float(0, strict=True), default=d.temperature,
                   help="sampling temperature (the log-probs use the same one)")
    t.add_argument("--advantage", choices=ADVANTAGES, default=d.advantage,
                   help="none: raw reward; mean: minus batch mean; rloo: minus the mean of the prompt's other "
                        "samples (= Dr. GRPO's r - mean up to the factor G/(G-1)); group: GRPO's (r - mean) / std "
                        "within the prompt's G samples")
    t.add_argument("--loss-aggregation", choices=LOSS_AGGREGATIONS, default=d.loss_aggregation,
                   help="how per-token terms become the loss: token = mean over all completion tokens of the batch "
                        "(DAPO, TRL's default); sequence = mean within each completion, then over completions (the "
                        "original GRPO); constant = sum over tokens / (completions x max-new-tokens) (Dr. GRPO); sum = "
                        "sum over each completion's tokens, mean over completions (RLOO, TRL's RLOOTrainer)")
    t.add_argument("--kl-coef", type=_float(0, strict=False), default=d.kl_coef,
                   help="weight of the KL(policy || initial policy) penalty subtracted from each completion's reward "
                        "(0: no penalty; the KL is logged anyway)")
    t.add_argument("--kl-estimator", choices=KL_ESTIMATORS, default=d.kl_estimator,
                   help="per-token KL estimate in the penalty: k1 = log(pi/ref) (unbiased gradient), k3 = ref/pi - 1 "
                        "- log(ref/pi) (lower-variance value, but a biased gradient when used as a reward)")
    t.add_argument("--kl-in", choices=KL_PLACEMENTS, default=d.kl_in,
                   help="reward: the KL penalty is subtracted from each completion's reward (detached, with "
                        "--kl-estimator); loss: GRPO's k3 term with its gradient, kl-coef x (aggregated) k3, is added "
                        "to the loss. The logged kl is the same in both")
    t.add_argument("--kl-log-every", type=_nonneg_int, default=d.kl_log_every,
                   help="with --kl-coef 0, run the frozen reference (to log the KL) only every N steps; 0: never "
                        "(the kl column stays empty). With --kl-coef > 0 it runs every step")
    t.add_argument("--share-prompt", action=argparse.BooleanOptionalAction, default=d.share_prompt,
                   help="run each prompt once (and the prefix every prompt shares, e.g. a chat template's system "
                        "turn, once for all) and share its key/value cache among its --num-samples completions, when "
                        "sampling and in the log-prob forwards: the same log-probs up to float rounding, much less "
                        "compute for long prompts. Default: on for chat-template models, off otherwise")
    t.add_argument("--eval-every", type=_nonneg_int, default=d.eval_every,
                   help="held-out pass@1 (sampled at --temperature) every N steps and of the final model, in "
                        "training_metrics.csv and summary.json; 0: never. Needs a verifier reward (arithmetic)")
    t.add_argument("--eval-problems", type=_positive_int, default=d.eval_problems,
                   help="held-out problems per evaluation")
    t.add_argument("--eval-samples", type=_positive_int, default=d.eval_samples,
                   help="samples per held-out problem per evaluation")
    t.add_argument("--entropy-coef", type=_float(0, strict=False), default=d.entropy_coef,
                   help="weight of the entropy bonus")
    t.add_argument("--warmup-steps", type=_nonneg_int, default=d.warmup_steps,
                   help="steps of linear learning-rate warmup (from 0) at the start of the run")
    t.add_argument("--max-grad-norm", type=_float(0, strict=True), default=d.max_grad_norm,
                   help="clip the gradient norm to this")
    o = p.add_argument_group("outputs")
    o.add_argument("--output-dir", default=d.output_dir, metavar="DIR",
                   help="training_metrics.csv, log_history.json, summary.json, training_curves.png go here")
    o.add_argument("--checkpoint-dir", default=d.checkpoint_dir, metavar="DIR",
                   help="checkpoint-<step>/ folders go here")
    o.add_argument("--model-dir", default=d.model_dir, metavar="DIR",
                   help="the final model + tokenizer (save_pretrained) go to DIR/RUN_NAME/")
    o.add_argument("--run-name", default=d.run_name, help="folder name of the final model inside --model-dir")
    o.add_argument("--save-every", type=_nonneg_int, default=d.save_every,
                   help="checkpoint every N steps (and at the end); 0: only at the end")
    o.add_argument("--keep-last", type=_nonneg_int, default=d.keep_last, help="keep the newest N checkpoints (0: all)")
    o.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                   help="continue from a checkpoint: the newest checkpoint-<step>/ in --checkpoint-dir, or PATH; "
                        "the other settings must match the checkpoint's (only --steps and output places may change)")
    o.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when present)")
    o.add_argument("--dtype", choices=("float32", "bfloat16", "bf16"), default=d.dtype,
                   help="precision of the forward passes: bfloat16 (bf16) autocasts sampling, log-probs and the "
                        "reference (weights and AdamW stay float32), for GPUs that have bf16")
    o.add_argument("--threads", type=_positive_int, default=None,
                   help="CPU threads for torch (default: torch's choice); tiny models run fastest on 1, and on a "
                        "busy machine extra threads mostly wait for each other")
    o.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def _speaks() -> bool:
    """False on the 2nd, 3rd, ... process of a machine under a launcher (LOCAL_RANK > 0): errors that
    every process meets alike are printed once per machine, not once per process."""
    return os.environ.get("LOCAL_RANK", "0").strip() in ("", "0")


def _fail(message: str) -> "SystemExit":
    if _speaks():
        print(f"{PROG}: error: {message}", file=sys.stderr)
    return SystemExit(2)


def _world_size() -> int:
    """Processes started by accelerate launch / torchrun (WORLD_SIZE); 1 for a plain run."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def main(argv: list[str] | None = None) -> int:
    """Run the CLI. Returns the exit status (argparse errors and bad input raise SystemExit(2))."""
    args = build_parser().parse_args(argv)
    from .locks import FolderInUseError
    from .run import RunTerminated
    from .config import LMConfig
    from .run import NonFiniteLossError
    from .trainer import Trainer

    if args.dtype == "bf16":
        args.dtype = "bfloat16"
    fields = {f.name for f in dataclasses.fields(LMConfig)}
    try:
        config = LMConfig(**{k: v for k, v in vars(args).items() if k in fields and k != "resume"})
    except ValueError as e:
        raise _fail(str(e)) from None
    if args.resume is True and not Path(config.checkpoint_dir).is_dir():
        raise _fail(f"--resume: checkpoint dir {config.checkpoint_dir!r} does not exist; accepted: a folder "
                    "holding checkpoint-<step>/ folders, or --resume PATH")

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    make_trainer = Trainer
    if _world_size() > 1:  # several processes: data parallel with Accelerate (imported only then)
        from .distributed import AccelerateTrainer as make_trainer
    # Everything is loaded and checked before any file is written: bad input changes nothing.
    try:
        trainer = make_trainer(config, resume=args.resume)
    except (ValueError, OSError) as e:
        raise _fail(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    except KeyboardInterrupt:
        if _speaks():
            print(f"{PROG}: interrupted while loading; nothing written", file=sys.stderr)
        return 130

    main_process = trainer.is_main_process
    say = (lambda *a: None) if args.quiet or not main_process else (lambda *a: print(*a, flush=True))
    label = getattr(trainer.reward, "label", None)
    say(f"policy: {trainer.policy.name} ({sum(p.numel() for p in trainer.model.parameters()):,} parameters) "
        f"on {trainer.device}" + (f", {trainer.num_processes} processes" if trainer.num_processes > 1 else ""))
    say(f"reward: {getattr(trainer.reward, 'name', config.reward_model)}"
        + (f" (label {label!r})" if label is not None else " (no label: the score itself)"))
    if trainer.resumed_from:
        say(f"resumed from {trainer.resumed_from} at step {trainer.global_step}")
    every = max(1, config.steps // 20)
    start, first_step = time.perf_counter(), trainer.global_step

    def report(tr, row):
        if row["step"] % every == 0 or row["step"] == config.steps:
            say(f"step {row['step']:>5}/{config.steps}  reward {row['reward_mean']:+.3f} ± {row['reward_std']:.3f}  "
                f"kl {'-' if row['kl'] is None else format(row['kl'], '.4f')}  entropy {row['entropy']:.3f}  len {row['completion_len']:.1f}  "
                f"{time.perf_counter() - start:.0f} s")

    try:
        result = trainer.train(callbacks=[report])
    except FolderInUseError as e:  # raised before the first step: nothing was written
        raise _fail(str(e)) from None
    except RunTerminated:
        if main_process:
            where = f"; checkpoint {trainer.last_checkpoint}" if trainer.last_checkpoint else ""
            print(f"{PROG}: terminated (SIGTERM) at step {trainer.global_step}{where}; outputs in "
                  f"{config.output_dir}; continue with --resume", file=sys.stderr)
        if trainer.num_processes > 1:
            _end(trainer)  # every process stopped after the same step
        return 143
    except KeyboardInterrupt:
        if not main_process:
            pass
        elif trainer.global_step == first_step:
            print(f"{PROG}: interrupted before step {first_step + 1} finished; nothing written", file=sys.stderr)
        else:
            where = f"; checkpoint {trainer.last_checkpoint}" if trainer.last_checkpoint else ""
            print(f"{PROG}: interrupted at step {trainer.global_step}{where}; outputs in {config.output_dir}; "
                  "continue with --resume", file=sys.stderr)
        return 130
    except NonFiniteLossError as e:
        where = f"; last good checkpoint: {trainer.last_checkpoint}" if trainer.last_checkpoint else ""
        if main_process:
            print(f"{PROG}: error: {e}; stopped{where}", file=sys.stderr)
        _end(trainer)
        return 1
    _end(trainer)
    if result.history:
        say(f"reward {result.summary['reward_first10_mean']:+.3f} (first 10 steps) -> "
            f"{result.summary['reward_last20_mean']:+.3f} (last 20 steps)")
    if result.output_dir:
        say(f"metrics: {result.output_dir}")
    if result.last_checkpoint:
        say(f"checkpoint: {result.last_checkpoint}")
    if result.model_path:
        say(f"model: {result.model_path}  (load with AutoModelForCausalLM.from_pretrained)")
    return 0


def _end(trainer) -> None:
    """A distributed run: wait for every process, then close the process group (nothing for one process)."""
    if hasattr(trainer, "end"):
        trainer.end()


if __name__ == "__main__":
    sys.exit(main())
