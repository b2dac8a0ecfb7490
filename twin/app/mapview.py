"""The hospital map: a hierarchical view of the twin and its self-contained HTML.

The map is a tree of *site -> building -> segment -> device class ->
device*. The default view draws the site, its buildings and its segments
with their device counts. The caller expands a segment to see its device
classes, and a class to see its devices. Communications are aggregated
between the visible nodes they roll up to, and two overlays draw on top:
segment violations (red) and attack-path hops (orange).

:func:`build_view` returns the nodes and edges as DataFrames with a
deterministic server-side layout (:mod:`twin.app.maplayout`), so the
browser never runs a physics simulation. :func:`render_html` turns a view
into one HTML page through pyvis, with vis-network's script and style
inlined and every remote reference removed, so the map renders with no
internet access.

Node ids
--------
``site``, ``building:<name>``, ``segment:<id>``, ``class:<segment id>/<class>``,
``device:<device id>``, ``more:<class node id>`` and ``internet``. Devices
in no segment sit under ``segment:(no segment)/<building>`` (or
``segment:(no segment)`` under the site when their building is unknown);
the segment id of that group is ``(no segment)/<building>``.
"""

from __future__ import annotations

import json
import logging
import re
import weakref
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from twin.analysis._common import device_view, segment_table
from twin.app.maplayout import LAYOUT_GAP, radial_layout
from twin.exceptions import TwinError
from twin.model.classes import ROLE_OF_CLASS
from twin.model.observation import escape_text
from twin.model.site import CRITICALITY_LEVELS, SiteConfig
from twin.model.twin import Twin

__all__ = [
    "MAX_DEVICES_PER_GROUP",
    "MAX_DEVICES_EXPANDED",
    "MAX_COMMUNICATION_EDGES",
    "COLOUR_BY",
    "SIZE_BY",
    "LEVELS",
    "NODE_COLUMNS",
    "label_font_sizes",
    "label_extent",
    "EDGE_COLUMNS",
    "SELECT_MESSAGE_TYPE",
    "LEGEND_BORDER_LABEL",
    "MapView",
    "build_view",
    "render_html",
    "node_id_for_device",
    "expandable_ids",
    "strip_external_references",
]

log = logging.getLogger(__name__)

# Devices drawn under one expanded device class; the rest roll up into one
# "more" node (count, default 200).
MAX_DEVICES_PER_GROUP = 200
# Devices drawn under a class whose "more" node was expanded (count, default 2,000).
MAX_DEVICES_EXPANDED = 2000

# Communication edges drawn in one view (count, default 5,000). Past it,
# only the edges with the most flows are drawn.
# NOTE: the default is an estimate; the benchmark measured views of up to 2,508 edges.
MAX_COMMUNICATION_EDGES = 5000

COLOUR_BY = ("segment", "class")
SIZE_BY = ("criticality", "risk")
LEVELS = ("site", "building", "segment", "class", "device", "more")
NODE_COLUMNS = [
    "id", "label", "level", "parent", "kind", "x", "y", "color", "size", "shape", "title", "count",
    "segment_id", "device_class", "device_id", "expandable", "highlighted", "font_size",
]
EDGE_COLUMNS = ["src", "dst", "kind", "weight", "width", "color", "title", "dashes"]

# The ``type`` of the message posted to the parent window when a node is clicked.
SELECT_MESSAGE_TYPE = "twin-map-select"

# Segment id of the group of devices in no segment; every page shows these devices under this name.
UNASSIGNED = "(no segment)"
INTERNET_ID = "internet"

# Radius of a node of each level before scaling (canvas units).
LEVEL_SIZE = {"site": 36.0, "building": 28.0, "segment": 20.0, "class": 14.0, "device": 8.0, "more": 11.0}
SHAPES = {"site": "star", "building": "square", "segment": "dot", "class": "hexagon", "device": "dot", "more": "triangle"}
# Size factor by the highest criticality under a node.
CRITICALITY_SCALE = {"life_critical": 1.6, "high": 1.3, "medium": 1.1, "low": 1.0}
# Size factor per log(1 + findings) when sizing by risk, and its cap.
RISK_SCALE = 0.35
RISK_SCALE_MAX = 2.5
# Label font size per level (px) before the labels grow to fit the view.
FONT_SIZE = {"site": 18, "building": 16, "segment": 14, "class": 12, "device": 10, "more": 11}
# Screen size (px) that site, building, segment and class labels aim for when the
# browser fits the whole view: their font grows with the view's extent, up to
# LABEL_FONT_SCALE_MAX times FONT_SIZE. Device labels keep FONT_SIZE.
MIN_SCREEN_FONT_PX = {"site": 14, "building": 13, "segment": 12, "class": 11}
LABEL_FONT_SCALE_MAX = 2.0
# Layout passes that grow the label fonts (count, default 3). Each pass lays
# the tree out with room for the labels at the fonts of the previous pass, so
# no label is drawn larger than the room its node reserved. Labels may stay
# below MIN_SCREEN_FONT_PX, because the room they take also widens the view.
FONT_LAYOUT_PASSES = 3
# Estimated width of one label character and height of one label line, in
# multiples of the font size (defaults 0.6 and 1.2). vis-network's sans-serif
# averages about 0.55 em per character; the estimate leaves a margin.
LABEL_CHAR_EM = 0.6
LABEL_LINE_EM = 1.2
# Gap between a node and the top of its label below it, plus the label's white
# outline (canvas units, default 6: vis-network's 4 px offset and a 3 px stroke on each side).
LABEL_MARGIN = 6.0
# Map frame size (px) assumed for the initial fit: the app's frame is about this wide and MAP_HEIGHT_PX high.
# NOTE: the real width depends on the browser window; a narrower window draws these labels smaller.
FIT_VIEWPORT_PX = (1100.0, 720.0)
# Screen font size (px) under which vis-network stops drawing a label (vis-network's default is 5).
LABEL_DRAW_THRESHOLD = 1

# Categorical palette for segments (36 colours). Segments take the colours in
# the map's segment order (by building, then id), so the segments of one
# building, which sit next to each other, get different colours, and up to
# 36 segments never share one. Consecutive entries differ strongly in hue.
# No entry is red or near red (hue within 22 degrees of red), because red
# marks violation edges and the border of highlighted nodes.
SEGMENT_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#ffd92f", "#9467bd", "#1b9e77", "#e377c2", "#17becf", "#bcbd22",
    "#393b79", "#e6ab02", "#31a354", "#a6cee3", "#7b4173", "#3182bd", "#fdae6b", "#74c476", "#8da0cb",
    "#a55194", "#637939", "#9c9ede", "#8c6d31", "#fd8d3c", "#6baed6", "#e5c494", "#ce6dbd", "#bd9e39",
    "#5254a3", "#80cdc1", "#006d2c", "#08519c", "#66c2a5", "#54278f", "#b3de69", "#01665e", "#f781bf",
)
# Shades per role when colouring by device class: medical warm, IT cool, network grey.
ROLE_PALETTE = {
    # Warm colours without pure reds, which mean a violation on the map.
    "medical": ("#e65100", "#f57c00", "#ffa000", "#c2185b", "#ad1457", "#ef6c00", "#ff8a65", "#f9a825", "#d81b60",
                "#8d6e63", "#fb8c00", "#ffb300"),
    "it": ("#1565c0", "#1e88e5", "#0288d1", "#00838f"),
    "network": ("#455a64", "#607d8b", "#78909c", "#90a4ae", "#546e7a"),
    "building": ("#2e7d32", "#558b2f", "#689f38"),
    "iot": ("#6a1b9a",),
    "unknown": ("#9e9e9e",),
}
SITE_COLOUR = "#263238"
BUILDING_COLOUR = "#546e7a"
INTERNET_COLOUR = "#000000"
UNASSIGNED_COLOUR = "#bdbdbd"
MORE_COLOUR = "#e0e0e0"
EDGE_COLOUR = {"link": "#cfd8dc", "communication": "#90a4ae", "violation": "#d50000", "attack_path": "#ff6d00"}
HIGHLIGHT_BORDER = "#d50000"
# Legend entry of the thick border drawn around highlighted nodes.
LEGEND_BORDER_LABEL = "thick red border: an end of a drawn violation or attack-path hop, or a device in focus"

_CRIT_RANK = {level: rank for rank, level in enumerate(CRITICALITY_LEVELS)}


def _class_colours() -> dict[str, str]:
    colours = {}
    used: dict[str, int] = {}
    for cls, role in ROLE_OF_CLASS.items():
        palette = ROLE_PALETTE.get(role, ROLE_PALETTE["unknown"])
        colours[cls] = palette[used.get(role, 0) % len(palette)]
        used[role] = used.get(role, 0) + 1
    return colours


