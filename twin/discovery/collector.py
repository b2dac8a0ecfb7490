"""Live flow collector: NetFlow v5/v9, IPFIX and sFlow v5 over UDP.

Three threads share the work, so a slow step never stalls the socket:

* the **reader** receives datagrams from every listening socket into one
  preallocated buffer and puts a copy, with the exporter address and the
  receive time, into a bounded queue. When the queue is full (by count or by
  bytes) the datagram is dropped and counted. The reader never blocks on the
  queue.
* the **decoder** takes up to ``DECODE_CHUNK`` datagrams off the queue at
  once, decodes them into one table
  (:meth:`twin.discovery.netflow.FlowDecoder.decode_many`), aggregates the records
  (:class:`twin.discovery.flowagg.Aggregator`), expires held data sets once a
  second and hands a batch of edges and hourly buckets to the writer every
  ``batch_seconds``.
* the **writer** passes each batch to the ``on_batch`` callback (a workspace
  update or Parquet files). While it is busy, the decoder keeps aggregating
  into the same batch, so memory stays bounded by the aggregator's key limit.

Memory is bounded by the queue (``queue_size`` datagrams and
``queue_bytes``), the aggregator (``max_keys``) and the decoder's limit of
data sets held for a template.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import queue
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "Batch",
    "CollectorError",
    "CollectorSettings",
    "FlowCollector",
    "ListenAddress",
    "parse_listen",
    "write_batch_files",
]

log = logging.getLogger(__name__)

# Largest UDP payload, and the size of the one receive buffer.
MAX_DATAGRAM = 65535
# Datagrams, and their bytes, that the decoder takes off the queue at most
# and decodes into one table (FlowDecoder.decode_many) before it aggregates
# them. Large batches cut the per-table cost when the decoder falls behind.
DECODE_CHUNK = 1024
DECODE_CHUNK_BYTES = 4 << 20
# Seconds between FlowDecoder.expire calls, which age out data sets held for a template.
EXPIRE_INTERVAL_S = 1.0
# Seconds each thread waits for input before it checks whether to stop.
POLL_S = 0.1
# Decoding problems logged as warnings per statistics report; the rest are counted.
PROBLEMS_LOGGED = 5
# Seconds the stop waits for the writer to store the last batch.
FINAL_WRITE_TIMEOUT_S = 300.0


class CollectorError(Exception):
    """The collector cannot start: an invalid listen address or a socket that cannot be bound."""


@dataclass(frozen=True)
class ListenAddress:
    """An IP address and UDP port to receive flow exports on."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        return ipaddress.ip_address(self.host).is_loopback


def parse_listen(text: str) -> ListenAddress:
    """Parse ``ADDR:PORT`` (``127.0.0.1:2055``, ``[::1]:2055``) into a ListenAddress.

    The address must be an IP literal. Host names and a bare port are
    rejected, so the collector listens on a wildcard address only when the
    user typed it. Port 0 binds a free port (for tests).

    Raises
    ------
    CollectorError
        With the text and the expected form.
    """
    value = text.strip()
    expected = "expected ADDR:PORT, such as 127.0.0.1:2055, [::1]:2055, or 0.0.0.0:2055 to listen on every IPv4 address"
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
    else:
        host, sep, port_text = value.rpartition(":")
    if not sep or not host or ":" in port_text:
        raise CollectorError(f"invalid listen address {text!r}: {expected}")
    if ":" in host and not value.startswith("["):
        raise CollectorError(f"invalid listen address {text!r}: write an IPv6 address in brackets, such as [::1]:2055")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise CollectorError(f"invalid listen address {text!r}: {host!r} is not an IP address; {expected}") from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise CollectorError(f"invalid listen address {text!r}: port {port_text!r} is not a number from 0 to 65535")
    return ListenAddress(str(address), int(port_text))


