"""The nmap runner: nmap missing, the command line, damaged XML, killed and timed-out nmap.

Scans here reach 127.0.0.1 at most: the site scope is 127.0.0.1/32, and the
only listener is a socket this test opens on loopback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from twin.discovery import active
from twin.discovery.active import GroupResult, NmapNotFound, ScanRejected, build_argv, find_nmap, run_plan
from twin.exceptions import ScopeError
from twin.model.site import parse_site

pytestmark = pytest.mark.timeout(120)

WARD_SCAN = Path(__file__).resolve().parents[1] / "data" / "nmap" / "ward_scan.xml"
NMAP = shutil.which("nmap")
needs_nmap = pytest.mark.skipif(NMAP is None, reason="nmap is not installed (apt-get install nmap)")


def loopback_site(tmp_path: Path, ports: str, *, window: str = "", rate: int = 100, host_timeout: str = "60s"):
    """A site whose only scope is 127.0.0.1 and whose unknown budget probes ``ports``."""
    text = f"""
site: {{name: Loopback, timezone: UTC}}
discovery:
  scopes: [127.0.0.1/32]
  budgets:
    unknown: {{probes: [connect], ports: [{ports}], max_rate: {rate}, max_connections: 1, host_timeout: {host_timeout}}}
{window}
"""
    path = tmp_path / "site" / "site.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return parse_site(text, str(path)), path.parent


def plan_for(site):
    from twin.discovery.plan import plan_scan

    return plan_scan(None, site, targets=["127.0.0.1"])


@pytest.fixture
def listener():
    """A TCP socket listening on 127.0.0.1 that accepts and closes connections."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    stop = threading.Event()

    def serve():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join(timeout=2)
    sock.close()


# --------------------------------------------------------------------------
# nmap missing


def test_find_nmap_missing_binary():
    with pytest.raises(NmapNotFound) as info:
        find_nmap("/nonexistent/nmap")
    assert str(info.value) == "/nonexistent/nmap does not exist; install it with `apt-get install nmap` or pass --nmap PATH"


def test_find_nmap_not_executable_or_not_nmap(tmp_path):
    with pytest.raises(NmapNotFound) as info:
        find_nmap("/etc/passwd")
    assert str(info.value) == "/etc/passwd is not executable; pass the nmap binary with --nmap PATH"
    with pytest.raises(NmapNotFound) as info:
        find_nmap("/bin/true")
    assert str(info.value) == "/bin/true is not nmap (`/bin/true -V` printed nothing)"
    fake = tmp_path / "fake-nmap"
    fake.write_text("#!/bin/sh\necho 'fake scanner 1.0'\n", encoding="utf-8")
    fake.chmod(0o755)
    with pytest.raises(NmapNotFound) as info:
        find_nmap(fake)
    assert str(info.value) == f"{fake} is not nmap (`{fake} -V` printed 'fake scanner 1.0')"
    assert os.environ.get("PATH", "") not in str(info.value) or not os.environ.get("PATH")


