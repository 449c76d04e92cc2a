"""A real browser against a real `bgtaskex web`: headless Chromium driven by Selenium, and
the installed `bgtaskex` command serving the dashboard in a subprocess on a free port.

The browser is Debian's `chromium` with its `chromium-driver` (installed by .ci/run), both
named explicitly, so Selenium Manager never looks for or downloads anything: it works
offline. Without them (or without selenium) the tests skip with the reason, except under
CI=true, where they fail.

`Shots` saves a screenshot of each page under the test's tmp dir, and also copies it to
the directory of BGTASKEX_TEST_SCREENSHOTS when that is set, for a person to look at.
"""

from __future__ import annotations

import base64
import contextlib
import os
import random
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("BGTASKEX_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("BGTASKEX_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DESKTOP = (1280, 900)
PHONE = (390, 844)
#: Seconds a page, a click's result or a live update may take before the test fails.
WAIT = 15.0


def require_browser() -> None:
    """Skip (fail under CI=true) unless selenium, chromium and chromedriver are here."""
    problems = [f"{path} not found" for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        problems.append("selenium is not installed")
    if problems:
        problem = (
            "no browser: " + "; ".join(problems) + " (apt-get install chromium chromium-driver)"
        )
        if IN_CI:
            pytest.fail(f"{problem} (CI=true: the browser tests must run)")
        pytest.skip(problem)


def open_browser(*, javascript: bool = True, size: tuple[int, int] = DESKTOP) -> Any:
    """A headless Chromium (a WebDriver) whose console log can be read; with JavaScript
    off when asked, as a user who turned it off."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={size[0]},{size[1]}")
    options.add_argument("--lang=en-US")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if not javascript:
        prefs = {"profile.managed_default_content_settings.javascript": 2}
        options.add_experimental_option("prefs", prefs)
    # an explicit driver path: Selenium Manager is not run, nothing is downloaded
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def csp_violations(driver: Any) -> list[str]:
    """The console lines since the last call that say the Content Security Policy refused
    something (an inline script or style, a foreign source)."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]


def free_port() -> int:
    """A port free now, from this xdist worker's own range (20000 + 2000 per worker),
    below the kernel's ephemeral ports: two workers never draw the same port, so a
    server of one never answers for a server of the other that failed to bind."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    first = 20000 + 2000 * (int(worker) % 6 if worker.isdigit() else 0)
    for port in random.sample(range(first, first + 2000), 50):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{first + 1999}")


class WebServer:
    """`bgtaskex web --bind 127.0.0.1:PORT [ARGS]` run by the installed command in a
    subprocess; its stderr in `log_path`. `url(path)` is a page of it."""

    def __init__(self, env: Mapping[str, str], log_path: Path, *args: str) -> None:
        self.log_path = log_path
        found = shutil.which("bgtaskex", path=env.get("PATH"))
        assert found, "the bgtaskex command is not installed on PATH"
        # a port taken between free_port() and the bind: try another
        for _ in range(3):
            self.port = free_port()
            self.base = f"http://127.0.0.1:{self.port}"
            with open(log_path, "w") as log:
                self.proc = subprocess.Popen(
                    [found, "web", "--bind", f"127.0.0.1:{self.port}", *args],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=dict(env),
                )
            if self._answers():
                return
            if "address already in use" not in self.log().lower():
                break
        self.stop()
        pytest.fail(f"bgtaskex web did not start\n--- its log\n{self.log()}")

    def _answers(self, timeout: float = 30.0) -> bool:
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up and self.proc.poll() is None:
            url = self.url("/static/style.css")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
                return bool(answer.status == 200)
            time.sleep(0.05)
        return False

    def url(self, path: str = "/") -> str:
        return self.base + path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def post(self, path: str, data: bytes = b"") -> int:
        """A POST from outside any browser session: its HTTP status."""
        request = urllib.request.Request(self.url(path), data=data, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class Shots:
    """Screenshots of whole pages: `take(driver, name)` saves `name.png` under `directory`
    and, when BGTASKEX_TEST_SCREENSHOTS names a directory, a copy there."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        shared = os.environ.get("BGTASKEX_TEST_SCREENSHOTS")
        self.shared = Path(shared) if shared else None

    def take(self, driver: Any, name: str) -> Path:
        """The whole page, as tall as it is (at most 5000 px), as the viewport lays it out."""
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 5000)}
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": {**clip, "scale": 1}},
        )
        path = self.directory / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        if self.shared is not None:
            self.shared.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, self.shared / path.name)
        return path


@contextlib.contextmanager
def phone(driver: Any) -> Iterator[None]:
    """The page laid out as on a phone (PHONE, a touch screen; a desktop window cannot be
    made that narrow), until the block ends."""
    width, height = PHONE
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        yield
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
