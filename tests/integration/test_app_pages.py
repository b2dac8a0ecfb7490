"""Every app page under Streamlit's AppTest, on the sample hospital built once per module.

Expected numbers come from the Workspace API and the sample's ground truth,
never from the page modules' own helpers.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from twin.api import WORKSPACE_ENV, Workspace  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app.py"
HOSPITAL = REPO / "sample_networks" / "hospital"
PAIR = REPO / "sample_networks" / "pair" / "compliant"
PAGES = "twin/app/pages"
ALL_PAGES = ("map.py", "device.py", "findings.py", "attack_paths.py", "simulation.py", "it_dashboard.py", "biomed_dashboard.py")
# Seconds one AppTest run may take (a cold catalogue and map on 2 shared cores).
RUN_TIMEOUT = 120


@pytest.fixture(scope="module")
def hospital(tmp_path_factory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("app") / "hospital.sqlite")
    ws.build(HOSPITAL)
    return ws


@pytest.fixture(scope="module")
def truth() -> dict:
    return yaml.safe_load((HOSPITAL / "ground_truth.yaml").read_text())


@pytest.fixture
def open_app(hospital, monkeypatch):
    monkeypatch.setenv(WORKSPACE_ENV, str(hospital.path))

    def run(page: str, query_params: dict | None = None) -> AppTest:
        at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT)
        at.run()
        if page != "map.py":
            at.switch_page(f"{PAGES}/{page}")
        for key, value in (query_params or {}).items():
            at.query_params[key] = value
        at.run()
        return at

    return run


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def drawn_table(at: AppTest, key: str) -> pd.DataFrame:
    """Return the rows of the table drawn with ``key`` (its alternative text is ``Table <key>``)."""
    found = [d for d in at.dataframe if d.proto.alt == f"Table {key}"]
    assert len(found) == 1, f"table {key!r}: {len(found)} drawn"
    return found[0].value


def metrics(at: AppTest) -> dict[str, str]:
    """Return the metrics of the page (not the sidebar's) by label."""
    return {m.label: m.value for m in at.main.metric}


def ip_of(ws: Workspace) -> dict[str, str]:
    devices = ws.devices()
    return {d: (ips[0] if len(ips) else None) for d, ips in zip(devices["device_id"], devices["ips"])}


# -- map ----------------------------------------------------------------------


def test_map_default_view(open_app, hospital):
    from twin.app import mapview

    at = open_app("map.py")
    assert_clean(at)
    assert len(at.get("iframe")) == 1
    view = mapview.build_view(hospital.twin(), hospital.site(), violations=hospital.segment_violations())
    assert f"{len(view.nodes)} nodes and {len(view.edges)} edges drawn." in [c.value for c in at.caption]
    assert set(at.multiselect(key="map-expand").options) == set(mapview.expandable_ids(view))


def test_map_expand_segment(open_app, hospital):
    from twin.app import mapview

    at = open_app("map.py")
    at.multiselect(key="map-expand").set_value(["segment:a-pumps"]).run()
    assert_clean(at)
    view = mapview.build_view(hospital.twin(), hospital.site(), expand=["segment:a-pumps"], violations=hospital.segment_violations())
    assert f"{len(view.nodes)} nodes and {len(view.edges)} edges drawn." in [c.value for c in at.caption]


def test_map_overlays_and_styles(open_app, hospital):
    from twin.app import mapview

    at = open_app("map.py")
    at.radio(key="map-colour").set_value("class").run()
    at.radio(key="map-size").set_value("risk").run()
    at.toggle(key="map-paths").set_value(True).run()
    at.selectbox(key="map-path-mode").set_value("observed").run()
    assert_clean(at)
    paths = hospital.attack_paths()
    view = mapview.build_view(
        hospital.twin(),
        hospital.site(),
        colour_by="class",
        size_by="risk",
        violations=hospital.segment_violations(),
        attack_paths=paths[paths["mode"] == "observed"],
    )
    assert f"{len(view.nodes)} nodes and {len(view.edges)} edges drawn." in [c.value for c in at.caption]
    assert (view.edges["kind"] == "attack_path").any()


def test_map_legend_follows_overlays(open_app):
    from twin.app import mapview

    def legend_entries(at: AppTest) -> list[str]:
        bodies = [h.proto.body for h in at.get("html") if "communication" in h.proto.body]
        assert len(bodies) == 1
        return re.findall(r"</span>([^<]+)</span>", bodies[0])

    at = open_app("map.py")
    entries = legend_entries(at)
    assert "violation (denied by policy)" in entries
    assert mapview.LEGEND_BORDER_LABEL in entries
    assert "attack-path hop" not in entries
    at.toggle(key="map-paths").set_value(True).run()
    assert "attack-path hop" in legend_entries(at)
    at.toggle(key="map-violations").set_value(False).run()
    assert "violation (denied by policy)" not in legend_entries(at)


def test_map_html_is_self_contained(open_app):
    at = open_app("map.py")
    srcdoc = at.get("iframe")[0].proto.srcdoc
    assert "vis.Network" in srcdoc or "new vis" in srcdoc
    for needle in ('src="http', "src='http", 'href="http', "href='http", "@import url(http"):
        assert needle not in srcdoc


# -- device -------------------------------------------------------------------


def test_device_page_pump(open_app, hospital):
    at = open_app("device.py", {"device": "10.16.4.10"})
    assert_clean(at)
    row = hospital.find_device("10.16.4.10")
    shown = metrics(at)
    assert shown["Class"] == "infusion_pump"
    assert shown["Segment"] == row["segment_id"]
    sources_line = [m.value for m in at.markdown if m.value.startswith("**Sources:**")]
    assert sources_line == [f"**Sources:** {', '.join(row['sources'])}"]
    facts = drawn_table(at, "device-facts")
    assert facts.set_index("property").loc["vendor", "source"] == "inventory"
    assert facts.set_index("property").loc["device_class", "value"] == "infusion_pump"
    evidence = drawn_table(at, "device-evidence")
    assert set(evidence["class"]) == {"infusion_pump"}


def test_device_page_flows_in_and_out(open_app, hospital):
    at = open_app("device.py", {"device": "10.16.4.10"})
    detail = hospital.device("10.16.4.10")
    device_id = detail.device["device_id"]
    comms = detail.communications
    out_rows = drawn_table(at, "device-flows-out")
    in_rows = drawn_table(at, "device-flows-in")
    assert len(out_rows) == int((comms["src_id"] == device_id).sum())
    assert len(in_rows) == int((comms["dst_id"] == device_id).sum())
    # The planted telnet violation into the pump is shown as denied, with its rule.
    telnet = in_rows[(in_rows["proto"] == "tcp") & (in_rows["dst_port"] == 23)]
    assert set(zip(telnet["action"], telnet["rule"])) == {("deny", "deny-remote-access-to-clinical")}


def test_device_page_findings_listed(open_app, hospital):
    at = open_app("device.py", {"device": "10.16.4.10"})
    detail = hospital.device("10.16.4.10")
    expected = sum(len(f) for f in detail.findings.values())
    assert f"Findings touching this device ({expected})" in [s.value for s in at.subheader]


def test_device_page_times_are_iso(open_app, hospital):
    from twin.report.cells import iso_utc

    at = open_app("device.py", {"device": "10.16.4.10"})
    detail = hospital.device("10.16.4.10")
    observations = drawn_table(at, "device-observations")
    assert list(observations["seen_at"]) == [iso_utc(v) for v in detail.observations["seen_at"]]
    assert all(str(v).endswith("Z") for v in observations["seen_at"] if v is not None)
    # NOTE: the sample pump has no interface rows; the interface columns are covered only when a device has some.
    interfaces = drawn_table(at, "device-interfaces") if not detail.interfaces.empty else None
    for column in ("first_seen", "last_seen"):
        if interfaces is not None and column in detail.interfaces:
            assert list(interfaces[column]) == [iso_utc(v) for v in detail.interfaces[column]], column
    violations = detail.findings["segment_violations"]
    shown = drawn_table(at, "device-findings-segment_violations")
    assert list(shown["first_seen"]) == [iso_utc(v) for v in violations["first_seen"]]


def test_device_page_unknown(open_app):
    at = open_app("device.py", {"device": "no-such-device"})
    assert not at.exception
    assert len(at.warning) == 1
    assert "no device matches 'no-such-device'" in at.warning[0].value


def test_device_page_identity_sources(open_app, hospital):
    at = open_app("device.py", {"device": "10.16.4.10"})
    row = hospital.find_device("10.16.4.10")
    winner = max((e for e in row["class_evidence"] if e.get("class") == row["device_class"]), key=lambda e: e["weight"])
    assert winner["rule"] == "inventory device type"
    facts = drawn_table(at, "device-facts").set_index("property")["source"]
    for prop in ("device_class", "confidence"):
        assert facts[prop] == "classification rule 'inventory device type' (inventory)", prop
    assert facts["criticality"] != ", ".join(row["sources"])
    evidence = drawn_table(at, "device-evidence")
    assert set(zip(evidence["rule"], evidence["source"], evidence["decided"])) == {("inventory device type", "inventory", True)}


def test_device_page_failed_search_clears_url(open_app):
    at = open_app("device.py", {"device": "10.16.4.10"})
    assert at.query_params.get("device", "").startswith("dev-")
    at.text_input(key="device-search").set_value("no-such-device").run()
    assert not at.exception
    assert "no device matches 'no-such-device'" in at.warning[0].value
    assert "device" not in at.query_params
    # A later link to the first device opens it again.
    at.query_params["device"] = "10.16.4.10"
    at.run()
    assert metrics(at)["Class"] == "infusion_pump"


@pytest.fixture(scope="module")
def shared_ip(tmp_path_factory) -> Workspace:
    """A small site whose inventory lists two pumps with one IP address (different MACs, serials and names)."""
    site = tmp_path_factory.mktemp("sharedip") / "site"
    shutil.copytree(PAIR, site, ignore=shutil.ignore_patterns("flows", "proposed_policy.yaml"))
    with (site / "inventory" / "cmms_export.csv").open("a", encoding="utf-8") as inventory:
        inventory.write('NB-900001,ZZ00000001,Baxter,Sigma Spectrum,Infusion Pump,ICU,"Ward 3",Building A,00:11:22:33:44:01,10.16.4.250,dup-pump-01,In Service\n')
        inventory.write('NB-900002,ZZ00000002,Baxter,Sigma Spectrum,Infusion Pump,ICU,"Ward 3",Building A,00:11:22:33:44:02,10.16.4.250,dup-pump-02,In Service\n')
    ws = Workspace(site.parent / "ws.sqlite")
    ws.build(site)
    return ws


def test_device_page_ip_of_several_devices(shared_ip, monkeypatch):
    devices = shared_ip.devices()
    expected = set(devices.loc[[("10.16.4.250" in list(ips)) for ips in devices["ips"]], "device_id"])
    assert len(expected) == 2
    monkeypatch.setenv(WORKSPACE_ENV, str(shared_ip.path))
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT).run()
    at.switch_page(f"{PAGES}/device.py")
    at.query_params["device"] = "10.16.4.250"
    at.run()
    assert not at.exception
    assert at.warning[0].value.startswith("'10.16.4.250' matches 2 devices")
    matches = drawn_table(at, "device-matches")
    assert set(matches["device"]) == {f"device?device={d}" for d in expected}
    assert "device" not in at.query_params


