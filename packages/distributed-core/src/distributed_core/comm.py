"""Connections: framed messages over tornado IOStreams, the handshake, connect.

This is the one place where tornado's stream errors are translated into
:class:`~distributed_core.errors.CommClosedError` and
:class:`~distributed_core.errors.RemoteProtocolError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
import sys
import time

from tornado.iostream import IOStream, StreamClosedError, UnsatisfiableReadError
from tornado.tcpclient import TCPClient

from ._version import __version__
from .addresses import normalize_address, parse_address, unparse_address
from .buffers import new_bytearray, new_bytes
from .errors import (
    AuthenticationError,
    CommClosedError,
    DecodeError,
    HandshakeError,
    ProtocolVersionError,
    RemoteProtocolError,
)
from .protocol import Limits, check_count, check_lengths, frame_header
from .security import Security
from .serialize import dumps, frame_kinds, loads

__all__ = ["PROTOCOL_VERSION", "Comm", "connect", "read", "read_frames", "write", "write_frames"]

logger = logging.getLogger("distributed_core.comm")

#: Wire protocol version ``(major, minor)``. Peers with different majors
#: refuse each other at the handshake; minors only add optional fields.
PROTOCOL_VERSION = (1, 0)

#: Messages up to this size are read in one go and written as one buffer.
SMALL = 64 * 1024

_16 = struct.Struct("<QQ")


@contextlib.contextmanager
def _translate(what: str, peer: str):
    """Map tornado/socket/ssl errors to our own exception types, once."""
    try:
        yield
    except StreamClosedError as e:
        cause = e.real_error
        detail = f": {cause}" if cause else ""
        raise CommClosedError(f"connection to {peer} closed while {what}{detail}") from cause
    except UnsatisfiableReadError as e:
        raise RemoteProtocolError(f"{peer} sent an unreadable stream: {e}") from e
    except (ssl.SSLError, OSError) as e:
        raise CommClosedError(f"connection to {peer} failed while {what}: {e}") from e


def _raise_translated(e: BaseException, what: str, peer: str) -> None:
    """Raise ``e`` translated as :func:`_translate` does (unchanged if not a stream error)."""
    with _translate(what, peer):
        raise e


_np = None


def alloc_frame(n: int):
    """A writable buffer for a large frame that becomes a pickle buffer.

    ``numpy.empty`` gets huge pages from numpy's allocator, which makes the
    kernel's page faults on receive far cheaper (256 MiB: ~60 ms instead of
    ~250 ms on the benchmark VM); numpy is installed wherever large arrays
    are being sent. Without numpy, an uninitialised ``bytearray``.
    """
    global _np
    if _np is None:
        try:
            import numpy
        except ImportError:  # pragma: no cover - depends on the environment
            _np = False
        else:
            _np = numpy
    if _np:
        return _np.empty(n, dtype=_np.uint8)
    return new_bytearray(n)


# -- framing on a stream -------------------------------------------------------


async def read_frames(stream: IOStream, limits: Limits) -> list:
    """Read one message's frames; lengths are checked before allocation.

    Large frames are read straight into preallocated ``bytearray``\\ s
    (``read_into``), so tornado never buffers them and a message may be far
    larger than tornado's default 100 MB buffer.

    The stream closing before a message starts is a clean close; closing
    after part of one raises ``StreamClosedError`` whose ``real_error`` is an
    ``EOFError`` saying so (translated by :func:`_translate` like any other).
    """
    head = await stream.read_bytes(16, partial=True)
    try:
        if len(head) == 16:
            n, first = _16.unpack(head)
            if (
                n == 1
                and first <= SMALL
                and first <= limits.max_frame_bytes
                and first <= limits.max_message_bytes
            ):
                # fast path: one small frame (every small message)
                return [await stream.read_bytes(first) if first else b""]
        return await _read_message(stream, limits, head)
    except StreamClosedError as e:
        detail = f" ({e.real_error})" if e.real_error else ""
        raise StreamClosedError(
            real_error=EOFError(
                f"the peer closed the connection in the middle of a message{detail}"
            )
        ) from None


async def _read_message(stream: IOStream, limits: Limits, head: bytes) -> list:
    if len(head) < 16:
        head += await stream.read_bytes(16 - len(head))
    n, first = _16.unpack(head)
    check_count(n, limits)
    if n == 1:
        lengths = (first,)
    else:
        if 8 * (n - 1) > limits.max_message_bytes:
            raise RemoteProtocolError(f"peer sent a header for {n} frames; too large")
        rest = struct.unpack(f"<{n - 1}Q", await stream.read_bytes(8 * (n - 1)))
        lengths = (first, *rest)
    total = check_lengths(lengths, limits)
    if total <= SMALL:
        if n == 1:
            return [await stream.read_bytes(total) if total else b""]
        data = await stream.read_bytes(total) if total else b""
        frames, pos = [], 0
        for length in lengths:
            frames.append(data[pos : pos + length])
            pos += length
        return frames
    frames = []
    kinds = None
    for i, length in enumerate(lengths):
        if length == 0:
            frames.append(b"")
        elif length <= SMALL:
            frames.append(await stream.read_bytes(length))
        else:
            if kinds is None:
                kinds = frame_kinds(frames[0]) if frames else {}
            if kinds.get(i) == 0:  # will be a bytes value: receive straight into bytes
                buf, view = new_bytes(length)
                if buf is not None:
                    await stream.read_into(view)
                    view.release()
                    frames.append(buf)
                    continue
            buf = new_bytearray(length) if kinds.get(i) == 1 else alloc_frame(length)
            await stream.read_into(buf)
            frames.append(buf)
    return frames


async def write_frames(stream: IOStream, frames) -> int:
    """Write one message's frames; large ones are written without copying."""
    if len(frames) == 1:
        f = frames[0]
        if type(f) is bytes and len(f) <= SMALL:
            # fast path: one small frame (every small message)
            await stream.write(_16.pack(1, len(f)) + f)
            return len(f) + 16
    header = frame_header(frames)
    nbytes = sum(memoryview(f).nbytes for f in frames)
    if nbytes <= SMALL:
        await stream.write(header + b"".join(frames))
    else:
        stream.write(header)
        fut = None
        for f in frames:
            if memoryview(f).nbytes:
                fut = stream.write(f)
        if fut is not None:
            await fut
    return nbytes + len(header)


