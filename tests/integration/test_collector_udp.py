"""``twin collect flows`` end to end on 127.0.0.1: NetFlow v5, v9 and IPFIX into a built workspace.

The tests build the paired violating sample site and start the collector as
a separate process. They send datagrams built here from known flows, then
check that the latest snapshot contains the base snapshot's communications
plus exactly those flows, mapped to devices by their addresses.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.unit.test_collector import netflow_v5
from twin.api import Workspace
from twin.graph.embedded import EmbeddedStore
from twin.model.site import load_site

SITE = Path(__file__).resolve().parents[2] / "sample_networks" / "pair" / "violating"
# The collector command; importing twin.cli.collect registers it with the app.
COMMAND = [sys.executable, "-c", "import twin.cli.collect; from twin.cli.main import app; app()", "collect", "flows"]
# Seconds the collector may take to start listening, and to exit after its duration.
START_LIMIT_S = 60.0
EXIT_LIMIT_S = 120.0
EXTERNAL = "203.0.113.77"  # documentation range, never sent to: it only appears inside flow records


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Collector:
    """The collector process, with its stderr read in a thread so the pipe never fills."""

    def __init__(self, args: list[str]):
        self.proc = subprocess.Popen(
            COMMAND + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"}
        )
        self.stderr_lines: list[str] = []
        self.listening = threading.Event()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr_lines.append(line)
            if line.startswith("listening on UDP"):
                self.listening.set()

    def wait_listening(self) -> None:
        deadline = time.monotonic() + START_LIMIT_S
        while not self.listening.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"collector did not start listening: {''.join(self.stderr_lines)}")

    def finish(self) -> tuple[int, str, str]:
        try:
            stdout = self.proc.stdout.read() if self.proc.wait(EXIT_LIMIT_S) is not None else ""
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"collector did not exit within {EXIT_LIMIT_S} s: {''.join(self.stderr_lines)}")
        self._reader.join(10)
        return self.proc.returncode, stdout, "".join(self.stderr_lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def printed_counters(stdout: str) -> dict[str, str]:
    pairs = (line.split(": ", 1) for line in stdout.splitlines() if ": " in line)
    return {name: value for name, value in pairs}


# -- datagrams ---------------------------------------------------------------


def netflow_v9(flows, *, export_time: int, uptime_ms: int = 600_000, source_id: int = 7) -> bytes:
    """Return a NetFlow v9 datagram with a template (id 256) and one data flowset of ``flows``."""
    fields = [(8, 4), (12, 4), (4, 1), (7, 2), (11, 2), (1, 4), (2, 4), (22, 4), (21, 4)]
    template = struct.pack("!HH", 256, len(fields)) + b"".join(struct.pack("!HH", t, n) for t, n in fields)
    template_set = struct.pack("!HH", 0, 4 + len(template)) + template
    records = b"".join(
        struct.pack(
            "!4s4sBHHIIII",
            ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed, proto, sport, dport,
            octets, packets, first_ms, last_ms,
        )
        for src, dst, proto, sport, dport, packets, octets, first_ms, last_ms in flows
    )
    records += bytes(-len(records) % 4)
    data_set = struct.pack("!HH", 256, 4 + len(records)) + records
    header = struct.pack("!HHIIII", 9, 1 + len(flows), uptime_ms, export_time, 1, source_id)
    return header + template_set + data_set


def ipfix(flows, *, export_time: int, domain: int = 3) -> bytes:
    """Return an IPFIX message with a template (id 300) and one data set of ``flows`` (times in epoch seconds)."""
    fields = [(8, 4), (12, 4), (4, 1), (7, 2), (11, 2), (1, 8), (2, 8), (150, 4), (151, 4)]
    template = struct.pack("!HH", 300, len(fields)) + b"".join(struct.pack("!HH", t, n) for t, n in fields)
    template_set = struct.pack("!HH", 2, 4 + len(template)) + template
    records = b"".join(
        struct.pack(
            "!4s4sBHHQQII",
            ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed, proto, sport, dport,
            octets, packets, start, end,
        )
        for src, dst, proto, sport, dport, packets, octets, start, end in flows
    )
    data_set = struct.pack("!HH", 300, 4 + len(records)) + records
    body = template_set + data_set
    return struct.pack("!HHIII", 10, 16 + len(body), export_time, 1, domain) + body


# -- the site ------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("collector") / "w.sqlite"
    Workspace(workspace).build(SITE)
    return workspace


def device_of_ip(devices: pd.DataFrame) -> dict[str, str]:
    return {ip: device_id for device_id, ips in zip(devices["device_id"], devices["ips"]) for ip in ips}


def test_collect_merges_v5_v9_ipfix(built, tmp_path):
    workspace = tmp_path / "w.sqlite"
    with sqlite3.connect(built) as source, sqlite3.connect(workspace) as target:
        source.backup(target)
    base = Workspace(workspace).twin()
    owner = device_of_ip(base.devices)
    ip_of = {device_id: ips[0] for device_id, ips in zip(base.devices["device_id"], base.devices["ips"]) if len(ips)}

    # An existing device-to-device communication, which the batch adds to,
    # and a device pair with no communication on port 8443 yet.
    existing = base.communications[(base.communications["src_kind"] == "device") & (base.communications["dst_kind"] == "device")].iloc[0]
    src_ip, dst_ip = ip_of[existing["src_id"]], ip_of[existing["dst_id"]]
    others = [ip for ip, device_id in owner.items() if device_id not in (existing["src_id"], existing["dst_id"]) and ":" not in ip]
    other_ip = others[0]
    assert base.communications[
        (base.communications["src_id"] == owner[other_ip]) & (base.communications["dst_port"] == 8443)
    ].empty
    proto_number = {"tcp": 6, "udp": 17}[existing["proto"]]
    port = int(existing["dst_port"])

    # An internal address in a segment that no device has yet.
    segment = next(seg for seg in load_site(SITE).segments if seg.cidrs and ":" not in seg.cidrs[0])
    hosts = ipaddress.ip_network(segment.cidrs[0]).hosts()
    new_ip = next(str(ip) for _, ip in zip(range(250), hosts) if str(ip) not in owner)

    now = int(time.time())
    v5_flows = [
        (src_ip, dst_ip, proto_number, 51000, port, 4, 1000, 590_000, 599_000),
        (new_ip, dst_ip, 6, 54000, 8080, 2, 333, 596_000, 597_000),
    ]
    v9_flows = [(other_ip, dst_ip, 6, 52000, 8443, 3, 700, 595_000, 598_000)]
    ipfix_flows = [(other_ip, EXTERNAL, 6, 53000, 443, 5, 2500, now - 8, now - 3)]

    listen = f"127.0.0.1:{free_port()}"
    collector = Collector(["--listen", listen, "--workspace", str(workspace), "--site", str(SITE),
                           "--batch-seconds", "1", "--duration", "6", "--stats-interval", "1"])
    collector.wait_listening()
    host, port_text = listen.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for datagram in (netflow_v5(v5_flows, export_time=now), netflow_v9(v9_flows, export_time=now), ipfix(ipfix_flows, export_time=now)):
            sender.sendto(datagram, (host, int(port_text)))
    code, stdout, stderr = collector.finish()
    assert code == 0, stderr

    counters = printed_counters(stdout)
    assert counters["received"] == "3"
    assert counters["dropped"] == "0"
    assert counters["decoded"] == "3"
    assert counters["records"] == "4"
    assert counters["undecodable"] == "0"

    latest = Workspace(workspace).twin()
    assert latest.run_id != base.run_id
    comms = latest.communications
    key = ["src_id", "dst_id", "proto", "dst_port"]

    # The existing communication gained the v5 flow.
    row = comms[(comms["src_id"] == existing["src_id"]) & (comms["dst_id"] == existing["dst_id"])
                & (comms["proto"] == existing["proto"]) & (comms["dst_port"] == port)]
    assert len(row) == 1
    assert int(row["bytes"].iloc[0]) == int(existing["bytes"]) + 1000
    assert int(row["packets"].iloc[0]) == int(existing["packets"]) + 4
    assert int(row["flows"].iloc[0]) == int(existing["flows"]) + 1
    assert float(row["last_seen"].iloc[0]) == pytest.approx(max(float(existing["last_seen"]), now - 1.0))
    assert "netflow" in row["sources"].iloc[0]

    # The v9 flow is a new device-to-device communication.
    new = comms[(comms["src_id"] == owner[other_ip]) & (comms["dst_id"] == owner[dst_ip]) & (comms["dst_port"] == 8443)]
    assert new[["bytes", "packets", "flows"]].values.tolist() == [[700, 3, 1]]

    # The IPFIX flow reaches an External endpoint.
    out = comms[(comms["src_id"] == owner[other_ip]) & (comms["dst_id"] == EXTERNAL)]
    assert out[["dst_kind", "dst_port", "bytes", "packets"]].values.tolist() == [["external", 443, 2500, 5]]
    assert EXTERNAL in set(latest.externals["address"])

    # The new address became a flow-only device in its segment.
    flow_device = latest.devices[latest.devices["ips"].map(lambda ips: list(ips) == [new_ip])]
    assert len(flow_device) == 1
    assert flow_device["segment_id"].iloc[0] == segment.id
    assert len(latest.devices) == len(base.devices) + 1
    added = comms[(comms["src_id"] == flow_device["device_id"].iloc[0]) & (comms["dst_id"] == owner[dst_ip])]
    assert added[["dst_port", "bytes", "packets"]].values.tolist() == [[8080, 333, 2]]

    # Every other communication is unchanged, and nothing else was added.
    before = base.communications.set_index(key)
    after = comms.set_index(key)
    assert len(after) == len(before) + 3
    untouched = before.drop(index=(existing["src_id"], existing["dst_id"], existing["proto"], port))
    assert after.loc[untouched.index, "bytes"].tolist() == untouched["bytes"].tolist()

    # Hourly buckets sum to what was sent, in whole UTC hours.
    with EmbeddedStore(workspace, create=False) as store:
        hours = store.flow_hours()
    assert int(hours["bytes"].sum()) == 1000 + 333 + 700 + 2500
    assert (hours["hour"] % 3600 == 0).all()
    assert hours["hour"].between(now - 7200, now).all()


def test_collect_without_snapshot_exits_2(tmp_path):
    collector = Collector(["--listen", f"127.0.0.1:{free_port()}", "--workspace", str(tmp_path / "none.sqlite"), "--duration", "1"])
    code, stdout, stderr = collector.finish()
    assert code == 2
    assert "twin build" in stderr
    assert not (tmp_path / "none.sqlite").exists()


def test_flood_drops_and_stays_responsive(tmp_path):
    out_dir = tmp_path / "out"
    stats_file = tmp_path / "stats.json"
    listen_port = free_port()
    collector = Collector(["--listen", f"127.0.0.1:{listen_port}", "--out", str(out_dir), "--queue", "4",
                           "--batch-seconds", "1", "--stats-interval", "0.5", "--stats-file", str(stats_file)])
    collector.wait_listening()
    now = int(time.time())
    # 30 records per datagram, the v5 maximum, so decoding is far slower than receiving.
    flood = netflow_v5(
        [(str(ipaddress.IPv4Address("10.40.0.1") + i), "10.41.0.1", 6, 40000 + i, 443, 1, 100, 590_000, 599_000) for i in range(30)],
        export_time=now,
    )
    marker = netflow_v5([("10.50.0.1", "10.51.0.1", 17, 50000, 514, 1, 77, 598_000, 599_000)], export_time=now)
    sent = 20_000
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for _ in range(sent):
            sender.sendto(flood, ("127.0.0.1", listen_port))
        # After the flood the collector still takes and stores new flows.
        time.sleep(1.0)
        sender.sendto(marker, ("127.0.0.1", listen_port))
        deadline = time.monotonic() + 30
        while True:
            edges = [pd.read_parquet(path) for path in out_dir.glob("*-edges.parquet")] if out_dir.exists() else []
            if any((frame["src_ip"] == "10.50.0.1").any() for frame in edges):
                break
            assert time.monotonic() < deadline, "the marker flow never reached a batch file"
            time.sleep(0.2)
    collector.proc.send_signal(signal.SIGTERM)
    code, stdout, stderr = collector.finish()
    assert code == 0, stderr
    assert "SIGTERM" in stderr

    counters = {name: int(value) for name, value in printed_counters(stdout).items() if value.lstrip("-").isdigit()}
    assert counters["dropped"] > 0
    assert counters["received"] <= sent + 1
    assert counters["decoded"] == counters["received"] - counters["dropped"]
    assert counters["records"] == 30 * (counters["decoded"] - 1) + 1
    assert counters["queue_peak"] <= 4 + 256
    edges = pd.concat([pd.read_parquet(path) for path in out_dir.glob("*-edges.parquet")])
    assert int(edges["flows"].sum()) == counters["records"]
    assert json.loads(stats_file.read_text())["received"] == counters["received"]


def test_sigint_stores_last_batch(built, tmp_path):
    workspace = tmp_path / "w.sqlite"
    with sqlite3.connect(built) as source, sqlite3.connect(workspace) as target:
        source.backup(target)
    base = Workspace(workspace).twin()
    ips = [ips[0] for ips in base.devices["ips"] if len(ips) and ":" not in ips[0]]
    listen_port = free_port()
    # The batch interval outlasts the test, so only the stop can store the batch.
    collector = Collector(["--listen", f"127.0.0.1:{listen_port}", "--workspace", str(workspace),
                           "--batch-seconds", "3600", "--stats-interval", "0.2"])
    collector.wait_listening()
    now = int(time.time())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(netflow_v5([(ips[0], ips[1], 6, 55000, 8081, 6, 4321, 598_000, 599_000)], export_time=now), ("127.0.0.1", listen_port))
    deadline = time.monotonic() + 30
    while "records 1," not in "".join(collector.stderr_lines):
        assert time.monotonic() < deadline, "the collector never decoded the datagram"
        time.sleep(0.1)
    collector.proc.send_signal(signal.SIGINT)
    code, stdout, stderr = collector.finish()
    assert code == 0, stderr
    assert "SIGINT" in stderr
    assert printed_counters(stdout)["records"] == "1"

    latest = Workspace(workspace).twin()
    assert latest.run_id != base.run_id
    owner = device_of_ip(base.devices)
    row = latest.communications[(latest.communications["src_id"] == owner[ips[0]]) & (latest.communications["dst_port"] == 8081)]
    assert row["bytes"].tolist() == [4321]


def wait_for_line(collector: Collector, prefix: str) -> str:
    """Return the first stderr line starting with ``prefix``, waiting up to 30 s."""
    deadline = time.monotonic() + 30
    while True:
        found = [line for line in list(collector.stderr_lines) if line.startswith(prefix)]
        if found:
            return found[0]
        if collector.proc.poll() is not None or time.monotonic() > deadline:
            collector.kill()
            raise AssertionError(f"no stderr line starting with {prefix!r}: {''.join(collector.stderr_lines)}")
        time.sleep(0.05)


def copy_workspace(built: Path, target: Path) -> Path:
    with sqlite3.connect(built) as source, sqlite3.connect(target) as copy:
        source.backup(copy)
    return target


def pair_of_devices(devices: pd.DataFrame) -> tuple[str, str]:
    ips = [ips[0] for ips in devices["ips"] if len(ips) and ":" not in ips[0]]
    return ips[0], ips[1]


def send_batches(workspace: Path, src_ip: str, dst_ip: str, port: int, sizes: list[int], *, kill: bool = False) -> Collector:
    """Run the collector on ``workspace`` and send one flow of each size, one batch apart.

    The collector stops on SIGTERM after the last batch is stored, or, with
    ``kill``, gets SIGKILL right after the last datagram is sent.
    """
    listen_port = free_port()
    collector = Collector(["--listen", f"127.0.0.1:{listen_port}", "--workspace", str(workspace),
                           "--batch-seconds", "0.5", "--stats-interval", "5"])
    collector.wait_listening()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for sequence, size in enumerate(sizes):
            now = int(time.time())
            sender.sendto(netflow_v5([(src_ip, dst_ip, 6, 56000, port, 2, size, 598_000, 599_000)], export_time=now),
                          ("127.0.0.1", listen_port))
            if kill and sequence == len(sizes) - 1:
                collector.kill()
                return collector
            wait_for_line(collector, f"batch {sequence + 1}:")
    collector.proc.send_signal(signal.SIGTERM)
    return collector


def test_collect_run_adds_one_snapshot(built, tmp_path):
    from twin.report.diff import compute_changes

    workspace = copy_workspace(built, tmp_path / "w.sqlite")
    base = Workspace(workspace).twin()
    src_ip, dst_ip = pair_of_devices(base.devices)
    owner = device_of_ip(base.devices)
    port = 18443
    sizes = [111, 2222, 33333]

    collector = send_batches(workspace, src_ip, dst_ip, port, sizes)
    code, stdout, stderr = collector.finish()
    assert code == 0, stderr
    counters = printed_counters(stdout)
    assert counters["snapshot_batches"] == "3"
    assert "replacing" in wait_for_line(collector, "batch 2:")

    with EmbeddedStore(workspace, create=False) as store:
        runs = store.runs()
        hours = store.flow_hours()
    assert [run.run_id for run in runs] == [base.run_id, counters["snapshot"]]
    summary = runs[-1].summary["collector"]
    assert summary["run_id"] == counters["collector_run"]
    assert summary["batches"] == 3
    assert summary["first_batch_at"] <= summary["last_batch_at"]
    assert summary["counters"]["records"] >= 2
    assert sorted(hours["bytes"].tolist()) == sorted(sizes)
    latest = Workspace(workspace).twin()
    comms = latest.communications
    row = comms[(comms["src_id"] == owner[src_ip]) & (comms["dst_id"] == owner[dst_ip]) & (comms["dst_port"] == port)]
    assert row["bytes"].tolist() == [sum(sizes)]
    assert row["flows"].tolist() == [len(sizes)]

    # 'twin snapshots' lists the build and the collector run's snapshot, and
    # a change report compares the run's snapshot with the build.
    assert Workspace(workspace).snapshots()["run_id"].tolist() == [base.run_id, latest.run_id]
    assert compute_changes(Workspace(workspace), since="last").old_run_id == base.run_id

    # A second collector run adds one more snapshot on top of the first run's.
    collector = send_batches(workspace, src_ip, dst_ip, port, [44])
    code, stdout, stderr = collector.finish()
    assert code == 0, stderr
    second = printed_counters(stdout)["snapshot"]
    with EmbeddedStore(workspace, create=False) as store:
        assert [run.run_id for run in store.runs()] == [base.run_id, latest.run_id, second]
        assert store.lineage(second) == [second, latest.run_id, base.run_id]
        assert int(store.flow_hours()["bytes"].sum()) == sum(sizes) + 44
    comms = Workspace(workspace).twin().communications
    row = comms[(comms["src_id"] == owner[src_ip]) & (comms["dst_id"] == owner[dst_ip]) & (comms["dst_port"] == port)]
    assert row["bytes"].tolist() == [sum(sizes) + 44]


def test_kill_9_keeps_committed_batches(built, tmp_path):
    workspace = copy_workspace(built, tmp_path / "w.sqlite")
    base = Workspace(workspace).twin()
    src_ip, dst_ip = pair_of_devices(base.devices)
    owner = device_of_ip(base.devices)
    port = 18444
    sizes = [500, 6000, 70000]

    # SIGKILL right after the third datagram, while its batch may be in progress.
    send_batches(workspace, src_ip, dst_ip, port, sizes, kill=True)

    with sqlite3.connect(workspace) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with EmbeddedStore(workspace, create=False) as store:
        runs = store.runs()
        hours = store.flow_hours()
    assert len(runs) == 2
    assert runs[0].run_id == base.run_id
    batches = runs[-1].summary["collector"]["batches"]
    assert batches in (2, 3)
    assert sorted(hours["bytes"].tolist()) == sorted(sizes[:batches])
    comms = Workspace(workspace).twin().communications
    row = comms[(comms["src_id"] == owner[src_ip]) & (comms["dst_id"] == owner[dst_ip]) & (comms["dst_port"] == port)]
    assert row["bytes"].tolist() == [sum(sizes[:batches])]


def test_repeated_listen_is_usage_error(tmp_path):
    from typer.testing import CliRunner

    from twin.cli.main import app

    address = f"127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["collect", "flows", "--listen", address, "--listen", address, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "given more than once" in result.output
