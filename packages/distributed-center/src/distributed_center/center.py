"""``Center``: the Server that answers metadata questions about the cluster.

A thin asynchronous layer around :class:`~distributed_center.state.CenterState`:
it turns requests into state calls, keeps one report stream per worker, drops
workers that go quiet, and fans ``delete_data`` out to the holders.

Message format (see ``docs/dev/contracts.md``): requests are maps
``{'op': name, 'reply': True, **arguments}``; the handlers below are called as
``handler(comm, **arguments)``.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import time
from collections.abc import Callable
from typing import Any

import distributed_core
from distributed_core import (
    CommClosedError,
    ConnectionPool,
    Failure,
    Server,
    config,
    normalize_address,
    parse_address,
    rpc,
    unparse_address,
)

from ._version import __version__
from .clients import ClientTracker
from .datasets import Datasets, UploadedFiles
from .events import EventLog
from .state import CenterState, check_workers

__all__ = ["DEFAULT_PORT", "Center"]

logger = logging.getLogger("distributed_center")

DEFAULT_PORT = 8787

#: ops a worker may send on its report stream
STREAM_OPS = ("add_keys", "remove_keys", "heartbeat", "unregister", "task_events")

#: what the center writes on every report stream each ``heartbeat_interval``
#: (workers before issue 8 ignore it: they read and drop whatever the center sends)
HEARTBEAT = {"op": "heartbeat"}

#: what ``identity`` announces under ``features`` (issue 10): ``resources`` in
#: ``register``, the dataset ops, ``upload_file``
FEATURES = ["resources", "datasets", "upload_file"]


class Center(Server):
    """The metadata server: who holds which key, and which workers are alive.

    Parameters
    ----------
    security
        A :class:`distributed_core.Security` for listening and for talking to
        workers (``delete_data``).
    heartbeat_interval
        Seconds between heartbeats, both ways: workers are asked to send one
        this often (returned by ``register``), and the center writes
        ``{'op': 'heartbeat'}`` on every report stream this often, so a
        worker notices a vanished center. Default:
        ``timeouts.heartbeat_interval`` from :mod:`distributed_core.config` (1 s).
    heartbeat_timeout
        A worker from which nothing arrived for this many seconds is dropped,
        with its keys; so is one whose report stream does not take a
        heartbeat within this many seconds (a vanished host whose socket
        buffer filled up). Must be larger than ``heartbeat_interval``.
        Default: ``timeouts.heartbeat_timeout`` from the configuration (5 s).
    contact_address
        The address to advertise (``self.address``, printed by ``dcenter``)
        when it differs from the one listened on: NAT, containers, a relay.
        Default: the listening address, where ``0.0.0.0``/``::`` become the
        address of the interface holding the default route
        (:func:`distributed_core.default_ip`).
    dashboard_address
        Serve the dashboard (:mod:`distributed_center.dashboard`) here once
        listening: ``'host:port'``, a port, or ``''`` for the configured
        default (port 8788 on the center's host, or a free port when that
        one is busy). None (the default): no dashboard.
    client_timeout
        A client from which no heartbeat arrived for this many seconds (it
        died without closing, or its host vanished) is released: the keys
        only it asked for are deleted on the workers
        (:mod:`distributed_center.clients`). Default:
        ``timeouts.client_timeout`` from the configuration (300 s).

        .. versionadded:: 0.2.0
    clock
        Monotonic clock for liveness (``time.monotonic``); tests pass a fake
        one and call :meth:`check_liveness` themselves.
    name, limits
        Passed to :class:`distributed_core.Server`.

    .. versionchanged:: 0.2.0
       The center heartbeats on report streams (announced with
       ``center_heartbeats`` in the ``register`` reply); ``contact_address``
       and ``clock`` were added.

    Examples
    --------
    >>> center = Center()                       # doctest: +SKIP
    >>> await center.listen("tcp://0.0.0.0:8787")  # doctest: +SKIP
    >>> await center.finished()                 # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        security=None,
        heartbeat_interval: float | None = None,
        heartbeat_timeout: float | None = None,
        contact_address: str | None = None,
        dashboard_address: str | int | None = None,
        client_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        name=None,
        limits=None,
    ):
        if heartbeat_interval is None:
            heartbeat_interval = config.get("timeouts.heartbeat_interval")
        if heartbeat_timeout is None:
            heartbeat_timeout = config.get("timeouts.heartbeat_timeout")
        if not heartbeat_interval > 0:
            raise ValueError(f"heartbeat_interval must be positive, got {heartbeat_interval!r}")
        if not heartbeat_timeout > heartbeat_interval:
            raise ValueError(
                f"heartbeat_timeout ({heartbeat_timeout!r}s) must be larger than "
                f"heartbeat_interval ({heartbeat_interval!r}s), or healthy workers "
                f"would be dropped between two heartbeats"
            )
        self.contact_address = None if contact_address is None else _normalize(contact_address)
        self.state = CenterState(clock=clock)
        #: published datasets and uploaded files (datasets.py, issue 10)
        self.datasets = Datasets(self.state)
        self.uploaded = UploadedFiles(config.get("center.max_upload_bytes"))
        #: task stream, cluster events and counters, in bounded buffers
        self.events = EventLog(
            task_events=config.get("dashboard.task_events"),
            cluster_events=config.get("dashboard.cluster_events"),
        )
        self.dashboard_address = dashboard_address
        #: the running :class:`~distributed_center.dashboard.Dashboard`, or None
        self.dashboard = None
        self.heartbeat_interval = float(heartbeat_interval)
        self.heartbeat_timeout = float(heartbeat_timeout)
        if client_timeout is None:
            client_timeout = config.get("timeouts.client_timeout")
        #: clients: registration, heartbeats, release of their data (issue 10)
        self.clients = ClientTracker(self, client_timeout)
        handlers = {
            "register": self.register,
            "unregister": self.unregister,
            "add_keys": self.add_keys,
            "remove_keys": self.remove_keys,
            "who_has": self.who_has,
            "has_what": self.has_what,
            "ncores": self.ncores,
            "nbytes": self.nbytes,
            "workers": self.workers,
            "delete_data": self.delete_data,
            "heartbeat": self.heartbeat,
            "versions": self.versions,
            "terminate": self.terminate,
            **self.clients.handlers,
            "publish_dataset": self.publish_dataset,
            "get_dataset": self.get_dataset,
            "list_datasets": self.list_datasets,
            "unpublish_dataset": self.unpublish_dataset,
            "upload_file": self.upload_file,
        }
        #: op -> handler(address, msg) for report-stream messages; a handler
        #: returning False ends the stream
        self.stream_handlers = {
            "add_keys": self._stream_add_keys,
            "remove_keys": self._stream_remove_keys,
            "heartbeat": self._stream_heartbeat,
            "unregister": self._stream_unregister,
            "task_events": self._stream_task_events,
        }
        # The center only handles metadata: it refuses pickled payloads even from
        # authenticated peers, so no peer can make it run code.
        super().__init__(handlers, security=security, name=name, limits=limits, allow_pickle=False)
        #: address -> the comm of that worker's report stream
        self.streams: dict[str, Any] = {}
        #: address -> what the worker's hello said about its versions (``versions`` op)
        self.worker_versions: dict[str, dict] = {}
        # Calls to workers (delete_data) give up after heartbeat_timeout: a
        # worker that does not answer for that long is about to be dropped.
        self._pool = ConnectionPool(
            security=security, connect_timeout=self.heartbeat_timeout, name=name
        )
        self._liveness_task: asyncio.Task | None = None
        #: address -> the task writing a heartbeat on its stream (one at a time)
        self._beats: dict[str, asyncio.Task] = {}
        self._last_check: float | None = None
        self._finished: asyncio.Event | None = None
        self._center_closing = False
        self._terminate_task: asyncio.Task | None = None

    def __repr__(self) -> str:
        address = getattr(self, "address", None)
        return (
            f"<Center {address or '(not listening)'} workers={self.state.n_workers} "
            f"keys={self.state.n_keys}>"
        )

    # ------------------------------------------------------------ lifecycle

    async def listen(self, address=0):
        """Listen on ``address`` (a port, or ``'tcp://host:port'``) and start
        watching worker liveness."""
        await super().listen(address)
        #: the address actually bound (``self.address`` is the advertised one)
        self.listen_address = self.address
        if self.contact_address is not None:
            scheme, host, port = parse_address(self.contact_address)
            self.address = unparse_address(scheme, host, port or self.port)
            logger.info(
                "Center listening at %s, advertised as %s", self.listen_address, self.address
            )
        if self._finished is None:
            self._finished = asyncio.Event()
        if self._liveness_task is None:
            self._liveness_task = asyncio.ensure_future(self._watch_liveness())
        if self.dashboard_address is not None and self.dashboard is None:
            from .dashboard import Dashboard

            self.dashboard = Dashboard(self)
            try:
                await self.dashboard.listen(self.dashboard_address)
            except BaseException:
                self.dashboard = None
                raise

    async def close(self):
        """Stop serving: drop the report streams, close connections."""
        if self._center_closing:
            if self._finished is not None:
                await self._finished.wait()
            return
        self._center_closing = True
        if self.dashboard is not None:
            await self.dashboard.close()
        if self._liveness_task is not None:
            self._liveness_task.cancel()
            try:
                await self._liveness_task
            except asyncio.CancelledError:
                pass
            self._liveness_task = None
        streams = list(self.streams.values())
        self.streams.clear()
        for comm in streams:
            comm.abort()
        beats = list(self._beats.values())
        for task in beats:
            task.cancel()
        await asyncio.gather(*beats, return_exceptions=True)
        await self.clients.close()
        await self._pool.close()
        await super().close()
        if self._finished is None:
            self._finished = asyncio.Event()
        self._finished.set()
        if self.address is not None:
            logger.info("Center at %s closed", self.address)

    async def finished(self):
        """Wait until the center has closed (e.g. after ``terminate``)."""
        if self._finished is None:
            self._finished = asyncio.Event()
        await self._finished.wait()

    # ------------------------------------------------------------- handlers

    async def register(
        self,
        comm,
        address,
        keys=(),
        ncores=1,
        name=None,
        nbytes=None,
        stream=False,
        resources=None,
    ):
        """Add (or refresh) a worker and the complete set of keys it holds.

        With ``stream=True`` (sent with ``reply=False``) the connection becomes
        the worker's report stream: the center answers once and then reads
        ``add_keys``/``remove_keys``/``heartbeat``/``unregister`` messages from
        it until it closes, which drops the worker. The answer is
        ``{'status': 'OK', 'heartbeat_interval': s, 'center_heartbeats': s}``:
        ``center_heartbeats`` (added for issue 8; absent from older centers)
        says that the center writes ``{'op': 'heartbeat'}`` on the stream every
        ``s`` seconds, so the worker may treat a silent stream as a vanished
        center.

        Registering an address again replaces the worker's entry and its
        whole key set (a worker never appears twice, and keys it lost while
        away are not listed); a new report stream replaces the old one, which
        the center closes.

        Issue 10: ``resources`` (``{name: amount}``, optional) is what the
        worker declared; a stream registration's answer carries ``uploads``
        (``[[filename, bytes], ...]``, when any) for the worker to install.
        """
        try:
            address = _normalize(address)
            new = self.state.register(
                address, keys=keys, ncores=ncores, name=name, nbytes=nbytes, resources=resources
            )
        except (TypeError, ValueError) as e:
            if not stream:
                raise
            # Sent with reply=False: the Server would not answer, so the
            # worker learns what was wrong from us, and the stream ends.
            logger.warning("Refused report stream from %s: %s", comm.peer_address, e)
            try:
                await comm.write(Failure.from_exception(e).to_reply())
            except CommClosedError:
                pass
            comm.abort()
            return None
        logger.info(
            "%s worker %s (name=%r, ncores=%s, keys=%d)%s",
            "Registered" if new else "Re-registered",
            address,
            name,
            ncores,
            len(self.state.has_what_map[address]),
            " with a report stream" if stream else "",
        )
        self.worker_versions[address] = _hello_versions(comm)
        if new:
            self.events.add("worker-joined", address, f"worker {address} joined (ncores={ncores})")
        reply = {"status": "OK", "heartbeat_interval": self.heartbeat_interval}
        if not stream:
            return reply
        reply["center_heartbeats"] = self.heartbeat_interval
        # Announces that this center takes ``task_events`` on the stream (added
        # for issue 11); workers send them only to centers that say so, and only
        # a center serving a dashboard asks for them (nobody else shows them).
        if self.dashboard_address is not None:
            reply["task_events"] = 1
        if self.uploaded.files:
            reply["uploads"] = self.uploaded.items()
        await self._serve_stream(comm, address, reply)

    def unregister(self, comm, address):
        """Forget a worker and its keys."""
        self._remove_worker(_normalize(address), "it unregistered")
        return "OK"

    def add_keys(self, comm, address, keys=(), nbytes=None):
        """Record that a worker now holds ``keys``."""
        self.state.add_keys(_normalize(address), keys, nbytes=nbytes)
        return "OK"

    def remove_keys(self, comm, address, keys=()):
        """Record that a worker no longer holds ``keys``."""
        self.state.remove_keys(_normalize(address), keys)
        return "OK"

    def who_has(self, comm, keys=None):
        """``{key: [worker addresses]}``, ``[]`` for a key nobody holds."""
        return self.state.who_has(keys)

    def has_what(self, comm, workers=None):
        """``{worker: [keys]}``, ``[]`` for an unknown worker."""
        return self.state.has_what(_normalize_many(workers))

    def ncores(self, comm, workers=None):
        """``{worker: ncores}``, ``0`` for an unknown worker."""
        return self.state.ncores(_normalize_many(workers))

    def nbytes(self, comm, keys=None):
        """``{key: nbytes}`` for the keys whose size is known."""
        return self.state.nbytes(keys)

    def workers(self, comm):
        """``{worker: {'name', 'ncores', 'nkeys', 'nbytes', 'last_seen', 'metrics'}}``."""
        return self.state.workers()

    async def delete_data(self, comm, keys):
        """Forget ``keys`` and tell every holder to delete them.

        Holders that cannot be reached (dead, hung) are logged and ignored;
        the keys are gone from the center's tables either way.
        """
        by_holder = self.state.delete_keys(keys)
        if by_holder:
            await asyncio.gather(*(self._tell_delete(a, ks) for a, ks in by_holder.items()))
        return "OK"

    # --------------------------------------------------- datasets and uploads (issue 10)

    def publish_dataset(self, comm, name, keys=(), data=b"", override=False):
        """Name ``keys`` with the client's opaque ``data``; the keys are pinned."""
        self.datasets.publish(name, keys, data, override=bool(override))
        return "OK"

    def get_dataset(self, comm, name):
        """``{'keys': [...], 'data': bytes}``; KeyError naming the known datasets."""
        return self.datasets.get(name)

    def list_datasets(self, comm=None):
        """The names of the published datasets, sorted."""
        return self.datasets.names()

    async def unpublish_dataset(self, comm, name):
        """Forget ``name`` and unpin its keys; returns the keys no longer pinned.

        The data stays on the workers while a registered client holds it;
        keys that no client holds any more are deleted now.
        """
        free = self.datasets.unpublish(name)
        orphans = self.state.unowned(free)
        if orphans:
            await self.delete_data(None, orphans)
        return free

    def upload_file(self, comm, filename, data):
        """Keep a file to give to every worker that registers from now on."""
        self.uploaded.add(filename, data)
        self.events.add("file-uploaded", None, f"file {filename} uploaded ({len(data)} bytes)")
        return "OK"

    def heartbeat(self, comm, address, **metrics):
        """Note that a worker is alive; ``'unknown-worker'`` if it must register again."""
        if self.state.heartbeat(_normalize(address), metrics):
            return "OK"
        return "unknown-worker"

    def versions(self, comm=None):
        """``{address: versions}`` of this center and of every registered worker.

        The center's entry is what ``identity`` reports under ``versions``; a
        worker's is what the hello of its registering connection said:
        ``{'distributed_core', 'protocol', 'python'}``. Added in 0.2.0.
        """
        result = {self.address: versions()}
        for address in self.state.workers_map:
            result[address] = dict(self.worker_versions.get(address, {}))
        return result

    def identity(self):
        """``{'type': 'Center', 'address', 'versions', 'workers', 'keys', ...}``.

        ``workers`` and ``keys`` are counts. (The ``identity`` op returns this.)
        """
        info = super().identity()
        info.update(
            type="Center",
            versions=versions(),
            workers=self.state.n_workers,
            keys=self.state.n_keys,
            heartbeat_interval=self.heartbeat_interval,
            heartbeat_timeout=self.heartbeat_timeout,
            clients=len(self.state.leases.clients),
            features=list(FEATURES),
        )
        return info

    def terminate(self, comm=None):
        """Reply ``'OK'``, then shut the center down."""
        logger.info("Center asked to terminate")
        if self._terminate_task is None:
            self._terminate_task = asyncio.ensure_future(self._close_soon())
        return "OK"

    # ------------------------------------------------------------ internals

    async def _close_soon(self):
        # Let the 'OK' reply of terminate reach the caller first.
        await asyncio.sleep(0.05)
        await self.close()

    async def _serve_stream(self, comm, address: str, reply: dict):
        old = self.streams.get(address)
        self.streams[address] = comm
        if old is not None and old is not comm:
            logger.info("Worker %s opened a new report stream; closing the old one", address)
            old.abort()
        reason = "its report stream closed"
        try:
            await comm.write(reply)
            while True:
                msg = await comm.read()
                if self.streams.get(address) is not comm:
                    reason = None  # replaced or dropped meanwhile: not ours to clean
                    break
                if not self._handle_stream_message(address, msg):
                    reason = "it unregistered"
                    break
        except (CommClosedError, OSError):
            pass
        except asyncio.CancelledError:
            reason = None
            raise
        finally:
            if self.streams.get(address) is comm:
                del self.streams[address]
                if reason is not None and not self._center_closing:
                    self._remove_worker(address, reason, close_stream=False)
            comm.abort()

    def _handle_stream_message(self, address: str, msg) -> bool:
        """Apply one report-stream message; return False when the stream ends."""
        if not isinstance(msg, dict):
            logger.warning(
                "Worker %s sent a %s on its report stream, expected a map; ignored",
                address,
                type(msg).__name__,
            )
            return True
        self.state.touch(address)
        op = msg.get("op")
        handler = self.stream_handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            logger.warning(
                "Worker %s sent unknown op %r on its report stream (expected one of %s); ignored",
                address,
                op,
                ", ".join(STREAM_OPS),
            )
            return True
        try:
            return handler(address, msg) is not False
        except (TypeError, ValueError) as e:
            logger.warning("Worker %s sent a bad %r on its report stream: %s", address, op, e)
            return True

    def _stream_add_keys(self, address: str, msg: dict) -> None:
        self.state.add_keys(address, msg.get("keys", ()), nbytes=msg.get("nbytes"))
        tasks = msg.get("tasks")  # task events riding on the batch (task_events announced)
        if tasks:
            self.events.add_task_events(address, tasks)
        self.clients.added(address, msg)

    def _stream_remove_keys(self, address: str, msg: dict) -> None:
        self.state.remove_keys(address, msg.get("keys", ()))

    def _stream_heartbeat(self, address: str, msg: dict) -> None:
        metrics = {k: v for k, v in msg.items() if k not in ("op", "address", "reply")}
        self.state.heartbeat(address, metrics)

    def _stream_unregister(self, address: str, msg: dict) -> bool:
        return False

    def _stream_task_events(self, address: str, msg: dict) -> None:
        self.events.add_task_events(address, msg.get("events", ()))

    def _remove_worker(self, address: str, reason: str, close_stream: bool = True):
        known = address in self.state.workers_map
        lost = self.state.unregister(address)
        self.worker_versions.pop(address, None)
        if known:
            kind = "worker-left" if reason == "it unregistered" else "worker-dropped"
            self.events.add(
                kind, address, f"worker {address} removed: {reason}", lost_keys=len(lost)
            )
            logger.info(
                "Removed worker %s (%s); %d keys now have no holder",
                address,
                reason,
                len(lost),
            )
        comm = self.streams.pop(address, None)
        if comm is not None and close_stream:
            comm.abort()

    async def _watch_liveness(self):
        period = self.heartbeat_interval / 4
        while True:
            await asyncio.sleep(period)
            try:
                self.check_liveness()
            except Exception:  # never let the watchdog die
                logger.exception("Error while checking worker liveness")

    def check_liveness(self) -> tuple[list[str], list[str]]:
        """One liveness round; returns ``(workers dropped, workers sent a heartbeat)``.

        Runs every ``heartbeat_interval / 4`` seconds. Drops the workers
        silent for ``heartbeat_timeout``, then writes a heartbeat on the
        report stream of every worker that was not sent one for
        ``heartbeat_interval``. When more than ``heartbeat_interval`` passed
        since the previous round, the center itself was paused (SIGSTOP, a
        frozen VM, a blocked loop): that time is not counted against the
        workers (:meth:`CenterState.excuse`), whose messages are still unread
        in the sockets. Synchronous, so tests drive it with a fake clock.
        """
        now = self.state.clock()
        if self._last_check is not None:
            gap = now - self._last_check
            if gap > self.heartbeat_interval:
                logger.warning(
                    "Center was paused for %.1fs (no liveness check ran); not counting "
                    "that against the workers",
                    gap,
                )
                self.state.excuse(gap)
        self._last_check = now
        dropped = self.state.stale_workers(self.heartbeat_timeout)
        for address in dropped:
            self._remove_worker(address, f"nothing heard for {self.heartbeat_timeout:g}s")
        self.clients.check()
        beaten = []
        for address in self.state.heartbeats_due(self.heartbeat_interval):
            comm = self.streams.get(address)
            if comm is None or address in self._beats:
                continue  # no stream (registered by rpc), or the last beat is still pending
            self.state.heartbeat_sent(address)
            task = asyncio.ensure_future(self._send_heartbeat(address, comm))
            self._beats[address] = task
            task.add_done_callback(lambda _t, a=address: self._beats.pop(a, None))
            beaten.append(address)
        return dropped, beaten

    async def _send_heartbeat(self, address: str, comm) -> None:
        """Write one heartbeat; a stream that does not take it within
        ``heartbeat_timeout`` (a vanished host, its buffer full) is closed,
        which drops the worker."""
        try:
            await asyncio.wait_for(comm.write(HEARTBEAT), self.heartbeat_timeout)
        except asyncio.TimeoutError:
            logger.warning(
                "Report stream of worker %s took no heartbeat for %gs; closing it",
                address,
                self.heartbeat_timeout,
            )
            comm.abort()
        except (CommClosedError, OSError):
            comm.abort()  # the read side notices and drops the worker

    async def _tell_delete(self, address: str, keys: list):
        timeout = self.heartbeat_timeout
        try:
            r = rpc(address, pool=self._pool)
            await asyncio.wait_for(r.delete_data(keys=keys, report=False), timeout)
        except Exception as e:  # noqa: BLE001 - any failure of a holder is ignored
            logger.info(
                "Could not tell %s to delete %d keys (%s: %s); ignored",
                address,
                len(keys),
                type(e).__name__,
                e,
            )


def versions() -> dict:
    """Versions of this center, for ``identity``."""
    return {
        "distributed_center": __version__,
        "distributed_core": distributed_core.__version__,
        "protocol": list(distributed_core.PROTOCOL_VERSION),
        "python": platform.python_version(),
    }


def _hello_versions(comm) -> dict:
    """The versions a peer's hello announced (``Comm.peer_info``); absent ones are left out."""
    hello = getattr(comm, "peer_info", None) or {}
    found = {}
    if hello.get("package") == "distributed-core" and isinstance(hello.get("version"), str):
        found["distributed_core"] = hello["version"]
    if isinstance(hello.get("protocol"), list):
        found["protocol"] = list(hello["protocol"])
    if isinstance(hello.get("python"), str):
        found["python"] = hello["python"]
    return found


def _normalize(address):
    """Canonical ``'tcp://host:port'`` form; type errors are left to the state checks."""
    if isinstance(address, str) and address:
        try:
            return normalize_address(address)
        except ValueError as e:
            raise ValueError(f"bad worker address: {e}") from None
    return address


def _normalize_many(workers):
    workers = check_workers(workers)
    return None if workers is None else [_normalize(w) for w in workers]
