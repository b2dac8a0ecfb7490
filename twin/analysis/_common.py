"""Helpers shared by the query modules: device and segment views, severities, a twin builder."""

from __future__ import annotations

import ipaddress
import weakref

import numpy as np
import pandas as pd

from twin.model.classes import MEDICAL_CLASSES, ROLE_OF_CLASS
from twin.resolve.addresses import in_networks
from twin.model.site import SiteConfig
from twin.model.twin import Twin

__all__ = [
    "SEVERITIES",
    "MEDICAL_CLASSES",
    "IT_CLASSES",
    "CRITICALITY_SEVERITY",
    "lower_severity",
    "device_view",
    "segment_table",
    "finalise",
    "twin_from_records",
    "in_address_list",
]

# Severity levels of findings, most severe first.
SEVERITIES = ("critical", "high", "medium", "low", "info")

# Device classes that count as medical or as general IT when a device has
# no ``role``, from the model's class vocabulary.
IT_CLASSES = frozenset(c for c, role in ROLE_OF_CLASS.items() if role == "it")

# Severity of a finding whose weight is the criticality of the device at stake.
CRITICALITY_SEVERITY = {"life_critical": "critical", "high": "high", "medium": "medium", "low": "low"}


def lower_severity(severity: str) -> str:
    """Return the next lower severity level (``info`` stays ``info``)."""
    index = SEVERITIES.index(severity)
    return SEVERITIES[min(index + 1, len(SEVERITIES) - 1)]


def _primary_ip(value) -> str | None:
    if isinstance(value, (list, tuple, np.ndarray)):
        return str(value[0]) if len(value) else None
    if value is None or value != value:
        return None
    return str(value)


# The last device view built, reused while the same devices table and site are passed again
# (a catalogue run requests it once per query).
_VIEW_CACHE: dict[str, object] = {}


def device_view(twin: Twin, site: SiteConfig | None = None) -> pd.DataFrame:
    """Return the devices with ``ip`` (primary address), ``role`` filled from the class, and ``zone``.

    The index is the ``device_id``. The result is cached for the same
    devices table object and site. A devices table changed in place after a
    call is not seen until another table or site is passed.
    """
    dev = twin.devices
    ref = _VIEW_CACHE.get("devices")
    if ref is not None and ref() is dev and _VIEW_CACHE.get("site") is site and _VIEW_CACHE.get("segments") is twin.segments:
        return _VIEW_CACHE["view"]  # type: ignore[return-value]
    view = _build_device_view(twin, site)
    _VIEW_CACHE.update(devices=weakref.ref(dev), site=site, segments=twin.segments, view=view)
    return view


def _build_device_view(twin: Twin, site: SiteConfig | None) -> pd.DataFrame:
    dev = twin.devices
    segs = segment_table(twin, site)
    out = pd.DataFrame(
        {
            "device_id": dev["device_id"].astype(str).to_numpy(),
            "hostname": dev["hostname"].to_numpy(dtype=object) if "hostname" in dev else None,
            "ip": [_primary_ip(v) for v in dev["ips"]] if "ips" in dev else None,
            "device_class": dev["device_class"].fillna("unknown").astype(str).to_numpy() if "device_class" in dev else "unknown",
            "criticality": dev["criticality"].fillna("low").astype(str).to_numpy() if "criticality" in dev else "low",
            "role": dev["role"].to_numpy(dtype=object) if "role" in dev else None,
            "segment_id": dev["segment_id"].to_numpy(dtype=object) if "segment_id" in dev else None,
        }
    )
    hostnames = [h if isinstance(h, str) and h else None for h in out["hostname"]]
    ips = [ip if isinstance(ip, str) and ip else None for ip in out["ip"]]
    out["hostname"] = pd.Series(hostnames, index=out.index, dtype=object)
    # What a message calls the device: host name, else primary IP, else id.
    out["label"] = pd.Series(
        [h or ip or d for h, ip, d in zip(hostnames, ips, out["device_id"], strict=True)], index=out.index, dtype=object
    )
    out["segment_id"] = out["segment_id"].where(out["segment_id"].notna(), None)
    fallback = np.where(
        out["device_class"].isin(MEDICAL_CLASSES), "medical", np.where(out["device_class"].isin(IT_CLASSES), "it", None)
    )
    role = out["role"].where(out["role"].notna(), None)
    out["role"] = np.where(role.isna(), fallback, role)
    zone_map = segs["zone"].to_dict() if not segs.empty else {}
    out["zone"] = out["segment_id"].map(zone_map)
    return out.set_index("device_id", drop=False)


