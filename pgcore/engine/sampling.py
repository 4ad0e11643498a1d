"""The engine's sampler: each distinct prompt prefilled once, its key/value cache shared by its samples.

Naive twin: `pgcore.lm.sampling.generate` (Hugging Face `generate` over all N = B * G prompt rows). Both draw
every token from softmax(logits / temperature); with the same seed they draw different samples (other random
numbers per token). Tested equal in distribution and in log-probs in tests/engine/test_sampling_shared.py.
"""
from __future__ import annotations

import torch

from ..lm.sampling import Batch, encode_prompts, make_batch, position_ids_from_mask, seeded
from .decode import GPT2Decoder
from .kv_cache import cache_kwarg, detached_prompt_state, prompt_forward

__all__ = ["generate_shared", "sample_categorical"]


def generate_shared(model, tokenizer, prompts, num_samples: int, max_new_tokens: int, temperature: float = 1.0, *,
                    seed: int | None = None, add_special_tokens: bool = True, return_logps: bool = False,
                    prompt_graph: bool = False) -> tuple[Batch, tuple | None]:
    """`generate`'s batch, sampled with each distinct prompt's forward (the prefill) run once.

    Naive twin: `pgcore.lm.sampling.generate` (the same distribution, other random numbers), and token by token
    a sampler that recomputes every forward from scratch (tests/test_lm_sampling.py: the same tokens).

    prompt_graph: run the prompts' forward with autograd on and return it as `prompt_state` (cache, last logits,
    layout) for `per_token_logps_shared_prompt(..., prompt_state=...)`: sampling and the gradient then share one
    prompt forward. Sampling itself keeps no graph. Returns (batch, prompt_state or None).
    """
    prompt_ids, prompt_mask, rows, eos = encode_prompts(model, tokenizer, prompts, num_samples, max_new_tokens,
                                                        temperature, add_special_tokens)
    distinct_ids, distinct_mask = prompt_ids[::num_samples], prompt_mask[::num_samples]  # (B, P)
    prompt_state = state = None
    if prompt_graph:  # the prompts' forward, with its graph, for the gradient; sampling gets a detached copy
        with torch.enable_grad():
            prompt_state = prompt_forward(model, distinct_ids, distinct_mask)
        state = detached_prompt_state(prompt_state)
        if state is None:  # a cache that cannot be copied: sampling runs its own prompt forward
            prompt_state = None
    with torch.no_grad(), seeded(seed, prompt_ids.device):
        completion_ids, sampling_logps = _sample_shared(
            model, distinct_ids, distinct_mask, num_samples, max_new_tokens, float(temperature), eos,
            tokenizer.pad_token_id, return_logps, state)
    batch = make_batch(tokenizer, prompt_ids, prompt_mask, completion_ids, eos, rows, num_samples, sampling_logps)
    return batch, prompt_state


def sample_categorical(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """One draw from softmax(logits / temperature) per row, by inverting the CDF. (N, V) -> (N,) long.

    u ~ Uniform[0, 1) times the row's total mass, then the first token whose cumulative probability
    exceeds u: token v is drawn with probability p_v exactly (up to float rounding of the cumsum), and a
    token of probability 0 never. One uniform number per row, where `torch.multinomial` draws V
    exponentials per row (on a CPU, about 10x slower for a 50k vocabulary). Uses the global torch RNG.
    Naive twin: `torch.multinomial(softmax(logits / temperature), 1)`, the same distribution (tested against
    the exact probabilities).
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be shaped (N, V), got shape {tuple(logits.shape)}")
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    cdf = torch.softmax(logits, dim=-1).cumsum_(dim=-1)  # (N, V)
    u = torch.rand(cdf.shape[0], 1, device=cdf.device) * cdf[:, -1:]  # (N, 1), in [0, total mass)
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=cdf.shape[1] - 1)


def _sample_shared(model, prompt_ids, prompt_mask, num_samples, max_new_tokens, temperature, eos, pad,
                   return_logps, state=None):
    """Sample G = num_samples completions of each of B distinct prompts, prefilling each prompt once.

    prompt_ids / prompt_mask: (B, P) left-padded. The prompts run once (`prompt_forward`: their
    key/value cache and last logits; a prefix they all share runs once for all), the cache is repeated
    G times (row i * G + g: sample g of prompt i, as `Batch` orders rows), then every step feeds the
    N = B * G sampled tokens against the growing cache (a GPT-2 through `decode.GPT2Decoder`). Rows that sampled an EOS are fed the pad token
    from then on (as `generate` does) and the loop stops when all have. Returns (N, T) completion ids
    (pad after EOS) and the (N, T) log-probs the tokens were drawn with (None unless `return_logps`).
    `state`: the prompts' `prompt_forward` already run (without a graph), else it runs here.
    """
    G = num_samples
    cache, logits, layout = state if state is not None else prompt_forward(model, prompt_ids, prompt_mask)
    cache_kw = cache_kwarg(model)
    if G > 1:
        cache.batch_repeat_interleave(G)  # (B, ...) -> (N, ...): each prompt's cache for each of its samples
    logits = logits[:, -1].repeat_interleave(G, dim=0)  # (N, V): predicts the first completion token
    mask = layout.repeat_interleave(G, dim=0)  # (N, P + t): the attention mask of the cached columns
    position = position_ids_from_mask(mask)[:, -1:]  # (N, 1): the last prompt token's position
    eos_ids = torch.as_tensor(eos, device=prompt_ids.device)
    done = torch.zeros(mask.shape[0], dtype=torch.bool, device=mask.device)  # (N,) sampled an EOS already
    decoder = GPT2Decoder.from_cache(model, cache, mask, max_new_tokens)  # GPT-2: plain tensor calls (decode.py)
    tokens, logps = [], []
    for t in range(max_new_tokens):
        token = sample_categorical(logits, temperature)  # (N,)
        if return_logps:
            scaled = logits.float() / temperature
            logps.append(scaled.log_softmax(-1).gather(-1, token[:, None]).squeeze(1))
        token = token.masked_fill(done, pad)  # a finished row is padded
        tokens.append(token)
        done |= torch.isin(token, eos_ids)
        if t == max_new_tokens - 1 or bool(done.all()):
            break
        position = position + 1
        if decoder is not None:
            logits = decoder.step(token, position[:, 0])  # (N, V)
            continue
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position, use_cache=True,
                    **{cache_kw: cache})
        logits = out.logits[:, -1]  # (N, V)
    completion_ids = torch.stack(tokens, dim=1)  # (N, T)
    return completion_ids, (torch.stack(logps, dim=1) if return_logps else None)
