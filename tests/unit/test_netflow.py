"""NetFlow v5/v9, IPFIX and sFlow v5 decoders on datagrams built here.

The builders below write datagrams field by field from the published
formats, so every expected value comes from what the test put in.
"""

from __future__ import annotations

import ipaddress
import struct

import numpy as np
import pytest

from twin.discovery.flowrecords import (
    FLOW_RECORD_SCHEMA,
    addr_texts,
    empty_records,
    ipv4_to_mapped,
    mapped_to_ipv4,
    records_from_arrays,
)
from twin.discovery.netflow import RESET_TOLERANCE_S, FlowDecoder, read_ipfix_file

EXPORT = 1_700_000_000
UPTIME_MS = 3_600_000


def ip4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


# -- datagram builders -------------------------------------------------------


def v5_datagram(records: list[dict], *, uptime=UPTIME_MS, secs=EXPORT, nsecs=0, sampling=0, count=None) -> bytes:
    header = struct.pack(">HHIIIIBBH", 5, len(records) if count is None else count, uptime, secs, nsecs, 1, 0, 0, sampling)
    body = b""
    for r in records:
        body += struct.pack(
            ">IIIHHIIIIHHBBBBHHBBH",
            ip4(r["src"]), ip4(r["dst"]), 0, 1, 2,
            r.get("packets", 1), r.get("bytes", 100), r.get("first", uptime - 2000), r.get("last", uptime - 1000),
            r.get("sport", 1234), r.get("dport", 80), 0, r.get("flags", 0x18), r.get("proto", 6), 0, 0, 0, 24, 24, 0,
        )
    return header + body


def v9_datagram(flowsets: list[bytes], *, source_id=1, uptime=UPTIME_MS, secs=EXPORT, sequence=1) -> bytes:
    return struct.pack(">HHIIII", 9, len(flowsets), uptime, secs, sequence, source_id) + b"".join(flowsets)


def flowset(set_id: int, body: bytes, pad_to: int = 4) -> bytes:
    padding = (-(len(body) + 4)) % pad_to
    return struct.pack(">HH", set_id, len(body) + 4 + padding) + body + bytes(padding)


def v9_template(template_id: int, fields: list[tuple[int, int]]) -> bytes:
    body = struct.pack(">HH", template_id, len(fields))
    for element, length in fields:
        body += struct.pack(">HH", element, length)
    return body


def v9_options_template(template_id: int, scope: list[tuple[int, int]], options: list[tuple[int, int]]) -> bytes:
    body = struct.pack(">HHH", template_id, 4 * len(scope), 4 * len(options))
    for element, length in scope + options:
        body += struct.pack(">HH", element, length)
    return body


def ipfix_message(sets: list[bytes], *, domain=1, export_time=EXPORT, sequence=0) -> bytes:
    body = b"".join(sets)
    return struct.pack(">HHIII", 10, 16 + len(body), export_time, sequence, domain) + body


def ipfix_template(template_id: int, fields: list[tuple], *, scope_count: int | None = None) -> bytes:
    """Template record; fields are (element, length) or (element, length, pen)."""
    if scope_count is None:
        body = struct.pack(">HH", template_id, len(fields))
    else:
        body = struct.pack(">HHH", template_id, len(fields), scope_count)
    for spec in fields:
        element, length = spec[0], spec[1]
        if len(spec) == 3:
            body += struct.pack(">HHI", element | 0x8000, length, spec[2])
        else:
            body += struct.pack(">HH", element, length)
    return body


def varlen(value: bytes) -> bytes:
    if len(value) < 255:
        return bytes([len(value)]) + value
    return b"\xff" + struct.pack(">H", len(value)) + value


# Template used by most v9 and IPFIX tests: 8/12 addresses, 7/11 ports,
# 4 proto, 6 flags, 1 octets (8 bytes), 2 packets (4 bytes).
BASIC_FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (6, 1), (1, 8), (2, 4)]


