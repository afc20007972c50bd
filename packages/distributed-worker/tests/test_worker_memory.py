"""Unit tests of the memory parts: parsing limits, the policy, the spill buffer."""

from __future__ import annotations

import logging
import os
import threading

import numpy as np
import pytest

from distributed_worker.memory import (
    MemoryPolicy,
    cgroup_memory_limit,
    parse_fraction,
    parse_memory_limit,
)
from distributed_worker.spill import SpillBuffer, dump, load
from distributed_worker.store import DataStore


@pytest.mark.parametrize(
    "text, expected",
    [
        ("4GiB", 4 * 2**30), ("500MB", 500 * 10**6), ("500 mb", 500 * 10**6),
        ("1e9", 10**9), ("123", 123), (2**20, 2**20), ("1.5kB", 1500),
        ("0.5", 500), ("1", 1000), ("auto", 1000), ("0", None), ("none", None), (None, None),
    ],
)  # fmt: skip
def test_parse_memory_limit(text, expected):
    assert parse_memory_limit(text, total=1000) == expected


def test_parse_memory_limit_auto_divides_among_processes():
    assert parse_memory_limit("auto", nprocs=4, total=1000) == 250


@pytest.mark.parametrize("bad", ["-1", "-2GB", "lots", "5XB", "1.2.3", True])
def test_parse_memory_limit_refuses_with_a_reason(bad):
    with pytest.raises(ValueError, match="memory limit"):
        parse_memory_limit(bad, total=1000)


def test_parse_fraction():
    assert parse_fraction("target", "0.6") == 0.6
    assert parse_fraction("target", 1) == 1.0
    for off in (False, None, "False", "off", "none"):
        assert parse_fraction("spill", off) is None
    for bad in ("0", "1.5", "x", -0.1):
        with pytest.raises(ValueError, match="fraction"):
            parse_fraction("pause", bad)


def test_policy_thresholds_and_disabling():
    p = MemoryPolicy(1000)
    assert [p.action(r) for r in (500, 650, 750, 850, 990)] == [
        "ok", "ok", "spill", "pause", "terminate",
    ]  # fmt: skip
    assert p.target_bytes == 600 and p.spill_goal(750) == 150
    off = MemoryPolicy(1000, spill=None, pause=None, terminate=None)
    assert off.action(999) == "ok" and not off.should_pause(999)
    assert MemoryPolicy(None).action(10**12) == "ok"


def test_cgroup_v2_limit_is_the_smallest_on_the_path(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "a" / "memory.max").write_text("1000\n")
    (tmp_path / "a" / "b" / "memory.max").write_text("max\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/a/b\n")
    assert cgroup_memory_limit(str(tmp_path), str(proc)) == 1000
    proc.write_text("0::/\n")
    assert cgroup_memory_limit(str(tmp_path), str(proc)) is None
    assert cgroup_memory_limit(str(tmp_path), str(tmp_path / "missing")) is None


def test_cgroup_v1_limit(tmp_path):
    (tmp_path / "memory" / "x").mkdir(parents=True)
    (tmp_path / "memory" / "x" / "memory.limit_in_bytes").write_text("5000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/x\n1:cpu:/\n0::/\n")
    assert cgroup_memory_limit(str(tmp_path), str(proc)) == 5000
    (tmp_path / "memory" / "x" / "memory.limit_in_bytes").write_text(f"{2**63 - 4096}\n")
    assert cgroup_memory_limit(str(tmp_path), str(proc)) is None


def test_dump_load_round_trip_without_copying_arrays():
    a = np.arange(1_000_000, dtype="f8")
    value = {"a": a, "t": (1, "x"), "b": b"y" * 100_000}
    data = bytearray(b"".join(bytes(memoryview(f).cast("B")) for f in dump(value)))
    back = load(data)
    assert back["t"] == (1, "x") and back["b"] == value["b"]
    np.testing.assert_array_equal(back["a"], a)
    assert np.shares_memory(back["a"], np.frombuffer(data, dtype="u1"))


def test_spill_buffer_keeps_target_in_memory_and_reads_back(tmp_path):
    sizes: dict = {}
    buf = SpillBuffer(2500, sizes.__getitem__, str(tmp_path))
    arrays = {i: np.full(125, i, dtype="f8") for i in range(10)}  # 1000 bytes each
    for k, v in arrays.items():
        sizes[k] = 1000
        buf[k] = v
    assert buf.memory_bytes <= 2500
    assert buf.spilled_bytes == 10_000 - buf.memory_bytes
    assert len(os.listdir(buf.directory)) == len(buf.spilled())
    for k, v in arrays.items():
        np.testing.assert_array_equal(buf[k], v)
    assert buf.memory_bytes <= 2500
    for k in list(arrays):
        del buf[k]
    assert os.listdir(buf.directory) == [] and len(buf) == 0
    buf.close()
    assert not os.path.exists(buf.directory)


def test_unpicklable_values_stay_in_memory_logged_once(tmp_path, caplog):
    sizes: dict = {}
    buf = SpillBuffer(100, sizes.__getitem__, str(tmp_path))
    locks = [threading.Lock() for _ in range(3)]
    with caplog.at_level(logging.WARNING, logger="distributed_worker.spill"):
        for i, lock in enumerate(locks):
            sizes[("lock", i)] = 80
            buf[("lock", i)] = lock
        sizes["x"] = 80
        buf["x"] = b"x" * 80
        sizes["y"] = 80
        buf["y"] = b"y" * 80
    assert buf.spilled() == ["x"]  # the others still spill
    assert [buf[("lock", i)] for i in range(3)] == locks  # never lost
    assert buf["x"] == b"x" * 80
    warnings = [r for r in caplog.records if "cannot be serialized" in r.getMessage()]
    assert len(warnings) == 1
    buf.close()


def test_data_store_with_target_reports_memory_and_spills(tmp_path):
    s = DataStore(target=20_000, local_directory=str(tmp_path))
    for i in range(10):
        s.put(i, np.full(1000, i, dtype="f8"))
    mem = s.memory()
    assert mem["managed"] <= 20_000 and mem["spilled"] == 80_000 - mem["managed"]
    assert mem["spilled_disk"] >= mem["spilled"]
    assert s.total_nbytes == 80_000  # spilled values count
    assert [int(v[0]) for v in s.get(range(10)).values()] == list(range(10))
    s.delete(range(10))
    assert s.memory() == {"managed": 0, "spilled": 0, "spilled_disk": 0}
    directory = s.spill.directory
    s.close()
    assert not os.path.exists(directory)
