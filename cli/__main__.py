"""``python -m mig_annotator.cli``: the same as the ``mig-annotator`` console script."""

from mig_annotator.cli.app import main

main()
