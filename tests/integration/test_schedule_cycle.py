"""Scheduled report cycles on a copy of the violating sample site: first run, changes, lock, failure."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from twin.api import Workspace
from twin.exceptions import CycleError, LockHeldError
from twin.report.diff import FINDING_KEYS
from twin.schedule.cycle import run_cycle

SAMPLE = Path(__file__).resolve().parents[2] / "sample_networks" / "pair" / "violating"

# The device taken off the network between the two runs: the nurse call
# station, known by its IP, its MAC and the MAC as the decimal OID suffix of
# the switch's bridge tables.
GONE_IP = "10.16.9.10"
GONE_MAC_HEX = "0014b80f1e54"
GONE_MAC_OID = "0.20.184.15.30.84"
# A telnet session from a staff workstation to an infusion pump, which the
# site policy denies (deny-remote-access-to-clinical).
TELNET_SRC, TELNET_DST = "10.16.10.11", "10.16.4.11"
TELNET_LINE = (
    f"1710200000.000000\tCscheduleTest01\t{TELNET_SRC}\t50123\t{TELNET_DST}\t23\ttcp\t-\t3.2\t300\t900\tSF\tT\tT\t0"
    "\tShADadFf\t8\t620\t8\t1220\t-\n"
)


def set_output_dir(site: Path, output_dir: Path, formats: str = "[html, md, json, csv]") -> None:
    """Replace the reports section of site.yaml (the sample has none, so it is appended the first time)."""
    text = (site / "site.yaml").read_text(encoding="utf-8")
    text = text.split("\nreports:\n")[0].rstrip("\n") + "\n"
    text += f"reports:\n  output_dir: {json.dumps(str(output_dir))}\n  formats: {formats}\n  keep: 5\n"
    (site / "site.yaml").write_text(text, encoding="utf-8")


def take_device_off_network(site: Path) -> None:
    """Remove the device's inventory row, its flows and its SNMP ARP and bridge-table entries; add the telnet flow."""
    inventory = site / "inventory" / "cmms_export.csv"
    rows = inventory.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [row for row in rows if f",{GONE_IP}," not in row]
    assert len(kept) == len(rows) - 1
    inventory.write_text("".join(kept), encoding="utf-8")

    nfdump = site / "flows" / "nfdump.csv"
    nfdump.write_text("".join(r for r in nfdump.read_text().splitlines(keepends=True) if f",{GONE_IP}," not in r))

    conn = site / "flows" / "conn.log"
    lines = [line for line in conn.read_text().splitlines(keepends=True) if f"\t{GONE_IP}\t" not in line]
    last_record = max(i for i, line in enumerate(lines) if not line.startswith("#"))
    lines.insert(last_record + 1, TELNET_LINE)
    conn.write_text("".join(lines))

    for snmprec in (site / "snmp").glob("*.snmprec"):
        records = snmprec.read_text().splitlines(keepends=True)
        kept = [
            record
            for record in records
            if not record.split("|")[0].endswith((f".{GONE_IP}", f".{GONE_MAC_OID}")) and GONE_MAC_HEX not in record
        ]
        snmprec.write_text("".join(kept))


def key_set(name: str, rows) -> set[tuple]:
    """Finding identities of report.json rows or DataFrame records."""
    return {tuple(json.dumps(row[column], sort_keys=True) for column in FINDING_KEYS[name]) for row in rows}


