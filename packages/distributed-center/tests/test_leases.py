"""Client leases (issue 10): the pure bookkeeping, then the Center's ops over sockets."""

from __future__ import annotations

import pytest

from distributed_center import Center
from distributed_center.leases import Leases
from distributed_center.state import CenterState
from distributed_core import rpc
from distributed_core.testing import gen_test, serve

# --------------------------------------------------------------------------- Leases


def test_release_returns_only_keys_nobody_else_asked_for(fake_clock):
    leases = Leases(clock=fake_clock)
    assert leases.own("a", ["x", "shared", ("t", 1)]) == []
    assert leases.own("b", ["shared", "y"]) == []
    assert isinstance(leases.owner["shared"], set)
    assert sorted(map(str, leases.release("a"))) == ["('t', 1)", "x"]
    assert leases.owner == {"shared": "b", "y": "b"}  # back to one id, not a set
    assert sorted(leases.release("b")) == ["shared", "y"]
    assert leases.owner == {}


def test_one_client_id_object_per_client():
    """The common case costs one dict slot per key: every key shares the id string."""
    leases = Leases()
    leases.heartbeat("c" * 10)
    leases.own("".join(["c"] * 10), ["x"])  # an equal but distinct string, as decoded
    leases.own("".join(["c"] * 10), ["y"])
    assert leases.owner["x"] is leases.owner["y"] is leases.clients["c" * 10].id


def test_keys_of_a_gone_client_are_returned_for_deletion(fake_clock):
    leases = Leases(clock=fake_clock)
    leases.own("b", ["both"])
    leases.release("a")
    leases.pin(["pinned"])
    assert leases.own("a", ["late", "both", "pinned"]) == ["late"]
    assert "a" not in leases.clients and "late" not in leases.owner


def test_expiry_and_return(fake_clock):
    leases = Leases(clock=fake_clock)
    assert leases.heartbeat("a") is False
    leases.own("b", ["k"])  # b never registered: it expires like any client
    fake_clock.now += 10
    leases.heartbeat("a")
    fake_clock.now += 5
    assert leases.expired(12) == ["b"]
    assert leases.clients["b"].registered is False
    leases.excuse(100)  # the center itself was paused
    assert leases.expired(1) == []
    leases.release("a")
    assert leases.heartbeat("a") is True  # released, yet alive: told so, registered again
    assert leases.heartbeat("a") is False


def test_pins_count_and_survive_release(fake_clock):
    leases = Leases(clock=fake_clock)
    leases.own("a", ["d", "e"])
    leases.pin(["d"])
    leases.pin(["d"])
    assert leases.release("a") == ["e"]
    leases.unpin(["d"])
    assert leases.pinned == {"d": 1}
    leases.unpin(["d", "never-pinned"])
    assert leases.pinned == {}


def test_gone_clients_are_bounded():
    leases = Leases(max_gone=3)
    for c in "abcde":
        leases.release(c)
    assert list(leases.gone) == ["c", "d", "e"]


def test_bad_client_ids_are_clear_errors():
    leases = Leases()
    for bad in (None, "", 3, b"x"):
        with pytest.raises(TypeError, match="client must be a non-empty string"):
            leases.heartbeat(bad)
        with pytest.raises(TypeError, match="client must be a non-empty string"):
            leases.own(bad, ["x"])


def test_center_state_forgets_owners_of_keys_that_lose_their_last_holder():
    state = CenterState()
    state.register("tcp://w:1", keys=["x", "y"])
    state.register("tcp://w:2", keys=["y"])
    state.leases.own("a", ["x", "y"])
    state.remove_keys("tcp://w:1", ["x", "y"])
    assert state.leases.owner == {"y": "a"}  # y still has a holder
    state.unregister("tcp://w:2")
    assert state.leases.owner == {}  # no entry outlives its key
    state.pin(["p"])
    state.unpin(["p"])
    with pytest.raises(TypeError, match="keys must be a list"):
        state.pin("p")


# --------------------------------------------------------------------------- over sockets