def test_device_page_without_query(open_app):
    at = open_app("device.py")
    assert_clean(at)
    assert at.info


# -- findings -----------------------------------------------------------------


def test_findings_tab_counts(open_app, hospital):
    at = open_app("findings.py")
    assert_clean(at)
    findings = hospital.findings()
    names = ("misplaced_devices", "segment_violations", "external_exposure", "flat_segments")
    for name in names:
        table = drawn_table(at, f"findings-{name}-table")
        assert len(table) == len(findings[name]), name
    labels = [t.label for t in at.tabs]
    assert labels == [
        f"Misplaced devices ({len(findings['misplaced_devices'])})",
        f"Segment violations ({len(findings['segment_violations'])})",
        f"External exposure ({len(findings['external_exposure'])})",
        f"Flat segments ({len(findings['flat_segments'])})",
    ]


def test_findings_filters(open_app, hospital):
    at = open_app("findings.py")
    violations = hospital.segment_violations()
    at.multiselect(key="findings-segment_violations-segment").set_value(["a-guest"]).run()
    table = drawn_table(at, "findings-segment_violations-table")
    expected = violations[(violations["src_segment"] == "a-guest") | (violations["dst_segment"] == "a-guest")]
    assert len(expected) > 0
    assert sorted(table["dst_hostname"].fillna("")) == sorted(expected["dst_hostname"].fillna(""))
    at.text_input(key="findings-segment_violations-text").set_value("tcp").run()
    assert f"{len(expected)} of {len(violations)} findings" in [c.value for c in at.caption]