CLASS_COLOUR = _class_colours()


@dataclass
class MapView:
    """One view of the map: the drawn nodes and edges with their layout.

    Attributes
    ----------
    nodes : DataFrame
        Columns :data:`NODE_COLUMNS`. ``level`` is one of :data:`LEVELS`.
        Down to the segment level, ``kind`` is ``site``, ``building``,
        ``segment``, ``unassigned`` or ``external``. Below it, ``kind`` is
        the device role (medical, it, network, iot, building, unknown), or
        ``more`` for a "more" node.
        ``count`` is the number of devices under the node (External
        endpoints for ``internet``). ``title`` is plain hover text.
    edges : DataFrame
        Columns :data:`EDGE_COLUMNS`. ``kind`` is ``link`` (parent to
        child), ``communication``, ``violation`` or ``attack_path``, in
        drawing order. ``weight`` is flows for communications and
        violations, paths for attack-path hops and devices for links.
    legend : list of (str, str)
        Label and colour of each colour in use.
    truncated : dict of str to int
        Node id of a class to the number of its devices not drawn.
    """

    nodes: pd.DataFrame
    edges: pd.DataFrame
    legend: list[tuple[str, str]] = field(default_factory=list)
    truncated: dict[str, int] = field(default_factory=dict)


def node_id_for_device(device_id: str) -> str:
    """Return the map node id of a device.

    >>> node_id_for_device("dev-1a2b")
    'device:dev-1a2b'
    """
    return f"device:{device_id}"


def expandable_ids(view: MapView) -> list[str]:
    """Return the ids of the nodes in ``view`` that can be expanded, in drawing order."""
    nodes = view.nodes
    if nodes.empty:
        return []
    return nodes.loc[nodes["expandable"].astype(bool), "id"].tolist()


# --------------------------------------------------------------------------
# Per-twin preparation, cached while the same tables and site are passed.


@dataclass
class _Prepared:
    """Per-device arrays and the segment groups, computed once per twin and site."""

    device_ids: np.ndarray
    device_index: pd.Index
    labels: np.ndarray
    classes: np.ndarray
    criticality: np.ndarray
    crit_rank: np.ndarray
    roles: np.ndarray
    ips: np.ndarray
    group_code: np.ndarray
    # One row per segment group, in drawing order: segment_id, name, zone,
    # building (None under the site), kind.
    groups: pd.DataFrame
    buildings: list[str]


_PREPARED: dict[str, object] = {}
_COMM_CODES: dict[str, object] = {}


def _building_key(text: str) -> str:
    """Return a building name folded for matching ("Building A" and "A" match)."""
    folded = text.strip().casefold()
    return folded[len("building "):].strip() if folded.startswith("building ") else folded


def _prepare(twin: Twin, site: SiteConfig) -> _Prepared:
    devices = twin.devices
    cached = _PREPARED.get("devices")
    if cached is not None and cached() is devices and _PREPARED.get("site") is site and _PREPARED.get("segments") is twin.segments:
        return _PREPARED["prepared"]  # type: ignore[return-value]
    prepared = _build_prepared(twin, site)
    _PREPARED.update(devices=weakref.ref(devices), site=site, segments=twin.segments, prepared=prepared)
    return prepared


def _build_prepared(twin: Twin, site: SiteConfig) -> _Prepared:
    if twin.devices.empty:
        columns = ["device_id", "label", "device_class", "criticality", "role", "ip", "segment_id"]
        view = pd.DataFrame({column: pd.Series(dtype=object) for column in columns})
    else:
        view = device_view(twin, site)
    segments = segment_table(twin, site)
    names = {seg.id: seg.name for seg in site.segments}
    if not twin.segments.empty and "name" in twin.segments:
        for seg_id, name in zip(twin.segments["segment_id"], twin.segments["name"], strict=True):
            names.setdefault(str(seg_id), name if isinstance(name, str) else "")

    rows = []
    for seg_id, rec in segments.iterrows():
        building = rec["building"] if isinstance(rec["building"], str) and rec["building"] else None
        rows.append((str(seg_id), names.get(str(seg_id)) or "", rec["zone"], building, "segment"))
    buildings = sorted({r[3] for r in rows if r[3] is not None})
    by_key = {_building_key(b): b for b in buildings}

    seg_ids = view["segment_id"].to_numpy(dtype=object)
    assigned = pd.notna(seg_ids)
    group = np.where(assigned, seg_ids, None).astype(object)
    known = {r[0] for r in rows}
    # Segment ids on devices that the site and the segments table do not list.
    for seg_id in sorted({str(s) for s in seg_ids[assigned]} - known):
        rows.append((seg_id, "", "unassigned", None, "segment"))

    if (~assigned).any():
        raw = twin.devices["building"].to_numpy(dtype=object) if "building" in twin.devices else np.full(len(view), None, dtype=object)
        unassigned_buildings = {}
        for text in {b for b in raw[~assigned] if isinstance(b, str) and b.strip()}:
            unassigned_buildings[text] = by_key.get(_building_key(text), text.strip())
        for text, name in sorted(unassigned_buildings.items()):
            if name not in buildings:
                buildings.append(name)
        labels = np.array([unassigned_buildings.get(b) if isinstance(b, str) else None for b in raw[~assigned]], dtype=object)
        keys = np.array([f"{UNASSIGNED}/{b}" if b else UNASSIGNED for b in labels], dtype=object)
        group[~assigned] = keys
        for key, building in sorted({(k, b) for k, b in zip(keys, labels, strict=True)}, key=lambda kb: kb[0]):
            rows.append((key, "devices in no segment", "unassigned", building, "unassigned"))
        buildings = sorted(set(buildings))

    groups = pd.DataFrame(rows, columns=["segment_id", "name", "zone", "building", "kind"])
    order = groups.assign(_b=groups["building"].fillna("")).sort_values(["_b", "kind", "segment_id"], kind="stable")
    groups = order.drop(columns="_b").reset_index(drop=True)
    group_code = pd.Index(groups["segment_id"]).get_indexer(group)

    classes = view["device_class"].to_numpy(dtype=object)
    criticality = view["criticality"].to_numpy(dtype=object)
    crit_rank = pd.Series(criticality).map(_CRIT_RANK).fillna(len(CRITICALITY_LEVELS) - 1).astype("int8").to_numpy()
    roles = view["role"].to_numpy(dtype=object)
    roles = np.where(pd.isna(roles), pd.Series(classes).map(ROLE_OF_CLASS).fillna("unknown").to_numpy(dtype=object), roles)
    return _Prepared(
        device_ids=view["device_id"].to_numpy(dtype=object),
        device_index=pd.Index(view["device_id"].to_numpy(dtype=object)),
        labels=view["label"].to_numpy(dtype=object),
        classes=classes,
        criticality=criticality,
        crit_rank=crit_rank,
        roles=roles.astype(object),
        ips=view["ip"].to_numpy(dtype=object),
        group_code=group_code,
        groups=groups,
        buildings=buildings,
    )


@dataclass
class _CommCodes:
    """Communication endpoints as device positions (-1 for External or unknown endpoints)."""

    src: np.ndarray
    dst: np.ndarray
    src_external: np.ndarray
    dst_external: np.ndarray
    flows: np.ndarray
    bytes: np.ndarray


def _comm_codes(twin: Twin, prepared: _Prepared) -> _CommCodes:
    comm = twin.communications
    cached = _COMM_CODES.get("communications")
    if cached is not None and cached() is comm and _COMM_CODES.get("prepared") is prepared:
        return _COMM_CODES["codes"]  # type: ignore[return-value]
    codes = _build_comm_codes(comm, prepared)
    _COMM_CODES.update(communications=weakref.ref(comm), prepared=prepared, codes=codes)
    return codes


def _build_comm_codes(comm: pd.DataFrame, prepared: _Prepared) -> _CommCodes:
    if comm.empty:
        empty = np.zeros(0, dtype=np.int64)
        return _CommCodes(empty, empty, empty.astype(bool), empty.astype(bool), empty, empty)
    count = len(comm)
    src_ext = _kind_is_external(comm, "src_kind", count)
    dst_ext = _kind_is_external(comm, "dst_kind", count)
    src = _positions(comm["src_id"], prepared.device_ids)
    dst = _positions(comm["dst_id"], prepared.device_ids)
    src[src_ext] = -1
    dst[dst_ext] = -1
    flows = pd.to_numeric(comm["flows"], errors="coerce").fillna(0).astype("int64").to_numpy() if "flows" in comm else np.ones(count, dtype=np.int64)
    size = pd.to_numeric(comm["bytes"], errors="coerce").fillna(0).astype("int64").to_numpy() if "bytes" in comm else np.zeros(count, dtype=np.int64)
    return _CommCodes(src.astype(np.int64), dst.astype(np.int64), src_ext, dst_ext, flows, size)


