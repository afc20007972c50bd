"""A cluster across simulated hosts (issue 8): center, workers and clients on
different network namespaces, with hosts vanishing silently (blackhole),
partitions and added latency.

The center runs on h0, workers on h1..h3 (``--ncores 1``), the client in the
root namespace unless a test says otherwise. Every wait is bounded: client
calls get a ``timeout``, polls of the center use `wait_for`. Functions sent to
the workers are lambdas, builtins or ``operator`` functions (a module-level
function here would be pickled by reference to this module, which the workers
cannot import).

Scenarios that need a feature other helpers are building are marked
``xfail(strict=False, reason="needs ...")``: flip them once it is merged.
"""

from __future__ import annotations

import json
import operator
import sys
import textwrap
import time

import pytest
from harness import needs_hosts, start_center, start_worker

from distributed_client import Executor, Pool, get
from distributed_core import LoopRunner, rpc

pytestmark = needs_hosts

HEARTBEAT_INTERVAL = 0.5  # seconds, dcenter --heartbeat-interval
HEARTBEAT_TIMEOUT = 3.0  # seconds, dcenter --heartbeat-timeout
RESULT_TIMEOUT = 60.0  # seconds for a client call that must succeed
CALL_TIMEOUT = 10.0  # seconds for one rpc to the center from the test

slow_square = lambda x: __import__("time").sleep(0.05) or x * x  # noqa: E731
make_bytes = lambda n: b"x" * n  # noqa: E731


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll `predicate` until truthy (and return it), else fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s (last value {value!r})")
        time.sleep(interval)


def results(futures, timeout: float) -> list:
    """Each future's result, all within `timeout` seconds (Executor.gather has no bound)."""
    deadline = time.monotonic() + timeout
    return [f.result(timeout=max(0.1, deadline - time.monotonic())) for f in futures]


class Cluster:
    """Center on h0, one worker on each of the next hosts; rpc helpers to the center."""

    def __init__(self, hosts, nworkers: int, center_args=(), worker_args=()):
        self.hosts = hosts
        self.center_host = hosts[0]
        self.center, self.address = start_center(
            hosts[0],
            "--host", hosts[0].ip6 or hosts[0].ip, "--port", "8787",
            "--heartbeat-interval", HEARTBEAT_INTERVAL,
            "--heartbeat-timeout", HEARTBEAT_TIMEOUT,
            *center_args,
        )  # fmt: skip
        self.worker_hosts = list(hosts)[1 : 1 + nworkers]
        self.workers = {}  # address -> host
        self.procs = {}
        for h in self.worker_hosts:
            proc, address = start_worker(h, self.address, "--ncores", "1", *worker_args)
            self.workers[address] = h
            self.procs[address] = proc
        self.runner = LoopRunner(name="hosts-rpc")

    def worker_on(self, host) -> str:
        return next(a for a, h in self.workers.items() if h is host)

    async def _call(self, address, op, kwargs):
        async with rpc(address, connect_timeout=CALL_TIMEOUT / 2) as r:
            return await r.call(op, **kwargs)

    def call(self, op, address=None, **kwargs):
        """One rpc (to the center unless `address`), bounded by CALL_TIMEOUT."""
        return self.runner.run(
            self._call, address or self.address, op, kwargs, timeout=CALL_TIMEOUT
        )

    def listed(self) -> set:
        return set(self.call("workers"))

    def close(self):
        self.runner.close()


