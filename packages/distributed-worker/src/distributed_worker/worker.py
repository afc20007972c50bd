"""`Worker`: holds data, runs functions on it, fetches missing inputs from peers.

The I/O around the pure parts: `DataStore` (store.py), `substitute`
(substitute.py), `fetch_from_peers` (fetch.py) and the report stream to the
Center (stream.py).

Ops served (see docs/dev/contracts.md)::

    compute(function, key, args=(), kwargs=None, needed=(), who_has=None, report=True,
            pending=(), keep_inputs=False)
        -> {'status': 'OK', 'key', 'nbytes', 'type', 'duration', ['fetched']}
         | {'status': 'error', 'key', 'exception': Failure, 'duration'}
         | {'status': 'missing-data', 'key', 'keys': [...]}
    get_data(keys, allow_missing=False) -> {key: value}
    update_data(data, report=True)      -> {'keys': [...], 'nbytes': {key: n}}
    delete_data(keys, report=True)      -> 'OK'
                                           (update_data raises WorkerPausedError while paused)
    keys()                              -> [key, ...]
    identity()                          -> {'type': 'Worker', 'address', 'center', ...}
    upload_file(filename, data, load=True) -> {'filename', 'modules': [...]}
    terminate()                         -> 'OK', then the worker unregisters and closes
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import platform
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil

import distributed_core
from distributed_core import (
    ConnectionPool,
    Failure,
    Server,
    WorkerPausedError,
    config,
    dumps,
    normalize_address,
    parse_address,
    parse_resources,
    rpc,
    unparse_address,
)
from distributed_core.timeouts import DEFAULTS

from ._version import __version__
from .ahead import LocalArrivals
from .fetch import FetchTimeoutError, fetch_from_peers
from .memory import DEFAULT_FRACTIONS, MemoryPolicy, parse_fraction, parse_memory_limit
from .resources import ResourcePool
from .store import DataStore, check_key, check_keys, sizeof
from .stream import CenterStream
from .substitute import substitute
from .uploads import Uploads

__all__ = ["Worker"]

logger = logging.getLogger("distributed_worker.worker")


_MISSING = object()  # a shared fetch ended without the key (cancelled or failed): retry
_LOST = object()  # a shared fetch ended with the key missing: nobody could provide it


class Worker(Server):
    """A worker node: a `distributed_core.Server` serving the worker ops.

    >>> async def main(center_address):
    ...     async with Worker(center_address, ncores=2) as w:  # doctest: +SKIP
    ...         await w.start("tcp://127.0.0.1:0")
    ...         await w.finished()

    Parameters
    ----------
    center
        the Center's address (``'tcp://host:port'``, ``'host:port'``).
    ncores
        threads that run computations (default: the number of CPUs).
    name
        a name shown by the Center (default: none).
    security
        a `distributed_core.Security` used for listening, for the
        Center and for peers.
    heartbeat_interval
        seconds between heartbeats (default: what the Center
        asks for; never more than that).
    heartbeat_timeout
        a Center that heartbeats (issue 8 and later) and from which nothing
        arrived for this many seconds counts as gone: the worker keeps its
        data, reconnects with backoff and registers again with every key.
        Default ``DEFAULTS.heartbeat_timeout`` (5 s); None disables it.
    contact_address
        the address to register and print when it differs from the one
        listened on (NAT, containers, a relay); port 0 means the bound port.
        Default: the listening address, where ``0.0.0.0``/``::`` become the
        local address that routes to the Center (`route_to`).
    connect_timeout
        how long one attempt to reach and register with the Center may take
        (at start-up, and each reconnection attempt). Default
        ``timeouts.connect_timeout`` of :mod:`distributed_core.config` (5 s); also
        the bound on each ``who_has`` call to the Center during a fetch
        (connecting included) and on `update_data`'s wait for the Center's
        acknowledgement.
    peer_connect_timeout
        how long connecting to a peer may take before the
        next holder of a key is tried (refused connections are retried until
        then, so this bounds the cost of a dead holder in a ``who_has`` hint;
        a holder that accepts the connection but never answers the hello
        fails after it too).
    fetch_timeout
        seconds a holder may take to answer ``get_data`` (default
        ``timeouts.fetch_timeout`` of the configuration, 10 s); after it the
        holder counts as failed for that fetch and other holders, then the
        Center, are asked (issue 8: a holder whose host vanished sends
        nothing). A key nobody can provide makes `compute` reply
        ``missing-data``.

        .. versionadded:: 0.1.1
    batch_interval, batch_size
        add/remove reports are sent this many seconds
        after a change, or as soon as this many keys are pending.
    limits
        `distributed_core.Limits` on incoming messages.
    memory_limit
        bytes this worker may use (an int, or a string: ``'4GiB'``,
        ``'500MB'``, a fraction of the machine ``'0.5'``, ``'auto'``); None
        (default): no limit, nothing is spilled, the worker never pauses.
        See docs/memory.md.
    memory_target_fraction, memory_spill_fraction, memory_pause_fraction, memory_terminate_fraction
        fractions of `memory_limit` (defaults 0.6, 0.7, 0.8, 0.95; None or
        False disables one): managed bytes above *target* go to disk, least
        recently used first; process memory (RSS) above *spill* moves values
        to disk until it is below *target*; above *pause* the worker starts
        no new task and refuses new data (`WorkerPausedError`) until it is
        below again; above *terminate* a nanny restarts the worker (the
        worker itself only logs it).
    local_directory
        where the spill directory is made (a temporary directory inside it,
        removed when the worker closes). Default: the system's temporary
        directory.
    memory_monitor_interval
        seconds between two measurements of the process memory (RSS) for
        spill and pause, and between two checks of `death_timeout`.
        Default 0.1.
    death_timeout
        seconds after which a worker that lost its Center (and could not
        register again) closes by itself, setting ``death`` to a reason.
        None (default): it keeps trying to reconnect forever.
    resources
        abstract resources this worker offers, ``{"GPU": 2, "MEM": 8e9}`` or
        ``"GPU=2,MEM=8e9"`` (default: the ``worker.resources`` configuration
        key, else none). Reported by ``identity`` and to the Center; clients
        place tasks that ask for resources only where they are free.

        .. versionadded:: 0.2.0

    .. versionadded:: 0.2.0
       memory limits, spilling, pausing, ``death_timeout``.
    """

    def __init__(
        self,
        center,
        *,
        ncores: int | None = None,
        name: str | None = None,
        security=None,
        heartbeat_interval: float | None = None,
        heartbeat_timeout: float | None = DEFAULTS.heartbeat_timeout,
        contact_address: str | None = None,
        connect_timeout: float | None = None,
        peer_connect_timeout: float = 3.0,
        fetch_timeout: float | None = None,
        batch_interval: float = 0.005,
        batch_size: int = 1000,
        limits=None,
        memory_limit=None,
        memory_target_fraction=DEFAULT_FRACTIONS["target"],
        memory_spill_fraction=DEFAULT_FRACTIONS["spill"],
        memory_pause_fraction=DEFAULT_FRACTIONS["pause"],
        memory_terminate_fraction=DEFAULT_FRACTIONS["terminate"],
        local_directory: str | None = None,
        memory_monitor_interval: float = 0.1,
        death_timeout: float | None = None,
        resources=None,
    ) -> None:
        handlers = {
            "compute": self.compute,
            "get_data": self.get_data,
            "update_data": self.update_data,
            "delete_data": self.delete_data,
            "keys": self.keys,
            "identity": self._identity_op,
            "terminate": self.terminate,
            "upload_file": self.upload_file,
        }
        super().__init__(handlers, security=security, name=name, limits=limits)
        if connect_timeout is None:
            connect_timeout = config.get("timeouts.connect_timeout")
        if fetch_timeout is None:
            fetch_timeout = config.get("timeouts.fetch_timeout")
        self.center = normalize_address(center)
        if ncores is not None and (not isinstance(ncores, int) or ncores < 1):
            raise ValueError(f"ncores must be a positive integer, got {ncores!r}")
        self.ncores = ncores or os.cpu_count() or 1
        if resources is None:
            resources = config.get("worker.resources")
        #: ``{name: amount}`` this worker offers (``--resources``)
        self.resources: dict[str, float] = parse_resources(resources) or {}
        self.resource_pool = ResourcePool(self.resources)  # held by running tasks
        #: files shipped by ``upload_file`` (uploads.py)
        self.uploads = Uploads(local_directory)
        if heartbeat_interval is not None and heartbeat_interval <= 0:
            raise ValueError(f"heartbeat_interval must be positive, got {heartbeat_interval!r}")
        self.connect_timeout = connect_timeout
        self.contact_address = (
            None if contact_address is None else normalize_address(contact_address)
        )
        self.memory_policy = MemoryPolicy(
            parse_memory_limit(memory_limit),
            target=parse_fraction("target", memory_target_fraction),
            spill=parse_fraction("spill", memory_spill_fraction),
            pause=parse_fraction("pause", memory_pause_fraction),
            terminate=parse_fraction("terminate", memory_terminate_fraction),
        )
        self.memory_limit = self.memory_policy.limit
        if not memory_monitor_interval > 0:
            raise ValueError(
                f"memory_monitor_interval must be positive, got {memory_monitor_interval!r}"
            )
        if death_timeout is not None and not death_timeout > 0:
            raise ValueError(f"death_timeout must be positive or None, got {death_timeout!r}")
        self.memory_monitor_interval = memory_monitor_interval
        self.death_timeout = death_timeout
        #: why the worker closed by itself (death_timeout), else None
        self.death: str | None = None
        policy = self.memory_policy
        spills = policy.limit is not None and (
            policy.target is not None or policy.spill is not None
        )
        self.store = DataStore(
            target=(policy.target_bytes or float("inf")) if spills else None,
            local_directory=local_directory,
        )
        self.paused = False
        self._running = asyncio.Event()  # set while not paused (or closing)
        self._running.set()
        self._rss = 0
        self._monitor_task: asyncio.Task | None = None
        self._center_lost_at: float | None = None
        self._terminate_warned = False
        self.executor = ThreadPoolExecutor(self.ncores, thread_name_prefix="dworker-compute")
        self.pool = ConnectionPool(  # to peers
            security=self.security, connect_timeout=peer_connect_timeout, name=name or "worker"
        )
        self.center_rpc = rpc(
            self.center, security=self.security, connect_timeout=connect_timeout, name=name
        )
        self.stream = CenterStream(
            self.center,
            info=self._register_info,
            on_registered=self._on_registered,
            snapshot=self.store.snapshot,
            metrics=self._metrics,
            security=self.security,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            batch_interval=batch_interval,
            batch_size=batch_size,
            connect_timeout=connect_timeout,
        )
        if (
            isinstance(fetch_timeout, bool)
            or not isinstance(fetch_timeout, (int, float))
            or not fetch_timeout > 0
        ):
            raise ValueError(
                f"fetch_timeout must be a positive number of seconds, got {fetch_timeout!r}"
            )
        self.fetch_timeout = fetch_timeout
        self._fetching: dict = {}  # key -> future of a fetch in progress
        self.arrivals = LocalArrivals()  # wake-ups for computes sent ahead (ahead.py)
        self._executing = 0  # computations running in the thread pool
        self._process = psutil.Process()
        self._closed = asyncio.Event()
        self._close_task: asyncio.Task | None = None

    def __repr__(self) -> str:
        return (
            f"<Worker {self.address or 'not listening'} center={self.center} "
            f"keys={len(self.store)} ncores={self.ncores}>"
        )

    # -- lifecycle ---------------------------------------------------------------

    def default_address(self) -> str:
        """The address other nodes can reach this worker at, with port 0: the
        local address of the interface that routes to the Center (no packet
        is sent), with the Center's scheme (``tls`` if it uses TLS).

        .. versionchanged:: 0.2.0
           `start` no longer listens here but on all interfaces, and
           advertises this address.
        """
        scheme, host, _ = parse_address(self.center)
        return unparse_address(scheme, route_to(host), 0)

    def listen_everywhere_address(self) -> str:
        """All interfaces of the Center's address family, any port:
        ``tcp://0.0.0.0:0`` (``tcp://[::]:0`` for an IPv6 Center)."""
        scheme, host, _ = parse_address(self.center)
        return unparse_address(scheme, "::" if ":" in host else "0.0.0.0", 0)

    async def listen(self, address=0) -> None:
        """Listen on `address`; ``self.address`` is then the address to advertise.

        That is ``contact_address`` when given, else the bound address, where
        ``0.0.0.0``/``::`` are replaced by `default_address`'s host.
        ``self.listen_address`` keeps the bound one.
        """
        await super().listen(address)
        self.listen_address = self.address
        scheme, host, port = parse_address(self.address)
        if self.contact_address is not None:
            cscheme, chost, cport = parse_address(self.contact_address)
            self.address = unparse_address(cscheme, chost, cport or port)
        else:
            requested = address if isinstance(address, int) else parse_address(address)[1]
            if isinstance(requested, int) or requested in ("0.0.0.0", "::", ""):
                self.address = unparse_address(
                    scheme, route_to(parse_address(self.center)[1]), port
                )
        if self.address != self.listen_address:
            logger.info(
                "worker listening at %s, advertised as %s", self.listen_address, self.address
            )

    async def start(self, address=None) -> Worker:
        """Listen (on `address`, or on all interfaces) and register with the Center.

        Raises `OSError` when the address cannot be bound and
        `distributed_core.CommClosedError` when the Center cannot be reached
        within ``connect_timeout``.

        .. versionchanged:: 0.2.0
           Without `address`, listens on all interfaces (it listened on
           `default_address` only) and advertises `default_address`.
        """
        await self.listen(self.listen_everywhere_address() if address is None else address)
        await self.register()
        return self

    async def register(self) -> None:
        """Register with the Center and start the report stream (after `listen`)."""
        if self.address is None:
            raise RuntimeError("call listen() before register()")
        try:
            await self.stream.start()
        except BaseException:
            await self.close(unregister=False)
            raise
        if self._monitor_task is None:
            self._monitor_task = asyncio.ensure_future(self._monitor())

    async def close(self, unregister: bool = True) -> None:
        """Unregister from the Center (unless told not to), stop serving, free threads."""
        if self._closing:
            await self._closed.wait()
            return
        logger.info("worker %s closing", self.address)
        await super().close()  # sets _closing, stops serving
        await self.stream.close(unregister=unregister)
        await self.center_rpc.close_rpc()
        await self.pool.close()
        self._running.set()  # computes waiting for a resume end now
        if self._monitor_task is not None and self._monitor_task is not asyncio.current_task():
            self._monitor_task.cancel()
            await asyncio.gather(self._monitor_task, return_exceptions=True)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.store.close()  # removes the spill directory
        self.uploads.close()
        self._closed.set()

    async def finished(self) -> None:
        """Wait until the worker is closed (e.g. by the ``terminate`` op)."""
        await self._closed.wait()

    async def __aenter__(self) -> Worker:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- ops -------------------------------------------------------------------------

    async def compute(
        self,
        comm,
        function=None,
        key=None,
        args=(),
        kwargs=None,
        needed=(),
        who_has=None,
        report=True,
        pending=(),
        keep_inputs=False,
        resources=None,
    ) -> dict:
        """Run ``function(*args, **kwargs)`` with needed keys replaced by their data.

        The result is stored under `key` and reported to the Center; the
        reply carries its size and type, never the value.

        Needed keys not held here are fetched from peers (the `who_has` hint,
        then the Center). Every wait in that fetch is bounded: each holder by
        ``peer_connect_timeout`` to connect and ``fetch_timeout`` to answer,
        the Center by ``connect_timeout``; a holder that fails is not asked
        again in the same fetch. Keys nobody could provide give
        ``{'status': 'missing-data', 'key': key, 'keys': [...]}``. With one
        vanished holder in the hint that reply comes after about
        ``fetch_timeout`` (``peer_connect_timeout`` if it had no open
        connection to it), never a hang.

        .. versionchanged:: 0.1.1
           Peer fetches are bounded by ``fetch_timeout``; a failing Center
           ``who_has`` gives ``missing-data`` instead of an error.

        Issue 8 (ahead dispatch): `pending` names needed keys whose computes
        were sent to this worker too (maybe on another connection, so maybe
        not arrived yet); they are waited for here (`LocalArrivals`, at most
        ``fetch_timeout``), not fetched. With `keep_inputs` (and `report`),
        inputs fetched from peers are kept as replicas, reported to the
        Center and listed in the reply (``'fetched': {key: nbytes}``), so
        later fetches can use this worker (the client then deletes them with
        the key).
        Issue 10: when the connection's hello names a client (``"client"``),
        the result is reported to the Center as that client's, so the Center
        can release it when the client leaves, even if it finishes after.
        Replies carry ``'duration'``: seconds spent running the function
        (the client sizes its pipeline from it; a worker that sends it
        understands `pending`).

        Issue 10: with `resources` (``{"GPU": 1}``; only sent to workers whose
        ``identity`` lists the ``resources`` feature) the function runs once
        that much of this worker's declared resources is free, holding it
        while it runs (resources.py); more than the worker declares raises.
        """
        if not callable(function):
            raise TypeError(
                f"compute: function must be callable, got {type(function).__name__}: "
                f"{function!r:.100}"
            )
        check_key(key)
        if args is None:
            args = ()
        if not isinstance(args, (list, tuple)):
            raise TypeError(f"compute: args must be a list or tuple, got {type(args).__name__}")
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, dict) or not all(type(k) is str for k in kwargs):
            raise TypeError(f"compute: kwargs must be a dict with str keys, got {kwargs!r:.100}")
        needed = check_keys(needed if needed is not None else (), "needed")
        need = self.resource_pool.check(resources) if resources else {}
        if who_has is not None and not isinstance(who_has, dict):
            raise TypeError(
                f"compute: who_has must be a dict {{key: [addresses]}}, got "
                f"{type(who_has).__name__}"
            )

        inputs = {k: self.store[k] for k in needed if k in self.store}
        missing = [k for k in dict.fromkeys(needed) if k not in inputs]
        if missing and pending:
            local = set(check_keys(pending, "pending")).intersection(missing)
            lost = await self.arrivals.wait(local, self.store.__contains__, self.fetch_timeout)
            if lost:
                self.arrivals.stored(key, ok=False)
                return {"status": "missing-data", "key": key, "keys": lost}
            inputs.update(self.store.get(local, allow_missing=True))
            missing = [k for k in missing if k not in inputs]
        replicas = {}
        if missing:
            fetched, lost = await self._fetch(missing, who_has)
            if lost:
                logger.warning("compute %r: no worker could provide %s", key, lost)
                self.arrivals.stored(key, ok=False)
                return {"status": "missing-data", "key": key, "keys": lost}
            inputs.update(fetched)
            if keep_inputs and report:
                replicas = self._keep_replicas(fetched)

        failed = next((v for v in inputs.values() if isinstance(v, Failure)), None)
        value = failed  # an input errored: so does this result
        duration = 0.0
        if failed is None:
            if not self._running.is_set():  # paused: start no new task until resumed
                await self._running.wait()
                if self._closing:
                    raise RuntimeError(f"worker {self.address} is closing; {key!r} not run")
            held = await self.resource_pool.acquire(need)
            self._executing += 1
            try:
                (
                    value,
                    duration,
                    start,
                    stop,
                    thread,
                ) = await asyncio.get_running_loop().run_in_executor(
                    self.executor,
                    _timed_run,
                    function,
                    substitute(args, inputs),
                    substitute(kwargs, inputs),
                    key,
                )
            finally:
                self._executing -= 1
                self.resource_pool.release(held)
        if self._closing:
            raise RuntimeError(f"worker {self.address} is closing; result {key!r} dropped")
        nbytes = self.store.put(key, value)
        self.arrivals.stored(key)
        self._after_store(nbytes)
        if report:
            self.stream.add({key: nbytes}, client_of(comm))
        if failed is None and self.stream.task_events:
            status = "error" if isinstance(value, Failure) else "OK"
            self.stream.task_done([key, start, stop, thread, status, nbytes])
        if isinstance(value, Failure):
            return {"status": "error", "key": key, "exception": value, "duration": duration}
        reply = {"status": "OK", "key": key, "nbytes": nbytes, "type": _type_name(value)}
        reply["duration"] = duration
        if replicas:
            reply["fetched"] = replicas
        return reply

    def _keep_replicas(self, fetched: dict) -> dict:
        """Keep inputs fetched from peers, reported; ``{key: nbytes}`` of those newly held."""
        nbytes = {k: self.store.put(k, v) for k, v in fetched.items() if k not in self.store}
        if nbytes:
            self.stream.add(nbytes)
        return nbytes

    def get_data(self, comm, keys=None, allow_missing=False) -> dict:
        """``{key: value}`` for `keys`; a stored error comes back as its `Failure`."""
        return self.store.get(keys, allow_missing=allow_missing)

    async def update_data(self, comm, data=None, report=True) -> dict:
        """Store `data`; with `report`, return only once the Center lists the keys.

        How: the additions go on the report stream (so they stay ordered after
        any earlier removal of the same keys), the stream is flushed, and then
        one ``add_keys`` request to the Center confirms them. If the stream is
        down, the next registration (which carries every key held) confirms
        them instead. Keys sent by a client (its id in the hello) are
        reported as that client's (issue 10), like `compute` results.
        """
        if self.paused and data:
            raise WorkerPausedError(
                f"worker {self.address} is paused: its memory ({_fmt(self._rss)}) is above "
                f"its pause fraction ({self.memory_policy.pause}) of memory_limit "
                f"{_fmt(self.memory_limit)}; it refuses new data until memory drops: retry "
                f"later or send the data to another worker"
            )
        nbytes = self.store.update(data)
        self._after_store(sum(nbytes.values()))
        if report and nbytes:
            await self._confirm(nbytes, client_of(comm))
        return {"keys": list(nbytes), "nbytes": nbytes}

    def delete_data(self, comm, keys=None, report=True) -> str:
        """Drop `keys` (keys not held are ignored); with `report`, tell the Center."""
        keys = check_keys(keys)
        self.store.delete(keys)
        if report and keys:
            self.stream.remove(keys)
        return "OK"

    def keys(self, comm) -> list:
        """The keys held."""
        return self.store.keys()

    def identity(self) -> dict:
        """Address, Center, name, threads, number of keys, bytes held, memory use."""
        return {
            "type": "Worker",
            "address": self.address,
            "center": self.center,
            "name": self.name,
            "ncores": self.ncores,
            "keys": len(self.store),
            "nbytes": self.store.total_nbytes,
            "memory": self._memory(),
            **self.memory_metrics(),
            "registered": self.stream.comm is not None,
            "resources": dict(self.resources),
            # compute fields this worker understands beyond the first release's
            "features": ["pending", "keep_inputs", "client", "resources"],
            "versions": {
                "distributed-worker": __version__,
                "distributed-core": distributed_core.__version__,
                "protocol": list(distributed_core.PROTOCOL_VERSION),
                "python": platform.python_version(),
            },
        }

    def _identity_op(self, comm) -> dict:
        return self.identity()

    def upload_file(self, comm, filename=None, data=None, load=True) -> dict:
        """Write a ``.py``/``.zip``/``.egg``/``.pyz`` file here, put it on
        ``sys.path`` and (re)import its modules (uploads.py); a file that does not
        compile or import raises that error. Added for issue 10."""
        modules = self.uploads.install(filename, data, load=load)
        return {"filename": filename, "modules": modules}

    def _register_info(self) -> dict:
        info = {"address": self.address, "ncores": self.ncores, "name": self.name}
        if self.resources:
            info["resources"] = dict(self.resources)  # sent to centers that take it
        return info

    def _on_registered(self, reply: dict) -> None:
        """Install the files the Center keeps for workers that join (issue 10)."""
        uploads = reply.get("uploads")
        if not isinstance(uploads, list):
            return
        for item in uploads:
            try:
                filename, data = item
                self.uploads.install(filename, data)
            except Exception as e:  # noqa: BLE001 - one bad file must not stop the worker
                logger.error(
                    "could not install uploaded file %r: %s: %s", item[:1], type(e).__name__, e
                )

    def terminate(self, comm) -> str:
        """Reply OK, then unregister and shut down."""
        if self._close_task is None:
            loop = asyncio.get_running_loop()
            # after this handler's reply has been written
            loop.call_soon(self._start_close)
        return "OK"

    def _start_close(self) -> None:
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self.close())

    # -- helpers -----------------------------------------------------------------------

    async def _fetch(self, keys: list, who_has) -> tuple[dict, list]:
        """Fetch `keys` from peers, sharing fetches already in flight.

        A key another compute is already fetching is not fetched twice: this
        one waits for that key, which arrives as soon as its holder answers
        (not when the whole other fetch ends), or when that fetch ends; it is
        bounded like any fetch (and started earlier, so it ends sooner than a
        new one would). If it ends with the key missing, the key is missing
        here too (no second round against the same silent holders); only if
        it was cancelled or failed does this compute fetch the key itself.
        """
        loop = asyncio.get_running_loop()
        ours = [k for k in keys if k not in self._fetching]
        theirs = {k: self._fetching[k] for k in keys if k in self._fetching}
        futures = {k: loop.create_future() for k in ours}
        self._fetching.update(futures)
        data: dict = {}
        lost: list = []
        try:
            if ours:
                data, lost = await fetch_from_peers(
                    ours,
                    who_has,
                    ask_center=self._ask_center,
                    get_data=self._get_from_peer,
                    self_address=self.address,
                    on_fetched=lambda k, v: _resolve(futures[k], v),
                )
        finally:
            gone = set(lost)
            for k, fut in futures.items():
                if self._fetching.get(k) is fut:
                    del self._fetching[k]
                _resolve(fut, data[k] if k in data else _LOST if k in gone else _MISSING)
        for k, fut in theirs.items():
            value = await asyncio.shield(fut)
            if value is _LOST:
                lost.append(k)
            elif value is _MISSING:
                # the other fetch was cancelled or failed: try ourselves
                more, more_lost = await self._fetch([k], who_has)
                data.update(more)
                lost.extend(more_lost)
            else:
                data[k] = value
        return data, lost

    async def _ask_center(self, keys: list) -> dict:
        """The Center's ``who_has`` for `keys`, bounded by ``connect_timeout``.

        The Center may be the one that vanished: the call (connecting
        included) fails with `asyncio.TimeoutError` after ``connect_timeout``
        seconds and its connection is discarded; `fetch_from_peers` then
        reports the keys no other holder has as missing.
        """
        try:
            return await asyncio.wait_for(
                self.center_rpc.who_has(keys=keys), timeout=self.connect_timeout
            )
        except asyncio.TimeoutError:
            raise asyncio.TimeoutError(
                f"the center at {self.center} did not answer who_has within "
                f"connect_timeout={self.connect_timeout}s"
            ) from None

    async def _get_from_peer(self, address: str, keys: list) -> dict:
        """``get_data`` from the holder at `address`, bounded in time.

        Connecting is bounded by ``peer_connect_timeout`` (the pool's); the
        reply by ``fetch_timeout`` of silence (rpc's ``idle_timeout``): a
        holder that sends no byte for that long fails with `FetchTimeoutError`
        and its connection is discarded (the holder counts as failed), while a
        large transfer that keeps flowing is never cut.
        """
        peer = rpc(address, pool=self.pool, idle_timeout=self.fetch_timeout)
        start = time.time()
        try:
            result = await peer.get_data(keys=keys, allow_missing=True)
        except (asyncio.TimeoutError, TimeoutError) as e:
            raise FetchTimeoutError(address, keys, self.fetch_timeout) from e
        if not isinstance(result, dict):
            raise TypeError(f"get_data from {address} returned {type(result).__name__}")
        if self.stream.task_events:
            nbytes = sum(sizeof(v) for v in result.values())
            self.stream.task_done(["transfer", address, len(result), nbytes, start, time.time()])
        return result

    async def _confirm(self, nbytes: dict, client: str | None = None) -> None:
        """Return once the Center lists the keys of `nbytes` for this worker.

        Bounded by ``connect_timeout`` in all: flushing the report stream, the
        ``add_keys`` call and the wait for a re-registration each get what is
        left of it (a Center that stopped answering does not hold the caller
        longer); then `TimeoutError` says the data is stored but unconfirmed.
        """
        self.stream.add(nbytes, client)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        while True:
            seen = self.stream.registrations
            if self.stream.comm is not None:
                reply = None
                try:
                    # shielded: a timed-out flush keeps writing in the background
                    # rather than leaving a report half-written on the stream
                    await asyncio.wait_for(
                        asyncio.shield(self.stream.flush()), max(deadline - loop.time(), 0)
                    )
                    # keys only: their sizes went on the stream just before, in
                    # batches (a map of every key would cost the center memory
                    # for good: msgpack interns map keys; issue 10)
                    reply = await asyncio.wait_for(
                        self.center_rpc.add_keys(address=self.address, keys=list(nbytes)),
                        max(deadline - loop.time(), 0),
                    )
                except asyncio.TimeoutError:
                    logger.info(
                        "add_keys to %s got no reply within connect_timeout=%ss",
                        self.center,
                        self.connect_timeout,
                    )
                except Exception as e:  # center gone or does not know us (yet)
                    logger.info("add_keys to %s failed: %s", self.center, e)
                if reply == "OK":
                    return
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(
                    f"the data is stored on {self.address}, but the center at {self.center} "
                    f"did not acknowledge it within {self.connect_timeout}s; "
                    f"is the center running?"
                )
            try:
                # a new registration carries every key held, these included
                await self.stream.wait_registered(after=seen, timeout=left)
                return
            except asyncio.TimeoutError:
                continue

    def _memory(self) -> int:
        try:
            return self._process.memory_info().rss
        except psutil.Error:
            return 0

    def memory_metrics(self, rss: int | None = None) -> dict:
        """``memory_managed`` (bytes of values in memory), ``memory_unmanaged``
        (RSS minus those), ``memory_spilled`` (bytes of values on disk, as
        measured in memory), ``memory_limit`` (None: no limit), ``paused``."""
        rss = self._memory() if rss is None else rss
        mem = self.store.memory()
        return {
            "memory_managed": mem["managed"],
            "memory_unmanaged": max(0, rss - mem["managed"]),
            "memory_spilled": mem["spilled"],
            "memory_limit": self.memory_limit,
            "paused": self.paused,
        }

    def _metrics(self) -> dict:
        rss = self._memory()
        return {
            "nkeys": len(self.store),
            "nbytes": self.store.total_nbytes,
            "memory": rss,
            "executing": self._executing,
            **self.memory_metrics(rss),
        }

    # -- memory and liveness -------------------------------------------------------

    async def _monitor(self) -> None:
        """Every ``memory_monitor_interval``: spill and pause by RSS, check death_timeout."""
        while not self._closing:
            try:
                self.check_memory()
                self._check_center()
            except Exception:  # never stop watching
                logger.exception("memory monitor failed")
            await asyncio.sleep(self.memory_monitor_interval)

    def _after_store(self, nbytes: int) -> None:
        """After storing a large value, check the memory now, not at the next
        round of the monitor: a fast stream of results must not overshoot."""
        if self.memory_limit is not None and nbytes >= self._check_threshold:
            self.check_memory()

    @property
    def _check_threshold(self) -> int:
        return max(1 << 20, self.memory_limit // 100)

    def check_memory(self) -> str:
        """One round of the memory policy; returns the action taken."""
        policy = self.memory_policy
        if policy.limit is None:
            return "ok"
        rss = self._rss = self._memory()
        action = "ok"
        if policy.spill is not None and self.store.spill is not None:
            # values may use what target leaves after the unmanaged memory (the
            # interpreter, libraries, buffers of tasks): re-measured each round
            target = policy.target_bytes or policy.bytes_at(policy.spill)
            unmanaged = max(0, rss - self.store.memory()["managed"])
            self.store.set_target(max(target - unmanaged, self._check_threshold))
        if policy.over_spill(rss):
            goal = policy.spill_goal(rss)
            freed = 0
            while freed < goal:
                n = self.store.evict()
                if not n:
                    break
                freed += n
            if freed:
                action = "spill"
                _trim_memory()
                logger.info(
                    "memory %s above spill fraction of %s: moved %s to disk",
                    _fmt(rss), _fmt(policy.limit), _fmt(freed),
                )  # fmt: skip
                rss = self._rss = self._memory()
        if policy.should_pause(rss):
            action = "pause"
            if not self.paused:
                self.paused = True
                self._running.clear()
                logger.warning(
                    "worker %s paused: memory %s above pause fraction %s of %s",
                    self.address, _fmt(rss), policy.pause, _fmt(policy.limit),
                )  # fmt: skip
        elif self.paused:
            self.paused = False
            self._running.set()
            logger.warning("worker %s resumed: memory %s", self.address, _fmt(rss))
        terminate = policy.bytes_at(policy.terminate)
        if terminate is not None and rss > terminate and not self._terminate_warned:
            self._terminate_warned = True
            logger.error(
                "memory %s above terminate fraction %s of %s: a nanny restarts this worker",
                _fmt(rss), policy.terminate, _fmt(policy.limit),
            )  # fmt: skip
        return action

    def _check_center(self) -> None:
        if self.death_timeout is None or self._closing:
            return
        now = asyncio.get_running_loop().time()
        if self.stream.comm is not None:
            self._center_lost_at = None
            return
        if self._center_lost_at is None:
            self._center_lost_at = now
        elif now - self._center_lost_at > self.death_timeout:
            self.death = (
                f"the center at {self.center} has been gone for more than "
                f"death_timeout={self.death_timeout}s"
            )
            logger.error("worker %s closing: %s", self.address, self.death)
            self._start_close_unregistered()

    def _start_close_unregistered(self) -> None:
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self.close(unregister=False))


