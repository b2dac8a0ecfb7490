"""lldpd importer: ``lldpcli -f json`` and ``-f json0`` output.

Reads ``lldpcli show neighbors details`` and, when present in the same
file, ``lldpcli show chassis`` (several JSON documents may follow each
other in one file). lldpd writes two JSON dialects:

``json``
    An element that occurs once is an object and one that repeats is a
    list. ``"interface"`` is ``{"eth0": {...}}`` for one neighbour but
    ``[{"eth0": {...}}, {"eth1": {...}}]`` for several, and a chassis with a
    system name is keyed by that name: ``"chassis": {"sw1": {"id": ...}}``.
``json0``
    Every element is a list and every text value is wrapped as
    ``[{"value": ...}]``; names become a ``"name"`` member.

Both are read into one shape here. Each entry under ``interface`` becomes
one ``neighbor`` observation, so two neighbours on one port give two. Entries
with ``"via": "unknown"`` are the local ports of ``show interfaces`` and
are not neighbours.

The subject of every observation is the local host: the ``local-chassis``
of the same file when present (which also yields a ``device``
observation), else the ``local_hostname`` option, else the file name
without its last extension (``ward3-sw1.json`` -> ``ward3-sw1``).
"""

from __future__ import annotations

import ipaddress
import json
import logging
from pathlib import Path
from typing import Any

from twin.discovery import Raw, read_raw
from twin.discovery.mib import decode_mac
from twin.exceptions import InputFormatError
from twin.model.ifname import normalise_if_name
from twin.model.observation import (
    Identity,
    ImportResult,
    Kind,
    Observation,
    escape_text,
    normalise_hostname,
    normalise_ip,
    normalise_mac,
)

__all__ = ["SOURCE", "FORMAT", "collect", "transform", "import_file", "parse_documents"]

logger = logging.getLogger(__name__)

SOURCE = "lldpd"
FORMAT = "lldpd-json"

# lldpd chassis and port id types -> LLDP-MIB subtype names, as used by the
# SNMP importer.
ID_SUBTYPES = {
    "ifalias": "interface_alias",
    "mac": "mac_address",
    "ip": "network_address",
    "ifname": "interface_name",
    "local": "local",
}
# lldpd capability names -> LLDP capability names.
CAPABILITIES = {
    "other": "other",
    "repeater": "repeater",
    "bridge": "bridge",
    "wlan": "wlan",
    "router": "router",
    "tel": "telephone",
    "docsis": "docsis",
    "station": "station",
}
# Keys that mark an object as a chassis body rather than a {name: body} map.
_CHASSIS_KEYS = {"id", "descr", "mgmt-ip", "mgmt-iface", "capability", "name"}


def collect(path: str | Path) -> Raw:
    """Read an lldpcli JSON file (the only I/O of this module)."""
    return read_raw(path)


def import_file(path: str | Path, fmt: str | None = None, **options: Any) -> ImportResult:
    """Import one lldpcli JSON file: ``transform(collect(path))``.

    ``options`` are passed to :func:`transform`.
    """
    return transform(collect(path), fmt=fmt, **options)