def test_findings_class_filter_every_tab(open_app, hospital):
    at = open_app("findings.py")
    for name in ("misplaced_devices", "segment_violations", "external_exposure", "flat_segments"):
        assert not at.multiselect(key=f"findings-{name}-class").disabled, name
    view = hospital.devices().set_index("device_id")["device_class"]
    violations = hospital.segment_violations()
    src_class = violations["src_id"].map(view)
    dst_class = violations["dst_id"].map(view)
    at.multiselect(key="findings-segment_violations-class").set_value(["infusion_pump"]).run()
    table = drawn_table(at, "findings-segment_violations-table")
    expected = violations[((src_class == "infusion_pump") | (dst_class == "infusion_pump")).to_numpy()]
    assert len(expected) > 0
    assert sorted(zip(table["src_ip"], table["dst_ip"], table["dst_port"])) == sorted(zip(expected["src_ip"], expected["dst_ip"], expected["dst_port"]))
    flat = hospital.findings()["flat_segments"]
    medical = sorted({c for classes in flat["medical_classes"] for c in classes})
    at.multiselect(key="findings-flat_segments-class").set_value(medical[:1]).run()
    flat_table = drawn_table(at, "findings-flat_segments-table")
    assert set(flat_table["segment_id"]) == {s for s, classes in zip(flat["segment_id"], flat["medical_classes"]) if medical[0] in classes}


