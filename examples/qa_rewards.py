"""Two reward functions for a question/answer task (`data/arith_qa.jsonl`), in TRL's convention:
`f(prompts, completions, **columns)` gets the rows' prompts, their completions and each of the dataset's other
columns as a list (here `answer`), and returns one float per completion, or None where it does not apply.

    python -m pgcore.lm --model tiny-arith --prompts data/arith_qa.jsonl \
        --reward-fn examples/qa_rewards.py:correctness_reward --reward-fn examples/qa_rewards.py:format_reward \
        --reward-weights 1.0 0.2 --advantage group --batch-size 16 --num-samples 8 --max-new-tokens 6 \
        --lr 5e-4 --kl-coef 0 --steps 40

A chat model reads the word problems instead: `--model smollm2-135m --prompt-column question`.
"""
from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d+")
_FORMAT = re.compile(r"\s*(?:answer\s*:\s*)?-?\d+\s*\.?\s*", re.IGNORECASE)


def correctness_reward(prompts, completions, answer=None, **kwargs):
    """1.0 when the completion's last number is the row's answer, else 0.0; None for a row without an answer
    (that completion is left out of this reward's mean and advantage)."""
    if answer is None:
        return [None] * len(completions)
    rewards = []
    for completion, expected in zip(completions, answer):
        if expected is None or str(expected).strip() == "":
            rewards.append(None)
            continue
        text = completion if isinstance(completion, str) else completion[-1]["content"]  # a chat's reply
        numbers = _NUMBER.findall(text)
        rewards.append(1.0 if numbers and numbers[-1] == str(expected).strip() else 0.0)
    return rewards


def format_reward(prompts, completions, **kwargs):
    """1.0 when the completion is just the answer (a number, optionally after "Answer:"), else 0.0."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [1.0 if _FORMAT.fullmatch(t) else 0.0 for t in texts]
