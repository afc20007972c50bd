"""EventLog: bounded ring buffers, counters, cursors; memory per event measured."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from distributed_center.events import EventLog, key_prefix


def _events(n, start=0):
    return [[f"inc-{i:032x}", 1000.0 + i, 1000.5 + i, "dworker-compute_0", "OK", 28]
            for i in range(start, start + n)]  # fmt: skip


def test_key_prefix():
    assert key_prefix("inc-1f2e") == "inc"
    assert key_prefix(("sum", 4)) == "sum"
    assert key_prefix("x") == "x"
    assert key_prefix(b"load_csv-1") == "load"
    assert key_prefix(7) == "7"


def test_task_events_counters_and_cursor():
    log = EventLog(task_events=5)
    log.add_task_events("tcp://w:1", _events(3))
    log.add_task_events("tcp://w:1", [["boom-1", 1.0, 2.0, "t", "error", 0]])
    assert log.tasks_completed == 3 and log.tasks_erred == 1
    tasks, cursor = log.tasks_since(0)
    assert [t.key for t in tasks][-1] == "boom-1" and tasks[0].prefix == "inc"
    assert log.cluster[-1]["kind"] == "task-erred" and log.cluster[-1]["key"] == "boom-1"
    more, _ = log.tasks_since(cursor)
    assert more == []
    log.add_task_events("tcp://w:1", _events(10, 100))
    tasks, _ = log.tasks_since(cursor)
    assert len(tasks) == 5  # only what the ring still holds
    assert len(log.tasks) == 5


def test_transfer_events_and_bad_entries():
    log = EventLog()
    log.add_task_events("w", [["transfer", "tcp://p:1", 2, 4096, 1.0, 1.5], ["x"], 7, None])
    assert log.transfers == 1 and log.transfer_bytes == 4096
    assert log.bad_events == 3
    with pytest.raises(TypeError):
        log.add_task_events("w", "not a list")


def test_rates():
    now = [0.0]
    log = EventLog(clock=lambda: now[0])
    log.sample(memory=10)
    log.add_task_events("w", _events(20))
    log.add_task_events("w", [["transfer", "p", 1, 1000, 0, 1]])
    now[0] = 2.0
    log.sample(memory=30)
    (rate,) = log.rates()
    assert rate["tasks_per_s"] == 10.0 and rate["bytes_per_s"] == 500.0 and rate["memory"] == 30


def test_cluster_events_bounded():
    log = EventLog(cluster_events=10)
    for i in range(100):
        log.add("worker-joined", f"w{i}", "joined")
    assert len(log.cluster) == 10
    assert [e["worker"] for e in log.cluster_since(0)][-1] == "w99"


def test_memory_is_bounded_under_100000_tasks():
    """100,000 task events into a 10,000-event ring: memory after 100,000 stays
    that of a full ring (measured, not assumed); also the bytes per event."""
    log = EventLog(task_events=10_000)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for start in range(0, 10_000, 1000):
            log.add_task_events("tcp://127.0.0.1:40000", _events(1000, start))
        full = tracemalloc.get_traced_memory()[0] - base
        for start in range(10_000, 100_000, 1000):
            log.add_task_events("tcp://127.0.0.1:40000", _events(1000, start))
        gc.collect()
        after = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    per_event = full / 10_000
    print(f"EventLog: {per_event:.0f} bytes per task event; full ring {full / 1e6:.2f} MB, "
          f"after 100,000 tasks {after / 1e6:.2f} MB")  # fmt: skip
    assert len(log.tasks) == 10_000 and log.tasks_completed == 100_000
    assert per_event < 500, per_event  # the documented ~350 bytes, with slack
    assert after < full * 1.2, (full, after)
