"""Connections: framed messages over tornado IOStreams, the handshake, connect.

This is the one place where tornado's stream errors are translated into
:class:`~distributed_core.errors.CommClosedError` and
:class:`~distributed_core.errors.RemoteProtocolError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import socket
import ssl
import struct
import sys
import time

from tornado.iostream import IOStream, StreamClosedError, UnsatisfiableReadError
from tornado.netutil import Resolver
from tornado.tcpclient import TCPClient
from tornado.util import TimeoutError as TornadoTimeoutError

from ._version import __version__
from .addresses import normalize_address, parse_address, unparse_address
from .buffers import new_bytearray, new_bytes
from .errors import (
    AuthenticationError,
    CommClosedError,
    CommTimeoutError,
    DecodeError,
    HandshakeError,
    ProtocolVersionError,
    RemoteProtocolError,
)
from .protocol import BODY, HEAD, LARGE, SMALL, Decoder, Limits, frame_header
from .security import Security, join_hint
from .serialize import dumps, frame_kinds, loads
from .timeouts import Timeouts
from .timeouts import configured as configured_timeouts

__all__ = [
    "PROTOCOL_VERSION",
    "Comm",
    "connect",
    "python_mismatch",
    "read",
    "read_frames",
    "set_tcp_options",
    "write",
    "write_frames",
]

logger = logging.getLogger("distributed_core.comm")

#: Wire protocol version ``(major, minor)``. Peers with different majors
#: refuse each other at the handshake; minors only add optional fields.
PROTOCOL_VERSION = (1, 0)

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


async def read_frames(stream: IOStream, decoder: Decoder) -> list:
    """Read one message's frames from ``stream``, parsed by ``decoder``.

    :class:`~distributed_core.protocol.Decoder` is the only parser: this
    loop just moves the bytes it asks for. Lengths are checked before
    allocation, and a frame count over the limit is refused as soon as its
    8 bytes arrive (header bytes are read with ``partial=True``). Frames
    larger than ``SMALL`` are read straight into preallocated buffers
    (``read_into``), so tornado never buffers them and a message may be far
    larger than tornado's default 100 MB buffer.

    The stream closing before a message starts is a clean close; closing
    after part of one raises ``StreamClosedError`` whose ``real_error`` is an
    ``EOFError`` saying so (translated by :func:`_translate` like any other).

    .. versionchanged:: 0.2.0
       Takes a ``Decoder`` instead of ``Limits``.
    """
    frames = decoder.receive(await stream.read_bytes(16, partial=True))
    if frames is not None:
        return frames
    try:
        if decoder.state == BODY:
            # the common case: the rest of a message of at most SMALL bytes
            frames = decoder.receive(await stream.read_bytes(decoder.wanted))
            if frames is not None:
                return frames
        kinds = None
        while frames is None:
            state = decoder.state
            if state == LARGE:
                if kinds is None:
                    # frame 0 says which large frames become bytes/bytearray values
                    kinds = frame_kinds(decoder.frames[0]) if decoder.frames else {}
                kind = kinds.get(len(decoder.frames))
                frames = decoder.receive_frame(await _receive_large(stream, decoder.wanted, kind))
            else:
                frames = decoder.receive(
                    await stream.read_bytes(decoder.wanted, partial=state == HEAD)
                )
        return frames
    except StreamClosedError as e:
        detail = f" ({e.real_error})" if e.real_error else ""
        raise StreamClosedError(
            real_error=EOFError(
                f"the peer closed the connection in the middle of a message{detail}"
            )
        ) from None


async def _receive_large(stream: IOStream, length: int, kind):
    """Receive one large frame in place, into the type it will be used as."""
    if kind == 0:  # will be a bytes value: receive straight into bytes
        buf, view = new_bytes(length)
        if buf is not None:
            try:
                await stream.read_into(view)
            finally:
                view.release()
            return buf
    buf = new_bytearray(length) if kind == 1 else alloc_frame(length)
    await stream.read_into(buf)
    return buf


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
    accepted only once the handshake succeeded (``comm.allow_pickle``), and
    never exchanged with a peer whose Python major.minor differs from ours
    (``comm.pickle_refusal`` then says why; see :class:`PythonVersionError`).
    """

    def __init__(self, stream: IOStream, local_address: str, peer_address: str, limits: Limits):
        self.stream = stream
        self.local_address = local_address
        self.peer_address = peer_address
        self.decoder = Decoder(limits)
        self.peer_info: dict = {}
        self.allow_pickle = False
        #: Why pickles cannot be exchanged with this peer (its Python
        #: major.minor differs from ours), or ``None``. Set by the handshake.
        self.pickle_refusal: str | None = None
        self.name = None
        self._progress: list | None = None  # [loop time of the last bytes received]

    @property
    def limits(self) -> Limits:
        """The :class:`Limits` messages read on this connection are held to."""
        return self.decoder.limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self.decoder.limits = limits

    def __repr__(self) -> str:
        state = "closed" if self.closed() else "open"
        return f"<Comm {self.local_address} -> {self.peer_address} {state}>"

    def closed(self) -> bool:
        """Whether the connection is closed (by either side)."""
        return self.stream.closed()

    async def read(self, limits: Limits | None = None, *, idle_timeout: float | None = None):
        """Read and decode the next message.

        Raises :class:`CommClosedError` when the peer went away,
        :class:`RemoteProtocolError` (after closing the connection) on a
        framing violation, and :class:`DecodeError` (connection still usable)
        when well-framed content cannot be decoded, e.g.
        :class:`PythonVersionError` for pickles from a peer running another
        Python major.minor (nothing is unpickled then).

        ``idle_timeout`` (seconds) bounds how long the read may go without
        receiving *any* bytes, however long the whole message takes: a large
        transfer that keeps flowing is not cut, a peer that goes silent is
        noticed after ``idle_timeout`` s. The connection is then closed and
        :class:`CommTimeoutError` raised. One timer per read checks the time
        of the last bytes received; nothing is added per chunk.

        .. versionchanged:: 0.2.0
           ``idle_timeout``; pickles from another Python major.minor are
           refused.
        """
        if idle_timeout is not None:
            return await self._read_watched(limits, idle_timeout)
        if limits is not None:
            return await self._read_limited(limits)
        try:
            frames = await read_frames(self.stream, self.decoder)
        except RemoteProtocolError:
            self.abort()
            raise
        except Exception as e:
            # what _translate does, without a (generator) context manager on
            # the hot path: that costs ~0.7 us per message on each side
            _raise_translated(e, "reading", self.peer_address)
            raise
        return loads(frames, self.allow_pickle, refuse_pickle=self.pickle_refusal)

    async def _read_limited(self, limits: Limits):
        decoder = self.decoder
        saved, decoder.limits = decoder.limits, limits
        try:
            return await self.read()
        finally:
            decoder.limits = saved

    def _track_progress(self) -> list:
        """Note the time whenever bytes arrive (installed on first use)."""
        progress = self._progress
        if progress is None:
            progress = self._progress = [0.0]
            inner = self.stream.read_from_fd
            clock = asyncio.get_running_loop().time

            def read_from_fd(buf):
                n = inner(buf)
                if n:
                    progress[0] = clock()
                return n

            # tornado calls self.read_from_fd for every recv (plain and TLS)
            self.stream.read_from_fd = read_from_fd
        return progress

    async def _read_watched(self, limits: Limits | None, idle_timeout: float):
        if idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be > 0 seconds, got {idle_timeout!r}")
        progress = self._track_progress()
        loop = asyncio.get_running_loop()
        progress[0] = loop.time()
        watch = [None, False]  # timer handle, expired

        def check():
            if loop.time() - progress[0] >= idle_timeout:
                watch[1] = True
                self.abort()
            else:
                watch[0] = loop.call_at(progress[0] + idle_timeout, check)

        watch[0] = loop.call_later(idle_timeout, check)
        try:
            return await self.read(limits)
        except CommClosedError:
            if watch[1]:
                raise CommTimeoutError(
                    f"{self.peer_address} sent nothing for {idle_timeout}s while this side "
                    "was reading a message (idle_timeout); the connection was closed"
                ) from None
            raise
        finally:
            watch[0].cancel()

    async def write(self, msg) -> int:
        """Encode and send one message; returns the bytes written.

        A message that needs pickles raises :class:`PythonVersionError`
        before anything is sent if the peer runs another Python
        major.minor (the connection stays usable).
        """
        frames = dumps(msg, refuse_pickle=self.pickle_refusal)
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

    async def handshake(
        self, role: str, security: Security | None, name=None, client: str | None = None
    ) -> None:
        """Exchange hellos (and secret proofs); raise HandshakeError on failure.

        Both sides send first and then read, so a version or authentication
        mismatch is detected on both ends without extra round trips. Nothing
        is unpickled: ``allow_pickle`` is only set once this returns.

        ``security=None`` means :meth:`Security.default` (the default secret
        file, read now).

        ``client`` (a client's id, optional) goes in the hello as ``"client"``:
        the peer reads it from ``peer_info`` to know whose data a request
        makes. Peers that do not know the field ignore it.

        .. versionchanged:: 0.2.0
           ``None`` uses the default secret file when it exists.

        .. versionadded:: 0.2.0
           ``client``.
        """
        if security is None:
            try:
                security = Security.default()
            except ValueError as e:
                raise AuthenticationError(str(e)) from None
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
        if client is not None:
            hello["client"] = client
        small = Limits.handshake()
        # A connector whose secret is only the default file's (Security.default)
        # reads the listener's hello first (listeners send theirs at once) and
        # uses the secret only if the listener asks for one: it still reaches a
        # center started with --insecure or from a release before 0.2.
        lenient = role == "connector" and security.implicit
        if not lenient:
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
        if lenient:  # ours goes out whatever theirs says, so their side can tell its user
            if not (isinstance(peer, dict) and peer.get("auth")):
                security = Security()
                hello["auth"] = False
            await self.write(hello)
        if not isinstance(peer, dict) or peer.get("distributed") != "hello":
            raise HandshakeError(
                f"{self.peer_address} is not speaking the distributed protocol "
                f"(its first message was not a hello: {_short(peer)})"
            )
        self.peer_info = peer
        _check_version(peer, self.peer_address)
        self.pickle_refusal = python_mismatch(peer.get("python"), self.peer_address)
        peer_nonce = peer.get("nonce")
        peer_auth = bool(peer.get("auth"))
        if security.secret is not None:
            if not peer_auth:
                raise AuthenticationError(
                    f"{self.peer_address} did not authenticate: this side requires a shared "
                    "secret and the peer has none configured: " + join_hint(peer=True)
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
                    "secret is wrong (the two sides have different secrets): copy the "
                    "center's secret file again, or check --secret-file on both sides"
                )
        elif peer_auth:
            raise AuthenticationError(
                f"{self.peer_address} requires a shared secret and this side has none "
                "configured: " + join_hint()
            )
        self.allow_pickle = True


