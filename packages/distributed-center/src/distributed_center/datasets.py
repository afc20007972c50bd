"""Named datasets and uploaded files: what the Center keeps for clients (issue 10).

Both are plain synchronous tables, unit-testable without sockets; the
:class:`~distributed_center.Center` serves them as ops.

* :class:`Datasets`: ``name -> (keys, data)``. ``data`` is opaque bytes made
  by the client (its pickled object, with the Futures in it replaced by their
  keys); the Center never unpickles it. Publishing pins the keys in the
  :class:`~distributed_center.state.CenterState` so they outlive the client
  that made them; unpublishing unpins them.
* :class:`UploadedFiles`: ``filename -> bytes`` of ``Executor.upload_file``,
  at most ``center.max_upload_bytes`` in all, handed to every worker that
  registers afterwards.
"""

from __future__ import annotations

from collections.abc import Hashable

from .state import CenterState, _short, check_keys

__all__ = ["Datasets", "UploadedFiles"]


def _check_name(name) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(
            f"a dataset name is a non-empty str, got {type(name).__name__} {_short(name)}"
        )
    return name


def _check_bytes(what: str, data) -> bytes:
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise TypeError(f"{what} must be bytes, got {type(data).__name__}")
    return data


class Datasets:
    """Published datasets: ``name -> (keys, opaque bytes)``, pinning their keys."""

    def __init__(self, state: CenterState, max_bytes: int | None = None):
        self.state = state
        #: bound on one dataset's ``data`` (None: none)
        self.max_bytes = max_bytes
        self.table: dict[str, tuple[list, bytes]] = {}

    def publish(self, name, keys, data, override: bool = False) -> None:
        """Name ``keys`` (with the client's ``data``); KeyError if the name is taken."""
        name = _check_name(name)
        keys = check_keys(keys)
        data = _check_bytes("dataset data", data)
        if self.max_bytes is not None and len(data) > self.max_bytes:
            raise ValueError(
                f"dataset {name!r}: {len(data)} bytes of metadata is more than the center "
                f"keeps ({self.max_bytes}); scatter the value first and publish its Future"
            )
        if name in self.table and not override:
            raise KeyError(
                f"dataset {name!r} already exists; unpublish it first or pass override=True"
            )
        self.state.pin(keys)
        old = self.table.get(name)
        self.table[name] = (keys, data)
        if old is not None:
            self.state.unpin(old[0])

    def get(self, name) -> dict:
        """``{'keys': [...], 'data': bytes}``; KeyError naming the known datasets."""
        entry = self.table.get(_check_name(name))
        if entry is None:
            raise KeyError(self._unknown(name))
        keys, data = entry
        return {"keys": list(keys), "data": data}

    def unpublish(self, name) -> list:
        """Forget ``name``; return the keys no longer pinned by any dataset."""
        entry = self.table.pop(_check_name(name), None)
        if entry is None:
            raise KeyError(self._unknown(name))
        return self.state.unpin(entry[0])

    def names(self) -> list[str]:
        return sorted(self.table)

    def keys_of(self, name: str) -> list[Hashable]:
        return list(self.table[name][0])

    def _unknown(self, name: str) -> str:
        known = ", ".join(repr(n) for n in sorted(self.table)[:20]) or "none"
        more = " ..." if len(self.table) > 20 else ""
        return f"no dataset named {name!r} on this center; published datasets: {known}{more}"


class UploadedFiles:
    """Files for workers that join later, in upload order, at most ``max_bytes`` in all."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.files: dict[str, bytes] = {}

    @property
    def nbytes(self) -> int:
        return sum(len(d) for d in self.files.values())

    def add(self, filename, data) -> None:
        """Keep (or replace) ``filename``; ValueError if the total would pass the bound."""
        if not isinstance(filename, str) or not filename or "/" in filename or "\\" in filename:
            raise TypeError(f"filename must be a bare file name (str), got {_short(filename)}")
        data = _check_bytes(f"the content of {filename!r}", data)
        others = self.nbytes - len(self.files.get(filename, b""))
        if others + len(data) > self.max_bytes:
            raise ValueError(
                f"upload_file: {filename!r} ({len(data)} bytes) would make the center keep "
                f"{others + len(data)} bytes of uploaded files, more than "
                f"center.max_upload_bytes ({self.max_bytes}); ship a smaller file, or raise "
                f"the bound (DISTRIBUTED_CENTER__MAX_UPLOAD_BYTES) where the center starts"
            )
        self.files.pop(filename, None)  # re-uploads go last: installed after what they follow
        self.files[filename] = data

    def items(self) -> list[list]:
        """``[[filename, bytes], ...]`` in upload order, for a ``register`` reply."""
        return [[name, data] for name, data in self.files.items()]
