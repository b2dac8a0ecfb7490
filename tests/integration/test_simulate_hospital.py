"""Simulate the committed sample sites' proposed policies and compare with their ground truth.

The generator derives the ``simulation`` section of ground_truth.yaml with
its own policy evaluation and search, so an exact match of every section
means the simulator reports what the proposal changes and nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from twin.api import Workspace
from twin.cli.main import app
from twin.policy.simulate import simulate_workspace

SAMPLES = Path(__file__).resolve().parents[2] / "sample_networks"
SITES = ["hospital", "pair/violating"]
FLOW_KEY = ("src_ip", "dst_ip", "proto", "dst_port", "rule")

runner = CliRunner()


@pytest.fixture(scope="module", params=SITES)
def simulated(request, tmp_path_factory):
    site_dir = SAMPLES / request.param
    path = tmp_path_factory.mktemp("ws") / "w.sqlite"
    ws = Workspace(path)
    ws.build(site_dir)
    truth = yaml.safe_load((site_dir / "ground_truth.yaml").read_text(encoding="utf-8"))["simulation"]
    result = simulate_workspace(ws, site_dir / "proposed_policy.yaml")
    return site_dir, path, ws, truth, result


def _truth_rows(truth, section, keys=FLOW_KEY):
    return {tuple(row[k] for k in keys) for row in truth[section] or []}


def _flow_rows(frame, rule_column):
    return set(zip(frame["src_ip"], frame["dst_ip"], frame["proto"], frame["dst_port"].astype(int), frame[rule_column]))


def test_newly_blocked_exact(simulated):
    *_, truth, result = simulated
    assert _flow_rows(result.newly_blocked, "proposed_rule") == _truth_rows(truth, "newly_blocked")


def test_newly_allowed_exact(simulated):
    *_, truth, result = simulated
    assert _flow_rows(result.newly_allowed, "proposed_rule") == _truth_rows(truth, "newly_allowed")


def test_workflows_broken_exact(simulated):
    *_, truth, result = simulated
    got = result.workflows_broken
    assert set(zip(got["workflow"], got["blocked_by"])) == _truth_rows(truth, "workflows_broken", ("workflow", "blocked_by"))


def test_unobserved_workflow_break_found(simulated):
    *_, result = simulated
    got = result.workflows_broken
    row = got[got["blocked_by"] == "close-legacy-dicom-port"]
    assert row["workflow"].tolist() == ["modalities-to-pacs"]
    assert row["observed_blocked"].tolist() == [False]
    assert row["example_service"].tolist() == ["tcp/11112"]


def test_violations_resolved_exact(simulated):
    *_, truth, result = simulated
    assert _flow_rows(result.violations_resolved, "rule") == _truth_rows(truth, "violations_resolved")


def test_violations_introduced_exact(simulated):
    *_, truth, result = simulated
    assert _flow_rows(result.violations_introduced, "rule") == _truth_rows(truth, "violations_introduced")


def _path_rows(frame, ws):
    devices = ws.devices()
    ip_of = {d: (ips[0] if len(ips) else d) for d, ips in zip(devices["device_id"], devices["ips"])}
    observed = frame[frame["mode"] == "observed"]
    # The ground truth names every External entry "internet".
    return {("observed", ip_of.get(e, "internet"), ip_of[t]) for e, t in zip(observed["entry"], observed["target"])}


def test_attack_paths_cut_exact(simulated):
    _, _, ws, truth, result = simulated
    assert _path_rows(result.attack_paths_cut, ws) == _truth_rows(truth, "attack_paths_cut", ("mode", "entry", "target"))


def test_attack_paths_opened_exact(simulated):
    _, _, ws, truth, result = simulated
    assert _path_rows(result.attack_paths_opened, ws) == _truth_rows(truth, "attack_paths_opened", ("mode", "entry", "target"))


def test_attack_paths_unenforced_exact(simulated):
    _, _, ws, truth, result = simulated
    assert _path_rows(result.attack_paths_unenforced, ws) == _truth_rows(truth, "attack_paths_unenforced", ("mode", "entry", "target"))


def test_exposure_counts_exact(simulated):
    *_, truth, result = simulated
    assert (result.summary["exposure_before"], result.summary["exposure_after"]) == (truth["exposure_before"], truth["exposure_after"])


def test_cli_json_matches_api(simulated):
    site_dir, path, _, _, result = simulated
    run = runner.invoke(app, ["simulate", "--policy", str(site_dir / "proposed_policy.yaml"), "-w", str(path), "--format", "json"])
    assert run.exit_code == 0, run.output
    data = json.loads(run.stdout)
    assert data["summary"] == result.summary
    assert len(data["newly_blocked"]) == len(result.newly_blocked)


def test_cli_fail_on_broken_exits_3(simulated):
    site_dir, path, *_ = simulated
    run = runner.invoke(app, ["simulate", "--policy", str(site_dir / "proposed_policy.yaml"), "-w", str(path), "--fail-on-broken"])
    assert run.exit_code == 3
    assert "modalities-to-pacs" in run.stderr


def test_cli_csv_writes_sections(simulated, tmp_path):
    site_dir, path, *_ = simulated
    run = runner.invoke(app, ["simulate", "--policy", str(site_dir / "proposed_policy.yaml"), "-w", str(path), "--format", "csv", "--out", str(tmp_path)])
    assert run.exit_code == 0, run.output
    assert {p.name for p in tmp_path.glob("*.csv")} >= {"flows.csv", "newly_blocked.csv", "workflows_broken.csv", "exposure.csv"}


def test_cli_bad_policy_names_line(simulated, tmp_path):
    _, path, *_ = simulated
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy:\n  rules:\n  - name: x\n    action: permit\n    from: any\n    to: any\n", encoding="utf-8")
    run = runner.invoke(app, ["simulate", "--policy", str(bad), "-w", str(path)])
    assert run.exit_code == 1
    assert f"{bad}:4: field policy.rules.0.action" in run.stderr


def test_cli_fail_on_new_breaks_ignores_breaks_that_exist_today(simulated):
    site_dir, path, *_ = simulated
    # The site's own policy already breaks part of some workflows: nothing new.
    same = runner.invoke(app, ["simulate", "--policy", str(site_dir / "site.yaml"), "-w", str(path), "--fail-on-new-breaks"])
    assert same.exit_code == 0, same.output
    assert "already broken under the current policy" in same.stderr
    proposed = runner.invoke(app, ["simulate", "--policy", str(site_dir / "proposed_policy.yaml"), "-w", str(path), "--fail-on-new-breaks"])
    assert proposed.exit_code == 3
    assert "modalities-to-pacs" in proposed.stderr


def test_workflow_names_split_new_and_existing_breaks(simulated):
    *_, result = simulated
    frame = result.workflows_broken
    blocked = frame["blocked"].astype(int)
    current = frame["current_blocked"].astype(int)
    assert set(result.newly_broken_workflow_names()) == set(frame.loc[blocked > current, "workflow"])
    assert set(result.already_broken_workflow_names()) == set(frame.loc[current > 0, "workflow"])
    assert result.summary["workflows_newly_broken"] == len(result.newly_broken_workflow_names())
    assert result.summary["workflows_already_broken"] == len(result.already_broken_workflow_names())


def test_unknown_zone_is_an_error_and_unmatched_device_a_warning(simulated, tmp_path):
    _, path, ws, *_ = simulated
    zone = tmp_path / "zone.yaml"
    zone.write_text('policy:\n  rules:\n  - {name: a, action: deny, from: "zone:guestt", to: any}\n', encoding="utf-8")
    run = runner.invoke(app, ["simulate", "--policy", str(zone), "-w", str(path)])
    assert run.exit_code == 1
    assert f"{zone}:3: field policy.rules.0.from: rule 'a' names zone 'guestt'" in run.stderr
    device = tmp_path / "device.yaml"
    device.write_text('policy:\n  rules:\n  - {name: b, action: deny, from: "device:10.99.99.99", to: any}\n', encoding="utf-8")
    result = ws.simulate(device)
    assert any("rule 'b': its from selector" in w and "matches no device" in w for w in result.warnings)
