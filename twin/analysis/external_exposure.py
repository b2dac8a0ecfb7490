"""Devices talking to, or reached from, External endpoints outside the allowlist.

``site.external.allowlist`` lists expected External endpoints as addresses,
prefixes or domain names. Every communication between a device and an
External endpoint that is not on the list is reported: ``outbound`` when the
device started it, ``inbound`` when the External endpoint did.

Severity
--------
- ``critical``: inbound to a medical or life-critical device.
- ``high``: any other inbound communication, or outbound from a medical
  or life-critical device.
- ``medium``: outbound from any other device.
- ``info``: outbound from a device in a guest zone, where browsing the
  internet is the purpose of the segment.

What it cannot see
------------------
Only flows a flow source saw. Traffic through a proxy shows the proxy as
the device and the proxy's upstream, not the client; NAT hides inbound
exposure that no flow has used yet. Addresses of the site's internal prefixes
that the resolver left as External are reported as such.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd

from twin.analysis._common import device_view, finalise, in_address_list
from twin.model.site import SiteConfig
from twin.model.twin import Twin

__all__ = ["COLUMNS", "GUEST_ZONES", "find", "subgraph", "count"]

COLUMNS = [
    "device_id",
    "hostname",
    "ip",
    "segment_id",
    "device_class",
    "direction",
    "external",
    "proto",
    "dst_port",
    "flows",
    "bytes",
    "severity",
    "evidence",
]

# Zones whose outbound internet traffic is expected and reported at info.
GUEST_ZONES = frozenset({"guest"})


def find(twin: Twin, site: SiteConfig, **params) -> pd.DataFrame:
    """Return one row per (device, direction, External endpoint, protocol, port).

    Returns
    -------
    DataFrame
        Columns :data:`COLUMNS`, most severe first.
    """
    comm = twin.communications
    if comm.empty or "src_kind" not in comm or "dst_kind" not in comm:
        return finalise([], COLUMNS, ["device_id"])
    outbound = comm[(comm["dst_kind"].astype(object) == "external") & (comm["src_kind"].astype(object) != "external")]
    inbound = comm[(comm["src_kind"].astype(object) == "external") & (comm["dst_kind"].astype(object) != "external")]
    parts = [
        pd.DataFrame({"device_id": outbound["src_id"].astype(str).to_numpy(), "direction": "outbound", "external": outbound["dst_id"].astype(str).to_numpy(), "proto": outbound["proto"].to_numpy(dtype=object), "dst_port": outbound["dst_port"].to_numpy(), "flows": outbound["flows"].to_numpy(), "bytes": outbound["bytes"].to_numpy()}),
        pd.DataFrame({"device_id": inbound["dst_id"].astype(str).to_numpy(), "direction": "inbound", "external": inbound["src_id"].astype(str).to_numpy(), "proto": inbound["proto"].to_numpy(dtype=object), "dst_port": inbound["dst_port"].to_numpy(), "flows": inbound["flows"].to_numpy(), "bytes": inbound["bytes"].to_numpy()}),
    ]
    rows = pd.concat([p for p in parts if not p.empty], ignore_index=True) if any(not p.empty for p in parts) else pd.DataFrame()
    if rows.empty:
        return finalise([], COLUMNS, ["device_id"])
    unique_ext = pd.Series(rows["external"].unique())
    allowed = set(unique_ext[in_address_list(unique_ext, list(site.external.allowlist))])
    rows = rows[~rows["external"].isin(allowed)]
    if rows.empty:
        return finalise([], COLUMNS, ["device_id"])
    rows = rows.groupby(["device_id", "direction", "external", "proto", "dst_port"], as_index=False, sort=False).agg(flows=("flows", "sum"), bytes=("bytes", "sum"))
    devices = device_view(twin, site)
    info = devices.reindex(rows["device_id"].to_numpy())
    rows["hostname"] = info["hostname"].to_numpy(dtype=object)
    labels = info["label"].to_numpy(dtype=object)
    rows["ip"] = info["ip"].to_numpy(dtype=object)
    rows["segment_id"] = info["segment_id"].to_numpy(dtype=object)
    rows["device_class"] = info["device_class"].fillna("unknown").to_numpy(dtype=object)
    sensitive = ((info["role"] == "medical") | (info["criticality"] == "life_critical")).to_numpy()
    guest = info["zone"].isin(GUEST_ZONES).to_numpy()
    inbound_mask = (rows["direction"] == "inbound").to_numpy()
    rows["severity"] = np.select(
        [inbound_mask & sensitive, inbound_mask, sensitive, guest],
        ["critical", "high", "high", "info"],
        default="medium",
    )
    rows["evidence"] = [
        f"{label if isinstance(label, str) else d} {'sent' if direction == 'outbound' else 'received'} {f} flow{'s' if f != 1 else ''} "
        f"{'to' if direction == 'outbound' else 'from'} {e} {p}/{port}, which is not on the allowlist"
        for label, d, direction, e, p, port, f in zip(labels, rows["device_id"], rows["direction"], rows["external"], rows["proto"], rows["dst_port"], rows["flows"], strict=True)
    ]
    return finalise(rows, COLUMNS, ["device_id", "direction", "external", "proto", "dst_port"])


def subgraph(twin: Twin, site: SiteConfig, **params) -> nx.DiGraph:
    """Return devices and External endpoints, with edges in the direction of the traffic."""
    graph = nx.DiGraph()
    for row in find(twin, site, **params).itertuples(index=False):
        graph.add_node(row.device_id, kind="device", hostname=row.hostname, ip=row.ip, segment_id=row.segment_id, device_class=row.device_class)
        graph.add_node(row.external, kind="external", address=row.external)
        u, v = (row.device_id, row.external) if row.direction == "outbound" else (row.external, row.device_id)
        if graph.has_edge(u, v):
            graph.edges[u, v]["services"].append(f"{row.proto}/{row.dst_port}")
        else:
            graph.add_edge(u, v, services=[f"{row.proto}/{row.dst_port}"], direction=row.direction, severity=row.severity)
    return graph


def count(twin: Twin, site: SiteConfig) -> int:
    """Return the number of exposure findings."""
    return len(find(twin, site))
