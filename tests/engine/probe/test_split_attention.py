"""A chunk after a cache attends like SDPA under the lower-right causal mask, without the mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mig_annotator.engine.probe.split_attention import split_causal_attention


@pytest.mark.parametrize(("cached", "width"), [(0, 17), (70, 33), (300, 1), (513, 129)])
def test_a_chunk_after_a_cache_equals_attention_under_the_lower_right_causal_mask(cached, width) -> None:
    generator = torch.Generator().manual_seed(cached + width)
    query = torch.randn(2, 3, width, 16, generator=generator)
    key, value = (torch.randn(2, 3, cached + width, 16, generator=generator) for _ in range(2))
    lower_right = torch.ones(width, cached + width, dtype=torch.bool).tril(diagonal=cached)
    expected = F.scaled_dot_product_attention(query, key, value, attn_mask=lower_right)
    assert torch.allclose(split_causal_attention(query, key, value), expected, atol=1e-6)
    # the upper-left causal kernel is not that mask once there is a cache: the split is needed
    if cached and width > 1:
        upper_left = F.scaled_dot_product_attention(query, key, value, is_causal=True)
        assert not torch.allclose(upper_left, expected, atol=1e-3)
