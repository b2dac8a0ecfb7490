"""End to end: build the violating sample, build an edited copy, and check what compute_changes and
write_change_report find."""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from twin.api import Workspace
from twin.exceptions import SnapshotNotFound
from twin.report.changes import write_change_report
from twin.report.diff import compute_changes, finding_keys, recorded_findings
from twin.report.model import ReportContext

SAMPLE = Path(__file__).resolve().parents[2] / "sample_networks" / "pair" / "violating"

# The edits made to the copy: one infusion pump removed everywhere, the lab
# analyzer moved from a-lab (10.16.7.0/24) into a-imaging (10.16.6.0/24), and
# one RDP flow from a workstation to another pump added to conn.log.
REMOVED_IP = "10.16.4.12"
REMOVED_MAC = "9C:C8:AE:0F:1E:54"
MOVED_OLD_IP, MOVED_NEW_IP = "10.16.7.10", "10.16.6.50"
RDP_SRC, RDP_DST, RDP_PORT = "10.16.10.11", "10.16.4.11", 3389


def _hex_ip(ip: str) -> str:
    return "".join(f"{int(part):02x}" for part in ip.split("."))


def _oid_mac(mac: str) -> str:
    return ".".join(str(int(octet, 16)) for octet in re.split("[:-]", mac))


def _edit_inventory(site: Path) -> None:
    inventory = site / "inventory" / "cmms_export.csv"
    lines = inventory.read_text().splitlines(keepends=True)
    kept = [line for line in lines if f",{REMOVED_IP}," not in line]
    assert len(kept) == len(lines) - 1
    inventory.write_text("".join(kept).replace(f",{MOVED_OLD_IP},", f",{MOVED_NEW_IP},"))


def _edit_conn_log(site: Path) -> None:
    conn = site / "flows" / "conn.log"
    kept = []
    for line in conn.read_text().splitlines(keepends=True):
        if line.startswith("#"):
            kept.append(line)
            continue
        fields = line.rstrip("\n").split("\t")
        if REMOVED_IP in (fields[2], fields[4]):
            continue
        fields = [MOVED_NEW_IP if value == MOVED_OLD_IP else value for value in fields]
        kept.append("\t".join(fields) + "\n")
    rdp = [
        "1710200000.000000", "CnewRdpFlow0000001", RDP_SRC, "50123", RDP_DST, str(RDP_PORT), "tcp", "-",
        "2.5", "1200", "5400", "SF", "T", "T", "0", "ShADadFf", "10", "1600", "12", "6000", "-",
    ]
    close = next((i for i, line in enumerate(kept) if line.startswith("#close")), len(kept))
    kept.insert(close, "\t".join(rdp) + "\n")
    conn.write_text("".join(kept))


def _edit_snmp(site: Path) -> None:
    """Drop the pump's ARP and FDB entries and move the analyzer's ARP entry to its new address."""
    for snmprec in (site / "snmp").glob("*.snmprec"):
        out = []
        for line in snmprec.read_text().splitlines(keepends=True):
            oid, _, rest = line.partition("|")
            if oid.endswith("." + REMOVED_IP) or oid.endswith("." + _oid_mac(REMOVED_MAC)):
                continue
            if oid.endswith("." + MOVED_OLD_IP):
                oid = oid[: -len(MOVED_OLD_IP)] + MOVED_NEW_IP
                rest = rest.replace(_hex_ip(MOVED_OLD_IP), _hex_ip(MOVED_NEW_IP))
                line = oid + "|" + rest
            out.append(line)
        snmprec.write_text("".join(out))


def _edited_copy(tmp_path: Path) -> Path:
    site = tmp_path / "edited"
    shutil.copytree(SAMPLE, site)
    _edit_inventory(site)
    _edit_conn_log(site)
    _edit_snmp(site)
    return site


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("changes")
    workspace = Workspace(tmp_path / "workspace.sqlite")
    workspace.build(SAMPLE)
    workspace.build(_edited_copy(tmp_path))
    return workspace


def _device_id(devices, ip: str) -> str:
    rows = devices[devices["ips"].map(lambda ips: ip in ips)]
    assert len(rows) == 1, f"expected one device with {ip}"
    return rows.iloc[0]["device_id"]


def _segment_of(workspace: Workspace, ip: str) -> str:
    address = ipaddress.ip_address(ip)
    for segment in workspace.site().segments:
        if any(address in ipaddress.ip_network(cidr) for cidr in segment.cidrs):
            return segment.id
    raise AssertionError(f"no segment contains {ip}")


def test_one_snapshot_raises(tmp_path):
    workspace = Workspace(tmp_path / "one.sqlite")
    workspace.build(SAMPLE)
    with pytest.raises(SnapshotNotFound, match="build the site twice"):
        compute_changes(workspace)


