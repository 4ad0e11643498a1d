"""Key/value caches of prompts: each prompt's forward run once and shared by its samples.

`prompt_forward` runs B distinct prompts once (a prefix they all share, once for all); `PromptCache` keeps a
frozen model's (the reference's) prompt caches across steps. Naive twin of both: one forward over every
prompt + completion row, `pgcore.lm.algorithm.per_token_logps`; tests/engine/test_logprobs.py holds them equal.
"""
from __future__ import annotations

import functools
import inspect
from collections import OrderedDict

import torch

from ..lm.sampling import position_ids_from_mask
from .cache_layers import _cache_from, _plain_layers
from .gpt2 import forward_of

__all__ = ["prompt_forward", "common_prefix_length", "PromptCache", "detached_prompt_state", "cache_kwarg",
           "takes_argument"]


def _forward_parameters(model):
    """The parameters of the model's forward, looking through a DDP / Accelerate wrapper."""
    forward = getattr(model, "module", model).forward
    return _parameters_of(getattr(forward, "__func__", forward))


@functools.lru_cache(maxsize=256)
def _parameters_of(function):
    """`inspect.signature(function).parameters`, once per function (it costs about 0.1 ms a call)."""
    return inspect.signature(function).parameters


def takes_argument(model, argument: str, *, via_kwargs: bool = False) -> bool:
    """Does the model's forward take `argument` by name (or, with `via_kwargs`, through **kwargs too)?"""
    params = _forward_parameters(model)
    return argument in params or (via_kwargs and any(p.kind is inspect.Parameter.VAR_KEYWORD
                                                     for p in params.values()))


def cache_kwarg(model) -> str:
    """The name under which the model's forward takes a key/value cache (transformers >= 5.2x: `cache`)."""
    return "cache" if takes_argument(model, "cache") else "past_key_values"


def detached_prompt_state(state):
    """A copy of a `prompt_forward` result (cache, last_logits, layout) cut from its graph, sharing its
    memory, for sampling from (which extends its copy of the cache in place); None when the cache is not
    made of plain growing layers."""
    kv = _plain_layers(state[0])
    if kv is None:
        return None
    return _cache_from([(k.detach(), v.detach()) for k, v in kv]), state[1].detach(), state[2]


def _cache_of(out):
    """The key/value cache a forward returned (`cache` or, in older transformers, `past_key_values`)."""
    return getattr(out, "cache", None) or out.past_key_values


