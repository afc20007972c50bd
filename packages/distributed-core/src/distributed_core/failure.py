"""Exceptions that cross the wire: captured on one side, re-raised on the other."""

from __future__ import annotations

import builtins
import traceback as _tb

from . import errors
from .errors import RemoteError, RemoteTraceback
from .serialize import pickle_dumps, pickle_loads

__all__ = ["Failure", "error_reply"]


_OURS = "distributed_core.errors."


def _type_name(exc_type) -> str:
    mod = exc_type.__module__
    name = exc_type.__qualname__
    return name if mod == "builtins" else f"{mod}.{name}"


class Failure:
    """An exception with its traceback text, safe to store and to send.

    The exception itself travels pickled; if it cannot be pickled here or
    unpickled there, :meth:`reraise` raises :class:`RemoteError` carrying the
    type name, message and traceback instead, so nothing is lost.
    """

    __slots__ = ("type_name", "message", "traceback", "pickled")

    def __init__(self, type_name: str, message: str, traceback: str = "", pickled=None):
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        self.pickled = pickled

    @classmethod
    def from_exception(cls, exc: BaseException) -> Failure:
        """Capture ``exc`` with its formatted traceback (pickled if possible)."""
        tb = "".join(_tb.format_exception(type(exc), exc, exc.__traceback__))
        try:
            pickled = pickle_dumps(exc)
            pickle_loads(pickled)  # some exceptions pickle but cannot be rebuilt
        except Exception:
            pickled = None
        return cls(_type_name(type(exc)), str(exc), tb, pickled)

    @classmethod
    def from_reply(cls, reply: dict) -> Failure:
        """Rebuild from an ``{'status': 'error', ...}`` reply."""
        return cls(
            str(reply.get("type", "Exception")),
            str(reply.get("message", "")),
            str(reply.get("traceback", "")),
            reply.get("exception") if isinstance(reply.get("exception"), bytes) else None,
        )

    @property
    def exception(self) -> BaseException:
        """The exception object (a :class:`RemoteError` if it cannot be rebuilt)."""
        exc = None
        if self.pickled is not None:
            try:
                exc = pickle_loads(self.pickled)
            except Exception:
                exc = None
        if not isinstance(exc, BaseException):
            builtin = getattr(builtins, self.type_name, None)
            if builtin is None and self.type_name.startswith(_OURS):
                # our own errors are rebuilt without a pickle (e.g. for a peer
                # running another Python, which gets no pickles)
                builtin = getattr(errors, self.type_name[len(_OURS) :], None)
            if isinstance(builtin, type) and issubclass(builtin, Exception):
                exc = builtin(self.message)
            else:
                exc = RemoteError(self.type_name, self.message, self.traceback)
        if self.traceback:
            exc.__cause__ = RemoteTraceback(self.traceback)
        return exc

    def reraise(self):
        """Raise the remote exception here, the remote traceback as its cause."""
        raise self.exception

    def to_reply(self) -> dict:
        """The ``{'status': 'error', 'type', 'message', 'traceback', 'exception'}`` reply."""
        reply = {
            "status": "error",
            "type": self.type_name,
            "message": self.message,
            "traceback": self.traceback,
        }
        if self.pickled is not None:
            reply["exception"] = self.pickled
        return reply

    def __reduce__(self):
        return (Failure, (self.type_name, self.message, self.traceback, self.pickled))

    def __repr__(self) -> str:
        return f"<Failure {self.type_name}: {self.message}>"


def error_reply(exc: BaseException) -> dict:
    """The ``{'status': 'error', ...}`` reply for an exception."""
    return Failure.from_exception(exc).to_reply()
