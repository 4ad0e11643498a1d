"""Reward models for LM policy gradient: text in, one number per text out (higher = better).

- `"tiny-sentiment"`: a small GPT-2-architecture sequence classifier trained in seconds on the
  labeled corpus pgcore ships (`pgcore.lm.tiny_sentiment`), saved with `save_pretrained` in the user
  cache and then loaded exactly like any Hugging Face reward model. Reward = P(positive) in [0, 1].
- `"vader"`: the rule-based VADER lexicon; reward = its compound score in [-1, 1].
- `"arithmetic"`: a verifier, not a model (`ArithmeticReward`, the task in `pgcore.lm.arith`): 1.0
  when the completion of `"{a}+{b}="` is the sum, else 0.0. It scores with the prompts:
  `score(texts, prompts=...)`.
- any Hugging Face sequence-classification model (hub name or local folder). Its positive label
  is found **by name** in `config.id2label` ("positive" / "pos", any case) or given with `label=`
  (`--reward-label`), never assumed to be index 1: label order differs between models.
  Reward = softmax probability of that label (sigmoid for multi-label models); a model with a
  single output is a scalar reward model and its logit is the reward. What it reads
  (`reward_input_of`): the completion alone (sentiment classifiers, tiny-sentiment), the (prompt,
  completion) pair (cross-encoders), or the conversation through its chat template (chat reward models).

Every reward subclasses `RewardModel`, which declares what the trainer reads and calls: `name`,
`label`, `needs_prompts`, `verifier`, `evaluate`, `check_policy`, `default_prompts`, `check_prompts`.

Introduced in notebooks/04_lm_policy_gradient.ipynb.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..files import atomic_dir, quiet_transformers
from .arith import MAX_NEW_TOKENS, arithmetic_reward, digits_writable, is_heldout, make_prompt, parse_prompt, problems
from .evaluate import count_correct
from .models import load_pretrained
from .tiny import lazy_transformers
from .tiny_sentiment import SentimentConfig, tiny_sentiment_dir

__all__ = [
    "RewardModel", "VaderReward", "HFClassifierReward", "ArithmeticReward", "load_reward", "pick_label",
    "permute_labels", "POSITIVE_NAMES", "REWARD_INPUTS", "reward_input_of", "last_user",
]

POSITIVE_NAMES = ("positive", "pos")
"""label names (compared lower-case) taken as the positive label when none is given"""
ACCEPTED = "tiny-sentiment, vader, arithmetic, a local path, or a hub name when online"


class RewardModel:
    """Base class of every reward: `score(texts)` returns a float32 CPU tensor (N,), higher = better, no grad.

    The trainer reads every attribute and calls every hook below. The defaults suit a reward that
    scores completions alone (a sentiment classifier); a task with its own problems overrides them.
    """

    name: str = "reward"
    """what the reward is called in logs and summary.json"""
    label: str | None = None
    """the classifier label rewarded, or None (a reward without labels)"""
    needs_prompts: bool = False
    """True: the trainer calls `score(texts, prompts=prompts)` (the right answer depends on the prompt)"""
    verifier: bool = False
    """True: every reward is 1.0 (correct) or 0.0 (wrong); the trainer then logs the verifier columns"""
    evaluate: Callable[..., float] | None = None
    """None, or a method giving a policy's held-out pass@1 for `eval_every` (see `ArithmeticReward.evaluate`)"""

    def score(self, texts: list[str]) -> torch.Tensor:
        """(N,) float32 rewards of N texts, on CPU."""
        raise NotImplementedError

    def check_policy(self, policy) -> None:
        """Raise ValueError when this reward cannot judge `policy`'s completions; the default accepts any policy."""

    def default_prompts(self) -> list[str] | None:
        """The task's own training prompts, or None (the default): the trainer then loads its prompt file."""
        return None

    def check_prompts(self, prompts: Sequence[str]) -> None:
        """Raise ValueError when `prompts` must not be trained on; the default accepts any prompts."""

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return self.score(texts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, label={self.label!r})"


