"""The public surface: what `distributed_client` exports, and that it is documented."""

from __future__ import annotations

import distributed_client


def test_all_names_exist_and_are_documented():
    for name in distributed_client.__all__:
        obj = getattr(distributed_client, name)
        if name.isupper() or name == "__version__":
            continue
        assert obj.__doc__, f"{name} has no docstring"


def test_expected_exports():
    expected = {
        "AsyncResult", "CancelledError", "Executor", "Future", "GraphError", "KilledWorker",
        "LocalCluster", "LostDataError", "Pool", "RemoteData", "SSHCluster", "SSHClusterError", "as_completed", "clear", "fire_and_forget",
        "delete", "gather", "get", "progress", "scatter", "wait", "__version__",
        "ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION",
        "CenterTimeoutError", "KilledEveryWorker", "NoWorkersError", "NotACenterError",
    }  # fmt: skip
    assert set(distributed_client.__all__) == expected
    assert distributed_client.__version__ == "0.2.0"


def test_no_sibling_imports():
    import pathlib

    src = pathlib.Path(distributed_client.__file__).parent
    for path in src.glob("*.py"):
        text = path.read_text()
        for sibling in ("distributed_center", "distributed_worker"):
            assert f"import {sibling}" not in text and f"from {sibling}" not in text, path


def test_timeout_errors_are_timeout_errors():
    from distributed_client import (
        CenterTimeoutError,
        KilledEveryWorker,
        KilledWorker,
        NoWorkersError,
    )

    assert issubclass(CenterTimeoutError, TimeoutError)
    assert issubclass(NoWorkersError, TimeoutError)
    # a task that killed every worker is caught as either
    assert issubclass(KilledEveryWorker, KilledWorker)
    assert issubclass(KilledEveryWorker, NoWorkersError)