def _positions(ids: pd.Series, device_ids: np.ndarray) -> np.ndarray:
    """Return the position of each id in ``device_ids``, -1 when absent, by a hash lookup in pyarrow.

    On a million object strings it took 0.37 s where ``Index.get_indexer`` took 0.85 s.
    """
    values = pa.array(ids.astype(object).to_numpy(), type=pa.string(), from_pandas=True)
    found = pc.index_in(values, value_set=pa.array(device_ids, type=pa.string()))
    return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _kind_is_external(frame: pd.DataFrame, column: str, count: int) -> np.ndarray:
    if column not in frame:
        return np.zeros(count, dtype=bool)
    return (frame[column].astype(object) == "external").to_numpy(dtype=bool)


# --------------------------------------------------------------------------
# The view.


class _Nodes:
    """Growing node table; rows are appended parent before child."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.position: dict[str, int] = {}

    def add(self, **row) -> int:
        parent = row["parent"]
        row["parent_pos"] = self.position[parent] if parent is not None else -1
        self.position[row["id"]] = len(self.rows)
        self.rows.append(row)
        return len(self.rows) - 1


def _parse_expand(expand: Iterable[str], prepared: _Prepared) -> tuple[set[int], set[tuple[int, str]], set[tuple[int, str]]]:
    """Return expanded segment groups, expanded classes and classes whose "more" node is expanded."""
    group_pos = {seg_id: pos for pos, seg_id in enumerate(prepared.groups["segment_id"])}
    segments: set[int] = set()
    classes: set[tuple[int, str]] = set()
    more: set[tuple[int, str]] = set()
    for node_id in expand:
        text = str(node_id)
        if text.startswith("more:"):
            parsed = _parse_class_id(text[len("more:"):], group_pos)
            if parsed is not None:
                more.add(parsed)
                classes.add(parsed)
                segments.add(parsed[0])
                continue
        elif text.startswith("class:"):
            parsed = _parse_class_id(text, group_pos)
            if parsed is not None:
                classes.add(parsed)
                segments.add(parsed[0])
                continue
        elif text.startswith("segment:") and text[len("segment:"):] in group_pos:
            segments.add(group_pos[text[len("segment:"):]])
            continue
        elif text == "site" or text.startswith(("building:", "device:")) or text == INTERNET_ID:
            continue
        log.debug("map: ignoring unknown node id %r in expand", text)
    return segments, classes, more


def _parse_class_id(text: str, group_pos: dict[str, int]) -> tuple[int, str] | None:
    if not text.startswith("class:") or "/" not in text:
        return None
    seg_id, cls = text[len("class:"):].rsplit("/", 1)
    if seg_id not in group_pos:
        return None
    return group_pos[seg_id], cls


def _class_node_id(seg_id: str, cls: str) -> str:
    return f"class:{seg_id}/{cls}"


def _building_label(name: str) -> str:
    return name if name.casefold().startswith("building") else f"Building {name}"


def build_view(
    twin: Twin,
    site: SiteConfig,
    *,
    expand: Iterable[str] = (),
    colour_by: str = "segment",
    size_by: str = "criticality",
    violations: pd.DataFrame | None = None,
    attack_paths: pd.DataFrame | None = None,
    focus: Iterable[str] = (),
    max_devices: int = MAX_DEVICES_PER_GROUP,
    risk: pd.Series | None = None,
) -> MapView:
    """Build one view of the map: visible nodes, rolled-up edges, overlays and layout.

    Parameters
    ----------
    twin : Twin
    site : SiteConfig
    expand : iterable of str
        Node ids to expand: ``segment:<id>`` shows the segment's device
        classes, ``class:<segment id>/<class>`` its devices (and implies its
        segment), ``more:<class node id>`` up to :data:`MAX_DEVICES_EXPANDED`
        devices of that class. Unknown ids are ignored.
    colour_by : {"segment", "class"}
        Colour devices and groups by segment (stable palette keyed by the
        segment id) or by device class (medical warm, IT cool, network grey).
    size_by : {"criticality", "risk"}
        Size nodes by the highest criticality under them, or by the number
        of findings touching the devices under them.
    violations : DataFrame, optional
        Rows of the ``segment_violations`` finding (``src_id``, ``dst_id``,
        ``src_segment``, ``flows``, ``rule``); drawn as red edges.
    attack_paths : DataFrame, optional
        Rows of the ``attack_paths`` finding (``path_id``, ``path``); each
        hop is drawn as a thick orange edge.
    focus : iterable of str
        Device ids that must be drawn; their segments and classes are
        expanded and they are never truncated. Other ids are ignored.
    max_devices : int
        Devices drawn per expanded class before the rest roll up into one
        ``more`` node.
    risk : Series, optional
        Findings per device id, for ``size_by="risk"``; by default counted
        from the overlays.

    Returns
    -------
    MapView

    Raises
    ------
    ValueError
        When ``colour_by``, ``size_by`` or ``max_devices`` is invalid.

    Notes
    -----
    The roll-up is vectorised: O(N) for N devices plus O(C log C) for C
    communication rows. The per-device and per-communication arrays are
    cached while the same devices and communications tables are passed, so
    a repeated call costs little more than the nodes it draws.
    """
    if colour_by not in COLOUR_BY:
        raise ValueError(f"invalid colour_by {colour_by!r}; expected one of {', '.join(COLOUR_BY)}")
    if size_by not in SIZE_BY:
        raise ValueError(f"invalid size_by {size_by!r}; expected one of {', '.join(SIZE_BY)}")
    if int(max_devices) < 1:
        raise ValueError(f"invalid max_devices {max_devices!r}; expected a positive number of devices per class")

    prepared = _prepare(twin, site)
    codes = _comm_codes(twin, prepared)
    n_devices = len(prepared.device_ids)

    focus_pos = prepared.device_index.get_indexer([str(f) for f in focus]) if focus else np.zeros(0, dtype=np.int64)
    focus_pos = np.unique(focus_pos[focus_pos >= 0])
    exp_segments, exp_classes, exp_more = _parse_expand(expand, prepared)
    for pos in focus_pos:
        group = int(prepared.group_code[pos])
        exp_segments.add(group)
        exp_classes.add((group, str(prepared.classes[pos])))

    violation_ends = _violation_endpoints(violations, prepared)
    path_hops = _path_hops(attack_paths, prepared)
    touched = np.zeros(n_devices, dtype=bool)
    for ends in (violation_ends, path_hops):
        for column in ("src", "dst"):
            pos = ends[column].to_numpy()
            touched[pos[pos >= 0]] = True
    device_risk = _device_risk(risk, prepared, violation_ends, path_hops)

    nodes = _Nodes()
    visible = np.zeros(n_devices, dtype=np.int64)
    truncated: dict[str, int] = {}
    _add_structure(nodes, twin, site, prepared, codes, violation_ends, path_hops, visible)
    _add_expanded(nodes, prepared, exp_segments, exp_classes, exp_more, focus_pos, touched, int(max_devices), visible, truncated)
    internet = nodes.position.get(INTERNET_ID, -1)

    edges = _edges(nodes, prepared, codes, visible, internet, violation_ends, path_hops)
    frame = _node_frame(nodes, prepared, visible, device_risk, colour_by, size_by, edges, focus_pos)
    frame = _place(frame)
    legend = _legend(frame, colour_by, violations=violations is not None, attack_paths=attack_paths is not None)
    edge_frame = _edge_frame(frame, edges)
    log.debug("map view: %d nodes, %d edges, %d classes truncated", len(frame), len(edge_frame), len(truncated))
    return MapView(nodes=frame[NODE_COLUMNS].reset_index(drop=True), edges=edge_frame, legend=legend, truncated=truncated)


def _violation_endpoints(violations: pd.DataFrame | None, prepared: _Prepared) -> pd.DataFrame:
    """Return violation rows as device positions: src, dst (-1 unknown, -2 internet), flows, rule."""
    columns = {"src": pd.Series(dtype="int64"), "dst": pd.Series(dtype="int64"), "flows": pd.Series(dtype="int64"), "rule": pd.Series(dtype=object)}
    if violations is None or violations.empty:
        return pd.DataFrame(columns)
    out = {}
    for end in ("src", "dst"):
        ids = violations[f"{end}_id"].astype(object).to_numpy()
        pos = prepared.device_index.get_indexer(ids)
        if f"{end}_segment" in violations:
            internet = (violations[f"{end}_segment"].astype(object) == "internet").to_numpy(dtype=bool)
            pos[internet & (pos < 0)] = -2
        out[end] = pos.astype(np.int64)
    flows = pd.to_numeric(violations["flows"], errors="coerce").fillna(0).astype("int64").to_numpy() if "flows" in violations else np.ones(len(violations), dtype=np.int64)
    rules = violations["rule"].astype(object).to_numpy() if "rule" in violations else np.full(len(violations), None, dtype=object)
    frame = pd.DataFrame({"src": out["src"], "dst": out["dst"], "flows": flows, "rule": rules})
    unknown = int(((frame["src"] == -1) | (frame["dst"] == -1)).sum())
    if unknown:
        log.warning("map: %d violation rows name an endpoint that is not a device of this twin; they are not drawn", unknown)
    return frame


def _path_hops(attack_paths: pd.DataFrame | None, prepared: _Prepared) -> pd.DataFrame:
    """Return attack-path hops as device positions (-2 for External endpoints) with their path id."""
    columns = {"src": pd.Series(dtype="int64"), "dst": pd.Series(dtype="int64"), "path_id": pd.Series(dtype=object)}
    if attack_paths is None or attack_paths.empty:
        return pd.DataFrame(columns)
    srcs, dsts, ids = [], [], []
    path_ids = attack_paths["path_id"].astype(str).tolist() if "path_id" in attack_paths else [str(i) for i in range(len(attack_paths))]
    for path_id, path in zip(path_ids, attack_paths["path"], strict=True):
        if not isinstance(path, (list, tuple, np.ndarray)) or len(path) < 2:
            continue
        nodes = [str(n) for n in path]
        srcs.extend(nodes[:-1])
        dsts.extend(nodes[1:])
        ids.extend([path_id] * (len(nodes) - 1))
    src = prepared.device_index.get_indexer(srcs) if srcs else np.zeros(0, dtype=np.int64)
    dst = prepared.device_index.get_indexer(dsts) if dsts else np.zeros(0, dtype=np.int64)
    # Attack paths only cross devices; any other node id is an External entry.
    src = np.where(src < 0, -2, src)
    dst = np.where(dst < 0, -2, dst)
    return pd.DataFrame({"src": src.astype(np.int64), "dst": dst.astype(np.int64), "path_id": ids})


def _device_risk(risk: pd.Series | None, prepared: _Prepared, violation_ends: pd.DataFrame, path_hops: pd.DataFrame) -> np.ndarray:
    """Return findings per device position; the last slot counts the internet node."""
    n = len(prepared.device_ids)
    out = np.zeros(n + 1, dtype=float)
    if risk is not None:
        pos = prepared.device_index.get_indexer(risk.index.astype(str))
        values = pd.to_numeric(risk, errors="coerce").fillna(0).to_numpy(dtype=float)
        np.add.at(out, pos[pos >= 0], values[pos >= 0])
        return out
    for column in ("src", "dst"):
        pos = violation_ends[column].to_numpy()
        np.add.at(out, np.where(pos == -2, n, pos)[pos != -1], 1.0)
    if not path_hops.empty:
        # A device counts each path it lies on once.
        ends = pd.concat([path_hops[["path_id", "src"]].rename(columns={"src": "pos"}), path_hops[["path_id", "dst"]].rename(columns={"dst": "pos"})])
        ends = ends.drop_duplicates()
        pos = ends["pos"].to_numpy()
        np.add.at(out, np.where(pos == -2, n, pos), 1.0)
    return out


def _add_structure(nodes, twin, site, prepared, codes, violation_ends, path_hops, visible) -> None:
    """Add the site, buildings, segment groups and the internet node; point every device at its group."""
    site_pos = nodes.add(id="site", label=site.site.name, level="site", parent=None, kind="site", segment_id=None, device_class=None, device_id=None)
    building_pos = {}
    for building in prepared.buildings:
        building_pos[building] = nodes.add(
            id=f"building:{building}", label=_building_label(building), level="building", parent="site", kind="building",
            segment_id=None, device_class=None, device_id=None,
        )
    group_node = np.zeros(len(prepared.groups), dtype=np.int64)
    for pos, row in enumerate(prepared.groups.itertuples(index=False)):
        parent = f"building:{row.building}" if isinstance(row.building, str) else "site"
        group_node[pos] = nodes.add(
            id=f"segment:{row.segment_id}", label=row.segment_id, level="segment", parent=parent, kind=row.kind,
            segment_id=row.segment_id, device_class=None, device_id=None,
        )
    if len(visible):
        visible[:] = group_node[prepared.group_code]
    externals = codes.src_external.any() or codes.dst_external.any()
    externals = externals or bool((violation_ends[["src", "dst"]] == -2).any().any()) or bool((path_hops[["src", "dst"]] == -2).any().any())
    if externals:
        nodes.add(id=INTERNET_ID, label="internet", level="segment", parent="site", kind="external", segment_id=None, device_class=None, device_id=None)
    del site_pos, building_pos


def _add_expanded(nodes, prepared, exp_segments, exp_classes, exp_more, focus_pos, touched, max_devices, visible, truncated) -> None:
    """Add class nodes of expanded segments and device nodes of expanded classes; repoint their devices."""
    if not exp_segments:
        return
    group_code = prepared.group_code
    in_expanded = np.isin(group_code, np.fromiter(exp_segments, dtype=np.int64))
    members = np.flatnonzero(in_expanded)
    frame = pd.DataFrame({"pos": members, "group": group_code[members], "cls": prepared.classes[members].astype(str)})
    is_focus = np.zeros(len(prepared.device_ids), dtype=bool)
    is_focus[focus_pos] = True
    # Devices first drawn in a truncated class: focus, then overlay endpoints,
    # then the most critical, then by label and id.
    frame["focus"] = ~is_focus[members]
    frame["touched"] = ~touched[members]
    frame["crit"] = prepared.crit_rank[members]
    frame["label"] = prepared.labels[members].astype(str)
    frame["id"] = prepared.device_ids[members].astype(str)
    frame = frame.sort_values(["group", "cls", "focus", "touched", "crit", "label", "id"], kind="stable")
    frame["rank"] = frame.groupby(["group", "cls"], sort=False).cumcount()

    seg_ids = prepared.groups["segment_id"].tolist()
    for (group, cls), part in frame.groupby(["group", "cls"], sort=True):
        seg_id = seg_ids[group]
        class_id = _class_node_id(seg_id, cls)
        class_pos = nodes.add(
            id=class_id, label=cls, level="class", parent=f"segment:{seg_id}", kind=ROLE_OF_CLASS.get(cls, "unknown"),
            segment_id=seg_id, device_class=cls, device_id=None,
        )
        positions = part["pos"].to_numpy()
        visible[positions] = class_pos
        if (group, cls) not in exp_classes:
            continue
        limit = MAX_DEVICES_EXPANDED if (group, cls) in exp_more else max_devices
        limit = max(limit, int((~part["focus"]).sum()))
        shown = positions[part["rank"].to_numpy() < limit]
        for pos in shown:
            device_id = str(prepared.device_ids[pos])
            visible[pos] = nodes.add(
                id=node_id_for_device(device_id), label=prepared.labels[pos], level="device", parent=class_id,
                kind=prepared.roles[pos] or "unknown", segment_id=seg_id, device_class=cls, device_id=device_id,
            )
        rest = positions[part["rank"].to_numpy() >= limit]
        if len(rest):
            more_pos = nodes.add(
                id=f"more:{class_id}", label=f"+{len(rest)} more", level="more", parent=class_id, kind="more",
                segment_id=seg_id, device_class=cls, device_id=None,
            )
            visible[rest] = more_pos
            truncated[class_id] = len(rest)


@dataclass
class _EdgeSets:
    link: pd.DataFrame
    communication: pd.DataFrame
    violation: pd.DataFrame
    attack_path: pd.DataFrame
    # Node positions at either end of a violation or hop, including those
    # that roll up into one node and so draw no edge.
    overlay_ends: np.ndarray


def _roll_up(src: np.ndarray, dst: np.ndarray, visible: np.ndarray, internet: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map device positions to visible node positions; return (src node, dst node, keep mask)."""
    src_node = np.where(src >= 0, visible[np.maximum(src, 0)] if len(visible) else -1, np.where(src == -2, internet, -1))
    dst_node = np.where(dst >= 0, visible[np.maximum(dst, 0)] if len(visible) else -1, np.where(dst == -2, internet, -1))
    keep = (src_node >= 0) & (dst_node >= 0) & (src_node != dst_node)
    return src_node, dst_node, keep


