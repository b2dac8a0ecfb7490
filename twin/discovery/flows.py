"""Flow records from files: Zeek conn.log (TSV and JSON lines), nfdump CSV, captures and IPFIX files.

Packet captures (pcap, pcapng) and IPFIX files (RFC 5655) are read by
:mod:`twin.discovery.pcap` and :mod:`twin.discovery.netflow` and summed by
:class:`twin.discovery.flowagg.Aggregator`, which also returns hourly buckets
(``ImportResult.flow_hours``). A capture with UDP datagrams to or from one of
the export ports (``export_ports``, by default :data:`DEFAULT_EXPORT_PORTS`)
is read as flow exports. Any other capture is read as raw traffic, one flow
per session. The rest of this page is about the two text formats.

Both formats become one DataFrame with the columns in
:data:`twin.model.observation.FLOW_COLUMNS`: one row per
(``src_ip``, ``dst_ip``, ``proto``, ``dst_port``) with the bytes, packets and
flow count summed, the earliest start as ``first_seen`` and the latest end
(start plus duration) as ``last_seen``. The twin turns these rows into
``COMMUNICATES_WITH`` relationships.

Conventions
-----------
* ``bytes`` is the payload in both directions: Zeek ``orig_bytes +
  resp_bytes``, nfdump ``ibyt + obyt``; ``packets`` likewise. Unset counters
  count as 0.
* ``proto`` is a lower-case name (``tcp``, ``udp``, ``icmp``). ICMP for IPv4
  and IPv6 are both ``icmp``, as Zeek writes them, and nfdump protocol numbers
  become names (:data:`IP_PROTOCOLS`).
* ``dst_port`` is 0 for protocols without ports. Zeek stores the ICMP type in
  ``id.orig_p`` and the code in ``id.resp_p``, and nfdump encodes them in
  ``dp``. Neither is a port, so every ICMP flow of a pair aggregates to port 0.
* Addresses are in canonical text form (IPv6 compressed, lower-case). A row
  whose address is not an IP address is skipped and reported.

Speed
-----
Files are parsed with ``pyarrow.csv`` and ``pyarrow.json``. The address and
protocol fields of a Zeek TSV file are read as dictionary arrays, so each
distinct value is normalised once. The four keys are packed into one integer
per row and summed with NumPy. ``bench/bench_zeek_import.py`` times the
import against a bare ``pyarrow.csv.read_csv`` of the same file. On 2,000,000
lines and a shared 2-core machine, the import took about 0.72 s and the bare
read 0.48 to 0.70 s. Most of the difference is the copy of the file into
memory (``collect``) and the hash of the keys. Rows that pyarrow rejects (wrong field count, a counter
that is not a number) are reported with their line number. When a value cannot
be converted at all, the file is read again as text and checked column by
column, which is slower but keeps every good row.
"""

from __future__ import annotations

import mmap

import codecs
import ipaddress
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from twin.discovery import Raw, read_raw
from twin.exceptions import InputFormatError
from twin.model.observation import FLOW_COLUMNS, ImportIssue, ImportResult, escape_text

__all__ = [
    "CAPTURE_FORMATS",
    "DEFAULT_EXPORT_PORTS",
    "FORMATS",
    "IP_PROTOCOLS",
    "MAX_ROW_ISSUES",
    "collect",
    "transform",
    "import_capture",
    "import_file",
    "protocol_name",
]

log = logging.getLogger(__name__)

# Formats this module reads.
FORMATS = ("zeek-conn", "nfdump-csv", "pcap", "pcapng", "ipfix")
# Binary formats, read by twin.discovery.pcap and twin.discovery.netflow.
CAPTURE_FORMATS = ("pcap", "pcapng", "ipfix")
# UDP ports whose datagrams in a capture are flow exports unless the caller
# passes others: NetFlow 2055, 9995, 9996, IPFIX 4739, sFlow 6343. The site
# setting flows.export_ports has the same default.
DEFAULT_EXPORT_PORTS = (2055, 4739, 6343, 9995, 9996)

# Skipped rows reported one by one per file (default 1000). Further skipped
# rows are still counted in ImportResult.records_skipped and summed up in one
# last issue, so a corrupt file cannot flood the report.
MAX_ROW_ISSUES = 1000

# Bytes per block that pyarrow parses in one go (default 16 MiB). Larger
# blocks use fewer threads on small files and more memory on big ones.
BLOCK_SIZE = 16 << 20

# IANA protocol numbers to the names used in the twin. 58 (ICMPv6) is "icmp",
# as in Zeek, so the same traffic reads the same from both sources.
IP_PROTOCOLS = {
    1: "icmp",
    2: "igmp",
    4: "ipip",
    6: "tcp",
    17: "udp",
    41: "ipv6",
    47: "gre",
    50: "esp",
    51: "ah",
    58: "icmp",
    88: "eigrp",
    89: "ospf",
    103: "pim",
    112: "vrrp",
    132: "sctp",
}

# Protocol names that other tools print, mapped to the twin's names.
_PROTOCOL_ALIASES = {"icmp6": "icmp", "ipv6-icmp": "icmp", "icmpv6": "icmp"}

# Protocols whose flows carry no destination port.
_PORTLESS = ("icmp", "igmp", "gre", "esp", "ah", "ospf", "pim", "vrrp", "eigrp", "ipip", "ipv6")

# Zeek conn.log fields the importer reads, and their Arrow types.
_ZEEK_TYPES = {
    "ts": pa.float64(),
    "id.orig_h": pa.string(),
    "id.resp_h": pa.string(),
    "id.resp_p": pa.int64(),
    "proto": pa.string(),
    "duration": pa.float64(),
    "orig_bytes": pa.int64(),
    "resp_bytes": pa.int64(),
    "orig_pkts": pa.int64(),
    "resp_pkts": pa.int64(),
}
_ZEEK_REQUIRED = ("ts", "id.orig_h", "id.resp_h", "id.resp_p", "proto")
# Text fields the TSV fast path reads as dictionary arrays. They repeat a few
# thousand values over millions of rows, so each distinct value is stored,
# lowered and checked once, and the aggregate works on integer codes.
_ZEEK_DICTIONARY_FIELDS = ("id.orig_h", "id.resp_h", "proto")
_TEXT_DICTIONARY = pa.dictionary(pa.int32(), pa.string())
_ZEEK_NAMES = {"start": "ts", "src_ip": "id.orig_h", "dst_ip": "id.resp_h", "dst_port": "id.resp_p", "proto": "proto"}

