"""The hospital map: hierarchy, roll-up, overlays, layout and self-contained HTML."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twin.analysis import attack_paths, segment_violations
from twin.analysis._common import twin_from_records
from twin.api import Workspace
from twin.app import mapview
from twin.app.maplayout import radial_layout
from twin.model.site import SiteConfig

REPO = Path(__file__).resolve().parents[2]
HOSPITAL = REPO / "sample_networks" / "hospital"

# Remote resource references, written independently of the module's own patterns.
REMOTE = re.compile(
    r"""(<script[^>]+src\s*=\s*["']?(https?:)?//)|(<link[^>]+href\s*=\s*["']?(https?:)?//)|(@import)|(url\(\s*["']?(https?:)?//)""",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def hospital(tmp_path_factory):
    workspace = Workspace(tmp_path_factory.mktemp("map") / "ws.sqlite")
    workspace.build(HOSPITAL)
    twin = workspace.twin()
    site = workspace.site()
    return twin, site


def _segment_of(twin) -> dict[str, str]:
    devices = twin.devices
    return dict(zip(devices["device_id"], devices["segment_id"], strict=True))


def _ids(view, level=None, kind=None) -> set[str]:
    nodes = view.nodes
    mask = pd.Series(True, index=nodes.index)
    if level is not None:
        mask &= nodes["level"] == level
    if kind is not None:
        mask &= nodes["kind"] == kind
    return set(nodes.loc[mask, "id"])


# --------------------------------------------------------------------------
# Sample hospital.


def test_default_view_is_site_buildings_segments(hospital):
    twin, site = hospital
    view = mapview.build_view(twin, site)
    buildings = {seg.building for seg in site.segments if seg.building} | set(twin.segments["building"].dropna())
    segments = {seg.id for seg in site.segments} | set(twin.segments["segment_id"])
    expected = {"site", "internet"} | {f"building:{b}" for b in buildings} | {f"segment:{s}" for s in segments}
    assert set(view.nodes["id"]) == expected
    assert view.nodes["id"].is_unique


def test_default_view_segment_counts(hospital):
    twin, site = hospital
    view = mapview.build_view(twin, site)
    counts = twin.devices["segment_id"].value_counts()
    segments = view.nodes[(view.nodes["level"] == "segment") & (view.nodes["kind"] == "segment")]
    drawn = dict(zip(segments["segment_id"], segments["count"], strict=True))
    expected = {seg: int(counts.get(seg, 0)) for seg in drawn}
    assert drawn == expected
    assert int(view.nodes.loc[view.nodes["id"] == "site", "count"].iloc[0]) == len(twin.devices)


def test_expand_segment_shows_its_classes(hospital):
    twin, site = hospital
    view = mapview.build_view(twin, site, expand=["segment:a-it"])
    classes = view.nodes[view.nodes["level"] == "class"]
    drawn = set(zip(classes["id"], classes["parent"], classes["count"], strict=True))
    members = twin.devices[twin.devices["segment_id"] == "a-it"]
    expected = {(f"class:a-it/{cls}", "segment:a-it", int(n)) for cls, n in members["device_class"].value_counts().items()}
    assert drawn == expected
    assert "segment:a-it" not in mapview.expandable_ids(view)
    assert {f"class:a-it/{cls}" for cls in members["device_class"].unique()} <= set(mapview.expandable_ids(view))


def test_communication_weights_equal_segment_sums(hospital):
    twin, site = hospital
    view = mapview.build_view(twin, site)
    segment = _segment_of(twin)
    comm = twin.communications
    expected: dict[tuple[str, str], int] = {}
    for src, dst, src_kind, dst_kind, flows in zip(comm["src_id"], comm["dst_id"], comm["src_kind"], comm["dst_kind"], comm["flows"], strict=True):
        a = "internet" if src_kind == "external" else f"segment:{segment[src]}"
        b = "internet" if dst_kind == "external" else f"segment:{segment[dst]}"
        if a != b:
            expected[(a, b)] = expected.get((a, b), 0) + int(flows)
    edges = view.edges[view.edges["kind"] == "communication"]
    drawn = {(a, b): int(w) for a, b, w in zip(edges["src"], edges["dst"], edges["weight"], strict=True)}
    assert drawn == expected


def test_communication_weights_after_expansion(hospital):
    twin, site = hospital
    view = mapview.build_view(twin, site, expand=["segment:a-pumps"])
    devices = twin.devices.set_index("device_id")
    comm = twin.communications

    def node(device_id, kind):
        if kind == "external":
            return "internet"
        seg = devices.at[device_id, "segment_id"]
        if seg == "a-pumps":
            return f"class:a-pumps/{devices.at[device_id, 'device_class']}"
        return f"segment:{seg}"

    expected: dict[tuple[str, str], int] = {}
    for src, dst, sk, dk, flows in zip(comm["src_id"], comm["dst_id"], comm["src_kind"], comm["dst_kind"], comm["flows"], strict=True):
        a, b = node(src, sk), node(dst, dk)
        if a != b:
            expected[(a, b)] = expected.get((a, b), 0) + int(flows)
    edges = view.edges[view.edges["kind"] == "communication"]
    assert {(a, b): int(w) for a, b, w in zip(edges["src"], edges["dst"], edges["weight"], strict=True)} == expected


def test_violation_edges_match_finding(hospital):
    twin, site = hospital
    found = segment_violations.find(twin, site)
    assert not found.empty
    view = mapview.build_view(twin, site, violations=found)

    def node(segment):
        return "internet" if segment == "internet" else f"segment:{segment}"

    expected: dict[tuple[str, str], int] = {}
    for src, dst, flows in zip(found["src_segment"], found["dst_segment"], found["flows"], strict=True):
        if src != dst:
            expected[(node(src), node(dst))] = expected.get((node(src), node(dst)), 0) + int(flows)
    edges = view.edges[view.edges["kind"] == "violation"]
    assert {(a, b): int(w) for a, b, w in zip(edges["src"], edges["dst"], edges["weight"], strict=True)} == expected
    assert set(edges["color"]) == {mapview.EDGE_COLOUR["violation"]}
    ends = {n for pair in expected for n in pair}
    highlighted = set(view.nodes.loc[view.nodes["highlighted"], "id"])
    # Intra-segment violations highlight their segment without drawing an edge.
    intra = {node(s) for s, d in zip(found["src_segment"], found["dst_segment"], strict=True) if s == d}
    assert highlighted == ends | intra


def test_attack_path_overlay_draws_every_hop(hospital):
    twin, site = hospital
    paths = attack_paths.find(twin, site, mode="observed").head(5)
    assert not paths.empty
    devices = set(twin.devices["device_id"])
    on_paths = sorted({n for path in paths["path"] for n in path if n in devices})
    view = mapview.build_view(twin, site, attack_paths=paths, focus=on_paths)

    def node(n):
        return mapview.node_id_for_device(n) if n in devices else "internet"

    expected = {(node(a), node(b)) for path in paths["path"] for a, b in zip(path[:-1], path[1:], strict=True)}
    edges = view.edges[view.edges["kind"] == "attack_path"]
    assert set(zip(edges["src"], edges["dst"], strict=True)) == expected
    # Overlays are drawn last, attack paths on top.
    assert list(view.edges["kind"].drop_duplicates())[-1] == "attack_path"


def test_focus_expands_ancestors(hospital):
    twin, site = hospital
    device = twin.devices.sort_values("device_id").iloc[0]
    view = mapview.build_view(twin, site, focus=[device["device_id"], "no-such-device"], max_devices=1)
    segment, cls = device["segment_id"], device["device_class"]
    nodes = view.nodes.set_index("id")
    device_node = mapview.node_id_for_device(device["device_id"])
    assert nodes.at[device_node, "parent"] == f"class:{segment}/{cls}"
    assert nodes.at[f"class:{segment}/{cls}", "parent"] == f"segment:{segment}"
    assert bool(nodes.at[device_node, "highlighted"])


def test_truncation_counts(hospital):
    twin, site = hospital
    class_id = "class:a-pumps/infusion_pump"
    total = int(((twin.devices["segment_id"] == "a-pumps") & (twin.devices["device_class"] == "infusion_pump")).sum())
    assert total > 5
    view = mapview.build_view(twin, site, expand=[class_id], max_devices=5)
    children = view.nodes[view.nodes["parent"] == class_id]
    assert (children["level"] == "device").sum() == 5
    more = children[children["level"] == "more"]
    assert list(more["id"]) == [f"more:{class_id}"]
    assert int(more["count"].iloc[0]) == total - 5
    assert view.truncated == {class_id: total - 5}
    expanded = mapview.build_view(twin, site, expand=[f"more:{class_id}"], max_devices=5)
    assert (expanded.nodes["parent"] == class_id).sum() == total
    assert expanded.truncated == {}


def test_layout_is_deterministic(hospital):
    twin, site = hospital
    args = dict(expand=["segment:b-it", "class:a-pumps/infusion_pump"], violations=segment_violations.find(twin, site))
    first = mapview.build_view(twin, site, **args)
    mapview._PREPARED.clear()
    mapview._COMM_CODES.clear()
    second = mapview.build_view(twin, site, **args)
    pd.testing.assert_frame_equal(first.nodes, second.nodes)
    pd.testing.assert_frame_equal(first.edges, second.edges)


def _overlaps(view) -> list[tuple[str, str]]:
    xy = view.nodes[["x", "y"]].to_numpy(dtype=float)
    size = view.nodes["size"].to_numpy(dtype=float)
    dist = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(axis=2))
    clash = dist < size[:, None] + size[None, :]
    np.fill_diagonal(clash, False)
    ids = view.nodes["id"].to_numpy()
    return [(ids[i], ids[j]) for i, j in zip(*np.nonzero(clash), strict=True) if i < j]


