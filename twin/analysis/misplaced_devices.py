"""Devices whose class is not designated for the segment they sit in.

A segment with an empty ``designated_classes`` list accepts every class.

Severity
--------
- ``critical``: a medical device in a guest or DMZ zone, or in a segment
  with trust ``untrusted``.
- ``high``: a medical device in any other non-clinical zone (IT, building,
  IoT), or a life-critical device anywhere it is not designated.
- ``medium``: any other misplaced device with criticality ``high``, or a
  non-medical device in a clinical zone.
- ``low``: every other misplaced device.
- ``info``: a device of class ``unknown``; the twin could not classify it,
  so the finding asks for a look, not a move.

What it cannot see
------------------
Devices without a segment (their addresses fit no configured segment) are
not reported here. The answer is only as good as the classification: a
misclassified device is judged by its wrong class.
"""

from __future__ import annotations

import networkx as nx
import pandas as pd

from twin.analysis._common import device_view, finalise, segment_table
from twin.model.site import SiteConfig
from twin.model.twin import Twin

__all__ = ["COLUMNS", "CLINICAL_ZONES", "EXPOSED_ZONES", "find", "subgraph", "count"]

COLUMNS = [
    "device_id",
    "hostname",
    "ip",
    "device_class",
    "segment_id",
    "zone",
    "designated_classes",
    "severity",
    "evidence",
]

# Zones where medical devices belong.
CLINICAL_ZONES = frozenset({"clinical", "medical", "imaging", "lab"})

# Zones open to untrusted users or the internet.
EXPOSED_ZONES = frozenset({"guest", "dmz", "public", "internet"})


def _severity(row) -> str:
    if row.device_class == "unknown":
        return "info"
    medical = row.role == "medical"
    if medical and (row.zone in EXPOSED_ZONES or row.trust == "untrusted"):
        return "critical"
    if medical and row.zone not in CLINICAL_ZONES:
        return "high"
    if row.criticality == "life_critical":
        return "high"
    if row.criticality == "high" or (not medical and row.zone in CLINICAL_ZONES):
        return "medium"
    return "low"


def find(twin: Twin, site: SiteConfig, **params) -> pd.DataFrame:
    """Return one row per misplaced device.

    Parameters
    ----------
    twin : Twin
    site : SiteConfig
        Segments and their designated classes.

    Returns
    -------
    DataFrame
        Columns :data:`COLUMNS`, most severe first.
    """
    devices = device_view(twin, site)
    segments = segment_table(twin, site)
    if devices.empty or segments.empty:
        return finalise([], COLUMNS, ["device_id"])
    placed = devices[devices["segment_id"].isin(segments.index)]
    joined = placed.join(segments[["designated_classes", "trust"]], on="segment_id")
    designated = joined["designated_classes"]
    misplaced = [
        bool(classes) and cls not in classes for cls, classes in zip(joined["device_class"], designated, strict=True)
    ]
    found = joined[misplaced].copy()
    if found.empty:
        return finalise([], COLUMNS, ["device_id"])
    found["severity"] = [_severity(row) for row in found.itertuples(index=False)]
    found["evidence"] = [
        f"{row.label} ({row.device_class}) is in segment {row.segment_id} (zone {row.zone}), which is designated for "
        f"{', '.join(row.designated_classes)}"
        for row in found.itertuples(index=False)
    ]
    found["designated_classes"] = [list(v) for v in found["designated_classes"]]
    return finalise(found, COLUMNS, ["segment_id", "device_id"])


def subgraph(twin: Twin, site: SiteConfig, **params) -> nx.DiGraph:
    """Return misplaced devices linked to their segments (edge device -> segment)."""
    graph = nx.DiGraph()
    for row in find(twin, site, **params).itertuples(index=False):
        graph.add_node(row.device_id, kind="device", hostname=row.hostname, ip=row.ip, device_class=row.device_class, severity=row.severity)
        graph.add_node(f"segment:{row.segment_id}", kind="segment", segment_id=row.segment_id, zone=row.zone)
        graph.add_edge(row.device_id, f"segment:{row.segment_id}", relationship="IN_SEGMENT", evidence=row.evidence)
    return graph


def count(twin: Twin, site: SiteConfig) -> int:
    """Return the number of misplaced devices."""
    return len(find(twin, site))
