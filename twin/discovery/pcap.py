"""Packet captures (pcap and pcapng) as flow records.

A capture contains either flow exports (NetFlow, IPFIX or sFlow datagrams sent to
a collector port) or raw traffic from a span port. :func:`read_flow_capture`
passes the UDP payloads to and from the given ports to a
:class:`~twin.discovery.netflow.FlowDecoder`. :func:`capture_to_flows` turns raw
traffic into one flow record per session. Both return tables with
:data:`~twin.discovery.flowrecords.FLOW_RECORD_SCHEMA`.
:func:`read_capture` picks one of the two for a file, as ``twin build`` does.

Formats
-------
* pcap: both byte orders, microsecond and nanosecond timestamps.
* pcapng: section header, interface description, enhanced, simple and
  obsolete packet blocks, several interfaces and sections, ``if_tsresol`` and
  ``if_tsoffset``. Other blocks are skipped, and blocks of unknown type are
  counted in a note.
* Link types: Ethernet (1) with any number of 802.1Q/802.1ad tags up to
  :data:`MAX_VLAN_TAGS`, Linux cooked capture v1 (113) and v2 (276), raw IP
  (101, 228 IPv4, 229 IPv6). Packets of other link types are counted.

Speed
-----
One Python loop walks the record headers over a memory map, which is the
only per-packet Python code. The Ethernet, VLAN, IP and TCP/UDP headers of
all packets are then read at once with NumPy gathers on the mapped bytes, and
sessions are grouped with integer keys. ``docs/flows.md`` gives measured times.

Sessions
--------
Packets with the same protocol and the same two (address, port) ends, in
either direction, form a session. A session ends after ``idle_timeout``
seconds without packets, and is cut every ``active_timeout`` seconds from its
first packet. A TCP SYN (without ACK) after a FIN or RST of the same ends
starts a new session, unless it repeats the SYN just before it. The client is
the sender of the first SYN, else the receiver of the first SYN-ACK, else the
end whose port is not a service port (see
:func:`twin.discovery.flowagg.service_port_mask`) while the other is, else the
end with the higher port, else the sender of the first packet. ``bytes`` are
IP bytes (the IPv4 total length, or the IPv6 payload length plus 40) in both
directions.
"""

from __future__ import annotations

import logging
import math
import mmap
import struct
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from twin.discovery.flowagg import PORT_PROTOCOLS, service_port_mask
from twin.discovery.flowrecords import addr_texts, empty_records, ipv4_to_mapped, records_from_arrays
from twin.discovery.netflow import DecoderCounters, FlowDecoder, FlowProblem
from twin.exceptions import InputFormatError

__all__ = [
    "ACTIVE_TIMEOUT_S",
    "CaptureRead",
    "IDLE_TIMEOUT_S",
    "LINKTYPES",
    "MAX_VLAN_TAGS",
    "Packet",
    "capture_to_flows",
    "iter_packets",
    "read_capture",
    "read_flow_capture",
]

log = logging.getLogger(__name__)

# Session timeouts of capture_to_flows, in seconds. An idle session ends
# after IDLE_TIMEOUT_S without packets, and a long one is cut every
# ACTIVE_TIMEOUT_S. Both are this module's choice; callers may pass others.
IDLE_TIMEOUT_S = 300.0
ACTIVE_TIMEOUT_S = 1800.0

# 802.1Q / 802.1ad tags read in front of the IP header, at most.
MAX_VLAN_TAGS = 4
# IPv6 extension headers walked before the TCP/UDP header, at most.
MAX_IPV6_EXTENSIONS = 8
# A record longer than this (and than the file's snap length) is a corrupt
# length field. tcpdump 4.99 captures at most 262144 bytes per packet by
# default (man tcpdump, option -s).
MAX_PACKET_BYTES = 262_144

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
LINKTYPES = {
    LINKTYPE_ETHERNET: "Ethernet",
    LINKTYPE_RAW: "raw IP",
    LINKTYPE_LINUX_SLL: "Linux cooked capture v1",
    LINKTYPE_IPV4: "raw IPv4",
    LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_LINUX_SLL2: "Linux cooked capture v2",
}

_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_PCAPNG_SECTION = 0x0A0D0D0A  # the same in both byte orders
_PCAPNG_BYTE_ORDER = 0x1A2B3C4D
_BLOCK_IDB, _BLOCK_OPB, _BLOCK_SPB, _BLOCK_EPB = 1, 2, 3, 6
# Block types that carry no packets and need no note: name resolution,
# interface statistics, systemd journal export, decryption secrets, custom.
_BLOCKS_WITHOUT_PACKETS = {4, 5, 9, 10, 0x0BAD, 0x40000BAD}

_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_VLAN_ETHERTYPES = (0x8100, 0x88A8, 0x9100)
_TCP, _UDP = 6, 17
_TCP_FIN, _TCP_SYN, _TCP_RST, _TCP_ACK = 0x01, 0x02, 0x04, 0x10
_IPV6_EXTENSIONS = (0, 43, 60, 135, 139, 140)
_IPV6_FRAGMENT, _IPV6_AH = 44, 51


@dataclass(frozen=True, slots=True)
class Packet:
    """One captured packet.

    ``data`` starts at the link-layer header of ``linktype``. ``orig_len``
    is the length on the wire, which is more than ``len(data)`` when the
    capture cut the packet at its snap length. ``offset`` is the byte offset
    of the packet record (pcap) or block (pcapng) in the file. ``timestamp``
    is epoch seconds, NaN for a pcapng simple packet block, which has no time.
    """

    timestamp: float
    linktype: int
    data: bytes
    orig_len: int
    offset: int
    interface: int = 0


