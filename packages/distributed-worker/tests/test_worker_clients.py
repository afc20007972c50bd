"""Keys stored for a client are reported as that client's (issue 10)."""

from __future__ import annotations

import asyncio
import time

from distributed_center import Center
from distributed_core import ConnectionPool, rpc
from distributed_core.testing import gen_test
from distributed_worker import Worker


async def until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@gen_test()
async def test_results_and_scattered_keys_carry_the_client_of_the_connection():
    center = Center(heartbeat_interval=0.2, heartbeat_timeout=2, client_timeout=60)
    await center.listen("tcp://127.0.0.1:0")
    a = Worker(center.address, ncores=1)
    b = Worker(center.address, ncores=1)
    pool = ConnectionPool(client="client-1")
    try:
        await a.start("tcp://127.0.0.1:0")
        await b.start("tcp://127.0.0.1:0")
        assert "client" in a.identity()["features"]
        ra, rb = rpc(a.address, pool=pool), rpc(b.address, pool=pool)
        await ra.update_data(data={"x": 1})
        await ra.compute(function=abs, key="y", args=(-2,))
        # b fetches x from a and keeps it as a replica: a copy, not b's client's data
        await rb.compute(function=abs, key="z", args=("x",), needed=["x"], keep_inputs=True)
        async with rpc(a.address) as anonymous:  # no client in its hello
            await anonymous.update_data(data={"anon": 3})
        owner = center.state.leases.owner
        await until(lambda: set(owner) == {"x", "y", "z"} and center.state.n_keys == 4)
        assert set(owner.values()) == {"client-1"}
        assert center.state.who_has(["x"])["x"] == sorted([a.address, b.address])
        async with rpc(center.address) as c:
            assert await c.unregister_client(client="client-1") == {"released": 3}
        await until(lambda: len(a.store) == 1 and len(b.store) == 0)
        assert a.store.keys() == ["anon"]
    finally:
        await pool.close()
        await a.close()
        await b.close()
        await center.close()
