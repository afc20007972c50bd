"""Failure: exceptions that cross the wire keep their type and traceback."""

from __future__ import annotations

import pickle

import pytest

from distributed_core import Failure, RemoteError, RemoteTraceback, dumps, loads


class Custom(Exception):
    pass


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("no")


class NotRebuildable(Exception):
    def __init__(self, a, b):  # pickles as (a,) only: rebuilding fails
        super().__init__(a)


def raise_and_capture(exc):
    def inner():
        raise exc

    try:
        inner()
    except BaseException as e:
        return Failure.from_exception(e)


@pytest.mark.parametrize("exc", [ValueError("v"), Custom("c"), KeyError("k")])
def test_roundtrip_keeps_type_and_traceback(exc):
    failure = raise_and_capture(exc)
    assert failure.type_name == (
        type(exc).__qualname__
        if type(exc).__module__ == "builtins"
        else f"{type(exc).__module__}.Custom"
    )
    assert "in inner" in failure.traceback
    wire = loads(dumps({"f": failure, "reply": failure.to_reply()}))
    for f in (wire["f"], Failure.from_reply(wire["reply"])):
        with pytest.raises(type(exc)) as info:
            f.reraise()
        assert info.value.args == exc.args
        assert isinstance(info.value.__cause__, RemoteTraceback)
        assert "in inner" in info.value.__cause__.tb


@pytest.mark.parametrize("exc", [Unpicklable("u"), NotRebuildable("a", "b")])
def test_unrebuildable_becomes_remote_error(exc):
    failure = raise_and_capture(exc)
    assert failure.pickled is None
    out = Failure.from_reply(loads(dumps(failure.to_reply())))
    with pytest.raises(RemoteError) as info:
        out.reraise()
    assert info.value.type_name == failure.type_name
    assert info.value.message == str(exc)
    assert "in inner" in info.value.traceback
    assert isinstance(info.value.__cause__, RemoteTraceback)


def test_builtin_type_rebuilt_from_name_when_pickle_is_missing():
    reply = {"status": "error", "type": "ZeroDivisionError", "message": "division by zero"}
    with pytest.raises(ZeroDivisionError, match="division by zero"):
        Failure.from_reply(reply).reraise()


def test_unknown_type_name_is_remote_error():
    reply = {"status": "error", "type": "somewhere.Weird", "message": "m", "traceback": "tb"}
    exc = Failure.from_reply(reply).exception
    assert isinstance(exc, RemoteError)
    assert str(exc) == "somewhere.Weird: m"


def test_failure_pickles_and_has_a_repr():
    failure = raise_and_capture(ValueError("x"))
    again = pickle.loads(pickle.dumps(failure))
    assert (again.type_name, again.message, again.traceback) == (
        failure.type_name,
        failure.message,
        failure.traceback,
    )
    assert repr(failure) == "<Failure ValueError: x>"


def test_remote_traceback_str():
    text = str(RemoteTraceback("Traceback ...\nValueError: x\n"))
    assert "Remote traceback" in text and "ValueError: x" in text
