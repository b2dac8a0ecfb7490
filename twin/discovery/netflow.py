"""Flow export decoders: NetFlow v5, NetFlow v9, IPFIX and sFlow v5.

:class:`FlowDecoder` turns one UDP payload (:meth:`FlowDecoder.decode`), or
many in arrival order (:meth:`FlowDecoder.decode_many`), into a
``pyarrow.Table`` with
:data:`twin.discovery.flowrecords.FLOW_RECORD_SCHEMA`, and keeps the state that
NetFlow v9 and IPFIX need between datagrams: templates, sampling rates from
options records, and data sets that arrived before their template.
:func:`read_ipfix_file` reads an IPFIX file (RFC 5655: IPFIX messages back to
back) with the same decoder.

The version is taken from the first bytes of the payload: ``0x0005`` NetFlow
v5 (Cisco), ``0x0009`` NetFlow v9 (RFC 3954), ``0x000a`` IPFIX (RFC 7011) and
``0x00000005`` sFlow v5 (sflow.org, "sFlow Version 5", 2004).

Decoding rules
--------------
* Templates are kept per (exporter, version, observation domain or v9 source
  id). A template sent again with the same layout refreshes it, and one with a
  new layout under the same id replaces it (``template_replacements``). An
  IPFIX template record with no fields withdraws its template, and template id
  2 or 3 with no fields withdraws all templates of that kind.
* An exporter that restarted loses its templates (``exporter_resets``): NetFlow
  v9 sysUptime or IPFIX export time going back by more than
  :data:`RESET_TOLERANCE_S`, or the sequence number going back by more than
  :data:`RESET_SEQUENCE_GAP`.
* A data set whose template is unknown is held, at most ``pending_max_sets``
  sets and ``pending_max_bytes`` bytes in all, for ``pending_max_age_s``
  seconds. It is decoded when its template arrives, and otherwise dropped and
  counted in ``undecodable``.
* Data sets of templates with only fixed-length fields are decoded with one
  NumPy structured dtype per template (``np.frombuffer``), once over the
  concatenated sets of that template in one decode call, and NetFlow v5
  records likewise. Templates with variable-length fields (IPFIX length
  65535) are walked record by record.
  Enterprise-specific fields are skipped, and their PEN counted in
  ``enterprise_fields``.
* Bytes and packets are multiplied by the sampling rate, which the record
  keeps in ``sampling``. The rate is the NetFlow v5 header sampling interval,
  a sampling field in the data record itself, or the rate from an options
  record: samplingInterval 34, samplerRandomInterval 50 per samplerId 48, or
  samplingPacketInterval 305 with samplingPacketSpace 306.
* ``bytes`` and ``packets`` use octetDeltaCount (1) and packetDeltaCount (2),
  else the total counts (85, 86), else the NetFlow v9 OUT_BYTES and OUT_PKTS
  (23, 24). The reverse counts of an RFC 5103 biflow (PEN 29305, elements 1
  and 2) are added, because a biflow record is both directions of one
  conversation, and the twin counts both directions as Zeek does.
* Times: NetFlow v5/v9 first and last switched are sysUptime milliseconds and
  become epoch seconds with the header's export time. IPFIX uses
  flowStart/End in seconds, milliseconds, microseconds or nanoseconds
  (elements 150 to 157), the delta forms (158, 159) before the export time,
  or flowStart/EndSysUpTime (22, 21) with systemInitTimeMilliseconds (160).
  A record without times gets the export time, and an sFlow sample the time it
  was received (``now``), because sFlow carries no wall-clock time.
* Ports are 0 unless the protocol is TCP, UDP, SCTP, DCCP or UDP-Lite.
  Records without any address field (such as options data) are not flows and
  are counted in ``non_flow_records``.
* sFlow v5: each flow sample or expanded flow sample becomes one record from
  its raw packet header record (Ethernet, 802.1Q/QinQ, IPv4, IPv6, TCP, UDP)
  or sampled IPv4/IPv6 record, with bytes = frame length x sampling rate and
  packets = sampling rate. Counter samples are counted, not decoded.

:meth:`FlowDecoder.decode` never raises on bad input. A structural error
(a length field that runs past the end, a truncated header) stops the
datagram: the records decoded before it are kept, the datagram is counted in
``malformed`` and a :class:`FlowProblem` names the exporter, byte offset and
field.
"""

from __future__ import annotations

import logging
import math
import mmap
import struct
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa

from twin.discovery.flowrecords import (
    empty_records,
    ipv4_to_mapped,
    records_from_arrays,
)

__all__ = [
    "DecoderCounters",
    "FlowDecoder",
    "FlowProblem",
    "RESET_SEQUENCE_GAP",
    "RESET_TOLERANCE_S",
    "read_ipfix_file",
]

log = logging.getLogger(__name__)

# A NetFlow v9 sysUptime or IPFIX export time that goes back by more than this
# many seconds means the exporter restarted. Smaller steps back are UDP
# reordering.
RESET_TOLERANCE_S = 60.0

# A header sequence number that goes back by more than this many (v9 packets
# or IPFIX data records) also means a restart.
RESET_SEQUENCE_GAP = 1_000_000

# IANA enterprise number of RFC 5103 reverse information elements.
REVERSE_PEN = 29305

# Seconds from the NTP epoch (1900) to the Unix epoch (1970).
_NTP_TO_UNIX = 2_208_988_800

# Protocols whose records carry ports: TCP, UDP, DCCP, SCTP, UDP-Lite,
# as a lookup table indexed by protocol number.
_HAS_PORTS = np.zeros(256, dtype=bool)
_HAS_PORTS[[6, 17, 33, 132, 136]] = True

_VERSION_V5 = 5
_VERSION_V9 = 9
_VERSION_IPFIX = 10

_V5_HEADER = struct.Struct(">HHIIIIBBH")
_V5_RECORD = np.dtype(
    {
        "names": ["src", "dst", "packets", "bytes", "first", "last", "src_port", "dst_port", "tcp_flags", "proto"],
        "formats": [">u4", ">u4", ">u4", ">u4", ">u4", ">u4", ">u2", ">u2", "u1", "u1"],
        "offsets": [0, 4, 16, 20, 24, 28, 32, 34, 37, 38],
        "itemsize": 48,
    }
)
_V9_HEADER = struct.Struct(">HHIIII")
_IPFIX_HEADER = struct.Struct(">HHIII")
_SET_HEADER = struct.Struct(">HH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")

# Information elements (IANA numbers, shared by NetFlow v9 and IPFIX) that the
# decoder reads from data records, keyed by (PEN, element id).
# NOTE: Cisco ASA NSEL initiator/responder octets (231, 232) are not read, so
# records that carry only those get 0 bytes.
_FIELD_ROLES: dict[tuple[int, int], str] = {
    (0, 1): "bytes",
    (0, 2): "packets",
    (0, 85): "bytes_total",
    (0, 86): "packets_total",
    (0, 23): "out_bytes",
    (0, 24): "out_packets",
    (0, 4): "proto",
    (0, 6): "tcp_flags",
    (0, 7): "src_port",
    (0, 11): "dst_port",
    (0, 8): "src4",
    (0, 12): "dst4",
    (0, 27): "src6",
    (0, 28): "dst6",
    (0, 21): "last_uptime",
    (0, 22): "first_uptime",
    (0, 150): "start_s",
    (0, 151): "end_s",
    (0, 152): "start_ms",
    (0, 153): "end_ms",
    (0, 154): "start_us",
    (0, 155): "end_us",
    (0, 156): "start_ns",
    (0, 157): "end_ns",
    (0, 158): "start_delta_us",
    (0, 159): "end_delta_us",
    (0, 160): "init_ms",
    (0, 34): "sampling_interval",
    (0, 50): "sampler_interval",
    (0, 48): "sampler_id",
    (0, 305): "packet_interval",
    (0, 306): "packet_space",
    (REVERSE_PEN, 1): "reverse_bytes",
    (REVERSE_PEN, 2): "reverse_packets",
}