# nfdump CSV column names (1.6 short names first, then longer spellings of
# other versions) for each value the importer reads.
# NOTE: only the 1.6-style header (ts,te,td,sa,da,...) is tested; the longer
# spellings (firstSeen, srcAddr, ...) are a best guess at newer nfdump output.
_NFDUMP_ALIASES = {
    "start": ("ts", "firstseen", "first_seen", "tstart"),
    "end": ("te", "lastseen", "last_seen", "tend"),
    "duration": ("td", "duration"),
    "src_ip": ("sa", "srcaddr", "src_addr", "srcip"),
    "dst_ip": ("da", "dstaddr", "dst_addr", "dstip"),
    "dst_port": ("dp", "dstport", "dst_port"),
    "proto": ("pr", "proto", "protocol"),
    "in_packets": ("ipkt", "inpackets", "in_packets", "packets"),
    "in_bytes": ("ibyt", "inbytes", "in_bytes", "bytes"),
    "out_packets": ("opkt", "outpackets", "out_packets"),
    "out_bytes": ("obyt", "outbytes", "out_bytes"),
}
_NFDUMP_REQUIRED = ("start", "src_ip", "dst_ip", "dst_port", "proto")

_INT_TEXT = re.compile(r"^\s*[+-]?\d+\s*$")
_FLOAT_TEXT = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")
# An IPv4 address already in canonical form (no leading zeros, no spaces),
# which ipaddress would return unchanged.
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = rf"^{_OCTET}(\.{_OCTET}){{3}}$"


@dataclass
class _Problems:
    """Skipped rows found while parsing, before they reach the ImportResult."""

    rows: list[tuple[int | None, str | None, str]] = field(default_factory=list)
    # Common column name (src_ip, start, ...) -> the file's own column name.
    names: dict[str, str] = field(default_factory=dict)

    def add(self, line: int | None, column: str | None, message: str) -> None:
        self.rows.append((line, self.names.get(column, column) if column else None, message))


# --------------------------------------------------------------------------
# Module steps


