"""Evaluate 10 million recorded flows against a 1,000-rule policy with the simulator's decision path.

Run: ``python bench/bench_policy_eval.py --flows 10000000 --rules 1000 --devices 10000``.

The endpoint population is synthetic with hospital cardinality: devices in
segments of four zones, each with a class, a criticality, a building and
one address, plus External addresses. The policy mixes selectors (segment,
zone, class, criticality, cidr, device, internet, any) and services (named,
single ports, port ranges, any). Flows are drawn from a pool of distinct
(source, destination, protocol, port) edges, most of them from clients to
a few servers, as aggregated flow records are.

Timed, in one process:

- ``selectors``: :meth:`PolicyEngine.rule_matrix` and the endpoint
  signatures (:class:`EndpointTable`);
- ``decide``: :meth:`FlowDecider.decide` over every flow;
- ``one rule``: the peer, a numpy pass of one rule over the same flows
  (source mask, destination mask and port range gathered per flow).

It prints wall-clock seconds, the ratio of the whole policy to the
one-rule pass, the process CPU seconds of both (single-threaded numpy, so
CPU time is close to wall time on an idle machine and lower when other jobs
take the cores), and the peak resident memory. The goal is the whole
policy in 2 s or less of wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import pandas as pd

GOAL_S = 2.0
SEGMENTS_PER_ZONE = 12
ZONES = ("clinical", "it", "building", "guest")
CLASSES = ("infusion_pump", "patient_monitor", "ct_scanner", "pacs", "workstation", "server", "printer", "ip_phone", "hvac_controller", "camera", "unknown")
PORTS = (22, 23, 53, 80, 104, 123, 161, 389, 443, 445, 2575, 3389, 5060, 5900, 8080, 8443, 9100, 11112, 47808)
NAMED = ("https", "dicom", "hl7-mllp", "dns", "ntp", "ssh", "rdp", "vnc", "smb", "snmp", "sip", "bacnet", "printing")


def peak_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_site(rng: np.random.Generator, n_rules: int, ips: np.ndarray):
    from twin.model.site import SiteConfig

    segments = []
    for z, zone in enumerate(ZONES):
        for s in range(SEGMENTS_PER_ZONE):
            third = z * SEGMENTS_PER_ZONE + s
            segments.append({"id": f"{zone}-{s}", "zone": zone, "cidrs": [f"10.16.{third}.0/24"], "building": "ABC"[s % 3]})
    seg_ids = [s["id"] for s in segments]

    def selector(side: str):
        kind = rng.choice(["segment", "zone", "class", "cidr", "device", "criticality", "any", "internet"], p=[0.3, 0.12, 0.2, 0.12, 0.12, 0.04, 0.06, 0.04])
        if kind == "segment":
            return {"segment": list(rng.choice(seg_ids, size=rng.integers(1, 3), replace=False))}
        if kind == "zone":
            return f"zone:{rng.choice(ZONES)}"
        if kind == "class":
            return {"device_class": list(rng.choice(CLASSES, size=rng.integers(1, 3), replace=False))}
        if kind == "cidr":
            third = int(rng.integers(0, len(seg_ids)))
            return f"cidr:10.16.{third}.{int(rng.integers(0, 8)) * 32}/27"
        if kind == "device":
            return {"device": [str(ip) for ip in rng.choice(ips, size=rng.integers(1, 4), replace=False)]}
        if kind == "criticality":
            return f"criticality:{rng.choice(['life_critical', 'high', 'medium', 'low'])}"
        if kind == "internet":
            return "internet" if rng.random() < 0.5 else {"internet": True, "cidr": ["203.0.113.0/25"]}
        return "any"

    def services():
        kind = rng.random()
        if kind < 0.45:
            return list(rng.choice(NAMED, size=rng.integers(1, 3), replace=False))
        if kind < 0.8:
            return [f"{rng.choice(['tcp', 'udp'])}/{int(rng.choice(PORTS))}"]
        if kind < 0.9:
            low = int(rng.integers(1000, 60000))
            return [f"tcp/{low}-{low + int(rng.integers(1, 500))}"]
        return ["any"]

    rules = [
        {"name": f"rule-{i:04d}", "action": "allow" if rng.random() < 0.6 else "deny", "from": selector("from"), "to": selector("to"), "services": services()}
        for i in range(n_rules)
    ]
    site = SiteConfig.model_validate({"site": {"name": "bench"}, "segments": segments, "policy": {"rules": rules}})
    return site, seg_ids


def make_devices(rng: np.random.Generator, n: int, seg_ids: list[str]) -> pd.DataFrame:
    seg = rng.integers(0, len(seg_ids), size=n)
    host = np.arange(n) // len(seg_ids) + 10
    ips = np.array([f"10.16.{s}.{h % 250 + 2}" for s, h in zip(seg, host)], dtype=object)
    crit = rng.choice(["life_critical", "high", "medium", "low"], size=n, p=[0.2, 0.1, 0.3, 0.4])
    return pd.DataFrame(
        {
            "device_id": [f"dev-{i:06x}" for i in range(n)],
            "ips": [[ip] for ip in ips],
            "hostname": [f"host-{i}" for i in range(n)],
            "device_class": rng.choice(CLASSES, size=n),
            "criticality": crit,
            "segment_id": np.array(seg_ids, dtype=object)[seg],
            "building": None,
        }
    )


def make_flows(rng: np.random.Generator, n_flows: int, n_endpoints: int, n_edges: int):
    """Return (src, dst, proto Categorical, port) drawn from a pool of distinct edges."""
    servers = rng.choice(n_endpoints, size=max(10, n_endpoints // 50), replace=False)
    src = rng.integers(0, n_endpoints, size=n_edges)
    # Four edges in five go to a server (Zipf-like popularity), the rest anywhere.
    popular = servers[np.minimum(rng.zipf(1.3, size=n_edges) - 1, len(servers) - 1)]
    dst = np.where(rng.random(n_edges) < 0.8, popular, rng.integers(0, n_endpoints, size=n_edges))
    port = rng.choice(np.array(PORTS + (50000,)), size=n_edges)
    proto_code = np.where(np.isin(port, (53, 123, 161, 5060, 47808)), 1, 0)
    pick = rng.integers(0, n_edges, size=n_flows)
    proto = pd.Categorical.from_codes(proto_code[pick], categories=["tcp", "udp"])
    return src[pick], dst[pick], proto, port[pick]


def run(n_flows: int, n_rules: int, n_devices: int, n_external: int, n_edges: int, seed: int) -> dict:
    from twin.policy.engine import EndpointTable, PolicyEngine
    from twin.policy.first_match import FlowDecider

    rng = np.random.default_rng(seed)
    ips_pool = np.array([f"10.16.{t}.{h}" for t in range(4 * SEGMENTS_PER_ZONE) for h in range(2, 252)], dtype=object)
    site, seg_ids = make_site(rng, n_rules, ips_pool)
    devices = make_devices(rng, n_devices, seg_ids)
    externals = [f"203.0.113.{i % 250}" if i < 250 else f"198.51.100.{i % 250}" for i in range(n_external)]
    src, dst, proto, port = make_flows(rng, n_flows, n_devices + n_external, n_edges)

    t0, c0 = time.perf_counter(), time.process_time()
    engine = PolicyEngine(site)
    table = EndpointTable.build(engine, devices, externals=sorted(set(externals)))
    selectors_s = time.perf_counter() - t0
    # Endpoint positions: devices, then the sorted External addresses.
    ext_sorted = sorted(set(externals))
    ext_pos = {a: n_devices + i for i, a in enumerate(ext_sorted)}
    remap = np.concatenate([np.arange(n_devices), np.array([ext_pos[a] for a in externals], dtype=np.int64)])
    src_pos, dst_pos = remap[src], remap[dst]

    t1 = time.perf_counter()
    decider = FlowDecider(engine, table)
    allow, rule_index = decider.decide(src_pos, dst_pos, proto, port)
    decide_s = time.perf_counter() - t1
    total_s = time.perf_counter() - t0
    total_cpu_s = time.process_time() - c0

    # Peer: one rule as a plain numpy pass over the same flows.
    src_mask = engine.match_selector("zone:it", devices).to_numpy()
    dst_mask = engine.match_selector("class:server", devices).to_numpy()
    src_mask = np.concatenate([src_mask, np.zeros(len(ext_sorted) + 1, dtype=bool)])
    dst_mask = np.concatenate([dst_mask, np.zeros(len(ext_sorted) + 1, dtype=bool)])
    t2, c2 = time.perf_counter(), time.process_time()
    one = src_mask[src_pos] & dst_mask[dst_pos] & (port >= 443) & (port <= 443) & (np.asarray(proto.codes) == 0)
    one_rule_s = time.perf_counter() - t2
    one_rule_cpu_s = time.process_time() - c2

    return {
        "flows": n_flows,
        "rules": n_rules,
        "devices": n_devices,
        "externals": len(ext_sorted),
        "distinct_edges_in_pool": n_edges,
        "from_signatures": int(table.from_rows.shape[0]),
        "to_signatures": int(table.to_rows.shape[0]),
        "selectors_s": round(selectors_s, 3),
        "decide_s": round(decide_s, 3),
        "total_s": round(total_s, 3),
        "one_rule_s": round(one_rule_s, 3),
        "ratio_total_to_one_rule": round(total_s / one_rule_s, 1),
        "total_cpu_s": round(total_cpu_s, 3),
        "one_rule_cpu_s": round(one_rule_cpu_s, 3),
        "allowed_share": round(float(allow.mean()), 3),
        "decided_by_rule_share": round(float((rule_index >= 0).mean()), 3),
        "one_rule_matches": int(one.sum()),
        "goal_s": GOAL_S,
        "within_goal": total_s <= GOAL_S,
        "peak_mb": round(peak_mb(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=10_000_000, help="Flow records to decide (default 10,000,000).")
    parser.add_argument("--rules", type=int, default=1000, help="Rules in the generated policy (default 1,000).")
    parser.add_argument("--devices", type=int, default=10_000, help="Devices in the endpoint population (default 10,000).")
    parser.add_argument("--externals", type=int, default=500, help="External addresses (default 500).")
    parser.add_argument("--edges", type=int, default=1_000_000, help="Distinct edges the flows are drawn from (default 1,000,000).")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    result = run(args.flows, args.rules, args.devices, args.externals, args.edges, args.seed)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
