"""Attack paths against an independent brute-force oracle on small random twins."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from twin.analysis import attack_paths
from twin.analysis._common import twin_from_records
from twin.model.site import SiteConfig

SEGMENTS = ["a", "b", "c"]


def _random_twin(seed: int, n: int = 8, density: float = 0.25, vulnerable: bool = False):
    rng = random.Random(seed)
    ids = [f"d{i}" for i in range(n)]
    devices = [{"device_id": d, "segment_id": SEGMENTS[rng.randrange(3)], "device_class": "workstation"} for d in ids]
    comms, services = [], []
    for u in ids:
        for v in ids:
            if u != v and rng.random() < density:
                port = rng.choice([22, 443])
                comms.append({"src_id": u, "dst_id": v, "dst_port": port})
    for v in ids:
        for port in (22, 443):
            if rng.random() < 0.6:
                services.append({"device_id": v, "port": port, "vulnerable": vulnerable and rng.random() < 0.3})
    entries = rng.sample(ids, 2)
    targets = rng.sample([d for d in ids if d not in entries], 2)
    if rng.random() < 0.3:
        targets.append(entries[0])
    return ids, devices, comms, services, entries, targets


def _site(entries, targets, rules=(), max_hops=4, k=50, max_paths=100000):
    return SiteConfig.model_validate(
        {
            "site": {"name": "oracle"},
            "segments": [{"id": s, "zone": s} for s in SEGMENTS],
            "policy": {"rules": list(rules)},
            "attack_paths": {
                "entry_points": [{"device": entries}],
                "targets": [{"device": targets}],
                "max_hops": max_hops,
                "k": k,
                "max_paths": max_paths,
            },
        }
    )


def _all_simple_paths(edges, entries, targets, max_hops):
    """Depth-first enumeration of every path the query defines (no networkx)."""
    adjacency = {}
    for u, v in edges:
        adjacency.setdefault(u, set()).add(v)
    found = []

    def walk(path):
        if len(path) - 1 >= max_hops:
            return
        for v in sorted(adjacency.get(path[-1], ())):
            if v in path:
                continue
            if v in targets:
                found.append(tuple(path + [v]))
            walk(path + [v])

    for entry in entries:
        walk([entry])
    return found


def _edge_costs(comms, services):
    vulnerable = {(s["device_id"], s["port"]) for s in services if s.get("vulnerable")}
    cost = {}
    for c in comms:
        w = 0.5 if (c["dst_id"], c["dst_port"]) in vulnerable else 1.0
        key = (c["src_id"], c["dst_id"])
        cost[key] = min(cost.get(key, w), w)
    return cost


@settings(derandomize=True, max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=10**6))
def test_observed_all_paths_match_oracle(seed):
    ids, devices, comms, services, entries, targets = _random_twin(seed)
    twin = twin_from_records(devices, comms, services)
    site = _site(entries, targets)
    found = attack_paths.find(twin, site, mode="observed")
    oracle = _all_simple_paths({(c["src_id"], c["dst_id"]) for c in comms}, entries, set(targets), 4)
    assert sorted(tuple(p) for p in found["path"]) == sorted(oracle)
    assert list(found["hops"]) == [len(p) - 1 for p in found["path"]]


@settings(derandomize=True, max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=10**6))
def test_observed_k_cheapest_match_oracle(seed):
    ids, devices, comms, services, entries, targets = _random_twin(seed, n=9, density=0.3, vulnerable=True)
    twin = twin_from_records(devices, comms, services)
    site = _site(entries, targets, max_hops=5, k=2)
    found = attack_paths.find(twin, site, mode="observed")
    cost = _edge_costs(comms, services)
    oracle = _all_simple_paths(set(cost), entries, set(targets), 5)
    by_pair = {}
    for path in oracle:
        total = sum(cost[(u, v)] for u, v in zip(path[:-1], path[1:]))
        by_pair.setdefault((path[0], path[-1]), []).append((total, len(path) - 1))
    expected = {pair: sorted(values)[:2] for pair, values in by_pair.items()}
    got = {}
    for row in found.itertuples(index=False):
        got.setdefault((row.entry_id, row.target_id), []).append((row.cost, row.hops))
        assert row.cost == sum(cost[(u, v)] for u, v in zip(row.path[:-1], row.path[1:]))
    assert {pair: sorted(v) for pair, v in got.items()} == expected
    keys = list(zip(found["cost"], found["hops"], found["path"].map(tuple)))
    assert keys == sorted(keys)


def _permitted_edges(devices, services, rules):
    """Device-level permitted edges from a plain first-match reading of segment rules."""
    seg = {d["device_id"]: d["segment_id"] for d in devices}
    ports = {}
    for s in services:
        ports.setdefault(s["device_id"], set()).add(s["port"])
    edges = set()
    for u in seg:
        for v in seg:
            if u == v:
                continue
            for port in ports.get(v, ()):
                decision = None
                for rule in rules:
                    if rule["from"] == f"segment:{seg[u]}" and rule["to"] == f"segment:{seg[v]}" and rule["services"] == [f"tcp/{port}"]:
                        decision = rule["action"]
                        break
                if decision is None:
                    decision = "allow" if seg[u] == seg[v] else "deny"
                if decision == "allow":
                    edges.add((u, v))
    return edges


def _shortest_hops(edges, entries, targets, max_hops):
    best = {}
    for path in _all_simple_paths(edges, entries, targets, max_hops):
        pair = (path[0], path[-1])
        best[pair] = min(best.get(pair, 99), len(path) - 1)
    return best


@settings(derandomize=True, max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=10**6))
def test_permitted_shortest_hops_match_oracle(seed):
    ids, devices, comms, services, entries, targets = _random_twin(seed, n=9)
    rng = random.Random(seed + 1)
    rules = []
    for i in range(4):
        a, b = rng.choice(SEGMENTS), rng.choice(SEGMENTS)
        rules.append({"name": f"r{i}", "action": rng.choice(["allow", "deny"]), "from": f"segment:{a}", "to": f"segment:{b}", "services": [f"tcp/{rng.choice([22, 443])}"]})
    twin = twin_from_records(devices, comms, services)
    site = _site(entries, targets, rules=rules, max_hops=4, k=1)
    found = attack_paths.find(twin, site, mode="permitted")
    edges = _permitted_edges(devices, services, rules)
    expected = {(e, t, h) for (e, t), h in _shortest_hops(edges, entries, set(targets), 4).items()}
    assert set(zip(found["entry_id"], found["target_id"], found["hops"], strict=True)) == expected
    for path in found["path"]:
        assert all((u, v) in edges for u, v in zip(path[:-1], path[1:]))


def test_max_paths_cap_warns():
    ids, devices, comms, services, entries, targets = _random_twin(3, n=10, density=0.5)
    twin = twin_from_records(devices, comms, services)
    site = _site(entries, targets, max_hops=5, k=50, max_paths=3)
    found = attack_paths.find(twin, site, mode="observed")
    assert len(found) == 3
    assert any("max_paths" in w for w in found.attrs["warnings"])


def test_internet_entry_and_bounds():
    devices = [{"device_id": "w", "segment_id": "a"}, {"device_id": "x", "segment_id": "a"}, {"device_id": "p", "segment_id": "b", "criticality": "life_critical"}]
    comms = [
        {"src_id": "203.0.113.7", "src_kind": "external", "dst_id": "w", "dst_port": 22},
        {"src_id": "w", "dst_id": "x"},
        {"src_id": "x", "dst_id": "p"},
        {"src_id": "w", "dst_id": "203.0.113.7", "dst_kind": "external"},
    ]
    twin = twin_from_records(devices, comms)
    site = SiteConfig.model_validate(
        {"site": {"name": "t"}, "segments": [{"id": "a"}, {"id": "b"}], "attack_paths": {"entry_points": ["internet"], "targets": ["device:p"], "max_hops": 3}}
    )
    found = attack_paths.find(twin, site, mode="observed")
    assert [tuple(p) for p in found["path"]] == [("203.0.113.7", "w", "x", "p")]
    assert list(found["severity"]) == ["critical"]
    assert attack_paths.find(twin, site, mode="observed", max_hops=2).empty
