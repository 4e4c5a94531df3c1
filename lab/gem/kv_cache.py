"""Key/value-cache surgery for GEM: keep every prefilled entry, then select or crop some.

    cache = full_prefill_cache(model)        # record every entry, sliding-window layers included
    model(**inputs, cache=cache, use_cache=True)
    only_s = select_entries(cache, positions, config)   # e.g. the k S entries (reconstruction)
    cache.crop(n); end_past_recording(cache)             # e.g. drop S (embed + generate)
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from .forward import unwrap
from .masks import Role


def full_prefill_cache(model) -> DynamicCache:
    """An empty KV cache that keeps every prefilled entry, sliding-window layers included, until
    `end_past_recording` (so entries can be selected or cropped after a masked prefill)."""
    cache = DynamicCache(config=unwrap(model).config)
    cache.activate_past_recording()
    return cache


def end_past_recording(cache: DynamicCache) -> None:
    """Back to normal cache behaviour after a `full_prefill_cache` prefill and crop (sliding layers
    then keep only their window again)."""
    for layer in cache.layers:
        if getattr(layer, "record_past", False):
            layer.crop(0)  # restrict the layer to its window (a no-op for short caches)
            layer.record_past = False


def s_cache_positions(roles: torch.Tensor, pool: torch.Tensor, suffix_sees_bos: bool) -> torch.Tensor:
    """(B, T) bool: the prefilled entries a decoder after S may use - the S tokens (`pool` of a "gem"
    row plan), plus BOS / the sink when the suffix was trained to see it."""
    keep = pool.clone()
    if suffix_sees_bos:
        keep |= roles == Role.BOS
    return keep


def select_entries(cache: DynamicCache, positions: torch.Tensor, config) -> DynamicCache:
    """A new cache holding only the entries at `positions` ((n,) long) of every layer, in order."""
    out = DynamicCache(config=config)
    for i, layer in enumerate(cache.layers):
        out.update(layer.keys.index_select(2, positions), layer.values.index_select(2, positions), i)
    return out
