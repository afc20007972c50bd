"""Server: a plain dict of handlers, dispatch, error replies.

Message shapes::

    request  {'op': 'name', 'reply': True, **arguments}
    reply    {'status': 'OK', 'result': value}
             {'status': 'error', 'type': 'module.Name', 'message': str,
              'traceback': str, 'exception': <pickled exception>}

A handler is called as ``handler(comm, **arguments)`` and may be sync or
async. Requests on one connection are handled in order; concurrency comes
from several connections (``rpc``'s pool opens one per concurrent call).
Built-in ops: ``ping``, ``identity`` and ``close``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import time

from tornado.tcpserver import TCPServer

from ._version import __version__
from .addresses import parse_address, unparse_address
from .comm import PROTOCOL_VERSION, Comm, set_tcp_options, stream_addresses
from .errors import (
    CommClosedError,
    DecodeError,
    HandshakeError,
    LocalProtocolError,
    ProtocolError,
    PythonVersionError,
)
from .failure import Failure, error_reply
from .netinfo import default_ip
from .protocol import Limits
from .security import Security
from .timeouts import Timeouts, configured

__all__ = ["Server"]

logger = logging.getLogger("distributed_core.server")

_PYTHON_VERSION_ERROR = "distributed_core.errors.PythonVersionError"

#: handler results that are certainly not awaitable (skips inspect.isawaitable)
_PLAIN = frozenset({type(None), bool, int, float, str, bytes, dict, list, tuple})


class _TCPServer(TCPServer):
    def __init__(self, owner: Server, **kwargs):
        super().__init__(**kwargs)
        self._owner = owner

    def handle_stream(self, stream, address):
        self._owner._accept(stream)


class Server:
    """Serve ops from a dict of handlers over ``tcp://`` or ``tls://``.

    >>> async def main():
    ...     server = Server({"add": lambda comm, x, y: x + y})
    ...     await server.listen("tcp://127.0.0.1:0")
    ...     async with rpc(server.address) as r:
    ...         result = await r.add(x=1, y=2)
    ...     await server.close()
    ...     return result

    Parameters
    ----------
    handlers
        dict mapping op names to callables ``handler(comm, **kwargs)``.
    security
        :class:`Security`; with a secret, unauthenticated peers are refused.
        ``None``: :meth:`Security.default`, the default secret file's secret
        when that file exists (read at each connection), else no secret.
        ``Security()`` accepts unauthenticated peers whatever files exist.

        .. versionchanged:: 0.2.0
           ``None`` uses the default secret file when it exists.
    name
        shown in logs and in ``identity``.
    limits
        :class:`Limits` on what one message may make us allocate (default:
        ``Limits()`` with the ``limits.*`` values of :mod:`distributed_core.config`).
    handshake_timeout
        seconds a new connection has to complete its hello.
    allow_pickle
        accept pickled values from authenticated peers (default).
        ``False`` for servers that never need user objects.
    timeouts
        :class:`~distributed_core.timeouts.Timeouts` (default
        :func:`~distributed_core.timeouts.configured`): the TCP keepalive and
        ``TCP_USER_TIMEOUT`` settings of every accepted connection.

    Peers running another Python major.minor exchange no pickles with it: a
    request holding pickles gets an error reply naming both versions
    (nothing is unpickled; the connection stays usable), and a result that
    would need pickling is replaced by such an error reply.

    .. versionchanged:: 0.2.0
       ``timeouts``; TCP keepalive and ``TCP_USER_TIMEOUT`` on accepted
       connections; pickles refused across Python versions.
    """

    def __init__(
        self,
        handlers: dict,
        *,
        security: Security | None = None,
        name: str | None = None,
        limits: Limits | None = None,
        handshake_timeout: float = 10,
        allow_pickle: bool = True,
        timeouts: Timeouts | None = None,
    ):
        self.handlers = {
            "ping": _ping,
            "identity": self._identity_handler,
            **handlers,
        }
        for op, h in self.handlers.items():
            if not callable(h):
                raise TypeError(f"handler for op {op!r} is not callable: {h!r}")
        # None (not Security()): the handshake then uses the default secret
        # file, read at each connection (Security.default)
        self.security = security
        self.name = name
        self.limits = limits or _configured_limits()
        self.handshake_timeout = handshake_timeout
        self.allow_pickle = allow_pickle
        self.timeouts = timeouts or configured()
        self.address: str | None = None
        self.comms: set[Comm] = set()
        self._tasks: set[asyncio.Task] = set()
        self._tcp: _TCPServer | None = None
        self._sockets: list[socket.socket] = []
        self._closing = False
        self.started = time.time()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address or 'not listening'}>"

    # -- lifecycle -----------------------------------------------------------

    async def listen(self, port_or_address=0) -> None:
        """Start listening.

        An int listens on that port on all interfaces (0 picks a free one);
        an address such as ``'tcp://127.0.0.1:0'`` or ``'tls://0.0.0.0:8787'``
        chooses the interface and scheme. ``self.address`` then names the
        bound address.
        """
        if isinstance(port_or_address, int):
            scheme, host, port = "tcp", "0.0.0.0", port_or_address
            if self.security is not None and self.security.tls_cert is not None:
                scheme = "tls"
        else:
            scheme, host, port = parse_address(port_or_address)
        ssl_ctx = (self.security or Security()).server_context() if scheme == "tls" else None
        sock = _bind(host, port)
        self._sockets = [sock]
        self._tcp = _TCPServer(
            self, ssl_options=ssl_ctx, max_buffer_size=self.limits.max_message_bytes + 2**20
        )
        self._tcp.add_sockets(self._sockets)
        bound_host, bound_port = sock.getsockname()[:2]
        if bound_host in ("0.0.0.0", "::"):
            # listening everywhere: name the address other hosts can use
            bound_host = default_ip(v6=bound_host == "::")
        self.address = unparse_address(scheme, bound_host, bound_port)
        logger.info("%s listening at %s", self.name or type(self).__name__, self.address)

    @property
    def port(self) -> int:
        return parse_address(self.address)[2]

    async def close(self) -> None:
        """Stop listening, close every connection and wait for their handlers."""
        if self._closing:
            return
        self._closing = True
        if self._tcp is not None:
            self._tcp.stop()
        for sock in self._sockets:
            sock.close()
        for comm in list(self.comms):
            comm.abort()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    # -- connections -----------------------------------------------------------

    def _accept(self, stream) -> None:
        if self._closing:
            stream.close()
            return
        task = asyncio.ensure_future(self._handle_stream(stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle_stream(self, stream) -> None:
        scheme = parse_address(self.address)[0]
        stream.set_nodelay(True)
        try:
            set_tcp_options(stream.socket, self.timeouts)
        except (OSError, AttributeError):  # closed already: the handshake notices
            pass
        local, peer = stream_addresses(stream, scheme)
        comm = Comm(stream, local, peer, self.limits)
        self.comms.add(comm)
        try:
            try:
                await asyncio.wait_for(
                    comm.handshake("listener", self.security, self.name),
                    timeout=self.handshake_timeout,
                )
            except asyncio.TimeoutError:
                logger.warning(
                    "closing connection from %s: no hello within %ss", peer, self.handshake_timeout
                )
                return
            except HandshakeError as e:
                logger.warning("refused connection from %s: %s", peer, e)
                return
            except (CommClosedError, ProtocolError) as e:
                logger.info("connection from %s lost during the handshake: %s", peer, e)
                return
            # a node that never needs user objects (the Center) refuses pickles
            # even from authenticated peers: unpickling is code execution
            comm.allow_pickle = self.allow_pickle
            await self._serve(comm)
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug in us, not the peer's fault; keep serving others
            logger.exception("unexpected error serving %s", peer)
        finally:
            comm.abort()
            self.comms.discard(comm)

    async def _serve(self, comm: Comm) -> None:
        peer = comm.peer_address
        while not comm.closed():
            try:
                msg = await comm.read()
            except PythonVersionError as e:
                partial = e.partial if type(e.partial) is dict else {}
                op = partial.get("op")
                logger.warning("refused pickles in op %r from %s: %s", op, peer, e)
                if partial.get("reply", True) is not False:
                    text = f"op {op!r}: {e}" if isinstance(op, str) else str(e)
                    await self._reply(comm, _error(_PYTHON_VERSION_ERROR, text))
                continue
            except DecodeError as e:
                logger.warning("bad message from %s: %s", peer, e)
                await self._reply(comm, _error("DecodeError", str(e)))
                continue
            except ProtocolError as e:
                logger.warning("closing connection from %s: %s", peer, e)
                return
            except CommClosedError as e:
                if isinstance(e.__cause__, EOFError):  # closed mid-message (see read_frames)
                    logger.info("connection from %s lost: %s", peer, e)
                return
            if type(msg) is not dict:
                text = (
                    f"expected a map like {{'op': name, ...}}, got {type(msg).__name__}: "
                    f"{_short(msg)}"
                )
                logger.warning("bad message from %s: %s", peer, text)
                await self._reply(comm, _error("TypeError", text))
                continue
            op = msg.pop("op", None)
            reply = msg.pop("reply", True)
            if op is None:
                text = f"message has no 'op' key: {_short(msg)}; send {{'op': name, ...}}"
                logger.warning("bad message from %s: %s", peer, text)
                await self._reply(comm, _error("KeyError", text))
                continue
            if op == "close":
                if reply:
                    await self._reply(comm, {"status": "OK", "result": "OK"})
                return
            handler = self.handlers.get(op) if type(op) is str else None
            if handler is None:
                known = ", ".join(sorted(self.handlers))
                text = f"unknown op {op!r}; this server knows: {known}"
                logger.warning("bad request from %s: %s", peer, text)
                if reply:
                    await self._reply(comm, _error("ValueError", text))
                continue
            try:
                result = handler(comm, **msg)
                if type(result) not in _PLAIN and inspect.isawaitable(result):
                    result = await result
            except CommClosedError:
                if comm.closed():
                    return
                response = error_reply_logged(op, peer, handler, msg)
            except asyncio.CancelledError:
                raise
            except Exception:
                response = error_reply_logged(op, peer, handler, msg)
            else:
                response = {"status": "OK", "result": result}
            if reply and not comm.closed():
                if comm.pickle_refusal is not None:
                    # another Python: it cannot load our pickled exception
                    response.pop("exception", None)
                try:  # _reply inlined: one coroutine less per request
                    await comm.write(response)
                except PythonVersionError as e:
                    # the result would need pickles this peer cannot load
                    text = f"the result of op {op!r} cannot be sent: {e}"
                    logger.warning("%s", text)
                    await self._reply(comm, _error(_PYTHON_VERSION_ERROR, text))
                except LocalProtocolError as e:
                    await self._reply(comm, error_reply(e))
                except CommClosedError:
                    comm.abort()
            # Drop this request before waiting for the next one: an idle
            # connection would otherwise keep its last message alive (issue 10:
            # a worker's confirming add_keys of a whole scatter, so a scattered
            # key cost the center twice a computed one; on a worker, the last
            # update_data's values outlived their deletion).
            msg = result = response = None

    async def _reply(self, comm: Comm, response) -> None:
        if comm.pickle_refusal is not None and "exception" in response:
            # another Python: it cannot load our pickled exception
            response = {k: v for k, v in response.items() if k != "exception"}
        try:
            await comm.write(response)
        except LocalProtocolError as e:
            # the result could not be encoded: say so instead
            failure = error_reply(e)
            if comm.pickle_refusal is not None:
                failure.pop("exception", None)
            try:
                await comm.write(failure)
            except CommClosedError:
                comm.abort()
        except CommClosedError:
            comm.abort()

    # -- built-in handlers -------------------------------------------------------

    def identity(self) -> dict:
        """What ``identity`` returns; subclasses extend it."""
        return {
            "type": type(self).__name__,
            "name": self.name,
            "address": self.address,
            "versions": {"distributed-core": __version__, "protocol": list(PROTOCOL_VERSION)},
        }

    def _identity_handler(self, comm):
        return self.identity()


def _ping(comm):
    return "pong"


def _short(obj, n=100) -> str:
    r = repr(obj)
    return r if len(r) <= n else r[:n] + "..."


def _error(type_name: str, message: str) -> dict:
    return Failure(type_name, message, "").to_reply()


def error_reply_logged(op, peer, handler, kwargs) -> dict:
    import sys

    exc = sys.exc_info()[1]
    if isinstance(exc, TypeError):
        # Distinguish "called with the wrong arguments" from a TypeError
        # raised inside the handler: only the former fails to bind.
        try:
            inspect.signature(handler).bind(None, **kwargs)
        except TypeError as bind_error:
            sig = _signature_text(handler)
            text = f"wrong arguments for op {op!r}: {bind_error}; expected {op}{sig}"
            logger.warning("bad request from %s: %s", peer, text)
            return _error("TypeError", text)
        except ValueError:
            pass
    logger.warning("op %r from %s raised %s: %s", op, peer, type(exc).__name__, exc)
    return error_reply(exc)


def _signature_text(handler) -> str:
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError):
        return "(...)"
    params = list(sig.parameters.values())[1:]  # drop comm
    return str(sig.replace(parameters=params))


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        if e.errno == 98 or "in use" in str(e):
            raise OSError(
                e.errno, f"cannot listen on {host}:{port}: the port is already in use"
            ) from None
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def _configured_limits() -> Limits:
    """``Limits()`` with the ``limits.*`` configuration values (distributed_core.config)."""
    from . import config

    changes = {"max_frames": config.get("limits.max_frames")}
    max_bytes = config.get("limits.max_message_bytes")
    if max_bytes is not None:
        changes["max_message_bytes"] = changes["max_frame_bytes"] = max_bytes
    return Limits(**changes)
