"""Every checked exercise (pgcore.exercises): the reference passes, every listed wrong answer fails with its
own named message, a stub is "not answered yet", a learner's exception is one clear message with the
learner's frames only, the printed solution is real code that passes, and one exercise per notebook is
answered correctly in a real Jupyter kernel."""
from __future__ import annotations

import contextlib
import io
import linecache
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pgcore.exercises import MODULES, all_exercises
from pgcore.exercises.core import NOT_ANSWERED, Exercise, close, fmt

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = all_exercises()
IDS = [f"{m}.{ex.name}" for m, ex in EXERCISES]
WRONG = [(m, ex, w) for m, ex in EXERCISES for w in ex.wrong_answers]
WRONG_IDS = [f"{m}.{ex.name}.{w.name}" for m, ex, w in WRONG]


def _printed(fn, *args) -> tuple[object, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        out = fn(*args)
    return out, buf.getvalue()


def _stub(*args, **kwargs):
    raise NotImplementedError  # your code here


def test_every_notebook_has_at_least_three_checked_exercises():
    per_module = {m: [ex for mm, ex in EXERCISES if mm == m] for m in MODULES}
    assert all(len(v) >= 3 for v in per_module.values()), {m: len(v) for m, v in per_module.items()}
    names = [f"{m}.{ex.name}" for m, ex in EXERCISES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("module", MODULES)
def test_at_most_a_third_reimplement_and_every_exercise_is_in_its_notebook(module):
    """Most checked exercises ask for a prediction or one step beyond the shown code; each one has its cell."""
    import json

    mine = [ex for m, ex in EXERCISES if m == module]
    assert {ex.kind for ex in mine} <= {"implement", "beyond", "predict"}
    assert 3 * sum(ex.kind == "implement" for ex in mine) <= len(mine), [(ex.name, ex.kind) for ex in mine]
    assert any(ex.kind == "predict" for ex in mine), "a predict-then-run question at a key result"
    paths = sorted((ROOT / "notebooks").glob(f"{module[2:]}_*.ipynb"))
    (path,) = paths
    cells = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    for ex in mine:
        hits = [c for c in cells if f"ex.{ex.name}.check({ex.func_name})" in c]
        assert len(hits) == 1, f"{path.name}: {len(hits)} cells check {ex.name}"
        assert f"from pgcore.exercises import {module} as ex" in hits[0]


@pytest.mark.parametrize("module,ex", EXERCISES, ids=IDS)
def test_reference_passes_with_its_numbers(module, ex):
    t0 = time.perf_counter()
    ok, out = _printed(ex.check, ex.reference() if ex.value else ex.reference)
    assert ok == True and bool(ok) and repr(ok) == "True"  # noqa: E712 (a Verdict, not a bool)
    assert out.startswith("correct: ") and out.count("\n") == 1
    assert fmt(ex.expected()[0]) in out  # the learner's own numbers, which here are the expected ones
    assert time.perf_counter() - t0 < 10  # generous: a check is meant to take well under 2 s


@pytest.mark.parametrize("module,ex", EXERCISES, ids=IDS)
def test_stub_none_and_ellipsis_are_not_answered(module, ex):
    for answer in (None, ...) if ex.value else (None, ..., _stub):  # a value exercise's stub is `name = ...`
        ok, out = _printed(ex.check, answer)
        assert not ok and out == NOT_ANSWERED + "\n"


@pytest.mark.parametrize("module,ex", EXERCISES, ids=IDS)
def test_every_exercise_can_fail(module, ex):
    assert ex.wrong_answers, "a check without a recognized wrong answer is untested"
    expected = ex.expected()
    for wrong in ex.wrong_answers:  # each differs from the reference on at least one case
        theirs = ex.outputs(wrong.answer)
        assert not all(close(t, e, ex.rtol, ex.atol) for t, e in zip(theirs, expected)), wrong.name


@pytest.mark.parametrize("module,ex,wrong", WRONG, ids=WRONG_IDS)
def test_wrong_answer_is_named(module, ex, wrong):
    ok, out = _printed(ex.check, wrong.answer)
    result = ex.evaluate(wrong.answer)
    assert not ok and result.status == "wrong" and result.wrong_answer == wrong.name
    assert out.startswith(f"not yet: {wrong.message}. ")
    assert "your answer is" in out.lower() and "expected" in out  # the learner's numbers next to the expected ones


@pytest.mark.parametrize("module,ex", EXERCISES, ids=IDS)
def test_hint_and_printed_solution_pass(module, ex):
    _, hint = _printed(ex.hint)
    assert hint.startswith(f"hint ({ex.name}): ") and len(hint) > 40
    _, printed = _printed(ex.solution)
    assert printed == ex.solution_source() + "\n"
    assert "_solution" not in printed and f"def {ex.func_name}(" in printed
    namespace: dict = {}
    exec(compile(printed, f"<solution {ex.name}>", "exec"), namespace)  # a fresh namespace: its imports suffice
    answer = namespace[ex.func_name]
    assert ex.evaluate(answer() if ex.value else answer).correct


@pytest.mark.parametrize("module,ex", EXERCISES, ids=IDS)
def test_learner_exception_is_one_clear_message(module, ex):
    if ex.value:
        pytest.skip("a value exercise runs no learner code")
    namespace: dict = {}
    source = ex.stub_source().replace("raise NotImplementedError  # your code here",
                                      "scale = {'a': 1}\n    return scale['b']")
    linecache.cache["learner_cell.py"] = (len(source), None, source.splitlines(True), "learner_cell.py")  # as IPython
    exec(compile(source, "learner_cell.py", "exec"), namespace)
    ok, out = _printed(ex.check, namespace[ex.func_name])
    assert not ok
    lines = out.splitlines()
    assert lines[0].startswith("error: for ") and lines[0].endswith("your function raised KeyError: 'b'")
    assert lines[1] == "Traceback (most recent call last; the checker's frames hidden):"
    assert 'File "learner_cell.py", line 3' in out and "scale['b']" in out
    assert "exercises" not in "\n".join(lines[1:])  # no frame of the checker


def test_a_function_that_returns_nothing_or_the_wrong_kind():
    from pgcore.exercises import nb02

    _, out = _printed(nb02.discounted_weights.check, lambda rew, done, gamma: None)
    assert out == "not yet: your function returned None: is a `return` missing?\n"
    _, out = _printed(nb02.discounted_weights.check, 3)
    assert out == "not yet: expected a function (def ...), got a int\n"
    ok, out = _printed(nb02.discounted_weights.check, lambda rew, done, gamma: rew[:2])
    assert not ok and "(shape (2, 1); expected shape (3, 1))" in out
    def plain_number(logp, adv, mask):
        return float(-(logp * adv * mask).sum().detach() / mask.sum())

    ok, out = _printed(nb02.reinforce_loss.check, plain_number)
    assert not ok and out.startswith("not yet: your loss is a plain number")
    ok, out = _printed(nb02.reinforce_loss.check,
                       lambda logp, adv, mask: (-(logp * adv * mask).sum() / mask.sum()).detach())
    assert not ok and out.startswith("not yet: your loss has no gradient")


def test_unrecognized_mistake_shows_the_first_differing_case():
    from pgcore.exercises import nb01

    logits, rewards = nb01.exact_gradient.cases()[0]
    def twice(logits, rewards):
        return 2 * nb01.exact_gradient.reference(logits, rewards)

    ok, out = _printed(nb01.exact_gradient.check, twice)
    want = nb01.exact_gradient.reference(logits, rewards)
    assert not ok
    assert out == (f"not yet: for logits {fmt(logits)} and rewards {fmt(rewards)}, your answer is {fmt(2 * want)}; "
                   f"expected {fmt(want)}\n")


def test_rloo_property_check_names_an_action_dependent_baseline():
    from pgcore.exercises import nb03

    def half_self(rew):  # a baseline with half the weight on r_i: not a listed wrong answer
        others = (rew.sum(dim=1, keepdim=True) - rew) / (rew.shape[1] - 1)
        return rew - 0.5 * rew.mean(dim=1, keepdim=True) - 0.5 * others

    result = nb03.rloo.evaluate(half_self)
    assert result.status == "wrong" and result.wrong_answer == "diagnosed"
    assert result.message.startswith("not yet: the baseline depends on the action")


def test_answers_may_write_into_their_inputs_and_return_lists():
    from pgcore.exercises import nb03, nb04

    def in_place(rew):
        G = rew.shape[1]
        rew -= (rew.sum(dim=1, keepdim=True) - rew) / (G - 1)   # overwrites the input: still correct
        return rew

    assert nb03.rloo.evaluate(in_place).correct

    def as_lists(ids, eos):
        return nb04.completion_mask.reference(ids, eos).bool().tolist()

    assert nb04.completion_mask.evaluate(as_lists).correct


def test_fmt_is_short_and_stable():
    assert fmt(torch.tensor([0.123456, -0.00001, 2.0])) == "[0.1235, 0.0, 2.0]"
    assert fmt(torch.tensor([[True, False]])) == "[[1, 0]]"
    assert fmt((1, 0.5)) == "(1, 0.5)" and fmt("12\n") == "'12\\n'"


def test_value_exercise():
    ex = Exercise(name="answer", task="a number", reference=lambda: 0.25, cases=lambda: [()],
                  describe=lambda: "", checked="exactly", hint_text="think", value=True,
                  wrong_answers=[])
    assert ex.evaluate(0.25).correct and ex.evaluate(...).status == "unanswered"
    assert ex.evaluate(0.5).message == "not yet: your answer is 0.5; expected 0.25"


def test_cli_runs_every_reference_and_wrong_answer():
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "pgcore.exercises"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(EXERCISES)} exercises, {len(EXERCISES)} behave" in proc.stdout
    for m, ex in EXERCISES:
        assert f"{m:8}  {ex.name:26}  passes" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "pgcore.exercises", "nb99"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=60)
    assert bad.returncode == 2 and "accepted: nb01" in bad.stderr


