"""distributed-client against dask.distributed across simulated hosts (issue 8).

Topology, the same for both (tests/hosts/harness.py: network namespaces on a
bridge): the center / dask scheduler on h0, two workers (1 thread each, dask
without a nanny) on h1 and h2, and the client on h3, whose connections to the
cluster pass through the delay relay adding 10 ms to every round trip. Both
clusters run at the same time; each client is a driver process in h3 that
stays connected between measurements. Measurements are INTERLEAVED round by
round (ours, dask, then dask, ours, ...) and the table shows medians:

1. ``map``: 2,000 trivial tasks + gather (``Pool.map`` + ``Pool.gather`` vs
   ``Client.map`` + ``Client.gather``), tasks/s. Target: >= 5x dask.
2. ``chain``: 100 dependent tasks (``submit(inc, previous)``), then the
   last result, s. Target: >= 1x dask.
3. ``tree``: a 1,024-leaf pairwise tree reduction through ``get`` vs
   ``Client.get``, s. Target: >= 1x dask.
4. ``roundtrip``: sequential ``submit(inc, i).result()``, ms per call.
   Target: >= 1x dask.

"ratio" is dask's time / ours (> 1: ours is faster). A benchmark, not a test:
nothing asserts on timings. Needs root, ``ip`` and ``nft`` (else it says so
and exits 0) and dask.distributed (``nox -s bench`` installs it).

Usage::

    python benchmarks/hosts.py            # 5 rounds
    python benchmarks/hosts.py --quick    # 1 round, smaller roundtrip count
    python benchmarks/hosts.py --rounds 9 --only map,chain
    python benchmarks/hosts.py --latency-ms 0    # same hosts, no added latency
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import sys
import tempfile
import threading
import time
from operator import add
from pathlib import Path

HERE = Path(__file__).resolve().parent
LATENCY_MS = 10  # added round trip between the client host and the cluster
N_MAP = 2_000
N_CHAIN = 100
N_LEAVES = 1_024
CMD_TIMEOUT = 600.0  # seconds for one measurement command in a driver
START_TIMEOUT = 60.0  # seconds for a cluster to come up with both workers


def inc(x):
    return x + 1


def tree_graph(n_leaves: int) -> tuple[dict, tuple, int]:
    """A pairwise reduction over `n_leaves` leaves: (graph, output key, expected value)."""
    dsk = {("leaf", i): (inc, i) for i in range(n_leaves)}
    level, depth = [("leaf", i) for i in range(n_leaves)], 0
    while len(level) > 1:
        depth += 1
        nxt = []
        for i in range(0, len(level) - 1, 2):
            key = (f"add-{depth}", i // 2)
            dsk[key] = (add, level[i], level[i + 1])
            nxt.append(key)
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return dsk, level[0], sum(range(1, n_leaves + 1))


# --------------------------------------------------------------------------- drivers (in h3)


class Ours:
    def __init__(self, address: str):
        from distributed_client import Executor, Pool

        self.pool = Pool(address)
        self.executor = Executor(address)
        self.address = address

    def map(self, n):
        assert self.pool.map(inc, range(n)) == list(range(1, n + 1))

    def chain(self, n):
        x = self.executor.submit(inc, 0, pure=False)
        for _ in range(n - 1):
            x = self.executor.submit(inc, x, pure=False)
        assert x.result() == n

    def tree(self, n):
        from distributed_client import get

        dsk, key, expected = tree_graph(n)
        assert get(self.address, dsk, key) == expected

    def roundtrip(self, n):
        for i in range(n):
            assert self.executor.submit(inc, i, pure=False).result() == i + 1


class Dask:
    def __init__(self, address: str):
        from distributed import Client

        self.client = Client(address, timeout=START_TIMEOUT)
        self.client.wait_for_workers(2, timeout=START_TIMEOUT)

    def map(self, n):
        futures = self.client.map(inc, range(n), pure=False)
        assert self.client.gather(futures) == list(range(1, n + 1))

    def chain(self, n):
        x = self.client.submit(inc, 0, pure=False)
        for _ in range(n - 1):
            x = self.client.submit(inc, x, pure=False)
        assert x.result() == n

    def tree(self, n):
        dsk, key, expected = tree_graph(n)
        assert self.client.get(dsk, key) == expected

    def roundtrip(self, n):
        for i in range(n):
            assert self.client.submit(inc, i, pure=False).result() == i + 1


def driver(kind: str, address: str) -> None:
    """Run in the client host: read ``{"cmd", "n"}`` lines, answer ``{"seconds"}``."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    impl = (Ours if kind == "ours" else Dask)(address)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            start = time.perf_counter()
            getattr(impl, msg["cmd"])(msg["n"])
            reply = {"seconds": time.perf_counter() - start}
        except Exception as e:  # reported to the parent, which stops
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)


# --------------------------------------------------------------------------- parent (root)


