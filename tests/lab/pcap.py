"""A small reader for the pcap files tcpdump writes in the lab.

Reads classic libpcap files (not pcapng) with Ethernet link type, in either
byte order and with microsecond or nanosecond timestamps, and decodes the
Ethernet, 802.1Q, ARP, IPv4, IPv6 (fixed header only), TCP, UDP and ICMP
headers that the lab assertions need. Standard library ``struct`` only. A
record cut off at the end of the file (tcpdump killed) ends the read
without an error.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

__all__ = ["Packet", "read_pcap", "iter_pcap", "TCP_FIN", "TCP_SYN", "TCP_RST", "TCP_ACK", "LINKTYPE_ETHERNET"]

LINKTYPE_ETHERNET = 1

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10

_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_IP_PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_ETHERTYPE_ARP = 0x0806
_ETHERTYPE_VLAN = 0x8100


@dataclass(frozen=True, slots=True)
class Packet:
    """One captured frame, decoded as far as the lab needs.

    ``proto`` is ``arp``, ``tcp``, ``udp``, ``icmp``, ``icmpv6``, the IP
    protocol number as text for other IP protocols, or ``ether-0xNNNN`` for
    other frames. ``src``/``dst`` are IP addresses (ARP: the sender and
    target protocol addresses); ports are None for protocols without them.
    """

    ts: float
    src_mac: str
    dst_mac: str
    ethertype: int
    proto: str
    src: str | None = None
    dst: str | None = None
    sport: int | None = None
    dport: int | None = None
    tcp_flags: int = 0
    length: int = 0

    @property
    def syn_only(self) -> bool:
        """True for a TCP SYN without ACK: the first packet of a connection attempt."""
        return self.proto == "tcp" and bool(self.tcp_flags & TCP_SYN) and not self.tcp_flags & TCP_ACK

    def flag(self, mask: int) -> bool:
        """Return True when every TCP flag bit in ``mask`` is set."""
        return self.proto == "tcp" and (self.tcp_flags & mask) == mask


def read_pcap(path: str | Path) -> list[Packet]:
    """Return every packet of a pcap file; see :func:`iter_pcap`."""
    return list(iter_pcap(path))


def iter_pcap(path: str | Path) -> Iterator[Packet]:
    """Yield the packets of a pcap file in file order.

    Raises
    ------
    ValueError
        When the file is not a classic pcap file or its link type is not
        Ethernet.
    """
    data = Path(path).read_bytes()
    if len(data) < 24:
        raise ValueError(f"{path}: {len(data)} bytes is too short for a pcap header (24 bytes)")
    try:
        endian, unit = _MAGIC[data[:4]]
    except KeyError:
        raise ValueError(f"{path}: magic {data[:4].hex()} is not a classic pcap file (pcapng is not read)") from None
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    if linktype != LINKTYPE_ETHERNET:
        raise ValueError(f"{path}: link type {linktype} is not Ethernet (1); capture on an Ethernet interface")
    record = struct.Struct(endian + "IIII")
    offset = 24
    while offset + record.size <= len(data):
        seconds, fraction, captured, original = record.unpack_from(data, offset)
        offset += record.size
        frame = data[offset : offset + captured]
        if len(frame) < captured:
            return
        offset += captured
        yield _decode(seconds + fraction * unit, frame, original)


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _decode(ts: float, frame: bytes, length: int) -> Packet:
    if len(frame) < 14:
        return Packet(ts, "", "", 0, "short", length=length)
    dst_mac, src_mac = _mac(frame[0:6]), _mac(frame[6:12])
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    payload = frame[14:]
    if ethertype == _ETHERTYPE_VLAN and len(payload) >= 4:
        ethertype = struct.unpack_from("!H", payload, 2)[0]
        payload = payload[4:]
    base = dict(ts=ts, src_mac=src_mac, dst_mac=dst_mac, ethertype=ethertype, length=length)

    if ethertype == _ETHERTYPE_ARP and len(payload) >= 28:
        return Packet(**base, proto="arp", src=str(ipaddress.IPv4Address(payload[14:18])),
                      dst=str(ipaddress.IPv4Address(payload[24:28])))
    if ethertype == _ETHERTYPE_IPV4 and len(payload) >= 20:
        header = (payload[0] & 0x0F) * 4
        number = payload[9]
        src = str(ipaddress.IPv4Address(payload[12:16]))
        dst = str(ipaddress.IPv4Address(payload[16:20]))
        fragment_offset = struct.unpack_from("!H", payload, 6)[0] & 0x1FFF
        transport = payload[header:] if fragment_offset == 0 else b""
        return _transport(base, number, src, dst, transport)
    if ethertype == _ETHERTYPE_IPV6 and len(payload) >= 40:
        src = str(ipaddress.IPv6Address(payload[8:24]))
        dst = str(ipaddress.IPv6Address(payload[24:40]))
        return _transport(base, payload[6], src, dst, payload[40:])
    return Packet(**base, proto=f"ether-0x{ethertype:04x}")


def _transport(base: dict, number: int, src: str, dst: str, transport: bytes) -> Packet:
    proto = _IP_PROTOCOLS.get(number, str(number))
    if proto == "tcp" and len(transport) >= 14:
        sport, dport = struct.unpack_from("!HH", transport, 0)
        return Packet(**base, proto=proto, src=src, dst=dst, sport=sport, dport=dport, tcp_flags=transport[13])
    if proto == "udp" and len(transport) >= 4:
        sport, dport = struct.unpack_from("!HH", transport, 0)
        return Packet(**base, proto=proto, src=src, dst=dst, sport=sport, dport=dport)
    return Packet(**base, proto=proto, src=src, dst=dst)
