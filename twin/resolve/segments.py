"""Segment assignment: which segment each device sits in.

A device is assigned by the most specific segment prefix containing its
primary IP address. When no prefix contains it, the VLAN of the switch port
it is attached to decides. Devices that match neither have no segment.
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pandas as pd

from twin.model.site import SiteConfig

__all__ = ["assign_segments", "segments_table"]


def segments_table(site: SiteConfig) -> pd.DataFrame:
    """Return the Segment rows declared by the site configuration."""
    rows = [
        {
            "segment_id": seg.id,
            "name": seg.name or seg.id,
            "cidrs": list(seg.cidrs),
            "vlan_ids": [str(v) for v in seg.vlan_ids],
            "zone": seg.zone,
            "site": site.site.name,
            "building": seg.building,
            "designated_classes": list(seg.designated_classes),
            "trust": seg.trust,
        }
        for seg in site.segments
    ]
    return pd.DataFrame(rows, columns=["segment_id", "name", "cidrs", "vlan_ids", "zone", "site", "building", "designated_classes", "trust"])


def _ipv4_int(text: str | None) -> int:
    if not text:
        return -1
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return -1
    return int(ip) if ip.version == 4 else -1


def assign_segments(primary_ips: list[str | None], port_vlans: list[int | None], site: SiteConfig) -> tuple[list, list]:
    """Return (segment_id, evidence) per device.

    Parameters
    ----------
    primary_ips : list of str or None
        Primary IP address of each device.
    port_vlans : list of int or None
        VLAN of the switch port each device is attached to, when known.
    site : SiteConfig

    Notes
    -----
    IPv4 matching is vectorised: one pass over all devices per prefix, most
    specific prefix first, so 100,000 devices and a few hundred prefixes
    take well under a second. IPv6 prefixes are matched one device at a time.
    """
    n = len(primary_ips)
    segment = np.full(n, None, dtype=object)
    evidence = np.full(n, None, dtype=object)
    ints = np.array([_ipv4_int(ip) for ip in primary_ips], dtype=np.int64)

    prefixes = []
    for seg in site.segments:
        for cidr in seg.cidrs:
            net = ipaddress.ip_network(cidr, strict=False)
            prefixes.append((net.prefixlen, net, seg.id))
    prefixes.sort(key=lambda p: -p[0])

    for prefixlen, net, seg_id in prefixes:
        if net.version == 4:
            mask = ((1 << 32) - 1) ^ ((1 << (32 - prefixlen)) - 1)
            hit = (ints >= 0) & ((ints & mask) == int(net.network_address)) & (segment == None)  # noqa: E711
            segment[hit] = seg_id
            evidence[hit] = "cidr"
        else:
            for i, ip in enumerate(primary_ips):
                if segment[i] is None and ip and ":" in ip and ipaddress.ip_address(ip) in net:
                    segment[i] = seg_id
                    evidence[i] = "cidr"

    by_vlan = {}
    for seg in site.segments:
        for vlan in seg.vlan_ids:
            by_vlan.setdefault(int(vlan), seg.id)
    if by_vlan:
        for i, vlan in enumerate(port_vlans):
            if segment[i] is None and vlan is not None and int(vlan) in by_vlan:
                segment[i] = by_vlan[int(vlan)]
                evidence[i] = "vlan"
    return segment.tolist(), evidence.tolist()
