"""Scan planner: budgets per class, do-not-probe, fragile ports, windows and the dry run."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from twin.analysis._common import twin_from_records
from twin.api import Workspace
from twin.discovery.budget import DEFAULT_BUDGETS, FRAGILE_PORTS, Budget, budget_for, budgets_for
from twin.discovery.plan import check_window, nmap_arguments, plan_scan, render_dry_run
from twin.model.site import Discovery, parse_site

REPO = Path(__file__).resolve().parents[2]
HOSPITAL = REPO / "sample_networks" / "hospital"
SATURDAY_NOON = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)  # 2024-06-01 is a Saturday

SITE = """\
site: {name: Plan test, timezone: UTC}
segments:
  - {id: ward, cidrs: [10.20.0.0/24]}
discovery:
  scopes: [10.20.0.0/24]
  do_not_probe:
    addresses: [10.20.0.40, 10.20.1.50]
    mac_prefixes: ["001a2b3c"]
    classes: [camera]
  budgets:
    workstation: {ports: [ssh, tcp/8000-8002], max_rate: 25, max_connections: 2, host_timeout: 90s, retries: 0}
    printer: {ports: [http, tcp/22]}
    unknown: {probes: [connect], ports: [tcp/22, tcp/80, tcp/443], max_rate: 10, max_connections: 1, host_timeout: 60s}