def test_nodes_never_overlap(hospital):
    twin, site = hospital
    views = [
        mapview.build_view(twin, site),
        mapview.build_view(twin, site, expand=["segment:a-it", "class:a-it/workstation", "class:a-pumps/infusion_pump"]),
        mapview.build_view(twin, site, expand=["more:class:a-it/workstation"], max_devices=3, size_by="risk"),
    ]
    for view in views:
        assert _overlaps(view) == []


def test_radial_layout_discs_disjoint():
    # A root with one big subtree and many small leaves, and a ring-filled parent.
    parents = np.array([-1, 0, 0, 0, 1] + [1] * 40 + [2] * 3, dtype=np.int64)
    radii = np.array([30.0, 12.0, 40.0, 5.0, 8.0] + [6.0] * 40 + [20.0] * 3)
    xy = radial_layout(parents, radii, gap=4.0)
    dist = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(axis=2))
    need = radii[:, None] + radii[None, :]
    np.fill_diagonal(dist, np.inf)
    assert (dist >= need).all()
    assert tuple(xy[0]) == (0.0, 0.0)


def test_html_has_no_remote_references(hospital):
    twin, site = hospital
    view = mapview.build_view(twin, site, expand=["segment:a-it"], violations=segment_violations.find(twin, site))
    html = mapview.render_html(view)
    assert REMOTE.findall(html) == []
    assert "bootstrap" not in html.lower()
    # vis-network is inlined, not linked.
    assert "vis-network" in html and "new vis.Network(" in html
    assert "twinMapAttach(network)" in html