@dataclass
class CollectorSettings:
    """Limits and intervals of a collector run; times in seconds."""

    queue_size: int = 65536
    # Maximum bytes of datagrams in the queue.
    queue_bytes: int = 256 << 20
    batch_seconds: float = 60.0
    stats_interval: float = 10.0
    # Stop after this long (None: until stop() or a signal).
    duration: float | None = None
    # Stop after this many datagrams were received (None: no limit).
    max_packets: int | None = None
    # SO_RCVBUF requested per socket; the kernel caps it at net.core.rmem_max.
    receive_buffer: int = 32 << 20
    # Maximum edge and hour buckets the aggregator keeps per batch.
    max_keys: int = 1_000_000
    # Data sets held for a missing template, and for how long.
    pending_max_sets: int = 10_000
    pending_max_age_s: float = 30.0

    def check(self) -> None:
        """Raise ValueError naming the first setting outside its range."""
        if self.queue_size < 1:
            raise ValueError(f"queue size must be at least 1, got {self.queue_size}")
        if self.queue_bytes < MAX_DATAGRAM:
            raise ValueError(f"queue bytes must be at least {MAX_DATAGRAM}, got {self.queue_bytes}")
        if self.batch_seconds <= 0:
            raise ValueError(f"batch seconds must be positive, got {self.batch_seconds}")
        if self.stats_interval <= 0:
            raise ValueError(f"stats interval must be positive, got {self.stats_interval}")
        if self.duration is not None and self.duration <= 0:
            raise ValueError(f"duration must be positive, got {self.duration}")
        if self.max_packets is not None and self.max_packets < 1:
            raise ValueError(f"max packets must be at least 1, got {self.max_packets}")
        if self.max_keys < 1:
            raise ValueError(f"max keys must be at least 1, got {self.max_keys}")


@dataclass
class Batch:
    """Edges and hourly buckets aggregated over one batch interval."""

    sequence: int
    edges: pd.DataFrame
    hours: pd.DataFrame
    started_at: float
    ended_at: float
    final: bool = False
    # The collector's counters when the batch was handed over (see FlowCollector.counters).
    counters: dict[str, Any] = field(default_factory=dict)


@dataclass
class _ReaderCounters:
    """Counters only the reader thread writes."""

    received: int = 0
    received_bytes: int = 0
    dropped: int = 0
    dropped_bytes: int = 0
    queued_bytes: int = 0
    receive_errors: int = 0


@dataclass
class _DecoderSideCounters:
    """Counters only the decoder and writer threads write."""

    dequeued: int = 0
    dequeued_bytes: int = 0
    queue_peak: int = 0
    decode_errors: int = 0
    failed_batches: int = 0
    batches: int = 0
    batches_delayed: int = 0
    batch_errors: int = 0
    exporters: set[str] = field(default_factory=set)


