"""SNMP walk importer: snmpsim ``.snmprec`` files and net-snmp ``snmpwalk -On`` text.

Both formats parse into one ordered list of :class:`Varbind`. One pure
function, :func:`transform_varbinds`, turns such a list into observations,
so a live walk (pysnmp) can reuse it unchanged. The tables it decodes, by
numeric OID, are listed in :mod:`twin.discovery.mib`:

- SNMPv2-MIB system group and ENTITY-MIB chassis -> one ``device`` observation
  for the walked device (``snmp_agent=True``);
- IF-MIB ifTable and ifXTable, IP-MIB addresses, Q-BRIDGE-MIB PVID -> one
  ``interface`` observation per ifIndex;
- LLDP-MIB lldpRemTable and CISCO-CDP-MIB cdpCacheTable -> one ``neighbor``
  observation per remote entry;
- BRIDGE-MIB dot1dTpFdbTable and Q-BRIDGE-MIB dot1qTpFdbTable -> one ``fdb``
  observation per forwarding entry;
- IP-MIB ipNetToPhysicalTable and ipNetToMediaTable -> one ``arp``
  observation per entry.

Examples
--------
>>> from twin.discovery import Raw
>>> raw = Raw("core1.snmprec", b"1.3.6.1.2.1.1.5.0|4|core1\\n", 0.0)
>>> result = transform(raw, fmt="snmprec")
>>> result.observations[0].subject.hostname
'core1'
"""

from __future__ import annotations

import ipaddress
import logging
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, NamedTuple

from twin.discovery import Raw, read_raw
from twin.discovery import mib
from twin.discovery.mib import (
    CDP_CACHE,
    DOT1D_BASE,
    DOT1D_BASE_PORT,
    DOT1D_TP_FDB,
    DOT1Q_PORT_VLAN,
    DOT1Q_TP_FDB,
    DOT1Q_VLAN_CURRENT,
    ENT_PHYSICAL,
    IF,
    IFX,
    IP_ADDR,
    IP_ADDRESS,
    IP_NET_TO_MEDIA,
    IP_NET_TO_PHYSICAL,
    LLDP_LOC,
    LLDP_LOC_PORT,
    LLDP_REM,
    SYS,
    decode_int,
    decode_mac,
    decode_text,
)
from twin.exceptions import InputFormatError
from twin.model.ifname import normalise_if_name
from twin.model.observation import (
    Identity,
    ImportIssue,
    ImportResult,
    Kind,
    Observation,
    normalise_hostname,
    normalise_mac,
    normalise_serial,
)

__all__ = [
    "SOURCE",
    "FORMATS",
    "MAX_DEVICE_MACS",
    "Varbind",
    "collect",
    "transform",
    "import_file",
    "detect_walk_format",
    "parse_snmprec",
    "parse_snmpwalk",
    "transform_varbinds",
]

logger = logging.getLogger(__name__)

SOURCE = "snmp"
FORMATS = ("snmprec", "snmpwalk")
# Collector name and origin scheme of live walks (twin discover snmp); a
# recording of a live walk imports with the same provenance.
LIVE_COLLECTOR = "snmp-live"
LIVE_ORIGIN_SCHEME = "snmp://"

# Maximum number of MAC addresses put in the walked device's Identity
# (bridge base address first, then interface MACs in ifIndex order).
# Default 32: enough for a stack's chassis MACs while keeping a 400-port
# switch from flooding the identity index with per-port MACs.
MAX_DEVICE_MACS = 32

# Maximum WARNING log lines per import for skipped lines; the rest are
# still recorded in ImportResult.issues. Default 20.
MAX_LOGGED_SKIPS = 20

# Varbind value types. Values are int for the integer types, bytes for
# OCTET STRING, Opaque and IpAddress, a tuple of ints for OBJECT IDENTIFIER
# and None for NULL and the three exception values.
INTEGER = "Integer"
OCTET_STRING = "OctetString"
NULL = "Null"
OBJECT_IDENTIFIER = "ObjectIdentifier"
IP_ADDRESS_TYPE = "IpAddress"
COUNTER32 = "Counter32"
GAUGE32 = "Gauge32"
TIMETICKS = "TimeTicks"
OPAQUE = "Opaque"
COUNTER64 = "Counter64"
NO_SUCH_OBJECT = "NoSuchObject"
NO_SUCH_INSTANCE = "NoSuchInstance"
END_OF_MIB_VIEW = "EndOfMibView"
EXCEPTION_TYPES = frozenset({NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW})


class Varbind(NamedTuple):
    """One variable binding of a walk.

    ``line`` is the 1-based line of the file it came from, or None for a
    live walk.
    """

    oid: tuple[int, ...]
    type: str
    value: Any
    line: int | None = None


