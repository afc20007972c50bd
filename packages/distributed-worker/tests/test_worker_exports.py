"""The public surface: what `import distributed_worker` offers, documented."""

import inspect

import distributed_worker


def test_exports():
    assert sorted(distributed_worker.__all__) == ["DataStore", "Worker", "__version__", "main"]
    for name in distributed_worker.__all__:
        assert hasattr(distributed_worker, name), name


def test_public_names_have_docstrings():
    for name in ("DataStore", "Worker", "main"):
        obj = getattr(distributed_worker, name)
        assert inspect.getdoc(obj), name
    for method in ("start", "register", "close", "finished", "compute", "get_data",
                   "update_data", "delete_data", "keys", "identity", "terminate"):  # fmt: skip
        assert inspect.getdoc(getattr(distributed_worker.Worker, method)), method


def test_version():
    assert distributed_worker.__version__ == "0.2.0"


def test_package_imports_no_sibling_packages():
    import pathlib
    import re

    src = pathlib.Path(distributed_worker.__file__).parent
    for path in src.glob("*.py"):
        text = path.read_text()
        assert not re.search(r"\b(distributed_center|distributed_client)\b", text), path
        assert not re.search(r"^\s*(import|from) distributed\b(?!_)", text, re.M), path
