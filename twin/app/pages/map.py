"""Map page: the hierarchical hospital map (site, buildings, segments, classes, devices) with overlays."""

from __future__ import annotations

import html
import re

import streamlit as st

from twin.app import data
from twin.app.mapview import LEGEND_BORDER_LABEL, MAX_DEVICES_EXPANDED
from twin.app.widgets import plural, require_context, show_error

__all__ = ["MAP_HEIGHT_PX", "COLOUR_CHOICES", "SIZE_CHOICES", "render", "legend_html"]

# Height of the map frame, CSS pixels (default 720).
MAP_HEIGHT_PX = 720

COLOUR_CHOICES = {"segment": "Segment", "class": "Device class"}
SIZE_CHOICES = {"criticality": "Criticality", "risk": "Risk (findings)"}
ATTACK_MODES = {"both": "Observed and permitted", "observed": "Observed", "permitted": "Permitted"}

STATE_EXPAND = "map-expand"

# Meaning of the colours, shown above the legend.
COLOUR_NOTES = {
    "segment": "Colour: one colour per segment (up to 36 distinct colours, in building order); light grey: devices in no segment.",
    "class": (
        "Colour: device class, by role (medical in reds and oranges, IT in blues, network gear in greys, building systems "
        "in greens, IoT in purple). A collapsed segment takes the colour of its most common class: expand it to see every class."
    ),
}

_COLOUR = re.compile(r"#[0-9A-Fa-f]{3,8}|rgba?\([0-9., ]+\)|[a-z]+")


def legend_html(legend: list[tuple[str, str]]) -> str:
    """Return the legend as HTML: one coloured swatch and escaped label per entry."""
    items = []
    for label, colour in legend:
        swatch = colour if _COLOUR.fullmatch(str(colour)) else "#999999"
        # The border entry is drawn as a white square with that border, like the nodes it explains.
        fill = f"background:#ffffff;border:3px solid {swatch};box-sizing:border-box" if label == LEGEND_BORDER_LABEL else f"background:{swatch}"
        items.append(
            f'<span style="display:inline-block;margin:0 12px 4px 0;font-size:0.85rem">'
            f'<span style="display:inline-block;width:0.8em;height:0.8em;{fill};'
            f'border-radius:2px;margin-right:4px;vertical-align:middle"></span>{html.escape(str(label))}</span>'
        )
    return "<div>" + "".join(items) + "</div>"


def render() -> None:
    """Draw the map page."""
    st.title("Map")
    ctx = require_context()
    st.caption(
        "Site, buildings and segments with their device counts. Expand a segment to see its device classes, "
        "and a class to see its devices. Edges are communications, rolled up to the nodes drawn."
    )
    controls = st.container()
    cols = controls.columns([1, 1, 1, 1])
    colour_by = cols[0].radio("Colour by", list(COLOUR_CHOICES), format_func=COLOUR_CHOICES.get, horizontal=True, key="map-colour")
    size_by = cols[1].radio("Size by", list(SIZE_CHOICES), format_func=SIZE_CHOICES.get, horizontal=True, key="map-size")
    show_violations = cols[2].toggle("Segment violations", value=True, key="map-violations", help="Red edges: communications the policy denies.")
    show_paths = cols[3].toggle("Attack paths", value=False, key="map-paths", help="Orange edges: the site's attack paths.")
    attack_mode = "both"
    if show_paths:
        attack_mode = cols[3].selectbox("Attack-path mode", list(ATTACK_MODES), format_func=ATTACK_MODES.get, key="map-path-mode")
    expand = tuple(st.session_state.get(STATE_EXPAND, ()))
    try:
        page_html, legend, truncated, expandable, n_nodes, n_edges = data.load_map_html(
            ctx.path,
            ctx.run_id,
            expand,
            colour_by,
            size_by,
            show_violations,
            () if show_paths else None,
            attack_mode,
            height=f"{MAP_HEIGHT_PX}px",
        )
    except Exception as exc:  # noqa: BLE001 - any failure is shown, not raised
        show_error("Drawing the map", exc)
        return
    options = sorted(set(expandable) | set(expand))
    controls.multiselect(
        "Expand",
        options,
        key=STATE_EXPAND,
        help="Segments expand to device classes, classes to devices. Pick a node id; remove it to collapse.",
    )
    st.iframe(page_html, height=MAP_HEIGHT_PX + 20)
    st.caption(f"{n_nodes} nodes and {n_edges} edges drawn.")
    st.caption(COLOUR_NOTES[colour_by])
    if legend:
        st.html(legend_html(legend))
    for node_id, hidden in sorted(truncated.items()):
        st.caption(
            f"{node_id}: {plural(hidden, 'more device')} {'is' if hidden == 1 else 'are'} not drawn; one 'more' node stands for them. "
            f"Pick more:{node_id} in the Expand box to draw up to {MAX_DEVICES_EXPANDED:,} devices of the class, "
            "or search one on the Device page."
        )
    # NOTE: clicks on the map are posted to the parent window ("twin-map-select"), but a plain
    # st.iframe cannot send them back to Python; the Expand box is how a node is expanded.


if __name__ == "__main__":
    render()
