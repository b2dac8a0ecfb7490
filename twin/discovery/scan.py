"""Hosts and services from nmap XML output (``nmap -oX``).

Every ``<host>`` whose status is ``up`` becomes one ``device`` observation
(addresses, host name, MAC vendor, OS guesses and their CPEs) and one
``service`` observation per open port. Hosts that are down are counted and
dropped: a /24 sweep lists every address it tried.

The XML is parsed with defusedxml, incrementally, so a scan that was cut off
(nmap killed, disk full) keeps every host it completed; the break is reported
with its line and byte offset. Bytes that XML 1.0 forbids (control characters,
invalid UTF-8) are reported one by one and replaced with ``\\xNN`` text before
parsing, so one bad byte in a banner does not lose the rest of the scan.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, TreeBuilder

from defusedxml.ElementTree import DefusedXMLParser, ParseError
from defusedxml.common import DefusedXmlException

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
)

__all__ = ["FORMAT", "SOURCE", "collect", "transform", "import_file"]

log = logging.getLogger(__name__)

FORMAT = "nmap-xml"
SOURCE = "nmap"

# Bytes fed to the XML parser per call (default 64 KiB). Hosts are handed over
# as soon as their closing tag is parsed, whatever the chunk size.
FEED_BYTES = 64 << 10

# Invalid-byte issues reported one by one per file (default 100); the rest are
# counted in one last issue.
MAX_BYTE_ISSUES = 100

# Host name types in order of preference: a name the user gave on the command
# line, then the reverse-DNS (PTR) name.
HOSTNAME_PREFERENCE = ("user", "PTR")

# Bytes that XML 1.0 forbids anywhere in a document: C0 controls except tab,
# line feed and carriage return.
_FORBIDDEN_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_ENCODING_DECLARATION = re.compile(rb"^\s*<\?xml[^>]*encoding=[\"']([A-Za-z0-9._-]+)[\"']")


def collect(path: str | Path) -> Raw:
    """Read an nmap XML file with its modification time."""
    return read_raw(path)


def import_file(path: str | Path, fmt: str | None = None, **options: Any) -> ImportResult:
    """Import one nmap XML file: :func:`transform` of :func:`collect`."""
    return transform(collect(path), fmt=fmt, **options)


def transform(
    raw: Raw,
    *,
    fmt: str | None = None,
    origin: str | None = None,
    seen_at: float | None = None,
    **options: Any,
) -> ImportResult:
    """Turn nmap XML into device and service observations.

    Parameters
    ----------
    raw : Raw
        File content from :func:`collect`.
    fmt : {"nmap-xml"}, optional
        Input format; only ``nmap-xml`` is accepted.
    origin : str, optional
        Path recorded in observations and issues; defaults to ``raw.path``.
    seen_at : float, optional
        Time used for hosts without ``starttime``/``endtime`` when the
        ``<nmaprun>`` element has no ``start`` either. The file's
        modification time is the last resort.
    **options
        Accepted for the common module interface; none are used.

    Returns
    -------
    ImportResult
        One ``device`` observation per host that is up and one ``service``
        observation per open port (and per ``open|filtered`` UDP port, with
        ``uncertain`` set). ``records_read`` counts ``<host>`` elements read;
        ``counts`` contains ``hosts_up``, ``hosts_down``, ``ports_open``
        (state ``open``) and ``services`` (service observations).

    Raises
    ------
    InputFormatError
        When the file holds no ``<nmaprun>`` element, or uses a DTD with
        entities (which defusedxml rejects as unsafe).

    Notes
    -----
    Time and memory are linear in the file size; each host element is freed
    once turned into observations.
    """
    path = origin or raw.path
    if fmt not in (None, FORMAT):
        raise InputFormatError(path, f"format {fmt!r} is not read by the nmap importer; expected {FORMAT!r}")
    result = ImportResult(source=SOURCE, path=path)
    for name in ("hosts_up", "hosts_down", "ports_open", "services"):
        result.counts[name] = 0

    data, repairs = _repair_bytes(raw.data, path, result)
    collector = _HostCollector()
    parser = DefusedXMLParser(target=collector, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    collector.expat = parser.parser
    fallback_time = seen_at if seen_at is not None else raw.mtime

    def handle_hosts() -> None:
        for host, line in collector.take_hosts():
            run_start = collector.run_start
            _read_host(host, line, path, run_start if run_start is not None else fallback_time, result)

    broken = False
    try:
        for start in range(0, len(data), FEED_BYTES):
            parser.feed(data[start : start + FEED_BYTES])
            handle_hosts()
        parser.close()
        handle_hosts()
    except ParseError as exc:
        handle_hosts()
        broken = True
        _report_break(exc, parser, collector, repairs, path, result)
    except DefusedXmlException as exc:
        raise InputFormatError(
            path, f"unsafe XML rejected ({type(exc).__name__}: {exc}); nmap output never declares entities"
        ) from None

    if not collector.saw_nmaprun:
        raise InputFormatError(
            path, "no <nmaprun> element; expected XML written by 'nmap -oX'", line=1
        )
    log.info(
        "imported nmap XML %s: %d hosts up, %d down, %d services%s",
        path, result.counts["hosts_up"], result.counts["hosts_down"], result.counts["services"],
        " (file cut off)" if broken else "",
    )
    return result


# --------------------------------------------------------------------------
# Parsing


class _HostCollector(TreeBuilder):
    """Tree builder that hands over each ``<host>`` element once it is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.expat = None
        self.saw_nmaprun = False
        self.run_start: float | None = None
        self.open_host_line: int | None = None
        self._finished: list[tuple[Element, int | None]] = []

    def start(self, tag, attrs):
        element = super().start(tag, attrs)
        if tag == "nmaprun":
            self.saw_nmaprun = True
            self.run_start = _epoch(attrs.get("start"))
        elif tag == "host":
            self.open_host_line = self.expat.CurrentLineNumber if self.expat is not None else None
        return element

    def end(self, tag):
        element = super().end(tag)
        if tag == "host":
            self._finished.append((element, self.open_host_line))
            self.open_host_line = None
        return element

    def take_hosts(self) -> list[tuple[Element, int | None]]:
        finished, self._finished = self._finished, []
        return finished


