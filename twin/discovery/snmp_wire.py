"""SNMP v1 and v2c messages on the wire: a BER codec and an asyncio UDP client.

The live walker (:mod:`twin.discovery.snmp_live`) uses this module for
community-based walks and pysnmp for SNMPv3. pysnmp builds a pyasn1 object
tree for every message, so a walk through it costs about 135 µs of CPU per
varbind. The decoder here reads a response straight into the values that
:func:`twin.discovery.snmp.parse_snmprec` gives for a recording. A walk
through it costs about 10 µs per varbind (both measured on generated switch
walks served by snmpsim).

Only what a walk needs is here: GET, GETNEXT and GETBULK requests with NULL
values (:func:`encode_request`) and the Response PDU (:func:`decode_response`).
Decoding is strict: a message that is not a well-formed v1/v2c Response PDU
raises :class:`WireError` naming the byte offset and the field.

Example
-------
>>> data = encode_request(1, b"public", "bulk", 7, [(1, 3, 6, 1, 2, 1, 2)], max_repetitions=25)
>>> data[:2].hex()
'3024'
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any, Sequence

from twin.discovery.snmp import (
    COUNTER32,
    COUNTER64,
    END_OF_MIB_VIEW,
    GAUGE32,
    INTEGER,
    IP_ADDRESS_TYPE,
    NO_SUCH_INSTANCE,
    NO_SUCH_OBJECT,
    NULL,
    OBJECT_IDENTIFIER,
    OCTET_STRING,
    OPAQUE,
    TIMETICKS,
)

__all__ = [
    "ERROR_STATUS_NAMES",
    "PDU_TAGS",
    "CommunityClient",
    "RequestTimeout",
    "Response",
    "WireError",
    "decode_response",
    "encode_request",
    "error_status_name",
]

PDU_TAGS = {"get": 0xA0, "next": 0xA1, "response": 0xA2, "bulk": 0xA5}

# error-status values of RFC 3416 by number.
ERROR_STATUS_NAMES = (
    "noError", "tooBig", "noSuchName", "badValue", "readOnly", "genErr", "noAccess", "wrongType",
    "wrongLength", "wrongEncoding", "wrongValue", "noCreation", "inconsistentValue",
    "resourceUnavailable", "commitFailed", "undoFailed", "authorizationError", "notWritable",
    "inconsistentName",
)

_SEQUENCE = 0x30
_INTEGER_TAG = 0x02
_OCTET_STRING_TAG = 0x04
_NULL_TAG = 0x05
_OID_TAG = 0x06

_STRING_TAGS = {_OCTET_STRING_TAG: OCTET_STRING, 0x40: IP_ADDRESS_TYPE, 0x44: OPAQUE}
# Unsigned application types and their largest value.
_UNSIGNED_TAGS = {0x41: (COUNTER32, 0xFFFFFFFF), 0x42: (GAUGE32, 0xFFFFFFFF), 0x43: (TIMETICKS, 0xFFFFFFFF), 0x46: (COUNTER64, 0xFFFFFFFFFFFFFFFF)}
_EMPTY_TAGS = {_NULL_TAG: NULL, 0x80: NO_SUCH_OBJECT, 0x81: NO_SUCH_INSTANCE, 0x82: END_OF_MIB_VIEW}

# Maximum number of length bytes accepted: 4 bytes cover more than any UDP datagram.
_MAX_LENGTH_BYTES = 4


class WireError(ValueError):
    """A datagram that is not a well-formed SNMP v1/v2c Response message."""

    def __init__(self, offset: int, field: str, problem: str) -> None:
        super().__init__(f"offset {offset}, {field}: {problem}")
        self.offset = offset
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class Response:
    """A decoded Response PDU.

    ``varbinds`` contains ``(oid, value_type, value)`` with the types and values
    that :func:`twin.discovery.snmp.parse_snmprec` gives. ``value_type`` is
    None for a value with no snmprec form (an unknown tag, or an unsigned
    value out of its type's range), and ``value`` is then its identifier
    octet (0x47 for application tag 7).
    """

    version: int
    community: bytes
    request_id: int
    error_status: int
    error_index: int
    varbinds: list[tuple[tuple[int, ...], str | None, Any]]

    @property
    def error_name(self) -> str:
        """Name of ``error_status`` as RFC 3416 spells it."""
        return error_status_name(self.error_status)


def error_status_name(status: int) -> str:
    """Return the RFC 3416 name of an error-status value, or "unknown" for one it does not define."""
    return ERROR_STATUS_NAMES[status] if 0 <= status < len(ERROR_STATUS_NAMES) else "unknown"


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes((size,))
    body = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _length(len(content)) + content


def _integer(value: int) -> bytes:
    return _tlv(_INTEGER_TAG, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def _oid(oid: Sequence[int]) -> bytes:
    if len(oid) < 2 or oid[0] > 2 or (oid[0] < 2 and oid[1] >= 40) or min(oid) < 0:
        raise ValueError(f"OID {'.'.join(map(str, oid))} cannot be encoded: it needs two or more arcs, the first 0, 1 or 2")
    content = bytearray()
    for arc in (oid[0] * 40 + oid[1], *oid[2:]):
        if arc < 0x80:
            content.append(arc)
            continue
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        content.extend(reversed(chunk))
    return _tlv(_OID_TAG, bytes(content))


def encode_request(
    version: int,
    community: bytes,
    pdu: str,
    request_id: int,
    oids: Sequence[Sequence[int]],
    *,
    non_repeaters: int = 0,
    max_repetitions: int = 0,
) -> bytes:
    """Return the BER message of a GET, GETNEXT or GETBULK request (``pdu``).

    ``version`` is 0 for SNMPv1 and 1 for v2c; GETBULK needs v2c. Every
    varbind carries NULL.

    Raises
    ------
    ValueError
        An unknown ``pdu`` or version, GETBULK with v1, or an OID that BER
        cannot encode.
    """
    if version not in (0, 1):
        raise ValueError(f"SNMP message version {version} is not 0 (v1) or 1 (v2c)")
    if pdu not in ("get", "next", "bulk"):
        raise ValueError(f"unknown request PDU {pdu!r}; expected get, next or bulk")
    if pdu == "bulk" and version == 0:
        raise ValueError("GETBULK needs SNMP v2c; SNMPv1 has GETNEXT only")
    varbinds = b"".join(_tlv(_SEQUENCE, _oid(oid) + b"\x05\x00") for oid in oids)
    if pdu == "bulk":
        header = _integer(request_id) + _integer(non_repeaters) + _integer(max_repetitions)
    else:
        header = _integer(request_id) + b"\x02\x01\x00\x02\x01\x00"
    body = _tlv(PDU_TAGS[pdu], header + _tlv(_SEQUENCE, varbinds))
    return _tlv(_SEQUENCE, _integer(version) + _tlv(_OCTET_STRING_TAG, bytes(community)) + body)


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------


def _header(data: bytes, pos: int, end: int, field: str) -> tuple[int, int, int]:
    """Read the tag and length at ``pos``; return ``(tag, content start, content end)``."""
    if pos + 2 > end:
        raise WireError(pos, field, "the message ends inside its tag and length")
    tag = data[pos]
    size = data[pos + 1]
    pos += 2
    if size & 0x80:
        count = size & 0x7F
        if count == 0:
            raise WireError(pos - 1, field, "indefinite length, which SNMP does not allow")
        if count > _MAX_LENGTH_BYTES:
            raise WireError(pos - 1, field, f"a length of {count} bytes, longer than any datagram needs")
        if pos + count > end:
            raise WireError(pos - 1, field, "the message ends inside the length")
        size = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + size > end:
        raise WireError(pos, field, f"length {size} runs {pos + size - end} bytes past the end of its enclosing element")
    return tag, pos, pos + size


def _expect(data: bytes, pos: int, end: int, tag: int, field: str) -> tuple[int, int]:
    found, start, stop = _header(data, pos, end, field)
    if found != tag:
        raise WireError(pos, field, f"tag 0x{found:02x} where 0x{tag:02x} was expected")
    return start, stop


def _read_integer(data: bytes, pos: int, end: int, field: str) -> tuple[int, int]:
    start, stop = _expect(data, pos, end, _INTEGER_TAG, field)
    if start == stop:
        raise WireError(pos, field, "an INTEGER with no content bytes")
    return int.from_bytes(data[start:stop], "big", signed=True), stop


def _decode_oid(data: bytes, start: int, stop: int, field: str) -> tuple[int, ...]:
    if start == stop:
        raise WireError(start, field, "an OBJECT IDENTIFIER with no content bytes")
    arcs: list[int] = []
    arc = 0
    for position in range(start, stop):
        byte = data[position]
        if byte == 0x80 and arc == 0:
            raise WireError(position, field, "a sub-identifier with a leading 0x80 byte (not minimal BER)")
        arc = (arc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(arc)
            arc = 0
    if data[stop - 1] & 0x80:
        raise WireError(stop - 1, field, "the last sub-identifier is not terminated")
    first = arcs[0]
    if first < 40:
        return (0, first, *arcs[1:])
    if first < 80:
        return (1, first - 40, *arcs[1:])
    return (2, first - 80, *arcs[1:])


def decode_response(data: bytes) -> Response:
    """Decode one SNMP v1 or v2c message containing a Response PDU.

    Raises
    ------
    WireError
        The datagram is not a well-formed v1/v2c Response message; the error
        names the byte offset and the field.
    """
    end = len(data)
    start, stop = _expect(data, 0, end, _SEQUENCE, "message")
    if stop != end:
        raise WireError(stop, "message", f"{end - stop} bytes after the end of the message")
    version, pos = _read_integer(data, start, stop, "version")
    if version not in (0, 1):
        raise WireError(start, "version", f"version {version} is not SNMPv1 (0) or v2c (1)")
    community_start, pos = _expect(data, pos, stop, _OCTET_STRING_TAG, "community")
    community = data[community_start:pos]
    tag, pdu_start, pdu_stop = _header(data, pos, stop, "PDU")
    if tag != PDU_TAGS["response"]:
        raise WireError(pos, "PDU", f"PDU tag 0x{tag:02x} is not a Response (0xa2)")
    if pdu_stop != stop:
        raise WireError(pdu_stop, "PDU", f"{stop - pdu_stop} bytes after the PDU")
    request_id, pos = _read_integer(data, pdu_start, pdu_stop, "request-id")
    error_status, pos = _read_integer(data, pos, pdu_stop, "error-status")
    error_index, pos = _read_integer(data, pos, pdu_stop, "error-index")
    list_start, list_stop = _expect(data, pos, pdu_stop, _SEQUENCE, "varbind list")
    if list_stop != pdu_stop:
        raise WireError(list_stop, "PDU", f"{pdu_stop - list_stop} bytes after the varbind list")

    varbinds: list[tuple[tuple[int, ...], str | None, Any]] = []
    pos = list_start
    number = 0
    while pos < list_stop:
        number += 1
        field = f"varbind {number}"
        bind_start, bind_stop = _expect(data, pos, list_stop, _SEQUENCE, field)
        oid_start, oid_stop = _expect(data, bind_start, bind_stop, _OID_TAG, f"{field} name")
        oid = _decode_oid(data, oid_start, oid_stop, f"{field} name")
        value_pos = oid_stop
        tag, value_start, value_stop = _header(data, value_pos, bind_stop, f"{field} value")
        if value_stop != bind_stop:
            raise WireError(value_stop, field, f"{bind_stop - value_stop} bytes after the value")
        content = data[value_start:value_stop]
        if tag == _INTEGER_TAG:
            if not content:
                raise WireError(value_pos, f"{field} value", "an INTEGER with no content bytes")
            varbinds.append((oid, INTEGER, int.from_bytes(content, "big", signed=True)))
        elif tag in _STRING_TAGS:
            varbinds.append((oid, _STRING_TAGS[tag], bytes(content)))
        elif tag in _UNSIGNED_TAGS:
            value_type, largest = _UNSIGNED_TAGS[tag]
            if not content:
                raise WireError(value_pos, f"{field} value", f"a {value_type} with no content bytes")
            # Unsigned: some agents leave out the leading zero byte of a
            # value with its top bit set, which would read as negative.
            value = int.from_bytes(content, "big")
            varbinds.append((oid, value_type, value) if value <= largest else (oid, None, tag))
        elif tag == _OID_TAG:
            varbinds.append((oid, OBJECT_IDENTIFIER, _decode_oid(data, value_start, value_stop, f"{field} value")))
        elif tag in _EMPTY_TAGS:
            if content:
                raise WireError(value_pos, f"{field} value", f"tag 0x{tag:02x} with {len(content)} content bytes; it has none")
            varbinds.append((oid, _EMPTY_TAGS[tag], None))
        else:
            varbinds.append((oid, None, tag))
        pos = bind_stop
    return Response(version, bytes(community), request_id, error_status, error_index, varbinds)


# --------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------


class RequestTimeout(Exception):
    """No well-formed matching response came to a request and its retries."""

    def __init__(self, attempts: int, undecodable: int, last_error: WireError | None) -> None:
        detail = f"no response after {attempts} attempt{'s' if attempts != 1 else ''}"
        if undecodable:
            detail += f"; {undecodable} undecodable datagram{'s' if undecodable != 1 else ''} came back, the last at {last_error}"
        super().__init__(detail)
        self.attempts = attempts
        self.undecodable = undecodable
        self.last_error = last_error


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, client: "CommunityClient") -> None:
        self.client = client

    def datagram_received(self, data: bytes, address: Any) -> None:
        self.client._received(data)

    def error_received(self, exc: Exception) -> None:
        # On a connected socket, asyncio reports here both a failed send
        # (EMSGSIZE) and an ICMP error for an earlier datagram (ECONNREFUSED:
        # nothing listens on the port). Neither gets better by waiting.
        self.client._failed(exc)


@dataclass
class _Pending:
    future: asyncio.Future
    version: int
    community: bytes
    undecodable: int = 0
    last_error: WireError | None = None


class CommunityClient:
    """A UDP socket connected to one SNMP agent, for v1 and v2c requests.

    Requests may overlap; responses are matched by request-id. Responses
    with another request-id, version or community, and datagrams that do
    not decode, are counted (``ignored``, ``undecodable``) and dropped. A
    socket error fails every request in flight (``socket_errors``).
    """

    def __init__(self, transport: asyncio.DatagramTransport) -> None:
        self.transport = transport
        self.pending: dict[int, _Pending] = {}
        self.next_id = random.randrange(1, 2**30)
        self.sent = 0
        self.received = 0
        self.ignored = 0
        self.undecodable = 0
        self.socket_errors = 0

    @classmethod
    async def open(cls, host: str, port: int) -> "CommunityClient":
        """Open a UDP socket connected to ``host:port`` (IPv4 or IPv6).

        Raises OSError when the address cannot be resolved or connected.
        """
        loop = asyncio.get_running_loop()
        client = cls.__new__(cls)
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(client), remote_addr=(host, port))
        client.__init__(transport)
        return client

    def _failed(self, error: Exception) -> None:
        self.socket_errors += 1
        for pending in self.pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)

    def _received(self, data: bytes) -> None:
        self.received += 1
        try:
            response = decode_response(data)
        except WireError as error:
            self.undecodable += 1
            for pending in self.pending.values():
                pending.undecodable += 1
                pending.last_error = error
            return
        pending = self.pending.get(response.request_id)
        if (
            pending is None
            or pending.future.done()
            or response.version != pending.version
            or response.community != pending.community
        ):
            self.ignored += 1
            return
        pending.future.set_result(response)

    async def request(
        self,
        version: int,
        community: bytes,
        pdu: str,
        oids: Sequence[Sequence[int]],
        *,
        max_repetitions: int = 0,
        timeout_s: float,
        retries: int,
    ) -> Response:
        """Send one request, resend it up to ``retries`` times, and return its response.

        Every attempt waits ``timeout_s`` seconds; a resend keeps the
        request-id, so a late response to an earlier attempt is accepted.

        Raises
        ------
        RequestTimeout
            No matching, well-formed response came.
        OSError
            The socket could not send, or the host reported that nothing
            listens on the port (ConnectionRefusedError).
        ValueError
            The request cannot be encoded (see :func:`encode_request`).
        """
        request_id = self.next_id
        self.next_id = self.next_id + 1 if self.next_id < 2**31 - 1 else 1
        data = encode_request(version, community, pdu, request_id, oids, max_repetitions=max_repetitions)
        loop = asyncio.get_running_loop()
        pending = _Pending(loop.create_future(), version, bytes(community))
        self.pending[request_id] = pending
        attempts = 0
        timer: list[asyncio.TimerHandle] = []

        def attempt() -> None:
            nonlocal attempts
            if pending.future.done():
                return
            if attempts > retries:
                pending.future.set_exception(RequestTimeout(attempts, pending.undecodable, pending.last_error))
                return
            attempts += 1
            try:
                self.transport.sendto(data)
            except OSError as error:
                pending.future.set_exception(error)
                return
            self.sent += 1
            timer[:] = [loop.call_later(timeout_s, attempt)]

        attempt()
        try:
            return await pending.future
        finally:
            for handle in timer:
                handle.cancel()
            del self.pending[request_id]

    def close(self) -> None:
        """Close the socket; pending requests time out."""
        self.transport.close()