def segment_table(twin: Twin, site: SiteConfig | None) -> pd.DataFrame:
    """Return segments indexed by ``segment_id`` with zone, designated_classes, trust and building.

    The site configuration wins; segments present only in the twin's
    segments table are added from there.
    """
    rows: dict[str, dict] = {}
    tw = twin.segments
    for rec in tw.to_dict("records") if not tw.empty else []:
        rows[str(rec["segment_id"])] = {
            "zone": rec.get("zone") or "unassigned",
            "designated_classes": list(rec.get("designated_classes") or []),
            "trust": rec.get("trust") or "medium",
            "building": rec.get("building"),
        }
    for seg in site.segments if site is not None else []:
        rows[seg.id] = {
            "zone": seg.zone,
            "designated_classes": list(seg.designated_classes),
            "trust": seg.trust,
            "building": seg.building,
        }
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["zone", "designated_classes", "trust", "building"])
    table.index.name = "segment_id"
    return table


def finalise(rows: pd.DataFrame | list[dict], columns: list[str], sort: list[str]) -> pd.DataFrame:
    """Return findings with exactly ``columns``, sorted by severity then ``sort``, with a fresh index."""
    frame = pd.DataFrame(rows, columns=columns) if isinstance(rows, list) else rows.reset_index(drop=True).reindex(columns=columns)
    if frame.empty:
        return pd.DataFrame({col: pd.Series(dtype=object) for col in columns})
    rank = frame["severity"].map({s: i for i, s in enumerate(SEVERITIES)})
    frame = frame.assign(_rank=rank).sort_values(["_rank", *sort], kind="stable").drop(columns="_rank")
    return frame.reset_index(drop=True)


def in_address_list(addresses: pd.Series, entries: list[str]) -> np.ndarray:
    """Return a bool mask of addresses equal to an entry or inside an entry's prefix.

    Entries that are not addresses or prefixes (domain names) match by
    exact, case-insensitive text.
    """
    networks = []
    exact = set()
    for entry in entries:
        text = str(entry).strip()
        exact.add(text.lower())
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            continue
    return in_networks(addresses.astype(str).to_numpy(), networks, frozenset(exact))


def twin_from_records(
    devices: list[dict],
    communications: list[dict] | None = None,
    services: list[dict] | None = None,
    segments: list[dict] | None = None,
    externals: list[dict] | None = None,
    site: str = "test",
) -> Twin:
    """Build a small :class:`Twin` from plain records, filling defaults.

    Device records need ``device_id``; ``ips``, ``hostname``,
    ``device_class`` (default ``unknown``), ``criticality`` (``low``),
    ``role`` and ``segment_id`` are optional. Communication records need
    ``src_id`` and ``dst_id``; ``proto`` defaults to tcp, ``dst_port`` to
    443, ``flows`` to 1, ``bytes`` to 100, and ``src_kind``/``dst_kind``
    to ``device``.

    Examples
    --------
    >>> t = twin_from_records([{"device_id": "a"}], [{"src_id": "a", "dst_id": "a"}])
    >>> int(t.communications["dst_port"].iloc[0])
    443
    """
    dev_defaults = {
        "macs": [],
        "ips": [],
        "hostname": None,
        "device_class": "unknown",
        "criticality": "low",
        "role": None,
        "segment_id": None,
        "building": None,
    }
    dev_rows = [{**dev_defaults, **rec} for rec in devices]
    comm_defaults = {
        "src_kind": "device",
        "dst_kind": "device",
        "proto": "tcp",
        "dst_port": 443,
        "bytes": 100,
        "packets": 1,
        "flows": 1,
        "first_seen": 0.0,
        "last_seen": 0.0,
    }
    comm_rows = [{**comm_defaults, **rec} for rec in communications or []]
    svc_defaults = {"proto": "tcp", "name": None, "product": None, "version": None, "cpe": [], "tls": None}
    svc_rows = [{**svc_defaults, **rec} for rec in services or []]
    tables: dict[str, pd.DataFrame] = {"devices": pd.DataFrame(dev_rows)}
    if comm_rows:
        tables["communications"] = pd.DataFrame(comm_rows)
    if svc_rows:
        tables["services"] = pd.DataFrame(svc_rows)
    if segments:
        tables["segments"] = pd.DataFrame(segments)
    if externals:
        tables["externals"] = pd.DataFrame(externals)
    return Twin(site=site, run_id="test", built_at=0.0, tables=tables)
