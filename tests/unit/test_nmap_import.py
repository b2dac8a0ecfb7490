"""nmap XML import on a small hand-written scan, including cut-off and damaged files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from twin.discovery import Raw, detect_format, import_path
from twin.discovery import scan
from twin.exceptions import InputFormatError
from twin.model.observation import Identity, Kind

WARD_SCAN = Path(__file__).resolve().parents[1] / "data" / "nmap" / "ward_scan.xml"

MONITOR = Identity(macs=("00:09:fb:12:34:56",), ips=("10.40.1.2",), hostname="mon-icu-02")
GATEWAY = Identity(ips=("2001:db8::5",), hostname="pacs-gw.example.org")


def summary(result) -> set[tuple]:
    """Reduce observations to comparable tuples: kind, subject, time and key attrs."""
    rows = set()
    for obs in result.observations:
        if obs.kind == Kind.DEVICE:
            rows.add((obs.kind, obs.subject, obs.seen_at, obs.attrs.get("vendor"), obs.attrs.get("os"), obs.attrs.get("os_accuracy")))
        else:
            a = obs.attrs
            rows.add((obs.kind, obs.subject, obs.seen_at, a["proto"], a["port"], a["state"], a["name"], a["product"], a["version"], a["tls"]))
    return rows


def test_ward_scan_whole_result():
    result = scan.import_file(WARD_SCAN)

    assert summary(result) == {
        (Kind.DEVICE, MONITOR, 1704103260.0, "Philips Medical Systems", "Linux 4.15 - 5.6", 95),
        (Kind.SERVICE, MONITOR, 1704103260.0, "tcp", 104, "open", "dicom", "DCMTK", "3.6.7", False),
        (Kind.SERVICE, MONITOR, 1704103260.0, "tcp", 443, "open", "http", "lighttpd", "1.4.59", True),
        (Kind.SERVICE, MONITOR, 1704103260.0, "udp", 161, "open|filtered", "snmp", None, None, False),
        # No starttime/endtime on this host: the <nmaprun start> time applies.
        (Kind.DEVICE, GATEWAY, 1704103200.0, None, None, None),
        (Kind.SERVICE, GATEWAY, 1704103200.0, "tcp", 8443, "open", "https-alt", None, None, True),
    }
    assert result.counts == {"hosts_up": 2, "hosts_down": 2, "ports_open": 3, "services": 4}
    assert (result.records_read, result.records_skipped, result.issues) == (4, 0, [])
    assert result.source == "nmap"


def test_ward_scan_os_classes_and_cpes():
    result = scan.import_file(WARD_SCAN)
    device = next(o for o in result.observations if o.kind == Kind.DEVICE and o.subject == MONITOR)

    # Only the classes of the best match (accuracy 95) count, not the 88 % guess.
    assert device.attrs["os_classes"] == [
        {"type": "general purpose", "vendor": "Linux", "osfamily": "Linux", "osgen": "4.X", "accuracy": 95, "cpes": ["cpe:/o:linux:linux_kernel:4"]},
        {"type": "general purpose", "vendor": "Linux", "osfamily": "Linux", "osgen": "5.X", "accuracy": 95, "cpes": ["cpe:/o:linux:linux_kernel:5"]},
    ]
    assert device.attrs["cpes"] == ["cpe:/o:linux:linux_kernel:4", "cpe:/o:linux:linux_kernel:5"]
    assert device.evidence["osmatch"] == [{"name": "Linux 4.15 - 5.6", "accuracy": 95}, {"name": "Linux 3.2", "accuracy": 88}]
    assert device.evidence["hostnames"] == [
        {"name": "mon-icu-02.ward.example.org", "type": "PTR"},
        {"name": "mon-icu-02", "type": "user"},
    ]
    assert device.origin == f"{WARD_SCAN}:6"


def test_service_flags_and_cpes():
    result = scan.import_file(WARD_SCAN)
    services = {(o.attrs["port"], o.attrs["uncertain"], tuple(o.attrs["cpes"])) for o in result.observations if o.kind == Kind.SERVICE}

    assert services == {
        (104, False, ("cpe:/a:offis:dcmtk:3.6.7",)),
        (443, False, ("cpe:/a:lighttpd:lighttpd:1.4.59",)),
        (161, True, ()),
        (8443, False, ()),
    }


def host_end_offsets(data: bytes) -> list[int]:
    return [m.end() for m in re.finditer(rb"</host>", data)]


def test_cut_off_scan_keeps_completed_hosts():
    data = WARD_SCAN.read_bytes()
    ends = host_end_offsets(data)
    full = summary(scan.import_file(WARD_SCAN))

    # Cut the file at many points; every host closed before the cut is kept.
    for cut in range(ends[0] - 40, len(data) - 1, 37):
        result = scan.transform(Raw("cut.xml", data[:cut], 0.0))
        closed = sum(1 for end in ends if end <= cut)
        assert result.records_read == closed, cut
        assert summary(result) <= full
        assert len(result.issues) == 1, cut
        issue = result.issues[0]
        assert issue.line == data[:cut].count(b"\n") + 1 or issue.line == data[:cut].count(b"\n"), cut
        assert issue.offset is not None and issue.offset <= cut


def test_cut_inside_second_up_host_reports_it():
    data = WARD_SCAN.read_bytes()
    start = data.index(b"<address addr=\"2001:DB8")
    result = scan.transform(Raw("cut.xml", data[:start + 10], 0.0))

    assert result.counts["hosts_up"] == 1
    assert result.counts["hosts_down"] == 1
    assert result.records_skipped == 1
    assert "host opened at line 33" in result.issues[0].message


def test_invalid_bytes_are_reported_and_escaped():
    data = WARD_SCAN.read_bytes().replace(b'product="DCMTK"', b'product="DC\x01MT\xffK"')
    result = scan.transform(Raw("bad.xml", data, 0.0))

    first = data.index(b"\x01")
    second = data.index(b"\xff")
    line = data[:first].count(b"\n") + 1
    assert {(i.line, i.offset) for i in result.issues} == {(line, first), (line, second)}
    products = {o.attrs["product"] for o in result.observations if o.kind == Kind.SERVICE}
    assert "DC\\x01MT\\xffK" in products
    assert result.counts["services"] == 4


def test_entity_expansion_is_rejected():
    bomb = b'<?xml version="1.0"?><!DOCTYPE nmaprun [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]><nmaprun>&b;</nmaprun>'
    with pytest.raises(InputFormatError, match="unsafe XML"):
        scan.transform(Raw("bomb.xml", bomb, 0.0))


def test_other_xml_is_rejected():
    with pytest.raises(InputFormatError, match="nmaprun"):
        scan.transform(Raw("other.xml", b"<?xml version='1.0'?><config/>", 0.0))


def test_detect_format():
    assert detect_format(WARD_SCAN) == "nmap-xml"


def test_targets_marked_up_by_pn_that_answered_nothing_are_not_devices(tmp_path):
    # nmap -Pn marks every target up (reason user-set); a target with only
    # filtered ports and no MAC gave no sign of existing.
    path = tmp_path / "pn.xml"
    path.write_text(
        '<?xml version="1.0"?>\n<nmaprun scanner="nmap" args="nmap -n -Pn -sT -p 22,80 10.9.0.17 10.9.0.50" start="1733356800">\n'
        '<host starttime="1733356800" endtime="1733356801"><status state="up" reason="user-set"/>'
        '<address addr="10.9.0.17" addrtype="ipv4"/><ports><extraports state="filtered" count="2"/></ports></host>\n'
        '<host starttime="1733356800" endtime="1733356801"><status state="up" reason="user-set"/>'
        '<address addr="10.9.0.50" addrtype="ipv4"/><ports><port protocol="tcp" portid="22">'
        '<state state="closed" reason="conn-refused"/></port></ports></host>\n'
        '<runstats><finished time="1733356802"/></runstats></nmaprun>\n',
        encoding="utf-8",
    )
    result = import_path(path)
    devices = {o.subject.ips for o in result.observations if o.kind == Kind.DEVICE}
    assert devices == {("10.9.0.50",)}
    assert result.counts["hosts_without_answer"] == 1