@pytest.fixture
def downloads(monkeypatch) -> dict[str, bytes]:
    """Record the file name and content of every download button the pages draw (the real media manager still stores them)."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    recorded: dict[str, bytes] = {}
    original = MediaFileManager.add

    def add(self, data, mimetype, coordinates, file_name=None, is_for_static_download=False):
        recorded[file_name] = data if isinstance(data, bytes) else bytes(data)
        return original(self, data, mimetype, coordinates, file_name=file_name, is_for_static_download=is_for_static_download)

    monkeypatch.setattr(MediaFileManager, "add", add)
    return recorded


def test_findings_csv_download(open_app, hospital, downloads):
    from twin.report.writers import csv_filename, render_csv

    at = open_app("findings.py")
    buttons = [b for b in at.get("download_button")]
    assert len(buttons) == 4
    # Each download is the finding's own columns, as twin report writes them, without the filter-only class columns.
    findings = hospital.findings()
    for name in ("misplaced_devices", "segment_violations", "external_exposure", "flat_segments"):
        assert downloads[csv_filename(name)].decode("utf-8") == render_csv(findings[name]), name


# -- attack paths -------------------------------------------------------------


def test_attack_paths_ground_truth_pairs(open_app, hospital, truth):
    at = open_app("attack_paths.py")
    assert_clean(at)
    table = drawn_table(at, "paths-table")
    device_ips = set(ip_of(hospital).values())
    found: dict[tuple[str, str], int] = {}
    for entry_ip, target_ip, hops in zip(table["entry_ip"], table["target_ip"], table["hops"]):
        entry = entry_ip if entry_ip in device_ips else "internet"
        key = (entry, target_ip)
        found[key] = min(int(hops), found.get(key, 99))
    expected = {(p["entry"], p["target"]): p["min_hops"] for p in truth["findings"]["attack_paths"]}
    assert found == expected


def test_attack_paths_choke_points_and_rules(open_app, hospital):
    at = open_app("attack_paths.py")
    site = hospital.site()
    from twin.analysis import attack_paths, choke_points
    from twin.policy.engine import PolicyEngine

    paths = attack_paths.find(hospital.twin(), site, mode="observed")
    choke = choke_points.find(hospital.twin(), site, mode="observed", paths=paths)
    assert len(drawn_table(at, "paths-choke-table")) == len(choke)
    rules = drawn_table(at, "paths-rules")
    min_cut = choke[choke["kind"] == "min_cut_rule"]["item"]
    expected = {(f"segment:{a}" if a != "internet" else "internet", f"segment:{b}") for a, _, b in (i.partition(" -> ") for i in min_cut)}
    assert set(zip(rules["from"], rules["to"])) == expected
    assert set(rules["action"]) == {"deny"}
    # Each cut edge of the observed paths is a recorded communication the current policy already denies
    # (the planted violations), so every recommended rule says which rule to enforce instead.
    twin = hospital.twin()
    segment_of = dict(zip(twin.devices["device_id"], twin.devices["segment_id"]))
    decided = PolicyEngine(site).decide(twin.communications, twin)
    for source, target, services, status in zip(rules["from"], rules["to"], rules["services"], rules["status"]):
        port = int(services.split("/")[1])
        hit = decided[
            (decided["src_id"].map(segment_of) == source.removeprefix("segment:"))
            & (decided["dst_id"].map(segment_of) == target.removeprefix("segment:"))
            & (decided["dst_port"] == port)
        ]
        assert set(hit["action"]) == {"deny"}, (source, target)
        assert status == f"already denied by rule {', '.join(sorted(set(hit['rule'])))}: enforce it on the firewall"
    assert not [b for b in at.button if b.key == "paths-to-simulator"]
    assert any("nothing to try in the simulator" in c.value for c in at.caption)


def test_attack_paths_permitted_mode(open_app, hospital):
    from twin.app.pages.attack_paths import DEFAULT_DRAWN_PATHS

    at = open_app("attack_paths.py")
    at.radio(key="paths-mode").set_value("permitted").run()
    assert_clean(at)
    expected = hospital.attack_paths(mode="permitted")
    assert metrics(at)["Paths"] == str(len(expected))
    drawn = [m for m in at.multiselect if m.label == "Paths drawn"]
    assert len(drawn) == 1
    assert len(drawn[0].value) == min(DEFAULT_DRAWN_PATHS, len(expected))
    assert f"{min(DEFAULT_DRAWN_PATHS, len(expected))} paths drawn" in " ".join(c.value for c in at.caption)


def test_attack_paths_invalid_selector(open_app):
    at = open_app("attack_paths.py")
    at.text_area(key="paths-entries").set_value("zone:guest\nbogus:thing").run()
    assert not at.exception
    assert len(at.error) == 1
    assert "selector 2" in at.error[0].value
    assert "bogus" in at.error[0].value


def test_attack_paths_custom_entry_device(open_app, hospital):
    at = open_app("attack_paths.py")
    at.text_area(key="paths-entries").set_value("10.16.10.10").run()
    at.text_area(key="paths-targets").set_value("class:infusion_pump").run()
    assert_clean(at)
    table = drawn_table(at, "paths-table")
    assert set(table["entry_ip"]) == {"10.16.10.10"}
    assert "10.16.4.10" in set(table["target_ip"])


def test_attack_paths_carry_rules_to_simulator(open_app):
    at = open_app("attack_paths.py")
    at.radio(key="paths-mode").set_value("permitted").run()
    carried = drawn_table(at, "paths-rules")
    new_rules = carried[carried["status"].str.startswith("new")]
    assert len(new_rules) > 0
    at.button(key="paths-to-simulator").click().run()
    assert_clean(at)
    assert [t.value for t in at.title] == ["Policy simulation"]
    editor = at.data_editor[0].value
    top = editor.head(len(new_rules))
    assert list(top["name"]) == list(new_rules["name"])
    assert set(top["action"]) == {"deny"}
    assert list(editor["order"]) == list(range(1, len(editor) + 1))
    word = "rule" if len(new_rules) == 1 else "rules"
    assert f"Added {len(new_rules)} recommended deny {word} from the Attack paths page at the top." in [i.value for i in at.info]


# -- simulation ---------------------------------------------------------------


def _simulate_proposed(at: AppTest) -> AppTest:
    content = (HOSPITAL / "proposed_policy.yaml").read_bytes()
    at.get("file_uploader")[0].upload("proposed_policy.yaml", content, "application/x-yaml")
    at.run()
    at.button(key="sim-run").click().run()
    return at


def test_simulation_starts_from_site_policy(open_app, hospital):
    at = open_app("simulation.py")
    assert_clean(at)
    editor = at.data_editor[0].value
    assert list(editor["name"]) == [rule.name for rule in hospital.site().policy.rules]
    assert list(editor["required"]) == [rule.required for rule in hospital.site().policy.rules]


def test_simulation_proposed_policy_ground_truth(open_app, hospital, truth):
    if not (HOSPITAL / "proposed_policy.yaml").exists():
        pytest.skip("sample_networks/hospital/proposed_policy.yaml is missing; regenerate the samples")
    at = _simulate_proposed(open_app("simulation.py"))
    assert not at.exception
    expected = truth["simulation"]
    shown = metrics(at)
    assert shown["Newly blocked flows"] == str(len(expected["newly_blocked"]))
    assert shown["Newly allowed flows"] == str(len(expected["newly_allowed"]))
    assert shown["Violations resolved"] == str(len(expected["violations_resolved"]))
    assert shown["Violations introduced"] == str(len(expected["violations_introduced"]))
    assert shown["Exposure (before → after)"] == f"{expected['exposure_before']} → {expected['exposure_after']}"

    def flows(key: str, src: str = "src_ip", dst: str = "dst_ip") -> set:
        table = drawn_table(at, f"sim-{key}")
        return {(s, d, p, int(q)) for s, d, p, q in zip(table[src], table[dst], table["proto"], table["dst_port"])}

    def truth_flows(key: str) -> set:
        return {(r["src_ip"], r["dst_ip"], r["proto"], int(r["dst_port"])) for r in expected[key]}

    assert flows("newly_blocked") == truth_flows("newly_blocked")
    assert flows("newly_allowed") == truth_flows("newly_allowed")
    assert flows("violations_resolved") == truth_flows("violations_resolved")
    assert flows("violations_introduced") == truth_flows("violations_introduced")

    workflows = drawn_table(at, "sim-workflows_broken")
    assert set(zip(workflows["workflow"], workflows["blocked_by"])) == {(w["workflow"], w["blocked_by"]) for w in expected["workflows_broken"]}
    ips = ip_of(hospital)

    def observed_pairs(key: str) -> set:
        if f"{key.replace('_', ' ').capitalize()} (0)" in [s.value for s in at.subheader]:
            return set()
        table = drawn_table(at, f"sim-{key}")
        table = table[table["mode"] == "observed"]
        return {(ips.get(e, "internet"), ips.get(t)) for e, t in zip(table["entry"], table["target"])}

    assert observed_pairs("attack_paths_cut") == {(p["entry"], p["target"]) for p in expected["attack_paths_cut"]}
    assert observed_pairs("attack_paths_opened") == {(p["entry"], p["target"]) for p in expected["attack_paths_opened"]}


def _broken_workflows(result) -> tuple[list[str], list[str]]:
    """Return (newly broken, already broken) workflow names computed from the simulator's workflow rows.

    Already broken: some row has current_blocked > 0. Newly broken: some row
    has blocked > current_blocked. A workflow can be both.
    """
    rows = result.workflows_broken
    if rows.empty:
        return [], []
    newly = list(dict.fromkeys(rows.loc[(rows["blocked"] > rows["current_blocked"]).to_numpy(), "workflow"]))
    already = list(dict.fromkeys(rows.loc[(rows["current_blocked"] > 0).to_numpy(), "workflow"]))
    return newly, already


def _workflow_alerts(at: AppTest, result) -> tuple[list[str], list[str]]:
    """Check the page's workflow alerts against the simulation result; return (newly broken, already broken)."""
    newly, already = _broken_workflows(result)
    assert newly == result.newly_broken_workflow_names()
    if hasattr(result, "already_broken_workflow_names"):
        assert already == result.already_broken_workflow_names()
    errors = [e.value for e in at.error if "newly break" in e.value]
    warnings = [w.value for w in at.warning if "already broken under the current policy" in w.value]
    assert len(errors) == (1 if newly else 0)
    assert len(warnings) == (1 if already else 0)
    for name in newly:
        assert name in errors[0]
    for name in already:
        assert name in warnings[0]
    if newly:
        assert errors[0].startswith(f"{len(newly)} required workflow{'' if len(newly) == 1 else 's'} newly break")
    if already:
        assert warnings[0].startswith(f"{len(already)} required workflow{'' if len(already) == 1 else 's'} ")
    both = [name for name in already if name in newly]
    if both:
        assert f"The proposed policy breaks {len(both)} of them further" in warnings[0]
    assert f"Required workflows broken ({len(set(newly) | set(already))})" in [s.value for s in at.subheader]
    return newly, already


