"""The twin command end to end on the paired sample sites, through Typer's CliRunner."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.integration import planting
from twin.cli.main import app

SAMPLES = Path(__file__).resolve().parents[2] / "sample_networks" / "pair"
runner = CliRunner()


def twin(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory):
    out = {}
    for name in ("compliant", "violating"):
        ws = tmp_path_factory.mktemp(name) / "w.sqlite"
        result = twin("build", str(SAMPLES / name), "--workspace", str(ws))
        assert result.exit_code == 0, result.output
        out[name] = ws
    return out


def test_build_prints_snapshot(workspaces, tmp_path):
    result = twin("build", str(SAMPLES / "violating"), "-w", str(tmp_path / "w.sqlite"))
    truth = yaml.safe_load((SAMPLES / "violating" / "ground_truth.yaml").read_text())
    assert result.exit_code == 0
    assert f"{truth['counts']['devices']} devices" in result.stdout


def test_report_fail_on_gates_exit_code(workspaces, tmp_path):
    clean = twin("report", "-w", str(workspaces["compliant"]), "--out", str(tmp_path / "c"), "--fail-on", "low", "--quiet")
    dirty = twin("report", "-w", str(workspaces["violating"]), "--out", str(tmp_path / "v"), "--fail-on", "low", "--quiet")
    assert clean.exit_code == 0, clean.output
    assert dirty.exit_code == 3, dirty.output
    for name in ("report.html", "report.md", "report.json", "segment_violations.csv"):
        assert (tmp_path / "v" / name).is_file()


def test_report_json_lists_planted_violation(workspaces, tmp_path):
    twin("report", "-w", str(workspaces["violating"]), "--out", str(tmp_path), "--format", "json", "--quiet")
    doc = json.loads((tmp_path / "report.json").read_text())
    truth = yaml.safe_load((SAMPLES / "violating" / "ground_truth.yaml").read_text())
    planted = {(v["src_ip"], v["dst_ip"], v["dst_port"]) for v in truth["findings"]["segment_violations"]}
    reported = {(v["src_ip"], v["dst_ip"], v["dst_port"]) for v in doc["findings"]["segment_violations"]}
    assert reported == planted


def test_analyze_json_and_csv(workspaces):
    as_json = twin("analyze", "-w", str(workspaces["violating"]), "-o", "json")
    assert as_json.exit_code == 0
    doc = json.loads(as_json.stdout)
    assert set(doc["findings"]) >= {"misplaced_devices", "segment_violations", "attack_paths"}
    as_csv = twin("analyze", "-w", str(workspaces["violating"]), "-q", "misplaced_devices", "-o", "csv")
    assert as_csv.exit_code == 0
    header = as_csv.stdout.splitlines()[0].split(",")
    assert "segment_id" in header and "device_class" in header


def test_show_device_by_ip_has_evidence(workspaces):
    truth = yaml.safe_load((SAMPLES / "violating" / "ground_truth.yaml").read_text())
    ip = truth["findings"]["misplaced_devices"][0]["ip"]
    result = twin("show", "device", ip, "-w", str(workspaces["violating"]), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert ip in doc["device"]["ips"]
    assert {o["source"] for o in doc["observations"]} >= {"inventory"}
    assert "misplaced_devices" in doc["findings"]


def test_show_unknown_device_fails_cleanly(workspaces):
    result = twin("show", "device", "10.255.255.254", "-w", str(workspaces["violating"]))
    assert result.exit_code == 1
    assert "no device matches '10.255.255.254'" in result.stderr


def test_invalid_fail_on_is_usage_error(workspaces):
    result = twin("report", "-w", str(workspaces["violating"]), "--fail-on", "severe")
    assert result.exit_code == 2
    assert "invalid severity 'severe'" in result.output


def test_missing_workspace_says_what_to_do(tmp_path):
    result = twin("analyze", "-w", str(tmp_path / "none.sqlite"))
    assert result.exit_code == 1
    assert "twin build SITE_DIR" in result.stderr


def test_invalid_site_yaml_names_line(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(SAMPLES / "violating", site)
    text = (site / "site.yaml").read_text().replace("default_action: deny", "default_action: block", 1)
    (site / "site.yaml").write_text(text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "default_action: block" in ln)
    result = twin("build", str(site), "-w", str(tmp_path / "w.sqlite"))
    assert result.exit_code == 1
    assert f"site.yaml:{line}: field policy.default_action" in result.stderr
    assert not (tmp_path / "w.sqlite").exists() or "snapshot" not in result.stdout


def test_sample_command_writes_buildable_site(tmp_path):
    first = twin("sample", str(tmp_path / "a"), "--devices", "300", "--seed", "3")
    second = twin("sample", str(tmp_path / "b"), "--devices", "300", "--seed", "3")
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    for path in sorted((tmp_path / "a").rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes(), path
    built = twin("build", str(tmp_path / "a"), "-w", str(tmp_path / "w.sqlite"))
    assert built.exit_code == 0, built.output
    truth = yaml.safe_load((tmp_path / "a" / "ground_truth.yaml").read_text())
    assert f"{truth['counts']['devices']} devices" in built.stdout


def test_sample_rejects_too_few_devices(tmp_path):
    result = twin("sample", str(tmp_path / "a"), "--devices", "5")
    assert result.exit_code == 2


def test_report_since_last_lists_changes(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(SAMPLES / "violating", site)
    ws = str(tmp_path / "w.sqlite")
    assert twin("build", str(site), "-w", ws).exit_code == 0
    truth = yaml.safe_load((site / "ground_truth.yaml").read_text())
    telnet = next(v for v in truth["findings"]["segment_violations"] if v["dst_port"] == 23)
    assert planting.remove_flows(site, telnet["src_ip"], telnet["dst_ip"], 23) > 0
    assert twin("build", str(site), "-w", ws).exit_code == 0
    result = twin("report", "-w", ws, "--since", "last", "--out", str(tmp_path / "r"), "--format", "json,md", "--quiet")
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    resolved = doc["changes"]["findings"]["resolved"]["segment_violations"]
    assert [(v["dst_port"], v["proto"]) for v in resolved] == [(23, "tcp")]
    assert "changes since" in result.stderr


def test_schedule_add_writes_units(tmp_path):
    units = tmp_path / "units"
    result = twin(
        "schedule", "add", "--cron", "30 2 1,15 * sun", "--site", str(SAMPLES / "violating"),
        "-w", str(tmp_path / "w.sqlite"), "--unit-dir", str(units),
    )
    assert result.exit_code == 0, result.output
    timer = next(units.glob("*.timer")).read_text()
    assert timer.count("OnCalendar=") == 2
    assert "systemctl --user" in result.stderr
    listed = twin("schedule", "list", "--unit-dir", str(units))
    assert "30 2 1,15 * sun" in listed.stdout


def test_schedule_add_rejects_bad_cron(tmp_path):
    result = twin("schedule", "add", "--cron", "61 * * * *", "--site", str(SAMPLES / "violating"), "--unit-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "minute" in result.output


@pytest.mark.parametrize("module", ["simulate", "appcmd", "discover", "neo4jcmd", "collect"])
def test_command_module_imported_first_still_registers(module):
    # Importing a command module before twin.cli.main used to fail with a
    # circular import; every group must still reach the app.
    code = (
        f"import twin.cli.{module}\n"
        "from twin.cli.main import app\n"
        "from typer.testing import CliRunner\n"
        "out = CliRunner().invoke(app, ['--help']).output\n"
        "assert all(name in out for name in ('simulate', 'app', 'discover', 'neo4j', 'export', 'collect')), out\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def test_build_notes_external_only_flows(tmp_path):
    # Flow rows between two addresses outside the site make no
    # communication, so the build prints how many were left out.
    site = tmp_path / "site"
    shutil.copytree(SAMPLES / "violating", site)
    rows = [
        {"ts": 1700000000.0 + i, "id.orig_h": "192.0.2.10", "id.orig_p": 40000 + i, "id.resp_h": "198.51.100.7",
         "id.resp_p": 443, "proto": "tcp", "duration": 1.0, "orig_bytes": 100, "resp_bytes": 200,
         "orig_pkts": 1, "resp_pkts": 1}
        for i in range(3)
    ]
    rows.append(dict(rows[0], **{"id.resp_h": "203.0.113.9", "id.resp_p": 8443}))
    (site / "outside.conn.log").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    result = twin("build", str(site), "--workspace", str(tmp_path / "w.sqlite"))
    assert result.exit_code == 0, result.output
    assert "note: 2 aggregated flow rows run between two addresses outside the site" in result.output