# -- Comm -----------------------------------------------------------------


class Comm:
    """One connection: framed, encoded messages after a successful handshake.

    ``await comm.read()`` returns the next message; ``await comm.write(msg)``
    sends one. ``peer_address``/``local_address`` are ``scheme://host:port``;
    ``peer_info`` is the peer's hello (versions, name). Pickled values are
    accepted only once the handshake succeeded (``comm.allow_pickle``).
    """

    def __init__(self, stream: IOStream, local_address: str, peer_address: str, limits: Limits):
        self.stream = stream
        self.local_address = local_address
        self.peer_address = peer_address
        self.limits = limits
        self.peer_info: dict = {}
        self.allow_pickle = False
        self.name = None

    def __repr__(self) -> str:
        state = "closed" if self.closed() else "open"
        return f"<Comm {self.local_address} -> {self.peer_address} {state}>"

    def closed(self) -> bool:
        """Whether the connection is closed (by either side)."""
        return self.stream.closed()

    async def read(self, limits: Limits | None = None):
        """Read and decode the next message.

        Raises :class:`CommClosedError` when the peer went away,
        :class:`RemoteProtocolError` (after closing the connection) on a
        framing violation, and :class:`DecodeError` (connection still usable)
        when well-framed content cannot be decoded.
        """
        try:
            frames = await read_frames(self.stream, limits or self.limits)
        except RemoteProtocolError:
            self.abort()
            raise
        except Exception as e:
            # what _translate does, without a (generator) context manager on
            # the hot path: that costs ~0.7 us per message on each side
            _raise_translated(e, "reading", self.peer_address)
            raise
        return loads(frames, allow_pickle=self.allow_pickle)

    async def write(self, msg) -> int:
        """Encode and send one message; returns the bytes written."""
        frames = dumps(msg)
        try:
            return await write_frames(self.stream, frames)
        except Exception as e:
            _raise_translated(e, "writing", self.peer_address)
            raise

    async def close(self) -> None:
        """Close the connection (pending writes are dropped)."""
        self.stream.close()

    def abort(self) -> None:
        """Close the connection now, from synchronous code."""
        self.stream.close()

    # -- handshake ----------------------------------------------------------

    async def handshake(self, role: str, security: Security | None, name=None) -> None:
        """Exchange hellos (and secret proofs); raise HandshakeError on failure.

        Both sides send first and then read, so a version or authentication
        mismatch is detected on both ends without extra round trips. Nothing
        is unpickled: ``allow_pickle`` is only set once this returns.
        """
        security = security or Security()
        nonce = security.new_nonce()
        hello = {
            "distributed": "hello",
            "protocol": list(PROTOCOL_VERSION),
            "package": "distributed-core",
            "version": __version__,
            "python": "%d.%d.%d" % sys.version_info[:3],
            "role": role,
            "name": name,
            "auth": security.secret is not None,
            "nonce": nonce,
        }
        small = Limits.handshake()
        await self.write(hello)
        try:
            peer = await self.read(small)
        except DecodeError as e:
            raise HandshakeError(
                f"{self.peer_address} did not start with a valid hello: {e}"
            ) from None
        except RemoteProtocolError as e:
            raise HandshakeError(
                f"{self.peer_address} did not start with a valid hello: {e}"
            ) from None
        if not isinstance(peer, dict) or peer.get("distributed") != "hello":
            raise HandshakeError(
                f"{self.peer_address} is not speaking the distributed protocol "
                f"(its first message was not a hello: {_short(peer)})"
            )
        self.peer_info = peer
        _check_version(peer, self.peer_address)
        peer_nonce = peer.get("nonce")
        peer_auth = bool(peer.get("auth"))
        if security.secret is not None:
            if not peer_auth:
                raise AuthenticationError(
                    f"{self.peer_address} did not authenticate: this side requires a shared "
                    "secret and the peer has none configured (Security(secret=...) / "
                    "--secret-file)"
                )
            if not isinstance(peer_nonce, bytes) or len(peer_nonce) < 16:
                raise HandshakeError(f"{self.peer_address} sent a hello without a valid nonce")
            await self.write({"proof": security.proof(role, nonce, peer_nonce)})
            try:
                reply = await self.read(small)
            except RemoteProtocolError as e:
                raise HandshakeError(f"{self.peer_address} sent an invalid proof: {e}") from None
            peer_role = peer.get("role") if isinstance(peer.get("role"), str) else ""
            proof = reply.get("proof") if isinstance(reply, dict) else None
            if peer_role == role or not security.verify(proof, peer_role, nonce, peer_nonce):
                raise AuthenticationError(
                    f"{self.peer_address} failed authentication: its proof of the shared "
                    "secret is wrong (the two sides have different secrets)"
                )
        elif peer_auth:
            raise AuthenticationError(
                f"{self.peer_address} requires a shared secret and this side has none "
                "configured; pass Security(secret=...) or --secret-file"
            )
        self.allow_pickle = True


