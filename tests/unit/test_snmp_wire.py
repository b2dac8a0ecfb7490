"""Tests of the SNMP v1/v2c wire codec and client (twin.discovery.snmp_wire).

The expected values never come from the code under test:

- pyasn1's BER decoder with pysnmp 7's message types reads every request
  that :func:`encode_request` writes;
- pysnmp's protocol API and pyasn1's BER encoder build every response that
  :func:`decode_response` reads, and ``snmp_live._convert`` of each pysnmp
  value gives the expected ``(type, value)``;
- the client talks to a UDP server that each test starts on 127.0.0.1 (or
  ::1) and that reads requests and builds responses with pysnmp.

Random inputs use fixed seeds and bounded counts, and every wait on the
network is bounded by :data:`TEST_LIMIT_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import socket
import time
from typing import Any, Callable, NamedTuple

import pytest
from pyasn1.codec.ber import decoder, encoder
from pyasn1.type import univ
from pysnmp.proto import api

from twin.discovery import snmp
from twin.discovery.snmp_live import _convert
from twin.discovery.snmp_wire import (
    PDU_TAGS,
    CommunityClient,
    RequestTimeout,
    Response,
    WireError,
    decode_response,
    encode_request,
)

V1 = api.PROTOCOL_MODULES[api.SNMP_VERSION_1]
V2C = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]

# Upper bound of every client test in seconds. The tests use timeouts of
# 0.2 s, so a test that reaches this limit hangs.
TEST_LIMIT_S = 10.0
TIMEOUT_S = 0.2

MAX_INT32 = 2**31 - 1
MAX_UINT32 = 2**32 - 1
MAX_UINT64 = 2**64 - 1

# Sub-identifier values at the edges of the base-128 encoding (1 to 5 bytes).
EDGE_ARCS = (0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 2**28 - 1, 2**28, 2**31, MAX_UINT32)


# --------------------------------------------------------------------------
# Random inputs
# --------------------------------------------------------------------------


def random_arc(rng: random.Random) -> int:
    draw = rng.random()
    if draw < 0.4:
        return rng.randrange(128)
    if draw < 0.6:
        return rng.choice(EDGE_ARCS)
    return rng.randrange(2 ** rng.randrange(1, 33))


def random_oid(rng: random.Random) -> tuple[int, ...]:
    """Return an OID of 2 to 40 arcs that BER can encode (first arc 0..2, second 0..39 under 0 and 1)."""
    length = rng.randint(2, 40)
    first = rng.randrange(3)
    second = rng.randrange(40) if first < 2 else random_arc(rng)
    return (first, second, *(random_arc(rng) for _ in range(length - 2)))


def random_bytes(rng: random.Random) -> bytes:
    draw = rng.random()
    if draw < 0.15:
        return b""
    if draw < 0.7:
        return rng.randbytes(rng.randint(1, 24))
    if draw < 0.9:
        return rng.randbytes(rng.randint(128, 300))
    return rng.randbytes(rng.randint(1000, 2000))


def random_unsigned(rng: random.Random, largest: int) -> int:
    return rng.choice((0, 1, 127, 128, 255, 256, 2**31 - 1, 2**31, largest, rng.randrange(largest + 1)))


# Value builders by SMI type. Each returns a pysnmp value object.
VALUE_BUILDERS: dict[str, Callable[[random.Random], Any]] = {
    "Integer32": lambda rng: V2C.Integer32(
        rng.choice((-(2**31), -129, -128, -1, 0, 1, 127, 128, MAX_INT32, rng.randrange(-(2**31), 2**31)))
    ),
    "OctetString": lambda rng: V2C.OctetString(random_bytes(rng)),
    "ObjectIdentifier": lambda rng: V2C.ObjectIdentifier(random_oid(rng)),
    "IpAddress": lambda rng: V2C.IpAddress(rng.randbytes(4)),
    "Counter32": lambda rng: V2C.Counter32(random_unsigned(rng, MAX_UINT32)),
    "Gauge32": lambda rng: V2C.Gauge32(random_unsigned(rng, MAX_UINT32)),
    "TimeTicks": lambda rng: V2C.TimeTicks(random_unsigned(rng, MAX_UINT32)),
    "Opaque": lambda rng: V2C.Opaque(random_bytes(rng)),
    "Null": lambda rng: V2C.Null(""),
    "Counter64": lambda rng: V2C.Counter64(rng.choice((0, 2**32, 2**63 - 1, 2**63, MAX_UINT64, rng.randrange(MAX_UINT64 + 1)))),
    "NoSuchObject": lambda rng: V2C.NoSuchObject(""),
    "NoSuchInstance": lambda rng: V2C.NoSuchInstance(""),
    "EndOfMibView": lambda rng: V2C.EndOfMibView(""),
}
# SNMPv1 (RFC 1157) has no Counter64 and no exception values.
V1_TYPES = ("Integer32", "OctetString", "ObjectIdentifier", "IpAddress", "Counter32", "Gauge32", "TimeTicks", "Opaque", "Null")
V2C_TYPES = tuple(VALUE_BUILDERS)


def random_varbinds(rng: random.Random, version: int, count: int) -> list[tuple[tuple[int, ...], Any]]:
    types = V1_TYPES if version == 0 else V2C_TYPES
    return [(random_oid(rng), VALUE_BUILDERS[rng.choice(types)](rng)) for _ in range(count)]


# --------------------------------------------------------------------------
# pysnmp / pyasn1 oracles
# --------------------------------------------------------------------------


def build_response(
    version: int,
    community: bytes,
    request_id: int,
    varbinds: list[tuple[tuple[int, ...], Any]],
    *,
    error_status: int = 0,
    error_index: int = 0,
) -> bytes:
    """Encode a Response message with pysnmp's protocol API and pyasn1's BER encoder."""
    pdu = V2C.ResponsePDU()
    V2C.apiPDU.set_defaults(pdu)
    V2C.apiPDU.set_request_id(pdu, request_id)
    V2C.apiPDU.set_error_status(pdu, error_status)
    V2C.apiPDU.set_error_index(pdu, error_index)
    V2C.apiPDU.set_varbinds(pdu, varbinds)
    message = V2C.Message()
    V2C.apiMessage.set_defaults(message)
    # The v2c message type carries version 0 as well: an SNMPv1 GetResponse
    # has the same tag and fields.
    V2C.apiMessage.set_version(message, version)
    V2C.apiMessage.set_community(message, community)
    V2C.apiMessage.set_pdu(message, pdu)
    return encoder.encode(message)


def expected_varbinds(varbinds: list[tuple[tuple[int, ...], Any]]) -> list[tuple[tuple[int, ...], str, Any]]:
    return [(tuple(oid), *_convert(value)) for oid, value in varbinds]


class Pyasn1View(NamedTuple):
    """A message as pyasn1 decodes it with pysnmp's v2c message type."""

    version: int
    community: bytes
    pdu_tag: int
    request_id: int
    error_status: int
    error_index: int
    varbinds: list


