"""Flow collector on 127.0.0.1: queue limits, stop conditions, counters, derived snapshots."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import struct
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.unit.test_store import small_twin, write
from twin.api import Workspace
from twin.exceptions import StoreError
from twin.flowupdate import CollectorRun, apply_flow_batch
from twin.discovery.collector import (
    CollectorError,
    CollectorSettings,
    FlowCollector,
    ListenAddress,
    parse_listen,
    write_batch_files,
)
from twin.discovery.netflow import FlowDecoder
from twin.graph.embedded import FLOW_HOUR_COLUMNS, EmbeddedStore, SnapshotChanged
from twin.model.observation import FLOW_COLUMNS
from twin.model.site import load_site
from twin.report.diff import record_findings, recorded_findings

# Seconds any wait in these tests may take before the test fails.
WAIT_S = 10.0


def netflow_v5(flows, *, export_time: int, uptime_ms: int = 600_000, sequence: int = 0, sampling: int = 0) -> bytes:
    """Return one NetFlow v5 datagram.

    ``flows`` contains (src, dst, proto, src_port, dst_port, packets, bytes,
    first_ms, last_ms) tuples, with first and last as sysUptime in ms.
    """
    header = struct.pack("!HHIIIIBBH", 5, len(flows), uptime_ms, export_time, 0, sequence, 0, 0, sampling)
    records = b"".join(
        struct.pack(
            "!4s4s4sHHIIIIHHBBBBHHBBH",
            ipaddress.IPv4Address(src).packed,
            ipaddress.IPv4Address(dst).packed,
            b"\0\0\0\0",
            1,
            2,
            packets,
            octets,
            first_ms,
            last_ms,
            src_port,
            dst_port,
            0,
            0x1B,
            proto,
            0,
            0,
            0,
            24,
            24,
            0,
        )
        for src, dst, proto, src_port, dst_port, packets, octets, first_ms, last_ms in flows
    )
    return header + records


def one_flow_datagram(index: int, export_time: int) -> bytes:
    """Return a v5 datagram with one TCP flow whose source address encodes ``index``."""
    src = str(ipaddress.IPv4Address("10.1.0.0") + index)
    return netflow_v5([(src, "10.2.0.1", 6, 40000, 443, 3, 300, 590_000, 599_000)], export_time=export_time)


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT_S} s waiting for {what}")
        time.sleep(0.02)


class GatedDecoder(FlowDecoder):
    """A real FlowDecoder whose decode waits until the test opens the gate, to stall the decoder thread."""

    def __init__(self, gate: threading.Event):
        super().__init__()
        self.gate = gate
        self.entered = threading.Event()

    def decode(self, data, exporter, now):
        self.entered.set()
        if not self.gate.wait(WAIT_S):
            raise AssertionError("the test never opened the decoder gate")
        return super().decode(data, exporter, now)


@pytest.fixture
def sender():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield sock
    sock.close()


def start(settings: CollectorSettings, **kw) -> FlowCollector:
    collector = FlowCollector([ListenAddress("127.0.0.1", 0)], settings=settings, **kw)
    collector.start()
    return collector


def finish(collector: FlowCollector) -> None:
    collector.stop()
    assert collector.wait(WAIT_S), "the collector did not stop"
    assert collector.join(WAIT_S)


# -- listen addresses --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [("127.0.0.1:2055", "127.0.0.1", 2055), ("[::1]:4739", "::1", 4739), ("0.0.0.0:0", "0.0.0.0", 0)],
)
def test_parse_listen_accepts(text, host, port):
    assert parse_listen(text) == ListenAddress(host, port)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2055", "ADDR:PORT"),
        ("localhost:2055", "not an IP address"),
        ("::1:2055", "brackets"),
        ("127.0.0.1:70000", "0 to 65535"),
        ("127.0.0.1:", "0 to 65535"),
    ],
)
def test_parse_listen_rejects(text, message):
    with pytest.raises(CollectorError, match=message):
        parse_listen(text)


def test_bind_failure_names_address():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        collector = FlowCollector([ListenAddress("127.0.0.1", port)], settings=CollectorSettings())
        with pytest.raises(CollectorError, match=f"127.0.0.1:{port}"):
            collector.start()


# -- queue limits --------------------------------------------------------------


def test_full_queue_drops_and_counts(sender):
    gate = threading.Event()
    decoder = GatedDecoder(gate)
    settings = CollectorSettings(queue_size=8, batch_seconds=60, stats_interval=60)
    collector = start(settings, decoder=decoder, on_batch=lambda batch: None)
    try:
        address = ("127.0.0.1", collector.bound[0].port)
        now = int(time.time())
        sender.sendto(one_flow_datagram(0, now), address)
        assert decoder.entered.wait(WAIT_S), "the decoder never received the first datagram"
        # The decoder thread is now stuck in decode(); the reader must still take every datagram.
        total = 200
        for index in range(1, total):
            sender.sendto(one_flow_datagram(index, now), address)
        wait_until(lambda: collector.counters()["received"] == total, "the reader to receive every datagram")
        stalled = collector.counters()
        assert stalled["dropped"] == total - 1 - settings.queue_size
        assert stalled["queue_depth"] == settings.queue_size
    finally:
        gate.set()
    wait_until(lambda: collector.counters()["decoded"] == total - stalled["dropped"], "the queued datagrams to be decoded")
    finish(collector)
    final = collector.counters()
    assert final["records"] == total - stalled["dropped"]
    assert final["dropped"] == stalled["dropped"]
    assert final["queue_depth"] == 0


def test_queue_byte_limit_drops(sender):
    gate = threading.Event()
    decoder = GatedDecoder(gate)
    datagram = one_flow_datagram(1, int(time.time()))
    settings = CollectorSettings(queue_size=1000, queue_bytes=65535, batch_seconds=60, stats_interval=60)
    collector = start(settings, decoder=decoder)
    try:
        address = ("127.0.0.1", collector.bound[0].port)
        sender.sendto(datagram, address)
        assert decoder.entered.wait(WAIT_S)
        # Padding past the v5 records keeps the datagram decodable and makes it large.
        big = datagram + bytes(20_000)
        for _ in range(5):
            sender.sendto(big, address)
        wait_until(lambda: collector.counters()["received"] == 6, "six datagrams")
        counters = collector.counters()
        # The first datagram has left the queue, so the queue takes whole big ones up to 65,535 bytes.
        held = 65535 // len(big)
        assert counters["dropped"] == 5 - held
        assert counters["dropped_bytes"] == (5 - held) * len(big)
    finally:
        gate.set()
    finish(collector)


# -- stopping ------------------------------------------------------------------


def test_stop_flushes_last_batch(sender):
    batches = []
    collector = start(CollectorSettings(batch_seconds=3600, stats_interval=3600), on_batch=batches.append)
    address = ("127.0.0.1", collector.bound[0].port)
    now = int(time.time())
    flows = [
        ("10.1.0.1", "10.2.0.1", 6, 40000, 443, 3, 300, 590_000, 599_000),
        ("10.1.0.1", "10.2.0.1", 6, 40001, 443, 2, 120, 595_000, 598_000),
        ("10.1.0.2", "10.2.0.9", 17, 50000, 53, 1, 80, 598_000, 598_000),
    ]
    sender.sendto(netflow_v5(flows, export_time=now), address)
    wait_until(lambda: collector.counters()["records"] == 3, "three records")
    finish(collector)

    assert [batch.final for batch in batches] == [True]
    edges = batches[0].edges.sort_values("dst_port").reset_index(drop=True)
    assert edges[["src_ip", "dst_ip", "proto", "dst_port"]].values.tolist() == [
        ["10.1.0.2", "10.2.0.9", "udp", 53],
        ["10.1.0.1", "10.2.0.1", "tcp", 443],
    ]
    assert edges["bytes"].tolist() == [80, 420]
    assert edges["packets"].tolist() == [1, 5]
    assert edges["flows"].tolist() == [1, 2]
    # v5 times are sysUptime offsets from the export time: 600,000 ms of uptime at `now`.
    assert edges["first_seen"].tolist() == pytest.approx([now - 2.0, now - 10.0])
    assert edges["last_seen"].tolist() == pytest.approx([now - 2.0, now - 1.0])
    assert batches[0].hours["bytes"].sum() == 500
    assert all(not thread.is_alive() for thread in collector._threads)
    # The socket is closed, so its port can be bound again.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", collector.bound[0].port))


def test_duration_stops_collector():
    started = time.monotonic()
    collector = start(CollectorSettings(duration=0.5, batch_seconds=60, stats_interval=60))
    assert collector.wait(WAIT_S)
    assert time.monotonic() - started >= 0.5
    assert collector.join(WAIT_S)


def test_max_packets_stops_collector(sender):
    collector = start(CollectorSettings(max_packets=3, batch_seconds=60, stats_interval=60))
    address = ("127.0.0.1", collector.bound[0].port)
    now = int(time.time())
    for index in range(3):
        sender.sendto(one_flow_datagram(index, now), address)
    assert collector.wait(WAIT_S)
    assert collector.join(WAIT_S)
    counters = collector.counters()
    assert counters["received"] == 3
    assert counters["decoded"] == 3


def test_batches_every_interval(sender):
    batches = []
    collector = start(CollectorSettings(batch_seconds=0.3, stats_interval=60), on_batch=batches.append)
    address = ("127.0.0.1", collector.bound[0].port)
    sender.sendto(one_flow_datagram(1, int(time.time())), address)
    wait_until(lambda: len(batches) == 1, "the first batch")
    sender.sendto(one_flow_datagram(2, int(time.time())), address)
    wait_until(lambda: len(batches) == 2, "the second batch")
    finish(collector)
    assert [batch.edges["src_ip"].tolist() for batch in batches] == [["10.1.0.1"], ["10.1.0.2"]]
    assert [batch.sequence for batch in batches] == [0, 1]
    assert collector.counters()["batches"] == 2


# -- counters ------------------------------------------------------------------


def test_decoding_problems_logged(sender, caplog):
    caplog.set_level("WARNING", logger="twin.discovery.collector")
    collector = start(CollectorSettings(batch_seconds=60, stats_interval=0.2))
    address = ("127.0.0.1", collector.bound[0].port)
    sender.sendto(b"\x00\x05\x00", address)  # a truncated v5 header
    sender.sendto(b"hello, not a flow export", address)
    wait_until(lambda: collector.counters()["malformed"] + collector.counters()["unsupported"] >= 2, "decoding")
    finish(collector)

    warnings = [record.getMessage() for record in caplog.records if "datagram from 127.0.0.1" in record.getMessage()]
    assert len(warnings) == 2
    assert any("offset 0" in message and "version" in message for message in warnings)


def test_counters_and_stats_file(sender, tmp_path):
    seen = []
    stats_file = tmp_path / "stats" / "collector.json"
    collector = start(
        CollectorSettings(batch_seconds=60, stats_interval=0.2), on_stats=seen.append, stats_file=stats_file,
    )
    address = ("127.0.0.1", collector.bound[0].port)
    now = int(time.time())
    sender.sendto(one_flow_datagram(1, now), address)
    sender.sendto(b"\x00\x05\x00", address)  # a truncated v5 header
    sender.sendto(struct.pack("!HH", 1, 0) + bytes(20), address)  # NetFlow v1 is not decoded
    wait_until(lambda: collector.counters()["decoded"] + collector.counters()["malformed"] >= 2, "decoding")
    wait_until(lambda: len(seen) >= 1, "a statistics callback")
    finish(collector)

    counters = collector.counters()
    assert counters["received"] == 3
    assert counters["received_bytes"] == len(one_flow_datagram(1, now)) + 3 + 24
    assert counters["decoded"] == 1
    assert counters["records"] == 1
    assert counters["malformed"] == 1
    assert counters["unsupported"] == 1
    assert counters["exporters"] == 1
    assert counters["receive_buffer_bytes"] > 0
    written = json.loads(stats_file.read_text())
    assert written["received"] == 3
    assert written["records"] == 1


def test_batch_error_counted_and_collector_continues(sender):
    calls = []

    def failing(batch):
        calls.append(batch)
        if len(calls) == 1:
            raise OSError("disk full")

    collector = start(CollectorSettings(batch_seconds=0.3, stats_interval=60), on_batch=failing)
    address = ("127.0.0.1", collector.bound[0].port)
    sender.sendto(one_flow_datagram(1, int(time.time())), address)
    wait_until(lambda: collector.counters()["batch_errors"] == 1, "the failed batch")
    sender.sendto(one_flow_datagram(2, int(time.time())), address)
    wait_until(lambda: collector.counters()["batches"] == 1, "a stored batch after the failure")
    finish(collector)
    assert collector.last_batch_error == "disk full"


def test_write_batch_files(tmp_path, sender):
    batches = []
    collector = start(CollectorSettings(batch_seconds=60, stats_interval=60), on_batch=batches.append)
    sender.sendto(one_flow_datagram(4, int(time.time())), ("127.0.0.1", collector.bound[0].port))
    wait_until(lambda: collector.counters()["records"] == 1, "one record")
    finish(collector)
    paths = write_batch_files(tmp_path / "out", batches[0])
    assert [p.name.endswith(suffix) for p, suffix in zip(paths, ("-edges.parquet", "-hours.parquet"))] == [True, True]
    edges = pd.read_parquet(paths[0])
    hours = pd.read_parquet(paths[1])
    assert edges["src_ip"].tolist() == ["10.1.0.4"]
    assert list(hours.columns) == list(FLOW_HOUR_COLUMNS)
    assert not list((tmp_path / "out").glob("*.tmp"))


# -- derived snapshots in the embedded store -----------------------------------


def hours_frame(hour: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "src_ip": ["10.0.0.1"],
            "dst_ip": ["10.0.0.2"],
            "proto": ["tcp"],
            "dst_port": [443],
            "hour": [hour],
            "bytes": [100],
            "packets": [2],
            "flows": [1],
        }
    )


def edges_frame(bytes_: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "src_ip": ["10.0.0.1"],
            "dst_ip": ["10.0.0.2"],
            "proto": ["tcp"],
            "dst_port": [443],
            "bytes": [bytes_],
            "packets": [2],
            "flows": [1],
            "first_seen": [1.0],
            "last_seen": [2.0],
        }
    )


def derive(store, base, run_id, hour, require_latest=True, replaces=None, comm_bytes=999):
    twin = small_twin(run_id)
    comms = twin.communications.copy()
    comms["bytes"] = [comm_bytes]
    store.write_derived_snapshot(
        base_run_id=base,
        run_id=run_id,
        tables={"communications": comms},
        summary={"stats": {"communications": 1}},
        started_at=1.0,
        flows=[("netflow", "udp://127.0.0.1:2055", edges_frame(int(hour)))],
        flow_hours=[("netflow", "udp://127.0.0.1:2055", hours_frame(hour))],
        require_latest=require_latest,
        replaces=replaces,
    )


def test_derived_snapshot_copies_base_tables(tmp_path):
    with EmbeddedStore(tmp_path / "w.sqlite") as store:
        write(store, "r1")
        derive(store, "r1", "d1", 3600.0)
        derived = store.load_twin("d1")
        base = store.load_twin("r1")
        assert derived.communications["bytes"].tolist() == [999]
        assert derived.devices["device_id"].tolist() == base.devices["device_id"].tolist()
        assert store.resolve_snapshot().run_id == "d1"
        assert store.lineage("d1") == ["d1", "r1"]
        assert store.build_run_of("d1") == "r1"
        assert store.import_files("d1") == store.import_files("r1")


def test_flow_hours_cover_lineage(tmp_path):
    with EmbeddedStore(tmp_path / "w.sqlite") as store:
        write(store, "r1")
        derive(store, "r1", "d1", 3600.0)
        derive(store, "d1", "d2", 7200.0)
        hours = store.flow_hours()
        assert sorted(hours["hour"].tolist()) == [3600.0, 7200.0]
        assert sorted(hours["run_id"].tolist()) == ["d1", "d2"]
        assert store.flow_hours("d1")["hour"].tolist() == [3600.0]
        assert store.flow_hours("r1").empty


def test_derived_snapshot_rejects_stale_base(tmp_path):
    with EmbeddedStore(tmp_path / "w.sqlite") as store:
        write(store, "r1")
        write(store, "r2")
        with pytest.raises(SnapshotChanged, match="r2"):
            derive(store, "r1", "d1", 3600.0)
        assert [run.run_id for run in store.runs()] == ["r1", "r2"]
        assert store.lineage("d1") == ["d1"]


def test_prune_keeps_lineage_data(tmp_path):
    with EmbeddedStore(tmp_path / "w.sqlite") as store:
        write(store, "r1")
        derive(store, "r1", "d1", 3600.0)
        derive(store, "d1", "d2", 7200.0)
        assert store.prune(keep=1) == ["r1", "d1"]
        assert [run.run_id for run in store.runs()] == ["d2"]
        assert sorted(store.flow_hours()["hour"].tolist()) == [3600.0, 7200.0]
        assert store.import_files("d2")[0]["path"] == "a.xml"


def snapshot_names(store, run_id) -> list[str]:
    rows = store.conn.execute("SELECT name FROM snapshot_tables WHERE snapshot=? ORDER BY name", (run_id,))
    return [row[0] for row in rows]


def test_replace_keeps_one_snapshot(tmp_path):
    with EmbeddedStore(tmp_path / "w.sqlite") as store:
        write(store, "r1")
        derive(store, "r1", "d1", 3600.0, comm_bytes=100)
        record_findings(store, "d1", {"misplaced_devices": pd.DataFrame({"device_id": ["dev-0"]})})
        names = snapshot_names(store, "d1")
        derive(store, "r1", "d2", 7200.0, replaces="d1", comm_bytes=250)

        assert [run.run_id for run in store.runs()] == ["r1", "d2"]
        assert store.lineage("d2") == ["d2", "r1"]
        assert snapshot_names(store, "d1") == []
        assert snapshot_names(store, "d2") == names
        assert store.load_twin("d2").communications["bytes"].tolist() == [250]
        assert len(store.load_twin("d2").devices) == len(store.load_twin("r1").devices)
        # Both batches' flows and hourly buckets now belong to the new snapshot.
        hours = store.flow_hours("d2")
        assert sorted(hours["hour"].tolist()) == [3600.0, 7200.0]
        assert set(hours["run_id"]) == {"d2"}
        assert sorted(int(frame["bytes"].sum()) for _, _, frame in store.flow_observations("d2")) == [3600, 7200]
        assert store.conn.execute("SELECT count(*) FROM snapshot_bases WHERE run_id='d1'").fetchone()[0] == 0
        assert recorded_findings(store, "d1") is None
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_replace_rejects_newer_snapshot(tmp_path):
    with EmbeddedStore(tmp_path / "w.sqlite") as store:
        write(store, "r1")
        derive(store, "r1", "d1", 3600.0)
        write(store, "r2")
        with pytest.raises(SnapshotChanged, match="r2"):
            derive(store, "r1", "d2", 7200.0, replaces="d1")
        assert [run.run_id for run in store.runs()] == ["r1", "d1", "r2"]
        assert store.flow_hours("d1")["hour"].tolist() == [3600.0]
        assert store.conn.execute("SELECT count(*) FROM flow_hours WHERE run_id='d2'").fetchone()[0] == 0


def test_replace_rejects_other_base(tmp_path):
    with EmbeddedStore(tmp_path / "w.sqlite") as store:
        write(store, "r1")
        derive(store, "r1", "d1", 3600.0)
        derive(store, "d1", "d2", 7200.0)
        with pytest.raises(StoreError, match="derives from d1, not from r1"):
            derive(store, "r1", "d3", 10800.0, replaces="d2")
        # d1 has a snapshot derived from it, so replacing it would cut d2's lineage.
        with pytest.raises(SnapshotChanged, match="d2 derives from d1"):
            derive(store, "r1", "d3", 10800.0, replaces="d1", require_latest=False)
        assert [run.run_id for run in store.runs()] == ["r1", "d1", "d2"]


def test_replace_after_base_pruned(tmp_path):
    with EmbeddedStore(tmp_path / "w.sqlite") as store:
        write(store, "r1")
        derive(store, "r1", "d1", 3600.0)
        assert store.prune(keep=1) == ["r1"]
        derive(store, "r1", "d2", 7200.0, replaces="d1")
        assert [run.run_id for run in store.runs()] == ["d2"]
        assert store.build_run_of("d2") == "r1"
        assert sorted(store.flow_hours()["hour"].tolist()) == [3600.0, 7200.0]
        assert store.import_files("d2")[0]["path"] == "a.xml"


# -- collector runs on a built sample site -------------------------------------

PAIR_SITE = Path(__file__).resolve().parents[2] / "sample_networks" / "pair" / "violating"


@pytest.fixture
def pair_workspace(tmp_path):
    workspace = tmp_path / "w.sqlite"
    Workspace(workspace).build(PAIR_SITE)
    return workspace


def device_pair(workspace) -> tuple[str, str, str, str]:
    """Return (src_ip, dst_ip, src_id, dst_id) of two devices with IPv4 addresses."""
    devices = Workspace(workspace).twin().devices
    rows = [(ips[0], device_id) for device_id, ips in zip(devices["device_id"], devices["ips"]) if len(ips) and ":" not in ips[0]]
    (src_ip, src_id), (dst_ip, dst_id) = rows[0], rows[1]
    return src_ip, dst_ip, src_id, dst_id


def batch_frames(src_ip, dst_ip, port, bytes_, hour) -> tuple[pd.DataFrame, pd.DataFrame]:
    edges = pd.DataFrame(
        [[src_ip, dst_ip, "tcp", port, bytes_, 3, 1, float(hour), float(hour) + 10]], columns=list(FLOW_COLUMNS)
    )
    hours = pd.DataFrame([[src_ip, dst_ip, "tcp", port, hour, bytes_, 3, 1]], columns=list(FLOW_HOUR_COLUMNS))
    return edges, hours


def comm_bytes(workspace, snapshot, src_id, dst_id, port) -> int:
    comms = Workspace(workspace).twin(snapshot).communications
    row = comms[(comms["src_id"] == src_id) & (comms["dst_id"] == dst_id) & (comms["dst_port"] == port)]
    return int(row["bytes"].sum())


def apply_batches(workspace, site, run, sizes, first_hour, port):
    src_ip, dst_ip, _, _ = device_pair(workspace)
    for index, size in enumerate(sizes):
        edges, hours = batch_frames(src_ip, dst_ip, port, size, first_hour + 3600 * index)
        apply_flow_batch(
            workspace, site, edges, hours, run=run,
            started_at=1000.0 + index, ended_at=1000.5 + index, counters={"received": index + 1},
        )


def test_collector_run_adds_one_snapshot(pair_workspace):
    site = load_site(PAIR_SITE)
    src_ip, dst_ip, src_id, dst_id = device_pair(pair_workspace)
    port = 18080
    with EmbeddedStore(pair_workspace, create=False) as store:
        build_id = store.runs()[-1].run_id
    before = comm_bytes(pair_workspace, build_id, src_id, dst_id, port)

    first = CollectorRun.new()
    sizes = [100, 2000, 30000]
    apply_batches(pair_workspace, site, first, sizes, 7200, port)
    with EmbeddedStore(pair_workspace, create=False) as store:
        runs = store.runs()
        assert [run.run_id for run in runs] == [build_id, first.snapshot_id]
        summary = runs[-1].summary["collector"]
        hours = store.flow_hours()
    assert comm_bytes(pair_workspace, None, src_id, dst_id, port) == before + sum(sizes)
    assert sorted(hours["hour"].tolist()) == [7200, 10800, 14400]
    assert sorted(hours["bytes"].tolist()) == sorted(sizes)
    assert summary["run_id"] == first.run_id
    assert summary["batches"] == 3
    assert summary["first_batch_at"] == 1000.0
    assert summary["last_batch_at"] == 1002.5
    assert summary["counters"] == {"received": 3}
    assert summary["merged"]["edges"] == 3
    assert summary["merged"]["communications_added"] == 1
    assert summary["merged"]["communications_updated"] == 2
    assert first.snapshots == [first.snapshot_id]

    second = CollectorRun.new()
    apply_batches(pair_workspace, site, second, [7], 18000, port)
    with EmbeddedStore(pair_workspace, create=False) as store:
        assert [run.run_id for run in store.runs()] == [build_id, first.snapshot_id, second.snapshot_id]
        assert store.lineage(second.snapshot_id) == [second.snapshot_id, first.snapshot_id, build_id]
        assert int(store.flow_hours()["bytes"].sum()) == sum(sizes) + 7
        assert int(store.flow_hours(first.snapshot_id)["bytes"].sum()) == sum(sizes)
        assert store.runs()[-1].summary["collector"]["batches"] == 1
        # Pruning to the latest snapshot keeps every bucket its lineage reads.
        store.prune(keep=1)
        assert int(store.flow_hours()["bytes"].sum()) == sum(sizes) + 7
    assert comm_bytes(pair_workspace, None, src_id, dst_id, port) == before + sum(sizes) + 7


def test_build_during_run_starts_new_snapshot(pair_workspace):
    site = load_site(PAIR_SITE)
    _, _, src_id, dst_id = device_pair(pair_workspace)
    port = 18081
    run = CollectorRun.new()
    apply_batches(pair_workspace, site, run, [500], 7200, port)
    kept = run.snapshot_id
    Workspace(pair_workspace).build(PAIR_SITE)
    apply_batches(pair_workspace, site, run, [40], 10800, port)

    with EmbeddedStore(pair_workspace, create=False) as store:
        runs = store.runs()
    assert len(runs) == 4
    assert runs[1].run_id == kept
    assert runs[1].summary["collector"]["batches"] == 1
    assert runs[3].run_id == run.snapshot_id
    assert runs[3].summary["derived_from"] == runs[2].run_id
    assert runs[3].summary["collector"]["batches"] == 1
    assert run.snapshots == [kept, run.snapshot_id]
    assert comm_bytes(pair_workspace, kept, src_id, dst_id, port) == 500
    # The new snapshot derives from the new build, which carried the earlier batch forward.
    assert comm_bytes(pair_workspace, None, src_id, dst_id, port) == 540


def test_kill_during_batch_keeps_previous(pair_workspace, tmp_path):
    marker = tmp_path / "halfway"
    script = textwrap.dedent(
        f"""
        import pathlib, time
        import tests.unit.test_collector as t
        from twin.flowupdate import CollectorRun
        from twin.graph.embedded import EmbeddedStore
        from twin.model.site import load_site

        workspace = pathlib.Path({str(pair_workspace)!r})
        site = load_site(t.PAIR_SITE)
        run = CollectorRun.new()
        t.apply_batches(workspace, site, run, [100, 2000], 7200, 18082)
        insert = EmbeddedStore._insert_flow_hours

        def stall(self, cur, *args):
            insert(self, cur, *args)
            pathlib.Path({str(marker)!r}).write_text(run.snapshot_id)
            time.sleep(60)

        EmbeddedStore._insert_flow_hours = stall
        t.apply_batches(workspace, site, run, [30000], 14400, 18082)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() or not marker.read_text():
            assert proc.poll() is None, "the batch process ended before reaching the kill point"
            assert time.monotonic() < deadline, "the batch process did not reach the kill point in 60 s"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    committed = marker.read_text()
    with sqlite3.connect(pair_workspace) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with EmbeddedStore(pair_workspace, create=False) as store:
        runs = store.runs()
        assert [run.run_id for run in runs][-1] == committed
        assert len(runs) == 2
        assert runs[-1].summary["collector"]["batches"] == 2
        assert sorted(store.flow_hours()["bytes"].tolist()) == [100, 2000]
    _, _, src_id, dst_id = device_pair(pair_workspace)
    assert comm_bytes(pair_workspace, None, src_id, dst_id, 18082) == 2100


def test_file_build_keeps_collected_flows(pair_workspace):
    # Collected flows exist only in the workspace: a later build of the
    # site's files must carry them forward, once, with their hour buckets.
    site = load_site(PAIR_SITE)
    _, _, src_id, dst_id = device_pair(pair_workspace)
    port = 18082
    before = comm_bytes(pair_workspace, None, src_id, dst_id, port)
    sizes = [300, 4000]
    apply_batches(pair_workspace, site, CollectorRun.new(), sizes, 7200, port)

    for _ in range(2):
        Workspace(pair_workspace).build(PAIR_SITE)
        assert comm_bytes(pair_workspace, None, src_id, dst_id, port) == before + sum(sizes)
        with EmbeddedStore(pair_workspace, create=False) as store:
            hours = store.flow_hours()
        collected = hours[hours["origin"].str.startswith("udp://")]
        assert int(collected["bytes"].sum()) == sum(sizes)