class _FieldError(ValueError):
    """A bad field in one line of a walk file."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# --------------------------------------------------------------------------
# Collect and the module entry points
# --------------------------------------------------------------------------


def collect(path: str | Path) -> Raw:
    """Read a walk file (the only I/O of this module)."""
    return read_raw(path)


def transform(
    raw: Raw,
    *,
    fmt: str | None = None,
    origin: str | None = None,
    seen_at: float | None = None,
) -> ImportResult:
    """Parse a walk file's content and turn it into observations.

    Parameters
    ----------
    raw : Raw
        Content of an ``.snmprec`` file or of ``snmpwalk -On`` output.
    fmt : {"snmprec", "snmpwalk"}, optional
        Format of ``raw``; detected from the content when None.
    origin : str, optional
        Path recorded in observations and issues; defaults to ``raw.path``.
    seen_at : float, optional
        Time of the walk in epoch seconds; defaults to ``raw.mtime``.

    Returns
    -------
    ImportResult
        Observations, per-table row counts and one issue per skipped line.

    Raises
    ------
    InputFormatError
        When ``fmt`` names no SNMP format.
    """
    path = origin or raw.path
    seen_at = raw.mtime if seen_at is None else seen_at
    text = raw.data.decode("utf-8", errors="surrogateescape")
    if fmt is None:
        fmt = detect_walk_format(text)
    if fmt not in FORMATS:
        raise InputFormatError(path, f"unknown SNMP format {fmt!r}; expected one of: {', '.join(FORMATS)}")

    parse_issues = ImportResult(SOURCE, path)
    if fmt == "snmprec":
        varbinds = parse_snmprec(text, parse_issues)
    else:
        varbinds = parse_snmpwalk(text, parse_issues)

    header = recording_header(text) if fmt == "snmprec" else None
    if header is not None and origin is None:
        # A recording of `twin discover snmp --record` imports as the live
        # walk it saved: same origin, time and provenance, so crawls and
        # file builds agree on which devices were walked and when.
        result = transform_varbinds(varbinds, path=LIVE_ORIGIN_SCHEME + header.target, seen_at=header.seen_at or seen_at)
        add_live_provenance(result, header.target, header.run_id, header.profile, header.engine_id)
        result.path = path
        if header.incomplete:
            result.issues.append(
                ImportIssue(
                    path,
                    f"the recorded walk of {header.target} did not finish {len(header.incomplete)} tables "
                    f"({', '.join(header.incomplete)}), so this device may lack interfaces, addresses or links; "
                    "crawl it again to complete it",
                )
            )
    else:
        result = transform_varbinds(varbinds, path=path, seen_at=seen_at)
    result.issues[:0] = parse_issues.issues
    result.records_skipped += parse_issues.records_skipped
    logger.info(
        "imported %s (%s): %d varbinds, %d observations, %d skipped",
        path,
        fmt,
        result.records_read,
        len(result.observations),
        result.records_skipped,
    )
    return result


class RecordingHeader(NamedTuple):
    """Provenance lines at the top of a crawl's recording (``# key: value``)."""

    target: str
    run_id: str
    seen_at: float | None
    profile: str | None
    engine_id: str | None
    # Tables the walk did not finish (cut off, failed or never reached).
    incomplete: tuple[str, ...] = ()


def recording_header(text: str) -> RecordingHeader | None:
    """Return the provenance of a ``twin discover snmp --record`` file, or None for any other walk.

    A recording starts with ``# key: value`` lines that include ``target``
    and ``run id``; ``time`` is the walk's end in ISO 8601.
    """
    fields: dict[str, str] = {}
    for line in text.split("\n", 16)[:16]:
        if not line.startswith("# "):
            break
        key, colon, value = line[2:].partition(":")
        if colon:
            fields[key.strip().lower()] = value.strip()
    if not fields.get("target") or not fields.get("run id"):
        return None
    seen_at = None
    if fields.get("time"):
        try:
            seen_at = datetime.fromisoformat(fields["time"]).timestamp()
        except ValueError:
            seen_at = None
    incomplete = tuple(name.strip() for name in fields.get("incomplete", "").split(",") if name.strip())
    return RecordingHeader(
        fields["target"], fields["run id"], seen_at, fields.get("profile") or None, fields.get("engine id") or None, incomplete
    )


def add_live_provenance(
    result: ImportResult, target: str, run_id: str, profile: str | None, engine_id: str | None
) -> None:
    """Add the live crawl's provenance (collector, crawl run id, target, profile, engine id) to every observation's evidence."""
    provenance = {"collector": LIVE_COLLECTOR, "crawl_run_id": run_id, "target": target}
    for observation in result.observations:
        observation.evidence = {**observation.evidence, **provenance}
        if observation.kind == Kind.DEVICE:
            observation.evidence["snmp_credentials"] = profile
            if engine_id:
                observation.evidence["snmp_engine_id"] = engine_id


def import_file(path: str | Path, fmt: str | None = None, **options: Any) -> ImportResult:
    """Import one walk file: ``transform(collect(path))``.

    ``options`` are passed to :func:`transform` (``origin``, ``seen_at``).
    """
    return transform(collect(path), fmt=fmt, **options)


def detect_walk_format(text: str) -> str:
    """Return ``"snmprec"`` or ``"snmpwalk"`` from the first varbind line.

    Comment lines (``#``) and blank lines are passed over. A line with a
    ``|`` and no `` = `` is snmprec; anything else is read as snmpwalk.
    """
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if "|" in stripped and " = " not in stripped:
            return "snmprec"
        return "snmpwalk"
    return "snmprec"


# --------------------------------------------------------------------------
# Parsers
# --------------------------------------------------------------------------


def _parse_oid(text: str) -> tuple[int, ...]:
    text = text.strip()
    for symbolic, arc in (("iso", "1"), ("ccitt", "0"), ("joint-iso-ccitt", "2")):
        if text == symbolic or text.startswith(symbolic + "."):
            text = arc + text[len(symbolic) :]
            break
    if text.startswith("."):
        text = text[1:]
    try:
        oid = tuple(map(int, text.split(".")))
    except ValueError:
        raise _FieldError("OID", f"invalid OID {text[:60]!r}; expected numeric dotted form such as 1.3.6.1.2.1.1.1.0") from None
    if len(oid) < 2 or any(arc < 0 for arc in oid):
        raise _FieldError("OID", f"invalid OID {text[:60]!r}; expected at least two non-negative arcs")
    return oid