def identifier_octet(tag_set) -> int:
    tag = tag_set[0]
    return tag.tagClass | tag.tagFormat | tag.tagId


def pyasn1_view(data: bytes) -> Pyasn1View | None:
    """Decode ``data`` with pyasn1, or return None when pyasn1 rejects it or leaves bytes over."""
    try:
        message, rest = decoder.decode(data, asn1Spec=V2C.Message())
        if rest:
            return None
        pdu = V2C.apiMessage.get_pdu(message)
        varbinds = [(tuple(oid), *_convert(value)) for oid, value in V2C.apiPDU.get_varbinds(pdu)]
        return Pyasn1View(
            int(V2C.apiMessage.get_version(message)),
            bytes(V2C.apiMessage.get_community(message)),
            identifier_octet(pdu.tagSet),
            int(V2C.apiPDU.get_request_id(pdu)),
            int(V2C.apiPDU.get_error_status(pdu)),
            # The raw field: get_error_index raises for an index past the varbinds.
            int(pdu.getComponentByPosition(2)),
            varbinds,
        )
    except Exception:  # noqa: BLE001  pyasn1 rejecting the input is a result, not a test failure
        return None


def response_view(response: Response) -> Pyasn1View:
    return Pyasn1View(
        response.version,
        response.community,
        PDU_TAGS["response"],
        response.request_id,
        response.error_status,
        response.error_index,
        list(response.varbinds),
    )


def check_wire_error(error: WireError, data: bytes) -> None:
    """Check the documented attributes of one WireError raised on ``data``."""
    assert isinstance(error.offset, int)
    assert 0 <= error.offset <= len(data), f"offset {error.offset} outside a {len(data)}-byte datagram"
    assert isinstance(error.field, str)
    assert error.field
    assert str(error.offset) in str(error)
    assert error.field in str(error)


# --------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------

PDU_CLASSES = {
    "get": V2C.GetRequestPDU,
    "next": V2C.GetNextRequestPDU,
    "bulk": V2C.GetBulkRequestPDU,
}


def test_pdu_tags_match_pysnmp():
    assert PDU_TAGS["get"] == identifier_octet(V2C.GetRequestPDU.tagSet)
    assert PDU_TAGS["next"] == identifier_octet(V2C.GetNextRequestPDU.tagSet)
    assert PDU_TAGS["response"] == identifier_octet(V2C.ResponsePDU.tagSet)
    assert PDU_TAGS["bulk"] == identifier_octet(V2C.GetBulkRequestPDU.tagSet)


def test_requests_decode_with_pyasn1():
    rng = random.Random(20240501)
    for case in range(500):
        version = rng.randrange(2)
        pdu_name = rng.choice(("get", "next", "bulk") if version == 1 else ("get", "next"))
        community = rng.choice((b"public", b"", rng.randbytes(rng.randint(1, 200))))
        request_id = rng.choice((0, 1, 127, 128, MAX_INT32, rng.randrange(MAX_INT32 + 1)))
        oids = [random_oid(rng) for _ in range(rng.randint(1, 30))]
        non_repeaters = rng.randint(0, len(oids)) if pdu_name == "bulk" else 0
        max_repetitions = rng.choice((0, 1, 25, 127, 128, 10000, rng.randint(0, 10000))) if pdu_name == "bulk" else 0
        context = f"case {case}: v{version} {pdu_name} id {request_id}"

        data = encode_request(
            version, community, pdu_name, request_id, oids, non_repeaters=non_repeaters, max_repetitions=max_repetitions
        )

        module = V1 if version == 0 else V2C
        message, rest = decoder.decode(data, asn1Spec=module.Message())
        assert rest == b"", context
        assert int(module.apiMessage.get_version(message)) == version, context
        assert bytes(module.apiMessage.get_community(message)) == community, context
        pdu = module.apiMessage.get_pdu(message)
        assert pdu.tagSet == PDU_CLASSES[pdu_name].tagSet, context
        assert int(module.apiPDU.get_request_id(pdu)) == request_id, context
        if pdu_name == "bulk":
            assert int(V2C.apiBulkPDU.get_non_repeaters(pdu)) == non_repeaters, context
            assert int(V2C.apiBulkPDU.get_max_repetitions(pdu)) == max_repetitions, context
        else:
            assert int(module.apiPDU.get_error_status(pdu)) == 0, context
            assert int(module.apiPDU.get_error_index(pdu)) == 0, context
        varbinds = module.apiPDU.get_varbinds(pdu)
        assert [tuple(oid) for oid, _ in varbinds] == oids, context
        assert all(value.tagSet == univ.Null.tagSet for _, value in varbinds), context
        # pyasn1 writes minimal lengths and integers, as net-snmp does, so
        # equal bytes show that the request uses the same encoding.
        assert encoder.encode(message) == data, context


def test_request_bulk_v1_rejected():
    with pytest.raises(ValueError):
        encode_request(0, b"public", "bulk", 1, [(1, 3, 6, 1)], max_repetitions=10)


@pytest.mark.parametrize("oid", [(), (1,), (3, 1), (0, 40), (1, 40, 1), (1, 3, -1)])
def test_request_unencodable_oid_rejected(oid):
    with pytest.raises(ValueError):
        encode_request(1, b"public", "get", 1, [oid])


def test_request_unknown_pdu_rejected():
    with pytest.raises(ValueError):
        encode_request(1, b"public", "set", 1, [(1, 3, 6, 1)])


# --------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------