def _libc_trim():
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_malloc_trim = _libc_trim() if platform.system() == "Linux" else None


def _trim_memory() -> None:
    """Give freed heap memory back to the OS (glibc keeps it otherwise), so the
    RSS the memory policy measures drops once values moved to disk."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _fmt(n) -> str:
    if n is None:
        return "none"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def client_of(comm) -> str | None:
    """The client id the peer's hello named (issue 10), or None.

    The Center is told which client a stored key is for (``add_keys`` with
    ``client``), so that it can release the key when that client leaves.
    """
    client = (getattr(comm, "peer_info", None) or {}).get("client")
    return client if isinstance(client, str) and client else None


def _resolve(fut: asyncio.Future, value) -> None:
    if not fut.done():
        fut.set_result(value)


def _timed_run(function, args, kwargs, key):
    """`_run` with its start and stop time (``time.time()``, for the task stream)
    and the thread's name: ``(value, duration, start, stop, thread)``."""
    start = time.time()
    value, duration = _run(function, args, kwargs, key)
    return value, duration, start, time.time(), threading.current_thread().name


def _run(function, args, kwargs, key):
    """Run in a compute thread: ``(value, seconds it ran)``; the value is a `Failure`
    if the function raised or its result cannot be sent."""
    start = time.perf_counter()
    try:
        value = function(*args, **kwargs)
    except BaseException as e:  # SystemExit from user code must not stop the worker
        return Failure.from_exception(e), time.perf_counter() - start
    duration = time.perf_counter() - start
    return _sendable(function, value, key), duration


