"""The arithmetic task (pgcore.lm.arith, ArithmeticReward): the verifier (tricky completions), the held-out split
(never in training or RL data), the digit check; the tiny-arith build (pgcore.lm.tiny_arith: cached, calibrated
start) and its held-out counts (pgcore.lm.evaluate)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pgcore import files
from pgcore.lm import arith, evaluate, tiny_arith
from pgcore.lm.arith import arithmetic_reward, is_heldout, parse_prompt, problems, verify
from pgcore.lm.rewards import ArithmeticReward
from pgcore.lm.tiny import BUILD_FILE, EOS


# ------------------------------------------------------------------------------ the verifier
@pytest.mark.parametrize("completion,expected", [
    ("579", 1.0),                      # the bare answer (no EOS: cut by the budget, compared whole)
    ("579" + EOS, 1.0),                # the answer, then EOS
    (" 579 ", 1.0),                    # surrounding spaces are stripped
    ("579\n", 1.0),                    # a newline ends the answer
    ("579\n12+3=15", 1.0),             # ... and what follows it is not read
    ("579" + EOS + "junk", 1.0),       # nothing after the first EOS counts
    ("0579", 0.0),                     # leading zero: not the decimal digits of the sum
    ("5 79", 0.0),                     # a space inside the number
    ("579 apples", 0.0),               # extra text after the number, before EOS
    ("5791", 0.0),                     # no EOS and a digit too many
    ("57", 0.0),                       # too short
    ("+579", 0.0),                     # a sign
    ("", 0.0),                         # nothing
    (EOS + "579", 0.0),                # EOS first: the answer is empty
    ("57" + EOS + "9", 0.0),
])
def test_verify_tricky_completions(completion, expected):
    assert verify(completion, 123, 456) == expected


def test_verify_zero_and_carries():
    assert verify("0", 0, 0) == 1.0 and verify("00", 0, 0) == 0.0
    assert verify("1998", 999, 999) == 1.0 and verify("998", 999, 999) == 0.0


def test_arithmetic_reward_reads_the_problem_from_the_prompt():
    r = arithmetic_reward(["12+30=", "999+1=", "<|user|>5+5=<|assistant|>"], ["42", "1000" + EOS, "10"])
    assert r.dtype == torch.float32 and r.tolist() == [1.0, 1.0, 1.0]
    assert parse_prompt("What is 3+4= and 10+20=") == (10, 20)  # the last problem in the prompt
    with pytest.raises(ValueError, match="holds no"):
        parse_prompt("The movie was")
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        arithmetic_reward(["1+1=", "2+2="], ["2"])


def test_reward_model_scores_with_prompts_and_refuses_without():
    from pgcore.lm.rewards import load_reward

    reward = load_reward("arithmetic")
    assert isinstance(reward, ArithmeticReward) and reward.name == "arithmetic" and reward.label is None
    assert reward.score(["3", "4"], prompts=["1+2=", "1+2="]).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="needs the prompts"):
        reward.score(["3"])
    with pytest.raises(ValueError, match="no labels"):
        load_reward("arithmetic", label="positive")


# ------------------------------------------------------------------------------ the held-out split
def test_heldout_rule_is_symmetric_deterministic_and_about_ten_percent():
    rng = np.random.default_rng(1)
    pairs = rng.integers(0, 1000, size=(20_000, 2)).tolist()
    flags = [is_heldout(a, b) for a, b in pairs]
    assert 0.09 < np.mean(flags) < 0.11
    assert all(is_heldout(a, b) == is_heldout(b, a) for a, b in pairs[:2000])
    assert flags == [is_heldout(a, b) for a, b in pairs]


def test_problems_split_are_disjoint_distinct_and_deterministic():
    train, held = problems("train", 5000), problems("heldout", 500)
    assert len(set(train)) == 5000 and len(set(held)) == 500
    assert not any(is_heldout(a, b) for a, b in train) and all(is_heldout(a, b) for a, b in held)
    unordered = {frozenset(p) for p in train}
    assert not any(frozenset(p) in unordered for p in held), "no held-out pair, in either order, is trained on"
    assert problems("train", 100) == train[:100] and problems("heldout", 500, seed=0) == held
    assert all(0 <= a <= 999 and 0 <= b <= 999 for a, b in train + held)
    with pytest.raises(ValueError, match="split"):
        problems("test", 3)


def test_no_heldout_problem_in_pretraining_or_rl_prompts():
    """The RL prompts (the reward's default prompts) and tiny-arith's pretraining problems (the train
    split it draws, seed + 1) avoid every held-out pair; a held-out prompt given by hand is refused."""
    reward = ArithmeticReward()
    rl = [parse_prompt(p) for p in reward.default_prompts()]
    assert len(rl) == 10_000 and not any(is_heldout(a, b) for a, b in rl)
    cfg = tiny_arith.TinyArithConfig()
    pretraining = problems("train", cfg.steps * cfg.batch_size, seed=cfg.seed + 1)
    assert not any(is_heldout(a, b) for a, b in pretraining)
    a, b = problems("heldout", 1)[0]
    with pytest.raises(ValueError, match="held-out problem"):
        reward.check_prompts(["1+2=", f"{a}+{b}="])


# ------------------------------------------------------------------------------ digits and the tokenizer
def test_char_tokenizer_round_trips_the_task():
    tok = tiny_arith.char_tokenizer()
    text = "12+345=357"
    ids = tok(text)["input_ids"]
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True) == text
    assert tok.eos_token_id == tok.pad_token_id and tok.padding_side == "left"
    assert arith.digits_writable(tok) is None
    assert tok.unk_token_id in tok("x")["input_ids"]


def test_a_tokenizer_without_digits_is_refused():
    from lm_fakes import make_model
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from pgcore.lm.models import Policy

    core = Tokenizer(models.WordLevel({"<eos>": 0, "<unk>": 1, "a": 2, "b": 3}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", pad_token="<eos>", unk_token="<unk>")
    assert "'0'" in arith.digits_writable(tok)
    policy = Policy(model=make_model(tok), tokenizer=tok, name="letters-only", chat_template=False)
    with pytest.raises(ValueError, match="cannot") as err:
        ArithmeticReward().check_policy(policy)
    assert "\n" not in str(err.value) and "letters-only" in str(err.value)


# ------------------------------------------------------------------------------ tiny-arith
@pytest.fixture(scope="module")
def policy():
    from pgcore.lm.models import load_policy

    return load_policy("tiny-arith")


def test_tiny_arith_is_cached_and_starts_in_the_window(policy):
    """Shipped with the package or built once into the cache, either way from this recipe; sampled pass@1 at T = 1 on 300 held-out problems x 8 samples
    in [0.2, 0.6] (a standard error of ~0.02), and sampling is the reason: greedy decoding does better."""
    path = tiny_arith.tiny_arith_dir()
    build = json.loads((path / BUILD_FILE).read_text())
    assert build["fingerprint"] == tiny_arith.tiny_arith_fingerprint()
    assert path == files.MODELS_DIR / "tiny-arith" or path.name.endswith(build["fingerprint"]), path
    assert 100_000 < build["parameters"] < 1_000_000
    held = problems("heldout", 300)
    counts = evaluate.count_correct(policy, held, 8, seed=5)
    assert counts.shape == (300,) and counts.min() >= 0 and counts.max() <= 8
    pass1 = counts.sum() / (300 * 8)
    assert 0.2 <= pass1 <= 0.6, pass1
    greedy = evaluate.count_correct(policy, held, 1, temperature=1e-4, seed=5).mean()
    assert greedy > pass1
    again = evaluate.count_correct(policy, held[:50], 8, seed=5, rows_per_batch=100)
    assert np.array_equal(again, evaluate.count_correct(policy, held[:50], 8, seed=5, rows_per_batch=100)), \
        "same seed, same counts"


def test_fingerprint_follows_the_config():
    fingerprint, config = tiny_arith.tiny_arith_fingerprint, tiny_arith.TinyArithConfig
    assert fingerprint() == fingerprint(config())
    assert fingerprint(config(steps=10)) != fingerprint()
