"""The dashboard's cost: Executor.map with the dashboard on (and polled) vs --no-dashboard.

Two clusters run at the same time, same shape (a center and 2 worker
processes x 1 thread, all local): one center serves the dashboard and a
browser-like client polls its JSON API every 500 ms (workers, task stream
since its cursor, events, throughput: what the page fetches); the other runs
with ``--no-dashboard`` (its workers then send no task events either, so the
difference is the whole cost: events on the workers' hot path, the center's
ring buffers, the web server and the poller). Rounds are interleaved (on, off,
off, on, ...) and the medians of ``Executor.map`` of N trivial tasks + gather
are compared, and the median of the per-round ratios. Target: the dashboard run within 5% of the other (ratio >= 0.95).

This is a benchmark, not a test: nothing asserts on timings.

Usage::

    python benchmarks/dashboard.py              # 10,000 tasks x 7 rounds
    python benchmarks/dashboard.py --quick      # 2,000 tasks x 3 rounds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request


def inc(x):
    return x + 1


def start(args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTRIBUTED_")}
    return subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip


def line(proc, prefix):
    for text in proc.stdout:
        if text.startswith(prefix):
            return text[len(prefix) :].strip()
    raise RuntimeError(f"process exited before printing {prefix!r}")


def cpu(pids) -> float:
    """User + system CPU seconds used so far by the processes `pids`."""
    import psutil

    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def cluster(dashboard: bool, procs: list):
    args = ["-m", "distributed_center", "--host", "127.0.0.1", "--port", "0"]
    args += ["--dashboard-address", "127.0.0.1:0"] if dashboard else ["--no-dashboard"]
    center = start(args)
    procs.append(center)
    address = line(center, "Start center at ")
    url = line(center, "Dashboard at ") if dashboard else None
    for _ in range(2):
        w = start(["-m", "distributed_worker", address, "--host", "127.0.0.1", "--ncores", "1"])
        procs.append(w)
        line(w, "Registered with center at ")
    return address, url, [p.pid for p in procs[-3:]]


def poll(url: str) -> None:
    """What the page does: four JSON requests every 500 ms (run in its own process,
    as a browser is, so its work does not land in the client's process)."""
    cursor, requests = 0, 0

    def get(path):
        nonlocal requests
        with urllib.request.urlopen(url + path, timeout=10) as r:
            requests += 1
            return json.load(r)

    try:
        while True:
            time.sleep(0.5)
            get("api/v1/workers")
            cursor = get(f"api/v1/task-stream?since={cursor}")["cursor"]
            get("api/v1/events?since=0")
            get("api/v1/throughput")
            print(requests, flush=True)
    except (KeyboardInterrupt, OSError):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tasks", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--no-poll", action="store_true",
                        help="dashboard on but nobody polls it (splits the cost)")  # fmt: skip
    parser.add_argument("--poll", metavar="URL", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.poll:
        return poll(opts.poll)
    n = opts.tasks or (2000 if opts.quick else 10_000)
    rounds = opts.rounds or (3 if opts.quick else 7)

    from distributed_client import Executor

    procs: list = []
    try:
        on_addr, url, on_pids = cluster(True, procs)
        off_addr, _, off_pids = cluster(False, procs)
        pids = {"on": on_pids, "off": off_pids}
        cpu_used = {"on": [], "off": []}
        poller = None if opts.no_poll else start([__file__, "--poll", url])
        if poller is not None:
            procs.append(poller)
        rates = {"on": [], "off": []}
        offset = 0
        with Executor(on_addr) as on, Executor(off_addr) as off:
            for ex in (on, off):  # warm-up
                [f.result() for f in ex.map(inc, range(-1000, 0))]
            for r in range(rounds):
                order = [("on", on), ("off", off)] if r % 2 == 0 else [("off", off), ("on", on)]
                for name, ex in order:
                    c0 = cpu(pids[name])
                    t0 = time.perf_counter()
                    futures = ex.map(inc, range(offset, offset + n))
                    total = sum(f.result() for f in futures)
                    elapsed = time.perf_counter() - t0
                    assert total == sum(range(offset + 1, offset + n + 1))
                    del futures
                    rates[name].append(n / elapsed)
                    cpu_used[name].append(cpu(pids[name]) - c0)
                    offset += n
        requests = "0"
        if poller is not None:
            poller.terminate()
            requests = (poller.communicate(timeout=10)[0].split() or ["0"])[-1]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait(10)
    on_med, off_med = statistics.median(rates["on"]), statistics.median(rates["off"])
    ratio = on_med / off_med
    # rounds run in pairs (on then off, or off then on): the median of the
    # per-pair ratios is less sensitive to a machine whose load changes
    pair_ratio = statistics.median(a / b for a, b in zip(rates["on"], rates["off"]))
    print(f"Executor.map of {n} trivial tasks + gather, 2 workers x 1 thread, {rounds} rounds")
    print(f"{'variant':<44} {'median tasks/s':>15}")
    label = "dashboard on, not polled" if opts.no_poll else "dashboard on, API polled every 500 ms"
    print(f"{label:<44} {on_med:>15.0f}")
    print(f"{'--no-dashboard':<44} {off_med:>15.0f}")
    print(f"ratio of medians on/off {ratio:.3f}; median of per-round ratios {pair_ratio:.3f} "
          f"(target >= 0.95: {'met' if pair_ratio >= 0.95 else 'NOT met'}); "
          f"poller made {requests} requests; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    cpu_on, cpu_off = statistics.median(cpu_used["on"]), statistics.median(cpu_used["off"])
    print(f"CPU of center + 2 workers per map (median): on {cpu_on:.2f} s, off {cpu_off:.2f} s, "
          f"ratio {cpu_on / cpu_off:.3f} (less sensitive to a busy machine than wall time)")  # fmt: skip
    print("per round on :", " ".join(f"{x:.0f}" for x in rates["on"]))
    print("per round off:", " ".join(f"{x:.0f}" for x in rates["off"]))


if __name__ == "__main__":
    main()
