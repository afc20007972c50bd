"""distributed-core against the raw limits and against dask.distributed.

Three measurements, each made in ONE run, INTERLEAVED round by round
(A B C, B C A, C A B, ...), so every variant sees the same machine state;
only the same-run ratios are meaningful (an idle CPU alone can triple a
small round trip):

1. ``rtt``: sequential round trip of a small message on one connection:
   ``await rpc(addr).echo(x=1)`` vs a bare tornado IOStream echo with the
   same framing written inline (8-byte count, 8-byte length, msgpack), a
   raw blocking-socket echo (the raw limit) and dask.distributed's ``rpc``.
2. ``concurrent``: C coroutines x M calls through one ``rpc`` (calls/s):
   ours vs dask's ``rpc`` vs bare tornado with one connection per coroutine.
3. ``bulk``: one 256 MiB ``bytes`` / ``bytearray`` / numpy array from one
   process to another with ``Comm.write``/``Comm.read`` vs bare tornado
   ``write(memoryview)`` -> ``read_into`` of the same payload vs raw
   ``sendall``/``recv_into``:
   GB/s and peak RSS over the baseline on each side
   (``getrusage(RUSAGE_SELF).ru_maxrss``, in fresh processes).

Servers always run in a different process from the client. This is a
benchmark, not a test: nothing here asserts on timings; the "met?" column
only compares the medians with the project's targets.

Usage::

    python benchmarks/core_bench.py            # full run (a few minutes)
    python benchmarks/core_bench.py --quick    # smoke run (seconds)
    python benchmarks/core_bench.py --only rtt,bulk --rounds 15
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import os
import platform
import resource
import socket
import statistics
import struct
import sys
import threading
import time

import msgpack

try:  # imported up front so the forkserver preloads it (not counted as payload memory)
    import numpy as np
except ImportError:  # pragma: no cover - numpy is a dev dependency
    np = None
from tornado.iostream import StreamClosedError
from tornado.tcpclient import TCPClient
from tornado.tcpserver import TCPServer

import distributed_core
from distributed_core import Server, connect, rpc

HDR = struct.Struct("<QQ")  # frame count, length of the one frame
MIB = 2**20
REQUEST = {"op": "echo", "reply": True, "x": 1}


def _ctx():
    # forkserver: children forked from a small process, so their ru_maxrss
    # starts at their own size (spawned children inherit the parent's
    # high-water mark through exec, which would hide the payload's cost).
    methods = mp.get_all_start_methods()
    return mp.get_context("forkserver" if "forkserver" in methods else "spawn")


def _maxrss() -> int:
    """This process's peak RSS in bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def _dask_available() -> bool:
    try:
        import distributed.core  # noqa: F401
    except Exception:
        return False
    return True


def _split(address: str) -> tuple[str, int]:
    hostport = address.split("://", 1)[-1]
    host, port = hostport.rsplit(":", 1)
    return host.strip("[]"), int(port)


def _recv_exact(sock: socket.socket, n: int) -> bytearray | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            return None
        got += k
    return buf


# =========================================================================
# echo servers (one process each)
# =========================================================================


def _answer_cpu(conn, address: str) -> None:
    """Send our address, then answer each request on ``conn`` with our CPU seconds.

    Runs in a thread that sleeps in ``recv`` between measurements, so it
    costs nothing while one is being made; ``time.process_time`` counts
    every thread of the process.
    """

    def loop():
        while True:
            try:
                conn.recv()
                conn.send(time.process_time())
            except (EOFError, OSError):
                os._exit(0)  # the benchmark went away; so do we

    conn.send(address)
    threading.Thread(target=loop, daemon=True).start()


def _echo(comm, x):
    return x


def _serve_ours(conn) -> None:
    async def main():
        server = Server({"echo": _echo}, name="bench")
        await server.listen("tcp://127.0.0.1:0")
        _answer_cpu(conn, server.address)
        await asyncio.Event().wait()

    asyncio.run(main())


