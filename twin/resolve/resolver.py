"""Resolution: observations and flows in, one resolved Twin out.

Steps, each a pure function of its inputs:

1. identity: cluster observations into devices (:mod:`twin.resolve.identity`);
2. devices: merge each cluster's properties by source precedence, look up
   the vendor in the IEEE OUI registry, classify (:mod:`twin.resolve.classify`);
3. topology: interfaces, LLDP/CDP links, and where each device attaches
   (from FDB tables);
4. segments: assign each device a segment (:mod:`twin.resolve.segments`);
5. communications: map flow endpoints to devices or External endpoints
   and aggregate per (source, destination, protocol, destination port);
6. criticality from the site's rules.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import netaddr
import numpy as np
import pandas as pd

from twin.model.ifname import normalise_if_name
from twin.model.observation import FLOW_COLUMNS, Kind, Observation
from twin.model.site import SiteConfig
from twin.model.twin import Twin
from twin.resolve.addresses import AddressPlan, usable_mac
from twin.resolve.classify import ROLE_OF_CLASS, classify
from twin.resolve.identity import Conflict, IdentityRecord, build_records, cluster_identities, device_id_for
from twin.resolve.segments import assign_segments, segments_table
from twin.resolve.vendors import canonical_vendor, vendor_from_text

__all__ = ["Resolution", "resolve", "SOURCE_PRECEDENCE", "WELL_KNOWN_PORTS"]

log = logging.getLogger(__name__)

# Rank of each source when two disagree on a device property; the lower rank wins.
SOURCE_PRECEDENCE = {"inventory": 0, "snmp": 1, "lldpd": 2, "nmap": 3}
_LAST = 9

# A switch port with more learned MACs than this is treated as an uplink or a
# downstream switch, not as the port a device is attached to, unless the
# device appears on no other port.
ACCESS_PORT_MAX_MACS = 8

# Well-known names for flow destination ports that have no nmap service.
WELL_KNOWN_PORTS = {
    ("tcp", 21): "ftp",
    ("tcp", 22): "ssh",
    ("tcp", 23): "telnet",
    ("tcp", 25): "smtp",
    ("udp", 53): "domain",
    ("tcp", 53): "domain",
    ("tcp", 80): "http",
    ("tcp", 88): "kerberos",
    ("tcp", 104): "dicom",
    ("udp", 123): "ntp",
    ("tcp", 135): "msrpc",
    ("tcp", 139): "netbios-ssn",
    ("udp", 161): "snmp",
    ("tcp", 389): "ldap",
    ("tcp", 443): "https",
    ("tcp", 445): "microsoft-ds",
    ("udp", 514): "syslog",
    ("tcp", 636): "ldaps",
    ("tcp", 1433): "ms-sql",
    ("tcp", 1883): "mqtt",
    ("tcp", 2575): "hl7-mllp",
    ("tcp", 3306): "mysql",
    ("tcp", 3389): "ms-wbt-server",
    ("udp", 5060): "sip",
    ("tcp", 5060): "sip",
    ("tcp", 5900): "vnc",
    ("tcp", 8080): "http-proxy",
    ("tcp", 8443): "https-alt",
    ("tcp", 9100): "jetdirect",
    ("tcp", 11112): "dicom",
    ("udp", 47808): "bacnet",
}

DEVICE_PROPERTIES = ("hostname", "vendor", "model", "firmware", "os", "serial", "sys_descr", "asset_tag", "department", "location", "building")


@dataclass
class Resolution:
    """A resolved twin plus what resolution learned along the way."""

    twin: Twin
    conflicts: list[Conflict] = field(default_factory=list)
    # (device_id, about_id) per observation, in input order.
    observation_devices: list[tuple[str | None, str | None]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)


def _oui_vendor(mac: str, cache: dict[str, str | None]) -> str | None:
    prefix = mac[:8]
    if prefix in cache:
        return cache[prefix]
    vendor = None
    if not int(mac[:2], 16) & 0x02:  # universally administered only
        try:
            vendor = netaddr.EUI(mac).oui.registration().org
        except (netaddr.NotRegisteredError, netaddr.AddrFormatError, IndexError):
            vendor = None
    cache[prefix] = vendor
    return vendor


def _flow_ip_records(flow_frames: list[pd.DataFrame], plan: AddressPlan) -> list[IdentityRecord]:
    spans: dict[str, list[float]] = {}
    for frame in flow_frames:
        if frame is None or frame.empty:
            continue
        for col in ("src_ip", "dst_ip"):
            grouped = frame.groupby(col, sort=False).agg(t0=("first_seen", "min"), t1=("last_seen", "max"))
            for ip, t0, t1 in zip(grouped.index, grouped["t0"], grouped["t1"]):
                span = spans.get(ip)
                if span is None:
                    spans[ip] = [float(t0), float(t1)]
                else:
                    span[0] = min(span[0], float(t0))
                    span[1] = max(span[1], float(t1))
    records = []
    for ip in sorted(spans):
        if plan.kind(ip) != "internal":
            continue
        t0, t1 = spans[ip]
        records.append(IdentityRecord(macs=(), ips=(ip,), hostname=None, serial=None, t0=t0, t1=t1, source="flows"))
    return records


def resolve(
    observations: list[Observation],
    flow_frames: list[tuple[str, pd.DataFrame]],
    site: SiteConfig,
    *,
    run_id: str,
    built_at: float,
    progress: Callable[[str], None] | None = None,
) -> Resolution:
    """Resolve observations and flows into one Twin snapshot.

    Parameters
    ----------
    observations : list of Observation
    flow_frames : list of (source, DataFrame)
        Aggregated flows per imported file, with FLOW_COLUMNS.
    site : SiteConfig
    run_id : str
    built_at : float
        Build time, epoch seconds.
    progress : callable, optional
        Called with a stage name as each stage starts.
    """
    step = progress or (lambda stage: None)
    plan = AddressPlan(
        [c for seg in site.segments for c in seg.cidrs],
        site.external.internal_cidrs,
    )

    step("identity")
    records = build_records(observations, plan)
    frames = [frame for _, frame in flow_frames]
    records.extend(_flow_ip_records(frames, plan))
    records = [r for r in records if r.macs or r.ips or r.hostname or r.serial]
    clusters = cluster_identities(records, ip_window_s=site.resolution.ip_time_window_s)
    groups = clusters.groups()

    step("devices")
    devices, device_of_root = _build_devices(observations, clusters, groups, site, _listening_ports(frames))
    obs_devices = _observation_devices(observations, clusters, device_of_root)
    ip_owner = _ip_owner(devices)

    step("topology")
    interfaces = _interfaces(observations, obs_devices, run_id)
    links, attachment = _links_and_attachment(observations, obs_devices, devices, interfaces, run_id)
    for dev in devices:
        where = attachment.get(dev["device_id"])
        if where:
            dev["attached_to"], dev["attached_port"], dev["_port_vlan"] = where

    step("segments")
    segment_ids, evidence = assign_segments(
        [d["ips"][0] if d["ips"] else None for d in devices],
        [d.get("_port_vlan") for d in devices],
        site,
    )
    seg_building = {seg.id: seg.building for seg in site.segments}
    memberships = []
    for dev, seg_id, why in zip(devices, segment_ids, evidence):
        dev["segment_id"] = seg_id
        if seg_id is not None:
            if not dev.get("building"):
                dev["building"] = seg_building.get(seg_id)
            memberships.append(
                {
                    "device_id": dev["device_id"],
                    "segment_id": seg_id,
                    "evidence": why,
                    "first_seen": dev["first_seen"],
                    "last_seen": dev["last_seen"],
                    "sources": dev["sources"],
                    "run_id": run_id,
                }
            )

    step("communications")
    left_out: dict[str, int] = {}
    communications, externals, flow_devices = _communications(flow_frames, plan, ip_owner, run_id, left_out)
    services = _services(observations, obs_devices, communications, run_id)

    devices_df = pd.DataFrame(devices)
    for col in [c for c in devices_df.columns if c.startswith("_")]:
        del devices_df[col]
    devices_df["run_id"] = run_id

    twin = Twin(
        site=site.site.name,
        run_id=run_id,
        built_at=built_at,
        tables={
            "devices": devices_df,
            "interfaces": interfaces,
            "segments": _with_provenance(segments_table(site), built_at, run_id),
            "memberships": pd.DataFrame(memberships),
            "links": links,
            "communications": communications,
            "externals": externals,
            "services": services,
        },
    )
    _fill_declared_columns(twin)

    step("criticality")
    _apply_criticality(twin, site)

    stats = {
        "observations": len(observations),
        "identity_records": len(records),
        "devices": len(devices),
        "conflicts": len(clusters.conflicts),
        "communications": len(communications),
        "externals": len(externals),
        "links": len(links),
        "interfaces": len(interfaces),
        "services": len(services),
        "internal_flow_addresses": flow_devices,
        "flow_rows_external_only": left_out.get("external_only", 0),
        "flow_rows_ignored": left_out.get("ignored", 0),
    }
    log.info("run %s: resolved %d observations into %d devices", run_id, len(observations), len(devices))
    return Resolution(twin=twin, conflicts=clusters.conflicts, observation_devices=obs_devices, stats=stats)


def _with_provenance(frame: pd.DataFrame, when: float, run_id: str) -> pd.DataFrame:
    frame = frame.copy()
    frame["first_seen"] = when
    frame["last_seen"] = when
    frame["sources"] = [["site.yaml"] for _ in range(len(frame))]
    frame["run_id"] = run_id
    return frame


def _fill_declared_columns(twin: Twin) -> None:
    from twin.model.twin import TABLES

    for name, columns in TABLES.items():
        frame = twin.tables.get(name)
        if frame is None:
            continue
        for col in columns:
            if col not in frame.columns:
                frame[col] = None
        twin.tables[name] = frame[columns + [c for c in frame.columns if c not in columns]]


def _listening_ports(frames: list[pd.DataFrame]) -> dict[str, set[tuple[str, int]]]:
    """Return the well-known TCP/UDP ports each IP received flows on."""
    out: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for frame in frames:
        if frame is None or frame.empty:
            continue
        sub = frame[frame["proto"].isin(["tcp", "udp"]) & (frame["dst_port"] < 49152)]
        pairs = sub[["dst_ip", "proto", "dst_port"]].drop_duplicates()
        for ip, proto, port in pairs.itertuples(index=False, name=None):
            if (proto, int(port)) in WELL_KNOWN_PORTS:
                out[str(ip)].add((proto, int(port)))
    return out


def _build_devices(observations, clusters, groups, site: SiteConfig, listening: dict[str, set]):
    """Merge each identity cluster into one device row."""
    oui_cache: dict[str, str | None] = {}
    devices: list[dict[str, Any]] = []
    device_of_root: dict[int, str] = {}
    hostname_patterns = site.classification.hostname_patterns
    model_patterns = site.classification.model_patterns

    for root in sorted(groups, key=lambda r: min(groups[r])):
        members = groups[root]
        macs: set[str] = set()
        ips: Counter[str] = Counter()
        serials: set[str] = set()
        hostnames: list[tuple[int, str]] = []
        props: dict[str, tuple[int, Any, str]] = {}
        facts: dict[str, Any] = {"capabilities": set(), "ports": set(), "os_classes": []}
        sources: set[str] = set()
        t0, t1 = float("inf"), float("-inf")
        flags = {"managed": False}

        for i in members:
            rec = clusters.records[i]
            macs.update(rec.macs)
            ips.update(rec.ips)
            if rec.serial:
                serials.add(rec.serial)
            t0, t1 = min(t0, rec.t0), max(t1, rec.t1)
            sources.add(rec.source)
            rank = SOURCE_PRECEDENCE.get(rec.source, _LAST)
            if rec.hostname:
                hostnames.append((rank + (5 if rec.named else 0), rec.hostname))
            for obs_index in rec.obs_indices:
                _gather(observations[obs_index], rec.named, rank, props, facts, flags)

        if not (macs or ips or serials or hostnames):
            continue
        ip_list = _order_ips(ips)
        for ip in ip_list:
            facts.setdefault("flow_ports", set()).update(listening.get(ip, ()))
        hostname = min(hostnames)[1] if hostnames else None
        device_id = device_id_for(sorted(macs), sorted(serials), ip_list, [h for _, h in hostnames])
        device_of_root[root] = device_id

        values = {key: value for key, (rank, value, src) in props.items()}
        evidence_sources = {key: src for key, (rank, value, src) in props.items()}
        vendor = values.get("vendor")
        if not vendor:
            for mac in sorted(macs):
                vendor = _oui_vendor(mac, oui_cache)
                if vendor:
                    evidence_sources["vendor"] = f"IEEE OUI {mac[:8]}"
                    break
        if not vendor:
            vendor = vendor_from_text(values.get("sys_descr")) or vendor_from_text(values.get("model"))
            if vendor:
                evidence_sources["vendor"] = "sysDescr or platform text"
        vendor = canonical_vendor(vendor)
        facts.update(
            inventory_type=values.get("inventory_type"),
            model=values.get("model"),
            sys_descr=values.get("sys_descr"),
            hostname=hostname,
            vendor=vendor,
        )
        device_class, confidence, class_evidence = classify(
            facts, hostname_patterns=hostname_patterns, model_patterns=model_patterns
        )
        devices.append(
            {
                "device_id": device_id,
                "macs": sorted(macs),
                "ips": ip_list,
                "hostname": hostname,
                "vendor": vendor,
                "model": values.get("model"),
                "firmware": values.get("firmware"),
                "os": values.get("os"),
                "serial": values.get("serial") or (min(serials) if serials else None),
                "device_class": device_class,
                "criticality": None,
                "role": ROLE_OF_CLASS.get(device_class, "unknown"),
                "managed": flags["managed"],
                "confidence": confidence,
                "class_evidence": class_evidence + [{"rule": "property source", "value": evidence_sources}],
                "segment_id": None,
                "asset_tag": values.get("asset_tag"),
                "department": values.get("department"),
                "location": values.get("location"),
                "building": values.get("building"),
                "sys_descr": values.get("sys_descr"),
                "attached_to": None,
                "attached_port": None,
                "stale": False,
                "first_seen": t0,
                "last_seen": t1,
                "sources": sorted(sources),
            }
        )
    return devices, device_of_root


def _gather(obs: Observation, named: bool, rank: int, props, facts, flags) -> None:
    """Add the properties and classification facts one observation states about a device."""
    attrs = obs.attrs
    if named:
        if obs.kind == Kind.NEIGHBOR:
            facts["capabilities"].update(attrs.get("remote_capabilities") or ())
            if attrs.get("remote_sys_descr"):
                _offer(props, "sys_descr", attrs["remote_sys_descr"], rank + 5, obs.source)
            if attrs.get("remote_platform"):
                _offer(props, "model", attrs["remote_platform"], rank + 5, obs.source)
        return
    if obs.kind == Kind.DEVICE:
        for key in DEVICE_PROPERTIES:
            if key != "hostname" and attrs.get(key):
                _offer(props, key, attrs[key], rank, obs.source)
        if attrs.get("device_class"):
            _offer(props, "inventory_type", attrs["device_class"], rank, obs.source)
        if attrs.get("os_classes"):
            facts["os_classes"].extend(attrs["os_classes"])
        if attrs.get("managed") or obs.source == "inventory":
            flags["managed"] = True
    elif obs.kind == Kind.SERVICE:
        facts["ports"].add((attrs.get("proto"), attrs.get("port")))


def _offer(props, key, value, rank, source) -> None:
    if isinstance(value, str):
        # CDP version strings often arrive with a stray leading quote or newline.
        value = value.strip().strip('"').strip()
        if not value:
            return
    current = props.get(key)
    if current is None or rank < current[0]:
        props[key] = (rank, value, source)


def _order_ips(ips: Counter) -> list[str]:
    """Order a device's IPs: IPv4 before IPv6, most often seen first, then by address."""

    def key(ip: str):
        return (":" in ip, ip.startswith("fe80"), -ips[ip], ip)

    return sorted(ips, key=key)


