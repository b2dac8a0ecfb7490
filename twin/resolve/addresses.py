"""Address classification shared by resolution and analysis.

Which addresses are hospital-internal, which are external endpoints, and
which are not devices at all (multicast, broadcast, unspecified).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

import numpy as np

__all__ = ["AddressPlan", "usable_mac", "in_networks", "VIRTUAL_MAC_PREFIXES"]

# Ranges that are internal even when no segment lists them: RFC 1918,
# shared address space (RFC 6598), link-local, IPv6 unique-local. The
# documentation ranges (192.0.2.0/24 and friends) are deliberately absent,
# because sample networks use them for external endpoints.
DEFAULT_INTERNAL = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    )
)

# MAC prefixes that several devices share (VRRP, HSRP, GLBP virtual router
# addresses), so they never identify one device.
VIRTUAL_MAC_PREFIXES = (
    "00:00:5e:00:01:",
    "00:00:5e:00:02:",
    "00:00:0c:07:ac:",
    "00:00:0c:9f:f",
    "00:07:b4:00:",
)


def usable_mac(mac: str | None) -> bool:
    """Return True when ``mac`` can identify one device.

    >>> usable_mac("00:1b:2c:3d:4e:5f")
    True
    >>> usable_mac("01:00:5e:00:00:01"), usable_mac("00:00:00:00:00:00"), usable_mac("00:00:5e:00:01:07")
    (False, False, False)
    """
    if not mac or len(mac) != 17:
        return False
    if mac in ("00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"):
        return False
    if int(mac[:2], 16) & 1:
        return False
    return not mac.startswith(VIRTUAL_MAC_PREFIXES)


def in_networks(addresses, networks, exact=frozenset()) -> "np.ndarray":
    """Return a bool mask of addresses inside any of ``networks``.

    ``exact`` contains lower-case texts that match as they are (domain names in
    an allowlist). Text that is not an IP address matches only through it.

    >>> in_networks(["10.0.0.5", "192.0.2.1", "bad"], [ipaddress.ip_network("10.0.0.0/8")]).tolist()
    [True, False, False]
    """
    values = [str(a) for a in addresses]
    out = np.zeros(len(values), dtype=bool)
    for i, text in enumerate(values):
        if text.lower() in exact:
            out[i] = True
            continue
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            continue
        out[i] = any(addr.version == net.version and addr in net for net in networks)
    return out


class AddressPlan:
    """Internal prefixes of a site and a fast classifier of addresses.

    Parameters
    ----------
    segment_cidrs : iterable of str
        Prefixes of the site's segments.
    internal_cidrs : iterable of str
        Extra internal prefixes from the site configuration.
    """

    def __init__(self, segment_cidrs=(), internal_cidrs=()):
        nets = [ipaddress.ip_network(c, strict=False) for c in list(segment_cidrs) + list(internal_cidrs)]
        self.segment_networks = [ipaddress.ip_network(c, strict=False) for c in segment_cidrs]
        # Collapsing merges the hundreds of segment prefixes that sit inside
        # 10.0.0.0/8, so each lookup tests a handful of networks.
        merged = list(nets) + list(DEFAULT_INTERNAL)
        self.internal = tuple(
            list(ipaddress.collapse_addresses(n for n in merged if n.version == 4))
            + list(ipaddress.collapse_addresses(n for n in merged if n.version == 6))
        )
        self.broadcasts = {
            str(n.broadcast_address) for n in self.segment_networks if n.version == 4 and n.prefixlen < 31
        }
        self._kind = lru_cache(maxsize=1_000_000)(self._classify)

    def kind(self, address: str) -> str:
        """Return ``internal``, ``external`` or ``ignore`` for an IP address text."""
        return self._kind(address)

    def _classify(self, address: str) -> str:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return "ignore"
        if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.is_reserved:
            return "ignore"
        if ip.version == 4 and (address == "255.255.255.255" or address in self.broadcasts):
            return "ignore"
        for net in self.internal:
            if ip.version == net.version and ip in net:
                return "internal"
        return "external"
