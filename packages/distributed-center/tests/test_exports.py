"""The public surface: what ``import distributed_center`` offers."""

from __future__ import annotations

import distributed_center


def test_all_names_exist_and_are_documented():
    assert sorted(distributed_center.__all__) == [
        "Center",
        "CenterState",
        "DEFAULT_PORT",
        "Leases",
        "WorkerInfo",
        "__version__",
        "main",
    ]
    for name in distributed_center.__all__:
        obj = getattr(distributed_center, name)
        if callable(obj):
            assert obj.__doc__ or getattr(obj, "help", None), f"{name} has no docstring"


def test_version():
    from distributed_center._version import __version__

    assert distributed_center.__version__ == __version__ == "0.2.0"


def test_center_imports_only_core_from_this_repo():
    import pathlib
    import re

    src = pathlib.Path(distributed_center.__file__).parent
    for path in src.glob("*.py"):
        text = path.read_text()
        found = re.findall(r"^\s*(?:from|import)\s+(distributed_\w+)", text, re.M)
        assert set(found) <= {"distributed_core"}, (path.name, found)
