"""Devices from a CMMS asset-inventory export (CSV).

Biomedical engineering keeps medical equipment in a computerised maintenance
management system (CMMS); its CSV export is the authoritative list of managed
devices. Each row with at least one network identifier (MAC, IP address, host
name or serial number) becomes one ``device`` observation with
``managed=True``.

Headers are matched case-insensitively against common spellings
(:data:`DEFAULT_COLUMNS`); a site's ``inventory.column_map`` (field name to
header) overrides them. The delimiter (comma, semicolon or tab) is detected
from the header line, a UTF-8 byte order mark is removed, and files that are
not UTF-8 are read as Windows-1252, the usual encoding of Excel exports.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from pathlib import Path
from typing import Any

from twin.discovery import Raw, read_raw
from twin.exceptions import InputFormatError
from twin.model.observation import (
    Identity,
    ImportIssue,
    ImportResult,
    Kind,
    Observation,
    escape_text,
    normalise_hostname,
    normalise_ip,
    normalise_mac,
    normalise_serial,
)

__all__ = [
    "FORMAT",
    "SOURCE",
    "DEFAULT_COLUMNS",
    "IDENTIFIER_FIELDS",
    "collect",
    "transform",
    "import_file",
    "device_type_to_class",
]

log = logging.getLogger(__name__)

FORMAT = "inventory-csv"
SOURCE = "inventory"

# Field name -> header spellings recognised without a column_map. Headers are
# compared after lower-casing and turning every run of other characters into
# one space, so "Serial_No." matches "serial no".
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "asset_tag": ("asset tag", "asset tag number", "asset id", "asset number", "asset no", "asset", "tag",
                  "equipment id", "equipment number", "equipment no", "control number", "cmms id"),
    "serial": ("serial number", "serial no", "serial", "s n", "sn", "serial num"),
    "model": ("model", "model number", "model no", "model name"),
    "vendor": ("manufacturer", "vendor", "make", "mfr", "mfg", "manufacturer name"),
    "device_type": ("device type", "equipment type", "asset type", "device class", "equipment class",
                    "device category", "equipment category", "category", "type", "description"),
    "department": ("department", "dept", "department name", "owning department"),
    "location": ("location", "room", "area", "location name"),
    "building": ("building", "bldg", "building name", "facility"),
    "mac": ("mac address", "mac", "mac addr", "hardware address", "ethernet address", "wired mac"),
    "ip": ("ip address", "ip", "ip addr", "ipv4 address", "ipv4", "ipv6 address"),
    "hostname": ("hostname", "host name", "network name", "dns name", "device name", "computer name"),
    "status": ("status", "asset status", "equipment status", "operational status"),
    "firmware": ("firmware", "firmware version", "software version", "sw version"),
}

# Fields that identify a device on the network; a row needs at least one.
IDENTIFIER_FIELDS = ("mac", "ip", "hostname", "serial")

# Header shown for each identifier field in error messages.
_IDENTIFIER_HEADERS = {"mac": "MAC Address", "ip": "IP Address", "hostname": "Hostname", "serial": "Serial Number"}

# Delimiters tried on the header line, in order of preference on a tie.
DELIMITERS = (",", ";", "\t")

# Separators between several MAC or IP addresses in one cell.
_MULTI_VALUE = re.compile(r"[;,|\s]+")
_HEADER_NOISE = re.compile(r"[^0-9a-z]+")

# CMMS device type wording -> device class, first match wins. Order matters:
# "heat pump" is HVAC before "pump" is an infusion pump, and "gamma camera"
# is imaging before "camera" is CCTV.
_TYPE_RULES: tuple[tuple[str, str], ...] = (
    (r"\bheat pump|\bhvac\b|\bbms\b|building (management|automation)|air handl|\bahu\b|chiller|thermostat|boiler", "hvac_controller"),
    (r"nurse ?call", "nurse_call"),
    (r"dialys|\bcrrt\b|renal replacement|hemofiltrat|haemofiltrat", "dialysis_machine"),
    (r"infusion|syringe|\bpca\b|volumetric|enteral|insulin pump|\bpumps?\b", "infusion_pump"),
    (r"patient monitor|physiolog|vital signs?|telemetry|bedside monitor|central (station|monitor)|pulse ox|oximeter|\becg\b|\bekg\b|electrocardiograph|defibrillat|\baed\b|\beeg\b|electroencephalograph|fetal monitor|\bctg\b|cardiotocograph|holter|apnea monitor|apnoea monitor|capnograph", "patient_monitor"),
    (r"ventilator|respirator|\bvent\b|anaesthe|anesthe|cpap|bipap", "ventilator"),
    (r"\bct\b|\bct scanner|computed tomograph|\bcat scan", "ct_scanner"),
    (r"\bmri\b|\bmr\b|magnetic resonance", "mri_scanner"),
    (r"x-?ray|radiograph|fluoroscop|c-arm|mammograph|\bdr\b|\bcr\b|\bdexa\b|bone densit", "xray"),
    (r"ultrasound|sonograph|echocardiograph|\bultrasonic", "ultrasound"),
    (r"modality|\bpet\b|nuclear med|gamma camera|angiograph|cath(eterization)? lab|spect|imaging|endoscop", "imaging_modality"),
    (r"analy[sz]er|laboratory|\blab\b|blood gas|glucose|glucometer|point[- ]of[- ]care|\bpoct?\b|hematology|haematology|chemistry|urinalysis|coagulation|centrifuge", "lab_analyzer"),
    (r"dispens|pyxis|omnicell|medication cabinet|med(ication)? station|pharmacy", "pharmacy_dispenser"),
    (r"firewall", "firewall"),
    (r"router", "router"),
    (r"\bswitch", "switch"),
    (r"access point|\bwap\b|\bap\b|wireless controller|\bwlan\b|wi-?fi", "wireless_ap"),
    (r"badge|card reader|access control|door controller", "badge_reader"),
    (r"camera|cctv|\bnvr\b|\bdvr\b|video surveillance", "camera"),
    (r"printer|\bmfp\b|copier|label print", "printer"),
    (r"phone|voip|telephone|handset", "ip_phone"),
    (r"workstation|desktop|\bpc\b|laptop|notebook|computer|thin client|tablet|\bcow\b|\bwow\b", "workstation"),
    (r"server|\bpacs\b|\bvm\b|virtual machine|\bnas\b|storage", "server"),
    (r"sensor|temperature|humidity|environmental monitor|fridge|freezer|\brtls\b|\biot\b|\btag reader", "iot_sensor"),
)
_COMPILED_RULES = tuple((re.compile(pattern), name) for pattern, name in _TYPE_RULES)


def device_type_to_class(text: str | None) -> str | None:
    """Map a CMMS device type (free text) to a device class, or None.

    Parameters
    ----------
    text : str or None
        The equipment type as the CMMS writes it, such as ``"Infusion Pump"``,
        ``"PUMP, INFUSION, SYRINGE"`` or ``"Monitor, Physiological"``.

    Returns
    -------
    str or None
        One of ``infusion_pump``, ``patient_monitor``, ``ventilator``,
        ``ct_scanner``, ``mri_scanner``, ``xray``, ``ultrasound``,
        ``imaging_modality``, ``lab_analyzer``, ``pharmacy_dispenser``,
        ``nurse_call``, ``dialysis_machine``, ``workstation``, ``server``, ``printer``,
        ``ip_phone``, ``wireless_ap``, ``switch``, ``router``, ``firewall``,
        ``camera``, ``badge_reader``, ``hvac_controller``, ``iot_sensor``;
        None when no rule matches.

    Examples
    --------
    >>> device_type_to_class("Infusion Pump"), device_type_to_class("PUMP, SYRINGE")
    ('infusion_pump', 'infusion_pump')
    >>> device_type_to_class("Heat Pump Controller"), device_type_to_class("Gamma Camera")
    ('hvac_controller', 'imaging_modality')
    >>> device_type_to_class("Coffee machine") is None
    True
    """
    if not text:
        return None
    lowered = " ".join(text.lower().replace("_", " ").split())
    for pattern, name in _COMPILED_RULES:
        if pattern.search(lowered):
            return name
    return None


def collect(path: str | Path) -> Raw:
    """Read a CMMS CSV export with its modification time."""
    return read_raw(path)


def import_file(path: str | Path, fmt: str | None = None, **options: Any) -> ImportResult:
    """Import one CMMS CSV export: :func:`transform` of :func:`collect`."""
    return transform(collect(path), fmt=fmt, **options)


def transform(
    raw: Raw,
    *,
    fmt: str | None = None,
    origin: str | None = None,
    seen_at: float | None = None,
    column_map: dict[str, str] | None = None,
    **options: Any,
) -> ImportResult:
    """Turn CMMS export rows into ``device`` observations.

    Parameters
    ----------
    raw : Raw
        File content from :func:`collect`.
    fmt : {"inventory-csv"}, optional
        Input format; only ``inventory-csv`` is accepted.
    origin : str, optional
        Path recorded in observations and issues; defaults to ``raw.path``.
    seen_at : float, optional
        Time of the export; defaults to the file's modification time.
    column_map : dict, optional
        Field name (a key of :data:`DEFAULT_COLUMNS`) to the CSV header that
        contains it, from the site configuration's ``inventory.column_map``.
        Entries override the default spellings.
    **options
        Accepted for the common module interface; none are used.

    Returns
    -------
    ImportResult
        One observation per kept row. ``records_read`` counts data rows,
        ``records_skipped`` rows without any valid identifier, and
        ``counts`` contains ``devices`` and ``rows``. A malformed MAC or IP is
        reported with its line and column and dropped from a row that keeps
        another identifier.

    Raises
    ------
    InputFormatError
        When the header line lacks every identifier column, or a
        ``column_map`` entry names an unknown field or a missing header.
    """
    path = origin or raw.path
    if fmt not in (None, FORMAT):
        raise InputFormatError(path, f"format {fmt!r} is not read by the inventory importer; expected {FORMAT!r}")
    result = ImportResult(source=SOURCE, path=path, counts={"rows": 0, "devices": 0})
    text = _decode(raw.data, path, result)
    if not text.strip():
        raise InputFormatError(path, "empty file; expected a CSV export with a header line", line=1)

    delimiter = _sniff_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        headers = next(reader)
    except csv.Error as exc:
        raise InputFormatError(path, f"cannot read the header line ({exc}); expected a CSV header", line=1) from None
    columns = _map_columns(headers, column_map or {}, path)
    when = seen_at if seen_at is not None else raw.mtime

    previous_end = reader.line_num
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.skip(f"malformed CSV ({exc}); row skipped", line=reader.line_num)
            previous_end = reader.line_num
            continue
        line = previous_end + 1
        previous_end = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        result.records_read += 1
        result.count("rows")
        if len(cells) > len(headers) and any(cell.strip() for cell in cells[len(headers):]):
            result.skip(
                f"expected {len(headers)} fields as in the header line, found {len(cells)}; "
                "check for an unquoted delimiter in a value",
                line=line,
            )
            continue
        observation = _read_row(cells, headers, columns, line, path, when, result)
        if observation is not None:
            result.observations.append(observation)
            result.count("devices")

    log.info(
        "imported inventory %s: %d rows, %d devices, %d skipped",
        path, result.counts["rows"], result.counts["devices"], result.records_skipped,
    )
    return result


# --------------------------------------------------------------------------
# File-level steps


def _decode(data: bytes, path: str, result: ImportResult) -> str:
    """Decode UTF-8 (with or without BOM), falling back to Windows-1252."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        result.issues.append(
            ImportIssue(
                path,
                "file is not UTF-8; read as Windows-1252 (save the export as UTF-8 CSV to avoid guessing)",
                line=line,
                offset=exc.start,
                severity="info",
            )
        )
        # Bytes Windows-1252 leaves undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D) stay visible as \xNN.
        text = data.decode("cp1252", errors="backslashreplace")
    return text.replace("\x00", "\\x00")