def test_html_select_callback(hospital):
    twin, site = hospital
    view = mapview.build_view(twin, site)
    with_callback = mapview.render_html(view, select_callback=True)
    without = mapview.render_html(view)
    assert "var sendToParent = true;" in with_callback
    assert "var sendToParent = false;" in without
    assert 'window.parent.postMessage({type: messageType, id: id}, "*")' in with_callback
    with pytest.raises(ValueError, match="invalid height"):
        mapview.render_html(view, height="1px; background: url(http://x)")


# --------------------------------------------------------------------------
# Small hand-made twins.


def _small_site(segments) -> SiteConfig:
    return SiteConfig.model_validate({"site": {"name": "Small"}, "segments": segments})


HOSTILE = '"><script>alert(1)</script> href=x \x00'


def test_hostile_labels_escaped():
    site = _small_site([{"id": "s1", "building": "A", "zone": "clinical"}])
    twin = twin_from_records(
        [
            {"device_id": "d1", "hostname": HOSTILE, "segment_id": "s1", "device_class": "infusion_pump"},
            {"device_id": "d2", "hostname": "ok", "segment_id": "s1", "device_class": "infusion_pump"},
        ],
        [{"src_id": "d2", "dst_id": "d1"}],
    )
    view = mapview.build_view(twin, site, focus=["d1"])
    node = view.nodes.set_index("id").loc["device:d1"]
    assert "\x00" not in node["label"] and "\\x00" in node["label"]
    html = mapview.render_html(view)
    assert "<script>alert" not in html
    assert "\x00" not in html
    # The host name contains "href": pyvis's innerHTML tooltip must stay off.
    assert "popup.innerHTML" not in html


