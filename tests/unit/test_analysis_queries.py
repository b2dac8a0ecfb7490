"""Each catalogue query on a paired compliant twin (no findings) and violating twin (exactly the planted ones)."""

from __future__ import annotations

import networkx as nx
import pytest

from twin.analysis import CATALOGUE, run_catalogue
from twin.analysis import attack_paths, choke_points, external_exposure, flat_segments, misplaced_devices, segment_violations
from twin.analysis._common import SEVERITIES, twin_from_records
from twin.model.site import SiteConfig

SITE = SiteConfig.model_validate(
    {
        "site": {"name": "pair"},
        "segments": [
            {"id": "pumps", "zone": "clinical", "designated_classes": ["infusion_pump"]},
            {"id": "it", "zone": "it", "designated_classes": ["workstation", "server"]},
            {"id": "guest", "zone": "guest", "designated_classes": ["workstation", "unknown"]},
            {"id": "lab", "zone": "clinical"},
        ],
        "external": {"allowlist": ["198.51.100.0/24", "updates.vendor.example"]},
        "policy": {
            "rules": [
                {"name": "druglib", "action": "allow", "from": "segment:pumps", "to": "device:srv", "services": ["https"], "required": True},
                {"name": "guest-web", "action": "allow", "from": "segment:guest", "to": "internet", "services": ["https"]},
                {"name": "pumps-cloud", "action": "allow", "from": "segment:pumps", "to": "internet", "services": ["https"]},
            ]
        },
        "attack_paths": {"entry_points": ["segment:guest"], "targets": ["class:infusion_pump"], "max_hops": 4, "k": 3},
    }
)

BASE_DEVICES = [
    {"device_id": "p1", "ips": ["10.1.0.5"], "hostname": "pump-1", "device_class": "infusion_pump", "role": "medical", "criticality": "life_critical", "segment_id": "pumps"},
    {"device_id": "srv", "ips": ["10.2.0.10"], "hostname": "druglib", "device_class": "server", "role": "it", "criticality": "high", "segment_id": "it"},
    {"device_id": "ws", "ips": ["10.2.0.20"], "hostname": "ws-1", "device_class": "workstation", "role": "it", "segment_id": "it"},
    {"device_id": "g1", "ips": ["10.9.0.7"], "device_class": "workstation", "role": "it", "segment_id": "guest"},
]
BASE_COMMS = [
    {"src_id": "p1", "dst_id": "srv", "dst_port": 443, "flows": 10},
    {"src_id": "ws", "dst_id": "srv", "dst_port": 443},
    {"src_id": "g1", "dst_id": "198.51.100.20", "dst_kind": "external", "dst_port": 443},
    {"src_id": "p1", "dst_id": "updates.vendor.example", "dst_kind": "external", "dst_port": 443},
]
BASE_SERVICES = [{"device_id": "srv", "port": 443}, {"device_id": "p1", "port": 443}]


def compliant():
    return twin_from_records(BASE_DEVICES, BASE_COMMS, BASE_SERVICES)


def violating():
    devices = BASE_DEVICES + [
        {"device_id": "p2", "ips": ["10.9.0.50"], "hostname": "pump-2", "device_class": "infusion_pump", "role": "medical", "criticality": "life_critical", "segment_id": "guest"},
        {"device_id": "ws2", "ips": ["10.1.0.30"], "hostname": "ws-2", "device_class": "workstation", "role": "it", "segment_id": "pumps"},
    ]
    comms = BASE_COMMS + [
        {"src_id": "g1", "dst_id": "ws", "dst_port": 3389, "flows": 4},
        {"src_id": "ws", "dst_id": "p1", "dst_port": 22, "flows": 2},
        {"src_id": "ws2", "dst_id": "203.0.113.50", "dst_kind": "external", "dst_port": 8883, "flows": 3},
    ]
    services = BASE_SERVICES + [{"device_id": "ws", "port": 3389}, {"device_id": "p1", "port": 22}]
    return twin_from_records(devices, comms, services)


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_compliant_twin_has_no_findings(name):
    twin = compliant()
    found = CATALOGUE[name].find(twin, SITE)
    assert found.empty, found.to_string()
    assert CATALOGUE[name].count(twin, SITE) == 0
    assert isinstance(CATALOGUE[name].subgraph(twin, SITE), nx.DiGraph)


def test_misplaced_violating():
    found = misplaced_devices.find(violating(), SITE)
    assert set(zip(found["device_id"], found["segment_id"], found["severity"], strict=True)) == {
        ("p2", "guest", "critical"),
        ("ws2", "pumps", "medium"),
    }
    assert list(found.columns) == misplaced_devices.COLUMNS