def _sniff_delimiter(text: str) -> str:
    header = text.split("\n", 1)[0]
    counts = [(header.count(delimiter), -rank, delimiter) for rank, delimiter in enumerate(DELIMITERS)]
    best = max(counts)
    return best[2] if best[0] > 0 else ","


def _header_key(header: str) -> str:
    return _HEADER_NOISE.sub(" ", header.lower()).strip()


def _map_columns(headers: list[str], column_map: dict[str, str], path: str) -> dict[str, int]:
    """Return field name -> column index, from ``column_map`` then the defaults."""
    keys = [_header_key(h) for h in headers]
    shown = ", ".join(repr(h) for h in headers)
    columns: dict[str, int] = {}
    for name, header in column_map.items():
        if name not in DEFAULT_COLUMNS:
            raise InputFormatError(
                path,
                f"inventory.column_map names unknown field {name!r}; valid fields: {', '.join(DEFAULT_COLUMNS)}",
                field=name,
            )
        wanted = _header_key(header)
        if wanted not in keys:
            raise InputFormatError(
                path,
                f"inventory.column_map maps {name!r} to header {header!r}, which the file lacks; "
                f"headers found: {shown}",
                line=1,
                field=header,
            )
        columns[name] = keys.index(wanted)
    for name, spellings in DEFAULT_COLUMNS.items():
        if name in columns:
            continue
        for spelling in spellings:
            if spelling in keys and keys.index(spelling) not in columns.values():
                columns[name] = keys.index(spelling)
                break
    if not any(name in columns for name in IDENTIFIER_FIELDS):
        expected = ", ".join(repr(_IDENTIFIER_HEADERS[name]) for name in IDENTIFIER_FIELDS)
        raise InputFormatError(
            path,
            f"no identifier column among the headers ({shown}); expected at least one of {expected} "
            "(compared case-insensitively, with common variants such as 'MAC' or 'Serial No'). "
            "If the export names them differently, map them with inventory.column_map in the site "
            "configuration (field name to header, for example mac: 'NIC MAC')",
            line=1,
        )
    return columns


