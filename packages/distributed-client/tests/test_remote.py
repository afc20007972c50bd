"""Module-level scatter/gather/delete/clear and RemoteData."""

from __future__ import annotations

import asyncio
import pickle

import pytest

from distributed_client import RemoteData, clear, delete, gather, scatter


def test_scatter_gather_list(center):
    rds = scatter(center, [1, "two", [3]])
    assert [type(r) for r in rds] == [RemoteData] * 3
    assert gather(center, rds) == [1, "two", [3]]
    assert rds[1].get() == "two"
    assert rds[0].status == "finished"


def test_scatter_dict_uses_keys(center):
    rds = scatter(center, {"remote-x": 10, ("remote-y", 1): 20})
    assert set(rds) == {"remote-x", ("remote-y", 1)}
    assert rds["remote-x"].key == "remote-x"
    assert gather(center, ["remote-x", ("remote-y", 1)]) == [10, 20]
    assert gather(center, {"a": rds["remote-x"]}) == {"a": 10}


def test_user_built_remote_data_names_existing_data(center):
    held = scatter(center, {"remote-named": 5})  # noqa: F841 - keeps the data alive
    rd = RemoteData("remote-named", center)
    assert rd.get() == 5
    assert rd.status == "unknown"
    assert "remote-named" in repr(rd) and center in repr(rd)
    copy = pickle.loads(pickle.dumps(rd))
    assert copy.key == rd.key and copy.center == rd.center


def test_gather_missing_keys_names_them(center):
    with pytest.raises(KeyError, match="definitely-missing"):
        gather(center, ["definitely-missing"])
    with pytest.raises(TypeError, match="list"):
        gather(center, "just-a-string")


def test_delete_and_clear(center):
    rds = scatter(center, {"del-a": 1, "del-b": 2})
    delete(center, ["del-a"])
    with pytest.raises(KeyError, match="del-a"):
        gather(center, ["del-a"])
    assert gather(center, [rds["del-b"]]) == [2]
    clear(center)
    with pytest.raises(KeyError):
        gather(center, ["del-b"])


def test_replicas(center, cluster):
    [rd] = scatter(center, [42], replicas=2)
    holders = rd._session.state.who_has([rd.key])[rd.key]
    assert sorted(holders) == sorted(cluster.worker_addresses)


def test_asynchronous_forms(center):
    async def main():
        rds = await scatter(center, [1, 2], asynchronous=True)
        assert await gather(center, rds, asynchronous=True) == [1, 2]
        assert await rds[0].get() == 1
        await delete(center, rds, asynchronous=True)

    asyncio.run(main())
