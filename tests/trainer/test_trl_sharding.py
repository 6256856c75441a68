"""The in-process probes are refused where the weights are sharded (FSDP, ZeRO-3); the service never is."""

from __future__ import annotations

import pytest

pytest.importorskip("trl")

from mig_annotator.trainer.trl import in_process_probe_refusal


@pytest.mark.parametrize("probe", ["policy", "reference"])
def test_an_in_process_probe_is_refused_under_fsdp_and_zero3_naming_the_way_out(probe: str) -> None:
    for fsdp, stage, sharding in ((True, None, "FSDP"), (False, 3, "DeepSpeed ZeRO-3")):
        refusal = in_process_probe_refusal(probe, fsdp, stage)  # type: ignore[arg-type]
        assert refusal is not None and sharding in refusal and "probe='service'" in refusal


def test_the_service_probe_and_unsharded_runs_are_allowed() -> None:
    assert in_process_probe_refusal("service", True, 3) is None
    assert in_process_probe_refusal("policy", False, 2) is None
    assert in_process_probe_refusal("reference", False, None) is None
