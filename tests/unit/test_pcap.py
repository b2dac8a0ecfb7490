"""Pcap and pcapng reading, packet sessions and flow export captures, on files written here.

Every capture is built byte by byte with ``struct`` in this file, so the
expected packets, sessions and records come from what the test wrote.
"""

from __future__ import annotations

import ipaddress
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.discovery import detect_format, import_path, pcap
from twin.discovery.flowrecords import FLOW_RECORD_SCHEMA, addr_texts
from twin.exceptions import InputFormatError

T0 = 1_704_103_200.0  # 2024-01-01 10:00:00 UTC
MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
SYN, ACK, FIN, PSH, RST = 0x02, 0x10, 0x01, 0x08, 0x04


# --------------------------------------------------------------------------
# Packet builders


def ipv4(src: str, dst: str, proto: int, payload: bytes, *, fragment: int = 0) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, fragment, 64, proto, 0,
        ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed,
    )
    return header + payload


def ipv6(src: str, dst: str, proto: int, payload: bytes, *, hop_by_hop: bool = False) -> bytes:
    if hop_by_hop:
        # Hop-by-hop options header: next header, length 0 (8 bytes), PadN.
        payload = struct.pack("!BB", proto, 0) + b"\x01\x04\x00\x00\x00\x00" + payload
        proto = 0
    header = struct.pack("!IHBB16s16s", 0x60000000, len(payload), proto, 64,
                         ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed)
    return header + payload


def tcp(sport: int, dport: int, flags: int, data: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, flags, 65535, 0, 0) + data


def udp(sport: int, dport: int, data: bytes = b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


def ethernet(network: bytes, *, vlans: tuple[int, ...] = (), ethertype: int = 0x0800, outer: int = 0x8100) -> bytes:
    tags = b""
    for index, vlan in enumerate(vlans):
        tpid = outer if index == 0 else 0x8100
        tags += struct.pack("!HH", tpid, vlan)
    return MAC_B + MAC_A + tags + struct.pack("!H", ethertype) + network


def linux_sll(network: bytes, ethertype: int = 0x0800) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, MAC_A + b"\x00\x00", ethertype) + network


def linux_sll2(network: bytes, ethertype: int = 0x0800) -> bytes:
    return struct.pack("!HHIHBB8s", ethertype, 0, 2, 1, 0, 6, MAC_A + b"\x00\x00") + network


# --------------------------------------------------------------------------
# File writers


def write_pcap(path: Path, packets, *, linktype: int = 1, endian: str = "<", nanoseconds: bool = False) -> Path:
    """Write classic pcap: ``packets`` is a list of (time, frame) or (time, frame, orig_len)."""
    magic = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
    scale = 1_000_000_000 if nanoseconds else 1_000_000
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)]
    for entry in packets:
        when, frame = entry[0], entry[1]
        orig_len = entry[2] if len(entry) > 2 else len(frame)
        seconds = int(when)
        fraction = round((when - seconds) * scale)
        out.append(struct.pack(endian + "IIII", seconds, fraction, len(frame), orig_len) + frame)
    path.write_bytes(b"".join(out))
    return path


def pcapng_block(block_type: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


def pcapng_section() -> bytes:
    return pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))


def pcapng_interface(linktype: int, options: bytes = b"") -> bytes:
    return pcapng_block(1, struct.pack("<HHI", linktype, 0, 0) + options + (struct.pack("<HH", 0, 0) if options else b""))


def pcapng_option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def pcapng_packet(interface: int, ticks: int, frame: bytes) -> bytes:
    return pcapng_block(6, struct.pack("<IIIII", interface, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)) + frame)


# --------------------------------------------------------------------------
# Helpers


def flows_of(path: Path, **options) -> list[dict]:
    table, _ = pcap.capture_to_flows(path, **options)
    rows = table.to_pylist()
    for row, src, dst in zip(rows, addr_texts(table["src_addr"]), addr_texts(table["dst_addr"])):
        row["src"], row["dst"] = src, dst
    return sorted(rows, key=lambda row: (row["start"], row["src"], row["src_port"]))