def test_importing_pgcore_exercises_stays_light():
    code = ("import sys, pgcore, pgcore.exercises; from pgcore.exercises import nb04; "
            "nb04.k3_mean.check(nb04.k3_mean.reference); "
            "print('transformers' in sys.modules, 'matplotlib' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "False False"


def test_one_exercise_per_notebook_answered_in_a_real_kernel():
    """Each notebook module's first exercise cell, stub replaced by the reference solution, run in a Jupyter kernel."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    firsts = {}
    for m, ex in EXERCISES:
        firsts.setdefault(m, ex)
    cells = [nbformat.v4.new_code_cell(f"import sys\nsys.path.insert(0, {str(ROOT)!r})")]
    cells += [nbformat.v4.new_code_cell(ex.cell_source(filled=True)) for ex in firsts.values()]
    cells += [nbformat.v4.new_code_cell(ex.cell_source()) for ex in firsts.values()]  # the stubs
    nb = nbformat.v4.new_notebook(cells=cells)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    assert all([o["output_type"] for o in c.outputs] == ["stream"] for c in nb.cells[1:])  # no Out[n]: False
    texts = [c.outputs[0]["text"] for c in nb.cells[1:]]
    n = len(firsts)
    for (m, ex), text in zip(firsts.items(), texts[:n]):
        assert text.startswith("correct: ") and text.count("\n") == 1, (m, ex.name, text)
    for text in texts[n:]:
        assert text == NOT_ANSWERED + "\n"


@pytest.mark.parametrize("module", MODULES)
def test_exercise_cells_do_not_hide_the_notebooks_own_names(module):
    """A stub named like a function the notebook defines earlier would break re-running that earlier cell."""
    import ast
    import json

    paths = sorted((ROOT / "notebooks").glob(f"{module[2:]}_*.ipynb"))
    if not paths:
        pytest.skip(f"no notebook {module[2:]}_*.ipynb yet")
    names = set()
    for cell in json.loads(paths[0].read_text())["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or "from pgcore.exercises import" in source:
            continue
        source = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    hidden = [ex.func_name for m, ex in EXERCISES if m == module and ex.func_name in names | {"ex"}]
    assert not hidden, f"{paths[0].name} defines {hidden}: give the exercise a func= name"


def test_a_prediction_takes_one_of_its_choices_in_any_case_and_names_the_mistake():
    from pgcore.exercises.predict import prediction

    def ref():
        return "down"

    ex = prediction("p", "predict", ref, {"up": "it goes down", "down": None}, checked="(shown)", hint_text="think")
    assert ex.evaluate("  DOWN ").correct and ex.evaluate(...).status == "unanswered"
    assert ex.evaluate("Up").message == "not yet: it goes down. Your answer is 'up'; expected 'down'"
    assert ex.evaluate("sideways").message == "not yet: answer one of 'up', 'down' (got 'sideways')"
    with pytest.raises(ValueError, match="must be a choice"):
        prediction("q", "predict", ref, {"up": None, "down": "no"}, checked="", hint_text="")
