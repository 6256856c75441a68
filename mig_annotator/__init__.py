"""mig-annotator: Step-wise Marginal Information Gain rewards for RL on LLM reasoning.

The repository keeps one top-level folder per layer (``schemas``, ``mig``, ``service``, ``builder``,
``client``, ``trainer``, ``cli``); they install under this one namespace, so a user's environment gets a single
top-level package, ``mig_annotator``. Layering (checked by import-linter): schemas <- mig <- {service,
builder} <- cli; ``client`` depends only on ``schemas``; ``trainer`` sits above ``client`` and ``mig``
(nothing below imports it).
"""
