"""The flow decoders on real exports from the shared corpus, checked against tshark.

The UDP payloads come out of the classic pcap files through a minimal reader
in this file. tshark (Wireshark's cflow dissector) decodes the same packets
at test time, and every expected count and value here is read from its
output. tshark cannot read a raw IPFIX file, so the test wraps each message
of the file in an IPv4/UDP packet of a temporary pcap and lets tshark decode
that.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from twin.discovery.flowrecords import addr_texts
from twin.discovery.netflow import FlowDecoder, read_ipfix_file

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
V5 = CORPUS / "netflow" / "akvorado_netflow_v5.pcap"
V9 = CORPUS / "netflow" / "akvorado_netflow_v9_templates_and_data.pcap"
IPFIX_TEMPLATES = CORPUS / "ipfix" / "akvorado_ipfix_ipfixprobe_templates_pen29305.pcap"
IPFIX_DATA = CORPUS / "ipfix" / "akvorado_ipfix_ipfixprobe_data.pcap"
IPFIX_FILE = CORPUS / "ipfix" / "ipfixcol2_example_flows.ipfix"

pytestmark = pytest.mark.corpus


def need(*paths: Path) -> None:
    for path in paths:
        if not path.is_file():
            pytest.skip(f"corpus file {path} is absent")
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")


# -- classic pcap, test-only ---------------------------------------------------


def pcap_records(path: Path) -> tuple[bytes, list[bytes]]:
    """Return the global header and the raw records (header and data) of a classic pcap."""
    data = path.read_bytes()
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    records = []
    offset = 24
    while offset + 16 <= len(data):
        captured = struct.unpack_from(order + "I", data, offset + 8)[0]
        records.append(data[offset : offset + 16 + captured])
        offset += 16 + captured
    return data[:24], records


def udp_payloads(path: Path) -> list[tuple[str, bytes]]:
    """Return (source IPv4 address, UDP payload) of each Ethernet/IPv4/UDP packet."""
    header, records = pcap_records(path)
    order = "<" if header[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    assert struct.unpack_from(order + "I", header, 20)[0] == 1, "test reader handles Ethernet pcaps only"
    out = []
    for record in records:
        frame = record[16:]
        ethertype = struct.unpack_from(">H", frame, 12)[0]
        position = 14
        while ethertype == 0x8100:
            ethertype = struct.unpack_from(">H", frame, position + 2)[0]
            position += 4
        if ethertype != 0x0800 or frame[position + 9] != 17:
            continue
        source = ".".join(str(b) for b in frame[position + 12 : position + 16])
        position += (frame[position] & 0x0F) * 4
        length = struct.unpack_from(">H", frame, position + 4)[0]
        out.append((source, frame[position + 8 : position + length]))
    return out


def write_pcap(path: Path, header: bytes, records: list[bytes]) -> Path:
    path.write_bytes(header + b"".join(records))
    return path


def wrap_ipfix_file(source: Path, target: Path) -> int:
    """Write each IPFIX message of an RFC 5655 file as one raw-IPv4 UDP packet (port 4739)."""
    data = source.read_bytes()
    chunks = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)]
    offset = 0
    messages = 0
    while offset + 4 <= len(data):
        length = struct.unpack_from(">H", data, offset + 2)[0]
        message = data[offset : offset + length]
        offset += length
        udp = struct.pack(">HHHH", 40000, 4739, 8 + len(message), 0) + message
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, b"\x7f\0\0\x01", b"\x7f\0\0\x01") + udp
        chunks.append(struct.pack("<IIII", messages + 1, 0, len(ip), len(ip)) + ip)
        messages += 1
    target.write_bytes(b"".join(chunks))
    return messages


# -- tshark --------------------------------------------------------------------


def tshark_frames(path: Path, fields: list[str], decode_as: str | None = None) -> list[dict[str, list[str]]]:
    """Return, per frame, each requested field's occurrences as strings."""
    command = ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=\t", "-E", "aggregator=|"]
    if decode_as:
        command += ["-d", decode_as]
    for name in fields:
        command += ["-e", name]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    frames = []
    for line in result.stdout.splitlines():
        values = line.split("\t")
        frames.append({name: (value.split("|") if value else []) for name, value in zip(fields, values)})
    return frames


def tshark_time(text: str) -> float:
    """Parse tshark's absolute time ("Oct  5, 2009 06:06:07.492059999 UTC") to epoch seconds."""
    stamp, fraction = text.removesuffix(" UTC").rsplit(".", 1)
    moment = datetime.strptime(stamp, "%b %d, %Y %H:%M:%S").replace(tzinfo=timezone.utc)
    return moment.timestamp() + int(fraction) / 10 ** len(fraction)


def decode_all(paths: list[Path]):
    decoder = FlowDecoder()
    tables = []
    for path in paths:
        for source, payload in udp_payloads(path):
            tables.append(decoder.decode(payload, source, now=0.0))
    return pa.concat_tables(tables), decoder


V5_V9_FIELDS = [
    "cflow.srcaddr", "cflow.dstaddr", "cflow.srcport", "cflow.dstport", "cflow.protocol",
    "cflow.octets", "cflow.packets", "cflow.timestart", "cflow.timeend",
    "cflow.sysuptime", "cflow.unix_secs",
]


def tshark_uptime_records(frame: dict[str, list[str]], nsecs: float = 0.0) -> list[tuple]:
    export = int(frame["cflow.unix_secs"][0]) + nsecs
    uptime = float(frame["cflow.sysuptime"][0])
    return [
        (src, dst, int(sport), int(dport), int(proto), int(octets), int(packets),
         round(export - (uptime - float(start)), 3), round(export - (uptime - float(end)), 3))
        for src, dst, sport, dport, proto, octets, packets, start, end in zip(
            frame["cflow.srcaddr"], frame["cflow.dstaddr"], frame["cflow.srcport"], frame["cflow.dstport"],
            frame["cflow.protocol"], frame["cflow.octets"], frame["cflow.packets"],
            frame["cflow.timestart"], frame["cflow.timeend"],
        )
    ]