def check_response(data: bytes, version: int, community: bytes, request_id: int, varbinds, error_status=0, error_index=0):
    response = decode_response(data)

    assert response.version == version
    assert response.community == community
    assert type(response.community) is bytes
    assert response.request_id == request_id
    assert response.error_status == error_status
    assert response.error_index == error_index
    expected = expected_varbinds(varbinds)
    assert len(response.varbinds) == len(expected)
    for position, (got, want) in enumerate(zip(response.varbinds, expected)):
        assert tuple(got) == want, f"varbind {position}"
        assert type(got[0]) is tuple, f"varbind {position} OID"
        assert type(got[2]) is type(want[2]), f"varbind {position} value type"


def test_responses_match_pysnmp_values():
    rng = random.Random(20240502)
    for case in range(300):
        version = rng.randrange(2)
        varbinds = random_varbinds(rng, version, rng.randint(0, 40))
        community = rng.choice((b"public", b"", rng.randbytes(rng.randint(1, 300))))
        request_id = rng.choice((0, MAX_INT32, rng.randrange(MAX_INT32 + 1)))
        error_status = rng.choice((0, 0, 0, rng.randint(1, 18)))
        error_index = rng.randint(0, len(varbinds)) if error_status else 0
        data = build_response(version, community, request_id, varbinds, error_status=error_status, error_index=error_index)

        try:
            check_response(data, version, community, request_id, varbinds, error_status, error_index)
        except AssertionError as failure:
            raise AssertionError(f"case {case} ({data[:64].hex()}...): {failure}") from failure


def test_response_every_type_and_edge_value():
    varbinds = [
        ((1, 3, 6, 1, 2, 1, 1, 1, 0), V2C.Integer32(-(2**31))),
        ((1, 3, 6, 1, 2, 1, 1, 1, 1), V2C.Integer32(MAX_INT32)),
        ((1, 3, 6, 1, 2, 1, 1, 1, 2), V2C.Integer32(-1)),
        ((1, 3, 6, 1, 2, 1, 1, 1, 3), V2C.Integer32(0)),
        ((1, 3, 6, 1, 2, 1, 1, 2, 0), V2C.OctetString(b"")),
        ((1, 3, 6, 1, 2, 1, 1, 2, 1), V2C.OctetString(bytes(range(256)))),
        ((1, 3, 6, 1, 2, 1, 1, 2, 2), V2C.OctetString(b"\x00" * 65535)),
        ((1, 3, 6, 1, 2, 1, 1, 3, 0), V2C.ObjectIdentifier((2, 999, MAX_UINT32, 0))),
        ((1, 3, 6, 1, 2, 1, 1, 3, 1), V2C.ObjectIdentifier((0, 0))),
        ((1, 3, 6, 1, 2, 1, 1, 3, 2), V2C.ObjectIdentifier((1, 39, 128, 16384))),
        ((1, 3, 6, 1, 2, 1, 1, 4, 0), V2C.IpAddress(b"\xff\x00\x80\x01")),
        ((1, 3, 6, 1, 2, 1, 1, 5, 0), V2C.Counter32(0)),
        ((1, 3, 6, 1, 2, 1, 1, 5, 1), V2C.Counter32(MAX_UINT32)),
        ((1, 3, 6, 1, 2, 1, 1, 5, 2), V2C.Counter32(2**31)),
        ((1, 3, 6, 1, 2, 1, 1, 6, 0), V2C.Gauge32(MAX_UINT32)),
        ((1, 3, 6, 1, 2, 1, 1, 7, 0), V2C.TimeTicks(MAX_UINT32)),
        ((1, 3, 6, 1, 2, 1, 1, 8, 0), V2C.Opaque(b"\x9f\x78\x04\x42\xf6\x00\x00")),
        ((1, 3, 6, 1, 2, 1, 1, 9, 0), V2C.Counter64(0)),
        ((1, 3, 6, 1, 2, 1, 1, 9, 1), V2C.Counter64(MAX_UINT64)),
        ((1, 3, 6, 1, 2, 1, 1, 9, 2), V2C.Counter64(2**63)),
        ((1, 3, 6, 1, 2, 1, 1, 10, 0), V2C.Null("")),
        ((1, 3, 6, 1, 2, 1, 1, 11, 0), V2C.NoSuchObject("")),
        ((1, 3, 6, 1, 2, 1, 1, 12, 0), V2C.NoSuchInstance("")),
        ((1, 3, 6, 1, 2, 1, 1, 13, 0), V2C.EndOfMibView("")),
        ((2, 2**32 - 1 - 80, MAX_UINT32), V2C.Null("")),
    ]
    data = build_response(1, b"edge", 42, varbinds)

    check_response(data, 1, b"edge", 42, varbinds)


def test_response_types_are_snmprec_constants():
    data = build_response(1, b"c", 1, [((1, 3, 1), VALUE_BUILDERS[name](random.Random(1))) for name in V2C_TYPES])

    types = [value_type for _, value_type, _ in decode_response(data).varbinds]

    assert types == [
        snmp.INTEGER,
        snmp.OCTET_STRING,
        snmp.OBJECT_IDENTIFIER,
        snmp.IP_ADDRESS_TYPE,
        snmp.COUNTER32,
        snmp.GAUGE32,
        snmp.TIMETICKS,
        snmp.OPAQUE,
        snmp.NULL,
        snmp.COUNTER64,
        snmp.NO_SUCH_OBJECT,
        snmp.NO_SUCH_INSTANCE,
        snmp.END_OF_MIB_VIEW,
    ]


@pytest.mark.parametrize(
    "first_length_byte, count, size",
    [(0x81, 4, 20), (0x82, 60, 40), (0x83, 400, 200)],
    ids=["one-byte-length", "two-byte-length", "three-byte-length"],
)
def test_response_long_form_lengths(first_length_byte, count, size):
    rng = random.Random(count)
    varbinds = [((1, 3, 6, 1, 4, 1, index), V2C.OctetString(rng.randbytes(size))) for index in range(count)]
    data = build_response(1, b"public", 7, varbinds)
    # Precondition on the input: the message length takes the wanted form.
    assert data[1] == first_length_byte

    check_response(data, 1, b"public", 7, varbinds)


def test_response_value_over_65535_bytes():
    value = random.Random(3).randbytes(70_000)
    # pysnmp's OctetString stops at 65535 bytes (RFC 2578), the plain ASN.1 type does not.
    varbinds = [((1, 3, 6, 1, 4, 1, 1), univ.OctetString(value)), ((1, 3, 6, 1, 4, 1, 2), V2C.Integer32(5))]
    data = build_response(1, b"public", 9, varbinds)

    response = decode_response(data)

    assert response.varbinds[0] == ((1, 3, 6, 1, 4, 1, 1), snmp.OCTET_STRING, value)
    assert response.varbinds[1] == ((1, 3, 6, 1, 4, 1, 2), snmp.INTEGER, 5)