def collect(path: str | Path) -> Raw:
    """Map a flow file (Zeek conn.log or nfdump CSV) into memory, with its modification time.

    A read-only memory map behaves as ``bytes`` for slicing and searching and
    lets pyarrow parse the file without first copying hundreds of MB.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            return read_raw(path)
        with path.open("rb") as handle:
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        return Raw(str(path), data, path.stat().st_mtime)
    except OSError as exc:
        raise InputFormatError(path, f"cannot read file: {exc.strerror}; check the path and permissions") from None


def import_file(path: str | Path, fmt: str | None = None, **options: Any) -> ImportResult:
    """Import one flow file: :func:`transform` of :func:`collect`.

    Captures and IPFIX files are read from ``path`` directly, because their
    readers map the file themselves (see :func:`import_capture`).
    """
    if fmt in CAPTURE_FORMATS:
        return import_capture(path, fmt, **options)
    return transform(collect(path), fmt=fmt, **options)


def transform(
    raw: Raw,
    *,
    fmt: str | None = None,
    origin: str | None = None,
    seen_at: float | None = None,
    **options: Any,
) -> ImportResult:
    """Parse flow records and aggregate them per (src_ip, dst_ip, proto, dst_port).

    Parameters
    ----------
    raw : Raw
        File content from :func:`collect`.
    fmt : {"zeek-conn", "nfdump-csv"}, optional
        Input format; detected from the first bytes when omitted. Zeek TSV
        and JSON lines are distinguished by content.
    origin : str, optional
        Path recorded in issues; defaults to ``raw.path``.
    seen_at : float, optional
        Unused: every flow carries its own time. Accepted for the common
        module interface.
    **options
        ``timezone`` (nfdump only, default ``"UTC"``): the time zone of the
        nfdump text times, which nfdump prints in the local time of the host
        that ran it.

    Returns
    -------
    ImportResult
        ``flows`` is a DataFrame with :data:`FLOW_COLUMNS`, ``observations``
        is empty, ``records_read`` counts flow rows kept, ``records_skipped``
        the rejected ones, ``counts`` holds ``flows`` (rows kept) and
        ``edges`` (rows of the aggregate).

    Raises
    ------
    InputFormatError
        When the file is not a flow file of the format or lacks a required
        column.

    Notes
    -----
    Time and memory are linear in the file size; the aggregate is usually far
    smaller than the input. A row whose address is invalid is only found after
    the fast parse, and its line number is then recovered by a Python scan of
    the file.
    """
    path = origin or raw.path
    if fmt in CAPTURE_FORMATS:
        # NOTE: binary files are read again from raw.path, not from raw.data.
        return import_capture(raw.path, fmt, **options)
    fmt = fmt or _sniff_format(raw.data)
    if fmt not in FORMATS:
        raise InputFormatError(path, f"format {fmt!r} is not a flow format; expected one of {', '.join(FORMATS)}")

    problems = _Problems()
    if not isinstance(raw.data, bytes) and (_looks_like_json(raw.data) or fmt != "zeek-conn"):
        # Only the Zeek TSV path reads a memory map in place; the others need bytes.
        raw = Raw(raw.path, bytes(raw.data), raw.mtime)
    locator = _LineLocator(raw.data)
    if fmt == "zeek-conn":
        source = "zeek"
        if _looks_like_json(raw.data):
            table = _read_zeek_json(raw.data, path, problems)
        else:
            table = _read_zeek_tsv(raw.data, path, problems, locator)
    else:
        source = "nfdump"
        table = _read_nfdump_csv(raw.data, path, problems, locator, options.get("timezone", "UTC"))

    result = ImportResult(source=source, path=path)
    flows, kept = _aggregate(table, problems, locator)
    for line, column, message in problems.rows:
        _skip(result, message, line=line, field=column)
    if result.records_skipped > MAX_ROW_ISSUES:
        result.issues.append(
            _summary_issue(path, result.records_skipped - MAX_ROW_ISSUES)
        )

    result.flows = flows
    result.records_read = kept
    result.counts = {"flows": kept, "edges": len(flows)}
    log.info(
        "imported %s flows from %s: %d rows, %d edges, %d skipped",
        source, path, kept, len(flows), result.records_skipped,
    )
    return result


def import_capture(
    path: str | Path,
    fmt: str = "pcap",
    *,
    export_ports: Iterable[int] | None = None,
    **options: Any,
) -> ImportResult:
    """Import a pcap or pcapng capture, or an IPFIX file, as aggregated flows.

    Parameters
    ----------
    path : path
        The file.
    fmt : {"pcap", "pcapng", "ipfix"}
        ``pcap`` and ``pcapng`` are read alike, whichever the file is.
    export_ports : iterable of int, optional
        UDP ports of flow exports in captures; default
        :data:`DEFAULT_EXPORT_PORTS`.
    **options
        ``max_keys`` and ``not_devices`` for the :class:`Aggregator`.

    Returns
    -------
    ImportResult
        ``source`` is ``netflow`` for flow exports and IPFIX files and
        ``pcap`` for raw traffic. ``flows`` contains the edges, ``flow_hours``
        the hourly buckets, ``records_read`` the flow records (sessions for
        raw traffic). Damaged parts are issues counted in
        ``records_skipped``; facts such as an empty capture or a port that
        seems to carry flow exports are issues of severity ``info``.

    Raises
    ------
    InputFormatError
        When the file is empty, unreadable or not a capture.
    """
    from twin.discovery import flowagg, pcap
    from twin.discovery.netflow import read_ipfix_file

    path = Path(path)
    ports = set(DEFAULT_EXPORT_PORTS if export_ports is None else export_ports)
    if fmt == "ipfix":
        if path.exists() and path.stat().st_size == 0:
            raise InputFormatError(path, "empty file (0 bytes); expected an IPFIX file (RFC 5655)")
        records, problems, decoder_counters = read_ipfix_file(path)
        counters = {key: value for key, value in decoder_counters.as_dict().items() if isinstance(value, int)}
        read = pcap.CaptureRead(str(path), "flow-export", records, list(problems), [], counters)
    elif fmt in ("pcap", "pcapng"):
        read = pcap.read_capture(path, ports)
    else:
        raise InputFormatError(path, f"format {fmt!r} is not a capture format; expected one of {', '.join(CAPTURE_FORMATS)}")

    aggregator = flowagg.Aggregator(**{key: options[key] for key in ("max_keys", "not_devices") if key in options})
    aggregator.add(read.records)
    edges, hours = aggregator.edges(), aggregator.hours()

    result = ImportResult(source="netflow" if read.kind == "flow-export" else "pcap", path=str(path))
    result.flows = edges
    result.flow_hours = hours
    result.records_read = read.records.num_rows
    for problem in read.problems:
        _skip(result, problem.message, offset=problem.offset, field=problem.field)
    if result.records_skipped > MAX_ROW_ISSUES:
        result.issues.append(_summary_issue(str(path), result.records_skipped - MAX_ROW_ISSUES))
    notes = [note.message for note in read.notes]
    undecodable = read.counters.get("undecodable", 0)
    if undecodable:
        notes.append(
            f"{undecodable} data sets were not decoded because their template never arrived; when templates and "
            "data are in separate captures, merge them in time order first (mergecap -w merged.pcap a.pcap b.pcap)"
        )
    templates = read.counters.get("templates", 0)
    if templates and not read.records.num_rows and not undecodable:
        notes.append(
            f"the capture holds {templates} templates and no flow records; its data may be in another capture, "
            "so merge them in time order (mergecap -w merged.pcap a.pcap b.pcap)"
        )
    for message in notes:
        result.issues.append(ImportIssue(str(path), message, severity="info"))

    result.counts = {
        "flows": read.records.num_rows,
        "edges": len(edges),
        "hour_buckets": len(hours),
        **{key: value for key, value in read.counters.items() if value},
        **{key: aggregator.counters[key] for key in ("not_device_destinations", "direction_flipped", "evicted") if aggregator.counters[key]},
    }
    log.info(
        "imported %s %s: %d flow records, %d edges, %d problems",
        read.kind, path, read.records.num_rows, len(edges), len(read.problems),
    )
    return result


def protocol_name(value: str | int | None) -> str | None:
    """Return the twin's lower-case name for a protocol number or name.

    >>> protocol_name(6), protocol_name("17"), protocol_name("ICMP6"), protocol_name(200)
    ('tcp', 'udp', 'icmp', '200')
    """
    if value is None:
        return None
    text = str(value).strip().lower()
    if not text:
        return None
    if text.isdigit():
        return IP_PROTOCOLS.get(int(text), text)
    return _PROTOCOL_ALIASES.get(text, text)


# --------------------------------------------------------------------------
# Format detection and line numbers


def _sniff_format(data: bytes) -> str:
    head = data[:4096].lstrip(b"\xef\xbb\xbf").lstrip()
    if head.startswith(b"#separator") or head.startswith(b"#fields") or _looks_like_json(data):
        return "zeek-conn"
    return "nfdump-csv"


def _looks_like_json(data: bytes) -> bool:
    return data[:4096].lstrip(b"\xef\xbb\xbf").lstrip().startswith(b"{")


class _LineLocator:
    """Map byte offsets and row texts of one file to 1-based line numbers."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._newlines: np.ndarray | None = None
        self._cursor: dict[bytes, int] = {}

    def rewind(self) -> None:
        """Forget the rows found so far, before a second read of the file."""
        self._cursor.clear()

    def line_of_offset(self, offset: int) -> int:
        if self._newlines is None:
            buffer = np.frombuffer(self.data, dtype=np.uint8)
            self._newlines = np.flatnonzero(buffer == 0x0A)
        return int(np.searchsorted(self._newlines, offset, side="left")) + 1

    def line_of_text(self, text: str) -> int | None:
        """Find the next line whose content is ``text``, in file order per text."""
        needle = text.encode("utf-8", errors="surrogateescape")
        start = self._cursor.get(needle, 0)
        while True:
            found = self.data.find(needle, start)
            if found < 0:
                return None
            at_start = found == 0 or self.data[found - 1 : found] == b"\n"
            end = found + len(needle)
            at_end = end >= len(self.data) or self.data[end : end + 1] in (b"\n", b"\r")
            if at_start and at_end:
                self._cursor[needle] = end
                return self.line_of_offset(found)
            start = found + 1


