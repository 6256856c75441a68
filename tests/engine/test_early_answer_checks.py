"""Answer checks started early (``Annotator.check_answers``, as the service does when it admits a request)
give the same annotations as checks made while scoring, and each answer is checked once."""

from __future__ import annotations

from collections.abc import Sequence

from mig_annotator.engine.annotator import Annotator, PreparedTrace
from mig_annotator.engine.probe.fake import FakeProbe
from mig_annotator.engine.verify import ProcessVerifier
from tests.service.support import small_traces


class CountingVerifier:
    """The real answer verifier, counting the answers it is asked to check."""

    def __init__(self, verifier: ProcessVerifier) -> None:
        self._verifier = verifier
        self.checked = 0

    def check_many(
        self, pairs: Sequence[tuple[str | None, str]], *, deadline: float | None = None
    ) -> list[int]:
        self.checked += len(pairs)
        return self._verifier.check_many(pairs, deadline=deadline)

    def close(self) -> None:
        self._verifier.close()


def test_early_checks_give_the_same_annotations_and_check_each_answer_once() -> None:
    traces = small_traces(9)
    with ProcessVerifier(workers=1) as real:
        counting = CountingVerifier(real)
        with Annotator(FakeProbe(), verifier=counting) as annotator:
            plain = annotator.annotate_many(traces)
            assert counting.checked == 9
            planned = annotator.plan(traces)
            early = annotator.check_answers(planned)
            assert all(isinstance(item, PreparedTrace) and item.verdict is not None for item in early)
            assert annotator.check_answers(early) == early  # already under way: nothing started again
            scored = annotator.annotate_many(early)
            assert counting.checked == 18
    assert scored == plain
    assert {annotation.outcome for annotation in scored} == {0, 1}  # right and wrong answers both checked
