"""Fixtures: a real Center and Workers started from their CLIs, as separate processes.

Everything here runs against the *installed* packages: processes are started
with ``sys.executable -m distributed_center`` / ``-m distributed_worker`` and
nothing is imported from the source tree.

* :class:`Proc` -- one CLI process; waits for its printed lines with a
  timeout (stdout is read in a thread) and shows its stderr when anything
  about it fails.
* ``spawn`` -- start centers and workers by hand (``spawn.center(...)``,
  ``spawn.worker(...)``); all are stopped after the test (SIGTERM, then
  SIGKILL) and must exit with the code they are expected to (0 unless the
  test killed them).
* ``cluster`` -- a center and 2 workers (``ncores=1``) for one test.
* ``center_address`` -- the address of a cluster shared by the whole session,
  for ``test_scenarios.py``; set ``DISTRIBUTED_TEST_CENTER=tcp://host:port``
  to run those scenarios against a cluster started elsewhere instead (e.g. a
  mixed-version one).
* ``rpc_client`` -- blocking ``distributed_core.rpc`` calls from the test.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from distributed_core import LoopRunner, rpc

# Short heartbeats so that a silent worker is noticed quickly (a closed
# report stream is noticed at once anyway).
HEARTBEAT_INTERVAL = 0.2
HEARTBEAT_TIMEOUT = 2.0
LINE_TIMEOUT = 20.0  # seconds to wait for a process's startup line
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL at teardown


class Proc:
    """A CLI process (``python -m module args...``) with its stdout read by a thread."""

    def __init__(self, name: str, module: str, args: list[str], cwd: str, env=None):
        self.name = name
        self.argv = [sys.executable, "-m", module, *map(str, args)]
        self.expected_returncode = 0
        self._stop_requested = False
        self._stderr = tempfile.TemporaryFile()
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=cwd,
            env=env,
        )
        self.pid = self.popen.pid
        self.lines: list[str] = []
        self._eof = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(
            target=self._read_stdout, name=f"stdout-{name}-{self.pid}", daemon=True
        )
        self._reader.start()
        self.address: str | None = None

    def __repr__(self) -> str:
        return f"<Proc {self.name} pid={self.pid} {self.address or ''}>"

    def _read_stdout(self) -> None:
        for raw in self.popen.stdout:
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\r\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    # ------------------------------------------------------------------ output

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def describe(self) -> str:
        """Everything known about the process, for failure messages."""
        stdout = "\n".join(self.lines) or "(nothing)"
        stderr = self.stderr().rstrip() or "(nothing)"
        return (
            f"{self.name} (pid {self.pid}, exit code {self.popen.poll()}):\n"
            f"  command: {' '.join(self.argv)}\n"
            f"  --- stdout ---\n{stdout}\n  --- stderr ---\n{stderr}"
        )

    def wait_line(self, prefix: str, timeout: float = LINE_TIMEOUT) -> str:
        """Wait for a stdout line starting with `prefix`; return the rest of it, stripped."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if line.startswith(prefix):
                        return line[len(prefix) :].strip()
                seen = len(self.lines)
                if self._eof:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        if self._eof:
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                pass
            what = "closed its stdout"
            # reported here; the teardown need not report its exit code again
            self.expected_returncode = self.popen.returncode
        else:
            what = f"printed nothing starting with it within {timeout}s"
        raise AssertionError(f"waited for {prefix!r}: {what}\n{self.describe()}")

    # ------------------------------------------------------------------ lifetime

    def send(self, sig: int) -> None:
        """Send a signal; SIGKILL makes -9 the expected exit code."""
        if sig == signal.SIGKILL:
            self.expected_returncode = -signal.SIGKILL
        os.kill(self.pid, sig)

    def kill(self) -> None:
        """kill -9, and wait until it is gone."""
        self.send(signal.SIGKILL)
        self.wait()

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for the exit code; fail (showing stderr) if it does not exit in time."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running {timeout}s later (stopped by signal or expected to exit)\n"
                f"{self.describe()}"
            ) from None

    def request_stop(self) -> None:
        """SIGTERM (once), after SIGCONT in case a test stopped the process."""
        if self.popen.poll() is None and not self._stop_requested:
            self._stop_requested = True
            os.kill(self.pid, signal.SIGCONT)
            os.kill(self.pid, signal.SIGTERM)

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then wait for the exit code (SIGKILL if it takes longer than `timeout`)."""
        self.request_stop()
        if self.popen.poll() is None:
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode

    def close(self) -> None:
        self._reader.join(5)
        self.popen.stdout.close()
        self._stderr.close()


class Spawner:
    """Starts center and worker CLIs; `stop()` ends them all and checks their exit codes."""

    def __init__(self, cwd: str):
        self.cwd = cwd
        self.procs: list[Proc] = []

    def _start(self, name, module, args) -> Proc:
        proc = Proc(name, module, args, self.cwd)
        self.procs.append(proc)
        return proc

    def center(
        self,
        *extra,
        port: int = 0,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
        wait: bool = True,
    ) -> Proc:
        """``python -m distributed_center --host 127.0.0.1 --port PORT ...``."""
        args = [
            "--host", "127.0.0.1", "--port", port,
            "--heartbeat-interval", heartbeat_interval,
            "--heartbeat-timeout", heartbeat_timeout,
            *extra,
        ]  # fmt: skip
        proc = self._start("center", "distributed_center", args)
        if wait:
            proc.address = proc.wait_line("Start center at ")
        return proc

    def worker(self, center: str, *extra, name: str | None = None, wait: bool = True) -> Proc:
        """``python -m distributed_worker CENTER --host 127.0.0.1 --port 0 --ncores 1 ...``."""
        return self.workers(center, 1, *extra, names=[name] if name else None, wait=wait)[0]

    def workers(
        self, center: str, n: int, *extra, names: list[str] | None = None, wait: bool = True
    ) -> list[Proc]:
        """Start `n` workers at once, then wait until each one has registered."""
        names = names or [f"worker-{len(self.procs) + i}" for i in range(n)]
        procs = []
        for name in names:
            args = [center, "--host", "127.0.0.1", "--port", 0, "--ncores", 1, "--name", name]
            args += _no_nanny()  # signals go to the worker itself
            procs.append(self._start(name, "distributed_worker", [*args, *extra]))
        if wait:
            for proc in procs:
                proc.address = proc.wait_line("Start worker at ")
            for proc in procs:
                registered = proc.wait_line("Registered with center at ")
                assert registered == center, (registered, center)
        return procs

    def stop(self) -> list[str]:
        """Stop everything (workers first, together; then centers); return the problems."""
        workers = [p for p in self.procs if p.name != "center"]
        centers = [p for p in self.procs if p.name == "center"]
        problems = []
        for group in (workers, centers):
            for proc in group:  # signal them all first so they shut down in parallel
                proc.request_stop()
            for proc in group:
                code = proc.terminate()
                if code != proc.expected_returncode:
                    problems.append(
                        f"exit code {code}, expected {proc.expected_returncode}: {proc.describe()}"
                    )
        for proc in self.procs:
            proc.close()
        self.procs.clear()
        return problems


class Cluster:
    """A center and its workers (``Proc``s), as the ``cluster`` fixture gives them."""

    def __init__(self, center: Proc, workers: list[Proc]):
        self.center = center
        self.workers = workers

    @property
    def center_address(self) -> str:
        return self.center.address

    @property
    def worker_addresses(self) -> list[str]:
        return [w.address for w in self.workers]


def start_cluster(spawner: Spawner, n_workers: int = 2, center_args=(), worker_args=()) -> Cluster:
    center = spawner.center(*center_args)
    workers = spawner.workers(center.address, n_workers, *worker_args)
    return Cluster(center, workers)


@pytest.fixture
def spawn(tmp_path):
    """A :class:`Spawner`; every process it started is stopped after the test."""
    spawner = Spawner(str(tmp_path))
    try:
        yield spawner
    finally:
        problems = spawner.stop()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def cluster(spawn) -> Cluster:
    """A center and 2 workers (``ncores=1``) started from their CLIs for this test."""
    return start_cluster(spawn)


@pytest.fixture(scope="session")
def center_address(tmp_path_factory):
    """The center of a cluster (2 workers) shared by the session's scenario tests.

    ``DISTRIBUTED_TEST_CENTER`` names an already running center to use instead.
    """
    external = os.environ.get("DISTRIBUTED_TEST_CENTER")
    if external:
        yield external
        return
    spawner = Spawner(str(tmp_path_factory.mktemp("shared-cluster")))
    try:
        yield start_cluster(spawner).center_address
    finally:
        problems = spawner.stop()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


class RpcClient:
    """Blocking ``distributed_core.rpc`` calls, one fresh connection per call.

    A fresh connection each time keeps calls independent of restarts and kills
    (no pooled connection to a process that is gone).
    """

    def __init__(self):
        self.runner = LoopRunner(name="integration-rpc")

    async def _call(self, address, op, security, kwargs):
        async with rpc(address, security=security, connect_timeout=5) as r:
            return await r.call(op, **kwargs)

    def call(self, address: str, op: str, *, security=None, timeout: float = 30, **kwargs):
        """``await rpc(address).op(**kwargs)``; raises what the remote op raised."""
        return self.runner.run(self._call, address, op, security, kwargs, timeout=timeout)

    def close(self) -> None:
        self.runner.close()


@pytest.fixture(scope="session")
def rpc_client():
    """An :class:`RpcClient` (``rpc_client.call(address, op, **kwargs)``)."""
    client = RpcClient()
    yield client
    client.close()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true within {timeout}s (last value {value!r})")
        time.sleep(interval)


@pytest.fixture
def procs(tmp_path):
    """``procs(name, module, *args, home=HOME)``: a CLI process whose default secret file
    is ``HOME/.config/distributed/secret``; all are stopped after the test."""
    started: list[Proc] = []

    def start(name, module, *args, home):
        env = {"HOME": str(home), "DISTRIBUTED_SECRET_FILE": ""}
        proc = Proc(name, module, list(args), str(tmp_path), env=env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.request_stop()
    for proc in started:
        proc.terminate(STOP_TIMEOUT)
        proc.close()


@pytest.fixture(name="wait_for")
def wait_for_fixture():
    """:func:`wait_for` (polling with a timeout), as a fixture."""
    return wait_for


@functools.cache
def _no_nanny() -> tuple:
    """``('--no-nanny',)`` if the installed dworker has a nanny (issue 9), else ``()``.

    The scenarios signal and kill the worker process itself; releases from
    before the nanny (run by ``nox -s compat``) have no such option.
    """
    out = subprocess.run(
        [sys.executable, "-m", "distributed_worker", "--help"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return ("--no-nanny",) if "--no-nanny" in out.stdout else ()