def _sendable(function, value, key):
    """`value`, or a `Failure` saying why it cannot be sent."""
    try:
        _check_sendable(value)
    except Exception as e:
        name = getattr(function, "__name__", repr(function))
        try:
            raise TypeError(
                f"the result of {name} for key {key!r} is a {_type_name(value)}, which cannot "
                f"be sent over the network ({type(e).__name__}: {e}); return a picklable "
                f"value instead (not a lock, generator, open file or socket)"
            ) from e
        except TypeError as te:
            return Failure.from_exception(te)
    return value


_SCALARS = frozenset({type(None), bool, int, float, complex, str, bytes, bytearray})


def _check_sendable(value) -> None:
    """Raise if `value` cannot be serialized (cheap for scalars and plain arrays)."""
    typ = type(value)
    if typ in _SCALARS:
        return
    if typ.__module__ == "numpy" and typ.__name__ == "ndarray" and not value.dtype.hasobject:
        return
    dumps(value)  # large buffers go out of band: no copy


def _type_name(value) -> str:
    typ = type(value)
    mod = typ.__module__
    return typ.__qualname__ if mod == "builtins" else f"{mod}.{typ.__qualname__}"


def route_to(host: str) -> str:
    """The local IP address that routes to `host`, without sending a packet.

    A UDP socket "connected" to `host` (no packet is sent for a UDP
    connect) names the local address the kernel would use. Loopback and
    unspecified hosts give loopback (``127.0.0.1``, ``::1`` for IPv6).

    .. versionchanged:: 0.2.0
       IPv6 hosts give the IPv6 address that routes to them.
    """
    v6 = ":" in host
    loopback = "::1" if v6 else "127.0.0.1"
    family = socket.AF_INET6 if v6 else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, None, family, socket.SOCK_DGRAM)
        ip = infos[0][4][0]
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except (OSError, IndexError, ValueError):
        return loopback
    if addr.is_loopback or addr.is_unspecified:
        return loopback
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((infos[0][4][0], 9, *infos[0][4][2:]))  # no packet is sent for UDP connect
            return s.getsockname()[0].split("%", 1)[0]
        except OSError:
            return loopback