def test_change_set_lists_edits(built):
    runs = built.snapshots()["run_id"].tolist()
    old_devices = built.twin(runs[0]).devices
    changes = compute_changes(built)

    pump = _device_id(old_devices, REMOVED_IP)
    analyzer = _device_id(old_devices, MOVED_OLD_IP)
    workstation = _device_id(old_devices, RDP_SRC)
    target = _device_id(old_devices, RDP_DST)

    assert (changes.old_run_id, changes.new_run_id) == (runs[0], runs[1])
    assert set(changes.devices_new["device_id"]) == set()
    assert set(zip(changes.devices_gone["device_id"], changes.devices_gone["ip"])) == {(pump, REMOVED_IP)}
    changed = changes.devices_changed
    assert set(zip(changed["device_id"], changed["ip"], changed["field"], changed["old"], changed["new"])) == {
        (analyzer, MOVED_NEW_IP, "segment_id", _segment_of(built, MOVED_OLD_IP), _segment_of(built, MOVED_NEW_IP))
    }

    new_keys = {name: finding_keys(name, frame) for name, frame in changes.findings_new.items()}
    expected_new = {
        "misplaced_devices": finding_keys(
            "misplaced_devices",
            pd.DataFrame(
                {"device_id": [analyzer], "segment_id": [_segment_of(built, MOVED_NEW_IP)], "device_class": ["lab_analyzer"]}
            ),
        ),
        "segment_violations": {json.dumps([workstation, target, "tcp", RDP_PORT], separators=(",", ":"))},
        "external_exposure": set(),
        "flat_segments": set(),
        "attack_paths": {json.dumps(["observed", workstation, target], separators=(",", ":"))},
        "choke_points": set(),
    }
    assert new_keys == expected_new
    assert {name: len(frame) for name, frame in changes.findings_resolved.items()} == dict.fromkeys(expected_new, 0)
    assert changes.summary_line() == "3 new findings, 0 resolved, 0 devices new, 1 gone, 1 changed segment"


def test_open_findings_date_from_first_run(built):
    runs = built.snapshots()["run_id"].tolist()
    old_findings = built.findings(runs[0])
    changes = compute_changes(built)
    with built.store() as store:
        first = store.resolve_snapshot(runs[0]).finished_at
        recorded = {run: recorded_findings(store, run) for run in runs}

    for name, frame in changes.findings_open.items():
        assert finding_keys(name, frame) == finding_keys(name, old_findings[name])
        assert set(frame["open_since"]) <= {first}
    assert recorded[runs[0]] == {name: finding_keys(name, frame) for name, frame in old_findings.items()}
    assert set(changes.trend["run_id"]) == set(runs)


def test_since_date_and_run_prefix(built):
    runs = built.snapshots()
    first, last = runs["run_id"].iloc[0], runs["run_id"].iloc[-1]
    length = next(n for n in range(1, len(first) + 1) if not last.startswith(first[:n]))
    by_prefix = compute_changes(built, since=first[:length])
    by_date = compute_changes(built, since=runs["finished_at"].iloc[-1][:10])
    assert by_prefix.old_run_id == runs["run_id"].iloc[0]
    assert by_date.old_run_id == runs["run_id"].iloc[0]
    with pytest.raises(SnapshotNotFound, match="1999-01-01"):
        compute_changes(built, since="1999-01-01")
    with pytest.raises(SnapshotNotFound, match="latest snapshot"):
        compute_changes(built, since=runs["run_id"].iloc[-1])


def test_change_report_files(built, tmp_path):
    changes = compute_changes(built)
    findings = built.findings()
    context = ReportContext(site=changes.site, run_id=changes.new_run_id, built_at=changes.new_built_at)
    written = write_change_report(changes, findings, context, tmp_path / "out")

    assert {"html", "md", "json", "csv:devices_new", "csv:devices_gone", "csv:devices_changed"} <= set(written)
    assert "csv:changes_segment_violations_new" in written
    assert "csv:changes_attack_paths_resolved" in written
    for path in written.values():
        assert path.exists()

    document = json.loads(written["json"].read_text())
    block = document["changes"]
    assert block["summary"] == json.loads(json.dumps(changes.summary()))
    assert {(r["device_id"], r["field"], r["old"], r["new"]) for r in block["devices"]["changed"]} == set(
        zip(changes.devices_changed["device_id"], changes.devices_changed["field"],
            changes.devices_changed["old"], changes.devices_changed["new"])
    )
    assert {r["device_id"] for r in block["devices"]["gone"]} == set(changes.devices_gone["device_id"])
    new_violations = block["findings"]["new"]["segment_violations"]
    assert {(r["src_id"], r["dst_id"], r["proto"], r["dst_port"]) for r in new_violations} == set(
        zip(*(changes.findings_new["segment_violations"][c] for c in ("src_id", "dst_id", "proto", "dst_port")))
    )
    assert [row["run_id"] for row in block["trend"]] == changes.trend["run_id"].tolist()

    html = written["html"].read_text()
    assert re.search(r"https?://", html) is None
    assert "What changed" in html
    assert changes.summary_line() in html
    assert html.index('id="changes"') < html.index('id="summary"')
    assert "<svg" in html
    markdown = written["md"].read_text()
    assert markdown.index("## What changed") < markdown.index("## Summary")
    gone_csv = written["csv:devices_gone"].read_text()
    assert changes.devices_gone["device_id"].iloc[0] in gone_csv
