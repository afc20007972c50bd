"""TLS contexts and the shared secret, passed as ``security=`` everywhere.

Secure by default (issue 12): every user has a default secret file,
:func:`default_secret_file` (``$DISTRIBUTED_SECRET_FILE``, else
``~/.config/distributed/secret``). ``dcenter`` creates it when it is missing
(:func:`ensure_secret_file`), and every connection made or accepted with
``security=None`` proves knowledge of it when it exists
(:meth:`Security.default`), so the nodes and clients of one user on one
machine authenticate each other with no options.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import ssl
from pathlib import Path

__all__ = [
    "SECRET_FILE_ENV",
    "Security",
    "default_secret_file",
    "ensure_secret_file",
    "join_hint",
]

SECRET_FILE_ENV = "DISTRIBUTED_SECRET_FILE"
"""Environment variable naming the default secret file (overrides the home directory one)."""

_DEFAULT_RELATIVE = Path(".config") / "distributed" / "secret"


def default_secret_file() -> Path:
    """The file holding this user's default cluster secret.

    ``$DISTRIBUTED_SECRET_FILE`` when set and not empty, else
    ``~/.config/distributed/secret``. The file may not exist.

    .. versionadded:: 0.2.0
    """
    env = os.environ.get(SECRET_FILE_ENV)
    if env:
        return Path(env).expanduser()
    try:
        home = Path.home()
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        raise ValueError(
            f"cannot find the default secret file: no home directory; set {SECRET_FILE_ENV}"
        ) from None
    return home / _DEFAULT_RELATIVE


def ensure_secret_file(path=None) -> tuple[Path, bool]:
    """Create the secret file ``path`` (default :func:`default_secret_file`) if missing.

    A new file holds 32 random bytes as 64 hex digits, mode 0600; a parent
    directory it creates gets mode 0700. Creation is atomic (written under a
    temporary name, then linked), so a concurrent reader never sees an empty
    file and two concurrent creators agree on one secret.
    Returns ``(path, created)``.

    .. versionadded:: 0.2.0
    """
    path = Path(path) if path is not None else default_secret_file()
    if path.exists():
        return path, False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)
            created = True
        except FileExistsError:  # another process made it first: use theirs
            created = False
    finally:
        os.unlink(tmp)
    return path, created


def join_hint(peer: bool = False) -> str:
    """How a node without the secret gets it (for error messages).

    ``peer=True``: said by the side that has the secret, about the peer.
    """
    if peer:
        return (
            "give the peer this cluster's secret file (copy the center's "
            "~/.config/distributed/secret to the same place on the peer's machine, or pass "
            "--secret-file FILE / Security.from_files(secret_file=FILE) there)"
        )
    try:
        here = str(default_secret_file())
    except ValueError:
        here = f"${SECRET_FILE_ENV}"
    return (
        f"copy the secret file from the center's machine (dcenter prints the command; by "
        f"default ~/.config/distributed/secret there) to {here} here, or pass --secret-file "
        f"FILE / Security.from_files(secret_file=FILE)"
    )


class Security:
    """How a node proves who it is and protects its connections.

    Cluster certificates are usually issued for IP addresses or internal
    names, so host names are not checked; the CA signature is.

    Parameters
    ----------
    secret
        A shared secret (str or bytes). Both ends of every connection prove
        they know it without sending it (HMAC over fresh nonces), and only
        peers that did may send pickled payloads.
    tls_cert, tls_key
        PEM certificate and private key files. Required to listen on
        ``tls://``; on the connecting side they are the client certificate
        for mutual TLS.
    tls_ca_file
        PEM file of the CA(s) that signed the peers' certificates. Without it
        a connecting side trusts the system's default CAs.
    require_client_cert
        A listening side refuses TLS peers without a certificate signed by
        ``tls_ca_file`` (mutual TLS).
    """

    def __init__(
        self,
        secret=None,
        tls_cert=None,
        tls_key=None,
        tls_ca_file=None,
        require_client_cert=False,
    ):
        if isinstance(secret, str):
            secret = secret.encode()
        if secret is not None and not isinstance(secret, bytes):
            raise TypeError(f"secret must be str or bytes, got {type(secret).__name__}")
        if secret == b"":
            raise ValueError("secret must not be empty")
        if (tls_cert is None) != (tls_key is None) and tls_key is not None:
            raise ValueError("tls_key was given without tls_cert")
        if require_client_cert and tls_ca_file is None:
            raise ValueError("require_client_cert=True needs tls_ca_file to verify clients with")
        self.secret = secret
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.tls_ca_file = tls_ca_file
        self.require_client_cert = require_client_cert
        self.implicit = False  # True for Security.default(): see there
        self._server_ctx = None
        self._client_ctx = None

    @classmethod
    def from_files(
        cls,
        secret_file=None,
        tls_cert=None,
        tls_key=None,
        tls_ca_file=None,
        require_client_cert=False,
    ) -> Security:
        """Build from file names, as the CLIs take them (``--secret-file`` etc.).

        The secret file holds the secret; surrounding whitespace is ignored.
        """
        secret = None
        if secret_file is not None:
            try:
                with open(secret_file, "rb") as f:
                    secret = f.read().strip()
            except OSError as e:
                raise ValueError(f"cannot read secret file {secret_file!r}: {e.strerror}") from None
            if not secret:
                raise ValueError(f"secret file {secret_file!r} is empty")
        self = cls(secret, tls_cert, tls_key, tls_ca_file, require_client_cert)
        if self.tls_cert or self.tls_ca_file:
            self.server_context() if self.tls_cert else self.client_context()
        return self

    @classmethod
    def default(cls) -> Security:
        """What ``security=None`` means: the default secret file's secret, if it exists.

        Read at each connection, so a file created by ``dcenter`` after this
        process started is used from then on. Without the file: no secret (and
        no TLS). Pass ``Security()`` explicitly to use no secret whatever exists.

        .. versionadded:: 0.2.0
        """
        path = default_secret_file()
        if not path.exists():
            return cls()
        self = cls.from_files(secret_file=str(path))
        self.implicit = True
        return self

    def __repr__(self) -> str:
        parts = []
        if self.secret is not None:
            parts.append("secret=<hidden>")
        for name in ("tls_cert", "tls_key", "tls_ca_file"):
            if getattr(self, name) is not None:
                parts.append(f"{name}={getattr(self, name)!r}")
        if self.require_client_cert:
            parts.append("require_client_cert=True")
        return f"Security({', '.join(parts)})"

    # -- TLS ---------------------------------------------------------------

    def server_context(self) -> ssl.SSLContext:
        """The SSL context for listening on ``tls://``."""
        if self._server_ctx is None:
            if self.tls_cert is None:
                raise ValueError(
                    "listening on tls:// needs a certificate: pass "
                    "Security(tls_cert=..., tls_key=...) or --tls-cert/--tls-key"
                )
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            _load_chain(ctx, self.tls_cert, self.tls_key)
            if self.tls_ca_file is not None:
                _load_ca(ctx, self.tls_ca_file)
                ctx.verify_mode = (
                    ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_OPTIONAL
                )
            self._server_ctx = ctx
        return self._server_ctx

    def client_context(self) -> ssl.SSLContext:
        """The SSL context for connecting to ``tls://`` addresses."""
        if self._client_ctx is None:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_REQUIRED
            if self.tls_ca_file is not None:
                _load_ca(ctx, self.tls_ca_file)
            if self.tls_cert is not None:
                _load_chain(ctx, self.tls_cert, self.tls_key)
            self._client_ctx = ctx
        return self._client_ctx

    # -- shared secret -----------------------------------------------------

    @staticmethod
    def new_nonce() -> bytes:
        """32 fresh random bytes for one handshake."""
        return os.urandom(32)

    def proof(self, role: str, own_nonce: bytes, peer_nonce: bytes) -> bytes:
        """HMAC proving knowledge of the secret, bound to both fresh nonces.

        The peer's nonce makes a recorded proof useless on a new connection
        (no replay); the role label stops a proof being reflected back.
        """
        assert self.secret is not None
        msg = b"distributed-auth-v1|" + role.encode() + b"|" + peer_nonce + b"|" + own_nonce
        return hmac.new(self.secret, msg, hashlib.sha256).digest()

    def verify(self, proof, role: str, own_nonce: bytes, peer_nonce: bytes) -> bool:
        """Check a proof made by the peer (whose role is ``role``)."""
        if not isinstance(proof, bytes):
            return False
        expected = self.proof(role, peer_nonce, own_nonce)
        return hmac.compare_digest(expected, proof)


def _load_chain(ctx, cert, key):
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"cannot load TLS certificate {cert!r} / key {key!r}: {e}") from None


def _load_ca(ctx, ca):
    try:
        ctx.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"cannot load TLS CA file {ca!r}: {e}") from None