def _short(obj, n=80) -> str:
    r = repr(obj)
    return r if len(r) <= n else r[:n] + "..."


def _check_version(peer: dict, peer_address: str) -> None:
    proto = peer.get("protocol")
    if not isinstance(proto, list) or len(proto) != 2 or not all(isinstance(x, int) for x in proto):
        raise HandshakeError(f"{peer_address} sent a hello without a protocol version")
    major, minor = proto
    if major != PROTOCOL_VERSION[0]:
        ours = "%d.%d" % PROTOCOL_VERSION
        theirs = f"{major}.{minor}"
        pkg = f"{peer.get('package', '?')} {peer.get('version', '?')}"
        if major > PROTOCOL_VERSION[0]:
            advice = (
                f"upgrade distributed-core on this side (now {__version__}) to a release "
                f"that speaks protocol {major}.x"
            )
        else:
            advice = (
                f"upgrade {peer.get('package', 'distributed-core')} on {peer_address} "
                f"(now {peer.get('version', '?')}) to a release that speaks protocol "
                f"{PROTOCOL_VERSION[0]}.x"
            )
        raise ProtocolVersionError(
            f"incompatible wire protocol: this side (distributed-core {__version__}) speaks "
            f"protocol {ours}, the peer {peer_address} ({pkg}) speaks protocol {theirs}; "
            f"{advice}"
        )


