"""Moving data: waiting for keys, gathering, scattering, deleting (part of Session).

Split from ``_session.py`` to keep each file to one job; :class:`DataMixin`
uses the session's state, connections and loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping

from distributed_core import Failure, WorkerPausedError, normalize_address

__all__ = ["DataMixin", "WorkerUnreachable", "as_exception"]

logger = logging.getLogger("distributed_client")


def as_exception(exc) -> BaseException:
    """The exception to raise for a stored task error (a Failure or an exception)."""
    if isinstance(exc, Failure):
        return exc.exception
    return exc


#: bytes of values asked of one worker in one get_data request (issue 9)
GATHER_BATCH_BYTES = 32 * 2**20


def _batches(keys: list, tasks: Mapping, limit: int) -> list[list]:
    """`keys` cut into runs of at most `limit` bytes (a larger value: alone).

    >>> class T:
    ...     def __init__(self, n): self.nbytes = n
    >>> _batches(["a", "b", "c", "d"], {"a": T(5), "b": T(5), "c": T(20), "d": T(1)}, 10)
    [['a', 'b'], ['c'], ['d']]
    """
    batches: list[list] = []
    current: list = []
    size = 0
    for key in keys:
        ts = tasks.get(key)
        n = (getattr(ts, "nbytes", 0) or 0) if ts is not None else 0
        if current and size + n > limit:
            batches.append(current)
            current, size = [], 0
        current.append(key)
        size += n
    if current:
        batches.append(current)
    return batches


class WorkerUnreachable(ConnectionError):
    """A request to a worker failed; ``sent`` tells whether it had been written."""

    def __init__(self, address: str, sent: bool, cause: BaseException):
        super().__init__(f"worker {address} failed: {cause}")
        self.address = address
        self.sent = sent


class DataMixin:
    """Data movement for :class:`~distributed_client._session.Session`."""

    # ------------------------------------------------------------------ waiting and gathering

    async def wait(self, keys: Iterable[Hashable]) -> None:
        """Until every key is in memory or erred (or forgotten)."""
        state_of = self.state.state_of
        pending = [k for k in keys if state_of(k) not in ("memory", "erred", None)]
        if not pending:
            return
        fut = self.loop.create_future()
        remaining = len(pending)

        def one_done(_key):
            nonlocal remaining
            remaining -= 1
            if remaining == 0 and not fut.done():
                fut.set_result(None)

        for k in pending:
            self._watchers[k].append(one_done)
        self._wait_futures.add(fut)
        try:
            await fut
        finally:
            self._wait_futures.discard(fut)

    def error_of(self, key: Hashable) -> BaseException | None:
        ts = self.state.tasks.get(key)
        if ts is not None and ts.state == "erred":
            return as_exception(ts.exception)
        return None

    async def gather(self, keys: Iterable[Hashable], errors: str = "raise") -> dict:
        """``{key: value}`` for keys this session holds; recomputes lost results.

        With ``errors='raise'`` the first failed key's exception is raised;
        with ``'return'`` the exception takes the value's place.
        """
        keys = list(dict.fromkeys(keys))
        unknown = [k for k in keys if k not in self.state.tasks]
        if unknown:
            raise KeyError(f"keys {unknown!r} are not known to this client")
        out: dict = {}
        todo = list(keys)
        while todo:
            await self.wait(todo)
            by_worker: dict[str, list] = defaultdict(list)
            for key in todo:
                ts = self.state.tasks.get(key)
                if ts is None:
                    raise KeyError(f"key {key!r} was released while being gathered")
                if ts.state == "erred":
                    exc = as_exception(ts.exception)
                    if errors == "raise":
                        raise exc
                    out[key] = exc
                    continue
                if ts.state != "memory":
                    continue  # lost meanwhile: wait again
                holders = ts.who_has
                w = next(iter(holders)) if len(holders) == 1 else random.choice(sorted(holders))
                by_worker[w].append(key)
            if len(by_worker) == 1:
                [(w, ks)] = by_worker.items()
                try:
                    results = [await self._get_data(w, ks)]
                except (WorkerUnreachable, Exception) as e:
                    results = [e]
            else:
                results = await asyncio.gather(
                    *(self._get_data(w, ks) for w, ks in by_worker.items()),
                    return_exceptions=True,
                )
            for (worker, ks), result in zip(by_worker.items(), results):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                if isinstance(result, WorkerUnreachable):
                    self._worker_failed(worker, blame=False)
                    continue
                if isinstance(result, BaseException):
                    raise result
                for k in ks:
                    if k in result:
                        v = result[k]
                        if isinstance(v, Failure):
                            exc = v.exception
                            if errors == "raise":
                                raise exc
                            v = exc
                        out[k] = v
                    else:
                        self.state.key_missing_on(k, worker)
            self._kick()
            todo = [k for k in todo if k not in out]
        return {k: out[k] for k in keys}

    async def _get_data(self, worker: str, keys: list) -> dict:
        """``get_data`` from one worker, in requests of at most `GATHER_BATCH_BYTES`
        (by the sizes the workers reported), one after the other: a worker with a
        memory limit then never has to load more than that from disk at once."""
        result: dict = {}
        for batch in _batches(keys, self.state.tasks, GATHER_BATCH_BYTES):
            result.update(
                await self._worker_call(
                    worker,
                    {"op": "get_data", "reply": True, "keys": batch, "allow_missing": True},
                )
            )
        return result

    async def who_has_from_center(self, keys: list) -> dict:
        return await self.center_call("who_has", keys=keys)

    async def track_remote_keys(self, keys: list, refs: Mapping | None = None, wants: bool = True):
        """Make keys that exist on the cluster (held by anyone) known to this session.

        `refs` optionally maps keys to the RemoteData/Futures naming them: when
        their own session (on this loop) knows the holders, those are used;
        otherwise the center is asked (a few times: a worker's report of a
        fresh key can reach it a little late). Raises KeyError naming the keys
        nobody holds.
        """
        new = [k for k in dict.fromkeys(keys) if k not in self.state.tasks]
        known = [k for k in keys if k not in new]
        who_has: dict = {}
        nbytes: dict = {}
        for k in new:
            other = getattr((refs or {}).get(k), "_session", None)
            if (
                other is not None
                and other is not self
                and not other.closed
                and other.loop is self.loop
            ):
                ts = other.state.tasks.get(k)
                if ts is not None and ts.state == "memory" and ts.who_has:
                    who_has[k] = sorted(ts.who_has)
                    nbytes[k] = ts.nbytes
        ask = [k for k in new if k not in who_has]
        for delay in (0.02, 0.1, 0.3, None):
            if not ask:
                break
            answer = await self.who_has_from_center(ask)
            for k in ask:
                if answer.get(k):
                    who_has[k] = answer[k]
            ask = [k for k in ask if k not in who_has]
            if ask and delay is not None:
                await asyncio.sleep(delay)
        if ask:
            raise KeyError(f"keys {ask!r} are not on the cluster at {self.center_address}")
        if any(w not in self.state.workers for ws in who_has.values() for w in ws):
            await self.refresh_workers()
        if new:
            self.state.add_data(
                {k: who_has[k] for k in new}, nbytes=nbytes, wants=wants, borrowed=True
            )
        if wants and known:
            self.state.want(known)
        self._kick()

    # ------------------------------------------------------------------ scatter

    async def scatter(
        self,
        data: Mapping,
        replicas: int = 1,
        workers: Iterable[str] | None = None,
        wants: bool = True,
        _paused_since: float | None = None,
    ) -> dict:
        """Put ``{key: value}`` on workers (round robin, `replicas` copies); ``{key: [workers]}``.

        A worker that is paused (memory above its pause fraction) refuses the
        data with `WorkerPausedError`: its share goes to the other workers; when
        every candidate is paused, the scatter waits with backoff (0.05 s
        doubling to 1 s) for one to resume, at most ``no_workers_timeout``
        seconds, then raises the `WorkerPausedError`.
        """
        self._check_open()
        if not data:
            return {}
        if not self.state.workers:
            await self.refresh_workers()
        if not self.state.workers:
            # NoWorkersError after no_workers_timeout
            await self.wait_for_workers(1, timeout=self.state.no_workers_timeout)
        pool = (
            sorted(workers)
            if workers is not None
            else sorted(self.state.workers, key=lambda w: (self.state.workers[w].load, w))
        )
        pool = [normalize_address(w) for w in pool]
        if not pool:
            raise ValueError("no workers to scatter to")
        replicas = max(1, min(int(replicas), len(pool)))
        plan: dict[str, dict] = defaultdict(dict)
        where: dict = {}
        start = random.randrange(len(pool))
        for i, (key, value) in enumerate(data.items()):
            ws = [pool[(start + i + r) % len(pool)] for r in range(replicas)]
            where[key] = ws
            for w in ws:
                plan[w][key] = value
        for key in data:
            pending = self._deleting.get(key)
            if pending is not None:
                await asyncio.shield(pending)
        results = await asyncio.gather(
            *(
                self._worker_call(
                    w, {"op": "update_data", "reply": True, "data": d, "report": True}
                )
                for w, d in plan.items()
            ),
            return_exceptions=True,
        )
        failed = []
        paused: list = []
        nbytes: dict = {}
        for w, r in zip(plan, results):
            if isinstance(r, WorkerUnreachable):
                failed.append(w)
                self._worker_failed(w, blame=False)
            elif isinstance(r, WorkerPausedError):
                paused.append((w, r))
            elif isinstance(r, BaseException):
                raise r
            else:
                nbytes.update(r.get("nbytes") or {})
        if paused:
            refused = {w for w, _ in paused}
            retry = {k: data[k] for k, ws in where.items() if all(w in refused for w in ws)}
            for k in where:
                where[k] = [w for w in where[k] if w not in refused]
            others = [w for w in pool if w not in refused and w not in failed]
            loop = asyncio.get_running_loop()
            now = loop.time()
            since = now if _paused_since is None else _paused_since
            bound = self.state.no_workers_timeout
            if retry and not others:
                waited = now - since
                if bound is not None and waited >= bound:
                    raise paused[0][1]
                delay = min(0.05 * 2 ** min(int(waited / 0.05).bit_length(), 5), 1.0)
                logger.info(
                    "every worker for %d keys is paused: retrying in %gs", len(retry), delay
                )
                await asyncio.sleep(delay)
                others = pool
            if retry:
                more = await self.scatter(
                    retry, replicas, others if workers is not None or others != pool else None,
                    wants=False, _paused_since=since,
                )  # fmt: skip
                where.update(more)
        if failed:
            # send what those workers should have held to the others
            retry = {k: data[k] for k, ws in where.items() if all(w in failed for w in ws)}
            for k in where:
                where[k] = [w for w in where[k] if w not in failed]
            if retry:
                more = await self.scatter(retry, replicas, None, wants=False)
                where.update(more)
        self.state.add_data({k: where[k] for k in data}, nbytes=nbytes, wants=wants)
        self._kick()
        return where

    # ------------------------------------------------------------------ deleting

    def _delete_soon(self, delete: Mapping) -> None:
        for key, holders in delete.items():
            self._to_delete.setdefault(key, set()).update(holders)
            if key not in self._deleting:
                self._deleting[key] = self.loop.create_future()
        if self._delete_task is None or self._delete_task.done():
            self._delete_task = asyncio.ensure_future(self._delete_loop())

    async def _delete_loop(self) -> None:
        await asyncio.sleep(0)  # let releases of the same moment join the batch
        while self._to_delete and not self.closed:
            batch, self._to_delete = self._to_delete, {}
            try:
                await self._delete(batch)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                logger.warning("deleting %d keys failed: %s", len(batch), e)
            finally:
                for key in batch:
                    fut = self._deleting.pop(key, None)
                    if fut is not None and not fut.done():
                        fut.set_result(None)

    async def _delete(self, batch: Mapping) -> None:
        by_worker: dict[str, list] = defaultdict(list)
        for key, holders in batch.items():
            for w in holders:
                by_worker[w].append(key)
        calls = [
            self._worker_call(w, {"op": "delete_data", "reply": True, "keys": ks, "report": True})
            for w, ks in by_worker.items()
        ]
        # the center also tells holders we do not know of (peers that fetched a copy)
        calls.append(self.center_call("delete_data", keys=list(batch)))
        results = await asyncio.gather(*calls, return_exceptions=True)
        for r in results:
            if isinstance(r, asyncio.CancelledError):
                raise r
            if isinstance(r, BaseException) and not isinstance(r, WorkerUnreachable):
                logger.info("delete_data failed: %s", r)
