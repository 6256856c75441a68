"""The documentation site, built strictly and read in headless Chromium (Debian's chromium + chromium-driver,
via selenium) from a server on 127.0.0.1: the method page renders with its formulas, the search finds pages,
and a screenshot of the method page is taken. Skips, saying why, when MkDocs or Chromium is missing.

Set MIG_DOCS_SCREENSHOT=PATH to copy the screenshot there (docs/assets/method-page.png is made this way).
"""

from __future__ import annotations

import html
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.builder.browser import open_chromium, screenshot_full_page
from tests.client.scripted_server import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("material", reason="mkdocs-material is not installed (the `docs` extra)")
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert build.returncode == 0, build.stderr
    return out


@pytest.fixture(scope="module")
def base_url(site: Path) -> Iterator[str]:
    """The built site served by Python's own http.server on 127.0.0.1, as a reader would view it locally."""
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    server = subprocess.Popen(command, cwd=site, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "http.server did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    driver = open_chromium(width=1280, height=900)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, script: str, timeout_s: float = 20.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(lambda d: d.execute_script(script))


def test_the_method_page_renders_the_formulas_and_the_worked_example(
    browser, base_url: str, tmp_path: Path
) -> None:
    browser.get(f"{base_url}/method/")
    wait_for(browser, "return document.readyState === 'complete'")
    assert browser.title.startswith("The method")
    article = browser.execute_script("return document.querySelector('article').innerText")
    for formula in ("migk = vk − vk−1", "Wk = max(Wk−1, vk)", "rk = max(0, vk − Wk−1)", "W0 = v0"):
        assert formula in article, formula
    assert "gsm8k-test-0001-reference: answer '3' (correct), process reward 0.9702" in article
    subscripts = browser.execute_script("return document.querySelectorAll('article sub').length")
    assert subscripts > 40  # v_k, W_k, r_k as rendered subscripts, not raw markup
    assert "<sub>" not in article
    errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    shot = screenshot_full_page(browser, tmp_path / "method-page.png", width=1280, max_height=1800)
    browser.set_window_size(1280, 900)
    assert shot.stat().st_size > 50_000
    target = os.environ.get("MIG_DOCS_SCREENSHOT")
    if target:
        shutil.copyfile(shot, target)


def test_the_search_box_finds_the_pages_that_hold_a_word(browser, base_url: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{base_url}/")
    wait_for(browser, "return document.readyState === 'complete'")
    box = browser.find_element(By.CSS_SELECTOR, "input.md-search__input")  # in the header at this width
    box.click()
    box.send_keys("watermark")
    wait_for(browser, "return document.querySelectorAll('.md-search-result__item').length > 0")
    links = browser.execute_script(
        "return Array.from(document.querySelectorAll('.md-search-result__item a')).map(a => a.href)"
    )
    assert any("/method/" in link for link in links), links
    meta = browser.execute_script("return document.querySelector('.md-search-result__meta').innerText")
    assert "matching" in meta.lower(), meta


def test_the_benchmarks_page_shows_benchmarks_md_with_its_links_into_the_site(base_url: str) -> None:
    import urllib.request

    with urllib.request.urlopen(f"{base_url}/benchmarks/", timeout=10) as response:  # 127.0.0.1 only
        page = response.read().decode("utf-8")
    sections = re.findall(r"^## (.+)$", (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8"), flags=re.M)
    assert len(sections) > 5
    for heading in sections:
        assert html.escape(heading, quote=False) in page, heading
    assert 'src="../mig_vs_grpo.png"' in page and 'src="docs/' not in page
