"""Run coroutines from blocking code: an event loop in a daemon thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

__all__ = ["LoopRunner", "cancel_and_wait", "sync"]


class LoopRunner:
    """An asyncio event loop running in a daemon thread.

    ``runner.run(coro_fn, *args, timeout=None, **kwargs)`` runs
    ``coro_fn(*args, **kwargs)`` on that loop and blocks the calling thread
    until it finishes, returning its result or re-raising its exception.
    A ``KeyboardInterrupt`` in the calling thread cancels the coroutine and
    propagates. Calling ``run`` from the loop's own thread is an error (it
    would deadlock).
    """

    def __init__(self, name: str = "distributed-loop"):
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._started.wait()
        self._closed = False

    def _main(self):
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def in_loop_thread(self) -> bool:
        """Whether the caller runs on the loop's own thread."""
        return threading.current_thread() is self._thread

    def run(self, coro_fn, *args, timeout: float | None = None, **kwargs):
        """Run ``coro_fn(*args, **kwargs)`` on the loop; block until it finishes.

        Returns its result or re-raises its exception; ``timeout`` raises
        ``asyncio.TimeoutError`` after that many seconds (the coroutine is
        cancelled); KeyboardInterrupt cancels it and propagates.
        """
        if self._closed:
            raise RuntimeError("LoopRunner is closed")
        if self.in_loop_thread():
            raise RuntimeError(
                "blocking call made from inside the event loop; use the asynchronous "
                "form (await ...) there"
            )

        async def main():
            if timeout is None:
                return await coro_fn(*args, **kwargs)
            return await asyncio.wait_for(coro_fn(*args, **kwargs), timeout)

        fut = asyncio.run_coroutine_threadsafe(main(), self.loop)
        try:
            return fut.result()
        except KeyboardInterrupt:
            fut.cancel()
            raise
        except concurrent.futures.CancelledError:
            raise asyncio.CancelledError() from None

    def call_soon(self, fn, *args) -> None:
        """Schedule a plain callback on the loop from any thread."""
        self.loop.call_soon_threadsafe(fn, *args)

    def close(self, timeout: float = 5) -> None:
        """Cancel what still runs on the loop, stop it and join the thread."""
        if self._closed:
            return
        self._closed = True

        async def cancel_all():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(timeout)
            except Exception:
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def sync(runner: LoopRunner, coro_fn, *args, timeout=None, **kwargs):
    """Run ``coro_fn(*args, **kwargs)`` on ``runner``'s loop and wait for it."""
    return runner.run(coro_fn, *args, timeout=timeout, **kwargs)


#: how often :func:`cancel_and_wait` cancels a task that does not stop, and how long
#: it waits after each cancel (seconds): at most ``CANCEL_ROUNDS * CANCEL_WAIT`` in all
CANCEL_ROUNDS = 10
CANCEL_WAIT = 0.5


async def cancel_and_wait(
    tasks, rounds: int = CANCEL_ROUNDS, wait: float = CANCEL_WAIT
) -> set[asyncio.Future]:
    """Cancel `tasks` and wait until they end; return those that never did.

    A cancel that lands just as an inner ``asyncio.wait_for`` completes is
    lost on Python < 3.12 (the task goes on as if never cancelled), so a bare
    ``task.cancel(); await task`` can wait forever. This cancels again every
    `wait` seconds, `rounds` times at most, so it is bounded. What the tasks
    raised is retrieved (never "exception was never retrieved").

    >>> import asyncio
    >>> async def forever():
    ...     await asyncio.sleep(3600)
    >>> async def main():
    ...     t = asyncio.ensure_future(forever())
    ...     await asyncio.sleep(0)
    ...     return await cancel_and_wait([t]), t.cancelled()
    >>> asyncio.run(main())
    (set(), True)
    """
    pending = {t for t in tasks if t is not None and not t.done()}
    for _ in range(rounds if pending else 0):
        for task in pending:
            task.cancel()
        done, pending = await asyncio.wait(pending, timeout=wait)
        for task in done:
            if not task.cancelled():
                task.exception()
        if not pending:
            break
    for task in tasks:
        if task is not None and task.done() and not task.cancelled():
            task.exception()
    return pending
