"""Device page: everything the twin stores about one device, each fact with its source and evidence.

Other pages link here with ``?device=<device id>``; the search box takes a
device id, IP address, MAC address, host name, asset tag or serial number.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from twin.api import DeviceDetail
from twin.app import data
from twin.app.mapview import UNASSIGNED
from twin.app.widgets import device_url, display_frame, require_context, show_error, show_table
from twin.exceptions import DeviceNotFound
from twin.model.observation import normalise_hostname, normalise_ip, normalise_mac
from twin.report.cells import display_text

__all__ = [
    "QUERY_PARAM",
    "MAX_MATCHES_LISTED",
    "render",
    "facts_table",
    "evidence_table",
    "rule_source",
    "deciding_evidence",
    "matching_devices",
    "flows_table",
]

QUERY_PARAM = "device"
STATE_SEARCH = "device-search"
STATE_PARAM_SEEN = "device-param-seen"

# Device properties shown under Identity, in this order; the rest follow.
IDENTITY_ORDER = (
    "device_id",
    "hostname",
    "ips",
    "macs",
    "device_class",
    "role",
    "criticality",
    "confidence",
    "segment_id",
    "vendor",
    "model",
    "firmware",
    "os",
    "serial",
    "asset_tag",
    "department",
    "location",
    "building",
    "managed",
)

# Sources that give each property when no "property source" evidence names one.
_TABLE_SOURCES = {
    "ips": "resolver",
    "macs": "resolver",
    "segment_id": "segments (site.yaml prefixes and VLANs)",
    "criticality": "site.yaml criticality rules (or their default)",
}

# Classification rule -> the property whose "property source" names where its value came from.
_RULE_PROPERTY = {
    "inventory device type": "inventory_type",
    "model name": "model",
    "site model pattern": "model",
    "sysDescr": "sys_descr",
    "host-name pattern": "hostname",
    "site host-name pattern": "hostname",
    "vendor": "vendor",
}
# Classification rule -> its source, for rules whose value no property source records.
_RULE_SOURCE = {
    "inventory device type": "inventory",
    "sysDescr": "snmp",
    "LLDP/CDP capabilities": "lldp/cdp neighbours",
    "nmap OS class": "nmap",
    "listening port": "nmap services or flows",
}

# Most matches a search lists as links when it finds several devices (count, default 50).
MAX_MATCHES_LISTED = 50


def _property_sources(device: dict) -> dict[str, str]:
    by_property: dict[str, str] = {}
    for item in device.get("class_evidence") or []:
        if item.get("rule") == "property source" and isinstance(item.get("value"), dict):
            by_property.update({str(k): str(v) for k, v in item["value"].items()})
    return by_property


def rule_source(rule: str, property_sources: dict[str, str]) -> str:
    """Return the source of a classification rule's evidence, such as ``inventory`` for "inventory device type".

    >>> rule_source("model name", {"model": "snmp"})
    'snmp'
    >>> rule_source("nmap OS class", {})
    'nmap'
    """
    prop = _RULE_PROPERTY.get(rule)
    if prop and prop in property_sources:
        return property_sources[prop]
    return _RULE_SOURCE.get(rule) or (f"{prop} (resolver)" if prop else "resolver")


def deciding_evidence(device: dict) -> dict | None:
    """Return the class evidence that decided the device's class: the heaviest proposal for that class, or None."""
    proposals = [item for item in device.get("class_evidence") or [] if "class" in item and item.get("class") == device.get("device_class")]
    if not proposals:
        return None
    return max(proposals, key=lambda item: float(item.get("weight") or 0.0))


def facts_table(device: dict) -> pd.DataFrame:
    """Return the device's properties as rows of property, value and source.

    The source of a property comes from the ``property source`` entry of
    ``class_evidence``, which names the source of each inventory or SNMP
    value. ``device_class``, ``role`` and ``confidence`` name the
    classification rule that decided the class and its source. Other
    properties without a recorded source show all the device's sources.
    """
    by_property = _property_sources(device)
    decided = deciding_evidence(device)
    if decided is not None:
        rule = str(decided.get("rule"))
        by_class = f"classification rule '{rule}' ({rule_source(rule, by_property)})"
        for key in ("device_class", "confidence"):
            by_property.setdefault(key, by_class)
        by_property.setdefault("role", f"from the device class, {by_class}")
    sources = display_text(device.get("sources"))
    keys = [k for k in IDENTITY_ORDER if k in device] + [
        k for k in device if k not in IDENTITY_ORDER and k not in ("class_evidence", "run_id")
    ]
    rows = []
    for key in keys:
        text = display_text(device.get(key), key)
        if not text:
            continue
        rows.append({"property": key, "value": text, "source": by_property.get(key) or _TABLE_SOURCES.get(key) or sources})
    return pd.DataFrame(rows, columns=["property", "value", "source"])


