"""Sampling completions from a causal LM: left-padded batches, the policy's own distribution, a completion mask.

The policy-gradient estimator needs samples *from the policy*. Hugging Face `generate` is used with
`do_sample=True, top_k=0, top_p=1.0` and a clean generation config (no repetition penalty, no
min-p, no bad-word list inherited from a checkpoint's `generation_config.json`), so each token is
drawn from exactly `softmax(logits / temperature)`: the distribution whose log-probabilities
`pgcore.lm.algorithm.per_token_logps` recomputes for the loss.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch


__all__ = ["Batch", "generate", "completion_mask", "expand_prompts", "eos_token_ids", "encode_prompts", "make_batch",
           "position_ids_from_mask", "seeded"]


@dataclass
class Batch:
    """One batch of sampled completions. Rows are prompt-major: row `i * num_samples + g` is sample
    `g` of prompt `i`, so `rewards.view(-1, num_samples)` groups the samples of each prompt.

    N = len(prompts) * num_samples rows, P = longest prompt (left-padded), T = generated length
    (<= max_new_tokens; shorter when every row hit EOS early).

    """

    prompt_ids: torch.Tensor
    """(N, P) token ids of the prompts, left-padded with the pad token"""
    prompt_mask: torch.Tensor
    """(N, P) 1 on real prompt tokens, 0 on left padding"""
    completion_ids: torch.Tensor
    """(N, T) sampled token ids; after a row's first EOS, generate fills in the pad token"""
    completion_mask: torch.Tensor
    """(N, T) 1 on completion tokens up to and including the first EOS, else 0"""
    texts: list[str]
    """N decoded completions (special tokens removed): what the reward model scores"""
    prompts: list[str]
    """N prompt strings, the prompt of each row (repeated num_samples times)"""
    num_samples: int
    """completions per prompt"""
    sampling_logps: torch.Tensor | None = None
    """(N, T) log-prob of each sampled token under the distribution it was sampled from
    (only with `return_logps=True`; garbage after EOS, use `completion_mask`)"""

    @property
    def input_ids(self) -> torch.Tensor:
        """(N, P + T) prompt then completion: the input of the log-prob forward pass."""
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """(N, P + T) prompt mask then completion mask (tokens after EOS are not attended to)."""
        return torch.cat([self.prompt_mask, self.completion_mask.to(self.prompt_mask.dtype)], dim=1)

    @property
    def completion_lengths(self) -> torch.Tensor:
        """(N,) number of completion tokens of each row, EOS included."""
        return self.completion_mask.sum(dim=1)

    def __len__(self) -> int:
        return self.completion_ids.shape[0]

    def select(self, rows: slice) -> "Batch":
        """The rows `rows` of the batch (a minibatch; whole prompt groups keep `num_samples` true), all columns."""
        logps = None if self.sampling_logps is None else self.sampling_logps[rows]
        return Batch(self.prompt_ids[rows], self.prompt_mask[rows], self.completion_ids[rows],
                     self.completion_mask[rows], self.texts[rows], self.prompts[rows], self.num_samples, logps)


def completion_mask(completion_ids: torch.Tensor, eos_token_id: int | Iterable[int]) -> torch.Tensor:
    """1 on every token up to and including the first EOS of each row, 0 after it.

    completion_ids: (N, T) sampled ids. eos_token_id: an id, or several (any of them ends a row).
    A row without EOS (cut by max_new_tokens) is all ones. Built from EOS, never from the pad
    token: the pad token may *be* EOS, and then a legitimately sampled EOS would be masked away.

    Returns: (N, T) long tensor of 0/1. Naive twin: for each row, walk left to right, write 1,
    stop after the first EOS.
    """
    if completion_ids.dim() != 2:
        raise ValueError(f"completion_ids must be shaped (N, T), got shape {tuple(completion_ids.shape)}")
    eos = torch.as_tensor(
        [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id),
        dtype=completion_ids.dtype,
        device=completion_ids.device,
    )
    if eos.numel() == 0:
        raise ValueError("eos_token_id is empty; accepted: a token id or a non-empty list of ids")
    n, t = completion_ids.shape
    is_eos = torch.isin(completion_ids, eos)  # (N, T)
    # index of the first EOS, or T when there is none
    first_eos = torch.where(
        is_eos.any(dim=1),
        is_eos.int().argmax(dim=1),
        torch.full((n,), t, device=completion_ids.device, dtype=torch.long),
    )
    positions = torch.arange(t, device=completion_ids.device).expand(n, t)  # (N, T)
    return (positions <= first_eos[:, None]).long()