def _short(obj, n=80) -> str:
    r = repr(obj)
    return r if len(r) <= n else r[:n] + "..."


def python_mismatch(peer_python, peer_address: str) -> str | None:
    """Why pickles cannot be exchanged with a peer running ``peer_python``.

    ``None`` when its major.minor equals ours, or when the hello did not say
    (a peer that does not say is trusted, as before). Bytecode and pickled
    code differ between Python minor versions: unpickling a function from
    another one fails with ``SystemError: unknown opcode`` or crashes the
    process, so no pickle is exchanged at all.
    """
    if not isinstance(peer_python, str):
        return None
    try:
        major, minor = (int(x) for x in peer_python.split(".")[:2])
    except ValueError:
        return None
    if (major, minor) == sys.version_info[:2]:
        return None
    return (
        f"peer {peer_address} runs Python {major}.{minor}, this process "
        f"{sys.version_info[0]}.{sys.version_info[1]}: pickled objects cannot be exchanged "
        "between different Python versions; use the same Python major.minor on every node"
    )


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


class _LiteralResolver(Resolver):
    """Resolve IP literals at once; names go to tornado's default resolver.

    Cluster addresses are IP literals almost always; answering them without
    the resolver's executor thread saves a thread hop per connect, and leaves
    no resolver task behind when a connect is cancelled or times out.
    """

    def initialize(self) -> None:
        self.fallback = Resolver()

    async def resolve(self, host: str, port: int, family=socket.AF_UNSPEC):
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return await self.fallback.resolve(host, port, family)
        if ip.version == 6:
            return [(socket.AF_INET6, (host, port, 0, 0))]
        return [(socket.AF_INET, (host, port))]

    def close(self) -> None:
        self.fallback.close()


