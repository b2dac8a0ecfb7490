"""The SNMP importer on real recorded walks (snmpsim-data recordings in the
shared corpus folder next to the repository).

Expected counts are computed here from the raw ``OID|TYPE|VALUE`` lines,
independently of the importer.
"""

import time
from collections import Counter
from pathlib import Path

import pytest

from twin.discovery import snmp
from twin.model.observation import Kind

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "snmp"
FILES = sorted(CORPUS.glob("*.snmprec")) if CORPUS.is_dir() else []

pytestmark = pytest.mark.corpus

LLDP_REM_CHASSIS_ID = "1.0.8802.1.1.2.1.4.1.1.5."
LLDP_REM_CHASSIS_SUBTYPE = "1.0.8802.1.1.2.1.4.1.1.4."
CDP_DEVICE_ID = "1.3.6.1.4.1.9.9.23.1.2.1.1.6."
IF_INDEX = "1.3.6.1.2.1.2.2.1.1."
ENT_CLASS = "1.3.6.1.2.1.47.1.1.1.1.5."
ARP_PHYS = "1.3.6.1.2.1.4.22.1.2."
DOT1D_FDB_STATUS = "1.3.6.1.2.1.17.4.3.1.3."
DOT1D_FDB_PORT = "1.3.6.1.2.1.17.4.3.1.2."
DOT1Q_FDB_STATUS = "1.3.6.1.2.1.17.7.1.2.2.1.3."
DOT1Q_FDB_PORT = "1.3.6.1.2.1.17.7.1.2.2.1.2."


def corpus_file(fragment: str) -> Path:
    if not FILES:
        pytest.skip(f"corpus folder {CORPUS} is absent")
    matches = [path for path in FILES if fragment in path.name]
    if not matches:
        pytest.skip(f"no corpus walk named *{fragment}*")
    return matches[0]


def raw_lines(path: Path) -> list[tuple[str, str, str]]:
    lines = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line and not line.startswith("#"):
            oid, kind, value = line.split("|", 2)
            lines.append((oid, kind, value))
    return lines


def column(lines, prefix):
    """Return ``{index: (type, value)}`` of one table column."""
    return {oid[len(prefix):]: (kind, value) for oid, kind, value in lines if oid.startswith(prefix)}


def expected_fdb(lines) -> int:
    """Count forwarding entries: Q-BRIDGE rows plus BRIDGE rows whose (MAC, port) Q-BRIDGE lacks."""
    skipped = {"2", "4"}  # invalid, self
    q_status, q_port = column(lines, DOT1Q_FDB_STATUS), column(lines, DOT1Q_FDB_PORT)
    d_status, d_port = column(lines, DOT1D_FDB_STATUS), column(lines, DOT1D_FDB_PORT)
    pairs = set()
    count = 0
    for index, (_, status) in q_status.items():
        if status not in skipped:
            count += 1
            mac = index.split(".", 1)[1]
            pairs.add((mac, q_port.get(index, ("", ""))[1]))
    for index, (_, status) in d_status.items():
        if status not in skipped and (index, d_port.get(index, ("", ""))[1]) not in pairs:
            count += 1
    return count


def expected_arp(lines) -> int:
    return sum(
        1
        for kind, value in column(lines, ARP_PHYS).values()
        if kind == "4x" and len(value) == 12 and int(value, 16) != 0
    )


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_walk_imports_with_counts_from_raw_lines(path):
    lines = raw_lines(path)
    result = snmp.import_file(path)
    kinds = Counter(obs.kind for obs in result.observations)

    assert result.issues == []
    assert result.records_read == len(lines)
    assert kinds[Kind.DEVICE] == 1
    assert kinds[Kind.INTERFACE] == len(column(lines, IF_INDEX))
    assert result.counts.get("lldpRemTable", 0) == len(column(lines, LLDP_REM_CHASSIS_ID))
    assert result.counts.get("cdpCacheTable", 0) == len(column(lines, CDP_DEVICE_ID))
    assert kinds[Kind.NEIGHBOR] == len(column(lines, LLDP_REM_CHASSIS_ID)) + len(column(lines, CDP_DEVICE_ID))
    assert result.counts.get("entPhysicalTable", 0) == len(column(lines, ENT_CLASS))
    assert kinds[Kind.FDB] == expected_fdb(lines)
    assert kinds[Kind.ARP] == expected_arp(lines)


def test_procurve_lldp_subtypes_and_shared_port():
    path = corpus_file("procurve")
    result = snmp.import_file(path)
    lldp = [obs.attrs for obs in result.observations if obs.kind == Kind.NEIGHBOR and obs.attrs["protocol"] == "lldp"]
    cdp = [obs.attrs for obs in result.observations if obs.kind == Kind.NEIGHBOR and obs.attrs["protocol"] == "cdp"]
    raw_subtypes = {value for _, value in column(raw_lines(path), LLDP_REM_CHASSIS_SUBTYPE).values()}

    assert raw_subtypes == {"4", "7"}
    assert {attrs["remote_chassis_id_subtype"] for attrs in lldp} == {"mac_address", "local"}
    assert len(lldp) == 5
    assert len(cdp) == 5
    ports = Counter(attrs["local_port"] for attrs in lldp)
    assert max(ports.values()) == 2
    # The locally assigned chassis id is text and carries no MAC.
    assert {attrs["remote_chassis_id"] for attrs in lldp if attrs["remote_chassis_id_subtype"] == "local"} == {
        "NWPU-CA-5548-01(SSI183706KP)"
    }
    assert all("remote_mac" in attrs for attrs in lldp if attrs["remote_chassis_id_subtype"] == "mac_address")


def test_procurve_imports_fast():
    path = corpus_file("procurve")
    start = time.perf_counter()
    snmp.import_file(path)
    assert time.perf_counter() - start < 2.0


def test_catalyst_cdp_only():
    result = snmp.import_file(corpus_file("c3750"))
    protocols = Counter(obs.attrs["protocol"] for obs in result.observations if obs.kind == Kind.NEIGHBOR)
    assert protocols == {"cdp": 125}
    assert all(obs.attrs.get("local_port") for obs in result.observations if obs.kind == Kind.NEIGHBOR)


def test_arista_neighbors_arp_entity():
    result = snmp.import_file(corpus_file("arista"))
    kinds = Counter(obs.kind for obs in result.observations)
    assert kinds[Kind.NEIGHBOR] == 2
    assert kinds[Kind.ARP] == 30
    assert result.counts["entPhysicalTable"] == 280
    assert result.counts["dot1qTpFdbTable"] > 0
    neighbors = {(obs.attrs["local_port"], obs.attrs["remote_port_id"]) for obs in result.observations if obs.kind == Kind.NEIGHBOR}
    assert neighbors == {("Ethernet47", "Ethernet23"), ("Ethernet48", "Ethernet24")}


def test_windows_host_identity():
    result = snmp.import_file(corpus_file("windows"))
    device = result.observations[0]
    # 127.0.0.1 and 0.0.0.0 in ipAddrTable do not identify the host.
    assert device.subject.ips == ("192.168.1.9",)
    assert device.attrs["snmp_agent"] is True
