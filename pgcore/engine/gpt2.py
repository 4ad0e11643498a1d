"""Fast path: a GPT-2 causal LM's forward (prompts, completions against a cache) as plain tensor calls.

The training-side sibling of `decode.GPT2Decoder`. On the course's tiny models a forward is a few hundred
tokens through two layers, and transformers' per-call machinery (the 4-D mask built by `create_causal_mask`,
some thirty module calls, output capturing, the cache's bookkeeping) costs more than the prompt forward's
arithmetic (about 1.4 against 0.7 ms) and a tenth of a completion forward (docs/profile.md). `GPT2Forward` runs the same arithmetic on
the model's own weights (layer norm, the fused QKV projection, scaled dot-product attention, the output
projection, the MLP with the model's own activation, the tied LM head), with autograd as usual, and takes the
keyword arguments the engine passes to a model: `input_ids`, `attention_mask` (the cached columns and the new
ones), `position_ids`, `use_cache`, `logits_to_keep` and the cache (`cache` or `past_key_values`).

The attention mask is the one transformers builds for scaled dot-product attention (a real key at or before
the query), so a query that sees no real key (left padding) gets what the backend gives it there, as in the
model's forward. `classifier_logits` does the same for a GPT-2 sequence classifier (a reward model).

Naive twin: the model's own forward, `model(input_ids=..., attention_mask=..., position_ids=..., ...)`, which
`forward_of` returns for any other model (SmolLM2 / Llama, a DDP wrapper, a model in train mode or with forward
hooks).
tests/engine/test_gpt2_forward.py holds the logits, the cache and every parameter's gradient equal to it at fp32
tolerance, and the engine's step with and without it.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from .cache_layers import _cache_from, _plain_layers
from .fused import FusedTanhGELU

__all__ = ["GPT2Forward", "forward_of", "transformer_forward", "classifier_logits"]

_GELU = FusedTanhGELU()  # GPT-2's `gelu_new` in one kernel (fused.py), where a model (the reward's) keeps its own


def forward_of(model):
    """The forward to call for `model`: a `GPT2Forward` for a plain GPT-2 in eval mode, else the model itself.
    Naive twin: the model itself (its own forward), the same logits and gradients."""
    return GPT2Forward(model) if GPT2Forward.supports(model) else model


def _plain_gpt2(model, kind: str) -> bool:
    """A GPT-2 of class `kind` in eval mode without cross-attention, per-layer scaling or upcast reorder, and
    without forward hooks (or accelerate's `_hf_hook`) that its own forward would call."""
    c = getattr(model, "config", None)
    return (type(model).__name__ == kind and not model.training and c is not None
            and not c.add_cross_attention and not c.scale_attn_by_inverse_layer_idx
            and not c.reorder_and_upcast_attn and c._attn_implementation in ("sdpa", "eager")
            and not (model._forward_hooks or model._forward_pre_hooks or hasattr(model, "_hf_hook")))


def transformer_forward(tr, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                        past: list | None = None):
    """A `GPT2Model`'s blocks over (N, Q) tokens after P cached columns `past` (per layer (keys, values), each
    (N, H, P, hd)): the hidden states before the final layer norm (N, Q, d) and every layer's (keys, values)
    of all P + Q columns. attention_mask: (N, P + Q), 1 on real tokens."""
    N, Q = input_ids.shape
    P = past[0][0].shape[2] if past else 0
    d, H = tr.wte.weight.shape[1], tr.h[0].attn.num_heads
    hd = d // H
    # (N, 1, Q, P + Q) True: attended. Key j by query i: a real key at or before i (transformers' sdpa mask)
    keys = torch.arange(P + Q, device=input_ids.device)
    allowed = attention_mask.bool()[:, None, None, :] & (keys <= keys[P:, None])
    h = F.embedding(input_ids, tr.wte.weight) + F.embedding(position_ids, tr.wpe.weight)  # (N, Q, d)
    kv = []
    for i, b in enumerate(tr.h):
        eps = b.ln_1.eps
        x = F.layer_norm(h, (d,), b.ln_1.weight, b.ln_1.bias, eps).view(N * Q, d)
        qkv = torch.addmm(b.attn.c_attn.bias, x, b.attn.c_attn.weight)  # GPT-2's Conv1D: x W + b, (N Q, 3d)
        q, k, v = qkv.view(N, Q, 3, H, hd).permute(2, 0, 3, 1, 4).unbind(0)  # each (N, H, Q, hd)
        if past:
            k, v = torch.cat([past[i][0], k], dim=2), torch.cat([past[i][1], v], dim=2)  # (N, H, P + Q, hd)
        kv.append((k, v))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=b.attn.scaling)  # (N, H, Q, hd)
        h = h + torch.addmm(b.attn.c_proj.bias, a.transpose(1, 2).reshape(N * Q, d), b.attn.c_proj.weight).view(N, Q, d)
        x = F.layer_norm(h, (d,), b.ln_2.weight, b.ln_2.bias, b.ln_2.eps).view(N * Q, d)
        x = torch.addmm(b.mlp.c_fc.bias, x, b.mlp.c_fc.weight)
        x = _GELU(x) if type(b.mlp.act).__name__ == "NewGELUActivation" else b.mlp.act(x)  # fused.py's GELU
        h = h + torch.addmm(b.mlp.c_proj.bias, x, b.mlp.c_proj.weight).view(N, Q, d)
    return h, kv