"""

DEVICES = [
    {"device_id": "ws1", "device_class": "workstation", "ips": ["10.20.0.10"], "macs": ["02:00:00:00:00:10"]},
    {"device_id": "srv1", "device_class": "server", "ips": ["10.20.0.11"]},
    {"device_id": "pump1", "device_class": "infusion_pump", "ips": ["10.20.0.20"]},
    {"device_id": "mon1", "device_class": "patient_monitor", "ips": ["10.20.0.21"]},
    {"device_id": "vent1", "device_class": "ventilator", "ips": ["10.20.0.22"]},
    {"device_id": "prn1", "device_class": "printer", "ips": ["10.20.0.30"]},
    {"device_id": "dnp-addr", "device_class": "workstation", "ips": ["10.20.0.40"]},
    {"device_id": "dnp-mac", "device_class": "workstation", "ips": ["10.20.0.41"], "macs": ["00:1a:2b:3c:00:01"]},
    {"device_id": "dnp-class", "device_class": "camera", "ips": ["10.20.0.42"]},
    {"device_id": "two-ips", "device_class": "workstation", "ips": ["10.20.0.50", "10.20.1.50"]},
    {"device_id": "mystery", "device_class": "unknown", "ips": ["10.20.0.60"]},
    {"device_id": "plc1", "device_class": "hvac_controller", "ips": ["10.20.0.70"]},
    {"device_id": "sw1", "device_class": "switch", "ips": ["10.20.0.1"]},
]
TARGETS = [ip for device in DEVICES for ip in device["ips"] if ip.startswith("10.20.0.")] + ["10.20.0.99"]


@pytest.fixture
def small():
    return twin_from_records(DEVICES), parse_site(SITE, "site.yaml")


def _expected_probe_set(plan) -> set[tuple[str, str, int]]:
    expected = set()
    for group in plan.groups:
        for target in group.targets:
            expected |= {(target, "tcp", port) for port in group.budget.tcp_ports}
            expected |= {(target, "udp", port) for port in group.budget.udp_ports}
    return expected


def _parse_dry_run(text: str) -> tuple[set[tuple[str, str, int]], list[tuple[str, str, str]], set[str]]:
    """Return (port probes, every probe line as (target, where, kind), skipped targets) from dry-run text."""
    port_probes = set()
    lines = []
    skipped = set()
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "probe":
            target, where, kind = fields[1], fields[2], fields[3]
            lines.append((target, where, kind))
            proto, port = where.split("/")
            if kind in ("connect", "udp"):
                port_probes.add((target, proto, int(port)))
        elif fields and fields[0] == "skip":
            skipped.add(fields[1])
    return port_probes, lines, skipped


# -- hand-made twin -----------------------------------------------------------


def test_small_plan_targets_and_skips(small):
    twin, site = small
    plan = plan_scan(twin, site, targets=TARGETS, now=SATURDAY_NOON)
    assert set(plan.targets()) == {"10.20.0.10", "10.20.0.11", "10.20.0.30", "10.20.0.60", "10.20.0.99"}
    skipped = {(s.target, s.device_id, s.device_class) for s in plan.skipped}
    assert skipped == {
        ("10.20.0.20", "pump1", "infusion_pump"),
        ("10.20.0.21", "mon1", "patient_monitor"),
        ("10.20.0.22", "vent1", "ventilator"),
        ("10.20.0.40", "dnp-addr", "workstation"),  # rejected by the guard; the twin names the device
        ("10.20.0.41", "dnp-mac", "workstation"),
        ("10.20.0.42", "dnp-class", "camera"),
        ("10.20.0.50", "two-ips", "workstation"),
        ("10.20.0.70", "plc1", "hvac_controller"),
        ("10.20.0.1", "sw1", "switch"),
    }


def test_small_plan_skip_reasons(small):
    twin, site = small
    plan = plan_scan(twin, site, targets=TARGETS, now=SATURDAY_NOON)
    reasons = {s.target: s.reason for s in plan.skipped}
    assert "on the do_not_probe list (10.20.0.40/32)" in reasons["10.20.0.40"]
    assert "matches discovery.do_not_probe.mac_prefixes 00:1a:2b:3c" in reasons["10.20.0.41"]
    assert "class camera is on discovery.do_not_probe.classes" in reasons["10.20.0.42"]
    assert "address 10.20.1.50 of this device is on discovery.do_not_probe.addresses" in reasons["10.20.0.50"]
    for target in ("10.20.0.20", "10.20.0.21", "10.20.0.22", "10.20.0.70", "10.20.0.1"):
        assert "passive only" in reasons[target]


def test_small_plan_probe_set_matches_budgets(small):
    twin, site = small
    plan = plan_scan(twin, site, targets=TARGETS, now=SATURDAY_NOON)
    budgets = budgets_for(site)
    classes = {"10.20.0.10": "workstation", "10.20.0.11": "server", "10.20.0.30": "printer",
                "10.20.0.60": "unknown", "10.20.0.99": "unknown"}
    expected = set()
    for target, device_class in classes.items():
        budget = budget_for(device_class, budgets)
        expected |= {(target, "tcp", port) for port in budget.tcp_ports}
        expected |= {(target, "udp", port) for port in budget.udp_ports}
    assert plan.probe_set() == expected
    assert plan.probe_set() == _expected_probe_set(plan)


def test_site_budget_merged_over_default(small):
    _, site = small
    budgets = budgets_for(site)
    workstation = budgets["workstation"]
    assert workstation.tcp_ports == (22, 8000, 8001, 8002)
    assert (workstation.max_rate, workstation.max_connections, workstation.host_timeout_s, workstation.retries) == (25, 2, 90, 0)
    assert workstation.probes == DEFAULT_BUDGETS["workstation"].probes
    assert budgets["printer"].tcp_ports == (22, 80, 8080)
    assert budgets["server"] == DEFAULT_BUDGETS["server"]


def test_nmap_args_carry_budget_limits(small):
    twin, site = small
    plan = plan_scan(twin, site, targets=TARGETS, now=SATURDAY_NOON)
    assert plan.groups
    for group in plan.groups:
        budget = group.budget
        args = group.nmap_args
        assert args[:2] == ["-n", "-Pn"]
        assert "-sS" not in args
        assert args[args.index("--max-rate") + 1] == str(budget.max_rate)
        assert args[args.index("--max-parallelism") + 1] == str(budget.max_connections)
        assert args[args.index("--host-timeout") + 1] == f"{budget.host_timeout_s}s"
        assert args[args.index("--max-retries") + 1] == str(budget.retries)
        assert args[args.index("--max-hostgroup") + 1] == "1"
        assert ("-sT" in args) == bool(budget.tcp_ports)
        assert ("-sV" in args) == ("version" in budget.probes)
    workstation = next(g for g in plan.groups if g.budget.name == "workstation")
    assert workstation.targets == ["10.20.0.10"]
    assert " ".join(workstation.nmap_args) == (
        "-n -Pn -sT -p T:22,8000-8002 --max-rate 25 --max-parallelism 2 --max-hostgroup 1 "
        "--host-timeout 90s --max-retries 0 -sV --version-light"
    )


def test_nmap_args_udp_os_scripts():
    budget = Budget("custom", frozenset({"connect", "udp", "os", "scripts"}), (22, 23, 24, 80), (161,), 5, 1, 30, 2, ("banner",))
    assert nmap_arguments(budget) == [
        "-n", "-Pn", "-sT", "-sU", "-p", "T:22-24,80,U:161",
        "--max-rate", "5", "--max-parallelism", "1", "--max-hostgroup", "1", "--host-timeout", "30s", "--max-retries", "2",
        "-O", "--script", "banner",
    ]


def test_printer_never_gets_fragile_ports():
    site = parse_site(SITE.replace("printer: {ports: [http, tcp/22]}", "server: {ports: [tcp/1-1024, tcp/9000-9200]}"), "site.yaml")
    twin = twin_from_records(DEVICES)
    plan = plan_scan(twin, site, targets=TARGETS, now=SATURDAY_NOON)
    ports = {port for _, _, port in plan.probe_set()}
    assert ports & FRAGILE_PORTS == set()
    printer_ports = {port for target, _, port in plan.probe_set() if target == "10.20.0.30"}
    assert printer_ports == set(DEFAULT_BUDGETS["printer"].tcp_ports)
    server_ports = {port for target, _, port in plan.probe_set() if target == "10.20.0.11"}
    assert server_ports == (set(range(1, 1025)) | set(range(9000, 9201))) - FRAGILE_PORTS


def test_unknown_passive_unless_configured():
    without_unknown = "".join(line for line in SITE.splitlines(keepends=True) if not line.startswith("    unknown:"))
    site = parse_site(without_unknown, "site.yaml")
    assert "unknown" not in site.discovery.budgets
    assert budgets_for(site)["unknown"].passive
    assert DEFAULT_BUDGETS["unknown"].passive
    plan = plan_scan(twin_from_records(DEVICES), site, targets=["10.20.0.128/26", "10.20.0.60"], now=SATURDAY_NOON)
    assert plan.probes == []
    assert {(s.target, s.device_id, s.device_class) for s in plan.skipped} == {
        ("10.20.0.128/26", None, "unknown"), ("10.20.0.60", "mystery", "unknown"),
    }
    assert {s.rejected for s in plan.skipped} == {False}


def test_explicit_unknown_budget_wins():
    site = parse_site(SITE + "    unknown: {probes: [connect], ports: [tcp/443], max_rate: 3}\n", "site.yaml")
    unknown = budgets_for(site)["unknown"]
    assert (unknown.tcp_ports, unknown.max_rate, unknown.source) == ((443,), 3, "site")


def test_no_site_budgets_uses_default_unknown():
    site = parse_site("site: {name: Plain}\ndiscovery: {scopes: [10.20.0.0/24]}\n", "site.yaml")
    assert budgets_for(site)["unknown"] == DEFAULT_BUDGETS["unknown"]


def test_fragile_classes_default_passive():
    for device_class in ("infusion_pump", "patient_monitor", "ventilator", "hvac_controller", "iot_sensor",
                         "switch", "router", "firewall", "wireless_ap", "wireless_controller"):
        assert DEFAULT_BUDGETS[device_class].passive, device_class
    for budget in DEFAULT_BUDGETS.values():
        assert not set(budget.tcp_ports) & FRAGILE_PORTS
        assert "os" not in budget.probes
        assert "scripts" not in budget.probes


def test_default_targets_are_allowed_part_of_scopes(small):
    twin, site = small
    plan = plan_scan(twin, site, now=SATURDAY_NOON, max_targets=300)
    scope = ipaddress.ip_network("10.20.0.0/24")
    # 10.20.0.0 and .255 are the segment's network and broadcast addresses.
    refused = {"10.20.0.40", "10.20.0.0", "10.20.0.255"}
    passive_or_dnp = {"10.20.0.20", "10.20.0.21", "10.20.0.22", "10.20.0.41", "10.20.0.42", "10.20.0.50", "10.20.0.70", "10.20.0.1"}
    expected = {str(a) for a in scope} - refused - passive_or_dnp
    assert set(plan.targets()) == expected
    assert {"10.20.0.40/32", "10.20.0.0/32", "10.20.0.255/32"} <= {s.target for s in plan.skipped}


def test_max_targets_bounds_plan_and_warns(small):
    twin, site = small
    plan = plan_scan(twin, site, now=SATURDAY_NOON, max_targets=10)
    assert len(plan.targets()) == 10
    # Known devices come before unknown addresses.
    assert {"10.20.0.10", "10.20.0.11", "10.20.0.30", "10.20.0.60"} <= set(plan.targets())
    assert any("not planned because the plan is limited to 10 targets" in w for w in plan.warnings)


def test_max_targets_below_known_devices(small):
    twin, site = small
    plan = plan_scan(twin, site, now=SATURDAY_NOON, max_targets=2)
    assert set(plan.targets()) == {"10.20.0.10", "10.20.0.11"}
    # The printer and the unknown-class device are left out; passive devices are skipped as usual.
    assert any(w.startswith("2 addresses of devices in the twin are not planned") for w in plan.warnings)
    assert "10.20.0.20" in {s.target for s in plan.skipped}


def test_empty_scopes_plan_nothing():
    site = parse_site("site: {name: No scopes}\n", "site.yaml")
    plan = plan_scan(twin_from_records(DEVICES), site, targets=["10.20.0.10"], now=SATURDAY_NOON)
    assert plan.probes == []
    assert plan.groups == []
    assert "discovery.scopes is empty" in plan.skipped[0].reason


def test_refused_target_is_skipped_with_reason(small):
    twin, site = small
    plan = plan_scan(twin, site, targets=["10.21.0.5", "10.20.0.0/23"], now=SATURDAY_NOON)
    assert plan.probes == []
    reasons = {s.target: s.reason for s in plan.skipped}
    assert "outside every discovery scope" in reasons["10.21.0.5"]
    assert "give the allowed part instead" in reasons["10.20.0.0/23"]
    assert {s.target: s.rejected for s in plan.skipped} == {"10.21.0.5": True, "10.20.0.0/23": True}


def test_hostname_target_uses_resolver(small):
    twin, site = small
    plan = plan_scan(twin, site, targets=["ws1.ward.example"], now=SATURDAY_NOON, resolve=lambda name: ["10.20.0.10"])
    assert set(plan.targets()) == {"10.20.0.10"}


def test_dry_run_lists_every_probe(small):
    twin, site = small
    plan = plan_scan(twin, site, targets=TARGETS, now=SATURDAY_NOON)
    text = render_dry_run(plan)
    port_probes, lines, skipped = _parse_dry_run(text)
    assert port_probes == plan.probe_set()
    assert lines == [(p.target, f"{p.proto}/{p.port if p.port is not None else '*'}", p.kind) for p in plan.probes]
    assert skipped == {s.target for s in plan.skipped}
    for group in plan.groups:
        assert "nmap " + " ".join(group.nmap_args) in text
        assert f"max_rate {group.budget.max_rate}/s" in text
    assert "nothing is sent" in text.splitlines()[0]
    assert render_dry_run(plan) == text


# -- sample hospital ------------------------------------------------------------


@pytest.fixture(scope="module")
def hospital(tmp_path_factory):
    workspace = Workspace(tmp_path_factory.mktemp("plan") / "ws.sqlite")
    workspace.build(HOSPITAL)
    twin = workspace.twin()
    site = workspace.site()
    devices = twin.devices
    workstation = devices[devices["device_class"] == "workstation"].iloc[0]
    server = devices[devices["device_class"] == "server"].iloc[0]
    mac_prefix = workstation["macs"][0][:8]
    discovery = Discovery(
        scopes=["10.16.0.0/12"],
        do_not_probe={"addresses": [server["ips"][0]], "mac_prefixes": [mac_prefix], "classes": ["ventilator"]},
        # Discovery of unknown hosts is opt-in; this budget lets the plan reach its target limit.
        budgets={"unknown": {"probes": ["connect"], "ports": ["tcp/22", "tcp/443"], "max_rate": 10}},
    )
    site = site.model_copy(update={"discovery": discovery})
    return twin, site, {"mac_prefix": mac_prefix, "server_ip": server["ips"][0]}


def _ips_where(devices, mask) -> set[str]:
    return {ip for ips in devices.loc[mask, "ips"] for ip in ips}


def test_hospital_never_probes_fragile_or_do_not_probe(hospital):
    twin, site, chosen = hospital
    plan = plan_scan(twin, site, now=SATURDAY_NOON)
    devices = twin.devices
    probed = {p.target for p in plan.probes}
    assert probed
    passive_classes = {c for c, b in budgets_for(site).items() if b.passive}
    fragile = _ips_where(devices, devices["device_class"].isin(passive_classes | {"ventilator"}))
    assert len(fragile) > 400
    assert probed & fragile == set()
    dnp_mac = _ips_where(devices, devices["macs"].map(lambda macs: any(m.startswith(chosen["mac_prefix"]) for m in macs)))
    assert dnp_mac and probed & dnp_mac == set()
    assert chosen["server_ip"] not in probed


def _evidence_classes(devices) -> dict[str, set[str]]:
    """Map each address to the device class plus every class its class evidence names."""
    classes: dict[str, set[str]] = {}
    for ips, device_class, evidence in zip(devices["ips"], devices["device_class"], devices["class_evidence"]):
        named = {device_class} | {item["class"] for item in evidence if "class" in item}
        for ip in ips:
            classes.setdefault(ip, set()).update(named)
    return classes


def test_hospital_printers_and_budget_per_class(hospital):
    twin, site, _ = hospital
    plan = plan_scan(twin, site, now=SATURDAY_NOON)
    budgets = budgets_for(site)
    classes = {ip: cls for ips, cls in zip(twin.devices["ips"], twin.devices["device_class"]) for ip in ips}
    named = _evidence_classes(twin.devices)
    printer_ports = {port for target, _, port in plan.probe_set() if classes.get(target) == "printer"}
    assert printer_ports and not printer_ports & FRAGILE_PORTS
    overridden = set()
    for group in plan.groups:
        for target in group.targets:
            if target not in classes:
                assert group.budget == budget_for("unknown", budgets), target
                continue
            candidates = [budget_for(c, budgets) for c in named[target]]
            # No class the evidence names has a more conservative budget than the group's.
            assert all(group.budget.restrictiveness()[:-1] <= b.restrictiveness()[:-1] for b in candidates), target
            assert group.budget in candidates, target
            if group.budget != budget_for(classes[target], budgets):
                overridden.add(target)
    noted = {w.split("(", 1)[1].split(")", 1)[0] for w in plan.warnings if w.startswith("device ")}
    assert noted == overridden
    assert plan.probe_set() == _expected_probe_set(plan)


def test_hospital_dry_run_round_trip(hospital):
    twin, site, _ = hospital
    plan = plan_scan(twin, site, now=SATURDAY_NOON, max_targets=600)
    port_probes, lines, _ = _parse_dry_run(render_dry_run(plan))
    assert port_probes == plan.probe_set()
    assert len(lines) == len(plan.probes)
    assert len(plan.targets()) == 600


def test_hospital_default_unknown_never_probed(hospital):
    twin, site, _ = hospital
    default = site.model_copy(update={"discovery": site.discovery.model_copy(update={"budgets": {}})})
    plan = plan_scan(twin, default, now=SATURDAY_NOON, max_targets=600)
    known = {ip for ips in twin.devices["ips"] for ip in ips}
    assert plan.targets()
    assert set(plan.targets()) <= known
    assert {p.device_class for p in plan.probes} & {"unknown"} == set()


# -- maintenance windows ------------------------------------------------------------

WINDOW_SITE = """\
site: {name: Window test, timezone: Europe/Berlin}
discovery:
  scopes: [10.20.0.0/24]
  maintenance_windows:
    - {days: [sat], start: "22:00", end: "02:00"}
    - {days: [mon, tue, wed, thu, fri], start: 03:00, end: "04:30"}
