"""The worker's report stream: one long-lived connection to the Center.

The worker registers over it (``register`` with ``stream=True``, carrying every
key it holds), then sends ``add_keys``/``remove_keys`` batches, heartbeats and,
on shutdown, ``unregister``; the Center never replies after the registration
answer and its heartbeats. When the stream closes (the Center restarted, or
dropped us after we were frozen by SIGSTOP), the worker reconnects with
backoff and registers again with all its keys, so nothing is lost.

A Center that vanishes without closing anything (a frozen VM, a pulled
cable, a partition) is noticed by its silence: a Center that announced
heartbeats in its registration answer (``center_heartbeats``, added for
issue 8) writes ``{'op': 'heartbeat'}`` on the stream every second or so;
when nothing at all arrived for ``heartbeat_timeout`` seconds the worker
aborts the stream, keeps its data, and reconnects as above. Older Centers
never heartbeat, so against them the stream is never timed out for
silence.

Before registering, the worker asks the peer for its ``identity`` and
refuses to register with something that is not a Center (a worker's
address given by mistake) with an error saying so.

Batching: store changes go into a `ReportBatch` and are written
``batch_interval`` seconds later, or at once when ``batch_size`` keys are
pending, so thousands of small results a second cost a few hundred stream
messages, not thousands of Center round trips.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping

from distributed_core import CommClosedError, ProtocolError, connect
from distributed_core.timeouts import DEFAULTS

from .batch import ReportBatch

__all__ = ["CenterStream", "NotACenterError", "RegistrationError", "silence_timeout"]

logger = logging.getLogger("distributed_worker.stream")

#: errors that mean "the Center could not be reached or went away"
CONNECTION_ERRORS = (CommClosedError, ProtocolError, OSError, asyncio.TimeoutError)

#: times `CenterStream.close` cancels its background tasks (0.5 s apart) before giving up
CLOSE_CANCEL_ROUNDS = 10

#: task events kept while the Center does not take them fast enough; older ones are kept,
#: newer ones dropped (and counted in ``events_dropped``)
MAX_PENDING_EVENTS = 10_000


class RegistrationError(ConnectionError):
    """The Center answered our registration with something other than OK,
    or the address is not a Center's."""


class NotACenterError(RegistrationError):
    """The address given as the Center's is a worker's (its ``identity`` says so)."""


#: ``register`` fields sent only to a Center whose ``identity`` lists them
#: under ``features`` (issue 10: ``resources``)
OPTIONAL_REGISTER_FIELDS = ("resources",)


def silence_timeout(reply: dict, heartbeat_timeout: float | None) -> float | None:
    """How long the stream may stay silent before the Center counts as gone.

    ``None`` (wait forever) when the Center's registration ``reply`` does not
    announce heartbeats (centers before issue 8) or when ``heartbeat_timeout``
    is None; otherwise ``heartbeat_timeout``, but never less than twice the
    announced interval, so a Center heartbeating more slowly than we expect
    is not taken for a dead one.

    >>> silence_timeout({"status": "OK", "center_heartbeats": 1.0}, 5.0)
    5.0
    >>> silence_timeout({"status": "OK", "center_heartbeats": 4.0}, 5.0)
    8.0
    >>> silence_timeout({"status": "OK", "heartbeat_interval": 1.0}, 5.0) is None
    True
    """
    interval = reply.get("center_heartbeats")
    if heartbeat_timeout is None or isinstance(interval, bool):
        return None
    if not isinstance(interval, (int, float)) or not interval > 0:
        return None
    return max(float(heartbeat_timeout), 2.0 * interval)