def _edges(nodes, prepared, codes, visible, internet, violation_ends, path_hops) -> _EdgeSets:
    position = nodes.position
    links = [(position[row["parent"]], pos) for pos, row in enumerate(nodes.rows) if row["parent"] is not None]
    link = pd.DataFrame(links, columns=["a", "b"])

    src = np.where(codes.src_external, -2, codes.src)
    dst = np.where(codes.dst_external, -2, codes.dst)
    a, b, keep = _roll_up(src, dst, visible, internet)
    comm = _sum_pairs(a[keep], b[keep], codes.flows[keep], codes.bytes[keep], len(nodes.rows))
    if len(comm) > MAX_COMMUNICATION_EDGES:
        log.warning(
            "map: %d communication edges between drawn nodes; drawing the %d with the most flows",
            len(comm), MAX_COMMUNICATION_EDGES,
        )
        comm = comm.sort_values(["flows", "a", "b"], ascending=[False, True, True]).head(MAX_COMMUNICATION_EDGES)
        comm = comm.sort_values(["a", "b"]).reset_index(drop=True)

    a, b, keep = _roll_up(violation_ends["src"].to_numpy(), violation_ends["dst"].to_numpy(), visible, internet)
    ends = [a, b]
    viol = pd.DataFrame({"a": a[keep], "b": b[keep], "flows": violation_ends["flows"].to_numpy()[keep], "rule": violation_ends["rule"].to_numpy()[keep]})
    viol = viol.groupby(["a", "b"], sort=True).agg(flows=("flows", "sum"), rows=("flows", "size"), rules=("rule", _first_values)).reset_index()

    a, b, keep = _roll_up(path_hops["src"].to_numpy(), path_hops["dst"].to_numpy(), visible, internet)
    ends += [a, b]
    overlay_ends = np.unique(np.concatenate(ends).astype(np.int64))
    hops = pd.DataFrame({"a": a[keep], "b": b[keep], "path_id": path_hops["path_id"].to_numpy()[keep]})
    hops = hops.drop_duplicates().groupby(["a", "b"], sort=True).agg(paths=("path_id", "size"), ids=("path_id", _first_values)).reset_index()
    return _EdgeSets(link=link, communication=comm, violation=viol, attack_path=hops, overlay_ends=overlay_ends[overlay_ends >= 0])