def evidence_table(device: dict) -> pd.DataFrame:
    """Return the classification evidence: class, weight, rule, the value the rule matched, its source, and which row decided."""
    by_property = _property_sources(device)
    decided = deciding_evidence(device)
    rows = [
        {
            "class": str(item["class"]),
            "weight": item.get("weight"),
            "rule": str(item.get("rule")),
            "value": display_text(item.get("value")),
            "source": rule_source(str(item.get("rule")), by_property),
            "decided": item is decided,
        }
        for item in device.get("class_evidence") or []
        if "class" in item
    ]
    return pd.DataFrame(rows, columns=["class", "weight", "rule", "value", "source", "decided"])


def matching_devices(devices: pd.DataFrame, query: str) -> pd.DataFrame:
    """Return every device a search matches, by the rules of :meth:`twin.api.Workspace.find_device`.

    The device id, a MAC or IP address among the device's, the asset tag
    (any case) or the serial number match. The host name (or its first
    label) is tried only when nothing else matched.
    """
    text = str(query).strip()
    if devices.empty or not text:
        return devices.iloc[0:0]
    mac, ip, name = normalise_mac(text), normalise_ip(text), normalise_hostname(text)
    hit = devices["device_id"].astype(str) == text
    if mac:
        hit |= devices["macs"].map(lambda macs: isinstance(macs, (list, tuple, np.ndarray)) and mac in list(macs))
    if ip:
        hit |= devices["ips"].map(lambda ips: isinstance(ips, (list, tuple, np.ndarray)) and ip in list(ips))
    if "asset_tag" in devices:
        hit |= devices["asset_tag"].map(lambda tag: isinstance(tag, str) and tag.lower() == text.lower())
    if "serial" in devices:
        hit |= devices["serial"].map(lambda serial: isinstance(serial, str) and serial == text.upper())
    if name and not hit.any():
        short = name.split(".", 1)[0]
        hit |= devices["hostname"].map(lambda h: isinstance(h, str) and (h == name or h.split(".", 1)[0] == short))
    return devices[hit.to_numpy(dtype=bool)]


def flows_table(detail: DeviceDetail, decided: pd.DataFrame, labels: dict[str, str], direction: str) -> pd.DataFrame:
    """Return the device's communications in one direction (``out`` or ``in``) with the policy decision."""
    device_id = detail.device["device_id"]
    if decided.empty:
        return pd.DataFrame(columns=["peer", "peer_id", "proto", "dst_port", "flows", "bytes", "action", "rule", "sources"])
    mine = decided[decided["src_id" if direction == "out" else "dst_id"] == device_id]
    peer = mine["dst_id" if direction == "out" else "src_id"].astype(str)
    return pd.DataFrame(
        {
            "peer": [labels.get(p, p) for p in peer],
            "peer_id": [device_url(p) if p in labels else None for p in peer],
            "proto": mine["proto"].to_numpy(),
            "dst_port": mine["dst_port"].to_numpy(),
            "flows": mine["flows"].to_numpy(),
            "bytes": mine["bytes"].to_numpy(),
            "action": mine["action"].to_numpy() if "action" in mine else None,
            "rule": mine["rule"].to_numpy() if "rule" in mine else None,
            "sources": [display_text(s) for s in mine["sources"]],
        }
    )


def _decide(ctx: data.AppContext, communications: pd.DataFrame) -> pd.DataFrame:
    from twin.policy.engine import PolicyEngine

    if communications.empty:
        return communications
    return PolicyEngine(ctx.site()).decide(communications, ctx.twin())


def _forget_device_param() -> None:
    """Drop ``?device=`` from the URL, so it no longer names a device the page does not show."""
    if QUERY_PARAM in st.query_params:
        del st.query_params[QUERY_PARAM]
    st.session_state.pop(STATE_PARAM_SEEN, None)


def _show_matches(ctx: data.AppContext, query: str, exc: DeviceNotFound) -> None:
    """Show why a search found no single device; when it matches several, list them as links."""
    matches = matching_devices(ctx.twin().devices, query)
    if len(matches) < 2:
        st.warning(str(exc))
        return
    st.warning(f"{query!r} matches {len(matches)} devices; pick one below, or search by device id.")
    view = data.load_device_view(ctx.path, ctx.run_id).set_index("device_id")
    ids = matches["device_id"].astype(str).head(MAX_MATCHES_LISTED).tolist()
    table = pd.DataFrame(
        {
            "device": [device_url(i) for i in ids],
            "label": [view["label"].get(i) for i in ids],
            "ip": [view["ip"].get(i) for i in ids],
            "device_class": [view["device_class"].get(i) for i in ids],
            "segment_id": [view["segment_id"].get(i) for i in ids],
        }
    )
    show_table(table, hide_index=True, key="device-matches", column_config={"device": st.column_config.LinkColumn("device", display_text=r"device=(.*)$")})
    if len(matches) > MAX_MATCHES_LISTED:
        st.caption(f"The first {MAX_MATCHES_LISTED} of {len(matches)} matching devices are listed.")


def _lookup(ctx: data.AppContext, query: str) -> DeviceDetail | None:
    try:
        return data.load_device(ctx.path, ctx.run_id, query)
    except DeviceNotFound as exc:
        _forget_device_param()
        _show_matches(ctx, query, exc)
    except Exception as exc:  # noqa: BLE001 - shown to the user
        _forget_device_param()
        show_error(f"Loading device {query!r}", exc)
    return None


