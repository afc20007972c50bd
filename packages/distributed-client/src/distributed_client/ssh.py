"""``SSHCluster`` and ``dcluster ssh HOST...``: a center and workers started over SSH.

Needs ``distributed-client[ssh]`` (asyncssh) here, and on every host a Python
with ``distributed-center`` (first host) or ``distributed-worker`` (the
others) installed. The shape follows dask's ``SSHCluster``: the first host
runs the center, every other host one worker.

* Every host is connected first, concurrently, each within
  ``connect_timeout``; a host that cannot be reached is one line
  (``SSHClusterError``) and nothing is started anywhere.
* The secret (this user's default secret file, created if missing, or
  ``secret_file``) is copied over SFTP to
  ``~/.config/distributed/ssh-<token>.secret`` (mode 0600) on every host, never
  put on a command line; the nodes get that file's *name* with
  ``--secret-file``; it is removed again by ``close()``.
* Every line the nodes print (stdout and stderr) is passed to ``log`` as
  ``[HOST center] ...`` / ``[HOST worker] ...``.
* ``close()`` (and ``with``, and Ctrl-C in ``dcluster ssh``) sends SIGTERM to
  the workers, then to the center, waits up to ``stop_timeout`` for each, then
  SIGKILL: nothing is left running.

Bounds (seconds, parameters): ``connect_timeout`` per SSH connection,
``start_timeout`` for a node's start-up line (``Start center at`` /
``Registered with center at``), ``stop_timeout`` per node at close.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from distributed_core import LoopRunner, ensure_secret_file

__all__ = ["SSHCluster", "SSHClusterError", "main"]

PID_LINE = "distributed-ssh-pid "


class SSHClusterError(RuntimeError):
    """The cluster could not be started (the message is one line saying why)."""


def _reason(e: BaseException) -> str:
    import asyncssh

    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return "no answer (timed out)"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused (is an SSH server listening on that port?)"
    if isinstance(e, asyncssh.PermissionDenied):
        return "permission denied (no SSH key accepted)"
    if isinstance(e, asyncssh.HostKeyNotVerifiable):
        return f"host key not verifiable ({e.reason}); add it to known_hosts"
    if isinstance(e, asyncssh.Error):
        return e.reason
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


class _Node:
    """One remote node process: its output lines, its remote pid."""

    def __init__(self, cluster: SSHCluster, host: str, kind: str, conn, command: str):
        self.cluster, self.host, self.kind, self.conn = cluster, host, kind, conn
        self.command = command
        self.pid: int | None = None
        self.lines: list[str] = []
        self.changed = asyncio.Event()
        self.proc = None
        self.readers: list[asyncio.Task] = []

    async def start(self) -> None:
        self.proc = await self.conn.create_process(
            f'echo "{PID_LINE}$$"; exec {self.command}', stdin=asyncio.subprocess.DEVNULL
        )
        self.readers = [
            asyncio.ensure_future(self._read(self.proc.stdout, pid=True)),
            asyncio.ensure_future(self._read(self.proc.stderr, pid=False)),
        ]

    async def _read(self, stream, pid: bool) -> None:
        async for line in stream:
            line = line.rstrip("\r\n")
            if pid and self.pid is None and line.startswith(PID_LINE):
                self.pid = int(line[len(PID_LINE) :])
                continue
            if pid:
                self.lines.append(line)
            self.cluster._log(f"[{self.host} {self.kind}] {line}")
            self.changed.set()
        self.changed.set()

    async def wait_line(self, prefix: str, timeout: float) -> str:
        async def find():
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line[len(prefix) :].strip()
                if all(r.done() for r in self.readers):
                    raise SSHClusterError(
                        f"the {self.kind} on {self.host} exited before printing {prefix!r} "
                        f"(exit status {self.proc.exit_status}; its output is above)"
                    )
                self.changed.clear()
                await self.changed.wait()

        try:
            return await asyncio.wait_for(find(), timeout)
        except asyncio.TimeoutError:
            raise SSHClusterError(
                f"the {self.kind} on {self.host} did not print {prefix!r} within {timeout:g}s"
            ) from None

    async def stop(self, timeout: float) -> None:
        if self.proc is None:
            return
        for sig in ("TERM", "KILL"):
            if self.pid is not None and self.proc.exit_status is None:
                await self.conn.run(f"kill -{sig} {self.pid}", check=False)
            try:
                await asyncio.wait_for(self.proc.wait_closed(), timeout)
                break
            except asyncio.TimeoutError:
                continue
        for r in self.readers:
            r.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)


class SSHCluster:
    """A center on ``hosts[0]`` and one worker on each other host, started over SSH.

    >>> with SSHCluster(["node0", "node1", "node2"]) as cluster:  # doctest: +SKIP
    ...     with Executor(cluster.center_address) as e:
    ...         print(e.submit(sum, [1, 2]).result())

    Parameters
    ----------
    hosts
        host names or addresses, ``[user@]host[:port]`` not supported: use
        ``username`` and ``port``. The first runs the center.
    python
        the Python to run on the hosts (``python3``).
    center_port
        the center's port (8787; a busy one is replaced, see ``dcenter``).
    center_options, worker_options
        extra ``dcenter`` / ``dworker`` options (strings).
    username, port, client_keys, known_hosts
        passed to ``asyncssh.connect`` (``known_hosts=()``, the default, uses
        ``~/.ssh/known_hosts``).
    secret_file
        the secret to copy (default: this user's default secret file, created
        if missing, which local clients then find by themselves).
    connect_timeout, start_timeout, stop_timeout
        the bounds, in seconds (module docstring).
    log
        called with every line the nodes print (default: ``print`` to stderr).

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        hosts: Iterable[str],
        *,
        python: str = "python3",
        center_port: int = 8787,
        center_options: Iterable[str] = (),
        worker_options: Iterable[str] = (),
        username: str | None = None,
        port: int = 22,
        client_keys: Any = (),
        known_hosts: Any = (),
        secret_file: str | os.PathLike | None = None,
        connect_timeout: float = 10.0,
        start_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        log: Callable[[str], Any] | None = None,
    ) -> None:
        hosts = list(hosts)
        if len(hosts) < 2:
            raise ValueError("SSHCluster needs at least 2 hosts: a center and a worker")
        self.hosts = hosts
        self.python = python
        self.center_port = center_port
        self.center_options = list(center_options)
        self.worker_options = list(worker_options)
        self._connect_kwargs = {"port": port}  # asyncssh's defaults are (), not None
        if username is not None:
            self._connect_kwargs["username"] = username
        if client_keys != ():
            self._connect_kwargs["client_keys"] = client_keys
        if known_hosts != ():
            self._connect_kwargs["known_hosts"] = known_hosts
        self.secret_file = secret_file
        self.connect_timeout = connect_timeout
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._log_fn = log
        self._lock = threading.Lock()
        self._conns: dict[str, object] = {}
        self._nodes: list[_Node] = []
        self._remote_secret = f".config/distributed/ssh-{secrets.token_hex(8)}.secret"
        self.center_address = ""
        self.worker_addresses: list[str] = []
        self.status = "starting"
        self._runner = LoopRunner("distributed-ssh")
        try:
            self._runner.run(self._start)
        except BaseException:
            self.close()
            raise
        self.status = "running"

    def _log(self, line: str) -> None:
        with self._lock:
            if self._log_fn is not None:
                self._log_fn(line)
            else:
                print(line, file=sys.stderr, flush=True)

    def __repr__(self) -> str:
        return f"<SSHCluster {self.status} center={self.center_address or '?'} hosts={self.hosts}>"

    # ------------------------------------------------------------------ start

    async def _connect(self, host: str):
        import asyncssh

        return await asyncio.wait_for(
            asyncssh.connect(host, connect_timeout=self.connect_timeout, **self._connect_kwargs),
            self.connect_timeout,
        )

    async def _start(self) -> None:
        unique = list(dict.fromkeys(self.hosts))
        results = await asyncio.gather(*(self._connect(h) for h in unique), return_exceptions=True)
        failed = []
        for host, result in zip(unique, results):
            if isinstance(result, BaseException):
                failed.append(f"{host}: {_reason(result)}")
            else:
                self._conns[host] = result
        if failed:
            raise SSHClusterError(
                f"cannot reach {len(failed)} of {len(unique)} hosts over SSH (port "
                f"{self._connect_kwargs['port']}, within {self.connect_timeout:g}s): "
                + "; ".join(failed)
            )
        secret = self._read_secret()
        await asyncio.gather(*(self._copy_secret(c, secret) for c in self._conns.values()))

        center_host = self.hosts[0]
        q = shlex.quote
        center = _Node(
            self, center_host, "center", self._conns[center_host],
            " ".join([
                q(self.python), "-m", "distributed_center", "--port", str(self.center_port),
                "--secret-file", q(self._remote_secret), *map(q, self.center_options),
            ]),
        )  # fmt: skip
        self._nodes.append(center)
        await center.start()
        self.center_address = await center.wait_line("Start center at ", self.start_timeout)
        workers = [
            _Node(
                self,
                host,
                "worker",
                self._conns[host],
                " ".join(
                    [
                        q(self.python),
                        "-m",
                        "distributed_worker",
                        q(self.center_address),
                        "--secret-file",
                        q(self._remote_secret),
                        *map(q, self.worker_options),
                    ]
                ),
            )  # fmt: skip
            for host in self.hosts[1:]
        ]
        self._nodes += workers
        await asyncio.gather(*(w.start() for w in workers))
        for w in workers:
            self.worker_addresses.append(await w.wait_line("Start worker at ", self.start_timeout))
            await w.wait_line("Registered with center at ", self.start_timeout)

    def _read_secret(self) -> bytes:
        path = self.secret_file
        if path is None:
            path, _ = ensure_secret_file()
        try:
            with open(path, "rb") as f:
                secret = f.read().strip()
        except OSError as e:
            raise SSHClusterError(f"cannot read the secret file {path}: {e.strerror}") from None
        if not secret:
            raise SSHClusterError(f"the secret file {path} is empty")
        return secret

    async def _copy_secret(self, conn, secret: bytes) -> None:
        import asyncssh

        async with conn.start_sftp_client() as sftp:
            await sftp.makedirs(".config/distributed", exist_ok=True)
            attrs = asyncssh.SFTPAttrs(permissions=0o600)
            async with sftp.open(self._remote_secret, "wb", attrs) as f:
                await f.write(secret + b"\n")
            await sftp.chmod(self._remote_secret, 0o600)  # an existing file keeps its mode

    # ------------------------------------------------------------------ stop

    async def _stop(self) -> None:
        workers = [n for n in self._nodes if n.kind == "worker"]
        await asyncio.gather(*(n.stop(self.stop_timeout) for n in workers))
        await asyncio.gather(*(n.stop(self.stop_timeout) for n in self._nodes if n not in workers))
        for conn in self._conns.values():
            try:
                async with conn.start_sftp_client() as sftp:
                    await sftp.remove(self._remote_secret)
            except Exception:  # noqa: BLE001 - gone already (hosts sharing a home)
                pass
            conn.close()
        for conn in self._conns.values():
            await conn.wait_closed()
        self._conns.clear()

    def close(self) -> None:
        """Stop every worker, then the center, and close the SSH connections."""
        if self.status == "closed":
            return
        self.status = "closing"
        try:
            # each node's stop is bounded by stop_timeout (twice: TERM, then KILL)
            self._runner.run(self._stop)
        finally:
            self._runner.close()
            self.status = "closed"

    def __enter__(self) -> SSHCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------- dcluster


