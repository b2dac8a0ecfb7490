"""Bad discovery files: the build reports them by file and line and keeps the good records."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from twin.api import Workspace
from twin.exceptions import ConfigError, SnapshotNotFound

SAMPLE = Path(__file__).resolve().parents[2] / "sample_networks" / "pair" / "violating"


@pytest.fixture()
def site(tmp_path):
    target = tmp_path / "site"
    shutil.copytree(SAMPLE, target)
    return target


def summary_of(result, name):
    return next(f for f in result.files if f.path.endswith(name))


def test_damaged_files_are_reported_and_rest_kept(site, tmp_path):
    ws = Workspace(tmp_path / "w.sqlite")
    clean = ws.build(site)

    nmap = next((site / "nmap").glob("*.xml"))
    text = nmap.read_text()
    nmap.write_text(text[: int(len(text) * 0.7)])  # cut off mid-scan

    walk = next((site / "snmp").glob("*.snmprec"))
    lines = walk.read_text().splitlines()
    lines.insert(5, "1.3.6.1.2.1.1.9.9.9|4x|zz-not-hex")
    lines.insert(7, "this is not an snmprec line")
    walk.write_text("\n".join(lines) + "\n")

    (site / "junk.xml").write_bytes(b"\x00\xff\xfe<not-nmap/>")
    (site / "hostile.snmprec").write_bytes(
        b"1.3.6.1.2.1.1.5.0|4x|" + b"70756d7000ff27223b" + b"\n1.3.6.1.2.1.2.2.1.6.1|4x|001b2c3d4e5f\n"
    )

    damaged = ws.build(site)
    walk_summary = summary_of(damaged, walk.name)
    assert walk_summary.records_skipped == 2
    assert any(f":{6}:" in issue or f":{6} " in issue for issue in walk_summary.issues)
    nmap_summary = summary_of(damaged, nmap.name)
    assert 0 < nmap_summary.records_read < summary_of(clean, nmap.name).records_read
    assert any(nmap.name in issue for issue in nmap_summary.issues)
    junk = summary_of(damaged, "junk.xml")
    assert junk.error and "junk.xml" in junk.error

    hostile = ws.find_device("00:1b:2c:3d:4e:5f")
    assert hostile["hostname"] == "pump\\x00\\xff'\";"

    snapshots = ws.snapshots()
    assert len(snapshots) == 2
    assert len(ws.twin(clean.run_id).devices) == len(ws.twin(damaged.run_id).devices) - 1


def test_invalid_config_keeps_previous_snapshot(site, tmp_path):
    ws = Workspace(tmp_path / "w.sqlite")
    first = ws.build(site)
    yaml_path = site / "site.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("max_hops:", "max_hopz:", 1))
    with pytest.raises(ConfigError, match=r"site.yaml:\d+: field attack_paths.max_hopz"):
        ws.build(site)
    assert list(ws.snapshots()["run_id"]) == [first.run_id]
    assert len(ws.twin().devices) == len(ws.twin(first.run_id).devices)


def test_internal_only_flows_build(tmp_path):
    site = tmp_path / "site"
    (site / "flows").mkdir(parents=True)
    (site / "site.yaml").write_text("site: {name: ward}\nsegments:\n  - id: ward\n    cidrs: [10.20.0.0/16]\n")
    line = (
        '{"ts": 1700000000.0, "uid": "C1", "id.orig_h": "10.20.1.10", "id.orig_p": 50000, '
        '"id.resp_h": "10.20.1.20", "id.resp_p": 443, "proto": "tcp", "duration": 1.0, '
        '"orig_bytes": 100, "resp_bytes": 200, "orig_pkts": 2, "resp_pkts": 2}\n'
    )
    (site / "flows" / "conn.log").write_text(line)
    ws = Workspace(tmp_path / "w.sqlite")
    result = ws.build(site)
    assert result.stats["externals"] == 0
    comms = ws.twin().communications
    assert list(zip(comms["proto"], comms["dst_port"], comms["bytes"])) == [("tcp", 443, 300)]
    assert ws.twin().externals.empty


def test_reading_missing_workspace_creates_nothing(tmp_path):
    ws = Workspace(tmp_path / "none" / "w.sqlite")
    with pytest.raises(SnapshotNotFound, match="workspace not found"):
        ws.twin()
    assert not (tmp_path / "none").exists()


def test_build_skips_report_folder(site, tmp_path):
    reports = site / "reports" / "20260101T000000Z-abcdef"
    reports.mkdir(parents=True)
    (reports / "report.md").write_text("# report\n")
    (reports / "segment_violations.csv").write_text("src_ip,dst_ip\n10.0.0.1,10.0.0.2\n")
    (site / ".staging").mkdir()
    (site / ".staging" / "notes.txt").write_text("x\n")
    result = Workspace(tmp_path / "w.sqlite").build(site)
    read = [f.path for f in result.files]
    assert not [p for p in read if "/reports/" in p or "/.staging/" in p]
