"""Addresses in settings: whether a host stays on this machine, and lists of networks
(trusted proxies, allowed clients) read from text, for both the edge and the cloud."""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Network, IPv6Network

LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")


def is_loopback_host(host: str) -> bool:
    """Whether a bind address or host name stays on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_networks(entries: list[str]) -> list[IPv4Network | IPv6Network]:
    """Addresses or CIDRs (`10.0.0.5`, `10.0.0.0/24`, `::1`); ValueError naming a bad one."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as error:
            raise ValueError(f"{entry!r} is not an IP address or CIDR: {error}") from error
    return networks