def basic_record(src: str, dst: str, sport: int, dport: int, proto: int, flags: int, octets: int, packets: int) -> bytes:
    return struct.pack(">IIHHBBQI", ip4(src), ip4(dst), sport, dport, proto, flags, octets, packets)


def sflow_datagram(samples: list[bytes], *, agent="192.0.2.1") -> bytes:
    header = struct.pack(">III", 5, 1, ip4(agent)) + struct.pack(">IIII", 0, 7, 1000, len(samples))
    return header + b"".join(samples)


def sflow_flow_sample(records: list[bytes], *, rate: int, expanded: bool = False) -> bytes:
    if expanded:
        body = struct.pack(">IIIIIIIIIII", 1, 0, 3, rate, 1000, 0, 0, 3, 0, 4, len(records))
        kind = 3
    else:
        body = struct.pack(">IIIIIIII", 1, 3, rate, 1000, 0, 3, 4, len(records))
        kind = 1
    body += b"".join(records)
    return struct.pack(">II", kind, len(body)) + body


def sflow_raw_header(packet: bytes, *, frame_length: int, protocol: int = 1) -> bytes:
    padded = packet + bytes((-len(packet)) % 4)
    body = struct.pack(">IIII", protocol, frame_length, 4, len(packet)) + padded
    return struct.pack(">II", 1, len(body)) + body


def ethernet(payload: bytes, ethertype: int, vlans: tuple[int, ...] = ()) -> bytes:
    frame = b"\x02" * 6 + b"\x04" * 6
    for vlan in vlans:
        frame += struct.pack(">HH", 0x8100, vlan)
    return frame + struct.pack(">H", ethertype) + payload


def ipv4_tcp(src: str, dst: str, sport: int, dport: int, flags: int) -> bytes:
    tcp = struct.pack(">HHIIBBHHH", sport, dport, 0, 0, 0x50, flags, 1024, 0, 0)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0,
                     ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return ip + tcp


def ipv6_udp(src: str, dst: str, sport: int, dport: int) -> bytes:
    udp = struct.pack(">HHHH", sport, dport, 8, 0)
    header = struct.pack(">IHBB", 6 << 28, len(udp), 17, 64)
    return header + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + udp


def rows(table) -> list[dict]:
    out = []
    for row, src, dst in zip(table.to_pylist(), addr_texts(table["src_addr"]), addr_texts(table["dst_addr"])):
        row["src"], row["dst"] = src, dst
        out.append(row)
    return out


# -- flow records ------------------------------------------------------------


def test_records_from_arrays_schema():
    src = ipv4_to_mapped(np.array([ip4("10.0.0.1")], dtype=np.uint32))
    dst = np.frombuffer(ipaddress.IPv6Address("2001:db8::5").packed, dtype=np.uint8).reshape(1, 16)
    table = records_from_arrays(exporter="e", src_addr=src, dst_addr=dst, proto=6, bytes=[10], packets=[1], start=1.0, end=2.0)
    assert table.schema == FLOW_RECORD_SCHEMA
    assert addr_texts(table["src_addr"]) == ["10.0.0.1"]
    assert addr_texts(table["dst_addr"]) == ["2001:db8::5"]
    assert table["sampling"].to_pylist() == [1]
    assert empty_records().schema == FLOW_RECORD_SCHEMA


def test_records_from_arrays_rejects_bad_columns():
    src = ipv4_to_mapped(np.array([1, 2], dtype=np.uint32))
    with pytest.raises(ValueError, match="unknown"):
        records_from_arrays(exporter="e", src_addr=src, dst_addr=src, proto=6, bytes=1, packets=1, start=0, end=0, colour=1)
    with pytest.raises(ValueError, match="missing"):
        records_from_arrays(exporter="e", src_addr=src, dst_addr=src)
    with pytest.raises(ValueError, match="3 values"):
        records_from_arrays(exporter="e", src_addr=src, dst_addr=src, proto=6, bytes=[1, 2, 3], packets=1, start=0, end=0)


