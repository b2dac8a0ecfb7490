"""Flow record aggregation: edges, hourly buckets, direction, non-device destinations, bounds.

The expected sums come from a plain per-record Python reference written
here, which applies the documented rules one record at a time.
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.discovery import flowagg
from twin.discovery.flowagg import Aggregator, aggregate
from twin.discovery.flowrecords import records_from_arrays
from twin.model.observation import FLOW_COLUMNS

T0 = 1_704_103_200.0  # 2024-01-01 10:00:00 UTC, the start of an hour


def address_bytes(text: str) -> bytes:
    address = ipaddress.ip_address(text)
    if address.version == 4:
        return b"\x00" * 10 + b"\xff\xff" + address.packed
    return address.packed


def records(rows: list[tuple]) -> pa.Table:
    """Build records from (src, dst, proto, sport, dport, bytes, packets, start, end) tuples."""
    columns = list(zip(*rows)) if rows else [[] for _ in range(9)]
    src = np.frombuffer(b"".join(address_bytes(a) for a in columns[0]), dtype=np.uint8).reshape(-1, 16)
    dst = np.frombuffer(b"".join(address_bytes(a) for a in columns[1]), dtype=np.uint8).reshape(-1, 16)
    return records_from_arrays(
        exporter="test",
        src_addr=src,
        dst_addr=dst,
        proto=np.array(columns[2], dtype=np.uint8),
        src_port=np.array(columns[3], dtype=np.uint16),
        dst_port=np.array(columns[4], dtype=np.uint16),
        bytes=np.array(columns[5], dtype=np.uint64),
        packets=np.array(columns[6], dtype=np.uint64),
        start=np.array(columns[7], dtype=np.float64),
        end=np.array(columns[8], dtype=np.float64),
    )


def record(src, dst, proto=6, sport=40000, dport=443, size=100, packets=1, start=T0, end=None):
    return (src, dst, proto, sport, dport, size, packets, start, start if end is None else end)


# --------------------------------------------------------------------------
# Reference: the documented rules, one record at a time


def reference_is_service(port: int) -> bool:
    return 0 < port < 1024 or port in flowagg.SERVICE_PORTS


def reference_not_device(text: str, extra=()) -> bool:
    address = ipaddress.ip_address(text)
    return address.is_multicast or address.is_unspecified or text == "255.255.255.255" or text in extra


def reference(rows: list[tuple], extra=()) -> tuple[pd.DataFrame, pd.DataFrame, int, int]:
    edges: dict[tuple, list] = {}
    hours: dict[tuple, list] = {}
    dropped = flipped = 0
    for src, dst, proto, sport, dport, size, packets, start, end in rows:
        if reference_not_device(dst, extra):
            dropped += 1
            continue
        if proto in (6, 17, 33, 132, 136):
            is_reply = (
                reference_is_service(sport)
                and not reference_is_service(dport)
                and (dport >= 32768 or dport > sport)
                and not reference_not_device(src, extra)
            )
            if is_reply:
                src, dst, sport, dport = dst, src, dport, sport
                flipped += 1
        else:
            dport = 0
        name = {1: "icmp", 6: "tcp", 17: "udp", 47: "gre", 58: "icmp", 132: "sctp"}.get(proto, str(proto))
        key = (str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst)), name, dport)
        edge = edges.setdefault(key, [0, 0, 0, np.inf, -np.inf])
        edge[0] += size
        edge[1] += packets
        edge[2] += 1
        edge[3] = min(edge[3], start)
        edge[4] = max(edge[4], max(end, start))
        hour = int(start // 3600 * 3600)
        bucket = hours.setdefault(key + (hour,), [0, 0, 0])
        bucket[0] += size
        bucket[1] += packets
        bucket[2] += 1
    edge_frame = pd.DataFrame([k + tuple(v) for k, v in edges.items()], columns=list(FLOW_COLUMNS))
    hour_frame = pd.DataFrame([k + tuple(v) for k, v in hours.items()], columns=list(flowagg.HOUR_COLUMNS))
    return edge_frame, hour_frame, dropped, flipped


def canonical(frame: pd.DataFrame, key: list[str]) -> list[tuple]:
    return sorted(tuple(row) for row in frame[key + [c for c in frame.columns if c not in key]].astype(object).itertuples(index=False))


EDGE_KEY = ["src_ip", "dst_ip", "proto", "dst_port"]
HOUR_KEY = EDGE_KEY + ["hour"]


# --------------------------------------------------------------------------
# Edges and buckets


def test_edges_sum_per_key():
    rows = [
        record("10.0.0.1", "10.0.0.2", dport=443, size=100, packets=2, start=T0, end=T0 + 5),
        record("10.0.0.1", "10.0.0.2", dport=443, size=50, packets=1, start=T0 + 10, end=T0 + 20),
        record("10.0.0.1", "10.0.0.2", dport=22, size=7, packets=1, start=T0 + 3),
        record("10.0.0.3", "10.0.0.2", proto=17, sport=40000, dport=53, size=80, start=T0 + 4),
    ]

    edges, _ = aggregate(records(rows))

    assert list(edges.columns) == list(FLOW_COLUMNS)
    assert canonical(edges, EDGE_KEY) == canonical(reference(rows)[0], EDGE_KEY)
    https = edges[(edges["dst_port"] == 443)].iloc[0]
    assert (https["bytes"], https["packets"], https["flows"]) == (150, 3, 2)
    assert (https["first_seen"], https["last_seen"]) == (T0, T0 + 20)


def test_edges_are_ordered_by_bytes():
    rows = [record("10.0.0.1", "10.0.0.2", dport=port, size=size) for port, size in ((22, 5), (443, 500), (80, 50))]

    edges, _ = aggregate(records(rows))

    assert edges["dst_port"].tolist() == [443, 80, 22]


def test_hours_split_by_start_hour():
    rows = [
        record("10.0.0.1", "10.0.0.2", size=10, start=T0 + 59 * 60, end=T0 + 61 * 60),
        record("10.0.0.1", "10.0.0.2", size=20, start=T0 + 3600),
        record("10.0.0.1", "10.0.0.2", size=40, start=T0 + 2 * 3600 + 1),
    ]

    _, hours = aggregate(records(rows))

    assert list(hours.columns) == list(flowagg.HOUR_COLUMNS)
    assert hours[["hour", "bytes", "flows"]].values.tolist() == [[T0, 10, 1], [T0 + 3600, 20, 1], [T0 + 7200, 40, 1]]


def test_no_hour_buckets():
    rows = [record("10.0.0.1", "10.0.0.2", start=T0 + i * 3600) for i in range(3)]

    aggregator = Aggregator(hour_buckets=False)
    aggregator.add(records(rows))

    assert aggregator.edges()["flows"].tolist() == [3]
    assert len(aggregator.hours()) == 0


def test_ipv6_addresses_in_canonical_text():
    rows = [record("2001:DB8:0:0::10", "2001:db8::20", proto=17, dport=161), record("10.0.0.1", "2001:db8::20", dport=443)]

    edges, _ = aggregate(records(rows))

    assert set(zip(edges["src_ip"], edges["dst_ip"])) == {("2001:db8::10", "2001:db8::20"), ("10.0.0.1", "2001:db8::20")}


def test_portless_protocols_use_port_zero():
    # NetFlow puts the ICMP type and code in the destination port (8 * 256 = echo request).
    rows = [record("10.0.0.1", "10.0.0.2", proto=1, sport=0, dport=2048), record("10.0.0.1", "10.0.0.2", proto=1, sport=0, dport=0)]

    edges, _ = aggregate(records(rows))

    assert edges[["proto", "dst_port", "flows"]].values.tolist() == [["icmp", 0, 2]]


def test_empty_table():
    edges, hours = aggregate(records([]))

    assert list(edges.columns) == list(FLOW_COLUMNS)
    assert len(edges) == 0
    assert len(hours) == 0


# --------------------------------------------------------------------------
# Direction


@pytest.mark.parametrize(
    "sport, dport, flipped",
    [
        (443, 50000, True),  # reply from a well-known port to an ephemeral one
        (2575, 40000, True),  # HL7 MLLP is a service port above 1024
        (6661, 1500, False),  # 1500 is below the service port and below 32768
        (50000, 443, False),  # already client to server
        (5000, 40000, False),  # 5000 is not a service port
        (53, 53, False),  # both ends on a service port
        (0, 40000, False),  # port 0 is no service
        (443, 8443, False),  # 8443 is a named service (https)
    ],
)
def test_direction_rule(sport, dport, flipped):
    aggregator = Aggregator()
    aggregator.add(records([record("10.0.0.9", "10.0.0.1", sport=sport, dport=dport)]))

    edge = aggregator.edges().iloc[0]

    assert aggregator.counters["direction_flipped"] == int(flipped)
    expected = ("10.0.0.1", "10.0.0.9", sport) if flipped else ("10.0.0.9", "10.0.0.1", dport)
    assert (edge["src_ip"], edge["dst_ip"], edge["dst_port"]) == expected


def test_direction_only_for_port_protocols():
    aggregator = Aggregator()
    # GRE (47) carries no ports, whatever the exporter filled in.
    aggregator.add(records([record("10.0.0.9", "10.0.0.1", proto=47, sport=443, dport=50000)]))

    edge = aggregator.edges().iloc[0]

    assert aggregator.counters["direction_flipped"] == 0
    assert (edge["src_ip"], edge["proto"], edge["dst_port"]) == ("10.0.0.9", "gre", 0)


def test_request_and_reply_merge_onto_one_edge():
    rows = [
        record("10.0.0.5", "10.0.0.6", sport=41000, dport=104, size=1000),
        record("10.0.0.6", "10.0.0.5", sport=104, dport=41000, size=200),
    ]

    edges, _ = aggregate(records(rows))

    assert edges[["src_ip", "dst_ip", "dst_port", "bytes", "flows"]].values.tolist() == [["10.0.0.5", "10.0.0.6", 104, 1200, 2]]


# --------------------------------------------------------------------------
# Destinations that are not devices


@pytest.mark.parametrize("destination", ["255.255.255.255", "224.0.0.251", "239.255.255.250", "ff02::fb", "0.0.0.0", "::"])
def test_not_device_destinations_left_out(destination):
    aggregator = Aggregator()
    aggregator.add(records([record("10.0.0.1", destination, proto=17, dport=5353), record("10.0.0.1", "10.0.0.2")]))

    edges = aggregator.edges()

    assert edges["dst_ip"].tolist() == ["10.0.0.2"]
    assert aggregator.counters["not_device_destinations"] == 1
    assert aggregator.counters["records"] == 2


def test_directed_broadcast_passed_in():
    aggregator = Aggregator(not_devices=["10.0.0.255", "2001:db8::ff"])
    aggregator.add(
        records([
            record("10.0.0.1", "10.0.0.255", proto=17, dport=137),
            record("2001:db8::1", "2001:db8::ff", proto=17, dport=137),
            record("10.0.0.1", "10.0.1.255", proto=17, dport=137),
        ])
    )

    edges = aggregator.edges()

    assert edges["dst_ip"].tolist() == ["10.0.1.255"]
    assert aggregator.counters["not_device_destinations"] == 2


def test_reply_from_multicast_source_keeps_direction():
    aggregator = Aggregator()
    aggregator.add(records([record("224.0.0.251", "10.0.0.1", proto=17, sport=53, dport=40000)]))

    edge = aggregator.edges().iloc[0]

    assert aggregator.counters["direction_flipped"] == 0
    assert edge["src_ip"] == "224.0.0.251"


def test_invalid_not_device_entry():
    with pytest.raises(ValueError, match="10.0.0.300"):
        Aggregator(not_devices=["10.0.0.300"])


# --------------------------------------------------------------------------
# Incremental use and bounds


def test_drain_returns_batch_and_resets():
    aggregator = Aggregator()
    aggregator.add(records([record("10.0.0.1", "10.0.0.2", size=10)]))

    first_edges, first_hours = aggregator.drain()
    aggregator.add(records([record("10.0.0.1", "10.0.0.2", size=5), record("10.0.0.3", "10.0.0.2")]))
    second_edges, _ = aggregator.drain()

    assert first_edges["bytes"].tolist() == [10]
    assert first_hours["bytes"].tolist() == [10]
    assert sorted(second_edges["bytes"].tolist()) == [5, 100]
    assert aggregator.counters["records"] == 3
    assert aggregator.counters["edges"] == 0
    assert len(aggregator.edges()) == 0


def test_eviction_keeps_largest_edges():
    rows = [record("10.0.0.1", "10.0.0.2", dport=443, start=T0 + i) for i in range(50)]
    rows += [record("10.0.0.1", f"10.0.1.{i}", dport=22) for i in range(1, 21)]

    aggregator = Aggregator(max_keys=10)
    aggregator.add(records(rows))
    edges = aggregator.edges()

    assert len(edges) <= 10
    assert ("10.0.0.2", 443, 50) in set(zip(edges["dst_ip"], edges["dst_port"], edges["flows"]))
    assert aggregator.counters["evicted"] == 21 - len(edges)
    assert int(edges["flows"].sum()) + aggregator.counters["evicted_records"] == len(rows)
    assert int(edges["bytes"].sum()) + aggregator.counters["evicted_bytes"] == 100 * len(rows)


def test_eviction_counts_whole_edges_with_hours():
    rows = [record("10.0.0.1", "10.0.0.2", dport=443, start=T0 + i * 3600) for i in range(6)]
    rows += [record("10.0.0.1", "10.0.0.3", dport=22, start=T0 + i * 3600) for i in range(2)]

    aggregator = Aggregator(max_keys=7)
    aggregator.add(records(rows))

    assert aggregator.edges()["dst_ip"].tolist() == ["10.0.0.2"]
    assert len(aggregator.hours()) == 6
    assert aggregator.counters["evicted"] == 1
    assert aggregator.counters["evicted_records"] == 2


def test_invalid_max_keys():
    with pytest.raises(ValueError, match="max_keys"):
        Aggregator(max_keys=0)


def test_missing_column_is_rejected():
    table = records([record("10.0.0.1", "10.0.0.2")]).drop_columns(["bytes"])

    with pytest.raises(ValueError, match="bytes"):
        Aggregator().add(table)


ADDRESSES = ["10.0.0.1", "10.0.0.2", "10.0.0.255", "224.0.0.5", "255.255.255.255", "2001:db8::1", "2001:db8::2", "ff02::1", "0.0.0.0"]
PORTS = [0, 22, 53, 104, 443, 1500, 2575, 5000, 8443, 32768, 40000, 65535]


@st.composite
def record_lists(draw):
    size = draw(st.integers(min_value=0, max_value=60))
    rows = []
    for _ in range(size):
        start = T0 + draw(st.integers(min_value=0, max_value=4 * 3600))
        rows.append(
            (
                draw(st.sampled_from(ADDRESSES)),
                draw(st.sampled_from(ADDRESSES)),
                draw(st.sampled_from([1, 6, 17, 47, 58, 132])),
                draw(st.sampled_from(PORTS)),
                draw(st.sampled_from(PORTS)),
                draw(st.integers(min_value=0, max_value=10**12)),
                draw(st.integers(min_value=0, max_value=10**6)),
                float(start),
                float(start + draw(st.integers(min_value=-5, max_value=5000))),
            )
        )
    return rows


@settings(max_examples=150, deadline=None)
@given(rows=record_lists(), chunk=st.integers(min_value=1, max_value=25))
def test_chunked_adds_match_reference(rows, chunk):
    expected_edges, expected_hours, dropped, flipped = reference(rows, extra=("10.0.0.255",))
    saved = flowagg.FLUSH_ROWS
    flowagg.FLUSH_ROWS = 7  # merge often, so several merges run on small inputs
    try:
        aggregator = Aggregator(not_devices=["10.0.0.255"])
        for start in range(0, len(rows), chunk):
            aggregator.add(records(rows[start : start + chunk]))
        edges, hours = aggregator.edges(), aggregator.hours()
    finally:
        flowagg.FLUSH_ROWS = saved

    assert canonical(edges, EDGE_KEY) == canonical(expected_edges, EDGE_KEY)
    assert canonical(hours, HOUR_KEY) == canonical(expected_hours, HOUR_KEY)
    assert aggregator.counters["not_device_destinations"] == dropped
    assert aggregator.counters["direction_flipped"] == flipped
    assert aggregator.counters["edges"] == len(expected_edges)
    assert aggregator.counters["records"] == len(rows)


def test_service_ports_cover_named_services():
    assert flowagg.service_port_mask(np.array([2575, 11112, 6661, 104, 5000, 0, 40000])).tolist() == [
        True, True, True, True, False, False, False
    ]