"""
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    "local, is_open, next_start",
    [
        (datetime(2024, 6, 1, 21, 59), False, datetime(2024, 6, 1, 22, 0)),   # Saturday, just before
        (datetime(2024, 6, 1, 22, 0), True, None),                            # Saturday, opening minute
        (datetime(2024, 6, 2, 1, 30), True, None),                            # Sunday, after midnight
        (datetime(2024, 6, 2, 2, 0), False, datetime(2024, 6, 3, 3, 0)),      # Sunday, closed at end; next Monday 03:00
        (datetime(2024, 6, 3, 1, 30), False, datetime(2024, 6, 3, 3, 0)),     # Monday 01:30: Saturday window only
        (datetime(2024, 6, 5, 4, 29), True, None),                            # Wednesday inside the weekday window
        (datetime(2024, 6, 8, 3, 30), False, datetime(2024, 6, 8, 22, 0)),    # Saturday 03:30: weekday window not on sat
    ],
)
def test_window_across_midnight_and_weekdays(local, is_open, next_start):
    site = parse_site(WINDOW_SITE, "site.yaml")
    now = local.replace(tzinfo=BERLIN).astimezone(timezone.utc)
    check = check_window(site, now)
    assert check.open == is_open, check.reason
    expected_next = next_start.replace(tzinfo=BERLIN) if next_start else None
    assert check.next_start == expected_next
    assert check.configured


def test_window_uses_site_timezone():
    site = parse_site(WINDOW_SITE.replace("Europe/Berlin", "America/New_York"), "site.yaml")
    # 07:00 UTC on Wednesday is 03:00 in New York (EDT): open. 03:00 UTC is 23:00 on Tuesday there: closed.
    assert check_window(site, datetime(2024, 6, 5, 7, 0, tzinfo=timezone.utc)).open
    assert not check_window(site, datetime(2024, 6, 5, 3, 0, tzinfo=timezone.utc)).open
    # A naive time is UTC.
    assert check_window(site, datetime(2024, 6, 5, 7, 0)).open


def test_window_closes_and_reason():
    site = parse_site(WINDOW_SITE, "site.yaml")
    check = check_window(site, datetime(2024, 6, 2, 1, 30, tzinfo=BERLIN))
    assert check.closes == datetime(2024, 6, 2, 2, 0, tzinfo=BERLIN)
    assert check.reason.startswith("inside a maintenance window (sat 22:00-02:00;")
    assert "Europe/Berlin) until 2024-06-02T02:00:00+02:00" in check.reason
    closed = check_window(site, datetime(2024, 6, 3, 1, 30, tzinfo=BERLIN))
    assert "outside every maintenance window" in closed.reason
    assert "2024-06-03T03:00:00+02:00" in closed.reason


def test_window_whole_day_and_unconfigured():
    site = parse_site(WINDOW_SITE.replace('start: "22:00", end: "02:00"', 'start: "00:00", end: "24:00"'), "site.yaml")
    assert check_window(site, datetime(2024, 6, 1, 23, 59, tzinfo=BERLIN)).open
    assert not check_window(site, datetime(2024, 6, 2, 0, 0, tzinfo=BERLIN)).open
    plain = parse_site("site: {name: Any time}\ndiscovery: {scopes: [10.20.0.0/24]}\n", "site.yaml")
    check = check_window(plain, SATURDAY_NOON)
    assert check.open and not check.configured


def test_plan_warns_outside_window():
    site = parse_site(WINDOW_SITE, "site.yaml")
    plan = plan_scan(None, site, targets=["10.20.0.5"], now=datetime(2024, 6, 3, 12, 0, tzinfo=BERLIN))
    assert not plan.window.open
    assert any(w.startswith("the scan will not start now") for w in plan.warnings)
    assert "window: closed" in render_dry_run(plan)
    # The plan itself is still made, so the dry run shows what would be sent.
    assert plan.probe_set() == {("10.20.0.5", "tcp", port) for port in DEFAULT_BUDGETS["unknown"].tcp_ports}


def test_window_next_start_within_a_week():
    site = parse_site(WINDOW_SITE.replace("[mon, tue, wed, thu, fri]", "[sun]"), "site.yaml")
    now = datetime(2024, 6, 2, 4, 30, tzinfo=BERLIN)  # Sunday, just after the Sunday window closed
    assert check_window(site, now).next_start == datetime(2024, 6, 8, 22, 0, tzinfo=BERLIN)
    assert check_window(site, now).next_start - now < timedelta(days=7)


def test_docs_defaults_table_matches_budgets():
    from twin.discovery.plan import _port_ranges

    text = (REPO / "docs" / "scanning.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`") and cells[0].strip("`") in DEFAULT_BUDGETS:
            rows[cells[0].strip("`")] = tuple(cells[1:])
    expected = {}
    for name, budget in DEFAULT_BUDGETS.items():
        if budget.passive:
            expected[name] = ("none (passive)", "", "", "", "")
        else:
            probes = ", ".join(k for k in ("connect", "udp", "version", "os", "scripts") if k in budget.probes)
            expected[name] = (probes, _port_ranges(budget.tcp_ports), str(budget.max_rate),
                              str(budget.max_connections), f"{budget.host_timeout_s} s")
    assert rows == expected


# -- unknown and inventory devices, warnings, durations, snapshots -------------


@pytest.mark.parametrize(
    "device_type, device_class",
    [
        ("Dialysis Machine", "dialysis_machine"),
        ("Haemodialysis Unit", "dialysis_machine"),
        ("Glucose Meter", "lab_analyzer"),
        ("Defibrillator", "patient_monitor"),
        ("AED", "patient_monitor"),
        ("Anaesthesia Machine", "ventilator"),
        ("ECG", "patient_monitor"),
        ("EEG", "patient_monitor"),
        ("Syringe Pump", "infusion_pump"),
        ("Enteral Feeding Pump", "infusion_pump"),
        ("Blood Gas Analyzer", "lab_analyzer"),
        ("Bedside Monitor", "patient_monitor"),
        ("Telemetry Transmitter", "patient_monitor"),
        ("Incubator", None),
    ],
)
def test_clinical_inventory_types_map_to_classes(device_type, device_class):
    from twin.discovery.inventory import device_type_to_class

    assert device_type_to_class(device_type) == device_class
    if device_class is not None:
        assert DEFAULT_BUDGETS[device_class].passive


def test_inventory_device_of_unknown_type_never_probed():
    devices = [
        {"device_id": "inc1", "device_class": "unknown", "ips": ["10.20.0.32"], "sources": ["inventory"]},
        {"device_id": "flow1", "device_class": "unknown", "ips": ["10.20.0.33"], "sources": ["flows"]},
    ]
    # The site's unknown budget probes, yet the inventory device is skipped.
    plan = plan_scan(twin_from_records(devices), parse_site(SITE, "site.yaml"), targets=["10.20.0.32", "10.20.0.33"],
                     now=SATURDAY_NOON)
    assert plan.targets() == ["10.20.0.33"]
    [skip] = plan.skipped
    assert (skip.target, skip.device_id, skip.device_class, skip.rejected) == ("10.20.0.32", "inc1", "unknown", False)
    assert "in the medical-device inventory with an unrecognised type" in skip.reason


def test_raw_print_ports_dropped_with_warning():
    site = parse_site(SITE.replace("printer: {ports: [http, tcp/22]}", "printer: {ports: [http]}\n    server: {ports: [tcp/22, tcp/9100-9101, tcp/515]}"), "site.yaml")
    plan = plan_scan(twin_from_records(DEVICES), site, targets=["10.20.0.11"], now=SATURDAY_NOON)
    assert {port for _, _, port in plan.probe_set()} == {22}
    assert plan.warnings[-1] == ("budget server lists tcp/515, tcp/9100, tcp/9101, raw-print and printer-management "
                                 "ports that are never probed; they are left out of the scan")


def test_worst_case_duration_over_window_warns():
    site = parse_site(SITE + "  maintenance_windows:\n    - {days: [sat], start: '12:00', end: '12:10'}\n", "site.yaml")
    plan = plan_scan(twin_from_records(DEVICES), site, targets=["10.20.0.128/26"], now=SATURDAY_NOON)
    assert [g.worst_case_s for g in plan.groups] == [64 * 60]
    assert plan.worst_case_s == 64 * 60
    assert plan.warnings[-1].startswith("the scan takes up to 1 h 4 min (one host timeout per target, one target at a "
                                        "time), but the current maintenance window has 10 min left")
    text = render_dry_run(plan)
    assert "worst-case duration 1 h 4 min" in text
    assert "worst case 1 h 4 min" in text
    short = plan_scan(twin_from_records(DEVICES), site, targets=["10.20.0.128/30"], now=SATURDAY_NOON)
    assert not any(w.startswith("the scan takes up to") for w in short.warnings)


def test_limit_warning_names_real_fix(small):
    twin, site = small
    plan = plan_scan(twin, site, now=SATURDAY_NOON, max_targets=10)
    assert any(w.endswith("narrow the targets with --target or split the scope") for w in plan.warnings)
    assert not any("raise the limit" in w for w in plan.warnings)


def test_dry_run_header_names_resolved_hosts(small):
    twin, site = small
    plan = plan_scan(twin, site, targets=["ws1.ward.example"], now=SATURDAY_NOON, resolve=lambda name: ["10.20.0.10"])
    header = render_dry_run(plan).splitlines()[0]
    assert header.endswith("; host names ws1.ward.example were resolved by the system resolver (hosts file or DNS)")
    assert "host names" not in render_dry_run(plan_scan(twin, site, targets=["10.20.0.10"], now=SATURDAY_NOON))


def test_do_not_probe_device_rejected_with_class(small):
    twin, site = small
    plan = plan_scan(twin, site, targets=["10.20.0.40", "10.20.0.41", "10.20.0.20"], now=SATURDAY_NOON)
    assert {(s.target, s.device_id, s.device_class, s.rejected) for s in plan.skipped} == {
        ("10.20.0.40", "dnp-addr", "workstation", True),
        ("10.20.0.41", "dnp-mac", "workstation", True),
        ("10.20.0.20", "pump1", "infusion_pump", False),
    }


def _small_site_dir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "site.yaml").write_text(SITE.replace("Plan test", "Snap test"), encoding="utf-8")
    (folder / "inventory").mkdir()
    (folder / "inventory" / "cmms.csv").write_text(
        "Asset Tag,Device Type,IP Address\nA1,Infusion Pump,10.20.0.20\n", encoding="utf-8")
    return folder


def test_snapshot_check_missing_other_site_and_stale(tmp_path):
    import os
    import time

    from twin.discovery.plan import check_snapshot
    from twin.model.site import load_site

    folder = _small_site_dir(tmp_path / "site")
    site = load_site(folder)
    workspace = tmp_path / "w.sqlite"
    missing = check_snapshot(workspace, site, folder)
    assert (missing.twin, missing.current) == (None, False)
    assert missing.problems == [f"workspace {workspace} does not exist, so no device has a class; "
                                f"run `twin build {folder} -w {workspace}` first"]

    other = _small_site_dir(tmp_path / "other")
    (other / "site.yaml").write_text(SITE.replace("Plan test", "Other site"), encoding="utf-8")
    Workspace(workspace).build(other)
    assert check_snapshot(workspace, site, folder).problems == [
        f"workspace {workspace} holds no snapshot of site 'Snap test'; run `twin build {folder} -w {workspace}` first"]

    Workspace(workspace).build(folder)
    current = check_snapshot(workspace, site, folder)
    assert current.problems == []
    assert set(current.twin.devices["device_class"]) == {"infusion_pump"}

    # Scanner output and reports never make the snapshot stale; an inventory change does.
    (folder / "nmap" / "active").mkdir(parents=True)
    (folder / "nmap" / "active" / "g01.xml").write_text("<nmaprun/>", encoding="utf-8")
    assert check_snapshot(workspace, site, folder).problems == []
    later = time.time() + 5
    os.utime(folder / "inventory" / "cmms.csv", (later, later))
    [problem] = check_snapshot(workspace, site, folder).problems
    assert "1 discovery file changed since snapshot" in problem
    assert problem.endswith(f": modified inventory/cmms.csv; devices added there would be probed as unknown, so "
                            f"rebuild first: twin build {folder} -w {workspace}")


# -- class evidence, budgets turned on, order, durations, snapshot contents ----------


EVIDENCE_DEVICES = [
    {"device_id": "nurse-pc", "device_class": "workstation", "ips": ["10.20.0.10"], "class_evidence": [
        {"class": "workstation", "weight": 0.95, "rule": "inventory device type", "value": "Nurse Station PC"},
        {"class": "infusion_pump", "weight": 0.85, "rule": "site model pattern", "value": "X15"},
        {"rule": "property source", "value": {"model": "inventory"}},
    ]},
    {"device_id": "srv-phone", "device_class": "server", "ips": ["10.20.0.11"], "class_evidence": [
        {"class": "server", "weight": 0.8, "rule": "sysDescr", "value": "Windows Server 2019"},
        {"class": "ip_phone", "weight": 0.6, "rule": "listening port", "value": "5060"},
    ]},
    {"device_id": "ws-cam", "device_class": "workstation", "ips": ["10.20.0.12"], "class_evidence": [
        {"class": "camera", "weight": 0.55, "rule": "host-name pattern", "value": "cam-12"},
    ]},
    {"device_id": "plain-ws", "device_class": "workstation", "ips": ["10.20.0.13"], "class_evidence": [
        {"class": "workstation", "weight": 0.95, "rule": "inventory device type", "value": "Desktop"},
        {"class": "server", "weight": 0.55, "rule": "host-name pattern", "value": "srv-13"},
    ]},
]


def test_evidence_class_more_conservative_budget_applies():
    site = parse_site(SITE, "site.yaml")
    twin = twin_from_records(EVIDENCE_DEVICES)
    plan = plan_scan(twin, site, targets=["10.20.0.10", "10.20.0.11", "10.20.0.12", "10.20.0.13"], now=SATURDAY_NOON)
    assert {(g.budget.name, tuple(g.targets)) for g in plan.groups} == {("ip_phone", ("10.20.0.11",)),
                                                                        ("workstation", ("10.20.0.13",))}
    assert {(s.target, s.device_id, s.device_class, s.rejected) for s in plan.skipped} == {
        ("10.20.0.10", "nurse-pc", "workstation", False),
        ("10.20.0.12", "ws-cam", "workstation", True),  # the do-not-probe list rejects an explicit target
    }
    reasons = {s.target: s.reason for s in plan.skipped}
    assert reasons["10.20.0.10"] == (
        "class workstation, but its class evidence also names infusion_pump (site model pattern 'X15'), so the more "
        "conservative infusion_pump budget applies; the infusion_pump budget is passive only (probes: none; source: default)"
    )
    assert reasons["10.20.0.12"] == (
        "its class evidence names class camera (host-name pattern 'cam-12'), which is on discovery.do_not_probe.classes"
    )
    assert [w for w in plan.warnings if w.startswith("device ")] == [
        "device srv-phone (10.20.0.11) is class server, but its class evidence also names ip_phone (listening port "
        "'5060'), so the more conservative ip_phone budget applies"
    ]
    assert {p.device_class for p in plan.probes if p.target == "10.20.0.11"} == {"server"}


def test_inventory_nurse_pc_with_pump_model_never_probed(tmp_path):
    """A pump model on a row typed as a PC: the site pattern makes it a pump, and without the pattern the evidence still does."""
    folder = tmp_path / "site"
    (folder / "inventory").mkdir(parents=True)
    patterns = "classification: {model_patterns: {infusion_pump: ['^X15$']}}\n"
    (folder / "site.yaml").write_text(SITE.replace("Plan test", "Nurse PC") + patterns, encoding="utf-8")
    (folder / "inventory" / "cmms.csv").write_text(
        "Asset Tag,Device Type,Model,IP Address\n"
        "A1,Nurse Station PC,X15,10.20.0.15\n"
        "A2,Nurse Station PC,Alaris 8015,10.20.0.16\n"
        "A3,Nurse Station PC,OptiPlex 7090,10.20.0.17\n",
        encoding="utf-8",
    )
    workspace = Workspace(tmp_path / "w.sqlite")
    workspace.build(folder)
    twin = workspace.twin()
    classes = {ips[0]: cls for ips, cls in zip(twin.devices["ips"], twin.devices["device_class"])}
    # The site pattern wins over the inventory type; a built-in model rule does not.
    assert classes == {"10.20.0.15": "infusion_pump", "10.20.0.16": "workstation", "10.20.0.17": "workstation"}
    plan = plan_scan(twin, workspace.site(), targets=["10.20.0.15", "10.20.0.16", "10.20.0.17"], now=SATURDAY_NOON)
    assert plan.targets() == ["10.20.0.17"]
    assert {s.target: s.device_class for s in plan.skipped} == {"10.20.0.15": "infusion_pump", "10.20.0.16": "workstation"}
    assert "also names infusion_pump (model name 'Alaris 8015')" in next(
        s.reason for s in plan.skipped if s.target == "10.20.0.16")


def test_site_pattern_outranks_inventory_type():
    from twin.resolve.classify import classify

    facts = {"inventory_type": "Nurse Station PC", "model": "X15", "hostname": "ward-7.example"}
    device_class, _, evidence = classify(facts, model_patterns={"infusion_pump": ["^X15$"]})
    assert device_class == "infusion_pump"
    assert {(e["class"], e["rule"]) for e in evidence} == {("infusion_pump", "site model pattern"),
                                                          ("workstation", "inventory device type")}
    by_host, _, _ = classify(facts, hostname_patterns={"patient_monitor": ["^ward-"]})
    assert by_host == "patient_monitor"
    both, _, _ = classify(facts, model_patterns={"infusion_pump": ["^X15$"]}, hostname_patterns={"patient_monitor": ["^ward-"]})
    assert both == "infusion_pump"
    assert classify(facts)[0] == "workstation"


def test_passive_class_turned_on_gets_default_pacing():
    site = parse_site(
        "site: {name: Turned on}\ndiscovery:\n  scopes: [10.20.0.0/24]\n  budgets:\n"
        "    iot_sensor: {probes: [connect], ports: [tcp/80]}\n"
        "    hvac_controller: {probes: [connect], ports: [tcp/80], retries: 0, host_timeout: 30s}\n",
        "site.yaml",
    )
    budgets = budgets_for(site)
    sensor = budgets["iot_sensor"]
    assert (sensor.max_rate, sensor.max_connections, sensor.host_timeout_s, sensor.retries) == (10, 1, 60, 1)
    hvac = budgets["hvac_controller"]
    assert (hvac.max_rate, hvac.max_connections, hvac.host_timeout_s, hvac.retries) == (10, 1, 30, 0)
    # A class left passive keeps the passive default.
    assert budgets["unknown"].passive
    assert budgets["unknown"].retries == 0


def test_skip_lines_in_address_order(small):
    twin, site = small
    plan = plan_scan(twin, site, targets=TARGETS, now=SATURDAY_NOON)
    targets = [s.target for s in plan.skipped]
    assert targets == sorted(targets, key=lambda t: int(ipaddress.ip_address(t)))
    _, _, skipped_in_text = _parse_dry_run(render_dry_run(plan))
    lines = [line.split()[1] for line in render_dry_run(plan).splitlines() if line.startswith("skip ")]
    assert lines == targets
    scoped = plan_scan(twin, site, now=SATURDAY_NOON, max_targets=300)
    keys = [ipaddress.ip_network(s.target.split(",")[0].split()[0], strict=False) for s in scoped.skipped]
    assert keys == sorted(keys, key=lambda n: (int(n.network_address), n.prefixlen))


def test_singular_limit_warning(small):
    twin, site = small
    plan = plan_scan(twin, site, now=SATURDAY_NOON, max_targets=3)
    assert any(w.startswith("1 address of devices in the twin is not planned") for w in plan.warnings)


def test_long_scan_without_window_warns():
    site = parse_site(SITE.replace("scopes: [10.20.0.0/24]", "scopes: [10.20.0.0/16]"), "site.yaml")
    plan = plan_scan(None, site, targets=["10.20.4.0/22"], now=SATURDAY_NOON)
    assert plan.worst_case_s == 1024 * 60  # the /16 scope has no segment, so every address of the /22
    assert plan.warnings[-1] == (
        "the scan takes up to 17 h 4 min (one host timeout per target, one target at a time), more than 8 h, and no "
        "maintenance window limits it; narrow the targets with --target, lower host_timeout, or configure "
        "discovery.maintenance_windows"
    )
    short = plan_scan(None, site, targets=["10.20.4.0/24"], now=SATURDAY_NOON)
    assert not any(w.startswith("the scan takes up to") for w in short.warnings)


def _build_snapshot(tmp_path):
    from twin.model.site import load_site

    folder = _small_site_dir(tmp_path / "site")
    workspace = tmp_path / "w.sqlite"
    Workspace(workspace).build(folder)
    return folder, load_site(folder), workspace


def _set_mtime(path: Path, seconds_ago: float) -> None:
    import os
    import time

    old = time.time() - seconds_ago
    os.utime(path, (old, old))


def test_snapshot_check_added_file_with_old_date(tmp_path):
    from twin.discovery.plan import check_snapshot

    folder, site, workspace = _build_snapshot(tmp_path)
    morning = folder / "inventory" / "pumps.csv"
    morning.write_text("Asset Tag,Device Type,IP Address\nP9,Infusion Pump,10.20.0.99\n", encoding="utf-8")
    _set_mtime(morning, 6 * 3600)  # as `cp -p` of a morning export keeps it
    check = check_snapshot(workspace, site, folder)
    [problem] = check.problems
    assert ": added inventory/pumps.csv; devices added there would be probed as unknown" in problem
    assert "1 discovery file changed since snapshot" in problem


def test_snapshot_check_replaced_file_with_old_date(tmp_path):
    from twin.discovery.plan import check_snapshot

    folder, site, workspace = _build_snapshot(tmp_path)
    inventory = folder / "inventory" / "cmms.csv"
    inventory.write_text("Asset Tag,Device Type,IP Address\nA1,Infusion Pump,10.20.0.20\nA2,Ventilator,10.20.0.21\n",
                         encoding="utf-8")
    _set_mtime(inventory, 6 * 3600)
    [problem] = check_snapshot(workspace, site, folder).problems
    assert ": modified inventory/cmms.csv;" in problem


def test_snapshot_check_removed_file_and_scanner_output(tmp_path):
    from twin.discovery.plan import check_snapshot

    folder, site, workspace = _build_snapshot(tmp_path)
    flows = folder / "inventory" / "extra.csv"
    flows.parent.mkdir(exist_ok=True)
    flows.write_text("Asset Tag,IP Address,MAC Address,Device Type\nA-1,10.20.0.99,02:00:00:00:00:99,Infusion Pump\n", encoding="utf-8")
    scanner = folder / "nmap" / "active" / "r1" / "g01.xml"
    scanner.parent.mkdir(parents=True)
    scanner.write_text("<nmaprun/>", encoding="utf-8")
    Workspace(workspace).build(folder)
    assert check_snapshot(workspace, site, folder).problems == []
    # The scanner's own output may come and go; a discovery file may not.
    scanner.unlink()
    assert check_snapshot(workspace, site, folder).problems == []
    flows.unlink()
    [problem] = check_snapshot(workspace, site, folder).problems
    assert ": removed inventory/extra.csv;" in problem


def test_snapshot_check_relative_site_folder(tmp_path, monkeypatch):
    from twin.discovery.plan import check_snapshot
    from twin.model.site import load_site

    folder = _small_site_dir(tmp_path / "sites" / "ward")
    workspace = tmp_path / "w.sqlite"
    monkeypatch.chdir(tmp_path)
    Workspace(workspace).build(Path("sites") / "ward")
    site = load_site(folder)
    # Checked from the build's folder, from inside the site and with an absolute path.
    assert check_snapshot(workspace, site, Path("sites") / "ward").problems == []
    monkeypatch.chdir(folder)
    assert check_snapshot(workspace, site, Path(".")).problems == []
    assert check_snapshot(workspace, site, folder).problems == []
    added = folder / "inventory" / "late.csv"
    added.write_text("Asset Tag,Device Type,IP Address\nL1,Infusion Pump,10.20.0.98\n", encoding="utf-8")
    _set_mtime(added, 3600)
    [problem] = check_snapshot(workspace, site, Path(".")).problems
    assert ": added inventory/late.csv;" in problem


def test_adjacent_windows_form_one_span():
    text = WINDOW_SITE.replace('start: "22:00", end: "02:00"', 'start: "22:00", end: "23:20"')
    text = text.replace('- {days: [sat], start: "22:00", end: "23:20"}',
                        '- {days: [sat], start: "22:00", end: "23:20"}\n    - {days: [sat], start: "23:20", end: "24:00"}')
    site = parse_site(text, "site.yaml")
    check = check_window(site, datetime(2024, 6, 1, 23, 19, tzinfo=BERLIN))
    assert check.open and check.closes == datetime(2024, 6, 2, 0, 0, tzinfo=BERLIN)


def test_snapshot_check_backups_and_site_yaml(tmp_path):
    from twin.discovery.plan import check_snapshot

    folder, site, workspace = _build_snapshot(tmp_path)
    (folder / "site.yaml.orig").write_text((folder / "site.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    assert check_snapshot(workspace, site, folder).problems == []
    config = folder / "site.yaml"
    config.write_text(config.read_text(encoding="utf-8") + "\n# classification edited\n", encoding="utf-8")
    [problem] = check_snapshot(workspace, site, folder).problems
    assert "site.yaml changed since snapshot" in problem
    assert "rebuild first" in problem
