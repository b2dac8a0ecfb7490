"""FlowDecoder.decode_many: many datagrams decoded into one table.

Expected values come from what each test put into the datagrams, and from
decode() called on the same datagrams one by one with a second decoder.
"""

from __future__ import annotations

import random
import struct

import pyarrow as pa
import pytest

from tests.unit.test_flow_fuzz import mutate, random_datagram, seed_datagrams
from tests.unit.test_netflow import (
    BASIC_FIELDS,
    EXPORT,
    UPTIME_MS,
    basic_record,
    flowset,
    ipfix_message,
    ipfix_template,
    rows,
    v5_datagram,
    v9_datagram,
    v9_options_template,
    v9_template,
)
from twin.discovery.flowrecords import FLOW_RECORD_SCHEMA
from twin.discovery.netflow import FlowDecoder

TIMED_FIELDS = BASIC_FIELDS + [(22, 4), (21, 4)]


def timed_record(index: int, first_ms: int, last_ms: int) -> bytes:
    """Return a v9 record of TIMED_FIELDS whose source address and counters encode ``index``."""
    return basic_record(f"10.9.{index // 250}.{index % 250 + 1}", "10.8.0.1", 40000 + index, 443, 6, 0x18, 100 * (index + 1), index + 1) + struct.pack(
        ">II", first_ms, last_ms
    )


def one_by_one(items: list[tuple[bytes, str, float]], **options) -> tuple[pa.Table, FlowDecoder]:
    decoder = FlowDecoder(**options)
    tables = [decoder.decode(data, exporter, now) for data, exporter, now in items]
    return pa.concat_tables([FLOW_RECORD_SCHEMA.empty_table(), *tables]), decoder


def problem_tuples(decoder: FlowDecoder) -> list[tuple]:
    return [(p.exporter, p.offset, p.field, p.message) for p in decoder.problems]


def test_decode_many_v9_values_per_datagram_header():
    # Each datagram has its own export time and sysUptime, so the records'
    # times depend on the header of the datagram they came in.
    template = flowset(0, v9_template(300, TIMED_FIELDS))
    items = [(v9_datagram([template], sequence=0), "192.0.2.1", float(EXPORT))]
    expected = []
    for number in range(6):
        secs, uptime = EXPORT + 10 * number, UPTIME_MS + 7_000 * number
        records = b""
        for offset in range(3):
            index = number * 3 + offset
            first_ms, last_ms = uptime - 4_000 - index, uptime - 1_000
            records += timed_record(index, first_ms, last_ms)
            expected.append((f"10.9.0.{index + 1}", 40000 + index, 100 * (index + 1), secs - (4_000 + index) / 1000, secs - 1.0))
        items.append((v9_datagram([flowset(300, records)], uptime=uptime, secs=secs, sequence=number + 1), "192.0.2.1", float(secs)))

    table = FlowDecoder().decode_many(items)

    got = [(r["src"], r["src_port"], r["bytes"], r["start"], r["end"]) for r in rows(table)]
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    assert [g[3] for g in got] == pytest.approx([e[3] for e in expected])
    assert [g[4] for g in got] == pytest.approx([e[4] for e in expected])
    assert set(table["exporter"].to_pylist()) == {"192.0.2.1"}


def test_decode_many_exporter_per_record():
    template = flowset(0, v9_template(300, BASIC_FIELDS))
    items = []
    expected = []
    for index, exporter in enumerate(["192.0.2.1", "192.0.2.2", "192.0.2.1", "2001:db8::5"]):
        data = flowset(300, basic_record(f"10.1.0.{index + 1}", "10.2.0.1", 40000, 443, 6, 2, 10, 1) * (index + 1))
        items.append((v9_datagram([template, data], sequence=index), exporter, float(EXPORT)))
        expected += [exporter] * (index + 1)

    table = FlowDecoder().decode_many(items)

    assert table["exporter"].to_pylist() == expected


def test_decode_many_sampling_changes_mid_batch():
    # Records before the options record keep rate 1, records after it get 20.
    template = flowset(0, v9_template(300, BASIC_FIELDS))
    options = flowset(1, v9_options_template(256, [(1, 4)], [(34, 4), (35, 1)]))
    option_data = flowset(256, struct.pack(">IIB", 0, 20, 2))
    data = flowset(300, basic_record("10.1.0.1", "10.2.0.1", 40000, 443, 6, 2, 10, 3))
    items = [
        (v9_datagram([template, data], sequence=1), "e", float(EXPORT)),
        (v9_datagram([data], sequence=2), "e", float(EXPORT)),
        (v9_datagram([options, option_data, data], sequence=3), "e", float(EXPORT)),
        (v9_datagram([data], sequence=4), "e", float(EXPORT)),
    ]

    table = FlowDecoder().decode_many(items)

    assert table["sampling"].to_pylist() == [1, 1, 20, 20]
    assert table["bytes"].to_pylist() == [10, 10, 200, 200]
    assert table["packets"].to_pylist() == [3, 3, 60, 60]


def test_decode_many_template_after_data():
    # Data sets of template 300 arrive before it. They are held and come out
    # where the template arrives, after the records of template 301.
    held = flowset(300, basic_record("10.1.0.1", "10.2.0.1", 40000, 443, 6, 2, 10, 1) * 2)
    other = flowset(301, basic_record("10.1.0.9", "10.2.0.1", 40000, 80, 6, 2, 20, 1))
    items = [
        (v9_datagram([held], sequence=1), "e", float(EXPORT)),
        (v9_datagram([flowset(0, v9_template(301, BASIC_FIELDS)), other], sequence=2), "e", float(EXPORT)),
        (v9_datagram([flowset(0, v9_template(300, BASIC_FIELDS))], sequence=3), "e", float(EXPORT)),
        (v9_datagram([other], sequence=4), "e", float(EXPORT)),
    ]
    decoder = FlowDecoder()

    table = decoder.decode_many(items)

    assert [r["src"] for r in rows(table)] == ["10.1.0.9", "10.1.0.1", "10.1.0.1", "10.1.0.9"]
    assert decoder.counters.waiting_for_template == 0
    assert decoder.counters.undecodable == 0


