"""The answer-verification worker process: one JSON line in (``[answer, reference]``), one line out (0 or 1).

It runs :func:`mig_annotator.engine.rewards.outcome_reward` in its own main thread, where math-verify's
signal-based timeouts work; the parent (:class:`mig_annotator.engine.verify.ProcessVerifier`) kills it if it
still hangs.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    # the protocol gets its own copy of stdout; anything a library prints goes to stderr instead
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    from mig_annotator.engine.rewards import outcome_reward

    outcome_reward("1", "1")  # warm math-verify's parsers before announcing readiness
    protocol.write("ready\n")
    protocol.flush()
    for line in sys.stdin:
        answer, reference = json.loads(line)
        try:
            verdict = outcome_reward(answer, reference)
        except Exception:  # an answer math-verify cannot handle is not equal to the reference
            verdict = 0
        protocol.write(f"{verdict}\n")
        protocol.flush()


if __name__ == "__main__":
    main()