def transform(
    raw: Raw,
    *,
    fmt: str | None = None,
    origin: str | None = None,
    seen_at: float | None = None,
    local_hostname: str | None = None,
) -> ImportResult:
    """Turn lldpcli JSON output into ``neighbor`` observations (pure).

    Parameters
    ----------
    raw : Raw
        File content: one or more JSON documents from ``lldpcli -f json``
        or ``-f json0`` (``show neighbors details``, ``show chassis``).
    fmt : str, optional
        ``"lldpd-json"`` or None.
    origin : str, optional
        Path recorded in observations; defaults to ``raw.path``.
    seen_at : float, optional
        Epoch seconds; defaults to ``raw.mtime``.
    local_hostname : str, optional
        Host name of the local host when the file contains no local chassis.
        Defaults to the file name without its extension.

    Returns
    -------
    ImportResult
        ``counts`` holds ``neighbors``, ``local_chassis`` and
        ``local_interfaces`` (entries of ``show interfaces``, not imported).

    Raises
    ------
    InputFormatError
        When ``fmt`` is another format, or the file holds no JSON document.
    """
    path = origin or raw.path
    seen_at = raw.mtime if seen_at is None else seen_at
    if fmt not in (None, FORMAT):
        raise InputFormatError(path, f"unknown format {fmt!r} for the lldpd importer; expected {FORMAT!r}")
    result = ImportResult(SOURCE, path)
    documents = parse_documents(raw.data, path, result)

    chassis = None
    for document in documents:
        for local in _items(document.get("local-chassis")):
            if isinstance(local, dict):
                chassis = chassis or _chassis(local.get("chassis"))

    if chassis is not None:
        subject = _chassis_identity(chassis)
        result.count("local_chassis")
        result.records_read += 1
    else:
        # Without "show chassis" output the file name is the only hint of
        # which host ran lldpcli.
        name = local_hostname or Path(path).name.rsplit(".", 1)[0]
        subject = Identity(hostname=normalise_hostname(name))

    if chassis is not None:
        attrs = {
            "hostname": subject.hostname,
            "sys_descr": _text(chassis.get("descr")),
        }
        evidence = {"lldp_local_chassis_id": _id(chassis.get("id"))[1]}
        result.observations.append(
            Observation(Kind.DEVICE, SOURCE, path, seen_at, subject, _present(attrs), _present(evidence))
        )

    for position, document in enumerate(documents):
        for lldp in _items(document.get("lldp")):
            if not isinstance(lldp, dict):
                result.skip("'lldp' element is not an object", field=f"document[{position}].lldp")
                continue
            for number, (name, body) in enumerate(_interfaces(lldp.get("interface"))):
                if not isinstance(body, dict) or name is None:
                    result.skip(
                        "neighbour entry is not an object with an interface name",
                        field=f"document[{position}].lldp.interface[{number}]",
                    )
                    continue
                _neighbor(name, body, subject, path, seen_at, result)

    logger.info(
        "imported %s: %d neighbours, %d skipped",
        path,
        result.counts.get("neighbors", 0),
        result.records_skipped,
    )
    return result


def parse_documents(data: bytes, path: str, result: ImportResult) -> list[dict[str, Any]]:
    """Return the JSON objects in ``data``, which may hold several in a row.

    Text that is not UTF-8 is kept with surrogate escapes and escaped when
    stored. A syntax error after the first document is recorded as a
    skipped record and ends parsing.

    Raises
    ------
    InputFormatError
        When the first document is not valid JSON or not an object.
    """
    text = data.decode("utf-8", errors="surrogateescape").lstrip("\ufeff")
    decoder = json.JSONDecoder()
    documents: list[dict[str, Any]] = []
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            break
        try:
            document, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            message = f"invalid JSON: {error.msg}; expected lldpcli -f json or -f json0 output"
            if not documents:
                raise InputFormatError(path, message, line=error.lineno, offset=error.pos) from None
            result.skip(message, line=error.lineno, offset=error.pos, field="JSON")
            break
        if not isinstance(document, dict):
            if not documents:
                raise InputFormatError(path, "top-level JSON value is not an object; expected {\"lldp\": ...}")
            result.skip("top-level JSON value is not an object", offset=position, field="JSON")
            continue
        documents.append(document)
    if not documents:
        raise InputFormatError(path, "no JSON document found; expected lldpcli -f json or -f json0 output")
    return documents


# --------------------------------------------------------------------------
# Dialect-neutral accessors
# --------------------------------------------------------------------------


