"""``twin report --store neo4j`` and the app with ``TWIN_STORE=neo4j``, against a real Neo4j 5 server.

The sample hospital is built once into a workspace and written once to the
``neo4j_uri`` server under a site name of its own. Reports and app pages from
Neo4j are compared with the same report and pages from that workspace.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

pytest.importorskip("neo4j")
pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from twin.api import WORKSPACE_ENV, Workspace  # noqa: E402
from twin.cli.appcmd import NEO4J_SITE_ENV, STORE_ENV  # noqa: E402
from twin.cli.main import app  # noqa: E402
from twin.graph.embedded import EmbeddedStore  # noqa: E402
from twin.graph.neo4j import NO_IMPORT_RECORDS_NOTE, Neo4jStore, neo4j_report_context  # noqa: E402
from twin.model.twin import Twin  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app.py"
HOSPITAL = REPO / "sample_networks" / "hospital"
PAGES = "twin/app/pages"
ALL_PAGES = ("map.py", "device.py", "findings.py", "attack_paths.py", "simulation.py", "it_dashboard.py", "biomed_dashboard.py")
SITE = "u-app-report-hospital"
# Seconds one AppTest run may take (a cold catalogue and map on 2 shared cores).
RUN_TIMEOUT = 180
PASSWORD = "s3cret-pw-4711"
NEO4J_ENV = ("NEO4J_URI", "NEO4J_USER", "NEO4J_PASSWORD", "NEO4J_DATABASE", NEO4J_SITE_ENV)


def renamed(twin: Twin, site: str) -> Twin:
    """Return a copy of a twin under another site name, so other tests' writes of the hospital do not touch it."""
    tables = {name: frame.copy() for name, frame in twin.tables.items()}
    if len(tables["segments"]):
        tables["segments"]["site"] = pd.Series([site] * len(tables["segments"]), dtype=object)
    return Twin(site=site, run_id=twin.run_id, built_at=twin.built_at, tables=tables)


@pytest.fixture(scope="module")
def hospital(tmp_path_factory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("neo4j-app") / "hospital.sqlite")
    ws.build(HOSPITAL)
    return ws


@pytest.fixture(scope="module")
def in_neo4j(hospital, neo4j_uri) -> str:
    """Write the hospital to Neo4j under SITE; return the URI."""
    with EmbeddedStore(hospital.path, create=False) as embedded:
        run = embedded.resolve_snapshot()
        site_dir, site_text = embedded.config_yaml(run.run_id)
    with Neo4jStore(neo4j_uri) as store:
        store.write_twin(renamed(hospital.twin(), SITE), site_text=site_text, site_dir=site_dir)
    return neo4j_uri


@pytest.fixture
def neo4j_env(in_neo4j, monkeypatch):
    for name in NEO4J_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NEO4J_URI", in_neo4j)
    monkeypatch.setenv(STORE_ENV, "neo4j")
    monkeypatch.setenv(NEO4J_SITE_ENV, SITE)
    return in_neo4j


def plain(output: str) -> str:
    """Return command output as one line, without the frame rich draws around usage errors."""
    return " ".join(output.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())


def findings_rows(document: dict) -> dict[str, list[str]]:
    """Return each query's finding records as sorted canonical JSON texts (the Cypher forms order rows by their ORDER BY)."""
    return {name: sorted(json.dumps(row, sort_keys=True) for row in rows) for name, rows in document["findings"].items()}


# -- reports ------------------------------------------------------------------


def test_report_neo4j_equals_workspace(hospital, neo4j_env, tmp_path):
    runner = CliRunner()
    from_workspace = runner.invoke(app, ["report", "-w", str(hospital.path), "--out", str(tmp_path / "ws"), "--format", "json", "--quiet"])
    assert from_workspace.exit_code == 0, from_workspace.output
    from_neo4j = runner.invoke(app, ["report", "--store", "neo4j", "--site", SITE, "--out", str(tmp_path / "neo"), "--format", "html,json,md", "--quiet"])
    assert from_neo4j.exit_code == 0, from_neo4j.output

    expected = json.loads((tmp_path / "ws" / "report.json").read_text())
    actual = json.loads((tmp_path / "neo" / "report.json").read_text())
    assert list(actual["findings"]) == list(expected["findings"])
    assert findings_rows(actual) == findings_rows(expected)
    assert actual["summary"] == expected["summary"]
    assert actual["counts"] == expected["counts"]
    assert actual["max_severity"] == expected["max_severity"]
    assert actual["run_id"] == expected["run_id"]
    assert actual["site"] == SITE
    assert actual["workspace"] == neo4j_env
    assert actual["imports"] == []
    assert actual["imports_note"] == NO_IMPORT_RECORDS_NOTE
    assert expected["imports_note"] is None

    html = (tmp_path / "neo" / "report.html").read_text()
    assert "The Neo4j store keeps the resolved twin only" in html
    assert f"<dd>{neo4j_env}</dd>" in html
    assert "The Neo4j store keeps the resolved twin only" in (tmp_path / "neo" / "report.md").read_text()


