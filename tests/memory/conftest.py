"""Fixtures for the memory tests: real processes, real limits (nox -s memory).

Everything runs against the installed packages, in separate processes:
LocalClusters with nannies, workers with ``--memory-limit``. `RssSampler`
samples the RSS of worker processes from outside every 50 ms.
"""

from __future__ import annotations

import os
import threading
import time

import cloudpickle
import psutil
import pytest

SAMPLE_INTERVAL = 0.05  # seconds between two RSS samples


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll `predicate` until true (its value is returned); AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(interval)


def worker_children(nanny_pid: int) -> list[psutil.Process]:
    """The worker processes a nanny runs."""
    try:
        return psutil.Process(nanny_pid).children()
    except psutil.Error:
        return []


class RssSampler:
    """Samples, every 50 ms, the RSS of every worker process under `nanny_pids`."""

    def __init__(self, nanny_pids: list[int]):
        self.nanny_pids = nanny_pids
        self.peak = 0
        self.samples = 0
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for nanny in self.nanny_pids:
                for child in worker_children(nanny):
                    try:
                        rss = child.memory_info().rss
                    except psutil.Error:
                        continue
                    self.pids.add(child.pid)
                    self.peak = max(self.peak, rss)
            self.samples += 1
            self._stop.wait(SAMPLE_INTERVAL)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def dir_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


@pytest.fixture
def sampler():
    started = []

    def start(pids):
        s = RssSampler(pids)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture(autouse=True, scope="module")
def _pickle_test_functions_by_value(request):
    # Workers cannot import test modules: ship their functions by value.
    try:
        cloudpickle.register_pickle_by_value(request.module)
    except ValueError:  # not in sys.modules under its own name
        pass
    yield


class _Helpers:
    wait_for = staticmethod(wait_for)
    worker_children = staticmethod(worker_children)
    dir_bytes = staticmethod(dir_bytes)


@pytest.fixture
def h():
    """The helpers of this module (test modules cannot import conftest)."""
    return _Helpers
