"""The async driver's traffic: compute requests and replies, worker links, the center.

A mixin of :class:`~distributed_client._session.Session` (the fields it uses
are set there). It only moves messages: what to send comes from
:meth:`SchedulerState.assign`, replies go back into the state
(``task_finished``/``task_erred``/``task_missing_data``), reply timing goes
to :class:`~distributed_client._pipeline.PipelinePolicy`, and the worker
list comes from the center (``refresh_workers``; a worker seen failing is
not taken back for ``gone_grace`` seconds while the center still lists it).
Every wait is bounded (``connect_timeout``, ``center_timeout``,
``no_workers_timeout``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Hashable

from distributed_core import CommClosedError, Failure, HandshakeError

from ._data import WorkerUnreachable
from ._lanes import WorkerLink
from .errors import CenterTimeoutError, NoWorkersError

__all__ = ["DispatchMixin"]

logger = logging.getLogger("distributed_client")


class DispatchMixin:
    def _send_compute(self, worker: str, key: Hashable) -> None:
        ts = self.state.tasks.get(key)
        if ts is None or ts.state != "processing" or ts.processing_on != worker:
            return
        pending_delete = self._deleting.get(key)
        if pending_delete is not None:
            # an earlier copy of this key is being deleted: compute after that
            t = asyncio.ensure_future(self._send_after(pending_delete, worker, key))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
            return
        function, args, kwargs, needed = ts.spec
        msg = {"op": "compute", "function": function, "key": key, "args": args}
        if kwargs:
            msg["kwargs"] = kwargs
        ws = self.state.workers[worker]
        if needed:
            msg["needed"] = needed
            msg["who_has"] = self.state.dependency_hints(key)
            if self.pipeline.is_capable(worker):  # understands the issue-8 fields
                msg["keep_inputs"] = True
                if ts.pending:
                    msg["pending"] = list(ts.pending)
        link = self._links.get(worker)
        if link is None or link.closed:
            link = self._links[worker] = WorkerLink(
                worker,
                2 * ws.ncores + 2,
                on_failure=self._link_failed,
                on_connect=self._link_connected,
                security=self.security,
                connect_timeout=self.pool.connect_timeout,
                name=self.name,
                client=self.id,
            )
        on_reply = functools.partial(
            self._on_compute_reply, worker, key, msg.get("who_has"), self.loop.time()
        )
        link.send(msg, on_reply)

    async def _send_after(self, fut, worker, key) -> None:
        await asyncio.shield(fut)
        self._send_compute(worker, key)

    def _on_compute_reply(self, worker: str, key: Hashable, asked, sent: float, reply) -> None:
        self.pipeline.on_reply(worker, self.state.workers.get(worker), self.loop.time())
        if isinstance(reply, BaseException):
            # the request could not be sent (e.g. unpicklable arguments)
            self.state.task_erred(key, worker, reply)
        elif type(reply) is dict and reply.get("status") == "OK":
            result = reply.get("result")
            status = result.get("status") if type(result) is dict else None
            duration = result.get("duration") if type(result) is dict else None
            if isinstance(duration, (int, float)):
                ws = self.state.workers.get(worker)
                if ws is not None:
                    self.pipeline.on_round_trip(
                        ws, self.loop.time() - sent, duration, self.loop.time()
                    )
            if status == "OK":
                fetched = result.get("fetched")
                if type(fetched) is dict and fetched:
                    self.state.add_replicas(worker, fetched)
                self.state.task_finished(key, worker, result.get("nbytes") or 0)
            elif status == "error":
                self.state.task_erred(key, worker, result.get("exception"))
            elif status == "missing-data":
                logger.info("%r on %s: inputs %s missing", key, worker, result.get("keys"))
                missing = result.get("keys") or ()
                self.state.task_missing_data(key, worker, missing, asked or {})
                self._refresh_now.set()
            else:
                self.state.task_erred(
                    key, worker,
                    RuntimeError(f"unexpected compute reply from {worker}: {result!r:.200}"),
                )  # fmt: skip
        elif type(reply) is dict and reply.get("status") == "error":
            # the compute op itself refused the request (bad arguments)
            self.state.task_erred(key, worker, Failure.from_reply(reply))
        else:
            self.state.task_erred(
                key, worker, RuntimeError(f"unexpected reply from {worker}: {reply!r:.200}")
            )
        self._kick()

    def _link_connected(self, link: WorkerLink) -> None:
        if link.address in self.state.unreached:
            self.state.worker_reached(link.address)
            self._kick()

    def _link_failed(self, link: WorkerLink, sent: bool, cause: BaseException) -> None:
        if self._links.get(link.address) is link:
            del self._links[link.address]
        logger.info("connection to worker %s failed: %s", link.address, cause)
        self._worker_failed(link.address, blame=sent)

    async def _worker_call(self, address: str, msg: dict):
        """One request to a worker; raises WorkerUnreachable when the worker is gone."""
        try:
            comm = await self.pool.acquire(address)
        except (CommClosedError, OSError) as e:
            raise WorkerUnreachable(address, False, e) from e
        sent = False
        calls = self._calls[address]
        calls.add(comm)  # aborted by _worker_failed if the worker is gone meanwhile
        self._ensure_refresher()  # so that we hear of it from the center
        try:
            await comm.write(msg)
            sent = True
            response = await comm.read()
        except (CommClosedError, OSError) as e:
            self.pool.discard(comm)
            raise WorkerUnreachable(address, sent, e) from e
        except BaseException:
            self.pool.discard(comm)
            raise
        finally:
            calls.discard(comm)
            if not calls and self._calls.get(address) is calls:
                del self._calls[address]
        self.pool.release(comm)
        if type(response) is dict:
            status = response.get("status")
            if status == "OK":
                return response.get("result")
            if status == "error":
                Failure.from_reply(response).reraise()
        return response

    def _worker_failed(self, address: str, blame: bool = True) -> None:
        link = self._links.pop(address, None)
        if link is not None:
            link.close()
        if address in self.state.workers:
            self.pipeline.forget(address)
            ws = self.state.workers[address]
            busy = (ws.processing or ws.has) and not self.closed
            (logger.warning if busy else logger.info)("lost worker %s", address)
            self.state.remove_worker(address, blame=blame)
            self.pool.remove(address)
            self._refresh_now.set()
        for comm in self._calls.pop(address, ()):
            comm.abort()  # a gather or scatter waiting on it fails now, not never
        self._kick()

    # ------------------------------------------------------------------ workers

    async def refresh_workers(self, retry: bool = True) -> None:
        """Learn which workers the center knows (new ones join, missing ones are gone).

        Raises :class:`~distributed_client.CenterTimeoutError` after
        ``center_timeout`` seconds without an answer.
        """
        ncores = await self.center_call("ncores", retry=retry)
        if not isinstance(ncores, dict):
            raise TypeError(f"center at {self.center_address} answered ncores with {ncores!r:.100}")
        new, missing = self.state.center_lists(ncores)
        for address in new:
            logger.debug("worker %s (%s cores)", address, ncores[address])
            self._probe_soon(address)
        for address in missing:
            self._worker_failed(address, blame=True)
        if self.state.workers:
            self._workers_event.set()
        else:
            self._workers_event.clear()
        self._kick()

    def _probe_soon(self, address: str) -> None:
        """Ask a new worker which compute fields it understands (in the background)."""
        if self.loop is None or self.closed:
            return
        t = asyncio.ensure_future(self._probe(address))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _probe(self, address: str) -> None:
        """``identity`` of a new worker: its ``features`` enable ahead dispatch and replicas.

        Bounded by ``connect_timeout``; a worker that does not answer keeps
        the old protocol until a compute reply carries a ``duration`` (see
        `PipelinePolicy.on_round_trip`).
        """
        try:
            ident = await asyncio.wait_for(
                self._worker_call(address, {"op": "identity"}), self.connect_timeout
            )
        except asyncio.CancelledError:
            raise
        except Exception as e:
            logger.debug("identity of %s: %s", address, e)
            return
        features = ident.get("features") if isinstance(ident, dict) else None
        resources = ident.get("resources") if isinstance(ident, dict) else None
        if isinstance(resources, dict) and resources:
            try:  # what tasks with resources={...} may use there
                self.state.set_worker_resources(address, resources)
            except (TypeError, ValueError) as e:
                logger.warning(
                    "worker %s declared unusable resources %r: %s", address, resources, e
                )
            self._kick()
        ws = self.state.workers.get(address)
        if ws is not None and self.pipeline.on_identity(ws, features):
            self._kick()

    def _busy(self) -> bool:
        st = self.state
        return bool(
            st.unplaced
            or st.unplaced_urgent
            or st.isolated
            or st.unrunnable
            or st.processing_count()
            or self._calls  # a gather from a worker the center may drop meanwhile
        )

    def _ensure_refresher(self) -> None:
        t = self._refresh_task
        if (t is None or t.done()) and not self.closed:
            self._refresh_task = asyncio.ensure_future(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        """Keep the worker list fresh while there is work; ends when idle."""
        failures = 0
        idle = 0
        while not self.closed:
            if failures:
                interval = min(0.5 * 2**failures, 10)
            elif not self.state.workers and self._busy():
                interval = 0.1
            else:
                interval = self.refresh_interval
            try:
                await asyncio.wait_for(self._refresh_now.wait(), interval)
            except asyncio.TimeoutError:
                pass
            self._refresh_now.clear()
            if not self._busy():
                idle += 1
                if idle >= 2:
                    return  # restarted by the next piece of work
                continue
            idle = 0
            try:
                await self.refresh_workers()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failures += 1
                log = logger.warning if failures == 1 and not self.closed else logger.info
                log("could not refresh workers from %s: %s", self.center_address, e)

    async def wait_for_workers(self, n: int = 1, timeout: float | None = None) -> None:
        """Until the center lists `n` workers; NoWorkersError after `timeout` s."""
        start = self.loop.time()

        async def _wait():
            while True:
                await self.refresh_workers()
                if len(self.state.workers) >= n:
                    return
                await asyncio.sleep(0.05)

        try:
            await asyncio.wait_for(_wait(), timeout)
        except CenterTimeoutError:
            raise  # (a TimeoutError too) the center is silent, not the workers absent
        except asyncio.TimeoutError:
            raise NoWorkersError(self.center_address, self.loop.time() - start) from None

    async def center_call(self, op: str, *, retry: bool = True, **kwargs):
        """Call an op on the center; at most ``center_timeout`` seconds.

        A refused or broken connection is retried (with backoff) until the
        bound, so a center that restarts or heals within it is not noticed;
        after it, :class:`~distributed_client.CenterTimeoutError` names the
        center and the time waited. With ``retry=False`` a connection error
        is raised at once (the bound still applies to a silent center).
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + self.center_timeout
        delay = 0.05
        last: BaseException | None = None
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                return await asyncio.wait_for(self._center_rpc.call(op, **kwargs), remaining)
            except (CommClosedError, OSError) as e:  # TimeoutError is an OSError
                if loop.time() >= deadline:
                    break  # the bound (or a connect attempt that used it up)
                if not retry or isinstance(e, HandshakeError):
                    raise
                last = e
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, 1.0)
        raise CenterTimeoutError(self.center_address, loop.time() - start, op, last) from last
