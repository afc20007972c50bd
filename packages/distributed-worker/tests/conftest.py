"""Fixtures: a Center and Workers as real subprocesses, on 127.0.0.1."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time

import pytest

PYTHON = sys.executable


class Proc:
    """A subprocess whose stdout lines can be awaited with a timeout (no threads)."""

    def __init__(self, args: list[str], name: str):
        self.name = name
        self.args = args
        self.stderr = tempfile.TemporaryFile()
        self.p = subprocess.Popen(
            [PYTHON, *args],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            stdin=subprocess.DEVNULL,
        )
        self.pid = self.p.pid
        self._buf = b""
        self.lines: list[str] = []

    def wait_line(self, prefix: str, timeout: float = 20) -> str:
        """Return the rest of the first stdout line starting with `prefix`."""
        deadline = time.monotonic() + timeout
        fd = self.p.stdout.fileno()
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                text = line.decode()
                self.lines.append(text)
                if text.startswith(prefix):
                    return text[len(prefix) :].strip()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"{self.name}: no line starting with {prefix!r} within {timeout}s; "
                    f"stdout so far {self.lines!r}; stderr:\n{self.read_stderr()}"
                )
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.p.wait(5)
                    raise AssertionError(
                        f"{self.name} exited ({self.p.returncode}) before printing "
                        f"{prefix!r}; stdout {self.lines!r}; stderr:\n{self.read_stderr()}"
                    )
                self._buf += chunk

    def read_stderr(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def signal(self, sig) -> None:
        os.kill(self.pid, sig)

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM (after SIGCONT, in case it is stopped), then SIGKILL if needed."""
        if self.p.poll() is None:
            try:
                os.kill(self.pid, signal.SIGCONT)
                os.kill(self.pid, signal.SIGTERM)
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
            except ProcessLookupError:
                pass
        self.p.stdout.close()
        self.stderr.close()
        return self.p.returncode


def start_center(procs, port: int = 0, heartbeat_interval=0.2, heartbeat_timeout=2.0, extra=()):
    proc = Proc(
        [
            "-m",
            "distributed_center",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--heartbeat-interval",
            str(heartbeat_interval),
            "--heartbeat-timeout",
            str(heartbeat_timeout),
            *extra,
        ],
        name="center",
    )
    procs.append(proc)
    proc.address = proc.wait_line("Start center at ")
    return proc


def start_worker(procs, center: str, *extra, name=None, wait_registered=True, host="127.0.0.1"):
    """A ``dworker`` process; ``host=None`` leaves ``--host`` out (all interfaces)."""
    args = ["-m", "distributed_worker", center, *(("--host", host) if host else ()), *extra]
    if "--nanny" not in extra:
        args.append("--no-nanny")  # the tests signal the worker process itself
    if name:
        args += ["--name", name]
    proc = Proc(args, name=f"worker {name or ''}")
    procs.append(proc)
    proc.address = proc.wait_line("Start worker at ")
    if wait_registered:
        proc.wait_line("Registered with center at ")
    return proc


@pytest.fixture
def procs():
    """A list to append `Proc` objects to; all are stopped after the test."""
    started: list[Proc] = []
    yield started
    for proc in reversed(started):
        proc.stop()


@pytest.fixture
def cluster(procs):
    """``start(n_workers, **center_kwargs) -> (center, [workers])``, all subprocesses."""

    def start(n_workers=2, worker_args=(), **center_kwargs):
        center = start_center(procs, **center_kwargs)
        workers = []
        for i in range(n_workers):
            workers.append(start_worker(procs, center.address, *worker_args, name=f"w{i}"))
        return center, workers

    return start


class SyncClient:
    """Blocking rpc calls from a test, over one pool, on a loop in a thread."""

    def __init__(self):
        from distributed_core import LoopRunner

        self.runner = LoopRunner(name="test-client")
        self.pool = None

    async def _call(self, address, op, kwargs):
        from distributed_core import ConnectionPool, rpc

        if self.pool is None:
            self.pool = ConnectionPool(connect_timeout=5)
        return await rpc(address, pool=self.pool).call(op, **kwargs)

    def call(self, address, op, timeout=60, **kwargs):
        return self.runner.run(self._call, address, op, kwargs, timeout=timeout)

    def close(self):
        async def close_pool():
            if self.pool is not None:
                await self.pool.close()

        self.runner.run(close_pool, timeout=10)
        self.runner.close()


@pytest.fixture
def client():
    c = SyncClient()
    yield c
    c.close()


def wait_for(predicate, timeout=10.0, interval=0.02, what="condition"):
    """Poll `predicate` until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(interval)


@pytest.fixture(name="wait_for")
def wait_for_fixture():
    return wait_for


@pytest.fixture
def spawn_center(procs):
    """``spawn_center(port=0, heartbeat_interval=0.2, heartbeat_timeout=2.0)`` -> Proc."""

    def spawn(**kwargs):
        return start_center(procs, **kwargs)

    return spawn


@pytest.fixture
def spawn_worker(procs):
    """``spawn_worker(center_address, *cli_args, name=None, wait_registered=True,
    host='127.0.0.1')`` -> Proc."""

    def spawn(center, *args, **kwargs):
        return start_worker(procs, center, *args, **kwargs)

    return spawn
