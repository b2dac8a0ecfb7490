"""Flow records: the one Arrow schema that every flow decoder emits.

NetFlow v5/v9, IPFIX and sFlow decoders (:mod:`twin.discovery.netflow`), the
pcap reader and the aggregator all exchange ``pyarrow.Table`` objects with
:data:`FLOW_RECORD_SCHEMA`, one row per flow record as the exporter sent it.

Conventions
-----------
* ``exporter`` is the exporter address as text (``"10.231.0.5"``), or the file
  name for records read from a file.
* ``src_addr`` and ``dst_addr`` are 16 bytes: IPv6 addresses as they are, IPv4
  addresses IPv4-mapped (``::ffff:a.b.c.d``, RFC 4291 section 2.5.5.2).
* ``src_port`` and ``dst_port`` are 0 for protocols without ports.
* ``bytes`` and ``packets`` are already multiplied by ``sampling``, the
  packet sampling rate (1 when the exporter does not sample).
* ``start`` and ``end`` are epoch seconds (float). A record without times
  carries the export time in both.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

import numpy as np
import pyarrow as pa

__all__ = [
    "FLOW_RECORD_SCHEMA",
    "addr_texts",
    "empty_records",
    "ipv4_to_mapped",
    "mapped_to_ipv4",
    "records_from_arrays",
]

FLOW_RECORD_SCHEMA = pa.schema(
    [
        ("exporter", pa.string()),
        ("src_addr", pa.binary(16)),
        ("dst_addr", pa.binary(16)),
        ("proto", pa.uint8()),
        ("src_port", pa.uint16()),
        ("dst_port", pa.uint16()),
        ("bytes", pa.uint64()),
        ("packets", pa.uint64()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("tcp_flags", pa.uint8()),
        ("sampling", pa.uint32()),
    ]
)

# Numeric columns and their NumPy types, in schema order.
_NUMERIC_COLUMNS = {
    "proto": np.uint8,
    "src_port": np.uint16,
    "dst_port": np.uint16,
    "bytes": np.uint64,
    "packets": np.uint64,
    "start": np.float64,
    "end": np.float64,
    "tcp_flags": np.uint8,
    "sampling": np.uint32,
}

# Values of the columns that records_from_arrays fills in when the caller
# leaves them out.
_DEFAULTS = {"src_port": 0, "dst_port": 0, "tcp_flags": 0, "sampling": 1}

# The first 12 bytes of an IPv4-mapped IPv6 address.
_MAPPED_PREFIX = np.array([0] * 10 + [0xFF, 0xFF], dtype=np.uint8)


def empty_records() -> pa.Table:
    """Return a table with :data:`FLOW_RECORD_SCHEMA` and no rows."""
    return FLOW_RECORD_SCHEMA.empty_table()


def ipv4_to_mapped(u32: np.ndarray) -> np.ndarray:
    """Convert IPv4 addresses (host-order ``uint32``) to IPv4-mapped IPv6 bytes.

    Returns an ``(N, 16)`` ``uint8`` array.
    """
    values = np.asarray(u32, dtype=np.uint32).reshape(-1)
    out = np.zeros((values.size, 16), dtype=np.uint8)
    out[:, 10:12] = 0xFF
    out[:, 12:] = values.astype(">u4").view(np.uint8).reshape(-1, 4)
    return out


def mapped_to_ipv4(addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split ``(N, 16)`` address bytes into an IPv4 mask and IPv4 ``uint32`` values.

    Returns ``(is_ipv4, values)``: ``values`` is 0 where ``is_ipv4`` is false.
    """
    addrs = _as_byte_matrix(addrs)
    is_ipv4 = np.all(addrs[:, :12] == _MAPPED_PREFIX, axis=1)
    values = np.ascontiguousarray(addrs[:, 12:]).view(">u4").reshape(-1).astype(np.uint32)
    values[~is_ipv4] = 0
    return is_ipv4, values


def addr_texts(addrs: np.ndarray | pa.Array | pa.ChunkedArray) -> list[str]:
    """Return the canonical text of each address.

    IPv4-mapped addresses become dotted quads, other addresses compressed
    lower-case IPv6 text. Each distinct address is formatted once.
    """
    matrix = _as_byte_matrix(addrs)
    if matrix.shape[0] == 0:
        return []
    keys = np.ascontiguousarray(matrix).view(np.dtype((np.void, 16))).reshape(-1)
    unique, inverse = np.unique(keys, return_inverse=True)
    texts = []
    for key in unique:
        raw = key.tobytes()
        if raw[:12] == _MAPPED_PREFIX.tobytes():
            texts.append(str(ipaddress.IPv4Address(raw[12:])))
        else:
            texts.append(str(ipaddress.IPv6Address(raw)))
    return [texts[i] for i in inverse.reshape(-1)]


