"""``dworker`` with its nanny: restarts, --nworkers, signals, death timeout, bad options."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest


def children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children()
    except psutil.Error:
        return []


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def run_cli(*args, timeout=30):
    return subprocess.run(
        [sys.executable, "-m", "distributed_worker", *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--memory-limit", "-1"], ["--memory-limit", "negative"]),
        (["--memory-limit", "lots"], ["--memory-limit", "not a size"]),
        (["--memory-limit", "5XB"], ["unknown unit"]),
        (["--memory-pause-fraction", "1.5"], ["pause fraction"]),
        (["--memory-spill-fraction", "half"], ["spill fraction", "not a number"]),
        (["--no-nanny", "--nworkers", "2"], ["--nworkers needs the nanny"]),
    ],
)
def test_bad_memory_options_give_one_error_line(args, fragments):
    result = run_cli("tcp://127.0.0.1:1", *args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dworker: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_nanny_restarts_a_killed_worker_which_registers_anew(
    spawn_center, spawn_worker, client, wait_for
):
    center = spawn_center()
    w = spawn_worker(center.address, "--nanny", name="nanny-worker")
    client.call(w.address, "update_data", data={"x": 1})
    (child,) = children(w.pid)
    os.kill(child.pid, signal.SIGKILL)
    start = time.monotonic()
    new = wait_for(
        lambda: [a for a in client.call(center.address, "workers") if a != w.address],
        timeout=10, what="a new worker registers",
    )  # fmt: skip
    assert time.monotonic() - start < 5
    workers = client.call(center.address, "workers")
    assert list(workers) == new  # the old incarnation is gone, with its data
    assert workers[new[0]]["name"] == "nanny-worker"
    assert client.call(center.address, "who_has", keys=["x"]) == {"x": []}
    assert children(w.pid)[0].pid != child.pid


def test_nworkers_and_sigterm_stops_all(spawn_center, spawn_worker, client, wait_for):
    center = spawn_center()
    w = spawn_worker(center.address, "--nanny", "--nworkers", "2", name="pair")
    wait_for(
        lambda: len(client.call(center.address, "workers")) == 2,
        timeout=20, what="two workers register",
    )  # fmt: skip
    names = sorted(i["name"] for i in client.call(center.address, "workers").values())
    assert names == ["pair-0", "pair-1"]
    kids = children(w.pid)
    assert len(kids) == 2
    w.signal(signal.SIGTERM)
    assert w.p.wait(15) == 0
    assert all(gone(k.pid) for k in kids)
    wait_for(lambda: client.call(center.address, "workers") == {}, 5, "both unregistered")


def test_kill_9_nanny_takes_its_worker_down(spawn_center, spawn_worker, wait_for):
    center = spawn_center()
    w = spawn_worker(center.address, "--nanny")
    (child,) = children(w.pid)
    w.signal(signal.SIGKILL)
    w.p.wait(5)
    wait_for(lambda: gone(child.pid), timeout=10, what="the worker exits with its nanny")


@pytest.mark.parametrize("nanny", ["--nanny", "--no-nanny"])
def test_death_timeout_exits_with_status_3(spawn_center, spawn_worker, wait_for, nanny):
    center = spawn_center()
    w = spawn_worker(center.address, nanny, "--death-timeout", "1")
    center.signal(signal.SIGKILL)
    assert w.p.wait(30) == 3, w.read_stderr()
    assert "death_timeout" in w.read_stderr()
