"""Install each package ALONE from a wheelhouse, in fresh virtualenvs, and run a cluster.

    python tools/check_wheelhouse.py WHEELHOUSE

WHEELHOUSE is what ``nox -s release`` makes: our sdists and wheels, every
dependency's wheel, and ``simple/`` (a PEP 503 index of them). pip runs with
no configuration file and no ``PIP_*`` variables, so no other index or
directory can supply anything. Checks, each in its own virtualenv:

* ``distributed-center`` from ``--index-url file://WHEELHOUSE/simple``;
* ``distributed-worker`` from ``--no-index --find-links WHEELHOUSE``:
  ``pip show`` gives our summary, ``dworker --version`` names the
  distribution, version, protocol and location, and the worker starts and
  registers with the center of the other environment;
* ``distributed-client`` alone: an ``Executor`` computes on that cluster;
* ``distributed-client[local]`` from the simple index: a ``LocalCluster``
  computes;
* the worker refuses to start when the installed ``distributed-worker``
  metadata is not ours (another project of that name on the public index).

Every process gets its own HOME, so the default secret file is created by
that center and found by those workers and clients. Every wait is bounded
(``STEP_TIMEOUT``); the exit status is 0 only if everything passed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import venv
from pathlib import Path

STEP_TIMEOUT = 120.0  # seconds for one pip install, one start-up line or one computation
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL

CLIENT_SCRIPT = """
import operator, sys
from distributed_client import Executor
with Executor(sys.argv[1]) as e:
    print(sorted(f.result() for f in e.map(operator.neg, range(20))))
"""
LOCAL_SCRIPT = """
import operator
from distributed_client import Executor, LocalCluster
with LocalCluster(n_workers=2) as cluster, Executor(cluster.center_address) as e:
    print(sorted(f.result() for f in e.map(operator.neg, range(20))))
"""
EXPECTED = str(sorted(-i for i in range(20)))


def clean_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update(
        HOME=str(home),
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("DISTRIBUTED_SECRET_FILE", None)
    return env


def run(argv, env, timeout=STEP_TIMEOUT) -> str:
    out = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if out.returncode != 0:
        raise SystemExit(
            f"FAILED: {' '.join(map(str, argv))} (exit {out.returncode})\n{out.stdout}\n{out.stderr}"
        )
    return out.stdout


def make_env(root: Path, name: str, env: dict, *pip_args: str) -> Path:
    path = root / name
    venv.create(path, with_pip=True)
    start = time.monotonic()
    run([path / "bin" / "python", "-m", "pip", "install", "-q", *pip_args], env)
    print(f"  {name}: pip install {' '.join(pip_args)} ({time.monotonic() - start:.1f}s)")
    return path


class Proc:
    """A CLI process whose stdout lines are collected by a thread."""

    def __init__(self, argv, env):
        self.argv = list(map(str, argv))
        self.err = tempfile.TemporaryFile()
        self.popen = subprocess.Popen(
            self.argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.err
        )
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.eof = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.popen.stdout:
            with self.cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def wait_line(self, prefix: str) -> str:
        deadline = time.monotonic() + STEP_TIMEOUT
        with self.cond:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line[len(prefix) :].strip()
                left = deadline - time.monotonic()
                if self.eof or left <= 0:
                    break
                self.cond.wait(left)
        self.err.seek(0)
        raise SystemExit(
            f"FAILED: no line {prefix!r} from {' '.join(self.argv)}\n"
            + "\n".join(self.lines)
            + "\n"
            + self.err.read().decode(errors="replace")
        )

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.popen.stdout.close()
        self.err.close()


def main(wheelhouse: str) -> None:
    house = Path(wheelhouse).resolve()
    index = (house / "simple").as_uri()
    if not (house / "simple" / "index.html").exists():
        raise SystemExit(f"{house} has no simple/index.html: run `nox -s release` first")
    with tempfile.TemporaryDirectory(prefix="distributed-wheelhouse-") as tmp:
        root = Path(tmp)
        home = root / "home"
        home.mkdir()
        env = clean_env(home)
        links = ["--no-index", "--find-links", str(house)]
        print(f"installing each package alone from {house}:")
        center_env = make_env(root, "center", env, "--index-url", index, "distributed-center")
        worker_env = make_env(root, "worker", env, *links, "distributed-worker")
        client_env = make_env(root, "client", env, *links, "distributed-client")
        local_env = make_env(root, "client-local", env, "--index-url", index, "distributed-client[local]")  # fmt: skip

        # each package alone: no sibling but core came along
        for path, dist in ((worker_env, "worker"), (center_env, "center"), (client_env, "client")):
            listed = run([path / "bin" / "python", "-m", "pip", "list", "--format=freeze"], env)
            ours = sorted(
                ln.split("==")[0] for ln in listed.split() if ln.startswith("distributed")
            )
            assert ours == sorted(["distributed-core", f"distributed-{dist}"]), (dist, ours)

        show = run([worker_env / "bin" / "python", "-m", "pip", "show", "distributed-worker"], env)
        assert "Summary: Worker node of the distributed cluster" in show, show
        version = run([worker_env / "bin" / "dworker", "--version"], env)
        print("  " + version.strip().replace("\n", "\n  "))
        assert version.startswith("dworker: distributed-worker "), version
        assert "protocol " in version and str(worker_env) in version, version
        assert "WARNING" not in version, version

        procs = []
        try:
            center = Proc([center_env / "bin" / "dcenter", "--host", "127.0.0.1", "--port", "0"], env)  # fmt: skip
            procs.append(center)
            address = center.wait_line("Start center at ")
            worker = Proc([worker_env / "bin" / "dworker", address, "--host", "127.0.0.1"], env)
            procs.append(worker)
            worker.wait_line("Registered with center at ")
            print(f"  center (center env) at {address}; worker (worker env) registered")
            got = run([client_env / "bin" / "python", "-c", CLIENT_SCRIPT, address], env).strip()
            assert got == EXPECTED, got
            print("  client (client env, no [local]) computed on that cluster")
        finally:
            for proc in reversed(procs):
                proc.stop()
        got = run([local_env / "bin" / "python", "-c", LOCAL_SCRIPT], env).strip()
        assert got == EXPECTED, got
        print("  client[local] (from the simple index) computed on a LocalCluster")

        # a distributed-worker that is not ours: dworker refuses to start
        (metadata,) = worker_env.glob("lib/python*/site-packages/distributed_worker-*.dist-info/METADATA")  # fmt: skip
        text = metadata.read_text()
        metadata.write_text(
            text.replace(
                "Summary: Worker node of the distributed cluster", "Summary: Something else"
            )
        )
        out = subprocess.run(
            [worker_env / "bin" / "dworker", "tcp://127.0.0.1:1"],
            env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT, check=False,
        )  # fmt: skip
        assert out.returncode == 1, (out.returncode, out.stderr)
        assert "is another project with the same name" in out.stderr, out.stderr
        print(f"  a foreign distributed-worker is refused: {out.stderr.strip()[:100]}...")
    print("wheelhouse: all checks passed")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
