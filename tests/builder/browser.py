"""Headless Chromium (Debian's chromium + chromium-driver) driven by selenium, for the browser tests.

``open_chromium()`` skips the calling test with the reason when the browser, its driver or selenium is
missing; it never lets a test pass without a browser. The browser stays on this machine: no background
networking, component updates, sync, metrics or first-run fetches (:data:`OFFLINE_ARGUMENTS`), and the
driver is given by path with Selenium Manager told to stay offline, so nothing looks a driver up online.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_NAMES = ("chromedriver", "chromium-driver")
#: Chromium switches that stop it from reaching any other machine on its own.
OFFLINE_ARGUMENTS = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--metrics-recording-only",
    "--no-first-run",
    "--no-pings",
)


def _which(names: tuple[str, ...]) -> str | None:
    return next((found for name in names if (found := shutil.which(name))), None)


def open_chromium(width: int = 1400, height: int = 1000):
    """A headless Chromium WebDriver that records the browser console."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium)")
    browser, driver = _which(CHROMIUM_NAMES), _which(DRIVER_NAMES)
    if browser is None or driver is None:
        pytest.skip(
            "no Chromium: the browser test needs `apt-get install -y chromium chromium-driver` "
            f"(found browser={browser}, driver={driver})"
        )
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager, should anything call it, stays offline
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        # nothing but the page under test: no background requests, component updates or first-run fetches
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
        *OFFLINE_ARGUMENTS,
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def screenshot_full_page(driver, path: Path, width: int = 1400, max_height: int = 2600) -> Path:
    """A PNG of the page's top ``max_height`` pixels at ``width``."""
    height = min(int(driver.execute_script("return document.documentElement.scrollHeight")), max_height)
    driver.set_window_size(width, height)
    driver.save_screenshot(str(path))
    return path
