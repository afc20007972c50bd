"""Fetch a compute's missing inputs directly from the workers that hold them.

For each key the worker uses the client's ``who_has`` hint when there is one,
else asks the Center. It fetches from one holder per key (holders chosen at
random, keys for the same holder in one ``get_data`` call, holders in
parallel), and when a holder fails or no longer has the key, tries the next
one; when the hints are used up it asks the Center. A key that nobody can
provide is reported missing.

The Center learns about new keys a few milliseconds late (reports are
batched), so a key the Center lists nowhere is asked for again a few times
over ``missing_retry_delays`` before it is called missing.

Bounds (issue 8: a holder whose host vanished sends nothing, not even a
FIN). This module is the retry policy only; each wait is bounded by the
functions passed in (the `Worker` bounds ``get_data`` by ``fetch_timeout``
and the Center's ``who_has`` by ``connect_timeout``). Given that, a fetch
ends in bounded time: a holder that raised (timed out, refused, errored) is
never asked again within the same fetch, whatever the key; each key is asked
of each distinct holder at most once; the Center is asked at most
``1 + len(missing_retry_delays)`` times, and once it fails it is not asked
again (the keys nobody else has are then missing). With one vanished holder
in the hint, the cost is one ``get_data`` bound plus a few quick Center
calls.

.. versionchanged:: 0.1.1
   A failed ``who_has`` call to the Center reports the keys missing instead
   of failing the compute; `FetchTimeoutError` names a holder that did not
   answer in time.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping

__all__ = ["FetchTimeoutError", "fetch_from_peers"]

logger = logging.getLogger("distributed_worker.fetch")

MISSING_RETRY_DELAYS = (0.01, 0.05, 0.15)


class FetchTimeoutError(asyncio.TimeoutError):
    """A holder did not answer ``get_data`` within the worker's ``fetch_timeout``.

    The holder counts as failed for the rest of that fetch: its keys are
    asked of other holders, then of the Center. A subclass of
    `asyncio.TimeoutError` (the builtin `TimeoutError` from Python 3.11).

    .. versionadded:: 0.1.1
    """

    def __init__(self, address: str, keys, timeout: float):
        keys = list(keys)
        shown = ", ".join(map(repr, keys[:5])) + (", ..." if len(keys) > 5 else "")
        super().__init__(
            f"{address} sent no reply to get_data for {len(keys)} key(s) ({shown}) within "
            f"fetch_timeout={timeout}s; it counts as failed for this fetch"
        )
        self.address = address
        self.keys = keys
        self.timeout = timeout


async def fetch_from_peers(
    keys: Iterable,
    who_has: Mapping | None,
    *,
    ask_center: Callable[[list], Awaitable[Mapping]],
    get_data: Callable[[str, list], Awaitable[Mapping]],
    self_address: str | None = None,
    missing_retry_delays: tuple[float, ...] = MISSING_RETRY_DELAYS,
    sleep: Callable[[float], Awaitable] = asyncio.sleep,
    on_fetched: Callable[[object, object], None] | None = None,
) -> tuple[dict, list]:
    """Fetch `keys` from peers; return ``(data, missing_keys)``.

    Parameters
    ----------
    who_has
        ``{key: [addresses]}`` hint (may be partial or stale).
    ask_center
        ``await ask_center(keys) -> {key: [addresses]}``; must be bounded
        in time. Any exception (or an answer that is not a mapping) marks the
        Center failed for this fetch: it is not asked again, and keys with no
        other holder are reported missing.
    get_data
        ``await get_data(address, keys) -> {key: value}``; may leave
        out keys the peer does not hold; must be bounded in time (raise, for
        example `FetchTimeoutError`, when the peer is silent). Any exception
        marks the peer failed: it is not asked again within this fetch.
    self_address
        our own address, never fetched from.
    missing_retry_delays
        pauses before asking the Center again about keys it listed nowhere.
    sleep
        ``await sleep(seconds)``, for those pauses (injected in tests).
    on_fetched
        ``on_fetched(key, value)`` is called as soon as a key arrives
        (before slower holders in the same round have answered), so others
        waiting for that key need not wait for the whole fetch.
    """
    pending = list(dict.fromkeys(keys))
    candidates = {k: _clean(who_has.get(k) if who_has else None, self_address) for k in pending}
    tried: dict = defaultdict(set)  # key -> addresses asked for it
    failed: set = set()  # peers that failed this fetch: not asked again
    asks: dict = defaultdict(int)  # key -> times the Center was asked
    center_failed = False  # the Center's who_has failed: do not ask again
    delays = list(missing_retry_delays)
    data: dict = {}
    missing: list = []

    while pending:
        plan: dict = defaultdict(list)
        orphans = []
        for key in pending:
            options = [a for a in candidates[key] if a not in tried[key] and a not in failed]
            if options:
                address = random.choice(options)
                tried[key].add(address)
                plan[address].append(key)
            else:
                orphans.append(key)

        if orphans and center_failed:
            missing.extend(orphans)
        elif orphans:
            ask = [k for k in orphans if asks[k] == 0]
            again = [k for k in orphans if asks[k] > 0]
            if again:
                if not delays:
                    missing.extend(again)
                elif not plan and not ask:
                    # The Center may not have heard of the key yet: its
                    # holder's report can be a few milliseconds behind.
                    await sleep(delays.pop(0))
                    ask = again
                # else: ask again in a later round, after this one's fetches
            if ask:
                try:
                    answer = await ask_center(ask)
                    if not isinstance(answer, Mapping):
                        raise TypeError(f"who_has returned {type(answer).__name__}, not a dict")
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    logger.warning(
                        "asking the center who has %d keys failed; keys no other holder "
                        "has are reported missing: %s: %s",
                        len(ask),
                        type(e).__name__,
                        e,
                    )
                    center_failed = True
                    missing.extend(ask)
                else:
                    for key in ask:
                        asks[key] += 1
                        candidates[key] = _clean(answer.get(key), self_address)

        if plan:
            # holders in parallel; each answer is used as soon as it arrives
            tasks = {asyncio.ensure_future(get_data(a, plan[a])): a for a in plan}
            try:
                waiting = set(tasks)
                while waiting:
                    done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        address = tasks[task]
                        if task.cancelled():
                            raise asyncio.CancelledError(f"get_data from {address} was cancelled")
                        error = task.exception()
                        if error is not None:
                            logger.warning(
                                "fetching %d keys from %s failed, trying other holders: %s: %s",
                                len(plan[address]),
                                address,
                                type(error).__name__,
                                error,
                            )
                            failed.add(address)
                            continue
                        result = task.result()
                        for key in plan[address]:
                            if key in result:
                                data[key] = result[key]
                                if on_fetched is not None:
                                    on_fetched(key, result[key])
            finally:
                unfinished = [t for t in tasks if not t.done()]
                for task in unfinished:
                    task.cancel()
                if unfinished:
                    await asyncio.gather(*unfinished, return_exceptions=True)

        gone = set(missing)
        pending = [k for k in pending if k not in data and k not in gone]
    return data, missing


def _clean(addresses, self_address) -> list:
    if not addresses:
        return []
    if isinstance(addresses, str):
        addresses = [addresses]
    return [a for a in dict.fromkeys(addresses) if a != self_address]