# -- functional forms ------------------------------------------------------------


async def read(comm: Comm):
    """Read one message from ``comm`` (same as ``await comm.read()``)."""
    return await comm.read()


async def write(comm: Comm, msg) -> int:
    """Write one message to ``comm`` (same as ``await comm.write(msg)``)."""
    return await comm.write(msg)


# -- connect ------------------------------------------------------------------

_client: TCPClient | None = None


def _tcp_client() -> TCPClient:
    global _client
    if _client is None:
        _client = TCPClient()
    return _client


def stream_addresses(stream: IOStream, scheme: str) -> tuple[str, str]:
    """``(local, peer)`` addresses of a connected stream."""
    sock = stream.socket
    try:
        local = sock.getsockname()
        peer = sock.getpeername()
    except (OSError, AttributeError):  # already closed (socket is None), e.g. a TLS refusal
        return f"{scheme}://?", f"{scheme}://?"
    return unparse_address(scheme, local[0], local[1]), unparse_address(scheme, peer[0], peer[1])


async def connect(
    address,
    timeout: float = 10,
    security: Security | None = None,
    name=None,
    limits: Limits | None = None,
) -> Comm:
    """Open a connection to ``address`` and perform the handshake.

    Refused connections are retried with backoff until ``timeout`` seconds
    have passed, then :class:`CommClosedError` names the address. Handshake
    failures (version, authentication) are raised at once.
    """
    address = normalize_address(address)
    scheme, host, port = parse_address(address)
    limits = limits or Limits()
    ssl_ctx = None
    if scheme == "tls":
        ssl_ctx = (security or Security()).client_context()
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        left = deadline - time.monotonic()
        try:
            with _translate("connecting", address):
                stream = await asyncio.wait_for(
                    _tcp_client().connect(
                        host,
                        port,
                        ssl_options=ssl_ctx,
                        max_buffer_size=limits.max_message_bytes + 2**20,
                    ),
                    timeout=max(left, 0.001),
                )
            break
        except (CommClosedError, asyncio.TimeoutError, socket.gaierror) as e:
            if isinstance(e.__cause__, ssl.SSLCertVerificationError):
                # our side rejected the peer's certificate: retrying cannot help
                raise CommClosedError(
                    f"TLS connection to {address} refused: {e.__cause__.verify_message}; "
                    "check Security(tls_ca_file=...) names the CA that signed its certificate"
                ) from None
            if isinstance(e, socket.gaierror) or time.monotonic() >= deadline:
                detail = "timed out" if isinstance(e, asyncio.TimeoutError) else str(e)
                raise CommClosedError(
                    f"could not connect to {address} within {timeout}s: {detail}"
                ) from None
            await asyncio.sleep(min(delay, max(deadline - time.monotonic(), 0)))
            delay = min(delay * 2, 0.5)
    stream.set_nodelay(True)
    local, peer = stream_addresses(stream, scheme)
    comm = Comm(stream, local, address, limits)
    try:
        await asyncio.wait_for(
            comm.handshake("connector", security, name), timeout=max(deadline - time.monotonic(), 1)
        )
    except asyncio.TimeoutError:
        comm.abort()
        raise CommClosedError(
            f"{address} accepted the connection but did not answer the hello"
        ) from None
    except BaseException:
        comm.abort()
        raise
    return comm
