"""Peer-to-peer fetch of a large numpy array between two worker processes.

Compares, in the same run and interleaved:

* **worker fetch**: worker B computes ``len(arr)`` where ``arr`` (a 256 MiB
  float64 array) lives only on worker A, so B fetches it from A with
  ``get_data`` (timed from the client: the compute round trip);
* **bare tornado**: one process writes the same number of bytes as a
  ``memoryview`` to a tornado ``IOStream``; this process reads them with
  ``read_into`` into a preallocated buffer (timed from request to last byte);
* **dask.distributed** (if importable): the same dependent task between two
  worker processes of a ``LocalCluster``.

Prints the median of each, the ratio worker/bare (target >= 75%) and
dask/bare. Run::

    python benchmarks/p2p_fetch.py [--size-mib 256] [--repeats 7] [--no-dask]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import statistics
import subprocess
import sys
import time

import numpy as np

PYTHON = sys.executable


# -- subprocess helpers ----------------------------------------------------------


class Proc:
    def __init__(self, args):
        self.p = subprocess.Popen(
            [PYTHON, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self._buf = b""

    def wait_line(self, prefix: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        fd = self.p.stdout.fileno()
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                text = line.decode()
                if text.startswith(prefix):
                    return text[len(prefix) :].strip()
            left = deadline - time.monotonic()
            if left <= 0 or self.p.poll() is not None:
                raise RuntimeError(f"{self.p.args} did not print {prefix!r}")
            if select.select([fd], [], [], min(left, 0.5))[0]:
                self._buf += os.read(fd, 65536)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


# -- bare tornado stream ---------------------------------------------------------------


def tornado_server(nbytes: int) -> None:
    """Subprocess: on each 1-byte request, write `nbytes` as one memoryview."""
    from tornado.iostream import StreamClosedError
    from tornado.tcpserver import TCPServer

    payload = memoryview(np.ones(nbytes, dtype="u1"))

    class Server(TCPServer):
        async def handle_stream(self, stream, address):
            stream.set_nodelay(True)
            try:
                while True:
                    await stream.read_bytes(1)
                    await stream.write(payload)
            except StreamClosedError:
                pass

    async def main():
        server = Server(max_buffer_size=2**31)
        sockets = __import__("tornado.netutil").netutil.bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        print(f"PORT {sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


class BareReader:
    def __init__(self, port: int, nbytes: int):
        self.port = port
        self.buf = bytearray(nbytes)
        self.stream = None

    async def connect(self):
        from tornado.tcpclient import TCPClient

        self.stream = await TCPClient().connect("127.0.0.1", self.port, max_buffer_size=2**31)
        self.stream.set_nodelay(True)

    async def fetch(self) -> float:
        start = time.perf_counter()
        await self.stream.write(b"x")
        await self.stream.read_into(self.buf)
        return time.perf_counter() - start


# -- our worker fetch -------------------------------------------------------------------------


class WorkerFetch:
    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self.procs = []

    async def start(self):
        from distributed_core import ConnectionPool

        center = Proc(["-m", "distributed_center", "--host", "127.0.0.1", "--port", "0"])
        self.procs.append(center)
        self.center = center.wait_line("Start center at ")
        self.workers = []
        for _ in range(2):
            w = Proc(["-m", "distributed_worker", self.center, "--host", "127.0.0.1"])
            self.procs.append(w)
            address = w.wait_line("Start worker at ")
            w.wait_line("Registered with center at ")
            self.workers.append(address)
        self.pool = ConnectionPool()
        a, _ = self.workers
        reply = await self.call(
            a,
            "compute",
            function=np.arange,
            key="arr",
            args=(self.nbytes // 8,),
            kwargs={"dtype": "f8"},
        )
        assert reply["status"] == "OK", reply

    async def call(self, address, op, **kwargs):
        from distributed_core import rpc

        return await rpc(address, pool=self.pool).call(op, **kwargs)

    async def fetch(self) -> float:
        a, b = self.workers
        start = time.perf_counter()
        reply = await self.call(
            b, "compute", function=len, key="n", args=("arr",), needed=["arr"], who_has={"arr": [a]}
        )
        elapsed = time.perf_counter() - start
        assert reply["status"] == "OK", reply
        return elapsed

    async def close(self):
        await self.pool.close()
        for p in reversed(self.procs):
            p.stop()


# -- dask.distributed ---------------------------------------------------------------------


def dask_times(nbytes: int, repeats: int) -> list[float] | None:
    try:
        from distributed import Client, LocalCluster, wait
    except ImportError:
        return None
    import logging

    logging.getLogger("distributed").setLevel(logging.ERROR)
    times = []
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        a, b = sorted(client.scheduler_info()["workers"])
        for i in range(repeats + 1):
            arr = client.submit(np.arange, nbytes // 8, dtype="f8", workers=[a], key=f"arr-{i}")
            wait(arr)
            start = time.perf_counter()
            n = client.submit(len, arr, workers=[b], key=f"len-{i}")
            n.result()
            elapsed = time.perf_counter() - start
            if i:  # first one is a warm-up
                times.append(elapsed)
            del arr, n
    return times


# -- main ----------------------------------------------------------------------------------------


async def run(nbytes: int, repeats: int) -> tuple[list, list]:
    server = Proc([__file__, "--tornado-server", str(nbytes)])
    ours = WorkerFetch(nbytes)
    try:
        port = int(server.wait_line("PORT "))
        bare = BareReader(port, nbytes)
        await bare.connect()
        await ours.start()
        await bare.fetch()  # warm-up
        await ours.fetch()
        t_bare, t_ours = [], []
        for _ in range(repeats):
            t_ours.append(await ours.fetch())
            t_bare.append(await bare.fetch())
        bare.stream.close()
        return t_ours, t_bare
    finally:
        await ours.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-dask", action="store_true")
    parser.add_argument("--tornado-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="16 MiB, 3 runs (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.size_mib, args.repeats = 16, 3
    if args.tornado_server:
        tornado_server(args.tornado_server)
        return

    nbytes = args.size_mib * 2**20
    t_ours, t_bare = asyncio.run(run(nbytes, args.repeats))
    m_ours, m_bare = statistics.median(t_ours), statistics.median(t_bare)

    def line(name, t):
        return f"{name:<28} median {t * 1000:8.1f} ms  {nbytes / t / 2**30:6.2f} GiB/s"

    print(f"peer-to-peer fetch of a {args.size_mib} MiB float64 array, {args.repeats} runs each")
    print(
        "  runs (ms): worker",
        [round(t * 1000) for t in t_ours],
        "bare",
        [round(t * 1000) for t in t_bare],
    )
    print(line("bare tornado IOStream", m_bare))
    print(line("distributed_worker fetch", m_ours))
    ratio = m_bare / m_ours
    print(f"worker / bare bandwidth: {ratio:.0%} (target >= 75%)")
    if not args.no_dask:
        t_dask = dask_times(nbytes, args.repeats)
        if t_dask is None:
            print("dask.distributed: not importable, skipped")
        else:
            m_dask = statistics.median(t_dask)
            print(line("dask.distributed", m_dask))
            print(f"dask / bare bandwidth: {m_bare / m_dask:.0%}")


if __name__ == "__main__":
    main()