# Roles read as addresses: IPv4 (4 bytes) or IPv6 (16 bytes).
_ADDRESS_WIDTH = {"src4": 4, "dst4": 4, "src6": 16, "dst6": 16}

# Information elements read from options data records.
_OPTION_ROLES = {
    34: "sampling_interval",
    50: "sampler_interval",
    48: "sampler_id",
    302: "sampler_id",  # IPFIX selectorId
    305: "packet_interval",
    306: "packet_space",
    160: "init_ms",
}

# IPFIX variable-length marker (RFC 7011 section 7).
_VARIABLE = 65535

# sFlow v5 structure formats (enterprise 0).
_SFLOW_FLOW_SAMPLE = 1
_SFLOW_COUNTER_SAMPLE = 2
_SFLOW_EXPANDED_FLOW_SAMPLE = 3
_SFLOW_EXPANDED_COUNTER_SAMPLE = 4
_SFLOW_RAW_HEADER = 1
_SFLOW_SAMPLED_IPV4 = 3
_SFLOW_SAMPLED_IPV6 = 4

# Most VLAN tags and IPv6 extension headers walked in one sampled header.
_MAX_VLAN_TAGS = 4
_MAX_IPV6_EXTENSIONS = 8


@dataclass(frozen=True, slots=True)
class FlowProblem:
    """One decoding problem: where it was found and what went wrong."""

    exporter: str
    offset: int
    field: str
    message: str


@dataclass
class DecoderCounters:
    """Cumulative decoder counters.

    ``datagrams`` equals ``decoded_datagrams + malformed +
    unsupported_datagrams``. ``records`` is the number of rows returned.
    ``waiting_for_template`` is the number of data sets currently held.
    ``unsupported`` counts datagrams of versions that are not decoded
    (NetFlow v1, v7, v8, sFlow v2, v4) and sFlow samples and flow records of
    kinds that are not decoded.
    """

    datagrams: int = 0
    decoded_datagrams: int = 0
    records: int = 0
    malformed: int = 0
    waiting_for_template: int = 0
    undecodable: int = 0
    templates: int = 0
    template_replacements: int = 0
    template_withdrawals: int = 0
    exporter_resets: int = 0
    unsupported: int = 0
    unsupported_datagrams: int = 0
    options_records: int = 0
    non_flow_records: int = 0
    sflow_flow_samples: int = 0
    sflow_counter_samples: int = 0
    enterprise_fields: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Field:
    element: int
    length: int
    pen: int = 0


@dataclass
class _Template:
    """One NetFlow v9 or IPFIX template and the layout built from it once."""

    fields: tuple[_Field, ...]
    scope_count: int  # options templates: number of scope fields, else 0
    is_options: bool
    fixed_length: int | None  # record length, None with variable-length fields
    min_length: int
    dtype: np.dtype  # fields of interest at fixed offsets (see _build_template)
    roles: dict[str, tuple[str, int]]  # role -> (dtype field name, byte width)
    has_addresses: bool = field(init=False)  # records without any address are not flows

    def __post_init__(self) -> None:
        self.has_addresses = any(role in self.roles for role in _ADDRESS_WIDTH)


@dataclass(slots=True)
class _Header:
    """Message header values that the decoding of a data set uses."""

    version: int
    export_time: float  # epoch seconds
    uptime_ms: int  # NetFlow v9 sysUptime, else 0
    base: int  # byte offset of the datagram (or IPFIX file message) in its source


@dataclass
class _DomainState:
    templates: dict[int, _Template] = field(default_factory=dict)
    default_rate: int = 0
    sampler_rates: dict[int, int] = field(default_factory=dict)
    init_ms: int | None = None
    last_time: float | None = None
    last_sequence: int | None = None


@dataclass
class _Pending:
    key: tuple[str, int, int, int]  # exporter, version, domain, template id
    body: bytes
    header: _Header
    set_offset: int
    received: float


@dataclass(frozen=True, slots=True)
class _HeaderColumns:
    """Header values per record, for records decoded together from many messages."""

    version: int
    export_time: np.ndarray  # float64 epoch seconds
    uptime_ms: np.ndarray  # NetFlow v9 sysUptime, else 0

    @classmethod
    def repeat(cls, header: _Header, size: int) -> _HeaderColumns:
        return cls(header.version, np.full(size, header.export_time, dtype=np.float64), np.full(size, header.uptime_ms, dtype=np.int64))


# Bytes of deferred data sets of one template above which they are decoded at
# once, so the bytes held stay bounded on a long IPFIX file.
_GROUP_MAX_BYTES = 16 << 20

# Key of the one group of NetFlow v5 records in an _Output (other keys are
# id() values, which are never negative).
_V5_GROUP = -1


class _SetGroup:
    """Data sets of one template, or NetFlow v5 records, waiting to be decoded together."""

    __slots__ = ("template", "state", "version", "sets", "size")

    def __init__(self, template: _Template | None, state: _DomainState | None, version: int) -> None:
        self.template = template
        self.state = state
        self.version = version
        # Per set: record bytes, record count, export time (epoch seconds, or
        # milliseconds for NetFlow v5), sysUptime in ms, NetFlow v5 sampling
        # interval, position in arrival order, exporter code.
        self.sets: list[tuple[bytes, int, float, int, int, int, int]] = []
        self.size = 0


class _Output:
    """Flow records of one decode call, collected in arrival order.

    Data sets of fixed-length flow templates and NetFlow v5 records are
    deferred. The sets of each template, and all v5 records, are
    concatenated and decoded with one ``np.frombuffer`` when the table is
    built. A group is decoded earlier when an options record or an
    exporter restart is about to change the sampling state it depends on,
    or when it contains more than ``_GROUP_MAX_BYTES``. Each piece keeps its
    position in arrival order, so the table lists the records in the order
    that decoding each datagram alone would.
    """

    def __init__(self) -> None:
        # Decoded pieces: columns, position and exporter code per record.
        self.parts: list[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]] = []
        self.groups: dict[int, _SetGroup] = {}
        self.exporters: dict[str, int] = {}
        self.exporter_code = 0
        self.position = 0

    def set_exporter(self, exporter: str) -> None:
        code = self.exporters.get(exporter)
        if code is None:
            code = self.exporters[exporter] = len(self.exporters)
        self.exporter_code = code

    def add_columns(self, columns: dict[str, np.ndarray]) -> None:
        size = len(columns["proto"])
        self.parts.append((columns, np.full(size, self.position, dtype=np.int64), np.full(size, self.exporter_code, dtype=np.int32)))
        self.position += 1

    def add_set(self, body: bytes, count: int, template: _Template, state: _DomainState, header: _Header) -> None:
        key = id(template)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = _SetGroup(template, state, header.version)
        self._append(group, body, count, header.export_time, header.uptime_ms, 1)
        if group.size > _GROUP_MAX_BYTES:
            self._decode_group(key)

    def add_v5(self, body: bytes, count: int, uptime_ms: int, export_ms: float, rate: int) -> None:
        group = self.groups.get(_V5_GROUP)
        if group is None:
            group = self.groups[_V5_GROUP] = _SetGroup(None, None, _VERSION_V5)
        self._append(group, body, count, export_ms, uptime_ms, rate)
        if group.size > _GROUP_MAX_BYTES:
            self._decode_group(_V5_GROUP)

    def _append(self, group: _SetGroup, body: bytes, count: int, export_time: float, uptime_ms: int, rate: int) -> None:
        group.sets.append((body, count, export_time, uptime_ms, rate, self.position, self.exporter_code))
        group.size += len(body)
        self.position += 1

    def flush_state(self, state: _DomainState) -> None:
        """Decode the deferred sets that depend on ``state``, before it changes."""
        for key in [key for key, group in self.groups.items() if group.state is state]:
            self._decode_group(key)

    def _decode_group(self, key: int) -> None:
        group = self.groups.pop(key)
        bodies, counts, export_times, uptimes, rates, positions, exporters = zip(*group.sets)
        counts = np.array(counts, dtype=np.int64)
        total = int(counts.sum())
        data = b"".join(bodies)
        if group.template is None:
            rows = np.frombuffer(data, dtype=_V5_RECORD, count=total)
            columns = _v5_columns(
                rows,
                np.repeat(np.array(uptimes, dtype=np.int64), counts),
                np.repeat(np.array(export_times, dtype=np.float64), counts),
                np.repeat(np.array(rates, dtype=np.uint32), counts),
            )
        else:
            rows = np.frombuffer(data, dtype=group.template.dtype, count=total)
            header = _HeaderColumns(
                group.version,
                np.repeat(np.array(export_times, dtype=np.float64), counts),
                np.repeat(np.array(uptimes, dtype=np.int64), counts),
            )
            # A group contains only templates with addresses, so the columns are never None.
            columns = _flow_columns(rows, group.template, group.state, header)
        self.parts.append(
            (
                columns,
                np.repeat(np.array(positions, dtype=np.int64), counts),
                np.repeat(np.array(exporters, dtype=np.int32), counts),
            )
        )

    def table(self) -> pa.Table:
        """Decode what is deferred and return every record as one table, in arrival order."""
        for key in list(self.groups):
            self._decode_group(key)
        parts = [part for part in self.parts if len(part[1])]
        self.parts = []
        if not parts:
            return empty_records()
        if len(parts) == 1:
            columns, positions, exporters = parts[0]
        else:
            columns = {name: np.concatenate([part[0][name] for part in parts]) for name in parts[0][0]}
            positions = np.concatenate([part[1] for part in parts])
            exporters = np.concatenate([part[2] for part in parts])
            if np.any(positions[1:] < positions[:-1]):
                order = np.argsort(positions, kind="stable")
                columns = {name: values[order] for name, values in columns.items()}
                exporters = exporters[order]
        if len(self.exporters) == 1:
            exporter: str | pa.Array = next(iter(self.exporters))
        else:
            exporter = pa.array(list(self.exporters), type=pa.string()).take(pa.array(exporters))
        return records_from_arrays(exporter=exporter, **columns)


