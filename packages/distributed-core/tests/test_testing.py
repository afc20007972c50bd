"""The helpers other packages' tests use: gen_test, check_leaks, serve, free_port."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from distributed_core import rpc
from distributed_core.testing import check_leaks, free_port, gen_test, open_fds, serve


def test_check_leaks_catches_a_socket():
    leaked = []
    try:
        with pytest.raises(AssertionError, match="leaked file descriptors: ") as info:
            with check_leaks(grace=0.1):
                leaked.append(socket.socket())
        assert f"{leaked[0].fileno()}->socket:" in str(info.value)
    finally:
        leaked[0].close()


def test_check_leaks_catches_a_thread():
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="leaky-thread")
    try:
        with pytest.raises(AssertionError, match="leaked threads: leaky-thread"):
            with check_leaks(grace=0.1):
                t.start()
    finally:
        stop.set()
        t.join()


def test_check_leaks_waits_for_late_cleanup():
    s = socket.socket()
    with check_leaks(grace=2):
        s2 = socket.socket()
        threading.Timer(0.1, s2.close).start()
    s.close()


def test_check_leaks_passes_when_clean():
    with check_leaks():
        s = socket.socket()
        s.close()


def test_gen_test_runs_coroutines_with_arguments():
    seen = []

    @gen_test()
    async def inner(x, y=2):
        await asyncio.sleep(0)
        seen.append(x + y)

    inner(1, y=3)
    assert seen == [4]


def test_gen_test_timeout():
    @gen_test(timeout=0.1)
    async def slow():
        await asyncio.sleep(10)

    with pytest.raises(asyncio.TimeoutError):
        slow()


def test_gen_test_catches_leaked_tasks():
    @gen_test()
    async def leaky():
        asyncio.get_running_loop().create_task(asyncio.sleep(10))

    with pytest.raises(AssertionError, match="left 1 tasks running"):
        leaky()


def test_gen_test_catches_leaked_sockets():
    leaked = []

    @gen_test()
    async def leaky():
        leaked.append(socket.socket())

    try:
        with pytest.raises(AssertionError, match="leaked file descriptors"):
            leaky()
    finally:
        leaked[0].close()


def test_free_port_is_bindable():
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_open_fds_sees_new_sockets():
    before = open_fds()
    with socket.socket() as s:
        assert s.fileno() in open_fds() - before


@gen_test()
async def test_serve_closes_the_server():
    async with serve({"hi": lambda comm: "hello"}, name="helper") as server:
        async with rpc(server.address) as r:
            assert await r.hi() == "hello"
    assert server._closing
    assert not server.comms