def _observation_devices(observations, clusters, device_of_root):
    out: list[list[str | None]] = [[None, None] for _ in observations]
    for i, rec in enumerate(clusters.records):
        device_id = device_of_root.get(clusters.root_of[i])
        for obs_index in rec.obs_indices:
            out[obs_index][1 if rec.named else 0] = device_id
    return [tuple(pair) for pair in out]


def _ip_owner(devices) -> dict[str, str]:
    """Map each IP to one device: the one seen holding it most recently."""
    owner: dict[str, tuple[float, str]] = {}
    for dev in devices:
        for ip in dev["ips"]:
            current = owner.get(ip)
            if current is None or dev["last_seen"] > current[0]:
                owner[ip] = (dev["last_seen"], dev["device_id"])
    return {ip: device_id for ip, (_, device_id) in owner.items()}


def _interfaces(observations, obs_devices, run_id) -> pd.DataFrame:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for obs, (device_id, _) in zip(observations, obs_devices):
        if obs.kind != Kind.INTERFACE or device_id is None:
            continue
        a = obs.attrs
        name = a.get("if_name") or a.get("if_descr") or (f"ifIndex{a['if_index']}" if a.get("if_index") is not None else None)
        if not name:
            continue
        name = normalise_if_name(str(name))
        row = rows.setdefault(
            (device_id, name),
            {"device_id": device_id, "if_name": name, "first_seen": obs.seen_at, "last_seen": obs.seen_at, "sources": set()},
        )
        for key in ("if_index", "if_descr", "mac", "speed", "vlan", "oper_status"):
            if a.get(key) is not None and row.get(key) is None:
                row[key] = a[key]
        if not row.get("if_descr") and a.get("if_alias"):
            row["if_descr"] = a["if_alias"]
        row["first_seen"] = min(row["first_seen"], obs.seen_at)
        row["last_seen"] = max(row["last_seen"], obs.seen_at)
        row["sources"].add(obs.source)
    out = []
    for row in rows.values():
        row["sources"] = sorted(row["sources"])
        row["run_id"] = run_id
        out.append(row)
    return pd.DataFrame(out)


