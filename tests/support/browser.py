"""A real headless browser for the tests of the server's page: Debian's Chromium driven by Selenium through Debian's
chromedriver, both named by path so nothing is downloaded, with the flags a machine without a display or a network
needs and a new empty profile. Where it is missing the page's browser tests skip saying why, except in CI
(`CI_ENV` set, by .ci/run), where they fail: there the test command installs it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

    from videoitg.launch.server import TritonServer

CHROMIUM = Path("/usr/bin/chromium")  # Debian's `chromium`
CHROMEDRIVER = Path("/usr/bin/chromedriver")  # Debian's `chromium-driver`
CI_ENV = "VIDEOITG_CI"
ID, CSS = "id", "css selector"  # selenium's By.ID and By.CSS_SELECTOR (selenium imported only where a browser runs)
# Headless, no sandbox (the tests may run as root), no GPU; nothing started that would reach the network (QUIC,
# background fetches, component updates, sync) and no first-run dialog.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def missing() -> str | None:
    """Why no browser can run here, or None."""
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (the dev extra)"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"no {path}: install Debian's {package} (apt-get install chromium chromium-driver)"
    return None


def require_browser() -> None:
    """At module level: skip the module where no browser can run, saying why; fail instead in CI."""
    why = missing()
    if why is None:
        return
    if os.environ.get(CI_ENV):
        pytest.fail(f"{CI_ENV} is set and the page's browser tests cannot run: {why}", pytrace=False)
    pytest.skip(why, allow_module_level=True)


@contextmanager
def chromium(width: int = 1280, height: int = 1600, flags: tuple[str, ...] = ()) -> Iterator[WebDriver]:
    """A headless Chromium with a new empty profile (removed after), its console kept (`get_log("browser")`);
    `flags`: more of its command-line flags."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="videoitg-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile}", *flags):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


NOT_READY = "The server is not ready yet"  # the page's words while tritonserver starts


def open_page(driver: WebDriver, server: TritonServer) -> None:
    """The server's page, once it has read what the server offers (its model's inputs, its media roots)."""
    from tests.support.server import wait_until

    driver.get(f"http://{server.http_url}/")
    def read() -> bool:
        roots = driver.find_element(ID, "roots").text
        return shown(driver, "return document.body.dataset.server") == "ready" and roots not in ("", NOT_READY) \
            and not roots.startswith(NOT_READY)

    assert wait_until(read, 20)


def shown(driver: WebDriver, script: str) -> Any:
    """What `script` returns in the page."""
    return driver.execute_script(script)


def page_state(driver: WebDriver) -> tuple[str, str, str]:
    """The page's state (busy, done, error), its status line and its error text."""
    return tuple(shown(driver, "return [document.body.dataset.state, document.getElementById('status').textContent,"
                               "document.getElementById('error').textContent]"))
