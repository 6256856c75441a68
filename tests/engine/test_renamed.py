"""A renamed setting keeps working under its old name, with a deprecation note naming the new one."""

from __future__ import annotations

import pytest

from mig_annotator.engine.probe.settings import TransformersProbeSettings, parse_probe_settings
from mig_annotator.engine.renamed import move_renamed

RENAMED = {"old_name": ("new_name", "old_name is deprecated: use new_name")}


def test_an_old_key_moves_to_the_new_one_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="old_name is deprecated: use new_name"):
        assert move_renamed({"old_name": 1, "other": 2}, RENAMED) == {"new_name": 1, "other": 2}


def test_the_new_key_wins_and_data_without_the_old_key_is_untouched() -> None:
    with pytest.warns(DeprecationWarning):
        assert move_renamed({"old_name": 1, "new_name": 3}, RENAMED) == {"new_name": 3}
    data = {"new_name": 3}
    assert move_renamed(data, RENAMED) is data


def test_the_probe_forward_batch_budget_takes_its_old_name() -> None:
    with pytest.warns(DeprecationWarning, match=r"use forward_batch_tokens \(--forward-batch-tokens"):
        settings = parse_probe_settings({"max_batch_tokens": 256})
    assert settings == TransformersProbeSettings(forward_batch_tokens=256)
    with pytest.warns(DeprecationWarning):
        assert TransformersProbeSettings(max_batch_tokens=128).forward_batch_tokens == 128  # type: ignore[call-arg]
