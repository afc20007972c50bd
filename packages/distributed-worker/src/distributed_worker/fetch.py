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
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping

__all__ = ["fetch_from_peers"]

logger = logging.getLogger("distributed_worker.fetch")

MISSING_RETRY_DELAYS = (0.01, 0.05, 0.15)


async def fetch_from_peers(
    keys: Iterable,
    who_has: Mapping | None,
    *,
    ask_center: Callable[[list], Awaitable[Mapping]],
    get_data: Callable[[str, list], Awaitable[Mapping]],
    self_address: str | None = None,
    missing_retry_delays: tuple[float, ...] = MISSING_RETRY_DELAYS,
) -> tuple[dict, list]:
    """Fetch `keys` from peers; return ``(data, missing_keys)``.

    Parameters
    ----------
    who_has
        ``{key: [addresses]}`` hint (may be partial or stale).
    ask_center
        ``await ask_center(keys) -> {key: [addresses]}``.
    get_data
        ``await get_data(address, keys) -> {key: value}``; may leave
        out keys the peer does not hold; any exception marks the peer failed.
    self_address
        our own address, never fetched from.
    """
    pending = list(dict.fromkeys(keys))
    candidates = {k: _clean(who_has.get(k) if who_has else None, self_address) for k in pending}
    tried: dict = defaultdict(set)  # key -> addresses asked for it
    failed: set = set()  # peers that failed this fetch: not asked again
    asks: dict = defaultdict(int)  # key -> times the Center was asked
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

        if orphans:
            ask = [k for k in orphans if asks[k] == 0]
            again = [k for k in orphans if asks[k] > 0]
            if again:
                if not delays:
                    missing.extend(again)
                elif not plan and not ask:
                    # The Center may not have heard of the key yet: its
                    # holder's report can be a few milliseconds behind.
                    await asyncio.sleep(delays.pop(0))
                    ask = again
                # else: ask again in a later round, after this one's fetches
            if ask:
                answer = await ask_center(ask)
                for key in ask:
                    asks[key] += 1
                    candidates[key] = _clean(answer.get(key), self_address)

        if plan:
            addresses = list(plan)
            results = await asyncio.gather(
                *(get_data(a, plan[a]) for a in addresses), return_exceptions=True
            )
            for address, result in zip(addresses, results):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                if isinstance(result, BaseException):
                    logger.warning(
                        "fetching %d keys from %s failed, trying other holders: %s: %s",
                        len(plan[address]),
                        address,
                        type(result).__name__,
                        result,
                    )
                    failed.add(address)
                    continue
                for key in plan[address]:
                    if key in result:
                        data[key] = result[key]

        gone = set(missing)
        pending = [k for k in pending if k not in data and k not in gone]
    return data, missing


def _clean(addresses, self_address) -> list:
    if not addresses:
        return []
    if isinstance(addresses, str):
        addresses = [addresses]
    return [a for a in dict.fromkeys(addresses) if a != self_address]
