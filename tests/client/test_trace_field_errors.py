"""The client gives a trace whose fields the service refuses its failure in place: a real
service on 127.0.0.1 over the package's fake probe."""

from __future__ import annotations

from mig_annotator.client import MigClient, TraceFailure
from mig_annotator.schemas import TraceAnnotation

TRACE = {"question": "What is 1 + 1?", "completion": "1 + 1 = 2\nA: 2", "reference_answer": "2"}


def test_annotate_results_returns_the_per_trace_error_of_an_empty_reference_answer(service_url: str) -> None:
    traces = [TRACE | {"id": "a"}, TRACE | {"id": "b", "reference_answer": ""}, TRACE | {"id": "c"}]
    with MigClient(service_url) as client:
        results = client.annotate_results(traces)
    assert [type(result) for result in results] == [TraceAnnotation, TraceFailure, TraceAnnotation]
    failure = results[1]
    assert isinstance(failure, TraceFailure)
    assert (failure.index, failure.field, failure.code) == (1, "traces[1].reference_answer", "invalid_trace")
    assert [result.trace_id for result in results if isinstance(result, TraceAnnotation)] == ["a", "c"]