def _sum_pairs(a: np.ndarray, b: np.ndarray, flows: np.ndarray, size: np.ndarray, count: int) -> pd.DataFrame:
    """Return flows, bytes and rows summed per (a, b) node pair, sorted by a then b."""
    key = a.astype(np.int64) * max(count, 1) + b.astype(np.int64)
    pairs, inverse = np.unique(key, return_inverse=True)
    return pd.DataFrame({
        "a": pairs // max(count, 1),
        "b": pairs % max(count, 1),
        "flows": np.bincount(inverse, weights=flows, minlength=len(pairs)).astype(np.int64),
        "bytes": np.bincount(inverse, weights=size, minlength=len(pairs)).astype(np.int64),
        "rows": np.bincount(inverse, minlength=len(pairs)).astype(np.int64),
    })


def _first_values(values: pd.Series, limit: int = 5) -> str:
    """Return up to ``limit`` distinct values joined by commas, with the number left out."""
    distinct = sorted({str(v) for v in values if v is not None and v == v})
    text = ", ".join(distinct[:limit])
    if len(distinct) > limit:
        text += f" and {len(distinct) - limit} more"
    return text


def _node_frame(nodes, prepared, visible, device_risk, colour_by, size_by, edges: _EdgeSets, focus_pos) -> pd.DataFrame:
    """Return the node table with counts, criticality, risk, colour, size, title and flags."""
    frame = pd.DataFrame(nodes.rows, columns=["id", "label", "level", "parent", "parent_pos", "kind", "segment_id", "device_class", "device_id"])
    count = len(frame)
    position = nodes.position
    parent_pos = frame["parent_pos"].to_numpy(dtype=np.int64)

    # Per node: devices, best criticality and risk of the devices drawn at or
    # rolled up into it, then summed up the tree.
    n_devices = len(prepared.device_ids)
    devices = np.bincount(visible, minlength=count).astype(np.int64) if n_devices else np.zeros(count, dtype=np.int64)
    risk = np.bincount(visible, weights=device_risk[:n_devices], minlength=count) if n_devices else np.zeros(count)
    best = np.full(count, len(CRITICALITY_LEVELS) - 1, dtype=np.int64)
    if n_devices:
        np.minimum.at(best, visible, prepared.crit_rank.astype(np.int64))
        has = np.bincount(visible, minlength=count) > 0
        best[~has] = len(CRITICALITY_LEVELS)
    internet = position.get(INTERNET_ID, -1)
    if internet >= 0:
        risk[internet] += device_risk[n_devices]
    for pos in range(count - 1, 0, -1):
        parent = parent_pos[pos]
        if parent >= 0:
            devices[parent] += devices[pos]
            risk[parent] += risk[pos]
            best[parent] = min(best[parent], best[pos])
    if internet >= 0:
        devices[internet] = 0
    frame["count"] = devices
    frame["crit_rank"] = best
    frame["risk_total"] = risk
    frame["expandable"] = _expandable(frame, position)

    highlighted = np.zeros(count, dtype=bool)
    highlighted[edges.overlay_ends] = True
    if len(focus_pos):
        highlighted[visible[focus_pos]] = True
    highlighted[0] = False
    frame["highlighted"] = highlighted

    frame["color"], frame["colour_class"] = _colours(frame, prepared, colour_by)
    frame["size"] = _sizes(frame, size_by)
    frame["shape"] = [SHAPES[level] if kind != "external" else "diamond" for level, kind in zip(frame["level"], frame["kind"], strict=True)]
    frame["label"] = [_node_label(row) for row in frame.itertuples(index=False)]
    frame["title"] = _titles(frame, prepared, visible)
    return frame


def _expandable(frame: pd.DataFrame, position: dict[str, int]) -> np.ndarray:
    """Return True for segment groups, classes and "more" nodes whose children are not drawn."""
    ids = frame["id"].to_numpy(dtype=object)
    levels = frame["level"].to_numpy(dtype=object)
    has_children = set(frame["parent"].dropna().tolist())
    out = np.zeros(len(frame), dtype=bool)
    for pos, (node_id, level) in enumerate(zip(ids, levels, strict=True)):
        if level in ("segment", "class") and node_id != INTERNET_ID:
            out[pos] = node_id not in has_children and frame["count"].iat[pos] > 0
        elif level == "more":
            out[pos] = frame["count"].iat[pos] > 0
    return out


def _segment_colours(prepared: _Prepared) -> dict[str, str]:
    """Return the colour of every segment group, in the groups' order (building, then id)."""
    ids = [str(i) for i, kind in zip(prepared.groups["segment_id"], prepared.groups["kind"], strict=True) if kind != "unassigned"]
    return {seg_id: SEGMENT_PALETTE[i % len(SEGMENT_PALETTE)] for i, seg_id in enumerate(ids)}


def _dominant_classes(prepared: _Prepared) -> dict[str, str]:
    """Return the most common device class of each segment group (ties: the class name first in order)."""
    if not len(prepared.device_ids):
        return {}
    frame = pd.DataFrame({"g": prepared.group_code, "c": pd.Series(prepared.classes, dtype=object).fillna("unknown").astype(str)})
    frame = frame[frame["g"] >= 0]
    counts = frame.groupby(["g", "c"]).size().reset_index(name="n").sort_values(["g", "n", "c"], ascending=[True, False, True], kind="stable")
    first = counts.drop_duplicates("g")
    ids = prepared.groups["segment_id"].to_numpy(dtype=object)
    return {str(ids[g]): c for g, c in zip(first["g"], first["c"], strict=True)}


