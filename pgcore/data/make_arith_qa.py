"""Write `arith_qa.jsonl`: 400 arithmetic word problems with their answers, made for this course (seeded: the same
file byte for byte on every machine).

Each row: `question` (a word problem in English, for chat models: `--prompt-column question`), `prompt` (the same
sum as `"{a}+{b}="`, the format `tiny-arith` reads), `answer` (the sum, a string), `a`, `b`. The pairs are
training problems of the arithmetic task (`pgcore.lm.arith.problems("train", ...)`), never held-out ones, so
notebook 05's held-out pass@1 stays an honest measure after training on this file.

    python data/make_arith_qa.py            # rewrite data/arith_qa.jsonl
    python data/make_arith_qa.py --check    # exit 1 when the file differs from what this script writes
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SEED = 2026
N = 400
NAMES = ["Ana", "Ben", "Chen", "Dara", "Emil", "Fatima", "Goran", "Hana", "Ines", "Jonas", "Kofi", "Lena"]
THINGS = ["apples", "stamps", "marbles", "books", "coins", "stickers", "shells", "pencils", "cards", "beads"]
SHAPES = [
    "{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?",
    "A box holds {a} {thing}. {name} puts in another {b}. How many {thing} are in the box?",
    "{name} collected {a} {thing} on Monday and {b} on Tuesday. How many {thing} in all?",
    "There are {a} {thing} on one shelf and {b} on another. How many {thing} are on the two shelves?",
]


def rows() -> list[dict]:
    from pgcore.lm.arith import make_prompt, problems

    rng = random.Random(SEED)
    out = []
    for a, b in problems("train", N, seed=SEED):
        question = rng.choice(SHAPES).format(name=rng.choice(NAMES), thing=rng.choice(THINGS), a=a, b=b)
        out.append({"question": question, "prompt": make_prompt(a, b), "answer": str(a + b), "a": a, "b": b})
    return out


def text() -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows())


if __name__ == "__main__":
    path = Path(__file__).resolve().parent / "arith_qa.jsonl"
    if "--check" in sys.argv:
        sys.exit(0 if path.read_text(encoding="utf-8") == text() else 1)
    path.write_text(text(), encoding="utf-8")
    print(f"wrote {path} ({N} rows)")
