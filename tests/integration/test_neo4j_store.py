"""The Neo4j store against a real Neo4j 5 server (the ``neo4j_uri`` fixture).

Each test writes under its own site name, so tests share one server without
seeing each other's items.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

pytest.importorskip("neo4j")

from twin.exceptions import ConfigError, StoreError  # noqa: E402
from twin.graph.embedded import EmbeddedStore  # noqa: E402
from twin.graph.neo4j import (  # noqa: E402
    PLACEHOLDER_LABEL,
    Neo4jConfig,
    Neo4jStore,
    _rel_key,
    analyze_from_neo4j,
    export_snapshot,
    import_site,
)
from twin.model import schema  # noqa: E402
from twin.model.observation import escape_text  # noqa: E402
from twin.model.twin import Twin  # noqa: E402
from twin.pipeline import build  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_networks"

# Columns that identify one row of each table, as the store sorts loaded tables.
TABLE_KEYS: dict[str, list[str]] = {decl.table: list(decl.key) for decl in schema.NODES}
for _rel in schema.RELATIONSHIPS:
    TABLE_KEYS.setdefault(_rel.table, _rel_key(_rel))

HOSTILE = [
    "it's a \"quoted\" name",
    "back\\slash\\\\double",
    "MATCH (n) DETACH DELETE n",
    "}) RETURN 1 //",
    "'}) MATCH (m) DETACH DELETE m //",
    escape_text(b"nul\x00byte"),
    escape_text(b"not utf-8 \xff\xfe end"),
    "tab\tand unicode \u00e9\u4e2d",
]


def _sorted(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    return frame.sort_values(TABLE_KEYS[table], kind="stable", ignore_index=True)


def assert_twins_equal(expected: Twin, actual: Twin) -> None:
    assert actual.site == expected.site
    assert actual.run_id == expected.run_id
    assert actual.built_at == expected.built_at
    assert set(actual.tables) == set(expected.tables)
    for table in expected.tables:
        pd.testing.assert_frame_equal(_sorted(actual.tables[table], table), _sorted(expected.tables[table], table), obj=table)


def renamed(twin: Twin, site: str) -> Twin:
    """Return a copy of a twin under another site name."""
    tables = {name: frame.copy() for name, frame in twin.tables.items()}
    if len(tables["segments"]):
        tables["segments"]["site"] = pd.Series([site] * len(tables["segments"]), dtype=object)
    return Twin(site=site, run_id=twin.run_id, built_at=twin.built_at, tables=tables)


def with_run_id(twin: Twin, run_id: str) -> Twin:
    tables = {}
    for name, frame in twin.tables.items():
        tables[name] = frame.assign(run_id=pd.Series([run_id] * len(frame), index=frame.index, dtype=object))
    return Twin(site=twin.site, run_id=run_id, built_at=twin.built_at, tables=tables)


def count_items(store: Neo4jStore, site: str) -> dict[str, int]:
    counts = {}
    for decl in schema.NODES:
        frame = store.run(f"MATCH (n:{decl.label}) WHERE n.site = $site RETURN count(n) AS n", {"site": site})
        counts[decl.label] = int(frame["n"][0])
    for rel in schema.RELATIONSHIPS:
        frame = store.run(f"MATCH ()-[r:{rel.type}]->() WHERE r.site = $site RETURN count(r) AS n", {"site": site})
        counts[rel.type] = int(frame["n"][0])
    return counts


def duplicate_keys(store: Neo4jStore, site: str) -> dict[str, int]:
    """Return, per label, how many keys occur on more than one node of the site."""
    out = {}
    for decl in schema.NODES:
        keys = ", ".join(f"n.{k}" for k in decl.key)
        frame = store.run(
            f"MATCH (n:{decl.label}) WHERE n.site = $site WITH [{keys}] AS key, count(*) AS c WHERE c > 1 RETURN count(key) AS d",
            {"site": site},
        )
        out[decl.label] = int(frame["d"][0])
    return out


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory):
    """Embedded workspaces of the sample hospital and the pair sites, built once."""
    out = {}
    for name, site_dir in (
        ("hospital", SAMPLES / "hospital"),
        ("compliant", SAMPLES / "pair" / "compliant"),
        ("violating", SAMPLES / "pair" / "violating"),
    ):
        ws = tmp_path_factory.mktemp(name) / "w.sqlite"
        build(site_dir, ws)
        out[name] = ws
    return out


def embedded_twin(ws: Path) -> Twin:
    with EmbeddedStore(ws, create=False) as store:
        return store.load_twin()


def embedded_site_text(ws: Path) -> str:
    with EmbeddedStore(ws, create=False) as store:
        return store.config_yaml(store.resolve_snapshot().run_id)[1]


@pytest.fixture()
def store(neo4j_uri):
    with Neo4jStore(neo4j_uri) as opened:
        yield opened


# -- round trip ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["hospital", "compliant", "violating"])
def test_round_trip_equals_embedded(store, workspaces, name):
    original = embedded_twin(workspaces[name])
    twin = renamed(original, f"round-trip-{name}")
    stats = store.write_twin(twin, site_text=embedded_site_text(workspaces[name]))
    loaded = store.load_twin(twin.site)

    assert_twins_equal(twin, loaded)
    assert stats.nodes == {decl.label: len(twin.tables[decl.table]) for decl in schema.NODES}
    assert stats.relationships == {rel.type: len(twin.tables[rel.table]) for rel in schema.RELATIONSHIPS}


def test_load_site_returns_stored_config(store, workspaces):
    from twin.model.site import parse_site

    twin = renamed(embedded_twin(workspaces["violating"]), "site-config")
    text = embedded_site_text(workspaces["violating"])
    store.write_twin(twin, site_text=text)
    expected = parse_site(text)
    loaded = store.load_site("site-config")

    assert loaded.model_dump() == expected.model_dump()
    assert "site-config" in store.sites()


def test_findings_equal_embedded(store, workspaces, neo4j_uri):
    from twin.analysis import run_catalogue
    from twin.model.site import parse_site

    ws = workspaces["violating"]
    twin = embedded_twin(ws)
    text = embedded_site_text(ws)
    site = renamed(twin, "findings").site
    store.write_twin(renamed(twin, site), site_text=text)
    expected = run_catalogue(twin, parse_site(text))
    actual = analyze_from_neo4j(neo4j_uri, site=site, engine="python")

    assert set(actual) == set(expected)
    for name in expected:
        pd.testing.assert_frame_equal(actual[name].reset_index(drop=True), expected[name].reset_index(drop=True), obj=name)

    # The default runs the Cypher forms on the server: the same rows, compared
    # as text because the driver returns object columns.
    on_server = analyze_from_neo4j(neo4j_uri, site=site)
    assert set(on_server) == set(expected)
    for name in expected:
        columns = list(expected[name].columns)
        assert list(on_server[name].columns) == columns, name
        assert _row_texts(on_server[name]) == _row_texts(expected[name]), name


def _row_texts(frame: pd.DataFrame) -> list[tuple[str, ...]]:
    return sorted(tuple("" if v is None or (isinstance(v, float) and v != v) else str(v) for v in row)
                  for row in frame.astype(object).itertuples(index=False))


# -- schema -------------------------------------------------------------------


def test_ensure_schema_twice_same_constraints(store):
    store.ensure_schema()
    first = store.run("SHOW CONSTRAINTS YIELD name, labelsOrTypes, properties, type RETURN * ORDER BY name")
    first_indexes = store.run("SHOW INDEXES YIELD name RETURN name ORDER BY name")
    store.ensure_schema()
    second = store.run("SHOW CONSTRAINTS YIELD name, labelsOrTypes, properties, type RETURN * ORDER BY name")
    second_indexes = store.run("SHOW INDEXES YIELD name RETURN name ORDER BY name")

    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_frame_equal(first_indexes, second_indexes)
    keyed = {(tuple(row.labelsOrTypes), tuple(row.properties)) for row in first.itertuples()}
    for decl in schema.NODES:
        assert ((decl.label,), ("site",) + decl.key) in keyed


# -- rewrites and stale removal -------------------------------------------------


def test_write_twice_no_duplicates(store, workspaces):
    twin = renamed(embedded_twin(workspaces["compliant"]), "write-twice")
    store.write_twin(twin)
    first = count_items(store, twin.site)
    second_stats = store.write_twin(twin)
    second = count_items(store, twin.site)

    assert second == first
    assert second_stats.removed_nodes == 0
    assert second_stats.removed_relationships == 0
    assert duplicate_keys(store, twin.site) == {decl.label: 0 for decl in schema.NODES}


def _without_device(twin: Twin, device_id: str, run_id: str) -> Twin:
    """Return the twin of a later build in which one device and everything about it is gone."""
    tables = {}
    for name, frame in twin.tables.items():
        keep = pd.Series(True, index=frame.index)
        for col in ("device_id", "a_device_id", "b_device_id", "src_id", "dst_id"):
            if col in frame.columns:
                keep &= frame[col] != device_id
        tables[name] = frame[keep].reset_index(drop=True)
    return with_run_id(Twin(site=twin.site, run_id=run_id, built_at=twin.built_at + 1, tables=tables), run_id)


def test_removed_device_is_removed(neo4j_uri, workspaces):
    twin = renamed(embedded_twin(workspaces["violating"]), "stale-removal")
    removed_id = twin.devices["device_id"].iloc[0]
    later = _without_device(twin, removed_id, "20991231T000000Z-later")
    # Tiny batches and chunks, so several chunks of each kind run.
    with Neo4jStore(neo4j_uri, batch_rows=7, stale_chunk_rows=3) as store:
        store.write_twin(twin)
        before = count_items(store, twin.site)
        stats = store.write_twin(later)
        after = count_items(store, twin.site)
        loaded = store.load_twin(twin.site)
        left = store.run("MATCH (n) WHERE n.site = $site AND n.device_id = $id RETURN count(n) AS n", {"site": twin.site, "id": removed_id})
        old = store.run(
            "MATCH (n) WHERE n.site = $site AND n.run_id <> $run RETURN count(n) AS n", {"site": twin.site, "run": later.run_id}
        )

    assert_twins_equal(later, loaded)
    assert int(left["n"][0]) == 0
    assert int(old["n"][0]) == 0
    # Removed nodes include placeholders that only the removed links needed.
    assert stats.removed_nodes == sum(before[d.label] - after[d.label] for d in schema.NODES)
    assert stats.removed_relationships == sum(before[r.type] - after[r.type] for r in schema.RELATIONSHIPS)
    assert stats.removed_nodes > 3
    assert after["Device"] == len(later.devices)


def test_duplicate_key_rejected(store, workspaces):
    twin = renamed(embedded_twin(workspaces["compliant"]), "duplicate-key")
    twin.tables["devices"] = pd.concat([twin.devices, twin.devices.iloc[:1]], ignore_index=True)

    with pytest.raises(StoreError, match="occurs twice"):
        store.write_twin(twin)


def test_placeholders_left_out_of_tables(store):
    twin = Twin(site="placeholders", run_id="20990101T000000Z-aaaaaa", built_at=1.0)
    twin.tables["links"] = pd.DataFrame(
        [{"a_device_id": "dev-a", "a_if_name": "eth0", "b_device_id": "dev-b", "b_if_name": "eth1", "source": "fdb",
          "confidence": 0.5, "first_seen": 1.0, "last_seen": 2.0, "sources": ["snmp"], "run_id": twin.run_id}]
    )
    store.write_twin(twin)
    loaded = store.load_twin("placeholders")
    placeholders = store.run(
        f"MATCH (n:{PLACEHOLDER_LABEL}) WHERE n.site = $site RETURN n.device_id AS d ORDER BY d", {"site": "placeholders"}
    )

    assert loaded.interfaces.empty
    assert placeholders["d"].tolist() == ["dev-a", "dev-b"]
    pd.testing.assert_frame_equal(loaded.links, _sorted(store.load_twin("placeholders").links, "links"))
    assert loaded.links[["a_device_id", "a_if_name", "b_device_id", "b_if_name"]].values.tolist() == [["dev-a", "eth0", "dev-b", "eth1"]]


# -- concurrency -----------------------------------------------------------------

_WRITER = """
import sys
from twin.graph.embedded import EmbeddedStore
from twin.graph.neo4j import Neo4jStore
from tests.integration.test_neo4j_store import renamed, with_run_id
workspace, uri, site, run_id = sys.argv[1:5]
with EmbeddedStore(workspace, create=False) as embedded:
    twin = embedded.load_twin()