def _colours(frame: pd.DataFrame, prepared: _Prepared, colour_by: str) -> tuple[list[str], list[str | None]]:
    """Return each node's colour and, when colouring by class, the class that colour stands for."""
    colours: list[str] = []
    classes: list[str | None] = []
    by_segment = _segment_colours(prepared)
    dominant = _dominant_classes(prepared) if colour_by == "class" else {}
    for level, kind, seg_id, cls in zip(frame["level"], frame["kind"], frame["segment_id"], frame["device_class"], strict=True):
        shown_class = None
        if level == "site":
            colour = SITE_COLOUR
        elif level == "building":
            colour = BUILDING_COLOUR
        elif kind == "external":
            colour = INTERNET_COLOUR
        elif level == "more":
            colour = MORE_COLOUR
        elif kind == "unassigned" and colour_by == "segment":
            colour = UNASSIGNED_COLOUR
        elif colour_by == "class" and isinstance(cls, str):
            colour, shown_class = CLASS_COLOUR.get(cls, ROLE_PALETTE["unknown"][0]), cls
        elif colour_by == "class" and level == "segment" and seg_id in dominant:
            # A collapsed segment takes the colour of its most common class.
            shown_class = dominant[seg_id]
            colour = CLASS_COLOUR.get(shown_class, ROLE_PALETTE["unknown"][0])
        elif colour_by == "class":
            colour = ROLE_PALETTE["network"][2]
        elif kind == "unassigned":
            colour = UNASSIGNED_COLOUR
        else:
            colour = by_segment.get(str(seg_id), SEGMENT_PALETTE[0])
        colours.append(colour)
        classes.append(shown_class)
    return colours, classes


def _sizes(frame: pd.DataFrame, size_by: str) -> np.ndarray:
    base = frame["level"].map(LEVEL_SIZE).to_numpy(dtype=float)
    if size_by == "risk":
        factor = np.minimum(RISK_SCALE_MAX, 1.0 + RISK_SCALE * np.log1p(frame["risk_total"].to_numpy(dtype=float)))
    else:
        levels = [CRITICALITY_LEVELS[c] if c < len(CRITICALITY_LEVELS) else "low" for c in frame["crit_rank"]]
        factor = np.array([CRITICALITY_SCALE[level] for level in levels])
    return np.round(base * factor, 1)


def _node_label(row) -> str:
    if row.level == "site":
        return escape_text(str(row.label))
    if row.level == "building":
        return escape_text(str(row.label))
    if row.level == "segment" and row.kind == "external":
        return "internet"
    if row.level == "segment":
        noun = "device" if row.count == 1 else "devices"
        return f"{escape_text(str(row.label))}\n{row.count} {noun}"
    if row.level == "class":
        return f"{escape_text(str(row.label))} ({row.count})"
    if row.level == "more":
        return str(row.label)
    return escape_text(str(row.label))


def _titles(frame: pd.DataFrame, prepared: _Prepared, visible: np.ndarray) -> list[str]:
    """Return plain hover text per node; every value from the twin is escaped."""
    titles = []
    groups = prepared.groups.set_index("segment_id")
    for row in frame.itertuples(index=False):
        crit = CRITICALITY_LEVELS[row.crit_rank] if row.crit_rank < len(CRITICALITY_LEVELS) else None
        lines: list[str] = []
        if row.level == "site":
            lines = [f"Site {escape_text(str(row.label))}", f"{row.count} devices"]
        elif row.level == "building":
            lines = [escape_text(str(row.label)), f"{row.count} devices"]
        elif row.kind == "external":
            lines = ["internet: External endpoints outside the hospital's segments"]
        elif row.level == "segment":
            info = groups.loc[row.segment_id]
            name = f" ({escape_text(str(info['name']))})" if info["name"] else ""
            lines = [f"Segment {escape_text(str(row.segment_id))}{name}", f"zone {escape_text(str(info['zone']))}", f"{row.count} devices"]
        elif row.level == "class":
            lines = [f"{escape_text(str(row.device_class))} in {escape_text(str(row.segment_id))}", f"{row.count} devices"]
        elif row.level == "more":
            lines = [f"{row.count} more {escape_text(str(row.device_class))} devices in {escape_text(str(row.segment_id))}"]
        else:
            pos = prepared.device_index.get_loc(row.device_id)
            ip = prepared.ips[pos]
            lines = [
                escape_text(str(prepared.labels[pos])),
                f"id {escape_text(str(row.device_id))}",
                f"class {escape_text(str(row.device_class))}, role {escape_text(str(row.kind))}",
                f"IP {escape_text(str(ip))}" if isinstance(ip, str) else "no IP address",
                f"segment {escape_text(str(row.segment_id))}",
            ]
        if crit and row.level not in ("site", "building") and row.kind != "external":
            lines.append(f"criticality {crit}" if row.level == "device" else f"highest criticality {crit}")
        if row.risk_total:
            lines.append(f"findings touching it: {row.risk_total:g}")
        if row.expandable:
            lines.append("click to expand")
        titles.append("\n".join(lines))
    return titles


