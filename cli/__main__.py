"""``python -m mig_annotator.cli``: the same as the ``mig-annotator`` script (its extras check first)."""

from mig_annotator._launcher import main

main()