def test_simulation_broken_workflow_is_an_error(open_app, hospital, truth):
    if not (HOSPITAL / "proposed_policy.yaml").exists():
        pytest.skip("sample_networks/hospital/proposed_policy.yaml is missing; regenerate the samples")
    from twin.policy.simulate import simulate_workspace

    at = _simulate_proposed(open_app("simulation.py"))
    result = simulate_workspace(hospital, HOSPITAL / "proposed_policy.yaml")
    newly, already = _workflow_alerts(at, result)
    assert newly or already
    assert not [e for e in at.error if "newly break" not in e.value]
    shown = metrics(at)
    assert shown["Workflows newly broken"] == str(len(newly))
    assert shown["Workflows already broken"] == str(len(already))
    comparison = drawn_table(at, "sim-comparison").set_index("measure")
    assert int(comparison.at["Required workflows broken", "current"]) == len(already)
    assert int(comparison.at["Required workflows broken", "proposed"]) == result.workflows_broken["workflow"].nunique()
    status = drawn_table(at, "sim-workflows_broken").groupby("workflow")["status"].first().to_dict()
    for name in set(newly) | set(already):
        expected = {(True, True): "already broken, and newly broken further", (True, False): "newly broken", (False, True): "already broken"}
        assert status[name] == expected[(name in newly, name in already)], name