def label_extent(labels: Iterable[str], sizes: np.ndarray, fonts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the disc that contains each node and its label: its radius and how far the node sits above its centre.

    vis-network draws the label of a dot, star, square, hexagon, triangle or
    diamond centred below the node. The label box is estimated from its
    longest line and line count (:data:`LABEL_CHAR_EM`, :data:`LABEL_LINE_EM`).
    The disc is centred on the box that spans the node and its label, so the
    node is drawn ``offset`` above the disc's centre.

    >>> radius, offset = label_extent(["ab"], np.array([10.0]), np.array([10.0]))
    >>> radius.round(1).tolist(), offset.tolist()
    ([21.5], [9.0])
    """
    lines = [str(label).split("\n") for label in labels]
    chars = np.array([max(len(line) for line in text) for text in lines], dtype=float)
    count = np.array([len(text) for text in lines], dtype=float)
    half_width = np.maximum(sizes, chars * fonts * LABEL_CHAR_EM / 2.0 + LABEL_MARGIN / 2.0)
    # The box runs from the node's top (-size) to the label's bottom, measured from the node's centre.
    bottom = sizes + LABEL_MARGIN + count * fonts * LABEL_LINE_EM
    half_height = (bottom + sizes) / 2.0
    return np.hypot(half_width, half_height), half_height - sizes


def _fit_fonts(x: np.ndarray, y: np.ndarray, sizes: np.ndarray, viewport: tuple[float, float]) -> dict[str, float]:
    """Return the font per level that reaches MIN_SCREEN_FONT_PX when the view is fitted into ``viewport``, capped."""
    fonts = {level: float(size) for level, size in FONT_SIZE.items()}
    if len(x) == 0:
        return fonts
    margin = 2.0 * float(sizes.max())
    width, height = float(np.ptp(x)) + margin, float(np.ptp(y)) + margin
    scale = min(viewport[0] / max(width, 1.0), viewport[1] / max(height, 1.0))
    for level, screen_px in MIN_SCREEN_FONT_PX.items():
        wanted = screen_px / scale if scale > 0 else fonts[level]
        fonts[level] = round(min(max(fonts[level], wanted), fonts[level] * LABEL_FONT_SCALE_MAX), 1)
    return fonts


def _place(frame: pd.DataFrame) -> pd.DataFrame:
    """Lay the tree out with room for every label, and set each node's label font (``font_size``).

    The fonts of the larger levels depend on the view's extent, which depends
    on the room the labels take, so the layout runs up to
    :data:`FONT_LAYOUT_PASSES` times. The fonts drawn are those of the last
    layout's reserved room, never larger.
    """
    parents = frame["parent_pos"].to_numpy(dtype=np.int64)
    sizes = frame["size"].to_numpy(dtype=float)
    levels = frame["level"]
    labels = frame["label"].tolist()
    fonts = {level: float(size) for level, size in FONT_SIZE.items()}
    for layout_pass in range(FONT_LAYOUT_PASSES):
        node_fonts = levels.map(fonts).to_numpy(dtype=float)
        radii, offsets = label_extent(labels, sizes, node_fonts)
        coords = radial_layout(parents, radii, gap=LAYOUT_GAP)
        coords[:, 1] -= offsets
        fitted = _fit_fonts(coords[:, 0], coords[:, 1], sizes, FIT_VIEWPORT_PX)
        grows = any(fitted[level] > fonts[level] for level in MIN_SCREEN_FONT_PX)
        # The last pass keeps its layout and fonts, so every label fits the room reserved for it.
        if not grows or layout_pass == FONT_LAYOUT_PASSES - 1:
            break
        fonts = {level: max(fonts[level], fitted[level]) for level in fonts}
    out = frame.copy()
    out["x"] = np.round(coords[:, 0], 1)
    out["y"] = np.round(coords[:, 1], 1)
    out["font_size"] = node_fonts
    out["_radius"] = radii
    return out


def _legend(frame: pd.DataFrame, colour_by: str, *, violations: bool, attack_paths: bool) -> list[tuple[str, str]]:
    """Return the legend: node colours in use, then the edge kinds of the overlays that are on and the border."""
    legend: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    if colour_by == "segment":
        items = [
            (f"segment {sid}" if kind != "unassigned" else UNASSIGNED, colour)
            for sid, kind, colour, level in zip(frame["segment_id"], frame["kind"], frame["color"], frame["level"], strict=True)
            if level == "segment" and kind != "external"
        ]
    else:
        items = [
            (f"{cls} ({ROLE_OF_CLASS.get(cls, 'unknown')})", colour)
            for cls, colour in zip(frame["colour_class"], frame["color"], strict=True)
            if isinstance(cls, str)
        ]
        items.sort()
    if (frame["kind"] == "external").any():
        items.append(("internet (External endpoints)", INTERNET_COLOUR))
    for item in items:
        if item not in seen:
            seen.add(item)
            legend.append(item)
    legend.append(("communication", EDGE_COLOUR["communication"]))
    if violations:
        legend.append(("violation (denied by policy)", EDGE_COLOUR["violation"]))
    if attack_paths:
        legend.append(("attack-path hop", EDGE_COLOUR["attack_path"]))
    if frame["highlighted"].astype(bool).any():
        legend.append((LEGEND_BORDER_LABEL, HIGHLIGHT_BORDER))
    return legend


def _edge_frame(frame: pd.DataFrame, edges: _EdgeSets) -> pd.DataFrame:
    ids = frame["id"].to_numpy(dtype=object)
    labels = frame["label"].str.replace("\n", " ", regex=False).to_numpy(dtype=object)
    parts = []

    link = edges.link
    parts.append(pd.DataFrame({
        "src": ids[link["a"].to_numpy(dtype=np.int64)],
        "dst": ids[link["b"].to_numpy(dtype=np.int64)],
        "kind": "link",
        "weight": frame["count"].to_numpy()[link["b"].to_numpy(dtype=np.int64)],
        "width": 1.0,
        "color": EDGE_COLOUR["link"],
        "title": "",
        "dashes": False,
    }))

    comm = edges.communication
    a, b = comm["a"].to_numpy(dtype=np.int64), comm["b"].to_numpy(dtype=np.int64)
    parts.append(pd.DataFrame({
        "src": ids[a],
        "dst": ids[b],
        "kind": "communication",
        "weight": comm["flows"].to_numpy(),
        "width": np.round(np.minimum(8.0, 1.0 + np.log10(1.0 + comm["flows"].to_numpy(dtype=float))), 2),
        "color": EDGE_COLOUR["communication"],
        "title": [
            f"{sl} -> {dl}: {rows} communications, {flows} flows, {_bytes_text(size)}"
            for sl, dl, rows, flows, size in zip(labels[a], labels[b], comm["rows"], comm["flows"], comm["bytes"], strict=True)
        ],
        "dashes": False,
    }))

    viol = edges.violation
    a, b = viol["a"].to_numpy(dtype=np.int64), viol["b"].to_numpy(dtype=np.int64)
    parts.append(pd.DataFrame({
        "src": ids[a],
        "dst": ids[b],
        "kind": "violation",
        "weight": viol["flows"].to_numpy(),
        "width": np.round(np.minimum(10.0, 3.0 + np.log10(1.0 + viol["rows"].to_numpy(dtype=float)) * 2.0), 2),
        "color": EDGE_COLOUR["violation"],
        "title": [
            f"{sl} -> {dl}: {rows} denied communication{'s' if rows != 1 else ''}, {flows} flows; rules: {escape_text(rules)}"
            for sl, dl, rows, flows, rules in zip(labels[a], labels[b], viol["rows"], viol["flows"], viol["rules"], strict=True)
        ],
        "dashes": True,
    }))

    hops = edges.attack_path
    a, b = hops["a"].to_numpy(dtype=np.int64), hops["b"].to_numpy(dtype=np.int64)
    parts.append(pd.DataFrame({
        "src": ids[a],
        "dst": ids[b],
        "kind": "attack_path",
        "weight": hops["paths"].to_numpy(),
        "width": 6.0,
        "color": EDGE_COLOUR["attack_path"],
        "title": [
            f"{sl} -> {dl}: hop of {paths} attack path{'s' if paths != 1 else ''} ({escape_text(pids)})"
            for sl, dl, paths, pids in zip(labels[a], labels[b], hops["paths"], hops["ids"], strict=True)
        ],
        "dashes": False,
    }))
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame({col: pd.Series(dtype=object) for col in EDGE_COLUMNS})
    out = pd.concat(parts, ignore_index=True)
    out["weight"] = out["weight"].astype("int64")
    out["dashes"] = out["dashes"].astype(bool)
    return out[EDGE_COLUMNS]


def _bytes_text(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000.0 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000.0
    return f"{value:.1f} TB"


# --------------------------------------------------------------------------
# HTML.

# A CSS length for the map's height, such as 720px, 80vh or 100%.
_CSS_LENGTH = re.compile(r"^\d{1,5}(\.\d{1,3})?(px|%|vh|em|rem)$")

# Remote resources in an HTML page: script and link tags, CSS @import and
# url() pointing at http://, https:// or a protocol-relative //host.
_REMOTE = r"""(?:https?:)?//"""
_REMOTE_SCRIPT = re.compile(r"""<script\b[^>]*\bsrc\s*=\s*["']?""" + _REMOTE + r"""[^>]*>\s*</script\s*>""", re.IGNORECASE | re.DOTALL)
_REMOTE_LINK = re.compile(r"""<link\b[^>]*\bhref\s*=\s*["']?""" + _REMOTE + r"""[^>]*>""", re.IGNORECASE | re.DOTALL)
_REMOTE_IMPORT = re.compile(r"""@import\s+(?:url\(\s*)?["']?""" + _REMOTE + r"""[^;]*;""", re.IGNORECASE)
_REMOTE_URL = re.compile(r"""url\(\s*["']?""" + _REMOTE + r"""[^)]*\)""", re.IGNORECASE)
_EMPTY_HEADING = re.compile(r"<center>\s*<h1>\s*</h1>\s*</center>", re.IGNORECASE)

# pyvis's template builds the network in one statement, and vis-network
# draws the first frame inside its constructor, before any listener could
# be attached. The statement is replaced so the listeners are attached to
# an empty network first and the data is set afterwards.
_CONSTRUCT = "network = new vis.Network(container, data, options);"
_CONSTRUCT_HOOKED = """network = new vis.Network(container, {nodes: [], edges: []}, options);
                  twinMapAttach(network);
                  network.setData(data);"""

# Defined before pyvis's script runs. window.twinMap records times in
# milliseconds since navigation start. drawnAt is the first frame drawn
# with the data, and stabilizedAt the end of the physics stabilisation.
# readyAt is when the view is interactive: the first frame, or with physics
# the first frame after stabilisation. A click on a node emits its id
# as a "twin-map-select" window event and, when enabled, as a message to
# the parent window.
_HOOK_SCRIPT = """
<script type="text/javascript">
window.twinMap = {ready: false, readyAt: null, drawnAt: null, stabilizedAt: null, selected: null, network: null};
function twinMapAttach(network) {
  var physics = %(physics)s;
  var sendToParent = %(send)s;
  var messageType = %(type)s;
  var state = window.twinMap;
  state.network = network;
  network.on("stabilizationIterationsDone", function () {
    if (state.stabilizedAt === null) {
      state.stabilizedAt = performance.now();
    }
  });
  network.on("afterDrawing", function () {
    if (state.ready || network.body.nodeIndices.length === 0) {
      return;
    }
    var now = performance.now();
    if (state.drawnAt === null) {
      state.drawnAt = now;
    }
    if (!physics || state.stabilizedAt !== null) {
      state.readyAt = now;
      state.ready = true;
    }
  });
  network.on("click", function (params) {
    if (!params.nodes || params.nodes.length === 0) {
      return;
    }
    var id = params.nodes[0];
    state.selected = id;
    window.dispatchEvent(new CustomEvent(messageType, {detail: {id: id}}));
    if (sendToParent && window.parent && window.parent !== window) {
      window.parent.postMessage({type: messageType, id: id}, "*");
    }
  });
}
</script>
"""


def strip_external_references(html: str) -> str:
    """Remove every remote resource reference from an HTML page.

    Drops ``<script src>`` and ``<link href>`` tags that point at http://,
    https:// or a protocol-relative host, CSS ``@import`` of such a URL, and
    replaces a remote CSS ``url()`` with ``none``. pyvis 0.3.2 links
    Bootstrap from jsdelivr this way even when vis-network is inlined.

    >>> strip_external_references('<link href="https://cdn.example/x.css" rel="stylesheet"><p>map</p>')
    '<p>map</p>'
    """
    html = _REMOTE_SCRIPT.sub("", html)
    html = _REMOTE_LINK.sub("", html)
    html = _REMOTE_IMPORT.sub("", html)
    return _REMOTE_URL.sub("none", html)


def _remote_references(html: str) -> list[str]:
    found = []
    for pattern in (_REMOTE_SCRIPT, _REMOTE_LINK, _REMOTE_IMPORT, _REMOTE_URL):
        found += [m.group(0)[:120] for m in pattern.finditer(html)]
    return found


def render_html(view: MapView, *, height: str = "720px", physics: bool = False, select_callback: bool = False) -> str:
    """Render a view as one self-contained HTML page (pyvis and vis-network, no internet needed).

    Parameters
    ----------
    view : MapView
    height : str
        CSS height of the map, such as ``720px`` or ``80vh``.
    physics : bool
        Run vis-network's physics from the server layout. Off by default:
        the layout is final and large views stay interactive.
    select_callback : bool
        Also post ``{type: "twin-map-select", id}`` to the parent window
        when a node is clicked (for a page that embeds the map in an
        iframe). The window event ``twin-map-select`` is always emitted.

    Returns
    -------
    str
        HTML with vis-network's script and style inlined from the installed
        pyvis package, Bootstrap dropped, and no remote references.

    Raises
    ------
    ValueError
        When ``height`` is not a CSS length.
    TwinError
        When the installed pyvis template still holds a remote reference
        after stripping (a pyvis version this code does not know).
    """
    if not _CSS_LENGTH.match(str(height)):
        raise ValueError(f"invalid height {height!r}; expected a CSS length such as 720px, 80vh or 100%")
    from pyvis.network import Network

    net = Network(height=str(height), width="100%", directed=True, cdn_resources="in_line", heading="")
    fonts = label_font_sizes(view.nodes)
    net.nodes = [_vis_node(row, fonts.get(row.level, FONT_SIZE.get(row.level, 12))) for row in view.nodes.itertuples(index=False)]
    net.edges = [_vis_edge(row) for row in view.edges.itertuples(index=False)]
    net.node_ids = [node["id"] for node in net.nodes]
    net.options = _vis_options(physics, len(net.nodes), len(net.edges))
    html = _render_template(net, physics)
    html = _EMPTY_HEADING.sub("", strip_external_references(html))
    html = _install_hooks(html, physics=physics, select_callback=select_callback)
    remaining = _remote_references(html)
    if remaining:
        raise TwinError(
            f"the map HTML still references remote resources ({'; '.join(remaining[:3])}); "
            "the installed pyvis template is not the 0.3.2 one this code strips; install pyvis 0.3.2"
        )
    return html


def _install_hooks(html: str, *, physics: bool, select_callback: bool) -> str:
    """Add the ready and click hooks to a page rendered from pyvis's template."""
    if _CONSTRUCT not in html or "<body>" not in html:
        raise TwinError(
            "the pyvis template has no 'network = new vis.Network(container, data, options);' statement or no <body>; "
            "the map hooks need the template of pyvis 0.3.2; install pyvis 0.3.2"
        )
    script = _HOOK_SCRIPT % {
        "physics": "true" if physics else "false",
        "send": "true" if select_callback else "false",
        "type": json.dumps(SELECT_MESSAGE_TYPE),
    }
    html = html.replace("<body>", "<body>" + script, 1)
    return html.replace(_CONSTRUCT, _CONSTRUCT_HOOKED, 1)


def _render_template(net, physics: bool) -> str:
    """Render pyvis's template like ``Network.generate_html`` but never with its link tooltips.

    pyvis switches to a popup that sets ``innerHTML`` from the title when
    any title contains "href". A host name containing "href" would then be
    parsed as HTML. vis-network's own tooltip sets ``innerText``.
    """
    template = net.templateEnv.get_template(net.path)
    nodes, edges, heading, height, width, options = net.get_network_data()
    return template.render(
        height=height, width=width, nodes=nodes, edges=edges, heading=heading, options=options,
        physics_enabled=physics, use_DOT=False, dot_lang="", widget=False, bgcolor=net.bgcolor, conf=False,
        tooltip_link=False, neighborhood_highlight=False, select_menu=False, filter_menu=False, notebook=False,
        cdn_resources=net.cdn_resources,
    )


def label_font_sizes(nodes: pd.DataFrame, viewport: tuple[float, float] = FIT_VIEWPORT_PX) -> dict[str, float]:
    """Return the label font size (canvas units) per level, so labels stay readable when the view is fitted.

    vis-network scales fonts with the zoom, so a wide view fitted into
    ``viewport`` (width, height in px) draws its labels small. Site, building,
    segment and class labels grow until they are :data:`MIN_SCREEN_FONT_PX`
    on screen at that fit, by at most :data:`LABEL_FONT_SCALE_MAX` times
    :data:`FONT_SIZE`. Other levels keep :data:`FONT_SIZE`. When ``nodes``
    has a ``font_size`` column (every :func:`build_view` result does), no
    level grows past the font its layout reserved room for.
    """
    if nodes.empty:
        return {level: float(size) for level, size in FONT_SIZE.items()}
    sizes = _fit_fonts(nodes["x"].to_numpy(dtype=float), nodes["y"].to_numpy(dtype=float), nodes["size"].to_numpy(dtype=float), viewport)
    if "font_size" in nodes:
        reserved = nodes.groupby("level")["font_size"].min()
        for level, font in reserved.items():
            if level in sizes and font == font:
                sizes[level] = min(sizes[level], float(font))
    return sizes


def _vis_node(row, font_size: float) -> dict:
    border = HIGHLIGHT_BORDER if row.highlighted else _darker(row.color)
    return {
        "id": str(row.id),
        "label": str(row.label),
        "title": str(row.title),
        "x": float(row.x),
        "y": float(row.y),
        "size": float(row.size),
        "shape": str(row.shape),
        "color": {
            "background": row.color,
            "border": border,
            "highlight": {"background": row.color, "border": "#000000"},
            "hover": {"background": row.color, "border": "#000000"},
        },
        # A border at most a quarter of the radius, so a small highlighted node
        # keeps its own colour inside the red ring.
        "borderWidth": max(1.5, min(4.0, float(row.size) / 4)) if row.highlighted else 1,
        "font": {"size": font_size},
    }


def _vis_edge(row) -> dict:
    edge = {
        "from": str(row.src),
        "to": str(row.dst),
        "width": float(row.width),
        "color": {"color": row.color, "highlight": row.color, "hover": row.color},
        "dashes": bool(row.dashes),
    }
    if row.title:
        edge["title"] = str(row.title)
    if row.kind == "link":
        edge["arrows"] = {"to": {"enabled": False}}
        edge["smooth"] = False
    else:
        edge["arrows"] = "to"
        # Curving clockwise keeps the two directions between one pair apart.
        edge["smooth"] = {"enabled": True, "type": "curvedCW", "roundness": 0.12}
    return edge


def _darker(colour: str) -> str:
    value = int(colour.lstrip("#"), 16)
    r, g, b = (value >> 16) & 255, (value >> 8) & 255, value & 255
    return "#%02x%02x%02x" % (int(r * 0.7), int(g * 0.7), int(b * 0.7))


def _vis_options(physics: bool, n_nodes: int, n_edges: int) -> dict:
    # Redrawing thousands of edges while dragging or zooming is what makes a
    # large canvas sluggish; vis-network can hide them during the gesture.
    many_edges = n_edges > 1000
    return {
        "autoResize": True,
        "layout": {"improvedLayout": False, "randomSeed": 1},
        "physics": {
            "enabled": bool(physics),
            "stabilization": {"enabled": bool(physics), "iterations": 200, "fit": True},
        },
        "interaction": {
            "hover": True,
            "tooltipDelay": 120,
            "hideEdgesOnDrag": many_edges,
            "hideEdgesOnZoom": many_edges,
            "navigationButtons": False,
            "keyboard": False,
            "multiselect": False,
        },
        "nodes": {
            "borderWidth": 1,
            "font": {"face": "sans-serif", "color": "#212121", "strokeWidth": 3, "strokeColor": "#ffffff"},
            "scaling": {"label": {"enabled": False, "drawThreshold": LABEL_DRAW_THRESHOLD}},
        },
        "edges": {"selectionWidth": 2, "hoverWidth": 1.5},
    }
