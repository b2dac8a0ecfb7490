"""diff_findings, diff_devices, open_since and record_findings on hand-built frames."""

from __future__ import annotations

import math

import pandas as pd

from twin.graph.embedded import EmbeddedStore
from twin.report.diff import (
    ChangeSet,
    annotate_open_since,
    diff_devices,
    diff_findings,
    finding_keys,
    record_findings,
    recorded_findings,
)

DAY = 86_400.0


def _violations(*rows):
    return pd.DataFrame(
        [
            {"src_id": s, "dst_id": d, "proto": "tcp", "dst_port": p, "flows": f, "severity": "high", "evidence": f"{s}->{d}"}
            for s, d, p, f in rows
        ]
    )


def _tuples(frame, columns):
    return set(frame[list(columns)].itertuples(index=False, name=None))


def _devices(*rows):
    return pd.DataFrame(
        [
            {"device_id": i, "hostname": h, "ips": ips, "device_class": c, "segment_id": s}
            for i, h, ips, c, s in rows
        ]
    )


def test_findings_new_resolved_open():
    old = {"segment_violations": _violations(("a", "b", 23, 1), ("a", "c", 22, 1))}
    new = {"segment_violations": _violations(("a", "b", 23.0, 9), ("d", "b", 3389, 1))}
    added, resolved, still_open = diff_findings(old, new)
    columns = ("src_id", "dst_id", "dst_port")
    assert _tuples(added["segment_violations"], columns) == {("d", "b", 3389)}
    assert _tuples(resolved["segment_violations"], columns) == {("a", "c", 22)}
    # Same key with other counts is still open, and keeps the new row's counts.
    assert _tuples(still_open["segment_violations"], (*columns, "flows")) == {("a", "b", 23.0, 9)}
    assert {"open_since", "open_days"} <= set(still_open["segment_violations"].columns)


def test_findings_query_only_one_side():
    old = {"flat_segments": pd.DataFrame({"segment_id": ["x"], "severity": ["high"]})}
    new = {"choke_points": pd.DataFrame({"kind": ["segment_pair"], "item": ["a -> b"], "severity": ["high"]})}
    added, resolved, still_open = diff_findings(old, new)
    assert set(added) == set(resolved) == set(still_open) == {"flat_segments", "choke_points"}
    assert _tuples(added["choke_points"], ("kind", "item")) == {("segment_pair", "a -> b")}
    assert len(added["flat_segments"]) == 0
    assert _tuples(resolved["flat_segments"], ("segment_id",)) == {("x",)}
    assert len(still_open["choke_points"]) == 0


def test_empty_diff():
    frame = _violations(("a", "b", 23, 1))
    added, resolved, still_open = diff_findings({"segment_violations": frame}, {"segment_violations": frame})
    assert len(added["segment_violations"]) == 0
    assert len(resolved["segment_violations"]) == 0
    assert _tuples(still_open["segment_violations"], ("src_id", "dst_id")) == {("a", "b")}
    devices = _devices(("d1", "h1", ["10.0.0.1"], "server", "s1"))
    new, gone, changed = diff_devices(devices, devices)
    assert (len(new), len(gone), len(changed)) == (0, 0, 0)
    changes = ChangeSet(
        site="x", old_run_id="r1", old_built_at=0.0, new_run_id="r2", new_built_at=1.0,
        findings_new=added, findings_resolved=resolved, findings_open=still_open,
        devices_new=new, devices_gone=gone, devices_changed=changed,
    )
    assert changes.is_empty()
    assert changes.summary_line() == "0 new findings, 0 resolved, 0 devices new, 0 gone, 0 changed segments"


def _history(*runs):
    return [(at, {"segment_violations": finding_keys("segment_violations", frame)}) for at, frame in runs]


def test_open_since_first_of_three_runs():
    frame = _violations(("a", "b", 23, 1))
    later = _violations(("a", "b", 23, 5))
    history = _history((1 * DAY, frame), (2 * DAY, frame), (3 * DAY, later))
    _, _, still_open = diff_findings({"segment_violations": frame}, {"segment_violations": later})
    result = annotate_open_since(still_open, history)["segment_violations"]
    assert _tuples(result, ("src_id", "dst_id", "open_since", "open_days")) == {("a", "b", 1 * DAY, 2.0)}


def test_open_since_resets_after_resolved():
    present = _violations(("a", "b", 23, 1), ("c", "d", 80, 1))
    absent = _violations(("c", "d", 80, 1))
    history = _history((1 * DAY, present), (2 * DAY, absent), (3 * DAY, present), (4 * DAY, present))
    _, _, still_open = diff_findings({"segment_violations": present}, {"segment_violations": present})
    result = annotate_open_since(still_open, history, now=5 * DAY)["segment_violations"]
    assert _tuples(result, ("src_id", "open_since", "open_days")) == {("a", 3 * DAY, 2.0), ("c", 1 * DAY, 4.0)}


def test_devices_class_and_segment_change():
    old = _devices(
        ("d1", "pump-1", ["10.0.4.10"], "infusion_pump", "pumps"),
        ("d2", "ws-1", ["10.0.10.10", "10.0.10.99"], "unknown", "it"),
        ("d3", "old-printer", ["10.0.10.20"], "printer", "it"),
        ("d4", None, ["10.0.9.9"], "unknown", None),
    )
    new = _devices(
        ("d1", "pump-1", ["10.0.6.50"], "infusion_pump", "imaging"),
        ("d2", "ws-1", ["10.0.10.10"], "workstation", "it"),
        ("d4", None, ["10.0.9.9"], "unknown", None),
        ("d5", "new-cam", ["10.0.13.5"], "camera", "bms"),
    )
    added, gone, changed = diff_devices(old, new)
    assert _tuples(added, ("device_id", "hostname", "ip", "device_class", "segment_id")) == {
        ("d5", "new-cam", "10.0.13.5", "camera", "bms")
    }
    assert _tuples(gone, ("device_id", "hostname", "ip")) == {("d3", "old-printer", "10.0.10.20")}
    assert _tuples(changed, ("device_id", "hostname", "ip", "field", "old", "new")) == {
        ("d1", "pump-1", "10.0.6.50", "segment_id", "pumps", "imaging"),
        ("d2", "ws-1", "10.0.10.10", "device_class", "unknown", "workstation"),
    }


def test_device_enters_segment():
    old = _devices(("d1", "x", ["10.0.0.1"], "server", None))
    new = _devices(("d1", "x", ["10.0.0.1"], "server", "dc"))
    _, _, changed = diff_devices(old, new)
    assert _tuples(changed, ("device_id", "field", "new")) == {("d1", "segment_id", "dc")}
    assert changed.iloc[0]["old"] is None or math.isnan(changed.iloc[0]["old"])


def test_record_findings_idempotent(tmp_path):
    findings = {
        "segment_violations": _violations(("a", "b", 23, 1), ("a", "b", 23, 2)),
        "flat_segments": pd.DataFrame({"segment_id": [], "severity": []}),
    }
    with EmbeddedStore(tmp_path / "ws.sqlite") as store:
        assert recorded_findings(store, "r1") is None
        record_findings(store, "r1", findings)
        record_findings(store, "r1", findings)
        rows = store.conn.execute("SELECT run_id, query, key_json, severity FROM run_findings").fetchall()
        assert set(rows) == {("r1", "segment_violations", '["a","b","tcp",23]', "high")}
        assert len(rows) == 1
        assert recorded_findings(store, "r1") == {
            "segment_violations": {'["a","b","tcp",23]'},
            "flat_segments": set(),
        }
        assert recorded_findings(store, "r2") is None
