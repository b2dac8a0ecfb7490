"""What-if policy simulation on small hand-made twins and against brute-force oracles."""

from __future__ import annotations

import random
from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.analysis._common import twin_from_records
from twin.exceptions import ConfigError
from twin.model.site import SiteConfig, load_site
from twin.policy.engine import EndpointTable, PolicyEngine
from twin.policy.first_match import FlowDecider
from twin.policy.simulate import edit_policy, load_policy, policy_to_yaml, simulate

SEGMENTS = ["a", "b", "c"]


def _site(rules=(), entries=("device:ws",), targets=("device:pump",), allowlist=()):
    return SiteConfig.model_validate(
        {
            "site": {"name": "sim"},
            "segments": [
                {"id": "a", "zone": "it", "cidrs": ["10.0.1.0/24"]},
                {"id": "b", "zone": "clinical", "cidrs": ["10.0.2.0/24"]},
                {"id": "c", "zone": "dc", "cidrs": ["10.0.3.0/24"]},
            ],
            "external": {"allowlist": list(allowlist)},
            "policy": {"rules": list(rules)},
            "attack_paths": {"entry_points": list(entries), "targets": list(targets), "max_hops": 4},
        }
    )


# ws (a) -> srv (c) https allowed; ws -> pump (b) telnet denied; pump -> srv https allowed (required).
DEVICES = [
    {"device_id": "ws", "segment_id": "a", "device_class": "workstation", "ips": ["10.0.1.10"]},
    {"device_id": "ws2", "segment_id": "a", "device_class": "workstation", "ips": ["10.0.1.11"]},
    {"device_id": "pump", "segment_id": "b", "device_class": "infusion_pump", "ips": ["10.0.2.10"]},
    {"device_id": "pump2", "segment_id": "b", "device_class": "infusion_pump", "ips": ["10.0.2.11"]},
    {"device_id": "srv", "segment_id": "c", "device_class": "server", "ips": ["10.0.3.10"]},
]
COMMS = [
    {"src_id": "ws", "dst_id": "srv", "dst_port": 443},
    {"src_id": "ws", "dst_id": "pump", "dst_port": 23},
    {"src_id": "pump", "dst_id": "srv", "dst_port": 443},
    {"src_id": "203.0.113.5", "src_kind": "external", "dst_id": "srv", "dst_port": 22},
]
RULES = [
    {"name": "deny-telnet-clinical", "action": "deny", "from": "any", "to": "zone:clinical", "services": ["telnet"]},
    {"name": "ws-to-srv", "action": "allow", "from": "segment:a", "to": "device:srv", "services": ["https"]},
    {"name": "pumps-to-srv", "action": "allow", "from": "class:infusion_pump", "to": "device:srv", "services": ["https"], "required": True},
]


def _twin():
    return twin_from_records(DEVICES, COMMS, services=[{"device_id": "pump", "port": 23}, {"device_id": "srv", "port": 443}])


def _keys(frame, columns=("src_id", "dst_id", "dst_port")):
    return {tuple(row) for row in frame[list(columns)].itertuples(index=False)}


def test_same_policy_changes_nothing():
    site = _site(RULES)
    result = simulate(_twin(), site, site.policy)
    assert set(result.flows["change"]) == {"unchanged"}
    changes = {k: v for k, v in result.summary.items() if k != "attack_paths_unenforced"}
    assert changes == {key: 0 for key in changes}
    # The observed paths the unchanged policy denies exist today only because
    # it is not enforced: listed as unenforced, never as cut.
    gap = result.attack_paths_unenforced
    assert len(gap) == result.summary["attack_paths_unenforced"] > 0
    assert set(gap["mode"]) == {"observed"}
    assert gap["today_hops"].notna().all() and gap["current_hops"].isna().all() and gap["proposed_hops"].isna().all()


def test_new_deny_blocks_allowed_flow():
    site = _site(RULES)
    proposed = edit_policy(site.policy, add=[(0, {"name": "deny-ws", "action": "deny", "from": "device:ws", "to": "any"})])
    result = simulate(_twin(), site, proposed)
    assert _keys(result.newly_blocked, ("src_id", "dst_id", "dst_port", "proposed_rule")) == {("ws", "srv", 443, "deny-ws")}
    assert _keys(result.violations_introduced, ("src_id", "dst_id", "dst_port", "rule")) == {("ws", "srv", 443, "deny-ws")}
    # ws -> pump stays denied, now by deny-ws: a rule change, not a new violation.
    changed = result.flows[result.flows["change"] == "rule_changed"]
    assert _keys(changed, ("src_id", "dst_id", "current_rule", "proposed_rule")) == {("ws", "pump", "deny-telnet-clinical", "deny-ws")}
    assert result.violations_resolved.empty