@dataclass
class CaptureRead:
    """Flow records and findings of :func:`read_capture` for one capture file.

    ``kind`` is ``flow-export`` when UDP datagrams to or from the export ports
    were decoded, else ``traffic``. ``problems`` are damaged or unreadable
    parts, ``notes`` facts the user should know (an empty capture, packets
    that are in no flow, a port that seems to carry flow exports).
    """

    path: str
    kind: str
    records: pa.Table
    problems: list[FlowProblem] = field(default_factory=list)
    notes: list[FlowProblem] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    packets: int = 0


# --------------------------------------------------------------------------
# Public functions


def _kept(count: int) -> str:
    """Return the clause saying how many packets before a cut were kept."""
    if count == 0:
        return "no packets come before it"
    if count == 1:
        return "the 1 packet before it is kept"
    return f"the {count} packets before it are kept"


def iter_packets(path: str | Path, problems: list[FlowProblem] | None = None) -> Iterator[Packet]:
    """Yield the packets of a pcap or pcapng file in file order.

    A damaged record (a length that runs past the end of the file, a pcapng
    block whose two lengths differ) ends the iteration. The packets before it
    are yielded, and a :class:`FlowProblem` with its offset is appended to
    ``problems`` when given.

    Raises
    ------
    InputFormatError
        When the file cannot be read, is empty or is not a pcap or pcapng file.
    """
    capture = _Capture.open(path)
    try:
        index = capture.index
        for row in range(len(index.data)):
            start = int(index.data[row])
            yield Packet(
                timestamp=float(index.timestamp[row]),
                linktype=int(index.linktype[row]),
                data=bytes(capture.buffer[start : start + int(index.caplen[row])]),
                orig_len=int(index.orig_len[row]),
                offset=int(index.record[row]),
                interface=int(index.interface[row]),
            )
        if problems is not None:
            problems.extend(capture.problems)
            problems.extend(capture.notes)
    finally:
        capture.close()


def read_flow_capture(
    path: str | Path,
    ports: Collection[int],
    decoder: FlowDecoder | None = None,
) -> tuple[pa.Table, list[FlowProblem], DecoderCounters]:
    """Decode the flow exports in a capture: UDP payloads to or from ``ports``.

    The exporter of each record is the source address of its datagram. Pass
    a ``decoder`` to share templates between files (a capture of templates,
    then one of data); it is then left to the caller to expire. Without one,
    data still waiting for a template at the end of the file is counted as
    undecodable.

    Returns the records, the problems (capture damage, decoder problems and
    notes) and the decoder counters.

    Raises
    ------
    InputFormatError
        As :func:`iter_packets`.
    """
    capture = _Capture.open(path)
    try:
        own_decoder = decoder is None
        decoder = decoder or FlowDecoder()
        records, problems, notes = _decode_exports(capture, _headers(capture), set(ports), decoder)
        if own_decoder:
            decoder.expire(math.inf)
        return records, capture.problems + problems + capture.notes + notes, decoder.counters
    finally:
        capture.close()


def capture_to_flows(
    path: str | Path,
    *,
    idle_timeout: float = IDLE_TIMEOUT_S,
    active_timeout: float = ACTIVE_TIMEOUT_S,
) -> tuple[pa.Table, list[FlowProblem]]:
    """Turn the raw traffic of a capture into one flow record per session.

    See the module notes for the session and client rules. Returns the
    records (exporter: the file name) and the problems and notes.

    Raises
    ------
    InputFormatError
        As :func:`iter_packets`.
    """
    capture = _Capture.open(path)
    try:
        headers = _headers(capture)
        records, notes = _sessions(capture, headers, idle_timeout, active_timeout)
        return records, capture.problems + capture.notes + notes
    finally:
        capture.close()


def read_capture(path: str | Path, ports: Collection[int]) -> CaptureRead:
    """Read a capture as ``twin build`` does: flow exports on ``ports``, else raw traffic.

    When no UDP datagram uses one of ``ports``, the packets become sessions
    (:func:`capture_to_flows`), and UDP ports whose datagrams look like
    NetFlow, IPFIX or sFlow exports are named in a note, with the option that
    would decode them.

    Raises
    ------
    InputFormatError
        As :func:`iter_packets`.
    """
    capture = _Capture.open(path)
    try:
        headers = _headers(capture)
        packets = len(capture.index.data)
        export = _export_mask(headers, set(ports))
        if export.any():
            decoder = FlowDecoder()
            records, problems, notes = _decode_exports(capture, headers, set(ports), decoder)
            decoder.expire(math.inf)
            others = packets - int(export.sum())
            if others:
                notes.append(_note(capture, f"{others} packets are not flow exports on UDP ports {_ports_text(ports)} and are not read as traffic"))
            counters = {key: value for key, value in decoder.counters.as_dict().items() if isinstance(value, int)}
            counters["packets"] = packets
            return CaptureRead(capture.path, "flow-export", records, capture.problems + problems, capture.notes + notes, counters, packets)
        records, notes = _sessions(capture, headers, IDLE_TIMEOUT_S, ACTIVE_TIMEOUT_S)
        # Hints come first, because the build summary shows the first note of a file.
        notes = _export_hints(capture, headers) + capture.notes + notes
        counters = {"packets": packets, "sessions": records.num_rows}
        return CaptureRead(capture.path, "traffic", records, capture.problems, notes, counters, packets)
    finally:
        capture.close()


# --------------------------------------------------------------------------
# File structure