def _repair_bytes(data: bytes, path: str, result: ImportResult) -> tuple[bytes, list[int]]:
    """Replace bytes XML forbids with ``\\xNN`` text and report each.

    Returns the repaired bytes and the original offsets that were replaced,
    to map parser offsets back to the file.
    """
    declared = _ENCODING_DECLARATION.match(data[:200])
    check_utf8 = declared is None or declared.group(1).lower().replace(b"_", b"-") in (b"utf-8", b"utf8")
    bad = [match.start() for match in _FORBIDDEN_BYTES.finditer(data)]
    if check_utf8:
        bad.extend(_invalid_utf8_offsets(data))
    if not bad:
        return data, []
    bad = sorted(set(bad))
    pieces = []
    previous = 0
    for number, offset in enumerate(bad):
        pieces.append(data[previous:offset])
        pieces.append(b"\\x%02x" % data[offset])
        previous = offset + 1
        if number < MAX_BYTE_ISSUES:
            line = data.count(b"\n", 0, offset) + 1
            result.issues.append(
                ImportIssue(
                    path,
                    f"byte 0x{data[offset]:02x} is not allowed in XML; stored as text \\x{data[offset]:02x}",
                    line=line,
                    offset=offset,
                )
            )
    pieces.append(data[previous:])
    if len(bad) > MAX_BYTE_ISSUES:
        result.issues.append(
            ImportIssue(path, f"{len(bad) - MAX_BYTE_ISSUES} more invalid bytes replaced (MAX_BYTE_ISSUES is {MAX_BYTE_ISSUES})")
        )
    return b"".join(pieces), bad


def _invalid_utf8_offsets(data: bytes) -> list[int]:
    offsets = []
    position = 0
    while position < len(data):
        try:
            data[position:].decode("utf-8")
            break
        except UnicodeDecodeError as exc:
            offsets.extend(range(position + exc.start, position + exc.end))
            position += exc.end
    return offsets


def _report_break(exc: ParseError, parser, collector: _HostCollector, repairs: list[int], path: str, result: ImportResult) -> None:
    line, column = getattr(exc, "position", (None, None))
    offset = getattr(parser.parser, "ErrorByteIndex", -1)
    if offset is not None and offset >= 0:
        # Each repaired byte became four bytes of text; map back to the file.
        offset -= 3 * sum(1 for original in repairs if original < offset)
    else:
        offset = None
    reason = escape_text(str(exc).split(":", 1)[0])
    kept = result.counts["hosts_up"] + result.counts["hosts_down"]
    if collector.open_host_line is not None:
        result.skip(
            f"XML breaks off ({reason}), probably because the scan was cut off; "
            f"{kept} completed hosts kept, the host opened at line {collector.open_host_line} is incomplete and dropped",
            line=line,
            offset=offset,
        )
    else:
        result.issues.append(
            ImportIssue(
                path,
                f"XML breaks off ({reason}), probably because the scan was cut off; {kept} completed hosts kept",
                line=line,
                offset=offset,
            )
        )
    log.warning("nmap XML %s breaks at line %s column %s: %s", path, line, column, reason)


