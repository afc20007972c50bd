"""Issue 10: named datasets, worker resources and upload_file, against a real cluster."""

from __future__ import annotations

import inspect
import io
import os
import time
import uuid
import zipfile

import pytest

from distributed_client import Executor, LocalCluster
from distributed_core import rpc


@pytest.fixture(scope="module")
def fcluster():
    # worker 0 declares nothing; worker 1 declares GPU=1
    with LocalCluster(n_workers=1, ncores=1, heartbeat_interval=0.2, heartbeat_timeout=2) as c:
        c.add_worker(resources="GPU=1")
        yield c


def inc(x):
    return x + 1


def fail(x):
    raise ZeroDivisionError(f"no {x}")


def where(*args):
    return os.getpid()


# ---------------------------------------------------------------------- datasets


def test_dataset_shared_and_outlives_its_publisher(fcluster):
    name = f"ds-{uuid.uuid4().hex[:6]}"
    e1 = Executor(fcluster)
    e2 = Executor(fcluster)
    try:
        x = e1.submit(inc, 1)
        [s] = e1.scatter([b"scattered"])
        e1.publish_dataset(**{name: {"x": x, "s": s, "plain": 3}})
        assert name in e2.list_datasets()
        got = e2.get_dataset(name)
        assert got["plain"] == 3 and got["x"].executor is e2
        keys = [x.key, s.key]
        del x, s
        e1.close()  # the publisher goes: its published keys stay
        assert got["x"].result() == 2 and got["s"].result() == b"scattered"
        assert e2.submit(inc, got["x"]).result() == 3  # used where it is
        e3 = Executor(fcluster)  # a client arriving after the publisher left
        try:
            again = e3.get_dataset(name)
            assert again["s"].result() == b"scattered"
            del again
        finally:
            e3.close()
        del got
        who_has = e2._sync(e2.session.center_call, "who_has", keys=keys)
        assert all(who_has[k] for k in keys), who_has  # nobody deleted them
        e2.unpublish_dataset(name)
        assert name not in e2.list_datasets()
        # nobody holds them any more (the publisher is gone): the center deletes them
        deadline = time.monotonic() + 10
        while any(e2._sync(e2.session.center_call, "who_has", keys=keys).values()):
            assert time.monotonic() < deadline, "unpublished orphan keys were never deleted"
            time.sleep(0.05)
    finally:
        e1.close()
        e2.close()


def test_dataset_errors_and_plain_values(fcluster):
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    with Executor(fcluster) as e, Executor(fcluster) as other:
        e.publish_dataset(**{a: [1, 2, 3]})
        assert other.get_dataset(a) == [1, 2, 3]  # a value without Futures: a copy
        with pytest.raises(KeyError, match=f"'{a}' already exists"):
            e.publish_dataset(**{a: 4})
        e.publish_dataset(override=True, **{a: 4})
        assert other.get_dataset(a) == 4
        with pytest.raises(KeyError, match=f"no dataset named '{b}'.*'{a}'"):
            other.get_dataset(b)
        with pytest.raises(KeyError, match=f"no dataset named '{b}'"):
            other.unpublish_dataset(b)
        with pytest.raises(ValueError, match="belongs to another Executor"):
            e.publish_dataset(**{b: other.submit(inc, 1)})
        with pytest.raises(ZeroDivisionError, match="no 5"):
            e.publish_dataset(**{b: e.submit(fail, 5)})  # it must exist: its error is raised
        assert b not in e.list_datasets()
        f = e.submit(inc, 10)
        e.publish_dataset(**{b: (f, f)})  # the same Future twice: two references
        g1, g2 = other.get_dataset(b)
        del g1
        assert g2.result() == 11
        e.unpublish_dataset(a)
        e.unpublish_dataset(b)