def tcp_conversation(client: str, server: str, cport: int, sport: int, start: float, payload: bytes = b"x" * 100):
    """Return the IP packets of a whole TCP connection and the bytes they carry."""
    packets = [
        (start, ipv4(client, server, 6, tcp(cport, sport, SYN))),
        (start + 0.001, ipv4(server, client, 6, tcp(sport, cport, SYN | ACK))),
        (start + 0.002, ipv4(client, server, 6, tcp(cport, sport, ACK))),
        (start + 0.003, ipv4(client, server, 6, tcp(cport, sport, PSH | ACK, payload))),
        (start + 0.004, ipv4(server, client, 6, tcp(sport, cport, ACK))),
        (start + 0.005, ipv4(client, server, 6, tcp(cport, sport, FIN | ACK))),
        (start + 0.006, ipv4(server, client, 6, tcp(sport, cport, FIN | ACK))),
        (start + 0.007, ipv4(client, server, 6, tcp(cport, sport, ACK))),
    ]
    return packets, sum(len(p) for _, p in packets)


def netflow_v5(records: list[dict], *, export_time: int = 1_704_103_260, uptime_ms: int = 600_000) -> bytes:
    """Build a NetFlow v5 datagram; record times are sysUptime milliseconds."""
    header = struct.pack("!HHIIIIBBH", 5, len(records), uptime_ms, export_time, 0, 1, 0, 0, 0)
    body = b""
    for r in records:
        body += struct.pack(
            "!4s4s4sHHIIIIHHBBBBHHBBH",
            ipaddress.IPv4Address(r["src"]).packed, ipaddress.IPv4Address(r["dst"]).packed, b"\x00" * 4,
            0, 0, r["packets"], r["bytes"], r["first"], r["last"], r["sport"], r["dport"],
            0, r.get("flags", 0), r["proto"], 0, 0, 0, 0, 0, 0,
        )
    return header + body


# --------------------------------------------------------------------------
# Reading pcap and pcapng


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nanoseconds", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path, endian, nanoseconds):
    frames = [
        (T0 + 0.25, ethernet(ipv4("10.0.0.1", "10.0.0.2", 17, udp(5000, 53, b"q")))),
        (T0 + 1.5, ethernet(ipv4("10.0.0.2", "10.0.0.1", 17, udp(53, 5000, b"answer")))),
    ]
    path = write_pcap(tmp_path / "a.pcap", frames, endian=endian, nanoseconds=nanoseconds)

    packets = list(pcap.iter_packets(path))

    assert [p.data for p in packets] == [frame for _, frame in frames]
    assert [p.timestamp for p in packets] == pytest.approx([when for when, _ in frames], abs=1e-6)
    assert [p.linktype for p in packets] == [1, 1]
    assert [p.offset for p in packets] == [24, 24 + 16 + len(frames[0][1])]


def test_pcapng_interfaces_resolution_and_offset(tmp_path):
    ether = ethernet(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(40000, 443, SYN)))
    raw = ipv4("10.0.0.3", "10.0.0.4", 17, udp(40001, 123))
    data = (
        pcapng_section()
        + pcapng_interface(1)  # microseconds by default
        + pcapng_interface(101, pcapng_option(9, b"\x09") + pcapng_option(14, struct.pack("<q", 100)))
        + pcapng_packet(0, int(T0 * 1e6), ether)
        + pcapng_packet(1, int((T0 - 100 + 0.5) * 1e9), raw)
    )
    path = tmp_path / "two.pcapng"
    path.write_bytes(data)

    packets = list(pcap.iter_packets(path))

    assert [(p.interface, p.linktype, p.data) for p in packets] == [(0, 1, ether), (1, 101, raw)]
    assert packets[0].timestamp == pytest.approx(T0, abs=1e-6)
    assert packets[1].timestamp == pytest.approx(T0 + 0.5, abs=1e-6)


