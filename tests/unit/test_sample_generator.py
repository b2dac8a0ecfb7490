"""Tests of the sample-network generator (twin.sample).

The policy check here is a second, separate first-match evaluation written
on the parsed site.yaml, so a bug in the generator's own evaluation cannot
hide itself.
"""

from __future__ import annotations

import csv
import filecmp
import ipaddress
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from twin.model.site import parse_site
from twin.sample import generate_pair, generate_site

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "sample_networks"
QUERIES = ("misplaced_devices", "segment_violations", "external_exposure", "flat_segments", "attack_paths")
SNMPREC_LINE = re.compile(r"^[0-9]+(\.[0-9]+)*\|[0-9]+x?\|.*$")


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pair")
    generate_pair(out, seed=7)
    return out


@pytest.fixture(scope="module")
def hospital(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hospital")
    generate_site(out, devices=1500, seed=7)
    return out


def _all_sites(pair: Path, hospital: Path) -> list[Path]:
    return [pair / "compliant", pair / "violating", hospital]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _assert_same_tree(left: Path, right: Path) -> None:
    assert _files(left) == _files(right)
    _match, mismatch, errors = filecmp.cmpfiles(left, right, _files(left), shallow=False)
    assert mismatch == []
    assert errors == []


def _truth(site: Path) -> dict:
    return yaml.safe_load((site / "ground_truth.yaml").read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------
# Determinism and committed samples


def test_generate_site_is_deterministic(tmp_path):
    generate_site(tmp_path / "one", devices=400, seed=11)
    generate_site(tmp_path / "two", devices=400, seed=11)
    _assert_same_tree(tmp_path / "one", tmp_path / "two")


def test_seed_changes_output(tmp_path):
    generate_site(tmp_path / "one", devices=400, seed=11)
    generate_site(tmp_path / "two", devices=400, seed=12)
    assert (tmp_path / "one" / "flows" / "conn.log").read_bytes() != (tmp_path / "two" / "flows" / "conn.log").read_bytes()


def test_committed_hospital_matches_generator(hospital):
    if not (COMMITTED / "hospital").exists():
        pytest.fail("sample_networks/hospital is missing; run: twin sample --devices 1500 --seed 7 sample_networks/hospital")
    _assert_same_tree(COMMITTED / "hospital", hospital)


def test_committed_pair_matches_generator(pair):
    for scenario in ("compliant", "violating"):
        assert (COMMITTED / "pair" / scenario).exists(), f"sample_networks/pair/{scenario} is missing"
        _assert_same_tree(COMMITTED / "pair" / scenario, pair / scenario)


def test_invalid_arguments_rejected(tmp_path):
    from twin.exceptions import ConfigError

    with pytest.raises(ConfigError, match="unknown sample scenario"):
        generate_site(tmp_path, scenario="clinic")
    with pytest.raises(ConfigError, match="invalid device count"):
        generate_site(tmp_path, devices=10)


# ---------------------------------------------------------------------------
# File formats


def test_site_yaml_validates(pair, hospital):
    for site in _all_sites(pair, hospital):
        config = parse_site((site / "site.yaml").read_text(encoding="utf-8"), str(site / "site.yaml"))
        assert config.policy.default_action == "deny"
        assert any(rule.required for rule in config.policy.rules)
        zones = {s.zone for s in config.segments}
        assert zones == {"clinical", "it", "voice", "guest", "building", "dmz", "management"}


def test_nmap_xml_structure(hospital):
    files = sorted((hospital / "nmap").glob("*.xml"))
    assert files
    for path in files:
        root = ET.parse(path).getroot()
        assert root.tag == "nmaprun"
        assert root.find("scaninfo").get("protocol") == "tcp"
        hosts = root.findall("host")
        assert hosts
        for host in hosts:
            assert host.find("status").get("state") == "up"
            kinds = {a.get("addrtype") for a in host.findall("address")}
            assert kinds == {"ipv4", "mac"}
            assert host.findall("ports/port")
            assert host.find("os/osmatch/osclass") is not None
        assert root.find("runstats/hosts").get("up") == str(len(hosts))


def test_flow_files_structure(hospital):
    lines = (hospital / "flows" / "conn.log").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#separator \\x09"
    fields = next(line for line in lines if line.startswith("#fields")).split("\t")[1:]
    types = next(line for line in lines if line.startswith("#types")).split("\t")[1:]
    assert len(fields) == len(types)
    assert lines[-1].startswith("#close\t")
    rows = [line.split("\t") for line in lines if not line.startswith("#")]
    assert rows
    assert {len(row) for row in rows} == {len(fields)}
    stamps = [float(row[0]) for row in rows]
    assert stamps == sorted(stamps)

    text = (hospital / "flows" / "nfdump.csv").read_text(encoding="utf-8").splitlines()
    header = text[0].split(",")
    assert header[:8] == ["ts", "te", "td", "sa", "da", "sp", "dp", "pr"]
    summary_at = text.index("Summary")
    assert {len(row.split(",")) for row in text[1:summary_at]} == {len(header)}
    assert text[summary_at + 1] == "flows,bytes,packets,avg_bps,avg_pps,avg_bpp"
    assert int(text[summary_at + 2].split(",")[0]) == summary_at - 1


def test_inventory_csv_columns(hospital):
    with (hospital / "inventory" / "cmms_export.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows
    assert list(rows[0]) == ["Asset Tag", "Serial Number", "Manufacturer", "Model", "Device Type", "Department",
                             "Location", "Building", "MAC Address", "IP Address", "Hostname", "Status"]
    types = {row["Device Type"] for row in rows}
    assert {"Infusion Pump", "Patient Monitor", "CT Scanner", "Server"} <= types


def _snmprec(path: Path) -> list[tuple[tuple[int, ...], str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        assert SNMPREC_LINE.match(line), f"{path.name}: bad snmprec line {line!r}"
        oid, kind, value = line.split("|", 2)
        rows.append((tuple(int(x) for x in oid.split(".")), kind, value))
    return rows


def test_snmprec_sorted_and_typed(hospital):
    for path in sorted((hospital / "snmp").glob("*.snmprec")):
        rows = _snmprec(path)
        oids = [r[0] for r in rows]
        assert oids == sorted(oids), f"{path.name} is not sorted by OID"
        assert len(set(oids)) == len(oids)
        for _oid, kind, value in rows:
            if kind.endswith("x"):
                assert re.fullmatch(r"([0-9a-f]{2})*", value), f"{path.name}: bad hex value {value!r}"


def _devices(site: Path) -> list[dict]:
    with (site / "ground_truth_devices.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_every_mac_in_fdb_of_its_port(hospital):
    bridge_ports: dict[tuple[str, str], int] = {}
    if_names: dict[tuple[str, int], str] = {}
    for path in (hospital / "snmp").glob("sw-*.snmprec"):
        rows = _snmprec(path)
        base_if = {oid[-1]: int(v) for oid, _k, v in rows if oid[:11] == (1, 3, 6, 1, 2, 1, 17, 1, 4, 1, 2)}
        names = {oid[-1]: v for oid, _k, v in rows if oid[:11] == (1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 1)}
        for oid, _kind, value in rows:
            if oid[:11] == (1, 3, 6, 1, 2, 1, 17, 4, 3, 1, 2):
                mac = ":".join(f"{b:02x}" for b in oid[11:])
                bridge_ports[(path.stem, mac)] = int(value)
        for port, if_index in base_if.items():
            if_names[(path.stem, port)] = names[if_index]
    attached = [d for d in _devices(hospital) if d["switch"]]
    assert attached
    found = {(d["switch"], d["mac"]): if_names.get((d["switch"], bridge_ports.get((d["switch"], d["mac"]), -1)))
             for d in attached}
    assert found == {(d["switch"], d["mac"]): d["port"] for d in attached}


def test_core_arp_covers_every_device(hospital):
    rows = _snmprec(hospital / "snmp" / "core-rtr-01.snmprec")
    arp = {}
    for oid, _kind, value in rows:
        if oid[:10] == (1, 3, 6, 1, 2, 1, 4, 22, 1, 2):
            arp[".".join(map(str, oid[11:]))] = ":".join(value[i:i + 2] for i in range(0, 12, 2))
    devices = {d["ip"]: d["mac"] for d in _devices(hospital) if d["hostname"] != "core-rtr-01"}
    assert arp == devices


def test_lldp_json_names_switch(hospital):
    files = sorted((hospital / "lldp").glob("*.json"))
    assert len(files) == 2
    devices = {d["hostname"]: d for d in _devices(hospital)}
    for path in files:
        neighbour = json.loads(path.read_text(encoding="utf-8"))["lldp"]["interface"]["eth0"]
        (switch_name,) = neighbour["chassis"]
        assert switch_name == devices[path.stem]["switch"]
        assert neighbour["port"]["id"] == {"type": "ifname", "value": devices[path.stem]["port"]}


def test_vendor_ouis_are_registered(hospital):
    import netaddr

    unregistered = set()
    for d in _devices(hospital):
        if d["device_class"] == "unknown":
            assert int(d["mac"][:2], 16) & 0x02, f"guest MAC {d['mac']} is not locally administered"
            continue
        try:
            netaddr.EUI(d["mac"]).oui.registration()
        except netaddr.NotRegisteredError:
            unregistered.add(d["mac"][:8])
    assert unregistered == set()


# ---------------------------------------------------------------------------
# Policy and ground truth, checked independently


def _edges(site: Path) -> set[tuple[str, str, str, int]]:
    edges = set()
    for line in (site / "flows" / "conn.log").read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            f = line.split("\t")
            edges.add((f[2], f[4], f[6], int(f[5])))
    for line in (site / "flows" / "nfdump.csv").read_text(encoding="utf-8").splitlines()[1:]:
        if line == "Summary":
            break
        f = line.split(",")
        edges.add((f[3], f[4], f[7].lower(), int(f[6])))
    return edges


class _Checker:
    """A plain first-match evaluation of the parsed policy, one flow at a time."""

    def __init__(self, site: Path) -> None:
        self.config = parse_site((site / "site.yaml").read_text(encoding="utf-8"))
        self.devices = {d["ip"]: d for d in _devices(site)}
        self.zones = {s.id: s.zone for s in self.config.segments}

    def _matches(self, selector, ip: str) -> bool:
        device = self.devices.get(ip)
        address = ipaddress.ip_address(ip)
        if selector.any:
            return device is not None
        if selector.internet and device is not None:
            return False
        if not selector.internet and device is None:
            return False
        checks = []
        if selector.cidr:
            checks.append(any(address in ipaddress.ip_network(c) for c in selector.cidr))
        if device is not None:
            pairs = [(selector.segment, device["segment_id"]), (selector.zone, self.zones[device["segment_id"]]),
                     (selector.device_class, device["device_class"]), (selector.device, ip),
                     (selector.criticality, device["criticality"]), (selector.building, device["building"])]
            checks += [value in wanted for wanted, value in pairs if wanted]
        return all(checks)

    def decide(self, src: str, dst: str, proto: str, port: int) -> tuple[bool, str]:
        for rule in self.config.policy.rules:
            if not any(spec.matches(proto, port) for spec in rule.service_specs()):
                continue
            if self._matches(rule.from_, src) and self._matches(rule.to, dst):
                return rule.action == "allow", rule.name
        a, b = self.devices.get(src), self.devices.get(dst)
        if a and b and a["segment_id"] == b["segment_id"]:
            return self.config.policy.intra_segment == "allow", "default:intra-segment"
        if a is None or b is None:
            return self.config.policy.default_action == "allow", "default:internet"
        return self.config.policy.default_action == "allow", "default:inter-segment"


def test_only_planted_flows_are_denied(pair, hospital):
    for site in _all_sites(pair, hospital):
        checker = _Checker(site)
        denied = set()
        for src, dst, proto, port in _edges(site):
            allowed, rule = checker.decide(src, dst, proto, port)
            if not allowed:
                denied.add((src, dst, proto, port, rule))
        expected = {(v["src_ip"], v["dst_ip"], v["proto"], v["dst_port"], v["rule"])
                    for v in _truth(site)["findings"]["segment_violations"]}
        assert denied == expected, site.name


def test_truth_counts_match_files(pair, hospital):
    for site in _all_sites(pair, hospital):
        truth = _truth(site)
        assert truth["counts"]["edges"] == len(_edges(site))
        assert truth["counts"]["devices"] == len(_devices(site))
        assert truth["counts"]["segments"] == len(parse_site((site / "site.yaml").read_text()).segments)


def test_violating_pair_has_every_finding_kind(pair):
    findings = _truth(pair / "violating")["findings"]
    assert {q: bool(findings[q]) for q in QUERIES} == dict.fromkeys(QUERIES, True)


def test_compliant_pair_has_no_findings(pair):
    findings = _truth(pair / "compliant")["findings"]
    assert {q: findings[q] for q in QUERIES} == {q: [] for q in QUERIES}


def test_hospital_truth_misplaced_and_flat(hospital):
    devices = _devices(hospital)
    config = parse_site((hospital / "site.yaml").read_text(encoding="utf-8"))
    designated = {s.id: set(s.designated_classes) for s in config.segments}
    misplaced = {(d["ip"], d["segment_id"], d["device_class"]) for d in devices
                 if d["device_class"] not in designated[d["segment_id"]]}
    findings = _truth(hospital)["findings"]
    assert {(m["ip"], m["segment_id"], m["device_class"]) for m in findings["misplaced_devices"]} == misplaced
    assert {f["segment_id"] for f in findings["flat_segments"]} == {"a-pumps", "b-monitors", "c-it"}


def test_hospital_attack_paths_follow_planted_chain(hospital):
    """Check the internet chain hop by hop against the observed edges."""
    findings = _truth(hospital)["findings"]
    internet = [p for p in findings["attack_paths"] if p["entry"] == "internet"]
    assert [p["min_hops"] for p in internet] == [3]
    edges = {(s, d) for s, d, _p, _q in _edges(hospital)}
    target = internet[0]["target"]
    inbound = {d for s, d in edges if not s.startswith("10.") and not ipaddress.ip_address(s) in
               ipaddress.ip_network("192.0.2.0/24")}
    two_hop = {d for s, d in edges if s in inbound}
    assert any((w, target) in edges for w in two_hop)