class FlowCollector:
    """Receive flow exports on UDP sockets, decode, aggregate and hand over batches.

    Parameters
    ----------
    listen : sequence of ListenAddress
        Addresses to bind, one UDP socket each.
    settings : CollectorSettings, optional
    on_batch : callable, optional
        Called in the writer thread with each :class:`Batch`, also the
        last one when the collector stops. An exception it raises is
        logged and counted in ``batch_errors``, and the collector goes on.
    on_stats : callable, optional
        Called with :meth:`counters` every ``stats_interval`` seconds.
    stats_file : path, optional
        JSON file rewritten (atomically) with the counters every stats
        interval and at the end.
    decoder, aggregator : optional
        A :class:`~twin.discovery.netflow.FlowDecoder` and an
        :class:`~twin.discovery.flowagg.Aggregator`; new ones built from
        ``settings`` by default.
    """

    def __init__(
        self,
        listen: Sequence[ListenAddress],
        *,
        settings: CollectorSettings | None = None,
        on_batch: Callable[[Batch], Any] | None = None,
        on_stats: Callable[[dict[str, Any]], Any] | None = None,
        stats_file: str | Path | None = None,
        decoder: Any = None,
        aggregator: Any = None,
    ) -> None:
        if not listen:
            raise CollectorError("no listen address; give at least one, such as 127.0.0.1:2055")
        self.listen = list(listen)
        self.settings = settings or CollectorSettings()
        self.settings.check()
        self.on_batch = on_batch
        self.on_stats = on_stats
        self._problems_reported = 0
        self.stats_file = Path(stats_file) if stats_file else None
        if decoder is None:
            from twin.discovery.netflow import FlowDecoder

            decoder = FlowDecoder(
                pending_max_sets=self.settings.pending_max_sets,
                pending_max_age_s=self.settings.pending_max_age_s,
            )
        if aggregator is None:
            from twin.discovery.flowagg import Aggregator

            aggregator = Aggregator(max_keys=self.settings.max_keys)
        self.decoder = decoder
        self.aggregator = aggregator

        self._queue: queue.Queue = queue.Queue(maxsize=self.settings.queue_size)
        self._batches: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._input_done = threading.Event()
        self._finished = threading.Event()
        self._reader = _ReaderCounters()
        self._side = _DecoderSideCounters()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.bound: list[ListenAddress] = []
        self.receive_buffers: dict[str, int] = {}
        self._socket_inodes: set[int] = set()
        self._kernel_dropped = 0
        self.started_at: float | None = None
        self.last_batch_error: str | None = None
        self._stats_lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        """Bind the sockets and start the threads.

        Raises
        ------
        CollectorError
            When an address cannot be bound (in use, not on this host, or a
            privileged port without the right to bind it).
        """
        try:
            for address in self.listen:
                self._sockets.append(self._bind(address))
        except CollectorError:
            self._close_sockets()
            raise
        self.started_at = time.time()
        log.info(
            "flow collector started on %s (receive buffers %s bytes, queue %d datagrams)",
            ", ".join(str(a) for a in self.bound),
            ", ".join(str(v) for v in self.receive_buffers.values()),
            self.settings.queue_size,
        )
        self._threads = [
            threading.Thread(target=self._read_loop, name="flow-reader", daemon=True),
            threading.Thread(target=self._decode_loop, name="flow-decoder", daemon=True),
            threading.Thread(target=self._write_loop, name="flow-writer", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Ask the collector to stop; the last batch is still handed over. Safe in a signal handler."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the collector has stopped and stored its last batch; return whether it has."""
        return self._finished.wait(timeout)

    def run(self) -> dict[str, Any]:
        """Start, collect until a stop condition, stop cleanly, and return the final counters."""
        self.start()
        try:
            while not self.wait(POLL_S * 5):
                pass
        finally:
            self.stop()
            self.join(FINAL_WRITE_TIMEOUT_S)
        return self.counters()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every thread to end; return whether they did."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.error("flow collector: threads %s still running after %.0f s", ", ".join(alive), timeout)
        self._close_sockets()
        return not alive

    # -- counters -----------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        """Return a snapshot of every counter as a JSON-ready dict.

        ``received`` counts datagrams taken from the sockets, ``dropped``
        those the full queue could not take, ``decoded`` those the decoder
        read, and ``waiting_for_template`` and ``undecodable`` count data
        sets, as :class:`~twin.discovery.netflow.DecoderCounters` defines.
        ``kernel_dropped`` counts datagrams the kernel dropped because a
        socket's receive buffer was full (Linux only, else 0).
        """
        reader, side = self._reader, self._side
        decoder = _copy_counters(self.decoder.counters)
        aggregator = dict(getattr(self.aggregator, "counters", {}) or {})
        out: dict[str, Any] = {
            "received": reader.received,
            "received_bytes": reader.received_bytes,
            "dropped": reader.dropped,
            "dropped_bytes": reader.dropped_bytes,
            "receive_errors": reader.receive_errors,
            "queue_depth": max(0, reader.received - reader.dropped - side.dequeued),
            "queue_peak": side.queue_peak,
            "decoded": decoder.get("decoded_datagrams", 0),
            "records": decoder.get("records", 0),
            "malformed": decoder.get("malformed", 0),
            "waiting_for_template": decoder.get("waiting_for_template", 0),
            "undecodable": decoder.get("undecodable", 0),
            "templates": decoder.get("templates", 0),
            "template_withdrawals": decoder.get("template_withdrawals", 0),
            "exporter_resets": decoder.get("exporter_resets", 0),
            "unsupported": decoder.get("unsupported", 0),
            "decode_errors": side.decode_errors,
            "exporters": len(side.exporters),
            "batches": side.batches,
            "batches_delayed": side.batches_delayed,
            "batch_errors": side.batch_errors,
        }
        for name, value in aggregator.items():
            out[f"aggregator_{name}"] = value
        out["receive_buffer_bytes"] = min(self.receive_buffers.values()) if self.receive_buffers else 0
        out["kernel_dropped"] = self._read_kernel_dropped()
        out["uptime_s"] = round(time.time() - self.started_at, 3) if self.started_at else 0.0
        return out

    # -- sockets ------------------------------------------------------------

    def _bind(self, address: ListenAddress) -> socket.socket:
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.settings.receive_buffer)
            sock.bind((address.host, address.port))
        except OSError as exc:
            sock.close()
            raise CollectorError(
                f"cannot listen on UDP {address}: {exc.strerror or exc}; "
                "choose another port or an address of this host (ports below 1024 need root)"
            ) from None
        sock.setblocking(False)
        self._socket_inodes.add(os.fstat(sock.fileno()).st_ino)
        bound = ListenAddress(address.host, sock.getsockname()[1])
        self.bound.append(bound)
        # Linux reports twice the granted size (the kernel's bookkeeping share included).
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.receive_buffers[str(bound)] = granted
        if granted < self.settings.receive_buffer:
            log.warning(
                "UDP %s: receive buffer is %d bytes, less than the %d requested; "
                "raise net.core.rmem_max to absorb longer bursts",
                bound, granted, self.settings.receive_buffer,
            )
        return sock

    def _read_kernel_dropped(self) -> int:
        """Return the kernel's drop count of the listening sockets, or the last one read once they are closed."""
        if self._sockets:
            dropped = _socket_drops(self._socket_inodes)
            if dropped is not None:
                self._kernel_dropped = dropped
        return self._kernel_dropped

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets = []

    # -- reader thread ------------------------------------------------------

    def _read_loop(self) -> None:
        settings = self.settings
        counters = self._reader
        side = self._side
        buffer = bytearray(MAX_DATAGRAM)
        view = memoryview(buffer)
        deadline = time.monotonic() + settings.duration if settings.duration else None
        selector = selectors.DefaultSelector()
        for sock in self._sockets:
            selector.register(sock, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    log.info("flow collector: duration of %s s reached", settings.duration)
                    break
                for key, _ in selector.select(POLL_S):
                    sock = key.fileobj
                    # Drain what the socket holds, up to the queue size per wake-up.
                    for _ in range(settings.queue_size):
                        try:
                            size, sender = sock.recvfrom_into(buffer)
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError as exc:
                            counters.receive_errors += 1
                            if counters.receive_errors <= 10:
                                log.warning("flow collector: receive failed: %s", exc)
                            break
                        counters.received += 1
                        counters.received_bytes += size
                        held = counters.queued_bytes - side.dequeued_bytes
                        if held + size > settings.queue_bytes:
                            counters.dropped += 1
                            counters.dropped_bytes += size
                        else:
                            try:
                                self._queue.put_nowait((bytes(view[:size]), _exporter(sender[0]), time.time()))
                                counters.queued_bytes += size
                            except queue.Full:
                                counters.dropped += 1
                                counters.dropped_bytes += size
                        if settings.max_packets is not None and counters.received >= settings.max_packets:
                            log.info("flow collector: %d datagrams received, the --max-packets limit", counters.received)
                            return
        finally:
            selector.close()
            self._input_done.set()

    # -- decoder thread -----------------------------------------------------

    def _decode_loop(self) -> None:
        settings = self.settings
        batch_started = time.time()
        next_expire = time.monotonic() + EXPIRE_INTERVAL_S
        next_batch = time.monotonic() + settings.batch_seconds
        next_stats = time.monotonic() + settings.stats_interval
        sequence = 0
        pending_records = 0
        try:
            while True:
                items = self._take(DECODE_CHUNK, DECODE_CHUNK_BYTES)
                if items:
                    pending_records += self._decode(items)
                elif self._input_done.is_set() and self._queue.empty():
                    break
                now = time.monotonic()
                if now >= next_expire:
                    self.decoder.expire(time.time())
                    next_expire = now + EXPIRE_INTERVAL_S
                if now >= next_batch:
                    outcome = self._hand_over(sequence, batch_started, final=False)
                    if outcome != "delayed":
                        batch_started = time.time()
                    if outcome == "handed":
                        sequence += 1
                    next_batch = now + settings.batch_seconds
                if now >= next_stats:
                    self._report_stats()
                    next_stats = now + settings.stats_interval
            self.decoder.expire(time.time())
            self._hand_over(sequence, batch_started, final=True)
        except Exception:
            log.exception("flow collector: decoder thread failed; stopping")
            self._stop.set()
            self._batches_put(None)
            raise

    def _take(self, limit: int, limit_bytes: int) -> list[tuple[bytes, str, float]]:
        try:
            first = self._queue.get(timeout=POLL_S)
        except queue.Empty:
            return []
        items = [first]
        size = len(first[0])
        for _ in range(limit - 1):
            if size >= limit_bytes:
                break
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            items.append(item)
            size += len(item[0])
        side = self._side
        side.queue_peak = max(side.queue_peak, len(items) + self._queue.qsize())
        return items

    def _decode(self, items: list[tuple[bytes, str, float]]) -> int:
        side = self._side
        side.dequeued += len(items)
        side.dequeued_bytes += sum(len(item[0]) for item in items)
        side.exporters.update(item[1] for item in items)
        decode_many = getattr(self.decoder, "decode_many", None)
        if decode_many is None:
            return self._decode_each(items)
        try:
            records = decode_many(items)
        except Exception as exc:  # the decoder promises not to raise; count and go on if it does
            side.decode_errors += len(items)
            side.failed_batches += 1
            if side.failed_batches <= 10:
                log.error("flow collector: decoder failed on a batch of %d datagrams; they are lost: %r", len(items), exc)
            return 0
        if records.num_rows:
            self.aggregator.add(records)
        return records.num_rows

    def _decode_each(self, items: list[tuple[bytes, str, float]]) -> int:
        """Decode datagram by datagram, with a decoder that has no ``decode_many``."""
        side = self._side
        tables = []
        for data, exporter, received_at in items:
            try:
                table = self.decoder.decode(data, exporter, received_at)
            except Exception as exc:  # the decoder promises not to raise; count and go on if it does
                side.decode_errors += 1
                if side.decode_errors <= 10:
                    log.error("flow collector: decoder failed on a datagram from %s: %r", exporter, exc)
                continue
            if table.num_rows:
                tables.append(table)
        if not tables:
            return 0
        records = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        self.aggregator.add(records)
        return records.num_rows

    def _hand_over(self, sequence: int, started_at: float, *, final: bool) -> str:
        """Drain the aggregator into a batch for the writer.

        Returns ``handed``, ``empty`` (no edges, nothing handed over) or
        ``delayed`` (the writer is still storing the previous batch, so the
        aggregator keeps this one growing).
        """
        if self.on_batch is None:
            # No handler stores batches, but draining keeps memory bounded.
            edges, _ = self.aggregator.drain()
            log.info("flow collector: batch %d of %d edges discarded (no batch handler)", sequence, len(edges))
            if final:
                self._batches_put(None)
            return "empty"
        if not final and self._batches.full():
            self._side.batches_delayed += 1
            log.warning("flow collector: the previous batch is still being stored; batch %d grows until it is done", sequence)
            return "delayed"
        edges, hours = self.aggregator.drain()
        if edges.empty and not final:
            return "empty"
        batch = Batch(sequence, edges, hours, started_at, time.time(), final=final, counters=self.counters())
        if not final:
            self._batches.put_nowait(batch)
            return "handed"
        if not self._batches_put(batch, timeout=FINAL_WRITE_TIMEOUT_S):
            log.error("flow collector: the last batch (%d edges) was not stored: the writer is still busy", len(edges))
        self._batches_put(None, timeout=FINAL_WRITE_TIMEOUT_S)
        return "handed"

    def _batches_put(self, item: Batch | None, timeout: float = 0.0) -> bool:
        try:
            self._batches.put(item, timeout=timeout) if timeout else self._batches.put_nowait(item)
            return True
        except queue.Full:
            return False

    # -- writer thread ------------------------------------------------------

    def _write_loop(self) -> None:
        try:
            while True:
                try:
                    batch = self._batches.get(timeout=POLL_S * 5)
                except queue.Empty:
                    if not any(t.is_alive() for t in self._threads[:2]):
                        break
                    continue
                if batch is None:
                    break
                self._store(batch)
        finally:
            self._report_stats()
            self._finished.set()

    def _store(self, batch: Batch) -> None:
        side = self._side
        if batch.edges.empty:
            return
        try:
            self.on_batch(batch)
        except Exception as exc:
            side.batch_errors += 1
            self.last_batch_error = str(exc)
            log.error(
                "flow collector: batch %d (%d edges) was not stored: %s", batch.sequence, len(batch.edges), exc,
                exc_info=not _is_twin_error(exc),
            )
            return
        side.batches += 1

    # -- statistics ---------------------------------------------------------

    def _log_problems(self) -> None:
        """Log the decoder problems found since the last report: the newest few, and a count of the rest."""
        total = getattr(self.decoder, "problems_total", None)
        problems = getattr(self.decoder, "problems", None)
        if total is None or problems is None:
            return
        new = total - self._problems_reported
        self._problems_reported = total
        if new <= 0:
            return
        recent = list(problems)[-min(new, PROBLEMS_LOGGED, len(problems)):]
        for problem in recent:
            log.warning(
                "flow collector: datagram from %s, offset %d, field %s: %s",
                problem.exporter, problem.offset, problem.field, problem.message,
            )
        if new > len(recent):
            log.warning("flow collector: %d more decoding problems since the last report (counted as malformed, unsupported or undecodable)", new - len(recent))

    def _report_stats(self) -> None:
        with self._stats_lock:
            counters = self.counters()
            log.info(
                "flow collector: received %d, dropped %d, decoded %d, records %d, waiting for template %d, undecodable %d",
                counters["received"], counters["dropped"], counters["decoded"], counters["records"],
                counters["waiting_for_template"], counters["undecodable"],
            )
            self._log_problems()
            if self.stats_file is not None:
                _write_json(self.stats_file, counters)
            if self.on_stats is not None:
                try:
                    self.on_stats(counters)
                except Exception:
                    log.exception("flow collector: the statistics callback failed")


def _socket_drops(inodes: set[int]) -> int | None:
    """Return the datagrams the kernel dropped on the UDP sockets with these inode numbers.

    Reads the ``drops`` column of ``/proc/net/udp`` and ``/proc/net/udp6``
    (Linux). Returns None when those files are missing or list none of the
    sockets.
    """
    total = 0
    found = False
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name, encoding="ascii") as handle:
                lines = handle.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            # sl, local and remote address, state, queues, timers, uid, timeout, inode, ref, pointer, drops
            fields = line.split()
            if len(fields) > 12 and fields[9].isdigit() and int(fields[9]) in inodes:
                total += int(fields[12])
                found = True
    return total if found else None


def _copy_counters(counters: Any) -> dict[str, Any]:
    """Return ``counters.as_dict()``, retrying while the decoder thread adds a key to one of its dicts."""
    for _ in range(10):
        try:
            return counters.as_dict()
        except RuntimeError:
            continue
    return {}


def _exporter(host: str) -> str:
    """Return an exporter's address text, with IPv4-mapped IPv6 written as IPv4."""
    if host.startswith("::ffff:") and "." in host:
        return host[len("::ffff:") :]
    return host


def _is_twin_error(exc: Exception) -> bool:
    from twin.exceptions import TwinError

    return isinstance(exc, TwinError)


def _write_json(path: Path, value: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        log.error("flow collector: cannot write statistics file %s: %s", path, exc)


def write_batch_files(out_dir: str | Path, batch: Batch) -> list[Path]:
    """Write a batch's edges and hourly buckets as Parquet files into ``out_dir``; return their paths.

    Files are named ``flows-<UTC time>-<sequence>-edges.parquet`` and
    ``...-hours.parquet`` and appear complete or not at all (written under a
    temporary name, then renamed).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(batch.ended_at))
    written = []
    for kind, frame in (("edges", batch.edges), ("hours", batch.hours)):
        path = out / f"flows-{stamp}-{batch.sequence:06d}-{kind}.parquet"
        temporary = path.with_name(path.name + ".tmp")
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), temporary, compression="zstd")
        os.replace(temporary, path)
        written.append(path)
    return written
