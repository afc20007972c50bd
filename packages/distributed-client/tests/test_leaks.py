"""No data left behind (issue 10): every way a client can go, against real processes.

A client that closes (normally, by an exception in ``with``, by Ctrl-C, by
process exit without close) leaves nothing of its own on the cluster, not
even results of tasks still running at that moment; one killed with
SIGKILL is released by the center after ``client_timeout`` (1.5 s here).
Each test waits for the proof that its slow task finished on the worker (a
marker file the task writes), then polls (bounded) until neither the center
nor any worker holds a key of the client.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from distributed_client import Executor, LocalCluster, Pool
from distributed_core import rpc

#: the center's client_timeout for the tests of clients that die (kill -9, SIGSTOP)
CLIENT_TIMEOUT = 1.5
#: and for those of clients that close: longer than POLL, so that only the
#: client's own release can pass them, not the timeout
LONG_CLIENT_TIMEOUT = 120
#: bound on every poll below: a released client plus a slow machine
POLL = 20.0


def _cluster(client_timeout):
    env = {"DISTRIBUTED_TIMEOUTS__CLIENT_TIMEOUT": str(client_timeout)}
    return LocalCluster(n_workers=2, ncores=2, heartbeat_interval=0.2, heartbeat_timeout=2, env=env)


@pytest.fixture(scope="module")
def cluster():
    """Clients that close release their data themselves."""
    with _cluster(LONG_CLIENT_TIMEOUT) as c:
        yield c


@pytest.fixture(scope="module")
def short_cluster():
    """Clients that die are released by the center after CLIENT_TIMEOUT."""
    with _cluster(CLIENT_TIMEOUT) as c:
        yield c


def held(cluster) -> tuple[set, set]:
    """(keys the center lists, keys the workers hold), asked over the wire."""

    async def ask():
        async with rpc(cluster.center_address) as center:
            has_what = await center.has_what()
        on_workers = set()
        for address in has_what:
            async with rpc(address) as worker:
                on_workers.update(await worker.keys())
        return {k for ks in has_what.values() for k in ks}, on_workers

    return asyncio.run(ask())


def gone(cluster, keys) -> bool:
    """Poll (at most POLL seconds) until no key of `keys` is on the center or a worker."""
    keys = set(keys)
    deadline = time.monotonic() + POLL
    while True:
        on_center, on_workers = held(cluster)
        if not (keys & (on_center | on_workers)):
            return True
        if time.monotonic() > deadline:
            raise AssertionError(
                f"still held after {POLL}s: center {keys & on_center}, workers {keys & on_workers}"
            )
        time.sleep(0.05)


def wait_for(path: Path, what: str) -> None:
    deadline = time.monotonic() + POLL
    while not path.exists():
        assert time.monotonic() < deadline, f"{what} did not happen within {POLL}s"
        time.sleep(0.02)


def sleep_then_mark(seconds, path):
    """A task still running when its client goes; the file proves it finished."""
    time.sleep(seconds)
    Path(path).write_text("done")
    return b"x" * 100


def run_client(cluster, body: str, tmp_path: Path) -> subprocess.Popen:
    """Start a client process running `body` (with ``center`` and ``mark`` defined)."""
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        import cloudpickle, __main__
        cloudpickle.register_pickle_by_value(__main__)
        from distributed_client import Executor
        center = {center!r}
        mark = Path({mark!r})

        def sleep_then_mark(seconds, path):
            time.sleep(seconds)
            Path(path).write_text("done")
            return b"x" * 100

        """
    ).format(center=cluster.center_address, mark=str(tmp_path / "task-done"))
    path = tmp_path / "client.py"
    path.write_text(script + textwrap.dedent(body))
    proc = subprocess.Popen(
        [sys.executable, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=str(tmp_path),
    )
    proc.lines = []  # what it printed so far, read by a thread (never a blocking read here)
    proc.reader = threading.Thread(target=lambda: proc.lines.extend(proc.stdout), daemon=True)
    proc.reader.start()
    return proc


def stop(proc: subprocess.Popen) -> None:
    """Kill the client process (if still running) and close its pipe."""
    proc.kill()
    proc.wait(10)
    proc.reader.join(10)
    proc.stdout.close()


def read_line(proc: subprocess.Popen, start: str) -> str:
    """The first line the client printed that starts with `start` (waits at most POLL s)."""
    deadline = time.monotonic() + POLL
    while True:
        for line in list(proc.lines):
            if line.startswith(start):
                return line
        if proc.poll() is not None and not any(x.startswith(start) for x in proc.lines):
            time.sleep(0.2)  # the reader thread may still be behind
            if not any(x.startswith(start) for x in proc.lines):
                raise AssertionError(
                    f"client exited with {proc.returncode}:\n{''.join(proc.lines)}"
                )
        assert time.monotonic() < deadline, f"no {start!r} within {POLL}s:\n{''.join(proc.lines)}"
        time.sleep(0.02)


def read_keys(proc: subprocess.Popen) -> list[str]:
    """The keys the client process prints on one line starting with ``KEYS``."""
    return read_line(proc, "KEYS ").split()[1:]


def test_close_deletes_results_of_running_tasks(cluster, tmp_path):
    mark = tmp_path / "done"
    e = Executor(cluster)
    done = e.submit(abs, -3)
    running = e.submit(sleep_then_mark, 0.5, str(mark))
    scattered = e.scatter([b"abc" * 10])
    assert done.result() == 3
    keys = [done.key, running.key, *(f.key for f in scattered)]
    e.close()
    wait_for(mark, "the running task")
    assert gone(cluster, keys)


def test_exception_in_with_block(cluster, tmp_path):
    mark = tmp_path / "done"
    keys = []
    with pytest.raises(ZeroDivisionError):
        with Executor(cluster) as e:
            f = e.submit(sleep_then_mark, 0.5, str(mark))
            g = e.submit(abs, -1)
            g.result()
            keys += [f.key, g.key]
            1 / 0
    wait_for(mark, "the running task")
    assert gone(cluster, keys)


def test_second_client_keeps_its_keys_when_first_dies(short_cluster, tmp_path):
    cluster = short_cluster
    with Executor(cluster) as other:
        kept = other.submit(abs, -7)
        kept_scattered = other.scatter([b"kept" * 10])
        assert kept.result() == 7
        proc = run_client(
            cluster,
            """
            e = Executor(center)
            fs = [e.submit(abs, -i) for i in range(1, 6)] + e.scatter([b"mine" * 5])
            e.gather(fs)
            f = e.submit(sleep_then_mark, 0.5, str(mark))
            print("KEYS", *[x.key for x in fs + [f]], flush=True)
            time.sleep(600)
            """,
            tmp_path,
        )
        try:
            keys = read_keys(proc)
            # the center hears of results a few ms after the client (batched reports)
            deadline = time.monotonic() + POLL
            while not set(keys[:-1]) <= held(cluster)[0]:
                assert time.monotonic() < deadline, "the client's keys never reached the center"
                time.sleep(0.02)
            proc.kill()  # SIGKILL: no close, no atexit
            proc.wait(10)
            wait_for(tmp_path / "task-done", "the running task")
            assert gone(cluster, keys)
        finally:
            stop(proc)
        on_center, on_workers = held(cluster)
        mine = {kept.key, *(f.key for f in kept_scattered)}
        assert mine <= on_center and mine <= on_workers
        assert kept.result() == 7


def test_process_exit_without_close(cluster, tmp_path):
    proc = run_client(
        cluster,
        """
        e = Executor(center)
        fs = [e.submit(abs, -1), *e.scatter([b"exit" * 5])]
        e.gather(fs)
        f = e.submit(sleep_then_mark, 0.5, str(mark))
        print("KEYS", *[x.key for x in fs + [f]], flush=True)
        sys.exit(0)  # no close: the interpreter's exit releases
        """,
        tmp_path,
    )
    try:
        keys = read_keys(proc)
        assert proc.wait(30) == 0
        wait_for(tmp_path / "task-done", "the running task")
        assert gone(cluster, keys)
    finally:
        stop(proc)


def test_ctrl_c_inside_with_block(cluster, tmp_path):
    proc = run_client(
        cluster,
        """
        try:
            with Executor(center) as e:
                fs = [e.submit(abs, -2), *e.scatter([b"ctrlc" * 5])]
                e.gather(fs)
                f = e.submit(sleep_then_mark, 1.0, str(mark))
                print("KEYS", *[x.key for x in fs + [f]], flush=True)
                f.result()  # interrupted here
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(7)
        """,
        tmp_path,
    )
    try:
        keys = read_keys(proc)
        time.sleep(0.2)  # let it block in result() (nothing is asserted on timing)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 7
        wait_for(tmp_path / "task-done", "the running task")
        assert gone(cluster, keys)
    finally:
        stop(proc)


def test_pool_close_join_releases_and_disconnects(cluster, tmp_path):
    mark = tmp_path / "done"
    pool = Pool(cluster)
    results = pool.map(abs, [-1, -2, -3], remote=True)
    running = pool.apply_async(sleep_then_mark, [0.3, str(mark)])
    assert pool.gather(results) == [1, 2, 3]
    keys = [r.key for r in results]
    pool.close()
    pool.join()
    assert running.ready()
    assert pool.status == "closed"
    assert mark.exists()
    assert gone(cluster, keys)
    pool.join()  # a second join is harmless
    pool.terminate()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX signals")
def test_expired_client_is_told(short_cluster, tmp_path):
    """A client that stops heartbeating (SIGSTOP here) is released; when it
    resumes, the center tells it its data is gone and registers it again."""
    cluster = short_cluster
    proc = run_client(
        cluster,
        """
        import logging
        logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
        e = Executor(center)
        f = e.submit(abs, -5)
        f.result()
        print("KEYS", f.key, flush=True)
        time.sleep(600)
        """,
        tmp_path,
    )
    try:
        keys = read_keys(proc)
        proc.send_signal(signal.SIGSTOP)
        try:
            assert gone(cluster, keys)
        finally:
            proc.send_signal(signal.SIGCONT)
        assert "after 1.5s without a heartbeat" in read_line(proc, "WARNING:distributed_client")
    finally:
        stop(proc)


def test_lease_with_a_center_that_keeps_no_leases():
    """A center from before issue 10 answers 'unknown op': the lease stops, quietly."""
    from distributed_client._lease import Lease
    from distributed_core.testing import serve

    async def main():
        async with serve({"ncores": lambda comm: {}}) as server, rpc(server.address) as r:

            class Session:
                id = "c0ffee"
                name = "client-c0ffee"
                center_address = server.address

                async def center_call(self, op, retry=True, **kwargs):
                    return await r.call(op, **kwargs)

            lease = Lease(Session())
            lease.start()
            await asyncio.wait_for(lease._task, POLL)  # ends after the first answer
            assert lease.supported is False
            await lease.close()  # sends nothing more, raises nothing

    asyncio.run(main())
