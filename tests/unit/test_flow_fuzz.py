"""Fuzz the flow decoders with random and mutated datagrams.

A seeded loop (not hypothesis, for speed) feeds :meth:`FlowDecoder.decode`
``FLOW_FUZZ_CASES`` datagrams (default 100,000). The cases are random bytes,
random bytes behind a valid version field, and mutations of valid NetFlow
v5/v9, IPFIX and sFlow datagrams from the builders of ``test_netflow``: bit
flips, truncation, length fields set to 0 or 0xFFFF, template id collisions
and templates that change layout under the same id. After every case the
decoder must not have raised, must return the flow record schema, and its
counters must agree with what it returned and stay within its limits.
"""

from __future__ import annotations

import os
import random
import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_netflow import (
    BASIC_FIELDS,
    basic_record,
    ethernet,
    flowset,
    ipfix_message,
    ipfix_template,
    ipv4_tcp,
    ipv6_udp,
    sflow_datagram,
    sflow_flow_sample,
    sflow_raw_header,
    v5_datagram,
    v9_datagram,
    v9_options_template,
    v9_template,
    varlen,
)
from twin.discovery.flowrecords import FLOW_RECORD_SCHEMA, addr_texts
from twin.discovery.netflow import FlowDecoder

CASES = int(os.environ.get("FLOW_FUZZ_CASES", "100000"))
PENDING_MAX_SETS = 64
PENDING_MAX_BYTES = 64 * 1024
MAX_PROBLEMS = 50


def seed_datagrams() -> list[bytes]:
    """Valid datagrams of every supported kind, the material for mutations."""
    v5 = v5_datagram([{"src": f"10.0.0.{i}", "dst": "10.0.1.1", "bytes": 100 * i, "packets": i} for i in range(1, 6)], sampling=(1 << 14) | 10)
    v9_options = flowset(1, v9_options_template(256, [(1, 4)], [(34, 4), (35, 1)]))
    v9_option_data = flowset(256, struct.pack(">IIB", 0, 100, 2))
    v9_template_set = flowset(0, v9_template(300, BASIC_FIELDS + [(22, 4), (21, 4)]))
    v9_data = flowset(300, (basic_record("10.1.0.1", "10.1.0.2", 5000, 53, 17, 0, 120, 2) + struct.pack(">II", 1000, 2000)) * 4)
    v9_full = v9_datagram([v9_data, v9_options, v9_option_data, v9_template_set, v9_data])
    v9_changed = v9_datagram([flowset(0, v9_template(300, [(12, 4), (8, 4), (4, 1)])), flowset(300, struct.pack(">IIB", 1, 2, 6) * 5)], sequence=2)
    v9_data_only = v9_datagram([v9_data], sequence=3)

    ipfix_fields = [(8, 4), (12, 4), (82, 65535), (4, 1), (1, 8, 29305), (1, 65535, 4242), (2, 4), (7, 2), (11, 2), (152, 8)]
    ipfix_template_set = flowset(2, ipfix_template(300, ipfix_fields) + ipfix_template(301, BASIC_FIELDS))
    ipfix_records = b"".join(
        struct.pack(">II", 0x0A000001 + i, 0x0A000101) + varlen(b"if" * i) + b"\x06"
        + struct.pack(">Q", 10 * i) + varlen(b"v" * (i * 90)) + struct.pack(">IHHQ", i, 1000 + i, 443, 1_700_000_000_000)
        for i in range(4)
    )
    ipfix_full = ipfix_message([ipfix_template_set, flowset(300, ipfix_records), flowset(301, basic_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 2, 10, 1) * 3)])
    ipfix_options = ipfix_message([
        flowset(3, ipfix_template(400, [(144, 4), (305, 4), (306, 4)], scope_count=1)),
        flowset(400, struct.pack(">III", 1, 1, 9)),
    ])
    ipfix_collision = ipfix_message([flowset(2, ipfix_template(300, [(27, 16), (28, 16), (4, 1)])), flowset(300, bytes(33) * 2)], sequence=9)
    ipfix_withdrawal = ipfix_message([flowset(2, struct.pack(">HH", 301, 0) + struct.pack(">HH", 2, 0))])

    samples = [
        sflow_flow_sample([sflow_raw_header(ethernet(ipv4_tcp("10.5.0.1", "10.5.0.2", 51000, 2575, 2), 0x0800, vlans=(10,)), frame_length=74)], rate=256),
        sflow_flow_sample([sflow_raw_header(ethernet(ipv6_udp("2001:db8::a", "2001:db8::b", 5000, 53), 0x86DD), frame_length=90)], rate=10, expanded=True),
        struct.pack(">II", 2, 8) + bytes(8),
    ]
    sflow = sflow_datagram(samples)
    return [v5, v9_full, v9_changed, v9_data_only, ipfix_full, ipfix_options, ipfix_collision, ipfix_withdrawal, sflow]


def mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    kind = rng.randrange(7)
    if kind == 0:  # bit flips
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(data))
            data[position] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncation
        del data[rng.randrange(len(data)) :]
    elif kind == 2:  # a 16-bit field (length, count, id) set to 0, 0xFFFF or a random value
        position = rng.randrange(max(len(data) - 1, 1))
        data[position : position + 2] = struct.pack(">H", rng.choice((0, 0xFFFF, 4, rng.randrange(65536))))
    elif kind == 3:  # a 32-bit field set to an extreme
        position = rng.randrange(max(len(data) - 3, 1))
        data[position : position + 4] = struct.pack(">I", rng.choice((0, 0xFFFFFFFF, 1 << 31, rng.randrange(1 << 32))))
    elif kind == 4:  # random bytes inserted
        position = rng.randrange(len(data) + 1)
        data[position:position] = rng.randbytes(rng.randint(1, 40))
    elif kind == 5:  # a slice repeated
        start = rng.randrange(len(data))
        data += data[start : start + rng.randint(1, 200)]
    else:  # random tail after a valid prefix
        cut = rng.randrange(len(data))
        data[cut:] = rng.randbytes(rng.randint(0, 300))
    return bytes(data)