def _skip(result: ImportResult, message: str, *, line=None, offset=None, field=None) -> None:
    if result.records_skipped < MAX_ROW_ISSUES:
        result.skip(message, line=line, offset=offset, field=field)
    else:
        result.records_skipped += 1


def _summary_issue(path: str, extra: int) -> ImportIssue:
    return ImportIssue(
        path,
        f"{extra} more skipped rows are not listed one by one (MAX_ROW_ISSUES is {MAX_ROW_ISSUES})",
    )


# --------------------------------------------------------------------------
# Zeek TSV


@dataclass
class _ZeekHeader:
    separator: str = "\t"
    set_separator: str = ","
    empty_field: str = "(empty)"
    unset_field: str = "-"
    fields: list[str] = field(default_factory=list)
    lines: int = 0


def _parse_zeek_header(data: bytes, path: str) -> _ZeekHeader:
    header = _ZeekHeader()
    position = 0
    while position < len(data) and data[position : position + 1] == b"#":
        end = data.find(b"\n", position)
        end = len(data) if end < 0 else end
        line = data[position:end].rstrip(b"\r").decode("utf-8", errors="backslashreplace")
        position = end + 1
        header.lines += 1
        if line.startswith("#separator"):
            value = line[len("#separator") :].strip()
            header.separator = codecs.decode(value, "unicode_escape") if value else "\t"
            continue
        key, _, value = line.partition(header.separator)
        if key == "#fields":
            header.fields = value.split(header.separator)
        elif key == "#set_separator":
            header.set_separator = value
        elif key == "#empty_field":
            header.empty_field = value
        elif key == "#unset_field":
            header.unset_field = value
    if not header.fields:
        raise InputFormatError(
            path,
            "no '#fields' header line; expected a Zeek conn.log written by Zeek's ASCII writer "
            "(lines '#separator', '#fields', '#types' before the data) or JSON lines",
            line=header.lines + 1,
        )
    missing = [name for name in _ZEEK_REQUIRED if name not in header.fields]
    if missing:
        raise InputFormatError(
            path,
            f"the '#fields' header lacks {', '.join(missing)}; expected a conn.log with at least "
            f"{', '.join(_ZEEK_REQUIRED)} (is this another Zeek log?)",
            field=missing[0],
        )
    if len(header.separator) != 1:
        raise InputFormatError(
            path,
            f"separator {header.separator!r} is not one character; expected the default tab",
            line=1,
        )
    return header


def _read_zeek_tsv(data: bytes, path: str, problems: _Problems, locator: _LineLocator) -> pa.Table:
    problems.names = dict(_ZEEK_NAMES)
    header = _parse_zeek_header(data, path)
    wanted = [name for name in _ZEEK_TYPES if name in header.fields]
    null_values = [header.unset_field, header.empty_field]

    def on_invalid_row(row) -> str:
        text = row.text
        if text.startswith("#"):
            return "skip"  # footer (#close) or a header repeated by log rotation
        line = locator.line_of_text(text)
        problems.add(
            line, None,
            f"expected {row.expected_columns} tab-separated fields as in the '#fields' header, found {row.actual_columns}",
        )
        return "skip"

    read_options = pacsv.ReadOptions(skip_rows=header.lines, column_names=header.fields, block_size=BLOCK_SIZE)
    parse_options = pacsv.ParseOptions(
        delimiter=header.separator, quote_char=False, escape_char=False, invalid_row_handler=on_invalid_row
    )
    convert_options = pacsv.ConvertOptions(
        include_columns=wanted,
        column_types={name: _TEXT_DICTIONARY if name in _ZEEK_DICTIONARY_FIELDS else _ZEEK_TYPES[name] for name in wanted},
        null_values=null_values,
        strings_can_be_null=True,
        check_utf8=False,
    )
    try:
        table = pacsv.read_csv(pa.BufferReader(data), read_options, parse_options, convert_options)
    except pa.ArrowInvalid as exc:
        log.info("fast parse of %s failed (%s); checking it column by column", path, exc)
        problems.rows.clear()
        locator.rewind()
        # The careful path splits lines, which a memory map cannot.
        table = _read_zeek_tsv_careful(bytes(data), header, wanted, path, problems, locator)

    return _zeek_to_flows(table, problems, locator)


def _read_zeek_tsv_careful(
    data: bytes, header: _ZeekHeader, wanted: list[str], path: str, problems: _Problems, locator: _LineLocator
) -> pa.Table:
    """Read every wanted column as text, then convert each and drop bad rows."""

    def on_invalid_row(row) -> str:
        if row.text.startswith("#"):
            return "skip"
        problems.add(
            locator.line_of_text(row.text), None,
            f"expected {row.expected_columns} tab-separated fields as in the '#fields' header, found {row.actual_columns}",
        )
        return "skip"

    table = pacsv.read_csv(
        pa.BufferReader(data),
        pacsv.ReadOptions(skip_rows=header.lines, column_names=header.fields, block_size=BLOCK_SIZE),
        pacsv.ParseOptions(delimiter=header.separator, quote_char=False, escape_char=False, invalid_row_handler=on_invalid_row),
        pacsv.ConvertOptions(
            include_columns=wanted,
            column_types={name: pa.string() for name in wanted},
            null_values=[header.unset_field, header.empty_field],
            strings_can_be_null=True,
            check_utf8=False,
        ),
    )
    row_lines = _data_row_lines(data, header.lines, header.separator, len(header.fields))
    keep = np.ones(table.num_rows, dtype=bool)
    columns = {}
    for name in wanted:
        target = _ZEEK_TYPES[name]
        column = table[name]
        if target == pa.string():
            columns[name] = column
            continue
        converted, bad = _convert_text(column, target)
        for index in np.flatnonzero(bad & keep):
            value = escape_text(column[int(index)].as_py() or "")
            line = int(row_lines[index]) if index < len(row_lines) else None
            problems.add(line, name, f"value {value!r} is not a valid {_type_word(target)}")
        keep &= ~bad
        columns[name] = converted
    table = pa.table(columns)
    # Keep the line numbers of the rows that remain, for later checks.
    table = table.filter(pa.array(keep))
    table = table.append_column("__line", pa.array(row_lines[: len(keep)][keep], type=pa.int64()))
    return table


