"""Issue 10: pinned keys, named datasets, uploaded files and declared resources in the Center."""

from __future__ import annotations

import pytest

from distributed_center import Center
from distributed_center.datasets import Datasets, UploadedFiles
from distributed_center.state import CenterState
from distributed_core import RemoteError, rpc
from distributed_core.testing import gen_test

A = "tcp://127.0.0.1:1001"


def test_pins_are_counted():
    s = CenterState()
    s.pin(["x", "y"])
    s.pin(["x"])
    assert s.is_pinned("x") and s.is_pinned("y") and not s.is_pinned("z")
    assert s.unpin(["x", "y", "z"]) == ["y"]  # x is still pinned once; z never was
    assert s.is_pinned("x") and not s.is_pinned("y")
    assert s.unpin(["x"]) == ["x"]
    assert s.leases.pinned == {}
    with pytest.raises(TypeError, match="wrap a single key in a list"):
        s.pin("x")


def test_pins_survive_a_worker_and_its_keys_leaving():
    s = CenterState()
    s.register(A, keys=["x"])
    s.pin(["x"])
    assert s.unregister(A) == ["x"]  # the data is lost with its only holder...
    assert s.is_pinned("x")  # ...but the name still pins it (a recomputed copy stays kept)


def test_datasets_table():
    s = CenterState()
    d = Datasets(s)
    d.publish("a", ["x", "y"], b"blob")
    assert d.get("a") == {"keys": ["x", "y"], "data": b"blob"}
    assert s.is_pinned("x") and s.is_pinned("y")
    with pytest.raises(KeyError, match="'a' already exists; unpublish it first or pass override"):
        d.publish("a", ["z"], b"")
    d.publish("a", ["y", "z"], b"two", override=True)  # x unpinned, y stays, z pinned
    assert not s.is_pinned("x") and s.is_pinned("y") and s.is_pinned("z")
    d.publish("b", [], b"plain value")
    assert d.names() == ["a", "b"]
    with pytest.raises(
        KeyError, match=r"no dataset named 'c' on this center; published datasets: 'a', 'b'"
    ):
        d.get("c")
    assert sorted(d.unpublish("a")) == ["y", "z"]
    assert s.leases.pinned == {}
    with pytest.raises(KeyError, match="published datasets: 'b'"):
        d.unpublish("a")
    with pytest.raises(TypeError, match="non-empty str"):
        d.publish("", [], b"")
    with pytest.raises(TypeError, match="must be bytes"):
        d.publish("c", [], "text")
    assert d.names() == ["b"]


def test_uploaded_files_are_bounded():
    u = UploadedFiles(max_bytes=10)
    u.add("a.py", b"12345")
    u.add("b.py", b"123")
    u.add("a.py", b"1234567")  # replaces a.py: 7 + 3 bytes, and goes last
    assert u.items() == [["b.py", b"123"], ["a.py", b"1234567"]]
    with pytest.raises(ValueError, match=r"center.max_upload_bytes \(10\)"):
        u.add("c.py", b"1")
    assert u.nbytes == 10
    with pytest.raises(TypeError, match="bare file name"):
        u.add("../x.py", b"")


@gen_test()
async def test_dataset_ops_over_the_wire(running_center):
    async with running_center() as center, rpc(center.address) as r:
        assert "datasets" in (await r.identity())["features"]
        assert await r.list_datasets() == []
        await r.publish_dataset(name="d", keys=["k1", ("tuple", 1)], data=b"\x00\x01")
        assert center.state.is_pinned("k1") and center.state.is_pinned(("tuple", 1))
        got = await r.get_dataset(name="d")
        assert got["data"] == b"\x00\x01" and len(got["keys"]) == 2
        assert await r.list_datasets() == ["d"]
        with pytest.raises(KeyError, match="no dataset named 'e'.*'d'"):
            await r.get_dataset(name="e")
        with pytest.raises(KeyError, match="already exists"):
            await r.publish_dataset(name="d", keys=[], data=b"")
        await r.unpublish_dataset(name="d")
        assert await r.list_datasets() == [] and center.state.leases.pinned == {}
        assert await r.ping() == "pong"  # still serving after the errors


@gen_test()
async def test_resources_and_uploads_at_registration(running_center, fake_worker, monkeypatch):
    async with running_center() as center, rpc(center.address) as r:
        await r.upload_file(filename="m.py", data=b"X = 1\n")
        w = fake_worker(center.address, A)
        reply = await w.register(resources={"GPU": 2.0})
        assert reply["uploads"] == [["m.py", b"X = 1\n"]]
        assert (await r.workers())[A]["resources"] == {"GPU": 2.0}
        w.close()
        with pytest.raises((TypeError, RemoteError), match="resources"):
            await r.register(address="tcp://127.0.0.1:1002", resources={"GPU": "two"})


def test_upload_bound_from_configuration(monkeypatch):
    monkeypatch.setenv("DISTRIBUTED_CENTER__MAX_UPLOAD_BYTES", "3")
    from distributed_core import config

    config.reset()
    try:
        assert Center().uploaded.max_bytes == 3
    finally:
        monkeypatch.delenv("DISTRIBUTED_CENTER__MAX_UPLOAD_BYTES")
        config.reset()


def test_dashboard_rows_show_resources():
    from distributed_center.dashboard.views import workers_table

    s = CenterState()
    s.register(A, resources={"GPU": 2.0})
    s.register("tcp://127.0.0.1:1002")
    rows = {r["address"]: r for r in workers_table(s.workers())}
    assert rows[A]["resources"] == {"GPU": 2.0}
    assert rows["tcp://127.0.0.1:1002"]["resources"] == {}