def test_allow_resolves_violation_and_opens_path():
    site = _site(RULES)
    proposed = edit_policy(site.policy, add=[(0, {"name": "it-support", "action": "allow", "from": "zone:it", "to": "zone:clinical", "services": ["telnet"]})])
    result = simulate(_twin(), site, proposed, modes=("observed",))
    assert _keys(result.newly_allowed) == {("ws", "pump", 23)}
    assert _keys(result.violations_resolved, ("src_id", "dst_id", "dst_port", "rule")) == {("ws", "pump", 23, "deny-telnet-clinical")}
    assert _keys(result.attack_paths_opened, ("mode", "entry", "target")) == {("observed", "ws", "pump")}
    assert result.attack_paths_opened["proposed_path"].tolist() == ["10.0.1.10 -> 10.0.2.10"]


def test_deny_cuts_observed_path():
    site = _site([{"name": "open", "action": "allow", "from": "any", "to": "any"}])
    proposed = edit_policy(site.policy, add=[(0, {"name": "no-telnet", "action": "deny", "from": "any", "to": "any", "services": ["telnet"]})])
    result = simulate(_twin(), site, proposed, modes=("observed",))
    assert _keys(result.attack_paths_cut, ("mode", "entry", "target", "current_hops")) == {("observed", "ws", "pump", 1)}
    assert result.attack_paths_cut["proposed_hops"].isna().all()


def test_reorder_changes_deciding_rule():
    rules = [
        {"name": "allow-https", "action": "allow", "from": "any", "to": "any", "services": ["https"]},
        {"name": "deny-ws", "action": "deny", "from": "device:ws", "to": "any"},
    ]
    site = _site(rules)
    proposed = edit_policy(site.policy, move=[("deny-ws", 0)])
    result = simulate(_twin(), site, proposed, modes=())
    row = result.flows[(result.flows["src_id"] == "ws") & (result.flows["dst_id"] == "srv")].iloc[0]
    assert (row["current_rule"], row["proposed_rule"]) == ("allow-https", "deny-ws")
    assert row["change"] == "newly_blocked"


def test_removed_required_rule_still_checked():
    site = _site(RULES)
    proposed = edit_policy(site.policy, remove=["pumps-to-srv"])
    result = simulate(_twin(), site, proposed, modes=())
    rows = result.workflows_broken
    assert set(zip(rows["workflow"], rows["source"], rows["blocked_by"])) == {("pumps-to-srv", "current", "default:inter-segment")}
    # Two pumps x one server x two https ports (443, 8443); pump -> srv 443 was observed.
    assert rows["blocked"].tolist() == [4]
    assert rows["observed_blocked"].tolist() == [True]
    assert result.breaks_workflows


def test_unobserved_workflow_break_reported():
    site = _site(RULES)
    proposed = edit_policy(site.policy, add=[(0, {"name": "close-8443", "action": "deny", "from": "any", "to": "device:srv", "services": ["tcp/8443"]})])
    result = simulate(_twin(), site, proposed, modes=())
    rows = result.workflows_broken
    assert set(zip(rows["workflow"], rows["source"], rows["blocked_by"], rows["observed_blocked"])) == {("pumps-to-srv", "both", "close-8443", False)}
    assert rows["blocked"].tolist() == [2]
    assert rows["example_service"].tolist() == ["tcp/8443"]
    assert result.newly_blocked.empty


def test_workflow_added_as_required_checked():
    site = _site(RULES)
    new_rule = {"name": "ws-to-pump-https", "action": "allow", "from": "segment:a", "to": "segment:b", "services": ["tcp/443"], "required": True}
    proposed = edit_policy(site.policy, add=[new_rule, (0, {"name": "deny-ws2", "action": "deny", "from": "device:ws2", "to": "any"})])
    result = simulate(_twin(), site, proposed, modes=())
    rows = result.workflows_broken
    assert set(zip(rows["workflow"], rows["source"], rows["blocked_by"], rows["blocked"])) == {("ws-to-pump-https", "proposed", "deny-ws2", 2)}


def test_exposure_before_and_after():
    site = _site(RULES)
    proposed = edit_policy(site.policy, add=[{"name": "ssh-in", "action": "allow", "from": "internet", "to": "device:srv", "services": ["ssh"]}])
    result = simulate(_twin(), site, proposed, modes=())
    exposure = result.exposure
    assert set(zip(exposure["external"], exposure["direction"], exposure["current_allowed"], exposure["proposed_allowed"])) == {
        ("203.0.113.5", "inbound", False, True)
    }
    assert (result.summary["exposure_before"], result.summary["exposure_after"]) == (0, 1)


