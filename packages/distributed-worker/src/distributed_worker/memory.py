"""Memory limits: parsing ``--memory-limit``, the fractions, and the policy.

Pure and synchronous apart from reading the machine's memory (psutil) and the
cgroup v2 limit (a file): the worker and the nanny feed `MemoryPolicy` the
numbers they measure and act on what it says. Imports no user code: the nanny
uses this module.

Fractions of the limit (defaults as dask.distributed's):

``target`` 0.6
    managed bytes (the values the worker holds in memory) above this: the
    least recently used values move to disk until below it.
``spill`` 0.7
    process memory (RSS) above this: values move to disk until the RSS is
    below ``target``, also when the memory is not held by values (unmanaged).
``pause`` 0.8
    RSS above this: the worker starts no new task and refuses new data from
    clients until the RSS is below it again.
``terminate`` 0.95
    RSS above this: the nanny kills the worker and starts a new one.

Each can be disabled (None, or ``False`` on the command line).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import psutil

__all__ = [
    "DEFAULT_FRACTIONS",
    "MemoryPolicy",
    "cgroup_memory_limit",
    "parse_fraction",
    "parse_memory_limit",
    "system_memory",
]

#: target, spill, pause, terminate
DEFAULT_FRACTIONS = {"target": 0.6, "spill": 0.7, "pause": 0.8, "terminate": 0.95}

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40,
}  # fmt: skip
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([a-zA-Z]*)\s*$")

CGROUP_ROOT = "/sys/fs/cgroup"


def cgroup_memory_limit(root: str = CGROUP_ROOT, proc_cgroup: str = "/proc/self/cgroup"):
    """The cgroup v2 ``memory.max`` of this process's cgroup (the smallest
    on its path up to the root), or None when there is none or it is ``max``.

    On hosts with cgroup v1 (or a hybrid mount), the memory controller's
    ``memory.limit_in_bytes`` instead."""
    try:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    path = next((line[3:] for line in lines if line.startswith("0::")), None)
    if path is None or not os.path.exists(os.path.join(root, "cgroup.controllers")):
        return _cgroup_v1_limit(lines, root)
    limit = None
    parts = [p for p in path.strip("/").split("/") if p]
    for i in range(len(parts), -1, -1):
        try:
            with open(os.path.join(root, *parts[:i], "memory.max")) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text != "max":
            try:
                value = int(text)
            except ValueError:
                continue
            limit = value if limit is None else min(limit, value)
    return limit


def _cgroup_v1_limit(lines: list[str], root: str):
    """The v1 memory controller's ``memory.limit_in_bytes`` (hybrid or v1 hosts)."""
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            try:
                with open(
                    os.path.join(root, "memory", path.strip("/"), "memory.limit_in_bytes")
                ) as f:
                    value = int(f.read().strip())
            except (OSError, ValueError):
                return None
            return value if value < 2**60 else None  # "unlimited" is about 2**63
    return None


def system_memory() -> int:
    """The memory this process may use: the machine's, or its cgroup's if smaller."""
    total = psutil.virtual_memory().total
    cg = cgroup_memory_limit()
    return min(total, cg) if cg else total


def parse_memory_limit(value, nprocs: int = 1, total: int | None = None) -> int | None:
    """Bytes from ``4GiB``, ``500MB``, ``1e9``, a fraction of the machine
    (``0.5``), ``auto`` (the machine's or the cgroup's memory divided by
    `nprocs`, the processes started by one command) or ``0``/``none`` (no limit:
    None).

    Raises `ValueError` saying what was wrong.

    >>> from distributed_worker.memory import parse_memory_limit
    >>> parse_memory_limit("4GiB")
    4294967296
    >>> parse_memory_limit("500MB")
    500000000
    >>> parse_memory_limit("0.5", total=1000)
    500
    >>> parse_memory_limit("auto", nprocs=2, total=1000)
    500
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"memory limit must be a size, got {value!r}")
    text = repr(value) if isinstance(value, (int, float)) else str(value).strip()
    lowered = text.lower()
    if lowered in ("0", "none"):
        return None
    if lowered == "auto":
        total = system_memory() if total is None else total
        return max(1, total // max(1, nprocs))
    if lowered.startswith("-"):
        raise ValueError(f"memory limit {text!r} is negative: give a positive size, or 0 for none")
    m = _SIZE.match(text)
    if m is None:
        raise ValueError(
            f"memory limit {text!r} is not a size: use bytes with a unit (4GiB, 500MB), "
            f"a fraction of the machine's memory (0.5), auto, or 0 for none"
        )
    number, unit = float(m.group(1)), m.group(2).lower()
    if unit not in _UNITS:
        raise ValueError(
            f"memory limit {text!r} has an unknown unit {m.group(2)!r}: use B, kB, MB, GB, "
            f"TB, KiB, MiB, GiB or TiB"
        )
    if number == 0:
        return None
    if not unit and number <= 1:  # a fraction of the machine
        total = system_memory() if total is None else total
        return max(1, int(number * total))
    return int(number * _UNITS[unit])


def parse_fraction(name: str, value):
    """A fraction in (0, 1], or None for ``False``/``none``/``off``/None (disabled)."""
    if value is None or value is False:
        return None
    if isinstance(value, str):
        if value.strip().lower() in ("false", "none", "off", "no"):
            return None
        try:
            value = float(value)
        except ValueError:
            raise ValueError(
                f"{name} fraction {value!r} is not a number: give one in (0, 1], or False "
                f"to disable it"
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{name} fraction must be in (0, 1] or False, got {value!r}")
    return float(value)


@dataclass
class MemoryPolicy:
    """What to do at a given memory use, for one worker.

    >>> from distributed_worker.memory import MemoryPolicy
    >>> p = MemoryPolicy(1000)
    >>> p.action(rss=500)
    'ok'
    >>> p.action(rss=750), p.spill_goal(rss=750)
    ('spill', 150)
    >>> p.action(rss=850), p.action(rss=960)
    ('pause', 'terminate')
    """

    limit: int | None
    target: float | None = DEFAULT_FRACTIONS["target"]
    spill: float | None = DEFAULT_FRACTIONS["spill"]
    pause: float | None = DEFAULT_FRACTIONS["pause"]
    terminate: float | None = DEFAULT_FRACTIONS["terminate"]

    def bytes_at(self, fraction: float | None) -> int | None:
        if self.limit is None or fraction is None:
            return None
        return int(self.limit * fraction)

    @property
    def target_bytes(self) -> int | None:
        """Managed bytes kept in memory before the least recently used go to disk."""
        return self.bytes_at(self.target)

    def action(self, rss: int) -> str:
        """``'terminate'``, ``'pause'``, ``'spill'`` or ``'ok'`` for this RSS."""
        for name in ("terminate", "pause", "spill"):
            threshold = self.bytes_at(getattr(self, name))
            if threshold is not None and rss > threshold:
                return name
        return "ok"

    def should_pause(self, rss: int) -> bool:
        threshold = self.bytes_at(self.pause)
        return threshold is not None and rss > threshold

    def over_spill(self, rss: int) -> bool:
        threshold = self.bytes_at(self.spill)
        return threshold is not None and rss > threshold

    def spill_goal(self, rss: int) -> int:
        """Bytes to move to disk so that the RSS gets below target (or spill)."""
        goal = self.bytes_at(self.target if self.target is not None else self.spill)
        if goal is None:
            return 0
        return max(0, rss - goal)
