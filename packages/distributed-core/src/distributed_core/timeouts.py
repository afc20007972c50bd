"""The named bound on every wait between processes, in one place.

Every wait on another process in the cluster has a bound, and every bound
has a name here, a default and a docstring. Components take these as keyword
arguments (``Center(heartbeat_timeout=...)``, ``Worker(fetch_timeout=...)``,
``Executor(center_timeout=...)``), and the CLIs as flags with the same name
(``--heartbeat-timeout``). ``docs/failures.md`` says what happens when each
one expires, and how fast a vanished host is noticed with the defaults
(about 10 seconds).

>>> from distributed_core.timeouts import DEFAULTS
>>> DEFAULTS.heartbeat_timeout
5.0
>>> DEFAULTS.replace(heartbeat_timeout=2.0).heartbeat_timeout
2.0
"""

from __future__ import annotations

import dataclasses

__all__ = ["DEFAULTS", "Timeouts", "configured"]


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Bounds on waits between processes, in seconds (counts where noted).

    Attributes
    ----------
    connect_timeout
        Opening a connection: refused connections are retried with backoff
        until this much time has passed; a host that drops the SYN (vanished)
        fails after it too. Also bounds the handshake.
    heartbeat_interval
        Seconds between heartbeats on a worker's report stream, in both
        directions (worker to center, center to worker).
    heartbeat_timeout
        The center drops a worker (and its keys) from which nothing arrived
        for this long; a worker treats its center as gone when nothing
        arrived from it for this long, keeps its data and reconnects.
    fetch_timeout
        A peer fetch whose holder sends nothing for this long fails; the
        holder counts as failed for those keys and other holders (then the
        center) are asked.
    center_timeout
        A client call that needs the center waits this long for it, then
        raises an error naming the center and the time waited.
    no_workers_timeout
        A task waits this long for a live worker, then fails with an error
        saying no worker is available.
    client_timeout
        The center releases the data of a client from which no heartbeat
        arrived for this long (a client killed without closing, or whose
        host vanished): every key only that client asked for is deleted on
        the workers. A client heartbeats every sixth of it.
    allowed_failures
        (count) A task whose worker died while running it this many times
        raises ``KilledWorker`` instead of being retried again.
    tcp_keepalive_idle, tcp_keepalive_interval, tcp_keepalive_count
        TCP keepalive on every connection: probes start after ``idle``
        seconds of silence, every ``interval`` seconds, and the connection is
        dropped after ``count`` unanswered probes. The backstop for waits
        that nothing else bounds.
    tcp_user_timeout
        ``TCP_USER_TIMEOUT`` (Linux): data written but not acknowledged for
        this long closes the connection. 0 disables it.
    """

    connect_timeout: float = 5.0
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 5.0
    fetch_timeout: float = 10.0
    center_timeout: float = 10.0
    no_workers_timeout: float = 30.0
    client_timeout: float = 300.0
    allowed_failures: int = 3
    tcp_keepalive_idle: float = 5.0
    tcp_keepalive_interval: float = 1.0
    tcp_keepalive_count: int = 5
    tcp_user_timeout: float = 10.0

    def replace(self, **changes) -> Timeouts:
        """A copy with some bounds changed (unknown names raise ``TypeError``)."""
        return dataclasses.replace(self, **changes)


#: The defaults: a vanished host is noticed in about 10 seconds.
DEFAULTS = Timeouts()


def configured() -> Timeouts:
    """`DEFAULTS` with the ``timeouts.*`` values of :mod:`distributed_core.config`
    (environment variables ``DISTRIBUTED_TIMEOUTS__<NAME>`` and config files).

    What every connection uses for keepalive and ``TCP_USER_TIMEOUT`` when no
    ``timeouts=`` is passed.
    """
    from . import config  # config's schema is built from this module

    return Timeouts(
        **{f.name: config.get(f"timeouts.{f.name}") for f in dataclasses.fields(Timeouts)}
    )