@dataclass
class _Index:
    """Per-packet arrays: record offset, data offset, lengths, time, link type, interface."""

    record: np.ndarray
    data: np.ndarray
    caplen: np.ndarray
    orig_len: np.ndarray
    timestamp: np.ndarray
    linktype: np.ndarray
    interface: np.ndarray


class _Capture:
    """A capture file mapped into memory, with its packet index."""

    def __init__(self, path: Path, buffer, handle) -> None:
        self.path = str(path)
        self.name = path.name
        self.buffer = buffer
        self._handle = handle
        self.problems: list[FlowProblem] = []
        self.notes: list[FlowProblem] = []
        self.index: _Index

    @classmethod
    def open(cls, path: str | Path) -> "_Capture":
        path = Path(path)
        try:
            size = path.stat().st_size
            if size == 0:
                raise InputFormatError(path, "empty file (0 bytes); expected a pcap or pcapng capture")
            handle = path.open("rb")
        except OSError as exc:
            raise InputFormatError(path, f"cannot read file: {exc.strerror}; check the path and permissions") from None
        try:
            buffer = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            handle.close()
            raise InputFormatError(path, f"cannot map file: {exc}") from None
        capture = cls(path, buffer, handle)
        try:
            magic = bytes(buffer[:4])
            if magic in _PCAP_MAGIC:
                capture.index = _index_pcap(capture, *_PCAP_MAGIC[magic])
            elif magic == _PCAPNG_SHB:
                capture.index = _index_pcapng(capture)
            else:
                raise InputFormatError(
                    path,
                    f"not a pcap or pcapng file: it starts with bytes {magic.hex()}; expected a capture written by "
                    "tcpdump, dumpcap or Wireshark (pcap magic a1b2c3d4 or a1b23c4d, pcapng 0a0d0d0a)",
                    offset=0,
                )
        except BaseException:
            capture.close()
            raise
        if len(capture.index.data) == 0 and not capture.problems:
            capture.notes.append(_note(capture, "the capture holds no packets (only its file header), so it adds no flows"))
        return capture

    def close(self) -> None:
        try:
            self.buffer.close()
        except BufferError:
            # A NumPy view of the map is still alive; the map closes when it is freed.
            pass
        self._handle.close()


def _index_pcap(capture: _Capture, endian: str, resolution: float) -> _Index:
    buffer = capture.buffer
    size = len(buffer)
    if size < 24:
        raise InputFormatError(
            capture.path, f"the pcap file header is cut off: the file has {size} of 24 bytes", offset=0, field="header"
        )
    _, _, _, _, snaplen, linktype = struct.unpack_from(endian + "HHiIII", buffer, 4)
    linktype &= 0x0FFFFFFF  # the upper bits carry the FCS length (pcap-linktype(7))
    limit = max(snaplen, MAX_PACKET_BYTES)

    # The loop finds where each record starts, which depends on every
    # captured length before it. The header fields are then read with NumPy.
    unpack_length = struct.Struct(endian + "I").unpack_from
    records = []
    append = records.append
    position = 24
    while position + 16 <= size:
        (caplen,) = unpack_length(buffer, position + 8)
        if caplen > limit:
            _problem(capture, position, "incl_len", f"packet record declares {caplen} captured bytes, more than the limit {limit}; the file is damaged from here on, so the rest is skipped")
            break
        if position + 16 + caplen > size:
            _problem(
                capture, position, "incl_len",
                f"the last packet is cut off: its record declares {caplen} bytes but the file ends after "
                f"{size - position - 16}; {_kept(len(records))}",
            )
            break
        append(position)
        position += 16 + caplen
    else:
        if position < size:
            _problem(
                capture, position, "header",
                f"the file ends inside a packet record header ({size - position} of 16 bytes); {_kept(len(records))}",
            )

    record = np.array(records, dtype=np.int64)
    view = np.frombuffer(buffer, dtype=np.uint8)
    fields = view[record[:, None] + np.arange(16)].reshape(-1) if len(record) else np.zeros(0, dtype=np.uint8)
    header = np.ascontiguousarray(fields).view(endian + "u4").reshape(-1, 4).astype(np.int64)
    del view, fields
    return _Index(
        record=record,
        data=record + 16,
        caplen=header[:, 2],
        orig_len=header[:, 3],
        timestamp=header[:, 0].astype(np.float64) + header[:, 1].astype(np.float64) * resolution,
        linktype=np.full(len(records), linktype, dtype=np.int64),
        interface=np.zeros(len(records), dtype=np.int64),
    )


@dataclass
class _Interface:
    linktype: int
    resolution: float = 1e-6
    offset_s: float = 0.0


