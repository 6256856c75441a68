"""The packed mode's shared headers (GRPO groups' question prompts): forwarded once, read by every member.

:class:`HeaderCache` holds the KV cache of one wave's headers (:func:`packed_plan.plan_waves`); each batch of
member rows then gets a cache of its own built from it (:meth:`HeaderCache.for_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from mig_annotator.engine.probe.packed_plan import MemberRow, Wave, even_chunk, length_batches, right_padded

if TYPE_CHECKING:
    import torch

    from mig_annotator.engine.probe.transformers_probe import TransformersProbe


class HeaderCache:
    """The KV cache of a wave's shared headers (question prompts), forwarded once for every member row.

    Headers run in batches of about one length (right-padded, causal attention, in chunks of
    :meth:`TransformersProbe.pass_chunk`); each header keeps its real positions, per layer. A batch of member
    rows gets a cache of its own (:meth:`for_rows`): row r holds its header's keys and values in its first
    ``shared`` columns, zeros after them up to the batch's widest header (masked, never attended)."""

    def __init__(self, probe: TransformersProbe, wave: Wave) -> None:
        headers = wave.headers
        first_reader: dict[int, int] = {}  # header -> the sequence of its first row (whose images it holds)
        for row in wave.rows:
            if row.header is not None:
                first_reader.setdefault(row.header, row.sequence)
        self.real = sum(len(header) for header in headers)
        self.computed = 0
        self._layers: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in headers]
        budget = probe.settings.forward_batch_tokens
        lengths = [(0, len(header)) for header in headers]
        for indices in length_batches(lengths, budget):
            width = max(len(headers[i]) for i in indices)
            ids = right_padded([headers[i] for i in indices], width)
            chunk = even_chunk(width, probe.pass_chunk(len(indices), width))
            cache: object | None = None
            for start in range(0, width, chunk):
                end = min(width, start + chunk)
                positions = np.tile(np.arange(start, end), (len(indices), 1))
                sequences = [first_reader[i] for i in indices]
                _, cache = probe.cached_forward(ids[:, start:end], positions, None, cache, sequences)
                self.computed += len(indices) * (end - start)
            for j, i in enumerate(indices):
                n = len(headers[i])
                self._layers[i] = [
                    (layer.keys[j : j + 1, :, :n], layer.values[j : j + 1, :, :n])
                    for layer in cache.layers  # type: ignore[union-attr]
                ]

    def for_rows(self, rows: Sequence[MemberRow], width: int) -> object:
        """A fresh cache for ``rows``: each row's header in its first ``row.shared`` of ``width`` columns."""
        from transformers import DynamicCache

        data = []
        for layer in range(len(self._layers[0])):
            keys0, values0 = self._layers[0][layer]
            keys = keys0.new_zeros((len(rows), keys0.shape[1], width, keys0.shape[3]))
            values = values0.new_zeros((len(rows), values0.shape[1], width, values0.shape[3]))
            for r, row in enumerate(rows):
                if row.header is not None:
                    header_keys, header_values = self._layers[row.header][layer]
                    keys[r, :, : row.shared] = header_keys[0]
                    values[r, :, : row.shared] = header_values[0]
            data.append((keys, values))
        return DynamicCache(ddp_cache_data=data)