def _data_row_lines(data: bytes, skip: int, separator: str, field_count: int) -> np.ndarray:
    """Return the 1-based line numbers of the rows pyarrow keeps, in order."""
    if not isinstance(data, bytes):
        data = bytes(data)  # a memory map cannot split lines
    sep = separator.encode()
    numbers = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if number <= skip:
            continue
        line = line.rstrip(b"\r")
        if not line or line.startswith(b"#"):
            continue
        if line.count(sep) + 1 != field_count:
            continue
        numbers.append(number)
    return np.asarray(numbers, dtype=np.int64)


def _convert_text(column: pa.ChunkedArray, target: pa.DataType) -> tuple[pa.ChunkedArray, np.ndarray]:
    """Convert a text column; return the result and a mask of invalid values."""
    pattern = _INT_TEXT.pattern if pa.types.is_integer(target) else _FLOAT_TEXT.pattern
    valid = pc.match_substring_regex(column, pattern)
    bad = pc.and_(pc.is_valid(column), pc.invert(valid))
    cleaned = pc.if_else(valid, pc.utf8_trim_whitespace(column), pa.scalar(None, pa.string()))
    return pc.cast(cleaned, target), np.asarray(pc.fill_null(bad, False).to_numpy(zero_copy_only=False), dtype=bool)


def _type_word(target: pa.DataType) -> str:
    return "integer" if pa.types.is_integer(target) else "number"


def _zeek_to_flows(table: pa.Table, problems: _Problems, locator: _LineLocator) -> pa.Table:
    """Turn Zeek conn columns into the common per-flow table."""
    n = table.num_rows

    def column(name: str, fill, target: pa.DataType) -> pa.ChunkedArray | pa.Array:
        if name in table.column_names:
            values = table[name]
            return pc.fill_null(values, pa.scalar(fill, target)) if values.null_count else values
        return pa.array(np.full(n, fill), type=target)

    proto = _lower_text(table["proto"])
    port = pc.if_else(_is_portless(proto), pa.scalar(0, pa.int64()), table["id.resp_p"])
    orig_bytes = column("orig_bytes", 0, pa.int64())
    resp_bytes = column("resp_bytes", 0, pa.int64())
    orig_pkts = column("orig_pkts", 0, pa.int64())
    resp_pkts = column("resp_pkts", 0, pa.int64())
    duration = column("duration", 0.0, pa.float64())
    flows = pa.table(
        {
            "src_ip": table["id.orig_h"],
            "dst_ip": table["id.resp_h"],
            "proto": proto,
            "dst_port": port,
            "bytes": pc.add(orig_bytes, resp_bytes),
            "packets": pc.add(orig_pkts, resp_pkts),
            "start": table["ts"],
            "end": pc.add(table["ts"], duration),
        }
    )
    if "__line" in table.column_names:
        flows = flows.append_column("__line", table["__line"])
    return _drop_missing(flows, problems, locator)


def _drop_missing(flows: pa.Table, problems: _Problems, locator: _LineLocator) -> pa.Table:
    """Drop rows that lack a required value, reporting each with its line."""
    required = {"start": "time", "src_ip": "source address", "dst_ip": "destination address", "proto": "protocol", "dst_port": "destination port"}
    if not any(flows[name].null_count for name in required):
        return flows
    missing_any = None
    for name in required:
        missing = pc.is_null(flows[name])
        missing_any = missing if missing_any is None else pc.or_(missing_any, missing)
    if not pc.any(missing_any).as_py():
        return flows
    lines = _row_lines(flows, locator)
    for index in np.flatnonzero(np.asarray(missing_any.to_numpy(zero_copy_only=False), dtype=bool)):
        absent = [name for name in required if flows[name][int(index)].as_py() is None]
        problems.add(
            _line_at(lines, index), absent[0],
            f"missing {required[absent[0]]} (unset or empty); a flow needs a time, both addresses, a protocol and a destination port",
        )
    return flows.filter(pc.invert(missing_any))


def _row_lines(flows: pa.Table, locator: _LineLocator) -> np.ndarray | None:
    """Return the line number of each row, computing it from the file if needed."""
    if "__line" in flows.column_names:
        return np.asarray(flows["__line"].to_numpy())
    return _fallback_lines(locator)


def _line_at(lines, index) -> int | None:
    if lines is None or index >= len(lines):
        return None
    return int(lines[index])


# --------------------------------------------------------------------------
# Zeek JSON lines


