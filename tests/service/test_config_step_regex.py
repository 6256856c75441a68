"""A request whose step_regex RE2 cannot compile is a 422 naming ``config.step_regex``."""

from __future__ import annotations

import pytest

from mig_annotator.schemas.api import AnnotateRequest
from mig_annotator.service.annotation_service import AnnotationService
from mig_annotator.service.errors import http_error
from mig_annotator.service.failures import InvalidInput
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
        with pytest.raises(InvalidInput) as caught:
            service.scoring_config(request.config)
    finally:
        service.close()
    error = http_error(caught.value)
    assert error.status == 422
    assert [item.field for item in error.fields] == ["config.step_regex"]
    assert "step_regex" in error.message