def our_records(table, scale: int = 1) -> list[tuple]:
    return [
        (src, dst, row["src_port"], row["dst_port"], row["proto"], row["bytes"] // scale, row["packets"] // scale,
         round(row["start"], 3), round(row["end"], 3))
        for row, src, dst in zip(table.to_pylist(), addr_texts(table["src_addr"]), addr_texts(table["dst_addr"]))
    ]


# -- tests ---------------------------------------------------------------------


def test_netflow_v5_matches_tshark():
    need(V5)
    table, decoder = decode_all([V5])
    frames = tshark_frames(V5, V5_V9_FIELDS + ["cflow.unix_nsecs", "cflow.samplerate"], decode_as="udp.port==9990,cflow")
    expected = []
    for frame in frames:
        assert frame["cflow.samplerate"] == ["0"]
        expected += tshark_uptime_records(frame, int(frame["cflow.unix_nsecs"][0]) / 1e9)
    assert len(expected) > 0
    assert table.num_rows == len(expected)
    assert our_records(table) == expected
    assert decoder.counters.malformed == 0


def test_netflow_v9_matches_tshark(tmp_path):
    need(V9)
    # The data flowset before its template is held by the decoder and decoded
    # when the template follows in the same datagram. tshark decodes it only
    # when the template came in an earlier frame, so it reads the packet twice
    # and the second frame is the reference.
    header, records = pcap_records(V9)
    twice = write_pcap(tmp_path / "v9_twice.pcap", header, records + records)
    frames = tshark_frames(twice, V5_V9_FIELDS + ["cflow.sampling_interval"])
    reference = frames[len(records) :]
    table, decoder = decode_all([V9])

    expected = []
    rates = set()
    for frame in reference:
        expected += tshark_uptime_records(frame)
        rates.update(int(value) for value in frame["cflow.sampling_interval"])
    assert len(rates) == 1
    rate = rates.pop()
    assert rate > 1
    assert table.num_rows == len(expected)
    assert set(table["sampling"].to_pylist()) == {rate}
    assert our_records(table, scale=rate) == expected
    assert decoder.counters.undecodable == 0
    assert decoder.counters.waiting_for_template == 0


def test_ipfix_biflow_pen29305_matches_tshark(tmp_path):
    need(IPFIX_TEMPLATES, IPFIX_DATA)
    header, template_records = pcap_records(IPFIX_TEMPLATES)
    _, data_records = pcap_records(IPFIX_DATA)
    merged = write_pcap(tmp_path / "ipfix.pcap", header, template_records + data_records)
    fields = ["cflow.srcaddr", "cflow.dstaddr", "cflow.srcport", "cflow.dstport", "cflow.protocol",
              "cflow.octets", "cflow.packets", "cflow.abstimestart", "cflow.abstimeend"]
    frames = tshark_frames(merged, fields)
    expected = []
    for frame in frames:
        octets = [int(v) for v in frame["cflow.octets"]]
        packets = [int(v) for v in frame["cflow.packets"]]
        # Each biflow record carries the forward count then the reverse one.
        for i, (src, dst, sport, dport, proto, start, end) in enumerate(zip(
            frame["cflow.srcaddr"], frame["cflow.dstaddr"], frame["cflow.srcport"], frame["cflow.dstport"],
            frame["cflow.protocol"], frame["cflow.abstimestart"], frame["cflow.abstimeend"],
        )):
            expected.append((src, dst, int(sport), int(dport), int(proto),
                             octets[2 * i] + octets[2 * i + 1], packets[2 * i] + packets[2 * i + 1],
                             round(tshark_time(start), 3), round(tshark_time(end), 3)))
    table, decoder = decode_all([IPFIX_TEMPLATES, IPFIX_DATA])
    assert len(expected) > 0
    assert our_records(table) == expected
    assert decoder.counters.enterprise_fields.get(29305, 0) > 0


def test_ipfix_file_matches_tshark(tmp_path):
    need(IPFIX_FILE)
    wrapped = tmp_path / "wrapped.pcap"
    messages = wrap_ipfix_file(IPFIX_FILE, wrapped)
    fields = ["cflow.srcaddr", "cflow.srcaddrv6", "cflow.protocol", "cflow.octets", "cflow.packets", "cflow.abstimestart"]
    frames = tshark_frames(wrapped, fields)
    assert len(frames) == messages

    table, problems, counters = read_ipfix_file(IPFIX_FILE)
    expected_sources = Counter(a for f in frames for a in f["cflow.srcaddr"] + f["cflow.srcaddrv6"])
    assert table.num_rows == sum(expected_sources.values())
    assert Counter(addr_texts(table["src_addr"])) == expected_sources

    expected_counters = Counter(
        (int(proto), int(octets), int(packets), round(tshark_time(start), 3))
        for f in frames
        for proto, octets, packets, start in zip(f["cflow.protocol"], f["cflow.octets"], f["cflow.packets"], f["cflow.abstimestart"])
    )
    ours = Counter(
        (row["proto"], row["bytes"], row["packets"], round(row["start"], 3))
        for row in table.select(["proto", "bytes", "packets", "start"]).to_pylist()
    )
    assert ours == expected_counters
    assert counters.datagrams == messages
    assert counters.malformed == 0
    assert counters.undecodable == 0
    assert counters.exporter_resets == 0
    assert problems == []