def test_unassigned_devices_grouped_per_building():
    site = _small_site([{"id": "s1", "building": "A"}])
    twin = twin_from_records(
        [
            {"device_id": "d1", "segment_id": "s1", "building": "A"},
            {"device_id": "d2", "segment_id": None, "building": "Building A"},
            {"device_id": "d3", "segment_id": None, "building": None},
            {"device_id": "d4", "segment_id": None, "building": "Annex"},
        ],
        [{"src_id": "d1", "dst_id": "203.0.113.5", "dst_kind": "external"}],
    )
    view = mapview.build_view(twin, site)
    nodes = view.nodes
    drawn = set(zip(nodes["id"], nodes["parent"].astype(object).where(nodes["parent"].notna(), None), nodes["count"], strict=True))
    expected = {
        ("site", None, 4),
        ("building:A", "site", 2),
        ("building:Annex", "site", 1),
        ("segment:s1", "building:A", 1),
        ("segment:(no segment)/A", "building:A", 1),
        ("segment:(no segment)/Annex", "building:Annex", 1),
        ("segment:(no segment)", "site", 1),
        ("internet", "site", 0),
    }
    assert drawn == expected
    comm = view.edges[view.edges["kind"] == "communication"]
    assert set(zip(comm["src"], comm["dst"], strict=True)) == {("segment:s1", "internet")}


def test_segment_colours_distinct_per_site(hospital):
    twin, site = hospital
    view = mapview.build_view(twin, site)
    segments = view.nodes[(view.nodes["level"] == "segment") & (view.nodes["kind"] != "external")]
    assigned = segments[~segments["segment_id"].astype(str).str.startswith(mapview.UNASSIGNED)]
    assert len(assigned) <= len(mapview.SEGMENT_PALETTE)
    assert assigned["color"].is_unique, assigned[assigned["color"].duplicated(keep=False)][["id", "color"]].to_string()


def test_segment_colour_same_across_views(hospital):
    twin, site = hospital
    plain = mapview.build_view(twin, site).nodes.set_index("id")["color"]
    expanded = mapview.build_view(twin, site, expand=["segment:a-pumps"]).nodes.set_index("id")["color"]
    shared = plain.index.intersection(expanded.index)
    assert plain[shared].to_dict() == expanded[shared].to_dict()


def test_colour_by_class_colours_collapsed_segments(hospital):
    twin, site = hospital
    view = mapview.build_view(twin, site, colour_by="class")
    segments = view.nodes[(view.nodes["level"] == "segment") & (view.nodes["kind"] != "external")].set_index("segment_id")
    devices = twin.devices
    for seg_id in ("a-pumps", "b-it"):
        counts = devices.loc[devices["segment_id"] == seg_id, "device_class"].value_counts()
        top = sorted(cls for cls, n in counts.items() if n == counts.max())[0]
        assert segments.at[seg_id, "color"] == mapview.CLASS_COLOUR[top], seg_id
        assert any(label.startswith(f"{top} (") for label, _ in view.legend), top
    assert segments["color"].nunique() > 1


