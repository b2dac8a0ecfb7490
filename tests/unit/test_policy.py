"""Policy engine: selector matching and first-match decisions, against a per-row reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twin.analysis._common import twin_from_records
from twin.model.site import SiteConfig
from twin.policy.engine import PolicyEngine

SITE = {
    "site": {"name": "t"},
    "segments": [
        {"id": "pumps", "cidrs": ["10.1.0.0/24"], "zone": "clinical", "building": "a"},
        {"id": "it", "cidrs": ["10.2.0.0/24"], "zone": "it", "building": "b"},
        {"id": "guest", "cidrs": ["10.9.0.0/24"], "zone": "guest"},
    ],
    "policy": {
        "default_action": "deny",
        "intra_segment": "allow",
        "rules": [
            {"name": "druglib", "action": "allow", "from": "class:infusion_pump", "to": "device:druglib", "services": ["https"], "required": True},
            {"name": "guest-web", "action": "allow", "from": "zone:guest", "to": {"internet": True, "cidr": "198.51.100.0/24"}, "services": ["https"]},
            {"name": "guest-block", "action": "deny", "from": "zone:guest", "to": "any"},
            {"name": "it-admin", "action": "allow", "from": "segment:it", "to": "zone:clinical", "services": ["ssh", "udp/1000-2000"]},
            {"name": "pump-quiet", "action": "deny", "from": "segment:pumps", "to": "segment:pumps", "services": ["telnet"]},
        ],
    },
}

DEVICES = [
    {"device_id": "p1", "ips": ["10.1.0.5"], "hostname": "pump-1", "device_class": "infusion_pump", "criticality": "life_critical", "segment_id": "pumps"},
    {"device_id": "p2", "ips": ["10.1.0.6", "10.50.0.6"], "hostname": "pump-2", "device_class": "infusion_pump", "segment_id": "pumps"},
    {"device_id": "srv", "ips": ["10.2.0.10"], "hostname": "druglib", "device_class": "server", "segment_id": "it"},
    {"device_id": "g1", "ips": ["10.9.0.7"], "device_class": "workstation", "segment_id": "guest"},
    {"device_id": "n1", "ips": ["10.77.0.1"], "device_class": "unknown", "segment_id": None},
    {"device_id": "n2", "ips": ["10.77.0.2"], "device_class": "unknown", "segment_id": None},
]


@pytest.fixture()
def site() -> SiteConfig:
    return SiteConfig.model_validate(SITE)


def test_selector_matching(site):
    engine = PolicyEngine(site)
    twin = twin_from_records(DEVICES)
    cases = {
        "any": {"p1", "p2", "srv", "g1", "n1", "n2"},
        "internet": set(),
        "segment:pumps": {"p1", "p2"},
        "zone:clinical": {"p1", "p2"},
        "class:server": {"srv"},
        "device:druglib": {"srv"},
        "device:10.9.0.7": {"g1"},
        "device:p2": {"p2"},
        "criticality:life_critical": {"p1"},
        "cidr:10.50.0.0/16": {"p2"},
        "cidr:10.0.0.0/8": {"p1", "p2", "srv", "g1", "n1", "n2"},
        "building:a": {"p1", "p2"},
    }
    for text, expected in cases.items():
        mask = engine.match_selector(text, twin.devices)
        assert set(twin.devices.loc[mask, "device_id"]) == expected, text
    both = engine.match_selector({"zone": "clinical", "criticality": "low"}, twin.devices)
    assert set(twin.devices.loc[both, "device_id"]) == {"p2"}


def _row(src, dst, proto, port, src_kind="device", dst_kind="device"):
    return {"src_id": src, "dst_id": dst, "proto": proto, "dst_port": port, "src_kind": src_kind, "dst_kind": dst_kind}


def test_decide_cases(site):
    engine = PolicyEngine(site)
    comms = [
        (_row("p1", "srv", "tcp", 443), "allow", "druglib"),
        (_row("p1", "srv", "tcp", 80), "deny", "default:inter-segment"),
        (_row("g1", "198.51.100.9", "tcp", 443, dst_kind="external"), "allow", "guest-web"),
        (_row("g1", "203.0.113.9", "tcp", 443, dst_kind="external"), "deny", "default:internet"),
        (_row("g1", "p1", "tcp", 443), "deny", "guest-block"),
        (_row("srv", "p2", "tcp", 22), "allow", "it-admin"),
        (_row("srv", "p2", "udp", 1500), "allow", "it-admin"),
        (_row("srv", "p2", "tcp", 1500), "deny", "default:inter-segment"),
        (_row("p1", "p2", "tcp", 23), "deny", "pump-quiet"),
        (_row("p1", "p2", "tcp", 8080), "allow", "default:intra-segment"),
        (_row("n1", "n2", "tcp", 443), "deny", "default:inter-segment"),
        (_row("ghost", "p1", "tcp", 22), "deny", "default:inter-segment"),
        (_row("203.0.113.1", "p1", "tcp", 22, src_kind="external"), "deny", "default:internet"),
    ]
    twin = twin_from_records(DEVICES)
    frame = pd.DataFrame([c[0] for c in comms])
    decided = engine.decide(frame, twin)
    got = list(zip(decided["action"], decided["rule"], strict=True))
    assert got == [(c[1], c[2]) for c in comms]
    index = {r.name: i for i, r in enumerate(site.policy.rules)}
    assert list(decided["rule_index"]) == [index.get(c[2], -1) for c in comms]


def test_decide_intra_default_deny():
    data = {**SITE, "policy": {"default_action": "allow", "intra_segment": "deny", "rules": []}}
    engine = PolicyEngine(SiteConfig.model_validate(data))
    twin = twin_from_records(DEVICES)
    frame = pd.DataFrame([_row("p1", "p2", "tcp", 1), _row("p1", "srv", "tcp", 1), _row("n1", "n2", "tcp", 1)])
    decided = engine.decide(frame, twin)
    assert list(decided["action"]) == ["deny", "allow", "allow"]


def _reference(engine, twin, row):
    """Per-row first-match reference using the selector API only."""
    devices = twin.devices

    def matches(selector, endpoint, kind):
        if kind == "external":
            return bool(engine.match_external(selector, [endpoint])[0])
        mask = engine.match_selector(selector, devices)
        hit = devices.loc[mask, "device_id"]
        return endpoint in set(hit) or (selector.any and endpoint not in set(devices["device_id"]))

    for rule in engine.rules:
        if not matches(rule.from_, row["src_id"], row["src_kind"]) or not matches(rule.to, row["dst_id"], row["dst_kind"]):
            continue
        if any(spec.matches(row["proto"], row["dst_port"]) for spec in rule.service_specs()):
            return rule.action, rule.name
    seg = dict(zip(devices["device_id"], devices["segment_id"], strict=True))
    if row["src_kind"] == row["dst_kind"] == "device" and seg.get(row["src_id"]) is not None and seg.get(row["src_id"]) == seg.get(row["dst_id"]):
        return engine.policy.intra_segment, "default:intra-segment"
    external = "external" in (row["src_kind"], row["dst_kind"])
    return engine.policy.default_action, "default:internet" if external else "default:inter-segment"


def test_decide_matches_reference_random(site):
    engine = PolicyEngine(site)
    twin = twin_from_records(DEVICES)
    rng = np.random.default_rng(11)
    endpoints = [(d["device_id"], "device") for d in DEVICES] + [("198.51.100.4", "external"), ("203.0.113.4", "external")]
    rows = []
    for _ in range(400):
        (s, sk), (d, dk) = endpoints[rng.integers(len(endpoints))], endpoints[rng.integers(len(endpoints))]
        if sk == dk == "external":
            continue
        proto = ["tcp", "udp", "icmp"][rng.integers(3)]
        port = int([22, 23, 443, 1500, 8080, 0][rng.integers(6)])
        rows.append(_row(s, d, proto, port, sk, dk))
    decided = engine.decide(pd.DataFrame(rows), twin)
    expected = [_reference(engine, twin, r) for r in rows]
    assert list(zip(decided["action"], decided["rule"], strict=True)) == expected


def test_allowed_services_and_required(site):
    engine = PolicyEngine(site)
    twin = twin_from_records(DEVICES, services=[{"device_id": "srv", "port": 443}, {"device_id": "srv", "port": 22}])
    allowed = engine.allowed_services("p1", "srv", twin)
    assert set(zip(allowed["proto"], allowed["port"], allowed["rule"], strict=True)) == {("tcp", 443, "druglib")}
    assert [r.name for r in engine.required_workflows()] == ["druglib"]


def test_decide_empty(site):
    engine = PolicyEngine(site)
    decided = engine.decide(twin_from_records(DEVICES).communications, twin_from_records(DEVICES))
    assert decided.empty
    assert {"action", "rule", "rule_index"} <= set(decided.columns)


def test_building_matches_own_record_or_segment(site):
    # The inventory spells p2's building "Building A"; its segment serves "a".
    devices = [dict(d) for d in DEVICES]
    devices[1]["building"] = "Building A"
    devices[3]["building"] = "a"
    engine = PolicyEngine(site)
    twin = twin_from_records(devices)
    by_segment = engine.match_selector("building:a", twin.devices)
    assert set(twin.devices.loc[by_segment, "device_id"]) == {"p1", "p2", "g1"}
    by_record = engine.match_selector("building:Building A", twin.devices)
    assert set(twin.devices.loc[by_record, "device_id"]) == {"p2"}