def test_misplaced_empty_designation_accepts_all():
    twin = twin_from_records(BASE_DEVICES + [{"device_id": "x", "device_class": "camera", "segment_id": "lab"}])
    assert misplaced_devices.find(twin, SITE).empty


def test_segment_violations_violating():
    found = segment_violations.find(violating(), SITE)
    got = set(zip(found["src_id"], found["dst_id"], found["dst_port"], found["rule"], found["severity"], strict=True))
    assert got == {
        ("g1", "ws", 3389, "default:inter-segment", "medium"),
        ("ws", "p1", 22, "default:inter-segment", "critical"),
        ("ws2", "203.0.113.50", 8883, "default:internet", "medium"),
    }
    row = found[found["dst_id"] == "203.0.113.50"].iloc[0]
    assert (row["dst_segment"], row["dst_ip"]) == ("internet", "203.0.113.50")
    assert segment_violations.count(violating(), SITE) == 3


def test_external_exposure_violating():
    found = external_exposure.find(violating(), SITE)
    assert set(zip(found["device_id"], found["direction"], found["external"], found["dst_port"], found["severity"], strict=True)) == {
        ("ws2", "outbound", "203.0.113.50", 8883, "medium"),
    }


def test_external_exposure_inbound():
    twin = twin_from_records(BASE_DEVICES, BASE_COMMS + [{"src_id": "203.0.113.9", "src_kind": "external", "dst_id": "p1", "dst_port": 22}])
    found = external_exposure.find(twin, SITE)
    assert set(zip(found["device_id"], found["direction"], found["external"], found["severity"], strict=True)) == {
        ("p1", "inbound", "203.0.113.9", "critical"),
    }


def test_flat_segments_violating():
    found = flat_segments.find(violating(), SITE)
    got = set(zip(found["segment_id"], found["medical_devices"], found["it_devices"], found["other_devices"], found["severity"], strict=True))
    assert got == {("pumps", 1, 1, 0, "critical"), ("guest", 1, 1, 0, "critical")}


def test_attack_paths_violating():
    found = attack_paths.find(violating(), SITE)
    got = {(m, tuple(p), h) for m, p, h in zip(found["mode"], found["path"], found["hops"], strict=True)}
    # Observed: g1 -> ws (rdp) -> p1 (ssh). Permitted: the policy lets nothing out of the guest segment
    # except to the internet, and p2 sits in the guest segment itself, reachable on no service.
    assert got == {("observed", ("g1", "ws", "p1"), 2)}
    assert list(found["severity"]) == ["critical"]
    assert list(found.columns) == attack_paths.COLUMNS


def test_choke_points_violating():
    found = choke_points.find(violating(), SITE)
    got = set(zip(found["kind"], found["item"], found["paths_through"], strict=True))
    assert ("device", "ws", 1) in got
    assert ("segment_pair", "guest -> it", 1) in got
    assert ("segment_pair", "it -> pumps", 1) in got
    cut = found[found["kind"] == "min_cut_rule"]
    assert len(cut) == 1
    assert cut.iloc[0]["item"] in {"guest -> it", "it -> pumps"}
    assert "tcp/" in cut.iloc[0]["recommendation"]


def test_every_query_has_severity_and_evidence():
    results = run_catalogue(violating(), SITE)
    assert list(results) == list(CATALOGUE)
    for name, frame in results.items():
        assert not frame.empty, name
        assert set(frame["severity"]) <= set(SEVERITIES), name
        assert frame["evidence"].map(lambda e: isinstance(e, str) and len(e) > 0).all(), name


def test_run_catalogue_unknown_name():
    with pytest.raises(KeyError, match="known: misplaced_devices"):
        run_catalogue(compliant(), SITE, ["nope"])


def test_attack_paths_permitted_mode_finds_policy_path():
    site = SITE.model_copy(deep=True)
    site.policy = SiteConfig.model_validate(
        {"site": {"name": "x"}, "policy": {"rules": [{"name": "guest-rdp", "action": "allow", "from": "segment:guest", "to": "segment:it", "services": ["rdp"]},
                                                         {"name": "it-ssh", "action": "allow", "from": "segment:it", "to": "segment:pumps", "services": ["ssh"]}]}, "segments": [{"id": "guest"}, {"id": "it"}, {"id": "pumps"}]}
    ).policy
    found = attack_paths.find(violating(), site, mode="permitted")
    # p2 (a pump on the guest segment) is an entry too; ws -> srv is allowed inside the IT segment.
    assert [tuple(p) for p in found["path"]] == [
        ("g1", "ws", "p1"),
        ("p2", "ws", "p1"),
        ("g1", "ws", "srv", "p1"),
        ("p2", "ws", "srv", "p1"),
    ]
    assert set(found["severity"]) == {"high"}