def _read_zeek_json(data: bytes, path: str, problems: _Problems) -> pa.Table:
    problems.names = dict(_ZEEK_NAMES)
    schema = pa.schema([(name, kind) for name, kind in _ZEEK_TYPES.items()])
    try:
        table = pajson.read_json(
            pa.BufferReader(data),
            read_options=pajson.ReadOptions(block_size=BLOCK_SIZE),
            parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        log.info("fast JSON parse of %s failed (%s); reading it line by line", path, exc)
        table = _read_zeek_json_careful(data, path, problems)
    else:
        missing = [name for name in _ZEEK_REQUIRED if pc.all(pc.is_null(table[name])).as_py()]
        if missing and table.num_rows:
            raise InputFormatError(
                path,
                f"no record has {', '.join(missing)}; expected Zeek conn.log JSON lines with at least "
                f"{', '.join(_ZEEK_REQUIRED)} (is this another Zeek log?)",
                line=1, field=missing[0],
            )
        lines = np.arange(1, table.num_rows + 1) if data.count(b"\n\n") == 0 else None
        if lines is not None:
            table = table.append_column("__line", pa.array(lines, type=pa.int64()))
    return _zeek_to_flows(table, problems, _LineLocator(data))


def _read_zeek_json_careful(data: bytes, path: str, problems: _Problems) -> pa.Table:
    columns: dict[str, list] = {name: [] for name in _ZEEK_TYPES}
    columns["__line"] = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            problems.add(number, None, f"invalid JSON ({escape_text(str(exc))}); expected one JSON object per line")
            continue
        if not isinstance(record, dict):
            problems.add(number, None, f"expected a JSON object, found {type(record).__name__}")
            continue
        values, bad_field, message = _zeek_json_values(record)
        if bad_field:
            problems.add(number, bad_field, message)
            continue
        for name, value in values.items():
            columns[name].append(value)
        columns["__line"].append(number)
    if not columns["__line"] and not problems.rows:
        raise InputFormatError(path, "no JSON records; expected Zeek conn.log JSON lines")
    types = dict(_ZEEK_TYPES, __line=pa.int64())
    return pa.table({name: pa.array(values, type=types[name]) for name, values in columns.items()})


def _zeek_json_values(record: dict) -> tuple[dict, str | None, str]:
    values = {}
    for name, kind in _ZEEK_TYPES.items():
        value = record.get(name)
        if value is None:
            values[name] = None
            continue
        if name == "ts" and isinstance(value, str):
            value = _iso_to_epoch(value)
            if value is None:
                return {}, name, f"time {escape_text(record[name])!r} is neither epoch seconds nor ISO 8601"
        try:
            if pa.types.is_integer(kind):
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                values[name] = int(value)
            elif pa.types.is_floating(kind):
                if isinstance(value, bool):
                    raise ValueError
                values[name] = float(value)
            else:
                values[name] = escape_text(str(value))
        except (TypeError, ValueError):
            return {}, name, f"value {escape_text(str(value))!r} is not a valid {_type_word(kind)}"
    return values, None, ""


def _iso_to_epoch(text: str) -> float | None:
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError):
        return None
    if stamp is pd.NaT:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return stamp.timestamp()


# --------------------------------------------------------------------------
# nfdump CSV


def _nfdump_body(data: bytes) -> bytes:
    """Cut the summary block nfdump appends after the flow lines."""
    for marker in (b"\nSummary", b"\r\nSummary"):
        at = data.find(marker)
        if at >= 0:
            return data[: at + 1]
    return data


def _nfdump_columns(header_line: str, path: str) -> dict[str, str]:
    names = [name.strip() for name in header_line.split(",")]
    lowered = {name.lower(): name for name in names}
    mapping = {}
    for key, aliases in _NFDUMP_ALIASES.items():
        for alias in aliases:
            if alias in lowered:
                mapping[key] = lowered[alias]
                break
    missing = [key for key in _NFDUMP_REQUIRED if key not in mapping]
    if missing:
        expected = ", ".join(_NFDUMP_ALIASES[key][0] for key in _NFDUMP_REQUIRED)
        raise InputFormatError(
            path,
            f"the header line lacks {', '.join(_NFDUMP_ALIASES[k][0] for k in missing)}; expected "
            f"'nfdump -o csv' output whose header starts with ts,te,td,sa,da,sp,dp,pr (needs {expected})",
            line=1, field=_NFDUMP_ALIASES[missing[0]][0],
        )
    return mapping


def _read_nfdump_csv(data: bytes, path: str, problems: _Problems, locator: _LineLocator, timezone: str) -> pa.Table:
    body = _nfdump_body(data)
    first_end = body.find(b"\n")
    header_line = body[: first_end if first_end >= 0 else len(body)].decode("utf-8", errors="replace").strip().lstrip("\ufeff")
    if not header_line:
        raise InputFormatError(path, "empty file; expected 'nfdump -o csv' output with a header line", line=1)
    mapping = _nfdump_columns(header_line, path)
    problems.names = dict(mapping)
    names = [name.strip() for name in header_line.split(",")]

    def on_invalid_row(row) -> str:
        problems.add(
            locator.line_of_text(row.text), None,
            f"expected {row.expected_columns} comma-separated fields as in the header line, found {row.actual_columns}",
        )
        return "skip"

    wanted = sorted(set(mapping.values()))
    table = pacsv.read_csv(
        pa.BufferReader(body),
        pacsv.ReadOptions(skip_rows=1, column_names=names, block_size=BLOCK_SIZE),
        pacsv.ParseOptions(delimiter=",", quote_char=False, invalid_row_handler=on_invalid_row),
        pacsv.ConvertOptions(
            include_columns=wanted,
            column_types={name: pa.string() for name in wanted},
            strings_can_be_null=True,
            null_values=[""],
            check_utf8=False,
        ),
    )
    row_lines = _data_row_lines(body, 1, ",", len(names))
    keep = np.ones(table.num_rows, dtype=bool)

    def number(key: str, target: pa.DataType, fill=None):
        nonlocal keep
        if key not in mapping:
            return pa.array(np.full(table.num_rows, fill), type=target)
        name = mapping[key]
        converted, bad = _convert_text(table[name], target)
        _report_bad(table[name], bad & keep, row_lines, name, target, problems)
        keep &= ~bad
        return pc.fill_null(converted, pa.scalar(fill, target)) if fill is not None else converted

    start, bad_start = _nfdump_times(table[mapping["start"]], timezone)
    _report_bad_time(table[mapping["start"]], bad_start & keep, row_lines, mapping["start"], problems)
    keep &= ~bad_start
    if "end" in mapping:
        end, bad_end = _nfdump_times(table[mapping["end"]], timezone)
        _report_bad_time(table[mapping["end"]], bad_end & keep, row_lines, mapping["end"], problems)
        keep &= ~bad_end
        end = pc.coalesce(end, start)
    else:
        end = pc.add(start, number("duration", pa.float64(), 0.0))

    proto = _nfdump_protocols(table[mapping["proto"]])
    # The ICMP type and code sit in dp (as "8.0" or type*256+code), so read it as a number first.
    port_value = number("dst_port", pa.float64())
    port = pc.if_else(
        pc.is_in(proto, pa.array(_PORTLESS)), pa.scalar(0, pa.int64()), pc.cast(pc.floor(port_value), pa.int64())
    )
    flows = pa.table(
        {
            "src_ip": pc.utf8_trim_whitespace(table[mapping["src_ip"]]),
            "dst_ip": pc.utf8_trim_whitespace(table[mapping["dst_ip"]]),
            "proto": proto,
            "dst_port": port,
            "bytes": pc.add(number("in_bytes", pa.int64(), 0), number("out_bytes", pa.int64(), 0)),
            "packets": pc.add(number("in_packets", pa.int64(), 0), number("out_packets", pa.int64(), 0)),
            "start": start,
            "end": end,
            "__line": pa.array(row_lines[: table.num_rows], type=pa.int64()),
        }
    )
    flows = flows.filter(pa.array(keep))
    return _drop_missing(flows, problems, locator)


