"""The nanny: a small supervisor that runs workers as child processes and
starts a new one when one dies.

``dworker`` runs its worker(s) under a nanny unless given ``--no-nanny``.
Each worker is a child process (``python -m distributed_worker ...
--no-nanny``); when it dies (``kill -9``, a segfault, ``os._exit`` in a
task, or its memory above the *terminate* fraction, which the nanny checks
every ``interval`` seconds and answers with SIGKILL) the nanny starts a new
one at once. The new worker listens on a new port (unless ``--port`` fixed
one) and registers with the center under the same name, holding nothing: the
center drops the old address when its report stream breaks, and clients treat
its data as lost (recomputed, or `LostDataError` for scattered data).

A worker that exits by itself is not restarted: status 0 (stopped by the
``terminate`` op or a signal) ends that slot, status 3 (its center was gone
longer than ``--death-timeout``) ends the nanny with status 3, and a worker
that fails before it ever registered (a bad option, an unreachable center)
ends the nanny with its status, its error already printed.

SIGTERM/SIGINT stop the workers (SIGTERM, then SIGKILL after `STOP_GRACE`
seconds) and then the nanny. Children watch the nanny through a lifeline
(`distributed_core.lifeline`), so killing the nanny with -9 takes its
workers down too.

The nanny imports no user code: it has no server and never receives or
unpickles anything; this module uses only the standard library, psutil and
`distributed_core.lifeline`.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import psutil

from distributed_core.lifeline import Lifeline, watch_parent

__all__ = ["DEATH_EXIT_STATUS", "Nanny", "STOP_GRACE"]

logger = logging.getLogger("distributed_worker.nanny")

#: exit status of a worker (and nanny) whose center was gone longer than death_timeout
DEATH_EXIT_STATUS = 3
#: seconds a worker has to stop after SIGTERM before it is killed
STOP_GRACE = 5.0
_REGISTERED = "Registered with center at "
_STARTED = "Start worker at "


class _Slot:
    """One supervised worker: its process, and what we know of it."""

    def __init__(self, index: int):
        self.index = index
        self.proc: subprocess.Popen | None = None
        self.registered = False  # this incarnation registered
        self.ever_registered = False
        self.restarts = 0
        self.failures = 0  # consecutive incarnations that died before registering
        self.next_start = 0.0
        self.done = False
        self.address: str | None = None


class Nanny:
    """Supervise `nworkers` worker processes started with `worker_args`.

    Parameters
    ----------
    worker_args
        arguments of ``python -m distributed_worker`` for each worker
        (``--no-nanny`` is added).
    nworkers
        how many workers.
    memory_limit, terminate_fraction
        a worker whose RSS goes above ``memory_limit * terminate_fraction``
        bytes is killed and restarted (either None: never).
    interval
        seconds between two checks of the workers (memory, exit).
    name
        the workers' ``--name``; with several workers, worker ``i`` gets
        ``name-i``.
    """

    def __init__(
        self,
        worker_args: list[str],
        *,
        nworkers: int = 1,
        memory_limit: int | None = None,
        terminate_fraction: float | None = 0.95,
        interval: float = 0.1,
        name: str | None = None,
        env: dict | None = None,
        local_directory: str | None = None,
    ):
        if nworkers < 1:
            raise ValueError(f"nworkers must be >= 1, got {nworkers}")
        self.worker_args = list(worker_args)
        self.nworkers = nworkers
        self.memory_limit = memory_limit
        self.terminate_fraction = terminate_fraction
        self.interval = interval
        self.name = name
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        # glibc: a fixed trim threshold also fixes the mmap threshold, so large
        # buffers freed after spilling go back to the OS (as dask's nanny does)
        self.env.setdefault("MALLOC_TRIM_THRESHOLD_", "65536")
        self.slots = [_Slot(i) for i in range(nworkers)]
        # each worker spills into a directory of ours, emptied when it dies
        # (a killed worker cannot remove its own) and removed when we stop
        if local_directory is not None:
            os.makedirs(local_directory, exist_ok=True)
        self.directory = tempfile.mkdtemp(prefix="dworker-nanny-", dir=local_directory)
        self.lifeline = Lifeline()
        self._stop = threading.Event()
        self.status: int | None = None  # the nanny's exit status, once decided
        self._out_lock = threading.Lock()
        #: seconds the workers have to stop after SIGTERM when we stop
        self.stop_grace = STOP_GRACE

    @property
    def terminate_bytes(self) -> int | None:
        if self.memory_limit is None or self.terminate_fraction is None:
            return None
        return int(self.memory_limit * self.terminate_fraction)

    def stop(self) -> None:
        """Ask `run` to stop the workers and return (thread- and signal-safe)."""
        self._stop.set()

    def _parent_died(self) -> None:
        # the process that started us is gone: so is our cluster; be quick
        self.stop_grace = min(self.stop_grace, 1.0)
        self.stop()

    # -- running -----------------------------------------------------------------

    def run(self) -> int:
        """Supervise until stopped or every worker ended; returns the exit status."""
        watch_parent(on_death=self._parent_died)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop())
        try:
            for slot in self.slots:
                self._spawn(slot)
            while not self._stop.is_set():
                for slot in self.slots:
                    self._check(slot)
                if all(s.done for s in self.slots):
                    break
                self._stop.wait(self.interval)
        finally:
            self._stop_all()
            self.lifeline.close()
            shutil.rmtree(self.directory, ignore_errors=True)
        return self.status or 0

    def _slot_directory(self, slot: _Slot) -> str:
        return os.path.join(self.directory, f"worker-{slot.index}")

    def _args(self, slot: _Slot) -> list[str]:
        args = [sys.executable, "-m", "distributed_worker", *self.worker_args, "--no-nanny"]
        args += ["--local-directory", self._slot_directory(slot)]
        if self.name is not None:
            name = self.name if self.nworkers == 1 else f"{self.name}-{slot.index}"
            args += ["--name", name]
        return args

    def _spawn(self, slot: _Slot) -> None:
        slot.registered = False
        directory = self._slot_directory(slot)
        shutil.rmtree(directory, ignore_errors=True)  # what a dead worker left
        os.makedirs(directory)
        slot.proc = subprocess.Popen(
            self._args(slot),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=None,  # the worker's log and errors go where ours go
            **self.lifeline.popen_kwargs(self.env),
        )
        threading.Thread(
            target=self._relay,
            args=(slot, slot.proc),
            name=f"nanny-relay-{slot.index}",
            daemon=True,
        ).start()
        logger.info("nanny started worker process %d (pid %d)", slot.index, slot.proc.pid)

    def _relay(self, slot: _Slot, proc: subprocess.Popen) -> None:
        """Copy the worker's stdout to ours, noting when it registered."""
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            if line.startswith(_REGISTERED) and slot.proc is proc:
                slot.registered = slot.ever_registered = True
                slot.failures = 0
            elif line.startswith(_STARTED) and slot.proc is proc:
                slot.address = line[len(_STARTED) :].strip()
            with self._out_lock:
                sys.stdout.write(line)
                sys.stdout.flush()
        proc.stdout.close()

    def _check(self, slot: _Slot) -> None:
        if slot.done:
            return
        proc = slot.proc
        if proc is None:
            if time.monotonic() >= slot.next_start:
                self._spawn(slot)
            return
        code = proc.poll()
        if code is None:
            self._check_memory(slot, proc)
            return
        slot.proc = None
        if code == 0:
            logger.info("worker process %d stopped (status 0): not restarting it", slot.index)
            slot.done = True
            return
        if code == DEATH_EXIT_STATUS:
            logger.warning("worker process %d: its center is gone (death timeout)", slot.index)
            slot.done = True
            self.status = DEATH_EXIT_STATUS
            self._stop.set()
            return
        if not slot.ever_registered:
            # a start-up error (printed by the worker): restarting would repeat it
            slot.done = True
            self.status = code if code > 0 else 1
            self._stop.set()
            return
        slot.restarts += 1
        if slot.registered:
            slot.failures = 0
        else:
            slot.failures += 1
        delay = 0.0 if slot.failures == 0 else min(0.5 * 2 ** (slot.failures - 1), 10.0)
        how = f"signal {-code}" if code < 0 else f"status {code}"
        logger.warning(
            "worker process %d (%s) died with %s: starting a new one%s",
            slot.index, slot.address or "not started", how,
            f" in {delay:g}s" if delay else "",
        )  # fmt: skip
        slot.next_start = time.monotonic() + delay
        if not delay:
            self._spawn(slot)

    def _check_memory(self, slot: _Slot, proc: subprocess.Popen) -> None:
        limit = self.terminate_bytes
        if limit is None:
            return
        try:
            rss = psutil.Process(proc.pid).memory_info().rss
        except psutil.Error:
            return
        if rss > limit:
            logger.warning(
                "worker process %d (%s) uses %d bytes, above the terminate fraction %s of "
                "memory_limit %d: killing it (a new one starts)",
                slot.index, slot.address, rss, self.terminate_fraction, self.memory_limit,
            )  # fmt: skip
            try:
                proc.kill()
            except ProcessLookupError:
                pass

    def _stop_all(self) -> None:
        procs = [s.proc for s in self.slots if s.proc is not None and s.proc.poll() is None]
        for proc in procs:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.stop_grace
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning(
                    "worker pid %d did not stop within %ss: killing it", proc.pid, STOP_GRACE
                )
                proc.kill()
                proc.wait()