def test_simulation_workflow_both_broken(open_app, hospital):
    if not (HOSPITAL / "proposed_policy.yaml").exists():
        pytest.skip("sample_networks/hospital/proposed_policy.yaml is missing; regenerate the samples")
    from twin.policy.simulate import simulate_workspace

    result = simulate_workspace(hospital, HOSPITAL / "proposed_policy.yaml")
    newly, already = _broken_workflows(result)
    both = set(newly) & set(already)
    if not both:
        pytest.skip("the sample's proposed policy breaks no workflow that the current policy already breaks")
    at = _simulate_proposed(open_app("simulation.py"))
    warning = [w.value for w in at.warning if "already broken under the current policy" in w.value]
    error = [e.value for e in at.error if "newly break" in e.value]
    for name in both:
        assert name in warning[0]
        assert name in error[0]
    assert metrics(at)["Workflows already broken"] == str(len(already))
    assert any(b.label == "Download the proposed policy (YAML)" for b in at.get("download_button"))


def test_simulation_unenforced_paths_section(open_app, hospital):
    if not (HOSPITAL / "proposed_policy.yaml").exists():
        pytest.skip("sample_networks/hospital/proposed_policy.yaml is missing; regenerate the samples")
    from twin.policy.simulate import simulate_workspace

    result = simulate_workspace(hospital, HOSPITAL / "proposed_policy.yaml")
    if not hasattr(result, "attack_paths_unenforced"):
        pytest.skip("this simulator has no attack_paths_unenforced section")
    at = _simulate_proposed(open_app("simulation.py"))
    unenforced = result.attack_paths_unenforced
    title = f"Paths that exist today only because the policy is not enforced: both policies deny a hop ({len(unenforced)})"
    assert title in [s.value for s in at.subheader]
    assert metrics(at)["Attack paths unenforced"] == str(len(unenforced))
    if len(unenforced):
        table = drawn_table(at, "sim-attack_paths_unenforced")
        assert set(zip(table["entry"], table["target"])) == set(zip(unenforced["entry"], unenforced["target"]))


def test_simulation_invalid_rule_names_row_and_field(open_app):
    at = open_app("simulation.py")
    key = at.data_editor[0].key
    at.session_state[key] = {"edited_rows": {1: {"from": "zone:guest & colour:red"}}, "added_rows": [], "deleted_rows": []}
    at.run()
    assert not at.exception
    assert len(at.error) == 1
    assert at.error[0].value.startswith("Invalid rule: row 2 (rule ")
    assert "field 'from'" in at.error[0].value
    assert "colour" in at.error[0].value


@pytest.mark.parametrize(
    ("selector", "field", "value"),
    [("segment:a-itt", "segment", "a-itt"), ("zone:clinicl", "zone", "clinicl"), ("building:Z", "building", "Z")],
)
def test_simulation_unknown_site_name_rejected(open_app, selector, field, value):
    at = open_app("simulation.py")
    editor = at.data_editor[0].value
    rule = editor["name"].iloc[2]
    key = at.data_editor[0].key
    at.session_state[key] = {"edited_rows": {2: {"to": selector}}, "added_rows": [], "deleted_rows": []}
    at.run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1
    assert errors[0].startswith(f"Invalid rule: row 3 (rule {rule!r}), field 'to': {field} {value!r} is not defined in the site")
    # Nothing is simulated until the rule is fixed.
    assert not [b for b in at.button if b.key == "sim-run"]