def test_mapped_addresses_round_trip():
    values = np.array([0, ip4("192.168.7.9"), 0xFFFFFFFF], dtype=np.uint32)
    is_ipv4, back = mapped_to_ipv4(ipv4_to_mapped(values))
    assert is_ipv4.all()
    assert back.tolist() == values.tolist()
    assert addr_texts(ipv4_to_mapped(values)) == ["0.0.0.0", "192.168.7.9", "255.255.255.255"]


# -- NetFlow v5 ----------------------------------------------------------------


def test_v5_records_and_times():
    records = [
        {"src": "10.0.0.1", "dst": "10.0.0.2", "sport": 40000, "dport": 443, "bytes": 1500, "packets": 3, "first": UPTIME_MS - 5000, "last": UPTIME_MS - 1000},
        {"src": "10.0.0.3", "dst": "10.0.0.4", "sport": 0, "dport": 0x0800, "proto": 1, "bytes": 84, "packets": 1},
    ]
    decoder = FlowDecoder()
    table = decoder.decode(v5_datagram(records, nsecs=500_000_000), "192.0.2.9", now=EXPORT)
    assert table.schema == FLOW_RECORD_SCHEMA
    got = rows(table)
    assert [r["src"] for r in got] == ["10.0.0.1", "10.0.0.3"]
    assert got[0]["dst_port"] == 443
    assert got[0]["bytes"] == 1500
    assert got[0]["start"] == pytest.approx(EXPORT + 0.5 - 5.0)
    assert got[0]["end"] == pytest.approx(EXPORT + 0.5 - 1.0)
    assert got[0]["exporter"] == "192.0.2.9"
    # ICMP type and code in the destination port are not a port.
    assert got[1]["dst_port"] == 0
    assert decoder.counters.records == 2


def test_v5_header_sampling_scales_counters():
    table = FlowDecoder().decode(v5_datagram([{"src": "10.0.0.1", "dst": "10.0.0.2", "bytes": 100, "packets": 2}], sampling=(1 << 14) | 64), "e", now=EXPORT)
    assert table["bytes"].to_pylist() == [6400]
    assert table["packets"].to_pylist() == [128]
    assert table["sampling"].to_pylist() == [64]


def test_v5_uptime_wrap():
    # First switched just before the 32-bit millisecond counter wrapped.
    record = {"src": "10.0.0.1", "dst": "10.0.0.2", "first": 0xFFFFFFFF - 999, "last": 500}
    table = FlowDecoder().decode(v5_datagram([record], uptime=1000), "e", now=EXPORT)
    assert table["start"].to_pylist()[0] == pytest.approx(EXPORT - 2.0)
    assert table["end"].to_pylist()[0] == pytest.approx(EXPORT - 0.5)


def test_v5_truncated_keeps_whole_records():
    records = [{"src": f"10.0.0.{i}", "dst": "10.0.1.1"} for i in range(1, 4)]
    data = v5_datagram(records)[:-10]
    decoder = FlowDecoder()
    table = decoder.decode(data, "e", now=EXPORT)
    assert table.num_rows == 2
    assert decoder.counters.malformed == 1
    assert decoder.problems[-1].field == "count"
    assert decoder.problems[-1].offset == 24 + 2 * 48


# -- NetFlow v9 ----------------------------------------------------------------


def test_v9_template_then_data():
    decoder = FlowDecoder()
    template = flowset(0, v9_template(300, BASIC_FIELDS + [(22, 4), (21, 4)]))
    data = flowset(300, basic_record("10.1.0.1", "10.1.0.2", 5000, 53, 17, 0, 120, 2) + struct.pack(">II", UPTIME_MS - 3000, UPTIME_MS - 500))
    table = decoder.decode(v9_datagram([template, data]), "e", now=EXPORT)
    got = rows(table)
    assert len(got) == 1
    assert (got[0]["src"], got[0]["dst"], got[0]["src_port"], got[0]["dst_port"], got[0]["proto"]) == ("10.1.0.1", "10.1.0.2", 5000, 53, 17)
    assert got[0]["start"] == pytest.approx(EXPORT - 3.0)
    assert got[0]["end"] == pytest.approx(EXPORT - 0.5)
    assert decoder.counters.templates == 1


