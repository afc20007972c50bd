"""distributed-core: the wire protocol, Server, rpc, security and a sync bridge.

Everything in the distributed cluster stands on this package: length-prefixed
frames of msgpack (with cloudpickle for what msgpack cannot carry), a
handshake that checks protocol versions and a shared secret on every
connection, a ``Server`` with a plain dict of handlers, and ``rpc`` over one
connection pool.
"""

from ._version import __version__
from .addresses import normalize_address, parse_address, unparse_address
from .comm import PROTOCOL_VERSION, Comm, connect, read, write
from .errors import (
    AuthenticationError,
    CommClosedError,
    CommTimeoutError,
    DecodeError,
    HandshakeError,
    LocalProtocolError,
    ProtocolError,
    ProtocolVersionError,
    PythonVersionError,
    RemoteError,
    RemoteProtocolError,
    RemoteTraceback,
    WorkerPausedError,
)
from .failure import Failure
from .netinfo import default_ip
from .protocol import Decoder, Limits
from .resources import parse_resources
from .rpc import ConnectionPool, rpc
from .security import Security, default_secret_file, ensure_secret_file
from .serialize import dumps, loads
from .server import Server
from .sync import LoopRunner, sync
from .timeouts import Timeouts

__all__ = [
    "PROTOCOL_VERSION",
    "AuthenticationError",
    "Comm",
    "CommClosedError",
    "CommTimeoutError",
    "ConnectionPool",
    "DecodeError",
    "Decoder",
    "Failure",
    "HandshakeError",
    "Limits",
    "LocalProtocolError",
    "LoopRunner",
    "ProtocolError",
    "ProtocolVersionError",
    "PythonVersionError",
    "RemoteError",
    "RemoteProtocolError",
    "RemoteTraceback",
    "Security",
    "Server",
    "Timeouts",
    "WorkerPausedError",
    "__version__",
    "connect",
    "default_ip",
    "default_secret_file",
    "dumps",
    "ensure_secret_file",
    "loads",
    "normalize_address",
    "parse_address",
    "parse_resources",
    "read",
    "rpc",
    "sync",
    "unparse_address",
    "write",
]