def _links_and_attachment(observations, obs_devices, devices, interfaces, run_id):
    """Return (links DataFrame, attachment map device_id -> (switch_id, port, vlan))."""
    mac_owner: dict[str, str] = {}
    for dev in devices:
        for mac in dev["macs"]:
            mac_owner.setdefault(mac, dev["device_id"])
    iface_by_mac: dict[str, tuple[str, str]] = {}
    if not interfaces.empty and "mac" in interfaces.columns:
        for device_id, if_name, mac in zip(interfaces["device_id"], interfaces["if_name"], interfaces["mac"]):
            if isinstance(mac, str) and mac:
                iface_by_mac.setdefault(mac, (device_id, if_name))

    links: dict[tuple, dict[str, Any]] = {}
    uplinks: set[tuple[str, str]] = set()

    def add_link(a, b, source, confidence, seen_at):
        key = tuple(sorted([a, b]))
        row = links.get(key)
        if row is None:
            links[key] = {
                "a_device_id": key[0][0],
                "a_if_name": key[0][1],
                "b_device_id": key[1][0],
                "b_if_name": key[1][1],
                "source": source,
                "confidence": confidence,
                "first_seen": seen_at,
                "last_seen": seen_at,
                "sources": {source},
                "_ends": {a},
            }
        else:
            row["_ends"].add(a)
            row["sources"].add(source)
            row["first_seen"] = min(row["first_seen"], seen_at)
            row["last_seen"] = max(row["last_seen"], seen_at)
            if len(row["_ends"]) > 1:
                row["confidence"] = 1.0

    for obs, (device_id, about_id) in zip(observations, obs_devices):
        if obs.kind != Kind.NEIGHBOR or device_id is None or about_id is None or device_id == about_id:
            continue
        a = obs.attrs
        local_port = normalise_if_name(str(a.get("local_port") or f"port{a.get('local_if_index')}"))
        remote_port = _remote_port(a, iface_by_mac, about_id)
        uplinks.add((device_id, local_port))
        add_link((device_id, local_port), (about_id, remote_port), str(a.get("protocol") or "lldp"), 0.9, obs.seen_at)

    # FDB: a MAC learned on access ports; pick the port with the fewest MACs.
    # Distinct MACs per port: a walk recorded twice, or one MAC learned in
    # several VLANs, must not make an access port look like an uplink.
    port_macs: dict[tuple[str, str], set[str]] = defaultdict(set)
    fdb_entries: dict[str, list[tuple[str, str, Any, float]]] = defaultdict(list)
    for obs, (device_id, about_id) in zip(observations, obs_devices):
        if obs.kind != Kind.FDB or device_id is None:
            continue
        a = obs.attrs
        mac = a.get("mac")
        port = a.get("if_name") or (f"bridgePort{a.get('bridge_port')}" if a.get("bridge_port") is not None else None)
        if not usable_mac(mac) or not port:
            continue
        port = normalise_if_name(str(port))
        port_macs[(device_id, port)].add(mac)
        fdb_entries[mac].append((device_id, port, a.get("vlan"), obs.seen_at))

    macs_per_port = {key: len(macs) for key, macs in port_macs.items()}
    attachment: dict[str, tuple[str, str, Any]] = {}
    for mac, entries in fdb_entries.items():
        owner = mac_owner.get(mac)
        if owner is None:
            continue
        candidates = [e for e in entries if e[0] != owner]
        if not candidates:
            continue
        access = [e for e in candidates if (e[0], e[1]) not in uplinks and macs_per_port[(e[0], e[1])] <= ACCESS_PORT_MAX_MACS]
        pool = access or [e for e in candidates if (e[0], e[1]) not in uplinks] or candidates
        switch_id, port, vlan, seen_at = min(pool, key=lambda e: (macs_per_port[(e[0], e[1])], e[0], e[1]))
        if owner in attachment and attachment[owner][0] != switch_id:
            # A device with several MACs: keep the first (sorted) attachment.
            continue
        attachment[owner] = (switch_id, port, vlan)
        if access:
            # The device's own port name is unknown unless it reported its interfaces.
            remote = iface_by_mac.get(mac, (owner, ""))[1]
            add_link((switch_id, port), (owner, normalise_if_name(str(remote)) if remote else ""), "fdb", 0.8, seen_at)

    rows = []
    for row in links.values():
        row.pop("_ends")
        row["sources"] = sorted(row["sources"])
        row["run_id"] = run_id
        rows.append(row)
    return pd.DataFrame(rows), attachment


