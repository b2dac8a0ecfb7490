"""IT dashboard: segments, violations by rule and segment pair, external exposure, unmanaged devices, changes."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from twin.app import data
from twin.app.mapview import UNASSIGNED
from twin.app.widgets import display_frame, finding_table, require_context, show_error, show_table
from twin.model.twin import Twin

__all__ = ["ROLE_COLUMNS", "NO_SEGMENT", "render", "segment_summary", "violations_by_pair", "unmanaged_devices"]

# Device role -> column of the segment table counting it. The building-systems
# role gets its own name so it never overwrites the segment's building column.
ROLE_COLUMNS = {
    "medical": "medical",
    "it": "it",
    "network": "network",
    "building": "building_systems",
    "iot": "iot",
    "unknown": "unknown",
}

# Shown in place of a segment id for devices in no segment, the same name as on the map.
NO_SEGMENT = UNASSIGNED


def segment_summary(twin: Twin, view: pd.DataFrame, site) -> pd.DataFrame:
    """Return one row per segment: name, zone, building, trust, devices and devices per role.

    The role counts are the columns of :data:`ROLE_COLUMNS` (medical, it,
    network, building_systems, iot, unknown). Segments of the site
    configuration come first, in its order; segments known only to the twin
    follow, then :data:`NO_SEGMENT` for devices without one.
    """
    names = {s.id: s for s in site.segments}
    rows = []
    counts = view["segment_id"].fillna(NO_SEGMENT).value_counts()
    roles = view.assign(segment_id=view["segment_id"].fillna(NO_SEGMENT)).pivot_table(index="segment_id", columns="role", values="device_id", aggfunc="count", fill_value=0)
    known = list(names) + [s for s in twin.segments.get("segment_id", pd.Series(dtype=object)).astype(str) if s not in names]
    if NO_SEGMENT in counts.index:
        known.append(NO_SEGMENT)
    for seg_id in known:
        seg = names.get(seg_id)
        row = {
            "segment_id": seg_id,
            "name": seg.name if seg else "",
            "zone": seg.zone if seg else "",
            "building": (seg.building or "") if seg else "",
            "trust": seg.trust if seg else "",
            "devices": int(counts.get(seg_id, 0)),
        }
        for role, column in ROLE_COLUMNS.items():
            row[column] = int(roles.loc[seg_id, role]) if seg_id in roles.index and role in roles.columns else 0
        rows.append(row)
    return pd.DataFrame(rows)


def violations_by_pair(violations: pd.DataFrame) -> pd.DataFrame:
    """Return segment violations grouped by deciding rule and (source, destination) segment pair.

    Columns: rule, src_segment, dst_segment, violations (rows), flows (sum), sorted by violations.
    """
    columns = ["rule", "src_segment", "dst_segment", "violations", "flows"]
    if violations.empty:
        return pd.DataFrame(columns=columns)
    frame = violations.assign(
        src_segment=violations["src_segment"].astype(object).fillna(NO_SEGMENT),
        dst_segment=violations["dst_segment"].astype(object).fillna(NO_SEGMENT),
        flows=pd.to_numeric(violations["flows"], errors="coerce").fillna(0),
    )
    grouped = frame.groupby(["rule", "src_segment", "dst_segment"], dropna=False).agg(violations=("rule", "size"), flows=("flows", "sum")).reset_index()
    grouped["flows"] = grouped["flows"].astype("int64")
    return grouped.sort_values(["violations", "rule"], ascending=[False, True], kind="stable").reset_index(drop=True)[columns]


def unmanaged_devices(twin: Twin, view: pd.DataFrame) -> pd.DataFrame:
    """Return devices outside the asset inventory (``managed`` not true) or of unknown class, with the reason."""
    devices = twin.devices
    managed = devices["managed"].map(lambda v: v is True or v == 1 or v == "true") if "managed" in devices else pd.Series(False, index=devices.index)
    unknown = devices["device_class"].fillna("unknown").astype(str) == "unknown"
    hit = (~managed.to_numpy(dtype=bool)) | unknown.to_numpy()
    reasons = [
        "; ".join(r for r, flag in (("not in the asset inventory", not m), ("unknown class", u)) if flag)
        for m, u in zip(managed.to_numpy(dtype=bool)[hit], unknown.to_numpy()[hit])
    ]
    rows = view.set_index("device_id").reindex(devices["device_id"][hit].astype(str))
    return pd.DataFrame(
        {
            "device_id": rows.index.to_numpy(),
            "label": rows["label"].to_numpy(),
            "ip": rows["ip"].to_numpy(),
            "device_class": rows["device_class"].to_numpy(),
            "segment_id": rows["segment_id"].to_numpy(),
            "sources": devices["sources"][hit].to_numpy(),
            "reason": reasons,
        }
    )


def _changes(ctx: data.AppContext) -> None:
    st.subheader("Change since the previous snapshot")
    if ctx.is_neo4j:
        st.info(
            "The Neo4j store keeps only the latest twin of each site, with no earlier snapshots, so there is "
            "no change to show. Build into a workspace (`twin build SITE_DIR -w WORKSPACE`) and use "
            "`twin report --since last` or `twin app -w WORKSPACE` to compare builds."
        )
        return
    if ctx.previous_run_id is None:
        st.info("This is the first snapshot of the site; build it again (`twin build SITE_DIR`) to see what changed.")
        return
    try:
        changes = data.load_changes(ctx.path, ctx.run_id, ctx.previous_run_id)
    except Exception as exc:  # noqa: BLE001 - shown to the user
        show_error("Comparing snapshots", exc)
        return
    st.caption(f"Compared with snapshot {ctx.previous_run_id}.")
    new_total = sum(len(f) for f in changes["findings_new"].values())
    resolved_total = sum(len(f) for f in changes["findings_resolved"].values())
    cols = st.columns(5)
    cols[0].metric("New findings", new_total)
    cols[1].metric("Resolved findings", resolved_total)
    cols[2].metric("Devices new", len(changes["devices_new"]))
    cols[3].metric("Devices gone", len(changes["devices_gone"]))
    cols[4].metric("Devices changed", changes["devices_changed"]["device_id"].nunique() if len(changes["devices_changed"]) else 0)
    per_query = pd.DataFrame(
        [
            {"query": name, "new": len(changes["findings_new"].get(name, ())), "resolved": len(changes["findings_resolved"].get(name, ())), "still open": len(changes["findings_open"].get(name, ()))}
            for name in dict.fromkeys([*changes["findings_new"], *changes["findings_resolved"], *changes["findings_open"]])
        ]
    )
    if not per_query.empty:
        show_table(per_query, hide_index=True, key="it-changes-per-query")
    for title, key in (("Devices new", "devices_new"), ("Devices gone", "devices_gone"), ("Devices changed", "devices_changed")):
        frame = changes[key]
        if len(frame):
            st.markdown(f"**{title}** ({len(frame)})")
            show_table(display_frame(frame), hide_index=True, key=f"it-{key}")


def render() -> None:
    """Draw the IT dashboard."""
    st.title("IT dashboard")
    ctx = require_context()
    try:
        twin = ctx.twin()
        site = ctx.site()
        findings = ctx.findings()
        view = data.load_device_view(ctx.path, ctx.run_id)
    except Exception as exc:  # noqa: BLE001 - shown to the user
        show_error("Loading the snapshot", exc)
        return
    unmanaged = unmanaged_devices(twin, view)
    cols = st.columns(5)
    cols[0].metric("Devices", len(twin.devices))
    cols[1].metric("Segments", len(site.segments))
    cols[2].metric("Segment violations", len(findings["segment_violations"]))
    cols[3].metric("External exposure", len(findings["external_exposure"]))
    cols[4].metric("Unmanaged devices", len(unmanaged))

    st.subheader("Segments")
    show_table(segment_summary(twin, view, site), hide_index=True, key="it-segments")

    st.subheader("Violations by rule and segment pair")
    pairs = violations_by_pair(findings["segment_violations"])
    if pairs.empty:
        st.success("No segment violations.")
    else:
        show_table(pairs, hide_index=True, key="it-violation-pairs")

    st.subheader("External exposure")
    if findings["external_exposure"].empty:
        st.success("No external exposure.")
    else:
        finding_table(findings["external_exposure"], key="it-exposure", csv_name="external_exposure.csv", filters=False)

    st.subheader("Unmanaged devices")
    st.caption("Devices that are not in the asset inventory (CMMS) or whose class the twin could not determine.")
    if unmanaged.empty:
        st.success("Every device is in the inventory and classified.")
    else:
        finding_table(unmanaged, key="it-unmanaged", csv_name="unmanaged_devices.csv", noun="device")

    _changes(ctx)


if __name__ == "__main__":
    render()
