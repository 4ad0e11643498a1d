"""Predict, then run: a checked question placed just before the cell that shows its answer.

The learner picks one of a few answers (a short string), runs the check, then the next cell:

    from pgcore.exercises import nb04 as ex
    kl_penalty_length = ...        # "shorter", "longer" or "unchanged"
    ex.kl_penalty_length.check(kl_penalty_length)

A wrong pick gets the reason it is wrong; an answer that is none of the choices is told the choices. The
solution function's comments are the explanation (`ex.<name>.solution()`).
"""
from __future__ import annotations

from typing import Callable

from .core import Exercise, WrongAnswer

__all__ = ["prediction"]


def _normal(answer):
    return " ".join(answer.lower().split()) if isinstance(answer, str) else answer


def prediction(name: str, task: str, reference: Callable[[], str], choices: dict[str, str | None], *,
               checked: str, hint_text: str) -> Exercise:
    """A predict-then-run exercise. `choices` maps every accepted answer to the message of its mistake (None for
    the right one, which must be `reference()`)."""
    right = reference()
    if choices.get(right, "missing") is not None:
        raise ValueError(f"{name}: the reference's answer {right!r} must be a choice with no mistake message")
    accepted = ", ".join(repr(c) for c in choices)

    def validate(answer):
        return None if answer in choices else f"answer one of {accepted} (got {answer!r})"

    return Exercise(
        name=name, task=task, reference=reference, cases=lambda: [()], describe=lambda: "",
        checked=checked, hint_text=hint_text, value=True, kind="predict", normalize=_normal, validate=validate,
        wrong_answers=[WrongAnswer(c.replace(" ", "_"), c, msg) for c, msg in choices.items() if msg is not None],
        imports="",
    )