def _items(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def _raw_value(value: Any) -> Any:
    """Unwrap json0's ``[{"value": x}]`` and json's ``{"value": x}``."""
    while True:
        if isinstance(value, list):
            if not value:
                return None
            value = value[0]
        elif isinstance(value, dict):
            if "value" not in value:
                return None
            value = value["value"]
        else:
            return value


def _text(value: Any) -> str | None:
    value = _raw_value(value)
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    text = escape_text(text.encode("utf-8", errors="surrogateescape")).strip()
    return text or None


def _texts(value: Any) -> list[str]:
    texts = []
    for item in _items(value):
        text = _text(item)
        if text is not None:
            texts.append(text)
    return texts


def _present(mapping: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if value is not None}


def _interfaces(value: Any):
    """Yield ``(interface name, body)`` for each entry under ``interface``."""
    for item in _items(value):
        if not isinstance(item, dict):
            yield None, item
        elif isinstance(item.get("name"), str) and ("via" in item or "chassis" in item or "port" in item):
            yield item["name"], item  # json0
        else:
            yield from item.items()  # json: {"eth0": {...}}


def _chassis(value: Any) -> dict[str, Any] | None:
    """Return the chassis body with its system name under ``"name"``."""
    for item in _items(value):
        if not isinstance(item, dict):
            continue
        if set(item) & _CHASSIS_KEYS:
            return item
        for name, body in item.items():
            if isinstance(body, dict):
                return {**body, "name": name}
    return None


def _id(value: Any) -> tuple[str | None, str | None]:
    """Return ``(lldpd id type, id text)`` of a chassis or port id."""
    for item in _items(value):
        if isinstance(item, dict):
            return _text(item.get("type")), _text(item.get("value"))
        return None, _text(item)
    return None, None


def _capabilities(value: Any) -> list[str]:
    names = []
    for item in _items(value):
        if not isinstance(item, dict):
            continue
        enabled = _raw_value(item.get("enabled")) if isinstance(item.get("enabled"), (list, dict)) else item.get("enabled")
        if isinstance(enabled, str):
            enabled = enabled.lower() in ("on", "yes", "true")
        name = CAPABILITIES.get((_text(item.get("type")) or "").lower())
        if enabled is True and name and name not in names:
            names.append(name)
    return names


def _identity_ips(addresses: list[str]) -> tuple[str, ...]:
    ips = []
    for text in addresses:
        ip = normalise_ip(text)
        if ip is None:
            continue
        address = ipaddress.ip_address(ip)
        if address.is_loopback or address.is_link_local or address.is_unspecified:
            continue
        if ip not in ips:
            ips.append(ip)
    return tuple(ips)


def _chassis_identity(chassis: dict[str, Any]) -> Identity:
    id_type, id_value = _id(chassis.get("id"))
    mac = normalise_mac(id_value) if id_type == "mac" else decode_mac(id_value or "", raw_bytes=False)
    return Identity(
        macs=(mac,) if mac else (),
        ips=_identity_ips(_texts(chassis.get("mgmt-ip"))),
        hostname=normalise_hostname(_text(chassis.get("name"))),
    )


def _med_evidence(value: Any) -> dict[str, Any] | None:
    """Return LLDP-MED device type and inventory, when the neighbour sent them."""
    for med in _items(value):
        if not isinstance(med, dict):
            continue
        evidence: dict[str, Any] = {"device_type": _text(med.get("device-type"))}
        for inventory in _items(med.get("inventory")):
            if isinstance(inventory, dict):
                evidence["inventory"] = {key: _text(item) for key, item in inventory.items() if _text(item) is not None}
        return _present(evidence) or None
    return None


def _neighbor(name: str, body: dict[str, Any], subject: Identity, path: str, seen_at: float, result: ImportResult) -> None:
    via = (_text(body.get("via")) or "").lower()
    if via in ("", "unknown"):
        result.count("local_interfaces")
        return

    chassis = _chassis(body.get("chassis")) or {}
    chassis_type, chassis_id = _id(chassis.get("id"))
    if chassis_type == "mac":
        remote_mac = normalise_mac(chassis_id)
    else:
        remote_mac = decode_mac(chassis_id or "", raw_bytes=False)
    port = next((item for item in _items(body.get("port")) if isinstance(item, dict)), {})
    port_type, port_id = _id(port.get("id"))

    attrs = {
        "protocol": via,
        "local_port": normalise_if_name(escape_text(name)),
        "remote_chassis_id": normalise_mac(chassis_id) if chassis_type == "mac" and remote_mac else chassis_id,
        "remote_chassis_id_subtype": ID_SUBTYPES.get(chassis_type or "", chassis_type),
        "remote_mac": remote_mac,
        "remote_port_id": normalise_mac(port_id) or port_id if port_type == "mac" else port_id,
        "remote_port_id_subtype": ID_SUBTYPES.get(port_type or "", port_type),
        "remote_port_descr": _text(port.get("descr")),
        "remote_sys_name": _text(chassis.get("name")),
        "remote_sys_descr": _text(chassis.get("descr")),
        "remote_mgmt_ips": [ip for ip in (normalise_ip(text) for text in _texts(chassis.get("mgmt-ip"))) if ip],
        "remote_capabilities": _capabilities(chassis.get("capability")),
    }
    evidence = {
        "rid": _text(body.get("rid")),
        "age": _text(body.get("age")),
        "ttl": _text(port.get("ttl")) or _text(body.get("ttl")),
        "lldp_med": _med_evidence(body.get("lldp-med")),
        "vlans": [text for text in (_text(vlan) for vlan in _items(body.get("vlan"))) if text] or None,
    }
    result.observations.append(
        Observation(Kind.NEIGHBOR, SOURCE, path, seen_at, subject, _present(attrs), _present(evidence))
    )
    result.count("neighbors")
    result.records_read += 1
