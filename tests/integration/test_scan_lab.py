"""`twin discover scan` against real services in a network-namespace lab, proven by tcpdump.

The lab is one Ethernet segment (10.231.0.0/24) behind a Linux bridge:

======== ===== =============================================== ==========================
host     .N    services                                        what the scan may do
======== ===== =============================================== ==========================
scanner  .2    runs nmap (excluded from the scope)             -
ws1      .11   http 80 and 8080, SSH banner 22, UDP echo 5353  connect, udp, version
srv1     .12   http 80                                         connect, version
pump1    .13   sinks on 80 and 443 (infusion pump)             nothing (passive class)
dnp1     .14   http 80, SSH banner 22 (on do_not_probe)        nothing
prn1     .15   sink on 9100, http 80 (printer)                 connect 80/443, never 9100
ws2      .16   http 80 (second workstation, for the kill test) connect, udp, version
======== ===== =============================================== ==========================

Every nmap runs inside the scanner namespace; captures run on the scanner's,
pump's, dnp's and printer's interfaces from before each scan until after it.
Needs root, ``ip``, ``tcpdump`` and ``nmap``; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
import yaml

from tests.lab.netns import Lab, lab_unavailable
from tests.lab.pcap import TCP_FIN, TCP_RST, read_pcap
from tests.lab.services import SSH_BANNER, start_service

pytestmark = pytest.mark.timeout(300)

_REASON = lab_unavailable(("ip", "tcpdump", "nmap"))
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

SUBNET = "10.231.0.0/24"
# Host name -> (host number, device type in the inventory, services it runs).
LAB_HOSTS = {
    "ws1": (11, "Workstation", [("http", "tcp", 80), ("http", "tcp", 8080), ("ssh-banner", "tcp", 22), ("udp-echo", "udp", 5353)]),
    "srv1": (12, "Server", [("http", "tcp", 80)]),
    "pump1": (13, "Infusion Pump", [("tcp-sink", "tcp", 80), ("tcp-sink", "tcp", 443)]),
    "dnp1": (14, "Workstation", [("http", "tcp", 80), ("ssh-banner", "tcp", 22)]),
    "prn1": (15, "Printer", [("tcp-sink", "tcp", 9100), ("http", "tcp", 80)]),
    "ws2": (16, "Workstation", [("http", "tcp", 80)]),
}
SCANNER_NUMBER = 2
# Product nmap -sV reports for each lab service kind (None: no version match).
PRODUCT_OF_KIND = {"http": "SimpleHTTPServer", "ssh-banner": "OpenSSH", "udp-echo": None, "tcp-sink": None}

# Budgets with a low rate and few connections so the limits are measurable.
BUDGETS = {
    "workstation": {"probes": ["connect", "udp", "version"], "ports": ["tcp/22", "tcp/80", "tcp/443", "tcp/8080", "udp/161", "udp/5353"],
                    "max_rate": 5, "max_connections": 2, "host_timeout": "30s"},
    "server": {"probes": ["connect", "version"], "ports": ["tcp/22", "tcp/80"], "max_rate": 5, "max_connections": 2, "host_timeout": "30s"},
    "printer": {"probes": ["connect"], "ports": ["tcp/80", "tcp/443"], "max_rate": 5, "max_connections": 1, "host_timeout": "30s"},
    "unknown": {"probes": ["none"]},
}
# Allowance above max_rate for SYNs in any 1 s window: nmap's port scan spaces
# probes by 1/max_rate on average, so a window boundary can catch one probe
# more than the rate when two probes sit exactly 1 s apart. The pacing proxy
# that carries version detection spaces its SYNs by at least 1/max_rate.
RATE_TOLERANCE = 1
# Seconds the main scan may take (about 20 s in the lab on 2 cores).
SCAN_TIMEOUT_S = 120


def _ip(number: int) -> str:
    return str(ip_network(SUBNET).network_address + number)


def twin_cli() -> list[str]:
    """Command prefix that runs the `twin` CLI with the test's interpreter."""
    return [sys.executable, "-c", "import sys; from twin.cli.main import app; sys.argv[0] = 'twin'; app()"]


