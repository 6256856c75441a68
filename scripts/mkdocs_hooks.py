"""MkDocs hooks (mkdocs.yml ``hooks:``): the Benchmarks page shows the repository's BENCHMARKS.md.

BENCHMARKS.md stays at the repository root, where the bench scripts write their sections
(``bench/common.py``'s ``write_benchmark_section``); its links are relative to the root (``docs/x.png``), so
they are made relative to the docs folder here.
"""

from __future__ import annotations

import re
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
MARKER = "<!-- BENCHMARKS.md -->"
ROOT_RELATIVE_DOCS_LINK = re.compile(r"\]\(docs/")


def benchmarks_for_the_site(text: str) -> str:
    """BENCHMARKS.md without its title, its ``docs/...`` links pointing into the site."""
    body = text.split("\n", 1)[1] if text.startswith("# ") else text
    return ROOT_RELATIVE_DOCS_LINK.sub("](", body)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, benchmarks_for_the_site(BENCHMARKS.read_text(encoding="utf-8")))
