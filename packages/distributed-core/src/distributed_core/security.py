"""TLS contexts and the shared secret, passed as ``security=`` everywhere."""

from __future__ import annotations

import hashlib
import hmac
import os
import ssl

__all__ = ["Security"]


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
