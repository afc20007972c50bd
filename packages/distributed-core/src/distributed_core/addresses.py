"""Parse and format ``tcp://host:port`` / ``tls://host:port`` addresses."""

from __future__ import annotations

__all__ = ["normalize_address", "parse_address", "unparse_address"]

SCHEMES = ("tcp", "tls")


def parse_address(address, default_scheme: str = "tcp") -> tuple[str, str, int]:
    """Split an address into ``(scheme, host, port)``.

    Accepts ``'host:port'``, ``'tcp://host:port'``, ``'tls://host:port'``,
    ``'[::1]:port'`` and ``(host, port)`` tuples or lists.

    >>> parse_address("tls://10.0.0.1:8787")
    ('tls', '10.0.0.1', 8787)
    >>> parse_address(("127.0.0.1", 8787))
    ('tcp', '127.0.0.1', 8787)
    """
    if isinstance(address, (tuple, list)):
        if len(address) != 2:
            raise ValueError(f"address tuple must be (host, port), got {address!r}")
        host, port = address
        return default_scheme, str(host), _port(port, address)
    if not isinstance(address, str):
        raise TypeError(
            f"address must be a string like 'tcp://host:port' or a (host, port) tuple, "
            f"got {type(address).__name__}: {address!r}"
        )
    scheme = default_scheme
    rest = address.strip()
    if "://" in rest:
        scheme, rest = rest.split("://", 1)
        if scheme not in SCHEMES:
            raise ValueError(
                f"unknown scheme {scheme!r} in address {address!r}; use one of "
                + ", ".join(s + "://" for s in SCHEMES)
            )
    if rest.startswith("["):
        host, sep, port = rest[1:].partition("]:")
        if not sep:
            raise ValueError(f"bad IPv6 address {address!r}; expected '[host]:port'")
    else:
        host, sep, port = rest.rpartition(":")
        if not sep or not host:
            raise ValueError(f"address {address!r} has no port; expected 'host:port'")
    return scheme, host, _port(port, address)


def _port(port, address) -> int:
    try:
        p = int(port)
    except (TypeError, ValueError):
        raise ValueError(f"bad port {port!r} in address {address!r}") from None
    if not 0 <= p <= 65535:
        raise ValueError(f"port {p} out of range 0-65535 in address {address!r}")
    return p


def unparse_address(scheme: str, host: str, port: int) -> str:
    """Format ``(scheme, host, port)`` back into ``'scheme://host:port'``."""
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def normalize_address(address, default_scheme: str = "tcp") -> str:
    """Return the canonical ``'scheme://host:port'`` form of any accepted address."""
    return unparse_address(*parse_address(address, default_scheme))