def _remote_port(attrs, iface_by_mac, remote_device) -> str:
    subtype = str(attrs.get("remote_port_id_subtype") or "")
    port_id = attrs.get("remote_port_id")
    if subtype in ("mac_address", "macAddress", "mac"):
        hit = iface_by_mac.get(str(port_id))
        if hit and hit[0] == remote_device:
            return hit[1]
    if port_id and subtype not in ("mac_address", "macAddress", "mac"):
        return normalise_if_name(str(port_id))
    descr = attrs.get("remote_port_descr")
    if descr:
        return normalise_if_name(str(descr))
    return str(port_id or "unknown")


def _communications(flow_frames, plan: AddressPlan, ip_owner: dict[str, str], run_id: str, left_out: dict[str, int] | None = None):
    """Aggregate flows into COMMUNICATES_WITH rows.

    Within one source, counters add up. Across sources the larger count is
    kept, because two vantage points (Zeek and NetFlow, say) often report the
    same traffic and adding them would double its volume. Flow rows that
    become no communication are counted in ``left_out`` when it is given:
    ``external_only`` (both ends outside the site) and ``ignored`` (an
    address that is no endpoint, such as multicast, or both ends one device).
    """
    per_source: list[pd.DataFrame] = []
    by_source: dict[str, list[pd.DataFrame]] = defaultdict(list)
    for source, frame in flow_frames:
        if frame is not None and not frame.empty:
            by_source[source].append(frame[list(FLOW_COLUMNS)])
    columns = ["src_id", "src_kind", "dst_id", "dst_kind", "proto", "dst_port", "bytes", "packets", "flows", "first_seen", "last_seen", "sources", "run_id"]
    if not by_source:
        return pd.DataFrame(columns=columns), pd.DataFrame(columns=["address", "category", "first_seen", "last_seen", "sources", "run_id"]), 0

    # Endpoints become integer node codes (devices, then External addresses)
    # so grouping a million flows works on int64 columns, not strings.
    node_ids: list[str] = []
    node_kinds: list[str] = []
    node_of: dict[str, int] = {}
    code_of_ip: dict[str, int] = {}
    internal_seen = 0

    def node_code(ip: str) -> int:
        nonlocal internal_seen
        code = code_of_ip.get(ip)
        if code is not None:
            return code
        kind = plan.kind(ip)
        if kind != "ignore" and ip in ip_owner:
            # An address a device states itself, even a public one.
            kind = "internal"
        if kind == "internal":
            internal_seen += 1
            node, node_kind = ip_owner.get(ip), "device"
        elif kind == "external":
            node, node_kind = ip, "external"
        else:
            node = None
        if node is None:
            code = -1
        else:
            code = node_of.get(node)
            if code is None:
                code = node_of[node] = len(node_ids)
                node_ids.append(node)
                node_kinds.append(node_kind)
        code_of_ip[ip] = code
        return code

    def codes(column: pd.Series) -> np.ndarray:
        values, uniques = pd.factorize(column.astype(str))
        lookup = np.fromiter((node_code(ip) for ip in uniques), dtype=np.int64, count=len(uniques))
        return lookup[values]

    protocols: dict[str, int] = {}
    keys = ["src", "dst", "proto", "dst_port"]
    source_names = sorted(by_source)
    for bit, source in enumerate(source_names):
        for frame in by_source[source]:
            proto_values, proto_uniques = pd.factorize(frame["proto"].astype(str))
            proto_lookup = np.array([protocols.setdefault(p, len(protocols)) for p in proto_uniques], dtype=np.int64)
            coded = pd.DataFrame(
                {
                    "src": codes(frame["src_ip"]),
                    "dst": codes(frame["dst_ip"]),
                    "proto": proto_lookup[proto_values] if len(proto_uniques) else np.zeros(len(frame), dtype=np.int64),
                    "dst_port": frame["dst_port"].fillna(0).to_numpy(dtype=np.int64),
                    "bytes": frame["bytes"].fillna(0).to_numpy(dtype=np.int64),
                    "packets": frame["packets"].fillna(0).to_numpy(dtype=np.int64),
                    "flows": frame["flows"].fillna(0).to_numpy(dtype=np.int64),
                    "first_seen": frame["first_seen"].to_numpy(dtype=np.float64),
                    "last_seen": frame["last_seen"].to_numpy(dtype=np.float64),
                }
            )
            kinds_arr = np.array(node_kinds + ["none"], dtype=object)
            endpoints = (coded["src"] >= 0) & (coded["dst"] >= 0) & (coded["src"] != coded["dst"])
            external_only = (kinds_arr[coded["src"].to_numpy()] == "external") & (kinds_arr[coded["dst"].to_numpy()] == "external")
            keep = endpoints & ~external_only
            if left_out is not None:
                left_out["external_only"] = left_out.get("external_only", 0) + int((endpoints & external_only).sum())
                left_out["ignored"] = left_out.get("ignored", 0) + int((~endpoints).sum())
            coded = coded[keep]
            coded["source_bits"] = 1 << bit
            per_source.append(coded)

    merged = pd.concat(per_source, ignore_index=True)
    # Within a source, rows of one key add up; across sources the larger value wins.
    within = merged.groupby(keys + ["source_bits"], sort=False).agg(
        bytes=("bytes", "sum"),
        packets=("packets", "sum"),
        flows=("flows", "sum"),
        first_seen=("first_seen", "min"),
        last_seen=("last_seen", "max"),
    ).reset_index()
    del merged
    grouped = within.groupby(keys, sort=True).agg(
        bytes=("bytes", "max"),
        packets=("packets", "max"),
        flows=("flows", "max"),
        first_seen=("first_seen", "min"),
        last_seen=("last_seen", "max"),
        source_bits=("source_bits", "sum"),  # one row per source and key, so the sum is a bitwise or
    ).reset_index()
    del within

    ids = np.array(node_ids, dtype=object)
    kinds_arr = np.array(node_kinds, dtype=object)
    proto_names = np.array(sorted(protocols, key=protocols.get), dtype=object)
    names_of = {bits: [n for b, n in enumerate(source_names) if bits & (1 << b)] for bits in grouped["source_bits"].unique()}
    src, dst = grouped["src"].to_numpy(), grouped["dst"].to_numpy()
    comms = pd.DataFrame(
        {
            "src_id": ids[src],
            "src_kind": kinds_arr[src],
            "dst_id": ids[dst],
            "dst_kind": kinds_arr[dst],
            "proto": proto_names[grouped["proto"].to_numpy()],
            "dst_port": grouped["dst_port"].to_numpy(),
            "bytes": grouped["bytes"].to_numpy(),
            "packets": grouped["packets"].to_numpy(),
            "flows": grouped["flows"].to_numpy(),
            "first_seen": grouped["first_seen"].to_numpy(),
            "last_seen": grouped["last_seen"].to_numpy(),
            # Rows share one list per combination of sources: a million
            # separate lists would cost about 100 MB.
            "sources": [names_of[b] for b in grouped["source_bits"].tolist()],
        }
    )
    comms["run_id"] = run_id

    ext_rows = []
    for side in ("src", "dst"):
        sub = comms[comms[f"{side}_kind"] == "external"]
        if sub.empty:
            continue
        ext_rows.append(sub.groupby(f"{side}_id").agg(first_seen=("first_seen", "min"), last_seen=("last_seen", "max")).rename_axis("address").reset_index())
    if ext_rows:
        externals = pd.concat(ext_rows).groupby("address").agg(first_seen=("first_seen", "min"), last_seen=("last_seen", "max")).reset_index()
    else:
        externals = pd.DataFrame(columns=["address", "first_seen", "last_seen"])
    externals["category"] = "unknown"
    externals["sources"] = [["flows"] for _ in range(len(externals))]
    externals["run_id"] = run_id
    return comms, externals, internal_seen