# --------------------------------------------------------------------------
# Hosts


@dataclass
class _HostFacts:
    macs: list[str] = field(default_factory=list)
    ips: list[str] = field(default_factory=list)
    vendor: str | None = None
    hostname: str | None = None
    hostnames: list[tuple[str, str]] = field(default_factory=list)


def _host_answered(host: Element) -> bool:
    """Return True when any port of the host is open or closed (it sent a SYN-ACK, a RST or data)."""
    ports = host.find("ports")
    if ports is None:
        return False
    for port in ports.findall("port"):
        state = port.find("state")
        if state is not None and (state.get("state") or "").startswith(("open", "closed")):
            return True
    # Ports summarised as extraports count too when they were closed.
    return any((extra.get("state") or "") == "closed" for extra in ports.findall("extraports"))


def _read_host(host: Element, line: int | None, path: str, default_time: float, result: ImportResult) -> None:
    result.records_read += 1
    status = host.find("status")
    state = status.get("state") if status is not None else None
    if state != "up":
        result.count("hosts_down")
        host.clear()
        return

    facts = _host_addresses(host, line, path, result)
    if status.get("reason") == "user-set" and not facts.macs and not _host_answered(host):
        # -Pn (which the twin's scanner always passes) marks every target up
        # without a probe; only an open or closed port or a MAC shows that a
        # host exists, so a target that answered nothing is not a device.
        result.count("hosts_without_answer")
        host.clear()
        return
    identity = Identity(macs=tuple(facts.macs), ips=tuple(facts.ips), hostname=facts.hostname)
    if identity.is_empty():
        result.skip("host is up but has no MAC, IP address or host name", line=line, field="address")
        host.clear()
        return
    result.count("hosts_up")
    seen_at = _epoch(host.get("endtime")) or _epoch(host.get("starttime")) or default_time
    origin = f"{path}:{line}" if line is not None else path

    attrs: dict[str, Any] = {}
    evidence: dict[str, Any] = {}
    if facts.hostname:
        attrs["hostname"] = facts.hostname
    if facts.vendor:
        attrs["vendor"] = facts.vendor
        evidence["mac_vendor"] = facts.vendor
    if facts.hostnames:
        evidence["hostnames"] = [{"name": name, "type": kind} for name, kind in facts.hostnames]
    if status is not None and status.get("reason"):
        evidence["status_reason"] = escape_text(status.get("reason"))
    _add_os(host.find("os"), attrs, evidence)
    result.observations.append(
        Observation(Kind.DEVICE, SOURCE, origin, seen_at, identity, attrs=attrs, evidence=evidence)
    )

    ports = host.find("ports")
    if ports is not None:
        for port in ports.findall("port"):
            _read_port(port, identity, origin, seen_at, line, result)
    host.clear()


def _host_addresses(host: Element, line: int | None, path: str, result: ImportResult) -> _HostFacts:
    facts = _HostFacts()
    for address in host.findall("address"):
        kind = address.get("addrtype")
        value = address.get("addr")
        if kind == "mac":
            mac = normalise_mac(value)
            if mac is None:
                result.issues.append(
                    ImportIssue(path, f"MAC address {escape_text(value or '')!r} is invalid and was dropped", line=line, field="address")
                )
                continue
            facts.macs.append(mac)
            if address.get("vendor") and facts.vendor is None:
                facts.vendor = escape_text(address.get("vendor"))
        elif kind in ("ipv4", "ipv6"):
            ip = normalise_ip(value)
            if ip is None:
                result.issues.append(
                    ImportIssue(path, f"IP address {escape_text(value or '')!r} is invalid and was dropped", line=line, field="address")
                )
                continue
            facts.ips.append(ip)

    names = host.find("hostnames")
    if names is not None:
        for element in names.findall("hostname"):
            name = normalise_hostname(element.get("name"))
            if name:
                facts.hostnames.append((name, escape_text(element.get("type") or "")))
    for preferred in HOSTNAME_PREFERENCE:
        match = next((name for name, kind in facts.hostnames if kind == preferred), None)
        if match:
            facts.hostname = match
            break
    if facts.hostname is None and facts.hostnames:
        facts.hostname = facts.hostnames[0][0]
    return facts


