"""Reachability graphs and a bounded k-shortest-path search for attack-path analysis.

A :class:`ReachGraph` is a directed graph over *nodes* that each stand for
one or more interchangeable endpoints (devices or External addresses). In
observed mode every node is one endpoint. In permitted mode a node is a
policy equivalence group: devices with the same rule-match bits, segment,
exposed services and entry/target flags, which the policy treats alike.
Out-edges are stored per *source key* in CSR form, so that all groups with
the same rule-match bits and segment share one edge list and no
device-by-device edge set is ever built.

Path rules
----------
A path starts at an entry node, ends at a target node and passes only
through devices: an attacker pivots through a workstation that is itself an
entry, or through one infusion pump to reach another, but External
endpoints are only ever where a path starts.
Paths are simple at node level. A path may start and end in the same
group only when the group holds at least two endpoints.

Search
------
:func:`iter_paths` runs a best-first (A*) search over the tree of partial
simple paths from all entries at once (a virtual source). The heuristic is
the exact minimum cost to any target within the remaining hop budget,
computed once per graph by ``max_hops`` rounds of vectorised relaxation
(:func:`cost_to_targets`). Because that bound never overestimates, complete
paths leave the heap in (cost, hops, node ids) order.

Notes
-----
The number of simple paths grows exponentially with ``max_hops`` in a dense
graph, so the search stops after :data:`MAX_EXPANSIONS` expansions and the
caller caps the number of paths it keeps. The relaxation costs
O(max_hops * E) numpy work for E stored edges; each expansion costs the
out-degree of the expanded node.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

__all__ = ["ReachGraph", "cost_to_targets", "iter_paths", "MAX_EXPANSIONS", "SearchStats"]

log = logging.getLogger(__name__)

# Maximum partial paths expanded by one search (count, default 300,000).
# Bounds time and memory when the number of simple paths explodes.
MAX_EXPANSIONS = 300_000


@dataclass
class ReachGraph:
    """Directed reachability graph over endpoint groups.

    Attributes
    ----------
    members : list of list of str
        Endpoint names per node, sorted; node indexes follow the order of
        the first member name.
    is_entry, is_target, is_external : ndarray of bool
    src_key : ndarray of int
        Row of the CSR edge lists with a node's out-edges.
    indptr, indices, weights : ndarray
        CSR edge lists per source key: destination node and edge cost.
    """

    members: list[list[str]]
    is_entry: np.ndarray
    is_target: np.ndarray
    is_external: np.ndarray
    src_key: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    sizes: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.sizes = np.array([len(m) for m in self.members], dtype=np.int64)

    @property
    def n(self) -> int:
        return len(self.members)

    @property
    def passable(self) -> np.ndarray:
        return ~self.is_external

    def out_edges(self, node: int) -> tuple[np.ndarray, np.ndarray]:
        key = self.src_key[node]
        start, stop = self.indptr[key], self.indptr[key + 1]
        return self.indices[start:stop], self.weights[start:stop]

    @classmethod
    def from_edges(cls, members, is_entry, is_target, is_external, src_key, n_keys, edge_src, edge_dst, edge_w) -> "ReachGraph":
        """Build the CSR from edge arrays keyed by source key, keeping the minimum weight per (key, dst)."""
        edge_src = np.asarray(edge_src, dtype=np.int64)
        edge_dst = np.asarray(edge_dst, dtype=np.int64)
        edge_w = np.asarray(edge_w, dtype=np.float64)
        order = np.lexsort((edge_w, edge_dst, edge_src))
        edge_src, edge_dst, edge_w = edge_src[order], edge_dst[order], edge_w[order]
        if len(edge_src):
            keep = np.ones(len(edge_src), dtype=bool)
            keep[1:] = (edge_src[1:] != edge_src[:-1]) | (edge_dst[1:] != edge_dst[:-1])
            edge_src, edge_dst, edge_w = edge_src[keep], edge_dst[keep], edge_w[keep]
        indptr = np.zeros(n_keys + 1, dtype=np.int64)
        np.cumsum(np.bincount(edge_src, minlength=n_keys), out=indptr[1:])
        return cls(
            members=members,
            is_entry=np.asarray(is_entry, dtype=bool),
            is_target=np.asarray(is_target, dtype=bool),
            is_external=np.asarray(is_external, dtype=bool),
            src_key=np.asarray(src_key, dtype=np.int64),
            indptr=indptr,
            indices=edge_dst,
            weights=edge_w,
        )


def cost_to_targets(graph: ReachGraph, max_hops: int) -> np.ndarray:
    """Return ``D`` with ``D[r, v]`` the minimum cost from node v to any target in 1..r hops.

    Intermediate nodes must be passable (see the module notes); ``inf``
    marks no target within r hops. Shape (max_hops + 1, n).
    """
    n = graph.n
    dist = np.full((max_hops + 1, n), np.inf)
    if graph.indices.size == 0:
        return dist
    n_keys = len(graph.indptr) - 1
    starts = graph.indptr[:-1][np.diff(graph.indptr) > 0]
    nonempty = np.flatnonzero(np.diff(graph.indptr) > 0)
    passable = graph.passable
    target = graph.is_target
    for r in range(1, max_hops + 1):
        prev = dist[r - 1]
        nxt = np.where(target, 0.0, np.where(passable, prev, np.inf))
        cand = graph.weights + nxt[graph.indices]
        per_key = np.full(n_keys, np.inf)
        per_key[nonempty] = np.minimum.reduceat(cand, starts)
        dist[r] = np.minimum(prev, per_key[graph.src_key])
    return dist


@dataclass
class SearchStats:
    """Counters of one search: expansions made and whether the budget stopped it."""

    expansions: int = 0
    exhausted_budget: bool = False


def iter_paths(graph: ReachGraph, max_hops: int, stats: SearchStats | None = None, max_expansions: int = MAX_EXPANSIONS) -> Iterator[tuple[float, int, tuple[int, ...]]]:
    """Yield (cost, hops, node path) for entry-to-target paths in (cost, hops, node ids) order.

    Parameters
    ----------
    graph : ReachGraph
    max_hops : int
        Paths with more edges are not produced.
    stats : SearchStats, optional
        Filled with the expansion count and whether the budget ran out.
    max_expansions : int
        Budget of partial-path expansions.
    """
    stats = stats if stats is not None else SearchStats()
    dist = cost_to_targets(graph, max_hops)
    finite = np.isfinite(dist)
    hop_lb = np.where(finite.any(axis=0), finite.argmax(axis=0), max_hops + 1)
    heap: list[tuple[float, int, tuple[int, ...], float, bool]] = []
    for node in np.flatnonzero(graph.is_entry):
        if np.isfinite(dist[max_hops, node]):
            heap.append((float(dist[max_hops, node]), int(hop_lb[node]), (int(node),), 0.0, False))
    heapq.heapify(heap)
    target = graph.is_target
    passable = graph.passable
    sizes = graph.sizes
    while heap:
        f, _, path, g, complete = heapq.heappop(heap)
        if complete:
            yield g, len(path) - 1, path
            continue
        if stats.expansions >= max_expansions:
            stats.exhausted_budget = True
            log.warning("attack-path search stopped after %d expansions; raise MAX_EXPANSIONS or lower max_hops", stats.expansions)
            return
        stats.expansions += 1
        u = path[-1]
        hops = len(path)
        remaining = max_hops - hops
        dst, weights = graph.out_edges(u)
        for v, w in zip(dst.tolist(), weights.tolist(), strict=True):
            if target[v] and hops <= max_hops and (v not in path or (v == path[0] and sizes[v] >= 2)):
                cost = g + w
                heapq.heappush(heap, (cost, hops, path + (v,), cost, True))
            if passable[v] and remaining >= 1 and v not in path:
                bound = dist[remaining, v]
                if bound == np.inf:
                    continue
                heapq.heappush(heap, (g + w + bound, hops + int(hop_lb[v]), path + (v,), g + w, False))