class Holder:
    """A minimal worker Server that records delete_data calls."""

    def __init__(self):
        self.deleted = []

    def delete_data(self, comm, keys, report=True):
        self.deleted.extend(keys)
        return "OK"


@gen_test()
async def test_unregister_client_deletes_its_keys_and_late_ones(
    running_center, fake_worker, wait_until
):
    holder = Holder()
    async with (
        running_center(client_timeout=60) as center,
        serve({"delete_data": holder.delete_data}) as server,
        rpc(center.address) as r,
    ):
        w = fake_worker(center.address, server.address)
        await w.register(keys=["old"])
        reply = await r.register_client(client="c1", name="mine")
        assert reply == {"client_timeout": 60, "heartbeat_interval": 10, "expired": False}
        await w.send({"op": "add_keys", "keys": ["a", "b"], "client": "c1"})
        await w.send({"op": "add_keys", "keys": ["other"], "client": "c2"})
        await w.add_keys(["anon"])
        await wait_until(lambda: center.state.n_keys == 5)
        center.state.pin(["b"])  # a dataset names it
        assert (await r.identity())["clients"] == 2
        assert await r.unregister_client(client="c1") == {"released": 1}
        assert holder.deleted == ["a"]
        assert sorted((await r.has_what())[server.address]) == ["anon", "b", "old", "other"]
        # a result of a task that was still running when c1 left
        await w.send({"op": "add_keys", "keys": ["late"], "client": "c1"})
        await wait_until(lambda: "late" in holder.deleted)
        await wait_until(lambda: center.state.who_has(["late"]) == {"late": []})
        with pytest.raises(TypeError, match="client must be a non-empty string"):
            await r.unregister_client(client=7)
        w.close()


@gen_test()
async def test_silent_client_is_released_after_client_timeout(
    running_center, fake_worker, wait_until
):
    holder = Holder()
    async with (
        running_center(client_timeout=0.5) as center,
        serve({"delete_data": holder.delete_data}) as server,
        rpc(center.address) as r,
    ):
        w = fake_worker(center.address, server.address)
        await w.register()
        await r.register_client(client="dies")
        await w.send({"op": "add_keys", "keys": ["k"], "client": "dies"})
        await w.send({"op": "add_keys", "keys": ["j"], "client": "lives"})
        await wait_until(lambda: center.state.n_keys == 2)

        async def lives_heartbeats():  # "dies" sends none
            await r.register_client(client="lives")
            return "k" in holder.deleted

        await wait_until(lives_heartbeats, timeout=10, interval=0.1)
        assert holder.deleted == ["k"]
        assert center.state.who_has(["j"]) == {"j": [server.address]}
        assert (await r.register_client(client="dies"))["expired"] is True
        events = [e for e in center.events.cluster if e["kind"] == "client-released"]
        assert [e["client"] for e in events] == ["dies"]
        w.close()


def test_bad_client_timeout():
    with pytest.raises(ValueError, match="client_timeout must be positive"):
        Center(client_timeout=0)


def test_release_finds_every_key_after_random_changes(fake_clock):
    """The early stop of release (per-client counts) against a full scan."""
    import random

    rng = random.Random(10)
    leases = Leases(clock=fake_clock)
    clients = [f"c{i}" for i in range(5)]
    keys = [f"k{i}" for i in range(60)]
    for _ in range(300):
        op = rng.random()
        if op < 0.6:
            leases.own(rng.choice(clients), rng.sample(keys, rng.randint(1, 5)))
        elif op < 0.8:
            leases.forget(rng.choice(keys))
        else:
            client = rng.choice(clients)
            expected = sorted(
                k
                for k, ids in leases.owner.items()
                if (ids == client if isinstance(ids, str) else client in ids)
                and not isinstance(ids, set)
            )
            assert sorted(leases.release(client)) == expected
            assert client not in leases.keys_of(client)
            assert not leases.keys_of(client)
            leases.heartbeat(client)  # back again, with no keys
        for info in leases.clients.values():
            assert info.nkeys == len(leases.keys_of(info.id))
