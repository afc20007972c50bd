"""Named datasets: data that outlives the client that made it (issue 10).

``Executor.publish_dataset(name=obj)`` pickles ``obj`` with every
:class:`~distributed_client.Future` in it replaced by a reference to its key
(a ``persistent_id``), waits for those Futures to finish, and gives the
center ``name -> (keys, bytes)``. The center stores the bytes as they are
(it never unpickles) and *pins* the keys, so they are not deleted when the
publishing client closes or dies. The publishing client also stops deleting
those keys itself (they become borrowed data in its scheduling state).

``get_dataset(name)`` on any client unpickles the object with a new Future of
*that* client for each reference: the data is used where it is, never
copied. ``unpublish_dataset(name)`` unpins the keys; the data is then
deleted once no client holds it (the center's client tracking does that).
An object with no Futures inside (a plain value) is kept in the center as
its pickle and comes back as a copy.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Hashable

import cloudpickle

__all__ = ["get_dataset", "list_datasets", "publish_dataset", "unpublish_dataset"]

_TAG = "distributed_client.Future"


class _Pickler(cloudpickle.Pickler):
    """cloudpickle, with Futures (and RemoteData) written as references to their keys."""

    def __init__(self, file, refs: dict, kinds: tuple):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.refs = refs
        self.kinds = kinds

    def persistent_id(self, obj):
        if isinstance(obj, self.kinds):
            self.refs.setdefault(obj.key, obj)
            return (_TAG, obj.key)
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, make):
        super().__init__(file)
        self.make = make

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) == 2 and pid[0] == _TAG:
            return self.make(pid[1])
        raise pickle.UnpicklingError(f"unknown reference {pid!r:.100} in a dataset")


def dumps_dataset(obj, kinds: tuple) -> tuple[bytes, dict]:
    """``(bytes, {key: Future})``: `obj` pickled with its Futures as key references."""
    buf = io.BytesIO()
    refs: dict = {}
    _Pickler(buf, refs, kinds).dump(obj)
    return buf.getvalue(), refs


def _unsupported(e: BaseException, center: str) -> bool:
    return isinstance(e, ValueError) and "unknown op" in str(e)


def _old_center(center: str, what: str) -> RuntimeError:
    return RuntimeError(
        f"the center at {center} does not support {what} (it predates them): "
        f"upgrade distributed-center there"
    )


def _keep_locally(session, keys) -> None:
    """This client never deletes `keys` (they belong to the dataset now)."""
    for key in keys:
        ts = session.state.tasks.get(key)
        if ts is not None:
            ts.borrowed = True


async def publish_dataset(executor, datasets: dict, override: bool = False) -> None:
    from .executor import Future
    from .remote import RemoteData

    session = executor.session
    for name in datasets:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a dataset name is a non-empty str, got {name!r:.100}")
    prepared = []
    for name, obj in datasets.items():
        data, refs = dumps_dataset(obj, (Future, RemoteData))
        for ref in refs.values():
            executor._check_ref(ref)
        prepared.append((name, list(refs), data))
    keys = [k for _, ks, _ in prepared for k in ks]
    if keys:
        # a dataset names data on the cluster: it must be there
        await session.wait(keys)
        for key in keys:
            exc = session.error_of(key)
            if exc is not None:
                raise exc
    for name, ks, data in prepared:
        try:
            await session.center_call(
                "publish_dataset", name=name, keys=ks, data=data, override=override
            )
        except ValueError as e:
            if _unsupported(e, session.center_address):
                raise _old_center(session.center_address, "datasets") from None
            raise
        _keep_locally(session, ks)  # once the center pins them, not before


async def get_dataset(executor, name: str):
    from .executor import Future

    session = executor.session
    try:
        entry = await session.center_call("get_dataset", name=name)
    except ValueError as e:
        if _unsupported(e, session.center_address):
            raise _old_center(session.center_address, "datasets") from None
        raise
    keys = list(entry.get("keys") or ())
    if keys:
        try:
            # known to this client (borrowed: used, never deleted by it); each
            # Future made below then holds one reference
            await session.track_remote_keys(keys, wants=False)
        except KeyError as e:
            raise KeyError(
                f"dataset {name!r} names data that is no longer on the cluster (its "
                f"workers died): {e.args[0] if e.args else e}; publish it again"
            ) from None

    def make(key: Hashable):
        session.want([key])
        return Future(key, executor)

    # no await from here on: nothing can release the keys before they are wanted
    return _Unpickler(io.BytesIO(entry["data"]), make).load()


async def list_datasets(executor) -> list:
    session = executor.session
    try:
        return list(await session.center_call("list_datasets"))
    except ValueError as e:
        if _unsupported(e, session.center_address):
            raise _old_center(session.center_address, "datasets") from None
        raise


async def unpublish_dataset(executor, name: str) -> None:
    session = executor.session
    try:
        await session.center_call("unpublish_dataset", name=name)
    except ValueError as e:
        if _unsupported(e, session.center_address):
            raise _old_center(session.center_address, "datasets") from None
        raise