def test_analyze_neo4j_prints_what_the_workspace_prints(hospital, neo4j_env):
    # The same JSON envelope and findings, and --fail-on and csv work too.
    runner = CliRunner()
    from_workspace = runner.invoke(app, ["analyze", "-w", str(hospital.path), "-o", "json", "--fail-on", "high"])
    from_neo4j = runner.invoke(app, ["analyze", "--store", "neo4j", "--site", SITE, "-o", "json", "--fail-on", "high"])
    assert from_neo4j.exit_code == from_workspace.exit_code == 3
    expected, actual = json.loads(from_workspace.stdout), json.loads(from_neo4j.stdout)
    assert set(actual) == set(expected)
    assert findings_rows(actual) == findings_rows(expected)
    csv_rows = runner.invoke(app, ["analyze", "--store", "neo4j", "--site", SITE, "-q", "flat_segments", "-o", "csv"])
    assert csv_rows.exit_code == 0, csv_rows.output
    assert len(csv_rows.stdout.strip().splitlines()) == 1 + len(expected["findings"]["flat_segments"])


def test_report_neo4j_gate_matches_workspace(hospital, neo4j_env, tmp_path):
    runner = CliRunner()
    args = ["--format", "json", "--quiet", "--fail-on", "high"]
    from_workspace = runner.invoke(app, ["report", "-w", str(hospital.path), "--out", str(tmp_path / "ws"), *args])
    from_neo4j = runner.invoke(app, ["report", "--store", "neo4j", "--site", SITE, "--out", str(tmp_path / "neo"), *args])
    assert from_workspace.exit_code == 3, from_workspace.output
    assert from_neo4j.exit_code == from_workspace.exit_code, from_neo4j.output


@pytest.mark.parametrize("extra", [["--since", "last"], ["--snapshot", "latest"]])
def test_report_neo4j_rejects_history(neo4j_env, tmp_path, extra):
    result = CliRunner().invoke(app, ["report", "--store", "neo4j", "--out", str(tmp_path), *extra])
    assert result.exit_code == 2
    assert "no earlier snapshots" in plain(result.output)
    assert not (tmp_path / "report.json").exists()


