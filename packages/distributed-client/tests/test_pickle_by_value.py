"""cloudpickle's ``register_pickle_by_value`` for functions AND data, with no stale cache.

The module is a real file in ``tmp_path`` that only this process can import:
the workers' ``sys.path`` does not include it.
"""

from __future__ import annotations

import sys
import uuid

import cloudpickle
import pytest

from distributed_client import Executor, Pool

SOURCE = """
import math


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y


def hyp(a, b):
    return math.hypot(a, b)


def norm(p):
    return math.hypot(p.x, p.y)


def shift(p, d):
    return Point(p.x + d, p.y + d)
"""


NOT_FOUND = "No module named 'pbv_"


@pytest.fixture
def mod(tmp_path):
    name = f"pbv_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{name}.py").write_text(SOURCE)
    sys.path.insert(0, str(tmp_path))
    try:
        module = __import__(name)
        yield module
    finally:
        if name in cloudpickle.list_registry_pickle_by_value():
            cloudpickle.unregister_pickle_by_value(module)
        sys.modules.pop(name, None)
        sys.path.remove(str(tmp_path))


def test_the_worker_cannot_import_the_module(center, mod):
    with Pool(center) as pool:
        # the worker fails to load the task (a RemoteError naming the module)
        with pytest.raises(Exception, match=f"No module named '{mod.__name__}'"):
            pool.apply(mod.hyp, (3, 4))
        with pytest.raises(Exception, match=f"No module named '{mod.__name__}'"):
            pool.apply(getattr, (mod.Point(3, 4), "x"))


def test_data_of_a_registered_module_goes_by_value(center, mod):
    cloudpickle.register_pickle_by_value(mod)
    with Pool(center) as pool:
        assert pool.apply(getattr, (mod.Point(3, 4), "x")) == 3  # data, builtin function
        assert pool.map(mod.norm, [mod.Point(3, 4), mod.Point(6, 8)]) == [5.0, 10.0]
        # nested in containers, as keyword, scattered
        assert pool.apply(len, ([{"p": mod.Point(1, 1)}, (mod.Point(2, 2),)],)) == 2
        assert pool.apply(mod.shift, (), {"p": mod.Point(1, 2), "d": 1}).y == 3
        [remote] = pool.scatter([mod.Point(5, 12)])
        assert pool.apply(mod.norm, (remote,)) == 13.0
        # results come back as the class of this process
        back = pool.apply(mod.shift, (mod.Point(1, 2), 1))
        assert isinstance(back, mod.Point) and (back.x, back.y) == (2, 3)
        assert isinstance(remote.get(), mod.Point)


def test_registering_after_a_failure_takes_effect(center, mod):
    with Pool(center) as pool, Executor(center) as e:
        # first attempts fail: by reference, the worker cannot import the module
        failed = e.submit(mod.hyp, 3, 4)
        failed_data = e.submit(getattr, mod.Point(3, 4), "x")
        with pytest.raises(Exception, match=NOT_FOUND):
            pool.apply(mod.hyp, (3, 4))  # the function is now in the pickle cache
        with pytest.raises(Exception, match=NOT_FOUND):
            failed.result(timeout=30)
        with pytest.raises(Exception, match=NOT_FOUND):
            failed_data.result(timeout=30)

        cloudpickle.register_pickle_by_value(mod)

        assert pool.apply(mod.hyp, (3, 4)) == 5.0  # the cached pickle was dropped
        again = e.submit(mod.hyp, 3, 4)
        assert again.key != failed.key  # a pure key depends on how things are pickled
        assert again.result(timeout=30) == 5.0
        again_data = e.submit(getattr, mod.Point(3, 4), "x")
        assert again_data.key != failed_data.key
        assert again_data.result(timeout=30) == 3
        assert e.submit(mod.hyp, 3, 4).key == again.key  # still pure: same key again


def test_unregistering_goes_back_to_by_reference(center, mod):
    cloudpickle.register_pickle_by_value(mod)
    with Pool(center) as pool:
        assert pool.apply(mod.hyp, (6, 8)) == 10.0
        cloudpickle.unregister_pickle_by_value(mod)
        with pytest.raises(Exception, match=NOT_FOUND):
            pool.apply(mod.hyp, (6, 8))