class VaderReward(RewardModel):
    """VADER's compound sentiment score in [-1, 1] (rule-based, CPU, deterministic)."""

    def __init__(self):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # noqa: PLC0415

        self.name, self.label = "vader", None
        self._analyzer = SentimentIntensityAnalyzer()

    def score(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([self._analyzer.polarity_scores(t)["compound"] for t in texts], dtype=torch.float32)


def pick_label(id2label: dict, label: str | None = None, *, model_name: str = "reward model") -> tuple[int, str]:
    """The (index, name) of the output to reward, chosen **by name**, never by position.

    `label` given: that label (exact, then case-insensitive match). Else the one named "positive"
    or "pos" (any case). A single-output model needs neither: its only output is the reward.
    Raises ValueError (naming the labels) when the label is missing or ambiguous.
    """
    labels = {int(i): str(n) for i, n in id2label.items()}
    listed = ", ".join(repr(labels[i]) for i in sorted(labels))
    if label is not None:
        exact = [i for i, n in labels.items() if n == label]
        loose = [i for i, n in labels.items() if n.lower() == label.lower()]
        found = exact or loose
        if len(found) != 1:
            raise ValueError(f"reward label {label!r} is not one of {model_name}'s labels; accepted: {listed}")
        return found[0], labels[found[0]]
    if len(labels) == 1:
        (i, n), = labels.items()
        return i, n
    found = [i for i, n in labels.items() if n.lower() in POSITIVE_NAMES]
    if len(found) != 1:
        raise ValueError(f"{model_name} has no single label named positive/pos (its labels: {listed}); "
                         "choose one with --reward-label (label=...)")
    return found[0], labels[found[0]]


REWARD_INPUTS = ("completion", "pair", "chat")


def reward_input_of(model, tokenizer) -> str:
    """What a sequence classifier reads, from its config: `config.pgcore_reward_input` when set; else a scalar
    head (one output) with a chat template reads the conversation (`chat`, a chat reward model), a scalar head
    whose tokenizer makes segment ids reads (prompt, completion) as a text pair (`pair`, a cross-encoder);
    anything else the completion alone (`completion`, e.g. a sentiment classifier such as tiny-sentiment)."""
    marked = getattr(model.config, "pgcore_reward_input", None)
    if marked is not None:
        return str(marked)
    if model.config.num_labels == 1 and getattr(tokenizer, "chat_template", None):
        return "chat"
    if model.config.num_labels == 1 and "token_type_ids" in getattr(tokenizer, "model_input_names", ()):
        return "pair"
    return "completion"


def last_user(prompt) -> str:
    """A prompt's text: itself, or a conversation's last user turn."""
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    return str(users[-1]) if users else ""


class HFClassifierReward(RewardModel):
    """A Hugging Face sequence classifier as a reward: the probability (or logit) of one label.

    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """

    def __init__(self, model, tokenizer, *, name: str, label: str | None = None, batch_size: int = 64,
                 reward_input: str | None = None):
        self.model, self.tokenizer, self.name, self.batch_size = model, tokenizer, name, batch_size
        num_labels = model.config.num_labels
        id2label = model.config.id2label or {i: f"LABEL_{i}" for i in range(num_labels)}
        self.index, self.label = pick_label(id2label, label, model_name=f"reward model {name!r}")
        self.single_output = num_labels == 1
        self.reward_input = reward_input_of(model, tokenizer) if reward_input is None else reward_input
        if self.reward_input not in REWARD_INPUTS:
            raise ValueError(f"reward input {self.reward_input!r} unknown; accepted: {', '.join(REWARD_INPUTS)}")
        if self.reward_input == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"reward model {name!r} has no chat template in its tokenizer, so reward input 'chat' "
                             "cannot be used; accepted: completion or pair")
        self.needs_prompts = self.reward_input != "completion"
        self.multi_label = model.config.problem_type == "multi_label_classification"
        limits = [tokenizer.model_max_length, 512]
        limits += [getattr(model.config, k) for k in ("max_position_embeddings", "n_positions") if
                   isinstance(getattr(model.config, k, None), int)]
        self.max_length = min(limits)

    @classmethod
    def from_pretrained(cls, name_or_path, *, label: str | None = None, device=None, name: str | None = None,
                        batch_size: int = 64, reward_input: str | None = None) -> "HFClassifierReward":
        """Load `AutoModelForSequenceClassification` + `AutoTokenizer` from a folder or the hub.

        Introduced in notebooks/04_lm_policy_gradient.ipynb.
        """
        model, tokenizer = load_pretrained(name_or_path, str(name or name_or_path), "classifier", device=device)
        return cls(model, tokenizer, name=str(name or name_or_path), label=label, batch_size=batch_size,
                   reward_input=reward_input)

    def _encode(self, texts: list[str], prompts: list | None):
        """The tokenizer's batch of the classifier's input: the completion, the (prompt, completion) pair, or
        the conversation through the chat template."""
        kw = dict(padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        if self.reward_input == "completion":
            return self.tokenizer(texts, **kw)
        if prompts is None or len(prompts) != len(texts):
            raise ValueError(f"reward model {self.name!r} reads the prompt (reward input {self.reward_input!r}): "
                             "score(texts, prompts=...) with one prompt per text")
        if self.reward_input == "pair":  # a cross-encoder: the two texts as a pair (segment ids tell them apart)
            return self.tokenizer([last_user(p) for p in prompts], texts, **kw)
        chats = [self.tokenizer.apply_chat_template(
            (list(p) if isinstance(p, list) else [{"role": "user", "content": p}])
            + [{"role": "assistant", "content": t}], tokenize=False) for p, t in zip(prompts, texts)]
        return self.tokenizer(chats, add_special_tokens=False, **kw)  # the template holds the special tokens

    @torch.no_grad()
    def score(self, texts: list[str], prompts: list | None = None) -> torch.Tensor:
        """(N,) float32 on CPU: P(label) (softmax; sigmoid if multi-label), or the logit of a single output.
        prompts: one per text, read with reward input `pair` or `chat`."""
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start:start + self.batch_size])
            enc = self._encode(chunk, None if prompts is None else list(prompts[start:start + self.batch_size]))
            if enc["input_ids"].shape[1] == 0:  # every text empty and no special tokens: one pad token each
                enc = {k: torch.full((len(chunk), 1), self.tokenizer.pad_token_id if k == "input_ids" else 1)
                       for k in enc}
            logits = self.model(**{k: v.to(device) for k, v in enc.items()}).logits.float()  # (B, num_labels)
            if self.single_output:
                r = logits[:, 0]
            elif self.multi_label:
                r = torch.sigmoid(logits[:, self.index])
            else:
                r = torch.softmax(logits, dim=-1)[:, self.index]
            out.append(r.cpu())
        return torch.cat(out) if out else torch.zeros(0)