def main(argv=None) -> int:
    """``dcluster ssh HOST [HOST ...]``: run an SSHCluster until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="dcluster", description="Start a distributed cluster.")
    sub = parser.add_subparsers(dest="command", required=True)
    ssh = sub.add_parser("ssh", help="center on the first host, a worker on each other one")
    ssh.add_argument("hosts", nargs="+", metavar="HOST")
    ssh.add_argument("--python", default="python3", help="Python on the hosts [python3]")
    ssh.add_argument("--center-port", type=int, default=8787, help="center port [8787]")
    ssh.add_argument("--username", default=None, help="SSH user [the local one]")
    ssh.add_argument("--ssh-port", type=int, default=22, help="SSH port [22]")
    ssh.add_argument("--identity", "-i", action="append", default=None, help="SSH private key")
    ssh.add_argument("--known-hosts", default=None, help="known_hosts file [~/.ssh/known_hosts]")
    ssh.add_argument("--secret-file", default=None, help="secret to copy [the default one]")
    ssh.add_argument("--connect-timeout", type=float, default=10.0, help="seconds [10]")
    ssh.add_argument("--worker-option", action="append", default=[], help="extra dworker option")
    args = parser.parse_args(argv)
    try:
        import asyncssh  # noqa: F401
    except ImportError:
        print(
            "dcluster: error: needs asyncssh: pip install 'distributed-client[ssh]'",
            file=sys.stderr,
        )
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        cluster = SSHCluster(
            args.hosts,
            python=args.python,
            center_port=args.center_port,
            username=args.username,
            port=args.ssh_port,
            client_keys=args.identity if args.identity else (),
            known_hosts=args.known_hosts if args.known_hosts else (),
            secret_file=args.secret_file,
            connect_timeout=args.connect_timeout,
            worker_options=args.worker_option,
            log=lambda line: print(line, flush=True),
        )
    except (SSHClusterError, ValueError) as e:
        print(f"dcluster: error: {e}", file=sys.stderr)
        return 1
    print(
        f"Cluster at {cluster.center_address} ({len(cluster.worker_addresses)} workers)", flush=True
    )
    try:
        stop.wait()
    finally:
        print("Stopping the cluster", flush=True)
        cluster.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
