"""The Center's metadata: which worker holds which key, and who is alive.

:class:`CenterState` is plain synchronous bookkeeping with no sockets and no
event loop, so it can be unit-tested directly; :class:`~distributed_center.Center`
is a thin asynchronous layer around it.

Memory matters here: a Center may track millions of keys, so the per-key cost
is kept small.

* ``who_has`` maps a key to the *address string* of its holder in the common
  one-holder case, and to a ``set`` of addresses only when several workers hold
  it. Address strings are shared with the worker table (one object per worker),
  so the single-holder case costs one dict slot per key.
* ``has_what`` maps an address to a ``set`` of keys.
* ``nbytes`` maps a key to its size only when a size was reported.

Keys are any hashable value (str, bytes, int, tuples of those); the Center
never looks inside them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from .leases import Leases

__all__ = ["CenterState", "WorkerInfo"]

_COLLECTIONS = (list, tuple, set, frozenset)


class WorkerInfo:
    """What the Center knows about one worker (besides its keys)."""

    __slots__ = (
        "address",
        "last_sent",
        "last_seen",
        "metrics",
        "name",
        "nbytes",
        "ncores",
        "resources",
    )

    def __init__(self, address: str, name: Any, ncores: int, last_seen: float):
        self.address = address
        self.name = name
        self.ncores = ncores
        self.nbytes = 0  # sum of the known sizes of the keys it holds
        self.last_seen = last_seen  # on the state's (monotonic) clock
        self.last_sent = last_seen  # when the center last sent it a heartbeat
        self.metrics: dict = {}  # what its last heartbeat reported
        self.resources: dict = {}  # what it declared (``--resources``), issue 10

    def __repr__(self) -> str:
        return f"<WorkerInfo {self.address} name={self.name!r} ncores={self.ncores}>"


# --------------------------------------------------------------------------
# Argument checks. They run before any mutation so that a bad request leaves
# the tables untouched, and their messages name the argument and the fix.
# --------------------------------------------------------------------------


def check_address(address: Any) -> str:
    if not isinstance(address, str) or not address:
        raise TypeError(
            f"worker address must be a non-empty string like 'tcp://host:port', "
            f"got {type(address).__name__} {address!r}"
        )
    return address


def check_keys(keys: Any, argname: str = "keys") -> list:
    """Return ``keys`` as a list, checking that it is a collection of hashables."""
    if keys is None:
        return []
    if isinstance(keys, dict):
        keys = list(keys)
    elif not isinstance(keys, _COLLECTIONS):
        hint = "; wrap a single key in a list" if isinstance(keys, (str, bytes, int)) else ""
        raise TypeError(
            f"{argname} must be a list of keys, got {type(keys).__name__} {_short(keys)}{hint}"
        )
    for key in keys:
        try:
            hash(key)
        except TypeError:
            raise TypeError(
                f"key {_short(key)} in {argname} is not hashable ({type(key).__name__}): "
                f"keys must be str, bytes, int or tuples of those"
            ) from None
    return keys if isinstance(keys, list) else list(keys)


def check_nbytes(nbytes: Any) -> dict:
    if nbytes is None:
        return {}
    if not isinstance(nbytes, dict):
        raise TypeError(
            f"nbytes must be a dict {{key: number of bytes}}, got "
            f"{type(nbytes).__name__} {_short(nbytes)}"
        )
    for key, n in nbytes.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise TypeError(
                f"nbytes[{_short(key)}] must be a non-negative int, got "
                f"{type(n).__name__} {_short(n)}"
            )
    return nbytes


def check_workers(workers: Any) -> list[str] | None:
    if workers is None:
        return None
    if not isinstance(workers, _COLLECTIONS):
        hint = "; wrap a single address in a list" if isinstance(workers, str) else ""
        raise TypeError(
            f"workers must be a list of worker addresses, got "
            f"{type(workers).__name__} {_short(workers)}{hint}"
        )
    for w in workers:
        if not isinstance(w, str):
            raise TypeError(
                f"workers must be a list of address strings, found {type(w).__name__} {_short(w)}"
            )
    return list(workers)


def check_ncores(ncores: Any) -> int:
    if not isinstance(ncores, int) or isinstance(ncores, bool) or ncores < 1:
        raise TypeError(
            f"ncores must be a positive int, got {type(ncores).__name__} {_short(ncores)}"
        )
    return ncores


def check_name(name: Any) -> Any:
    if name is not None and (not isinstance(name, (str, int)) or isinstance(name, bool)):
        raise TypeError(
            f"name must be a str, an int or None, got {type(name).__name__} {_short(name)}"
        )
    return name


def check_resources(resources: Any) -> dict:
    if resources is None:
        return {}
    if not isinstance(resources, dict):
        raise TypeError(
            f"resources must be a dict {{name: amount}}, got {type(resources).__name__} "
            f"{_short(resources)}"
        )
    for name, amount in resources.items():
        if (
            not isinstance(name, str)
            or not isinstance(amount, (int, float))
            or isinstance(amount, bool)
            or not amount >= 0
        ):
            raise TypeError(
                f"resources[{_short(name)}] must be a number >= 0 under a str name, "
                f"got {_short(amount)}"
            )
    return dict(resources)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class CenterState:
    """Who holds which key, how big it is, and which workers are alive.

    All methods are synchronous and raise :class:`TypeError` (never corrupt the
    tables) on malformed arguments.

    Parameters
    ----------
    clock
        A monotonic clock used for liveness (``time.monotonic`` by default);
        tests pass a fake one.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        #: key -> address (one holder) or set of addresses (several)
        self.who_has_map: dict[Hashable, str | set[str]] = {}
        #: address -> set of keys
        self.has_what_map: dict[str, set] = {}
        #: key -> size in bytes, for keys whose size was reported
        self.nbytes_map: dict[Hashable, int] = {}
        #: address -> WorkerInfo
        self.workers_map: dict[str, WorkerInfo] = {}
        #: which client asked for which key, and pinned keys (issue 10)
        self.leases = Leases(clock)

    # ------------------------------------------------------------------ sizes

    @property
    def n_workers(self) -> int:
        return len(self.workers_map)

    @property
    def n_keys(self) -> int:
        """Number of keys held by at least one worker."""
        return len(self.who_has_map)

    def __repr__(self) -> str:
        return f"<CenterState workers={self.n_workers} keys={self.n_keys}>"

    # -------------------------------------------------------------- mutation

    def register(
        self,
        address: str,
        keys: Iterable = (),
        ncores: int = 1,
        name: Any = None,
        nbytes: dict | None = None,
        resources: dict | None = None,
    ) -> bool:
        """Add a worker, or refresh a known one.

        ``keys`` (together with the keys of ``nbytes``) is the complete set of
        keys the worker holds: on re-registration of a known address the old
        key set is *replaced*, so keys the worker no longer has are dropped.
        Returns True if the worker was not known before.
        """
        address = check_address(address)
        keys = check_keys(keys)
        ncores = check_ncores(ncores)
        name = check_name(name)
        nbytes = check_nbytes(nbytes)
        resources = check_resources(resources)

        info = self.workers_map.get(address)
        new = info is None
        if new:
            info = WorkerInfo(address, name, ncores, self.clock())
            self.workers_map[address] = info
            self.has_what_map[address] = set()
        else:
            info.name = name
            info.ncores = ncores
            info.last_seen = self.clock()
            # Drop what it no longer holds; keep what it still holds.
            held = self.has_what_map[address]
            if held:
                wanted = set(keys)
                wanted.update(nbytes)
                stale = [k for k in held if k not in wanted]
                self._remove(info, stale)
        info.resources = resources
        self._add(info, keys, nbytes)
        return new

    def unregister(self, address: str) -> list:
        """Forget a worker; return the keys that now have no holder.

        Unknown addresses are ignored (returns an empty list).
        """
        address = check_address(address)
        info = self.workers_map.get(address)
        if info is None:
            return []
        keys = list(self.has_what_map[address])
        lost = self._remove(info, keys)
        del self.workers_map[address]
        del self.has_what_map[address]
        return lost

    def add_keys(self, address: str, keys: Iterable = (), nbytes: dict | None = None):
        """Record that ``address`` now holds ``keys`` (and the keys of ``nbytes``).

        Raises :class:`ValueError` if the worker is not registered.
        """
        info = self._known(address, "add_keys")
        keys = check_keys(keys)
        nbytes = check_nbytes(nbytes)
        info.last_seen = self.clock()
        self._add(info, keys, nbytes)

    def remove_keys(self, address: str, keys: Iterable) -> list:
        """Record that ``address`` no longer holds ``keys``.

        Keys it does not hold and unknown workers are ignored. Returns the keys
        that now have no holder.
        """
        address = check_address(address)
        keys = check_keys(keys)
        info = self.workers_map.get(address)
        if info is None:
            return []
        info.last_seen = self.clock()
        return self._remove(info, keys)

    def delete_keys(self, keys: Iterable) -> dict[str, list]:
        """Forget ``keys`` everywhere; return ``{holder address: [keys it held]}``.

        The caller tells each holder to delete its copies. Unknown keys are
        ignored.
        """
        keys = check_keys(keys)
        by_holder: dict[str, list] = {}
        for key in keys:
            holders = self.who_has_map.get(key)
            if holders is None:
                continue
            for address in [holders] if isinstance(holders, str) else list(holders):
                by_holder.setdefault(address, []).append(key)
        for address, held in by_holder.items():
            self._remove(self.workers_map[address], held)
        return by_holder

    def pin(self, keys: Iterable) -> None:
        """Keep ``keys`` when the clients that asked for them leave (named
        datasets); see :meth:`Leases.pin <distributed_center.Leases.pin>`."""
        self.leases.pin(check_keys(keys))

    def unpin(self, keys: Iterable) -> list:
        """Undo one :meth:`pin` of each of ``keys``; return those no longer pinned at all."""
        return self.leases.unpin(check_keys(keys))

    def is_pinned(self, key: Hashable) -> bool:
        """Whether ``key`` is pinned (named by a published dataset)."""
        return key in self.leases.pinned

    def unowned(self, keys: Iterable) -> list:
        """Those of ``keys`` that no registered client asked for and no pin keeps."""
        leases = self.leases
        return [k for k in keys if k not in leases.owner and k not in leases.pinned]

    def heartbeat(self, address: str, metrics: dict | None = None) -> bool:
        """Note that ``address`` is alive. Returns False if it is not registered."""
        address = check_address(address)
        info = self.workers_map.get(address)
        if info is None:
            return False
        info.last_seen = self.clock()
        if metrics:
            info.metrics = metrics
        return True

    def touch(self, address: str) -> None:
        """Note that a message arrived from ``address`` (if it is known)."""
        info = self.workers_map.get(address)
        if info is not None:
            info.last_seen = self.clock()

    def stale_workers(self, timeout: float) -> list[str]:
        """Workers from which nothing was heard for more than ``timeout`` seconds."""
        deadline = self.clock() - timeout
        return [a for a, info in self.workers_map.items() if info.last_seen < deadline]

    def heartbeats_due(self, interval: float) -> list[str]:
        """Workers the center sent no heartbeat for ``interval`` seconds or more.

        The caller writes one on each of their report streams and calls
        :meth:`heartbeat_sent`. (Added for issue 8.)
        """
        deadline = self.clock() - interval
        return [a for a, info in self.workers_map.items() if info.last_sent <= deadline]

    def heartbeat_sent(self, address: str) -> None:
        """Note that a heartbeat was just written to ``address`` (if it is known)."""
        info = self.workers_map.get(address)
        if info is not None:
            info.last_sent = self.clock()

    def excuse(self, seconds: float) -> None:
        """Do not count the last ``seconds`` of silence against any worker.

        For a center that was itself paused (SIGSTOP, a frozen VM, a blocked
        event loop): what the workers sent meanwhile is still unread in the
        sockets, so their silence is ours, not theirs. Each worker's
        ``last_seen`` moves forward by ``seconds``, never past now.
        """
        if seconds <= 0:
            return
        now = self.clock()
        for info in self.workers_map.values():
            info.last_seen = min(info.last_seen + seconds, now)
        self.leases.excuse(seconds)

    # ---------------------------------------------------------------- queries

    def who_has(self, keys: Iterable | None = None) -> dict:
        """``{key: [holder addresses]}``; ``[]`` for a key nobody holds.

        With ``keys=None``, every key that has a holder.
        """
        wh = self.who_has_map
        if keys is None:
            return {k: _as_list(v) for k, v in wh.items()}
        return {k: _as_list(wh.get(k)) for k in check_keys(keys)}

    def has_what(self, workers: Iterable[str] | None = None) -> dict:
        """``{worker: [keys]}``; ``[]`` for an unknown worker.

        With ``workers=None``, every registered worker.
        """
        workers = check_workers(workers)
        hw = self.has_what_map
        if workers is None:
            return {w: list(keys) for w, keys in hw.items()}
        return {w: list(hw.get(w, ())) for w in workers}

    def ncores(self, workers: Iterable[str] | None = None) -> dict:
        """``{worker: ncores}``; ``0`` for an unknown worker.

        With ``workers=None``, every registered worker.
        """
        workers = check_workers(workers)
        wm = self.workers_map
        if workers is None:
            return {w: info.ncores for w, info in wm.items()}
        return {w: (wm[w].ncores if w in wm else 0) for w in workers}

    def nbytes(self, keys: Iterable | None = None) -> dict:
        """``{key: nbytes}`` for the keys whose size is known (others omitted)."""
        nb = self.nbytes_map
        if keys is None:
            return dict(nb)
        return {k: nb[k] for k in check_keys(keys) if k in nb}

    def workers(self) -> dict:
        """``{worker: {'name', 'ncores', 'nkeys', 'nbytes', 'last_seen', 'metrics', 'resources'}}``.

        ``last_seen`` is a wall-clock timestamp (``time.time()`` scale).
        """
        offset = time.time() - self.clock()
        return {
            address: {
                "name": info.name,
                "ncores": info.ncores,
                "nkeys": len(self.has_what_map[address]),
                "nbytes": info.nbytes,
                "last_seen": info.last_seen + offset,
                "metrics": info.metrics,
                "resources": info.resources,
            }
            for address, info in self.workers_map.items()
        }

    # -------------------------------------------------------------- internals

    def _known(self, address: Any, op: str) -> WorkerInfo:
        address = check_address(address)
        info = self.workers_map.get(address)
        if info is None:
            raise ValueError(
                f"{op}: worker {address!r} is not registered with this center "
                f"(it may have timed out or the center restarted); register it again"
            )
        return info

    def _add(self, info: WorkerInfo, keys: list, nbytes: dict) -> None:
        address = info.address  # the one shared string object for this worker
        held = self.has_what_map[address]
        wh = self.who_has_map
        nb = self.nbytes_map
        workers = self.workers_map

        if nbytes and keys:
            # A message decodes ``keys`` and ``nbytes`` into two distinct
            # objects per key; store only one of them (the one ``who_has``
            # keeps), or each key would cost twice its size.
            canonical = {k: nbytes[k] for k in keys if k in nbytes}
            if len(canonical) < len(nbytes):
                for k, n in nbytes.items():
                    canonical.setdefault(k, n)
            nbytes = canonical

        # New sizes first, so every current holder's total follows the change.
        for key, n in nbytes.items():
            old = nb.get(key)
            if old == n:
                continue
            nb[key] = n
            holders = wh.get(key)
            if holders is not None:
                delta = n - (old or 0)
                for h in [holders] if isinstance(holders, str) else holders:
                    workers[h].nbytes += delta

        for key in _chain(keys, nbytes):
            if key in held:
                continue
            held.add(key)
            holders = wh.get(key)
            if holders is None:
                wh[key] = address
            elif isinstance(holders, str):
                wh[key] = {holders, address}
            else:
                holders.add(address)
            info.nbytes += nb.get(key, 0)

    def _remove(self, info: WorkerInfo, keys: Iterable) -> list:
        """Drop ``keys`` from ``info``'s holdings; return keys left with no holder."""
        address = info.address
        held = self.has_what_map[address]
        wh = self.who_has_map
        nb = self.nbytes_map
        forget = self.leases.forget
        lost = []
        for key in keys:
            if key not in held:
                continue
            held.discard(key)
            info.nbytes -= nb.get(key, 0)
            holders = wh[key]
            if isinstance(holders, str):
                del wh[key]
                nb.pop(key, None)
                forget(key)
                lost.append(key)
            else:
                holders.discard(address)
                if len(holders) == 1:
                    # back to the compact one-holder form, reusing the
                    # worker table's own string object
                    (other,) = holders
                    wh[key] = self.workers_map[other].address
        return lost


def _as_list(holders: str | set[str] | None) -> list[str]:
    if holders is None:
        return []
    if isinstance(holders, str):
        return [holders]
    return sorted(holders)


def _chain(keys: list, nbytes: dict):
    yield from keys
    if nbytes:
        yield from nbytes
