"""Embedded store: round trip, snapshots, pruning, and kill -9 mid-build."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from twin.exceptions import SnapshotNotFound, StoreError
from twin.graph.embedded import EmbeddedStore
from twin.model.observation import Identity, Kind, Observation
from twin.model.twin import Twin

HOSTILE = "pump'\"\\ MATCH (n) DETACH DELETE n //\\x00<script>"


def small_twin(run_id: str, n: int = 3) -> Twin:
    devices = pd.DataFrame(
        {
            "device_id": [f"dev-{i}" for i in range(n)],
            "macs": [[f"00:1b:2c:00:00:{i:02x}"] for i in range(n)],
            "ips": [[f"10.0.0.{i + 1}"] for i in range(n)],
            "hostname": [HOSTILE] + [f"host-{i}" for i in range(1, n)],
            "managed": [True] * n,
            "confidence": [0.9] * n,
            "class_evidence": [[{"rule": "x", "value": "y"}]] * n,
            "first_seen": [1.0] * n,
            "last_seen": [2.0] * n,
            "sources": [["nmap"]] * n,
        }
    )
    comms = pd.DataFrame(
        {
            "src_id": ["dev-0"],
            "src_kind": ["device"],
            "dst_id": ["dev-1"],
            "dst_kind": ["device"],
            "proto": ["tcp"],
            "dst_port": [443],
            "bytes": [10],
            "packets": [2],
            "flows": [1],
            "first_seen": [1.0],
            "last_seen": [2.0],
            "sources": [["zeek"]],
        }
    )
    return Twin(site="s", run_id=run_id, built_at=1.0, tables={"devices": devices, "communications": comms})


def write(store, run_id, twin=None, observations=()):
    store.write_build(
        run_id=run_id,
        site="s",
        site_dir="/tmp/s",
        config_yaml="site: {name: s}\n",
        started_at=time.time(),
        twin=twin or small_twin(run_id),
        observations=observations,
        flows=[],
        import_files=[{"path": "a.xml", "format": "nmap-xml", "records_read": 1}],
        summary={"stats": {"devices": 3}},
    )


def test_round_trip_keeps_values(tmp_path):
    with EmbeddedStore(tmp_path / "w.sqlite") as store:
        obs = Observation(Kind.DEVICE, "nmap", "a.xml:3", 5.0, Identity(ips=("10.0.0.1",)), {"os": HOSTILE})
        write(store, "r1", observations=[(obs, "dev-0", None)])
        twin = store.load_twin()
        assert twin.run_id == "r1"
        assert twin.devices["hostname"].tolist()[0] == HOSTILE
        assert twin.devices["macs"].tolist()[2] == ["00:1b:2c:00:00:02"]
        assert twin.communications[["src_id", "dst_id", "dst_port"]].values.tolist() == [["dev-0", "dev-1", 443]]
        evidence = store.observations_for("dev-0", "r1")
        assert evidence["attrs"].tolist() == [{"os": HOSTILE}]


def test_snapshot_lookup_and_prune(tmp_path):
    with EmbeddedStore(tmp_path / "w.sqlite") as store:
        for run_id in ("r1", "r2", "r3"):
            write(store, run_id)
        assert store.resolve_snapshot("previous").run_id == "r2"
        assert store.resolve_snapshot("r1").run_id == "r1"
        with pytest.raises(SnapshotNotFound, match="recent runs: r1, r2, r3"):
            store.resolve_snapshot("r9")
        assert store.prune(keep=1) == ["r1", "r2"]
        assert [r.run_id for r in store.runs()] == ["r3"]
        assert len(store.load_twin().devices) == 3


def test_kill_during_build_keeps_previous_snapshot(tmp_path):
    path = tmp_path / "w.sqlite"
    with EmbeddedStore(path) as store:
        write(store, "r1")
    marker = tmp_path / "halfway"
    script = textwrap.dedent(
        f"""
        import time, pathlib
        from twin.graph.embedded import EmbeddedStore
        from twin.model.observation import Identity, Kind, Observation
        import tests.unit.test_store as t

        def observations():
            for i in range(200_000):
                if i == 120_000:
                    pathlib.Path({str(marker)!r}).write_text("x")
                    time.sleep(60)
                yield Observation(Kind.DEVICE, "nmap", "f", 1.0, Identity(ips=("10.0.0.1",))), "dev-0", None

        with EmbeddedStore({str(path)!r}) as store:
            t.write(store, "r2", observations=observations())
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd())
    try:
        deadline = time.time() + 60
        while not marker.exists():
            assert proc.poll() is None, "the build process ended before reaching the kill point"
            assert time.time() < deadline, "the build process did not reach the kill point in 60 s"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    with EmbeddedStore(path) as store:
        assert [r.run_id for r in store.runs()] == ["r1"]
        assert store.load_twin().run_id == "r1"
        count = store.conn.execute("SELECT count(*) FROM observations WHERE run_id='r2'").fetchone()[0]
        assert count == 0
        write(store, "r3")
        assert [r.run_id for r in store.runs()] == ["r1", "r3"]


def test_foreign_database_left_untouched(tmp_path):
    path = tmp_path / "other.sqlite"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE patients (id INTEGER)")
    other.commit()
    other.close()
    before = path.read_bytes()
    for create in (True, False):
        with pytest.raises(StoreError, match="not an iomt-twin workspace"):
            EmbeddedStore(path, create=create)
    assert path.read_bytes() == before


def test_non_sqlite_file_is_clear_error(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_text("hello\n")
    with pytest.raises(StoreError, match="cannot open as a workspace"):
        EmbeddedStore(path, create=False)
    assert path.read_text() == "hello\n"


def test_empty_file_is_not_a_snapshot(tmp_path):
    path = tmp_path / "empty.sqlite"
    path.touch()
    with pytest.raises(SnapshotNotFound, match="workspace is empty"):
        EmbeddedStore(path, create=False)
    assert path.stat().st_size == 0