def _index_pcapng(capture: _Capture) -> _Index:
    buffer = capture.buffer
    size = len(buffer)
    # Packets: block offset, data offset, global interface number, raw time
    # ticks, captured and original length. Interfaces of every section are
    # numbered in one list, so the time and link type are looked up at once.
    records: list[int] = []
    data: list[int] = []
    interface_numbers: list[int] = []
    interface_ids: list[int] = []
    ticks: list[int] = []
    caplens: list[int] = []
    orig_lens: list[int] = []
    interfaces: list[_Interface] = []
    section_start = 0  # number of the section's first interface in `interfaces`
    unknown: Counter[int] = Counter()
    block_header = struct.Struct("<II").unpack_from
    trailer_field = struct.Struct("<I").unpack_from
    packet_header = struct.Struct("<IIIIIII").unpack_from
    endian = "<"
    position = 0
    while position < size:
        if size - position < 12:
            _problem(capture, position, "block", f"the file ends inside a block header ({size - position} of 12 bytes); {_kept(len(records))}")
            break
        block_type, length = block_header(buffer, position)
        if block_type == _PCAPNG_SECTION:
            order = bytes(buffer[position + 8 : position + 12])
            if struct.unpack("<I", order)[0] == _PCAPNG_BYTE_ORDER:
                endian = "<"
            elif struct.unpack(">I", order)[0] == _PCAPNG_BYTE_ORDER:
                endian = ">"
            else:
                _problem(capture, position + 8, "byte_order_magic", f"section header has byte-order magic {order.hex()}, expected 1a2b3c4d in either order; the rest of the file is skipped")
                break
            block_header = struct.Struct(endian + "II").unpack_from
            trailer_field = struct.Struct(endian + "I").unpack_from
            packet_header = struct.Struct(endian + "IIIIIII").unpack_from
            block_type, length = block_header(buffer, position)
            section_start = len(interfaces)  # interface ids restart in each section
        if length < 12 or length % 4:
            _problem(capture, position + 4, "block_total_length", f"block of type 0x{block_type:x} declares length {length}, which is not a multiple of 4 of at least 12; the rest of the file is skipped")
            break
        if position + length > size:
            _problem(
                capture, position, "block_total_length",
                f"the last block (type 0x{block_type:x}) is cut off: it declares {length} bytes but the file ends after "
                f"{size - position}; {_kept(len(records))}",
            )
            break
        (trailer,) = trailer_field(buffer, position + length - 4)
        if trailer != length:
            _problem(capture, position + length - 4, "block_total_length", f"block of type 0x{block_type:x} has lengths {length} and {trailer}, which must be equal; the rest of the file is skipped")
            break
        if block_type == _BLOCK_EPB or block_type == _BLOCK_OPB:
            packet = _packet_block(capture, packet_header, endian, position, length, block_type, len(interfaces) - section_start)
            if packet is not None:
                interface_id, tick, caplen, orig_len, offset = packet
                records.append(position)
                data.append(position + offset)
                interface_numbers.append(section_start + interface_id)
                interface_ids.append(interface_id)
                ticks.append(tick)
                caplens.append(caplen)
                orig_lens.append(orig_len)
        elif block_type == _BLOCK_IDB:
            interfaces.append(_read_interface(capture, endian, position, length))
        elif block_type == _BLOCK_SPB:
            if len(interfaces) == section_start:
                _problem(capture, position, "interface_id", "simple packet block before any interface description; the packet is skipped")
            else:
                (orig_len,) = struct.unpack_from(endian + "I", buffer, position + 8)
                records.append(position)
                data.append(position + 12)
                interface_numbers.append(section_start)
                interface_ids.append(0)
                ticks.append(-1)  # a simple packet block has no time
                caplens.append(min(orig_len, length - 16))
                orig_lens.append(orig_len)
        elif block_type != _PCAPNG_SECTION and block_type not in _BLOCKS_WITHOUT_PACKETS:
            unknown[block_type] += 1
        position += length
    if unknown:
        kinds = ", ".join(f"0x{kind:x} ({count})" for kind, count in sorted(unknown.items()))
        capture.notes.append(_note(capture, f"skipped pcapng blocks of unknown type {kinds}; the packets in the other blocks are read"))

    number = np.array(interface_numbers, dtype=np.int64)
    linktype = np.array([interface.linktype for interface in interfaces] or [0], dtype=np.int64)
    resolution = np.array([interface.resolution for interface in interfaces] or [0.0])
    offset_s = np.array([interface.offset_s for interface in interfaces] or [0.0])
    tick = np.array(ticks, dtype=np.float64)
    timestamp = np.where(tick >= 0, tick * resolution[number] + offset_s[number], np.nan)
    return _Index(
        record=np.array(records, dtype=np.int64),
        data=np.array(data, dtype=np.int64),
        caplen=np.array(caplens, dtype=np.int64),
        orig_len=np.array(orig_lens, dtype=np.int64),
        timestamp=timestamp,
        linktype=linktype[number],
        interface=np.array(interface_ids, dtype=np.int64),
    )


def _read_interface(capture: _Capture, endian: str, position: int, length: int) -> _Interface:
    linktype, _, _ = struct.unpack_from(endian + "HHI", capture.buffer, position + 8)
    interface = _Interface(linktype)
    option = position + 16
    end = position + length - 4
    while option + 4 <= end:
        code, size = struct.unpack_from(endian + "HH", capture.buffer, option)
        if code == 0:
            break
        value = option + 4
        if value + size > end:
            _problem(capture, option, "option_length", f"interface option {code} declares {size} bytes past the end of its block; the option is ignored")
            break
        if code == 9 and size >= 1:  # if_tsresol
            exponent = capture.buffer[value]
            interface.resolution = 2.0 ** -(exponent & 0x7F) if exponent & 0x80 else 10.0 ** -exponent
        elif code == 14 and size >= 8:  # if_tsoffset
            (interface.offset_s,) = struct.unpack_from(endian + "q", capture.buffer, value)
        option = value + (size + 3) // 4 * 4
    return interface


def _packet_block(capture, packet_header, endian: str, position: int, length: int, block_type: int, interface_count: int):
    """Return (interface id, time ticks, captured length, original length, data offset) of a packet block, or None."""
    if length < 32:
        _problem(capture, position, "block_total_length", f"packet block of length {length} is shorter than its 32-byte header; the block is skipped")
        return None
    if block_type == _BLOCK_EPB:
        _, _, interface_id, high, low, caplen, orig_len = packet_header(capture.buffer, position)
    else:
        interface_id, _, high, low, caplen, orig_len = struct.unpack_from(endian + "HHIIII", capture.buffer, position + 8)
    if interface_id >= interface_count:
        _problem(capture, position + 8, "interface_id", f"packet block names interface {interface_id}, but the section describes {interface_count}; the packet is skipped")
        return None
    if 28 + caplen > length - 4:
        _problem(capture, position + 20, "captured_packet_length", f"packet block declares {caplen} captured bytes, more than its length {length} holds; the packet is skipped")
        return None
    return interface_id, (high << 32) | low, caplen, orig_len, 28


