"""``LocalCluster``: a Center and Workers as subprocesses on this machine.

The processes are started by module name (``python -m distributed_center``,
``python -m distributed_worker``), so this package never imports them; they
come with the ``distributed-client[local]`` extra. The center and the workers
start in parallel (the workers retry until the center listens), which keeps
start-up to about one interpreter start.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator
from typing import Any

from distributed_core import ensure_secret_file, normalize_address, parse_resources
from distributed_core.lifeline import Lifeline
from distributed_core.testing import free_port

__all__ = ["LocalCluster"]

logger = logging.getLogger("distributed_client.local")

_CENTER_LINE = "Start center at "
_WORKER_LINE = "Start worker at "
_REGISTERED_LINE = "Registered with center at "


class _Proc:
    """A child process whose output goes to a temporary file we can poll."""

    def __init__(self, args: list[str], env: dict | None = None, lifeline=None):
        self.args = args
        self.log = tempfile.TemporaryFile(mode="w+b")
        extra = lifeline.popen_kwargs(env) if lifeline is not None else {"env": env}
        self.popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,  # a Ctrl-C in the terminal goes to us, we stop them
            **extra,
        )
        self.pid = self.popen.pid

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def find(self, prefix: str) -> str | None:
        for line in self.output().splitlines():
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        return None

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float) -> None:
        if self.alive():
            try:
                self.popen.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.alive():
            try:
                self.popen.kill()
            except ProcessLookupError:
                pass
        self.popen.wait()

    def close(self) -> None:
        self.log.close()


class LocalCluster:
    """A Center and `n_workers` Workers running as local processes.

    >>> with LocalCluster(n_workers=2, ncores=1) as cluster:  # doctest: +SKIP
    ...     with Pool(cluster.center_address) as pool:
    ...         print(pool.map(abs, [-1, -2]))
    [1, 2]

    Attributes: ``center_address``, ``worker_addresses`` (list, in start
    order; a killed worker's entry is removed), ``center_process``,
    ``worker_processes`` (``subprocess.Popen``).

    Parameters
    ----------
    n_workers
        number of worker processes.
    ncores
        threads per worker.
    host
        interface to listen on (default ``127.0.0.1``).
    heartbeat_interval
        seconds between worker heartbeats (the center drops a
        worker after ``heartbeat_timeout`` silent seconds).
    timeout
        seconds to wait for every process to be up.
    no_workers_timeout
        default ``no_workers_timeout`` of the clients given this cluster
        (``Executor(cluster)``): seconds a task waits while no worker is
        alive, then :class:`~distributed_client.NoWorkersError` (a cluster
        whose workers all died says so instead of hanging). None: the
        clients' default (30 s).
    center_timeout
        likewise, the clients' default ``center_timeout``.
    env
        extra environment variables for the processes.
    security
        a ``distributed_core.Security`` for every process: a shared
        secret (written to a private temporary file for the command lines)
        and/or TLS files (the cluster then listens on ``tls://``). Pass the
        same object to the clients. ``None`` (default): the user's default
        secret file (``distributed_core.default_secret_file()``, created if
        missing), which clients find by themselves.

        .. versionchanged:: 0.2.0
           ``None`` uses the default secret file instead of no secret.
    nanny
        run each worker under a nanny that restarts it when it dies (then
        ``worker_processes`` are the nannies, and `kill_worker` kills the
        nanny and its worker). Default False.
    memory_limit
        each worker's ``--memory-limit`` (``'200MB'``, ``'auto'``, ...;
        default: none). With ``'auto'`` the machine's memory is divided among
        the workers.
    death_timeout
        seconds after which a worker whose center is unreachable exits
        (default 60; None: never).
    worker_args
        more ``dworker`` options for every worker, e.g.
        ``['--memory-pause-fraction', 'False']``.
    resources
        what every worker declares (``dworker --resources``): ``{"GPU": 2}``
        or ``"GPU=2,MEM=8e9"``; `add_worker` takes its own. Added for issue 10.

    Every process this cluster starts exits when the process that made it
    dies, even by ``kill -9``: each watches a pipe from it
    (`distributed_core.lifeline`).

    .. versionadded:: 0.2.0
       ``nanny``, ``memory_limit``, ``death_timeout``, ``worker_args``; the
       processes no longer outlive their parent.
    """

    def __init__(
        self,
        n_workers: int = 2,
        ncores: int = 1,
        *,
        host: str = "127.0.0.1",
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float = 5.0,
        timeout: float = 20.0,
        no_workers_timeout: float | None = None,
        center_timeout: float | None = None,
        env: dict | None = None,
        security: Any = None,
        asynchronous: bool = False,
        nanny: bool = False,
        memory_limit: str | int | None = None,
        death_timeout: float | None = 60.0,
        worker_args: list[str] | None = None,
        resources: str | dict | None = None,
    ):
        if n_workers < 0:
            raise ValueError(f"n_workers must be >= 0, got {n_workers}")
        if ncores < 1:
            raise ValueError(f"ncores must be >= 1, got {ncores}")
        self.host = host
        self.ncores = ncores
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.timeout = timeout
        self.no_workers_timeout = no_workers_timeout
        self.center_timeout = center_timeout
        self.security = security
        self.nanny = nanny
        self.memory_limit = memory_limit
        self.death_timeout = death_timeout
        self.extra_worker_args = [str(a) for a in worker_args or ()]
        self.resources = _resources_arg(resources)
        self._lifeline = Lifeline()
        self._secret_dir = None
        self._security_args = self._make_security_args(security)
        self._env = {**os.environ, **(env or {})}
        self._env.setdefault("PYTHONUNBUFFERED", "1")
        self._center: _Proc | None = None
        self._workers: list[_Proc] = []
        self.worker_addresses: list[str] = []
        self.center_address: str = ""
        self.status = "starting"
        self._n_workers = n_workers
        if not asynchronous:
            self._start_or_close()

    def _start_or_close(self) -> LocalCluster:
        if self.status != "starting":
            return self
        try:
            self._start(self._n_workers)
        except BaseException:
            self.close()
            raise
        self.status = "running"
        return self

    async def _astart(self) -> LocalCluster:
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(None, self._start_or_close)

    def __await__(self) -> Generator[Any, None, LocalCluster]:
        return self._astart().__await__()

    # ------------------------------------------------------------------ start

    def _make_security_args(self, security) -> list[str]:
        if security is None:
            # secure by default, as dcenter alone: the user's default secret
            # file, made here before the workers start looking for it
            try:
                ensure_secret_file()
            except (ValueError, OSError) as e:
                raise RuntimeError(
                    f"LocalCluster cannot use the default secret file: {e}; "
                    "pass security=Security(secret=...)"
                ) from None
            return []
        args = []
        if security.secret is not None:
            self._secret_dir = tempfile.TemporaryDirectory(prefix="distributed-secret-")
            path = os.path.join(self._secret_dir.name, "secret")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(security.secret)
            args += ["--secret-file", path]
        for option, value in (
            ("--tls-cert", security.tls_cert),
            ("--tls-key", security.tls_key),
            ("--tls-ca-file", security.tls_ca_file),
        ):
            if value is not None:
                args += [option, str(value)]
        return args

    @property
    def _scheme(self) -> str:
        tls = self.security is not None and self.security.tls_cert is not None
        return "tls" if tls else "tcp"

    def _center_args(self, port: int) -> list[str]:
        return [
            sys.executable, "-m", "distributed_center",
            "--host", self.host, "--port", str(port),
            "--heartbeat-interval", str(self.heartbeat_interval),
            "--heartbeat-timeout", str(self.heartbeat_timeout),
            *self._security_args,
        ]  # fmt: skip

    def _worker_args(self, resources: str | None = None) -> list[str]:
        resources = resources if resources is not None else self.resources
        return [
            sys.executable, "-m", "distributed_worker", self.center_address,
            "--host", self.host, "--port", "0", "--ncores", str(self.ncores),
            "--connect-timeout", str(self.timeout),
            "--nanny" if self.nanny else "--no-nanny",
            *self._memory_args(),
            *self._security_args,
            *self.extra_worker_args,
            *(["--resources", resources] if resources else []),
        ]  # fmt: skip

    def _memory_args(self) -> list[str]:
        args = []
        if self.memory_limit is not None:
            limit = str(self.memory_limit)
            if limit.strip().lower() == "auto":
                # the machine's (or cgroup's) memory divided among our workers
                limit = repr(1.0 / max(1, self._n_workers))
            args += ["--memory-limit", limit]
        if self.death_timeout is not None:
            args += ["--death-timeout", str(self.death_timeout)]
        return args

    def _start(self, n_workers: int) -> None:
        deadline = time.monotonic() + self.timeout
        for attempt in range(3):
            port = free_port(self.host)
            self.center_address = normalize_address(f"{self._scheme}://{self.host}:{port}")
            self._center = _Proc(self._center_args(port), self._env, self._lifeline)
            # the workers retry connecting until the center listens
            workers = [self._spawn_worker() for _ in range(n_workers)]
            line = self._wait_line(self._center, _CENTER_LINE, deadline, fail_ok=attempt < 2)
            if line is None:  # the port was taken meanwhile: try another
                self._center.kill()
                self._center.close()
                for w in workers:
                    w.kill()
                    w.close()
                continue
            self.center_address = normalize_address(line)
            self._workers.extend(workers)
            break
        for w in self._workers:
            self._wait_line(w, _REGISTERED_LINE, deadline)
            self.worker_addresses.append(normalize_address(w.find(_WORKER_LINE)))

    def _spawn_worker(self, resources: str | None = None) -> _Proc:
        return _Proc(self._worker_args(resources), self._env, self._lifeline)

    def _wait_line(self, proc: _Proc, prefix: str, deadline: float, fail_ok: bool = False):
        delay = 0.002
        while True:
            found = proc.find(prefix)
            if found is not None:
                return found
            if not proc.alive():
                if fail_ok and "in use" in proc.output().lower():
                    return None
                raise RuntimeError(
                    f"{' '.join(proc.args[1:3])} exited with status {proc.popen.returncode} "
                    f"before it was ready; its output:\n{proc.output()[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{' '.join(proc.args[1:3])} was not ready within {self.timeout}s; "
                    f"its output so far:\n{proc.output()[-3000:]}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.05)

    # ------------------------------------------------------------------ control

    @property
    def center_process(self) -> subprocess.Popen | None:
        return self._center.popen if self._center else None

    @property
    def worker_processes(self) -> list[subprocess.Popen]:
        return [w.popen for w in self._workers]

    def add_worker(self, resources: str | dict | None = None) -> str:
        """Start one more worker; returns its address once it is registered.

        `resources` (issue 10): what this one declares instead of the cluster's.
        """
        proc = self._spawn_worker(_resources_arg(resources))
        self._workers.append(proc)
        self._wait_line(proc, _REGISTERED_LINE, time.monotonic() + self.timeout)
        address = normalize_address(proc.find(_WORKER_LINE))
        self.worker_addresses.append(address)
        return address

    def kill_worker(self, i: int = 0) -> str:
        """``kill -9`` worker `i` (index into ``worker_addresses``); returns its address."""
        proc = self._workers.pop(i)
        address = self.worker_addresses.pop(i)
        os.kill(proc.pid, signal.SIGKILL)
        proc.popen.wait()
        proc.close()
        return address

    def worker_pid(self, i: int = 0) -> int:
        return self._workers[i].pid

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers, then the center (SIGTERM, then SIGKILL after `timeout`)."""
        if self.status == "closed":
            return
        self.status = "closed"
        for w in self._workers:
            if w.alive():
                try:
                    w.popen.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for w in self._workers:
            w.stop(timeout)
            w.close()
        self._workers = []
        self.worker_addresses = []
        if self._center is not None:
            self._center.stop(timeout)
            self._center.close()
            self._center = None
        if self._secret_dir is not None:
            self._secret_dir.cleanup()
            self._secret_dir = None
        self._lifeline.close()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> LocalCluster:
        return await self._astart()

    async def __aexit__(self, *exc: object) -> None:
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def __del__(self):
        if getattr(self, "status", "closed") != "closed":
            try:
                self.close(timeout=1)
            except Exception:
                pass

    def _repr_html_(self) -> str:
        from ._html import cluster_html

        return cluster_html(self)

    def __repr__(self) -> str:
        return (
            f"<LocalCluster {self.center_address or '-'} workers={len(self.worker_addresses)} "
            f"ncores={self.ncores} {self.status}>"
        )


def _resources_arg(resources) -> str | None:
    """``--resources`` text for `resources` (checked here, so errors name the caller's value)."""
    parsed = parse_resources(resources)
    if not parsed:
        return None
    return ",".join(f"{name}={amount!r}" for name, amount in parsed.items())
