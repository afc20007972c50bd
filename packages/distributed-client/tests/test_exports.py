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


_TYPED_DUNDERS = {
    "__init__", "__enter__", "__exit__", "__await__", "__aenter__", "__aexit__",
    "__iter__", "__next__", "__aiter__", "__anext__", "__len__",
}  # fmt: skip


def _untyped(qualname: str, fn) -> list[str]:
    import inspect

    sig = inspect.signature(fn)
    out = [
        f"{qualname}({p.name})"
        for p in sig.parameters.values()
        if p.name not in ("self", "cls") and p.annotation is inspect.Parameter.empty
    ]
    if sig.return_annotation is inspect.Signature.empty and fn.__name__ != "__init__":
        out.append(f"{qualname} -> (no return annotation)")
    return out


def test_public_signatures_are_typed():
    # py.typed promises type hints: every public function and method has them
    import inspect

    missing = []
    for name in distributed_client.__all__:
        obj = getattr(distributed_client, name)
        if inspect.isclass(obj):
            if issubclass(obj, BaseException):
                continue
            for cls in obj.__mro__:
                if not cls.__module__.startswith("distributed_client"):
                    continue
                for attr, value in vars(cls).items():
                    if attr.startswith("_") and attr not in _TYPED_DUNDERS:
                        continue
                    if isinstance(value, property):
                        value = value.fget
                    if inspect.isfunction(value):
                        missing += _untyped(f"{name}.{attr}", value)
        elif inspect.isfunction(obj):
            missing += _untyped(name, obj)
    assert not missing, "public signatures without type hints:\n" + "\n".join(sorted(set(missing)))


def test_py_typed_ships_with_the_package():
    import importlib.resources

    assert importlib.resources.files("distributed_client").joinpath("py.typed").is_file()