def _report_bad(column, bad: np.ndarray, row_lines, name: str, target, problems: _Problems) -> None:
    for index in np.flatnonzero(bad):
        value = escape_text(column[int(index)].as_py() or "")
        problems.add(_line_at(row_lines, index), name, f"value {value!r} is not a valid {_type_word(target)}")


def _report_bad_time(column, bad: np.ndarray, row_lines, name: str, problems: _Problems) -> None:
    for index in np.flatnonzero(bad):
        value = escape_text(column[int(index)].as_py() or "")
        problems.add(
            _line_at(row_lines, index), name,
            f"time {value!r} is invalid; expected 'YYYY-MM-DD HH:MM:SS[.mmm]' or epoch seconds",
        )


def _nfdump_times(column: pa.ChunkedArray, timezone: str) -> tuple[pa.ChunkedArray, np.ndarray]:
    """Parse nfdump times (text or epoch seconds/milliseconds) to epoch seconds."""
    text = pc.utf8_trim_whitespace(column)
    numeric = pc.match_substring_regex(text, _FLOAT_TEXT.pattern)
    as_number = pc.cast(pc.if_else(numeric, text, pa.scalar(None, pa.string())), pa.float64())
    # Epoch values above 1e11 are milliseconds (1e11 s is the year 5138).
    as_number = pc.if_else(pc.greater(as_number, 1e11), pc.divide(as_number, 1000.0), as_number)

    stamps = pc.if_else(numeric, pa.scalar(None, pa.string()), text)
    parsed = _parse_stamps(stamps, timezone)
    value = pc.coalesce(as_number, parsed)
    bad = pc.and_(pc.is_valid(text), pc.is_null(value))
    return value, np.asarray(pc.fill_null(bad, False).to_numpy(zero_copy_only=False), dtype=bool)