def _tcp_client() -> TCPClient:
    global _client
    if _client is None:
        _client = TCPClient(resolver=_LiteralResolver())
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


def set_tcp_options(sock, timeouts: Timeouts | None = None) -> None:
    """TCP keepalive and ``TCP_USER_TIMEOUT`` on a connected socket.

    From ``timeouts`` (default: :func:`distributed_core.timeouts.configured`,
    the defaults with the ``timeouts.*`` configuration values):
    ``SO_KEEPALIVE`` with probes after ``tcp_keepalive_idle`` s of silence,
    every ``tcp_keepalive_interval`` s, the connection dropped after
    ``tcp_keepalive_count`` unanswered ones (seconds rounded up to whole
    seconds, at least 1); ``tcp_keepalive_idle <= 0`` turns keepalive off.
    ``TCP_USER_TIMEOUT`` (Linux) closes a connection whose written data
    stays unacknowledged for ``tcp_user_timeout`` s (0 leaves the kernel's
    default, no limit). Options the platform lacks are skipped. Applied to
    every connection by :func:`connect` and :class:`~distributed_core.Server`.

    .. versionadded:: 0.2.0
    """
    t = timeouts or configured_timeouts()
    if t.tcp_keepalive_idle is None or t.tcp_keepalive_idle <= 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        # TCP_KEEPIDLE on Linux, TCP_KEEPALIVE on macOS
        idle_opt = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
        for opt, value in (
            (idle_opt, t.tcp_keepalive_idle),
            (getattr(socket, "TCP_KEEPINTVL", None), t.tcp_keepalive_interval),
            (getattr(socket, "TCP_KEEPCNT", None), t.tcp_keepalive_count),
        ):
            if opt is not None and value is not None:
                sock.setsockopt(socket.IPPROTO_TCP, opt, max(1, math.ceil(value)))
    user_timeout = getattr(socket, "TCP_USER_TIMEOUT", None)
    if user_timeout is not None and t.tcp_user_timeout is not None:
        sock.setsockopt(
            socket.IPPROTO_TCP, user_timeout, max(0, math.ceil(t.tcp_user_timeout * 1000))
        )


