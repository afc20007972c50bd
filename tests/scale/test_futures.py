"""100,000 futures: wait, as_completed (ours and concurrent.futures'), gather and
release finish, and each costs O(1) per future (issue 10: ``wait`` used to be
quadratic, 4,000 futures 4.6 s, and 100,000 did not finish). No timing asserts:
a quadratic path would take hours here and hit the session's --timeout."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import time
from operator import neg

from distributed_client import as_completed, wait

N = 100_000


def poll(condition, timeout, what):
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.02)


def test_100k_futures_of_one_pending_task(e):
    # 100,000 Futures, one task (pure keys): every Future is watched and
    # all of them finish at the same moment, the worst case for a check that
    # looks at every future each time one finishes
    fs = e.map(neg, [1] * N)
    done, not_done = wait(fs)
    assert len(done) == N and not not_done
    fs2 = e.map(neg, [2] * N)
    assert sum(1 for _ in as_completed(fs2)) == N
    fs3 = e.map(neg, [3] * N)
    done, not_done = cf.wait(fs3)
    assert len(done) == N and not not_done
    assert sum(1 for _ in cf.as_completed(fs3)) == N
    assert e.gather(fs3) == [-3] * N


def test_100k_distinct_keys(e):
    data = e.scatter(list(range(N)))
    done, not_done = wait(data)
    assert len(done) == N and not not_done
    assert len(list(as_completed(data))) == N
    assert e.gather(data) == list(range(N))
    keys = {f.key for f in data[:10]}
    del data, done
    gc.collect()
    poll(lambda: not e._call_in_loop(lambda: len(e.session.state.tasks)), 60, "all released")
    poll(lambda: not keys & set(e.who_has()), 30, "deleted on the cluster")
