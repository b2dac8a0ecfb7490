"""Attack paths page: k shortest paths from entry points to targets, drawn on the map, with choke points.

The minimum-cut rows of the choke points become recommended deny rules,
which a button carries to the simulation page.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd
import streamlit as st

from twin.app import data
from twin.app.widgets import (
    show_table,
    device_url,
    display_frame,
    finding_table,
    parse_selector_lines,
    plural,
    require_context,
    selector_text,
    show_error,
)

__all__ = [
    "DEFAULT_DRAWN_PATHS",
    "STATE_CARRY_RULES",
    "SIMULATION_PAGE",
    "render",
    "paths_table",
    "recommended_rules",
    "already_denied",
]

# Paths drawn on the map when the page opens (count, default 10): the cheapest ones.
DEFAULT_DRAWN_PATHS = 10

# Session-state key holding deny rules carried to the simulation page (list of rule mappings).
STATE_CARRY_RULES = "simulation-carried-rules"

# Page file of the simulation page, relative to this folder's parent.
SIMULATION_PAGE = "simulation.py"

MODES = {"observed": "Observed (recorded communications)", "permitted": "Permitted (what the policy allows)"}

_MIN_CUT = re.compile(r"^add deny rule from segment:(?P<src>\S+) to segment:(?P<dst>\S+) for (?P<services>.+)$")


def paths_table(paths: pd.DataFrame, view: pd.DataFrame) -> pd.DataFrame:
    """Return one row per path with the entry's and target's label and IP address.

    An entry that is not a device (an External address) is its own IP address.
    """
    ip_of = dict(zip(view["device_id"], view["ip"]))
    label_of = dict(zip(view["device_id"], view["label"]))
    return pd.DataFrame(
        {
            "path_id": paths["path_id"].to_numpy(),
            "mode": paths["mode"].to_numpy(),
            "entry": [label_of.get(e, e) for e in paths["entry_id"]],
            "entry_ip": [ip_of.get(e, e if e not in label_of else None) for e in paths["entry_id"]],
            "target": [label_of.get(t, t) for t in paths["target_id"]],
            "target_ip": [ip_of.get(t) for t in paths["target_id"]],
            "target_class": paths["target_class"].to_numpy(),
            "hops": paths["hops"].to_numpy(),
            "cost": paths["cost"].to_numpy(),
            "path": [" -> ".join(str(label_of.get(n, n)) for n in p) for p in paths["path"]],
            "severity": paths["severity"].to_numpy(),
            "entry_id": [device_url(e) if e in label_of else None for e in paths["entry_id"]],
            "target_id": [device_url(t) for t in paths["target_id"]],
        }
    )


def recommended_rules(choke: pd.DataFrame) -> tuple[list[dict], list[str]]:
    """Turn the minimum-cut rows of a choke-point table into deny rules.

    Returns the rules (mappings as site.yaml writes them) and a note for
    each row that cannot be written as a rule (a device without a segment
    has no selector).

    Examples
    --------
    >>> rows = pd.DataFrame({"kind": ["min_cut_rule"], "item": ["a-it -> a-pumps"],
    ...                      "recommendation": ["add deny rule from segment:a-it to segment:a-pumps for tcp/23"]})
    >>> recommended_rules(rows)[0][0]["from"], recommended_rules(rows)[0][0]["services"]
    ('segment:a-it', ['tcp/23'])
    """
    rules: list[dict] = []
    notes: list[str] = []
    if choke.empty:
        return rules, notes
    for item, text in zip(choke.loc[choke["kind"] == "min_cut_rule", "item"], choke.loc[choke["kind"] == "min_cut_rule", "recommendation"]):
        src_seg, _, dst_seg = str(item).partition(" -> ")
        match = _MIN_CUT.match(str(text))
        if "no segment" in (src_seg, dst_seg) or match is None and src_seg != "internet":
            notes.append(f"{item}: no rule written, because a device on these edges has no segment")
            continue
        services = ["any"]
        if match and "/" in match["services"]:
            services = [s.strip() for s in match["services"].split(",") if "/" in s]
        rules.append(
            {
                "name": f"deny-{src_seg}-to-{dst_seg}",
                "action": "deny",
                "from": "internet" if src_seg == "internet" else f"segment:{src_seg}",
                "to": f"segment:{dst_seg}",
                "services": services,
                "description": f"Recommended by the attack-path minimum cut ({item}).",
            }
        )
    return rules, notes


def already_denied(rules: list[dict], twin, site) -> list[list[str]]:
    """Return, per recommended rule, the current policy's rules that already deny every recorded communication it matches.

    A rule matches the communications from its ``from`` segment (or any
    External address, for ``internet``) to its ``to`` segment on one of its
    services. The list is empty when the rule matches no recorded
    communication or when the current policy allows at least one of them:
    then the rule changes what the policy decides. A non-empty list means
    these flows are segment violations that the firewalls do not enforce.
    """
    from twin.model.site import ServiceSpec
    from twin.policy.engine import PolicyEngine

    comm = twin.communications
    if comm.empty or not rules:
        return [[] for _ in rules]
    segment_of = dict(zip(twin.devices["device_id"].astype(str), twin.devices["segment_id"]))
    src_segment = comm["src_id"].astype(str).map(segment_of).to_numpy(dtype=object)
    dst_segment = comm["dst_id"].astype(str).map(segment_of).to_numpy(dtype=object)
    external_src = (comm["src_kind"].astype(str) != "device").to_numpy()
    protos = comm["proto"].astype(str).to_numpy(dtype=object)
    ports = pd.to_numeric(comm["dst_port"], errors="coerce").fillna(-1).astype(int).to_numpy()
    engine = PolicyEngine(site)
    out: list[list[str]] = []
    for rule in rules:
        source = str(rule["from"])
        src_ok = external_src if source == "internet" else (src_segment == source.removeprefix("segment:"))
        mask = src_ok & (dst_segment == str(rule["to"]).removeprefix("segment:"))
        specs = [spec for text in rule.get("services") or ["any"] for spec in ServiceSpec.parse_many(text)]
        mask &= np.fromiter((any(spec.matches(p, port) for spec in specs) for p, port in zip(protos, ports)), dtype=bool, count=len(protos))
        if not mask.any():
            out.append([])
            continue
        decided = engine.decide(comm[mask], twin)
        denied = (decided["action"] == "deny").all()
        out.append(sorted(set(decided["rule"].astype(str))) if denied else [])
    return out


def _selector_defaults(site) -> tuple[str, str]:
    entries = "\n".join(selector_text(s) for s in site.attack_paths.entry_points)
    targets = "\n".join(selector_text(s) for s in site.attack_paths.targets)
    return entries, targets


def render() -> None:
    """Draw the attack paths page."""
    st.title("Attack paths")
    ctx = require_context()
    site = ctx.site()
    entries_default, targets_default = _selector_defaults(site)
    st.caption(
        "Entry points and targets default to the site's attack_paths section. Write one selector per line: "
        "any, internet, zone:guest, segment:a-it, class:infusion_pump, criticality:life_critical, cidr:10.0.0.0/8, "
        "or a device id, IP address or host name."
    )
    cols = st.columns(2)
    entries_text = cols[0].text_area("Entry points", value=entries_default, key="paths-entries", height=110)
    targets_text = cols[1].text_area("Targets", value=targets_default, key="paths-targets", height=110)
    cols = st.columns(3)
    mode = cols[0].radio("Mode", list(MODES), format_func=MODES.get, key="paths-mode")
    k = int(cols[1].number_input("k shortest paths per pair", min_value=1, max_value=50, value=int(site.attack_paths.k), key="paths-k"))
    max_hops = int(cols[2].number_input("Max hops", min_value=1, max_value=12, value=int(site.attack_paths.max_hops), key="paths-hops"))

    entries, entry_errors = parse_selector_lines(entries_text)
    targets, target_errors = parse_selector_lines(targets_text)
    for message in entry_errors:
        st.error(f"Entry points, {message}")
    for message in target_errors:
        st.error(f"Targets, {message}")
    if entry_errors or target_errors:
        return
    if not entries or not targets:
        st.info("Give at least one entry point and one target.")
        return

    params = (mode, tuple(entries), tuple(targets), k, max_hops)
    try:
        paths = data.load_attack_paths(ctx.path, ctx.run_id, *params)
        choke = data.load_choke_points(ctx.path, ctx.run_id, *params)
    except Exception as exc:  # noqa: BLE001 - shown to the user
        show_error("The attack-path search", exc)
        return
    for warning in paths.attrs.get("warnings", []):
        st.warning(warning)

    pairs = paths[["entry_id", "target_id"]].drop_duplicates() if not paths.empty else paths
    cols = st.columns(3)
    cols[0].metric("Paths", len(paths))
    cols[1].metric("Entry-target pairs", len(pairs))
    cols[2].metric("Shortest path (hops)", int(paths["hops"].min()) if not paths.empty else "-")
    if paths.empty:
        st.success("No path within the bounds from these entry points to these targets.")
        return

    view = data.load_device_view(ctx.path, ctx.run_id)
    table = paths_table(paths, view)
    st.subheader("Shortest paths")
    link = {c: st.column_config.LinkColumn(c, display_text=r"device=(.*)$") for c in ("entry_id", "target_id")}
    show_table(display_frame(table), hide_index=True, column_config=link, key="paths-table")

    st.subheader("On the map")
    # The key follows the search, so a new mode or new selectors start from the top paths again
    # instead of keeping a selection of path ids that no longer exist.
    search_key = hashlib.sha256(repr(params).encode("utf-8")).hexdigest()[:12]
    drawn = st.multiselect(
        "Paths drawn",
        paths["path_id"].tolist(),
        default=paths["path_id"].head(DEFAULT_DRAWN_PATHS).tolist(),
        key=f"paths-drawn-{search_key}",
        help="Orange edges. The devices on drawn paths are expanded on the map.",
    )
    device_ids = set(view["device_id"])
    focus = sorted({node for p in paths.loc[paths["path_id"].isin(drawn), "path"] for node in p if node in device_ids})
    try:
        page_html, legend, truncated, _, n_nodes, n_edges = data.load_map_html(
            ctx.path, ctx.run_id, (), "segment", "criticality", False, tuple(drawn), mode, params, tuple(focus)
        )
        st.iframe(page_html, height=740)
        st.caption(f"{plural(len(drawn), 'path')} drawn; {plural(n_nodes, 'node')} and {plural(n_edges, 'edge')} on the map.")
    except Exception as exc:  # noqa: BLE001 - shown to the user
        show_error("Drawing the paths on the map", exc)

    st.subheader("Choke points")
    if choke.empty:
        st.caption("No choke point.")
    else:
        finding_table(choke, key="paths-choke", csv_name="choke_points.csv", filters=False)

    st.subheader("Recommended deny rules")
    rules, notes = recommended_rules(choke)
    for note in notes:
        st.caption(note)
    if not rules:
        st.caption("No deny rule recommended.")
        return
    try:
        denied_by = already_denied(rules, ctx.twin(), site)
    except Exception as exc:  # noqa: BLE001 - shown to the user
        show_error("Checking the recommended rules against the current policy", exc)
        denied_by = [[] for _ in rules]
    status = [
        f"already denied by rule {', '.join(names)}: enforce it on the firewall" if names else "new: the current policy allows these flows"
        for names in denied_by
    ]
    show_table(
        pd.DataFrame(
            [{**r, "services": ", ".join(r["services"]), "status": text} for r, text in zip(rules, status)],
            columns=["name", "action", "from", "to", "services", "status", "description"],
        ),
        hide_index=True,
        key="paths-rules",
    )
    new_rules = [rule for rule, names in zip(rules, denied_by) if not names]
    enforced = len(rules) - len(new_rules)
    if enforced:
        st.warning(
            f"{plural(enforced, 'recommended rule')} only {'repeats' if enforced == 1 else 'repeat'} what the current policy already denies: "
            "these paths exist because the firewalls do not enforce the policy, and adding a rule changes nothing."
        )
    if not new_rules:
        st.caption("Every recommended rule is already in the current policy, so there is nothing to try in the simulator.")
        return
    label = f"Try {'this deny rule' if len(new_rules) == 1 else f'these {len(new_rules)} deny rules'} in the simulator"
    if st.button(label, type="primary", key="paths-to-simulator"):
        st.session_state[STATE_CARRY_RULES] = new_rules
        st.switch_page(_page_path(SIMULATION_PAGE))


def _page_path(file: str):
    from twin.app.main import PAGES_DIR

    return PAGES_DIR / file


if __name__ == "__main__":
    render()