@pytest.fixture
def cluster(hosts):
    """``cluster(nworkers=3, extra_hosts=0, ipv6=False, ...) -> Cluster``."""
    made = []

    def make(nworkers=3, extra_hosts=0, ipv6=False, **kwargs):
        c = Cluster(hosts(1 + nworkers + extra_hosts, ipv6=ipv6), nworkers, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def test_pool_get_executor_and_a_64mb_peer_fetch_across_hosts(cluster):
    c = cluster()
    ips = sorted(h.ip for h in c.worker_hosts)
    assert c.address == f"tcp://{c.center_host.ip}:8787"
    assert sorted(a.split("//")[1].rsplit(":", 1)[0] for a in c.listed()) == ips
    with Pool(c.address) as pool:
        assert pool.map(operator.neg, range(100)) == [-i for i in range(100)]
    dsk = {("x", i): i for i in range(8)}
    dsk.update({("y", i): (operator.mul, ("x", i), 10) for i in range(8)})
    dsk["total"] = (sum, [("y", i) for i in range(8)])
    assert get(c.address, dsk, "total", timeout=RESULT_TIMEOUT) == 280
    with Executor(c.address) as e:
        a, b = (c.worker_on(h) for h in c.worker_hosts[:2])
        big = e.submit(make_bytes, 64 << 20, workers=[a])
        n = e.submit(len, big, workers=[b])  # b fetches 64 MB from a, across hosts
        assert n.result(timeout=RESULT_TIMEOUT) == 64 << 20
        assert e.submit(operator.add, 1, 2).result(timeout=RESULT_TIMEOUT) == 3


def test_center_without_host_prints_a_routable_address(hosts):
    hs = hosts(2)
    _, address = start_center(hs[0], "--port", "8787")
    assert address == f"tcp://{hs[0].ip}:8787"
    _, worker = start_worker(hs[1], address, "--ncores", "1")
    assert worker.startswith(f"tcp://{hs[1].ip}:")


def test_blackhole_a_worker_mid_map(cluster):
    c = cluster()
    victim_host = c.worker_hosts[0]
    victim = c.worker_on(victim_host)
    with Executor(c.address) as e:
        futures = e.map(slow_square, range(120))
        wait_for(lambda: sum(f.done() for f in futures) >= 10, RESULT_TIMEOUT, "10 tasks done")
        victim_host.blackhole()
        blackholed_at = time.monotonic()
        assert results(futures, RESULT_TIMEOUT) == [i * i for i in range(120)]
    # the center dropped the silent worker within its heartbeat timeout (plus a check period)
    wait_for(
        lambda: victim not in c.listed(),
        max(0.0, blackholed_at + HEARTBEAT_TIMEOUT + 2 - time.monotonic()),
        "the center drops the blackholed worker",
    )


def test_blackhole_the_holder_of_an_input(cluster):
    c = cluster(worker_args=("--fetch-timeout", "3"))
    with Executor(c.address) as e:
        # x is not restricted, so it can be recomputed anywhere once its holder is gone
        x = e.submit(operator.mul, 21, 2)
        assert x.result(timeout=RESULT_TIMEOUT) == 42
        holders = wait_for(lambda: c.call("who_has", keys=[x.key]).get(x.key), CALL_TIMEOUT, "x")
        holder = holders[0]
        other = next(w for w in sorted(c.workers) if w != holder)
        c.workers[holder].blackhole()
        started = time.monotonic()
        y = e.submit(operator.add, x, 1, workers=[other])
        # within the fetch bound (3 s) or the center's drop (3 s), plus the recompute
        assert y.result(timeout=30) == 43
        assert time.monotonic() - started < 30


def test_blackhole_the_center_15s_then_heal(cluster):
    c = cluster()
    with Executor(c.address) as e:
        futures = [
            e.submit(operator.add, i, 100, workers=[w]) for i, w in enumerate(sorted(c.workers))
        ]
        assert results(futures, RESULT_TIMEOUT) == [100, 101, 102]
        # the center hears of a new key a few ms after the result is back
        before = wait_for(
            lambda: (h := c.call("has_what")) and all(h.get(w) for w in c.workers) and h,
            CALL_TIMEOUT,
            "the center lists every worker's key",
        )
        c.center_host.blackhole()
        time.sleep(15)  # the scenario: the center is away for 15 s
        c.center_host.heal()
        wait_for(
            lambda: (
                {w: sorted(ks) for w, ks in c.call("has_what").items()}
                == {w: sorted(ks) for w, ks in before.items()}
            ),
            30,
            "every worker listed again with all its keys",
        )
        assert e.submit(operator.add, 1, 1).result(timeout=RESULT_TIMEOUT) == 2


def test_client_call_while_the_center_is_away(cluster):
    center_timeout = 3.0
    c = cluster(nworkers=1)
    with Executor(c.address, center_timeout=center_timeout) as e:
        assert e.submit(operator.add, 1, 1).result(timeout=RESULT_TIMEOUT) == 2
        c.center_host.blackhole()
        future = e.submit(operator.add, 2, 2)
        try:
            assert future.result(timeout=center_timeout + 10) == 4  # did not need the center
        except Exception as error:  # or a clear error naming the center, in time
            assert c.address in str(error) or c.center_host.ip in str(error), repr(error)
        c.center_host.heal()
        assert e.submit(operator.add, 3, 3).result(timeout=RESULT_TIMEOUT) == 6


def test_blackhole_a_worker_then_heal_it_rejoins(cluster):
    c = cluster()
    host = c.worker_hosts[0]
    worker = c.worker_on(host)
    with Executor(c.address) as e:
        x = e.submit(operator.add, 1, 2, workers=[worker])
        assert x.result(timeout=RESULT_TIMEOUT) == 3
        host.blackhole()
        wait_for(lambda: worker not in c.listed(), HEARTBEAT_TIMEOUT + 5, "the worker dropped")
        futures = e.map(slow_square, range(30))
        host.heal()
        wait_for(lambda: worker in c.listed(), 30, "the healed worker rejoins")
        assert results(futures, RESULT_TIMEOUT) == [i * i for i in range(30)]
        who_has = c.call("who_has")
        for key, holders in who_has.items():
            assert len(holders) == len(set(holders)), (key, holders)
            for holder in holders:
                assert key in c.call("keys", address=holder), (key, holder)
        assert len(c.listed()) == len(set(c.listed())) == 3


def test_only_worker_vanished_fails_with_no_workers_error(cluster):
    c = cluster(nworkers=1)
    no_workers_timeout = 5.0
    with Executor(c.address, no_workers_timeout=no_workers_timeout) as e:
        assert e.submit(operator.add, 1, 1).result(timeout=RESULT_TIMEOUT) == 2
        c.worker_hosts[0].blackhole()
        future = e.submit(operator.add, 2, 2)
        with pytest.raises(Exception, match="(?i)no worker"):
            # the worker is dropped within the heartbeat timeout, then the bound runs
            future.result(timeout=HEARTBEAT_TIMEOUT + no_workers_timeout + 10)


def test_partition_two_workers(cluster):
    c = cluster(worker_args=("--fetch-timeout", "3"))
    h1, h2, _ = c.worker_hosts
    w1, w2 = c.worker_on(h1), c.worker_on(h2)
    with Executor(c.address) as e:
        x = e.submit(operator.mul, 6, 7, workers=[w1])
        y = e.submit(operator.mul, 2, 5, workers=[w2])
        assert results([x, y], RESULT_TIMEOUT) == [42, 10]
        h1.partition(h2)
        z = e.submit(operator.add, x, y)  # runs on w1 or w2 and needs the other's input
        assert z.result(timeout=45) == 52
        zz = e.submit(operator.sub, x, y, workers=[w2])  # w2 must get x some other way
        assert zz.result(timeout=45) == 32


CLIENT_SCRIPT = textwrap.dedent("""
    import json, operator, sys
    from distributed_client import Pool, get

    center = sys.argv[1]
    with Pool(center) as pool:
        values = pool.map(operator.neg, range(1000))
    leaves = 256
    dsk = {("l", 0, i): i for i in range(leaves)}
    level, width = 0, leaves
    while width > 1:
        for i in range(width // 2):
            dsk[("l", level + 1, i)] = (operator.add, ("l", level, 2 * i), ("l", level, 2 * i + 1))
        level, width = level + 1, width // 2
    total = get(center, dsk, ("l", level, 0), timeout=120)
    print(json.dumps({"map_ok": values == [-i for i in range(1000)], "total": total}))
""")


def test_20ms_latency_between_client_and_cluster(cluster, tmp_path):
    c = cluster(extra_hosts=1)
    client_host = c.hosts[len(c.hosts) - 1]
    c.hosts.add_latency(client_host, 20)
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    done = client_host.run([sys.executable, str(script), c.address], timeout=150)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"map_ok": True, "total": sum(range(256))}


def test_ipv6_cluster(cluster):
    c = cluster(nworkers=2, ipv6=True)
    assert c.address == f"tcp://[{c.center_host.ip6}]:8787"
    with Executor(c.address) as e:
        assert results(e.map(operator.neg, range(20)), 20) == [-i for i in range(20)]