def render() -> None:
    """Draw the device page."""
    st.title("Device")
    ctx = require_context()
    # A link (?device=...) arriving in a running session replaces what the search box holds.
    param = st.query_params.get(QUERY_PARAM, "")
    if param and param != st.session_state.get(STATE_PARAM_SEEN):
        st.session_state[STATE_SEARCH] = param
        st.session_state[STATE_PARAM_SEEN] = param
    query = st.text_input(
        "Find a device",
        key=STATE_SEARCH,
        placeholder="device id, IP address, MAC address, host name, asset tag or serial number",
    ).strip()
    if not query:
        st.info("Enter a device id, IP address, MAC address, host name, asset tag or serial number, or follow a device link on another page.")
        return
    detail = _lookup(ctx, query)
    if detail is None:
        return
    device = detail.device
    device_id = str(device["device_id"])
    if st.query_params.get(QUERY_PARAM) != device_id:
        st.query_params[QUERY_PARAM] = device_id
        st.session_state[STATE_PARAM_SEEN] = device_id

    view = data.load_device_view(ctx.path, ctx.run_id)
    labels = dict(zip(view["device_id"], view["label"]))
    st.subheader(f"{labels.get(device_id, device_id)} · {device.get('device_class') or 'unknown'}")
    cols = st.columns(4)
    cols[0].metric("Class", str(device.get("device_class") or "unknown"))
    cols[1].metric("Confidence", display_text(device.get("confidence")))
    cols[2].metric("Segment", str(device.get("segment_id") or UNASSIGNED))
    cols[3].metric("Criticality", str(device.get("criticality") or "low"))
    st.markdown(f"**Sources:** {display_text(device.get('sources')) or 'none'}")

    st.subheader("Identity")
    show_table(facts_table(device), hide_index=True, key="device-facts")

    st.subheader("Why this class")
    evidence = evidence_table(device)
    if evidence.empty:
        st.caption("No classification evidence: the class is the default.")
    else:
        show_table(evidence, hide_index=True, key="device-evidence")

    if ctx.is_neo4j:
        st.subheader("Observations")
        st.info(
            "The Neo4j store keeps the resolved twin only, with no observation history, so the observations "
            "behind this device are not available here. Open a workspace built from the same site folder "
            "(`twin app -w WORKSPACE`) to see them."
        )
    else:
        st.subheader(f"Observations ({len(detail.observations)})")
    if not detail.observations.empty:
        obs = detail.observations[[c for c in ("kind", "source", "origin", "role", "seen_at", "attrs", "evidence") if c in detail.observations]]
        show_table(display_frame(obs), hide_index=True, key="device-observations")

    st.subheader(f"Interfaces ({len(detail.interfaces)})")
    if not detail.interfaces.empty:
        show_table(display_frame(detail.interfaces.drop(columns=["run_id"], errors="ignore")), hide_index=True, key="device-interfaces")

    st.subheader(f"Links ({len(detail.links)})")
    if not detail.links.empty:
        links = detail.links
        peer = [b if a == device_id else a for a, b in zip(links["a_device_id"], links["b_device_id"])]
        local_if = [ai if a == device_id else bi for a, ai, bi in zip(links["a_device_id"], links["a_if_name"], links["b_if_name"])]
        remote_if = [bi if a == device_id else ai for a, ai, bi in zip(links["a_device_id"], links["a_if_name"], links["b_if_name"])]
        frame = pd.DataFrame(
            {
                "interface": [display_text(v) for v in local_if],
                "peer": [labels.get(p, p) for p in peer],
                "peer_id": [device_url(p) for p in peer],
                "peer_interface": [display_text(v) for v in remote_if],
                "source": links["source"].to_numpy(),
                "confidence": links["confidence"].to_numpy(),
            }
        )
        show_table(frame, hide_index=True, key="device-links", column_config={"peer_id": st.column_config.LinkColumn("peer_id", display_text=r"device=(.*)$")})

    decided = _decide(ctx, detail.communications)
    link = {"peer_id": st.column_config.LinkColumn("peer_id", display_text=r"device=(.*)$")}
    for direction, title in (("out", "Communications out"), ("in", "Communications in")):
        table = flows_table(detail, decided, labels, direction)
        st.subheader(f"{title} ({len(table)})")
        if not table.empty:
            show_table(table, hide_index=True, key=f"device-flows-{direction}", column_config=link)

    st.subheader(f"Services ({len(detail.services)})")
    if not detail.services.empty:
        services = detail.services[[c for c in ("proto", "port", "name", "product", "version", "cpe", "tls", "sources") if c in detail.services]]
        show_table(display_frame(services), hide_index=True, key="device-services")

    total = sum(len(f) for f in detail.findings.values())
    st.subheader(f"Findings touching this device ({total})")
    if not total:
        st.caption("No finding of the query catalogue involves this device.")
    for name, frame in detail.findings.items():
        st.markdown(f"**{name}** ({len(frame)})")
        show_table(display_frame(frame), hide_index=True, key=f"device-findings-{name}")


if __name__ == "__main__":
    render()
