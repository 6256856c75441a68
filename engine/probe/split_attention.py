"""Causal attention for a chunk of new positions after a cache, without a materialised mask (CPU).

A chunked pass (new positions ``s..s+w`` after ``s`` cached ones) needs a lower-right-aligned causal mask:
every query sees the whole cache and its chunk up to itself. PyTorch's ``is_causal`` is upper-left aligned,
so transformers builds that mask explicitly, and the CPU flash kernel then computes every block and adds the
mask, where an unchunked pass skips the blocks above the diagonal (measured, one thread, 1,384 queries after
2,770 cached keys: 0.37 s with the mask against 0.15 s split as below).

:func:`split_causal_attention` computes it as two kernel calls whose results are merged by their
log-sum-exp: the chunk against the cache, unmasked, and the chunk against itself with ``is_causal``. The
probe switches a model it owns to this implementation (:data:`IMPLEMENTATION`) only around such passes
(:func:`split_attention_pass`); every other call goes to transformers' SDPA unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

IMPLEMENTATION = "mig_split_causal_sdpa"
_registered = False


def split_causal_attention(query: Any, key: Any, value: Any, scaling: float | None = None) -> Any:
    """(B, H, w, D) attention of ``query`` (the last ``w`` positions) over ``key``/``value`` (B, H, s + w, D):
    all ``s`` cached positions and the chunk causally; equal to SDPA under a lower-right causal mask."""
    import torch

    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    width = query.shape[2]
    cached = key.shape[2] - width
    chunk = (key[:, :, cached:], value[:, :, cached:])
    chunk_out, chunk_lse = flash(query, *chunk, 0.0, True, scale=scaling)[:2]
    if cached == 0:
        return chunk_out
    past = (key[:, :, :cached], value[:, :, :cached])
    cache_out, cache_lse = flash(query, *past, 0.0, False, scale=scaling)[:2]
    top = torch.maximum(chunk_lse, cache_lse)
    chunk_weight = torch.exp(chunk_lse - top)[..., None]
    cache_weight = torch.exp(cache_lse - top)[..., None]
    return (chunk_out * chunk_weight + cache_out * cache_weight) / (chunk_weight + cache_weight)


def _attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    if attention_mask is not None or query.device.type != "cpu" or query.shape[2] < 2 or dropout:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    output = split_causal_attention(query, key, value, scaling)
    return output.transpose(1, 2).contiguous(), None


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface

    AttentionInterface.register(IMPLEMENTATION, _attention)  # no mask function: transformers builds none
    _registered = True


@contextlib.contextmanager
def split_attention_pass(config: Any) -> Iterator[None]:
    """Within the block, ``config``'s model (an SDPA model the caller owns) attends causally after its cache
    through :func:`split_causal_attention`, building no mask; the implementation is restored after."""
    _register()
    previous = config._attn_implementation
    config._attn_implementation = IMPLEMENTATION
    try:
        yield
    finally:
        config._attn_implementation = previous