def test_to_dict_is_json_ready():
    import json

    site = _site(RULES)
    result = simulate(_twin(), site, edit_policy(site.policy, remove=["ws-to-srv"]))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["summary"]["newly_blocked"] == 1
    assert {row["dst_id"] for row in data["newly_blocked"]} == {"srv"}


# ---------------------------------------------------------------------------
# The flow decision path against the engine


def _random_policy(rng: random.Random, n_rules: int) -> list[dict]:
    selectors = ["any", "segment:a", "segment:b", "zone:clinical", "class:workstation", "class:server", "device:d1", "cidr:10.0.2.0/25", "internet"]
    services = [["any"], ["tcp/22"], ["https"], ["tcp/20-30"], ["udp/53"], ["dns", "ssh"]]
    return [
        {"name": f"r{i}", "action": rng.choice(["allow", "deny"]), "from": rng.choice(selectors), "to": rng.choice(selectors), "services": rng.choice(services)}
        for i in range(n_rules)
    ]


def _random_comm_twin(rng: random.Random, n: int = 12, m: int = 60):
    classes = ["workstation", "server", "infusion_pump"]
    devices = []
    for i in range(n):
        seg = rng.choice(SEGMENTS + [None])
        third = {"a": 1, "b": 2, "c": 3}.get(seg, 9)
        devices.append({"device_id": f"d{i}", "segment_id": seg, "device_class": rng.choice(classes), "ips": [f"10.0.{third}.{i + 1}"]})
    ends = [(d["device_id"], "device") for d in devices] + [("203.0.113.9", "external"), ("ghost", "device")]
    comms = []
    for _ in range(m):
        (s, sk), (d, dk) = rng.choice(ends), rng.choice(ends)
        comms.append({"src_id": s, "src_kind": sk, "dst_id": d, "dst_kind": dk, "proto": rng.choice(["tcp", "udp", "TCP"]), "dst_port": rng.choice([22, 25, 53, 443, 8443, 3389])})
    return twin_from_records(devices, comms)


@settings(derandomize=True, max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=150))
def test_flow_decider_matches_engine(seed, n_rules):
    rng = random.Random(seed)
    twin = _random_comm_twin(rng)
    site = _site(_random_policy(rng, n_rules))
    site.policy.intra_segment = rng.choice(["allow", "deny"])
    site.policy.default_action = rng.choice(["allow", "deny"])
    engine = PolicyEngine(site)
    expected = engine.decide(twin.communications, twin)
    table = EndpointTable.build(engine, twin.devices, twin.communications)
    comm = twin.communications
    allow, index = FlowDecider(engine, table).decide(
        table.locate(comm["src_id"], comm["src_kind"]), table.locate(comm["dst_id"], comm["dst_kind"]), comm["proto"].to_numpy(), comm["dst_port"].to_numpy()
    )
    assert list(zip(np.where(allow, "allow", "deny"), engine.rule_names(index))) == list(zip(expected["action"], expected["rule"]))


# ---------------------------------------------------------------------------
# Permitted-mode cut and opened against a brute-force oracle


def _oracle_decision(rules, u_seg, v_seg, port):
    for rule in rules:
        if rule["from"] == f"segment:{u_seg}" and rule["to"] == f"segment:{v_seg}" and rule["services"] == [f"tcp/{port}"]:
            return rule["action"]
    return "allow" if u_seg == v_seg else "deny"


def _oracle_hops(devices, services, rules, entries, targets, max_hops):
    """Minimum hops per (entry, target) over device-level permitted edges, by plain BFS."""
    seg = {d["device_id"]: d["segment_id"] for d in devices}
    ports: dict[str, set] = {}
    for s in services:
        ports.setdefault(s["device_id"], set()).add(s["port"])
    adjacency = {u: [v for v in seg if v != u and any(_oracle_decision(rules, seg[u], seg[v], p) == "allow" for p in ports.get(v, ()))] for u in seg}
    found = {}
    for entry in entries:
        dist = {entry: 0}
        queue = deque([entry])
        while queue:
            u = queue.popleft()
            if dist[u] == max_hops:
                continue
            for v in adjacency[u]:
                if v not in dist:
                    dist[v] = dist[u] + 1
                    queue.append(v)
        for target in targets:
            if target != entry and target in dist:
                found[(entry, target)] = dist[target]
    return found


def _random_segment_rules(rng: random.Random, prefix: str) -> list[dict]:
    return [
        {"name": f"{prefix}{i}", "action": rng.choice(["allow", "deny"]), "from": f"segment:{rng.choice(SEGMENTS)}", "to": f"segment:{rng.choice(SEGMENTS)}", "services": [f"tcp/{rng.choice([22, 443])}"]}
        for i in range(rng.randrange(0, 6))
    ]