def test_simulation_invalid_upload(open_app):
    at = open_app("simulation.py")
    bad = b"policy:\n  rules:\n    - name: x\n      action: maybe\n      from: any\n      to: any\n"
    at.get("file_uploader")[0].upload("bad.yaml", bad, "application/x-yaml")
    at.run()
    assert not at.exception
    assert len(at.error) == 1
    assert at.error[0].value.count("bad.yaml") == 1
    assert "action" in at.error[0].value


def test_simulation_invalid_upload_blocks_simulate(open_app):
    at = open_app("simulation.py")
    at.get("file_uploader")[0].upload("binary.yaml", b"\x00\xff\xfe binary", "application/x-yaml")
    at.run()
    first = [e.value for e in at.error]
    assert len(first) == 1
    assert first[0].count("binary.yaml") == 1
    # The error stays while the file is selected, and there is nothing to simulate.
    at.run()
    assert [e.value for e in at.error] == first
    assert not [b for b in at.button if b.key == "sim-run"]
    assert not [m for m in at.main.metric if m.label == "Newly blocked flows"]


# -- dashboards ---------------------------------------------------------------


def test_it_dashboard_numbers(open_app, hospital):
    at = open_app("it_dashboard.py")
    assert_clean(at)
    devices = hospital.devices()
    findings = hospital.findings()
    shown = metrics(at)
    assert shown["Devices"] == str(len(devices))
    assert shown["Segment violations"] == str(len(findings["segment_violations"]))
    assert shown["External exposure"] == str(len(findings["external_exposure"]))
    unmanaged = devices[(devices["managed"] != True) | (devices["device_class"] == "unknown")]  # noqa: E712
    assert shown["Unmanaged devices"] == str(len(unmanaged))

    segments = drawn_table(at, "it-segments").set_index("segment_id")["devices"]
    expected = devices["segment_id"].value_counts()
    assert {k: int(v) for k, v in segments.items() if v} == {k: int(v) for k, v in expected.items()}

    table = drawn_table(at, "it-segments").set_index("segment_id")
    site = hospital.site()
    assert {seg.id: seg.building or "" for seg in site.segments} == {k: v for k, v in table["building"].items() if k in {seg.id for seg in site.segments}}
    from twin.model.classes import ROLE_OF_CLASS

    role = devices["role"].where(devices["role"].notna(), devices["device_class"].map(ROLE_OF_CLASS))
    building_role = devices[role == "building"]["segment_id"].value_counts()
    assert {k: int(v) for k, v in table["building_systems"].items() if v} == {k: int(v) for k, v in building_role.items()}

    pairs = drawn_table(at, "it-violation-pairs")
    violations = findings["segment_violations"]
    grouped = violations.groupby(["rule", "src_segment", "dst_segment"]).size()
    assert {(r, s, d): int(n) for r, s, d, n in zip(pairs["rule"], pairs["src_segment"], pairs["dst_segment"], pairs["violations"])} == {
        k: int(v) for k, v in grouped.items()
    }


def test_it_dashboard_changes(open_app, hospital):
    at = open_app("it_dashboard.py")
    # One snapshot only: the page shows how to get a comparison.
    if len(hospital.snapshots()) == 1:
        assert any("first snapshot" in i.value for i in at.info)


def test_biomed_dashboard_numbers(open_app, hospital):
    at = open_app("biomed_dashboard.py")
    assert_clean(at)
    from twin.model.classes import ROLE_OF_CLASS

    devices = hospital.devices()
    role = devices["role"].where(devices["role"].notna(), devices["device_class"].map(ROLE_OF_CLASS))
    clinical = devices[role == "medical"]
    ids = set(clinical["device_id"])
    findings = hospital.findings()
    shown = metrics(at)
    assert shown["Clinical devices"] == str(len(clinical))
    assert shown["Misplaced clinical devices"] == str(int(findings["misplaced_devices"]["device_id"].isin(ids).sum()))
    assert shown["Attack paths reaching them"] == str(int(findings["attack_paths"]["target_id"].isin(ids).sum()))
    missing = clinical[[("inventory" not in s) for s in clinical["sources"]]]
    assert shown["Missing from the CMMS"] == str(len(missing))
    for level, label in (("life_critical", "Life critical"), ("high", "High"), ("medium", "Medium"), ("low", "Low")):
        assert shown[label] == str(int((clinical["criticality"] == level).sum()))
    by_department = drawn_table(at, "biomed-departments")
    assert int(by_department["total"].sum()) == len(clinical)