def test_pcapng_unknown_block_is_noted_and_skipped(tmp_path):
    frame = ethernet(ipv4("10.0.0.1", "10.0.0.2", 17, udp(40000, 514, b"log")))
    path = tmp_path / "odd.pcapng"
    path.write_bytes(
        pcapng_section() + pcapng_interface(1) + pcapng_packet(0, int(T0 * 1e6), frame)
        + pcapng_block(0x0777, b"vendor data") + pcapng_packet(0, int((T0 + 1) * 1e6), frame)
    )

    problems: list = []
    packets = list(pcap.iter_packets(path, problems))
    result = import_path(path)

    assert len(packets) == 2
    assert [p.field for p in problems] == ["capture"]
    assert "0x777" in problems[0].message
    assert result.records_skipped == 0
    assert result.flows["packets"].tolist() == [2]
    assert any("unknown type 0x777" in issue.message and issue.severity == "info" for issue in result.issues)


def test_pcapng_simple_packet_block(tmp_path):
    frame = ethernet(ipv4("10.0.0.1", "10.0.0.2", 17, udp(40000, 514, b"log")))
    body = struct.pack("<I", len(frame)) + frame
    path = tmp_path / "simple.pcapng"
    path.write_bytes(pcapng_section() + pcapng_interface(1) + pcapng_block(3, body))

    packets = list(pcap.iter_packets(path))

    assert [p.data for p in packets] == [frame]