@settings(derandomize=True, max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=10**6))
def test_permitted_cut_opened_match_oracle(seed):
    rng = random.Random(seed)
    ids = [f"d{i}" for i in range(8)]
    devices = [{"device_id": d, "segment_id": rng.choice(SEGMENTS), "device_class": "workstation"} for d in ids]
    services = [{"device_id": d, "port": p} for d in ids for p in (22, 443) if rng.random() < 0.6]
    entries = rng.sample(ids, 2)
    targets = rng.sample([d for d in ids if d not in entries], 2)
    current_rules, proposed_rules = _random_segment_rules(rng, "c"), _random_segment_rules(rng, "p")
    site = SiteConfig.model_validate(
        {
            "site": {"name": "oracle"},
            "segments": [{"id": s, "zone": s} for s in SEGMENTS],
            "policy": {"rules": current_rules},
            "attack_paths": {"entry_points": [{"device": entries}], "targets": [{"device": targets}], "max_hops": 4},
        }
    )
    twin = twin_from_records(devices, [], services)
    result = simulate(twin, site, {"rules": proposed_rules}, modes=("permitted",))
    before = _oracle_hops(devices, services, current_rules, entries, targets, 4)
    after = _oracle_hops(devices, services, proposed_rules, entries, targets, 4)
    paths = result.attack_paths
    assert _keys(result.attack_paths_cut, ("entry", "target")) == set(before) - set(after)
    assert _keys(result.attack_paths_opened, ("entry", "target")) == set(after) - set(before)
    got_before = {(r.entry, r.target): int(r.current_hops) for r in paths.itertuples() if r.change != "opened"}
    got_after = {(r.entry, r.target): int(r.proposed_hops) for r in paths.itertuples() if r.change != "cut"}
    assert got_before == before
    assert got_after == after


# ---------------------------------------------------------------------------
# Reading, writing and editing policies


def test_load_policy_error_names_line_and_field(tmp_path):
    path = tmp_path / "proposed.yaml"
    path.write_text("policy:\n  rules:\n  - name: r1\n    action: allow\n    from: any\n    to: any\n    services: [tcp/99999]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert f"{path}:7: field policy.rules.0.services" in str(info.value)


def test_load_policy_unknown_segment_names_rule(tmp_path):
    path = tmp_path / "proposed.yaml"
    path.write_text("rules:\n- name: r1\n  action: deny\n  from: segment:nope\n  to: any\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_policy(path, site=_site())
    assert f"{path}:4: field rules.0.from: rule 'r1' names segment 'nope'" in str(info.value)


def test_load_policy_invalid_yaml_names_line():
    with pytest.raises(ConfigError, match=r"<text>:2: invalid YAML"):
        load_policy("rules:\n\t- x\n", name="<text>")


def test_load_policy_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="policy file not found"):
        load_policy(str(tmp_path / "absent.yaml"))


def test_load_policy_reads_whole_site_yaml():
    site = load_site("sample_networks/pair/violating")
    assert load_policy("sample_networks/pair/violating/site.yaml") == site.policy


def test_policy_to_yaml_round_trip():
    for folder in ("sample_networks/hospital", "sample_networks/pair/violating"):
        site = load_site(folder)
        proposed = load_policy(f"{folder}/proposed_policy.yaml", site=site)
        for policy in (site.policy, proposed):
            assert load_policy(policy_to_yaml(policy)) == policy


def test_edit_policy_rejects_duplicate_name():
    site = _site(RULES)
    with pytest.raises(ConfigError, match="duplicate rule name 'ws-to-srv'"):
        edit_policy(site.policy, add=[{"name": "ws-to-srv", "action": "deny", "from": "any", "to": "any"}])


def test_edit_policy_rejects_required_deny():
    site = _site(RULES)
    with pytest.raises(ConfigError, match="rule 'pumps-to-srv' is required but its action is deny"):
        edit_policy(site.policy, replace={"pumps-to-srv": {**RULES[2], "action": "deny"}})


def test_edit_policy_unknown_rule_lists_known():
    site = _site(RULES)
    with pytest.raises(ConfigError, match="no rule named 'nope'.*deny-telnet-clinical"):
        edit_policy(site.policy, remove=["nope"])


def test_edit_policy_keeps_original():
    site = _site(RULES)
    edited = edit_policy(site.policy, remove=["ws-to-srv"], replace={"deny-telnet-clinical": {**RULES[0], "services": ["ssh"]}}, move=[("pumps-to-srv", 0)])
    assert [r.name for r in edited.rules] == ["pumps-to-srv", "deny-telnet-clinical"]
    assert edited.rules[1].services == ["ssh"]
    assert [r.name for r in site.policy.rules] == [r["name"] for r in RULES]


def test_policy_file_not_utf8_names_line_and_offset(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"policy:\n  rules: []\n  # caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: byte 0xe9 at offset 27 is not UTF-8")
