"""The report in a real browser: headless Chromium (Debian's chromium + chromium-driver, via selenium),
offline. Skips, saying why, when Chromium or its driver is not installed.

Set MIG_REPORT_SCREENSHOT=PATH to copy the screenshot there (docs/report.png is made this way).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from mig_annotator.builder.report import ReportOptions, write_report
from tests.builder.browser import OFFLINE_ARGUMENTS, open_chromium, screenshot_full_page
from tests.builder.report_support import build_arithmetic_dataset

RGBA = re.compile(r"rgba?\((\d+), (\d+), (\d+)(?:, ([\d.]+))?\)")


def alpha(css_color: str) -> float:
    match = RGBA.fullmatch(css_color)
    assert match, css_color
    return float(match.group(4)) if match.group(4) is not None else 1.0


def test_the_report_renders_offline_in_chromium(tmp_path: Path) -> None:
    # a long input path: the "by source_file" table must still fit the page
    dataset = build_arithmetic_dataset(
        tmp_path / ("a_long_input_folder_name_without_break_chances_" * 3) / "arith", rows=24
    )
    page = write_report(
        [dataset], tmp_path / "report.html", ReportOptions(sample=3, by=("question_id",))
    ).path
    driver = open_chromium()
    try:
        driver.set_network_conditions(offline=True, latency=0, download_throughput=0, upload_throughput=0)
        driver.get(page.as_uri())
        driver.execute_async_script(  # wait until every chart has drawn (plotly resolves .then on draw)
            "const done = arguments[arguments.length - 1];"
            "Promise.all(Array.from(document.querySelectorAll('.js-plotly-plot'))"
            ".map(g => g._fullLayout ? Promise.resolve() : new Promise(r => g.on('plotly_afterplot', r))))"
            ".then(() => done(true));"
        )
        errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        charts = driver.execute_script(
            "return Array.from(document.querySelectorAll('.chart')).map(c => [c.dataset.chart,"
            " c.querySelectorAll('svg.main-svg').length,"
            " c.querySelectorAll('.bars path, .scatterlayer path.js-line').length,"
            " c.getBoundingClientRect().height])"
        )
        assert [name for name, *_ in charts] == ["dist", "traj", "maxpos", "roc"]
        for name, svgs, marks, height in charts:
            assert svgs >= 1 and marks > 0 and height > 200, (name, svgs, marks, height)
        steps = driver.execute_script(
            "return Array.from(document.querySelectorAll('span.step')).map(s => "
            "[parseFloat(s.dataset.reward), getComputedStyle(s).backgroundColor, s.title])"
        )
        assert len(steps) == 18  # 3 correct + 3 wrong traces, 3 steps each
        rewards = [reward for reward, _, _ in steps]
        shading = [alpha(color) for _, color, _ in steps]
        r_max = max(rewards)
        for r_a, s_a in zip(rewards, shading, strict=True):
            for r_b, s_b in zip(rewards, shading, strict=True):
                if r_a < r_b:  # a larger reward is never lighter, and visibly darker when much larger
                    assert s_a <= s_b
                    if r_b - r_a > 0.02 * r_max:
                        assert s_a < s_b
        assert all(s == 0.0 for r, s in zip(rewards, shading, strict=True) if r == 0)
        assert all("v_k = " in title and "r_k = " in title for _, _, title in steps)
        assert driver.execute_script("return document.querySelectorAll('.trace mark.answer').length") == 6
        roc_axes = driver.execute_script(
            "const l = document.getElementById('roc')._fullLayout; return [l.xaxis.range, l.yaxis.range]"
        )
        assert roc_axes == [[0, 1], [0, 1]]
        shot = screenshot_full_page(driver, tmp_path / "report.png")
    finally:
        driver.quit()
    assert shot.stat().st_size > 50_000
    target = os.environ.get("MIG_REPORT_SCREENSHOT")
    if target:
        shutil.copyfile(shot, target)


def test_a_wide_group_table_stays_inside_the_page(tmp_path: Path) -> None:
    """A long input path without break chances (the shown value is cut at 80 characters) makes the "by
    source_file" table wider than the page: it scrolls inside its own box and the page does not."""
    with tempfile.TemporaryDirectory(prefix="mig_report_") as folder:  # no hyphens: nothing to wrap at
        dataset = build_arithmetic_dataset(
            Path(folder) / ("input_folder_without_break_chances_" * 3) / "d", 8
        )
        page = write_report([dataset], tmp_path / "report.html", ReportOptions(sample=1)).path
    driver = open_chromium()
    try:
        driver.get(page.as_uri())
        overflow = driver.execute_script(
            "const right = document.querySelector('main').getBoundingClientRect().right;"
            "return Array.from(document.querySelectorAll('table.groups'))"
            ".map(t => [t.rows[0].cells[0].textContent, t.getBoundingClientRect().width,"
            " (t.closest('.table-scroll') || t).getBoundingClientRect().right - right])"
        )
        assert [column for column, _, _ in overflow] == ["source_file", "generator"]
        assert all(excess <= 0 for _, _, excess in overflow), overflow
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        driver.quit()


def test_the_browser_runs_offline_without_selenium_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chromium starts with background networking and component updates off, and the driver is found
    without Selenium Manager (which would look drivers up online)."""
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def no_lookup(*args: object, **kwargs: object) -> None:
        raise AssertionError("Selenium Manager was asked for a driver")

    monkeypatch.setattr(SeleniumManager, "binary_paths", no_lookup)
    driver = open_chromium()
    try:
        driver.get("chrome://version")
        command_line = driver.find_element("id", "command_line").text
    finally:
        driver.quit()
    for switch in ("--disable-background-networking", "--disable-component-update", *OFFLINE_ARGUMENTS):
        assert switch in command_line, switch
    assert os.environ["SE_OFFLINE"] == "true"


def test_without_chromium_the_browser_test_skips_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y chromium chromium-driver"):
        open_chromium()
