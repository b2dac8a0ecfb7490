"""Observed communications that the segmentation policy denies, with the deciding rule.

Each row is one aggregated communication (source, destination, protocol,
destination port) that :class:`twin.policy.engine.PolicyEngine` denies,
either by an explicit deny rule or by a default (``default:inter-segment``,
``default:intra-segment``, ``default:internet``).

Severity
--------
- ``critical``: the destination is a life-critical device.
- ``high``: the destination has criticality ``high``, or the source is an
  External endpoint (inbound from the internet).
- ``medium``: any other communication between different segments or to
  the internet.
- ``low``: a denied communication inside one segment.

What it cannot see
------------------
Only traffic that a flow source saw: flows that crossed no exporter, or
were sampled away, are missing. A denied flow may be one a firewall already
dropped (the exporter saw the attempt, not a session). Communications
between two endpoints that the resolver could not tie to a device are
evaluated as an unknown device that only ``any`` selectors match.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from twin.analysis._common import device_view, finalise
from twin.model.site import SiteConfig
from twin.model.twin import Twin
from twin.policy.engine import PolicyEngine

__all__ = ["COLUMNS", "find", "subgraph", "count", "denied"]

COLUMNS = [
    "src_id",
    "src_hostname",
    "src_ip",
    "src_segment",
    "dst_id",
    "dst_hostname",
    "dst_ip",
    "dst_segment",
    "proto",
    "dst_port",
    "flows",
    "bytes",
    "first_seen",
    "last_seen",
    "rule",
    "severity",
    "evidence",
]


def denied(twin: Twin, site: SiteConfig, engine: PolicyEngine | None = None) -> pd.DataFrame:
    """Return the decided communications that the policy denies (all communication columns kept)."""
    engine = engine or PolicyEngine(site)
    comm = twin.communications
    if comm.empty:
        return comm.assign(action=pd.Series(dtype=object), rule=pd.Series(dtype=object), rule_index=pd.Series(dtype="int64"))
    decided = engine.decide(comm, twin)
    return decided[decided["action"] == "deny"]


def _endpoint_columns(ids: pd.Series, kinds: pd.Series, devices: pd.DataFrame) -> dict[str, np.ndarray]:
    """Return hostname, ip and segment per endpoint; External endpoints get their address and ``internet``."""
    text = ids.astype(str).to_numpy(dtype=object)
    pos = pd.Index(devices["device_id"]).get_indexer(text)
    is_ext = (kinds.astype(object) == "external").to_numpy()
    found = pos >= 0
    out = {}
    for column in ("hostname", "ip", "segment_id", "criticality", "label"):
        values = np.full(len(text), None, dtype=object)
        values[found] = devices[column].to_numpy(dtype=object)[pos[found]]
        out[column] = values
    out["ip"][is_ext] = text[is_ext]
    out["segment_id"][is_ext] = "internet"
    out["hostname"][is_ext] = None
    out["label"][is_ext] = text[is_ext]
    return out


def _join(*parts) -> np.ndarray:
    """Concatenate string columns element-wise in C (pyarrow), nulls as empty text."""
    arrays = [pa.array(p, type=pa.string()) if not isinstance(p, str) else p for p in parts]
    arrays = [pc.fill_null(a, "") if not isinstance(a, str) else a for a in arrays]
    return np.asarray(pc.binary_join_element_wise(*arrays, "").to_numpy(zero_copy_only=False), dtype=object)


def find(twin: Twin, site: SiteConfig, engine: PolicyEngine | None = None, **params) -> pd.DataFrame:
    """Return one row per denied communication.

    Parameters
    ----------
    twin : Twin
    site : SiteConfig
    engine : PolicyEngine, optional
        Engine to decide with, for example one built with a proposed policy.

    Returns
    -------
    DataFrame
        Columns :data:`COLUMNS`, most severe first. For External endpoints
        the id and IP columns hold the address and the segment column
        ``internet``.
    """
    rows = denied(twin, site, engine)
    if rows.empty:
        return finalise([], COLUMNS, ["src_id"])
    devices = device_view(twin, site)
    src_kind = rows["src_kind"] if "src_kind" in rows else pd.Series("device", index=rows.index)
    dst_kind = rows["dst_kind"] if "dst_kind" in rows else pd.Series("device", index=rows.index)
    src = _endpoint_columns(rows["src_id"], src_kind, devices)
    dst = _endpoint_columns(rows["dst_id"], dst_kind, devices)
    out = pd.DataFrame(
        {
            "src_id": rows["src_id"].astype(str).to_numpy(dtype=object),
            "src_hostname": src["hostname"],
            "src_ip": src["ip"],
            "src_segment": src["segment_id"],
            "dst_id": rows["dst_id"].astype(str).to_numpy(dtype=object),
            "dst_hostname": dst["hostname"],
            "dst_ip": dst["ip"],
            "dst_segment": dst["segment_id"],
            "proto": rows["proto"].to_numpy(dtype=object),
            "dst_port": pd.to_numeric(rows["dst_port"], errors="coerce").fillna(0).astype("int64").to_numpy(),
            "flows": rows["flows"].to_numpy() if "flows" in rows else 0,
            "bytes": rows["bytes"].to_numpy() if "bytes" in rows else 0,
            "first_seen": rows["first_seen"].to_numpy() if "first_seen" in rows else None,
            "last_seen": rows["last_seen"].to_numpy() if "last_seen" in rows else None,
            "rule": rows["rule"].to_numpy(dtype=object),
        }
    )
    dst_crit = dst["criticality"]
    from_internet = (src_kind.astype(object) == "external").to_numpy()
    same = (out["src_segment"].to_numpy(dtype=object) == out["dst_segment"].to_numpy(dtype=object)) & pd.notna(out["src_segment"]).to_numpy()
    intra = (out["rule"] == "default:intra-segment").to_numpy() | same
    out["severity"] = np.select(
        [dst_crit == "life_critical", (dst_crit == "high") | from_internet, ~intra],
        ["critical", "high", "medium"],
        default="low",
    )
    src_name = np.where(pd.isna(src["label"]), out["src_id"].to_numpy(dtype=object), src["label"])
    dst_name = np.where(pd.isna(dst["label"]), out["dst_id"].to_numpy(dtype=object), dst["label"])
    out["evidence"] = _join(
        src_name, " (", out["src_segment"].fillna("no segment").to_numpy(dtype=object), ") -> ",
        dst_name, " (", out["dst_segment"].fillna("no segment").to_numpy(dtype=object), ") ",
        out["proto"].astype(str).to_numpy(dtype=object), "/", out["dst_port"].astype(str).to_numpy(dtype=object),
        ": ", out["flows"].astype(str).to_numpy(dtype=object),
        np.where(out["flows"].to_numpy() == 1, " flow denied by ", " flows denied by ").astype(object),
        out["rule"].to_numpy(dtype=object),
    )
    return finalise(out, COLUMNS, ["src_id", "dst_id", "proto", "dst_port"])


def subgraph(twin: Twin, site: SiteConfig, **params) -> nx.DiGraph:
    """Return the denied communications as a graph: nodes are endpoints, edges carry the services and rules."""
    graph = nx.DiGraph()
    for row in find(twin, site, **params).itertuples(index=False):
        for node, host, ip, seg in ((row.src_id, row.src_hostname, row.src_ip, row.src_segment), (row.dst_id, row.dst_hostname, row.dst_ip, row.dst_segment)):
            if node not in graph:
                graph.add_node(node, kind="external" if seg == "internet" else "device", hostname=host, ip=ip, segment_id=seg)
        if graph.has_edge(row.src_id, row.dst_id):
            data = graph.edges[row.src_id, row.dst_id]
            data["services"].append(f"{row.proto}/{row.dst_port}")
            data["rules"].add(row.rule)
            data["flows"] += int(row.flows or 0)
        else:
            graph.add_edge(row.src_id, row.dst_id, services=[f"{row.proto}/{row.dst_port}"], rules={row.rule}, flows=int(row.flows or 0), severity=row.severity)
    return graph


def count(twin: Twin, site: SiteConfig) -> int:
    """Return the number of denied communications."""
    return len(denied(twin, site))