def test_response_non_minimal_lengths():
    # BER allows a long-form length with leading zero bytes (only DER requires
    # the minimal form), and pyasn1 reads them.
    varbinds = [((1, 3, 6, 1, 2, 1, 1, 5, 0), V2C.OctetString(b"sw1")), ((1, 3, 6, 1, 2, 1, 1, 3, 0), V2C.TimeTicks(99))]
    minimal = build_response(1, b"public", 11, varbinds)
    data = reencode(split_tree(minimal), length_bytes=2)
    assert pyasn1_view(data) == pyasn1_view(minimal)

    check_response(data, 1, b"public", 11, varbinds)


def test_response_v1_values():
    varbinds = [((1, 3, 6, 1, 2, 1, 1, 1, 0), V1.OctetString(b"v1 agent")), ((1, 3, 6, 1, 2, 1, 2, 2, 1, 10, 1), V1.Counter(12))]
    pdu = V1.GetResponsePDU()
    V1.apiPDU.set_defaults(pdu)
    V1.apiPDU.set_request_id(pdu, 77)
    V1.apiPDU.set_varbinds(pdu, varbinds)
    message = V1.Message()
    V1.apiMessage.set_defaults(message)
    V1.apiMessage.set_community(message, b"public")
    V1.apiMessage.set_pdu(message, pdu)
    data = encoder.encode(message)

    check_response(data, 0, b"public", 77, varbinds)


@pytest.mark.parametrize("tag", [0x45, 0x47, 0x83, 0x0C])
def test_response_unknown_tag_keeps_tag(tag):
    # 0x45 NsapAddress and 0x47 UInteger32 of RFC 1442, a context tag and a
    # UTF8String: no snmprec form, so the decoder keeps the tag.
    good = build_response(1, b"public", 5, [((1, 3, 6, 1), V2C.Integer32(1)), ((1, 3, 6, 2), V2C.Integer32(2))])
    tree = split_tree(good)
    varbind = tree.children[2].children[3].children[0]
    varbind.children[1] = Node(tag, b"\x01\x02")
    data = reencode(tree)

    response = decode_response(data)

    assert response.varbinds[0] == ((1, 3, 6, 1), None, tag)
    assert response.varbinds[1] == ((1, 3, 6, 2), snmp.INTEGER, 2)


UNSIGNED_TYPES = [(0x41, snmp.COUNTER32, 4), (0x42, snmp.GAUGE32, 4), (0x43, snmp.TIMETICKS, 4), (0x46, snmp.COUNTER64, 8)]


def response_with_value(tag: int, content: bytes) -> bytes:
    tree = split_tree(build_response(1, b"public", 5, [((1, 3, 6, 1), V2C.Null(""))]))
    tree.children[2].children[3].children[0].children[1] = Node(tag, content)
    return reencode(tree)


@pytest.mark.parametrize("tag, value_type, size", UNSIGNED_TYPES, ids=[name for _, name, _ in UNSIGNED_TYPES])
def test_unsigned_without_leading_zero(tag, value_type, size):
    # Some agents write the largest value without the leading zero byte
    # that BER needs, so it reads as -1. The decoder reads it as unsigned.
    content = b"\xff" * size

    response = decode_response(response_with_value(tag, content))

    assert response.varbinds == [((1, 3, 6, 1), value_type, 2 ** (8 * size) - 1)]


@pytest.mark.parametrize("tag, value_type, size", UNSIGNED_TYPES, ids=[name for _, name, _ in UNSIGNED_TYPES])
def test_unsigned_out_of_range_keeps_tag(tag, value_type, size):
    # One more than the type's largest value has no snmprec form.
    content = b"\x01" + b"\x00" * size

    response = decode_response(response_with_value(tag, content))

    assert response.varbinds == [((1, 3, 6, 1), None, tag)]


# --------------------------------------------------------------------------
# A small BER tree of a valid message, for building bad ones
# --------------------------------------------------------------------------


class Node:
    """One BER element: a tag with either content bytes or child elements."""

    def __init__(self, tag: int, content: bytes | None = None, children: list["Node"] | None = None) -> None:
        self.tag = tag
        self.content = content
        self.children = children

    def copy(self) -> "Node":
        if self.children is None:
            return Node(self.tag, self.content)
        return Node(self.tag, None, [child.copy() for child in self.children])