def write_site(folder: Path, *, budgets=None, windows=None, hosts=LAB_HOSTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    discovery = {
        "scopes": [SUBNET],
        "exclude": [f"{_ip(SCANNER_NUMBER)}/32"],
        "do_not_probe": {"addresses": [_ip(LAB_HOSTS["dnp1"][0])]},
        "budgets": budgets or BUDGETS,
    }
    if windows is not None:
        discovery["maintenance_windows"] = windows
    config = {
        "site": {"name": "Lab Ward", "timezone": "UTC"},
        "discovery": discovery,
        "segments": [{"id": "ward", "name": "Lab ward", "cidrs": [SUBNET], "zone": "clinical",
                      "designated_classes": ["workstation", "server", "printer", "infusion_pump"]}],
    }
    (folder / "site.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    rows = ["Asset Tag,Serial Number,Manufacturer,Model,Device Type,Department,Location,MAC Address,IP Address,Hostname"]
    for name, (number, device_type, _) in hosts.items():
        rows.append(f"LAB-{number:04d},SN{number:06d},Lab Vendor,Model {number},{device_type},Ward,Room {number},"
                    f"02:00:0a:e7:00:{number:02x},{_ip(number)},{name}")
    (folder / "inventory").mkdir(exist_ok=True)
    (folder / "inventory" / "cmms_export.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    logs = tmp_path_factory.mktemp("sinks")
    with Lab(SUBNET) as lab:
        lab.add_host("scanner", SCANNER_NUMBER)
        for name, (number, _, services) in LAB_HOSTS.items():
            host = lab.add_host(name, number)
            for kind, _, port in services:
                log_file = logs / f"{name}-{port}.log" if kind == "tcp-sink" else None
                start_service(host, kind, port, log_file=log_file)
        lab.sink_logs = logs
        yield lab
    assert not any(name.startswith(lab.prefix) for name in os.listdir("/var/run/netns")), "lab namespaces left behind"


def build_site(lab, folder: Path) -> Path:
    """Build a site folder into ``<folder>/../w.sqlite``; a real scan needs a current snapshot of its site."""
    workspace = folder.parent / "w.sqlite"
    # The build reads files only; it runs in the switch namespace, which has no route anywhere.
    built = lab.run(lab.switch.name, [*twin_cli(), "build", str(folder), "-w", str(workspace)], timeout=120, check=False)
    assert built.returncode == 0, built.stderr
    return workspace


@pytest.fixture(scope="module")
def site(lab, tmp_path_factory):
    folder = write_site(tmp_path_factory.mktemp("site") / "labward")
    return folder, build_site(lab, folder)


def run_twin(lab, args, *, env=None, timeout=SCAN_TIMEOUT_S):
    return lab.run(f"{lab.prefix}-scanner", [*twin_cli(), *args], timeout=timeout, check=False, env=env)


class Captures:
    """tcpdump on the scanner and on the hosts that must receive nothing."""

    WATCHED = ("scanner", "pump1", "dnp1", "prn1")

    def __init__(self, lab, folder: Path, tag: str):
        self.lab = lab
        self.running = {name: lab.hosts[name].capture("eth0", folder / f"{tag}-{name}.pcap") for name in self.WATCHED}
        self.packets: dict[str, list] = {}

    def stop(self) -> dict[str, list]:
        for name, capture in self.running.items():
            self.packets[name] = read_pcap(capture.stop())
        return self.packets


def sent_by_scanner(lab, packets):
    scanner = lab.hosts["scanner"]
    return [p for p in packets if p.src_mac == scanner.mac]


def probe_keys(lab, packets) -> set[tuple[str, str, int]]:
    """(dst, proto, port) of every TCP SYN and UDP datagram the scanner sent."""
    keys = set()
    for p in sent_by_scanner(lab, packets):
        if p.syn_only or p.proto == "udp":
            keys.add((p.dst, p.proto, p.dport))
    return keys


def packets_reaching(host, packets) -> list:
    """Packets addressed to ``host``: IP or ARP target, or its MAC as unicast destination."""
    return [p for p in packets if p.dst == host.ip or p.dst_mac == host.mac]


# --------------------------------------------------------------------------
# Dry run and the real scan


@pytest.fixture(scope="module")
def scan_run(lab, site, tmp_path_factory):
    folder, workspace = site
    dry = run_twin(lab, ["discover", "scan", "--site", str(folder), "-w", str(workspace), "--dry-run"])
    assert dry.returncode == 0, dry.stderr
    captures = Captures(lab, tmp_path_factory.mktemp("pcap"), "scan")
    try:
        real = run_twin(lab, ["discover", "scan", "--site", str(folder), "-w", str(workspace), "--build"])
    finally:
        packets = captures.stop()
    return {"dry": dry, "real": real, "packets": packets, "folder": folder, "workspace": workspace}


def dry_run_probes(text: str) -> set[tuple[str, str, int]]:
    """Parse the port probes back from the dry-run text: ``probe  TARGET  PROTO/PORT  KIND ...`` lines."""
    probes = set()
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0] != "probe" or fields[3] not in ("connect", "udp"):
            continue
        proto, _, port = fields[2].partition("/")
        probes.add((fields[1], proto, int(port)))
    return probes


def budget_of_target(lab) -> dict[str, dict]:
    """Lab address -> the budget its inventory class gets."""
    classes = {"Workstation": "workstation", "Server": "server", "Printer": "printer"}
    out = {}
    for name, (number, device_type, _) in LAB_HOSTS.items():
        if device_type in classes and name != "dnp1":
            out[_ip(number)] = BUDGETS[classes[device_type]]
    return out


def test_dry_run_lists_budgeted_probes(lab, scan_run):
    """The dry run probes exactly each scanned host's budget ports, and skips pump1 and dnp1."""
    expected = set()
    for address, budget in budget_of_target(lab).items():
        for spec in budget["ports"]:
            proto, _, port = spec.partition("/")
            kind = "connect" if proto == "tcp" else "udp"
            if kind in budget["probes"]:
                expected.add((address, proto, int(port)))
    assert dry_run_probes(scan_run["dry"].stdout) == expected
    # A skipped single address may be written as a /32 prefix.
    skipped = {line.split()[1].removesuffix("/32") for line in scan_run["dry"].stdout.splitlines() if line.startswith("skip ")}
    assert _ip(LAB_HOSTS["pump1"][0]) in skipped
    assert _ip(LAB_HOSTS["dnp1"][0]) in skipped


def test_scan_succeeds(scan_run):
    real = scan_run["real"]
    assert real.returncode == 0, real.stdout + real.stderr
    assert ": complete; manifest " in real.stdout


def test_probes_sent_equal_dry_run(lab, scan_run):
    sent = probe_keys(lab, scan_run["packets"]["scanner"])
    assert sent == dry_run_probes(scan_run["dry"].stdout)


def test_pump_and_do_not_probe_receive_nothing(lab, scan_run):
    for name in ("pump1", "dnp1"):
        host = lab.hosts[name]
        reached = packets_reaching(host, scan_run["packets"][name])
        assert reached == [], f"{name} received {len(reached)} packets"
        assert packets_reaching(host, scan_run["packets"]["scanner"]) == []
    for port in (80, 443):
        assert (lab.sink_logs / f"pump1-{port}.log").exists() is False


def test_printer_raw_port_receives_nothing(lab, scan_run):
    printer = lab.hosts["prn1"]
    to_raw_port = [p for p in scan_run["packets"]["prn1"] if p.dst == printer.ip and p.dport == 9100]
    assert to_raw_port == []
    assert (lab.sink_logs / "prn1-9100.log").exists() is False
    probed = {(p.proto, p.dport) for p in packets_reaching(printer, scan_run["packets"]["prn1"]) if p.syn_only}
    assert probed == {("tcp", 80), ("tcp", 443)}


def test_nothing_leaves_lab_subnet(lab, scan_run):
    subnet = ip_network(SUBNET)
    outside = []
    for p in sent_by_scanner(lab, scan_run["packets"]["scanner"]):
        if p.proto == "arp" or p.dst is None:
            continue
        # IGMP (protocol 2) reports to 224.0.0.22 come from the kernel when a
        # socket joins a multicast group, not from nmap; they stay on the link.
        if p.proto == "2" and ip_address(p.dst) in ip_network("224.0.0.0/24"):
            continue
        if ip_address(p.dst) not in subnet:
            outside.append((p.proto, p.dst, p.dport))
    assert outside == []
    assert {p.proto for p in sent_by_scanner(lab, scan_run["packets"]["scanner"])} <= {"arp", "tcp", "udp", "icmp", "2"}


def _max_in_window(times: list[float], width: float = 1.0) -> int:
    """Return the maximum number of events in any half-open window [t, t + width)."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - width:
            start += 1
        best = max(best, end - start + 1)
    return best


def _syn_times(lab, packets, addresses) -> list[float]:
    """Capture times of every SYN the scanner sent to ``addresses``: port scan, version detection and retransmissions."""
    return [p.ts for p in sent_by_scanner(lab, packets) if p.syn_only and p.dst in addresses]


def test_every_syn_within_rate_per_target(lab, scan_run):
    """Every SYN to a target, version detection included, stays within max_rate per second."""
    budgets = budget_of_target(lab)
    packets = scan_run["packets"]["scanner"]
    measured = {address: _max_in_window(_syn_times(lab, packets, {address})) for address in budgets}
    over = {a: n for a, n in measured.items() if n > budgets[a]["max_rate"] + RATE_TOLERANCE}
    assert over == {}, f"SYNs per second {measured}"


def test_every_syn_within_rate_per_group(lab, scan_run):
    """All SYNs of one budget group together stay within its max_rate, also where one target follows another."""
    budgets = budget_of_target(lab)
    packets = scan_run["packets"]["scanner"]
    measured = {}
    for name, budget in BUDGETS.items():
        addresses = {a for a, b in budgets.items() if b is budget}
        if addresses:
            measured[name] = _max_in_window(_syn_times(lab, packets, addresses))
    over = {n: count for n, count in measured.items() if count > BUDGETS[n]["max_rate"] + RATE_TOLERANCE}
    assert over == {}, f"SYNs per second {measured}"
    assert set(measured) == {"workstation", "server", "printer"}


def test_version_detection_goes_through_pacing_proxy(lab, scan_run):
    """The groups with version probes ran with the proxy, and it made the version connections."""
    manifest = json.loads(next(scan_run["folder"].glob("nmap/active/*/.manifest.json")).read_text())
    paced = {}
    for group in manifest["groups"]:
        pacing = group["pacing"]
        uses_proxy = "--proxies" in group["argv"]
        paced[group["budget"]] = uses_proxy
        if pacing is None:
            continue
        assert group["argv"][group["argv"].index("--proxies") + 1] == pacing["proxy"]
        assert pacing["proxy"].startswith("socks4://127.0.0.1:")
        assert pacing["connections"] > 0
        assert pacing["rejected"] == 0
        assert pacing["max_connections_per_s"] <= BUDGETS[group["budget"]]["max_rate"]
    assert paced == {"printer": False, "server": True, "workstation": True}
    assert "pacing: group workstation: nmap also gets --proxies" in scan_run["dry"].stdout


def test_concurrent_connections_within_budget(lab, scan_run):
    """Connections from SYN to the first FIN or RST never exceed max_connections per target."""
    events = []
    for p in scan_run["packets"]["scanner"]:
        if p.proto != "tcp":
            continue
        if p.src_mac == lab.hosts["scanner"].mac:
            key = (p.dst, p.dport, p.sport)
        else:
            key = (p.src, p.sport, p.dport)
        if p.syn_only and p.src_mac == lab.hosts["scanner"].mac:
            events.append((p.ts, 1, key))
        elif p.tcp_flags & (TCP_FIN | TCP_RST):
            events.append((p.ts, -1, key))
    open_now: dict[str, set] = defaultdict(set)
    peak: dict[str, int] = defaultdict(int)
    for _, change, key in sorted(events, key=lambda e: (e[0], e[1])):
        target = key[0]
        if change > 0:
            open_now[target].add(key)
        else:
            open_now[target].discard(key)
        peak[target] = max(peak[target], len(open_now[target]))
    budgets = budget_of_target(lab)
    over = {t: n for t, n in peak.items() if n > budgets[t]["max_connections"]}
    assert over == {}, f"peak concurrent connections {dict(peak)}"
    assert set(peak) == set(budgets)


def test_twin_services_equal_lab_services(lab, scan_run):
    """After the build, each scanned host's services are the lab services within its budget."""
    from twin.api import Workspace

    twin = Workspace(scan_run["workspace"]).twin()
    devices = twin.devices
    address_of = {row.device_id: row.ips[0] for row in devices.itertuples() if len(row.ips)}
    nmap_services = twin.services[twin.services["sources"].map(lambda s: "nmap" in list(s))]
    found = {(address_of[r.device_id], r.proto, int(r.port), r.product if isinstance(r.product, str) else None)
             for r in nmap_services.itertuples()}

    expected = set()
    for address, budget in budget_of_target(lab).items():
        name = next(n for n, (number, _, _) in LAB_HOSTS.items() if _ip(number) == address)
        for kind, proto, port in LAB_HOSTS[name][2]:
            if f"{proto}/{port}" in budget["ports"]:
                product = PRODUCT_OF_KIND[kind] if "version" in budget["probes"] else None
                expected.add((address, proto, port, product))
    assert found == expected

    ssh_version = SSH_BANNER.decode().split("OpenSSH_", 1)[1].split()[0]
    ssh = nmap_services[(nmap_services["port"] == 22) & nmap_services["device_id"].map(address_of).eq(_ip(LAB_HOSTS["ws1"][0]))]
    assert len(ssh) == 1
    assert ssh.iloc[0]["version"].startswith(ssh_version)
    assert any(cpe.startswith("cpe:/a:openbsd:openssh") for cpe in ssh.iloc[0]["cpe"])


# --------------------------------------------------------------------------
# Refusals and failures


def _no_scanner_probes(lab, packets) -> list:
    return [p for p in sent_by_scanner(lab, packets) if p.proto in ("tcp", "udp")]


def test_nmap_missing_exits_1(lab, site, tmp_path):
    folder, workspace = site
    captures = Captures(lab, tmp_path, "missing")
    try:
        bad_path = run_twin(lab, ["discover", "scan", "--site", str(folder), "-w", str(workspace), "--nmap", "/nonexistent"])
        empty_path = run_twin(lab, ["discover", "scan", "--site", str(folder), "-w", str(workspace)],
                              env={**os.environ, "PATH": ""})
    finally:
        packets = captures.stop()
    assert bad_path.returncode == 1, bad_path.stderr
    assert "/nonexistent does not exist" in bad_path.stderr
    assert os.environ.get("PATH", "/usr/bin") not in bad_path.stderr
    assert empty_path.returncode == 1, empty_path.stderr
    assert "nmap was not found on PATH; install it with `apt-get install nmap` or pass --nmap PATH" in empty_path.stderr
    assert _no_scanner_probes(lab, packets["scanner"]) == []


def test_no_snapshot_rejects_and_sends_nothing(lab, site, tmp_path):
    folder, _ = site
    pump = _ip(LAB_HOSTS["pump1"][0])
    captures = Captures(lab, tmp_path, "nosnapshot")
    try:
        result = run_twin(lab, ["discover", "scan", "--site", str(folder), "-w", str(tmp_path / "none.sqlite"), "-t", pump])
    finally:
        packets = captures.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"workspace {tmp_path / 'none.sqlite'} does not exist" in result.stderr
    assert _no_scanner_probes(lab, packets["scanner"]) == []
    assert packets_reaching(lab.hosts["pump1"], packets["pump1"]) == []


def test_closed_window_refuses_and_sends_nothing(lab, site, tmp_path):
    other_day = (datetime.now(timezone.utc) + timedelta(days=3)).strftime("%a").lower()
    folder = write_site(tmp_path / "closed", windows=[{"days": [other_day], "start": "01:00", "end": "02:00"}])
    workspace = build_site(lab, folder)
    captures = Captures(lab, tmp_path, "window")
    try:
        result = run_twin(lab, ["discover", "scan", "--site", str(folder), "-w", str(workspace)])
    finally:
        packets = captures.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "maintenance window is closed" in result.stderr
    assert "the next window opens" not in result.stderr
    assert _no_scanner_probes(lab, packets["scanner"]) == []
    assert not (folder / "nmap").exists()


def test_killed_nmap_keeps_partial_results(lab, site, tmp_path):
    """Kill nmap while it scans the second workstation: the first host stays in the XML, the group is incomplete."""
    slow = dict(BUDGETS)
    # 300 ports at 100 per second: about 3 s per host, so the kill lands
    # while nmap is on the second workstation.
    slow["workstation"] = {"probes": ["connect"], "ports": ["tcp/1-300"], "max_rate": 100, "max_connections": 2, "host_timeout": "60s"}
    folder = write_site(tmp_path / "slow", budgets=slow)
    workspace = build_site(lab, folder)
    out = folder / "nmap" / "active"
    process = lab.spawn(f"{lab.prefix}-scanner", [*twin_cli(), "discover", "scan", "--site", str(folder), "-w", str(workspace),
                                                  "--target", _ip(LAB_HOSTS["ws1"][0]), "--target", _ip(LAB_HOSTS["ws2"][0])])
    deadline = time.monotonic() + 60
    killed_pid = None
    while time.monotonic() < deadline and killed_pid is None and process.poll() is None:
        time.sleep(0.1)
        for manifest in out.glob("*/.manifest.json"):
            doc = json.loads(manifest.read_text())
            group = next((g for g in doc["groups"] if g["reason"] == "running"), None)
            if group and Path(group["xml"]).is_file() and b"</host>" in Path(group["xml"]).read_bytes():
                os.kill(group["pid"], signal.SIGKILL)
                killed_pid = group["pid"]
    stdout, stderr = process.communicate(timeout=60)
    assert killed_pid is not None, "nmap finished before it could be killed"
    assert process.returncode == 1, stdout + stderr
    assert b"INCOMPLETE: nmap was killed by SIGKILL" in stdout

    manifest = json.loads(next(out.glob("*/.manifest.json")).read_text())
    group = next(g for g in manifest["groups"] if g["pid"] == killed_pid)
    assert (manifest["complete"], group["complete"], group["reason"]) == (False, False, "nmap was killed by SIGKILL")
    assert (group["hosts_in_xml"], group["hosts_up"]) == (1, 1)

    from twin.discovery import scan

    kept = scan.import_file(group["xml"])
    hosts = {o.subject.ips for o in kept.observations if o.kind == "device"}
    assert hosts == {(_ip(LAB_HOSTS["ws1"][0]),)}
    ports = {o.attrs["port"] for o in kept.observations if o.kind == "service"}
    assert ports == {port for kind, proto, port in LAB_HOSTS["ws1"][2] if proto == "tcp" and port <= 300}
