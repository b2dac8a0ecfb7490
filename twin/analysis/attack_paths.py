"""Bounded k shortest attack paths from entry points to targets.

Entry points and targets come from ``site.attack_paths`` (or the
``entry_points``/``targets`` arguments): selectors over devices, where the
``internet`` selector makes every External endpoint an entry. Two
reachability graphs are searched:

``observed``
    An edge u -> v for every communication u -> v: an attacker on u can
    reach the service v listens on, because u already does.
``permitted``
    An edge u -> v when the policy allows u to reach a service that v
    exposes (services table, which includes every port seen as a flow
    destination). Devices the policy treats alike are searched as one
    group (see :mod:`twin.analysis._reach`) and expanded to devices only
    along the paths found. Intermediate hops show the group's first device
    by id, so paths differing only in which interchangeable device they
    cross are reported once.

Each edge costs :data:`EDGE_COST`, or :data:`VULNERABLE_EDGE_COST` when the
destination service is known to be vulnerable (:func:`vulnerable_services`,
the hook where a Component/Vulnerability join plugs in). Paths are simple,
start at an entry, end at a target, never pass through another entry,
target or External endpoint, and have at most ``max_hops`` edges. For each
(entry, target) pair at most ``k`` paths are kept, in (cost, hops, node ids)
order, and at most ``max_paths`` in total; a warning is logged and stored
in ``DataFrame.attrs["warnings"]`` when a cap or the search budget cuts the
result.

Severity
--------
The target's criticality (life_critical -> critical, high -> high, ...);
a permitted-mode path is one level lower, because nothing has used it yet.

What it cannot see
------------------
Reachability only: whether a service can be exploited is known only through
the vulnerability hook. Observed mode sees only flows a source recorded;
permitted mode sees only listening services the twin knows and assumes the
policy is what the network enforces. External endpoints are entries only:
a path never pivots through an internet host. Links (LLDP/CDP) and layer-2
adjacency are not edges.

Notes
-----
The number of simple paths explodes with ``max_hops`` in dense graphs, which
is why the search is bounded three ways (hops, ``k`` per pair, ``max_paths``
in total) and by :data:`twin.analysis._reach.MAX_EXPANSIONS`. Building the
observed graph is O(C log C) for C communication rows; the permitted graph
is O(R * (N + S * D)) for R rules, N devices, S source groups and D
destination service groups.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import pandas as pd

from twin.analysis._common import CRITICALITY_SEVERITY, device_view, finalise, lower_severity
from twin.analysis._reach import MAX_EXPANSIONS, ReachGraph, SearchStats, iter_paths
from twin.model.site import Selector, SiteConfig
from twin.model.twin import Twin
from twin.policy.engine import PolicyEngine, row_codes

__all__ = [
    "COLUMNS",
    "MODES",
    "EDGE_COST",
    "VULNERABLE_EDGE_COST",
    "AttackPathResult",
    "compute",
    "find",
    "subgraph",
    "count",
    "vulnerable_services",
    "build_observed_graph",
    "build_permitted_graph",
]

log = logging.getLogger(__name__)

COLUMNS = [
    "mode",
    "path_id",
    "entry_id",
    "entry_hostname",
    "target_id",
    "target_hostname",
    "target_class",
    "hops",
    "cost",
    "path",
    "path_hostnames",
    "severity",
    "evidence",
]

MODES = ("observed", "permitted")

# Cost of one hop (unitless, default 1.0).
EDGE_COST = 1.0
# Cost of a hop onto a service known to be vulnerable (unitless, default 0.5).
VULNERABLE_EDGE_COST = 0.5

# Source keys times destination service groups evaluated per policy batch (count, default 2,000,000).
PERMITTED_BATCH = 2_000_000


@dataclass
class AttackPathResult:
    """Paths found per mode plus the graphs they were found in."""

    paths: pd.DataFrame
    graphs: dict[str, ReachGraph] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def vulnerable_services(twin: Twin) -> pd.DataFrame:
    """Return the services known to be vulnerable: ``device_id``, ``proto``, ``port``.

    Reads a bool ``vulnerable`` column of the services table when present.
    This is the hook for vulnerability data: a join of services to
    Component and Vulnerability tables can return the same three columns.
    """
    services = twin.services
    if services.empty or "vulnerable" not in services:
        return pd.DataFrame({"device_id": pd.Series(dtype=object), "proto": pd.Series(dtype=object), "port": pd.Series(dtype="int64")})
    hit = services[services["vulnerable"].fillna(False).astype(bool)]
    # NOTE: CPE-to-CVE matching through the Vulnerability tables is not joined here yet.
    return pd.DataFrame(
        {
            "device_id": hit["device_id"].astype(str).to_numpy(),
            "proto": hit["proto"].astype(str).str.lower().to_numpy(),
            "port": pd.to_numeric(hit["port"], errors="coerce").fillna(0).astype("int64").to_numpy(),
        }
    )


def _selector_masks(engine: PolicyEngine, devices: pd.DataFrame, selectors: list[Selector]) -> tuple[np.ndarray, list[Selector]]:
    mask = np.zeros(len(devices), dtype=bool)
    internet = []
    for selector in selectors:
        if selector.internet:
            internet.append(selector)
        mask |= engine.match_selector(selector, devices).to_numpy()
    return mask, internet


def _external_addresses(twin: Twin, sources_only: bool) -> list[str]:
    comm = twin.communications
    found: set[str] = set()
    if not comm.empty and "src_kind" in comm:
        found.update(comm.loc[comm["src_kind"].astype(object) == "external", "src_id"].astype(str))
    if not sources_only:
        if not twin.externals.empty:
            found.update(twin.externals["address"].dropna().astype(str))
        if not comm.empty and "dst_kind" in comm:
            found.update(comm.loc[comm["dst_kind"].astype(object) == "external", "dst_id"].astype(str))
    return sorted(found)


def _external_entry_mask(engine: PolicyEngine, addresses: list[str], selectors: list[Selector]) -> np.ndarray:
    mask = np.zeros(len(addresses), dtype=bool)
    for selector in selectors:
        mask |= engine.match_external(selector, addresses)
    return mask


def build_observed_graph(twin: Twin, engine: PolicyEngine, entry_points: list[Selector], targets: list[Selector], vulnerable: pd.DataFrame | None = None) -> ReachGraph:
    """Build the observed-mode graph: one node per device and per External source address."""
    devices = twin.devices
    dev_ids = devices["device_id"].astype(str).to_numpy()
    entry_dev, entry_net = _selector_masks(engine, devices, entry_points)
    target_dev, _ = _selector_masks(engine, devices, targets)
    ext = _external_addresses(twin, sources_only=True) if entry_net else []
    ext_entry = _external_entry_mask(engine, ext, entry_net)
    ext = [a for a, keep in zip(ext, ext_entry, strict=True) if keep]
    names = np.concatenate([dev_ids, np.array(ext, dtype=object)]).astype(object)
    order = np.argsort(names.astype(str), kind="stable")
    names = names[order]
    is_entry = np.concatenate([entry_dev, np.ones(len(ext), dtype=bool)])[order]
    is_target = np.concatenate([target_dev, np.zeros(len(ext), dtype=bool)])[order]
    is_external = np.concatenate([np.zeros(len(dev_ids), dtype=bool), np.ones(len(ext), dtype=bool)])[order]
    index = pd.Index(names)
    comm = twin.communications
    n = len(names)
    if comm.empty:
        src = dst = np.zeros(0, dtype=np.int64)
        weight = np.zeros(0)
    else:
        usable = comm[comm["dst_kind"].astype(object) != "external"] if "dst_kind" in comm else comm
        src = index.get_indexer(usable["src_id"].astype(str))
        dst = index.get_indexer(usable["dst_id"].astype(str))
        weight = np.full(len(usable), EDGE_COST)
        vulnerable = vulnerable if vulnerable is not None else vulnerable_services(twin)
        if not vulnerable.empty:
            hit = usable["dst_id"].astype(str).isin(set(vulnerable["device_id"])).to_numpy()
            if hit.any():
                keys = set(zip(vulnerable["device_id"], vulnerable["proto"], vulnerable["port"], strict=True))
                sub = usable[hit]
                ports = pd.to_numeric(sub["dst_port"], errors="coerce").fillna(0).astype("int64")
                flags = [(d, str(p).lower(), int(q)) in keys for d, p, q in zip(sub["dst_id"].astype(str), sub["proto"], ports, strict=True)]
                weight[np.flatnonzero(hit)[np.array(flags, dtype=bool)]] = VULNERABLE_EDGE_COST
        ok = (src >= 0) & (dst >= 0) & (src != dst)
        src, dst, weight = src[ok], dst[ok], weight[ok]
    members = [[str(name)] for name in names]
    return ReachGraph.from_edges(members, is_entry, is_target, is_external, np.arange(n), n, src, dst, weight)


def build_permitted_graph(twin: Twin, engine: PolicyEngine, entry_points: list[Selector], targets: list[Selector], vulnerable: pd.DataFrame | None = None) -> ReachGraph:
    """Build the permitted-mode graph over policy equivalence groups.

    Devices fall in one group when their ``from``/``to`` rule bits, segment,
    entry and target flags and set of exposed services (with vulnerability
    flags) are equal. Groups with the same ``from`` bits and segment share
    one source key, whose out-edges go to every group exposing a service the
    policy allows from that key.
    """
    devices = twin.devices
    n_dev = len(devices)
    dev_ids = devices["device_id"].astype(str).to_numpy()
    bits = engine.rule_matrix(devices)
    entry_dev, entry_net = _selector_masks(engine, devices, entry_points)
    target_dev, _ = _selector_masks(engine, devices, targets)
    ext = _external_addresses(twin, sources_only=False) if entry_net else []
    ext_entry = _external_entry_mask(engine, ext, entry_net)
    ext = [a for a, keep in zip(ext, ext_entry, strict=True) if keep]
    ext_bits = engine.external_matrix(ext)

    from_sig, from_rows = row_codes(np.vstack([bits.from_bits, ext_bits.from_bits]))
    to_sig, to_rows = row_codes(np.vstack([bits.to_bits, ext_bits.to_bits]))
    seg_codes, _ = pd.factorize(pd.Series(devices["segment_id"].to_numpy(dtype=object)) if n_dev else pd.Series([], dtype=object))
    segment = np.concatenate([np.asarray(seg_codes, dtype=np.int64), np.full(len(ext), -1, dtype=np.int64)])
    is_external = np.concatenate([np.zeros(n_dev, dtype=bool), np.ones(len(ext), dtype=bool)])
    names = np.concatenate([dev_ids, np.array(ext, dtype=object)]).astype(object)

    # Services per device: (proto, port, vulnerable) items, and an order-free hash of the set.
    services = twin.services
    svc = pd.DataFrame({"pos": pd.Index(dev_ids).get_indexer(services["device_id"].astype(str)) if not services.empty else np.zeros(0, dtype=np.int64)})
    if not services.empty:
        svc["proto"] = services["proto"].astype(str).str.lower().to_numpy()
        svc["port"] = pd.to_numeric(services["port"], errors="coerce").fillna(0).astype("int64").to_numpy()
        vulnerable = vulnerable if vulnerable is not None else vulnerable_services(twin)
        vkeys = set(zip(vulnerable["device_id"], vulnerable["proto"], vulnerable["port"], strict=True))
        svc["vuln"] = [(d, p, q) in vkeys for d, p, q in zip(services["device_id"].astype(str), svc["proto"], svc["port"], strict=True)] if vkeys else False
        svc = svc[svc["pos"] >= 0].drop_duplicates(["pos", "proto", "port", "vuln"])
    else:
        svc = pd.DataFrame({"pos": np.zeros(0, dtype=np.int64), "proto": [], "port": np.zeros(0, dtype=np.int64), "vuln": np.zeros(0, dtype=bool)})
    item_code, _ = pd.factorize(pd.MultiIndex.from_arrays([svc["proto"], svc["port"], svc["vuln"]])) if len(svc) else (np.zeros(0, dtype=np.int64), None)
    rng = np.random.default_rng(0x1F0E)
    salts = rng.integers(0, 2**63 - 1, size=max(int(item_code.max(initial=-1)) + 1, 1), dtype=np.int64).astype(np.uint64)
    svc_hash = np.zeros(n_dev + len(ext), dtype=np.uint64)
    np.add.at(svc_hash, svc["pos"].to_numpy(dtype=np.int64), salts[item_code])

    # Policy equivalence groups.
    keys = pd.DataFrame(
        {
            "f": from_sig,
            "t": to_sig,
            "seg": segment,
            "svc": svc_hash,
            "entry": np.concatenate([entry_dev, np.ones(len(ext), dtype=bool)]),
            "target": np.concatenate([target_dev, np.zeros(len(ext), dtype=bool)]),
            "ext": is_external,
        }
    )
    group = keys.groupby(list(keys.columns), sort=False).ngroup().to_numpy()
    n_groups = int(group.max()) + 1 if len(group) else 0
    order = np.lexsort((names.astype(str), group))
    members_by_group: list[list[str]] = [[] for _ in range(n_groups)]
    for pos in order:
        members_by_group[group[pos]].append(str(names[pos]))
    first = np.zeros(n_groups, dtype=np.int64)
    first[group[::-1]] = np.arange(len(group) - 1, -1, -1)
    # Renumber groups in order of their first member name, so node ids sort like device ids.
    rank = np.argsort(np.array([m[0] for m in members_by_group], dtype=object).astype(str), kind="stable")
    renumber = np.empty(n_groups, dtype=np.int64)
    renumber[rank] = np.arange(n_groups)
    members = [members_by_group[g] for g in rank]
    rep = first[rank]
    g_entry = keys["entry"].to_numpy()[rep]
    g_target = keys["target"].to_numpy()[rep]
    g_ext = is_external[rep]

    # Source keys: (from bits, segment, external).
    src_frame = pd.DataFrame({"f": from_sig[rep], "seg": segment[rep], "ext": g_ext})
    src_key = src_frame.groupby(["f", "seg", "ext"], sort=False).ngroup().to_numpy()
    n_keys = int(src_key.max()) + 1 if len(src_key) else 0
    key_first = np.zeros(n_keys, dtype=np.int64)
    key_first[src_key[::-1]] = np.arange(len(src_key) - 1, -1, -1)
    key_from = from_sig[rep][key_first]
    key_seg = segment[rep][key_first]
    key_ext = g_ext[key_first]

    # Destination items: (group, proto, port, vulnerable) and their policy keys (to bits, segment, proto, port).
    svc_group = renumber[group[svc["pos"].to_numpy(dtype=np.int64)]] if len(svc) else np.zeros(0, dtype=np.int64)
    items = pd.DataFrame({"g": svc_group, "proto": svc["proto"].to_numpy(dtype=object), "port": svc["port"].to_numpy(dtype=np.int64), "vuln": svc["vuln"].to_numpy(dtype=bool)})
    items = items[~g_ext[items["g"].to_numpy()]].drop_duplicates()
    items["t"] = to_sig[rep][items["g"].to_numpy()]
    items["seg"] = segment[rep][items["g"].to_numpy()]
    d_code = items.groupby(["t", "seg", "proto", "port"], sort=False).ngroup().to_numpy() if len(items) else np.zeros(0, dtype=np.int64)
    n_d = int(d_code.max()) + 1 if len(d_code) else 0
    d_first = np.zeros(n_d, dtype=np.int64)
    d_first[d_code[::-1]] = np.arange(len(d_code) - 1, -1, -1)
    d_t = items["t"].to_numpy()[d_first]
    d_seg = items["seg"].to_numpy()[d_first]
    d_proto = items["proto"].to_numpy(dtype=object)[d_first]
    d_port = items["port"].to_numpy()[d_first]

    # Decide every (source key, destination key) pair in batches.
    allowed = np.zeros((n_keys, n_d), dtype=bool)
    if n_keys and n_d:
        rows_per_batch = max(1, PERMITTED_BATCH // n_d)
        for start in range(0, n_keys, rows_per_batch):
            ks = np.arange(start, min(n_keys, start + rows_per_batch))
            s_idx = np.repeat(ks, n_d)
            d_idx = np.tile(np.arange(n_d), len(ks))
            same = (key_seg[s_idx] == d_seg[d_idx]) & (key_seg[s_idx] >= 0)
            allow, _ = engine.decide_groups(
                from_rows[key_from[s_idx]], to_rows[d_t[d_idx]], same, key_ext[s_idx], d_proto[d_idx], d_port[d_idx]
            )
            allowed[ks] = allow.reshape(len(ks), n_d)
    item_g = items["g"].to_numpy()
    item_w = np.where(items["vuln"].to_numpy(dtype=bool), VULNERABLE_EDGE_COST, EDGE_COST)
    s_hit, i_hit = np.nonzero(allowed[:, d_code]) if n_keys and len(d_code) else (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    edge_dst = item_g[i_hit]
    edge_w = item_w[i_hit]
    log.info("permitted graph: %d devices in %d groups, %d source keys, %d group edges", n_dev, n_groups, n_keys, len(edge_dst))
    return ReachGraph.from_edges(members, g_entry, g_target, g_ext, src_key, n_keys, s_hit, edge_dst, edge_w)


def _collect(graph: ReachGraph, max_hops: int, k: int, max_paths: int, warnings: list[str], mode: str) -> list[tuple[float, int, tuple[str, ...]]]:
    stats = SearchStats()
    pair_count: dict[tuple[str, str], int] = defaultdict(int)
    found: list[tuple[float, int, tuple[str, ...]]] = []
    for cost, hops, nodes in iter_paths(graph, max_hops, stats, MAX_EXPANSIONS):
        middle = tuple(graph.members[x][0] for x in nodes[1:-1])
        for entry in graph.members[nodes[0]]:
            for target in graph.members[nodes[-1]]:
                if entry == target or pair_count[(entry, target)] >= k:
                    continue
                pair_count[(entry, target)] += 1
                found.append((cost, hops, (entry, *middle, target)))
                if len(found) >= max_paths:
                    warnings.append(f"{mode}: stopped at max_paths={max_paths}; raise attack_paths.max_paths to see more")
                    log.warning("%s attack paths capped at max_paths=%d", mode, max_paths)
                    return found
    if stats.exhausted_budget:
        warnings.append(f"{mode}: search stopped after {stats.expansions} expansions; results may miss longer paths")
    return found


def compute(
    twin: Twin,
    site: SiteConfig,
    mode: str = "both",
    max_hops: int | None = None,
    k: int | None = None,
    max_paths: int | None = None,
    entry_points: list | None = None,
    targets: list | None = None,
    engine: PolicyEngine | None = None,
    vulnerable: pd.DataFrame | None = None,
) -> AttackPathResult:
    """Find attack paths and keep the graphs they were searched in.

    Parameters are those of :func:`find`.
    """
    modes = MODES if mode == "both" else (mode,)
    for name in modes:
        if name not in MODES:
            raise ValueError(f"unknown attack-path mode {name!r}; expected observed, permitted or both")
    cfg = site.attack_paths
    max_hops = int(max_hops if max_hops is not None else cfg.max_hops)
    k = int(k if k is not None else cfg.k)
    max_paths = int(max_paths if max_paths is not None else cfg.max_paths)
    if max_hops < 1 or k < 1 or max_paths < 1:
        raise ValueError(f"max_hops={max_hops}, k={k}, max_paths={max_paths}: expected each to be at least 1")
    entries = [Selector.parse(s) for s in (entry_points if entry_points is not None else cfg.entry_points)]
    goals = [Selector.parse(s) for s in (targets if targets is not None else cfg.targets)]
    engine = engine or PolicyEngine(site)
    result = AttackPathResult(paths=finalise([], COLUMNS, ["mode"]))
    if not entries or not goals or twin.devices.empty:
        return result
    view = device_view(twin, site)
    frames = []
    for name in modes:
        build = build_observed_graph if name == "observed" else build_permitted_graph
        graph = build(twin, engine, entries, goals, vulnerable)
        result.graphs[name] = graph
        found = _collect(graph, max_hops, k, max_paths, result.warnings, name)
        found.sort(key=lambda item: (item[0], item[1], item[2]))
        frames.append(_frame(name, found, view))
    paths = pd.concat([f for f in frames if not f.empty], ignore_index=True) if any(not f.empty for f in frames) else finalise([], COLUMNS, ["mode"])
    paths.attrs["warnings"] = list(result.warnings)
    result.paths = paths
    return result


def _frame(mode: str, found: list[tuple[float, int, tuple[str, ...]]], view: pd.DataFrame) -> pd.DataFrame:
    if not found:
        return pd.DataFrame(columns=COLUMNS)
    # Look up only the nodes on the paths: a dict of the whole devices table costs seconds at 100,000 devices.
    needed = sorted({node for _, _, path in found for node in path})
    info = view.reindex(needed)
    hostnames = {k: v for k, v in zip(needed, info["hostname"], strict=True) if isinstance(v, str) and v}
    labels = {k: v for k, v in zip(needed, info["label"], strict=True) if isinstance(v, str) and v}
    classes = dict(zip(needed, info["device_class"], strict=True))
    criticality = dict(zip(needed, info["criticality"], strict=True))
    rows = []
    for number, (cost, hops, path) in enumerate(found, start=1):
        entry, target = path[0], path[-1]
        names = [labels.get(node) or node for node in path]
        severity = CRITICALITY_SEVERITY.get(criticality.get(target), "low")
        if mode == "permitted":
            severity = lower_severity(severity)
        basis = "observed communications" if mode == "observed" else "services the policy permits"
        rows.append(
            {
                "mode": mode,
                "path_id": f"{mode}-{number:05d}",
                "entry_id": entry,
                "entry_hostname": hostnames.get(entry),
                "target_id": target,
                "target_hostname": hostnames.get(target),
                "target_class": classes.get(target) if isinstance(classes.get(target), str) else None,
                "hops": hops,
                "cost": cost,
                "path": list(path),
                "path_hostnames": names,
                "severity": severity,
                "evidence": f"{' -> '.join(names)}: {hops} hop{'s' if hops != 1 else ''}, cost {cost:g}, over {basis}",
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def find(twin: Twin, site: SiteConfig, mode: str = "both", **params) -> pd.DataFrame:
    """Return attack paths, one row per path.

    Parameters
    ----------
    twin : Twin
    site : SiteConfig
    mode : {"both", "observed", "permitted"}
    max_hops, k, max_paths : int, optional
        Bounds; default to ``site.attack_paths``.
    entry_points, targets : list of selectors, optional
        Override ``site.attack_paths``.
    engine : PolicyEngine, optional
        Engine for permitted mode, for example with a proposed policy.
    vulnerable : DataFrame, optional
        ``device_id``, ``proto``, ``port`` of vulnerable services; default
        :func:`vulnerable_services`.

    Returns
    -------
    DataFrame
        Columns :data:`COLUMNS`, ordered by mode, then cost, hops and node
        ids. ``attrs["warnings"]`` lists caps that cut the result.
    """
    return compute(twin, site, mode=mode, **params).paths


def subgraph(twin: Twin, site: SiteConfig, mode: str = "both", **params) -> nx.DiGraph:
    """Return the union of the paths as a graph; edges count the paths using them per mode."""
    paths = find(twin, site, mode=mode, **params)
    view = device_view(twin, site)
    graph = nx.DiGraph()
    for row in paths.itertuples(index=False):
        for position, node in enumerate(row.path):
            if node not in graph:
                known = node in view.index
                graph.add_node(
                    node,
                    kind="device" if known else "external",
                    hostname=view.at[node, "hostname"] if known else None,
                    device_class=view.at[node, "device_class"] if known else None,
                    segment_id=view.at[node, "segment_id"] if known else "internet",
                    entry=False,
                    target=False,
                )
            if position == 0:
                graph.nodes[node]["entry"] = True
            if position == len(row.path) - 1:
                graph.nodes[node]["target"] = True
        for u, v in zip(row.path[:-1], row.path[1:], strict=True):
            if not graph.has_edge(u, v):
                graph.add_edge(u, v, paths={})
            counts = graph.edges[u, v]["paths"]
            counts[row.mode] = counts.get(row.mode, 0) + 1
    return graph


def count(twin: Twin, site: SiteConfig) -> int:
    """Return the number of attack paths in both modes."""
    return len(find(twin, site))
