"""Command line: train a causal LM with the policy gradient against a reward model.

    python -m pgcore.lm --reward-model tiny-sentiment            # the tiny tier, ~1 min on a CPU
    pgcore-lm --model smollm2-135m --reward-model vader --steps 60 --batch-size 4
    pgcore-lm --reward-model tiny-sentiment --resume             # continue from the newest checkpoint
    torchrun --nproc_per_node 2 -m pgcore.lm --reward-model tiny-sentiment      # data parallel (or accelerate launch)

Writes output/policy_gradient_metrics/ (training_metrics.csv, log_history.json, summary.json,
training_curves.png), checkpoints/checkpoint-<step>/ and the final model in models/<run-name>/.
Exit status: 0 done, 2 bad input (one line on stderr, nothing written; also when another run holds
the output or checkpoint folder, or a reward function fails on the first step), 1 the loss became NaN/inf
(the last good checkpoint is kept), 3 a reward function failed later in the run (a checkpoint and the
outputs are saved), 4 the disk filled up (the last complete checkpoint is kept), 130 interrupted by
Ctrl-C, 143 stopped by SIGTERM (for both: a checkpoint and the outputs are saved; continue with --resume).
training_metrics.csv grows row by row as the run goes (`tail -f` it).
Launched on several processes (`accelerate launch`, `torchrun`: WORLD_SIZE > 1), it trains data-parallel
with `pgcore.engine.distributed.AccelerateTrainer`: every process exits with the same status, only the main
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


def _int(lower: int):
    """An argparse type: an integer >= lower (0 or 1), else a one-line error naming the value."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; accepted: an integer >= {lower}") from None
        if value < lower:
            raise argparse.ArgumentTypeError(f"{text!r} is {'negative' if lower == 0 else 'not positive'}; accepted: "
                                             f"an integer >= {lower}")
        return value
    return parse


_positive_int, _nonneg_int = _int(1), _int(0)