twin = with_run_id(renamed(twin, site), run_id)
with Neo4jStore(uri, batch_rows=500) as store:
    store.write_twin(twin)
"""


def _run_writers(workspace: Path, uri: str, jobs: list[tuple[str, str]]) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(workspace), uri, site, run_id],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for site, run_id in jobs
    ]
    for proc in procs:
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]


def test_concurrent_builds_two_sites(store, workspaces, neo4j_uri):
    ws = workspaces["hospital"]
    twin = embedded_twin(ws)
    _run_writers(ws, neo4j_uri, [("concurrent-a", "20990101T000000Z-aaaaaa"), ("concurrent-b", "20990101T000000Z-bbbbbb")])

    for site, run_id in (("concurrent-a", "20990101T000000Z-aaaaaa"), ("concurrent-b", "20990101T000000Z-bbbbbb")):
        expected = with_run_id(renamed(twin, site), run_id)
        assert_twins_equal(expected, store.load_twin(site))
        assert duplicate_keys(store, site) == {decl.label: 0 for decl in schema.NODES}


def test_concurrent_builds_same_site(store, workspaces, neo4j_uri):
    ws = workspaces["hospital"]
    twin = embedded_twin(ws)
    runs = ["20990101T000000Z-cccccc", "20990101T000000Z-dddddd"]
    _run_writers(ws, neo4j_uri, [("concurrent-same", runs[0]), ("concurrent-same", runs[1])])
    loaded = store.load_twin("concurrent-same")

    # The writers take turns, so the site contains exactly one of the two writes.
    assert loaded.run_id in runs
    assert_twins_equal(with_run_id(renamed(twin, "concurrent-same"), loaded.run_id), loaded)
    assert duplicate_keys(store, "concurrent-same") == {decl.label: 0 for decl in schema.NODES}
    counts = count_items(store, "concurrent-same")
    assert counts["Device"] == len(twin.devices)
    assert counts["COMMUNICATES_WITH"] == len(twin.communications)


# -- hostile values ----------------------------------------------------------------


def test_hostile_values_round_trip(store, workspaces):
    twin = renamed(embedded_twin(workspaces["violating"]), "hostile")
    devices = twin.devices.copy()
    for index, text in enumerate(HOSTILE):
        devices.loc[index, "hostname"] = text
        devices.loc[index, "sys_descr"] = text + " / sysDescr"
        devices.loc[index, "location"] = text
    twin.tables["devices"] = devices
    interfaces = twin.interfaces.copy()
    hostile_ifname = HOSTILE[3]
    interfaces.loc[0, "if_name"] = hostile_ifname
    twin.tables["interfaces"] = interfaces
    other = renamed(embedded_twin(workspaces["compliant"]), "hostile-bystander")
    store.write_twin(other)
    bystander_before = count_items(store, other.site)

    store.write_twin(twin)
    loaded = store.load_twin("hostile")

    assert_twins_equal(twin, loaded)
    assert set(HOSTILE) <= set(loaded.devices["hostname"])
    assert hostile_ifname in set(loaded.interfaces["if_name"])
    assert count_items(store, other.site) == bystander_before
    matched = store.run("MATCH (d:Device) WHERE d.site = $site AND d.hostname = $name RETURN count(d) AS n",
                        {"site": "hostile", "name": HOSTILE[2]})
    assert int(matched["n"][0]) == 1


# -- export and import ---------------------------------------------------------------


def test_export_import_lossless(neo4j_uri, workspaces, tmp_path):
    source = tmp_path / "source.sqlite"
    build(SAMPLES / "pair" / "violating", source)
    with EmbeddedStore(source, create=False) as embedded:
        original = embedded.load_twin()
        site_text = embedded.config_yaml(original.run_id)[1]
    # The pair site name is shared with other tests, so start from a clean site.
    with Neo4jStore(neo4j_uri) as store:
        if original.site in store.sites():
            store.delete_site(original.site)

    export_snapshot(source, neo4j_uri)
    target = tmp_path / "target.sqlite"
    run_id = import_site(neo4j_uri, target, original.site)
    with EmbeddedStore(target, create=False) as embedded:
        imported = embedded.load_twin(run_id)
        imported_text = embedded.config_yaml(run_id)[1]

    assert run_id == original.run_id
    assert_twins_equal(original, imported)
    assert imported_text == site_text
    with pytest.raises(StoreError, match="already in this workspace"):
        import_site(neo4j_uri, target, original.site)


def test_cli_export_import(neo4j_uri, workspaces, tmp_path, monkeypatch):
    from twin.cli import neo4jcmd
    from twin.cli.main import app

    if "neo4j" not in {group.name for group in app.registered_groups}:
        neo4jcmd.register(app)
    monkeypatch.setenv("NEO4J_URI", neo4j_uri)
    monkeypatch.delenv("NEO4J_USER", raising=False)
    runner = CliRunner()
    source = workspaces["compliant"]
    original = embedded_twin(source)
    target = tmp_path / "imported.sqlite"

    exported = runner.invoke(app, ["export", "neo4j", "-w", str(source)])
    imported = runner.invoke(app, ["import", "neo4j", "-w", str(target), "--site", original.site])
    status = runner.invoke(app, ["neo4j", "status"])

    assert exported.exit_code == 0, exported.output
    assert imported.exit_code == 0, imported.output
    assert status.exit_code == 0, status.output
    assert original.site in status.output
    assert_twins_equal(original, embedded_twin(target))


# -- configuration -------------------------------------------------------------------


def test_from_env_without_uri(monkeypatch):
    monkeypatch.delenv("NEO4J_URI", raising=False)

    with pytest.raises(ConfigError, match="NEO4J_URI"):
        Neo4jConfig.from_env()


def test_from_env_reads_all_settings(monkeypatch):
    monkeypatch.setenv("NEO4J_URI", "bolt://127.0.0.1:7999")
    monkeypatch.setenv("NEO4J_USER", "twin")
    monkeypatch.setenv("NEO4J_PASSWORD", "secret from env")
    monkeypatch.setenv("NEO4J_DATABASE", "hospital")
    config = Neo4jConfig.from_env(prompt=True)

    assert (config.uri, config.user, config.password, config.database) == ("bolt://127.0.0.1:7999", "twin", "secret from env", "hospital")
    assert "secret" not in repr(config)


def test_from_env_user_without_password(monkeypatch):
    monkeypatch.setenv("NEO4J_URI", "bolt://127.0.0.1:7999")
    monkeypatch.setenv("NEO4J_USER", "twin")
    monkeypatch.delenv("NEO4J_PASSWORD", raising=False)

    with pytest.raises(ConfigError, match="NEO4J_PASSWORD"):
        Neo4jConfig.from_env(prompt=False)


def test_unreachable_server_message():
    with pytest.raises(StoreError, match=r"cannot reach Neo4j at bolt://127\.0\.0\.1:1: .*set NEO4J_URI"):
        Neo4jStore("bolt://127.0.0.1:1")


def test_cli_has_no_password_option():
    from twin.cli import neo4jcmd
    from twin.cli.main import app

    if "neo4j" not in {group.name for group in app.registered_groups}:
        neo4jcmd.register(app)
    runner = CliRunner()
    for args in (["neo4j", "build", "--help"], ["neo4j", "analyze", "--help"], ["neo4j", "status", "--help"],
                 ["export", "neo4j", "--help"], ["import", "neo4j", "--help"], ["neo4j", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "--password" not in result.output
    assert "NEO4J_PASSWORD" in runner.invoke(app, ["neo4j", "--help"]).output
