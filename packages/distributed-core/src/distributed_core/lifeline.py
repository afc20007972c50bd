"""Child processes that exit when the process that started them dies.

The parent makes a pipe and gives the child its read end (`spawn_args`
returns what to pass to ``subprocess.Popen``; the child learns the file
descriptor from the ``DISTRIBUTED_LIFELINE_FD`` environment variable). The
parent never writes to it; when the parent dies, however it dies (``kill
-9``, a segfault), the kernel closes its write end and the child's read
returns end-of-file. `watch_parent` (called by the ``dcenter`` and
``dworker`` commands at start-up) waits for that in a daemon thread and then
sends the process SIGTERM, so it shuts down as on Ctrl-C; if it is still
alive `LIFELINE_GRACE` seconds later it exits with status 1.

Why a pipe and not ``prctl(PR_SET_PDEATHSIG)``: the death signal fires when
the *thread* that forked the child ends (LocalCluster starts processes from
executor threads too), it is Linux-only, and it needs a ``preexec_fn``, which
is unsafe in a process with threads. A pipe's end-of-file works on every
POSIX system and needs nothing from the parent but to stay alive.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

__all__ = ["ENV", "LIFELINE_GRACE", "Lifeline", "watch_parent"]

logger = logging.getLogger("distributed_core.lifeline")

#: the environment variable naming the read end of the lifeline in a child
ENV = "DISTRIBUTED_LIFELINE_FD"
#: seconds a child whose parent died has to shut down after SIGTERM
LIFELINE_GRACE = 3.0


class Lifeline:
    """The parent's side: one pipe shared by all the children it starts.

    >>> from distributed_core.lifeline import Lifeline
    >>> lifeline = Lifeline()
    >>> kwargs = lifeline.popen_kwargs({"PATH": "/bin"})
    >>> sorted(kwargs)
    ['env', 'pass_fds']
    >>> lifeline.close()
    """

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_inheritable(self.write_fd, False)

    def popen_kwargs(self, env: dict | None = None) -> dict:
        """``env`` and ``pass_fds`` for ``subprocess.Popen`` of a child to watch us."""
        env = dict(os.environ if env is None else env)
        env[ENV] = str(self.read_fd)
        return {"env": env, "pass_fds": (self.read_fd,)}

    def close(self) -> None:
        """Close both ends (the children then see end-of-file: call after stopping them)."""
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.read_fd = self.write_fd = -1


def watch_parent(on_death=None, grace: float = LIFELINE_GRACE) -> bool:
    """If started with a lifeline, watch it in a daemon thread; True if so.

    When the parent dies: `on_death()` if given, else SIGTERM to this
    process; then, `grace` seconds later, ``os._exit(1)`` if still running.
    The variable is removed from the environment, so this process's own
    children do not inherit it (they get their own lifeline, if any).
    """
    value = os.environ.pop(ENV, None)
    if value is None:
        return False
    try:
        fd = int(value)
        os.fstat(fd)
    except (ValueError, OSError):
        logger.warning("%s=%r is not an open file descriptor: not watching the parent", ENV, value)
        return False

    def watch() -> None:
        while True:
            try:
                data = os.read(fd, 1)
            except InterruptedError:
                continue
            except OSError:
                data = b""
            if not data:
                break
        logger.warning("the process that started this one died: shutting down")
        if on_death is not None:
            on_death()
        else:
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os._exit(1)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()
    return True