def test_decode_many_v5_sampling_per_datagram():
    items = [
        (v5_datagram([{"src": "10.1.0.1", "dst": "10.2.0.1", "bytes": 100, "packets": 2}], sampling=0), "e", float(EXPORT)),
        (v5_datagram([{"src": "10.1.0.2", "dst": "10.2.0.1", "bytes": 100, "packets": 2}] * 2, sampling=(1 << 14) | 10, secs=EXPORT + 5), "e", float(EXPORT)),
    ]

    table = FlowDecoder().decode_many(items)

    assert table["sampling"].to_pylist() == [1, 10, 10]
    assert table["bytes"].to_pylist() == [100, 1000, 1000]
    # v5_datagram sets first switched 2 s before sysUptime, so start is 2 s before each export time.
    assert table["start"].to_pylist() == pytest.approx([EXPORT - 2.0, EXPORT + 3.0, EXPORT + 3.0])


def test_decode_many_keeps_records_before_malformed():
    template = flowset(0, v9_template(300, BASIC_FIELDS))
    good = flowset(300, basic_record("10.1.0.1", "10.2.0.1", 40000, 443, 6, 2, 10, 1))
    bad_length = struct.pack(">HH", 300, 999) + bytes(8)
    items = [
        (v9_datagram([template, good, bad_length], sequence=1), "e", float(EXPORT)),
        (v9_datagram([good], sequence=2), "e", float(EXPORT)),
    ]
    decoder = FlowDecoder()

    table = decoder.decode_many(items)

    assert table.num_rows == 2
    assert decoder.counters.malformed == 1
    assert decoder.counters.records == 2


def test_decode_many_ipfix_and_v9_interleaved():
    ipfix_template_set = flowset(2, ipfix_template(400, BASIC_FIELDS))
    ipfix_data = flowset(400, basic_record("10.3.0.1", "10.2.0.1", 40000, 22, 6, 2, 30, 1))
    v9_data = flowset(300, basic_record("10.1.0.1", "10.2.0.1", 40000, 443, 6, 2, 10, 1))
    items = [
        (ipfix_message([ipfix_template_set, ipfix_data], sequence=0), "a", float(EXPORT)),
        (v9_datagram([flowset(0, v9_template(300, BASIC_FIELDS)), v9_data], sequence=1), "b", float(EXPORT)),
        (ipfix_message([ipfix_data], sequence=1), "a", float(EXPORT)),
        (v9_datagram([v9_data], sequence=2), "b", float(EXPORT)),
    ]

    table = FlowDecoder().decode_many(items)

    assert [r["src"] for r in rows(table)] == ["10.3.0.1", "10.1.0.1", "10.3.0.1", "10.1.0.1"]
    assert table["exporter"].to_pylist() == ["a", "b", "a", "b"]
    assert table["dst_port"].to_pylist() == [22, 443, 22, 443]


def test_decode_many_empty():
    decoder = FlowDecoder()

    table = decoder.decode_many([])

    assert table.num_rows == 0
    assert table.schema == FLOW_RECORD_SCHEMA


@pytest.mark.parametrize("seed", [1, 2])
def test_decode_many_equals_decode_fuzz(seed):
    # Valid, mutated and random datagrams from three exporters, in batches
    # of random size: the table, counters, problems and held sets must be
    # those of decode() on each datagram in turn.
    rng = random.Random(seed)
    seeds = seed_datagrams()
    exporters = ["10.0.0.1", "10.0.0.2", "2001:db8::9"]
    items = []
    now = 1_700_000_000.0
    for _ in range(3000):
        choice = rng.random()
        if choice < 0.1:
            data = random_datagram(rng)
        elif choice < 0.5:
            data = rng.choice(seeds)
        else:
            data = mutate(rng, rng.choice(seeds))
        now += rng.random() * 0.05
        items.append((data, rng.choice(exporters), now))
    options = {"pending_max_sets": 64, "pending_max_bytes": 64 * 1024, "pending_max_age_s": 5.0, "max_problems": 50}
    expected, reference = one_by_one(items, **options)

    decoder = FlowDecoder(**options)
    tables = []
    start = 0
    while start < len(items):
        size = rng.randint(1, 300)
        tables.append(decoder.decode_many(items[start : start + size]))
        start += size
    got = pa.concat_tables(tables)

    assert got.num_rows == expected.num_rows
    assert got.equals(expected)
    assert decoder.counters.as_dict() == reference.counters.as_dict()
    assert problem_tuples(decoder) == problem_tuples(reference)
    assert decoder.pending_sets() == reference.pending_sets()
    assert decoder.pending_bytes() == reference.pending_bytes()


def test_decode_many_calls_overridden_decode():
    class CountingDecoder(FlowDecoder):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def decode(self, data, exporter, now):
            self.calls += 1
            return super().decode(data, exporter, now)

    template = flowset(0, v9_template(300, BASIC_FIELDS))
    data = flowset(300, basic_record("10.1.0.1", "10.2.0.1", 40000, 443, 6, 2, 10, 1))
    decoder = CountingDecoder()

    table = decoder.decode_many([(v9_datagram([template, data], sequence=n), "e", float(EXPORT)) for n in range(3)])

    assert decoder.calls == 3
    assert table.num_rows == 3
