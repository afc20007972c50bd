"""LoopRunner / sync: blocking calls into an event loop running in a thread."""

from __future__ import annotations

import asyncio
import signal
import threading
import time

import pytest

from distributed_core import LoopRunner, rpc, sync
from distributed_core.testing import check_leaks, serve


@pytest.fixture
def runner():
    with check_leaks():
        r = LoopRunner()
        try:
            yield r
        finally:
            r.close()
    assert not r.thread.is_alive()


async def add(x, y=0):
    await asyncio.sleep(0)
    return x + y


def test_run_returns_results(runner):
    assert runner.run(add, 1, y=2) == 3
    assert sync(runner, add, 40, 2) == 42
    assert runner.loop.is_running()
    assert not runner.in_loop_thread()


def test_run_propagates_exceptions(runner):
    class Oops(Exception):
        pass

    async def fail():
        raise Oops("inside the loop")

    with pytest.raises(Oops, match="inside the loop"):
        runner.run(fail)
    assert runner.run(add, 1) == 1  # the loop is fine


def test_run_timeout(runner):
    cancelled = threading.Event()

    async def slow():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    start = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        runner.run(slow, timeout=0.1)
    assert time.monotonic() - start < 2
    assert cancelled.wait(2)


def test_run_from_inside_the_loop_is_an_error(runner):
    async def nested():
        with pytest.raises(RuntimeError, match="inside the event loop"):
            runner.run(add, 1)
        return "checked"

    assert runner.run(nested) == "checked"

    errors = []

    def callback():
        try:
            runner.run(add, 1)
        except RuntimeError as e:
            errors.append(e)

    runner.call_soon(callback)
    assert runner.run(add, 0) == 0  # runs after the callback
    assert len(errors) == 1


def test_run_from_several_threads(runner):
    results = []

    def work(i):
        results.append(runner.run(add, i, y=i))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [2 * i for i in range(8)]


def test_close_joins_thread_and_cancels_tasks():
    with check_leaks():
        runner = LoopRunner(name="to-close")
        cancelled = threading.Event()

        async def forever():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        runner.call_soon(lambda: runner.loop.create_task(forever()))
        runner.run(asyncio.sleep, 0.01)
        assert runner.thread.name == "to-close"
        runner.close()
        assert cancelled.is_set()
        assert not runner.thread.is_alive()
        assert runner.loop.is_closed()
        runner.close()  # twice is fine
        with pytest.raises(RuntimeError, match="closed"):
            runner.run(add, 1)


def test_context_manager():
    with LoopRunner() as runner:
        assert runner.run(add, 2) == 2
    assert not runner.thread.is_alive()


def test_rpc_through_the_bridge(runner):
    async def start():
        ctx = serve({"double": lambda comm, x: 2 * x})
        server = await ctx.__aenter__()
        return ctx, server

    ctx, server = runner.run(start)
    try:
        r = rpc(server.address)
        assert runner.run(r.double, x=21) == 42
        runner.run(r.close_rpc)
    finally:
        runner.run(ctx.__aexit__, None, None, None)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals")
def test_keyboard_interrupt_cancels_the_coroutine(runner):
    started, cancelled = threading.Event(), threading.Event()

    async def blocking():
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def interrupt():
        started.wait(5)
        time.sleep(0.05)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Thread(target=interrupt)
    try:
        timer.start()
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            runner.run(blocking)
        assert time.monotonic() - start < 5
    finally:
        timer.join()
        signal.signal(signal.SIGINT, previous)
    assert cancelled.wait(2), "the coroutine was not cancelled"
    assert runner.run(add, 1) == 1  # the loop survives