def expand_prompts(prompts: Sequence[str], num_samples: int) -> list[str]:
    """Repeat each prompt `num_samples` times, prompt-major: [p0, p0, ..., p1, p1, ...].

    """
    return [p for p in prompts for _ in range(num_samples)]


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Sample from a private torch RNG stream seeded with `seed`; the global stream is restored after.

    `generate` draws with `torch.multinomial` on the global RNG (it takes no `torch.Generator`),
    so a forked, seeded global RNG makes the samples a pure function of `seed`.
    """
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


@contextlib.contextmanager
def plain_generation_config(model) -> Iterator[None]:
    """Hide the checkpoint's generation_config.json (repetition penalty, min_p, ...) during sampling."""
    from transformers import GenerationConfig

    saved = getattr(model, "generation_config", None)
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


class _DropPaddingMaskWarning(logging.Filter):
    """GPT-2's forward warns "We strongly recommend passing in an `attention_mask`" inside `generate`'s
    cached decoding steps once a finished row is fed its pad (= EOS) token, although `generate` was given
    the mask. That false alarm would only confuse a learner; every other transformers message passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "recommend passing in an `attention_mask`" not in record.getMessage()


logging.getLogger("transformers.modeling_utils").addFilter(_DropPaddingMaskWarning())


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends a completion: the tokenizer's EOS and the model's `generation_config.eos_token_id`
    (an id or a list: chat models often end a turn with a token that is not the tokenizer's EOS,
    e.g. `<|im_end|>` or `<|eot_id|>`). Sorted, without duplicates; ValueError when there is none.

    """
    ids: set[int] = set()
    for source in (getattr(tokenizer, "eos_token_id", None),
                   getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if source is None:
            continue
        ids.update(int(i) for i in ([source] if isinstance(source, int) else source) if i is not None)
    if not ids:
        raise ValueError("neither the tokenizer nor the model's generation_config has an EOS token; accepted: "
                         "a tokenizer with eos_token set")
    return sorted(ids)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions 0, 1, 2, ... counted over real tokens only (left padding gets 0). (B, L) -> (B, L) long.

    GPT-2 adds a learned position embedding; with left padding, the first real token of a padded row sits at
    index P - len, yet must get position 0, as `generate` gives it.
    """
    position_ids = attention_mask.long().cumsum(dim=-1) - 1
    return position_ids.masked_fill(attention_mask == 0, 0)


def encode_prompts(model, tokenizer, prompts: Sequence[str], num_samples: int, max_new_tokens: int,
                   temperature: float, add_special_tokens: bool = True):
    """Check the arguments and tokenize: (prompt_ids (N, P), prompt_mask (N, P), rows (N prompt strings), eos ids),
    N = len(prompts) * num_samples rows, prompt-major, left-padded."""
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r:.80}")
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError(f"tokenizer needs an eos and a pad token, got eos={tokenizer.eos_token_id!r} "
                         f"pad={tokenizer.pad_token_id!r}")
    device = next(model.parameters()).device
    rows = expand_prompts(prompts, num_samples)
    enc = tokenizer(  # the B distinct prompts; a prompt's G rows are copies (the same padding as all N rows)
        prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=add_special_tokens
    )
    prompt_ids = enc["input_ids"].to(device).repeat_interleave(num_samples, dim=0)  # (N, P)
    prompt_mask = enc["attention_mask"].to(device).repeat_interleave(num_samples, dim=0)  # (N, P)
    if prompt_ids.shape[1] == 0 or (prompt_mask.sum(dim=1) == 0).any():
        empty = rows[int((prompt_mask.sum(dim=1) == 0).nonzero()[0])] if prompt_ids.shape[1] else rows[0]
        raise ValueError(f"prompt {empty!r} has no tokens; accepted: prompts of at least one token")
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and prompt_ids.shape[1] + max_new_tokens > limit:
        raise ValueError(
            f"prompt length {prompt_ids.shape[1]} + max_new_tokens {max_new_tokens} exceeds the model's "
            f"context of {limit} tokens; accepted: a shorter prompt or fewer new tokens"
        )
    return prompt_ids, prompt_mask, rows, eos_token_ids(model, tokenizer)


def make_batch(tokenizer, prompt_ids, prompt_mask, completion_ids, eos, rows, num_samples,
               sampling_logps=None) -> Batch:
    """The `Batch` of sampled `completion_ids` (N, T): their completion mask and decoded texts."""
    mask = completion_mask(completion_ids, eos)  # (N, T)
    texts = [tokenizer.decode(ids[: int(n)].tolist(), skip_special_tokens=True)
             for ids, n in zip(completion_ids, mask.sum(dim=1))]
    return Batch(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids, completion_mask=mask,
                 texts=texts, prompts=rows, num_samples=num_samples, sampling_logps=sampling_logps)


def generate(
    model,
    tokenizer=None,
    prompts: Sequence[str] = (),
    num_samples: int = 1,
    max_new_tokens: int = 16,
    temperature: float = 1.0,
    *,
    seed: int | None = None,
    add_special_tokens: bool = True,
    return_logps: bool = False,
) -> Batch:
    """Sample `num_samples` completions of every prompt from the policy with Hugging Face `generate`, in one
    left-padded batch.

    Args:
        model: a causal LM (`AutoModelForCausalLM`), or a `pgcore.lm.models.Policy` (then
            `tokenizer` may be None and the policy's is used).
        tokenizer: its tokenizer; needs a `pad_token_id` (it may equal EOS). A completion ends at the
            first of `eos_token_ids(model, tokenizer)`.
        prompts: B prompt strings, already formatted (chat template applied if the model needs it).
        num_samples: G completions per prompt (G >= 2 for RLOO / group advantages).
        max_new_tokens: cap on the completion length T.
        temperature: sample from softmax(logits / temperature); > 0.
        seed: when given, samples come from a private RNG stream seeded with it (reproducible, and
            the global RNG is untouched); when None, from the global torch RNG.
        add_special_tokens: passed to the tokenizer (False for chat-templated prompts).
        return_logps: also return `Batch.sampling_logps`, the log-probs generate sampled from.

    Returns a `Batch` of N = B * G rows, prompt-major. Sampling is `do_sample=True, top_k=0, top_p=1.0`:
    no truncation, so the tokens are draws from the policy itself and `E[grad log pi(y) * adv]` is the
    policy gradient.
    """
    if hasattr(model, "model") and hasattr(model, "tokenizer"):  # a Policy
        tokenizer = tokenizer if tokenizer is not None else model.tokenizer
        model = model.model
    if tokenizer is None:
        raise ValueError("tokenizer is None; pass the model's tokenizer or a Policy")
    prompt_ids, prompt_mask, rows, eos = encode_prompts(model, tokenizer, prompts, num_samples, max_new_tokens,
                                                        temperature, add_special_tokens)
    with torch.no_grad(), plain_generation_config(model), seeded(seed, prompt_ids.device):
        out = model.generate(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            do_sample=True,
            top_k=0,  # no truncation: tokens are draws from the policy itself
            top_p=1.0,
            temperature=float(temperature),
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,  # a list: generation stops at any of them
            pad_token_id=tokenizer.pad_token_id,
            return_dict_in_generate=True,
            output_scores=return_logps,
        )
    completion_ids = out.sequences[:, prompt_ids.shape[1]:]  # (N, T)
    sampling_logps = None
    if return_logps:
        # scores: T tensors (N, V), the processed logits (divided by temperature) generate sampled from
        scores = torch.stack(out.scores, dim=1).float()  # (N, T, V)
        sampling_logps = scores.log_softmax(-1).gather(-1, completion_ids[..., None]).squeeze(-1)
    return make_batch(tokenizer, prompt_ids, prompt_mask, completion_ids, eos, rows, num_samples, sampling_logps)