class CenterStream:
    """Registration, batched key reports and heartbeats to one Center.

    Parameters
    ----------
    center
        the Center's address.
    info
        returns the registration fields that are not keys
        (``address``, ``ncores``, ``name``).
    snapshot
        returns ``(keys, {key: nbytes})`` of everything held now.
    metrics
        returns the fields sent with each heartbeat.
    security
        a `distributed_core.Security`, or None.
    heartbeat_interval
        seconds between heartbeats; None uses the interval
        the Center asks for; a value larger than the Center's is lowered to it.
    heartbeat_timeout
        when the Center announced heartbeats, a stream on which nothing
        arrived for this many seconds counts as lost (the Center vanished):
        it is aborted and the worker reconnects. None never times out.
        Default ``DEFAULTS.heartbeat_timeout`` (5 s); see `silence_timeout`.
    batch_interval, batch_size
        flush pending reports after this many seconds,
        or as soon as this many keys are pending.
    connect_timeout
        how long one registration attempt (connect, handshake, identity
        check, registration answer) may take. Default
        ``DEFAULTS.connect_timeout`` (5 s).
    backoff
        (first, largest) delay between reconnection attempts, seconds.
    """

    def __init__(
        self,
        center: str,
        *,
        info: Callable[[], dict],
        snapshot: Callable[[], tuple[list, dict]],
        metrics: Callable[[], dict] = dict,
        on_registered: Callable[[dict], None] | None = None,
        security=None,
        heartbeat_interval: float | None = None,
        heartbeat_timeout: float | None = DEFAULTS.heartbeat_timeout,
        batch_interval: float = 0.005,
        batch_size: int = 1000,
        connect_timeout: float = DEFAULTS.connect_timeout,
        backoff: tuple[float, float] = (0.05, 2.0),
    ) -> None:
        self.center = center
        self._info = info
        self._snapshot = snapshot
        self._metrics = metrics
        self._on_registered = on_registered
        #: what the Center's ``identity`` listed under ``features`` (issue 10)
        self.center_features: frozenset = frozenset()
        self.security = security
        self.requested_heartbeat_interval = heartbeat_interval
        self.heartbeat_interval = heartbeat_interval or 1.0
        self.heartbeat_timeout = heartbeat_timeout
        #: silence after which the current stream counts as lost (None: never)
        self.silence_timeout: float | None = None
        #: how many times the Center was given up for silence
        self.silences = 0
        self.batch_interval = batch_interval
        self.batch = ReportBatch(batch_size)
        self.connect_timeout = connect_timeout
        self.backoff = backoff
        self.registrations = 0  # successful registrations so far
        #: whether the Center takes ``task_events`` (its register reply says so)
        self.task_events = False
        #: task and transfer events not yet sent, at most MAX_PENDING_EVENTS
        self.events: list = []
        self.events_dropped = 0
        self.comm = None  # the registered stream, or None while reconnecting
        self._write_lock = asyncio.Lock()
        self._pending = asyncio.Event()  # something is in the batch
        self._full = asyncio.Event()  # the batch is full: flush now
        self._registered = asyncio.Event()  # set while self.comm is registered
        self._waiters: list[tuple[int, asyncio.Future]] = []
        self._tasks: list[asyncio.Task] = []
        self._closing = False

    def __repr__(self) -> str:
        state = "registered" if self.comm is not None else "not registered"
        return f"<CenterStream to {self.center}, {state}>"

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Register for the first time, then keep the stream up in the background.

        Raises `CommClosedError` (or `RegistrationError`) if the Center cannot
        be reached within ``connect_timeout``.
        """
        await self._register()
        self._tasks = [
            asyncio.ensure_future(self._supervise()),
            asyncio.ensure_future(self._flush_loop()),
            asyncio.ensure_future(self._heartbeat_loop()),
        ]

    async def close(self, unregister: bool = True) -> None:
        """Stop reporting; with `unregister`, tell the Center we are leaving."""
        if self._closing:
            return
        self._closing = True
        pending = set(self._tasks)
        for _ in range(CLOSE_CANCEL_ROUNDS if pending else 0):
            # Cancel again if a task swallowed its cancellation (a cancel that
            # lands as an inner wait_for completes is lost on Python < 3.12):
            # close must never wait forever on its own background tasks.
            for task in pending:
                task.cancel()
            done, pending = await asyncio.wait(pending, timeout=0.5)
            for task in done:  # retrieve what they raised, as gather did
                if not task.cancelled():
                    task.exception()
            if not pending:
                break
        if pending:
            logger.warning("report stream tasks did not stop when cancelled: %s", pending)
        comm, self.comm = self.comm, None
        self._registered.clear()
        if comm is not None:
            if unregister:
                try:
                    async with self._write_lock:
                        await asyncio.wait_for(comm.write({"op": "unregister"}), 2)
                except CONNECTION_ERRORS as e:
                    logger.info("could not unregister from %s: %s", self.center, e)
            await comm.close()
        for _, fut in self._waiters:
            if not fut.done():
                fut.cancel()
        self._waiters = []

    # -- reports ---------------------------------------------------------------

    def add(self, nbytes: Mapping, client: str | None = None) -> None:
        """Report that the keys of `nbytes` (``{key: size}``) are now held
        (for `client`, a client's id, when given: see `ReportBatch`)."""
        self.batch.add(nbytes, client)
        self._wake()

    def remove(self, keys) -> None:
        """Report that `keys` are no longer held."""
        self.batch.remove(keys)
        self._wake()

    def task_done(self, event: list) -> None:
        """Queue one task event (``[key, start, stop, thread, status, nbytes]``) or
        transfer event (``['transfer', peer, nkeys, nbytes, start, stop]``) for the
        Center's dashboard; sent with the next batch. Dropped when more than
        ``MAX_PENDING_EVENTS`` are waiting (a Center that does not keep up)."""
        if len(self.events) < MAX_PENDING_EVENTS:
            self.events.append(event)
        else:
            self.events_dropped += 1
        self._pending.set()

    def _wake(self) -> None:
        if len(self.batch):
            self._pending.set()
            if self.batch.full:
                self._full.set()

    async def flush(self) -> None:
        """Write everything pending to the stream now (no-op when disconnected).

        While disconnected the batch is kept; the next registration replaces it
        with a full snapshot of the store.
        """
        self._pending.clear()
        self._full.clear()
        comm = self.comm
        if comm is None or not (len(self.batch) or self.events):
            return
        messages = self.batch.take()
        if self.events:
            # Ride on the add_keys message when there is one (one message less for
            # both sides per batch); otherwise a task_events message of their own.
            adds = next((m for m in messages if m["op"] == "add_keys"), None)
            if adds is not None:
                adds["tasks"] = self.events
            else:
                messages.append({"op": "task_events", "events": self.events})
            self.events = []
        await self._write(comm, messages)

    async def wait_registered(self, after: int, timeout: float | None = None) -> None:
        """Wait until registration number ``after + 1`` (or a later one) succeeded."""
        if self.registrations > after:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((after, fut))
        await asyncio.wait_for(fut, timeout)

    # -- internals ---------------------------------------------------------------

    async def _write(self, comm, messages: list) -> bool:
        """Write `messages` on `comm` in order; on failure drop the stream."""
        try:
            async with self._write_lock:
                for msg in messages:
                    await comm.write(msg)
            return True
        except CONNECTION_ERRORS as e:
            logger.info("report stream to %s broke while writing: %s", self.center, e)
            comm.abort()  # wakes _supervise, which reconnects
            return False

    async def _register(self) -> None:
        """One registration attempt, bounded by ``connect_timeout`` in all."""
        try:
            comm, response, keys = await asyncio.wait_for(
                self._register_attempt(), self.connect_timeout
            )
        except asyncio.TimeoutError:
            raise CommClosedError(
                f"center at {self.center} did not complete our registration within "
                f"{self.connect_timeout:g}s (connect_timeout)"
            ) from None
        self._registered_with(comm, response, keys)

    async def _register_attempt(self):
        comm = await connect(
            self.center,
            timeout=self.connect_timeout,
            security=self.security,
            name="worker-stream",
        )
        try:
            await self._check_is_center(comm)
            # Snapshot and clear the batch with no await in between: changes
            # after this point are in the batch and are sent after the
            # registration, on the same ordered stream.
            keys, nbytes = self._snapshot()
            self.batch.clear()
            info = self._info()
            for field in OPTIONAL_REGISTER_FIELDS:
                if field not in self.center_features:
                    info.pop(field, None)  # an older Center would refuse the registration
            msg = {
                "op": "register",
                "reply": False,
                "stream": True,
                **info,
                "keys": keys,
                "nbytes": nbytes,
            }
            await comm.write(msg)
            response = await comm.read()
        except BaseException:
            comm.abort()
            raise
        if not isinstance(response, dict) or response.get("status") != "OK":
            comm.abort()
            detail = response.get("message", response) if isinstance(response, dict) else response
            raise RegistrationError(f"center at {self.center} refused to register us: {detail}")
        return comm, response, keys

    async def _check_is_center(self, comm) -> None:
        """Raise `RegistrationError` if the peer says it is a worker, not a Center."""
        await comm.write({"op": "identity", "reply": True})
        reply = await comm.read()
        ident = reply.get("result") if isinstance(reply, dict) else None
        if not isinstance(ident, dict):
            return  # an unusual server; the registration answer will tell
        features = ident.get("features")
        self.center_features = frozenset(
            f for f in (features if isinstance(features, list) else ()) if isinstance(f, str)
        )
        kind = ident.get("type")
        if kind == "Worker" or (kind != "Center" and "center" in ident):
            center = ident.get("center")
            of = f" of the center at {center}" if isinstance(center, str) else ""
            raise NotACenterError(
                f"{self.center} is a worker{of}, not a center: give the center's "
                f"address (the one dcenter prints as 'Start center at ...')"
            )

    def _registered_with(self, comm, response: dict, keys: list) -> None:
        self._set_heartbeat_interval(response.get("heartbeat_interval"))
        self.silence_timeout = silence_timeout(response, self.heartbeat_timeout)
        self.task_events = bool(response.get("task_events"))
        if not self.task_events:
            self.events = []
        if self._on_registered is not None:
            try:
                self._on_registered(response)  # e.g. install uploaded files, first thing
            except Exception:
                logger.exception("handling the registration reply failed")
        self.comm = comm
        self.registrations += 1
        self._registered.set()
        self._wake()
        waiters, self._waiters = self._waiters, []
        for after, fut in waiters:
            if fut.done():
                continue
            if self.registrations > after:
                fut.set_result(None)
            else:
                self._waiters.append((after, fut))
        logger.info(
            "registered with center at %s with %d keys (registration %d)",
            self.center,
            len(keys),
            self.registrations,
        )

    def _set_heartbeat_interval(self, center_interval) -> None:
        ours = self.requested_heartbeat_interval
        if isinstance(center_interval, (int, float)) and center_interval > 0:
            self.heartbeat_interval = min(ours, center_interval) if ours else center_interval
        else:
            self.heartbeat_interval = ours or 1.0

    async def _supervise(self) -> None:
        """Watch the stream; when it closes, reconnect with backoff and re-register."""
        first, largest = self.backoff
        delay = first
        while not self._closing:
            comm = self.comm
            if comm is None:
                try:
                    await self._register()
                except CONNECTION_ERRORS + (RegistrationError,) as e:
                    logger.info(
                        "cannot reach center at %s (%s); retrying in %.2fs", self.center, e, delay
                    )
                    await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                    delay = min(delay * 2, largest)
                    continue
                delay = first
                comm = self.comm
            await self._watch(comm)
            if self.comm is comm:
                self.comm = None
                self._registered.clear()
            if not self._closing:
                logger.warning("lost the report stream to center at %s; reconnecting", self.center)

    async def _watch(self, comm) -> None:
        """Return once `comm` is closed, or silent for `silence_timeout` (then
        abort it). The Center sends only heartbeats on it."""
        timeout = self.silence_timeout
        while True:
            try:
                msg = await asyncio.wait_for(comm.read(), timeout)
            except asyncio.TimeoutError:
                self.silences += 1
                logger.warning(
                    "center at %s sent nothing for %gs (heartbeat_timeout): treating it as "
                    "gone; keeping our data and reconnecting",
                    self.center,
                    timeout,
                )
                comm.abort()
                return
            except CONNECTION_ERRORS:
                comm.abort()
                return
            except Exception as e:  # undecodable content; the stream is still usable
                logger.warning("unexpected content from center at %s: %s", self.center, e)
                continue
            if not (isinstance(msg, dict) and msg.get("op") == "heartbeat"):
                logger.debug("ignoring message from center on the report stream: %r", msg)

    async def _flush_loop(self) -> None:
        while True:
            await self._pending.wait()
            if not self.batch.full:
                try:
                    await asyncio.wait_for(self._full.wait(), self.batch_interval)
                except asyncio.TimeoutError:
                    pass
            await self.flush()
            if self.comm is None:
                # Nothing can be sent until we are registered again; the new
                # registration clears the batch and carries every key.
                await self._registered.wait()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            comm = self.comm
            if comm is None:
                continue
            try:
                metrics = self._metrics()
            except Exception:
                logger.exception("collecting heartbeat metrics failed")
                metrics = {}
            await self._write(comm, [{"op": "heartbeat", **metrics}])