class _Malformed(Exception):
    """A structural error that ends the decoding of one datagram."""

    def __init__(self, offset: int, field_name: str, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.field_name = field_name
        self.message = message


class FlowDecoder:
    """Stateful decoder of NetFlow v5/v9, IPFIX and sFlow v5 datagrams."""

    def __init__(
        self,
        *,
        pending_max_sets: int = 10_000,
        pending_max_age_s: float = 30.0,
        pending_max_bytes: int = 64 << 20,
        max_problems: int = 1000,
    ) -> None:
        self.pending_max_sets = pending_max_sets
        self.pending_max_age_s = pending_max_age_s
        self.pending_max_bytes = pending_max_bytes
        self.counters = DecoderCounters()
        self.problems: deque[FlowProblem] = deque(maxlen=max_problems)
        # Problems found since the decoder was made, including those the bounded deque let go.
        self.problems_total = 0
        self._domains: dict[tuple[str, int, int], _DomainState] = {}
        self._pending: deque[_Pending] = deque()
        self._pending_keys: dict[tuple[str, int, int, int], int] = {}
        self._pending_bytes = 0

    # -- public API ---------------------------------------------------------

    def decode(self, data: bytes, exporter: str, now: float) -> pa.Table:
        """Decode one datagram from ``exporter`` received at ``now`` (epoch s).

        Returns the flow records, possibly none. Data sets held earlier and
        completed by a template in this datagram are returned too.
        """
        self.expire(now)
        output = _Output()
        output.set_exporter(exporter)
        self._decode_datagram(bytes(data), exporter, now, 0, output)
        return self._table(output)

    def decode_many(self, items: Iterable[tuple[bytes, str, float]]) -> pa.Table:
        """Decode datagrams given as ``(data, exporter, now)`` in arrival order, into one table.

        The result equals the concatenation of :meth:`decode` called on
        each item in turn, rows in the same order, with the same counters,
        templates and held data sets afterwards. It is faster for many
        datagrams, because the data sets of each template (and all NetFlow
        v5 records) are decoded together with one ``np.frombuffer`` over
        their concatenated bytes, and one table is built for the batch.
        """
        if type(self).decode is not FlowDecoder.decode:
            # A subclass that overrides decode() gets it called per datagram,
            # so the result still equals the concatenation of its decode().
            tables = [self.decode(data, exporter, now) for data, exporter, now in items]
            tables = [table for table in tables if table.num_rows]
            return pa.concat_tables(tables) if tables else empty_records()
        output = _Output()
        for data, exporter, now in items:
            self.expire(now)
            output.set_exporter(exporter)
            self._decode_datagram(bytes(data), exporter, now, 0, output)
        return self._table(output)

    def expire(self, now: float) -> None:
        """Drop held data sets older than ``pending_max_age_s`` (undecodable)."""
        limit = now - self.pending_max_age_s
        while self._pending and self._pending[0].received < limit:
            self._drop_pending(self._pending.popleft())

    def pending_sets(self) -> int:
        """Return the number of data sets held for a template."""
        return len(self._pending)

    def pending_bytes(self) -> int:
        """Return the bytes of data sets held for a template."""
        return self._pending_bytes

    # -- datagrams ----------------------------------------------------------

    def _decode_datagram(
        self, data: bytes, exporter: str, now: float, base: int, output: _Output
    ) -> None:
        counters = self.counters
        counters.datagrams += 1
        try:
            if len(data) < 4:
                raise _Malformed(base, "version", f"datagram of {len(data)} bytes is too short for a flow export header")
            version = _U16.unpack_from(data, 0)[0]
            if version == _VERSION_V5:
                self._decode_v5(data, exporter, base, output)
            elif version == _VERSION_V9:
                self._decode_v9(data, exporter, now, base, output)
            elif version == _VERSION_IPFIX:
                self._decode_ipfix_messages(data, exporter, now, base, output)
            elif version == 0 and _U32.unpack_from(data, 0)[0] == 5:
                self._decode_sflow(data, exporter, now, base, output)
            else:
                counters.unsupported += 1
                counters.unsupported_datagrams += 1
                first = _U32.unpack_from(data, 0)[0] if version == 0 else version
                self._problem(
                    exporter, base, "version",
                    f"not a supported flow export: version field {first} (0x{first:x}); expected NetFlow v5, v9, IPFIX or sFlow v5",
                )
                return
        except _Malformed as error:
            counters.malformed += 1
            self._problem(exporter, error.offset, error.field_name, error.message)
            return
        except (struct.error, ValueError, IndexError, OverflowError) as error:
            # NOTE: a bounds check missed above lands here. The datagram still
            # counts as malformed, with the error text as the message.
            counters.malformed += 1
            self._problem(exporter, base, "datagram", f"invalid datagram: {error}")
            return
        counters.decoded_datagrams += 1

    def _problem(self, exporter: str, offset: int, field_name: str, message: str) -> None:
        self.problems.append(FlowProblem(exporter, offset, field_name, message))
        self.problems_total += 1

    def _table(self, output: _Output) -> pa.Table:
        try:
            table = output.table()
        except (ValueError, IndexError, OverflowError) as error:
            # NOTE: no input is known to get here. The datagrams stay counted
            # as decoded, and the records of the whole call are lost.
            exporters = ", ".join(output.exporters)
            self._problem(exporters, 0, "data set", f"decoding the data sets of this call failed: {error}; their records are dropped")
            return empty_records()
        self.counters.records += table.num_rows
        return table

    # -- NetFlow v5 ---------------------------------------------------------

    def _decode_v5(self, data: bytes, exporter: str, base: int, output: _Output) -> None:
        if len(data) < _V5_HEADER.size:
            raise _Malformed(base, "header", f"NetFlow v5 header needs {_V5_HEADER.size} bytes, datagram has {len(data)}")
        _, count, uptime, secs, nsecs, _, _, _, sampling_field = _V5_HEADER.unpack_from(data, 0)
        available = (len(data) - _V5_HEADER.size) // _V5_RECORD.itemsize
        rows = min(count, available)
        if rows:
            # The low 14 bits are the interval, the top 2 bits the sampling mode.
            rate = max(sampling_field & 0x3FFF, 1)
            export_ms = secs * 1000.0 + nsecs / 1e6
            body = data[_V5_HEADER.size : _V5_HEADER.size + rows * _V5_RECORD.itemsize]
            output.add_v5(body, rows, uptime, export_ms, rate)
        if count > available:
            raise _Malformed(
                base + _V5_HEADER.size + available * 48,
                "count",
                f"NetFlow v5 header counts {count} records but the datagram holds {available}",
            )

    # -- NetFlow v9 ---------------------------------------------------------

    def _decode_v9(self, data: bytes, exporter: str, now: float, base: int, output: _Output) -> None:
        if len(data) < _V9_HEADER.size:
            raise _Malformed(base, "header", f"NetFlow v9 header needs {_V9_HEADER.size} bytes, datagram has {len(data)}")
        _, _, uptime, secs, sequence, source_id = _V9_HEADER.unpack_from(data, 0)
        key = (exporter, _VERSION_V9, source_id)
        state = self._domain(key)
        self._check_reset(state, key, uptime / 1000.0, sequence, base, output)
        header = _Header(_VERSION_V9, float(secs), uptime, base)
        self._decode_sets(data, _V9_HEADER.size, len(data), key, state, header, now, output)

    # -- IPFIX --------------------------------------------------------------

    def _decode_ipfix_messages(
        self, data: bytes, exporter: str, now: float, base: int, output: _Output
    ) -> None:
        # One message per UDP datagram as a rule; further messages in the same
        # buffer (as over TCP or SCTP) are decoded too.
        offset = 0
        while offset < len(data):
            end = self._decode_ipfix_message(data, offset, exporter, now, base, output)
            offset = end

    def _decode_ipfix_message(
        self, data: bytes, offset: int, exporter: str, now: float, base: int, output: _Output
    ) -> int:
        if len(data) - offset < _IPFIX_HEADER.size:
            raise _Malformed(base + offset, "header", f"IPFIX message header needs 16 bytes, {len(data) - offset} left")
        version, length, export_time, sequence, domain = _IPFIX_HEADER.unpack_from(data, offset)
        if version != _VERSION_IPFIX:
            raise _Malformed(base + offset, "version", f"expected IPFIX version 10 after the previous message, found {version}")
        if length < _IPFIX_HEADER.size or offset + length > len(data):
            raise _Malformed(
                base + offset + 2,
                "length",
                f"IPFIX message length {length} does not fit the {len(data) - offset} bytes left",
            )
        key = (exporter, _VERSION_IPFIX, domain)
        state = self._domain(key)
        self._check_reset(state, key, float(export_time), sequence, base + offset, output)
        header = _Header(_VERSION_IPFIX, float(export_time), 0, base)
        self._decode_sets(data, offset + _IPFIX_HEADER.size, offset + length, key, state, header, now, output)
        return offset + length

    # -- templates and sets shared by v9 and IPFIX ---------------------------

    def _domain(self, key: tuple[str, int, int]) -> _DomainState:
        state = self._domains.get(key)
        if state is None:
            state = self._domains[key] = _DomainState()
        return state

    def _check_reset(
        self,
        state: _DomainState,
        key: tuple[str, int, int],
        time_s: float,
        sequence: int,
        offset: int,
        output: _Output,
    ) -> None:
        restarted = False
        if state.last_time is not None and time_s < state.last_time - RESET_TOLERANCE_S:
            restarted = True
        if state.last_sequence is not None:
            step = (sequence - state.last_sequence + (1 << 31)) % (1 << 32) - (1 << 31)
            if step < -RESET_SEQUENCE_GAP:
                restarted = True
        if restarted:
            self.counters.exporter_resets += 1
            exporter, version, domain = key
            name = "sysUptime" if version == _VERSION_V9 else "export time"
            self._problem(
                exporter,
                offset,
                "header",
                f"{name} or sequence went back (domain {domain}): exporter restarted, its templates are reset",
            )
            log.info("flow exporter %s domain %d restarted; %d templates reset", exporter, domain, len(state.templates))
            output.flush_state(state)
            state.templates.clear()
            state.sampler_rates.clear()
            state.default_rate = 0
            state.init_ms = None
        state.last_time = time_s
        state.last_sequence = sequence

    def _decode_sets(
        self,
        data: bytes,
        offset: int,
        end: int,
        key: tuple[str, int, int],
        state: _DomainState,
        header: _Header,
        now: float,
        output: _Output,
    ) -> None:
        base = header.base
        while offset < end:
            if end - offset < 4:
                # NetFlow v9 allows padding after the last flowset.
                if header.version == _VERSION_V9 and not any(data[offset:end]):
                    return
                raise _Malformed(base + offset, "set header", f"{end - offset} bytes left after the last set, too short for a set header")
            set_id, set_length = _SET_HEADER.unpack_from(data, offset)
            if set_length < 4 or offset + set_length > end:
                raise _Malformed(
                    base + offset + 2,
                    "set length",
                    f"set {set_id} length {set_length} does not fit the {end - offset} bytes left",
                )
            body_start = offset + 4
            body_end = offset + set_length
            set_offset = base + offset
            if header.version == _VERSION_V9:
                if set_id == 0:
                    self._read_templates(data, body_start, body_end, key, state, header, now, output, options=False)
                elif set_id == 1:
                    self._read_v9_options_templates(data, body_start, body_end, key, state, header, now, output)
                elif set_id >= 256:
                    self._data_set(data[body_start:body_end], set_id, key, state, header, set_offset, now, output)
            else:
                if set_id == 2:
                    self._read_templates(data, body_start, body_end, key, state, header, now, output, options=False)
                elif set_id == 3:
                    self._read_templates(data, body_start, body_end, key, state, header, now, output, options=True)
                elif set_id >= 256:
                    self._data_set(data[body_start:body_end], set_id, key, state, header, set_offset, now, output)
            # Set ids 4 to 255 are reserved (RFC 7011) and skipped.
            offset = body_end

    def _read_templates(
        self,
        data: bytes,
        offset: int,
        end: int,
        key: tuple[str, int, int],
        state: _DomainState,
        header: _Header,
        now: float,
        output: _Output,
        *,
        options: bool,
    ) -> None:
        ipfix = header.version == _VERSION_IPFIX
        record_header = 6 if options else 4
        while end - offset >= record_header:
            template_id, field_count = _SET_HEADER.unpack_from(data, offset)
            scope_count = _U16.unpack_from(data, offset + 4)[0] if options else 0
            if ipfix and field_count == 0:
                self._withdraw(template_id, state, header, offset, key, options)
                offset += 4
                continue
            if template_id == 0 and field_count == 0 and not ipfix:
                # NetFlow v9 padding at the end of a template flowset.
                return
            if template_id < 256:
                raise _Malformed(header.base + offset, "template id", f"template id {template_id} is below 256")
            if options and (scope_count == 0 or scope_count > field_count):
                raise _Malformed(
                    header.base + offset + 4,
                    "scope field count",
                    f"options template {template_id} has scope field count {scope_count} of {field_count} fields",
                )
            offset += record_header
            fields = []
            for _ in range(field_count):
                if end - offset < 4:
                    raise _Malformed(header.base + offset, "field specifier", f"template {template_id} is cut off after {len(fields)} of {field_count} fields")
                element, length = _SET_HEADER.unpack_from(data, offset)
                offset += 4
                pen = 0
                if ipfix and element & 0x8000:
                    if end - offset < 4:
                        raise _Malformed(header.base + offset, "enterprise number", f"template {template_id} is cut off in an enterprise number")
                    pen = _U32.unpack_from(data, offset)[0]
                    element &= 0x7FFF
                    offset += 4
                fields.append(_Field(element, length, pen))
            self._store_template(template_id, tuple(fields), scope_count, options, key, state, header, now, output)

    def _read_v9_options_templates(
        self,
        data: bytes,
        offset: int,
        end: int,
        key: tuple[str, int, int],
        state: _DomainState,
        header: _Header,
        now: float,
        output: _Output,
    ) -> None:
        while end - offset >= 6:
            template_id, scope_length, option_length = struct.unpack_from(">HHH", data, offset)
            if template_id == 0 and scope_length == 0 and option_length == 0:
                return  # padding
            if template_id < 256:
                raise _Malformed(header.base + offset, "template id", f"options template id {template_id} is below 256")
            if scope_length % 4 or option_length % 4 or scope_length == 0:
                raise _Malformed(
                    header.base + offset + 2,
                    "option scope length",
                    f"options template {template_id}: scope length {scope_length} and option length {option_length} must be non-zero multiples of 4",
                )
            offset += 6
            if end - offset < scope_length + option_length:
                raise _Malformed(header.base + offset, "option length", f"options template {template_id} is cut off")
            fields = []
            for position in range(offset, offset + scope_length + option_length, 4):
                element, length = _SET_HEADER.unpack_from(data, position)
                fields.append(_Field(element, length))
            offset += scope_length + option_length
            self._store_template(template_id, tuple(fields), scope_length // 4, True, key, state, header, now, output)

    def _withdraw(
        self, template_id: int, state: _DomainState, header: _Header, offset: int, key: tuple[str, int, int], options: bool
    ) -> None:
        self.counters.template_withdrawals += 1
        if template_id in (2, 3):
            # Withdraw all data templates (id 2) or options templates (id 3).
            for known in [tid for tid, t in state.templates.items() if t.is_options == (template_id == 3)]:
                del state.templates[known]
        elif template_id >= 256:
            state.templates.pop(template_id, None)
        else:
            raise _Malformed(header.base + offset, "template id", f"template withdrawal for reserved id {template_id}")

    def _store_template(
        self,
        template_id: int,
        fields: tuple[_Field, ...],
        scope_count: int,
        options: bool,
        key: tuple[str, int, int],
        state: _DomainState,
        header: _Header,
        now: float,
        output: _Output,
    ) -> None:
        old = state.templates.get(template_id)
        if old is not None and old.fields == fields and old.scope_count == scope_count and old.is_options == options:
            return
        template = _build_template(fields, scope_count, options, header.version)
        if template.min_length == 0:
            raise _Malformed(header.base, "field length", f"template {template_id} has records of length 0")
        enterprise = self.counters.enterprise_fields
        for spec in fields:
            if spec.pen:
                enterprise[spec.pen] = enterprise.get(spec.pen, 0) + 1
        state.templates[template_id] = template
        self.counters.templates += 1
        if old is not None:
            self.counters.template_replacements += 1
        if self._pending_keys.get((*key, template_id)):
            self._release_pending((*key, template_id), state, now, output)

    # -- data sets ----------------------------------------------------------

    def _data_set(
        self,
        body: bytes,
        template_id: int,
        key: tuple[str, int, int],
        state: _DomainState,
        header: _Header,
        set_offset: int,
        now: float,
        output: _Output,
    ) -> None:
        template = state.templates.get(template_id)
        if template is None:
            self._hold(_Pending((*key, template_id), body, header, set_offset, now))
            return
        self._decode_data(body, template, state, header, key[0], set_offset, output)

    def _decode_data(
        self,
        body: bytes,
        template: _Template,
        state: _DomainState,
        header: _Header,
        exporter: str,
        set_offset: int,
        output: _Output,
    ) -> None:
        fixed_length = template.fixed_length
        if fixed_length is not None and not template.is_options:
            count = len(body) // fixed_length
            if count == 0:
                return
            if not template.has_addresses:
                self.counters.non_flow_records += count
                return
            # Decoded later with the other sets of this template (see _Output).
            if len(body) != count * fixed_length:
                body = body[: count * fixed_length]
            output.add_set(body, count, template, state, header)
            return
        if fixed_length is not None:
            rows = np.frombuffer(body, dtype=template.dtype, count=len(body) // fixed_length)
        else:
            rows = _variable_rows(body, template, set_offset)
        if rows.size == 0:
            return
        if template.is_options:
            self.counters.options_records += rows.size
            self._apply_options(rows, template, state, output)
            return
        columns = _flow_columns(rows, template, state, _HeaderColumns.repeat(header, rows.size))
        if columns is None:
            self.counters.non_flow_records += rows.size
            return
        output.add_columns(columns)

    def _apply_options(self, rows: np.ndarray, template: _Template, state: _DomainState, output: _Output) -> None:
        # Sets deferred so far keep the sampling rates in force when they arrived.
        output.flush_state(state)
        for index in range(rows.size):
            values = {
                role: int(_uint_column(rows[index : index + 1], name, width)[0])
                for role, (name, width) in template.roles.items()
            }
            rate = _rate_from(values)
            if "init_ms" in values:
                state.init_ms = values["init_ms"]
            if rate:
                if "sampler_id" in values:
                    state.sampler_rates[values["sampler_id"]] = rate
                else:
                    state.default_rate = rate

    # -- held data sets -----------------------------------------------------

    def _hold(self, pending: _Pending) -> None:
        size = len(pending.body)
        while self._pending and (
            len(self._pending) >= self.pending_max_sets or self._pending_bytes + size > self.pending_max_bytes
        ):
            self._drop_pending(self._pending.popleft())
        if len(self._pending) >= self.pending_max_sets or size > self.pending_max_bytes:
            self.counters.undecodable += 1
            return
        self._pending.append(pending)
        self._pending_keys[pending.key] = self._pending_keys.get(pending.key, 0) + 1
        self._pending_bytes += size
        self.counters.waiting_for_template = len(self._pending)

    def _forget_pending(self, pending: _Pending) -> None:
        left = self._pending_keys[pending.key] - 1
        if left:
            self._pending_keys[pending.key] = left
        else:
            del self._pending_keys[pending.key]
        self._pending_bytes -= len(pending.body)
        self.counters.waiting_for_template = len(self._pending)

    def _drop_pending(self, pending: _Pending) -> None:
        self._forget_pending(pending)
        self.counters.undecodable += 1
        self._problem(
            pending.key[0],
            pending.set_offset,
            "template id",
            f"no template {pending.key[3]} (domain {pending.key[2]}) arrived for a held data set; the set is dropped",
        )

    def _release_pending(
        self, key: tuple[str, int, int, int], state: _DomainState, now: float, output: _Output
    ) -> None:
        matched = [entry for entry in self._pending if entry.key == key]
        self._pending = deque(entry for entry in self._pending if entry.key != key)
        template = state.templates[key[3]]
        for entry in matched:
            self._forget_pending(entry)
            self._decode_data(entry.body, template, state, entry.header, key[0], entry.set_offset, output)

    # -- sFlow v5 -----------------------------------------------------------

    def _decode_sflow(self, data: bytes, exporter: str, now: float, base: int, output: _Output) -> None:
        reader = _Reader(data, base)
        reader.u32("version")
        address_type = reader.u32("agent address type")
        if address_type == 1:
            reader.skip(4, "agent address")
        elif address_type == 2:
            reader.skip(16, "agent address")
        else:
            raise _Malformed(base + 4, "agent address type", f"sFlow agent address type {address_type} is neither 1 (IPv4) nor 2 (IPv6)")
        reader.skip(12, "sub-agent id, sequence, uptime")
        count_offset = base + reader.position
        sample_count = reader.u32("number of samples")
        records: list[tuple] = []
        for _ in range(min(sample_count, len(data) // 8)):
            sample_format = reader.u32("sample format")
            length = reader.u32("sample length")
            start = reader.position
            body = reader.take(length, "sample data")
            enterprise, kind = sample_format >> 12, sample_format & 0xFFF
            if enterprise == 0 and kind in (_SFLOW_FLOW_SAMPLE, _SFLOW_EXPANDED_FLOW_SAMPLE):
                self.counters.sflow_flow_samples += 1
                record = self._sflow_flow_sample(body, kind == _SFLOW_EXPANDED_FLOW_SAMPLE, base + start)
                if record is not None:
                    records.append(record)
            elif enterprise == 0 and kind in (_SFLOW_COUNTER_SAMPLE, _SFLOW_EXPANDED_COUNTER_SAMPLE):
                self.counters.sflow_counter_samples += 1
            else:
                self.counters.unsupported += 1
        if sample_count > len(data) // 8:
            raise _Malformed(count_offset, "number of samples", f"sFlow datagram claims {sample_count} samples in {len(data)} bytes")
        if records:
            output.add_columns(_sflow_columns(records, now))

    def _sflow_flow_sample(self, body: bytes, expanded: bool, base: int) -> tuple | None:
        reader = _Reader(body, base)
        if expanded:
            reader.skip(12, "sequence and source id")
        else:
            reader.skip(8, "sequence and source id")
        rate = reader.u32("sampling rate") or 1
        reader.skip(8 + (16 if expanded else 8), "sample pool, drops, interfaces")
        record_count = reader.u32("number of flow records")
        found = None
        for _ in range(min(record_count, len(body) // 8)):
            record_format = reader.u32("flow record format")
            length = reader.u32("flow record length")
            data = reader.take(length, "flow record data")
            enterprise, kind = record_format >> 12, record_format & 0xFFF
            if found is not None or enterprise != 0:
                continue
            if kind == _SFLOW_RAW_HEADER:
                found = _sflow_raw_header(data, rate, reader.position - length)
            elif kind in (_SFLOW_SAMPLED_IPV4, _SFLOW_SAMPLED_IPV6):
                found = _sflow_sampled_ip(data, rate, kind == _SFLOW_SAMPLED_IPV6, reader.position - length)
        if record_count > len(body) // 8:
            raise _Malformed(base, "number of flow records", f"sFlow flow sample claims {record_count} records in {len(body)} bytes")
        if found is None:
            # A sample without an IP packet header (ARP, LLDP, or only
            # extended records) is no flow between two hosts.
            self.counters.non_flow_records += 1
        return found


# -- IPFIX files ---------------------------------------------------------------


def read_ipfix_file(path: str | Path, decoder: FlowDecoder | None = None) -> tuple[pa.Table, list[FlowProblem], DecoderCounters]:
    """Read an IPFIX file (RFC 5655): IPFIX messages back to back.

    The exporter of every record is the file name. Held data sets whose
    template never arrives are counted as undecodable at the end. A message
    header that does not fit ends the reading, with a problem at its offset,
    and the records before it are kept.
    """
    path = Path(path)
    decoder = decoder or FlowDecoder()
    exporter = path.name
    output = _Output()
    output.set_exporter(exporter)
    with path.open("rb") as handle:
        size = path.stat().st_size
        if size == 0:
            return empty_records(), [], decoder.counters
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            offset = 0
            messages = 0
            while offset < size:
                if size - offset < _IPFIX_HEADER.size:
                    decoder._problem(exporter, offset, "header", f"{size - offset} bytes at the end of the file are too short for an IPFIX message header")
                    decoder.counters.malformed += 1
                    break
                version, length, export_time, _, _ = _IPFIX_HEADER.unpack_from(view, offset)
                if version == _VERSION_IPFIX and length >= _IPFIX_HEADER.size and offset + length > size:
                    decoder._problem(
                        exporter,
                        offset,
                        "length",
                        f"the last IPFIX message is cut off: its header declares {length} bytes but the file ends "
                        f"{size - offset} bytes after it starts; the {messages} messages before it are kept",
                    )
                    decoder.counters.malformed += 1
                    break
                if version != _VERSION_IPFIX or length < _IPFIX_HEADER.size:
                    decoder._problem(
                        exporter,
                        offset,
                        "version" if version != _VERSION_IPFIX else "length",
                        f"no valid IPFIX message header (version {version}, length {length}); the rest of the file is skipped",
                    )
                    decoder.counters.malformed += 1
                    break
                decoder.expire(float(export_time))
                decoder._decode_datagram(view[offset : offset + length], exporter, float(export_time), offset, output)
                offset += length
                messages += 1
    decoder.expire(math.inf)
    table = decoder._table(output)
    return table, list(decoder.problems), decoder.counters


# -- helpers: templates ----------------------------------------------------------


def _build_template(fields: tuple[_Field, ...], scope_count: int, options: bool, version: int) -> _Template:
    """Build the structured dtype of a template's fields of interest, once.

    Fixed-length templates get the fields' real offsets and the record length
    as itemsize, so ``np.frombuffer`` reads the set directly. Templates with
    variable-length fields get a packed dtype of the same fields, filled by
    :func:`_variable_rows`.
    """
    roles_at: list[tuple[str, int, int]] = []  # role, field index, width
    fixed = all(spec.length != _VARIABLE for spec in fields)
    min_length = sum(1 if spec.length == _VARIABLE else spec.length for spec in fields)
    seen: set[str] = set()
    for index, spec in enumerate(fields):
        if options:
            if version == _VERSION_V9 and index < scope_count:
                continue  # v9 scope field types are scope kinds, not elements
            role = _OPTION_ROLES.get(spec.element) if spec.pen == 0 else None
        else:
            role = _FIELD_ROLES.get((spec.pen, spec.element))
        if role is None or role in seen:
            continue
        width = _ADDRESS_WIDTH.get(role)
        if width is not None and spec.length != width:
            continue  # an address of unexpected length is not read
        if width is None and spec.length != _VARIABLE and spec.length == 0:
            continue
        seen.add(role)
        roles_at.append((role, index, width or spec.length))

    names: list[str] = []
    formats: list[Any] = []
    offsets: list[int] = []
    roles: dict[str, tuple[str, int]] = {}
    if fixed:
        starts = np.cumsum([0] + [spec.length for spec in fields])
        itemsize = int(starts[-1])
        for role, index, width in roles_at:
            name = f"f{index}"
            names.append(name)
            formats.append(_field_format(width))
            offsets.append(int(starts[index]))
            roles[role] = (name, width)
        dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": max(itemsize, 1)})
        return _Template(fields, scope_count, options, itemsize, min_length, dtype, roles)

    # Variable-length fields of interest are read right-aligned into 8 bytes.
    position = 0
    for role, index, width in roles_at:
        width = 8 if width == _VARIABLE else width
        name = f"f{index}"
        names.append(name)
        formats.append(_field_format(width))
        offsets.append(position)
        roles[role] = (name, width)
        position += width
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": max(position, 1)})
    return _Template(fields, scope_count, options, None, min_length, dtype, roles)


def _field_format(width: int) -> Any:
    if width in (1, 2, 4, 8):
        return f">u{width}"
    return ("u1", (width,))


def _variable_rows(body: bytes, template: _Template, set_offset: int) -> np.ndarray:
    """Walk records with variable-length fields into the template's packed dtype.

    Stops at the first record that does not fit the set: the rest is padding
    or a truncated record, and the records before it are kept.
    """
    fields = template.fields
    slots = {int(name[1:]): (name, width) for name, width in template.roles.values()}
    out = bytearray()
    offset = 0
    size = len(body)
    rows = 0
    # Each record takes at least min_length bytes, which bounds the loop.
    while size - offset >= template.min_length:
        row = bytearray(template.dtype.itemsize)
        position = offset
        complete = True
        for index, spec in enumerate(fields):
            length = spec.length
            if length == _VARIABLE:
                if position >= size:
                    complete = False
                    break
                length = body[position]
                position += 1
                if length == 255:
                    if position + 2 > size:
                        complete = False
                        break
                    length = _U16.unpack_from(body, position)[0]
                    position += 2
            if position + length > size:
                complete = False
                break
            slot = slots.get(index)
            if slot is not None:
                _, width = slot
                start = template.dtype.fields[slot[0]][1]
                value = body[position : position + length]
                if spec.length == _VARIABLE:
                    value = value[-width:]
                    row[start + width - len(value) : start + width] = value
                else:
                    row[start : start + width] = value
            position += length
        if not complete or position == offset:
            break
        out += row
        rows += 1
        offset = position
    return np.frombuffer(bytes(out), dtype=template.dtype, count=rows)


# -- helpers: columns ------------------------------------------------------------


def _uint_column(rows: np.ndarray, name: str, width: int) -> np.ndarray:
    """Read a big-endian unsigned field of any width as ``uint64``."""
    values = rows[name]
    if width in (1, 2, 4, 8):
        return values.astype(np.uint64)
    matrix = values.reshape(rows.size, width)[:, -8:].astype(np.uint64)
    out = np.zeros(rows.size, dtype=np.uint64)
    for column in range(matrix.shape[1]):
        out = (out << np.uint64(8)) | matrix[:, column]
    return out


def _rate_from(values: dict[str, int]) -> int:
    for role in ("sampling_interval", "sampler_interval"):
        if values.get(role):
            return min(values[role], 0xFFFFFFFF)
    interval = values.get("packet_interval")
    if interval:
        return min((interval + values.get("packet_space", 0)) // interval, 0xFFFFFFFF)
    return 0


def _flow_columns(rows: np.ndarray, template: _Template, state: _DomainState, header: _HeaderColumns) -> dict[str, Any] | None:
    roles = template.roles
    size = rows.size

    def column(role: str) -> np.ndarray | None:
        slot = roles.get(role)
        return None if slot is None else _uint_column(rows, slot[0], slot[1])

    src, dst = _addresses(rows, roles)
    if src is None:
        return None

    zeros = np.zeros(size, dtype=np.uint64)
    bytes_ = _first_present(column, ("bytes", "bytes_total", "out_bytes"), zeros)
    packets = _first_present(column, ("packets", "packets_total", "out_packets"), zeros)
    reverse_bytes = column("reverse_bytes")
    if reverse_bytes is not None:
        bytes_ = bytes_ + reverse_bytes
    reverse_packets = column("reverse_packets")
    if reverse_packets is not None:
        packets = packets + reverse_packets

    start, end = _times(column, header, state, size)
    return _base_columns(
        src=src,
        dst=dst,
        proto=_first_present(column, ("proto",), zeros),
        src_port=_first_present(column, ("src_port",), zeros),
        dst_port=_first_present(column, ("dst_port",), zeros),
        tcp_flags=_first_present(column, ("tcp_flags",), zeros) & np.uint64(0xFF),
        bytes_=bytes_,
        packets=packets,
        start=start,
        end=end,
        sampling=_sampling(column, state, size),
    )


def _first_present(column: Any, roles: tuple[str, ...], default: np.ndarray) -> np.ndarray:
    for role in roles:
        values = column(role)
        if values is not None:
            return values
    return default


def _addresses(rows: np.ndarray, roles: dict[str, tuple[str, int]]) -> tuple[np.ndarray | None, np.ndarray | None]:
    size = rows.size

    def v4(role: str) -> np.ndarray | None:
        slot = roles.get(role)
        return None if slot is None else rows[slot[0]].astype(np.uint32)

    def v6(role: str) -> np.ndarray | None:
        slot = roles.get(role)
        return None if slot is None else np.ascontiguousarray(rows[slot[0]]).reshape(size, 16)

    src4, dst4, src6, dst6 = v4("src4"), v4("dst4"), v6("src6"), v6("dst6")
    if src4 is None and dst4 is None and src6 is None and dst6 is None:
        return None, None
    zero4 = np.zeros(size, dtype=np.uint32)
    zero6 = np.zeros((size, 16), dtype=np.uint8)
    has_v4 = src4 is not None or dst4 is not None
    has_v6 = src6 is not None or dst6 is not None
    src4_mapped = ipv4_to_mapped(src4 if src4 is not None else zero4)
    dst4_mapped = ipv4_to_mapped(dst4 if dst4 is not None else zero4)
    if not has_v6:
        return src4_mapped, dst4_mapped
    src6 = src6 if src6 is not None else zero6
    dst6 = dst6 if dst6 is not None else zero6
    if not has_v4:
        return src6, dst6
    # Templates with both families fill one and leave the other zero.
    src4_values = src4 if src4 is not None else zero4
    dst4_values = dst4 if dst4 is not None else zero4
    use_v6 = (src4_values == 0) & (dst4_values == 0)
    src = np.where(use_v6[:, None], src6, src4_mapped)
    dst = np.where(use_v6[:, None], dst6, dst4_mapped)
    return src, dst


def _times(column: Any, header: _HeaderColumns, state: _DomainState, size: int) -> tuple[np.ndarray, np.ndarray]:
    export = header.export_time
    results = []
    for side in ("start", "end"):
        value = None
        ns = column(f"{side}_ns")
        us = column(f"{side}_us")
        if ns is not None or us is not None:
            raw = ns if ns is not None else us
            value = (raw >> np.uint64(32)).astype(np.float64) - _NTP_TO_UNIX + (
                raw & np.uint64(0xFFFFFFFF)
            ).astype(np.float64) / 4294967296.0
        if value is None:
            ms = column(f"{side}_ms")
            if ms is not None:
                value = ms.astype(np.float64) / 1000.0
        if value is None:
            seconds = column(f"{side}_s")
            if seconds is not None:
                value = seconds.astype(np.float64)
        if value is None:
            uptime = column("first_uptime" if side == "start" else "last_uptime")
            if uptime is not None:
                if header.version == _VERSION_V9:
                    value = _uptime_to_epoch(uptime, header.uptime_ms, header.export_time * 1000.0)
                else:
                    init = column("init_ms")
                    if init is not None:
                        value = (init + uptime).astype(np.float64) / 1000.0
                    elif state.init_ms is not None:
                        value = (uptime.astype(np.float64) + state.init_ms) / 1000.0
        if value is None:
            delta = column(f"{side}_delta_us")
            if delta is not None:
                value = export - delta.astype(np.float64) / 1e6
        results.append(export if value is None else value)
    start, end = results
    return start, end


def _uptime_to_epoch(values: np.ndarray, uptime_ms: int | np.ndarray, export_ms: float | np.ndarray) -> np.ndarray:
    """Convert sysUptime milliseconds to epoch seconds.

    The difference to the header's sysUptime is taken as a signed 32-bit
    number, so a counter that wrapped (every 49.7 days) and a record a little
    after the header both come out right.
    """
    ago = (np.asarray(uptime_ms).astype(np.uint32) - values.astype(np.uint32)).astype(np.int32)
    return (export_ms - ago.astype(np.float64)) / 1000.0


def _v5_columns(rows: np.ndarray, uptime_ms: np.ndarray, export_ms: np.ndarray, rate: np.ndarray) -> dict[str, Any]:
    """Return the columns of NetFlow v5 records, with their headers' values given per record."""
    return _base_columns(
        src=ipv4_to_mapped(rows["src"]),
        dst=ipv4_to_mapped(rows["dst"]),
        proto=rows["proto"],
        src_port=rows["src_port"],
        dst_port=rows["dst_port"],
        tcp_flags=rows["tcp_flags"],
        bytes_=rows["bytes"].astype(np.uint64),
        packets=rows["packets"].astype(np.uint64),
        start=_uptime_to_epoch(rows["first"], uptime_ms, export_ms),
        end=_uptime_to_epoch(rows["last"], uptime_ms, export_ms),
        sampling=rate,
    )


def _sampling(column: Any, state: _DomainState, size: int) -> np.ndarray:
    rate = np.full(size, state.default_rate or 1, dtype=np.uint64)
    sampler = column("sampler_id")
    if sampler is not None and state.sampler_rates:
        for sampler_id, sampler_rate in state.sampler_rates.items():
            rate[sampler == sampler_id] = sampler_rate
    interval = column("packet_interval")
    if interval is not None:
        space = column("packet_space")
        space = space if space is not None else np.zeros(size, dtype=np.uint64)
        with np.errstate(divide="ignore", invalid="ignore"):
            own = np.where(interval > 0, (interval + space) // np.maximum(interval, np.uint64(1)), np.uint64(0))
        rate = np.where(own > 0, own, rate)
    for role in ("sampler_interval", "sampling_interval"):
        own = column(role)
        if own is not None:
            rate = np.where(own > 0, own, rate)
    return np.minimum(rate, np.uint64(0xFFFFFFFF)).astype(np.uint32)


def _base_columns(
    *,
    src: np.ndarray,
    dst: np.ndarray,
    proto: np.ndarray,
    src_port: np.ndarray,
    dst_port: np.ndarray,
    tcp_flags: np.ndarray,
    bytes_: np.ndarray,
    packets: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    sampling: np.ndarray,
) -> dict[str, Any]:
    """Apply the shared conventions: sampling scale-up, ports only for port protocols."""
    proto = proto.astype(np.uint8)
    has_ports = _HAS_PORTS[proto]
    scale = sampling.astype(np.uint64)
    return {
        "src_addr": src,
        "dst_addr": dst,
        "proto": proto,
        "src_port": np.where(has_ports, src_port, 0).astype(np.uint16),
        "dst_port": np.where(has_ports, dst_port, 0).astype(np.uint16),
        "bytes": bytes_.astype(np.uint64) * scale,
        "packets": packets.astype(np.uint64) * scale,
        "start": start.astype(np.float64),
        "end": end.astype(np.float64),
        "tcp_flags": tcp_flags.astype(np.uint8),
        "sampling": sampling.astype(np.uint32),
    }


# -- helpers: sFlow --------------------------------------------------------------


class _Reader:
    """Bounds-checked reader of big-endian sFlow (XDR) fields."""

    __slots__ = ("data", "position", "base")

    def __init__(self, data: bytes, base: int) -> None:
        self.data = data
        self.position = 0
        self.base = base

    def u32(self, name: str) -> int:
        if len(self.data) - self.position < 4:
            raise _Malformed(self.base + self.position, name, f"sFlow {name} is cut off")
        value = _U32.unpack_from(self.data, self.position)[0]
        self.position += 4
        return value

    def skip(self, count: int, name: str) -> None:
        self.take(count, name)

    def take(self, count: int, name: str) -> bytes:
        # XDR opaque data is padded to a multiple of 4 bytes.
        padded = (count + 3) & ~3
        if len(self.data) - self.position < count:
            raise _Malformed(self.base + self.position, name, f"sFlow {name} of {count} bytes is cut off")
        value = self.data[self.position : self.position + count]
        self.position = min(self.position + padded, len(self.data))
        return value


def _sflow_raw_header(data: bytes, rate: int, offset: int) -> tuple | None:
    """Parse a raw packet header record into a flow tuple.

    Returns ``(src16, dst16, proto, src_port, dst_port, tcp_flags, bytes,
    rate)`` or None when the header contains no IP packet.
    """
    if len(data) < 16:
        return None
    protocol, frame_length, _, header_length = struct.unpack_from(">IIII", data, 0)
    packet = data[16 : 16 + header_length]
    if protocol == 1:  # Ethernet
        parsed = _parse_ethernet(packet)
    elif protocol == 11:
        parsed = _parse_ipv4(packet)
    elif protocol == 12:
        parsed = _parse_ipv6(packet)
    else:
        parsed = None
    if parsed is None:
        return None
    return (*parsed, frame_length, rate)


def _sflow_sampled_ip(data: bytes, rate: int, ipv6: bool, offset: int) -> tuple | None:
    if ipv6:
        if len(data) < 56:
            return None
        length, proto = struct.unpack_from(">II", data, 0)
        src, dst = data[8:24], data[24:40]
        src_port, dst_port, flags = struct.unpack_from(">III", data, 40)
    else:
        if len(data) < 32:
            return None
        length, proto = struct.unpack_from(">II", data, 0)
        src, dst = _MAPPED + data[8:12], _MAPPED + data[12:16]
        src_port, dst_port, flags = struct.unpack_from(">III", data, 16)
    return (src, dst, proto & 0xFF, src_port & 0xFFFF, dst_port & 0xFFFF, flags & 0xFF, length, rate)


_MAPPED = bytes(10) + b"\xff\xff"


def _parse_ethernet(packet: bytes) -> tuple | None:
    if len(packet) < 14:
        return None
    ethertype = _U16.unpack_from(packet, 12)[0]
    offset = 14
    for _ in range(_MAX_VLAN_TAGS):
        if ethertype not in (0x8100, 0x88A8, 0x9100):
            break
        if len(packet) < offset + 4:
            return None
        ethertype = _U16.unpack_from(packet, offset + 2)[0]
        offset += 4
    if ethertype == 0x0800:
        return _parse_ipv4(packet[offset:])
    if ethertype == 0x86DD:
        return _parse_ipv6(packet[offset:])
    return None


def _parse_ipv4(packet: bytes) -> tuple | None:
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    header_length = (packet[0] & 0x0F) * 4
    proto = packet[9]
    src = _MAPPED + packet[12:16]
    dst = _MAPPED + packet[16:20]
    fragment_offset = _U16.unpack_from(packet, 6)[0] & 0x1FFF
    if fragment_offset or header_length < 20:
        return (src, dst, proto, 0, 0, 0)
    return (src, dst, proto, *_parse_transport(proto, packet[header_length:]))


def _parse_ipv6(packet: bytes) -> tuple | None:
    if len(packet) < 40 or packet[0] >> 4 != 6:
        return None
    proto = packet[6]
    src, dst = packet[8:24], packet[24:40]
    offset = 40
    for _ in range(_MAX_IPV6_EXTENSIONS):
        if proto in (0, 43, 60):  # hop-by-hop, routing, destination options
            if len(packet) < offset + 2:
                return (src, dst, proto, 0, 0, 0)
            proto, length = packet[offset], (packet[offset + 1] + 1) * 8
            offset += length
        elif proto == 44:  # fragment
            if len(packet) < offset + 8:
                return (src, dst, proto, 0, 0, 0)
            fragment_offset = _U16.unpack_from(packet, offset + 2)[0] >> 3
            proto = packet[offset]
            offset += 8
            if fragment_offset:
                return (src, dst, proto, 0, 0, 0)
        else:
            break
    return (src, dst, proto, *_parse_transport(proto, packet[offset:]))


def _parse_transport(proto: int, segment: bytes) -> tuple[int, int, int]:
    if proto in (6, 17, 33, 132, 136) and len(segment) >= 4:
        src_port, dst_port = struct.unpack_from(">HH", segment, 0)
        flags = segment[13] if proto == 6 and len(segment) >= 14 else 0
        return src_port, dst_port, flags
    return 0, 0, 0


def _sflow_columns(records: list[tuple], now: float) -> dict[str, Any]:
    size = len(records)
    src = np.frombuffer(b"".join(record[0] for record in records), dtype=np.uint8).reshape(size, 16)
    dst = np.frombuffer(b"".join(record[1] for record in records), dtype=np.uint8).reshape(size, 16)
    numbers = np.array([record[2:] for record in records], dtype=np.uint64).reshape(size, 6)
    times = np.full(size, now, dtype=np.float64)
    rate = np.minimum(numbers[:, 5], np.uint64(0xFFFFFFFF))
    return _base_columns(
        src=src,
        dst=dst,
        proto=numbers[:, 0],
        src_port=numbers[:, 1],
        dst_port=numbers[:, 2],
        tcp_flags=numbers[:, 3],
        bytes_=numbers[:, 4],
        packets=np.ones(size, dtype=np.uint64),
        start=times,
        end=times,
        sampling=rate.astype(np.uint32),
    )


