"""The center's dashboard: a read-only web view of the cluster (issue 11).

``Dashboard(center).listen(address)`` serves, with tornado's web server on its
own port (default 8788 on the center's host):

* ``/`` the status page (workers table, totals, recent events, task stream,
  throughput and memory charts), updated every second by polling the JSON API;
* ``/api/v1/workers``, ``/api/v1/keys``, ``/api/v1/events?since=N``,
  ``/api/v1/task-stream?since=CURSOR``, ``/api/v1/throughput``;
* ``/metrics`` in Prometheus text format (``prometheus_client``);
* ``/health`` (no token needed).

With a shared secret every path but ``/health`` needs the token of
:mod:`.auth`; with TLS (``Security.tls_cert``) it serves HTTPS with the same
certificate. The charts are plain SVG drawn by ``static/dashboard.js`` from the
JSON API: no charting library, no CDN (see docs/dashboard.md).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl

import tornado.httpserver
from prometheus_client import CollectorRegistry

from distributed_core import config, parse_address, unparse_address

from .app import STATIC, make_app
from .auth import dashboard_token
from .metrics import CenterCollector

__all__ = ["Dashboard", "parse_dashboard_address"]

logger = logging.getLogger("distributed_center.dashboard")

SAMPLE_PERIOD = 1.0  # seconds between throughput samples and loop-lag probes


def parse_dashboard_address(value, default_host: str) -> tuple[str, int, bool]:
    """``(host, port, explicit_port)`` from ``'host:port'``, ``':port'``, ``'port'``, ``''``.

    >>> from distributed_center.dashboard import parse_dashboard_address
    >>> parse_dashboard_address("", "0.0.0.0")[0], parse_dashboard_address(":9000", "h")
    ('0.0.0.0', ('h', 9000, True))
    """
    text = "" if value is None else str(value).strip()
    if text.startswith(("http://", "https://")):
        text = text.split("://", 1)[1]
    host, port = default_host, None
    if text:
        if text.isdigit():
            port = int(text)
        else:
            head, sep, tail = text.rpartition(":")
            if not sep or not tail.isdigit():
                raise ValueError(
                    f"bad dashboard address {value!r}: expected HOST:PORT, :PORT or PORT"
                )
            host = head.strip("[]") or default_host
            port = int(tail)
        if not 0 <= port <= 65535:
            raise ValueError(f"bad dashboard address {value!r}: port must be 0-65535")
    explicit = port is not None
    if port is None:
        port = config.get("dashboard.port")
        configured_host = config.get("dashboard.host")
        if configured_host:
            host = configured_host
    return host, port, explicit


def _bind(host: str | None, port: int) -> list[socket.socket]:
    """One listening socket on `host` (name or IP; empty: all IPv4 interfaces)."""
    host = host or "0.0.0.0"
    family, _, _, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.setblocking(False)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return [sock]


class Dashboard:
    """The web server of one center; see the module docstring."""

    def __init__(self, center):
        self.center = center
        security = center.security
        self.token = dashboard_token(getattr(security, "secret", None))
        self.tls = bool(security is not None and security.tls_cert)
        self.static_files = {p.name for p in STATIC.iterdir() if p.is_file()}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(CenterCollector(center, self))
        self.loop_lag = 0.0
        self.server = None
        self.port = None
        self.host = None
        self._task = None

    async def listen(self, address="") -> None:
        """Bind and start serving; a busy *default* port is replaced by a free one."""
        _, center_host, _ = parse_address(
            getattr(self.center, "listen_address", self.center.address)
        )
        host, port, explicit = parse_dashboard_address(address, center_host or "0.0.0.0")
        try:
            sockets = _bind(host, port)
        except OSError as e:
            if e.errno != errno.EADDRINUSE or explicit:
                raise OSError(e.errno, f"cannot listen for the dashboard on {host}:{port}: "
                              f"{e.strerror}; choose another --dashboard-address") from None  # fmt: skip
            sockets = _bind(host, 0)
            logger.warning(
                "Dashboard port %d is busy; serving the dashboard on port %d instead",
                port,
                sockets[0].getsockname()[1],
            )
        ssl_ctx = None
        if self.tls:
            ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            sec = self.center.security
            ssl_ctx.load_cert_chain(sec.tls_cert, sec.tls_key)
        self.server = tornado.httpserver.HTTPServer(make_app(self), ssl_options=ssl_ctx)
        self.server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        self.host = host
        self._task = asyncio.ensure_future(self._sample())

    @property
    def url(self) -> str:
        """The dashboard's address for a browser, with the token when one is needed."""
        host = self.host
        if host in (None, "", "0.0.0.0", "::"):
            host = parse_address(self.center.address)[1]
        url = unparse_address("https" if self.tls else "http", host, self.port).rstrip("/") + "/"
        return url + (f"?token={self.token}" if self.token else "")

    async def _sample(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(SAMPLE_PERIOD)
            self.loop_lag = max(loop.time() - before - SAMPLE_PERIOD, 0.0)
            try:
                workers = self.center.state.workers_map
                memory = sum(
                    m for w in workers.values()
                    if isinstance(m := w.metrics.get("memory"), (int, float))
                )  # fmt: skip
                self.center.events.sample(
                    memory=memory, workers=len(workers), keys=self.center.state.n_keys
                )
            except Exception:  # never let the sampler die
                logger.exception("dashboard sampler failed")

    async def close(self) -> None:
        """Stop listening and close open connections."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.server is not None:
            server, self.server = self.server, None
            server.stop()
            await server.close_all_connections()
