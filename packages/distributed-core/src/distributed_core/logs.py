"""One logging setup for every command-line program (dcenter, dworker, ...).

:func:`setup` applies one ``logging.config.dictConfig``: every line goes to
stderr, either as text::

    2026-11-30 05:40:01,123 INFO distributed_center: Registered worker tcp://...

or, with ``fmt='json'``, as one JSON object per line with the fields
``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message`` (and
``exception`` when there is one), for log collectors.

:class:`RateLimitFilter` keeps a repeated warning (say "lost worker") from
flooding the log: the same message template from the same logger is let
through at most ``burst`` times per ``period`` seconds, and the next line
that gets through says how many were suppressed.
"""

from __future__ import annotations

import datetime
import json
import logging
import logging.config
import sys
import threading
import time

__all__ = ["JSONFormatter", "RateLimitFilter", "TEXT_FORMAT", "setup"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")


class JSONFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message``."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(level: str = "info", fmt: str = "text", stream=None) -> None:
    """Configure the root logger for a command-line program.

    `level` is one of ``debug``, ``info``, ``warning``, ``error``; `fmt` is
    ``text`` or ``json``. Called once at the start of each CLI; libraries
    never call it.
    """
    level = level.lower()
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    formatter = (
        {"()": JSONFormatter} if fmt == "json" else {"format": TEXT_FORMAT}
    )  # fmt: skip
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"default": formatter},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "default",
                    "stream": stream or sys.stderr,
                }
            },
            "root": {"level": level.upper(), "handlers": ["stderr"]},
        }
    )


class RateLimitFilter(logging.Filter):
    """Let the same (logger, message template) through at most `burst` times per `period`.

    >>> import logging
    >>> from distributed_core.logs import RateLimitFilter
    >>> f = RateLimitFilter(period=60, burst=2, clock=lambda: 0.0)
    >>> rec = lambda: logging.LogRecord("x", logging.WARNING, "", 0, "lost worker %s", ("a",), None)
    >>> [f.filter(rec()) for _ in range(4)]
    [True, True, False, False]
    """

    def __init__(self, period: float = 10.0, burst: int = 3, clock=time.monotonic):
        super().__init__()
        self.period = period
        self.burst = burst
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple, list] = {}  # (name, msg) -> [window start, count, suppressed]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self.clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is None or now - entry[0] >= self.period:
                suppressed = entry[2] if entry else 0
                self._seen[key] = [now, 1, 0]
                if len(self._seen) > 1000:  # bounded: forget the oldest windows
                    for old in list(self._seen)[:500]:
                        del self._seen[old]
                if suppressed:
                    record.msg = f"{record.msg} ({suppressed} similar messages suppressed)"
                return True
            if entry[1] < self.burst:
                entry[1] += 1
                return True
            entry[2] += 1
            return False
