"""Peer fetch never hangs: a silent holder or Center fails over, then ``missing-data``.

Issue 8: a holder whose host vanished sends nothing (no FIN, no RST). The
retry policy in `fetch_from_peers` is tested without sockets, against fake
holders and a fake Center that charge a virtual clock for each call (a
silent one charges its whole bound, then raises, as the worker's bounded
calls do). Then the worker's bounded calls against a real silent server on
127.0.0.1, in process.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest

from distributed_center import Center
from distributed_core import CommClosedError, Server, rpc
from distributed_core.testing import gen_test
from distributed_worker import Worker
from distributed_worker.fetch import MISSING_RETRY_DELAYS, FetchTimeoutError, fetch_from_peers

T = 10.0  # the fake holders' fetch_timeout, in virtual seconds
C = 10.0  # the fake Center's bound (connect_timeout), in virtual seconds
QUICK = 0.001  # what an answer (or a refusal) costs


class FakeCluster:
    """Holders and a Center as plain functions, charging a virtual clock."""

    def __init__(self, holders: dict, center=None):
        # address -> {key: value} | "silent" | "refuses" | "errors"
        self.holders = holders
        # {key: [addresses]} | "silent"
        self.center = center if center is not None else {}
        self.now = 0.0
        self.get_calls: list[tuple[str, list]] = []
        self.center_calls: list[list] = []

    async def get_data(self, address, keys):
        self.get_calls.append((address, list(keys)))
        behaviour = self.holders.get(address, "refuses")
        if behaviour == "silent":
            self.now += T
            raise FetchTimeoutError(address, keys, T)
        self.now += QUICK
        if behaviour == "refuses":
            raise CommClosedError(f"could not connect to {address}: refused")
        if behaviour == "errors":
            raise RuntimeError("holder broke")
        return {k: behaviour[k] for k in keys if k in behaviour}

    async def ask_center(self, keys):
        self.center_calls.append(list(keys))
        if self.center == "silent":
            self.now += C
            raise asyncio.TimeoutError("center did not answer who_has")
        self.now += QUICK
        return {k: list(self.center.get(k, [])) for k in keys}

    async def sleep(self, seconds):
        self.now += seconds

    async def fetch(self, keys, who_has):
        return await fetch_from_peers(
            keys,
            who_has,
            ask_center=self.ask_center,
            get_data=self.get_data,
            self_address="tcp://me:1",
            sleep=self.sleep,
        )

    def asked(self, address) -> int:
        return sum(1 for a, _ in self.get_calls if a == address)


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("seed", range(8))  # either holder may be picked first
def test_holder_times_out_then_next_holder(seed):
    random.seed(seed)
    fake = FakeCluster({"A": "silent", "B": {"x": 1}})
    data, missing = run(fake.fetch(["x"], {"x": ["A", "B"]}))
    assert (data, missing) == ({"x": 1}, [])
    assert fake.asked("B") == 1 and fake.asked("A") <= 1
    assert fake.center_calls == []  # the hint was enough
    assert fake.now <= T + QUICK


@pytest.mark.parametrize("seed", range(4))
def test_all_hinted_holders_fail_then_center_names_another(seed):
    random.seed(seed)
    fake = FakeCluster(
        {"A": "silent", "B": "refuses", "C": {"x": 1}}, center={"x": ["A", "B", "C"]}
    )
    data, missing = run(fake.fetch(["x"], {"x": ["A", "B"]}))
    assert (data, missing) == ({"x": 1}, [])
    assert fake.center_calls == [["x"]]
    # the Center listed A and B again: they had failed, so only C was asked
    assert (fake.asked("A"), fake.asked("B"), fake.asked("C")) == (1, 1, 1)
    assert fake.now <= T + QUICK + QUICK + QUICK  # one silent holder's bound, quick calls


def test_nobody_has_it_is_missing_within_bound():
    # the vanished holder is still listed by the Center (it has not dropped it yet)
    fake = FakeCluster({"A": "silent"}, center={"x": ["A"]})
    data, missing = run(fake.fetch(["x"], {"x": ["A"]}))
    assert (data, missing) == ({}, ["x"])
    assert fake.asked("A") == 1
    # the Center is asked once, then again after each short pause
    assert len(fake.center_calls) == 1 + len(MISSING_RETRY_DELAYS)
    bound = T + len(fake.center_calls) * QUICK + sum(MISSING_RETRY_DELAYS)
    assert fake.now <= bound + 1e-9


def test_no_hint_and_center_knows_nothing_is_missing_quickly():
    fake = FakeCluster({})
    data, missing = run(fake.fetch(["x", "y"], None))
    assert (data, missing) == ({}, ["x", "y"])
    assert fake.get_calls == []
    assert fake.now <= (1 + len(MISSING_RETRY_DELAYS)) * QUICK + sum(MISSING_RETRY_DELAYS) + 1e-9


def test_silent_center_is_asked_once_then_keys_are_missing():
    fake = FakeCluster({"A": "silent", "B": {"y": 2}}, center="silent")
    data, missing = run(fake.fetch(["x", "y"], {"x": ["A"], "y": ["B"]}))
    assert (data, missing) == ({"y": 2}, ["x"])
    assert len(fake.center_calls) == 1  # not asked again after it failed
    assert fake.now <= T + C + QUICK


def test_center_answer_that_is_not_a_dict_counts_as_failed():
    fake = FakeCluster({})

    async def bad_center(keys):
        fake.center_calls.append(keys)
        return ["not", "a", "dict"]

    fake.ask_center = bad_center
    assert run(fake.fetch(["x"], None)) == ({}, ["x"])
    assert len(fake.center_calls) == 1


@pytest.mark.parametrize("behaviour", ["silent", "refuses", "errors"])
def test_failed_holder_is_not_asked_again_in_the_same_fetch(behaviour):
    # A fails on its first call (for x and y together); the Center then names A
    # again for both keys, and for z, which the hint did not mention: A is not
    # asked again for any key, C serves them all.
    fake = FakeCluster(
        {"A": behaviour, "C": {"x": 1, "y": 2, "z": 3}},
        center={"x": ["A", "C"], "y": ["A", "C"], "z": ["A", "C"]},
    )
    data, missing = run(fake.fetch(["x", "y", "z"], {"x": ["A"], "y": ["A"]}))
    assert (data, missing) == ({"x": 1, "y": 2, "z": 3}, [])
    assert fake.get_calls[0] == ("A", ["x", "y"])
    assert fake.asked("A") == 1


def test_holder_without_the_key_is_not_failed_for_other_keys():
    # B answers but does not hold x (allow_missing): it is still asked for y later
    fake = FakeCluster({"B": {"y": 2}, "C": {"x": 1}}, center={"x": ["C"], "y": ["B"]})
    data, missing = run(fake.fetch(["x", "y"], {"x": ["B"]}))
    assert (data, missing) == ({"x": 1, "y": 2}, [])


def test_on_fetched_reports_a_key_before_a_slow_holder_answers():
    async def main():
        release = asyncio.Event()
        seen = []

        async def get_data(address, keys):
            if address == "A":  # silent until x has been reported
                await release.wait()
                raise FetchTimeoutError(address, keys, T)
            return {"x": 1}

        async def center(keys):
            return {}

        def on_fetched(key, value):
            seen.append((key, value))
            release.set()

        return await asyncio.wait_for(
            fetch_from_peers(
                ["x", "y"],
                {"x": ["B"], "y": ["A"]},
                ask_center=center,
                get_data=get_data,
                on_fetched=on_fetched,
                sleep=FakeCluster({}).sleep,
            ),
            10,
        ), seen

    (data, missing), seen = run(main())
    assert (data, missing, seen) == ({"x": 1}, ["y"], [("x", 1)])


def test_cancelled_fetch_cancels_its_calls():
    async def main():
        started, cancelled = asyncio.Event(), []

        async def hang(address, keys):
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(address)
                raise

        async def center(keys):
            return {}

        task = asyncio.ensure_future(
            fetch_from_peers(["x", "y"], {"x": ["A"], "y": ["B"]}, ask_center=center, get_data=hang)
        )
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sorted(cancelled) == ["A", "B"]

    run(main())


def test_fetch_timeout_error_type():
    e = FetchTimeoutError("tcp://10.0.0.2:4000", ["x", ("y", 1)], 2.5)
    assert isinstance(e, asyncio.TimeoutError)
    assert isinstance(e, TimeoutError) or not issubclass(asyncio.TimeoutError, TimeoutError)
    assert (e.address, e.keys, e.timeout) == ("tcp://10.0.0.2:4000", ["x", ("y", 1)], 2.5)
    text = str(e)
    assert "tcp://10.0.0.2:4000" in text and "fetch_timeout=2.5s" in text and "'x'" in text
    many = str(FetchTimeoutError("tcp://h:1", [f"k{i}" for i in range(100)], 1))
    assert "100 key(s)" in many and "k99" not in many


def test_fetch_timeout_argument_checks():
    for bad in (0, -1, "10", True, float("nan")):  # None: the configured default
        with pytest.raises(ValueError, match="fetch_timeout"):
            Worker("tcp://127.0.0.1:1", fetch_timeout=bad)


# -- the worker's bounded calls, against a real silent server on 127.0.0.1 ---------


class Silent:
    """A server that completes the handshake, then does not answer `ops` until
    ``release`` is set (then answers ``{}``: it holds nothing)."""

    def __init__(self, *ops):
        self.calls: dict = {op: 0 for op in ops}
        self.release = asyncio.Event()
        self.server = Server({op: self._handler(op) for op in ops}, name="silent")

    def _handler(self, op):
        async def handler(comm, **kwargs):
            self.calls[op] += 1
            await self.release.wait()
            return {}

        return handler

    async def __aenter__(self):
        await self.server.listen("tcp://127.0.0.1:0")
        self.address = self.server.address
        return self

    async def __aexit__(self, *exc):
        self.release.set()
        await self.server.close()


class Holder(Silent):
    """A server whose ``get_data`` answers at once from `data`."""

    def __init__(self, data):
        self.calls = {"get_data": 0}
        self.release = asyncio.Event()

        def get_data(comm, keys=(), allow_missing=False):
            self.calls["get_data"] += 1
            return {k: data[k] for k in keys if k in data}

        self.server = Server({"get_data": get_data}, name="holder")


@contextlib.asynccontextmanager
async def center_and_worker(**worker_kwargs):
    center = Center(heartbeat_interval=0.2, heartbeat_timeout=30)
    await center.listen("tcp://127.0.0.1:0")
    w = Worker(center.address, ncores=1, name="b", **worker_kwargs)
    try:
        await w.start("tcp://127.0.0.1:0")
        yield center, w
    finally:
        await w.close()
        await center.close()


@gen_test()
async def test_get_from_silent_peer_raises_fetch_timeout_error():
    async with Silent("get_data") as holder, center_and_worker(fetch_timeout=0.2) as (_, w):
        with pytest.raises(FetchTimeoutError, match="fetch_timeout=0.2s") as info:
            await w._get_from_peer(holder.address, ["x"])
        assert info.value.address == holder.address
        assert w.pool.active == 0  # the connection was discarded, not kept busy


@gen_test()
async def test_compute_with_silent_holder_replies_missing_data():
    async with Silent("get_data") as holder, center_and_worker(fetch_timeout=0.3) as (_, w):
        async with rpc(w.address) as rw:
            reply = await rw.compute(
                function=len, key="n", args=("x",), needed=["x"], who_has={"x": [holder.address]}
            )
        assert reply == {"status": "missing-data", "key": "n", "keys": ["x"]}
        assert holder.calls["get_data"] == 1


@gen_test()
async def test_concurrent_computes_sharing_a_stuck_fetch_ask_the_holder_once():
    async with Silent("get_data") as holder, center_and_worker(fetch_timeout=3) as (_, w):
        async with rpc(w.address) as rw:
            first = asyncio.ensure_future(
                rw.compute(
                    function=len,
                    key="a",
                    args=("x",),
                    needed=["x"],
                    who_has={"x": [holder.address]},
                )
            )
            # fetch_timeout leaves the later computes ample time to join the
            # first fetch while it is stuck on the holder
            while not holder.calls["get_data"]:
                await asyncio.sleep(0.01)
            others = [
                rw.compute(
                    function=len, key=f"b{i}", args=("x",), needed=["x"],
                    who_has={"x": [holder.address]},
                )
                for i in range(3)
            ]  # fmt: skip
            replies = await asyncio.gather(first, *others)
        assert [r["status"] for r in replies] == ["missing-data"] * 4
        # the later computes waited for the first fetch and did not start a
        # second round against the silent holder (which would double the wait)
        assert holder.calls["get_data"] == 1
        assert w._fetching == {}


@gen_test()
async def test_who_has_to_a_silent_center_is_bounded_by_connect_timeout():
    async with Silent("who_has") as center:
        w = Worker(center.address, connect_timeout=0.3)  # not registered: only its rpc is used
        try:
            with pytest.raises(asyncio.TimeoutError, match="connect_timeout=0.3s"):
                await w._ask_center(["x"])
            # and a fetch needing the Center reports the key missing, asking once
            data, missing = await w._fetch(["x"], None)
            assert (data, missing) == ({}, ["x"])
            assert center.calls["who_has"] == 2
        finally:
            await w.close(unregister=False)


@gen_test()
async def test_compute_sharing_a_key_does_not_wait_for_the_other_computes_slow_keys():
    async with (
        Silent("get_data") as slow,
        Holder({"x": "abc"}) as good,
        center_and_worker(fetch_timeout=60) as (_, w),
        rpc(w.address) as rw,
    ):
        # the first compute needs x (from a holder that answers) and y (from
        # one that does not answer until released)
        first = asyncio.ensure_future(
            rw.compute(
                function=len, key="a", args=(["x", "y"],), needed=["x", "y"],
                who_has={"x": [good.address], "y": [slow.address]},
            )
        )  # fmt: skip
        while not slow.calls["get_data"]:
            await asyncio.sleep(0.01)
        # the second needs only x, which the first fetch already has: it does
        # not wait for y's holder
        reply = await rw.compute(function=len, key="b", args=("x",), needed=["x"])
        assert reply["status"] == "OK", reply
        assert not first.done()
        assert good.calls["get_data"] == 1  # x was fetched once, shared
        slow.release.set()  # y's holder answers: it does not have y
        assert await first == {"status": "missing-data", "key": "a", "keys": ["y"]}