def test_dashboards_count_devices_not_findings(open_app, hospital):
    devices = hospital.devices()
    it = open_app("it_dashboard.py")
    unmanaged = devices[(devices["managed"] != True) | (devices["device_class"] == "unknown")]  # noqa: E712
    assert f"{len(unmanaged)} of {len(unmanaged)} devices" in [c.value for c in it.caption]
    biomed = open_app("biomed_dashboard.py")
    captions = [c.value for c in biomed.caption]
    assert any(c.endswith(" devices") and " of " in c for c in captions)
    assert not [c for c in captions if c.endswith("findings") and "device" in c]


@pytest.fixture(scope="module")
def no_inventory(tmp_path_factory) -> Workspace:
    """The pair site with only its scan of the IT segment: no CMMS export and no medical device."""
    site = tmp_path_factory.mktemp("noinventory") / "site"
    (site / "nmap").mkdir(parents=True)
    shutil.copy(PAIR / "site.yaml", site / "site.yaml")
    shutil.copy(PAIR / "nmap" / "it-a.xml", site / "nmap" / "it-a.xml")
    ws = Workspace(site.parent / "ws.sqlite")
    ws.build(site)
    return ws


def test_biomed_without_inventory_or_clinical_devices(no_inventory, monkeypatch):
    from twin.model.classes import ROLE_OF_CLASS

    devices = no_inventory.devices()
    assert not any("inventory" in list(s) for s in devices["sources"])
    role = devices["role"].where(devices["role"].notna(), devices["device_class"].map(ROLE_OF_CLASS))
    assert not (role == "medical").any()
    monkeypatch.setenv(WORKSPACE_ENV, str(no_inventory.path))
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT).run()
    at.switch_page(f"{PAGES}/biomed_dashboard.py").run()
    assert_clean(at)
    assert not [s.value for s in at.success if "CMMS" in s.value]
    infos = [i.value for i in at.info]
    assert any(i.startswith("No inventory file was imported") for i in infos)
    assert any("no clinical (medical) devices, so none can be missing" in i for i in infos)


# -- empty and degenerate workspaces -----------------------------------------


@pytest.mark.parametrize("page", ALL_PAGES)
def test_missing_workspace_shows_info(page, tmp_path, monkeypatch):
    monkeypatch.setenv(WORKSPACE_ENV, str(tmp_path / "none.sqlite"))
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT).run()
    if page != "map.py":
        at.switch_page(f"{PAGES}/{page}").run()
    assert not at.exception
    assert [i.value for i in at.info][:1] and "twin build" in at.info[0].value


@pytest.fixture(scope="module")
def no_flows(tmp_path_factory) -> Workspace:
    site = tmp_path_factory.mktemp("noflows") / "site"
    shutil.copytree(PAIR, site, ignore=shutil.ignore_patterns("flows", "proposed_policy.yaml"))
    ws = Workspace(site.parent / "ws.sqlite")
    ws.build(site)
    return ws


@pytest.mark.parametrize("page", ALL_PAGES)
def test_twin_without_flows(page, no_flows, monkeypatch):
    assert no_flows.communications().empty
    monkeypatch.setenv(WORKSPACE_ENV, str(no_flows.path))
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT).run()
    if page != "map.py":
        at.switch_page(f"{PAGES}/{page}").run()
    if page == "simulation.py":
        at.button(key="sim-run").click().run()
        # The pair site's own policy shadows part of a required workflow: the current policy already
        # breaks it, so the page warns instead of reporting a new break.
        from twin.policy.simulate import simulate_workspace

        assert not at.exception
        result = simulate_workspace(no_flows, no_flows.site().policy)
        newly, already = _workflow_alerts(at, result)
        assert not newly
        assert already
        assert not at.error
        return
    assert_clean(at)


# -- twin app -----------------------------------------------------------------


def test_twin_app_dry_run(tmp_path):
    from typer.testing import CliRunner

    from twin.cli.main import app

    workspace = tmp_path / "ws.sqlite"
    result = CliRunner().invoke(app, ["app", "-w", str(workspace), "--port", "8765", "--dry-run"])
    assert result.exit_code == 0, result.output
    line = result.output.replace("\n", " ")
    assert f"{WORKSPACE_ENV}={workspace.resolve()}" in line
    assert "streamlit run" in line
    assert str(REPO / "twin" / "app" / "entry" / "app.py") in line
    assert "--server.port 8765 --server.address 127.0.0.1 --server.headless true --browser.gatherUsageStats false" in line


def test_twin_app_dry_run_warns_on_public_address(tmp_path):
    from typer.testing import CliRunner

    from twin.cli.main import app

    workspace = tmp_path / "ws.sqlite"
    result = CliRunner().invoke(app, ["app", "-w", str(workspace), "--address", "0.0.0.0", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "warning: binding to 0.0.0.0" in result.stderr
    assert "--server.address 0.0.0.0" in result.stdout.replace("\n", " ")
    loopback = CliRunner().invoke(app, ["app", "-w", str(workspace), "--dry-run"])
    assert "warning" not in loopback.stderr


def test_twin_app_rejects_bad_port():
    from typer.testing import CliRunner

    from twin.cli.main import app

    result = CliRunner().invoke(app, ["app", "--port", "70000", "--dry-run"])
    assert result.exit_code == 2
