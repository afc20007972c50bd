"""Scatter and gather of one large value, against a bare tornado stream.

One 256 MiB ``bytes`` value (and a numpy array of the same size) is sent to
a worker with ``Pool.scatter`` and brought back with ``Pool.gather``, on a
LocalCluster of one worker. The reference, in the same run and interleaved
round by round, is a bare tornado stream between two processes: the client
writes an 16-byte header and the payload (``write(memoryview)``), the server
receives it with ``read_into`` a freshly allocated buffer and answers one
byte ("scatter"); then the client asks and the server writes it back into a
fresh buffer on the client ("gather"). A fresh buffer for every transfer, on
both sides, as a worker and a client must allocate for a new value; it is an
uninitialised ``bytearray`` (``distributed_core.buffers.new_bytearray``), as
ours are: ``bytearray(n)`` would zero-fill it first, a whole extra pass over
the memory that made the bare stream look about twice slower.

Target (issue 10): scatter and gather of ``bytes`` >= 0.75x bare tornado.
Benchmark, not test: nothing asserts on timings.

Usage::

    python benchmarks/scatter_bench.py             # 256 MiB, 5 rounds
    python benchmarks/scatter_bench.py --quick     # 16 MiB, 2 rounds
    python benchmarks/scatter_bench.py --payload-mib 64 --rounds 9 --kinds bytes
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import os
import socket
import statistics
import struct
import sys
import time

try:
    import numpy as np
except ImportError:  # pragma: no cover - numpy is a dev dependency
    np = None
from tornado.iostream import StreamClosedError
from tornado.tcpclient import TCPClient
from tornado.tcpserver import TCPServer

from distributed_core.buffers import new_bytearray

HDR = struct.Struct("<QQ")
MIB = 2**20
TARGET = 0.75


def _payload(kind: str, nbytes: int):
    if kind == "numpy":
        return np.arange(nbytes // 8, dtype=np.int64)
    return b"\x5a" * nbytes


# -------------------------------------------------------------------- bare tornado


def _tornado_server(conn) -> None:
    """Receive a payload into a fresh buffer and ack it; send it back on request."""
    held = {}

    class Server(TCPServer):
        async def handle_stream(self, stream, address):
            stream.set_nodelay(True)  # as our comms: no Nagle delay on the small acks
            try:
                while True:
                    op = await stream.read_bytes(1)
                    if op == b"s":
                        _, length = HDR.unpack(await stream.read_bytes(16))
                        buf = new_bytearray(length)
                        await stream.read_into(buf)
                        held["data"] = buf
                        await stream.write(b"k")
                    else:
                        data = held.pop("data")
                        stream.write(HDR.pack(1, len(data)))
                        await stream.write(memoryview(data))
                        del data
            except StreamClosedError:
                pass

    async def main():
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        server = Server(max_buffer_size=2**40)
        server.add_sockets([sock])
        conn.send(sock.getsockname()[1])
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.add_reader(conn.fileno(), lambda: done.done() or done.set_result(None))
        await done
        server.stop()

    asyncio.run(main())


class TornadoClient:
    def __init__(self, port: int):
        self.port = port
        self.stream = None

    async def connect(self):
        self.stream = await TCPClient().connect("127.0.0.1", self.port, max_buffer_size=2**40)
        self.stream.set_nodelay(True)

    async def scatter(self, payload) -> float:
        view = memoryview(payload).cast("B")
        t0 = time.perf_counter()
        self.stream.write(b"s" + HDR.pack(1, view.nbytes))
        await self.stream.write(view)
        await self.stream.read_bytes(1)
        return time.perf_counter() - t0

    async def gather(self) -> tuple[float, object]:
        t0 = time.perf_counter()
        await self.stream.write(b"g")
        _, length = HDR.unpack(await self.stream.read_bytes(16))
        buf = new_bytearray(length)
        await self.stream.read_into(buf)
        return time.perf_counter() - t0, buf


# -------------------------------------------------------------------- driver


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="16 MiB, 2 rounds")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--payload-mib", type=int, default=None)
    p.add_argument("--kinds", default="bytes,numpy", help="comma separated: bytes,numpy")
    args = p.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)
    nbytes = (args.payload_mib or (16 if args.quick else 256)) * MIB
    kinds = [k for k in args.kinds.split(",") if k and (k != "numpy" or np is not None)]

    from distributed_client import LocalCluster, Pool

    print(
        f"scatter_bench: payload={nbytes // MIB} MiB, rounds={rounds}, "
        f"load average={os.getloadavg()[0]:.2f}, cpus={os.cpu_count()}",
        flush=True,
    )
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_tornado_server, args=(child,), daemon=True)
    server.start()
    port = parent.recv()
    loop = asyncio.new_event_loop()
    bare = TornadoClient(port)
    loop.run_until_complete(bare.connect())
    # figures[(kind, variant, direction)] = [GB/s per round]
    figures: dict = {}
    try:
        with LocalCluster(n_workers=1, ncores=1) as cluster, Pool(cluster) as pool:

            def ours(payload):
                t0 = time.perf_counter()
                [remote] = pool.scatter([payload])
                t1 = time.perf_counter()
                [back] = pool.gather([remote])
                t2 = time.perf_counter()
                ok = type(back) is type(payload) and len(back) == len(payload)
                del remote, back
                return t1 - t0, t2 - t1, ok

            def tornado(payload):
                s = loop.run_until_complete(bare.scatter(payload))
                g, back = loop.run_until_complete(bare.gather())
                ok = memoryview(back).nbytes == memoryview(payload).nbytes
                del back
                return s, g, ok

            variants = {"tornado": tornado, "ours": ours}
            for kind in kinds:  # warm up: first transfers pay for connections and imports
                for fn in variants.values():
                    fn(_payload(kind, min(nbytes, 4 * MIB)))
            for r in range(rounds):
                order = list(variants)
                if r % 2:
                    order.reverse()
                for kind in kinds:
                    for name in order:
                        payload = _payload(kind, nbytes)
                        gc.collect()
                        s, g, ok = variants[name](payload)
                        if not ok:
                            raise AssertionError(f"{name} {kind}: wrong value back")
                        figures.setdefault((kind, name, "scatter"), []).append(nbytes / s / 1e9)
                        figures.setdefault((kind, name, "gather"), []).append(nbytes / g / 1e9)
                        del payload
                print(f"  round {r + 1}/{rounds} done", flush=True)
    finally:
        loop.run_until_complete(asyncio.sleep(0))
        bare.stream.close()
        loop.close()
        parent.send("stop")
        server.join(10)
        if server.is_alive():
            server.kill()

    print()
    head = ("measurement", "ours GB/s", "tornado GB/s", "ratio", "target", "met?")
    rows = []
    for kind in kinds:
        for direction in ("scatter", "gather"):
            o = figures[(kind, "ours", direction)]
            t = figures[(kind, "tornado", direction)]
            ratio = statistics.median(a / b for a, b in zip(o, t))
            target = f">= {TARGET}x" if kind == "bytes" else "reported"
            met = ("yes" if ratio >= TARGET else "NO") if kind == "bytes" else ""
            rows.append((
                f"{direction} {nbytes // MIB} MiB {kind}",
                f"{statistics.median(o):.2f}",
                f"{statistics.median(t):.2f}",
                f"{ratio:.2f}x",
                target,
                met,
            ))  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for row in (head, tuple("-" * w for w in widths), *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))
    print(
        "ratio = median of per-round ratios (ours / bare tornado in the same round); "
        "GB/s are medians."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
