"""Worker <-> center liveness and addresses (issue 8).

In-process tests against a fake Center that heartbeats and can fall silent,
then real processes on loopback, with SIGSTOP standing in for a vanished host
(a stopped process sends nothing, not even FIN or RST).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import pytest

from distributed_core import CommClosedError, parse_address
from distributed_core.testing import gen_test, serve
from distributed_worker import Worker
from distributed_worker.stream import NotACenterError, silence_timeout


class HeartbeatingCenter:
    """Registers report streams, heartbeats on them, and can fall silent."""

    def __init__(self, interval=0.05, announce=True):
        self.interval = interval
        self.announce = announce
        self.registrations: list[dict] = []
        self.streams = []
        self.silent = False
        self.handlers = {"register": self.register}

    async def register(self, comm, stream=False, **msg):
        self.registrations.append(msg)
        self.streams.append(comm)
        reply = {"status": "OK", "heartbeat_interval": 10.0}
        if self.announce:
            reply["center_heartbeats"] = self.interval
        await comm.write(reply)
        reader = asyncio.ensure_future(self._drain(comm))
        try:
            while not comm.closed():
                await asyncio.sleep(self.interval)
                if not self.silent:
                    await comm.write({"op": "heartbeat"})
        except CommClosedError:
            pass
        finally:
            reader.cancel()

    async def _drain(self, comm):
        try:
            while True:
                await comm.read()
        except CommClosedError:
            pass


async def until(predicate, timeout=10.0):
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "condition not met in time"
        await asyncio.sleep(0.005)
    return time.monotonic() - start


def test_silence_timeout_policy():
    assert silence_timeout({"center_heartbeats": 1.0}, 5.0) == 5.0
    assert silence_timeout({"center_heartbeats": 3.0}, 5.0) == 6.0  # twice its interval
    # an old center (no heartbeats): never time out for silence
    assert silence_timeout({"status": "OK", "heartbeat_interval": 1.0}, 5.0) is None
    assert silence_timeout({"center_heartbeats": 1.0}, None) is None
    for bad in (True, 0, -1, "1", None):
        assert silence_timeout({"center_heartbeats": bad}, 5.0) is None


@gen_test()
async def test_silent_center_is_left_and_rejoined_with_every_key():
    fake = HeartbeatingCenter(interval=0.05)
    async with serve(fake.handlers) as server:
        w = Worker(server.address, ncores=1, heartbeat_timeout=0.5)
        await w.start("tcp://127.0.0.1:0")
        try:
            assert w.stream.silence_timeout == 0.5
            await w.update_data(None, data={"x": b"123", ("t", 1): 7}, report=False)
            fake.silent = True  # the connection stays open; nothing more arrives
            await until(lambda: len(fake.registrations) == 2)
            assert w.stream.silences == 1  # left for silence, not a closed connection
            assert sorted(map(repr, fake.registrations[1]["keys"])) == ["'x'", "('t', 1)"]
            assert len(w.store) == 2  # data kept
        finally:
            fake.silent = False
            await w.close()


@gen_test()
async def test_old_center_without_heartbeats_is_never_timed_out():
    fake = HeartbeatingCenter(announce=False)
    async with serve(fake.handlers) as server:
        w = Worker(server.address, ncores=1, heartbeat_timeout=0.2)
        await w.start("tcp://127.0.0.1:0")
        try:
            assert w.stream.silence_timeout is None
        finally:
            await w.close()


@gen_test()
async def test_registration_attempt_is_bounded_by_connect_timeout():
    async def never_answer(comm, **msg):
        await asyncio.Event().wait()

    async with serve({"register": never_answer}) as server:
        w = Worker(server.address, ncores=1, connect_timeout=0.5)
        start = time.monotonic()
        with pytest.raises(CommClosedError, match="connect_timeout"):
            await w.start("tcp://127.0.0.1:0")
        assert time.monotonic() - start < 5


@gen_test()
async def test_a_workers_address_is_not_a_center():
    fake = HeartbeatingCenter()
    async with serve(fake.handlers) as server:
        real = Worker(server.address, ncores=1)
        await real.start("tcp://127.0.0.1:0")
        try:
            wrong = Worker(real.address, ncores=1, connect_timeout=2)
            with pytest.raises(NotACenterError, match="is a worker of the center at"):
                await wrong.start("tcp://127.0.0.1:0")
        finally:
            await real.close()


@gen_test()
async def test_listens_everywhere_and_advertises_the_routed_address():
    fake = HeartbeatingCenter()
    async with serve(fake.handlers) as server:
        w = Worker(server.address, ncores=1)
        await w.start()
        try:
            _, host, port = parse_address(w.address)
            assert host == "127.0.0.1"  # the center is on loopback
            assert w.listen_address.endswith(f":{port}")
            assert w._sockets[0].getsockname()[0] == "0.0.0.0"
            assert fake.registrations[0]["address"] == w.address
        finally:
            await w.close()


@gen_test()
async def test_contact_address_is_registered():
    fake = HeartbeatingCenter()
    async with serve(fake.handlers) as server:
        # port 0: the port actually bound; nothing is ever sent to 203.0.113.9
        w = Worker(server.address, ncores=1, contact_address="tcp://203.0.113.9:0")
        await w.start("tcp://127.0.0.1:0")
        try:
            bound = parse_address(w.listen_address)[2]
            assert w.address == f"tcp://203.0.113.9:{bound}"
            assert fake.registrations[0]["address"] == w.address
        finally:
            await w.close()


@gen_test()
async def test_ipv6_center_and_worker():
    fake = HeartbeatingCenter()
    async with serve(fake.handlers, address="tcp://[::1]:0") as server:
        assert server.address.startswith("tcp://[::1]:")
        w = Worker(server.address, ncores=1)
        await w.start()
        try:
            assert w.address.startswith("tcp://[::1]:")
            assert w._sockets[0].getsockname()[0] == "::"
            assert fake.registrations[0]["address"] == w.address
        finally:
            await w.close()


# -- real processes --------------------------------------------------------------


def test_worker_notices_a_stopped_center_and_rejoins_after_sigcont(
    spawn_center, spawn_worker, client, wait_for
):
    center = spawn_center(heartbeat_interval=0.2, heartbeat_timeout=2.0)
    worker = spawn_worker(center.address, "--heartbeat-timeout", "1", "--connect-timeout", "1")
    data = {f"k{i}": i for i in range(100)}
    client.call(worker.address, "update_data", data=data)
    assert set(client.call(center.address, "who_has")) == set(data)

    center.signal(signal.SIGSTOP)  # a vanished host: nothing is sent, nothing answered
    start = time.monotonic()
    wait_for(
        lambda: not client.call(worker.address, "identity")["registered"],
        timeout=10,
        what="worker noticing the silent center",
    )
    noticed = time.monotonic() - start
    # the worker keeps serving its data meanwhile
    assert client.call(worker.address, "get_data", keys=["k7"]) == {"k7": 7}

    center.signal(signal.SIGCONT)
    wait_for(
        lambda: client.call(worker.address, "identity")["registered"],
        timeout=15,
        what="re-registration after SIGCONT",
    )
    wait_for(
        lambda: set(client.call(center.address, "who_has")) == set(data),
        timeout=10,
        what="every key listed again",
    )
    workers = client.call(center.address, "workers")
    assert list(workers) == [worker.address]  # listed once
    who_has = client.call(center.address, "who_has", keys=list(data))
    assert all(holders == [worker.address] for holders in who_has.values())
    print(f"worker noticed the stopped center after {noticed:.2f}s (heartbeat_timeout 1s)")


def test_dworker_given_a_workers_address(spawn_center, spawn_worker):
    center = spawn_center()
    worker = spawn_worker(center.address)
    p = subprocess.run(
        [sys.executable, "-m", "distributed_worker", worker.address, "--host", "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1
    assert f"is a worker of the center at {center.address}, not a center" in p.stderr
    assert "unknown op" not in p.stderr


def test_dworker_without_host_and_with_contact_address(spawn_center, spawn_worker, client):
    center = spawn_center()
    plain = spawn_worker(center.address, name="plain")  # conftest passes --host 127.0.0.1
    assert plain.address.startswith("tcp://127.0.0.1:")
    # no --host: all interfaces, advertising the address that routes to the center
    everywhere = spawn_worker(center.address, name="everywhere", host=None)
    assert everywhere.address.startswith("tcp://127.0.0.1:")
    assert client.call(everywhere.address, "identity")["name"] == "everywhere"
    contact = spawn_worker(
        center.address, "--contact-address", "tcp://203.0.113.9:0", name="contact"
    )
    port = parse_address(contact.address)[2]
    assert contact.address == f"tcp://203.0.113.9:{port}"
    assert contact.address in client.call(center.address, "workers")


def test_dworker_ipv6(spawn_center, spawn_worker, client):
    center = spawn_center(extra=("--host", "::1"))
    assert center.address.startswith("tcp://[::1]:")
    worker = spawn_worker(center.address, host=None)
    assert worker.address.startswith("tcp://[::1]:")
    client.call(worker.address, "update_data", data={"v6": 6})
    assert client.call(center.address, "who_has", keys=["v6"]) == {"v6": [worker.address]}
