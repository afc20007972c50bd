"""Center memory per key: register N keys over the wire, measure bytes/key.

A fake worker (a raw ``distributed_core`` connection speaking the worker's
report-stream protocol) registers with an in-process :class:`Center` and sends
N keys with their sizes in ``add_keys`` batches, as a real worker would. The
growth of the process's memory from just before the first key is sent until
the Center holds all of them is divided by N.

Two measurements, each in a fresh process so that neither disturbs the other:

* ``tracemalloc``: Python allocations still live after a ``gc.collect()``
  (the decoded key objects the Center keeps, its dicts and sets, sizes). The
  sender's key list is built before tracing starts, so it is not counted.
* ``rss``: resident set size delta (psutil; includes allocator slack and
  transient buffers, so it is an upper bound).

Target: <= 500 bytes/key with 100,000 keys (dask's scheduler: ~2,900).

Two paths a key takes into the Center (issue 10: they must cost the same):

* ``computed``: a worker reports a result on its report stream (``add_keys``
  batches of ``--batch`` keys);
* ``scattered``: a worker takes ``update_data`` from a client and confirms it
  as ``Worker._confirm`` does: the same stream batches, then one ``add_keys``
  request on a separate connection with all the keys of the ``update_data``
  (``--scatter-batch``, default all N: one ``Executor.scatter`` call), with
  the keys only (``--confirm-nbytes``: with their sizes too, as workers
  before issue 10 did).

Why a scattered key cost the center about twice a computed one (issue 10,
753 against 268 bytes in the issue's measurement; 576 against 299 here with
100,000 str keys): (1) ``Server._serve`` kept each connection's last request
alive while it waited for the next, and the confirming ``add_keys`` of one
scatter holds every key of it twice (a list and a dict); (2) msgpack interns
the str keys of every map it decodes, so a 100,000-entry ``nbytes`` map grows
the interpreter's table of interned strings for good (about 38 bytes/key)
even after the strings are gone. Fixed by dropping the request before the
next read, and by sending the sizes on the report stream only (in batches).

Usage::

    python benchmarks/center_memory.py                 # 100,000 str keys, both methods
    python benchmarks/center_memory.py --keys 1000000 --key-type tuple
    python benchmarks/center_memory.py --method tracemalloc
    python benchmarks/center_memory.py --client c1   # keys stored for a client (issue 10)
    python benchmarks/center_memory.py --method tracemalloc --path both
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import os
import tracemalloc
import uuid

from distributed_center import Center
from distributed_core import connect, rpc

WORKER = "tcp://127.0.0.1:40001"
TARGET = 500


def make_keys(n: int, key_type: str) -> list:
    """Keys shaped like dask's: ``'inc-<32 hex>'``, or ``('inc-<32 hex>', i)``."""
    if key_type == "str":
        return [f"inc-{uuid.uuid4().hex}" for _ in range(n)]
    if key_type == "tuple":
        return [(f"inc-{uuid.uuid4().hex}", i) for i in range(n)]
    if key_type == "int":
        return list(range(10**9, 10**9 + n))
    raise ValueError(f"unknown key type {key_type!r}")


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


async def measure(
    n: int,
    key_type: str,
    method: str,
    batch: int,
    path: str = "computed",
    scatter_batch=None,
    confirm_nbytes: bool = False,
    client=None,
) -> float:
    center = Center(heartbeat_interval=1, heartbeat_timeout=60)
    await center.listen("tcp://127.0.0.1:0")
    comm = await connect(center.address)
    confirm = rpc(center.address)
    try:
        await comm.write(
            {"op": "register", "reply": False, "stream": True, "address": WORKER, "ncores": 1}
        )
        assert (await comm.read())["status"] == "OK"
        keys = make_keys(n, key_type)
        batches = [
            (keys[i : i + batch], {k: 1000 + j for j, k in enumerate(keys[i : i + batch])})
            for i in range(0, n, batch)
        ]
        gc.collect()
        if method == "tracemalloc":
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
        else:
            before = rss()

        for ks, nbytes in batches:
            extra = {} if client is None else {"client": client}  # whose keys (issue 10)
            await comm.write({"op": "add_keys", "keys": ks, "nbytes": nbytes, **extra})
        if path == "scattered":
            # the worker's connection for these requests stays open (pooled), as in a
            # real worker: whatever the center keeps per connection is counted
            step = scatter_batch or n
            for i in range(0, n, step):
                ks = keys[i : i + step]
                if confirm_nbytes:  # what workers before issue 10 sent
                    sizes = {k: 1000 + (j % batch) for j, k in enumerate(ks, i)}
                    assert await confirm.add_keys(address=WORKER, keys=ks, nbytes=sizes) == "OK"
                    del sizes
                else:  # the sizes travel on the stream only
                    assert await confirm.add_keys(address=WORKER, keys=ks) == "OK"
                del ks
        while center.state.n_keys < n:
            await asyncio.sleep(0.01)
        del batches
        gc.collect()

        if method == "tracemalloc":
            after = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
        else:
            after = rss()
        assert center.state.n_keys == n
        assert len(center.state.has_what_map[WORKER]) == n
        return (after - before) / n
    finally:
        comm.abort()
        await confirm.close_rpc()
        await center.close()


def _child(n, key_type, method, batch, path, scatter_batch, confirm_nbytes, client, queue):
    queue.put(
        asyncio.run(
            measure(n, key_type, method, batch, path, scatter_batch, confirm_nbytes, client)
        )
    )


def run(
    n: int,
    key_type: str,
    method: str,
    batch: int,
    path: str = "computed",
    scatter_batch=None,
    confirm_nbytes: bool = False,
    client=None,
) -> float:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    args = (n, key_type, method, batch, path, scatter_batch, confirm_nbytes, client, queue)
    proc = ctx.Process(target=_child, args=args)
    proc.start()
    result = queue.get(timeout=600)
    proc.join()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=100_000, help="number of keys")
    parser.add_argument("--key-type", choices=["str", "tuple", "int"], default="str")
    parser.add_argument("--method", choices=["tracemalloc", "rss", "both"], default="both")
    parser.add_argument("--batch", type=int, default=1000, help="keys per add_keys message")
    parser.add_argument("--quick", action="store_true", help="10,000 keys (smoke test)")
    parser.add_argument("--client", help="report the keys as this client's (issue 10)")
    parser.add_argument("--path", choices=["computed", "scattered", "both"], default="computed")
    parser.add_argument(
        "--scatter-batch", type=int, default=None, help="keys per update_data (default: all)"
    )
    parser.add_argument(
        "--confirm-nbytes",
        action="store_true",
        help="the confirming add_keys also carries the sizes (workers before issue 10)",
    )
    args = parser.parse_args()
    if args.quick:
        args.keys = 10_000
    methods = ["tracemalloc", "rss"] if args.method == "both" else [args.method]
    print(f"Center memory, {args.keys:,} {args.key_type} keys from one worker, pid {os.getpid()}")
    paths = ["computed", "scattered"] if args.path == "both" else [args.path]
    for path in paths:
        for method in methods:
            per_key = run(
                args.keys,
                args.key_type,
                method,
                args.batch,
                path,
                args.scatter_batch,
                args.confirm_nbytes,
                args.client,
            )
            verdict = "OK" if per_key <= TARGET else "OVER"
            print(
                f"  {path:<10} {method:<12} {per_key:8.0f} bytes/key   "
                f"(target <= {TARGET}: {verdict})",
                flush=True,
            )


if __name__ == "__main__":
    main()