def test_pcapng_big_endian_section(tmp_path):
    frame = ethernet(ipv4("10.0.0.1", "10.0.0.2", 17, udp(40000, 514)))

    def block(block_type: int, body: bytes) -> bytes:
        body += b"\x00" * (-len(body) % 4)
        return struct.pack(">II", block_type, 12 + len(body)) + body + struct.pack(">I", 12 + len(body))

    ticks = int(T0 * 1e6)
    data = (
        block(0x0A0D0D0A, struct.pack(">IHHq", 0x1A2B3C4D, 1, 0, -1))
        + block(1, struct.pack(">HHI", 1, 0, 0))
        + block(6, struct.pack(">IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)) + frame)
    )
    path = tmp_path / "big.pcapng"
    path.write_bytes(data)

    packets = list(pcap.iter_packets(path))

    assert [p.data for p in packets] == [frame]
    assert packets[0].timestamp == pytest.approx(T0, abs=1e-6)


# --------------------------------------------------------------------------
# Damaged and empty files


def test_truncated_last_packet_keeps_earlier(tmp_path):
    packets, _ = tcp_conversation("10.0.0.1", "10.0.0.2", 40000, 443, T0)
    path = write_pcap(tmp_path / "cut.pcap", [(when, ethernet(frame)) for when, frame in packets])
    data = path.read_bytes()
    last_record = len(data) - 16 - len(ethernet(packets[-1][1]))
    path.write_bytes(data[:-10])

    problems: list = []
    read = list(pcap.iter_packets(path, problems))
    result = import_path(path)

    assert len(read) == len(packets) - 1
    assert [(p.offset, p.field) for p in problems] == [(last_record, "incl_len")]
    assert "cut off" in problems[0].message
    assert result.records_skipped == 1
    assert result.issues[0].offset == last_record
    assert result.flows["packets"].tolist() == [len(packets) - 1]


def test_truncated_pcapng_block(tmp_path):
    frame = ethernet(ipv4("10.0.0.1", "10.0.0.2", 17, udp(40000, 53)))
    first = pcapng_section() + pcapng_interface(1) + pcapng_packet(0, int(T0 * 1e6), frame)
    path = tmp_path / "cut.pcapng"
    path.write_bytes(first + pcapng_packet(0, int(T0 * 1e6), frame)[:-8])

    problems: list = []
    read = list(pcap.iter_packets(path, problems))

    assert len(read) == 1
    assert [(p.offset, p.field) for p in problems] == [(len(first), "block_total_length")]


def test_pcapng_length_mismatch_stops_reading(tmp_path):
    frame = ethernet(ipv4("10.0.0.1", "10.0.0.2", 17, udp(40000, 53)))
    good = pcapng_section() + pcapng_interface(1) + pcapng_packet(0, int(T0 * 1e6), frame)
    bad = bytearray(pcapng_packet(0, int(T0 * 1e6), frame))
    bad[-4:] = struct.pack("<I", len(bad) + 4)
    path = tmp_path / "mismatch.pcapng"
    path.write_bytes(good + bytes(bad) + pcapng_packet(0, int(T0 * 1e6), frame))

    problems: list = []
    read = list(pcap.iter_packets(path, problems))

    assert len(read) == 1
    assert problems[0].offset == len(good) + len(bad) - 4
    assert "must be equal" in problems[0].message


def test_empty_pcap_gives_note(tmp_path):
    path = write_pcap(tmp_path / "empty.pcap", [])

    result = import_path(path)

    assert result.records_read == 0
    assert result.records_skipped == 0
    assert len(result.flows) == 0
    assert [issue.severity for issue in result.issues] == ["info"]
    assert "no packets" in result.issues[0].message


def test_zero_length_file_names_file(tmp_path):
    path = tmp_path / "nothing.pcap"
    path.write_bytes(b"")

    with pytest.raises(InputFormatError) as caught:
        import_path(path)

    assert "nothing.pcap" in str(caught.value)
    assert "empty file" in str(caught.value)


def test_text_file_named_pcap_is_rejected(tmp_path):
    path = tmp_path / "notes.pcap"
    path.write_text("this is not a capture\n")

    assert detect_format(path) == "pcap"
    with pytest.raises(InputFormatError) as caught:
        import_path(path)

    assert "notes.pcap" in str(caught.value)
    assert "not a pcap or pcapng file" in str(caught.value)


def test_formats_detected_by_content(tmp_path):
    frame = ethernet(ipv4("10.0.0.1", "10.0.0.2", 17, udp(40000, 53)))
    pcap_file = write_pcap(tmp_path / "capture.bin", [(T0, frame)], endian=">", nanoseconds=True)
    pcapng_file = tmp_path / "capture2.bin"
    pcapng_file.write_bytes(pcapng_section() + pcapng_interface(1) + pcapng_packet(0, int(T0 * 1e6), frame))
    # Two IPFIX messages with only a header each: version 10, length 16.
    message = struct.pack("!HHIII", 10, 16, int(T0), 1, 0)
    ipfix_file = tmp_path / "export.bin"
    ipfix_file.write_bytes(message + message)
    other = tmp_path / "other.bin"
    other.write_bytes(struct.pack("!HH", 10, 400) + b"\x00" * 40)

    assert detect_format(pcap_file) == "pcap"
    assert detect_format(pcapng_file) == "pcapng"
    assert detect_format(ipfix_file) == "ipfix"
    assert detect_format(other) is None


def test_cut_header_is_rejected(tmp_path):
    path = tmp_path / "short.pcap"
    path.write_bytes(struct.pack("<IHH", 0xA1B2C3D4, 2, 4))

    with pytest.raises(InputFormatError) as caught:
        pcap.capture_to_flows(path)

    assert "file header is cut off" in str(caught.value)


# --------------------------------------------------------------------------
# Link types and headers


@pytest.mark.parametrize(
    "linktype, frame",
    [
        (1, ethernet(ipv4("10.1.0.5", "10.1.0.9", 6, tcp(51000, 2575, SYN)))),
        (1, ethernet(ipv4("10.1.0.5", "10.1.0.9", 6, tcp(51000, 2575, SYN)), vlans=(20,))),
        (1, ethernet(ipv4("10.1.0.5", "10.1.0.9", 6, tcp(51000, 2575, SYN)), vlans=(100, 20), outer=0x88A8)),
        (113, linux_sll(ipv4("10.1.0.5", "10.1.0.9", 6, tcp(51000, 2575, SYN)))),
        (276, linux_sll2(ipv4("10.1.0.5", "10.1.0.9", 6, tcp(51000, 2575, SYN)))),
        (101, ipv4("10.1.0.5", "10.1.0.9", 6, tcp(51000, 2575, SYN))),
        (228, ipv4("10.1.0.5", "10.1.0.9", 6, tcp(51000, 2575, SYN))),
    ],
    ids=["ethernet", "802.1q", "qinq", "sll", "sll2", "raw", "ipv4"],
)
def test_link_types_give_same_flow(tmp_path, linktype, frame):
    path = write_pcap(tmp_path / "l.pcap", [(T0, frame)], linktype=linktype)

    [flow] = flows_of(path)

    assert (flow["src"], flow["dst"], flow["proto"], flow["src_port"], flow["dst_port"]) == ("10.1.0.5", "10.1.0.9", 6, 51000, 2575)
    assert flow["bytes"] == 40
    assert flow["tcp_flags"] == SYN


@pytest.mark.parametrize("linktype", [229, 101, 1])
def test_ipv6_with_extension_header(tmp_path, linktype):
    packet = ipv6("2001:db8::10", "2001:db8::20", 17, udp(40000, 161, b"get"), hop_by_hop=True)
    frame = ethernet(packet, ethertype=0x86DD) if linktype == 1 else packet
    path = write_pcap(tmp_path / "v6.pcap", [(T0, frame)], linktype=linktype)

    [flow] = flows_of(path)

    assert (flow["src"], flow["dst"], flow["proto"], flow["dst_port"]) == ("2001:db8::10", "2001:db8::20", 17, 161)
    assert flow["bytes"] == len(packet)


def test_unsupported_link_type_is_noted(tmp_path):
    path = write_pcap(tmp_path / "bt.pcap", [(T0, b"\x00" * 40)], linktype=187)

    table, problems = pcap.capture_to_flows(path)

    assert table.num_rows == 0
    assert any("187 (1 packets)" in p.message for p in problems)


def test_non_ip_frames_are_noted(tmp_path):
    arp = ethernet(b"\x00\x01\x08\x00\x06\x04\x00\x01" + b"\x00" * 20, ethertype=0x0806)
    path = write_pcap(tmp_path / "arp.pcap", [(T0, arp), (T0 + 1, arp)])

    table, problems = pcap.capture_to_flows(path)

    assert table.num_rows == 0
    assert any(p.message.startswith("2 packets are not IPv4 or IPv6") for p in problems)


def test_snap_length_cut_counts_wire_bytes(tmp_path):
    packet = ipv4("10.0.0.1", "10.0.0.2", 6, tcp(40000, 104, PSH | ACK, b"d" * 1000))
    frame = ethernet(packet)
    path = write_pcap(tmp_path / "snap.pcap", [(T0, frame[:68], len(frame))])

    [flow] = flows_of(path)

    assert flow["dst_port"] == 104
    assert flow["bytes"] == len(packet)


# --------------------------------------------------------------------------
# Sessions


def test_tcp_session_client_is_syn_sender(tmp_path):
    # The client uses port 80 and the server 40000, so only the SYN tells them apart.
    packets, total = tcp_conversation("10.0.0.7", "10.0.0.8", 80, 40000, T0)
    path = write_pcap(tmp_path / "s.pcap", [(when, ethernet(p)) for when, p in packets])

    [flow] = flows_of(path)

    assert (flow["src"], flow["src_port"], flow["dst"], flow["dst_port"]) == ("10.0.0.7", 80, "10.0.0.8", 40000)
    assert flow["packets"] == len(packets)
    assert flow["bytes"] == total
    assert flow["start"] == pytest.approx(T0)
    assert flow["end"] == pytest.approx(packets[-1][0])
    assert flow["tcp_flags"] == SYN | ACK | FIN | PSH


def test_session_without_syn_uses_ports(tmp_path):
    # Capture started mid-connection: the server's reply comes first.
    frames = [
        (T0, ethernet(ipv4("10.0.0.8", "10.0.0.7", 6, tcp(6661, 49242, ACK, b"MSA")))),
        (T0 + 1, ethernet(ipv4("10.0.0.7", "10.0.0.8", 6, tcp(49242, 6661, ACK)))),
    ]
    path = write_pcap(tmp_path / "mid.pcap", frames)

    [flow] = flows_of(path)

    assert (flow["src"], flow["dst"], flow["dst_port"]) == ("10.0.0.7", "10.0.0.8", 6661)


def test_udp_session_higher_port_is_client(tmp_path):
    frames = [
        (T0, ethernet(ipv4("10.0.0.8", "10.0.0.7", 17, udp(20000, 30000)))),
        (T0 + 1, ethernet(ipv4("10.0.0.7", "10.0.0.8", 17, udp(30000, 20000)))),
    ]
    path = write_pcap(tmp_path / "u.pcap", frames)

    [flow] = flows_of(path)

    assert (flow["src"], flow["src_port"], flow["dst_port"]) == ("10.0.0.7", 30000, 20000)
    assert flow["packets"] == 2


def test_idle_timeout_splits_sessions(tmp_path):
    frames = [(T0 + offset, ethernet(ipv4("10.0.0.1", "10.0.0.2", 17, udp(40000, 514)))) for offset in (0, 10, 400, 410)]
    path = write_pcap(tmp_path / "idle.pcap", frames)

    flows = flows_of(path)
    longer = flows_of(path, idle_timeout=1000)

    assert [(f["start"] - T0, f["end"] - T0, f["packets"]) for f in flows] == [(0, 10, 2), (400, 410, 2)]
    assert [f["packets"] for f in longer] == [4]


def test_active_timeout_cuts_long_session(tmp_path):
    frames = [(T0 + offset, ethernet(ipv4("10.0.0.1", "10.0.0.2", 17, udp(40000, 514)))) for offset in range(0, 250, 50)]
    path = write_pcap(tmp_path / "long.pcap", frames)

    flows = flows_of(path, active_timeout=100)

    assert [f["packets"] for f in flows] == [2, 2, 1]


def test_port_reuse_after_fin_starts_new_session(tmp_path):
    first, _ = tcp_conversation("10.0.0.1", "10.0.0.2", 40000, 443, T0)
    second, _ = tcp_conversation("10.0.0.1", "10.0.0.2", 40000, 443, T0 + 5)
    # A retransmitted SYN of the second connection is part of it.
    retransmit = [(T0 + 5.0005, ipv4("10.0.0.1", "10.0.0.2", 6, tcp(40000, 443, SYN)))]
    frames = sorted(first + second + retransmit)
    path = write_pcap(tmp_path / "reuse.pcap", [(when, ethernet(p)) for when, p in frames])

    flows = flows_of(path)

    assert [f["packets"] for f in flows] == [len(first), len(second) + 1]


def test_icmp_echo_is_one_session(tmp_path):
    echo = struct.pack("!BBHHH", 8, 0, 0, 1, 1)
    reply = struct.pack("!BBHHH", 0, 0, 0, 1, 1)
    frames = [
        (T0, ethernet(ipv4("10.0.0.1", "10.0.0.2", 1, echo))),
        (T0 + 0.001, ethernet(ipv4("10.0.0.2", "10.0.0.1", 1, reply))),
    ]
    path = write_pcap(tmp_path / "ping.pcap", frames)

    [flow] = flows_of(path)

    assert (flow["src"], flow["dst"], flow["proto"], flow["dst_port"], flow["packets"]) == ("10.0.0.1", "10.0.0.2", 1, 0, 2)


def test_later_fragments_are_noted(tmp_path):
    frames = [
        (T0, ethernet(ipv4("10.0.0.1", "10.0.0.2", 17, udp(40000, 2049, b"a" * 16), fragment=0x2000))),
        (T0 + 0.001, ethernet(ipv4("10.0.0.1", "10.0.0.2", 17, b"b" * 16, fragment=3))),
    ]
    path = write_pcap(tmp_path / "frag.pcap", frames)

    table, problems = pcap.capture_to_flows(path)

    assert table.num_rows == 1
    assert table["packets"].to_pylist() == [1]
    assert any("1 later IP fragments" in p.message for p in problems)


def test_raw_capture_aggregates_to_edge(tmp_path):
    first, first_bytes = tcp_conversation("10.2.0.5", "10.2.0.9", 40000, 2575, T0)
    second, second_bytes = tcp_conversation("10.2.0.5", "10.2.0.9", 40001, 2575, T0 + 60)
    path = write_pcap(tmp_path / "hl7.pcap", [(when, ethernet(p)) for when, p in first + second])

    result = import_path(path)

    assert result.source == "pcap"
    assert result.records_read == 2
    edges = result.flows.to_dict("records")
    assert [(e["src_ip"], e["dst_ip"], e["proto"], e["dst_port"], e["flows"], e["bytes"]) for e in edges] == [
        ("10.2.0.5", "10.2.0.9", "tcp", 2575, 2, first_bytes + second_bytes)
    ]
    assert result.flow_hours["hour"].tolist() == [int(T0 // 3600 * 3600)]


# --------------------------------------------------------------------------
# Flow export captures


V5_RECORDS = [
    {"src": "10.3.0.10", "dst": "10.3.0.20", "sport": 40000, "dport": 104, "proto": 6, "packets": 12, "bytes": 9000, "first": 590_000, "last": 599_000},
    {"src": "10.3.0.20", "dst": "10.3.0.10", "sport": 104, "dport": 40000, "proto": 6, "packets": 10, "bytes": 800, "first": 590_100, "last": 599_100},
    {"src": "10.3.0.11", "dst": "10.3.0.21", "sport": 53000, "dport": 53, "proto": 17, "packets": 1, "bytes": 70, "first": 595_000, "last": 595_000},
]


def v5_capture(tmp_path: Path, port: int, *, exporter: str = "10.3.0.1") -> Path:
    datagram = netflow_v5(V5_RECORDS)
    frame = ethernet(ipv4(exporter, "10.3.0.2", 17, udp(40000, port, datagram)))
    return write_pcap(tmp_path / f"export{port}.pcap", [(T0 + 60, frame)])


def test_flow_capture_decodes_v5(tmp_path):
    path = v5_capture(tmp_path, 2055)

    table, problems, counters = pcap.read_flow_capture(path, [2055])

    assert problems == []
    assert counters.records == len(V5_RECORDS)
    rows = table.to_pylist()
    assert [(row["src_port"], row["dst_port"], row["bytes"], row["packets"]) for row in rows] == [
        (r["sport"], r["dport"], r["bytes"], r["packets"]) for r in V5_RECORDS
    ]
    assert addr_texts(table["src_addr"]) == [r["src"] for r in V5_RECORDS]
    assert set(table["exporter"].to_pylist()) == {"10.3.0.1"}


def test_flow_capture_other_port_reads_nothing(tmp_path):
    path = v5_capture(tmp_path, 2055)

    table, _, counters = pcap.read_flow_capture(path, [4739])

    assert table.num_rows == 0
    assert counters.datagrams == 0


def test_export_on_odd_port_gives_hint(tmp_path):
    path = v5_capture(tmp_path, 9990)

    read = pcap.read_capture(path, [2055])
    decoded = pcap.read_capture(path, [9990])

    assert read.kind == "traffic"
    assert "--flow-port 9990" in read.notes[0].message
    assert "NetFlow v5" in read.notes[0].message
    assert decoded.kind == "flow-export"
    assert decoded.records.num_rows == len(V5_RECORDS)


def test_flow_capture_import_builds_edges(tmp_path):
    path = v5_capture(tmp_path, 9995)

    result = import_path(path)

    assert result.source == "netflow"
    assert result.records_read == len(V5_RECORDS)
    edges = {(e["src_ip"], e["dst_ip"], e["proto"], e["dst_port"]): e for e in result.flows.to_dict("records")}
    # The reply (source port 104) is turned around onto the DICOM edge.
    assert set(edges) == {("10.3.0.10", "10.3.0.20", "tcp", 104), ("10.3.0.11", "10.3.0.21", "udp", 53)}
    assert edges[("10.3.0.10", "10.3.0.20", "tcp", 104)]["bytes"] == 9800
    assert edges[("10.3.0.10", "10.3.0.20", "tcp", 104)]["flows"] == 2
    assert result.counts["direction_flipped"] == 1


def test_flow_capture_export_ports_option(tmp_path):
    path = v5_capture(tmp_path, 9990)

    default = import_path(path)
    chosen = import_path(path, export_ports=[9990])

    assert default.source == "pcap"
    assert any("--flow-port 9990" in issue.message for issue in default.issues)
    assert chosen.source == "netflow"
    assert chosen.records_read == len(V5_RECORDS)


def test_flow_capture_truncated_datagram(tmp_path):
    datagram = netflow_v5(V5_RECORDS)[:-20]
    frame = ethernet(ipv4("10.3.0.1", "10.3.0.2", 17, udp(40000, 2055, datagram)))
    path = write_pcap(tmp_path / "short.pcap", [(T0, frame)])
    # File header, record header, Ethernet, IPv4 and UDP headers come before the datagram.
    payload_offset = 24 + 16 + 14 + 20 + 8

    table, problems, counters = pcap.read_flow_capture(path, [2055])

    assert table.num_rows == len(V5_RECORDS) - 1
    assert counters.malformed == 1
    assert [p.offset for p in problems] == [payload_offset + 24 + 48 * (len(V5_RECORDS) - 1)]


# --------------------------------------------------------------------------
# Mutated files


def mutation_base() -> list[bytes]:
    packets, _ = tcp_conversation("10.0.0.1", "10.0.0.2", 40000, 443, T0)
    frames = [(when, ethernet(p, vlans=(5,))) for when, p in packets]
    export = ethernet(ipv4("10.0.0.1", "10.0.0.2", 17, udp(40000, 2055, netflow_v5(V5_RECORDS))))
    frames.append((T0 + 1, export))
    pcap_bytes = b"".join(
        [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
        + [struct.pack("<IIII", int(when), 0, len(frame), len(frame)) + frame for when, frame in frames]
    )
    pcapng_bytes = (
        pcapng_section() + pcapng_interface(1, pcapng_option(9, b"\x09")) + pcapng_interface(276)
        + pcapng_packet(0, int(T0 * 1e9), export)
        + pcapng_packet(1, 5, linux_sll2(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2, SYN))))
    )
    return [pcap_bytes, pcapng_bytes]


MUTATION_BASE = mutation_base()


@settings(max_examples=300, deadline=None)
@given(
    which=st.integers(min_value=0, max_value=1),
    edits=st.lists(
        st.tuples(st.sampled_from(["set", "cut", "insert"]), st.integers(min_value=0, max_value=10_000), st.binary(min_size=1, max_size=24)),
        min_size=1, max_size=6,
    ),
)
def test_mutated_capture_never_crashes(which, edits):
    data = bytearray(MUTATION_BASE[which])
    for kind, position, value in edits:
        position %= max(len(data), 1)
        if kind == "set":
            data[position : position + len(value)] = value[: len(data) - position]
        elif kind == "cut":
            del data[position : position + len(value)]
        else:
            data[position:position] = value
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mutated.pcap"
        path.write_bytes(bytes(data))
        try:
            read = pcap.read_capture(path, [2055])
        except InputFormatError as exc:
            assert "mutated.pcap" in str(exc)
            return
        assert read.records.schema == FLOW_RECORD_SCHEMA
        assert all(0 <= problem.offset <= len(data) for problem in read.problems)