def random_datagram(rng: random.Random) -> bytes:
    body = rng.randbytes(rng.randint(0, 600))
    prefix = rng.choice((b"", b"\x00\x05", b"\x00\x09", b"\x00\x0a", b"\x00\x00\x00\x05"))
    return prefix + body


def check_decoder(decoder: FlowDecoder, returned_rows: int) -> None:
    counters = decoder.counters
    assert counters.records == returned_rows
    assert decoder.pending_sets() <= PENDING_MAX_SETS
    assert decoder.pending_bytes() <= PENDING_MAX_BYTES
    assert counters.waiting_for_template == decoder.pending_sets()
    assert counters.datagrams == counters.decoded_datagrams + counters.malformed + counters.unsupported_datagrams
    assert len(decoder.problems) <= MAX_PROBLEMS


def new_decoder() -> FlowDecoder:
    return FlowDecoder(pending_max_sets=PENDING_MAX_SETS, pending_max_bytes=PENDING_MAX_BYTES, pending_max_age_s=5.0, max_problems=MAX_PROBLEMS)


def test_decoder_fuzz_random_and_mutated():
    rng = random.Random(20240505)
    seeds = seed_datagrams()
    exporters = ["10.0.0.1", "10.0.0.2", "2001:db8::9"]
    decoder = new_decoder()
    returned_rows = 0
    now = 1_700_000_000.0
    kinds = {"random": 0, "seed": 0, "mutated": 0}
    for case in range(CASES):
        if case % 10_000 == 0:
            decoder = new_decoder()
            returned_rows = 0
        now += rng.random() * 0.5
        draw = rng.random()
        if draw < 0.15:
            data, kind = random_datagram(rng), "random"
        elif draw < 0.30:
            data, kind = rng.choice(seeds), "seed"
        else:
            data, kind = mutate(rng, rng.choice(seeds)), "mutated"
        kinds[kind] += 1

        table = decoder.decode(data, rng.choice(exporters), now)

        assert table.schema == FLOW_RECORD_SCHEMA, f"case {case}"
        returned_rows += table.num_rows
        if table.num_rows:
            sampling = table["sampling"].to_numpy()
            assert sampling.min() >= 1, f"case {case}: sampling 0"
        check_decoder(decoder, returned_rows)
    assert min(kinds.values()) > CASES // 10


def test_unmutated_seeds_decode_cleanly():
    decoder = new_decoder()
    rows = 0
    for data in seed_datagrams():
        rows += decoder.decode(data, "10.0.0.1", 1_700_000_000.0).num_rows
    check_decoder(decoder, rows)
    assert decoder.counters.malformed == 0
    assert list(decoder.problems) == []
    assert rows > 0


def test_pending_limit_under_flood():
    decoder = new_decoder()
    rng = random.Random(7)
    # Data sets for templates that never arrive, from many template ids.
    for sequence in range(5 * PENDING_MAX_SETS):
        set_id = 256 + rng.randrange(5000)
        decoder.decode(v9_datagram([flowset(set_id, rng.randbytes(rng.randint(4, 2000)))], sequence=sequence), "e", 1_700_000_000.0)
        assert decoder.pending_sets() <= PENDING_MAX_SETS
        assert decoder.pending_bytes() <= PENDING_MAX_BYTES
    still_pending = decoder.pending_sets()
    assert decoder.counters.undecodable == 5 * PENDING_MAX_SETS - still_pending
    decoder.expire(1_700_000_000.0 + 10)
    assert decoder.pending_sets() == 0
    assert decoder.counters.undecodable == 5 * PENDING_MAX_SETS


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 65535), st.integers(0, 65535),
                  st.sampled_from([1, 6, 17, 47]), st.integers(0, 2**32 - 1)),
        min_size=0,
        max_size=30,
    )
)
def test_v5_round_trip(records):
    data = struct.pack(">HHIIIIBBH", 5, len(records), 10_000, 1_700_000_000, 0, 0, 0, 0, 0) + b"".join(
        struct.pack(">IIIHHIIIIHHBBBBHHBBH", src, dst, 0, 0, 0, 1, octets, 10_000, 10_000, sport, dport, 0, 0, proto, 0, 0, 0, 0, 0, 0)
        for src, dst, sport, dport, proto, octets in records
    )
    table = FlowDecoder().decode(data, "e", 0.0)
    assert table.num_rows == len(records)
    expected_src = [".".join(str(b) for b in struct.pack(">I", r[0])) for r in records]
    assert addr_texts(table["src_addr"]) == expected_src
    assert table["bytes"].to_pylist() == [r[5] for r in records]
    has_ports = np.isin([r[4] for r in records], [6, 17])
    assert table["dst_port"].to_pylist() == [r[3] if p else 0 for r, p in zip(records, has_ports)]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000))
def test_truncation_keeps_prefix_records(cut):
    full = seed_datagrams()[4]  # IPFIX with a variable-length template and a fixed one
    whole = FlowDecoder().decode(full, "e", 0.0).num_rows
    decoder = FlowDecoder()
    part = decoder.decode(full[: cut % (len(full) + 1)], "e", 0.0).num_rows
    assert part <= whole
