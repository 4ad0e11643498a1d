"""The machinery behind every checked exercise: run a learner's answer on fixed cases, name known mistakes.

An `Exercise` holds a reference solution, deterministic test cases (inputs; the expected outputs come
from `pgcore` where it has the function, else from the reference), the classic wrong answers it
recognizes (each with the message that names the mistake), a hint, and an optional `diagnose` hook for
property checks (e.g. "the baseline depends on the sample's own reward").

    ex.check(answer)   prints one verdict and returns True only when the answer is correct
    ex.hint()          prints a hint
    ex.solution()      prints the reference solution's source (real code: exec it and it passes)

Verdicts are short, plain text with numbers rounded to 4 decimals, so a notebook's stored output of
a stub ("not answered yet") is stable under nbval.
"""
from __future__ import annotations

import inspect
import math
import os
import sys
import textwrap
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

__all__ = ["Exercise", "WrongAnswer", "Result", "Verdict", "close", "fmt"]

_HERE = os.path.dirname(os.path.abspath(__file__))
NOT_ANSWERED = "not answered yet: replace the stub with your answer and run the cell again"


# --------------------------------------------------------------------------------------------
# printing: short, rounded, deterministic
# --------------------------------------------------------------------------------------------

def _round(x: float, digits: int = 4):
    if isinstance(x, bool):
        return x
    if isinstance(x, int):
        return x
    if isinstance(x, float) and not math.isfinite(x):
        return x
    r = round(float(x), digits)
    return 0.0 if r == 0 else r  # no "-0.0"


def _nested(x, digits: int):
    if isinstance(x, list):
        return [_nested(v, digits) for v in x]
    return _round(x, digits)


def fmt(x: Any, digits: int = 4) -> str:
    """A value as short text: tensors as (nested) lists rounded to `digits`, bools as 0/1, strings quoted."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bool:
            x = x.long()
        return str(_nested(x.tolist(), digits)).replace("'", "")
    if isinstance(x, (tuple, list)):
        inner = ", ".join(fmt(v, digits) for v in x)
        return f"({inner})" if isinstance(x, tuple) else f"[{inner}]"
    if isinstance(x, str):
        return repr(x)
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return str(_round(x, digits))
    try:  # numpy arrays and scalars
        import numpy as np

        if isinstance(x, (np.ndarray, np.generic)):
            return fmt(torch.as_tensor(np.asarray(x)), digits)
    except ImportError:  # pragma: no cover
        pass
    return repr(x)


# --------------------------------------------------------------------------------------------
# comparing an output with the expected one
# --------------------------------------------------------------------------------------------

def _as_like(out, expected):
    """`out` converted to the type of `expected` where that is harmless (a list for a tensor), else None."""
    if isinstance(expected, torch.Tensor):
        if isinstance(out, torch.Tensor):
            return out.detach()
        try:
            return torch.as_tensor(out, dtype=expected.dtype)
        except (TypeError, ValueError, RuntimeError):
            return None
    if isinstance(expected, bool):
        return out if isinstance(out, bool) else None
    if isinstance(expected, (int, float)):
        if isinstance(out, torch.Tensor) and out.numel() == 1:
            return out.item()
        try:
            import numpy as np

            if isinstance(out, np.generic):
                return out.item()
        except ImportError:  # pragma: no cover
            pass
        if isinstance(out, bool):  # True / False for a reward of 1.0 / 0.0
            return float(out)
        return out if isinstance(out, (int, float)) else None
    return out


def close(out, expected, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    """True when `out` equals `expected` up to floating-point tolerance (shapes and types must agree).

    A list or array is compared as a tensor, a one-element tensor as a number, True/False as 1.0/0.0.
    """
    if isinstance(expected, tuple):
        return (isinstance(out, (tuple, list)) and len(out) == len(expected)
                and all(close(o, e, rtol, atol) for o, e in zip(out, expected)))
    got = _as_like(out, expected)
    if got is None:
        return False
    if isinstance(expected, torch.Tensor):
        if got.shape != expected.shape:
            return False
        if expected.dtype == torch.bool or not expected.is_floating_point():
            return bool(torch.equal(got.to(torch.float64), expected.to(torch.float64)))
        return bool(torch.allclose(got.to(expected.dtype), expected, rtol=rtol, atol=atol, equal_nan=True))
    if isinstance(expected, float) or isinstance(got, float):
        return math.isclose(float(got), float(expected), rel_tol=rtol, abs_tol=atol)
    return got == expected


def _shape_note(out, expected) -> str:
    if isinstance(expected, torch.Tensor):
        if not isinstance(out, torch.Tensor):
            got = _as_like(out, expected)
            if got is None:
                return f" (you returned a {type(out).__name__}; expected a tensor of shape {tuple(expected.shape)})"
            out = got
        if out.shape != expected.shape:
            return f" (shape {tuple(out.shape)}; expected shape {tuple(expected.shape)})"
    return ""


# --------------------------------------------------------------------------------------------
# the exercise
# --------------------------------------------------------------------------------------------

@dataclass
class WrongAnswer:
    """A classic mistake: an answer that makes it, and the message that names it."""

    name: str
    """short id, used by tests and the CLI"""
    answer: Any
    """a function with the exercise's signature (or a value, for a value exercise)"""
    message: str
    """what the learner reads, naming the mistake"""