class ArithmeticReward(RewardModel):
    """The `arithmetic` verifier as a reward: `score(texts, prompts=...)` (the answer depends on the prompt).

    `check_policy` refuses a policy whose tokenizer cannot write digits; `default_prompts` are
    training problems (never held out); `check_prompts` refuses held-out problems among training
    prompts; `evaluate` is the held-out pass@1 (`pgcore.lm.evaluate.count_correct`).
    """

    name = "arithmetic"
    needs_prompts = True
    verifier = True

    def __init__(self, num_prompts: int = 10_000, seed: int = 0):
        self.num_prompts, self.seed = num_prompts, seed

    def score(self, texts: list[str], prompts: Sequence[str] | None = None) -> torch.Tensor:
        if prompts is None:
            raise ValueError("the arithmetic reward needs the prompts: score(texts, prompts=...)")
        return arithmetic_reward(list(prompts), list(texts))

    def check_policy(self, policy) -> None:
        bad = digits_writable(policy.tokenizer)
        if bad is not None:
            raise ValueError(f"reward model 'arithmetic' needs a policy that can write digits, but the tokenizer of "
                             f"{policy.name!r} cannot ({bad}); accepted: tiny-arith, tiny, or a model whose "
                             "tokenizer encodes 0-9")

    def default_prompts(self) -> list[str]:
        return [make_prompt(a, b) for a, b in problems("train", self.num_prompts, self.seed)]

    def check_prompts(self, prompts: Sequence[str]) -> None:
        for p in prompts:
            a, b = parse_prompt(p)
            if is_heldout(a, b):
                raise ValueError(f"prompt {p!r} is a held-out problem (pgcore.lm.arith.is_heldout); accepted: "
                                 "training problems only, e.g. the default prompts")

    def evaluate(self, policy, num_problems: int = 256, num_samples: int = 4, *, temperature: float = 1.0,
                 seed: int = 0, max_new_tokens: int = MAX_NEW_TOKENS) -> float:
        """Held-out pass@1 of `policy`: the first `num_problems` of `problems("heldout", ...)`, `num_samples`
        sampled completions each (`count_correct`)."""
        counts = count_correct(policy, problems("heldout", num_problems), num_samples, temperature=temperature,
                               seed=seed, max_new_tokens=max_new_tokens)
        return float(counts.sum() / (num_problems * num_samples))


