"""Exception types of distributed-core.

Transport errors from tornado are translated into :class:`CommClosedError` in
one place (``comm.py``); protocol errors say which side is at fault, after
h11's ``LocalProtocolError`` / ``RemoteProtocolError`` split.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "CommClosedError",
    "CommTimeoutError",
    "DecodeError",
    "HandshakeError",
    "LocalProtocolError",
    "ProtocolError",
    "ProtocolVersionError",
    "PythonVersionError",
    "RemoteError",
    "RemoteProtocolError",
    "RemoteTraceback",
    "WorkerPausedError",
]


class CommClosedError(ConnectionError):
    """The connection is closed or was lost (refused, reset, EOF mid-message)."""


class CommTimeoutError(CommClosedError, TimeoutError):
    """A peer sent nothing for longer than a read's ``idle_timeout``.

    The connection was closed. A :class:`CommClosedError` (the connection is
    gone) and a :class:`TimeoutError`; the message names the peer, the op
    when known, and the seconds.

    .. versionadded:: 0.2.0
    """


class ProtocolError(Exception):
    """A message broke the wire protocol."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol cannot carry (our side's fault)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol (the peer's fault).

    The connection it arrived on is closed: after a framing violation the
    stream cannot be resynchronised.
    """


class DecodeError(RemoteProtocolError):
    """A well-framed message whose content could not be decoded.

    Unlike a framing violation the stream is still in sync, so a server
    answers with an error reply and keeps the connection.
    """


class PythonVersionError(DecodeError):
    """Pickles cannot be exchanged with a peer running another Python major.minor.

    Raised when such a peer sent a pickled value, before anything is
    unpickled (the rest of the message is decoded; the stream stays in sync
    and the connection usable), and when this side was about to send one to
    such a peer, before anything is sent. The message names both versions.
    Plain msgpack data (no pickles) still flows. ``partial`` is the message
    as received, with ``None`` in place of each refused pickle (receiving
    side only).

    .. versionadded:: 0.2.0
    """

    def __init__(self, message: str, partial=None):
        super().__init__(message)
        self.partial = partial


class HandshakeError(ConnectionError):
    """The opening hello exchange failed; the connection is closed."""


class ProtocolVersionError(HandshakeError):
    """The two ends speak incompatible protocol major versions."""


class AuthenticationError(HandshakeError):
    """The shared-secret proof was missing or wrong."""


class RemoteTraceback(Exception):
    """Carries the traceback text of an exception raised in another process.

    Set as ``__cause__`` of re-raised remote exceptions, so the remote
    traceback prints right above the local one.
    """

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n\nRemote traceback:\n" + '"""\n' + self.tb.rstrip("\n") + '\n"""'


class RemoteError(Exception):
    """A remote exception whose type could not be rebuilt here.

    ``type_name`` is the remote ``module.QualName``; ``message`` its str();
    ``traceback`` the remote traceback text.
    """

    def __init__(self, type_name: str, message: str, traceback: str = ""):
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback = traceback


class WorkerPausedError(Exception):
    """A worker over its memory pause fraction refused new data; retry later.

    Raised by a worker's ``update_data`` while it is paused (its memory above
    the pause fraction of its limit). Retryable: the worker resumes once its
    memory drops. Clients send the data to another worker or wait with
    backoff; an older client sees this error instead of silently losing data.

    .. versionadded:: 0.2.0
    """