def _add_os(os_element: Element | None, attrs: dict, evidence: dict) -> None:
    """Add the best OS guess, its classes and CPEs.

    Classes are taken from every ``osmatch`` that shares the top accuracy,
    because nmap often lists several equally likely guesses. nmap 4 and 5 put
    ``osclass`` directly under ``<os>``; those are read as well.
    """
    if os_element is None:
        return
    matches = []
    for match in os_element.findall("osmatch"):
        accuracy = _int(match.get("accuracy"))
        matches.append((accuracy if accuracy is not None else -1, escape_text(match.get("name") or ""), match))
    if matches:
        evidence["osmatch"] = [{"name": name, "accuracy": accuracy} for accuracy, name, _ in matches]
        best_accuracy = max(accuracy for accuracy, _, _ in matches)
        best = [m for m in matches if m[0] == best_accuracy]
        attrs["os"] = best[0][1]
        attrs["os_accuracy"] = best_accuracy if best_accuracy >= 0 else None
        class_elements = [c for _, _, match in best for c in match.findall("osclass")]
    else:
        class_elements = []
    class_elements += os_element.findall("osclass")

    classes = []
    cpes: list[str] = []
    for element in class_elements:
        entry = {
            "type": _text_attr(element, "type"),
            "vendor": _text_attr(element, "vendor"),
            "osfamily": _text_attr(element, "osfamily"),
            "osgen": _text_attr(element, "osgen"),
            "accuracy": _int(element.get("accuracy")),
            "cpes": [escape_text(c.text.strip()) for c in element.findall("cpe") if c.text and c.text.strip()],
        }
        if entry not in classes:
            classes.append(entry)
        for cpe in entry["cpes"]:
            if cpe not in cpes:
                cpes.append(cpe)
    if classes:
        attrs["os_classes"] = classes
    if cpes:
        attrs["cpes"] = cpes
    fingerprint = os_element.find("osfingerprint")
    if fingerprint is not None and fingerprint.get("fingerprint"):
        evidence["os_fingerprint"] = escape_text(fingerprint.get("fingerprint"))


def _read_port(port: Element, identity: Identity, origin: str, seen_at: float, line: int | None, result: ImportResult) -> None:
    state_element = port.find("state")
    state = state_element.get("state") if state_element is not None else None
    proto = (port.get("protocol") or "").lower()
    number = _int(port.get("portid"))
    if state == "open":
        result.count("ports_open")
    elif not (state == "open|filtered" and proto == "udp"):
        return
    if number is None or not 0 <= number <= 65535:
        result.skip(
            f"port {escape_text(port.get('portid') or '')!r} is not a number in 0-65535", line=line, field="portid"
        )
        return

    service = port.find("service")
    attrs: dict[str, Any] = {
        "proto": escape_text(proto),
        "port": number,
        "state": state,
        "uncertain": state != "open",
        "name": None,
        "product": None,
        "version": None,
        "extrainfo": None,
        "cpes": [],
        "tls": None,
    }
    evidence: dict[str, Any] = {"state_reason": _text_attr(state_element, "reason")}
    if service is not None:
        name = _text_attr(service, "name")
        attrs.update(
            name=name,
            product=_text_attr(service, "product"),
            version=_text_attr(service, "version"),
            extrainfo=_text_attr(service, "extrainfo"),
            cpes=[escape_text(c.text.strip()) for c in service.findall("cpe") if c.text and c.text.strip()],
            tls=service.get("tunnel") == "ssl" or (name is not None and ("ssl" in name or "https" in name)),
        )
        for key in ("method", "conf", "tunnel", "ostype", "devicetype"):
            if service.get(key):
                evidence[key] = escape_text(service.get(key))
    result.count("services")
    result.observations.append(
        Observation(Kind.SERVICE, SOURCE, origin, seen_at, identity, attrs=attrs, evidence=evidence)
    )


# --------------------------------------------------------------------------
# Small helpers


def _text_attr(element: Element | None, name: str) -> str | None:
    if element is None:
        return None
    value = element.get(name)
    return escape_text(value) if value else None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _epoch(value: str | None) -> float | None:
    """Return an nmap epoch attribute as float seconds, or None when absent or 0."""
    try:
        number = float(value) if value else None
    except ValueError:
        return None
    return number if number else None