def _services(observations, obs_devices, communications: pd.DataFrame, run_id) -> pd.DataFrame:
    rows: dict[tuple[str, str, int], dict[str, Any]] = {}
    for obs, (device_id, _) in zip(observations, obs_devices):
        if obs.kind != Kind.SERVICE or device_id is None:
            continue
        a = obs.attrs
        try:
            key = (device_id, str(a.get("proto") or "tcp"), int(a.get("port")))
        except (TypeError, ValueError):
            continue
        row = rows.setdefault(key, {"device_id": key[0], "proto": key[1], "port": key[2], "first_seen": obs.seen_at, "last_seen": obs.seen_at, "sources": {obs.source}})
        for field_name in ("name", "product", "version"):
            if a.get(field_name) and not row.get(field_name):
                row[field_name] = a[field_name]
        if a.get("cpes"):
            row["cpe"] = sorted(set(row.get("cpe") or []) | set(a["cpes"]))
        if a.get("tls") is not None:
            row["tls"] = bool(a["tls"])
        row["first_seen"] = min(row["first_seen"], obs.seen_at)
        row["last_seen"] = max(row["last_seen"], obs.seen_at)
        row["sources"].add(obs.source)

    if not communications.empty:
        to_devices = communications[(communications["dst_kind"] == "device") & communications["proto"].isin(["tcp", "udp"])]
        seen = to_devices.groupby(["dst_id", "proto", "dst_port"]).agg(first_seen=("first_seen", "min"), last_seen=("last_seen", "max")).reset_index()
        for device_id, proto, port, t0, t1 in seen.itertuples(index=False, name=None):
            key = (device_id, proto, int(port))
            row = rows.get(key)
            if row is None:
                rows[key] = {
                    "device_id": device_id,
                    "proto": proto,
                    "port": int(port),
                    "name": WELL_KNOWN_PORTS.get((proto, int(port))),
                    "first_seen": t0,
                    "last_seen": t1,
                    "sources": {"flows"},
                }
            else:
                row["sources"].add("flows")
    out = []
    for row in rows.values():
        row["sources"] = sorted(row["sources"])
        row.setdefault("cpe", [])
        row["run_id"] = run_id
        out.append(row)
    return pd.DataFrame(out)


def _apply_criticality(twin: Twin, site: SiteConfig) -> None:
    devices = twin.devices
    if devices.empty:
        return
    from twin.policy.engine import PolicyEngine

    engine = PolicyEngine(site)
    criticality = np.full(len(devices), None, dtype=object)
    for rule in site.criticality.rules:
        hit = engine.match_selector(rule.match, devices).to_numpy(dtype=bool) & (criticality == None)  # noqa: E711
        criticality[hit] = rule.criticality
    criticality[criticality == None] = site.criticality.default  # noqa: E711
    devices["criticality"] = criticality
