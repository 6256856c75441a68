"""The one-pass modes batch their rows as the packed mode does: padding weighed against passes, not capped."""

from __future__ import annotations

from mig_annotator.engine.probe.transformers_probe import TransformersProbe
from tests.engine.probe.sequences import probe_sequence


def test_naive_rows_of_neighbouring_lengths_share_a_pass_where_padding_costs_less_than_a_pass(
    naive_probe: TransformersProbe,
) -> None:
    # the continuation is 900 901 7 8: prefix 0's row holds 3 + 4 positions, prefix 1's 6 + 4; one batch pads
    # 3 of its 20 positions (15%), which costs less than a second pass (packed_plan.PASS_POSITIONS = 16)
    sequence = probe_sequence((1, 2, 3), [(10, 11, 12)], (7, 8))
    calls, padded = naive_probe.stats.forward_calls, naive_probe.stats.tokens_padded
    (result,) = naive_probe.score([sequence])
    assert naive_probe.stats.forward_calls - calls == 1
    assert naive_probe.stats.tokens_padded - padded == 3
    assert result.token_logprobs.shape == (2, 2) and (result.token_logprobs < 0).all()
