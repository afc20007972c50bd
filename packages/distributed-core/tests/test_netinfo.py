"""netinfo: the advertised address comes from routing tables, tested with sample tables."""

from __future__ import annotations

import ipaddress
import socket
from collections import namedtuple

from distributed_core import default_ip
from distributed_core.netinfo import (
    default_route_interfaces,
    default_route_interfaces_v6,
    interface_ips,
    pick_ip,
)

HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"

# a laptop: wifi default (metric 600), docker bridge, a VPN default with a lower metric
ROUTE = HEADER + (
    "wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"
    "wlan0\t0001A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0\n"
    "docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
    "tun0\t00000000\t00000000\t0001\t0\t0\t50\t00000000\t0\t0\t0\n"
    "down0\t00000000\t0101A8C0\t0002\t0\t0\t1\t00000000\t0\t0\t0\n"
    "garbage line\n"
)

# this container's table: a ULA default via eth0, the kernel's unreachable default on lo
ROUTE6 = (
    "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n"
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0\n"
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n"
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000010 00000001 00000000 00200201     rej0\n"
)

Addr = namedtuple("Addr", "family address netmask broadcast ptp")


def test_ipv4_default_route_interfaces_by_metric():
    assert default_route_interfaces(ROUTE) == ["tun0", "wlan0"]


def test_ipv4_no_default_route():
    table = HEADER + "br0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
    assert default_route_interfaces(table) == []
    assert default_route_interfaces("") == []


def test_ipv6_default_route_skips_reject_and_lo():
    assert default_route_interfaces_v6(ROUTE6) == ["eth0"]
    assert default_route_interfaces_v6("") == []
    assert default_route_interfaces_v6("not a table\n") == []


def test_interface_ips_by_family_without_scope():
    table = {
        "lo": [Addr(socket.AF_INET, "127.0.0.1", None, None, None)],
        "eth0": [
            Addr(socket.AF_INET, "10.1.2.3", None, None, None),
            Addr(socket.AF_INET6, "fe80::1%eth0", None, None, None),
            Addr(socket.AF_INET6, "fd00::2", None, None, None),
            Addr(getattr(socket, "AF_PACKET", 17), "aa:bb:cc:dd:ee:ff", None, None, None),
        ],
    }
    assert interface_ips(table) == {"lo": ["127.0.0.1"], "eth0": ["10.1.2.3"]}
    assert interface_ips(table, socket.AF_INET6) == {"eth0": ["fe80::1", "fd00::2"]}


def test_pick_prefers_default_route_interface():
    ips = {
        "lo": ["127.0.0.1"],
        "docker0": ["172.17.0.1"],
        "wlan0": ["169.254.3.3", "192.168.1.20"],
    }
    assert pick_ip(ips, ["tun0", "wlan0"]) == "192.168.1.20"  # tun0 has no address


def test_pick_without_default_route_takes_any_non_loopback():
    # a simulated host on a bridge: a private /24 and no default route
    assert pick_ip({"lo": ["127.0.0.1"], "veth1": ["10.77.0.3"]}, []) == "10.77.0.3"


def test_pick_loopback_only_when_nothing_else():
    assert pick_ip({"lo": ["127.0.0.1"]}, []) == "127.0.0.1"
    assert pick_ip({}, []) == "127.0.0.1"
    assert pick_ip({"lo": ["::1"], "eth0": ["fe80::1"]}, ["eth0"], v6=True) == "::1"
    assert pick_ip({"eth0": ["fe80::1", "fd00::2"]}, ["eth0"], v6=True) == "fd00::2"


def test_live_default_ip_is_a_local_address():
    # reads this machine's tables; sends nothing
    for v6 in (False, True):
        ip = ipaddress.ip_address(default_ip(v6=v6))
        assert ip.version == (6 if v6 else 4)
        assert not ip.is_unspecified