# --------------------------------------------------------------------------
# Rows


def _read_row(
    cells: list[str],
    headers: list[str],
    columns: dict[str, int],
    line: int,
    path: str,
    seen_at: float,
    result: ImportResult,
) -> Observation | None:
    def cell(name: str) -> str | None:
        index = columns.get(name)
        if index is None or index >= len(cells):
            return None
        value = escape_text(cells[index]).strip()
        return value or None

    dropped: list[tuple[str, str, str]] = []  # (header, value, reason)
    macs = _addresses(cell("mac"), normalise_mac, "MAC address", headers, columns.get("mac"), dropped)
    ips = _addresses(cell("ip"), normalise_ip, "IP address", headers, columns.get("ip"), dropped)
    hostname = normalise_hostname(cell("hostname"))
    serial = normalise_serial(cell("serial"))
    identity = Identity(macs=tuple(macs), ips=tuple(ips), hostname=hostname, serial=serial)

    if identity.is_empty():
        if dropped:
            reasons = "; ".join(f"{reason} in column {header!r}" for header, _, reason in dropped)
            result.skip(f"row skipped: {reasons}, and no other identifier (MAC, IP, host name, serial)",
                        line=line, field=dropped[0][0])
        else:
            result.skip("row skipped: no identifier (MAC, IP, host name or serial number is required)", line=line)
        return None
    kept = _identity_words(identity)
    for header, _, reason in dropped:
        result.issues.append(
            ImportIssue(path, f"{reason}; value dropped, row kept with {kept}", line=line, field=header)
        )

    device_type = cell("device_type")
    attrs: dict[str, Any] = {
        "asset_tag": cell("asset_tag"),
        "serial": serial,
        "model": cell("model"),
        "vendor": cell("vendor"),
        "device_class": device_type,
        "department": cell("department"),
        "location": cell("location"),
        "building": cell("building"),
        "managed": True,
    }
    if hostname:
        attrs["hostname"] = hostname
    for optional in ("firmware", "status"):
        value = cell(optional)
        if value:
            attrs[optional] = value
    evidence = {
        "row": {escape_text(h): escape_text(cells[i]) for i, h in enumerate(headers) if i < len(cells) and cells[i].strip()},
        "device_class_mapped": device_type_to_class(device_type),
    }
    return Observation(Kind.DEVICE, SOURCE, f"{path}:{line}", seen_at, identity, attrs=attrs, evidence=evidence)


def _addresses(value, normalise, label, headers, index, dropped) -> list[str]:
    if not value:
        return []
    found = []
    for part in _MULTI_VALUE.split(value) if label == "IP address" or not normalise(value) else [value]:
        if not part:
            continue
        normalised = normalise(part)
        if normalised is None:
            dropped.append((headers[index], part, f"{label} {part!r} is malformed"))
        elif normalised not in found:
            found.append(normalised)
    return found


def _identity_words(identity: Identity) -> str:
    words = []
    if identity.macs:
        words.append(f"MAC {', '.join(identity.macs)}")
    if identity.ips:
        words.append(f"IP {', '.join(identity.ips)}")
    if identity.hostname:
        words.append(f"host name {identity.hostname}")
    if identity.serial:
        words.append(f"serial {identity.serial}")
    return " and ".join(words)