class GPT2Forward:
    """`model(...)` of a plain GPT-2 causal LM in plain tensor calls; returns an object with `.logits`
    (N, Q or logits_to_keep, V) and `.cache` (a new `DynamicCache` of every column, with `use_cache`; a cache
    passed in is read, not extended). One argument more: `logits_rows` (N, Q) bool, the LM head run at those
    positions only (logits (kept, V); the LM head is a third of a tiny model's arithmetic).
    Naive twin: `model(...)` itself (its logits at those positions, `logits[logits_rows]`)."""

    @staticmethod
    def supports(model) -> bool:
        """A plain GPT-2 causal LM in eval mode (`GPT2Decoder.supports`)."""
        return _plain_gpt2(model, "GPT2LMHeadModel")

    def __init__(self, model):
        self.model = model

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                 use_cache: bool = False, logits_to_keep: int = 0, cache=None, past_key_values=None,
                 logits_rows: torch.Tensor | None = None):
        model = self.model
        cache = cache if cache is not None else past_key_values
        past = None
        if cache is not None and cache.get_seq_length() > 0:
            past = _plain_layers(cache)
            if past is None:  # a cache of other layers: the model's own forward
                kw = dict(use_cache=use_cache, **({"logits_to_keep": logits_to_keep} if logits_to_keep else {}))
                out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            cache=cache, **kw)
                logits = out.logits if logits_rows is None else out.logits[logits_rows]
                kept = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
                return SimpleNamespace(logits=logits, cache=kept, past_key_values=kept)
        tr = model.transformer
        h, kv = transformer_forward(tr, input_ids, attention_mask, position_ids, past)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        if logits_rows is not None:  # (N, Q) bool: logits at these positions only, (kept, V)
            h = h[logits_rows]
        h = F.layer_norm(h, h.shape[-1:], tr.ln_f.weight, tr.ln_f.bias, tr.ln_f.eps)
        logits = F.linear(h, model.lm_head.weight)  # the LM head (tied to wte)
        out_cache = _cache_from(kv) if use_cache else None
        return SimpleNamespace(logits=logits, cache=out_cache, past_key_values=out_cache)


def classifier_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
    """A plain `GPT2ForSequenceClassification`'s pooled logits (N, num_labels): the score head at each row's last
    token that is not the pad token, positions 0, 1, ... as its forward counts them without `position_ids`.
    None for any other model (and for eager attention, whose mask differs where a row is padding only).
    Naive twin: `model(input_ids=..., attention_mask=...).logits`, the same values."""
    plain = _plain_gpt2(model, "GPT2ForSequenceClassification") and model.config._attn_implementation == "sdpa"
    pad = model.config.pad_token_id if plain else None
    if pad is None or input_ids.dim() != 2:
        return None
    N, L = input_ids.shape
    tr = model.transformer
    position_ids = torch.arange(L, device=input_ids.device).expand(N, L)
    h, _ = transformer_forward(tr, input_ids, attention_mask, position_ids)
    columns = torch.arange(L, device=input_ids.device, dtype=torch.int32)
    last = (columns * (input_ids != pad).to(torch.int32)).argmax(-1)  # (N,): as the model picks its token
    h = h[torch.arange(N, device=h.device), last]  # (N, d)
    h = F.layer_norm(h, h.shape[-1:], tr.ln_f.weight, tr.ln_f.bias, tr.ln_f.eps)
    return F.linear(h, model.score.weight, model.score.bias)