class Driver:
    """A driver process in `host`, commanded over its stdin/stdout."""

    def __init__(self, host, kind: str, address: str):
        self.kind = kind
        self._stderr = tempfile.TemporaryFile()
        self.proc = host.popen(
            [sys.executable, str(Path(__file__).resolve()), "--driver", kind, address],
            stdin=-1, stdout=-1, stderr=self._stderr, text=True, name=f"driver-{kind}",
        )  # fmt: skip
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._reply(START_TIMEOUT + 30)

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _reply(self, timeout: float) -> dict:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            line = None
            why = f"no reply within {timeout:g}s"
        else:
            why = "it exited"
        if line is None:
            self._stderr.seek(0)
            err = self._stderr.read().decode(errors="replace")[-3000:]
            raise RuntimeError(f"driver {self.kind}: {why}; stderr:\n{err}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"driver {self.kind}: {reply['error']}")
        return reply

    def __call__(self, cmd: str, n: int) -> float:
        self.proc.stdin.write(json.dumps({"cmd": cmd, "n": n}) + "\n")
        self.proc.stdin.flush()
        return self._reply(CMD_TIMEOUT)["seconds"]


def interleaved(rounds: int, variants: dict) -> dict:
    """{name: median seconds}, running the variants in alternating order each round."""
    times = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(variants[name]())
    return {name: statistics.median(ts) for name, ts in times.items()}


def start_dask(hosts) -> str:
    h0, h1, h2 = hosts[0], hosts[1], hosts[2]
    sched = h0.popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", h0.ip,
         "--port", "8786", "--no-dashboard"],
        watch=True, name="dask-scheduler",
    )  # fmt: skip
    address = f"tcp://{h0.ip}:8786"
    for h in (h1, h2):
        h.popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", h.ip,
             "--nthreads", "1", "--no-nanny", "--no-dashboard"],
            watch=True, name=f"dask-worker@{h.name}",
        )  # fmt: skip
    del sched  # killed with the hosts; the driver waits for both workers
    return address


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per measure")
    parser.add_argument("--quick", action="store_true", help="1 round, 20 roundtrips")
    parser.add_argument("--only", default="map,chain,tree,roundtrip", help="measures to run")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=LATENCY_MS,
        help=f"added round trip for the client host (0: none) [default: {LATENCY_MS}]",
    )
    parser.add_argument("--driver", nargs=2, metavar=("KIND", "ADDRESS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.driver:
        driver(*args.driver)
        return 0

    sys.path.insert(0, str(HERE.parent / "tests" / "hosts"))
    from harness import Hosts, hosts_unavailable, start_center, start_worker

    reason = hosts_unavailable()
    if reason:
        print(f"hosts benchmark skipped: {reason}")
        return 0
    try:
        import dask
        import distributed
    except ImportError:
        print("dask.distributed is not importable: install it to compare", file=sys.stderr)
        return 1
    import distributed_client

    rounds = 1 if args.quick else args.rounds
    n_rt = 20 if args.quick else 100
    only = set(args.only.split(","))
    print(
        f"distributed-client {distributed_client.__version__}, dask {dask.__version__}, "
        f"distributed {distributed.__version__}; center/scheduler on h0, workers on h1, h2 "
        f"(1 thread), client on h3 with +{args.latency_ms:g} ms round trip; {rounds} round(s)",
        flush=True,
    )
    rows = []
    with Hosts(4) as hosts:
        h0, h1, h2, h3 = hosts
        _, ours_address = start_center(h0, "--host", h0.ip, "--port", "8787")
        for h in (h1, h2):
            start_worker(h, ours_address, "--ncores", "1")
        dask_address = start_dask(hosts)
        if args.latency_ms > 0:
            hosts.add_latency(h3, args.latency_ms)
        ours, theirs = Driver(h3, "ours", ours_address), Driver(h3, "dask", dask_address)
        measures = [
            ("map", N_MAP, f"Pool.map {N_MAP:,} x inc + gather", "tasks/s", 5.0),
            ("chain", N_CHAIN, f"chain of {N_CHAIN} dependent tasks", "s", 1.0),
            ("tree", N_LEAVES, f"tree reduction, {N_LEAVES:,} leaves", "s", 1.0),
            ("roundtrip", n_rt, "submit(inc).result()", "ms", 1.0),
        ]
        for cmd, n, label, unit, target in measures:
            if cmd not in only:
                continue
            med = interleaved(
                rounds,
                {
                    "ours": lambda cmd=cmd, n=n: ours(cmd, n),
                    "dask": lambda cmd=cmd, n=n: theirs(cmd, n),
                },
            )
            ratio = med["dask"] / med["ours"]
            if unit == "tasks/s":
                o, d = n / med["ours"], n / med["dask"]
            elif unit == "ms":
                o, d = med["ours"] / n * 1e3, med["dask"] / n * 1e3
            else:
                o, d = med["ours"], med["dask"]
            rows.append((label, unit, o, d, ratio, f">= {target:g}x", ratio >= target))
            print(f"  {label}: ours {o:.4g} {unit}, dask {d:.4g} {unit}", flush=True)

    print(f"\n{'measure':<36} {'unit':>8} {'ours':>10} {'dask':>10} {'ratio':>7}  target  met?")
    for label, unit, o, d, ratio, target, met in rows:
        print(
            f"{label:<36} {unit:>8} {o:>10.4g} {d:>10.4g} {ratio:>6.2f}x  {target:<7} "
            f"{'yes' if met else 'NO'}"
        )
    print("ratio: dask's time / ours (> 1: ours faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
