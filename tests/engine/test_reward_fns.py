"""Reward functions of the user's own (`--reward-fn`), several rewards with weights, and their aggregation:
the functions get the dataset's columns, None leaves a completion out, a misbehaving function is one line
(exit 2 on the first step, 3 later with a checkpoint kept), and resume stays bitwise."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from pgcore.engine.cli import main
from pgcore.engine.rewards import combine_rewards, masked_advantages
from pgcore.lm.algorithm import lm_advantages
from pgcore.lm.reward_fns import RewardFunction, RewardFunctionError, load_reward_fn

ROOT = Path(__file__).resolve().parents[2]
TIME = ["time", "time_generate", "time_reward", "time_update", "time_reference", "time_policy", "time_optimizer"]
RUN = ["--model", "tiny-arith", "--max-new-tokens", "6", "--batch-size", "4", "--num-samples", "4", "--advantage",
       "group", "--kl-coef", "0", "--lr", "5e-4", "--seed", "1", "--quiet"]
FUNCS = '''
import math, os
CALLS = {"n": 0}

def echo_answer(prompts, completions, answer, **kw):
    return [float(a) for a in answer]

def half_none(prompts, completions, answer, **kw):
    return [None if int(a) % 2 else 1.0 for a in answer]

def all_none(prompts, completions, **kw):
    return [None] * len(completions)

def raises(prompts, completions, **kw):
    raise KeyError("no such key")

def short(prompts, completions, **kw):
    return [1.0] * (len(completions) - 1)

def text(prompts, completions, **kw):
    return ["high"] * len(completions)

def nan(prompts, completions, **kw):
    return [math.nan] * len(completions)

def inf(prompts, completions, **kw):
    return [math.inf] * len(completions)

def fails_at_step_3(prompts, completions, **kw):
    CALLS["n"] += 1
    if CALLS["n"] >= 3:
        return [1.0, "oops"] + [0.0] * (len(completions) - 2)
    return [0.5] * len(completions)

def digits(prompts, completions, answer, **kw):
    return [1.0 if c.strip() == a else 0.0 for c, a in zip(completions, answer)]
'''


def places(root: Path) -> list[str]:
    return ["--output-dir", str(root / "out"), "--checkpoint-dir", str(root / "ckpt"), "--model-dir", str(root / "m")]


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "funcs.py").write_text(FUNCS)
    rows = [{"prompt": f"{a}+{a + 1}=", "answer": str(2 * a + 1 + (a % 3 == 0))} for a in range(10, 18)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def fn(root: Path, name: str) -> list[str]:
    return ["--reward-fn", f"{root / 'funcs.py'}:{name}"]


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


# ---------------------------------------------------------------- the function protocol
def test_load_reward_fn_from_a_file_and_a_module(files):
    f = load_reward_fn(f"{files / 'funcs.py'}:echo_answer")
    assert f.score(["x", "y"], prompts=["p", "q"], columns={"answer": ["3", "4"]}).tolist() == [3.0, 4.0]
    g = load_reward_fn("pgcore.lm.passk:pass_at_k")  # any importable callable
    assert g.name == "pgcore.lm.passk:pass_at_k"
    for spec, words in [("nofunction", "module:function"), (f"{files}/missing.py:f", "no such file"),
                        (f"{files / 'funcs.py'}:nothere", "no callable 'nothere'"),
                        ("no_such_module_xyz:f", "cannot import")]:
        with pytest.raises(ValueError, match=words):
            load_reward_fn(spec)


@pytest.mark.parametrize("out,words", [
    ([1.0], "returned 1 values for 2 completions"),
    ([1.0, "high"], "returned 'high' for completion 1 (not a number)"),
    ([1.0, math.nan], "returned nan for completion 1"),
    ([math.inf, 1.0], "returned inf for completion 0"),
    (3.0, "returned 3.0"),
])
def test_a_bad_return_is_one_line_naming_the_function_step_and_value(out, words):
    def bad(prompts, completions, **kw):
        return out

    with pytest.raises(RewardFunctionError) as e:
        RewardFunction(bad, name="mine.py:bad").score(["a", "b"], prompts=["p", "p"], step=7)
    msg = str(e.value)
    assert "'mine.py:bad' at step 7" in msg and words in msg and "\n" not in msg, msg


def test_none_becomes_nan_and_numbers_of_any_kind_are_accepted():
    import numpy as np

    r = RewardFunction(lambda prompts, completions, **kw: [None, np.float32(0.5), torch.tensor(2.0), True])
    out = r.score(["a", "b", "c", "d"], prompts=["p"] * 4)
    assert math.isnan(out[0]) and out[1:].tolist() == [0.5, 2.0, 1.0]


def test_conversational_prompts_get_conversational_completions_as_in_trl():
    seen = {}

    def look(prompts, completions, **kw):
        seen["c"] = completions
        return [0.0] * len(completions)

    RewardFunction(look).score(["hi"], prompts=[[{"role": "user", "content": "say hi"}]])
    assert seen["c"] == [[{"role": "assistant", "content": "hi"}]]


# ---------------------------------------------------------------- aggregation and advantages
def test_summing_first_collapses_a_group_that_normalizing_first_keeps():
    """Correctness on a 0/2 scale and format 0/1 with weight 2: every sample's weighted sum is 2, so summed first
    the group has no signal; normalized first (GDPO), each reward still ranks the samples."""
    r = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # (G=4, K=2): one prompt
    none = torch.zeros_like(r, dtype=torch.bool)
    w = torch.tensor([1.0, 2.0])
    summed, _ = combine_rewards(r, none, w, "sum_then_normalize", 4)
    assert summed.tolist() == [2.0, 2.0, 2.0, 2.0]
    assert torch.equal(lm_advantages(summed.view(1, 4), "group"), torch.zeros(1, 4))
    normed, _ = combine_rewards(r, none, w, "normalize_then_sum", 4)
    adv = lm_advantages(normed.view(1, 4), "group")
    assert adv.abs().min() > 0.5 and (adv[0, :2] < 0).all() and (adv[0, 2:] > 0).all()


def test_masked_advantages_leave_unscorable_samples_out():
    score = torch.tensor([[1.0, 0.0, 5.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
    valid = torch.tensor([[True, True, False, True], [True, True, True, True]])
    for kind in ("none", "mean", "rloo", "group"):
        assert torch.equal(masked_advantages(score, torch.ones_like(valid), kind), lm_advantages(score, kind))
        adv = masked_advantages(score, valid, kind)
        assert adv[0, 2] == 0
        assert torch.allclose(adv[1], lm_advantages(score[1:], kind)[0]) or kind == "mean"
    three = torch.tensor([[1.0, 0.0, 1.0]])
    assert torch.allclose(masked_advantages(score[:1], valid[:1], "rloo")[0, [0, 1, 3]], lm_advantages(three, "rloo")[0])
    assert torch.allclose(masked_advantages(score[:1], valid[:1], "group")[0, [0, 1, 3]],
                          lm_advantages(three, "group")[0])
    none = torch.tensor([[True, False], [False, False]])  # row 0: its first reward is None
    s, v = combine_rewards(torch.tensor([[math.nan, 1.0], [1.0, 2.0]]), none, torch.ones(2), "sum_then_normalize", 2)
    assert s.tolist() == [1.0, 3.0] and v.tolist() == [True, True]
    s, v = combine_rewards(torch.tensor([[math.nan], [2.0]]), none[:, :1], torch.ones(1), "sum_then_normalize", 2)
    # a reward model's own NaN is not None: it stays NaN, for the NaN guard
    s2, _ = combine_rewards(torch.tensor([[math.nan], [2.0]]), torch.zeros(2, 1, dtype=torch.bool), torch.ones(1),
                            "sum_then_normalize", 2)
    assert math.isnan(s2[0])
    assert s.tolist() == [0.0, 2.0] and v.tolist() == [False, True]


# ---------------------------------------------------------------- the command line
def test_functions_get_the_dataset_columns_and_each_reward_is_logged(files, capsys):
    code = main([*RUN, "--prompts", str(files / "qa.jsonl"), *fn(files, "echo_answer"), *fn(files, "half_none"),
                 "--reward-weights", "1", "10", "--batch-size", "8", "--steps", "2", *places(files)])
    assert code == 0, capsys.readouterr().err
    df = pd.read_csv(files / "out" / "training_metrics.csv")
    answers = [float(json.loads(line)["answer"]) for line in (files / "qa.jsonl").read_text().splitlines()]
    assert df["reward/echo_answer_mean"].tolist() == pytest.approx([sum(answers) / 8] * 2)
    assert (df["reward/half_none_mean"] == 1.0).all() and (df["reward/half_none_std"] == 0.0).all()
    evens = sum(1 for a in answers if int(a) % 2 == 0)
    weighted = (sum(answers) + 10 * evens) / 8  # every row has echo_answer; half_none only on even answers
    assert df["reward_mean"].tolist() == pytest.approx([weighted] * 2)
    summary = json.loads((files / "out" / "summary.json").read_text())
    assert summary["config"]["reward_fn"] == [f"{files / 'funcs.py'}:echo_answer", f"{files / 'funcs.py'}:half_none"]
    assert summary["reward_model"] == "echo_answer + half_none"


def test_a_function_that_never_applies_gives_no_gradient(files, capsys):
    code = main([*RUN, "--prompts", str(files / "qa.jsonl"), *fn(files, "all_none"), "--steps", "1",
                 *places(files)])
    assert code == 0, capsys.readouterr().err
    df = pd.read_csv(files / "out" / "training_metrics.csv")
    assert df["loss"].tolist() == [0.0] and df["grad_norm"].tolist() == [0.0]


@pytest.mark.parametrize("name,words", [("raises", "raised KeyError: 'no such key'"),
                                        ("short", "returned 15 values for 16 completions"),
                                        ("text", "returned 'high' for completion 0 (not a number)"),
                                        ("nan", "returned nan for completion 0"), ("inf", "returned inf")])
def test_a_bad_function_on_the_first_step_exits_2_and_writes_nothing(name, words, files, capsys):
    (files / "out").mkdir()
    (files / "out" / "summary.json").write_text("{}")  # an earlier run's output: it stays as it was
    before = snapshot(files)
    with pytest.raises(SystemExit) as e:
        main([*RUN, "--prompts", str(files / "qa.jsonl"), *fn(files, name), "--steps", "3", *places(files)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"funcs.py:{name}' at step 1" in err and words in err, err
    assert snapshot(files) == before


def test_a_function_failing_later_keeps_a_checkpoint_and_exits_3(files, capsys):
    code = main([*RUN, "--prompts", str(files / "qa.jsonl"), *fn(files, "fails_at_step_3"), "--steps", "5",
                 "--save-every", "0", *places(files)])
    err = capsys.readouterr().err
    assert code == 3 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "at step 3" in err and "'oops' for completion 1" in err and "checkpoint-2" in err, err
    assert sorted(p.name for p in (files / "ckpt").iterdir()) == ["checkpoint-2"]
    summary = json.loads((files / "out" / "summary.json").read_text())
    assert summary["status"] == "reward_error" and summary["steps"] == 2


def test_resume_is_bitwise_with_reward_functions_and_a_parquet_dataset(files, capsys):
    rows = [json.loads(line) for line in (files / "qa.jsonl").read_text().splitlines()]
    pd.DataFrame(rows).to_parquet(files / "qa.parquet")
    args = [*RUN, "--prompts", str(files / "qa.parquet"), *fn(files, "digits"), *fn(files, "half_none"),
            "--reward-weights", "1", "0.5", "--reward-aggregation", "normalize_then_sum", "--steps", "6",
            "--save-every", "3", "--keep-last", "0"]
    assert main([*args, *places(files / "a")]) == 0, capsys.readouterr().err
    assert main([*args, *places(files / "b"), "--resume", str(files / "a" / "ckpt" / "checkpoint-3")]) == 0
    a = pd.read_csv(files / "a" / "out" / "training_metrics.csv").drop(columns=TIME)
    b = pd.read_csv(files / "b" / "out" / "training_metrics.csv").drop(columns=TIME)
    assert a.equals(b), a.compare(b)
    from safetensors.torch import load_file

    wa = load_file(files / "a" / "m" / "policy_gradient" / "model.safetensors")
    wb = load_file(files / "b" / "m" / "policy_gradient" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    (files / "other.jsonl").write_text((files / "qa.jsonl").read_text().replace('"answer": "2', '"answer": "9'))
    with pytest.raises(SystemExit) as e:  # the same prompts with other answers: another run
        main([*args[:args.index("--prompts")], "--prompts", str(files / "other.jsonl"),
              *args[args.index("--prompts") + 2:], *places(files / "c"), "--resume",
              str(files / "a" / "ckpt" / "checkpoint-3")])
    assert e.value.code == 2 and "columns_sha256" in capsys.readouterr().err


@pytest.mark.parametrize("extra,words", [
    (["--reward-weights", "1", "2"], "reward weights [1.0, 2.0] are 2 for 1 rewards"),
    (["--reward-weights", "x"], "--reward-weights"),
    (["--reward-aggregation", "mean"], "--reward-aggregation"),
    (["--reward-fn", "no_colon"], "no_colon"),
    (["--prompt-column", "question"], "no column 'question'"),
])
def test_bad_reward_settings_exit_2_with_one_line(extra, words, files, capsys):
    with pytest.raises(SystemExit) as e:
        main([*RUN, "--prompts", str(files / "qa.jsonl"), *fn(files, "digits"), "--steps", "1", *places(files),
              *extra])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and words in err, err
    assert not (files / "out").exists()


def test_the_python_api_takes_callables_and_dataset_rows(tmp_path):
    from lm_fakes import LetterReward, make_policy

    from pgcore.engine import LMConfig, Trainer

    def length(prompts, completions, target, **kw):
        return [-abs(len(c) - t) for c, t in zip(completions, target)]

    rows = [{"prompt": "the movie was", "target": 5}, {"prompt": "the food was", "target": 9}]
    cfg = LMConfig(steps=2, batch_size=2, num_samples=2, max_new_tokens=4, reward_model=None, reward_fn=(length,),
                   output_dir=None, checkpoint_dir=None, model_dir=None)
    result = Trainer(cfg, policy=make_policy(), prompts=rows).train()
    assert len(result.history) == 2 and result.summary["config"]["reward_fn"] == [
        f"{__name__}:test_the_python_api_takes_callables_and_dataset_rows.<locals>.length"]  # a name, not a repr
    both = Trainer(cfg.replace(reward_weights=(1.0, 2.0)), policy=make_policy(), reward=LetterReward("e"),
                   prompts=rows).train()
    assert {"reward/letter-e_mean", "reward/length_mean"} <= set(both.history[0])
    row = both.history[0]
    assert row["reward_mean"] == pytest.approx(row["reward/letter-e_mean"] + 2 * row["reward/length_mean"], abs=1e-5)


def test_help_documents_the_new_flags_and_exit_statuses():
    from pgcore.engine.cli import build_parser

    flat = " ".join(build_parser().format_help().split())
    for text in ("--reward-fn MODULE:FUNCTION", "--reward-weights W [W ...]", "--prompt-column NAME",
                 "--reward-aggregation {sum_then_normalize,normalize_then_sum}", "--reward-input {completion,pair,chat}",
                 "--report-to {none,tensorboard,wandb}", "--log-completions", "(repeatable)",
                 "3 a reward function failed later", "4 the disk is full"):
        assert text in flat, text