def _parse_stamps(stamps: pa.ChunkedArray, timezone: str) -> pa.ChunkedArray:
    """Parse 'YYYY-MM-DD HH:MM:SS[.fff]' text in ``timezone``; invalid text becomes null."""
    unique = pc.unique(stamps).drop_null()
    if len(unique) == 0:
        return pa.chunked_array([pa.nulls(len(stamps), pa.float64())])
    parsed = pd.to_datetime(pd.Series(unique.to_pylist(), dtype=object), errors="coerce", format="mixed")
    if parsed.dt.tz is None:
        parsed = parsed.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    seconds = (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    lookup = pa.array(seconds.to_numpy(dtype=float, na_value=np.nan), type=pa.float64())
    lookup = pc.if_else(pc.is_nan(lookup), pa.scalar(None, pa.float64()), lookup)
    return pc.take(lookup, pc.index_in(stamps, value_set=unique))


def _nfdump_protocols(column: pa.ChunkedArray) -> pa.ChunkedArray:
    unique = pc.unique(column).drop_null()
    names = [protocol_name(value) for value in unique.to_pylist()]
    lookup = pa.array(names, type=pa.string())
    return pc.take(lookup, pc.index_in(column, value_set=unique))


# --------------------------------------------------------------------------
# Addresses


def _canonical_ip(text: bytes | None) -> str | None:
    if text is None:
        return None
    try:
        value = text.decode("ascii").strip()
        address = ipaddress.ip_address(value.split("%", 1)[0])
    except (UnicodeDecodeError, ValueError):
        return None
    return str(address)


def _lower_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Lower-case a text column, touching only the dictionary of a dictionary column."""
    if not pa.types.is_dictionary(column.type):
        return pc.utf8_lower(column)
    chunks = [pa.DictionaryArray.from_arrays(chunk.indices, pc.utf8_lower(chunk.dictionary)) for chunk in column.chunks]
    return pa.chunked_array(chunks, type=column.type)


def _is_portless(proto: pa.ChunkedArray) -> pa.ChunkedArray:
    """Return whether each protocol has no ports (False where unset), checking each dictionary value once."""
    portless = pa.array(_PORTLESS)
    if not pa.types.is_dictionary(proto.type):
        return pc.is_in(proto, portless)
    chunks = [
        pc.fill_null(pc.take(pc.is_in(chunk.dictionary, portless), chunk.indices), False) for chunk in proto.chunks
    ]
    return pa.chunked_array(chunks, type=pa.bool_())


def _encode_text(column: pa.ChunkedArray, canonical=None) -> tuple[np.ndarray, list[str]]:
    """Encode a text column (plain or dictionary) as integer codes into a list of distinct values.

    ``canonical`` maps the dictionary (a binary array) to one text or None per
    entry. Entries with the same result share a code, and None becomes code -1.
    Only distinct values reach Python, so the cost is per value, not per row.
    """
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    # After unification every chunk shares one dictionary, so its indices are global.
    column = column.unify_dictionaries()
    dictionary = column.chunk(0).dictionary if column.num_chunks else pa.array([], type=pa.string())
    texts = canonical(pc.cast(dictionary, pa.binary())) if canonical else dictionary.to_pylist()
    index: dict[str, int] = {}
    remap = np.empty(len(texts), dtype=np.int64)
    for position, text in enumerate(texts):
        remap[position] = -1 if text is None else index.setdefault(text, len(index))
    codes = np.zeros(len(column), dtype=np.int64)
    if not len(remap):
        return codes, list(index)
    position = 0
    for chunk in column.chunks:
        indices = chunk.indices if chunk.null_count == 0 else pc.fill_null(chunk.indices, 0)
        np.take(remap, indices.to_numpy(), out=codes[position : position + len(chunk)])
        position += len(chunk)
    return codes, list(index)


def _canonical_addresses(values: pa.Array) -> list[str | None]:
    """Return the canonical text of each address in ``values``, None where invalid.

    Canonical IPv4 text is found by one regular expression in Arrow, and only
    the rest (IPv6, zone ids, spaces, invalid text) is parsed by ipaddress.
    """
    simple = pc.fill_null(pc.match_substring_regex(values, _CANONICAL_IPV4), False).to_pylist()
    raw_values = values.to_pylist()
    return [
        value.decode("ascii") if is_simple else _canonical_ip(value)
        for value, is_simple in zip(raw_values, simple)
    ]


def _aggregate(flows: pa.Table, problems: _Problems, locator: _LineLocator) -> tuple[pd.DataFrame, int]:
    """Aggregate per-flow rows into one row per (src_ip, dst_ip, proto, dst_port).

    Rows with an invalid address or a port outside 0-65535 are reported and
    dropped. Returns the aggregate (columns :data:`FLOW_COLUMNS`, in order of
    first appearance) and the number of rows it sums.

    The four keys are packed into one int64 per row from dense codes, then
    factorised with a hash table and summed with NumPy. This is about twice
    as fast as ``Table.group_by`` on the string keys.
    """
    if flows.num_rows == 0:
        return _empty_flows(), 0
    src_codes, src_names = _encode_text(flows["src_ip"], _canonical_addresses)
    dst_codes, dst_names = _encode_text(flows["dst_ip"], _canonical_addresses)
    proto_codes, proto_names = _encode_text(flows["proto"])
    port = np.asarray(flows["dst_port"].to_numpy(), dtype=np.int64)

    keep = (src_codes >= 0) & (dst_codes >= 0) & (port >= 0) & (port <= 65535)
    all_kept = bool(keep.all())
    if not all_kept:
        _report_rows(flows, keep, src_codes, dst_codes, port, problems, locator)

    # Ports become dense codes too, so the packed key usually fits in 32 bits,
    # which NumPy and pandas hash faster than 64-bit keys.
    port_seen = np.zeros(65536, dtype=bool)
    port_seen[port[keep]] = True
    port_values = np.flatnonzero(port_seen)
    port_codes = np.cumsum(port_seen, dtype=np.int64) - 1
    n_src = max(len(src_names), 1)
    n_dst = max(len(dst_names), 1)
    n_proto = max(len(proto_names), 1)
    n_port = max(len(port_values), 1)
    if n_src * n_dst * n_proto * n_port >= 2**62:
        raise InputFormatError(
            "<flows>",
            f"{len(src_names)} source and {len(dst_names)} destination addresses are too many to aggregate in memory; "
            "split the file by time and import the parts",
        )
    if not all_kept:
        src_codes, dst_codes, proto_codes, port = src_codes[keep], dst_codes[keep], proto_codes[keep], port[keep]
    key = src_codes * n_dst
    key += dst_codes
    key *= n_proto
    key += proto_codes
    key *= n_port
    key += port_codes[port]
    if n_src * n_dst * n_proto * n_port <= 2**31:
        key = key.astype(np.int32)
    codes, unique_keys = pd.factorize(key, sort=False)
    groups = len(unique_keys)

    def column(name: str, dtype) -> np.ndarray:
        values = np.asarray(flows[name].to_numpy(), dtype=dtype)
        return values if all_kept else values[keep]

    total_bytes = np.zeros(groups, dtype=np.int64)
    np.add.at(total_bytes, codes, column("bytes", np.int64))
    total_packets = np.zeros(groups, dtype=np.int64)
    np.add.at(total_packets, codes, column("packets", np.int64))
    first_seen = np.full(groups, np.inf)
    np.minimum.at(first_seen, codes, column("start", np.float64))
    last_seen = np.full(groups, -np.inf)
    np.maximum.at(last_seen, codes, column("end", np.float64))

    unique_keys = np.asarray(unique_keys, dtype=np.int64)
    rest, port_index = np.divmod(unique_keys, n_port)
    dst_port = port_values[port_index].astype(np.int64)
    rest, proto_index = np.divmod(rest, n_proto)
    src_index, dst_index = np.divmod(rest, n_dst)
    frame = pd.DataFrame(
        {
            "src_ip": _text_array(src_names, src_index),
            "dst_ip": _text_array(dst_names, dst_index),
            "proto": _text_array(proto_names, proto_index),
            "dst_port": dst_port,
            "bytes": total_bytes,
            "packets": total_packets,
            "flows": np.bincount(codes, minlength=groups).astype(np.int64),
            "first_seen": first_seen,
            "last_seen": last_seen,
        },
        columns=list(FLOW_COLUMNS),
        copy=False,
    )
    return frame, int(keep.sum())


def _text_array(names: list[str], index: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """Return ``names[index]`` as a pandas ``str`` array, gathered in Arrow."""
    return pd.array(pa.array(names, type=pa.string()).take(pa.array(index)), dtype="str")


def _report_rows(flows, keep, src_codes, dst_codes, port, problems: _Problems, locator) -> None:
    lines = _row_lines(flows, locator)
    for index in np.flatnonzero(~keep):
        index = int(index)
        if src_codes[index] < 0 or dst_codes[index] < 0:
            name = "src_ip" if src_codes[index] < 0 else "dst_ip"
            value = escape_text(pc.cast(flows[name][index], pa.binary()).as_py() or b"")
            problems.add(_line_at(lines, index), name, f"address {value!r} is not an IPv4 or IPv6 address")
        else:
            problems.add(_line_at(lines, index), "dst_port", f"port {int(port[index])} is outside 0-65535")


def _fallback_lines(locator: _LineLocator) -> np.ndarray | None:
    # Zeek TSV rows are the non-comment lines with the header's field count.
    # NOTE: a JSON file with blank lines gets here too, and its address issues
    # then carry no line number.
    data = locator.data
    try:
        header = _parse_zeek_header(data, "<flows>")
    except InputFormatError:
        return None
    return _data_row_lines(data, header.lines, header.separator, len(header.fields))


def _empty_flows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "src_ip": pd.Series([], dtype="str"),
            "dst_ip": pd.Series([], dtype="str"),
            "proto": pd.Series([], dtype="str"),
            "dst_port": pd.Series([], dtype="int64"),
            "bytes": pd.Series([], dtype="int64"),
            "packets": pd.Series([], dtype="int64"),
            "flows": pd.Series([], dtype="int64"),
            "first_seen": pd.Series([], dtype="float64"),
            "last_seen": pd.Series([], dtype="float64"),
        }
    )
