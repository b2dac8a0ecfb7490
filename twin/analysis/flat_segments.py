"""Segments that mix medical devices with general IT devices.

A device counts as medical or IT by its ``role`` (``medical`` or ``it``),
or, when the role is empty, by its class (see
:data:`twin.analysis._common.MEDICAL_CLASSES` and ``IT_CLASSES``). Network,
IoT, building and unclassified devices are counted as ``other_devices`` and
never make a segment flat on their own.

Severity
--------
- ``critical``: a life-critical medical device shares the segment with at
  least as many IT devices as there are medical devices.
- ``high``: any life-critical medical device shares the segment with IT.
- ``medium``: every other mixed segment.

What it cannot see
------------------
Devices without a segment are not counted. Host firewalls or private VLANs
inside one segment are invisible to the twin, so a segment reported flat
may still be filtered on the hosts themselves.
"""

from __future__ import annotations

import networkx as nx
import pandas as pd

from twin.analysis._common import device_view, finalise
from twin.model.site import SiteConfig
from twin.model.twin import Twin

__all__ = ["COLUMNS", "find", "subgraph", "count"]

COLUMNS = [
    "segment_id",
    "zone",
    "medical_devices",
    "it_devices",
    "other_devices",
    "medical_classes",
    "it_classes",
    "severity",
    "evidence",
]


def find(twin: Twin, site: SiteConfig, **params) -> pd.DataFrame:
    """Return one row per segment holding both medical and IT devices.

    Returns
    -------
    DataFrame
        Columns :data:`COLUMNS`, most severe first.
    """
    devices = device_view(twin, site)
    devices = devices[devices["segment_id"].notna()]
    rows = []
    for segment_id, members in devices.groupby("segment_id", sort=True):
        medical = members[members["role"] == "medical"]
        it = members[members["role"] == "it"]
        if medical.empty or it.empty:
            continue
        life = medical["criticality"].eq("life_critical").any()
        if life and len(it) >= len(medical):
            severity = "critical"
        elif life:
            severity = "high"
        else:
            severity = "medium"
        medical_classes = sorted(medical["device_class"].unique())
        it_classes = sorted(it["device_class"].unique())
        rows.append(
            {
                "segment_id": segment_id,
                "zone": members["zone"].iloc[0],
                "medical_devices": len(medical),
                "it_devices": len(it),
                "other_devices": len(members) - len(medical) - len(it),
                "medical_classes": medical_classes,
                "it_classes": it_classes,
                "severity": severity,
                "evidence": f"{len(medical)} medical ({', '.join(medical_classes)}) and {len(it)} IT "
                f"({', '.join(it_classes)}) devices share segment {segment_id}",
            }
        )
    return finalise(rows, COLUMNS, ["segment_id"])


def subgraph(twin: Twin, site: SiteConfig, **params) -> nx.DiGraph:
    """Return the flat segments with their medical and IT member devices (edge device -> segment)."""
    graph = nx.DiGraph()
    found = find(twin, site, **params)
    if found.empty:
        return graph
    devices = device_view(twin, site)
    members = devices[devices["segment_id"].isin(found["segment_id"]) & devices["role"].isin(["medical", "it"])]
    for row in found.itertuples(index=False):
        graph.add_node(f"segment:{row.segment_id}", kind="segment", segment_id=row.segment_id, zone=row.zone, severity=row.severity)
    for dev in members.itertuples(index=False):
        graph.add_node(dev.device_id, kind="device", hostname=dev.hostname, ip=dev.ip, device_class=dev.device_class, role=dev.role)
        graph.add_edge(dev.device_id, f"segment:{dev.segment_id}", relationship="IN_SEGMENT")
    return graph


def count(twin: Twin, site: SiteConfig) -> int:
    """Return the number of flat segments."""
    return len(find(twin, site))
