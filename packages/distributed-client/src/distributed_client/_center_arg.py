"""What a client connects to when given an address, a cluster object, or nothing.

* an address (``'host:port'``, ``'tcp://host:port'``, ``(host, port)``);
* a cluster object with a ``center_address`` (:class:`LocalCluster`,
  :class:`SSHCluster`): its center, and its ``security`` when the client was
  given none;
* nothing: the configured ``client.address`` (environment variable
  ``DISTRIBUTED_CLIENT__ADDRESS``, or ``[client] address`` in a config file,
  see docs/configuration.md); when that is unset too, a new
  :class:`LocalCluster` that the client owns and closes when it closes.
"""

from __future__ import annotations

from typing import Any

from distributed_core import config

__all__ = ["choose_center", "CONFIG_KEY"]

CONFIG_KEY = "client.address"


def choose_center(center: Any, security: Any, asynchronous: bool) -> tuple[Any, Any, Any]:
    """``(center, security, owned cluster or None)`` for a client's `center` argument.

    An owned LocalCluster of an asynchronous client is not started yet
    (``await`` it); a blocking client's is running.
    """
    if center is None:
        center = config.get(CONFIG_KEY)
    if center is None:
        from .local import LocalCluster

        cluster = LocalCluster(security=security, asynchronous=asynchronous)
        return cluster, security, cluster
    if security is None and isinstance(getattr(center, "center_address", None), str):
        security = getattr(center, "security", None)
    return center, security, None