def test_v9_data_before_template_is_held_then_decoded():
    decoder = FlowDecoder()
    data = flowset(300, basic_record("10.1.0.1", "10.1.0.2", 1, 2, 6, 2, 10, 1) * 3)
    first = decoder.decode(v9_datagram([data], sequence=1), "e", now=EXPORT)
    assert first.num_rows == 0
    assert decoder.counters.waiting_for_template == 1
    second = decoder.decode(v9_datagram([flowset(0, v9_template(300, BASIC_FIELDS))], sequence=2), "e", now=EXPORT + 1)
    assert second.num_rows == 3
    assert decoder.counters.waiting_for_template == 0
    assert decoder.counters.undecodable == 0


def test_v9_held_data_expires_as_undecodable():
    decoder = FlowDecoder(pending_max_age_s=5)
    decoder.decode(v9_datagram([flowset(300, basic_record("10.1.0.1", "10.1.0.2", 1, 2, 6, 2, 10, 1))]), "e", now=100.0)
    decoder.expire(104.0)
    assert decoder.counters.waiting_for_template == 1
    decoder.expire(106.0)
    assert decoder.counters.waiting_for_template == 0
    assert decoder.counters.undecodable == 1
    late = decoder.decode(v9_datagram([flowset(0, v9_template(300, BASIC_FIELDS))]), "e", now=107.0)
    assert late.num_rows == 0


def test_pending_limit_drops_oldest():
    decoder = FlowDecoder(pending_max_sets=3)
    for sequence in range(5):
        decoder.decode(v9_datagram([flowset(400 + sequence, b"\x00" * 8)], sequence=sequence), "e", now=EXPORT)
    assert decoder.pending_sets() == 3
    assert decoder.counters.waiting_for_template == 3
    assert decoder.counters.undecodable == 2


def test_v9_options_sampling_applies():
    decoder = FlowDecoder()
    options = flowset(1, v9_options_template(256, [(1, 4)], [(34, 4), (35, 1)]))
    option_data = flowset(256, struct.pack(">IIB", 0, 50, 2))
    template = flowset(0, v9_template(300, BASIC_FIELDS))
    data = flowset(300, basic_record("10.1.0.1", "10.1.0.2", 1, 2, 6, 2, 10, 3))
    table = decoder.decode(v9_datagram([options, option_data, template, data]), "e", now=EXPORT)
    assert table["sampling"].to_pylist() == [50]
    assert table["bytes"].to_pylist() == [500]
    assert table["packets"].to_pylist() == [150]
    assert decoder.counters.options_records == 1


def test_v9_sampler_id_selects_rate():
    decoder = FlowDecoder()
    options = flowset(1, v9_options_template(256, [(1, 4)], [(48, 1), (49, 1), (50, 4)]))
    option_data = flowset(256, struct.pack(">IBBI", 0, 7, 2, 1000) + struct.pack(">IBBI", 0, 8, 2, 10))
    template = flowset(0, v9_template(300, BASIC_FIELDS + [(48, 1)]))
    data = flowset(300, basic_record("10.1.0.1", "10.1.0.2", 1, 2, 6, 2, 1, 1) + b"\x07"
                   + basic_record("10.1.0.1", "10.1.0.2", 1, 2, 6, 2, 1, 1) + b"\x08"
                   + basic_record("10.1.0.1", "10.1.0.2", 1, 2, 6, 2, 1, 1) + b"\x09")
    table = decoder.decode(v9_datagram([options, option_data, template, data]), "e", now=EXPORT)
    assert table["sampling"].to_pylist() == [1000, 10, 1]


def test_v9_out_bytes_when_no_in_bytes():
    decoder = FlowDecoder()
    template = flowset(0, v9_template(300, [(8, 4), (12, 4), (4, 1), (23, 4), (24, 4)]))
    data = flowset(300, struct.pack(">IIBII", ip4("10.0.0.1"), ip4("10.0.0.2"), 17, 999, 9))
    table = decoder.decode(v9_datagram([template, data]), "e", now=EXPORT)
    assert table["bytes"].to_pylist() == [999]
    assert table["packets"].to_pylist() == [9]


