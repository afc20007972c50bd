"""The shared event loop thread behind every blocking call."""

from __future__ import annotations

import asyncio
import atexit
import threading

from distributed_core import LoopRunner

__all__ = ["get_runner", "in_running_loop"]

_lock = threading.Lock()
_runner: LoopRunner | None = None


def get_runner() -> LoopRunner:
    """The process-wide :class:`~distributed_core.LoopRunner` (started on first use)."""
    global _runner
    with _lock:
        if _runner is None or not _runner.thread.is_alive():
            _runner = LoopRunner(name="distributed-client-loop")
        return _runner


def in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


_exit_hooks: list = []


def on_exit(fn) -> None:
    """Run `fn()` at interpreter exit, before the loop thread is stopped."""
    _exit_hooks.append(fn)


@atexit.register
def _shutdown() -> None:  # pragma: no cover - runs at interpreter exit
    for fn in reversed(_exit_hooks):
        try:
            fn()
        except Exception:
            pass
    if _runner is not None:
        _runner.close(timeout=2)
