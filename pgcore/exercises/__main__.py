"""`python -m pgcore.exercises [nb01 ...]`: run every reference solution and every recognized wrong answer
through its check, print a table, exit 1 if any check misbehaves.

A check misbehaves when the reference fails, a stub is not reported as "not answered yet", or a listed
wrong answer passes or is not named by its own message (a check that cannot fail is a defect).
"""
from __future__ import annotations

import sys
import time

from . import all_exercises


def _stub(*args, **kwargs):
    raise NotImplementedError


def audit(exercise) -> dict:
    """One exercise's self-test: reference, stub, printed solution, each wrong answer. Returns a table row."""
    t0 = time.perf_counter()
    problems = []
    ref = exercise.evaluate(exercise.reference() if exercise.value else exercise.reference)
    if not ref.correct:
        problems.append(f"reference: {ref.message}")
    if exercise.evaluate(... if exercise.value else _stub).status != "unanswered":
        problems.append("the stub is not reported as not answered")
    namespace: dict = {}
    exec(compile(exercise.solution_source(), f"<solution {exercise.name}>", "exec"), namespace)
    printed = namespace[exercise.func_name]
    if not exercise.evaluate(printed() if exercise.value else printed).correct:
        problems.append("the printed solution does not pass")
    named = 0
    for wrong in exercise.wrong_answers:
        res = exercise.evaluate(wrong.answer)
        if res.status == "wrong" and res.wrong_answer == wrong.name and wrong.message in res.message:
            named += 1
        else:
            problems.append(f"wrong answer {wrong.name!r}: {res.status}, recognized as {res.wrong_answer!r}")
    if not exercise.wrong_answers:
        problems.append("no wrong answer listed")
    return {"seconds": time.perf_counter() - t0, "named": named, "problems": problems}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    chosen = [(m, ex) for m, ex in all_exercises() if not argv or m in argv]
    if not chosen:
        print(f"no exercises for {' '.join(argv)}; accepted: nb01 ... nb06", file=sys.stderr)
        return 2
    print(f"{'notebook':8}  {'exercise':26}  {'reference':9}  {'wrong answers named':19}  {'seconds':>7}")
    bad = 0
    for module, ex in chosen:
        row = audit(ex)
        ok = not row["problems"]
        bad += not ok
        print(f"{module:8}  {ex.name:26}  {'passes' if ok else 'FAILS':9}  "
              f"{row['named']}/{len(ex.wrong_answers):<17}  {row['seconds']:7.2f}")
        for p in row["problems"]:
            print(f"          problem: {p}")
    print(f"{len(chosen)} exercises, {len(chosen) - bad} behave" + (f", {bad} misbehave" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
