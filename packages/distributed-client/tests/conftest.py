"""Shared fixtures: one LocalCluster (real subprocesses) per test module."""

from __future__ import annotations

import cloudpickle
import pytest

from distributed_client import LocalCluster


@pytest.fixture(autouse=True, scope="module")
def _pickle_test_functions_by_value(request):
    # Workers cannot import test modules: ship their functions by value.
    module = request.module
    try:
        cloudpickle.register_pickle_by_value(module)
    except ValueError:  # not in sys.modules under its own name
        pass
    yield


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, ncores=1, heartbeat_interval=0.2, heartbeat_timeout=2) as c:
        yield c


@pytest.fixture
def center(cluster):
    return cluster.center_address
