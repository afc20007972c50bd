"""Which local IP address other hosts can use to reach this one.

A node that listens on all interfaces (``0.0.0.0`` or ``::``) must still
print and register one address that the rest of the cluster can connect to.
It is taken from the routing table and the interface list, never by
connecting anywhere (no packet is sent) and never from the host name:

1. the non-loopback address of the interface that holds the default route
   (``/proc/net/route``, ``/proc/net/ipv6_route``; lowest metric first);
2. otherwise the first non-loopback, non-link-local address of any interface
   (a host on a private network with no default route);
3. otherwise loopback (``127.0.0.1`` / ``::1``): the machine has no other
   interface.

The parsing functions take the table text and the interface table
(``psutil.net_if_addrs()``) as arguments, so they are tested with sample
tables; :func:`default_ip` reads the live ones.

>>> route = (
...     "Iface\\tDestination\\tGateway \\tFlags\\tRefCnt\\tUse\\tMetric\\tMask\\n"
...     "eth0\\t00000000\\t0101A8C0\\t0003\\t0\\t0\\t100\\t00000000\\n"
... )
>>> default_route_interfaces(route)
['eth0']
>>> pick_ip({"lo": ["127.0.0.1"], "eth0": ["192.168.1.7"]}, ["eth0"])
'192.168.1.7'

Added after 0.1.0 (issue 8), replacing the host-name lookup ``Server`` used.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping

__all__ = [
    "default_ip",
    "default_route_interfaces",
    "default_route_interfaces_v6",
    "interface_ips",
    "pick_ip",
]

_RTF_UP = 0x0001
_RTF_REJECT = 0x0200


def default_route_interfaces(route_text: str) -> list[str]:
    """Interfaces holding an IPv4 default route in ``/proc/net/route`` text.

    Lowest metric first; routes that are down are skipped. Malformed lines
    are ignored.
    """
    found = []
    for line in route_text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        iface, dest, _gateway, flags, _ref, _use, metric, mask = fields[:8]
        try:
            if int(dest, 16) or int(mask, 16) or not int(flags, 16) & _RTF_UP:
                continue
            found.append((int(metric), len(found), iface))
        except ValueError:
            continue
    return [iface for _, _, iface in sorted(found)]


def default_route_interfaces_v6(route_text: str) -> list[str]:
    """Interfaces holding an IPv6 default route in ``/proc/net/ipv6_route`` text.

    Lowest metric first; ``reject`` routes (the kernel's "unreachable"
    default on ``lo``) and routes that are down are skipped.
    """
    found = []
    for line in route_text.splitlines():
        fields = line.split()
        if len(fields) < 10:
            continue
        dest, prefix, _src, _src_prefix, _hop, metric, _ref, _use, flags, iface = fields[:10]
        try:
            if int(dest, 16) or int(prefix, 16):
                continue
            bits = int(flags, 16)
            if not bits & _RTF_UP or bits & _RTF_REJECT or iface == "lo":
                continue
            found.append((int(metric, 16), len(found), iface))
        except ValueError:
            continue
    return [iface for _, _, iface in sorted(found)]


def interface_ips(net_if_addrs: Mapping, family: int = socket.AF_INET) -> dict[str, list[str]]:
    """``{interface: [ip, ...]}`` of one address family from ``psutil.net_if_addrs()``.

    The ``%scope`` suffix of IPv6 link-local addresses is dropped.
    """
    result: dict[str, list[str]] = {}
    for iface, addrs in net_if_addrs.items():
        ips = [a.address.split("%", 1)[0] for a in addrs if a.family == family]
        if ips:
            result[iface] = ips
    return result


def _usable(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return not (addr.is_loopback or addr.is_link_local or addr.is_unspecified)


def pick_ip(
    ips: Mapping[str, Iterable[str]], route_interfaces: Iterable[str], v6: bool = False
) -> str:
    """The address to advertise, from ``{interface: [ip]}`` and the default-route interfaces.

    The first usable (not loopback, not link-local) address of the first
    default-route interface that has one; else the first usable address of
    any interface (sorted by name, for a stable answer); else loopback.

    >>> pick_ip({"lo": ["127.0.0.1"], "br0": ["10.0.0.2"]}, [])
    '10.0.0.2'
    >>> pick_ip({"lo": ["127.0.0.1"]}, [])
    '127.0.0.1'
    """
    for iface in route_interfaces:
        for ip in ips.get(iface, ()):
            if _usable(ip):
                return ip
    for iface in sorted(ips):
        for ip in ips[iface]:
            if _usable(ip):
                return ip
    return "::1" if v6 else "127.0.0.1"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:  # not Linux, or /proc not mounted: no routing information
        return ""


def default_ip(v6: bool = False) -> str:
    """The local IP other hosts can use: see the module docstring for the order.

    Reads ``/proc/net/route`` (or ``/proc/net/ipv6_route`` with ``v6``) and
    ``psutil.net_if_addrs()``; sends nothing and resolves no name.
    """
    import psutil

    family = socket.AF_INET6 if v6 else socket.AF_INET
    ips = interface_ips(psutil.net_if_addrs(), family)
    if v6:
        routes = default_route_interfaces_v6(_read("/proc/net/ipv6_route"))
    else:
        routes = default_route_interfaces(_read("/proc/net/route"))
    return pick_ip(ips, routes, v6=v6)