class _TornadoEcho(TCPServer):
    async def handle_stream(self, stream, address):
        stream.set_nodelay(True)
        try:
            while True:
                _, length = HDR.unpack(await stream.read_bytes(16))
                msg = msgpack.unpackb(await stream.read_bytes(length), raw=False)
                out = msgpack.packb({"status": "OK", "result": msg["x"]}, use_bin_type=True)
                await stream.write(HDR.pack(1, len(out)) + out)
        except StreamClosedError:
            pass


def _serve_tornado(conn) -> None:
    async def main():
        server = _TornadoEcho()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        sock.setblocking(False)
        server.add_sockets([sock])
        _answer_cpu(conn, "tcp://127.0.0.1:%d" % sock.getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


def _raw_echo_connection(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with sock:
        while True:
            head = _recv_exact(sock, 16)
            if head is None:
                return
            _, length = HDR.unpack(head)
            body = _recv_exact(sock, length)
            if body is None:
                return
            sock.sendall(head + body)


def _serve_raw(conn) -> None:
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1024)
    _answer_cpu(conn, "tcp://127.0.0.1:%d" % lsock.getsockname()[1])
    while True:
        sock, _ = lsock.accept()
        threading.Thread(target=_raw_echo_connection, args=(sock,), daemon=True).start()


def _dask_echo(comm, x):
    return x


def _serve_dask(conn) -> None:
    import logging

    from distributed.core import Server as DaskServer

    # after the import: importing distributed configures its own log levels
    logging.getLogger("distributed").setLevel(logging.ERROR)

    async def main():
        server = DaskServer({"echo": _dask_echo})
        await server
        await server.listen("tcp://127.0.0.1:0")
        _answer_cpu(conn, server.address)
        await asyncio.Event().wait()

    asyncio.run(main())


# =========================================================================
# clients: one object per variant, all in this process
# =========================================================================


class OursClient:
    name = "distributed_core rpc"

    def __init__(self, address):
        self.r = rpc(address)

    async def start(self):
        await self.r.echo(x=1)

    async def rtt(self, n):
        echo = self.r.echo
        t0 = time.perf_counter()
        for _ in range(n):
            await echo(x=1)
        return (time.perf_counter() - t0) / n

    async def concurrent(self, c, m):
        echo = self.r.echo

        async def one():
            for _ in range(m):
                await echo(x=1)

        t0 = time.perf_counter()
        await asyncio.gather(*[one() for _ in range(c)])
        return c * m / (time.perf_counter() - t0)

    async def close(self):
        await self.r.close_rpc()


class DaskClient(OursClient):
    name = "dask.distributed rpc"

    def __init__(self, address):
        from distributed.core import rpc as dask_rpc

        self.r = dask_rpc(address)


class TornadoClient:
    name = "bare tornado echo"

    def __init__(self, address):
        self.host, self.port = _split(address)
        self.streams = []

    async def _stream(self):
        stream = await TCPClient().connect(self.host, self.port)
        stream.set_nodelay(True)
        return stream

    async def start(self):
        self.streams.append(await self._stream())
        await self._call(self.streams[0])

    @staticmethod
    async def _call(stream):
        out = msgpack.packb(REQUEST, use_bin_type=True)
        await stream.write(HDR.pack(1, len(out)) + out)
        _, length = HDR.unpack(await stream.read_bytes(16))
        reply = msgpack.unpackb(await stream.read_bytes(length), raw=False)
        return reply["result"]

    async def rtt(self, n):
        stream, call = self.streams[0], self._call
        t0 = time.perf_counter()
        for _ in range(n):
            await call(stream)
        return (time.perf_counter() - t0) / n

    async def concurrent(self, c, m):
        while len(self.streams) < c:
            self.streams.append(await self._stream())
        call = self._call

        async def one(stream):
            for _ in range(m):
                await call(stream)

        t0 = time.perf_counter()
        await asyncio.gather(*[one(s) for s in self.streams[:c]])
        return c * m / (time.perf_counter() - t0)

    async def close(self):
        for s in self.streams:
            s.close()


class RawClient:
    name = "raw blocking socket"

    def __init__(self, address):
        self.sock = socket.create_connection(_split(address))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        out = msgpack.packb(REQUEST, use_bin_type=True)
        self.message = HDR.pack(1, len(out)) + out

    async def start(self):
        await self.rtt(1)

    async def rtt(self, n):
        sock, message, size = self.sock, self.message, len(self.message)
        t0 = time.perf_counter()
        for _ in range(n):
            sock.sendall(message)
            _recv_exact(sock, size)
        return (time.perf_counter() - t0) / n

    async def close(self):
        self.sock.close()


# =========================================================================
# bulk transfer: a fresh sender and receiver process per measurement
# =========================================================================


def _make_payload(kind: str, nbytes: int):
    if kind == "numpy":
        return np.arange(nbytes // 8, dtype=np.int64)
    if kind == "bytearray":
        return bytearray(b"\x5a") * nbytes
    return b"\x5a" * nbytes


def _bulk_sender(impl: str, kind: str, nbytes: int, conn) -> None:
    """Listen, then create the payload, send it to the one receiver, report peak RSS.

    The baseline is taken once the listener is up, so it excludes the fixed
    cost of the event loop and server; what is left is the payload itself
    plus whatever sending it allocates.
    """
    held = {}
    if impl == "raw":
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        base = _maxrss()
        held["payload"] = _make_payload(kind, nbytes)
        conn.send("tcp://127.0.0.1:%d" % lsock.getsockname()[1])
        sock, _ = lsock.accept()
        _recv_exact(sock, 1)
        sock.sendall(HDR.pack(1, nbytes))
        sock.sendall(memoryview(held["payload"]).cast("B"))
        conn.recv()
        sock.close()
        conn.send(_maxrss() - base)
        return

    async def main():
        if impl == "ours":
            server = Server({"get": lambda comm: held["payload"]}, name="sender")
            await server.listen("tcp://127.0.0.1:0")
            address = server.address
        else:

            class Sender(TCPServer):
                async def handle_stream(self, stream, address):
                    try:
                        await stream.read_bytes(1)
                        stream.write(HDR.pack(1, nbytes))
                        await stream.write(memoryview(held["payload"]).cast("B"))
                    except StreamClosedError:
                        pass

            server = Sender()
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(1)
            sock.setblocking(False)
            server.add_sockets([sock])
            address = "tcp://127.0.0.1:%d" % sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.add_reader(conn.fileno(), lambda: done.done() or done.set_result(conn.recv()))
        base = _maxrss()
        held["payload"] = _make_payload(kind, nbytes)
        conn.send(address)
        await done
        loop.remove_reader(conn.fileno())
        if impl == "ours":
            await server.close()
        else:
            server.stop()
        return base

    base = asyncio.run(main())
    conn.send(_maxrss() - base)


def _check(obj, kind: str, nbytes: int) -> str:
    """The received object's type name, or ``WRONG ...`` if its content is off."""
    if kind == "numpy" and hasattr(obj, "dtype"):
        ok = obj.nbytes == nbytes and int(obj[-1]) == nbytes // 8 - 1
    elif kind == "numpy":  # the array's bytes, received by a bare implementation
        last = int.from_bytes(bytes(obj[-8:]), sys.byteorder)
        ok = len(obj) == nbytes and last == nbytes // 8 - 1
    else:
        ok = len(obj) == nbytes and obj[-1] == 0x5A
    return type(obj).__name__ if ok else f"WRONG {type(obj).__name__}"


def _bulk_receiver(impl: str, kind: str, address: str, nbytes: int, conn) -> None:
    """Connect, then time one request for the payload; report seconds and peak RSS.

    The baseline is taken once connected, so it counts only what receiving
    the payload allocates (ideally one payload-sized buffer).
    """
    host, port = _split(address)
    if impl == "raw":
        sock = socket.create_connection((host, port))
        base = _maxrss()
        t0 = time.perf_counter()
        sock.sendall(b"g")
        _, length = HDR.unpack(_recv_exact(sock, 16))
        obj = _recv_exact(sock, length)
        seconds = time.perf_counter() - t0
        sock.close()
        conn.send((seconds, _maxrss() - base, _check(obj, kind, nbytes)))
    else:

        async def main():
            if impl == "ours":
                comm = await connect(address)
                base = _maxrss()
                t0 = time.perf_counter()
                await comm.write({"op": "get", "reply": True})
                obj = (await comm.read())["result"]
                seconds = time.perf_counter() - t0
                await comm.close()
            else:
                stream = await TCPClient().connect(host, port, max_buffer_size=nbytes + MIB)
                base = _maxrss()
                t0 = time.perf_counter()
                await stream.write(b"g")
                _, length = HDR.unpack(await stream.read_bytes(16))
                obj = bytearray(length)
                await stream.read_into(obj)
                seconds = time.perf_counter() - t0
                stream.close()
            # Measure here and return only small values: on Python 3.11
            # asyncio.run() builds repr() of the main task's result when it
            # restores the SIGINT handler, which for a big bytes-like result
            # allocates a multiple of it.
            return seconds, _maxrss() - base, _check(obj, kind, nbytes)

        conn.send(asyncio.run(main()))


def _bulk_once(ctx, impl: str, kind: str, nbytes: int) -> dict:
    s_parent, s_child = ctx.Pipe()
    sender = ctx.Process(target=_bulk_sender, args=(impl, kind, nbytes, s_child), daemon=True)
    sender.start()
    address = s_parent.recv()
    r_parent, r_child = ctx.Pipe()
    receiver = ctx.Process(
        target=_bulk_receiver, args=(impl, kind, address, nbytes, r_child), daemon=True
    )
    receiver.start()
    seconds, rmem, got = r_parent.recv()
    s_parent.send("report")
    smem = s_parent.recv()
    receiver.join()
    sender.join()
    return {"gbps": nbytes / seconds / 1e9, "send_mem": smem, "recv_mem": rmem, "type": got}


# =========================================================================
# driver
# =========================================================================


def _start_server(ctx, target):
    """Start an echo server process; returns ``(process, control pipe, address)``."""
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(child,), daemon=True)
    proc.start()
    if not parent.poll(60):
        proc.terminate()
        raise RuntimeError(f"{target.__name__} did not start within 60s")
    return proc, parent, parent.recv()


def _server_cpu(control) -> float:
    control.send("cpu")
    return control.recv()


def _rotate(items, i):
    i %= len(items)
    return items[i:] + items[:i]


async def _measure(client, control, how: str, n: int, c: int, m: int):
    """One timed run; returns (figure, CPU seconds per call in client + server)."""
    gc.collect()
    cpu0, scpu0 = time.process_time(), _server_cpu(control)
    if how == "rtt":
        value, calls = await client.rtt(n), n
    else:
        value, calls = await client.concurrent(c, m), c * m
    cpu1, scpu1 = time.process_time(), _server_cpu(control)
    return value, (cpu1 - cpu0 + scpu1 - scpu0) / calls


async def _run_clients(clients, controls, rounds, n, c, m, which) -> dict:
    for cl in clients.values():
        await cl.start()
    conc = [k for k in clients if hasattr(clients[k], "concurrent")]
    # an untimed warm-up opens every connection and warms caches
    for k in clients:
        await clients[k].rtt(max(n // 10, 10))
    for k in conc:
        await clients[k].concurrent(c, max(m // 10, 2))
    results = {}
    for how, names in (("rtt", list(clients)), ("concurrent", conc)):
        if how not in which:
            continue
        results[how] = {k: [] for k in names}
        for i in range(rounds):
            for k in _rotate(names, i):
                results[how][k].append(await _measure(clients[k], controls[k], how, n, c, m))
            print(f"  {how} round {i + 1}/{rounds} done", file=sys.stderr, flush=True)
    for cl in clients.values():
        await cl.close()
    return results


def _ratio(xs, ys):
    """Median of the per-round ratios x_i / y_i (same round, adjacent in time)."""
    if not xs or not ys:
        return None
    return statistics.median(x / y for x, y in zip(xs, ys))


def _fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}x"


def _met(ok) -> str:
    return "n/a" if ok is None else ("yes" if ok else "NO")


def _call_rows(res, how, labels, fmt, target_row) -> list:
    """Table rows for the rtt or concurrent results: figure, then CPU per call."""
    rows = []
    r = res[how]
    col = {k: [v[0] for v in r[k]] for k in r}
    cpu = {k: [v[1] for v in r[k]] for k in r}
    for k, label in labels:
        if k not in r:
            continue
        rt, rd = _ratio(col[k], col["tornado"]), _ratio(col[k], col.get("dask"))
        target, met = target_row(k, rt, rd)
        rows.append(
            (label, fmt(statistics.median(col[k])), _fmt_ratio(rt), _fmt_ratio(rd), target, met)
        )
        rows.append(
            (
                "    CPU per call, client + server",
                f"{statistics.median(cpu[k]) * 1e6:.1f} us",
                _fmt_ratio(_ratio(cpu[k], cpu["tornado"])),
                _fmt_ratio(_ratio(cpu[k], cpu.get("dask"))),
                "",
                "",
            )
        )
    return rows


def _bulk_rows(br, variants, nbytes) -> list:
    rows = []
    size = f"{nbytes // MIB} MiB"
    names = {"raw": "raw sendall/recv_into", "tornado": "bare tornado write/read_into"}
    for impl, kind in variants:
        runs = br[(impl, kind)]
        xs = [x["gbps"] for x in runs]
        # against bare tornado sending the same payload (its memory matters:
        # numpy arrays live in huge pages, bytes and bytearrays do not)
        ref = ("tornado", "numpy") if kind == "numpy" else ("tornado", "bytes")
        rt = _ratio(xs, [x["gbps"] for x in br[ref]])
        ours = impl == "ours"
        got = sorted({x["type"] for x in runs})
        met = _met(rt >= 0.75) if ours else ""
        if any(g.startswith("WRONG") for g in got):
            met = f"WRONG DATA {got}"
        label = f"bulk {size} {kind}: {names.get(impl, 'Comm.write/Comm.read')}"
        rows.append(
            (
                label,
                f"{statistics.median(xs):.2f} GB/s",
                _fmt_ratio(rt),
                "-",
                ">= 0.75x tornado" if ours else "",
                met,
            )
        )
        for side in ("send", "recv"):
            mem = statistics.median(x[f"{side}_mem"] for x in runs) / nbytes
            extra = f" (received as {', '.join(got)})" if side == "recv" else ""
            rows.append(
                (
                    f"    peak RSS, {side} side{extra}",
                    f"{mem:.2f}x payload",
                    "",
                    "",
                    "<= 1.5x payload" if ours else "",
                    _met(mem <= 1.5) if ours else "",
                )
            )
    return rows


def _print_table(rows) -> None:
    heads = ("measurement", "median", "vs tornado", "vs dask", "target", "met?")
    widths = [max(len(str(r[i])) for r in [heads, *rows]) for i in range(len(heads))]
    line = "  ".join("-" * w for w in widths)
    print()
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths)).rstrip())
    print(line)
    for r in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip())
    print(line)
    print(
        "Ratios are medians of per-round ratios (each round runs every variant back to back,\n"
        "order rotated): for times lower is better, for calls/s and GB/s higher is better.\n"
        "CPU per call = user+sys seconds of the client and the server process over the run,\n"
        "divided by the calls: less sensitive to scheduling noise than wall time.\n"
        "Peak RSS = ru_maxrss of the process minus its value just before the payload was\n"
        "created (sender: includes the payload itself) or requested (receiver)."
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="few rounds, small payload (smoke run)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 11; bulk 7)")
    p.add_argument("--calls", type=int, help="sequential calls per rtt round (default 2000)")
    p.add_argument("--payload-mib", type=int, help="bulk payload in MiB (default 256)")
    p.add_argument("--only", default="rtt,concurrent,bulk", help="comma-separated subset")
    p.add_argument("--no-dask", action="store_true", help="leave dask.distributed out")
    args = p.parse_args(argv)
    which = set(args.only.split(","))
    unknown = which - {"rtt", "concurrent", "bulk"}
    if unknown:
        p.error(f"unknown --only item(s) {sorted(unknown)}; choose from rtt, concurrent, bulk")
    q = args.quick
    rounds = args.rounds or (3 if q else 11)
    bulk_rounds = args.rounds or (2 if q else 7)
    n = args.calls or (200 if q else 2000)
    c, m = (20, 50) if q else (100, 200)
    nbytes = (args.payload_mib or (16 if q else 256)) * MIB
    dask = not args.no_dask and _dask_available()

    ctx = _ctx()
    versions = f"distributed-core {distributed_core.__version__}"
    if dask:
        versions += f", dask.distributed {__import__('distributed').__version__}"
    print(
        f"core_bench: Python {platform.python_version()}, {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs, {versions}"
    )
    print(
        f"  rounds={rounds} (bulk {bulk_rounds}), rtt calls/round={n}, concurrent={c}x{m}, "
        f"payload={nbytes // MIB} MiB, start method={ctx.get_start_method()}"
    )
    if hasattr(os, "getloadavg"):
        load = os.getloadavg()[0]
        note = "" if load < 0.5 else "  (the machine is busy: expect noise; trust the ratios)"
        print(f"  load average at start: {load:.2f}{note}")
    rows = []

    if which & {"rtt", "concurrent"}:
        targets = {"ours": _serve_ours, "tornado": _serve_tornado, "raw": _serve_raw}
        if dask:
            targets["dask"] = _serve_dask
        procs, controls, addrs = [], {}, {}
        try:
            for k, t in targets.items():
                proc, controls[k], addrs[k] = _start_server(ctx, t)
                procs.append(proc)
            kinds = {"ours": OursClient, "tornado": TornadoClient, "raw": RawClient}
            if dask:
                kinds["dask"] = DaskClient
            clients = {k: kinds[k](addrs[k]) for k in targets}
            res = asyncio.run(_run_clients(clients, controls, rounds, n, c, m, which))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.join()

        if "rtt" in which:
            rows += _call_rows(
                res,
                "rtt",
                [
                    ("ours", "rtt: distributed_core rpc"),
                    ("tornado", "rtt: bare tornado echo"),
                    ("raw", "rtt: raw blocking socket"),
                    ("dask", "rtt: dask.distributed rpc"),
                ],
                lambda v: f"{v * 1e6:.1f} us",
                lambda k, rt, rd: (
                    ("<= 1.15x tornado", _met(rt <= 1.15)) if k == "ours" else ("", "")
                ),
            )
        if "concurrent" in which:
            rows += _call_rows(
                res,
                "concurrent",
                [
                    ("ours", f"{c}x{m} concurrent: distributed_core rpc"),
                    ("tornado", f"{c}x{m} concurrent: bare tornado, 1 conn each"),
                    ("dask", f"{c}x{m} concurrent: dask.distributed rpc"),
                ],
                lambda v: f"{v:,.0f} calls/s",
                lambda k, rt, rd: (
                    (">= 2x dask", _met(None if rd is None else rd >= 2))
                    if k == "ours"
                    else ("", "")
                ),
            )

    if "bulk" in which:
        variants = [
            ("raw", "bytes"),
            ("tornado", "bytes"),
            ("ours", "bytes"),
            ("ours", "bytearray"),
            ("tornado", "numpy"),
            ("ours", "numpy"),
        ]
        if np is None:
            variants = [v for v in variants if v[1] != "numpy"]
        br = {v: [] for v in variants}
        _bulk_once(ctx, "ours", "bytes", MIB)  # start the forkserver, warm caches
        for i in range(bulk_rounds):
            for v in _rotate(variants, i):
                gc.collect()
                br[v].append(_bulk_once(ctx, *v, nbytes))
            print(f"  bulk round {i + 1}/{bulk_rounds} done", file=sys.stderr, flush=True)
        rows += _bulk_rows(br, variants, nbytes)

    _print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