def _problem(capture: _Capture, offset: int, field_name: str, message: str) -> None:
    capture.problems.append(FlowProblem(capture.name, offset, field_name, message))


def _note(capture: _Capture, message: str, offset: int = 0) -> FlowProblem:
    return FlowProblem(capture.name, offset, "capture", message)


# --------------------------------------------------------------------------
# Headers, read for all packets at once


@dataclass
class _Headers:
    """Decoded network and transport headers, one entry per packet."""

    ip: np.ndarray  # bool: an IPv4 or IPv6 header was read
    src: np.ndarray  # (N, 16) uint8
    dst: np.ndarray  # (N, 16) uint8
    proto: np.ndarray
    ip_bytes: np.ndarray
    later_fragment: np.ndarray  # bool: a fragment after the first, without ports
    ports: np.ndarray  # bool: ports were read
    src_port: np.ndarray
    dst_port: np.ndarray
    tcp_flags: np.ndarray
    payload: np.ndarray  # file offset of the UDP payload
    payload_len: np.ndarray  # captured UDP payload bytes
    unsupported_linktype: Counter
    not_ip: int
    cut_off: int


class _Bytes:
    """Bounds-checked gathers of big-endian fields from the mapped file."""

    def __init__(self, buffer, start: np.ndarray, end: np.ndarray) -> None:
        self.view = np.frombuffer(buffer, dtype=np.uint8) if len(buffer) else np.zeros(1, dtype=np.uint8)
        self.start = start
        self.end = end

    def fits(self, position: np.ndarray, width: int) -> np.ndarray:
        return position + width <= self.end

    def u8(self, position: np.ndarray, valid: np.ndarray) -> np.ndarray:
        safe = np.where(valid & self.fits(position, 1), position, 0)
        return self.view[safe].astype(np.int64)

    def u16(self, position: np.ndarray, valid: np.ndarray) -> np.ndarray:
        safe = np.where(valid & self.fits(position, 2), position, 0)
        return (self.view[safe].astype(np.int64) << 8) | self.view[safe + 1]

    def block(self, position: np.ndarray, width: int, valid: np.ndarray) -> np.ndarray:
        safe = np.where(valid & self.fits(position, width), position, 0)
        return self.view[safe[:, None] + np.arange(width)]


