"""Discovery sources: one module per source, the same steps in each.

Every module exposes

``collect(path) -> Raw``
    The only step that does I/O: read the file (or, for live collectors,
    query the network) and return the raw content with its modification time.
``transform(raw, *, origin, seen_at=None, **options) -> ImportResult``
    Pure: parse the raw content into observations (and aggregated flows),
    recording every skipped record as an :class:`ImportIssue`.
``import_file(path, **options) -> ImportResult``
    ``transform(collect(path))``.

:func:`detect_format` picks the module for a file from its name and first
bytes; :func:`import_path` runs it.
"""

from __future__ import annotations

import importlib

import re
from dataclasses import dataclass
from pathlib import Path

from twin.exceptions import InputFormatError
from twin.model.observation import ImportResult

__all__ = ["Raw", "FORMATS", "detect_format", "import_path", "read_raw"]

# Format name -> module under twin.discovery that reads it.
FORMATS = {
    "snmprec": "snmp",
    "snmpwalk": "snmp",
    "lldpd-json": "lldp",
    "nmap-xml": "scan",
    "zeek-conn": "flows",
    "nfdump-csv": "flows",
    "pcap": "flows",
    "pcapng": "flows",
    "ipfix": "flows",
    "inventory-csv": "inventory",
}

# First bytes of binary flow files: pcap in both byte orders with microsecond
# or nanosecond times, the pcapng section header block, and an IPFIX message
# header (version 10) as IPFIX files (RFC 5655) start.
_PCAP_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_CAPTURE_SUFFIXES = {".pcap": "pcap", ".cap": "pcap", ".pcapng": "pcapng", ".ipfix": "ipfix"}

# A numeric OID at the start of a line: ".1.3.6.1.2.1.1.1.0" or "1.0.8802.1.1.2...".
_NUMERIC_OID = re.compile(r"^\.?[0-2](\.\d+)+[ |]")

# Bytes read from the head of a file to detect its format.
SNIFF_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Raw:
    """Raw content of one discovery file."""

    path: str
    data: bytes
    mtime: float


def read_raw(path: str | Path) -> Raw:
    """Read a whole file as bytes, with its modification time."""
    path = Path(path)
    try:
        data = path.read_bytes()
        mtime = path.stat().st_mtime
    except OSError as exc:
        raise InputFormatError(path, f"cannot read file: {exc.strerror}; check the path and permissions") from None
    return Raw(str(path), data, mtime)


def detect_format(path: str | Path) -> str | None:
    """Return the format name of a discovery file, or None when it is not one.

    Detection uses the extension first and then the first bytes, so files
    keep working when renamed.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError:
        return None
    binary = _binary_format(head, path)
    if binary:
        return binary
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    stripped = text.lstrip()
    suffix = path.suffix.lower()
    name = path.name.lower()

    if suffix == ".snmprec":
        return "snmprec"
    if suffix == ".xml" or stripped.startswith("<?xml") or "<nmaprun" in text:
        return "nmap-xml" if "<nmaprun" in text else None
    if text.startswith("#separator") or "#fields\tts\tuid" in text:
        return "zeek-conn"
    first_line = stripped.split("\n", 1)[0]
    if first_line.startswith("{") and '"id.orig_h"' in first_line:
        return "zeek-conn"
    if stripped.startswith("{") or stripped.startswith("["):
        if '"lldp"' in text or '"interface"' in text:
            return "lldpd-json"
        return None
    walk_line = next((ln.strip() for ln in stripped.splitlines() if ln.strip() and not ln.startswith("#")), "")
    if _NUMERIC_OID.match(walk_line) or walk_line.startswith("iso."):
        if "|" in walk_line and " = " not in walk_line:
            return "snmprec"
        return "snmpwalk"
    lowered = first_line.lower()
    if lowered.startswith("ts,te,td,sa,da,sp,dp,pr") or lowered.startswith("firstseen,") or "nfdump" in name:
        return "nfdump-csv"
    if suffix == ".csv" and ("asset" in lowered or "serial" in lowered or "inventory" in name or "cmms" in name):
        return "inventory-csv"
    # A damaged capture keeps its name, so its reader can report what is wrong.
    return _CAPTURE_SUFFIXES.get(suffix)


def _binary_format(head: bytes, path: Path) -> str | None:
    """Return ``pcap``, ``pcapng`` or ``ipfix`` when the first bytes are one, else None."""
    if head[:4] in _PCAP_MAGICS:
        return "pcap"
    if head[:4] == _PCAPNG_MAGIC:
        return "pcapng"
    if len(head) >= 16 and head[:2] == b"\x00\x0a":
        # An IPFIX message header has its length at bytes 2-3, at least the
        # 16-byte header and no more than the file. The next message, if any,
        # starts with version 10 again.
        length = int.from_bytes(head[2:4], "big")
        try:
            size = path.stat().st_size
        except OSError:
            return None
        if 16 <= length <= size and (length == size or length + 2 > len(head) or head[length : length + 2] == b"\x00\x0a"):
            return "ipfix"
    return None


def module_for(fmt: str):
    """Return the discovery module that reads ``fmt``."""
    try:
        name = FORMATS[fmt]
    except KeyError:
        raise InputFormatError("<format>", f"unknown format {fmt!r}; known: {', '.join(sorted(FORMATS))}") from None
    return importlib.import_module(f"twin.discovery.{name}")


def import_path(path: str | Path, fmt: str | None = None, **options) -> ImportResult:
    """Detect the format of ``path`` (unless given) and import it."""
    fmt = fmt or detect_format(path)
    if fmt is None:
        raise InputFormatError(
            path,
            "unrecognised discovery file; expected nmap XML, snmprec, snmpwalk -On text, "
            "lldpcli JSON, Zeek conn.log, nfdump CSV, a pcap or pcapng capture, an IPFIX file or an inventory CSV",
        )
    module = module_for(fmt)
    return module.import_file(path, fmt=fmt, **options)


