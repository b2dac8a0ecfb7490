"""Build the committed sample sites and compare findings with their ground truth.

The ground truth is written by the generator from what it planted, without
the analysis code, so an exact match means every planted finding is found
and nothing else is reported.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from twin.api import Workspace

SAMPLES = Path(__file__).resolve().parents[2] / "sample_networks"
SITES = ["hospital", "pair/compliant", "pair/violating"]


@pytest.fixture(scope="module", params=SITES)
def built(request, tmp_path_factory):
    site_dir = SAMPLES / request.param
    ws = Workspace(tmp_path_factory.mktemp("ws") / "w.sqlite")
    ws.build(site_dir)
    truth = yaml.safe_load((site_dir / "ground_truth.yaml").read_text())
    return request.param, ws, truth, ws.findings()


def expected(truth, query, keys):
    return {tuple(row[k] for k in keys) for row in truth["findings"].get(query) or []}


def test_device_count_matches_generator(built):
    _, ws, truth, _ = built
    assert len(ws.devices()) == truth["counts"]["devices"]


def test_misplaced_devices_exact(built):
    _, _, truth, findings = built
    got = findings["misplaced_devices"]
    assert set(zip(got["ip"], got["segment_id"], got["device_class"])) == expected(
        truth, "misplaced_devices", ("ip", "segment_id", "device_class")
    )


def test_segment_violations_exact(built):
    _, _, truth, findings = built
    got = findings["segment_violations"]
    rows = set(zip(got["src_ip"], got["dst_ip"], got["proto"], got["dst_port"].astype(int), got["rule"]))
    assert rows == expected(truth, "segment_violations", ("src_ip", "dst_ip", "proto", "dst_port", "rule"))


def test_external_exposure_exact(built):
    _, _, truth, findings = built
    got = findings["external_exposure"]
    rows = set(zip(got["ip"], got["direction"], got["external"], got["proto"], got["dst_port"].astype(int)))
    assert rows == expected(truth, "external_exposure", ("ip", "direction", "external", "proto", "dst_port"))


def test_flat_segments_exact(built):
    _, _, truth, findings = built
    assert set(findings["flat_segments"]["segment_id"]) == {row["segment_id"] for row in truth["findings"].get("flat_segments") or []}


def test_observed_attack_paths_exact(built):
    _, ws, truth, findings = built
    paths = findings["attack_paths"]
    paths = paths[paths["mode"] == "observed"]
    primary_ip = dict(zip(ws.devices()["device_id"], ws.devices()["ips"].map(lambda ips: ips[0] if ips else None)))
    best: dict[tuple[str, str], int] = {}
    for entry, target, hops in zip(paths["entry_id"], paths["target_id"], paths["hops"]):
        key = (primary_ip.get(entry, "internet"), primary_ip[target])
        best[key] = min(best.get(key, 99), int(hops))
    got = {(entry, target, hops) for (entry, target), hops in best.items()}
    assert got == expected(truth, "attack_paths", ("entry", "target", "min_hops"))


def test_only_compliant_site_is_clean(built):
    name, _, _, findings = built
    counts = {q: len(f) for q, f in findings.items() if q not in ("choke_points", "attack_paths")}
    if name == "pair/compliant":
        assert counts == {"misplaced_devices": 0, "segment_violations": 0, "external_exposure": 0, "flat_segments": 0}
    else:
        assert all(counts.values()), counts