def _headers(capture: _Capture) -> _Headers:
    index = capture.index
    n = len(index.data)
    data = index.data
    fields = _Bytes(capture.buffer, data, data + index.caplen)
    linktype = index.linktype
    everything = np.ones(n, dtype=bool)

    # Link layer: where the network header starts and its EtherType.
    network = np.full(n, -1, dtype=np.int64)
    ethertype = np.zeros(n, dtype=np.int64)
    ethernet = linktype == LINKTYPE_ETHERNET
    network[ethernet] = data[ethernet] + 14
    ethertype[ethernet] = fields.u16(data + 12, ethernet)[ethernet]
    sll = linktype == LINKTYPE_LINUX_SLL
    network[sll] = data[sll] + 16
    ethertype[sll] = fields.u16(data + 14, sll)[sll]
    sll2 = linktype == LINKTYPE_LINUX_SLL2
    network[sll2] = data[sll2] + 20
    ethertype[sll2] = fields.u16(data, sll2)[sll2]
    raw = np.isin(linktype, (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6))
    network[raw] = data[raw]
    version = fields.u8(data, raw) >> 4
    ethertype[raw] = np.where(version[raw] == 6, _ETHERTYPE_IPV6, np.where(version[raw] == 4, _ETHERTYPE_IPV4, 0))
    ethertype[linktype == LINKTYPE_IPV4] = _ETHERTYPE_IPV4
    ethertype[linktype == LINKTYPE_IPV6] = _ETHERTYPE_IPV6
    known = ethernet | sll | sll2 | raw
    unsupported = Counter(int(value) for value in linktype[~known].tolist())

    for _ in range(MAX_VLAN_TAGS):
        tagged = known & np.isin(ethertype, _VLAN_ETHERTYPES)
        if not tagged.any():
            break
        ethertype[tagged] = fields.u16(network + 2, tagged)[tagged]
        network[tagged] += 4

    # Network layer.
    first = fields.u8(network, known)
    ipv4 = known & (ethertype == _ETHERTYPE_IPV4) & fields.fits(network, 20) & ((first >> 4) == 4) & ((first & 0x0F) >= 5)
    ipv6 = known & (ethertype == _ETHERTYPE_IPV6) & fields.fits(network, 40) & ((first >> 4) == 6)
    ip = ipv4 | ipv6
    not_ip = int(np.count_nonzero(known & ~np.isin(ethertype, (_ETHERTYPE_IPV4, _ETHERTYPE_IPV6))))
    cut_off = int(np.count_nonzero(known & np.isin(ethertype, (_ETHERTYPE_IPV4, _ETHERTYPE_IPV6)) & ~ip))

    src = np.zeros((n, 16), dtype=np.uint8)
    dst = np.zeros((n, 16), dtype=np.uint8)
    proto = np.zeros(n, dtype=np.int64)
    ip_bytes = np.zeros(n, dtype=np.int64)
    transport = np.zeros(n, dtype=np.int64)
    later_fragment = np.zeros(n, dtype=bool)
    wire_network = index.orig_len - (network - data)

    if ipv4.any():
        rows = np.flatnonzero(ipv4)
        base = network[rows]
        valid = everything[rows]
        sub = _Bytes(capture.buffer, data[rows], data[rows] + index.caplen[rows])
        total = sub.u16(base + 2, valid)
        ip_bytes[rows] = np.where(total > 0, total, wire_network[rows])
        fragment = sub.u16(base + 6, valid)
        later_fragment[rows] = (fragment & 0x1FFF) != 0
        proto[rows] = sub.u8(base + 9, valid)
        src[rows] = ipv4_to_mapped(_u32(sub.block(base + 12, 4, valid)))
        dst[rows] = ipv4_to_mapped(_u32(sub.block(base + 16, 4, valid)))
        transport[rows] = base + (sub.u8(base, valid) & 0x0F) * 4

    if ipv6.any():
        rows = np.flatnonzero(ipv6)
        base = network[rows]
        valid = everything[rows]
        sub = _Bytes(capture.buffer, data[rows], data[rows] + index.caplen[rows])
        payload_length = sub.u16(base + 4, valid)
        ip_bytes[rows] = np.where(payload_length > 0, payload_length + 40, wire_network[rows])
        src[rows] = sub.block(base + 8, 16, valid)
        dst[rows] = sub.block(base + 24, 16, valid)
        next_header = sub.u8(base + 6, valid)
        position = base + 40
        fragment = np.zeros(len(rows), dtype=bool)
        for _ in range(MAX_IPV6_EXTENSIONS):
            extension = np.isin(next_header, _IPV6_EXTENSIONS) | (next_header == _IPV6_FRAGMENT) | (next_header == _IPV6_AH)
            extension &= sub.fits(position, 8)
            if not extension.any():
                break
            size = np.where(
                next_header == _IPV6_FRAGMENT, 8,
                np.where(next_header == _IPV6_AH, (sub.u8(position + 1, extension) + 2) * 4, (sub.u8(position + 1, extension) + 1) * 8),
            )
            fragment |= extension & (next_header == _IPV6_FRAGMENT) & ((sub.u16(position + 2, extension) >> 3) != 0)
            following = sub.u8(position, extension)
            next_header = np.where(extension, following, next_header)
            position = np.where(extension, position + size, position)
        proto[rows] = next_header
        transport[rows] = position
        later_fragment[rows] = fragment

    # Transport layer.
    port_protocol = ip & np.isin(proto, PORT_PROTOCOLS) & ~later_fragment
    ports = port_protocol & fields.fits(transport, 4)
    cut_off += int(np.count_nonzero(port_protocol & ~ports))
    src_port = np.where(ports, fields.u16(transport, ports), 0)
    dst_port = np.where(ports, fields.u16(transport + 2, ports), 0)
    tcp = ports & (proto == _TCP) & fields.fits(transport, 14)
    tcp_flags = np.where(tcp, fields.u8(transport + 13, tcp), 0)
    udp = ports & (proto == _UDP) & fields.fits(transport, 8)
    payload = np.where(udp, transport + 8, 0)
    udp_length = fields.u16(transport + 4, udp)
    captured = (data + index.caplen) - payload
    payload_len = np.where(udp, np.clip(np.minimum(udp_length - 8, captured), 0, None), 0)

    return _Headers(
        ip=ip, src=src, dst=dst, proto=proto, ip_bytes=ip_bytes, later_fragment=later_fragment & ip,
        ports=ports, src_port=src_port, dst_port=dst_port, tcp_flags=tcp_flags,
        payload=payload, payload_len=payload_len, unsupported_linktype=unsupported, not_ip=not_ip, cut_off=cut_off,
    )


def _u32(octets: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(octets).view(">u4").reshape(-1).astype(np.uint32)


# --------------------------------------------------------------------------
# Flow exports


def _export_mask(headers: _Headers, ports: set[int]) -> np.ndarray:
    if not ports:
        return np.zeros(len(headers.ip), dtype=bool)
    wanted = np.array(sorted(ports), dtype=np.int64)
    udp = headers.ports & (headers.proto == _UDP) & (headers.payload > 0)
    return udp & (np.isin(headers.dst_port, wanted) | np.isin(headers.src_port, wanted))


def _decode_exports(
    capture: _Capture, headers: _Headers, ports: set[int], decoder: FlowDecoder
) -> tuple[pa.Table, list[FlowProblem], list[FlowProblem]]:
    """Pass the export datagrams to ``decoder``; return records, decoder problems and notes."""
    rows = np.flatnonzero(_export_mask(headers, ports))
    tables = []
    problems: list[FlowProblem] = []
    exporters = _texts(headers.src[rows]) if len(rows) else []
    timestamps = capture.index.timestamp
    for row, exporter in zip(rows.tolist(), exporters):
        start = int(headers.payload[row])
        payload = bytes(capture.buffer[start : start + int(headers.payload_len[row])])
        now = float(timestamps[row]) if not math.isnan(timestamps[row]) else 0.0
        last = decoder.problems[-1] if decoder.problems else None
        table = decoder.decode(payload, exporter, now)
        if table.num_rows:
            tables.append(table)
        if decoder.problems and decoder.problems[-1] is not last:
            problems.extend(_file_offsets(decoder.problems, last, start))
    notes = []
    fragments = int(np.count_nonzero(headers.later_fragment & (headers.proto == _UDP)))
    if fragments:
        # NOTE: IP fragments are not reassembled, so a flow export datagram
        # larger than the path MTU loses the records after its first fragment.
        notes.append(_note(capture, f"{fragments} later IP fragments of UDP datagrams were not reassembled; flow records in them are missing"))
    records = pa.concat_tables(tables) if tables else empty_records()
    return records, problems, notes


def _file_offsets(problems, last: FlowProblem | None, payload_offset: int) -> list[FlowProblem]:
    """Return the problems added after ``last``, with offsets in the file instead of the datagram."""
    added = []
    for problem in reversed(problems):
        if problem is last:
            break
        added.append(FlowProblem(problem.exporter, payload_offset + problem.offset, problem.field, problem.message))
    return added[::-1]


def _export_hints(capture: _Capture, headers: _Headers) -> list[FlowProblem]:
    """Name the UDP ports whose datagrams look like flow exports."""
    udp = np.flatnonzero(headers.ports & (headers.proto == _UDP) & (headers.payload_len >= 8))
    found: dict[int, Counter] = {}
    for row in udp.tolist()[:100_000]:
        start = int(headers.payload[row])
        payload = bytes(capture.buffer[start : start + int(headers.payload_len[row])])
        kind = _export_kind(payload)
        if kind:
            port = int(headers.dst_port[row])
            found.setdefault(port, Counter())[kind] += 1
    notes = []
    for port, kinds in sorted(found.items()):
        described = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common())
        notes.append(
            _note(
                capture,
                f"UDP port {port} carried datagrams that look like flow exports ({described}); they were read as "
                f"traffic. To decode them, pass --flow-port {port} to twin build or add {port} to flows.export_ports in site.yaml",
            )
        )
    return notes


