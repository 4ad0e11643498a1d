"""Per-token log-probabilities (and entropies) of a completion under a causal LM, TRL style.

For a sampled completion y = (y_1, ..., y_T) after prompt x, the policy's log-probability is a sum
over tokens, log pi(y|x) = sum_t log pi(y_t | x, y_<t), so the policy gradient of an LM is the
estimator of notebook 01 applied token by token. One forward pass over prompt + completion gives
all T terms at once: the logits at position i predict token i + 1.

Introduced in notebooks/04_lm_policy_gradient.ipynb.
"""
from __future__ import annotations

import inspect
from collections import OrderedDict

import torch

__all__ = ["selective_log_softmax", "entropy_from_logits", "position_ids_from_mask", "per_token_logps",
           "per_token_logps_shared_prompt", "prompt_forward", "common_prefix_length", "PromptCache"]


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[..., index] without materializing the full (..., V) log-softmax.

    logits: (..., V); index: (...) token ids. Returns (...) float.
    Naive twin (same values, V times more memory):
        torch.log_softmax(logits, dim=-1).gather(-1, index.unsqueeze(-1)).squeeze(-1)
    Here: the chosen logit minus logsumexp over the vocabulary, computed one row at a time
    (TRL's `selective_log_softmax`). Half precision goes through log_softmax row by row, where
    logsumexp would lose too much.
    Its gradient, d log p_y / d logits = onehot(y) - softmax(logits), is written in one (..., V)
    tensor, a row at a time (`_SelectedLogSoftmax`), where autograd would build the gather's and the
    logsumexp's gradients apart and add them: the same values, three fewer (..., V) temporaries.
    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    if logits.shape[:-1] != index.shape:
        raise ValueError(f"index shape {tuple(index.shape)} must equal the logits shape without the vocab dim, "
                         f"{tuple(logits.shape[:-1])}")
    if logits.dtype in (torch.float32, torch.float64):
        if logits.requires_grad and torch.is_grad_enabled() and logits.dim() > 1:
            return _SelectedLogSoftmax.apply(logits, index)
        selected, lse = _selected_and_logsumexp(logits, index)
        return selected - lse
    return torch.stack(
        [torch.log_softmax(row, dim=-1).gather(-1, idx.unsqueeze(-1)).squeeze(-1) for row, idx in zip(logits, index)]
    )


def _selected_and_logsumexp(logits: torch.Tensor, index: torch.Tensor):
    """(logits[..., index], logsumexp(logits)), both (...); the logsumexp one row at a time."""
    selected = torch.gather(logits, dim=-1, index=index.unsqueeze(-1)).squeeze(-1)
    return selected, torch.stack([torch.logsumexp(row, dim=-1) for row in logits])


class _SelectedLogSoftmax(torch.autograd.Function):
    """logits[..., y] - logsumexp(logits) (float32 / float64), whose backward writes grad * (onehot(y) -
    softmax(logits)) straight into one tensor, a leading row at a time."""

    @staticmethod
    def forward(ctx, logits, index):
        selected, lse = _selected_and_logsumexp(logits, index)
        ctx.save_for_backward(logits, index, lse)
        return selected - lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        logits, index, lse = ctx.saved_tensors
        out = torch.empty_like(logits, memory_format=torch.contiguous_format)  # (..., V)
        for o, row, row_lse, g in zip(out, logits, lse, grad):
            torch.sub(row, row_lse.unsqueeze(-1), out=o).exp_().mul_(g.unsqueeze(-1)).neg_()  # -g * softmax
        out.scatter_add_(-1, index.unsqueeze(-1), grad.unsqueeze(-1).to(out.dtype))  # + g at the chosen token
        return out, None


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy H = -sum_v p_v log p_v of softmax(logits) over the last dim. (..., V) -> (...).

    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions 0, 1, 2, ... counted over real tokens only (left padding gets 0).

    GPT-2 adds a learned position embedding; with left padding, the first real token of a padded
    row sits at index P - len, yet must get position 0, exactly as `generate` gives it (it builds
    position_ids from the attention mask the same way). (B, L) -> (B, L) long.
    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    position_ids = attention_mask.long().cumsum(dim=-1) - 1
    return position_ids.masked_fill(attention_mask == 0, 0)


def _forward_parameters(model):
    """The parameters of the model's forward, looking through a DDP / Accelerate wrapper."""
    return inspect.signature(getattr(model, "module", model).forward).parameters


def _takes(model, argument: str, *, via_kwargs: bool = False) -> bool:
    """Does the model's forward take `argument` by name (or, with `via_kwargs`, through **kwargs too)?"""
    params = _forward_parameters(model)
    return argument in params or (via_kwargs and any(p.kind is inspect.Parameter.VAR_KEYWORD
                                                     for p in params.values()))


def _cache_kwarg(model) -> str:
    """The name under which the model's forward takes a key/value cache (transformers >= 5.2x: `cache`)."""
    return "cache" if _takes(model, "cache") else "past_key_values"


def _plain_layers(cache) -> list | None:
    """The cache's per-layer (keys, values) when every layer is a plain growing one (`DynamicLayer`:
    keys and values (batch, heads, length, head_dim)), else None (e.g. sliding-window layers)."""
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer).__name__ != "DynamicLayer" for layer in layers):
        return None
    return [(layer.keys, layer.values) for layer in layers]


