"""Biomed dashboard: clinical devices by department and location, criticality, misplaced ones, paths to them, CMMS gaps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from twin.app import data
from twin.app.widgets import display_frame, finding_table, require_context, show_error, show_table
from twin.model.twin import Twin

__all__ = ["INVENTORY_SOURCE", "CRITICALITY_ORDER", "clinical_devices", "inventory_imported", "render"]

# Source name the inventory (CMMS export) importer records on the devices it saw.
INVENTORY_SOURCE = "inventory"

CRITICALITY_ORDER = ("life_critical", "high", "medium", "low")


def clinical_devices(twin: Twin, view: pd.DataFrame) -> pd.DataFrame:
    """Return the devices whose role is medical, with department, building, location and CMMS presence.

    ``building`` is the inventory's building, else the building of the
    device's segment; ``in_cmms`` is true when the inventory source saw the device.
    """
    medical = view[view["role"] == "medical"]
    devices = twin.devices.set_index(twin.devices["device_id"].astype(str)).reindex(medical["device_id"])
    segment_building = {}
    if not twin.segments.empty and "building" in twin.segments:
        segment_building = dict(zip(twin.segments["segment_id"].astype(str), twin.segments["building"]))
    building = [
        b if isinstance(b, str) and b else segment_building.get(s) or "(unknown)"
        for b, s in zip(devices["building"], medical["segment_id"])
    ]
    sources = devices["sources"].to_numpy()
    return pd.DataFrame(
        {
            "device_id": medical["device_id"].to_numpy(),
            "label": medical["label"].to_numpy(),
            "ip": medical["ip"].to_numpy(),
            "device_class": medical["device_class"].to_numpy(),
            "criticality": medical["criticality"].to_numpy(),
            "segment_id": medical["segment_id"].to_numpy(),
            "department": [d if isinstance(d, str) and d else "(unknown)" for d in devices["department"]],
            "building": building,
            "location": [v if isinstance(v, str) else "" for v in devices["location"]],
            "asset_tag": devices["asset_tag"].to_numpy(),
            "in_cmms": [isinstance(s, (list, tuple, np.ndarray)) and INVENTORY_SOURCE in list(s) for s in sources],
            "sources": sources,
        }
    )


def inventory_imported(twin: Twin) -> bool:
    """Return True when at least one device has the inventory source, so the twin contains an inventory to compare with."""
    if twin.devices.empty or "sources" not in twin.devices:
        return False
    return any(isinstance(s, (list, tuple, np.ndarray)) and INVENTORY_SOURCE in list(s) for s in twin.devices["sources"])


def render() -> None:
    """Draw the biomed dashboard."""
    st.title("Biomed dashboard")
    ctx = require_context()
    try:
        twin = ctx.twin()
        findings = ctx.findings()
        view = data.load_device_view(ctx.path, ctx.run_id)
    except Exception as exc:  # noqa: BLE001 - shown to the user
        show_error("Loading the snapshot", exc)
        return
    clinical = clinical_devices(twin, view)
    ids = set(clinical["device_id"])
    misplaced = findings["misplaced_devices"]
    misplaced = misplaced[misplaced["device_id"].isin(ids)] if not misplaced.empty else misplaced
    paths = findings["attack_paths"]
    paths = paths[paths["target_id"].isin(ids)] if not paths.empty else paths
    missing = clinical[~clinical["in_cmms"]]

    cols = st.columns(4)
    cols[0].metric("Clinical devices", len(clinical))
    cols[1].metric("Misplaced clinical devices", len(misplaced))
    cols[2].metric("Attack paths reaching them", len(paths))
    cols[3].metric("Missing from the CMMS", len(missing))

    st.subheader("Criticality")
    counts = clinical["criticality"].value_counts()
    cols = st.columns(len(CRITICALITY_ORDER))
    for col, level in zip(cols, CRITICALITY_ORDER):
        col.metric(level.replace("_", " ").capitalize(), int(counts.get(level, 0)))

    st.subheader("By department and building")
    if clinical.empty:
        st.info("The twin has no clinical (medical) devices.")
    else:
        by_department = clinical.pivot_table(index="department", columns="building", values="device_id", aggfunc="count", fill_value=0)
        by_department["total"] = by_department.sum(axis=1)
        show_table(by_department.sort_values("total", ascending=False), key="biomed-departments")
        st.subheader("Clinical devices and their location")
        finding_table(clinical.drop(columns=["sources"]), key="biomed-devices", csv_name="clinical_devices.csv", noun="device")

    st.subheader("Misplaced clinical devices")
    if misplaced.empty:
        st.success("No clinical device sits in a segment it does not belong in.")
    else:
        finding_table(misplaced, key="biomed-misplaced", csv_name="misplaced_clinical_devices.csv", filters=False, noun="misplaced device")

    st.subheader("Attack paths reaching clinical devices")
    if paths.empty:
        st.success("No attack path reaches a clinical device.")
    else:
        targets = paths.groupby(["target_id", "mode"]).agg(paths=("path_id", "size"), min_hops=("hops", "min")).reset_index()
        labels = dict(zip(clinical["device_id"], clinical["label"]))
        targets.insert(1, "target", [labels.get(t, t) for t in targets["target_id"]])
        show_table(display_frame(targets), hide_index=True, key="biomed-path-targets")
        finding_table(paths, key="biomed-paths", csv_name="attack_paths_to_clinical_devices.csv", noun="attack path")

    st.subheader("Clinical devices missing from the CMMS inventory")
    st.caption("Medical devices the network sources saw but the asset inventory export does not list.")
    has_inventory = inventory_imported(twin)
    if not has_inventory:
        st.info(
            "No inventory file was imported: no device has the inventory source. Put the CMMS export "
            "(a CSV) in the site folder's inventory/ directory and build again to compare."
        )
    if clinical.empty:
        st.info("The twin has no clinical (medical) devices, so none can be missing from the CMMS inventory.")
    elif missing.empty:
        st.success("Every clinical device is in the CMMS inventory.")
    else:
        finding_table(missing.drop(columns=["in_cmms"]), key="biomed-missing", csv_name="clinical_devices_missing_from_cmms.csv", noun="device")


if __name__ == "__main__":
    render()