def test_dataset_whose_data_was_lost(fcluster):
    name = f"lost-{uuid.uuid4().hex[:6]}"
    late = fcluster.add_worker()
    with Executor(fcluster) as e, Executor(fcluster) as other:
        [s] = e.scatter([b"only copy"], workers=[late])
        e.publish_dataset(**{name: s})
        fcluster.kill_worker(fcluster.worker_addresses.index(late))
        with pytest.raises(KeyError, match=f"dataset '{name}' names data that is no longer"):
            other.get_dataset(name)
        other.unpublish_dataset(name)


# ---------------------------------------------------------------------- resources


def test_workers_report_their_resources(fcluster):
    plain, gpu = fcluster.worker_addresses
    with Executor(fcluster) as e:
        info = e.scheduler_info()["workers"]
        assert info[plain]["resources"] == {} and info[gpu]["resources"] == {"GPU": 1.0}

        async def identity(address):
            async with rpc(address) as r:
                return await r.identity()

        assert e._runner.run(identity, gpu)["resources"] == {"GPU": 1.0}


@pytest.mark.xfail(
    "resources" not in inspect.signature(Executor.submit).parameters,
    reason="placement by resources is the engine/api helpers' part (TaskOptions honoured "
    "from the workers' identity); not in this branch",
    strict=True,
)
def test_task_with_resources_runs_only_where_they_are(fcluster):
    with Executor(fcluster) as e:
        pids = set(e.gather(e.map(where, range(8), resources={"GPU": 1}, pure=False)))
        assert pids == {fcluster.worker_pid(1)}


# ---------------------------------------------------------------------- upload_file


def _use(name):
    import importlib

    return importlib.import_module(name).f(2)


def test_upload_file_to_running_and_later_workers(fcluster, tmp_path):
    name = f"upmod_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.py"
    path.write_text("def f(x):\n    return x * 100\n")
    with Executor(fcluster) as e:
        installed = e.upload_file(str(path))
        assert installed == {w: [name] for w in fcluster.worker_addresses}
        for w in fcluster.worker_addresses:
            assert e.submit(_use, name, workers=[w], pure=False).result() == 200
        path.write_text("def f(x):\n    return x * 1000\n")
        e.upload_file(path)  # a new version replaces the module everywhere
        late = fcluster.add_worker()  # registers after the upload: the center gives it the file
        try:
            for w in [*fcluster.worker_addresses]:
                assert e.submit(_use, name, workers=[w], pure=False).result() == 2000
        finally:
            fcluster.kill_worker(fcluster.worker_addresses.index(late))


def test_upload_a_zipped_package(fcluster, tmp_path):
    name = f"uppkg_{uuid.uuid4().hex[:8]}"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"{name}/__init__.py", "from .core import f\n")
        z.writestr(f"{name}/core.py", "def f(x):\n    return -x\n")
    path = tmp_path / f"{name}.zip"
    path.write_bytes(buf.getvalue())
    with Executor(fcluster) as e:
        e.upload_file(path)
        assert e.submit(_use, name, pure=False).result() == -2


def test_upload_file_errors(fcluster, tmp_path):
    with Executor(fcluster) as e:
        with pytest.raises(FileNotFoundError, match="no such file"):
            e.upload_file(tmp_path / "missing.py")
        bad = tmp_path / "bad_syntax.py"
        bad.write_text("def f(:\n")
        with pytest.raises(SyntaxError) as info:
            e.upload_file(bad)
        assert info.value.filename == str(bad)
        with pytest.raises(ValueError, match=r"not a \.py, \.zip"):
            e.upload_file(tmp_path / "x.whl")
        name = f"upboom_{uuid.uuid4().hex[:8]}"
        boom = tmp_path / f"{name}.py"
        boom.write_text("raise RuntimeError('cannot import me')\n")
        with pytest.raises(RuntimeError, match="cannot import me"):
            e.upload_file(boom)
        files = e._sync(e.session.center_call, "identity")
        assert files["type"] == "Center"  # still serving
