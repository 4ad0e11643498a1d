"""A transformers key/value cache as plain per-layer tensors, and back (for the engine's plain-tensor
forwards: `decode.py`, `gpt2.py`, `kv_cache.py`)."""
from __future__ import annotations

__all__ = ["_plain_layers", "_cache_from"]


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
