"""Findings page: misplaced devices, segment violations, external exposure and flat segments."""

from __future__ import annotations

import streamlit as st

from twin.app import data
from twin.app.widgets import finding_table, require_context, show_error, with_endpoint_classes
from twin.report.writers import csv_filename

__all__ = ["FINDING_TABS", "render"]

# Query name -> tab title, in tab order.
FINDING_TABS = {
    "misplaced_devices": "Misplaced devices",
    "segment_violations": "Segment violations",
    "external_exposure": "External exposure",
    "flat_segments": "Flat segments",
}

_DESCRIPTIONS = {
    "misplaced_devices": "Devices whose class does not belong in the segment they sit in.",
    "segment_violations": "Observed communications that the site policy denies, with the deciding rule and the class of each device.",
    "external_exposure": "Communications with addresses outside the site and its external allowlist.",
    "flat_segments": "Segments that hold both medical devices and general IT devices.",
}


def render() -> None:
    """Draw the findings page."""
    st.title("Findings")
    ctx = require_context()
    try:
        findings = ctx.findings()
        view = data.load_device_view(ctx.path, ctx.run_id)
    except Exception as exc:  # noqa: BLE001 - shown to the user
        show_error("Running the query catalogue", exc)
        return
    cols = st.columns(len(FINDING_TABS))
    for col, (name, title) in zip(cols, FINDING_TABS.items()):
        col.metric(title, len(findings.get(name, ())))
    tabs = st.tabs([f"{title} ({len(findings.get(name, ()))})" for name, title in FINDING_TABS.items()])
    for tab, name in zip(tabs, FINDING_TABS):
        with tab:
            st.caption(_DESCRIPTIONS[name])
            frame = findings.get(name)
            if frame is None or frame.empty:
                st.success("No findings.")
                continue
            # Communications carry device ids only; their classes make the Device class filter work here too.
            # The CSV keeps the finding's own columns, as twin report writes them.
            shown = with_endpoint_classes(frame, view)
            added = [column for column in shown.columns if column not in frame.columns]
            finding_table(shown, key=f"findings-{name}", csv_name=csv_filename(name), extra_columns=added)


if __name__ == "__main__":
    render()
