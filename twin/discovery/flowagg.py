"""Aggregation of flow records into communication edges and hourly buckets.

:class:`Aggregator` reads tables with
:data:`twin.discovery.flowrecords.FLOW_RECORD_SCHEMA` (from the NetFlow, IPFIX
and sFlow decoders, or from :func:`twin.discovery.pcap.capture_to_flows`) and
sums them per (``src_ip``, ``dst_ip``, ``proto``, ``dst_port``): one edge with
bytes, packets, flow records, the earliest start and the latest end, the
columns of :data:`twin.model.observation.FLOW_COLUMNS`. The same sums per
UTC hour of the record start are the hourly buckets.

Rules
-----
* Direction: a record whose source port is a service port (below 1024, or in
  :data:`SERVICE_PORTS`) and whose destination port is not, and is either
  32768 or above or above the source port, is a reply. It is turned around,
  so the edge points from the client to the server, and counted in
  ``direction_flipped``. Only TCP, UDP, SCTP, DCCP and UDP-Lite records have
  ports, and a source port 0 is never a service.
* Destinations that are not devices: 255.255.255.255, the addresses passed as
  ``not_devices`` (directed broadcasts), multicast (224.0.0.0/4, ff00::/8)
  and the unspecified address (0.0.0.0, ::). Their records are counted in
  ``not_device_destinations`` and left out.
* Protocols without ports aggregate to ``dst_port`` 0, as the Zeek and nfdump
  importers do, so the ICMP type and code that NetFlow stores in the
  destination port do not split an edge.
* A record belongs to the hour of its start. It is not split across hours.
* ``flows`` counts flow records. A NetFlow exporter sends one record per
  direction of a connection, so one TCP connection usually counts as two.

Memory
------
Records passed to :meth:`Aggregator.add` are kept until about
``max(FLUSH_ROWS, stored buckets)`` of them are pending, then merged into the
stored buckets in one vectorised group-by, so each record is merged a bounded
number of times. When more than ``max_keys`` buckets (``(edge, hour)`` pairs,
or edges without hour buckets) are stored, whole edges are evicted, those
with the fewest flow records first, until 90 % of ``max_keys`` remain. The
evicted edges, records, bytes and packets are counted (``evicted``,
``evicted_records``, ``evicted_bytes``, ``evicted_packets``) and a warning is
logged, so a report can show that the edge list is incomplete.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Collection

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from twin.discovery.flowrecords import FLOW_RECORD_SCHEMA
from twin.discovery.flows import IP_PROTOCOLS
from twin.model.observation import FLOW_COLUMNS
from twin.model.site import NAMED_SERVICES

__all__ = [
    "Aggregator",
    "HOUR_COLUMNS",
    "PORT_PROTOCOLS",
    "SERVICE_PORTS",
    "aggregate",
    "service_port_mask",
]

log = logging.getLogger(__name__)

# Columns of the hourly buckets: the edge key, the start of the hour (epoch
# seconds, UTC) and the sums of the records that started in that hour.
HOUR_COLUMNS = ("src_ip", "dst_ip", "proto", "dst_port", "hour", "bytes", "packets", "flows")

# IP protocol numbers whose headers carry ports: TCP, UDP, DCCP, SCTP, UDP-Lite.
PORT_PROTOCOLS = (6, 17, 33, 132, 136)

# Service ports at or above 1024 that the direction rule treats like the
# well-known ports. They are the named services of site policies (HL7 MLLP
# 2575, DICOM 11112, RDP, MQTT, ...) plus databases, HL7 on 6661, message
# brokers and the flow export ports.
SERVICE_PORTS = frozenset(
    {low for services in NAMED_SERVICES.values() for proto, low, high in services if proto != "icmp" and low >= 1024}
    | {1433, 1521, 2055, 3306, 4739, 5432, 5671, 5672, 6343, 6661, 9995, 9996, 27017}
)

# Pending records that trigger a merge when few buckets are stored yet.
FLUSH_ROWS = 1 << 18

_HOUR = 3600
_SERVICE_TABLE = np.zeros(65536, dtype=bool)
_SERVICE_TABLE[:1024] = True
_SERVICE_TABLE[sorted(SERVICE_PORTS)] = True
_SERVICE_TABLE[0] = False
_HAS_PORTS = np.zeros(256, dtype=bool)
_HAS_PORTS[list(PORT_PROTOCOLS)] = True
_PROTOCOL_TEXT = pa.array([IP_PROTOCOLS.get(number, str(number)) for number in range(256)], type=pa.string())
# The upper 64 bits of an IPv4-mapped address, and the mark in the lower 64.
_MAPPED_MARK = np.uint64(0xFFFF << 32)
_LOW32 = np.uint64(0xFFFFFFFF)

# Stored bucket columns: the key, then the sums.
_KEY = ("src_hi", "src_lo", "dst_hi", "dst_lo", "proto", "dst_port", "hour")
_EDGE_KEY = _KEY[:-1]
_SUMS = ("bytes", "packets", "flows", "first_seen", "last_seen")


def service_port_mask(ports: np.ndarray) -> np.ndarray:
    """Return whether the direction rule treats each port (0 to 65535) as a server port."""
    return _SERVICE_TABLE[np.asarray(ports, dtype=np.int64)]


class Aggregator:
    """Incremental sums of flow records per edge and per hour, with bounded memory.

    Parameters
    ----------
    max_keys : int
        Stored buckets at most: ``(edge, hour)`` pairs, or edges when
        ``hour_buckets`` is false. Beyond it, edges with the fewest flow
        records are evicted and counted.
    hour_buckets : bool
        Keep hourly buckets. Without them :meth:`hours` returns no rows.
    not_devices : collection of str
        More destination addresses that are not devices, such as the directed
        broadcast addresses of the site's subnets.

    Raises
    ------
    ValueError
        When ``max_keys`` is below 1 or an entry of ``not_devices`` is not an
        IP address.
    """

    def __init__(
        self,
        *,
        max_keys: int = 1_000_000,
        hour_buckets: bool = True,
        not_devices: Collection[str] = (),
    ) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys is {max_keys}; expected 1 or more")
        self.max_keys = int(max_keys)
        self.hour_buckets = bool(hour_buckets)
        self._not_device_mapped, self._not_device_ipv6 = _address_words(not_devices)
        self.counters: dict[str, int] = {
            "records": 0,
            "edges": 0,
            "not_device_destinations": 0,
            "direction_flipped": 0,
            "evicted": 0,
            "evicted_records": 0,
            "evicted_bytes": 0,
            "evicted_packets": 0,
        }
        self._pending: list[dict[str, np.ndarray]] = []
        self._pending_rows = 0
        self._buckets: dict[str, np.ndarray] = _empty_buckets()

    # ----------------------------------------------------------------------
    # Public interface

    def add(self, records: pa.Table) -> None:
        """Add flow records (a table with FLOW_RECORD_SCHEMA columns).

        The direction rule and the destination filter run at once; the sums
        are merged into the stored buckets when enough records are pending.

        Raises
        ------
        ValueError
            When a column of FLOW_RECORD_SCHEMA that the sums need is missing.
        """
        if records.num_rows == 0:
            return
        missing = [name for name in FLOW_RECORD_SCHEMA.names if name not in records.column_names and name not in ("exporter", "tcp_flags", "sampling")]
        if missing:
            raise ValueError(f"flow records lack the columns {missing}; expected FLOW_RECORD_SCHEMA")
        self.counters["records"] += records.num_rows
        rows = self._prepare(records)
        if len(rows["proto"]):
            self._pending.append(rows)
            self._pending_rows += len(rows["proto"])
        if self._pending_rows >= max(FLUSH_ROWS, len(self._buckets["proto"])):
            self._merge()

    def edges(self) -> pd.DataFrame:
        """Return one row per (src_ip, dst_ip, proto, dst_port) with FLOW_COLUMNS, largest bytes first."""
        self._merge()
        return _edge_frame(self._buckets, self.hour_buckets)

    def hours(self) -> pd.DataFrame:
        """Return the hourly buckets with HOUR_COLUMNS, ordered by edge and hour."""
        self._merge()
        if not self.hour_buckets:
            return _hour_frame(_empty_buckets())
        return _hour_frame(self._buckets)

    def drain(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Return the edges and hourly buckets summed since the last drain, and start afresh.

        The counters stay cumulative, except ``edges``, which becomes 0.
        """
        edges, hours = self.edges(), self.hours()
        self._buckets = _empty_buckets()
        self.counters["edges"] = 0
        return edges, hours

    # ----------------------------------------------------------------------
    # Steps

    def _prepare(self, records: pa.Table) -> dict[str, np.ndarray]:
        """Apply the destination filter and the direction rule; return the kept rows as arrays."""
        src_hi, src_lo = _words(records["src_addr"])
        dst_hi, dst_lo = _words(records["dst_addr"])
        proto = _numbers(records["proto"], np.int64)
        src_port = _numbers(records["src_port"], np.int64)
        dst_port = _numbers(records["dst_port"], np.int64)
        start = _numbers(records["start"], np.float64)
        end = _numbers(records["end"], np.float64)

        keep = ~self._not_device(dst_hi, dst_lo)
        dropped = int(len(keep) - np.count_nonzero(keep))
        self.counters["not_device_destinations"] += dropped

        has_ports = _HAS_PORTS[proto]
        flip = (
            keep
            & has_ports
            & _SERVICE_TABLE[src_port]
            & ~_SERVICE_TABLE[dst_port]
            & ((dst_port >= 32768) | (dst_port > src_port))
        )
        # A reply to a multicast or broadcast request would get a destination
        # that is not a device once turned around, so it keeps its direction.
        flip &= ~self._not_device(src_hi, src_lo)
        flipped = int(np.count_nonzero(flip))
        if flipped:
            self.counters["direction_flipped"] += flipped
            src_hi, dst_hi = np.where(flip, dst_hi, src_hi), np.where(flip, src_hi, dst_hi)
            src_lo, dst_lo = np.where(flip, dst_lo, src_lo), np.where(flip, src_lo, dst_lo)
            dst_port = np.where(flip, src_port, dst_port)
        dst_port = np.where(has_ports, dst_port, 0)
        # ICMPv6 shares the name "icmp" with ICMP, as in the Zeek and nfdump
        # importers, so it shares the key too.
        proto = np.where(proto == 58, 1, proto)

        hour = (np.floor(start / _HOUR) * _HOUR).astype(np.int64) if self.hour_buckets else np.zeros(len(start), np.int64)
        rows = {
            "src_hi": src_hi,
            "src_lo": src_lo,
            "dst_hi": dst_hi,
            "dst_lo": dst_lo,
            "proto": proto,
            "dst_port": dst_port,
            "hour": hour,
            "bytes": _numbers(records["bytes"], np.uint64),
            "packets": _numbers(records["packets"], np.uint64),
            "flows": np.ones(len(proto), dtype=np.uint64),
            "first_seen": start,
            "last_seen": np.maximum(end, start),
        }
        if dropped:
            rows = {name: values[keep] for name, values in rows.items()}
        return rows

    def _not_device(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        mapped = (hi == 0) & ((lo & ~_LOW32) == _MAPPED_MARK)
        ipv4 = lo & _LOW32
        result = mapped & (((ipv4 >> np.uint64(28)) == 0xE) | (ipv4 == 0xFFFFFFFF) | (ipv4 == 0))
        result |= (hi >> np.uint64(56)) == 0xFF  # ff00::/8
        result |= (hi == 0) & (lo == 0)  # ::
        # An IPv4-mapped address is identified by its lower half alone.
        if len(self._not_device_mapped):
            result |= (hi == 0) & np.isin(lo, self._not_device_mapped)
        for upper, lower in self._not_device_ipv6:
            result |= (hi == upper) & (lo == lower)
        return result

    def _merge(self) -> None:
        """Group the stored buckets and the pending records into new buckets."""
        if not self._pending:
            return
        parts = [self._buckets, *self._pending]
        rows = {name: np.concatenate([part[name] for part in parts]) for name in _KEY + _SUMS}
        self._pending = []
        self._pending_rows = 0
        self._buckets, self.counters["edges"] = _group(rows, _KEY)
        if len(self._buckets["proto"]) > self.max_keys:
            self._evict()
            self.counters["edges"] = int(_edge_codes(self._buckets).max()) + 1 if len(self._buckets["proto"]) else 0

    def _evict(self) -> None:
        buckets = self._buckets
        edge_code = _edge_codes(buckets)
        flows_per_edge = np.bincount(edge_code, weights=buckets["flows"].astype(np.float64))
        buckets_per_edge = np.bincount(edge_code)
        # Fewest flow records first; among equals, the edge seen last longest ago.
        last_per_edge = np.full(len(flows_per_edge), -np.inf)
        np.maximum.at(last_per_edge, edge_code, buckets["last_seen"])
        order = np.lexsort((last_per_edge, flows_per_edge))
        target = int(self.max_keys * 0.9)
        kept_edges = np.searchsorted(np.cumsum(buckets_per_edge[order][::-1]), target, side="right")
        # kept_edges counts the largest edges that fit; the rest are evicted.
        evicted_edges = order[: len(order) - kept_edges]
        evict = np.zeros(len(flows_per_edge), dtype=bool)
        evict[evicted_edges] = True
        evicted_rows = evict[edge_code]
        records = int(buckets["flows"][evicted_rows].sum())
        self.counters["evicted"] += int(len(evicted_edges))
        self.counters["evicted_records"] += records
        self.counters["evicted_bytes"] += int(buckets["bytes"][evicted_rows].sum())
        self.counters["evicted_packets"] += int(buckets["packets"][evicted_rows].sum())
        log.warning(
            "flow aggregation stores more than %d buckets; evicted %d edges with the fewest flow records "
            "(%d records); raise max_keys or drain more often to keep such edges",
            self.max_keys, len(evicted_edges), records,
        )
        self._buckets = {name: values[~evicted_rows] for name, values in buckets.items()}


def aggregate(records: pa.Table, **options) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return the edges and hourly buckets of ``records``; ``options`` go to :class:`Aggregator`."""
    aggregator = Aggregator(**options)
    aggregator.add(records)
    return aggregator.edges(), aggregator.hours()


# --------------------------------------------------------------------------
# Grouping


def _group(rows: dict[str, np.ndarray], key: tuple[str, ...]) -> tuple[dict[str, np.ndarray], int]:
    """Sum rows per distinct key; return the key and sum columns of the groups, and the number of edges."""
    codes, first, edges = _group_codes(rows, key)
    groups = len(first)
    out = {name: rows[name][first] for name in key}
    for name in ("bytes", "packets", "flows"):
        # bincount sums in float64, exact up to 2**53 per group (9 PB).
        out[name] = np.bincount(codes, weights=rows[name].astype(np.float64), minlength=groups).astype(np.uint64)
    first_seen = np.full(groups, np.inf)
    np.minimum.at(first_seen, codes, rows["first_seen"])
    last_seen = np.full(groups, -np.inf)
    np.maximum.at(last_seen, codes, rows["last_seen"])
    out["first_seen"] = first_seen
    out["last_seen"] = last_seen
    return out, edges


def _group_codes(rows: dict[str, np.ndarray], key: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, int]:
    """Return a dense group code per row, the first row of each group and the number of distinct edges.

    Addresses become dense codes first (one factorize over both ends). The
    edge key packs both address codes, protocol and port into one int64 when
    that fits, and is otherwise folded in two factorize steps, so every packed
    value stays below 2**63. The hour, when in ``key``, is folded last.
    """
    n = len(rows["proto"])
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 0
    address_codes, address_count = _address_codes(
        np.concatenate([rows["src_hi"], rows["dst_hi"]]), np.concatenate([rows["src_lo"], rows["dst_lo"]])
    )
    pair = address_codes[:n] * address_count + address_codes[n:]
    service = rows["proto"] * 65536 + rows["dst_port"]
    if address_count * address_count < (1 << 38):
        combined, _ = pd.factorize(pair * (1 << 24) + service)
    else:
        pair_codes, _ = pd.factorize(pair)
        combined, _ = pd.factorize(pair_codes.astype(np.int64) * (1 << 24) + service)
    combined = np.asarray(combined, dtype=np.int64)
    edges = int(combined.max()) + 1
    if "hour" in key:
        hour_codes, hour_values = pd.factorize(rows["hour"])
        combined, _ = pd.factorize(combined * max(len(hour_values), 1) + hour_codes)
        combined = np.asarray(combined, dtype=np.int64)
    groups = int(combined.max()) + 1
    first = np.full(groups, n, dtype=np.int64)
    np.minimum.at(first, combined, np.arange(n, dtype=np.int64))
    return combined, first, edges


def _address_codes(hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, int]:
    """Return dense codes for 128-bit addresses given as two 64-bit halves."""
    if not hi.any():
        codes, uniques = pd.factorize(lo)
        return codes.astype(np.int64), max(len(uniques), 1)
    pairs = np.empty(len(hi), dtype=[("hi", np.uint64), ("lo", np.uint64)])
    pairs["hi"] = hi
    pairs["lo"] = lo
    uniques, codes = np.unique(pairs, return_inverse=True)
    return codes.reshape(-1).astype(np.int64), max(len(uniques), 1)


def _edge_codes(buckets: dict[str, np.ndarray]) -> np.ndarray:
    codes, _, _ = _group_codes(buckets, _EDGE_KEY)
    return codes


# --------------------------------------------------------------------------
# Output frames


def _key_columns(rows: dict[str, np.ndarray]) -> dict[str, object]:
    """Return the edge key columns (src_ip, dst_ip, proto, dst_port) as text and integers."""
    return {
        "src_ip": _address_text(rows["src_hi"], rows["src_lo"]),
        "dst_ip": _address_text(rows["dst_hi"], rows["dst_lo"]),
        "proto": _protocol_text(rows["proto"]),
        "dst_port": rows["dst_port"].astype(np.int64),
    }


def _edge_frame(buckets: dict[str, np.ndarray], buckets_have_hours: bool) -> pd.DataFrame:
    edges = buckets if not buckets_have_hours else _group(buckets, _EDGE_KEY)[0]
    order = np.argsort(-edges["bytes"].astype(np.float64), kind="stable")
    edges = {name: values[order] for name, values in edges.items()}
    return pd.DataFrame(
        {
            **_key_columns(edges),
            "bytes": edges["bytes"].astype(np.int64),
            "packets": edges["packets"].astype(np.int64),
            "flows": edges["flows"].astype(np.int64),
            "first_seen": edges["first_seen"].astype(np.float64),
            "last_seen": edges["last_seen"].astype(np.float64),
        },
        columns=list(FLOW_COLUMNS),
    )


def _hour_frame(buckets: dict[str, np.ndarray]) -> pd.DataFrame:
    edge_code = _edge_codes(buckets)
    order = np.lexsort((buckets["hour"], edge_code))
    rows = {name: values[order] for name, values in buckets.items()}
    return pd.DataFrame(
        {
            **_key_columns(rows),
            "hour": rows["hour"].astype(np.int64),
            "bytes": rows["bytes"].astype(np.int64),
            "packets": rows["packets"].astype(np.int64),
            "flows": rows["flows"].astype(np.int64),
        },
        columns=list(HOUR_COLUMNS),
    )


def _protocol_text(numbers: np.ndarray) -> pd.api.extensions.ExtensionArray:
    return pd.array(_PROTOCOL_TEXT.take(pa.array(numbers, type=pa.int64())), dtype="str")


def _address_text(hi: np.ndarray, lo: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """Return canonical address texts: dotted quads for IPv4-mapped addresses, IPv6 text otherwise.

    Each distinct address is formatted once: IPv4 in Arrow, IPv6 by ``ipaddress``.
    """
    if len(hi) == 0:
        return pd.array([], dtype="str")
    codes, count = _address_codes(hi, lo)
    first = np.full(count, len(codes), dtype=np.int64)
    np.minimum.at(first, codes, np.arange(len(codes), dtype=np.int64))
    hi, lo = hi[first], lo[first]
    mapped = (hi == 0) & ((lo & ~_LOW32) == _MAPPED_MARK)
    ipv4 = (lo & _LOW32).astype(np.uint32)
    octets = [pc.cast(pa.array((ipv4 >> shift) & 0xFF), pa.string()) for shift in (24, 16, 8, 0)]
    text = pc.binary_join_element_wise(*octets, ".")
    if not mapped.all():
        values = text.to_pylist()
        for index in np.flatnonzero(~mapped).tolist():
            values[index] = str(ipaddress.IPv6Address((int(hi[index]) << 64) | int(lo[index])))
        text = pa.array(values, type=pa.string())
    return pd.array(text.take(pa.array(codes)), dtype="str")


# --------------------------------------------------------------------------
# Column access


def _empty_buckets() -> dict[str, np.ndarray]:
    kinds = {
        "src_hi": np.uint64, "src_lo": np.uint64, "dst_hi": np.uint64, "dst_lo": np.uint64,
        "proto": np.int64, "dst_port": np.int64, "hour": np.int64,
        "bytes": np.uint64, "packets": np.uint64, "flows": np.uint64,
        "first_seen": np.float64, "last_seen": np.float64,
    }
    return {name: np.zeros(0, dtype=kind) for name, kind in kinds.items()}


def _numbers(column: pa.ChunkedArray | pa.Array, dtype) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if column.null_count:
        column = pc.fill_null(column, 0)
    return np.asarray(column.to_numpy(zero_copy_only=False)).astype(dtype, copy=False)


def _words(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Return the upper and lower 64 bits of 16-byte addresses as native ``uint64``."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if column.null_count:
        raise ValueError("an address column contains nulls; every flow record needs both addresses")
    if not pa.types.is_fixed_size_binary(column.type) or column.type.byte_width != 16:
        raise ValueError(f"address column has type {column.type}; expected fixed_size_binary[16]")
    buffer = column.buffers()[1]
    words = np.frombuffer(buffer, dtype=">u8", count=len(column) * 2, offset=column.offset * 16).reshape(-1, 2)
    return words[:, 0].astype(np.uint64), words[:, 1].astype(np.uint64)


def _address_words(addresses: Collection[str]) -> tuple[np.ndarray, list[tuple[np.uint64, np.uint64]]]:
    """Split addresses into the lower halves of IPv4-mapped ones and the halves of IPv6 ones."""
    mapped, ipv6 = [], []
    for text in addresses:
        try:
            address = ipaddress.ip_address(str(text).strip())
        except ValueError:
            raise ValueError(f"not_devices entry {text!r} is not an IP address; expected addresses such as 10.1.2.255") from None
        if address.version == 4:
            mapped.append((0xFFFF << 32) | int(address))
        else:
            value = int(address)
            ipv6.append((np.uint64(value >> 64), np.uint64(value & ((1 << 64) - 1))))
    return np.array(mapped, dtype=np.uint64), ipv6