def _export_kind(payload: bytes) -> str | None:
    """Return the flow export format a UDP payload looks like, or None."""
    version = int.from_bytes(payload[:2], "big")
    if version == 5 and len(payload) >= 24:
        count = int.from_bytes(payload[2:4], "big")
        return "NetFlow v5" if 1 <= count <= 30 and len(payload) == 24 + 48 * count else None
    if version == 9 and len(payload) >= 24:
        set_id = int.from_bytes(payload[20:22], "big")
        set_length = int.from_bytes(payload[22:24], "big")
        return "NetFlow v9" if (set_id in (0, 1) or set_id >= 256) and 4 <= set_length <= len(payload) - 20 else None
    if version == 10 and len(payload) >= 16:
        return "IPFIX" if int.from_bytes(payload[2:4], "big") == len(payload) else None
    if payload[:4] == b"\x00\x00\x00\x05" and len(payload) >= 28:
        return "sFlow v5" if int.from_bytes(payload[4:8], "big") in (1, 2) else None
    return None


# --------------------------------------------------------------------------
# Sessions from raw traffic


def _sessions(capture: _Capture, headers: _Headers, idle_timeout: float, active_timeout: float) -> tuple[pa.Table, list[FlowProblem]]:
    notes = _traffic_notes(capture, headers)
    rows = np.flatnonzero(headers.ip & ~headers.later_fragment)
    if len(rows) == 0:
        return empty_records(), notes
    timestamp = capture.index.timestamp[rows]
    if np.isnan(timestamp).any():
        notes.append(_note(capture, "some packets have no time (pcapng simple packet blocks); their sessions start at 1970-01-01"))
        timestamp = np.nan_to_num(timestamp, nan=0.0)
    src, dst = headers.src[rows], headers.dst[rows]
    proto = headers.proto[rows]
    src_port, dst_port = headers.src_port[rows], headers.dst_port[rows]
    flags = headers.tcp_flags[rows]
    size = headers.ip_bytes[rows]

    # Each end is (address code, port); the lower end is "a", the other "b".
    codes = _address_codes(np.concatenate([src, dst]))
    src_end = codes[: len(rows)] * 65536 + src_port
    dst_end = codes[len(rows) :] * 65536 + dst_port
    forward = src_end <= dst_end
    low, high = np.minimum(src_end, dst_end), np.maximum(src_end, dst_end)
    session = _fold(_fold(pd.factorize(low)[0], pd.factorize(high)[0]), proto)

    order = np.lexsort((np.arange(len(rows)), timestamp, session))
    session, timestamp, forward, flags, size = session[order], timestamp[order], forward[order], flags[order], size[order]
    starts_session = np.ones(len(order), dtype=bool)
    starts_session[1:] = session[1:] != session[:-1]

    tcp = (proto[order] == _TCP)
    pure_syn = tcp & ((flags & (_TCP_SYN | _TCP_ACK)) == _TCP_SYN)
    closing = tcp & ((flags & (_TCP_FIN | _TCP_RST)) != 0)
    closed_before = _closed_before(closing, starts_session)
    repeated_syn = np.zeros(len(order), dtype=bool)
    repeated_syn[1:] = pure_syn[:-1] & ~starts_session[1:]
    gap = np.zeros(len(order))
    gap[1:] = np.diff(timestamp)
    new_flow = starts_session | (gap > idle_timeout) | (pure_syn & closed_before & ~repeated_syn)
    flow = np.cumsum(new_flow) - 1
    flow_start = timestamp[new_flow][flow]
    if active_timeout > 0:
        piece = np.floor((timestamp - flow_start) / active_timeout).astype(np.int64)
    else:
        piece = np.zeros(len(order), dtype=np.int64)
    flow = _fold(flow, piece)

    count = int(flow.max()) + 1
    first = np.full(count, len(order), dtype=np.int64)
    np.minimum.at(first, flow, np.arange(len(order)))
    client_is_low = _client_is_low(flow, count, first, forward, flags, pure_syn, src_end[order], dst_end[order])

    original = order[first]
    low_address = np.where(forward[first, None], src[original], dst[original])
    high_address = np.where(forward[first, None], dst[original], src[original])
    low_port = np.where(forward[first], src_port[original], dst_port[original])
    high_port = np.where(forward[first], dst_port[original], src_port[original])
    start = np.full(count, np.inf)
    np.minimum.at(start, flow, timestamp)
    end = np.full(count, -np.inf)
    np.maximum.at(end, flow, timestamp)
    tcp_flags = np.zeros(count, dtype=np.int64)
    np.bitwise_or.at(tcp_flags, flow, flags)

    records = records_from_arrays(
        exporter=capture.name,
        src_addr=np.where(client_is_low[:, None], low_address, high_address),
        dst_addr=np.where(client_is_low[:, None], high_address, low_address),
        proto=proto[original],
        src_port=np.where(client_is_low, low_port, high_port),
        dst_port=np.where(client_is_low, high_port, low_port),
        bytes=np.bincount(flow, weights=size, minlength=count).astype(np.uint64),
        packets=np.bincount(flow, minlength=count).astype(np.uint64),
        start=start,
        end=end,
        tcp_flags=tcp_flags,
        sampling=1,
    )
    return records, notes