def test_v9_uptime_back_resets_templates():
    decoder = FlowDecoder()
    decoder.decode(v9_datagram([flowset(0, v9_template(300, BASIC_FIELDS))], uptime=10_000_000, sequence=10), "e", now=EXPORT)
    back = int(10_000_000 - (RESET_TOLERANCE_S + 1) * 1000)
    table = decoder.decode(v9_datagram([flowset(300, basic_record("10.1.0.1", "10.1.0.2", 1, 2, 6, 2, 10, 1))], uptime=back, sequence=11), "e", now=EXPORT)
    assert decoder.counters.exporter_resets == 1
    assert table.num_rows == 0
    assert decoder.counters.waiting_for_template == 1


def test_v9_small_reorder_keeps_templates():
    decoder = FlowDecoder()
    decoder.decode(v9_datagram([flowset(0, v9_template(300, BASIC_FIELDS))], uptime=10_000_000, sequence=10), "e", now=EXPORT)
    table = decoder.decode(v9_datagram([flowset(300, basic_record("10.1.0.1", "10.1.0.2", 1, 2, 6, 2, 10, 1))], uptime=9_999_000, sequence=9), "e", now=EXPORT)
    assert decoder.counters.exporter_resets == 0
    assert table.num_rows == 1


def test_templates_are_per_source_id_and_exporter():
    decoder = FlowDecoder()
    decoder.decode(v9_datagram([flowset(0, v9_template(300, BASIC_FIELDS))], source_id=1), "a", now=EXPORT)
    data = flowset(300, basic_record("10.1.0.1", "10.1.0.2", 1, 2, 6, 2, 10, 1))
    assert decoder.decode(v9_datagram([data], source_id=2), "a", now=EXPORT).num_rows == 0
    assert decoder.decode(v9_datagram([data], source_id=1), "b", now=EXPORT).num_rows == 0
    assert decoder.decode(v9_datagram([data], source_id=1), "a", now=EXPORT).num_rows == 1


def test_template_layout_change_replaces():
    decoder = FlowDecoder()
    decoder.decode(v9_datagram([flowset(0, v9_template(300, BASIC_FIELDS))]), "e", now=EXPORT)
    swapped = [(12, 4), (8, 4)] + BASIC_FIELDS[2:]
    data = flowset(300, basic_record("10.1.0.1", "10.1.0.2", 1, 2, 6, 2, 10, 1))
    table = decoder.decode(v9_datagram([flowset(0, v9_template(300, swapped)), data], sequence=2), "e", now=EXPORT)
    assert decoder.counters.template_replacements == 1
    assert rows(table)[0]["src"] == "10.1.0.2"
    # The same layout sent again is a refresh, not a replacement.
    decoder.decode(v9_datagram([flowset(0, v9_template(300, swapped))], sequence=3), "e", now=EXPORT)
    assert decoder.counters.template_replacements == 1


def test_v9_bad_flowset_length_keeps_earlier_records():
    decoder = FlowDecoder()
    template = flowset(0, v9_template(300, BASIC_FIELDS))
    data = flowset(300, basic_record("10.1.0.1", "10.1.0.2", 1, 2, 6, 2, 10, 1))
    broken = struct.pack(">HH", 300, 5000) + b"\x00" * 20
    table = decoder.decode(v9_datagram([template, data, broken]), "e", now=EXPORT)
    assert table.num_rows == 1
    assert decoder.counters.malformed == 1
    problem = decoder.problems[-1]
    assert problem.field == "set length"
    assert problem.offset == 20 + len(template) + len(data) + 2


# -- IPFIX -------------------------------------------------------------------


