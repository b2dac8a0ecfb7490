"""Two builds of the sample hospital with planted changes between them.

The test plants the changes by editing the site's files the way the
discovery tools would have written them (tests/integration/planting.py),
so the expected change list is the test's own, not the product's.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from tests.integration import planting
from twin.api import Workspace
from twin.report.diff import compute_changes

HOSPITAL = Path(__file__).resolve().parents[2] / "sample_networks" / "hospital"

GONE = ("10.16.13.12", "00:10:8d:4b:8d:46")  # an HVAC controller, decommissioned
RECLASSED = "10.16.13.11"  # an HVAC controller re-registered in the CMMS as a badge reader
RESOLVED = ("10.16.34.10", "10.16.2.10", "tcp", 443)  # the planted BMS-to-EHR violation stops
NEW = ("10.16.10.10", "10.16.4.30", "tcp", 23)  # a workstation starts telnet to an infusion pump


def ip_of(ws: Workspace, snapshot: str | None = None) -> dict[str, str]:
    devices = ws.devices(snapshot)
    return {d: ips[0] for d, ips in zip(devices["device_id"], devices["ips"]) if ips}


@pytest.fixture(scope="module")
def changes(tmp_path_factory):
    site = tmp_path_factory.mktemp("hospital") / "site"
    shutil.copytree(HOSPITAL, site)
    ws = Workspace(tmp_path_factory.mktemp("ws") / "w.sqlite")
    ws.build(site)

    planting.remove_device(site, *GONE)
    inventory = site / "inventory" / "cmms_export.csv"
    rows = list(csv.DictReader(inventory.open()))
    for row in rows:
        if row["IP Address"] == RECLASSED:
            row["Device Type"] = "Badge Reader"
    with inventory.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    removed = planting.remove_flows(site, RESOLVED[0], RESOLVED[1], RESOLVED[3])
    assert removed > 0, "the planted violation to resolve was not in the flow files"
    planting.add_zeek_flow(site, NEW[0], NEW[1], NEW[3], ts=1710200000.0)

    ws.build(site)
    return ws, compute_changes(ws, since="last")


def test_devices_gone_and_changed_exact(changes):
    ws, change = changes
    assert set(change.devices_gone["ip"]) == {GONE[0]}
    assert change.devices_new.empty
    changed = set(zip(change.devices_changed["ip"], change.devices_changed["field"], change.devices_changed["old"], change.devices_changed["new"]))
    assert changed == {(RECLASSED, "device_class", "hvac_controller", "badge_reader")}


def test_violations_new_and_resolved_exact(changes):
    ws, change = changes
    new = change.findings_new["segment_violations"]
    resolved = change.findings_resolved["segment_violations"]
    assert set(zip(new["src_ip"], new["dst_ip"], new["proto"], new["dst_port"].astype(int))) == {NEW}
    assert set(zip(resolved["src_ip"], resolved["dst_ip"], resolved["proto"], resolved["dst_port"].astype(int))) == {RESOLVED}


def test_attack_path_opened_exact(changes):
    ws, change = changes
    ips = ip_of(ws)
    workstation = next(d for d, ip in ips.items() if ip == NEW[0])
    # Whoever reached the workstation before (the internet, through the DMZ)
    # now also reaches the pump, one hop further.
    before = ws.attack_paths(change.old_run_id)
    before = before[before["mode"] == "observed"]
    pivots = {
        ips.get(entry, entry)
        for entry, path in zip(before["entry_id"], before["path"])
        if workstation in path[1:]
    }
    assert pivots, "the sample hospital's internet path through the workstation is missing"
    expected = {("observed", NEW[0], NEW[1])} | {("observed", entry, NEW[1]) for entry in pivots}

    opened = change.findings_new["attack_paths"]
    got = {(m, ips.get(e, e), ips.get(t, t)) for m, e, t in zip(opened["mode"], opened["entry_id"], opened["target_id"])}
    assert got == expected
    assert change.findings_resolved["attack_paths"].empty


def test_other_findings_unchanged(changes):
    _, change = changes
    for query in ("misplaced_devices", "external_exposure", "flat_segments"):
        assert change.findings_new[query].empty, query
        assert change.findings_resolved[query].empty, query
        assert not change.findings_open[query].empty or query == "flat_segments", query