def test_find_nmap_empty_path(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(NmapNotFound) as info:
        find_nmap()
    assert str(info.value) == "nmap was not found on PATH; install it with `apt-get install nmap` or pass --nmap PATH"


@needs_nmap
def test_find_nmap_reads_version():
    printed = subprocess.run([NMAP, "--version"], capture_output=True, text=True, timeout=30).stdout
    expected = re.search(r"Nmap version (\d+\.\d+)", printed).group(1)
    assert find_nmap() == active.NmapInfo(path=NMAP, version=expected)


@needs_nmap
def test_run_plan_nmap_missing_sends_nothing(tmp_path):
    site, site_dir = loopback_site(tmp_path, "tcp/22")
    with pytest.raises(NmapNotFound):
        run_plan(plan_for(site), site, site_dir, nmap_path=tmp_path / "no-nmap")
    assert not (site_dir / "nmap").exists()


# --------------------------------------------------------------------------
# Command line


def _cli_site(tmp_path: Path) -> Path:
    """A site on 127.0.0.0/29 with a do-not-probe address, and an inventory pump on 10.250.0.3 that is never probed."""
    folder = tmp_path / "cli-site"
    (folder / "inventory").mkdir(parents=True)
    (folder / "site.yaml").write_text(
        "site: {name: CLI, timezone: UTC}\n"
        "discovery:\n"
        "  scopes: [127.0.0.0/29, 10.250.0.0/29]\n"
        "  do_not_probe: {addresses: [127.0.0.5]}\n"
        "  budgets:\n"
        "    unknown: {probes: [connect], ports: [tcp/1], max_rate: 100, max_connections: 1, host_timeout: 10s}\n",
        encoding="utf-8",
    )
    (folder / "inventory" / "cmms.csv").write_text("Asset Tag,Device Type,IP Address\nA1,Infusion Pump,10.250.0.3\n", encoding="utf-8")
    return folder


def _twin_cli(*args: str):
    from typer.testing import CliRunner

    from twin.cli.main import app

    return CliRunner().invoke(app, ["discover", "scan", *args])


def test_cli_scan_without_snapshot_rejected(tmp_path):
    folder = _cli_site(tmp_path)
    workspace = tmp_path / "w.sqlite"
    result = _twin_cli("--site", str(folder), "-w", str(workspace), "-t", "10.250.0.3", "--nmap", "/bin/true")
    assert result.exit_code == 1, result.output
    assert f"workspace {workspace} does not exist" in result.output
    assert f"run `twin build {folder} -w {workspace}` first" in result.output
    assert not (folder / "nmap").exists()
    dry = _twin_cli("--site", str(folder), "-w", str(workspace), "-t", "10.250.0.3", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "warning: workspace" in dry.output
    assert "a real scan is rejected unless --unclassified is given" in dry.output


def test_cli_stale_snapshot_rejected(tmp_path):
    from twin.api import Workspace

    folder = _cli_site(tmp_path)
    workspace = tmp_path / "w.sqlite"
    Workspace(workspace).build(folder)
    later = time.time() + 5
    os.utime(folder / "inventory" / "cmms.csv", (later, later))
    result = _twin_cli("--site", str(folder), "-w", str(workspace), "-t", "10.250.0.3", "--nmap", "/bin/true")
    assert result.exit_code == 1, result.output
    assert "inventory/cmms.csv" in result.output
    assert "rebuild first" in result.output
    # --unclassified accepts the stale snapshot; the pump it classifies stays passive, so nothing is scanned.
    accepted = _twin_cli("--site", str(folder), "-w", str(workspace), "-t", "10.250.0.3", "--unclassified")
    assert accepted.exit_code == 0, accepted.output
    assert "skipped: 10.250.0.3 (infusion_pump" in accepted.output


def test_cli_only_rejected_target_exits_1(tmp_path):
    from twin.api import Workspace

    folder = _cli_site(tmp_path)
    workspace = tmp_path / "w.sqlite"
    Workspace(workspace).build(folder)
    result = _twin_cli("--site", str(folder), "-w", str(workspace), "-t", "127.0.0.5")
    assert result.exit_code == 1, result.output
    assert "rejected: 127.0.0.5: it is on the do_not_probe list (127.0.0.5/32)" in result.output
    assert "nothing to scan; 1 target rejected (listed above)" in result.output


@needs_nmap
def test_cli_partly_rejected_scan_exits_1_and_records(tmp_path, listener):
    from twin.api import Workspace

    folder = _cli_site(tmp_path)
    text = (folder / "site.yaml").read_text().replace("ports: [tcp/1]", f"ports: [tcp/{listener}]")
    (folder / "site.yaml").write_text(text, encoding="utf-8")
    workspace = tmp_path / "w.sqlite"
    Workspace(workspace).build(folder)
    result = _twin_cli("--site", str(folder), "-w", str(workspace), "-t", "127.0.0.1", "-t", "127.0.0.5")
    assert result.exit_code == 1, result.output
    assert "rejected: 127.0.0.5: it is on the do_not_probe list" in result.output
    assert "1 target rejected and not scanned: 127.0.0.5" in result.output
    assert "group 1 (unknown): complete; 1 host up, " in result.output
    manifest = json.loads(next((folder / "nmap" / "active").glob("*/.manifest.json")).read_text())
    assert manifest["complete"] is True
    assert [(s["target"], s["rejected"]) for s in manifest["skipped"]] == [("127.0.0.5", True)]
    assert [g["targets"] for g in manifest["groups"]] == [["127.0.0.1"]]


@pytest.mark.parametrize(
    "site_text, targets, reason",
    [
        (None, ["8.8.8.8"], "it is outside every discovery scope"),
        (None, ["169.254.169.254"], "cloud metadata"),
        (None, ["127.0.0.5"], "it is on the do_not_probe list"),
        ("site: {name: CLI, timezone: UTC}\n", ["127.0.0.1"], "discovery.scopes is empty"),
    ],
)
def test_cli_dry_run_rejected_target_exits_1(tmp_path, site_text, targets, reason):
    from twin.api import Workspace

    folder = _cli_site(tmp_path)
    if site_text is not None:
        (folder / "site.yaml").write_text(site_text, encoding="utf-8")
    workspace = tmp_path / "w.sqlite"
    Workspace(workspace).build(folder)
    args = [arg for target in targets for arg in ("-t", target)]
    result = _twin_cli("--site", str(folder), "-w", str(workspace), *args, "--dry-run")
    assert result.exit_code == 1, result.output
    assert result.output.startswith("# dry run for site CLI")
    assert reason in result.output
    # The rejected target is named, also when the whole scope is empty.
    assert f"error: 1 target rejected and never scanned: {targets[0]}" in result.output
    assert not (folder / "nmap").exists()


def test_cli_dry_run_allowed_target_exits_0(tmp_path):
    from twin.api import Workspace

    folder = _cli_site(tmp_path)
    workspace = tmp_path / "w.sqlite"
    Workspace(workspace).build(folder)
    result = _twin_cli("--site", str(folder), "-w", str(workspace), "-t", "127.0.0.1", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "probe  127.0.0.1  tcp/1  connect  unknown  -" in result.output
    assert "error:" not in result.output


def test_cli_dry_run_checks_nmap_binary(tmp_path):
    from twin.api import Workspace

    folder = _cli_site(tmp_path)
    workspace = tmp_path / "w.sqlite"
    Workspace(workspace).build(folder)
    dry = _twin_cli("--site", str(folder), "-w", str(workspace), "-t", "127.0.0.1", "--dry-run", "--nmap", "/nonexistent")
    assert dry.exit_code == 0, dry.output
    assert ("warning: /nonexistent does not exist; install it with `apt-get install nmap` or pass --nmap PATH; "
            "a real scan fails until nmap is found") in dry.output
    real = _twin_cli("--site", str(folder), "-w", str(workspace), "-t", "127.0.0.1", "--nmap", "/nonexistent")
    assert real.exit_code == 1, real.output
    assert "error: /nonexistent does not exist" in real.output
    assert not (folder / "nmap").exists()


def test_cli_closed_window_one_error_line(tmp_path):
    from twin.api import Workspace

    folder = _cli_site(tmp_path)
    other_day = (datetime.now(timezone.utc) + timedelta(days=3)).strftime("%a").lower()
    text = (folder / "site.yaml").read_text(encoding="utf-8")
    text += f"  maintenance_windows:\n    - {{days: [{other_day}], start: '01:00', end: '02:00'}}\n"
    (folder / "site.yaml").write_text(text, encoding="utf-8")
    workspace = tmp_path / "w.sqlite"
    Workspace(workspace).build(folder)
    result = _twin_cli("--site", str(folder), "-w", str(workspace), "-t", "127.0.0.1", "--nmap", "/bin/true")
    assert result.exit_code == 1, result.output
    assert result.output.count("outside every maintenance window") == 1
    assert "error: scan rejected because the maintenance window is closed: it is " in result.output
    assert "(it is" not in result.output
    assert "the scan will not start now" not in result.output
    assert not (folder / "nmap").exists()


def test_cli_file_copied_with_old_date_rejects_scan(tmp_path):
    from twin.api import Workspace

    folder = _cli_site(tmp_path)
    workspace = tmp_path / "w.sqlite"
    Workspace(workspace).build(folder)
    export = folder / "inventory" / "morning.csv"
    export.write_text("Asset Tag,Device Type,IP Address\nM1,Infusion Pump,127.0.0.2\n", encoding="utf-8")
    earlier = time.time() - 6 * 3600
    os.utime(export, (earlier, earlier))  # what `cp -p` keeps
    result = _twin_cli("--site", str(folder), "-w", str(workspace), "-t", "127.0.0.2", "--nmap", "/bin/true")
    assert result.exit_code == 1, result.output
    assert "added inventory/morning.csv" in result.output
    assert "rebuild first" in result.output
    assert not (folder / "nmap").exists()


def test_build_argv_order():
    argv = build_argv("/usr/bin/nmap", ["-n", "-Pn", "-sT", "-p", "T:22"], "/tmp/g.xml", ["10.0.0.1", "10.0.0.2"])
    assert argv == ["/usr/bin/nmap", "-n", "-Pn", "-sT", "-p", "T:22", "-oX", "/tmp/g.xml", "10.0.0.1", "10.0.0.2"]


@pytest.mark.parametrize("bad", ["-iL", "-iR", "-oN", "-oA", "--resume", "--excludefile", "-oXfile.xml", "--datadir=/tmp"])
def test_build_argv_rejects_target_and_output_options(bad):
    with pytest.raises(ScanRejected) as info:
        build_argv("nmap", ["-n", "-Pn", bad, "x"], "/tmp/g.xml", ["10.0.0.1"])
    assert repr(bad) in str(info.value)


def test_build_argv_requires_no_dns_no_ping():
    with pytest.raises(ScanRejected) as info:
        build_argv("nmap", ["-sT", "-p", "T:22"], "/tmp/g.xml", ["10.0.0.1"])
    assert "expected ['-n', '-Pn']" in str(info.value)


# --------------------------------------------------------------------------
# Damaged XML from a group


def group_for(xml: Path, reason: str = "") -> GroupResult:
    return GroupResult(index=1, budget="workstation", targets=["10.40.1.2"], argv=[], xml=str(xml), timeout_s=60, reason=reason)


def test_cut_off_xml_keeps_finished_hosts(tmp_path):
    data = WARD_SCAN.read_bytes()
    # A control byte and invalid UTF-8 inside the first host's service banner,
    # and the file cut off inside the second host, as when nmap is killed.
    data = data.replace(b'product="lighttpd"', b'product="light\x01tpd\xff"', 1)
    second_host = data.index(b"<host", data.index(b"</host>"))
    cut = data[: second_host + 40]
    xml = tmp_path / "g01-workstation.xml"
    xml.write_bytes(cut)

    group = group_for(xml)
    active._import_group(group, __import__("twin.discovery.scan", fromlist=["scan"]))

    expected_hosts = cut.count(b"</host>")
    assert group.complete is False
    assert group.reason == "XML file is cut off (no closing </nmaprun>)"
    assert group.hosts_in_xml == expected_hosts
    assert any("byte 0x01 is not allowed in XML" in issue for issue in group.issues)
    assert any("byte 0xff is not allowed in XML" in issue for issue in group.issues)
    assert any("XML breaks off" in issue for issue in group.issues)


def test_whole_xml_is_complete(tmp_path):
    xml = tmp_path / "g01.xml"
    xml.write_bytes(WARD_SCAN.read_bytes())
    group = group_for(xml)
    active._import_group(group, __import__("twin.discovery.scan", fromlist=["scan"]))
    assert (group.complete, group.reason, group.hosts_in_xml, group.issues) == (True, "", 4, [])


def test_empty_xml_is_incomplete_and_removed(tmp_path):
    xml = tmp_path / "g01.xml"
    xml.write_bytes(b"")
    group = group_for(xml, reason="nmap was killed by SIGKILL")
    active._import_group(group, __import__("twin.discovery.scan", fromlist=["scan"]))
    assert (group.complete, group.reason, xml.exists()) == (False, "nmap was killed by SIGKILL", False)


def test_xml_without_nmaprun_is_incomplete(tmp_path):
    xml = tmp_path / "g01.xml"
    xml.write_bytes(b"<?xml version='1.0'?><other/>")
    group = group_for(xml)
    active._import_group(group, __import__("twin.discovery.scan", fromlist=["scan"]))
    assert group.complete is False
    assert "no <nmaprun> element" in group.reason


# --------------------------------------------------------------------------
# Real nmap against 127.0.0.1


@needs_nmap
def test_run_plan_complete_on_loopback(tmp_path, listener):
    site, site_dir = loopback_site(tmp_path, f"tcp/{listener}")
    run = run_plan(plan_for(site), site, site_dir)

    assert run.complete is True
    assert [(g.complete, g.reason, g.exit_status, g.hosts_up, g.services) for g in run.groups] == [(True, "", 0, 1, 1)]
    group = run.groups[0]
    assert group.argv[-3:] == ["-oX", group.xml, "127.0.0.1"]
    assert Path(group.xml).parent == site_dir / "nmap" / "active" / run.run_id
    manifest = json.loads(run.manifest.read_text())
    assert manifest["complete"] is True
    assert manifest["groups"][0]["argv"] == group.argv
    assert manifest["groups"][0]["targets"] == ["127.0.0.1"]


@needs_nmap
def test_run_plan_killed_nmap_is_incomplete(tmp_path):
    # 55,536 TCP ports at 50 packets per second take about 18 minutes: the
    # scan is still running when it is killed one second after it started.
    site, site_dir = loopback_site(tmp_path, "tcp/10000-65535", rate=50, host_timeout="30m")
    killers = []

    def kill_soon(group):
        timer = threading.Timer(1.0, os.kill, (group.pid, signal.SIGKILL))
        timer.start()
        killers.append(timer)

    run = run_plan(plan_for(site), site, site_dir, on_group_start=kill_soon)
    for timer in killers:
        timer.join()

    group = run.groups[0]
    assert (run.complete, group.complete, group.exit_status) == (False, False, -signal.SIGKILL)
    assert group.reason == "nmap was killed by SIGKILL"
    assert Path(group.xml).is_file(), "the partial XML is kept"
    manifest = json.loads(run.manifest.read_text())
    assert (manifest["complete"], manifest["groups"][0]["reason"]) == (False, "nmap was killed by SIGKILL")


@needs_nmap
def test_run_plan_timeout_stops_nmap(tmp_path):
    site, site_dir = loopback_site(tmp_path, "tcp/10000-65535", rate=50, host_timeout="30m")
    run = run_plan(plan_for(site), site, site_dir, timeout_s=1.0)
    group = run.groups[0]
    assert (group.complete, group.reason) == (False, "timed out after 1 s; nmap was stopped")
    with pytest.raises(ProcessLookupError):
        os.kill(group.pid, 0)


@needs_nmap
def test_run_plan_stops_when_window_closes(tmp_path):
    window = "  maintenance_windows:\n    - {days: [mon, tue, wed, thu, fri, sat, sun], start: '01:00', end: '02:00'}\n"
    site, site_dir = loopback_site(tmp_path, "tcp/10000-65535", window=window, rate=50, host_timeout="30m")
    # Two seconds before the window closes: the first group is stopped, the second never starts.
    now = datetime.now(timezone.utc).replace(hour=1, minute=59, second=58, microsecond=0)
    plan = plan_for(site)
    from twin.discovery.plan import check_window

    plan.window = check_window(site, now)
    plan.groups.append(plan.groups[0])
    started = time.monotonic()
    run = run_plan(plan, site, site_dir, now=now)
    assert time.monotonic() - started < 30
    first, second = run.groups
    assert (first.complete, first.reason) == (False, "maintenance window closed; nmap was stopped")
    with pytest.raises(ProcessLookupError):
        os.kill(first.pid, 0)
    assert Path(first.xml).is_file(), "the partial XML is kept"
    assert second.pid is None
    assert second.reason.startswith("not started: maintenance window closed")
    manifest = json.loads(run.manifest.read_text())
    assert [g["reason"] for g in manifest["groups"]] == [first.reason, second.reason]


@needs_nmap
def test_run_plan_closed_window_refuses(tmp_path):
    tomorrow = (datetime.now(timezone.utc) + timedelta(days=2)).strftime("%a").lower()
    window = f"  maintenance_windows:\n    - {{days: [{tomorrow}], start: '01:00', end: '02:00'}}\n"
    site, site_dir = loopback_site(tmp_path, "tcp/22", window=window)
    with pytest.raises(ScanRejected) as info:
        run_plan(plan_for(site), site, site_dir)
    assert "maintenance window is closed" in str(info.value)
    assert "(it is" not in str(info.value)
    assert str(info.value).count("the next one opens") == 1
    assert "the next window opens" not in str(info.value)
    assert not (site_dir / "nmap").exists()


@needs_nmap
def test_run_plan_rechecks_scope(tmp_path):
    site, site_dir = loopback_site(tmp_path, "tcp/22")
    plan = plan_for(site)
    plan.groups[0].targets.append("10.1.2.3")  # a target that bypassed the planner
    with pytest.raises(ScopeError) as info:
        run_plan(plan, site, site_dir)
    assert "10.1.2.3" in str(info.value)
    assert not (site_dir / "nmap").exists()