def test_ipfix_times_in_every_unit():
    cases = [
        ((150, 4), (151, 4), struct.pack(">II", EXPORT - 10, EXPORT - 5), EXPORT - 10, EXPORT - 5),
        ((152, 8), (153, 8), struct.pack(">QQ", (EXPORT - 10) * 1000 + 250, (EXPORT - 5) * 1000), EXPORT - 9.75, EXPORT - 5),
        ((154, 8), (155, 8), struct.pack(">IIII", EXPORT - 10 + 2_208_988_800, 1 << 31, EXPORT - 5 + 2_208_988_800, 0), EXPORT - 9.5, EXPORT - 5),
        ((156, 8), (157, 8), struct.pack(">IIII", EXPORT - 10 + 2_208_988_800, 1 << 30, EXPORT - 5 + 2_208_988_800, 0), EXPORT - 9.75, EXPORT - 5),
        ((158, 4), (159, 4), struct.pack(">II", 10_000_000, 5_000_000), EXPORT - 10, EXPORT - 5),
    ]
    for start_field, end_field, time_bytes, start, end in cases:
        decoder = FlowDecoder()
        template = flowset(2, ipfix_template(256, BASIC_FIELDS + [start_field, end_field]))
        data = flowset(256, basic_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 2, 10, 1) + time_bytes)
        table = decoder.decode(ipfix_message([template, data]), "e", now=EXPORT)
        assert table["start"].to_pylist()[0] == pytest.approx(start), start_field
        assert table["end"].to_pylist()[0] == pytest.approx(end), end_field


def test_ipfix_no_times_uses_export_time():
    template = flowset(2, ipfix_template(256, BASIC_FIELDS))
    data = flowset(256, basic_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 2, 10, 1))
    table = FlowDecoder().decode(ipfix_message([template, data], export_time=EXPORT + 7), "e", now=0.0)
    assert table["start"].to_pylist() == [EXPORT + 7]
    assert table["end"].to_pylist() == [EXPORT + 7]


def test_ipfix_ipv6_and_reduced_size_counters():
    fields = [(27, 16), (28, 16), (7, 2), (11, 2), (4, 1), (1, 3), (2, 2)]
    template = flowset(2, ipfix_template(256, fields))
    record = (ipaddress.IPv6Address("2001:db8::1").packed + ipaddress.IPv6Address("2001:db8::2").packed
              + struct.pack(">HHB", 5353, 5353, 17) + (70000).to_bytes(3, "big") + struct.pack(">H", 12))
    table = FlowDecoder().decode(ipfix_message([template, flowset(256, record)]), "e", now=EXPORT)
    got = rows(table)[0]
    assert (got["src"], got["dst"]) == ("2001:db8::1", "2001:db8::2")
    assert got["bytes"] == 70000
    assert got["packets"] == 12


def test_ipfix_variable_length_and_enterprise_fields():
    fields = [(8, 4), (12, 4), (82, 65535), (4, 1), (1, 8, 9), (1, 65535, 4242), (2, 4), (7, 2), (11, 2)]
    template = flowset(2, ipfix_template(300, fields))
    records = b""
    expected = []
    for i, name in enumerate([b"eth0", b"x" * 300, b""]):
        records += struct.pack(">II", ip4(f"10.0.0.{i + 1}"), ip4("10.0.9.9")) + varlen(name) + b"\x11"
        records += struct.pack(">Q", 999_999) + varlen(b"vendor-" * i) + struct.pack(">IHH", i + 1, 1000 + i, 2000 + i)
        expected.append((f"10.0.0.{i + 1}", 1000 + i, 2000 + i, i + 1))
    decoder = FlowDecoder()
    table = decoder.decode(ipfix_message([template, flowset(300, records)]), "e", now=EXPORT)
    got = [(r["src"], r["src_port"], r["dst_port"], r["packets"]) for r in rows(table)]
    assert got == expected
    # The enterprise octet count (PEN 9) is not the IANA octetDeltaCount.
    assert table["bytes"].to_pylist() == [0, 0, 0]
    assert decoder.counters.enterprise_fields == {9: 1, 4242: 1}