def read_length(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    return int.from_bytes(data[pos + 1 : pos + 1 + count], "big"), pos + 1 + count


def split_tree(data: bytes) -> Node:
    """Split pyasn1's encoding of a valid message into a tree (constructed tags have bit 0x20)."""

    def element(pos: int) -> tuple[Node, int]:
        tag = data[pos]
        size, start = read_length(data, pos + 1)
        stop = start + size
        if not tag & 0x20:
            return Node(tag, data[start:stop]), stop
        children = []
        cursor = start
        while cursor < stop:
            child, cursor = element(cursor)
            children.append(child)
        return Node(tag, None, children), stop

    root, end = element(0)
    assert end == len(data)
    return root


def encode_length(size: int, length_bytes: int = 0) -> bytes:
    if size < 0x80 and not length_bytes:
        return bytes((size,))
    body = size.to_bytes(max(length_bytes, (size.bit_length() + 7) // 8, 1), "big")
    return bytes((0x80 | len(body),)) + body


def reencode(node: Node, length_bytes: int = 0) -> bytes:
    """Write ``node`` with correct definite lengths (minimal, or ``length_bytes`` long)."""
    if node.children is None:
        content = node.content
    else:
        content = b"".join(reencode(child, length_bytes) for child in node.children)
    return bytes((node.tag,)) + encode_length(len(content), length_bytes) + content


def test_tree_reencodes_pyasn1_bytes():
    rng = random.Random(5)
    for _ in range(50):
        data = build_response(1, b"public", rng.randrange(MAX_INT32), random_varbinds(rng, 1, rng.randint(0, 30)))
        assert reencode(split_tree(data)) == data


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------


def sample_response(seed: int = 7, count: int = 12) -> bytes:
    rng = random.Random(seed)
    varbinds = [((1, 3, 6, 1, 2, 1, 1, 5, 0), V2C.OctetString(b"core1"))]
    varbinds += [(oid, VALUE_BUILDERS[name](rng)) for name in V2C_TYPES for oid in [random_oid(rng)]]
    varbinds += random_varbinds(rng, 1, count)
    return build_response(1, b"public", 123456, varbinds)


def assert_wire_error(data: bytes) -> WireError:
    with pytest.raises(WireError) as caught:
        decode_response(data)
    check_wire_error(caught.value, data)
    return caught.value


@pytest.mark.parametrize("seed, count", [(7, 12), (8, 60)])
def test_truncations_raise_wire_error(seed, count):
    data = sample_response(seed, count)
    for size in range(len(data)):
        try:
            assert_wire_error(data[:size])
        except BaseException as failure:
            raise AssertionError(f"truncated to {size} of {len(data)} bytes: {failure!r}") from failure


def test_truncated_inner_elements():
    # Cut each element's content while every enclosing length stays correct,
    # so the decoder has to find the damage inside the message.
    tree = split_tree(sample_response())
    leaves: list[tuple[Node, int]] = []

    def collect(node: Node) -> None:
        for index, child in enumerate(node.children):
            if child.children is None:
                leaves.append((node, index))
            else:
                collect(child)

    collect(tree)
    original = reencode(tree)
    checked = 0
    for parent, index in leaves:
        leaf = parent.children[index]
        for size in range(len(leaf.content)):
            parent.children[index] = Node(leaf.tag, leaf.content[:size])
            data = reencode(tree)
            check_decoded_or_wire_error(data, f"leaf tag 0x{leaf.tag:02x} cut to {size} bytes")
            checked += 1
        parent.children[index] = leaf
    assert reencode(tree) == original
    assert checked > 100


def check_decoded_or_wire_error(data: bytes, context: str) -> str:
    """Decode ``data``: a WireError with valid attributes, or a result that pyasn1 agrees with.

    Returns "error", "agreed" or "decoded" (pyasn1 rejected it, so there is
    no second opinion).
    """
    try:
        response = decode_response(data)
    except WireError as error:
        try:
            check_wire_error(error, data)
        except AssertionError as failure:
            raise AssertionError(f"{context}: {failure} ({data.hex()})") from failure
        return "error"
    except Exception as error:
        raise AssertionError(f"{context}: {type(error).__name__} {error} instead of WireError ({data.hex()})") from error
    reference = pyasn1_view(data)
    if reference is None:
        return "decoded"
    assert reference.pdu_tag == PDU_TAGS["response"], f"{context}: accepted PDU tag 0x{reference.pdu_tag:02x} ({data.hex()})"
    ours = response_view(response)
    assert ours._replace(varbinds=[]) == reference._replace(varbinds=[]), f"{context}: header differs from pyasn1 ({data.hex()})"
    assert len(ours.varbinds) == len(reference.varbinds), f"{context}: varbind count differs from pyasn1 ({data.hex()})"
    for index, (got, want) in enumerate(zip(ours.varbinds, reference.varbinds)):
        if got != want and not constructed_string(got, want):
            raise AssertionError(f"{context}: varbind {index} is {got}, pyasn1 reads {want} ({data.hex()})")
    return "agreed"


# Primitive tag of each string type.
STRING_TAGS = {snmp.OCTET_STRING: 0x04, snmp.IP_ADDRESS_TYPE: 0x40, snmp.OPAQUE: 0x44}


def constructed_string(got: tuple, want: tuple) -> bool:
    """Tell whether ``got`` is an unknown-tag varbind where pyasn1 read a constructed string.

    BER allows the constructed form of a string (tag bit 0x20) and pyasn1
    reads it, but RFC 3417, section 8, requires the primitive form for
    simple types in SNMP, so the decoder may keep it as an unknown tag.
    """
    return (
        got[0] == want[0]
        and got[1] is None
        and want[1] in STRING_TAGS
        and got[2] == STRING_TAGS[want[1]] | 0x20
    )


INTERESTING_TAGS = (0x02, 0x04, 0x05, 0x06, 0x30, 0x40, 0x41, 0x42, 0x43, 0x44, 0x46, 0x80, 0x81, 0x82, 0xA0, 0xA2, 0x1F, 0x24)


def mutate_tree(tree: Node, rng: random.Random) -> None:
    """Apply one random structural change to ``tree``; :func:`reencode` writes correct lengths afterwards."""
    nodes: list[Node] = []

    def walk(node: Node) -> None:
        nodes.append(node)
        for child in node.children or ():
            walk(child)

    walk(tree)
    node = rng.choice(nodes)
    draw = rng.randrange(6)
    if draw == 0:
        node.tag = rng.choice(INTERESTING_TAGS) if rng.random() < 0.7 else rng.randrange(256)
    elif node.children is None:
        mutate_content(node, draw, rng)
    elif draw == 1 and node.children:
        del node.children[rng.randrange(len(node.children))]
    elif draw == 2 and node.children:
        node.children.insert(rng.randrange(len(node.children) + 1), rng.choice(node.children).copy())
    elif draw == 3:
        extra = Node(rng.choice(INTERESTING_TAGS), rng.randbytes(rng.randint(0, 4)))
        node.children.insert(rng.randrange(len(node.children) + 1), extra)
    elif draw == 4 and len(node.children) > 1:
        first, second = rng.sample(range(len(node.children)), 2)
        node.children[first], node.children[second] = node.children[second], node.children[first]
    else:
        # The same bytes as a primitive element: the decoder must not descend into it.
        node.content = b"".join(reencode(child) for child in node.children)
        node.children = None


def mutate_content(node: Node, draw: int, rng: random.Random) -> None:
    if draw == 1:
        node.content = node.content[: rng.randrange(len(node.content) + 1)]
    elif draw == 2:
        node.content = node.content + rng.randbytes(rng.randint(1, 4))
    elif draw == 3 and node.content:
        content = bytearray(node.content)
        content[rng.randrange(len(content))] = rng.randrange(256)
        node.content = bytes(content)
    else:
        node.content = rng.randbytes(rng.randint(0, 6))


def test_tree_mutations_error_or_agree():
    rng = random.Random(20240503)
    bases = [split_tree(sample_response(seed, rng.randint(0, 6))) for seed in range(10)]
    outcomes = {"error": 0, "agreed": 0, "decoded": 0}
    for case in range(5000):
        tree = rng.choice(bases).copy()
        for _ in range(rng.randint(1, 3)):
            mutate_tree(tree, rng)
        data = reencode(tree)
        outcomes[check_decoded_or_wire_error(data, f"case {case}")] += 1
    # The mutations reach both outcomes, so the checks above ran on each.
    assert outcomes["error"] > 1000
    assert outcomes["agreed"] > 100


def test_byte_mutations_error_or_agree():
    rng = random.Random(20240504)
    bases = [sample_response(seed, rng.randint(0, 4)) for seed in range(10)]
    outcomes = {"error": 0, "agreed": 0, "decoded": 0}
    for case in range(20_000):
        data = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            draw = rng.randrange(4)
            position = rng.randrange(len(data))
            if draw == 0:
                data[position] = rng.randrange(256)
            elif draw == 1:
                data[position] ^= 1 << rng.randrange(8)
            elif draw == 2:
                data.insert(position, rng.randrange(256))
            elif len(data) > 1:
                del data[position]
        outcomes[check_decoded_or_wire_error(bytes(data), f"case {case}")] += 1
    assert outcomes["error"] > 1000
    assert outcomes["agreed"] > 100


def valid_tree() -> Node:
    return split_tree(build_response(1, b"public", 99, [((1, 3, 6, 1, 2, 1, 1, 5, 0), V2C.OctetString(b"sw1"))]))


def test_trailing_bytes_rejected():
    data = build_response(1, b"public", 99, [((1, 3, 6, 1), V2C.Integer32(1))])

    error = assert_wire_error(data + b"\x00")

    assert error.offset == len(data)


@pytest.mark.parametrize("path", [(), (2,), (2, 3, 0)], ids=["after-pdu", "after-varbind-list", "after-value"])
def test_extra_element_inside_rejected(path):
    tree = valid_tree()
    node = tree
    for index in path:
        node = node.children[index]
    node.children.append(Node(0x05, b""))
    data = reencode(tree)
    assert pyasn1_view(data) is None  # pyasn1 rejects it too

    assert_wire_error(data)


@pytest.mark.parametrize("tag", [0x31, 0x10, 0xA2, 0x04])
def test_wrong_outer_tag_rejected(tag):
    tree = valid_tree()
    tree.tag = tag

    error = assert_wire_error(reencode(tree))

    assert error.offset == 0


@pytest.mark.parametrize("tag", [0xA0, 0xA1, 0xA3, 0xA5, 0xA6, 0xA7, 0xA8, 0x30])
def test_request_pdu_tag_rejected(tag):
    tree = valid_tree()
    tree.children[2].tag = tag
    data = reencode(tree)
    pdu_offset = 2 + len(reencode(tree.children[0])) + len(reencode(tree.children[1]))
    assert data[pdu_offset] == tag

    error = assert_wire_error(data)

    assert error.offset == pdu_offset


@pytest.mark.parametrize("version", [2, 3, -1, 256])
def test_other_versions_rejected(version):
    tree = valid_tree()
    tree.children[0] = Node(0x02, version.to_bytes((version.bit_length() + 8) // 8, "big", signed=True))
    data = reencode(tree)

    error = assert_wire_error(data)

    assert "version" in error.field


def test_indefinite_length_rejected():
    good = valid_tree()
    inner = b"".join(reencode(child) for child in good.children)
    data = b"\x30\x80" + inner + b"\x00\x00"
    # pyasn1 reads the indefinite form, because BER allows it, but decode_response rejects it.
    assert pyasn1_view(data) is not None

    error = assert_wire_error(data)

    assert error.offset <= 1


def test_indefinite_length_inside_rejected():
    tree = valid_tree()
    varbind_list = reencode(tree.children[2].children[3])
    indefinite = b"\x30\x80" + varbind_list[2:] + b"\x00\x00"
    pdu_content = b"".join(reencode(child) for child in tree.children[2].children[:3]) + indefinite
    pdu = bytes((0xA2,)) + encode_length(len(pdu_content)) + pdu_content
    content = reencode(tree.children[0]) + reencode(tree.children[1]) + pdu
    data = b"\x30" + encode_length(len(content)) + content

    assert_wire_error(data)


@pytest.mark.parametrize("count", [5, 6, 8, 0x7F])
def test_length_of_length_over_four_rejected(count):
    content = b"".join(reencode(child) for child in valid_tree().children)
    data = b"\x30" + bytes((0x80 | count,)) + len(content).to_bytes(count, "big") + content

    error = assert_wire_error(data)

    assert error.offset <= 1


def test_length_past_end_rejected():
    data = bytearray(reencode(valid_tree()))
    data[1] += 1

    assert_wire_error(bytes(data))


def test_zero_length_oid_rejected():
    tree = valid_tree()
    varbind = tree.children[2].children[3].children[0]
    varbind.children[0] = Node(0x06, b"")
    data = reencode(tree)
    name_offset = len(data) - len(reencode(varbind)) + 2

    error = assert_wire_error(data)

    # The OID's tag, or its (empty) content that starts right after the length.
    assert name_offset <= error.offset <= name_offset + 2
    assert error.field == "varbind 1 name"


def test_zero_length_oid_value_rejected():
    tree = valid_tree()
    tree.children[2].children[3].children[0].children[1] = Node(0x06, b"")

    error = assert_wire_error(reencode(tree))

    assert "value" in error.field


@pytest.mark.parametrize("index", [0, 1, 2], ids=["request-id", "error-status", "error-index"])
def test_wrong_header_tag_names_field(index):
    names = ("request-id", "error-status", "error-index")
    tree = valid_tree()
    pdu = tree.children[2]
    pdu.children[index] = Node(0x04, b"\x01")
    data = reencode(tree)
    offset = len(reencode(tree)) - len(reencode(pdu)) + 2 + sum(len(reencode(child)) for child in pdu.children[:index])
    assert data[offset] == 0x04

    error = assert_wire_error(data)

    assert error.field == names[index]
    assert error.offset == offset


def test_bad_value_names_varbind():
    tree = split_tree(build_response(1, b"public", 1, [((1, 3, 6, 1, 1), V2C.Integer32(1)), ((1, 3, 6, 1, 2), V2C.Integer32(2)), ((1, 3, 6, 1, 3), V2C.Integer32(3))]))
    # An INTEGER with no content bytes (X.690 8.3.1 needs at least one).
    tree.children[2].children[3].children[2].children[1] = Node(0x02, b"")

    error = assert_wire_error(reencode(tree))

    # Varbinds count from 1, as SNMP's error-index does.
    assert error.field == "varbind 3 value"


@pytest.mark.parametrize("tag", [0x05, 0x80, 0x81, 0x82])
def test_empty_type_with_content_rejected(tag):
    tree = valid_tree()
    tree.children[2].children[3].children[0].children[1] = Node(tag, b"\x00")

    assert_wire_error(reencode(tree))


def test_empty_input_rejected():
    error = assert_wire_error(b"")

    assert error.offset == 0


# --------------------------------------------------------------------------
# Client against a UDP server in this test
# --------------------------------------------------------------------------


class Request(NamedTuple):
    """A request as the test server's pyasn1 decoder reads it."""

    data: bytes
    version: int
    community: bytes
    pdu_tag: int
    request_id: int
    oids: list[tuple[int, ...]]
    max_repetitions: int | None


def parse_request(data: bytes) -> Request:
    message, rest = decoder.decode(data, asn1Spec=V2C.Message())
    assert rest == b""
    pdu = V2C.apiMessage.get_pdu(message)
    bulk = pdu.tagSet == V2C.GetBulkRequestPDU.tagSet
    return Request(
        data,
        int(V2C.apiMessage.get_version(message)),
        bytes(V2C.apiMessage.get_community(message)),
        identifier_octet(pdu.tagSet),
        int(V2C.apiPDU.get_request_id(pdu)),
        [tuple(oid) for oid, _ in V2C.apiPDU.get_varbinds(pdu)],
        int(V2C.apiBulkPDU.get_max_repetitions(pdu)) if bulk else None,
    )


def response_to(request: Request, varbinds=None, **changes) -> bytes:
    """Build a Response to ``request``; ``changes`` overrides version, community or request_id."""
    if varbinds is None:
        varbinds = [(oid, V2C.OctetString(b"value of " + ".".join(map(str, oid)).encode())) for oid in request.oids]
    return build_response(
        changes.get("version", request.version),
        changes.get("community", request.community),
        changes.get("request_id", request.request_id),
        varbinds,
    )


class Agent(asyncio.DatagramProtocol):
    """A UDP server that records requests and sends what ``reply`` returns for each (a list of datagrams)."""

    def __init__(self, reply: Callable[[Request, int], list[bytes]]) -> None:
        self.reply = reply
        self.requests: list[Request] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, address) -> None:
        request = parse_request(data)
        self.requests.append(request)
        for datagram in self.reply(request, len(self.requests)):
            self.transport.sendto(datagram, address)


async def start_agent(reply, host: str = "127.0.0.1") -> tuple[Agent, int]:
    loop = asyncio.get_running_loop()
    transport, agent = await loop.create_datagram_endpoint(lambda: Agent(reply), local_addr=(host, 0))
    return agent, transport.get_extra_info("sockname")[1]


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, TEST_LIMIT_S))


async def exchange(reply, call, host: str = "127.0.0.1"):
    """Start an agent and a client connected to it, and await ``call(client)``.

    Returns ``(result, agent, client)``, where ``result`` is the RequestTimeout
    or OSError that the call raised, if any.
    """
    agent, port = await start_agent(reply, host)
    client = await CommunityClient.open(host, port)
    try:
        try:
            result = await call(client)
        except (RequestTimeout, OSError) as error:
            result = error
        return result, agent, client
    finally:
        client.close()
        agent.transport.close()


SYS_NAME = (1, 3, 6, 1, 2, 1, 1, 5, 0)
SYS_UPTIME = (1, 3, 6, 1, 2, 1, 1, 3, 0)


def test_client_normal_response():
    values = [(SYS_NAME, V2C.OctetString(b"core1")), (SYS_UPTIME, V2C.TimeTicks(4711))]

    def call(client):
        return client.request(1, b"secret", "get", [SYS_NAME, SYS_UPTIME], timeout_s=TIMEOUT_S, retries=1)

    response, agent, client = run(exchange(lambda request, number: [response_to(request, values)], call))

    assert isinstance(response, Response)
    assert len(agent.requests) == 1
    request = agent.requests[0]
    assert request.version == 1
    assert request.community == b"secret"
    assert request.pdu_tag == PDU_TAGS["get"]
    assert request.oids == [SYS_NAME, SYS_UPTIME]
    assert 0 <= request.request_id <= MAX_INT32
    assert response.request_id == request.request_id
    assert response.varbinds == expected_varbinds(values)
    assert (client.sent, client.received, client.ignored, client.undecodable) == (1, 1, 0, 0)


@pytest.mark.parametrize("version, pdu, max_repetitions", [(0, "next", 0), (1, "next", 0), (1, "bulk", 25), (1, "bulk", 10000)])
def test_client_sends_pdu_and_repetitions(version, pdu, max_repetitions):
    def call(client):
        return client.request(version, b"public", pdu, [(1, 3, 6, 1, 2, 1, 2)], max_repetitions=max_repetitions, timeout_s=TIMEOUT_S, retries=0)

    response, agent, _ = run(exchange(lambda request, number: [response_to(request)], call))

    assert isinstance(response, Response)
    assert response.version == version
    request = agent.requests[0]
    assert request.version == version
    assert request.pdu_tag == PDU_TAGS[pdu]
    if pdu == "bulk":
        assert request.max_repetitions == max_repetitions


def test_client_retry_gets_response():
    def reply(request, number):
        return [] if number == 1 else [response_to(request)]

    def call(client):
        return client.request(1, b"public", "get", [SYS_NAME], timeout_s=TIMEOUT_S, retries=2)

    response, agent, client = run(exchange(reply, call))

    assert isinstance(response, Response)
    assert len(agent.requests) == 2
    assert agent.requests[0].request_id == agent.requests[1].request_id
    assert agent.requests[0].data == agent.requests[1].data
    assert client.sent == 2
    assert client.received == 1


def test_client_ignores_other_request_id():
    def reply(request, number):
        return [response_to(request, request_id=(request.request_id + 1) % (MAX_INT32 + 1)), response_to(request)]

    def call(client):
        return client.request(1, b"public", "get", [SYS_NAME], timeout_s=TIMEOUT_S, retries=0)

    response, agent, client = run(exchange(reply, call))

    assert isinstance(response, Response)
    assert response.request_id == agent.requests[0].request_id
    assert client.ignored == 1
    assert client.received == 2
    assert client.undecodable == 0


def test_client_ignores_other_community_version():
    def reply(request, number):
        return [response_to(request, community=b"other"), response_to(request, version=0), response_to(request)]

    def call(client):
        return client.request(1, b"public", "get", [SYS_NAME], timeout_s=TIMEOUT_S, retries=0)

    response, _, client = run(exchange(reply, call))

    assert isinstance(response, Response)
    assert response.community == b"public"
    assert response.version == 1
    assert client.ignored == 2
    assert client.received == 3


def test_client_skips_garbage_datagram():
    def reply(request, number):
        return [b"\x30\x03\x02\x01", response_to(request)]

    def call(client):
        return client.request(1, b"public", "get", [SYS_NAME], timeout_s=TIMEOUT_S, retries=0)

    response, _, client = run(exchange(reply, call))

    assert isinstance(response, Response)
    assert client.undecodable == 1
    assert client.ignored == 0
    assert client.received == 2


def test_client_ignores_late_response():
    # The agent responds to the first request only while the second one is
    # pending, and that late response must not be taken for the second one's.
    seen: list[Request] = []

    def reply(request, number):
        seen.append(request)
        if number == 1:
            return []
        return [response_to(seen[0], [(SYS_NAME, V2C.OctetString(b"stale"))]), response_to(request)]

    async def call(client):
        with contextlib.suppress(RequestTimeout):
            await client.request(1, b"public", "get", [SYS_NAME], timeout_s=TIMEOUT_S, retries=0)
        return await client.request(1, b"public", "get", [SYS_UPTIME], timeout_s=TIMEOUT_S, retries=0)

    response, agent, client = run(exchange(reply, call))

    assert isinstance(response, Response)
    assert len(agent.requests) == 2
    assert agent.requests[0].request_id != agent.requests[1].request_id
    assert response.request_id == agent.requests[1].request_id
    assert response.varbinds[0][0] == SYS_UPTIME
    assert client.ignored == 1


def test_client_overlapping_requests():
    # The agent responds to the second request first.
    delayed: list[Request] = []

    def reply(request, number):
        if number == 1:
            delayed.append(request)
            return []
        return [response_to(request), response_to(delayed[0])]

    async def call(client):
        first = asyncio.ensure_future(client.request(1, b"public", "get", [SYS_NAME], timeout_s=1.0, retries=0))
        await asyncio.sleep(0.05)
        second = client.request(1, b"public", "get", [SYS_UPTIME], timeout_s=1.0, retries=0)
        return await asyncio.gather(first, second)

    (first, second), _, client = run(exchange(reply, call))

    assert first.varbinds[0][0] == SYS_NAME
    assert second.varbinds[0][0] == SYS_UPTIME
    assert client.ignored == 0


@pytest.mark.parametrize("retries", [0, 2])
def test_client_timeout_counts_attempts(retries):
    def call(client):
        return client.request(1, b"public", "get", [SYS_NAME], timeout_s=TIMEOUT_S, retries=retries)

    started = time.monotonic()
    error, agent, client = run(exchange(lambda request, number: [], call))
    elapsed = time.monotonic() - started

    assert isinstance(error, RequestTimeout)
    assert error.attempts == retries + 1
    assert error.undecodable == 0
    assert error.last_error is None
    assert len(agent.requests) == retries + 1
    assert len({request.request_id for request in agent.requests}) == 1
    assert client.sent == retries + 1
    # Every attempt waits its timeout: a lower bound, not a speed measurement.
    assert elapsed >= (retries + 1) * TIMEOUT_S * 0.9


def test_client_only_garbage_times_out():
    def call(client):
        return client.request(1, b"public", "get", [SYS_NAME], timeout_s=TIMEOUT_S, retries=1)

    error, agent, client = run(exchange(lambda request, number: [b"\x30\x82\xff\xff\x02"], call))

    assert isinstance(error, RequestTimeout)
    assert error.attempts == 2
    assert error.undecodable == 2
    assert isinstance(error.last_error, WireError)
    assert client.undecodable == 2
    assert len(agent.requests) == 2


def ipv6_loopback_unavailable() -> str | None:
    if not socket.has_ipv6:
        return "Python was built without IPv6"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError as error:
        return f"cannot bind UDP on ::1: {error}"
    return None


@pytest.mark.skipif(ipv6_loopback_unavailable() is not None, reason=str(ipv6_loopback_unavailable()))
def test_client_ipv6_loopback():
    def call(client):
        return client.request(1, b"public", "get", [SYS_NAME], timeout_s=TIMEOUT_S, retries=1)

    response, agent, _ = run(exchange(lambda request, number: [response_to(request)], call, host="::1"))

    assert isinstance(response, Response)
    assert response.request_id == agent.requests[0].request_id
    assert response.varbinds[0][0] == SYS_NAME


def test_client_oversize_request_raises_oserror():
    # 3,000 OIDs of 30 arcs make a request of about 100 KB, more than a UDP
    # datagram can carry, so the socket's send fails with EMSGSIZE.
    oids = [(1, 3, 6, 1, 4, 1, 99999, *range(100000, 100023), index) for index in range(3000)]

    def call(client):
        return client.request(1, b"public", "get", oids, timeout_s=TIMEOUT_S, retries=1)

    error, agent, _ = run(exchange(lambda request, number: [], call))

    assert isinstance(error, OSError), f"expected OSError (EMSGSIZE) from the socket, got {error!r}"
    assert error.errno == errno.EMSGSIZE
    assert agent.requests == []


def test_client_closed_port_reported():
    # Nothing listens on the port, so the kernel sends ICMP port unreachable,
    # which a connected UDP socket reports as ECONNREFUSED.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def call():
        client = await CommunityClient.open("127.0.0.1", port)
        try:
            return await client.request(1, b"public", "get", [SYS_NAME], timeout_s=TIMEOUT_S, retries=1)
        except (RequestTimeout, OSError) as error:
            return error
        finally:
            client.close()

    error = run(call())

    assert isinstance(error, OSError), f"expected the socket's ConnectionRefusedError to propagate, got {error!r}"
    assert isinstance(error, ConnectionRefusedError)