def _client_is_low(flow, count, first, forward, flags, pure_syn, src_end, dst_end) -> np.ndarray:
    """Decide per flow whether the lower end is the client (see the module notes)."""
    # 1 when the lower end sent the first SYN, 0 when the higher did, -1 when none.
    decided = np.full(count, -1, dtype=np.int64)
    syn_ack = (flags & (_TCP_SYN | _TCP_ACK)) == (_TCP_SYN | _TCP_ACK)
    syn_ack_rows = np.flatnonzero(syn_ack)
    first_syn_ack = np.full(count, len(flow), dtype=np.int64)
    np.minimum.at(first_syn_ack, flow[syn_ack_rows], syn_ack_rows)
    has = first_syn_ack < len(flow)
    # The receiver of the SYN-ACK is the client.
    decided[has] = (~forward[first_syn_ack[has]]).astype(np.int64)
    syn_rows = np.flatnonzero(pure_syn)
    first_syn = np.full(count, len(flow), dtype=np.int64)
    np.minimum.at(first_syn, flow[syn_rows], syn_rows)
    has = first_syn < len(flow)
    decided[has] = forward[first_syn[has]].astype(np.int64)

    low_port = np.minimum(src_end, dst_end)[first] % 65536
    high_port = np.maximum(src_end, dst_end)[first] % 65536
    low_service = service_port_mask(low_port)
    high_service = service_port_mask(high_port)
    by_ports = np.where(
        high_service & ~low_service, 1,
        np.where(low_service & ~high_service, 0, np.where(high_port > low_port, 0, np.where(low_port > high_port, 1, -1))),
    )
    by_first_packet = forward[first].astype(np.int64)
    result = np.where(decided >= 0, decided, np.where(by_ports >= 0, by_ports, by_first_packet))
    return result.astype(bool)


def _closed_before(closing: np.ndarray, starts_session: np.ndarray) -> np.ndarray:
    """Return whether an earlier packet of the same session had FIN or RST."""
    total = np.cumsum(closing)
    before = total - closing
    session_index = np.cumsum(starts_session) - 1
    at_start = before[starts_session][session_index]
    return (before - at_start) > 0


def _traffic_notes(capture: _Capture, headers: _Headers) -> list[FlowProblem]:
    notes = []
    if headers.unsupported_linktype:
        kinds = ", ".join(f"{kind} ({count} packets)" for kind, count in sorted(headers.unsupported_linktype.items()))
        supported = ", ".join(f"{name} ({number})" for number, name in LINKTYPES.items())
        notes.append(_note(capture, f"packets of unsupported link types were skipped: {kinds}; supported: {supported}"))
    if headers.not_ip:
        notes.append(_note(capture, f"{headers.not_ip} packets are not IPv4 or IPv6 (ARP, LLDP, STP, ...) and are in no flow"))
    if headers.cut_off:
        notes.append(_note(capture, f"{headers.cut_off} packets were captured too short to read their IP or port headers; they are in no flow or have port 0"))
    fragments = int(np.count_nonzero(headers.later_fragment))
    if fragments:
        # NOTE: later fragments carry no ports and are not matched to their
        # first fragment, so their bytes are missing from the sessions.
        notes.append(_note(capture, f"{fragments} later IP fragments are in no flow; their bytes are not counted"))
    return notes


# --------------------------------------------------------------------------
# Helpers


def _fold(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Return a dense code for each (left, right) pair of non-negative integers."""
    right = np.asarray(right, dtype=np.int64)
    width = int(right.max()) + 1 if len(right) else 1
    codes, _ = pd.factorize(np.asarray(left, dtype=np.int64) * width + right)
    return codes.astype(np.int64)


def _address_codes(addresses: np.ndarray) -> np.ndarray:
    """Return a dense code per 16-byte address row."""
    words = np.ascontiguousarray(addresses).view(">u8").reshape(-1, 2)
    high = words[:, 0].astype(np.uint64)
    low = words[:, 1].astype(np.uint64)
    if not high.any():
        return pd.factorize(low)[0].astype(np.int64)
    return _fold(pd.factorize(high)[0], pd.factorize(low)[0])


def _texts(addresses: np.ndarray) -> list[str]:
    return addr_texts(addresses)


def _ports_text(ports: Collection[int]) -> str:
    return ", ".join(str(port) for port in sorted(ports))
