"""Fixtures for the dashboard tests: a real cluster of processes, and headless Chromium.

The browser is Debian's ``chromium`` with its ``chromium-driver`` (``.ci/run``
installs them as root), driven by Selenium; nothing is downloaded from a
browser CDN (Selenium Manager is kept offline). Where they are missing the
tests skip locally with one line saying how to install them, and FAIL when
``CI`` is set, so CI never passes without having run them.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("DISTRIBUTED_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DISTRIBUTED_CHROMEDRIVER", "/usr/bin/chromedriver")


@pytest.fixture
def artifacts() -> Path:
    """Where screenshots go: $DASHBOARD_ARTIFACTS, else .nox/dashboard-artifacts."""
    path = Path(os.environ.get("DASHBOARD_ARTIFACTS", ROOT / ".nox" / "dashboard-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _browser_missing() -> str | None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).exists() or shutil.which(p))]
    if missing:
        return (f"{' and '.join(missing)} not found: apt-get install chromium chromium-driver "
                f"(as root; .ci/run does it)")  # fmt: skip
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (nox -s dashboard installs it)"
    return None


@pytest.fixture
def browser():
    reason = _browser_missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"dashboard browser tests cannot run in CI: {reason}")
        pytest.skip(reason)
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps", "--metrics-recording-only",
                "--no-default-browser-check", "--disable-domain-reliability"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


class Proc:
    """A CLI subprocess whose stdout lines are read with a bound."""

    def __init__(self, args, env=None):
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("DISTRIBUTED_")}
        full_env.update(env or {})
        self.p = subprocess.Popen(
            [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=full_env, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.lines: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def line(self, prefix: str, timeout: float = 30) -> str:
        """The rest of the first stdout line starting with `prefix` (bounded by `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                text = self.lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                text = None
            if text is None:
                self.p.kill()
                raise AssertionError(f"no {prefix!r} line; stderr:\n{self.p.communicate()[1]}")
            if text.startswith(prefix):
                return text[len(prefix) :].strip()

    def _read(self):
        for text in self.p.stdout:
            self.lines.put(text)
        self.lines.put(None)

    def kill(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
        self.p.wait(10)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
        self._reader.join(10)
        self.p.stdout.close()
        self.p.stderr.close()


@pytest.fixture
def cluster():
    """``start(n_workers, *center_args) -> (center address, dashboard url, [workers])``."""
    procs: list[Proc] = []

    def start(n_workers=2, *center_args, env=None):
        center = Proc(["-m", "distributed_center", "--host", "127.0.0.1", "--port", "0",
                       "--dashboard-address", "127.0.0.1:0", "--heartbeat-interval", "0.2",
                       "--heartbeat-timeout", "2", *center_args], env=env)  # fmt: skip
        procs.append(center)
        address = center.line("Start center at ")
        url = center.line("Dashboard at ")
        workers = []
        for i in range(n_workers):
            # --no-nanny: the tests kill and stop the worker process itself
            w = Proc(["-m", "distributed_worker", address, "--host", "127.0.0.1",
                      "--name", f"w{i}", "--ncores", "2", "--no-nanny"])  # fmt: skip
            procs.append(w)
            w.address = w.line("Start worker at ")
            w.line("Registered with center at ")
            workers.append(w)
        return address, url, workers

    start.procs = procs
    yield start
    for p in reversed(procs):
        p.stop()
