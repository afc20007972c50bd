"""A child given a lifeline exits when the process that started it dies, even by kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil

from distributed_core.lifeline import ENV, Lifeline, watch_parent

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from distributed_core.lifeline import watch_parent
    signal.signal(signal.SIGTERM, lambda *a: (print("sigterm", flush=True), sys.exit(0)))
    assert watch_parent()
    assert "DISTRIBUTED_LIFELINE_FD" not in os.environ
    print("ready", flush=True)
    time.sleep(600)
    """
)

PARENT = textwrap.dedent(
    """
    import subprocess, sys
    from distributed_core.lifeline import Lifeline
    lifeline = Lifeline()
    child = subprocess.Popen(
        [sys.executable, "-c", sys.argv[1]], stdout=sys.stdout, **lifeline.popen_kwargs()
    )
    print(child.pid, flush=True)
    child.wait()
    """
)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_child_gets_sigterm_when_parent_is_killed():
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, CHILD], stdout=subprocess.PIPE, text=True
    )
    try:
        child_pid = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "ready"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert parent.stdout.readline().strip() == "sigterm"
        deadline = time.monotonic() + 10
        while not _gone(child_pid):
            assert time.monotonic() < deadline, "the child outlived its parent"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()


def test_no_lifeline_no_thread(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert watch_parent() is False
    monkeypatch.setenv(ENV, "not-a-number")
    assert watch_parent() is False


def test_lifeline_kwargs_pass_only_the_read_end():
    lifeline = Lifeline()
    try:
        kwargs = lifeline.popen_kwargs({})
        assert kwargs["pass_fds"] == (lifeline.read_fd,)
        assert kwargs["env"] == {ENV: str(lifeline.read_fd)}
        assert not os.get_inheritable(lifeline.write_fd)
    finally:
        lifeline.close()