def test_colour_by_class_uses_roles():
    site = _small_site([{"id": "s1"}])
    twin = twin_from_records(
        [
            {"device_id": "p", "segment_id": "s1", "device_class": "infusion_pump"},
            {"device_id": "w", "segment_id": "s1", "device_class": "workstation"},
            {"device_id": "sw", "segment_id": "s1", "device_class": "switch"},
        ]
    )
    view = mapview.build_view(twin, site, expand=["segment:s1"], colour_by="class")
    colours = view.nodes.set_index("id")["color"]
    assert colours["class:s1/infusion_pump"] in mapview.ROLE_PALETTE["medical"]
    assert colours["class:s1/workstation"] in mapview.ROLE_PALETTE["it"]
    assert colours["class:s1/switch"] in mapview.ROLE_PALETTE["network"]
    assert ("infusion_pump (medical)", colours["class:s1/infusion_pump"]) in view.legend


def test_size_by_risk_counts_findings():
    site = _small_site([{"id": "s1"}, {"id": "s2"}])
    twin = twin_from_records(
        [{"device_id": "a", "segment_id": "s1"}, {"device_id": "b", "segment_id": "s2"}],
        [{"src_id": "a", "dst_id": "b"}],
    )
    risk = pd.Series({"b": 3.0})
    view = mapview.build_view(twin, site, size_by="risk", risk=risk)
    nodes = view.nodes.set_index("id")
    assert nodes.at["segment:s2", "size"] > nodes.at["segment:s1", "size"]
    assert nodes.at["segment:s1", "size"] == mapview.LEVEL_SIZE["segment"]


def test_invalid_arguments_raise():
    site = _small_site([{"id": "s1"}])
    twin = twin_from_records([{"device_id": "a", "segment_id": "s1"}])
    with pytest.raises(ValueError, match="colour_by 'zone'"):
        mapview.build_view(twin, site, colour_by="zone")
    with pytest.raises(ValueError, match="size_by 'bytes'"):
        mapview.build_view(twin, site, size_by="bytes")
    with pytest.raises(ValueError, match="max_devices 0"):
        mapview.build_view(twin, site, max_devices=0)


def test_empty_twin_draws_site_and_segments():
    site = _small_site([{"id": "s1", "building": "A"}])
    twin = twin_from_records([])
    view = mapview.build_view(twin, site, expand=["segment:s1"])
    assert set(view.nodes["id"]) == {"site", "building:A", "segment:s1"}
    assert set(view.edges["kind"]) == {"link"}
    assert REMOTE.findall(mapview.render_html(view)) == []


def _synthetic_site_and_twin(devices: int, buildings: int = 26):
    """Build a hospital-shaped twin: 10 segments per building, 8 classes, flows between neighbours."""
    classes = ["infusion_pump", "patient_monitor", "workstation", "printer", "ip_phone", "camera", "server", "switch"]
    segments = [{"id": f"{chr(65 + b).lower()}-{k}", "building": chr(65 + b)} for b in range(buildings) for k in range(10)]
    site = _small_site(segments)
    rng = np.random.default_rng(3)
    seg_of = rng.integers(0, len(segments), devices)
    records = [
        {"device_id": f"dev-{i:06d}", "segment_id": segments[seg_of[i]]["id"], "device_class": classes[i % len(classes)]}
        for i in range(devices)
    ]
    dst = rng.integers(0, devices, devices)
    comms = [{"src_id": f"dev-{i:06d}", "dst_id": f"dev-{j:06d}", "flows": 2} for i, j in enumerate(dst)]
    return site, twin_from_records(records, comms)


