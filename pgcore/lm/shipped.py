"""The tiny models pgcore ships built (`pgcore/models/`): their recipes, a rebuild, and how close a rebuild comes.

Each tiny model is trained by a seeded recipe on one CPU thread (`pgcore.lm.tiny`, `tiny_sentiment`,
`tiny_arith`). The same recipe on the same kernels gives the same bits; on another CPU's kernels (AVX2 instead
of AVX-512, Apple's NEON) the last bits of each matmul differ and a thousand optimizer steps carry them into
every weight. So pgcore ships the weights, and every learner's notebook starts from the same model.

    python -m pgcore.lm.shipped --check    # rebuild each into a temporary folder, compare with the shipped bits
    python -m pgcore.lm.shipped --write    # rebuild into pgcore/models/ (after changing a recipe)
    python -m pgcore.lm.shipped --check --save FILE   # ... and store the reports; --load FILE prints them again

A changed recipe changes its fingerprint: pgcore then ignores the stale shipped folder and builds into the
user cache, and `--check` (and the test suite) says the shipped weights need `--write`.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Callable

import torch

from ..files import MODELS_DIR, atomic_write_text
from .tiny import BUILD_FILE, build_tiny, tiny_fingerprint
from .tiny_arith import build_tiny_arith, tiny_arith_fingerprint
from .tiny_sentiment import build_tiny_sentiment, tiny_sentiment_fingerprint

__all__ = ["RECIPES", "stale", "rebuild", "files_differ", "compare", "reproduced", "report_line", "main"]

RECIPES: dict[str, tuple[Callable[[], str], Callable[[Path], Path]]] = {
    "tiny": (tiny_fingerprint, build_tiny),
    "tiny-sentiment": (tiny_sentiment_fingerprint, build_tiny_sentiment),
    "tiny-arith": (tiny_arith_fingerprint, build_tiny_arith),
}
"""kind -> (fingerprint of the default recipe, build(out_dir)); the shipped folder is `MODELS_DIR / kind`"""

WEIGHTS = "model.safetensors"


def build_info(path: Path) -> dict:
    return json.loads((Path(path) / BUILD_FILE).read_text())


def stale(models: Path = MODELS_DIR) -> list[str]:
    """The kinds whose shipped folder is missing or was built from another recipe than today's."""
    out = []
    for kind, (fingerprint, _) in RECIPES.items():
        try:
            ok = build_info(models / kind)["fingerprint"] == fingerprint()
        except (OSError, ValueError, KeyError):
            ok = False
        if not ok:
            out.append(kind)
    return out


def rebuild(kind: str, out_dir: Path) -> Path:
    """Run `kind`'s default recipe into `out_dir` (atomically). Returns it."""
    if kind not in RECIPES:
        raise ValueError(f"unknown model kind {kind!r}; accepted: {', '.join(RECIPES)}")
    return RECIPES[kind][1](out_dir)


def files_differ(a: Path, b: Path) -> list[str]:
    """The files besides the weights and the build record (config, tokenizer: no floating point goes into them,
    so a rebuild must reproduce them byte for byte on any CPU) that differ or exist in one folder only."""
    names = {p.name for p in (*a.iterdir(), *b.iterdir())} - {WEIGHTS, BUILD_FILE}
    return sorted(n for n in names if not ((a / n).is_file() and (b / n).is_file()
                                           and (a / n).read_bytes() == (b / n).read_bytes()))


def compare(shipped: Path, rebuilt: Path) -> dict:
    """How close the model in `rebuilt` comes to the one in `shipped`: bit-equal tensors, the largest weight
    difference, the relative difference of all weights (‖a - b‖ / ‖a‖), the files that differ, and the
    final training loss each build recorded."""
    from safetensors.torch import load_file  # noqa: PLC0415

    a, b = load_file(Path(shipped) / WEIGHTS), load_file(Path(rebuilt) / WEIGHTS)
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise ValueError(f"{rebuilt} holds other tensors than {shipped}: not the same architecture")
    diff_sq = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in a)
    norm_sq = sum(float(a[k].double().pow(2).sum()) for k in a)
    info_a, info_b = build_info(shipped), build_info(rebuilt)
    return {
        "tensors": len(a),
        "bit_equal_tensors": sum(torch.equal(a[k], b[k]) for k in a),
        "max_abs_diff": max(float((a[k] - b[k]).abs().max()) for k in a),
        "rel_diff": (diff_sq / norm_sq) ** 0.5,
        "files_differ": files_differ(Path(shipped), Path(rebuilt)),
        "final_train_loss": (info_a["final_train_loss"], info_b["final_train_loss"]),
        "heldout_accuracy": (info_a.get("heldout_accuracy"), info_b.get("heldout_accuracy")),
        "shipped_on": info_a.get("built_on", {}),
        "rebuilt_on": info_b.get("built_on", {}),
    }


