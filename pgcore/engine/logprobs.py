"""The engine's per-token log-probs: less memory, and each prompt run once for its G samples.

Naive twin of every function here: `pgcore.lm.algorithm.per_token_logps` (one forward over prompt +
completion, `log_softmax -> gather`). tests/engine/test_logprobs.py holds each fast path equal to it.
"""
from __future__ import annotations

import torch

from ..lm.sampling import position_ids_from_mask
from .gpt2 import GPT2Forward, forward_of
from .kv_cache import PromptCache, cache_kwarg, prompt_forward, takes_argument

__all__ = ["selective_log_softmax", "selective_log_softmax_and_entropy", "entropy_from_logits", "per_token_logps",
           "per_token_logps_shared_prompt"]


CHUNK_ELEMENTS = 1 << 22  # (..., V) work a slice at a time: at most this many elements (16 MB of float32)


def row_chunks(*tensors: torch.Tensor, elements: int = CHUNK_ELEMENTS):
    """Slices of the leading dim of `tensors` (the first one sets their size): as many rows a slice as keep it
    at or under `elements` elements, and at least one. A small vocabulary runs in one slice; a 49k one a few
    rows at a time, as memory wants. Naive twin: one row at a time (`zip(*tensors)`), the same values."""
    first = tensors[0]
    per_row = max(1, first[:1].numel())
    step = max(1, elements // per_row)
    for start in range(0, first.shape[0], step):
        yield tuple(t[start:start + step] for t in tensors)


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[..., index] without keeping the full (..., V) log-softmax.

    logits: (..., V); index: (...) token ids. Returns (...) float.
    Naive twin (same values, V times more memory):
        torch.log_softmax(logits, dim=-1).gather(-1, index.unsqueeze(-1)).squeeze(-1)
    Here: the same, a slice of rows at a time (`row_chunks`; TRL's `selective_log_softmax` goes one row at a
    time), each slice's log-softmax dropped once its chosen entries are read.
    Its gradient, d log p_y / d logits = onehot(y) - softmax(logits), is written in one (..., V)
    tensor, a slice of rows at a time (`_SelectedLogSoftmax`), where autograd would build the gather's
    and the log-softmax's gradients apart and add them: the same values, fewer (..., V) temporaries.
    `selective_log_softmax_and_entropy` gives the entropy from the same pass.
    """
    return _selected(logits, index, entropy=False)[0]


def selective_log_softmax_and_entropy(logits: torch.Tensor, index: torch.Tensor):
    """(selective_log_softmax(logits, index), the entropy of softmax(logits) without a graph), both (...),
    from one pass over the logits: per slice of rows one log-softmax and one softmax, the softmax kept for
    the backward (in place of the logits). For logging the entropy (no entropy bonus).

    Naive twin: `selective_log_softmax(logits, index), entropy_from_logits(logits).detach()`, which pass over
    the (..., V) logits three times more (a second log-softmax, `exp`, and the backward's softmax); tested
    equal in tests/engine/test_lm_logprobs.py."""
    return _selected(logits, index, entropy=True)


def _selected(logits: torch.Tensor, index: torch.Tensor, entropy: bool):
    if logits.shape[:-1] != index.shape:
        raise ValueError(f"index shape {tuple(index.shape)} must equal the logits shape without the vocab dim, "
                         f"{tuple(logits.shape[:-1])}")
    if logits.dtype in (torch.float32, torch.float64):
        if logits.requires_grad and torch.is_grad_enabled() and logits.dim() > 1:
            selected, ent = _SelectedLogSoftmax.apply(logits, index, entropy)
            return selected, (ent if entropy else None)
        with torch.no_grad():
            selected, ent, _ = _selected_and_entropy(logits, index, entropy)
        return selected, ent
    # half precision goes through log_softmax a slice at a time, where logsumexp would lose too much
    selected = torch.cat([torch.log_softmax(rows, dim=-1).gather(-1, idx.unsqueeze(-1)).squeeze(-1)
                          for rows, idx in row_chunks(logits, index)])
    return selected, (_entropy(logits, grad=False) if entropy else None)


def _selected_and_entropy(logits: torch.Tensor, index: torch.Tensor, entropy: bool):
    """(log_softmax(logits)[..., index] (...), the entropy (...) or None, softmax(logits) (..., V) or None), a
    slice of rows at a time; the entropy -sum p log p from each slice's softmax and log-softmax (two vectorized
    kernels; `exp` over the vocabulary is slower than either on a CPU)."""
    probs = torch.empty_like(logits, memory_format=torch.contiguous_format) if entropy else None
    if logits.shape[0] == 0:  # no rows (e.g. no completion token kept): empty results
        return logits.new_zeros(index.shape), (logits.new_zeros(index.shape) if entropy else None), probs
    selected, ents = [], []
    for rows, idx, *p in row_chunks(logits, index, *([probs] if entropy else [])):
        logp = torch.log_softmax(rows, dim=-1)  # (rows, ..., V), dropped after this slice
        selected.append(logp.gather(-1, idx.unsqueeze(-1)).squeeze(-1))
        if entropy:
            torch.softmax(rows, dim=-1, out=p[0])
            ents.append(-(p[0] * logp).sum(dim=-1))
    return torch.cat(selected), (torch.cat(ents) if entropy else None), probs


class _SelectedLogSoftmax(torch.autograd.Function):
    """log_softmax(logits)[..., y] (float32 / float64), and with `entropy` the entropy (no gradient), whose
    backward writes grad * (onehot(y) - softmax(logits)) straight into one tensor, a slice of leading rows at a
    time (the softmax kept from the forward with `entropy`, else computed again from the logits)."""

    @staticmethod
    def forward(ctx, logits, index, entropy):
        selected, ent, probs = _selected_and_entropy(logits, index, entropy)
        ctx.kept_probs = entropy
        ctx.save_for_backward(probs if entropy else logits, index)
        if not entropy:
            ent = selected.new_empty(0)
        ctx.mark_non_differentiable(ent)
        return selected, ent

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad, _):
        kept, index = ctx.saved_tensors
        out = torch.empty_like(kept, memory_format=torch.contiguous_format)  # (..., V)
        for o, rows, g in row_chunks(out, kept, grad):
            probs = rows if ctx.kept_probs else torch.softmax(rows, dim=-1)
            torch.mul(probs, g.neg().unsqueeze(-1), out=o)  # -g * softmax
        out.scatter_add_(-1, index.unsqueeze(-1), grad.unsqueeze(-1).to(out.dtype))  # + g at the chosen token
        return out, None, None


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy H = -sum_v p_v log p_v of softmax(logits) over the last dim. (..., V) -> (...).

    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def per_token_logps(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    temperature: float = 1.0,
    *,
    return_entropy: bool = False,
    entropy_grad: bool = True,
):
    """log pi(y_t | x, y_<t) for the last `logits_to_keep` tokens of every row (the completion).

    Naive twin: `pgcore.lm.algorithm.per_token_logps` (all logits, then `log_softmax -> gather`). Here: only the
    last T + 1 logits are computed (`logits_to_keep`), no key/value cache is built, and `selective_log_softmax`.

    Args:
        model: a causal LM (gradients flow through it unless called under `torch.no_grad()`).
        input_ids: (B, L) prompt then completion, left-padded (`Batch.input_ids`).
        attention_mask: (B, L) 1 on real tokens (`Batch.attention_mask`).
        logits_to_keep: T, the completion length; the last T tokens are scored.
        temperature: the sampling temperature; the policy that sampled is softmax(logits / temperature),
            so its log-probs (the ones the estimator needs) use the same division.
        return_entropy: also return the (B, T) entropy of each next-token distribution.
        entropy_grad: False computes that entropy without a graph (for logging only: saves the
            (B, T, V) softmax the backward pass would otherwise keep).

    Returns:
        per_token_logps (B, T), or (per_token_logps, entropy) with `return_entropy=True`.
        Entries after EOS are meaningless: multiply by the completion mask.

    """
    if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} "
                         "must both be (B, L)")
    if not 1 <= logits_to_keep < input_ids.shape[1]:
        raise ValueError(f"logits_to_keep must be in [1, {input_ids.shape[1] - 1}] (at least one prompt token), "
                         f"got {logits_to_keep}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    position_ids = position_ids_from_mask(attention_mask)  # (B, L): left padding must not shift positions
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    if takes_argument(model, "use_cache", via_kwargs=True):  # a training forward needs no key/value cache (it costs time and memory)
        kwargs["use_cache"] = False
    forward = forward_of(model)  # a GPT-2: plain tensor calls (gpt2.py)
    if takes_argument(model, "logits_to_keep"):
        # +1: the logit at the last prompt token predicts the first completion token
        logits = forward(**kwargs, logits_to_keep=logits_to_keep + 1).logits  # (B, T+1, V)
    else:
        logits = forward(**kwargs).logits[:, -(logits_to_keep + 1):]  # (B, T+1, V)
    logits = logits[:, :-1, :]  # (B, T, V): last position predicts nothing
    if temperature != 1.0:  # (x / 1.0 is x: skipping it saves a pass over the (B, T, V) logits)
        logits = logits / temperature
    completion_ids = input_ids[:, -logits_to_keep:]  # (B, T): the tokens those logits predict
    if return_entropy:
        return _logps_and_entropy(logits, completion_ids, entropy_grad)  # (B, T), (B, T)
    return selective_log_softmax(logits, completion_ids)  # (B, T)


def _logps_and_entropy(logits: torch.Tensor, index: torch.Tensor, entropy_grad: bool):
    """(log-probs, entropies): the entropy with its graph (an entropy bonus), or for logging from the log-probs'
    own pass (`selective_log_softmax_and_entropy`)."""
    if entropy_grad:
        return selective_log_softmax(logits, index), entropy_from_logits(logits)
    return selective_log_softmax_and_entropy(logits, index)


def _entropy(logits: torch.Tensor, grad: bool) -> torch.Tensor:
    """`entropy_from_logits`, with its graph, or (for logging) without one, a slice of rows at a time: then
    no (B, T, V) temporaries beyond one slice's."""
    if grad:
        return entropy_from_logits(logits)
    with torch.no_grad():
        return torch.cat([entropy_from_logits(rows) for (rows,) in row_chunks(logits.detach())])


def per_token_logps_shared_prompt(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    num_samples: int,
    temperature: float = 1.0,
    *,
    return_entropy: bool = False,
    entropy_grad: bool = True,
    prompt_cache: PromptCache | None = None,
    prompt_state: tuple | None = None,
):
    """`per_token_logps` for G = num_samples completions of each prompt, running each prompt once.

    Naive twin: `per_token_logps(model, cat(prompt, completion), cat(prompt_mask, completion_mask), T)`.

    The rows are prompt-major (row i * G + g is sample g of prompt i, as `Batch` holds them), so
    the G copies of a prompt are identical. Instead of G forward passes over the same prompt:

        1. one forward over the B distinct prompts (B, P), keeping their key/value cache (the
           tokens every prompt starts with, e.g. a chat template's system turn, run once: see
           `prompt_forward`)
        2. the cache repeated G times (B -> N = B * G rows); gradients flow back through the
           repeat into the shared prompt computation, so d/dtheta is the sum over the G samples
        3. one forward over the N completions (N, T - 1: the last token predicts nothing) against that cache

    The logit of each prompt's last token predicts the first completion token; the completion's
    own logits predict the rest. Same values as `per_token_logps(model, cat(prompt, completion),
    cat(prompt_mask, completion_mask), T)` up to float rounding (the additions are ordered
    differently), with about G times less prompt compute.

    Args: prompt_ids / prompt_mask (N, P) left-padded; completion_ids / completion_mask (N, T);
    num_samples G (N must be a multiple of G and every group's prompt rows identical); prompt_cache:
    for a frozen model (no graph), a `PromptCache` that runs each prompt once per run instead of
    step 1; prompt_state: instead of step 1, the `prompt_forward` of the B distinct prompts already run
    (with its graph), as `generate(..., prompt_graph=True)` keeps it in `Batch.prompt_state`: sampling and
    the gradient then share one prompt forward (used once: its cache is extended in place); the rest as in
    `per_token_logps`. Returns (N, T) log-probs (and (N, T) entropies with `return_entropy`).
    """
    N, P = prompt_ids.shape
    T = completion_ids.shape[1]
    G = int(num_samples)
    if G < 1 or N % G:
        raise ValueError(f"num_samples must be >= 1 and divide the {N} rows, got {num_samples!r}")
    if prompt_mask.shape != (N, P) or completion_ids.shape[0] != N or completion_mask.shape != (N, T) or T < 1:
        raise ValueError(f"prompt_ids {tuple(prompt_ids.shape)}, prompt_mask {tuple(prompt_mask.shape)}, completion_ids "
                         f"{tuple(completion_ids.shape)}, completion_mask {tuple(completion_mask.shape)}: expected "
                         "(N, P), (N, P), (N, T), (N, T) with T >= 1")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    first = slice(None, None, G)
    if G > 1 and not (torch.equal(prompt_ids.view(-1, G, P), prompt_ids[first, None].expand(-1, G, -1))
                      and torch.equal(prompt_mask.view(-1, G, P), prompt_mask[first, None].expand(-1, G, -1))):
        raise ValueError("the rows of a group must share their prompt (prompt-major rows, as generate returns them)")

    # 1. each distinct prompt once (the prefix all of them share, once), with its key/value cache
    if prompt_state is not None:
        cache, last_prompt_logits, layout = prompt_state
        rows = cache.layers[0].keys.shape[0] if getattr(cache, "layers", None) else last_prompt_logits.shape[0]
        if (rows, *layout.shape) != (N // G, N // G, P):
            raise ValueError(f"prompt_state holds a cache of {rows} rows for {layout.shape[0]} prompts of "
                             f"{layout.shape[1]} columns, the batch has {N // G} prompts of {P}; accepted: the state "
                             "of this batch's prompts, not used before")
    elif prompt_cache is not None:
        cache, last_prompt_logits, layout = prompt_cache.forward(model, prompt_ids[first], prompt_mask[first])
    else:
        cache, last_prompt_logits, layout = prompt_forward(model, prompt_ids[first], prompt_mask[first])
    # 2. the cache shared by the G samples of each prompt (differentiable: repeat_interleave)
    if G > 1:
        cache.batch_repeat_interleave(G)
        last_prompt_logits = last_prompt_logits.repeat_interleave(G, dim=0)  # (N, 1, V)
        layout = layout.repeat_interleave(G, dim=0)  # (N, P)
    full_mask = torch.cat([layout, completion_mask.to(layout.dtype)], dim=1)  # (N, P+T)
    position_ids = position_ids_from_mask(full_mask)  # (N, P+T): the positions of the one-pass forward
    # 3. the completions against the cache, all but the last token (its logit would predict nothing, and no
    #    later token reads its key and value)
    pieces = [(last_prompt_logits, completion_ids[:, :1], None)]
    if T > 1:
        forward = forward_of(model)  # a GPT-2: plain tensor calls (gpt2.py), its LM head only where a log-prob counts
        kept = completion_mask[:, 1:].bool() if isinstance(forward, GPT2Forward) else None  # (N, T - 1)
        logits = forward(input_ids=completion_ids[:, :-1], attention_mask=full_mask[:, :-1],
                         position_ids=position_ids[:, P:-1], use_cache=False, **{cache_kwarg(model): cache},
                         **({"logits_rows": kept} if kept is not None else {})).logits  # (N, T - 1, V) or (kept, V)
        pieces.append((logits, completion_ids[:, 1:] if kept is None else completion_ids[:, 1:][kept], kept))
    # the pieces of the (N, T, V) logits stay apart (no concatenated copy); log-probs row by row
    if temperature != 1.0:
        pieces = [(piece / temperature, ids, kept) for piece, ids, kept in pieces]
    if return_entropy:
        both = [(*_logps_and_entropy(piece, ids, entropy_grad), kept) for piece, ids, kept in pieces]
        return (torch.cat([_unpack(lp, kept) for lp, _, kept in both], dim=1),
                torch.cat([_unpack(ent, kept) for _, ent, kept in both], dim=1))  # (N, T) each
    return torch.cat([_unpack(selective_log_softmax(piece, ids), kept) for piece, ids, kept in pieces], dim=1)


def _unpack(values: torch.Tensor, kept: torch.Tensor | None) -> torch.Tensor:
    """(N, T') values from those at the `kept` (N, T') positions only (0 elsewhere: after EOS, where the
    completion mask is 0); None: `values` is already (N, T')."""
    return values if kept is None else values.new_zeros(kept.shape).masked_scatter(kept, values)