def test_ten_thousand_devices_view_is_bounded():
    site, twin = _synthetic_site_and_twin(10_000)
    view = mapview.build_view(twin, site)
    # Site, 26 buildings, 260 segments; no device is drawn in the default view.
    assert len(view.nodes) == 1 + 26 + 260
    assert (view.nodes["level"] == "device").sum() == 0
    assert len(view.edges) <= (len(view.nodes) - 1) + 260 * 259
    expanded = mapview.build_view(twin, site, expand=[f"class:a-0/{cls}" for cls in ["workstation", "camera"]])
    drawn = (expanded.nodes["level"] == "device").sum()
    assert drawn <= 2 * mapview.MAX_DEVICES_PER_GROUP
    communication = expanded.edges[expanded.edges["kind"] == "communication"]
    assert len(communication) <= mapview.MAX_COMMUNICATION_EDGES
    # Random flows between 260 segments give more pairs than the cap, so the
    # drawn edges are the heaviest ones and carry at most every flow.
    assert communication["weight"].sum() <= int(twin.communications["flows"].sum())
    assert communication["weight"].min() >= 2


def test_intra_segment_violation_highlights_segment():
    site = _small_site([{"id": "s1"}, {"id": "s2"}])
    twin = twin_from_records(
        [{"device_id": "a", "segment_id": "s1"}, {"device_id": "b", "segment_id": "s1"}, {"device_id": "c", "segment_id": "s2"}],
        [{"src_id": "a", "dst_id": "b"}],
    )
    violations = pd.DataFrame({"src_id": ["a"], "dst_id": ["b"], "src_segment": ["s1"], "dst_segment": ["s1"], "flows": [4], "rule": ["default:intra-segment"]})
    collapsed = mapview.build_view(twin, site, violations=violations)
    assert set(collapsed.nodes.loc[collapsed.nodes["highlighted"], "id"]) == {"segment:s1"}
    assert (collapsed.edges["kind"] == "violation").sum() == 0
    expanded = mapview.build_view(twin, site, violations=violations, focus=["a", "b"])
    edges = expanded.edges[expanded.edges["kind"] == "violation"]
    assert set(zip(edges["src"], edges["dst"], edges["weight"], strict=True)) == {("device:a", "device:b", 4)}
    assert set(expanded.nodes.loc[expanded.nodes["highlighted"], "id"]) == {"device:a", "device:b"}


def test_communication_edges_capped_by_flows(monkeypatch):
    site = _small_site([{"id": f"s{i}"} for i in range(4)])
    twin = twin_from_records(
        [{"device_id": f"d{i}", "segment_id": f"s{i}"} for i in range(4)],
        [{"src_id": f"d{i}", "dst_id": f"d{(i + 1) % 4}", "flows": 10 * (i + 1)} for i in range(4)],
    )
    monkeypatch.setattr(mapview, "MAX_COMMUNICATION_EDGES", 2)
    view = mapview.build_view(twin, site)
    edges = view.edges[view.edges["kind"] == "communication"]
    assert set(zip(edges["src"], edges["dst"], edges["weight"], strict=True)) == {("segment:s3", "segment:s0", 40), ("segment:s2", "segment:s3", 30)}


def test_label_fonts_grow_with_extent(hospital):
    twin, site = hospital
    small = mapview.label_font_sizes(mapview.build_view(twin, site).nodes)
    expanded = mapview.build_view(twin, site, expand=["segment:a-pumps", "segment:b-it", "segment:c-imaging"])
    large = mapview.label_font_sizes(expanded.nodes)
    for level in ("segment", "class"):
        assert large[level] >= small[level] >= mapview.FONT_SIZE[level]
        assert large[level] <= mapview.FONT_SIZE[level] * mapview.LABEL_FONT_SCALE_MAX
    # No label is drawn larger than the font its node's layout reserved room for.
    reserved = expanded.nodes.groupby("level")["font_size"].min()
    for level, font in large.items():
        if level in reserved.index:
            assert font <= reserved[level], level
    assert large["device"] == mapview.FONT_SIZE["device"]


# Average width of a sans-serif character and the height of one label line, in
# multiples of the font size, and vis-network's gap between a node and its label (px).
CHAR_EM = 0.55
LINE_EM = 1.0
LABEL_GAP = 4.0


