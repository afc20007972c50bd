"""The dashboard token: derived from the cluster's shared secret.

With a secret, every page but ``/health`` needs the token: once as
``?token=...`` in the URL (it is then kept in a cookie, like Jupyter), or in
an ``Authorization: Bearer ...`` header (Prometheus, curl). The token is an
HMAC of a fixed label with the secret: it opens the dashboard only, it cannot
be turned back into the secret, and ``dcenter`` prints the link with it.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["COOKIE", "dashboard_token"]

COOKIE = "distributed_dashboard_token"


def dashboard_token(secret: bytes | str | None) -> str | None:
    """The token for `secret` (None without a secret).

    >>> len(dashboard_token(b"s3cret")), dashboard_token(None)
    (32, None)
    """
    if secret is None:
        return None
    if isinstance(secret, str):
        secret = secret.encode()
    return hmac.new(secret, b"distributed-dashboard-token", hashlib.sha256).hexdigest()[:32]


def check(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison; True when no token is needed."""
    if expected is None:
        return True
    return isinstance(given, str) and hmac.compare_digest(expected, given)