def _finite(text: str) -> float:
    """An argparse type: a finite number (a reward weight may be negative)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; accepted: a finite number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not finite; accepted: a finite number")
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


# How each setting is read on the command line; the help text is the field's docstring (`field_docs`).
_POSITIVE = ("steps", "batch_size", "num_samples", "max_new_tokens", "eval_problems", "eval_samples",
             "updates_per_batch", "minibatches")
_NONNEGATIVE = ("seed", "kl_log_every", "eval_every", "warmup_steps", "save_every", "keep_last")
_NONNEGATIVE += ("log_completions",)
_REUSE = ("reusing a batch (TRL: num_iterations, steps_per_generation, loss_type cispo, epsilon, epsilon_high, "
          "importance_sampling_level, use_bias_correction_kl)")
_GROUPS = {"models and data": ("reward_model", "reward_label", "reward_input", "reward_fn", "reward_weights",
                               "reward_aggregation", "model", "prompts", "prompt_column"),
           _REUSE: ("updates_per_batch", "minibatches", "policy_loss",
                                                                  "clip_eps", "clip_eps_high", "ratio_level",
                                                                  "kl_loss_estimator", "kl_ratio_correction"),
           "outputs": ("output_dir", "checkpoint_dir", "model_dir", "run_name", "save_every", "keep_last", "device",
                       "dtype", "report_to", "log_completions")}
_METAVARS = {"reward_model": "NAME_OR_PATH", "model": "NAME_OR_PATH", "reward_label": "NAME", "prompts": "FILE",
             "output_dir": "DIR", "checkpoint_dir": "DIR", "model_dir": "DIR", "reward_fn": "MODULE:FUNCTION",
             "prompt_column": "NAME", "reward_weights": "W"}


def _parse_kwargs(name: str, default) -> dict:
    """argparse keywords of the `LMConfig` field `name`: its type check, or its choices."""
    from .config import DTYPES, KL_ESTIMATORS, LOSS_AGGREGATIONS, POLICY_LOSSES, RATIO_LEVELS, REPORTERS, \
        REWARD_AGGREGATIONS, REWARD_INPUTS, SCHEDULERS
    from ..lm.algorithm import ADVANTAGES, KL_PLACEMENTS

    choices = {"advantage": ADVANTAGES, "loss_aggregation": LOSS_AGGREGATIONS, "kl_estimator": KL_ESTIMATORS,
               "kl_in": KL_PLACEMENTS, "lr_scheduler": SCHEDULERS, "dtype": (*DTYPES, "bf16"),
               "reward_aggregation": REWARD_AGGREGATIONS, "reward_input": REWARD_INPUTS,
               "kl_loss_estimator": KL_ESTIMATORS, "policy_loss": POLICY_LOSSES, "ratio_level": RATIO_LEVELS}
    if name in choices:
        return {"choices": choices[name]}
    if name in ("reward_model", "reward_fn"):  # repeatable: one reward each
        return {"action": "append", "metavar": _METAVARS[name]}
    if name == "reward_weights":
        return {"nargs": "+", "type": _finite, "metavar": "W"}
    if name == "report_to":
        return {"nargs": "+", "choices": ("none", *REPORTERS)}
    if name in ("share_prompt", "kl_ratio_correction"):
        return {"action": argparse.BooleanOptionalAction}
    if name in _POSITIVE:
        return {"type": _positive_int}
    if name in _NONNEGATIVE:
        return {"type": _nonneg_int}
    if isinstance(default, float) or name == "clip_eps_high":
        return {"type": _float(0, strict=name in ("lr", "temperature", "max_grad_norm", "clip_eps", "clip_eps_high"))}
    return {"metavar": _METAVARS.get(name)}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one flag per `LMConfig` field (its docstring is the help, its default the
    default), plus --resume, --threads and --quiet."""
    from .config import LMConfig, field_docs

    p = _Parser(
        prog=PROG,
        description="Train a causal language model with the policy gradient (REINFORCE with RLOO / group / mean "
                    "baselines) against a reward model. Offline by default: the tiny tier builds itself from data/. "
                    "Every setting is explained in docs/lm.md.",
        formatter_class=_Formatter,
        epilog="exit status: 0 done; 1 the loss became NaN/inf (the last good checkpoint is kept); 2 bad input "
               "(nothing written), or another run holds the output/checkpoint folder, or a reward function failed "
               "on the first step; 3 a reward function failed later (a checkpoint and the outputs are saved); 4 the "
               "disk is full (the last complete checkpoint is kept, the outputs that fit are written); 130 "
               "interrupted with Ctrl-C, 143 stopped by SIGTERM (both save a checkpoint and the outputs first: "
               "continue with --resume)",
    )
    docs = field_docs(LMConfig)
    groups = {title: p.add_argument_group(title) for title in ("models and data", "the policy-gradient loop",
                                                                _REUSE, "outputs")}
    for f in dataclasses.fields(LMConfig):
        title = next((t for t, names in _GROUPS.items() if f.name in names), "the policy-gradient loop")
        given = f.name in ("reward_model", "reward_fn")  # what to train for is never implicit (one of them)
        groups[title].add_argument("--" + f.name.replace("_", "-"), default=None if given else f.default,
                                   help=docs[f.name], **_parse_kwargs(f.name, f.default))
    o = groups["outputs"]
    o.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                   help="continue from a checkpoint: the newest checkpoint-<step>/ in --checkpoint-dir, or PATH; "
                        "the other settings must match the checkpoint's (only --steps, output places and loggers "
                        "may change)")
    o.add_argument("--threads", type=_positive_int, default=None,
                   help="CPU threads for torch (default: torch's choice; tiny models run fastest on 1)")
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
    from .faults import EXIT_DISK_FULL, EXIT_REWARD_FN, DiskFullError
    from ..lm.reward_fns import RewardFunctionError
    from .trainer import Trainer

    if args.dtype == "bf16":
        args.dtype = "bfloat16"
    if not args.reward_model and not args.reward_fn:
        raise _fail("the following arguments are required: --reward-model (or --reward-fn)")
    args.reward_fn = tuple(args.reward_fn or ())
    args.report_to = ",".join(args.report_to) if isinstance(args.report_to, list) else args.report_to
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
    label = trainer.reward.label
    say(f"policy: {trainer.policy.name} ({sum(p.numel() for p in trainer.model.parameters()):,} parameters) "
        f"on {trainer.device}" + (f", {trainer.num_processes} processes" if trainer.num_processes > 1 else ""))
    rs = getattr(trainer, "reward_set", None)
    if rs is not None and len(rs.rewards) > 1:
        say("rewards: " + " + ".join(f"{w:g} x {n}" for w, n in zip(rs.weights.tolist(), rs.names))
            + f" ({rs.aggregation})")
    else:
        say(f"reward: {trainer.reward.name}"
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
    except RewardFunctionError as e:
        if trainer.global_step == first_step:  # the first batch showed it: bad input, nothing written
            _end(trainer)
            raise _fail(str(e)) from None
        where = f"; checkpoint {trainer.last_checkpoint}" if trainer.last_checkpoint else ""
        if main_process:
            print(f"{PROG}: error: {e}; stopped{where}; outputs in {config.output_dir}", file=sys.stderr)
        _end(trainer)
        return EXIT_REWARD_FN
    except DiskFullError as e:
        where = f"; kept the last complete checkpoint {trainer.last_checkpoint}" if trainer.last_checkpoint else \
            "; no complete checkpoint"
        if main_process:
            print(f"{PROG}: error: {e}{where}", file=sys.stderr)
        _end(trainer)
        return EXIT_DISK_FULL
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