def test_ipfix_biflow_reverse_counts_added():
    fields = BASIC_FIELDS + [(1, 8, 29305), (2, 4, 29305)]
    template = flowset(2, ipfix_template(256, fields))
    data = flowset(256, basic_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 2, 100, 2) + struct.pack(">QI", 40, 1))
    table = FlowDecoder().decode(ipfix_message([template, data]), "e", now=EXPORT)
    assert table["bytes"].to_pylist() == [140]
    assert table["packets"].to_pylist() == [3]


def test_ipfix_withdrawal():
    decoder = FlowDecoder()
    decoder.decode(ipfix_message([flowset(2, ipfix_template(256, BASIC_FIELDS))]), "e", now=EXPORT)
    data = flowset(256, basic_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 2, 100, 2))
    assert decoder.decode(ipfix_message([data]), "e", now=EXPORT).num_rows == 1
    withdrawal = flowset(2, struct.pack(">HH", 256, 0))
    assert decoder.decode(ipfix_message([withdrawal, data]), "e", now=EXPORT).num_rows == 0
    assert decoder.counters.template_withdrawals == 1
    assert decoder.counters.waiting_for_template == 1


def test_ipfix_withdraw_all():
    decoder = FlowDecoder()
    decoder.decode(ipfix_message([flowset(2, ipfix_template(256, BASIC_FIELDS) + ipfix_template(257, BASIC_FIELDS))]), "e", now=EXPORT)
    decoder.decode(ipfix_message([flowset(2, struct.pack(">HH", 2, 0))]), "e", now=EXPORT)
    data = flowset(257, basic_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 2, 100, 2))
    assert decoder.decode(ipfix_message([data]), "e", now=EXPORT).num_rows == 0


def test_ipfix_options_packet_interval_sampling():
    options = flowset(3, ipfix_template(400, [(144, 4), (305, 4), (306, 4)], scope_count=1))
    option_data = flowset(400, struct.pack(">III", 1, 1, 99))
    template = flowset(2, ipfix_template(256, BASIC_FIELDS))
    data = flowset(256, basic_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 2, 100, 2))
    table = FlowDecoder().decode(ipfix_message([options, option_data, template, data]), "e", now=EXPORT)
    assert table["sampling"].to_pylist() == [100]
    assert table["bytes"].to_pylist() == [10000]


def test_ipfix_export_time_back_resets():
    decoder = FlowDecoder()
    decoder.decode(ipfix_message([flowset(2, ipfix_template(256, BASIC_FIELDS))]), "e", now=EXPORT)
    data = flowset(256, basic_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 2, 100, 2))
    table = decoder.decode(ipfix_message([data], export_time=EXPORT - 3600), "e", now=EXPORT)
    assert decoder.counters.exporter_resets == 1
    assert table.num_rows == 0


def test_ipfix_message_length_past_end():
    data = ipfix_message([flowset(2, ipfix_template(256, BASIC_FIELDS))])
    broken = data[:2] + struct.pack(">H", len(data) + 10) + data[4:]
    decoder = FlowDecoder()
    assert decoder.decode(broken, "e", now=EXPORT).num_rows == 0
    assert decoder.counters.malformed == 1
    assert decoder.problems[-1].offset == 2
    assert decoder.problems[-1].field == "length"


def test_ipfix_template_with_zero_length_records_rejected():
    decoder = FlowDecoder()
    decoder.decode(ipfix_message([flowset(2, ipfix_template(256, [(8, 0), (12, 0)]))]), "e", now=EXPORT)
    assert decoder.counters.malformed == 1
    assert decoder.counters.templates == 0


def test_read_ipfix_file(tmp_path):
    template = flowset(2, ipfix_template(256, BASIC_FIELDS))
    messages = [ipfix_message([template], sequence=0)]
    for i in range(3):
        messages.append(ipfix_message([flowset(256, basic_record(f"10.0.0.{i}", "10.0.1.1", 1, 2, 6, 2, 10, 1) * 2)], sequence=2 * i))
    path = tmp_path / "flows.ipfix"
    path.write_bytes(b"".join(messages) + b"\x00\x0a\x00")
    table, problems, counters = read_ipfix_file(path)
    assert table.num_rows == 6
    assert set(table["exporter"].to_pylist()) == {"flows.ipfix"}
    assert counters.malformed == 1
    assert problems[-1].offset == sum(len(m) for m in messages)