def common_prefix_length(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> int:
    """How many leading real tokens every row shares (left-padded (B, P) rows), keeping at least one
    token of its own in each row (each prompt's last token, whose logit predicts the completion, stays
    its own). 0 for a single row.

    """
    B, P = prompt_ids.shape
    lengths = prompt_mask.sum(dim=1)  # (B,)
    shortest = int(lengths.min())
    if B < 2 or shortest < 2:
        return 0
    columns = (P - lengths)[:, None] + torch.arange(shortest - 1, device=prompt_ids.device)  # (B, shortest - 1)
    aligned = prompt_ids.gather(1, columns)  # each row's first real tokens, side by side
    same = (aligned == aligned[:1]).all(dim=0)  # (shortest - 1,)
    return int(same.long().cumprod(dim=0).sum())


def prompt_forward(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor):
    """Run B distinct left-padded prompts (B, P) once, keeping their key/value cache; the C tokens every
    prompt starts with (`common_prefix_length`: a chat template's system turn, for instance) run once
    for all B. Naive twin: `model(prompt_ids, prompt_mask, position_ids, use_cache=True)` over the plain rows.

    Layout: the cache holds [the shared prefix | each prompt's own tokens, left-padded] (still P
    columns); `layout` (B, P) is its attention mask (ones, then the suffixes' padding mask). Positions
    count real tokens, so every token keeps the position it has in the plain left-padded row, and the
    keys and values are the ones a forward over the plain rows computes (up to float rounding).
    Gradients flow through the shared prefix (its cache is repeated B times, differentiably).

    Returns (cache, last_logits (B, 1, V): the logit of each prompt's last token, layout (B, P)).
    """
    B, P = prompt_ids.shape
    C = common_prefix_length(prompt_ids, prompt_mask)
    keep = {"logits_to_keep": 1} if takes_argument(model, "logits_to_keep") else {}
    forward = forward_of(model)  # a GPT-2: plain tensor calls (gpt2.py)
    if C == 0:
        out = forward(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position_ids_from_mask(prompt_mask),
                    use_cache=True, **keep)
        return _cache_of(out), out.logits[:, -1:, :], prompt_mask
    # the prefix, once: row 0's first C real tokens, at positions 0 .. C-1
    first_real = P - int(prompt_mask[0].sum())
    prefix = prompt_ids[:1, first_real:first_real + C]  # (1, C)
    out = forward(input_ids=prefix, attention_mask=torch.ones_like(prefix),
                position_ids=torch.arange(C, device=prefix.device)[None], use_cache=True, **keep)
    cache = _cache_of(out)
    cache.batch_repeat_interleave(B)
    # each prompt's own tokens, left-padded to P - C columns: row i's real tokens sit in columns P - len_i ..
    # P - 1, so its suffix (from column P - len_i + C) is prompt column j + C for suffix column j >= P - len_i
    lengths = prompt_mask.sum(dim=1, keepdim=True)  # (B, 1)
    suffix_mask = (torch.arange(P - C, device=prompt_ids.device)[None] >= P - lengths).to(prompt_mask.dtype)
    suffix_ids = prompt_ids[:, C:].masked_fill(suffix_mask == 0, 0)  # (B, P - C); masked tokens are never seen
    layout = torch.cat([torch.ones_like(prompt_mask[:, :C]), suffix_mask], dim=1)  # (B, P)
    out = forward(input_ids=suffix_ids, attention_mask=layout, position_ids=position_ids_from_mask(layout)[:, C:],
                use_cache=True, **keep, **{cache_kwarg(model): cache})
    return _cache_of(out), out.logits[:, -1:, :], layout


class PromptCache:
    """The key/value cache and last logit of each prompt under a *frozen* model (the reference), kept
    across steps: a run draws its prompts again and again, and a frozen model's cache of a prompt never
    changes. Naive twin: `prompt_forward` on the batch's prompts, every step. `forward` is `prompt_forward` for such a model, with each prompt run once per run, not once
    per step.

    Each prompt is run alone (a batch of one), so what is kept is a function of the prompt only: a run
    resumed with an empty cache computes the same bits. The batch's cache is assembled in the plain
    left-padded layout (zeros in the padding columns, which the attention mask hides). At most
    `max_bytes` are kept, least recently used first out. A cache whose layers are not plain growing
    ones (e.g. sliding-window attention) is not kept: then `forward` is `prompt_forward`.
    """

    def __init__(self, max_bytes: int = 256 * 2**20):
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = self.misses = 0
        self._entries: OrderedDict = OrderedDict()  # prompt tokens -> (per-layer (keys, values), last logit, bytes)

    def __len__(self) -> int:
        return len(self._entries)

    def forward(self, model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor):
        """`prompt_forward(model, prompt_ids, prompt_mask)` (cache, last_logits (B, 1, V), layout (B, P)),
        from the kept prompts. Call without a graph (`torch.inference_mode()` or `torch.no_grad()`)."""
        if torch.is_grad_enabled():
            raise ValueError("PromptCache keeps a frozen model's caches; accepted: a call under torch.inference_mode() "
                             "or torch.no_grad()")
        B, P = prompt_ids.shape
        lengths = prompt_mask.sum(dim=1).tolist()
        entries = []
        for row, n in zip(prompt_ids, lengths):
            key = tuple(row[P - n:].tolist())
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                real = row[None, P - n:]  # (1, n): this prompt alone
                cache, logits, _ = prompt_forward(model, real, torch.ones_like(real))
                kv = _plain_layers(cache)  # each (1, heads, n, head_dim)
                if kv is None:
                    return prompt_forward(model, prompt_ids, prompt_mask)  # a cache this class cannot assemble
                size = sum(k.nbytes + v.nbytes for k, v in kv) + logits.nbytes
                entry = self._entries[key] = (kv, logits, size)
                self.bytes += size
            else:
                self.hits += 1
                self._entries.move_to_end(key)
            entries.append(entry)
        batch_kv = []
        for layer in range(len(entries[0][0])):  # each prompt's (1, heads, n, head_dim) into (B, heads, P, head_dim)
            k0, v0 = entries[0][0][layer]
            keys, values = k0.new_zeros(B, k0.shape[1], P, k0.shape[3]), v0.new_zeros(B, v0.shape[1], P, v0.shape[3])
            for b, ((kv, _, _), n) in enumerate(zip(entries, lengths)):
                keys[b, :, P - n:], values[b, :, P - n:] = kv[layer][0][0], kv[layer][1][0]
            batch_kv.append((keys, values))
        cache = _cache_from(batch_kv)
        last_logits = torch.cat([logits for _, logits, _ in entries])  # (B, 1, V)
        while self.bytes > self.max_bytes and len(self._entries) > 1:  # least recently used first out
            self.bytes -= self._entries.popitem(last=False)[1][2]
        return cache, last_logits, prompt_mask
