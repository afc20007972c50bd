"""``--memory-limit auto`` inside a memory-limited cgroup v2: 3x the limit round-trips
without the kernel's OOM killer (Linux, root, cgroup v2 with the memory controller)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from distributed_client import Executor

CGROUP = "/sys/fs/cgroup"
LIMIT = 300 * 2**20


def _unavailable() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"cgroups are Linux-only (this is {sys.platform})"
    if os.geteuid() != 0:
        return "creating a cgroup needs root"
    try:
        with open(os.path.join(CGROUP, "cgroup.controllers")) as f:
            controllers = f.read().split()
    except OSError:
        return f"{CGROUP} is not a cgroup v2 hierarchy (cgroup v1 or hybrid mount)"
    if "memory" not in controllers:
        return f"the cgroup v2 memory controller is not available in {CGROUP}"
    return None


@pytest.fixture
def cgroup():
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    with open(os.path.join(CGROUP, "cgroup.subtree_control")) as f:
        enabled = f.read().split()
    if "memory" not in enabled:
        try:
            with open(os.path.join(CGROUP, "cgroup.subtree_control"), "w") as f:
                f.write("+memory")
        except OSError as e:
            pytest.skip(f"cannot enable the memory controller for child cgroups: {e}")
    path = os.path.join(CGROUP, f"distributed-test-{uuid.uuid4().hex[:8]}")
    os.mkdir(path)
    try:
        with open(os.path.join(path, "memory.max"), "w") as f:
            f.write(str(LIMIT))
        yield path
    finally:
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                for pid in f.read().split():
                    os.kill(int(pid), 9)
        except OSError:
            pass
        for _ in range(100):
            try:
                os.rmdir(path)
                break
            except OSError:
                time.sleep(0.05)


def _oom_kills(path: str) -> int:
    with open(os.path.join(path, "memory.events")) as f:
        for line in f:
            name, value = line.split()
            if name == "oom_kill":
                return int(value)
    return 0


def test_auto_limit_from_cgroup_and_3x_round_trip(cgroup, h):
    from distributed_core.testing import free_port

    port = free_port("127.0.0.1")
    center = subprocess.Popen(
        [sys.executable, "-m", "distributed_center", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    script = (
        f'echo $$ > {cgroup}/cgroup.procs && exec "$0" -m distributed_worker '
        f"tcp://127.0.0.1:{port} --host 127.0.0.1 --ncores 1 --memory-limit auto"
    )
    worker = subprocess.Popen(
        ["sh", "-c", script, sys.executable],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert worker.stdout.readline().startswith("Start worker at ")
        with Executor(f"127.0.0.1:{port}") as ex:
            (info,) = h.wait_for(
                lambda: [
                    w for w in ex.scheduler_info()["workers"].values()
                    if w["memory"]["limit"] is not None
                ],
                20, "the worker reports its limit",
            )  # fmt: skip
            assert info["memory"]["limit"] == LIMIT  # detected from the cgroup
            digests, futures = [], []
            for i in range(3 * LIMIT // 10_000_000):
                a = np.random.default_rng(i).integers(0, 255, 10_000_000, dtype=np.uint8)
                digests.append(hashlib.sha256(a).hexdigest())
                futures.append(ex.scatter([a])[0])
            for j in range(0, len(futures), 4):
                values = ex.gather(futures[j : j + 4])
                assert [hashlib.sha256(v).hexdigest() for v in values] == digests[j : j + 4]
        assert _oom_kills(cgroup) == 0
    finally:
        worker.terminate()
        worker.wait(20)
        worker.stdout.close()
        center.terminate()
        center.wait(20)
