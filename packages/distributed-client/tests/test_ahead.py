"""Tasks sent ahead of their inputs, on real processes (issue 8).

A chain of dependent tasks goes to the worker running its previous link before
that link ends; the worker waits for the input locally. Results stay exact when
a link raises and when the worker is killed in the middle.
"""

from __future__ import annotations

import threading
import time
from operator import add

import pytest

from distributed_client import Executor, LocalCluster


def inc(x):
    return x + 1


def slow_inc(x, delay=0.02):
    time.sleep(delay)
    return x + 1


def fail_at(x, bad):
    if x == bad:
        raise ValueError(f"bad link {x}")
    return x + 1


def make_cluster(n):
    return LocalCluster(n_workers=n, ncores=1, heartbeat_interval=0.2, heartbeat_timeout=2)


@pytest.fixture(scope="module")
def cluster():
    with make_cluster(2) as c:
        yield c


def test_chain_of_100_is_exact_and_goes_ahead(cluster):
    with Executor(cluster.center_address) as e:
        x = e.submit(inc, 0)
        for _ in range(99):
            x = e.submit(inc, x)
        assert x.result(timeout=60) == 100
        assert e.session.state.sent_ahead > 0


def test_tree_reduction_is_exact(cluster):
    with Executor(cluster.center_address) as e:
        level = e.map(inc, range(128))
        while len(level) > 1:
            level = [e.submit(add, level[i], level[i + 1]) for i in range(0, len(level), 2)]
        assert level[0].result(timeout=60) == sum(range(1, 129))


def test_chain_whose_middle_link_raises(cluster):
    with Executor(cluster.center_address) as e:
        links = [e.submit(fail_at, 0, 50)]
        for _ in range(99):
            links.append(e.submit(fail_at, links[-1], 50))
        assert links[49].result(timeout=60) == 50
        with pytest.raises(ValueError, match="bad link 50"):
            links[50].result(timeout=60)
        with pytest.raises(ValueError, match="bad link 50"):
            links[-1].result(timeout=60)
        # the cluster still works after the failed chain
        assert e.submit(inc, 1).result(timeout=30) == 2


def test_worker_killed_mid_chain_gives_the_exact_result():
    with make_cluster(2) as cluster, Executor(cluster.center_address) as e:
        links = [e.submit(slow_inc, 0)]
        for _ in range(99):
            links.append(e.submit(slow_inc, links[-1]))
        state = e.session.state
        deadline = time.monotonic() + 30
        # wait until the chain is well under way, sent ahead on one worker
        while sum(f.done() for f in links) < 20 or state.sent_ahead == 0:
            assert time.monotonic() < deadline, "the chain did not progress"
            time.sleep(0.01)
        running = set()
        while not running:  # read from the test thread while the loop runs: retry
            try:
                running = {ts.processing_on for ts in list(state.tasks.values())}
            except RuntimeError:  # changed size during iteration
                continue
            running.discard(None)
            assert time.monotonic() < deadline, "nothing in flight to kill"
        victim = next(iter(running))
        killed = []

        def kill():
            killed.append(cluster.kill_worker(cluster.worker_addresses.index(victim)))

        t = threading.Thread(target=kill)
        t.start()
        t.join(30)
        assert killed == [victim]
        assert links[-1].result(timeout=60) == 100
