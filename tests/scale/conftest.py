"""Fixtures for the scale tests (nox -s scale): one LocalCluster for the session."""

from __future__ import annotations

import pytest

from distributed_client import Executor, LocalCluster


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, ncores=1) as c:
        yield c


@pytest.fixture(scope="module")
def e(cluster):
    with Executor(cluster) as ex:
        yield ex