def records_from_arrays(**columns: object) -> pa.Table:
    """Build a table with :data:`FLOW_RECORD_SCHEMA` from NumPy arrays.

    Every keyword is a column of the schema. ``src_addr`` and ``dst_addr`` are
    ``(N, 16)`` ``uint8`` arrays (see :func:`ipv4_to_mapped`). ``exporter`` is
    one string for all rows or a sequence of N strings. Numeric columns are
    arrays of N values or one scalar for all rows. ``src_port``,
    ``dst_port`` and ``tcp_flags`` default to 0 and ``sampling`` to 1.

    Raises ``ValueError`` for an unknown column, a missing required column or
    columns of different lengths.
    """
    unknown = set(columns) - set(FLOW_RECORD_SCHEMA.names)
    if unknown:
        raise ValueError(f"unknown flow record columns {sorted(unknown)}; expected {FLOW_RECORD_SCHEMA.names}")
    missing = [
        name for name in FLOW_RECORD_SCHEMA.names if name not in columns and name not in _DEFAULTS
    ]
    if missing:
        raise ValueError(f"missing flow record columns {missing}")

    src = _as_byte_matrix(columns["src_addr"])
    dst = _as_byte_matrix(columns["dst_addr"])
    rows = src.shape[0]
    if dst.shape[0] != rows:
        raise ValueError(f"src_addr has {rows} rows but dst_addr has {dst.shape[0]}")

    arrays: dict[str, pa.Array] = {
        "exporter": _exporter_array(columns["exporter"], rows),
        "src_addr": _fixed_binary(src),
        "dst_addr": _fixed_binary(dst),
    }
    for name, dtype in _NUMERIC_COLUMNS.items():
        arrays[name] = pa.array(_numeric_column(name, columns, dtype, rows))
    return pa.Table.from_arrays([arrays[name] for name in FLOW_RECORD_SCHEMA.names], schema=FLOW_RECORD_SCHEMA)


def _numeric_column(name: str, columns: Mapping[str, object], dtype: type, rows: int) -> np.ndarray:
    value = columns.get(name, _DEFAULTS.get(name))
    array = np.asarray(value)
    if array.ndim == 0:
        return np.full(rows, array, dtype=dtype)
    array = array.reshape(-1)
    if array.size != rows:
        raise ValueError(f"flow record column {name} has {array.size} values but src_addr has {rows} rows")
    return array.astype(dtype, copy=False)


def _exporter_array(value: object, rows: int) -> pa.Array:
    if isinstance(value, str):
        # One string repeated, built from buffers without a Python loop.
        encoded = value.encode()
        offsets = np.arange(rows + 1, dtype=np.int32) * len(encoded)
        return pa.StringArray.from_buffers(rows, pa.py_buffer(offsets.tobytes()), pa.py_buffer(encoded * rows))
    array = pa.array(value, type=pa.string()) if not isinstance(value, pa.Array) else value.cast(pa.string())
    if len(array) != rows:
        raise ValueError(f"flow record column exporter has {len(array)} values but src_addr has {rows} rows")
    return array


def _fixed_binary(matrix: np.ndarray) -> pa.Array:
    data = np.ascontiguousarray(matrix, dtype=np.uint8)
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), data.shape[0], [None, pa.py_buffer(data.tobytes())])


def _as_byte_matrix(addrs: object) -> np.ndarray:
    """Return addresses as an ``(N, 16)`` ``uint8`` array."""
    if isinstance(addrs, pa.ChunkedArray):
        addrs = addrs.combine_chunks() if addrs.num_chunks != 1 else addrs.chunk(0)
    if isinstance(addrs, pa.Array):
        if addrs.null_count:
            raise ValueError("address column contains nulls; flow records always carry both addresses")
        if len(addrs) == 0:
            return np.zeros((0, 16), dtype=np.uint8)
        buffer = addrs.buffers()[1]
        start = addrs.offset * 16
        return np.frombuffer(buffer, dtype=np.uint8, count=len(addrs) * 16, offset=start).reshape(-1, 16)
    matrix = np.asarray(addrs, dtype=np.uint8)
    if matrix.ndim != 2 or matrix.shape[1] != 16:
        raise ValueError(f"addresses must be an (N, 16) uint8 array, got shape {matrix.shape}")
    return matrix