def frame_rows(frame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


def cycles(workspace: Path) -> list[tuple]:
    with sqlite3.connect(workspace) as conn:
        return conn.execute("SELECT run_id, status, error FROM cycles ORDER BY started_at, rowid").fetchall()


@pytest.fixture()
def site(tmp_path):
    target = tmp_path / "site"
    shutil.copytree(SAMPLE, target)
    set_output_dir(target, tmp_path / "reports")
    return target


def test_cycle_first_then_changes(site, tmp_path):
    workspace = tmp_path / "ws" / "w.sqlite"
    output = tmp_path / "reports"

    first = run_cycle(site, workspace=workspace)
    assert first.first_run is True
    assert first.run_dir == output / first.run_id
    assert os.readlink(output / "latest") == first.run_id
    document = json.loads((first.run_dir / "report.json").read_text())
    assert document["run_id"] == first.run_id
    assert "changes" not in document
    assert [o.channel for o in first.outcomes] == ["folder"]
    assert sorted(p.name for p in output.iterdir()) == sorted([first.run_id, "latest"])

    ws = Workspace(workspace)
    before = ws.findings(first.run_id)
    devices_before = ws.devices(first.run_id)
    gone_id = devices_before.loc[devices_before["ips"].map(lambda ips: GONE_IP in ips), "device_id"].tolist()
    assert len(gone_id) == 1

    take_device_off_network(site)
    second = run_cycle(site, workspace=workspace)
    assert second.first_run is False
    assert os.readlink(output / "latest") == second.run_id
    assert (output / first.run_id / "report.json").is_file()
    changes = json.loads((second.run_dir / "report.json").read_text())["changes"]
    assert changes["old_run_id"] == first.run_id
    assert changes["new_run_id"] == second.run_id

    # The device is gone and nothing else appeared, left or changed.
    assert [d["device_id"] for d in changes["devices"]["gone"]] == gone_id
    assert changes["devices"]["new"] == []
    assert changes["devices"]["changed"] == []

    # The telnet flow is the one new segment violation.
    devices_after = ws.devices(second.run_id)
    by_ip = {ip: row["device_id"] for _, row in devices_after.iterrows() for ip in row["ips"]}
    telnet = {"src_id": by_ip[TELNET_SRC], "dst_id": by_ip[TELNET_DST], "proto": "tcp", "dst_port": 23}
    assert key_set("segment_violations", changes["findings"]["new"]["segment_violations"]) == key_set(
        "segment_violations", [telnet]
    )

    # Every query's new and resolved findings are the set differences of the two snapshots' findings.
    after = ws.findings(second.run_id)
    for name in FINDING_KEYS:
        old_keys = key_set(name, frame_rows(before[name]))
        new_keys = key_set(name, frame_rows(after[name]))
        assert key_set(name, changes["findings"]["new"][name]) == new_keys - old_keys, name
        assert key_set(name, changes["findings"]["resolved"][name]) == old_keys - new_keys, name
    assert second.changes_summary["devices_gone"] == 1
    assert second.changes_summary["findings_new"]["segment_violations"] == 1

    assert cycles(workspace) == [(first.run_id, "ok", None), (second.run_id, "ok", None)]


def test_cycle_lock_held(site, tmp_path):
    workspace = tmp_path / "w.sqlite"
    with open(f"{workspace}.lock", "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(LockHeldError, match="holds the lock"):
            run_cycle(site, workspace=workspace)
    assert not workspace.exists()
    assert not (tmp_path / "reports").exists()
    # Released: the next cycle runs.
    assert run_cycle(site, workspace=workspace).first_run is True


def test_cycle_failure_keeps_latest(site, tmp_path):
    workspace = tmp_path / "w.sqlite"
    output = tmp_path / "reports"
    first = run_cycle(site, workspace=workspace)
    listing = sorted(p.name for p in output.iterdir())

    # As root, permissions do not stop mkdir, so the output folder is put under a regular file.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    set_output_dir(site, blocker / "reports")
    with pytest.raises(CycleError) as caught:
        run_cycle(site, workspace=workspace)
    failed_run = caught.value.run_id
    assert caught.value.step == "report"
    assert failed_run is not None and failed_run != first.run_id

    assert os.readlink(output / "latest") == first.run_id
    assert sorted(p.name for p in output.iterdir()) == listing
    rows = cycles(workspace)
    assert rows[0] == (first.run_id, "ok", None)
    assert rows[1][:2] == (failed_run, "failed")
    assert rows[1][2].startswith("report: ")
    assert len(rows) == 2


def test_cycle_failure_in_same_output_folder(site, tmp_path, monkeypatch):
    """A PDF step that fails after the report files were written leaves no partial folder beside the earlier run."""
    import twin.report.pdf

    workspace = tmp_path / "w.sqlite"
    output = tmp_path / "reports"
    first = run_cycle(site, workspace=workspace)
    listing = sorted(p.name for p in output.iterdir())

    set_output_dir(site, output, formats="[html, json, pdf]")
    # Only a Chromium path that does not exist is tried, so render_pdf fails as on a host without Chromium.
    monkeypatch.setattr(twin.report.pdf, "CHROMIUM_CANDIDATES", (str(tmp_path / "no-such-chromium"),))
    with pytest.raises(CycleError) as caught:
        run_cycle(site, workspace=workspace)
    assert caught.value.step == "pdf"
    assert "chromium" in str(caught.value)
    assert sorted(p.name for p in output.iterdir()) == listing
    assert os.readlink(output / "latest") == first.run_id
    assert [row[1] for row in cycles(workspace)] == ["ok", "failed"]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_cycle_writes_pdf(site, tmp_path):
    set_output_dir(site, tmp_path / "reports", formats="[md, pdf]")
    result = run_cycle(site, workspace=tmp_path / "w.sqlite")
    assert result.files["pdf"] == result.run_dir / "report.pdf"
    assert result.files["pdf"].read_bytes().startswith(b"%PDF-")
    # The PDF is printed from report.html, so that is written too.
    assert {path.name for path in result.run_dir.iterdir()} == {"report.md", "report.html", "report.pdf"}
