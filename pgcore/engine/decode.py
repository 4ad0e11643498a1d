"""Fast path: one decoding step of a GPT-2 model as plain tensor calls, its key/value cache preallocated.

Sampling a token for N rows from a small GPT-2 is mostly per-call machinery: each `model(...)` builds an
attention mask, walks some thirty modules and grows every layer's cache by concatenation. On the course's
2-layer `tiny` that was 2 to 3 ms a token against well under a millisecond of arithmetic. `GPT2Decoder` runs
the same arithmetic on the model's own weights (layer norm, the fused QKV projection, scaled dot-product
attention over the cache, the output projection, the MLP with the model's own activation, the tied LM head)
and writes each new key and value into buffers sized for the whole completion.

Naive twin: the model's forward with its cache, `model(input_ids=token, attention_mask, position_ids,
cache=...)`, which `engine.sampling._sample_shared` runs for any other model; tests/engine/test_decode.py holds
every step's logits to it at fp32 tolerance and the sampled completions equal.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .cache_layers import _plain_layers

__all__ = ["GPT2Decoder"]


class GPT2Decoder:
    """Decode step by step from a prompt cache (already repeated to the N sampled rows).

    cache: the prompts' key/value cache, plain layers of (N, heads, P, head_dim); mask: (N, P) its attention
    mask (0 at left padding); max_new_tokens: the columns to reserve. `step(token, position)` feeds (N,)
    tokens at (N,) positions and returns the (N, V) logits of the next token.
    """

    @staticmethod
    def supports(model) -> bool:
        """Plain GPT-2 in eval mode (no cross-attention, no per-layer attention scaling, no upcast reorder)."""
        c = getattr(model, "config", None)
        return (type(model).__name__ == "GPT2LMHeadModel" and not model.training and c is not None
                and not c.add_cross_attention and not c.scale_attn_by_inverse_layer_idx
                and not c.reorder_and_upcast_attn and c._attn_implementation in ("sdpa", "eager"))

    @classmethod
    def from_cache(cls, model, cache, mask: torch.Tensor, max_new_tokens: int) -> "GPT2Decoder | None":
        """A decoder when `model` is supported and the cache is made of plain layers, else None."""
        layers = _plain_layers(cache) if cls.supports(model) else None
        return cls(model, layers, mask, max_new_tokens) if layers else None

    def __init__(self, model, layers: list, mask: torch.Tensor, max_new_tokens: int):
        tr = model.transformer
        self.model, self.eps = model, tr.ln_f.eps
        # each block's tensors, looked up once (nn.Module attribute lookups cost about a microsecond each)
        self.blocks = [(b.ln_1.weight, b.ln_1.bias, b.attn.c_attn.weight, b.attn.c_attn.bias, b.attn.c_proj.weight,
                        b.attn.c_proj.bias, b.attn.scaling, b.ln_2.weight, b.ln_2.bias, b.mlp.c_fc.weight,
                        b.mlp.c_fc.bias, b.mlp.act, b.mlp.c_proj.weight, b.mlp.c_proj.bias) for b in tr.h]
        self.head = (tr.wte.weight, tr.wpe.weight, tr.ln_f.weight, tr.ln_f.bias, model.lm_head.weight)
        N, H, P, hd = layers[0][0].shape
        self.heads, self.head_dim, self.length = H, hd, P
        width = P + max_new_tokens
        self.keys, self.values = [], []
        for k, v in layers:
            kb, vb = k.new_empty(N, H, width, hd), v.new_empty(N, H, width, hd)
            kb[:, :, :P], vb[:, :, :P] = k, v
            self.keys.append(kb)
            self.values.append(vb)
        self.mask = torch.zeros(N, 1, 1, width, dtype=torch.bool, device=mask.device)  # True: attended
        self.mask[:, 0, 0, :P] = mask.bool()

    def step(self, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        L, eps = self.length, self.eps
        N, H, hd = token.shape[0], self.heads, self.head_dim
        d = H * hd
        wte, wpe, lnf_w, lnf_b, head = self.head
        self.mask[:, 0, 0, L] = True
        h = F.embedding(token, wte) + F.embedding(position, wpe)  # (N, d)
        for (ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, scale, ln2_w, ln2_b, fc_w, fc_b, act, out_w, out_b), kb, vb \
                in zip(self.blocks, self.keys, self.values):
            x = F.layer_norm(h, (d,), ln1_w, ln1_b, eps)
            q, k, v = torch.addmm(qkv_b, x, qkv_w).split(d, dim=1)  # GPT-2's Conv1D: x W + b
            kb[:, :, L] = k.view(N, H, hd)
            vb[:, :, L] = v.view(N, H, hd)
            a = F.scaled_dot_product_attention(q.view(N, H, 1, hd), kb[:, :, :L + 1], vb[:, :, :L + 1],
                                               attn_mask=self.mask[..., :L + 1], scale=scale)  # (N, H, 1, hd)
            h = h + torch.addmm(proj_b, a.reshape(N, d), proj_w)
            x = act(torch.addmm(fc_b, F.layer_norm(h, (d,), ln2_w, ln2_b, eps), fc_w))
            h = h + torch.addmm(out_b, x, out_w)
        self.length = L + 1
        return F.linear(F.layer_norm(h, (d,), lnf_w, lnf_b, eps), head)  # (N, V): the LM head
