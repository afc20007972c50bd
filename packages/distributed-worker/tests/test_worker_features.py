"""Issue 10: declared resources and uploaded files, on an in-process Center and Workers."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import uuid
import zipfile

import pytest

from distributed_center import Center
from distributed_core import RemoteError, rpc
from distributed_core.testing import gen_test
from distributed_worker import Worker
from distributed_worker.uploads import Uploads, check_upload


def _name() -> str:
    return f"upmod_{uuid.uuid4().hex[:10]}"


def _zip(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


@pytest.fixture
def uploads(tmp_path):
    u = Uploads(str(tmp_path))
    yield u
    u.close()


def test_py_upload_is_imported_and_reimported(uploads):
    name = _name()
    assert uploads.install(f"{name}.py", b"VALUE = 1\n") == [name]
    assert sys.modules[name].VALUE == 1
    assert uploads.directory in sys.path
    uploads.install(f"{name}.py", b"VALUE = 2\n")  # a new version replaces the old
    assert sys.modules[name].VALUE == 2
    directory = uploads.directory
    uploads.close()
    assert directory not in sys.path
    del sys.modules[name]


def test_zip_upload_of_a_package(uploads):
    name = _name()
    data = _zip(
        {f"{name}/__init__.py": "from .sub import f\n", f"{name}/sub.py": "def f(): return 7\n"}
    )
    assert uploads.install(f"{name}.zip", data) == [name]
    assert sys.modules[name].f() == 7
    data = _zip(
        {f"{name}/__init__.py": "from .sub import f\n", f"{name}/sub.py": "def f(): return 8\n"}
    )
    uploads.install(f"{name}.zip", data)
    assert sys.modules[name].f() == 8  # submodules are imported afresh too
    for m in [m for m in sys.modules if m.split(".")[0] == name]:
        del sys.modules[m]


def test_bad_uploads_are_refused_clearly(uploads):
    with pytest.raises(ValueError, match="bare file name"):
        check_upload("../evil.py", b"")
    with pytest.raises(ValueError, match=r"not a \.py, \.zip, \.egg or \.pyz file"):
        check_upload("pkg.whl", b"")
    with pytest.raises(SyntaxError) as info:
        check_upload("broken.py", b"def f(:\n")
    assert info.value.filename == "broken.py" and info.value.lineno == 1
    with pytest.raises(ValueError, match="is not a zip archive"):
        check_upload("pkg.zip", b"not a zip")
    with pytest.raises(ValueError, match="not a module name"):
        check_upload("my-mod.py", b"")
    name = _name()
    with pytest.raises(ZeroDivisionError):
        uploads.install(f"{name}.py", b"1 / 0\n")  # the import error itself


@gen_test()
async def test_resources_in_identity_and_at_the_center(monkeypatch):
    center = Center(heartbeat_interval=0.2, heartbeat_timeout=2)
    await center.listen("tcp://127.0.0.1:0")
    w1 = Worker(center.address, ncores=1, resources="GPU=2, MEM=8e9")
    monkeypatch.setenv("DISTRIBUTED_WORKER__RESOURCES", "FPGA=1")
    from distributed_core import config

    config.reset()
    w2 = Worker(center.address, ncores=1)  # from the configuration
    monkeypatch.delenv("DISTRIBUTED_WORKER__RESOURCES")
    config.reset()
    w3 = Worker(center.address, ncores=1)  # none
    try:
        for w in (w1, w2, w3):
            await w.start("tcp://127.0.0.1:0")
        async with rpc(w1.address) as r:
            assert (await r.identity())["resources"] == {"GPU": 2.0, "MEM": 8e9}
        async with rpc(center.address) as r:
            workers = await r.workers()
        assert workers[w1.address]["resources"] == {"GPU": 2.0, "MEM": 8e9}
        assert workers[w2.address]["resources"] == {"FPGA": 1.0}
        assert workers[w3.address]["resources"] == {}
    finally:
        for w in (w1, w2, w3):
            await w.close()
        await center.close()
    with pytest.raises(ValueError, match="GPU='x' is not a number"):
        Worker(center.address, resources="GPU=x")


@gen_test()
async def test_upload_op_and_workers_joining_later_get_the_file():
    name = _name()
    center = Center(heartbeat_interval=0.2, heartbeat_timeout=2)
    await center.listen("tcp://127.0.0.1:0")
    first = Worker(center.address, ncores=1)
    late = None
    try:
        await first.start("tcp://127.0.0.1:0")
        async with rpc(first.address) as r:
            got = await r.upload_file(filename=f"{name}.py", data=b"X = 41\n")
            assert got == {"filename": f"{name}.py", "modules": [name]}
            with pytest.raises((SyntaxError, RemoteError)):
                await r.upload_file(filename="bad.py", data=b"def (\n")
            assert await r.ping() == "pong"
        async with rpc(center.address) as r:
            await r.upload_file(filename=f"{name}.py", data=b"X = 42\n")
        del sys.modules[name]
        late = Worker(center.address, ncores=1)
        await late.start("tcp://127.0.0.1:0")  # installs it while registering
        assert late.uploads.files == {f"{name}.py": [name]}
        assert sys.modules[name].X == 42
    finally:
        await first.close()
        if late is not None:
            await late.close()
        await center.close()
        sys.modules.pop(name, None)


def test_cli_rejects_bad_resources():
    result = subprocess.run(
        [sys.executable, "-m", "distributed_worker", "tcp://127.0.0.1:1", "--resources", "GPU"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0
    assert result.stderr.strip().startswith("dworker: error: bad --resources"), result.stderr
    assert "NAME=AMOUNT" in result.stderr and "Traceback" not in result.stderr


@gen_test()
async def test_update_data_confirms_keys_without_their_sizes():
    """Issue 10: the sizes of scattered keys travel on the report stream only; the
    confirming add_keys names the keys (a map of all of them would cost the center
    memory for good, as msgpack interns map keys)."""
    center = Center(heartbeat_interval=0.2, heartbeat_timeout=2)
    await center.listen("tcp://127.0.0.1:0")
    confirmations = []
    add_keys = center.handlers["add_keys"]

    def spy(comm, address, keys=(), nbytes=None):
        confirmations.append((list(keys), nbytes))
        return add_keys(comm, address, keys, nbytes)

    center.handlers["add_keys"] = spy
    w = Worker(center.address, ncores=1)
    try:
        await w.start("tcp://127.0.0.1:0")
        async with rpc(w.address) as r:
            reply = await r.update_data(data={"a": b"x" * 1000, "b": 2}, report=True)
        assert confirmations == [(["a", "b"], None)]
        for _ in range(500):  # the stream's batch may be read after the confirmation
            if center.state.nbytes(["a", "b"]) == reply["nbytes"]:
                break
            await asyncio.sleep(0.01)
        assert center.state.nbytes(["a", "b"]) == reply["nbytes"]  # from the stream
    finally:
        await w.close()
        await center.close()


def test_resource_pool_accounting():
    from distributed_worker.resources import ResourcePool

    pool = ResourcePool({"GPU": 2.0})
    need = pool.check({"GPU": 1})
    assert need == {"GPU": 1.0} and pool.fits(need)
    pool.take(need)
    pool.take(need)
    assert not pool.fits(need) and pool.free == {"GPU": 0.0}
    pool.release(need)
    assert pool.free == {"GPU": 1.0}
    with pytest.raises(
        ValueError, match=r"needs resources GPU=3, more than this worker declares \(GPU=2\)"
    ):
        pool.check({"GPU": 3})
    with pytest.raises(ValueError, match=r"FPGA=1.*declares \(GPU=2\)"):
        pool.check("FPGA=1")


def _hold(seconds):
    import time

    start = time.monotonic()
    time.sleep(seconds)
    return (start, time.monotonic())


@gen_test()
async def test_computes_wait_for_free_resources():
    """Two tasks needing GPU=1 on a worker with GPU=1 (and 3 threads) run one
    after the other."""
    import cloudpickle

    center = Center(heartbeat_interval=0.2, heartbeat_timeout=2)
    await center.listen("tcp://127.0.0.1:0")
    w = Worker(center.address, ncores=3, resources={"GPU": 1})
    try:
        await w.start("tcp://127.0.0.1:0")
        assert "resources" in w.identity()["features"]
        hold = cloudpickle.loads(cloudpickle.dumps(_hold))

        async def run(key, resources):
            async with rpc(w.address) as r:
                return await r.compute(function=hold, key=key, args=(0.2,), resources=resources)

        replies = await asyncio.gather(run("a", {"GPU": 1}), run("b", {"GPU": 1}), run("c", None))
        assert [r["status"] for r in replies] == ["OK"] * 3
        async with rpc(w.address) as r:
            (a0, a1), (b0, b1) = (await r.get_data(keys=["a", "b"])).values()
            assert a1 <= b0 or b1 <= a0, "both GPU tasks ran at once"
            assert w.resource_pool.free == {"GPU": 1.0}
            with pytest.raises((ValueError, RemoteError), match="more than this worker declares"):
                await r.compute(function=hold, key="d", args=(0,), resources={"GPU": 2})
    finally:
        await w.close()
        await center.close()


def test_a_worker_restarted_by_its_nanny_gets_the_uploads_and_resources(
    spawn_center, spawn_worker, client, wait_for
):
    import os
    import signal

    import psutil

    name = _name()
    center = spawn_center()
    client.call(center.address, "upload_file", filename=f"{name}.py", data=b"X = 'installed'\n")
    w = spawn_worker(center.address, "--nanny", "--resources", "GPU=1")
    check = lambda: __import__(name).X  # noqa: E731 - pickled by value

    def installed(address):
        reply = client.call(address, "compute", function=check, key="check")
        assert reply["status"] == "OK", reply
        return client.call(address, "get_data", keys=["check"])["check"]

    assert installed(w.address) == "installed"
    (child,) = psutil.Process(w.pid).children()
    os.kill(child.pid, signal.SIGKILL)
    new = wait_for(
        lambda: [a for a in client.call(center.address, "workers") if a != w.address],
        timeout=10, what="the restarted worker registers",
    )  # fmt: skip
    assert installed(new[0]) == "installed"
    assert client.call(new[0], "identity")["resources"] == {"GPU": 1.0}
    assert client.call(center.address, "workers")[new[0]]["resources"] == {"GPU": 1.0}