def test_read_ipfix_file_cut_in_message(tmp_path):
    template = flowset(2, ipfix_template(256, BASIC_FIELDS))
    data = ipfix_message([flowset(256, basic_record("10.0.0.1", "10.0.1.1", 1, 2, 6, 2, 10, 1))], sequence=0)
    path = tmp_path / "cut.ipfix"
    whole = ipfix_message([template], sequence=0) + data
    path.write_bytes(whole + data[: len(data) - 3])
    table, problems, counters = read_ipfix_file(path)
    assert table.num_rows == 1
    assert counters.malformed == 1
    assert problems[-1].offset == len(whole)
    assert f"declares {len(data)} bytes but the file ends {len(data) - 3} bytes after it starts" in problems[-1].message
    assert "the 2 messages before it are kept" in problems[-1].message


# -- sFlow v5 ------------------------------------------------------------------


def test_sflow_raw_header_vlan_ipv4_tcp():
    packet = ethernet(ipv4_tcp("10.5.0.1", "10.5.0.2", 51000, 2575, 0x02), 0x0800, vlans=(10, 20))
    datagram = sflow_datagram([sflow_flow_sample([sflow_raw_header(packet, frame_length=74)], rate=256)])
    decoder = FlowDecoder()
    table = decoder.decode(datagram, "192.0.2.1", now=EXPORT)
    got = rows(table)
    assert len(got) == 1
    assert (got[0]["src"], got[0]["dst"], got[0]["src_port"], got[0]["dst_port"]) == ("10.5.0.1", "10.5.0.2", 51000, 2575)
    assert got[0]["tcp_flags"] == 0x02
    assert got[0]["bytes"] == 74 * 256
    assert got[0]["packets"] == 256
    assert got[0]["start"] == EXPORT
    assert decoder.counters.sflow_flow_samples == 1


def test_sflow_expanded_sample_ipv6_and_counter_sample():
    packet = ethernet(ipv6_udp("2001:db8::a", "2001:db8::b", 5000, 53), 0x86DD)
    counter_sample = struct.pack(">II", 2, 8) + b"\x00" * 8
    datagram = sflow_datagram([sflow_flow_sample([sflow_raw_header(packet, frame_length=90)], rate=10, expanded=True), counter_sample])
    decoder = FlowDecoder()
    got = rows(decoder.decode(datagram, "e", now=EXPORT))
    assert [(r["src"], r["dst"], r["proto"], r["dst_port"], r["bytes"]) for r in got] == [("2001:db8::a", "2001:db8::b", 17, 53, 900)]
    assert decoder.counters.sflow_counter_samples == 1


def test_sflow_non_ip_sample_not_a_flow():
    arp = ethernet(b"\x00" * 28, 0x0806)
    decoder = FlowDecoder()
    table = decoder.decode(sflow_datagram([sflow_flow_sample([sflow_raw_header(arp, frame_length=60)], rate=1)]), "e", now=EXPORT)
    assert table.num_rows == 0
    assert decoder.counters.non_flow_records == 1


def test_sflow_truncated_sample():
    packet = ethernet(ipv4_tcp("10.5.0.1", "10.5.0.2", 1, 2, 0), 0x0800)
    datagram = sflow_datagram([sflow_flow_sample([sflow_raw_header(packet, frame_length=60)], rate=1)])
    decoder = FlowDecoder()
    assert decoder.decode(datagram[:-20], "e", now=EXPORT).num_rows == 0
    assert decoder.counters.malformed == 1


def test_unsupported_version_counted():
    decoder = FlowDecoder()
    decoder.decode(struct.pack(">HH", 7, 0) + bytes(20), "e", now=EXPORT)
    decoder.decode(b"\x00", "e", now=EXPORT)
    assert decoder.counters.unsupported_datagrams == 1
    assert decoder.counters.malformed == 1
    assert decoder.counters.datagrams == 2
    assert "version field 7 (0x7)" in decoder.problems[0].message