def reproduced(report: dict) -> tuple[bool, str]:
    """(ok, why) for a `compare` report. On the kernels the shipped weights were built with (`tiny.kernels()`)
    the rebuild must be bit-equal. On other kernels the weights drift apart over a thousand steps, so the files
    must match and the model must be as good: the final training loss within 10% or 0.01, the held-out accuracy
    (of a classifier) within 0.01."""
    same_kernels = report["shipped_on"] == report["rebuilt_on"] and report["shipped_on"]
    if report["files_differ"]:
        return False, f"files differ: {report['files_differ']}"
    if same_kernels:
        ok = report["bit_equal_tensors"] == report["tensors"]
        return ok, (f"same kernels ({report['rebuilt_on']}): {report['bit_equal_tensors']}/{report['tensors']} "
                    "tensors bit-equal")
    loss_a, loss_b = report["final_train_loss"]
    acc_a, acc_b = report.get("heldout_accuracy", (None, None))
    ok = abs(loss_b - loss_a) <= max(0.1 * loss_a, 0.01) and (acc_a is None or abs(acc_b - acc_a) <= 0.01)
    accuracy = f", held-out accuracy {acc_a} -> {acc_b}" if acc_a is not None else ""
    a, b = report["shipped_on"], report["rebuilt_on"]
    kernels = ", ".join(f"{k} {a.get(k)} -> {b.get(k)}" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k))
    return ok, (f"other kernels ({kernels}): final train loss {loss_a} -> "
                f"{loss_b}{accuracy}, weights {report['rel_diff']:.1e} apart (relative)")


def report_line(kind: str, report: dict) -> tuple[bool, str]:
    """(ok, the line `--check` prints for `kind`)."""
    ok, why = reproduced(report)
    return ok, (f"{kind}: {'reproduced' if ok else 'NOT reproduced'}; {why}; largest weight difference "
                f"{report['max_abs_diff']:.1e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgcore.lm.shipped", description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--check", action="store_true", help="rebuild into a temporary folder and compare")
    what.add_argument("--write", action="store_true", help=f"rebuild into --out (default {MODELS_DIR})")
    what.add_argument("--load", type=Path, metavar="FILE", help="print the reports a --check --save stored")
    parser.add_argument("--save", type=Path, metavar="FILE", help="with --check: store the reports (JSON)")
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="folder of the shipped models")
    parser.add_argument("--kind", choices=list(RECIPES), action="append", help="only this model (repeatable)")
    args = parser.parse_args(argv)
    if args.save is not None and not args.check:
        parser.error("--save goes with --check")
    kinds = args.kind or list(RECIPES)
    if args.write:
        for kind in kinds:
            path = rebuild(kind, args.out / kind)
            print(f"{kind}: built into {path} ({build_info(path)['train_seconds']} s)")
        return 0
    if args.load is not None:
        try:
            reports = json.loads(args.load.read_text())
        except (OSError, ValueError) as err:
            parser.error(f"--load {args.load}: not a stored report ({err})")
        failed = []
        for kind, report in reports.items():
            ok, line = report_line(kind, report)
            print(line)
            failed += [] if ok else [kind]
        return 1 if failed else 0
    failed = [k for k in stale(args.out) if k in kinds]
    for kind in failed:
        print(f"{kind}: the shipped weights are not today's recipe; rebuild with --write")
    reports = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in (k for k in kinds if k not in failed):
            reports[kind] = compare(args.out / kind, rebuild(kind, Path(tmp) / kind))
            ok, line = report_line(kind, reports[kind])
            print(line)
            failed += [] if ok else [kind]
    if args.save is not None:
        atomic_write_text(args.save, json.dumps(reports, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
