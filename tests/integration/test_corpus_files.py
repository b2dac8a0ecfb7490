"""Import real third-party nmap XML and Zeek conn.log files from the shared corpus.

Expected counts and sums are computed here from the raw files with the
standard library (a text scan, ElementTree, csv, json), independently of the
importers.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from xml.etree import ElementTree

import pytest

from twin.discovery import flows, scan
from twin.model.observation import Kind

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"

pytestmark = pytest.mark.corpus


def nmap_files() -> list[Path]:
    return sorted((CORPUS / "nmap").glob("*.xml")) or [Path("missing.xml")]


def zeek_files() -> list[Path]:
    return sorted((CORPUS / "zeek").glob("*.log")) or [Path("missing.log")]


def skip_when_absent(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"corpus file {path} not present")


# --------------------------------------------------------------------------
# nmap


def expected_nmap_counts(path: Path) -> dict[str, int]:
    """Count hosts and open ports with the stdlib parser (trusted corpus file)."""
    root = ElementTree.parse(path).getroot()  # the corpus is trusted, read-only input
    counts = {"hosts_up": 0, "hosts_down": 0, "ports_open": 0, "services": 0}
    for host in root.iter("host"):
        if host.find("status").get("state") != "up":
            counts["hosts_down"] += 1
            continue
        counts["hosts_up"] += 1
        for port in host.iter("port"):
            state = port.find("state").get("state")
            counts["ports_open"] += state == "open"
            counts["services"] += state == "open" or (state == "open|filtered" and port.get("protocol") == "udp")
    return counts


@pytest.mark.parametrize("path", nmap_files(), ids=lambda p: p.name)
def test_nmap_corpus_counts(path):
    skip_when_absent(path)
    result = scan.import_file(path)

    assert result.counts == expected_nmap_counts(path)
    text = path.read_text(errors="replace")
    assert result.counts["hosts_up"] == len(re.findall(r'<host[ >][^\n]*\n?<status state="up"', text))
    assert result.records_read == text.count("<host>") + text.count("<host ")
    assert (result.records_skipped, result.issues) == (0, [])


@pytest.mark.parametrize("path", nmap_files(), ids=lambda p: p.name)
def test_nmap_corpus_identities(path):
    skip_when_absent(path)
    result = scan.import_file(path)
    root = ElementTree.parse(path).getroot()

    expected = set()
    for host in root.iter("host"):
        if host.find("status").get("state") != "up":
            continue
        macs = tuple(a.get("addr").lower() for a in host.findall("address") if a.get("addrtype") == "mac")
        ips = tuple(a.get("addr") for a in host.findall("address") if a.get("addrtype") in ("ipv4", "ipv6"))
        vendor = next((a.get("vendor") for a in host.findall("address") if a.get("addrtype") == "mac"), None)
        expected.add((macs, ips, vendor))
    devices = {(o.subject.macs, o.subject.ips, o.attrs.get("vendor")) for o in result.observations if o.kind == Kind.DEVICE}
    assert devices == expected


def test_nmap_full_scan_has_three_vendors():
    path = CORPUS / "nmap" / "libnmap_full_sudo6_lan_24.xml"
    skip_when_absent(path)
    result = scan.import_file(path)

    vendors = {o.attrs.get("vendor") for o in result.observations if o.kind == Kind.DEVICE}
    assert vendors == {"Sagemcom", "Apple", "Intel Corporate", None}


def test_nmap_os_scan_has_classes_and_cpes():
    path = CORPUS / "nmap" / "libnmap_os_scan6_osclass_cpe.xml"
    skip_when_absent(path)
    result = scan.import_file(path)

    with_classes = [o for o in result.observations if o.kind == Kind.DEVICE and o.attrs.get("os_classes")]
    assert with_classes
    for obs in with_classes:
        assert obs.attrs["cpes"] == list(dict.fromkeys(c for cls in obs.attrs["os_classes"] for c in cls["cpes"]))


@pytest.mark.parametrize("path", nmap_files(), ids=lambda p: p.name)
def test_nmap_corpus_truncated_copy_keeps_completed_hosts(path, tmp_path):
    skip_when_absent(path)
    data = path.read_bytes()
    ends = [m.end() for m in re.finditer(rb"</host>", data)]
    up_starts = [m.start() for m in re.finditer(rb'<host[ >][^\n]*\n?<status state="up"', data)]
    # Cut in the middle of the last host that is up.
    cut = up_starts[-1] + (ends[-1] - up_starts[-1]) // 2
    truncated = tmp_path / path.name
    truncated.write_bytes(data[:cut])

    result = scan.import_file(truncated)

    completed = [end for end in ends if end <= cut]
    assert result.records_read == len(completed)
    assert result.counts["hosts_up"] == len(up_starts) - 1
    assert result.records_skipped == 1
    assert [(i.path, i.line) for i in result.issues] == [(str(truncated), data[:cut].count(b"\n") + 1)]


# --------------------------------------------------------------------------
# Zeek


def zeek_rows(path: Path) -> list[dict]:
    """Read conn.log rows with csv or json, returning the fields the test sums."""
    text = path.read_text()
    if text.lstrip().startswith("{"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    lines = text.splitlines()
    fields = next(line for line in lines if line.startswith("#fields")).split("\t")[1:]
    data = [line for line in lines if line and not line.startswith("#")]
    rows = []
    for values in csv.reader(data, delimiter="\t", quoting=csv.QUOTE_NONE):
        rows.append({name: (None if value in ("-", "(empty)") else value) for name, value in zip(fields, values)})
    return rows


def number(value) -> int:
    return int(value) if value is not None else 0


@pytest.mark.parametrize("path", zeek_files(), ids=lambda p: p.name)
def test_zeek_corpus_rows_and_totals(path):
    skip_when_absent(path)
    rows = zeek_rows(path)
    result = flows.import_file(path)

    assert result.records_read == len(rows)
    assert (result.records_skipped, result.issues) == (0, [])
    assert int(result.flows["flows"].sum()) == len(rows)
    assert int(result.flows["bytes"].sum()) == sum(number(r.get("orig_bytes")) + number(r.get("resp_bytes")) for r in rows)
    assert int(result.flows["packets"].sum()) == sum(number(r.get("orig_pkts")) + number(r.get("resp_pkts")) for r in rows)
    assert result.counts == {"flows": len(rows), "edges": len(result.flows)}


@pytest.mark.parametrize("path", zeek_files(), ids=lambda p: p.name)
def test_zeek_corpus_edges(path):
    skip_when_absent(path)
    import ipaddress

    edges: dict[tuple, list[int]] = {}
    for r in zeek_rows(path):
        proto = r["proto"].lower()
        port = 0 if proto == "icmp" else int(r["id.resp_p"])
        key = (str(ipaddress.ip_address(r["id.orig_h"])), str(ipaddress.ip_address(r["id.resp_h"])), proto, port)
        totals = edges.setdefault(key, [0, 0])
        totals[0] += number(r.get("orig_bytes")) + number(r.get("resp_bytes"))
        totals[1] += 1
    result = flows.import_file(path)

    got = {
        (row.src_ip, row.dst_ip, row.proto, row.dst_port): [row.bytes, row.flows]
        for row in result.flows.itertuples(index=False)
    }
    assert got == edges


def test_zeek_tsv_corpus_has_ipv6_icmp_and_set_values():
    path = CORPUS / "zeek" / "rita_zeek_conn_tsv_proxy_network.log"
    skip_when_absent(path)
    result = flows.import_file(path)

    icmp = result.flows[result.flows["proto"] == "icmp"]
    assert len(icmp) > 0
    assert set(icmp["dst_port"]) == {0}
    assert all(":" in ip for ip in icmp["src_ip"])