def test_report_site_needs_neo4j(tmp_path):
    result = CliRunner().invoke(app, ["report", "--site", SITE, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--store neo4j" in plain(result.output)


def test_report_neo4j_unknown_site(neo4j_env, tmp_path):
    result = CliRunner().invoke(app, ["report", "--store", "neo4j", "--site", "no-such-site", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "no site 'no-such-site'" in plain(result.output)


def test_report_neo4j_unreachable(monkeypatch, tmp_path):
    monkeypatch.setenv("NEO4J_URI", "bolt://127.0.0.1:1")
    result = CliRunner().invoke(app, ["report", "--store", "neo4j", "--out", str(tmp_path)])
    assert result.exit_code == 1
    text = plain(result.output)
    assert "cannot reach Neo4j at bolt://127.0.0.1:1" in text
    assert "start it or set NEO4J_URI" in text


def test_report_context_from_neo4j(hospital, in_neo4j):
    expected = hospital.report_context()
    with Neo4jStore(in_neo4j) as store:
        context = neo4j_report_context(store, SITE)
    assert context.site == SITE
    assert context.run_id == expected.run_id
    assert context.built_at == expected.built_at
    assert context.counts == expected.counts
    assert context.descriptions == expected.descriptions
    assert context.limitations == expected.limitations
    assert context.imports == []
    assert context.imports_note == NO_IMPORT_RECORDS_NOTE
    assert context.workspace == in_neo4j


# -- twin app -----------------------------------------------------------------


def test_twin_app_dry_run_neo4j(neo4j_env):
    result = CliRunner().invoke(app, ["app", "--store", "neo4j", "--site", SITE, "--dry-run"])
    assert result.exit_code == 0, result.output
    line = plain(result.output)
    assert f"{STORE_ENV}=neo4j" in line
    assert f"{NEO4J_SITE_ENV}={SITE}" in line
    assert "streamlit run" in line


def test_twin_app_neo4j_needs_uri(monkeypatch):
    monkeypatch.delenv("NEO4J_URI", raising=False)
    result = CliRunner().invoke(app, ["app", "--store", "neo4j", "--dry-run"])
    assert result.exit_code == 1
    assert "NEO4J_URI is not set" in plain(result.output)


def run_page(page: str, query_params: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT)
    at.run()
    if page != "map.py":
        at.switch_page(f"{PAGES}/{page}")
    for key, value in (query_params or {}).items():
        at.query_params[key] = value
    at.run()
    return at


def sidebar_texts(at: AppTest) -> list[str]:
    """Return every text the sidebar shows: markdown, captions, errors, metrics, widget labels and options."""
    side = at.sidebar
    texts = [e.value for e in side.markdown] + [e.value for e in side.caption] + [e.value for e in side.error]
    texts += [f"{m.label} {m.value}" for m in side.metric]
    for box in side.selectbox:
        texts += [box.label, *map(str, box.options)]
    texts += [f"{t.label} {t.value}" for t in side.text_input]
    return texts


def page_metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.main.metric}


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@pytest.fixture(scope="module")
def pump_id(hospital) -> str:
    devices = hospital.devices()
    return str(devices[devices["device_class"] == "infusion_pump"]["device_id"].sort_values().iloc[0])


@pytest.mark.parametrize("page", ALL_PAGES)
def test_app_page_neo4j_equals_workspace(page, hospital, neo4j_env, pump_id, monkeypatch):
    params = {"device": pump_id} if page == "device.py" else None
    at = run_page(page, params)
    assert_clean(at)
    neo4j_metrics = page_metrics(at)
    sidebar = {m.label: m.value for m in at.sidebar.metric}
    twin = hospital.twin()
    assert sidebar == {
        "Devices": f"{len(twin.devices):,}",
        "Segments": f"{len(twin.segments):,}",
        "Communications": f"{len(twin.communications):,}",
        "Services": f"{len(twin.services):,}",
    }
    assert f"Store: Neo4j {neo4j_env}, site {SITE}" in [c.value for c in at.sidebar.caption]
    assert at.sidebar.selectbox(key="twin_neo4j_site").value == SITE

    monkeypatch.setenv(STORE_ENV, "embedded")
    monkeypatch.setenv(WORKSPACE_ENV, str(hospital.path))
    embedded = run_page(page, params)
    assert_clean(embedded)
    assert neo4j_metrics == page_metrics(embedded)
    # The same tables, except the device's observations, which Neo4j does not keep.
    expected_tables = {d.proto.alt for d in embedded.main.dataframe} - {"Table device-observations"}
    assert {d.proto.alt for d in at.main.dataframe} == expected_tables


def test_app_device_page_says_no_observations(neo4j_env, pump_id):
    at = run_page("device.py", {"device": pump_id})
    assert_clean(at)
    infos = " ".join(i.value for i in at.info)
    assert "no observation history" in infos
    assert "Observations" in [h.value for h in at.subheader]


def test_app_it_dashboard_says_no_history(neo4j_env):
    at = run_page("it_dashboard.py")
    assert_clean(at)
    infos = " ".join(i.value for i in at.info)
    assert "no earlier snapshots" in infos


def test_app_sidebar_hides_password(neo4j_env, monkeypatch):
    # The test server has authentication off and accepts any credentials.
    monkeypatch.setenv("NEO4J_USER", "auditor")
    monkeypatch.setenv("NEO4J_PASSWORD", PASSWORD)
    at = run_page("findings.py")
    assert_clean(at)
    texts = sidebar_texts(at)
    assert any(neo4j_env in text for text in texts), texts
    assert not any(PASSWORD in text for text in texts), texts


def test_app_error_hides_password_in_uri(neo4j_env, monkeypatch):
    port = neo4j_env.rsplit(":", 1)[1]
    monkeypatch.setenv("NEO4J_URI", f"bolt://auditor:{PASSWORD}@127.0.0.1:{port}")
    at = run_page("map.py")
    assert not at.exception, [e.value for e in at.exception]
    texts = sidebar_texts(at) + [e.value for e in at.error] + [i.value for i in at.info]
    assert not any(PASSWORD in text for text in texts), texts


def test_app_unreachable_neo4j_shows_error(neo4j_env, monkeypatch):
    monkeypatch.setenv("NEO4J_URI", "bolt://127.0.0.1:1")
    at = run_page("findings.py")
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.sidebar.error]
    assert len(errors) == 1, errors
    assert "cannot reach Neo4j at bolt://127.0.0.1:1" in errors[0]
    assert "start it or set NEO4J_URI" in errors[0]


def test_app_unknown_store_shows_error(monkeypatch):
    monkeypatch.setenv(STORE_ENV, "mongodb")
    at = run_page("map.py")
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.sidebar.error]
    assert errors == [f"{STORE_ENV}='mongodb' is invalid; expected embedded or neo4j"]
