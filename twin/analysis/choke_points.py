"""Devices and segment-to-segment rules whose removal cuts the most attack paths.

Starting from the paths of :mod:`twin.analysis.attack_paths`, three kinds of
rows are returned:

``device``
    A device in the middle of a path (neither its first nor its last
    node, though it may be an entry or target of other paths), ranked by the
    number of paths through it. Isolating or hardening it cuts them all.
``segment_pair``
    A (source segment -> destination segment) pair of path edges, ranked by
    the number of paths with at least one edge in that pair: the paths a
    deny rule between the two segments would cut. External endpoints count
    as segment ``internet``; an intra-segment pair calls for
    micro-segmentation.
``min_cut_rule``
    The minimum edge cut between all entries and all targets, computed with
    a super source and a super sink over the union of the paths found, and
    aggregated to segment pairs as recommended deny rules with the services
    those edges carry.

Severity
--------
``critical`` when the item lies on every path to a life-critical target
(share 1.0 and a critical path among them), ``high`` for a share of at
least 0.5 and for every minimum-cut rule, ``medium`` for at least 0.2,
``low`` otherwise.

What it cannot see
------------------
Only the paths :mod:`twin.analysis.attack_paths` reported: when a cap
(``max_paths``, ``k``, ``max_hops``) cut them, counts and the minimum cut
cover the reported paths, not every path in the network. The cut is over
the union of reported paths, so other paths the search did not report can
survive it.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict

import networkx as nx
import pandas as pd

from twin.analysis import attack_paths as attack_paths_query
from twin.analysis._common import device_view, finalise
from twin.model.site import SiteConfig
from twin.model.twin import Twin
from twin.policy.engine import PolicyEngine

__all__ = ["COLUMNS", "find", "subgraph", "count", "from_paths"]

log = logging.getLogger(__name__)

COLUMNS = ["kind", "item", "paths_through", "share", "recommendation", "severity", "evidence"]

_SOURCE = ("__source__",)
_SINK = ("__sink__",)


def _severity(share: float, critical_all: bool) -> str:
    if share >= 1.0 and critical_all:
        return "critical"
    if share >= 0.5:
        return "high"
    if share >= 0.2:
        return "medium"
    return "low"


def _services(twin: Twin, site: SiteConfig, edges: list[tuple[str, str, str]], engine: PolicyEngine) -> dict[tuple[str, str, str], list[str]]:
    """Return proto/port labels per (mode, u, v) edge: observed flows or permitted services."""
    comm = twin.communications
    out: dict[tuple[str, str, str], list[str]] = {}
    observed = {(u, v) for mode, u, v in edges if mode == "observed"}
    if observed and not comm.empty:
        near = comm[comm["src_id"].isin({u for u, _ in observed}) & comm["dst_id"].isin({v for _, v in observed})]
        keys = pd.MultiIndex.from_arrays([near["src_id"].astype(str), near["dst_id"].astype(str)])
        hit = near[keys.isin(list(observed))]
        for (u, v), rows in hit.groupby([hit["src_id"].astype(str), hit["dst_id"].astype(str)]):
            out[("observed", u, v)] = sorted({f"{p}/{int(q)}" for p, q in zip(rows["proto"], rows["dst_port"], strict=True)})
    permitted = pd.DataFrame([(u, v) for mode, u, v in edges if mode == "permitted"], columns=["src_id", "dst_id"])
    if permitted.empty or twin.services.empty:
        return out
    # One policy decision over every (edge, destination service), not one per edge.
    offered = twin.services[["device_id", "proto", "port"]].rename(columns={"device_id": "dst_id", "port": "dst_port"})
    offered = offered.assign(dst_id=offered["dst_id"].astype(str))
    candidates = permitted.merge(offered, on="dst_id")
    device_ids = set(twin.devices["device_id"].astype(str))
    candidates["src_kind"] = ["device" if u in device_ids else "external" for u in candidates["src_id"]]
    candidates["dst_kind"] = "device"
    decided = engine.decide(candidates, twin)
    allowed = decided[decided["action"] == "allow"]
    for (u, v), rows in allowed.groupby(["src_id", "dst_id"]):
        out[("permitted", u, v)] = sorted({f"{p}/{int(q)}" for p, q in zip(rows["proto"], rows["dst_port"], strict=True)})
    return out


def from_paths(twin: Twin, site: SiteConfig, paths: pd.DataFrame, engine: PolicyEngine | None = None) -> pd.DataFrame:
    """Return choke points for a given attack-path table (columns of :data:`attack_paths.COLUMNS`)."""
    if paths.empty:
        return finalise([], COLUMNS, ["kind", "item"])
    engine = engine or PolicyEngine(site)
    view = device_view(twin, site)
    segment_of = view["segment_id"].to_dict()
    hostnames = view["label"].to_dict()
    total = len(paths)
    critical = paths["severity"] == "critical"
    n_critical = int(critical.sum())

    def seg(node: str) -> str:
        if node not in view.index:
            return "internet"
        return segment_of.get(node) or "no segment"

    device_paths: Counter = Counter()
    device_critical: Counter = Counter()
    pair_paths: Counter = Counter()
    pair_critical: Counter = Counter()
    pair_edges: dict[tuple[str, str], set] = defaultdict(set)
    for path, mode, is_critical in zip(paths["path"], paths["mode"], critical, strict=True):
        for node in set(path[1:-1]):
            device_paths[node] += 1
            device_critical[node] += int(is_critical)
        pairs = set()
        for u, v in zip(path[:-1], path[1:], strict=True):
            pair = (seg(u), seg(v))
            pairs.add(pair)
            pair_edges[pair].add((mode, u, v))
        for pair in pairs:
            pair_paths[pair] += 1
            pair_critical[pair] += int(is_critical)

    rows = []
    for node, hits in device_paths.items():
        share = hits / total
        name = hostnames.get(node) or node
        rows.append(
            {
                "kind": "device",
                "item": node,
                "paths_through": hits,
                "share": share,
                "recommendation": f"isolate or harden {name} (segment {seg(node)}): restrict its listening services and who may reach them",
                "severity": _severity(share, n_critical > 0 and device_critical[node] == n_critical),
                "evidence": f"{hits} of {total} attack paths pass through {name}",
            }
        )
    services = _services(twin, site, sorted({e for edges in pair_edges.values() for e in edges}), engine)
    for (src_seg, dst_seg), hits in pair_paths.items():
        share = hits / total
        labels = sorted({s for e in pair_edges[(src_seg, dst_seg)] for s in services.get(e, [])})
        action = "micro-segment" if src_seg == dst_seg else "deny"
        rows.append(
            {
                "kind": "segment_pair",
                "item": f"{src_seg} -> {dst_seg}",
                "paths_through": hits,
                "share": share,
                "recommendation": f"{action} traffic from segment {src_seg} to segment {dst_seg} (services: {', '.join(labels) or 'none recorded'})",
                "severity": _severity(share, n_critical > 0 and pair_critical[(src_seg, dst_seg)] == n_critical),
                "evidence": f"{hits} of {total} attack paths use an edge from {src_seg} to {dst_seg}",
            }
        )
    rows += _min_cut_rows(paths, seg, services, hostnames)
    return finalise(rows, COLUMNS, ["kind", "paths_through", "item"]).pipe(_rank)


def _rank(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    order = {"min_cut_rule": 0, "segment_pair": 1, "device": 2}
    frame = frame.assign(_k=frame["kind"].map(order), _p=-frame["paths_through"])
    return frame.sort_values(["_k", "_p", "item"], kind="stable").drop(columns=["_k", "_p"]).reset_index(drop=True)


def _min_cut_rows(paths: pd.DataFrame, seg, services, names: dict) -> list[dict]:
    """Return deny-rule rows from the minimum edge cut over the union of the paths."""
    graph = nx.DiGraph()
    modes_of: dict[tuple, set] = defaultdict(set)
    for path, mode in zip(paths["path"], paths["mode"], strict=True):
        # The first node gets its own entry role, so a device that is an entry of one path and the
        # target of another does not join the super source to the super sink with infinite capacity.
        nodes = [("e", path[0])] + [("n", node) for node in path[1:]]
        graph.add_edge(_SOURCE, nodes[0])
        graph.add_edge(nodes[-1], _SINK)
        for u, v in zip(nodes[:-1], nodes[1:], strict=True):
            graph.add_edge(u, v, capacity=1)
            modes_of[(u[1], v[1])].add(mode)
    # Edges without a capacity attribute are infinite in networkx, so only path edges can be cut.
    _, (reachable, _) = nx.minimum_cut(graph, _SOURCE, _SINK)
    # An entry node and the same device as an intermediate node are two graph
    # nodes, so one device pair can be cut twice. Each pair is reported once.
    cut = sorted(
        {
            (u[1], v[1])
            for u, v in graph.edges
            if u in reachable and v not in reachable and u != _SOURCE and v != _SINK
        }
    )
    by_pair: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for u, v in cut:
        by_pair[(seg(u), seg(v))].append((u, v))
    total = len(paths)
    rows = []
    for (src_seg, dst_seg), edges in sorted(by_pair.items()):
        labels = sorted({s for u, v in edges for mode in modes_of[(u, v)] for s in services.get((mode, u, v), [])})
        edge_set = set(edges)
        hits = sum(1 for path in paths["path"] if any((a, b) in edge_set for a, b in zip(path[:-1], path[1:], strict=True)))
        rows.append(
            {
                "kind": "min_cut_rule",
                "item": f"{src_seg} -> {dst_seg}",
                "paths_through": hits,
                "share": hits / total,
                "recommendation": f"add deny rule from segment:{src_seg} to segment:{dst_seg} for {', '.join(labels) or 'the services these edges use'}",
                "severity": "high",
                "evidence": f"part of a minimum cut of {len(cut)} edges between all entries and all targets; cuts edges "
                + ", ".join(f"{names.get(u) or u} -> {names.get(v) or v}" for u, v in edges[:5])
                + (" ..." if len(edges) > 5 else ""),
            }
        )
    return rows


def find(twin: Twin, site: SiteConfig, mode: str = "both", paths: pd.DataFrame | None = None, **params) -> pd.DataFrame:
    """Return choke points of the attack paths.

    Parameters
    ----------
    twin : Twin
    site : SiteConfig
    mode : {"both", "observed", "permitted"}
        Attack-path mode to analyse.
    paths : DataFrame, optional
        Attack paths already computed; found with ``mode`` and ``params``
        when omitted.

    Returns
    -------
    DataFrame
        Columns :data:`COLUMNS`: minimum-cut rules first, then segment pairs
        and devices, each by paths cut.
    """
    if paths is None:
        paths = attack_paths_query.find(twin, site, mode=mode, **params)
    elif mode != "both":
        paths = paths[paths["mode"] == mode]
    return from_paths(twin, site, paths, params.get("engine"))


def subgraph(twin: Twin, site: SiteConfig, mode: str = "both", **params) -> nx.DiGraph:
    """Return the attack-path union graph with a ``choke`` score (share of paths through it) on each node."""
    graph = attack_paths_query.subgraph(twin, site, mode=mode, **params)
    found = find(twin, site, mode=mode, **params)
    scores = dict(zip(found.loc[found["kind"] == "device", "item"], found.loc[found["kind"] == "device", "share"], strict=True))
    for node in graph.nodes:
        graph.nodes[node]["choke"] = scores.get(node, 0.0)
    return graph


def count(twin: Twin, site: SiteConfig) -> int:
    """Return the number of minimum-cut deny rules recommended."""
    found = find(twin, site)
    return int((found["kind"] == "min_cut_rule").sum()) if not found.empty else 0