def _drawn_boxes(view) -> list[tuple[str, float, float, float, float]]:
    """Return (node id, left, top, right, bottom) of every node and of every label, as the HTML draws them."""
    html = mapview.render_html(view)
    data = re.search(r"nodes = new vis\.DataSet\((\[.*?\])\);", html, re.DOTALL)
    assert data is not None
    boxes = []
    for node in json.loads(data.group(1)):
        x, y, size, font = node["x"], node["y"], node["size"], node["font"]["size"]
        lines = node["label"].split("\n")
        half = max(len(line) for line in lines) * font * CHAR_EM / 2.0
        boxes.append((node["id"], x - size, y - size, x + size, y + size))
        top = y + size + LABEL_GAP
        boxes.append((node["id"], x - half, top, x + half, top + len(lines) * font * LINE_EM))
    return boxes


def _label_clashes(view) -> list[tuple[str, str]]:
    boxes = _drawn_boxes(view)
    clashes = set()
    for i, (a, l1, t1, r1, b1) in enumerate(boxes):
        for b, l2, t2, r2, b2 in boxes[i + 1 :]:
            if a != b and l1 < r2 and l2 < r1 and t1 < b2 and t2 < b1:
                clashes.add(tuple(sorted((a, b))))
    return sorted(clashes)


@pytest.mark.parametrize(
    "expand",
    [
        [],
        ["segment:b-bms", "class:a-it/workstation"],
        ["segment:a-it", "class:a-pumps/infusion_pump"],
    ],
)
def test_labels_never_overlap(hospital, expand):
    twin, site = hospital
    view = mapview.build_view(twin, site, expand=expand, violations=segment_violations.find(twin, site))
    assert _label_clashes(view) == []


def test_segment_palette_has_no_red():
    import colorsys

    assert len(set(mapview.SEGMENT_PALETTE)) == len(mapview.SEGMENT_PALETTE) == 36
    reddish = []
    for colour in mapview.SEGMENT_PALETTE:
        r, g, b = (int(colour[i : i + 2], 16) / 255.0 for i in (1, 3, 5))
        hue, _, saturation = colorsys.rgb_to_hls(r, g, b)
        distance = min(hue * 360.0, 360.0 - hue * 360.0)
        if distance < 22.0 and saturation > 0.2:
            reddish.append(colour)
    assert reddish == []


def test_legend_lists_overlays_that_are_on(hospital):
    twin, site = hospital
    plain = [label for label, _ in mapview.build_view(twin, site).legend]
    assert "communication" in plain
    assert "attack-path hop" not in plain
    assert "violation (denied by policy)" not in plain
    assert mapview.LEGEND_BORDER_LABEL not in plain

    violations = segment_violations.find(twin, site)
    with_violations = mapview.build_view(twin, site, violations=violations).legend
    labels = [label for label, _ in with_violations]
    assert "violation (denied by policy)" in labels
    assert "attack-path hop" not in labels
    assert (mapview.LEGEND_BORDER_LABEL, mapview.HIGHLIGHT_BORDER) in with_violations

    paths = attack_paths.find(twin, site)
    labels = [label for label, _ in mapview.build_view(twin, site, attack_paths=paths).legend]
    assert "attack-path hop" in labels
    assert "violation (denied by policy)" not in labels


def test_html_keeps_labels_when_zoomed_out(hospital):
    twin, site = hospital
    view = mapview.build_view(twin, site, expand=["segment:a-pumps"])
    html = mapview.render_html(view)
    options = re.search(r"var options = (\{.*?\});\n", html, re.DOTALL)
    assert options is not None
    assert f'"drawThreshold": {mapview.LABEL_DRAW_THRESHOLD}' in options.group(1)
    fonts = mapview.label_font_sizes(view.nodes)
    data = re.search(r"nodes = new vis\.DataSet\((\[.*?\])\);", html, re.DOTALL)
    assert data is not None
    drawn = {node["id"]: node["font"]["size"] for node in json.loads(data.group(1))}
    levels = view.nodes.set_index("id")["level"]
    assert {node_id: size for node_id, size in drawn.items() if levels[node_id] == "segment"} == {
        node_id: fonts["segment"] for node_id in levels.index if levels[node_id] == "segment"
    }