def load_reward(name_or_path: str, *, label: str | None = None, device=None, cache_dir=None,
                config: SentimentConfig | None = None, reward_input: str | None = None) -> RewardModel:
    """A reward model by name: `"tiny-sentiment"`, `"vader"`, or an HF classifier (folder or hub name).

    Args:
        name_or_path: which reward model (see the module docstring).
        label: the classifier label to reward (`--reward-label`); default: the one named positive/pos.
        device: where the classifier runs; `None` picks `pgcore.get_device()`.
        cache_dir: folder of built models (default `pgcore.utils.cache_dir()`).
        config: the tiny-sentiment `SentimentConfig` (default `SentimentConfig()`).
        reward_input: what a classifier reads: completion, pair or chat (None: `reward_input_of` its config).

    Raises ValueError for unknown names, offline hub misses, and unusable labels.
    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise ValueError(f"reward model {name_or_path!r} is not a name; accepted: {ACCEPTED}")
    name = str(name_or_path)
    if reward_input is not None and name in ("arithmetic", "vader"):
        raise ValueError(f"reward input {reward_input!r} given but {name} is not a classifier; accepted: none")
    if name == "arithmetic":  # a verifier, not a model
        if label is not None:
            raise ValueError(f"reward label {label!r} given but arithmetic is a verifier and has no labels; "
                             "accepted: no label")
        return ArithmeticReward()
    if name == "vader":
        if label is not None:
            raise ValueError(f"reward label {label!r} given but vader is rule-based and has no labels; "
                             "accepted: no label")
        return VaderReward()
    if name == "tiny-sentiment":
        path = tiny_sentiment_dir(config, cache_dir)
        return HFClassifierReward.from_pretrained(path, label=label, device=device, name=name,
                                                  reward_input=reward_input)
    return HFClassifierReward.from_pretrained(name, label=label, device=device, reward_input=reward_input)


def permute_labels(src: str | os.PathLike, dst: str | os.PathLike, order: list[int]) -> Path:
    """Save a copy of the classifier in `src` whose output `j` is the original output `order[j]`.

    The classification head's rows (and `id2label`) are permuted together, so the copy computes
    the same function with its labels in another order: `permute_labels(p, q, [1, 0])` turns
    {0: negative, 1: positive} into {0: positive, 1: negative}. A reward that picks the label by
    name is unchanged; one that assumes index 1 now rewards the negative class.
    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    transformers = lazy_transformers()
    with quiet_transformers():
        model = transformers.AutoModelForSequenceClassification.from_pretrained(src, dtype=torch.float32)
        tokenizer = transformers.AutoTokenizer.from_pretrained(src)
    n = model.config.num_labels
    if sorted(order) != list(range(n)):
        raise ValueError(f"order {order!r} is not a permutation of 0..{n - 1}; accepted: each output index once")
    heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == n]
    if not heads:
        raise ValueError(f"classifier {str(src)!r} has no linear head with {n} outputs; accepted: a standard "
                         "sequence-classification model")
    head = heads[-1]
    with torch.no_grad():
        head.weight.copy_(head.weight[order])
        if head.bias is not None:
            head.bias.copy_(head.bias[order])
    id2label = {j: model.config.id2label[order[j]] for j in range(n)}
    model.config.id2label = id2label
    model.config.label2id = {name: j for j, name in id2label.items()}
    with atomic_dir(dst) as tmp, quiet_transformers():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(dst)