@dataclass
class Result:
    """The outcome of one check: status in {"unanswered", "correct", "wrong", "error"} and the message."""

    status: str
    message: str
    wrong_answer: str | None = None
    """the name of the recognized wrong answer, if one was recognized"""

    @property
    def correct(self) -> bool:
        return self.status == "correct"


class Verdict:
    """What `check` returns: true when the answer is correct. A notebook shows nothing for it (the printed
    message is the cell's output), so a cell ending in `ex.name.check(f)` has one stable output line."""

    __slots__ = ("correct",)

    def __init__(self, correct: bool):
        self.correct = bool(correct)

    def __bool__(self) -> bool:
        return self.correct

    def __eq__(self, other) -> bool:
        return self.correct == bool(other) if isinstance(other, (bool, Verdict)) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.correct)

    def __repr__(self) -> str:
        return repr(self.correct)

    def _ipython_display_(self) -> None:  # IPython calls this instead of printing Out[n]: nothing to show
        pass


class _LearnerError(Exception):
    def __init__(self, exc: BaseException):
        super().__init__(str(exc))
        self.exc = exc


@dataclass
class Exercise:
    """One checked exercise. See the module docstring."""

    name: str
    """the attribute name in its notebook module, e.g. "reward_to_go" (ex.reward_to_go.check(...))"""
    task: str
    """one line: what to write or compute"""
    reference: Callable
    """the reference solution: a function with the learner's signature (a value exercise: no arguments)"""
    cases: Callable[[], Sequence[tuple]]
    """builds the test inputs (argument tuples); a value exercise has one case, ()"""
    describe: Callable[..., str]
    """the inputs of a case as text, e.g. "for logits [0.5, -1.0, 2.0] and rewards [1.0, 0.0, 0.5]" """
    checked: str
    """what a correct answer was checked against, for the "correct" message"""
    hint_text: str
    wrong_answers: list[WrongAnswer] = field(default_factory=list)
    oracle: Callable | None = None
    """computes the expected output from a case (e.g. the pgcore function); default: the reference"""
    diagnose: Callable[[Callable], str | None] | None = None
    """a property check run when no listed wrong answer matches: returns a message naming the mistake, or None"""
    validate: Callable[..., str | None] | None = None
    """validate(output, *case) -> a message for an output that is wrong in kind (e.g. a loss without a
    gradient) though its numbers may be right, or None"""
    value: bool = False
    """True: the answer is a value (a number to compute, a choice to predict), not a function"""
    kind: str = "implement"
    """what it asks: "implement" (code the notebook shows), "beyond" (one step past it), "predict" (a result,
    before the cell that shows it)"""
    normalize: Callable[[Any], Any] | None = None
    """applied to a value answer before it is compared (e.g. a choice's case and spaces)"""
    func: str = ""
    """the name of the learner's function in the notebook cell, when `name` would hide a name the notebook
    defines earlier (e.g. "my_gae"); default: `name`"""
    imports: str = "import torch\n"
    """the imports the printed solution needs (printed above it, so the solution runs as it is)"""
    rtol: float = 1e-5
    atol: float = 1e-6

    # ---- what a learner calls ------------------------------------------------------------------
    def check(self, answer) -> Verdict:
        """Print the verdict on `answer` (your function, or your value); true when it is correct."""
        result = self.evaluate(answer)
        _say(result.message)
        return Verdict(result.correct)

    def hint(self) -> None:
        """Print a hint."""
        _say(f"hint ({self.name}): {self.hint_text}")

    def solution(self) -> None:
        """Print the reference solution's code."""
        _say(self.solution_source())

    def solution_source(self) -> str:
        src = textwrap.dedent(inspect.getsource(self.reference)).rstrip() + "\n"
        src = src.replace(f"def {self.reference.__name__}(", f"def {self.func_name}(", 1)
        return (self.imports.rstrip() + "\n\n\n" if self.imports else "") + src

    @property
    def func_name(self) -> str:
        """The learner's function (or value) in the notebook cell and in the printed solution."""
        return self.func or self.name

    @property
    def module(self) -> str:
        """The notebook module that holds this exercise, e.g. "nb02"."""
        return self.reference.__module__.rsplit(".", 1)[-1]

    def stub_source(self) -> str:
        """What the learner starts from: the function's signature and a NotImplementedError (or `...`)."""
        if self.value:
            return f"{self.func_name} = ...  # your answer here\n"
        lines = textwrap.dedent(inspect.getsource(self.reference)).splitlines()
        end = next(i for i, line in enumerate(lines) if line.rstrip().endswith(":"))  # the def, as written
        head = "\n".join(lines[: end + 1]).replace(f"def {self.reference.__name__}(", f"def {self.func_name}(", 1)
        return f"{head}\n    raise NotImplementedError  # your code here\n"

    def cell_source(self, filled: bool = False) -> str:
        """The notebook cell of this exercise: the stub (or, `filled`, the reference solution) and the check."""
        if self.value:  # the answer itself (the solution's comments say why: ex.<name>.solution())
            body = f"{self.func_name} = {self.reference()!r}" if filled else self.stub_source()
        else:
            body = self.solution_source() if filled else self.stub_source()
        return (f"from pgcore.exercises import {self.module} as ex\n\n{body.rstrip()}\n\n"
                f"ex.{self.name}.check({self.func_name})")

    def __repr__(self) -> str:
        return f"<exercise {self.name}: {self.task}>"

    # ---- the check ------------------------------------------------------------------------------
    def expected(self) -> list:
        fn = self.oracle or self.reference
        return [fn(*_copy(args)) for args in self.cases()]

    def _run(self, answer, args):
        if self.value:
            return self.normalize(answer) if self.normalize is not None and answer is not Ellipsis else answer
        try:
            return answer(*_copy(args))
        except NotImplementedError:
            raise
        except Exception as exc:  # the learner's own error: reported, never the checker's
            raise _LearnerError(exc) from None

    def outputs(self, answer) -> list:
        """`answer` run on every case (a wrong answer's outputs; raises on the first error)."""
        return [self._run(answer, args) for args in self.cases()]

    def evaluate(self, answer) -> Result:
        """The verdict on `answer` as a `Result` (what `check` prints)."""
        if answer is None or answer is Ellipsis:
            return Result("unanswered", NOT_ANSWERED)
        if not self.value and not callable(answer):
            return Result("wrong", f"not yet: expected a function (def ...), got a {type(answer).__name__}")
        cases = list(self.cases())
        expected = self.expected()
        outs = []
        try:
            for args in cases:
                outs.append(self._run(answer, args))
        except NotImplementedError:
            return Result("unanswered", NOT_ANSWERED)
        except _LearnerError as err:
            return Result("error", _error_message(err.exc, self.describe(*cases[len(outs)])))
        if any(o is Ellipsis for o in outs):
            return Result("unanswered", NOT_ANSWERED)
        if not self.value and all(o is None for o in outs):
            return Result("wrong", "not yet: your function returned None: is a `return` missing?")
        if self.validate is not None:
            for o, args in zip(outs, cases):
                msg = self.validate(o, *args)
                if msg:
                    where = self.describe(*args)
                    return Result("wrong", f"not yet: {msg}" + (f" ({where})" if where else ""), "validate")
        bad = [i for i, (o, e) in enumerate(zip(outs, expected)) if not close(o, e, self.rtol, self.atol)]
        if not bad:
            example = self.describe(*cases[0])
            lead = f"{example}, your answer is {fmt(outs[0])}; " if not self.value else f"your answer {fmt(outs[0])} "
            return Result("correct", f"correct: {lead}checked {self.checked}")
        i = bad[0]
        where = self.describe(*cases[i])
        yours = f"your answer is {fmt(outs[i])}{_shape_note(outs[i], expected[i])}; expected {fmt(expected[i])}"
        numbers = f"{where}, {yours}"
        if self.value:
            numbers = yours
        for wrong in self.wrong_answers:
            try:
                theirs = self.outputs(wrong.answer)
            except Exception:  # a wrong answer that cannot run on a case never matches
                continue
            if all(close(o, w, self.rtol, self.atol) for o, w in zip(outs, theirs)):
                return Result("wrong", f"not yet: {wrong.message}. {_cap(numbers)}", wrong.name)
        if self.diagnose is not None and not self.value:
            try:
                msg = self.diagnose(answer)
            except Exception:
                msg = None
            if msg:
                return Result("wrong", f"not yet: {msg}. {_cap(numbers)}", "diagnosed")
        return Result("wrong", f"not yet: {numbers}")


def _say(text: str) -> None:
    """Print `text` and its newline in ONE write: a Jupyter kernel may flush between print's two writes, and the
    cell then has two stream outputs instead of one line."""
    sys.stdout.write(text + "\n")


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _copy(args: tuple) -> tuple:
    """Fresh copies of tensor arguments, so an answer that writes into its inputs changes nothing else."""
    return tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)


def _error_message(exc: BaseException, where: str) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not os.path.abspath(f.filename).startswith(_HERE + os.sep)]
    lines = [f"error: {where}, your function raised {type(exc).__name__}: {exc}"]
    if frames:
        lines.append("Traceback (most recent call last; the checker's frames hidden):")
        lines.extend(line.rstrip("\n") for line in traceback.format_list(frames))
    return "\n".join(lines)
