"""A holder that stops answering, as separate processes on 127.0.0.1 (issue 8).

A SIGSTOPped process sends nothing (no FIN, no RST, no reply), like a host
that vanished; its kernel still accepts connections. Worker B computes
``len(x)`` with a ``who_has`` hint naming the stopped holder A: it replies
``missing-data`` within its fetch bound rather than hanging, or gets ``x``
from worker C when C has it too. Every stopped process is continued and
stopped again at the end (the ``procs`` fixture sends SIGCONT, then SIGTERM).

The workers run from a short script so the test can set ``fetch_timeout``
(the ``dworker`` flag is added separately).
"""

from __future__ import annotations

import signal
import sys
import time

import pytest

FETCH_TIMEOUT = 2.0
PEER_CONNECT_TIMEOUT = 1.0
CONNECT_TIMEOUT = 2.0
MARGIN = 5.0  # generous: only a hang (or a bound not applied) goes past it

WORKER_SCRIPT = """
import asyncio, sys
from distributed_worker import Worker

async def main(center, name, fetch_timeout, peer_connect_timeout, connect_timeout):
    w = Worker(center, ncores=1, name=name, fetch_timeout=float(fetch_timeout),
               peer_connect_timeout=float(peer_connect_timeout),
               connect_timeout=float(connect_timeout))
    await w.start("tcp://127.0.0.1:0")
    print("Start worker at", w.address, flush=True)
    await w.finished()

asyncio.run(main(*sys.argv[1:]))
"""


def start_worker(procs, proc_type, center, name):
    proc = proc_type(
        [
            "-c",
            WORKER_SCRIPT,
            center,
            name,
            str(FETCH_TIMEOUT),
            str(PEER_CONNECT_TIMEOUT),
            str(CONNECT_TIMEOUT),
        ],
        name=f"worker {name}",
    )
    procs.append(proc)
    proc.address = proc.wait_line("Start worker at ")
    return proc


def start_cluster(procs, spawn_center, names):
    # the Center keeps listing the stopped holder for the whole test, as it
    # would before its heartbeat timeout: its who_has still names A
    center = spawn_center(heartbeat_timeout=120.0)
    return center, [start_worker(procs, type(center), center.address, n) for n in names]


def timed(client, address, **kwargs):
    start = time.monotonic()
    reply = client.call(address, "compute", timeout=FETCH_TIMEOUT + 30, **kwargs)
    return reply, time.monotonic() - start


def test_sigstopped_holder_gives_missing_data_within_fetch_timeout(procs, spawn_center, client):
    center, (a, b) = start_cluster(procs, spawn_center, ["a", "b"])
    client.call(a.address, "update_data", data={"x": list(range(10))})
    # b fetches x from a once, so b keeps an open connection to a
    reply, _ = timed(client, b.address, function=len, key="n0", args=("x",), needed=["x"],
                     who_has={"x": [a.address]})  # fmt: skip
    assert reply["status"] == "OK", reply

    a.signal(signal.SIGSTOP)
    try:
        # over the open connection: the request is sent, no reply comes
        reply, elapsed = timed(client, b.address, function=len, key="n1", args=("x",),
                               needed=["x"], who_has={"x": [a.address]})  # fmt: skip
        assert reply == {"status": "missing-data", "key": "n1", "keys": ["x"]}
        assert elapsed < FETCH_TIMEOUT + MARGIN
        print(f"\nSIGSTOPped holder, open connection: missing-data after {elapsed:.2f}s "
              f"(fetch_timeout={FETCH_TIMEOUT})", file=sys.stderr)  # fmt: skip

        # over a new connection: the kernel accepts it, the hello is never answered
        reply, elapsed = timed(client, b.address, function=len, key="n2", args=("x",),
                               needed=["x"], who_has={"x": [a.address]})  # fmt: skip
        assert reply == {"status": "missing-data", "key": "n2", "keys": ["x"]}
        assert elapsed < PEER_CONNECT_TIMEOUT + MARGIN
        print(f"SIGSTOPped holder, new connection: missing-data after {elapsed:.2f}s "
              f"(peer_connect_timeout={PEER_CONNECT_TIMEOUT})", file=sys.stderr)  # fmt: skip

        # b still works
        client.call(b.address, "update_data", data={"y": "abc"})
        reply, _ = timed(client, b.address, function=len, key="n3", args=("y",), needed=["y"])
        assert reply["status"] == "OK", reply

        # the center vanishes too: asking it who has x is bounded by connect_timeout
        center.signal(signal.SIGSTOP)
        try:
            reply, elapsed = timed(client, b.address, function=len, key="n4", args=("x",),
                                   needed=["x"])  # fmt: skip
            assert reply == {"status": "missing-data", "key": "n4", "keys": ["x"]}
            assert elapsed < CONNECT_TIMEOUT + MARGIN
            print(f"SIGSTOPped center (no hint): missing-data after {elapsed:.2f}s "
                  f"(connect_timeout={CONNECT_TIMEOUT})", file=sys.stderr)  # fmt: skip
            # and update_data's wait for the center's acknowledgement is bounded too
            start = time.monotonic()
            with pytest.raises(TimeoutError, match="did not acknowledge"):
                client.call(b.address, "update_data", data={"z": 1}, timeout=CONNECT_TIMEOUT + 30)
            elapsed = time.monotonic() - start
            assert elapsed < CONNECT_TIMEOUT + MARGIN
            print(f"SIGSTOPped center: update_data(report=True) failed after {elapsed:.2f}s "
                  f"(connect_timeout={CONNECT_TIMEOUT})", file=sys.stderr)  # fmt: skip
        finally:
            center.signal(signal.SIGCONT)
    finally:
        a.signal(signal.SIGCONT)
    assert a.alive() and b.alive()


def test_sigstopped_holder_fails_over_to_another_holder(procs, spawn_center, client):
    center, (a, b, c) = start_cluster(procs, spawn_center, ["a", "b", "c"])
    x = list(range(7))
    client.call(a.address, "update_data", data={"x": x})
    client.call(c.address, "update_data", data={"x": x})
    reply, _ = timed(client, b.address, function=len, key="n0", args=("x",), needed=["x"],
                     who_has={"x": [a.address]})  # fmt: skip
    assert reply["status"] == "OK", reply

    a.signal(signal.SIGSTOP)
    try:
        # the hint names only a: a times out, the Center names a and c, c serves
        reply, elapsed = timed(client, b.address, function=len, key="n1", args=("x",),
                               needed=["x"], who_has={"x": [a.address]})  # fmt: skip
        assert reply["status"] == "OK", reply
        assert client.call(b.address, "get_data", keys=["n1"]) == {"n1": 7}
        assert elapsed < FETCH_TIMEOUT + MARGIN
        print(f"\nSIGSTOPped holder, x also on c: OK after {elapsed:.2f}s", file=sys.stderr)

        # the hint names both, in either order; no hint: the Center names both
        for i, who_has in enumerate(({"x": [a.address, c.address]}, None)):
            reply, _ = timed(client, b.address, function=len, key=f"m{i}", args=("x",),
                             needed=["x"], who_has=who_has)  # fmt: skip
            assert reply["status"] == "OK", reply
            assert client.call(b.address, "get_data", keys=[f"m{i}"]) == {f"m{i}": 7}
    finally:
        a.signal(signal.SIGCONT)
    # a answers again once continued
    assert client.call(a.address, "get_data", keys=["x"]) == {"x": x}