def _cache_from(kv: list):
    """A `DynamicCache` holding these per-layer (keys, values)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for i, (keys, values) in enumerate(kv):
        cache.update(keys, values, i)
    return cache


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

    Introduced in notebooks/04_lm_policy_gradient.ipynb.
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
    if _takes(model, "use_cache", via_kwargs=True):  # a training forward needs no key/value cache (it costs time and memory)
        kwargs["use_cache"] = False
    if _takes(model, "logits_to_keep"):
        # +1: the logit at the last prompt token predicts the first completion token
        logits = model(**kwargs, logits_to_keep=logits_to_keep + 1).logits  # (B, T+1, V)
    else:
        logits = model(**kwargs).logits[:, -(logits_to_keep + 1):]  # (B, T+1, V)
    logits = logits[:, :-1, :]  # (B, T, V): last position predicts nothing
    if temperature != 1.0:  # (x / 1.0 is x: skipping it saves a pass over the (B, T, V) logits)
        logits = logits / temperature
    completion_ids = input_ids[:, -logits_to_keep:]  # (B, T): the tokens those logits predict
    logps = selective_log_softmax(logits, completion_ids)  # (B, T)
    if return_entropy:
        return logps, _entropy(logits, entropy_grad)
    return logps


def _entropy(logits: torch.Tensor, grad: bool) -> torch.Tensor:
    """`entropy_from_logits`, with its graph, or (for logging) without one, a row at a time: then no
    (B, T, V) temporaries."""
    if grad:
        return entropy_from_logits(logits)
    with torch.no_grad():
        return torch.stack([entropy_from_logits(row) for row in logits.detach()])


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
    prompt_cache: "PromptCache | None" = None,
    prompt_state: tuple | None = None,
):
    """`per_token_logps` for G = num_samples completions of each prompt, running each prompt once.

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
    Introduced in notebooks/04_lm_policy_gradient.ipynb.
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
    pieces = [(last_prompt_logits, completion_ids[:, :1])]
    if T > 1:
        logits = model(input_ids=completion_ids[:, :-1], attention_mask=full_mask[:, :-1],
                       position_ids=position_ids[:, P:-1], use_cache=False, **{_cache_kwarg(model): cache}).logits
        pieces.append((logits, completion_ids[:, 1:]))
    # the pieces of the (N, T, V) logits stay apart (no concatenated copy); log-probs row by row
    if temperature != 1.0:
        pieces = [(piece / temperature, ids) for piece, ids in pieces]
    logps = torch.cat([selective_log_softmax(piece, ids) for piece, ids in pieces], dim=1)  # (N, T)
    if return_entropy:
        return logps, torch.cat([_entropy(piece, entropy_grad) for piece, _ in pieces], dim=1)
    return logps


def common_prefix_length(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> int:
    """How many leading real tokens every row shares (left-padded (B, P) rows), keeping at least one
    token of its own in each row (each prompt's last token, whose logit predicts the completion, stays
    its own). 0 for a single row.

    Introduced in notebooks/04_lm_policy_gradient.ipynb.
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
    for all B.

    Layout: the cache holds [the shared prefix | each prompt's own tokens, left-padded] (still P
    columns); `layout` (B, P) is its attention mask (ones, then the suffixes' padding mask). Positions
    count real tokens, so every token keeps the position it has in the plain left-padded row, and the
    keys and values are the ones a forward over the plain rows computes (up to float rounding).
    Gradients flow through the shared prefix (its cache is repeated B times, differentiably).

    Returns (cache, last_logits (B, 1, V): the logit of each prompt's last token, layout (B, P)).
    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    B, P = prompt_ids.shape
    C = common_prefix_length(prompt_ids, prompt_mask)
    keep = {"logits_to_keep": 1} if _takes(model, "logits_to_keep") else {}
    if C == 0:
        out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position_ids_from_mask(prompt_mask),
                    use_cache=True, **keep)
        return _cache_of(out), out.logits[:, -1:, :], prompt_mask
    # the prefix, once: row 0's first C real tokens, at positions 0 .. C-1
    first_real = P - int(prompt_mask[0].sum())
    prefix = prompt_ids[:1, first_real:first_real + C]  # (1, C)
    out = model(input_ids=prefix, attention_mask=torch.ones_like(prefix),
                position_ids=torch.arange(C, device=prefix.device)[None], use_cache=True, **keep)
    cache = _cache_of(out)
    cache.batch_repeat_interleave(B)
    # each prompt's own tokens, left-padded to P - C columns: row i's real tokens sit in columns P - len_i ..
    # P - 1, so its suffix (from column P - len_i + C) is prompt column j + C for suffix column j >= P - len_i
    lengths = prompt_mask.sum(dim=1, keepdim=True)  # (B, 1)
    suffix_mask = (torch.arange(P - C, device=prompt_ids.device)[None] >= P - lengths).to(prompt_mask.dtype)
    suffix_ids = prompt_ids[:, C:].masked_fill(suffix_mask == 0, 0)  # (B, P - C); masked tokens are never seen
    layout = torch.cat([torch.ones_like(prompt_mask[:, :C]), suffix_mask], dim=1)  # (B, P)
    out = model(input_ids=suffix_ids, attention_mask=layout, position_ids=position_ids_from_mask(layout)[:, C:],
                use_cache=True, **keep, **{_cache_kwarg(model): cache})
    return _cache_of(out), out.logits[:, -1:, :], layout


class PromptCache:
    """The key/value cache and last logit of each prompt under a *frozen* model (the reference), kept
    across steps: a run draws its prompts again and again, and a frozen model's cache of a prompt never
    changes. `forward` is `prompt_forward` for such a model, with each prompt run once per run, not once
    per step.

    Each prompt is run alone (a batch of one), so what is kept is a function of the prompt only: a run
    resumed with an empty cache computes the same bits. The batch's cache is assembled in the plain
    left-padded layout (zeros in the padding columns, which the attention mask hides). At most
    `max_bytes` are kept, least recently used first out. A cache whose layers are not plain growing
    ones (e.g. sliding-window attention) is not kept: then `forward` is `prompt_forward`.
    Introduced in notebooks/04_lm_policy_gradient.ipynb.
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