async def connect(
    address,
    timeout: float | None = None,
    security: Security | None = None,
    name=None,
    limits: Limits | None = None,
    *,
    timeouts: Timeouts | None = None,
    client: str | None = None,
) -> Comm:
    """Open a connection to ``address`` and perform the handshake.

    Refused connections are retried with backoff until ``timeout`` seconds
    have passed (default ``timeouts.connect_timeout``), then
    :class:`CommClosedError` names the address and the seconds; so does a
    host that never answers (SYN dropped). The handshake is bounded by what
    is left of ``timeout``, at least 1 s. Handshake failures (version,
    authentication) are raised at once.

    ``timeouts`` (:class:`~distributed_core.timeouts.Timeouts`, default
    :func:`~distributed_core.timeouts.configured`) gives ``connect_timeout``
    and the TCP keepalive / ``TCP_USER_TIMEOUT`` settings applied to the
    socket (:func:`set_tcp_options`).

    .. versionchanged:: 0.2.0
       ``timeouts``; ``timeout`` defaults to ``timeouts.connect_timeout``
       (5 s) instead of 10 s; TCP keepalive and ``TCP_USER_TIMEOUT`` are set.

    .. versionadded:: 0.2.0
       ``client``: a client's id, sent in the hello (see :meth:`Comm.handshake`).
    """
    address = normalize_address(address)
    scheme, host, port = parse_address(address)
    timeouts = timeouts or configured_timeouts()
    if timeout is None:
        timeout = timeouts.connect_timeout
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
                # tornado's own timeout closes the half-open socket when it
                # expires (cancelling its connect from outside leaks it on
                # tornado 6.0); wait_for is only the safety net behind it.
                stream = await asyncio.wait_for(
                    _tcp_client().connect(
                        host,
                        port,
                        ssl_options=ssl_ctx,
                        max_buffer_size=limits.max_message_bytes + 2**20,
                        timeout=max(left, 0.001),
                    ),
                    timeout=max(left, 0.001) + 1.0,
                )
            break
        except (CommClosedError, asyncio.TimeoutError, TornadoTimeoutError, socket.gaierror) as e:
            if isinstance(e.__cause__, ssl.SSLCertVerificationError):
                # our side rejected the peer's certificate: retrying cannot help
                raise CommClosedError(
                    f"TLS connection to {address} refused: {e.__cause__.verify_message}; "
                    "check Security(tls_ca_file=...) names the CA that signed its certificate"
                ) from None
            if isinstance(e, socket.gaierror) or time.monotonic() >= deadline:
                detail = (
                    "timed out (the host did not answer)"
                    if isinstance(e, (asyncio.TimeoutError, TornadoTimeoutError))
                    else str(e)
                )
                raise CommClosedError(
                    f"could not connect to {address} within {timeout}s (connect_timeout): {detail}"
                ) from None
            await asyncio.sleep(min(delay, max(deadline - time.monotonic(), 0)))
            delay = min(delay * 2, 0.5)
    stream.set_nodelay(True)
    try:
        set_tcp_options(stream.socket, timeouts)
    except (OSError, AttributeError):  # closed already: the handshake reports it
        pass
    local, peer = stream_addresses(stream, scheme)
    comm = Comm(stream, local, address, limits)
    hello_timeout = max(deadline - time.monotonic(), 1)
    try:
        await asyncio.wait_for(
            comm.handshake("connector", security, name, client), timeout=hello_timeout
        )
    except asyncio.TimeoutError:
        comm.abort()
        raise CommClosedError(
            f"{address} accepted the connection but did not answer the hello within "
            f"{hello_timeout:.3g}s (connect_timeout {timeout}s)"
        ) from None
    except BaseException:
        comm.abort()
        raise
    return comm
