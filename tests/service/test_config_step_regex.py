"""A request whose step_regex RE2 cannot compile is a 422 naming ``config.step_regex`` (issue 12 defect 3)."""

from __future__ import annotations

import pytest

from mig_annotator.schemas.api import AnnotateRequest
from mig_annotator.service.annotation_service import AnnotationService
from mig_annotator.service.errors import InvalidRequest
from mig_annotator.service.metrics import ServiceMetrics
from mig_annotator.service.settings import ServiceSettings


@pytest.mark.parametrize("pattern", [r"(a)\1", r"a(?=b)", "a" * 513])
def test_a_bad_step_regex_is_refused_naming_config_step_regex(pattern: str) -> None:
    request = AnnotateRequest.model_validate(
        {
            "trace": {"id": "t", "question": "q", "completion": "a\nb", "reference_answer": "1"},
            "config": {"segmenter": "regex", "step_regex": pattern},
        }
    )
    service = AnnotationService(
        ServiceSettings(audit_enabled=False),
        runtime=None,  # type: ignore[arg-type]  # scoring_config reads only the settings
        batcher=None,  # type: ignore[arg-type]
        audit=None,
        metrics=ServiceMetrics(),
    )
    try:
        with pytest.raises(InvalidRequest) as caught:
            service.scoring_config(request.config)
    finally:
        service.close()
    assert caught.value.status == 422
    assert [item.field for item in caught.value.fields] == ["config.step_regex"]