def _hex_bytes(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise _FieldError("VALUE", f"invalid hex value {text[:40]!r}; expected pairs of hex digits") from None


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _FieldError("VALUE", f"invalid integer {text[:40]!r}") from None


def _ipv4_bytes(text: str) -> bytes:
    try:
        return ipaddress.IPv4Address(text.strip()).packed
    except ValueError:
        raise _FieldError("VALUE", f"invalid IpAddress {text[:40]!r}; expected dotted quad") from None


# snmprec type tag -> (type, decoder of the plain value). A tag ending in
# "x" carries the same type hex-encoded.
_SNMPREC_TYPES = {
    "2": (INTEGER, _integer),
    "4": (OCTET_STRING, lambda text: text.encode("utf-8", errors="surrogateescape")),
    "5": (NULL, lambda text: None),
    "6": (OBJECT_IDENTIFIER, lambda text: _parse_oid(text) if text else ()),
    "64": (IP_ADDRESS_TYPE, _ipv4_bytes),
    "65": (COUNTER32, _integer),
    "66": (GAUGE32, _integer),
    "67": (TIMETICKS, _integer),
    "68": (OPAQUE, lambda text: text.encode("utf-8", errors="surrogateescape")),
    "70": (COUNTER64, _integer),
}


def _snmprec_value(tag: str, value: str) -> tuple[str, Any]:
    """Decode the TYPE and VALUE fields of one snmprec line."""
    base, _, module = tag.partition(":")
    hex_encoded = base.endswith("x")
    if hex_encoded:
        base = base[:-1]
    entry = _SNMPREC_TYPES.get(base)
    if entry is None:
        raise _FieldError("TYPE", f"unknown snmprec type {tag!r}; expected one of 2, 4, 4x, 5, 6, 64, 64x, 65, 66, 67, 68, 70")
    value_type, decode = entry

    if module:
        # snmpsim variation modules (such as "2:numeric") compute the value
        # when the agent replies, and the file contains only their options. Their
        # "initial" or "value" option is the value a walk would start from.
        options = dict(item.partition("=")[::2] for item in value.split(","))
        value = options.get("initial", options.get("value"))
        if value is None:
            raise _FieldError("VALUE", f"snmpsim variation module {module!r} sets no initial value; the value is computed at run time")

    if hex_encoded:
        data = _hex_bytes(value)
        if value_type in (OCTET_STRING, OPAQUE, IP_ADDRESS_TYPE):
            return value_type, data
        return value_type, decode(data.decode("ascii", errors="replace"))
    return value_type, decode(value)


def parse_snmprec(text: str, result: ImportResult) -> list[Varbind]:
    """Parse snmpsim ``OID|TYPE|VALUE`` lines into varbinds.

    Bad lines are recorded with ``result.skip`` (line number and the field
    ``OID``, ``TYPE`` or ``VALUE``) and the rest are kept.

    Notes
    -----
    One ``str.split`` per line and no regular expressions: a 2 MB file of
    45,000 lines parses in a fraction of a second.
    """
    varbinds: list[Varbind] = []
    append = varbinds.append
    for number, line in enumerate(text.split("\n"), 1):
        if line.endswith("\r"):
            line = line[:-1]
        if not line or line[0] == "#":
            continue
        parts = line.split("|", 2)
        try:
            if len(parts) != 3:
                field = "TYPE" if len(parts) == 1 else "VALUE"
                raise _FieldError(field, "expected OID|TYPE|VALUE with two '|' separators")
            oid = _parse_oid(parts[0])
            value_type, value = _snmprec_value(parts[1].strip(), parts[2])
        except _FieldError as error:
            _skip(result, error, number)
            continue
        append(Varbind(oid, value_type, value, number))
    return varbinds


def _skip(result: ImportResult, error: _FieldError, line: int) -> None:
    result.skip(error.message, line=line, field=error.field)
    if result.records_skipped <= MAX_LOGGED_SKIPS:
        logger.warning("%s:%d field %s: %s", result.path, line, error.field, error.message)


def _quote_open(text: str) -> bool:
    """Return True when ``text`` opens a double-quoted string it does not close."""
    if not text.startswith('"'):
        return False
    escaped = False
    for char in text[1:]:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return False
    return True


def _unquote(text: str) -> str:
    body = text[1:-1] if len(text) >= 2 and text.endswith('"') else text[1:]
    return body.replace('\\"', '"').replace("\\\\", "\\")


def _walk_value(text: str) -> tuple[str, Any]:
    """Decode the value part (after `` = ``) of one snmpwalk varbind."""
    text = text.strip()
    if text.startswith('"'):
        return OCTET_STRING, _unquote(text).encode("utf-8", errors="surrogateescape")
    if text.startswith("No Such Object"):
        return NO_SUCH_OBJECT, None
    if text.startswith("No Such Instance"):
        return NO_SUCH_INSTANCE, None
    if text.startswith("No more variables left"):
        return END_OF_MIB_VIEW, None
    if text == "NULL":
        return NULL, None
    if text.startswith("Wrong Type"):
        # net-snmp prefixes a value whose type disagrees with its MIB with
        # "Wrong Type (should be X): " and prints the value as received.
        text = text.partition("): ")[2]

    tag, _, rest = text.partition(":")
    rest = rest.strip()
    if tag == "STRING":
        if rest.startswith('"'):
            return OCTET_STRING, _unquote(rest).encode("utf-8", errors="surrogateescape")
        return OCTET_STRING, rest.encode("utf-8", errors="surrogateescape")
    if tag in ("Hex-STRING", "BITS"):
        tokens = rest.split()
        if tag == "BITS":
            # "BITS: 28 00 bridge(2) router(4)": hex octets, then bit names.
            tokens = [token for token in tokens if len(token) == 2 and "(" not in token]
        return OCTET_STRING, _hex_bytes("".join(tokens))
    if tag in ("INTEGER", "UInteger32", "Counter32", "Gauge32", "Counter64", "Timeticks"):
        value_type = {
            "Counter32": COUNTER32,
            "Gauge32": GAUGE32,
            "Counter64": COUNTER64,
            "Timeticks": TIMETICKS,
        }.get(tag, INTEGER)
        if "(" in rest and ")" in rest:
            # "up(1)" and "(123) 0:00:01.23" carry the number in brackets.
            number = rest[rest.index("(") + 1 : rest.index(")")]
        else:
            number = rest.split()[0] if rest else ""
        return value_type, _integer(number)
    if tag == "IpAddress":
        return IP_ADDRESS_TYPE, _ipv4_bytes(rest)
    if tag == "Network Address":
        return IP_ADDRESS_TYPE, _hex_bytes(rest.replace(":", ""))
    if tag == "OID":
        return OBJECT_IDENTIFIER, _parse_oid(rest)
    if tag == "Opaque":
        return OPAQUE, rest.encode("utf-8", errors="surrogateescape")
    raise _FieldError("TYPE", f"unknown snmpwalk value type {tag[:30]!r}; expected STRING, Hex-STRING, INTEGER, OID, IpAddress, Timeticks, Counter32, Gauge32 or Counter64")


def _starts_varbind(line: str) -> bool:
    if " = " not in line and not line.rstrip().endswith(" ="):
        return False
    first = line[:1]
    return first == "." or first.isdigit() or line.startswith(("iso", "ccitt", "joint-iso-ccitt"))


def parse_snmpwalk(text: str, result: ImportResult) -> list[Varbind]:
    """Parse net-snmp ``snmpwalk -On`` output into varbinds.

    A value may span several lines (a quoted ``STRING`` with newlines, a
    long ``Hex-STRING``); a line that does not start a new varbind, or that
    sits inside an open quote, continues the previous one. Exception
    values (``No Such Object``, ``No more variables left in this MIB View``)
    are kept with their exception type, which :func:`transform_varbinds`
    passes over. Bad lines are recorded with ``result.skip``.
    """
    grouped: list[tuple[int, str, list[str]]] = []
    open_quote = False
    for number, line in enumerate(text.split("\n"), 1):
        if line.endswith("\r"):
            line = line[:-1]
        if open_quote or (grouped and not _starts_varbind(line)):
            if not grouped:
                continue
            grouped[-1][2].append(line)
            if open_quote:
                open_quote = _quote_open("\n".join(grouped[-1][2]))
            continue
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        oid_text, separator, value_text = line.partition(" =")
        if not separator:
            _skip(result, _FieldError("OID", "expected 'OID = TYPE: VALUE'"), number)
            continue
        value_text = value_text[1:] if value_text.startswith(" ") else value_text
        grouped.append((number, oid_text, [value_text]))
        open_quote = _quote_open(_string_body(value_text))

    varbinds: list[Varbind] = []
    for number, oid_text, lines in grouped:
        try:
            oid = _parse_oid(oid_text)
            value_type, value = _walk_value("\n".join(lines))
        except _FieldError as error:
            _skip(result, error, number)
            continue
        varbinds.append(Varbind(oid, value_type, value, number))
    return varbinds


def _string_body(value_text: str) -> str:
    """Return the quoted part of a ``STRING:`` value (or the value itself)."""
    stripped = value_text.strip()
    if stripped.startswith("STRING:"):
        return stripped[len("STRING:") :].strip()
    return stripped


# --------------------------------------------------------------------------
# Transform
# --------------------------------------------------------------------------


class _Tables:
    """Rows of the known tables: ``rows[table][index][column] = value``."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[tuple[int, ...], dict[int, Any]]] = {}
        self.lines: dict[str, dict[tuple[int, ...], int | None]] = {}

    def table(self, name: str) -> dict[tuple[int, ...], dict[int, Any]]:
        return self.rows.get(name, {})

    def scalar(self, name: str, column: int) -> Any:
        return self.rows.get(name, {}).get((0,), {}).get(column)


def _group(varbinds: Iterable, result: ImportResult) -> tuple[_Tables, int]:
    """Sort varbinds into the known tables, stopping a table at a walk loop."""
    tables = _Tables()
    last_oid: dict[str, tuple[int, ...]] = {}
    stopped: set[str] = set()
    prefixes = mib.PREFIXES
    lengths = mib.PREFIX_LENGTHS
    understood = 0
    dropped = 0

    for varbind in varbinds:
        oid, value_type, value = varbind[0], varbind[1], varbind[2]
        line = varbind[3] if len(varbind) > 3 else None
        if value_type in EXCEPTION_TYPES:
            continue
        name = None
        for length in lengths:
            name = prefixes.get(oid[:length])
            if name is not None:
                break
        if name is None:
            understood += 1
            continue
        if name in stopped:
            dropped += 1
            continue
        previous = last_oid.get(name)
        if previous is not None and oid <= previous:
            stopped.add(name)
            dropped += 1
            message = (
                f"walk loop in {name}: OID {'.'.join(map(str, oid))} does not follow "
                f"{'.'.join(map(str, previous))}; the rest of {name} is ignored. "
                "The agent returned OIDs out of order; walk it again or with lexicographic checks"
            )
            result.issues.append(ImportIssue(result.path, message, line=line, field="OID"))
            logger.warning("%s: %s", result.path, message)
            continue
        last_oid[name] = oid
        understood += 1
        length = len(mib.TABLES[name])
        if len(oid) <= length:
            continue
        index = oid[length + 1 :]
        rows = tables.rows.setdefault(name, {})
        row = rows.get(index)
        if row is None:
            row = rows[index] = {}
            tables.lines.setdefault(name, {})[index] = line
        row[oid[length]] = value

    result.records_skipped += dropped
    return tables, understood


def transform_varbinds(
    varbinds: Iterable[Varbind | tuple],
    *,
    path: str,
    seen_at: float,
) -> ImportResult:
    """Turn the varbinds of one device's walk into observations (pure).

    Parameters
    ----------
    varbinds : iterable of Varbind or (oid, type, value[, line]) tuples
        In walk order. ``oid`` is a tuple of ints; ``value`` is an int,
        bytes, a tuple of ints (OBJECT IDENTIFIER) or None; ``type`` is one
        of the type names of this module.
    path : str
        File path or collector name recorded as the observations' origin.
    seen_at : float
        Time of the walk, epoch seconds.

    Returns
    -------
    ImportResult
        ``counts`` holds the rows read per table; ``records_read`` the
        varbinds used. A table whose OIDs repeat or go backwards (a walk
        loop) stops at that point with a warning issue, and its remaining
        varbinds count as skipped.

    Notes
    -----
    Runs in O(n) for n varbinds plus O(r log r) to order r rows.
    """
    result = ImportResult(SOURCE, path)
    tables, understood = _group(varbinds, result)
    result.records_read = understood
    for name, rows in tables.rows.items():
        result.count(name, len(rows))

    context = _Context(tables, result, path, seen_at)
    context.build()
    return result


def _cdp_id(value: Any) -> tuple[str | None, str | None]:
    """Return ``(text, mac)`` for a CDP device id or port.

    Some agents (Emulex adapters seen by HP ProCurve) send six raw MAC bytes
    instead of text. A MAC sent as text, or as Cisco's ``SEP<mac>`` phone
    name, is recognised too.
    """
    if value is None:
        return None, None
    raw_bytes = isinstance(value, (bytes, bytearray)) and not mib.is_printable(bytes(value))
    mac = decode_mac(value, raw_bytes=raw_bytes)
    if raw_bytes and mac:
        return mac, mac
    return decode_text(value), mac


class _Context:
    """Lookups shared by the decoders of one walk."""

    def __init__(self, tables: _Tables, result: ImportResult, path: str, seen_at: float) -> None:
        self.tables = tables
        self.result = result
        self.path = path
        self.seen_at = seen_at
        self.subject = Identity()
        self.if_names: dict[int, str] = {}
        self.bridge_ports: dict[int, int] = {}

    # -- helpers ---------------------------------------------------------

    def observe(self, kind: Kind, attrs: dict[str, Any], evidence: dict[str, Any] | None = None) -> None:
        attrs = {key: value for key, value in attrs.items() if value is not None}
        self.result.observations.append(
            Observation(kind, SOURCE, self.path, self.seen_at, self.subject, attrs, evidence or {})
        )

    def bad_index(self, table: str, index: tuple[int, ...], expected: str) -> None:
        line = self.tables.lines.get(table, {}).get(index)
        self.result.skip(
            f"{table} row index {'.'.join(map(str, index)) or '(empty)'} is invalid; expected {expected}",
            line=line,
            field="OID",
        )

    # -- build -----------------------------------------------------------

    def build(self) -> None:
        self.bridge_ports = self._bridge_port_map()
        interfaces = self._interfaces()
        self.if_names = {index: attrs["if_name"] for index, attrs in interfaces.items() if attrs.get("if_name")}
        addresses = self._addresses()
        for if_index, ips in addresses.items():
            if if_index in interfaces:
                interfaces[if_index]["ips"] = [f"{ip}/{length}" if length is not None else ip for ip, length in ips]
        self._device(interfaces, addresses)
        for attrs in interfaces.values():
            self.observe(Kind.INTERFACE, attrs)
        self._lldp_neighbors()
        self._cdp_neighbors()
        self._fdb()
        self._arp()

    # -- bridge ports and interfaces ---------------------------------------

    def _bridge_port_map(self) -> dict[int, int]:
        ports: dict[int, int] = {}
        for index, row in self.tables.table("dot1dBasePortTable").items():
            if_index = decode_int(row.get(DOT1D_BASE_PORT.if_index))
            if len(index) == 1 and if_index:
                ports[index[0]] = if_index
        return ports

    def _interfaces(self) -> dict[int, dict[str, Any]]:
        if_rows = self.tables.table("ifTable")
        ifx_rows = self.tables.table("ifXTable")
        pvids: dict[int, int] = {}
        for index, row in self.tables.table("dot1qPortVlanTable").items():
            pvid = decode_int(row.get(DOT1Q_PORT_VLAN.pvid))
            if len(index) == 1 and pvid and index[0] in self.bridge_ports:
                pvids[self.bridge_ports[index[0]]] = pvid

        interfaces: dict[int, dict[str, Any]] = {}
        for index in sorted(set(if_rows) | set(ifx_rows)):
            if len(index) != 1:
                table = "ifTable" if index in if_rows else "ifXTable"
                self.bad_index(table, index, "one ifIndex")
                continue
            if_index = index[0]
            row = if_rows.get(index, {})
            xrow = ifx_rows.get(index, {})
            descr = decode_text(row.get(IF.descr))
            name = decode_text(xrow.get(IFX.name)) or descr
            speed = decode_int(row.get(IF.speed))
            high_speed = decode_int(xrow.get(IFX.high_speed))
            # ifSpeed saturates at 4,294,967,295 bit/s; ifHighSpeed is in Mbit/s.
            if high_speed and (speed is None or speed >= 4294967295 or speed < high_speed * 1_000_000 // 2):
                speed = high_speed * 1_000_000
            mac = decode_mac(row.get(IF.phys_address)) if row.get(IF.phys_address) else None
            interfaces[if_index] = {
                "if_index": if_index,
                "if_name": normalise_if_name(name) if name else None,
                "if_descr": descr,
                "if_alias": decode_text(xrow.get(IFX.alias)),
                "if_type": decode_int(row.get(IF.type)),
                "mac": mac if mac and mac != "00:00:00:00:00:00" else None,
                "speed": speed,
                "mtu": decode_int(row.get(IF.mtu)),
                "admin_status": mib.IF_STATUS.get(decode_int(row.get(IF.admin_status))),
                "oper_status": mib.IF_STATUS.get(decode_int(row.get(IF.oper_status))),
                "vlan": pvids.get(if_index),
            }
        return interfaces

    def _addresses(self) -> dict[int, list[tuple[str, int | None]]]:
        """Return ``{ifIndex: [(ip, prefix length)]}`` from ipAddrTable and ipAddressTable."""
        found: dict[int, list[tuple[str, int | None]]] = {}

        def add(if_index: int | None, ip: str, length: int | None) -> None:
            entries = found.setdefault(if_index or 0, [])
            for position, (known, known_length) in enumerate(entries):
                if known == ip:
                    if known_length is None and length is not None:
                        entries[position] = (ip, length)
                    return
            entries.append((ip, length))

        for index, row in self.tables.table("ipAddrTable").items():
            if len(index) != 4 or any(not 0 <= octet <= 255 for octet in index):
                self.bad_index("ipAddrTable", index, "an IPv4 address (four arcs 0-255)")
                continue
            ip = ".".join(map(str, index))
            mask = row.get(IP_ADDR.net_mask)
            length = None
            if isinstance(mask, (bytes, bytearray)) and len(mask) == 4:
                try:
                    length = ipaddress.IPv4Network(f"0.0.0.0/{ipaddress.IPv4Address(bytes(mask))}").prefixlen
                except ValueError:
                    length = None
            add(decode_int(row.get(IP_ADDR.if_index)), ip, length)

        for index, row in self.tables.table("ipAddressTable").items():
            ip, _ = mib.split_inet_index(index)
            if ip is None:
                self.bad_index("ipAddressTable", index, "InetAddressType.length.address")
                continue
            if decode_int(row.get(IP_ADDRESS.type)) == 3:  # broadcast(3)
                continue
            prefix = row.get(IP_ADDRESS.prefix)
            length = prefix[-1] if isinstance(prefix, tuple) and len(prefix) > 2 else None
            add(decode_int(row.get(IP_ADDRESS.if_index)), ip, length)
        return found

    # -- device ----------------------------------------------------------

    def _chassis(self) -> dict[int, Any]:
        rows = self.tables.table("entPhysicalTable")
        ordered = sorted(rows.items())
        for _, row in ordered:
            if decode_int(row.get(ENT_PHYSICAL.cls)) == mib.ENT_CLASS_CHASSIS:
                return row
        for _, row in ordered:
            if decode_int(row.get(ENT_PHYSICAL.contained_in)) == 0 and decode_text(row.get(ENT_PHYSICAL.serial_num)):
                return row
        return {}

    def _device(self, interfaces: dict[int, dict[str, Any]], addresses: dict[int, list]) -> None:
        tables = self.tables
        sys_descr = decode_text(tables.scalar("system", SYS.descr))
        object_id = tables.scalar("system", SYS.object_id)
        sys_object_id = ".".join(map(str, object_id)) if isinstance(object_id, tuple) and object_id else None
        sys_name = decode_text(tables.scalar("system", SYS.name))
        lldp_name = decode_text(tables.scalar("lldpLocalSystemData", LLDP_LOC.sys_name))
        hostname = normalise_hostname(sys_name) or normalise_hostname(lldp_name)

        chassis = self._chassis()
        serial = normalise_serial(decode_text(chassis.get(ENT_PHYSICAL.serial_num)))
        vendor = decode_text(chassis.get(ENT_PHYSICAL.mfg_name))
        if vendor is None and isinstance(object_id, tuple) and object_id[:6] == (1, 3, 6, 1, 4, 1) and len(object_id) > 6:
            vendor = mib.ENTERPRISE_VENDORS.get(object_id[6])
        model = decode_text(chassis.get(ENT_PHYSICAL.model_name))
        firmware = decode_text(chassis.get(ENT_PHYSICAL.software_rev)) or decode_text(chassis.get(ENT_PHYSICAL.firmware_rev))

        macs: list[str] = []
        candidates = [decode_mac(tables.scalar("dot1dBase", DOT1D_BASE.bridge_address))]
        loc_subtype = decode_int(tables.scalar("lldpLocalSystemData", LLDP_LOC.chassis_id_subtype))
        loc_chassis = tables.scalar("lldpLocalSystemData", LLDP_LOC.chassis_id)
        if loc_subtype == 4:
            candidates.append(decode_mac(loc_chassis))
        candidates += [attrs.get("mac") for _, attrs in sorted(interfaces.items())]
        for mac in candidates:
            if mib.is_unicast_mac(mac) and mac not in macs:
                macs.append(mac)
            if len(macs) >= MAX_DEVICE_MACS:
                break

        ips: list[str] = []
        for if_index in sorted(addresses):
            for ip, _ in addresses[if_index]:
                address = ipaddress.ip_address(ip)
                # Loopback, unspecified and link-local addresses do not
                # identify a device across the network.
                if address.is_loopback or address.is_unspecified or address.is_link_local:
                    continue
                if ip not in ips:
                    ips.append(ip)

        self.subject = Identity(macs=tuple(macs), ips=tuple(ips), hostname=hostname, serial=serial)
        attrs = {
            "hostname": hostname,
            "sys_descr": sys_descr,
            "sys_object_id": sys_object_id,
            "sys_location": decode_text(tables.scalar("system", SYS.location)),
            "sys_contact": decode_text(tables.scalar("system", SYS.contact)),
            "sys_services": decode_int(tables.scalar("system", SYS.services)),
            "vendor": vendor,
            "model": model,
            "firmware": firmware,
            "serial": serial,
            "snmp_agent": True,
        }
        evidence = {"sys_descr": sys_descr, "sys_object_id": sys_object_id}
        if chassis:
            evidence["ent_physical_descr"] = decode_text(chassis.get(ENT_PHYSICAL.descr))
        if loc_chassis is not None:
            evidence["lldp_local_chassis_id"] = mib.lldp_id_text(mib.LLDP_CHASSIS_SUBTYPES.get(loc_subtype), loc_chassis)[0]
        self.observe(Kind.DEVICE, attrs, {key: value for key, value in evidence.items() if value is not None})

    # -- neighbours ------------------------------------------------------

    def _name_lookup(self) -> dict[str, int]:
        lookup: dict[str, int] = {}
        for index, row in sorted(self.tables.table("ifTable").items()):
            descr = decode_text(row.get(IF.descr))
            if descr and len(index) == 1:
                lookup.setdefault(normalise_if_name(descr).lower(), index[0])
        for index, row in sorted(self.tables.table("ifXTable").items()):
            name = decode_text(row.get(IFX.name))
            if name and len(index) == 1:
                lookup[normalise_if_name(name).lower()] = index[0]
        return lookup

    def _lldp_local_ports(self) -> dict[int, tuple[int | None, str | None]]:
        """Return ``{lldpLocPortNum: (ifIndex, port name)}``.

        The port id, then the port description, is matched against ifName
        and ifDescr. When neither matches, a port number equal to an
        existing ifIndex is taken as that ifIndex.
        """
        lookup = self._name_lookup()
        known = set(self.if_names)
        ports: dict[int, tuple[int | None, str | None]] = {}
        for index, row in self.tables.table("lldpLocPortTable").items():
            if len(index) != 1:
                self.bad_index("lldpLocPortTable", index, "one lldpLocPortNum")
                continue
            subtype = mib.LLDP_PORT_SUBTYPES.get(decode_int(row.get(LLDP_LOC_PORT.port_id_subtype)))
            port_id, _ = mib.lldp_id_text(subtype, row.get(LLDP_LOC_PORT.port_id))
            port_desc = decode_text(row.get(LLDP_LOC_PORT.port_desc))
            if_index = None
            for candidate in (port_id, port_desc):
                if candidate:
                    if_index = lookup.get(normalise_if_name(candidate).lower())
                    if if_index is not None:
                        break
            if if_index is None and index[0] in known:
                if_index = index[0]
            name = self.if_names.get(if_index) if if_index is not None else None
            ports[index[0]] = (if_index, name or (normalise_if_name(port_id) if port_id else None))
        return ports

    def _lldp_neighbors(self) -> None:
        rows = self.tables.table("lldpRemTable")
        if not rows:
            return
        local_ports = self._lldp_local_ports()
        mgmt: dict[tuple[int, ...], list[str]] = {}
        for index in self.tables.table("lldpRemManAddrTable"):
            address, _ = mib.split_inet_index(index[3:])
            if len(index) < 5 or address is None:
                self.bad_index("lldpRemManAddrTable", index, "timeMark.localPort.index.addressSubtype.length.address")
                continue
            addresses = mgmt.setdefault(index[:3], [])
            if address not in addresses:
                addresses.append(address)

        for index, row in sorted(rows.items(), key=lambda item: item[0][1:] + item[0][:1]):
            if len(index) != 3:
                self.bad_index("lldpRemTable", index, "timeMark.localPortNum.index")
                continue
            port_num = index[1]
            if_index, local_name = local_ports.get(port_num, (None, None))
            if if_index is None and port_num in self.if_names:
                if_index = port_num
            if local_name is None:
                local_name = self.if_names.get(if_index) if if_index is not None else str(port_num)

            chassis_subtype = mib.LLDP_CHASSIS_SUBTYPES.get(decode_int(row.get(LLDP_REM.chassis_id_subtype)))
            chassis_id, remote_mac = mib.lldp_id_text(chassis_subtype, row.get(LLDP_REM.chassis_id))
            port_subtype = mib.LLDP_PORT_SUBTYPES.get(decode_int(row.get(LLDP_REM.port_id_subtype)))
            port_id, _ = mib.lldp_id_text(port_subtype, row.get(LLDP_REM.port_id))
            attrs = {
                "protocol": "lldp",
                "local_port": local_name,
                "local_if_index": if_index,
                "remote_chassis_id": chassis_id,
                "remote_chassis_id_subtype": chassis_subtype,
                "remote_mac": remote_mac,
                "remote_port_id": port_id,
                "remote_port_id_subtype": port_subtype,
                "remote_port_descr": decode_text(row.get(LLDP_REM.port_desc)),
                "remote_sys_name": decode_text(row.get(LLDP_REM.sys_name)),
                "remote_sys_descr": decode_text(row.get(LLDP_REM.sys_desc)),
                "remote_mgmt_ips": mgmt.get(index, []),
                "remote_capabilities": mib.decode_lldp_bits(row.get(LLDP_REM.sys_cap_enabled)),
            }
            evidence = {"lldp_rem_index": ".".join(map(str, index)), "local_port_num": port_num}
            self.observe(Kind.NEIGHBOR, attrs, evidence)

    def _cdp_neighbors(self) -> None:
        for index, row in sorted(self.tables.table("cdpCacheTable").items()):
            if len(index) != 2:
                self.bad_index("cdpCacheTable", index, "ifIndex.deviceIndex")
                continue
            if_index = index[0]
            device_id, remote_mac = _cdp_id(row.get(CDP_CACHE.device_id))
            device_port, _ = _cdp_id(row.get(CDP_CACHE.device_port))
            address = row.get(CDP_CACHE.address)
            address_type = decode_int(row.get(CDP_CACHE.address_type))
            ips = []
            # CiscoNetworkProtocol ip(1) and ipv6(20) carry 4 and 16 bytes.
            if address_type in (1, 20) and isinstance(address, (bytes, bytearray)):
                ip = mib.decode_inet_address(address)
                if ip is not None:
                    ips.append(ip)
            capabilities_raw = row.get(CDP_CACHE.capabilities)
            attrs = {
                "protocol": "cdp",
                "local_port": self.if_names.get(if_index),
                "local_if_index": if_index,
                "remote_chassis_id": device_id,
                "remote_mac": remote_mac,
                "remote_port_id": device_port,
                "remote_sys_name": device_id if device_id != remote_mac else None,
                "remote_sys_descr": decode_text(row.get(CDP_CACHE.version)),
                "remote_platform": decode_text(row.get(CDP_CACHE.platform)),
                "remote_mgmt_ips": ips,
                "remote_capabilities": mib.decode_cdp_capabilities(capabilities_raw),
            }
            evidence = {"cdp_cache_index": f"{index[0]}.{index[1]}"}
            if isinstance(capabilities_raw, (bytes, bytearray)):
                raw = bytes(capabilities_raw)
                evidence["cdp_capabilities"] = raw.decode("ascii") if mib.is_printable(raw) else raw.hex()
            self.observe(Kind.NEIGHBOR, attrs, evidence)

    # -- forwarding and ARP tables -----------------------------------------

    def _fdb_attrs(self, mac: str, port: int | None, status: int | None) -> dict[str, Any]:
        if_index = self.bridge_ports.get(port) if port else None
        return {
            "mac": mac,
            "bridge_port": port,
            "if_index": if_index,
            "if_name": self.if_names.get(if_index) if if_index is not None else None,
            "status": mib.FDB_STATUS.get(status),
        }

    def _fdb(self) -> None:
        # Statuses that are not forwarding entries for other hosts:
        # invalid(2) is being flushed and self(4) is the switch's own MAC.
        skipped_status = {2, 4}
        fdb_vlans: dict[int, set[int]] = {}
        for index, row in self.tables.table("dot1qVlanCurrentTable").items():
            fdb_id = decode_int(row.get(DOT1Q_VLAN_CURRENT.fdb_id))
            if len(index) == 2 and fdb_id is not None:
                fdb_vlans.setdefault(fdb_id, set()).add(index[1])

        seen: set[tuple[str, int | None]] = set()
        for index, row in sorted(self.tables.table("dot1qTpFdbTable").items()):
            if len(index) != 7 or any(not 0 <= octet <= 255 for octet in index[1:]):
                self.bad_index("dot1qTpFdbTable", index, "dot1qFdbId followed by a 6-arc MAC")
                continue
            status = decode_int(row.get(DOT1Q_TP_FDB.status))
            if status in skipped_status:
                continue
            fdb_id = index[0]
            vlans = fdb_vlans.get(fdb_id)
            if vlans is None:
                vlan = fdb_id
            else:
                # NOTE: with shared VLAN learning several VLANs use one FDB
                # id, so the entry's VLAN is unknown and left empty.
                vlan = next(iter(vlans)) if len(vlans) == 1 else None
            mac = normalise_mac(bytes(index[1:]))
            port = decode_int(row.get(DOT1Q_TP_FDB.port))
            attrs = self._fdb_attrs(mac, port, status)
            attrs["vlan"] = vlan
            attrs["fdb_id"] = fdb_id
            seen.add((mac, port))
            self.observe(Kind.FDB, attrs)

        # dot1dTpFdbTable repeats Q-BRIDGE entries on VLAN-aware switches;
        # it adds only (MAC, port) pairs that Q-BRIDGE did not list.
        for index, row in sorted(self.tables.table("dot1dTpFdbTable").items()):
            if len(index) != 6 or any(not 0 <= octet <= 255 for octet in index):
                self.bad_index("dot1dTpFdbTable", index, "a 6-arc MAC")
                continue
            status = decode_int(row.get(DOT1D_TP_FDB.status))
            if status in skipped_status:
                continue
            mac = normalise_mac(bytes(index))
            port = decode_int(row.get(DOT1D_TP_FDB.port))
            if (mac, port) in seen:
                continue
            self.observe(Kind.FDB, self._fdb_attrs(mac, port, status))

    def _arp(self) -> None:
        seen: set[tuple[str, int | None]] = set()
        for index, row in sorted(self.tables.table("ipNetToPhysicalTable").items()):
            ip, _ = mib.split_inet_index(index[1:])
            if len(index) < 3 or ip is None:
                self.bad_index("ipNetToPhysicalTable", index, "ifIndex.addressType.length.address")
                continue
            self._arp_entry(ip, index[0], row.get(IP_NET_TO_PHYSICAL.phys_address), row.get(IP_NET_TO_PHYSICAL.type), seen)
        for index, row in sorted(self.tables.table("ipNetToMediaTable").items()):
            if len(index) != 5 or any(not 0 <= octet <= 255 for octet in index[1:]):
                self.bad_index("ipNetToMediaTable", index, "ifIndex followed by an IPv4 address")
                continue
            ip = ".".join(map(str, index[1:]))
            self._arp_entry(ip, index[0], row.get(IP_NET_TO_MEDIA.phys_address), row.get(IP_NET_TO_MEDIA.type), seen)

    def _arp_entry(self, ip: str, if_index: int, phys: Any, arp_type: Any, seen: set) -> None:
        # An entry without a 6-byte, non-zero MAC is incomplete (ARP not
        # yet resolved) and carries no IP-to-MAC fact.
        if not isinstance(phys, (bytes, bytearray)) or len(phys) != 6 or not any(phys):
            return
        if (ip, if_index) in seen:
            return
        seen.add((ip, if_index))
        attrs = {
            "ip": ip,
            "mac": normalise_mac(bytes(phys)),
            "if_index": if_index,
            "type": mib.ARP_TYPE.get(decode_int(arp_type)),
        }
        self.observe(Kind.ARP, attrs)
