"""Pace nmap's version detection and NSE connections through a local SOCKS4 proxy.

nmap 7.93 applies ``--max-rate`` to its port scan but not to service version
detection (``-sV``) or NSE scripts. Those two phases open their TCP
connections through nmap's nsock library, which honours ``--proxies``. The
scan runner (:mod:`twin.discovery.active`) therefore starts a
:class:`PacingProxy` for each group whose budget has ``version`` or
``scripts`` probes and passes ``--proxies socks4://127.0.0.1:PORT`` to that
group's nmap. The proxy makes every outbound connection itself, so the
limits hold because the proxy enforces them, whatever nmap's own timing does:

* **Destinations.** A request is rejected (SOCKS4 reply 0x5B) unless its
  address is one of the group's targets, the scope guard's check function
  accepts it again, and its port is one of the budget's TCP ports.
* **Rate.** Outbound connection attempts are spaced at least
  ``1 / max_rate`` seconds apart, measured from the moment the previous
  ``connect()`` call returned, so any half-open 1 s window contains at most
  ``ceil(max_rate)`` of the proxy's SYNs.
* **Concurrency.** At most ``max_connections`` relayed connections per
  target are open at once; further requests wait for a free slot.
* **Phase gaps.** The first connection to a target waits
  :data:`PHASE_GAP_S` after the first request for it, and nmap gets nothing
  about an attempt (a rejection, the target's data, its close) before
  :data:`PHASE_GAP_S` after its SYN. nmap runs its phases one after the other (port scan, version
  detection, scripts, then the next host with ``--max-hostgroup 1``). So
  the proxy's SYNs never share a 1 s window with the SYNs of nmap's own port
  scans, before or after, and the two rates never add up.
* **One SYN per attempt.** :data:`CONNECT_TIMEOUT_S` is below Linux's
  initial SYN retransmission timeout of 1 s, so the kernel never sends a
  second, unpaced SYN for one attempt.

The proxy listens on 127.0.0.1 only, on a port the kernel picks, and serves
SOCKS4 CONNECT only: no BIND, no SOCKS4a host names, no SOCKS5. Its threads
end when :meth:`PacingProxy.close` is called; every socket has a timeout and
every relay buffer is bounded.

NOTE: nmap sends UDP version probes and OS detection probes itself, not
through nsock's proxy chain, so this proxy paces TCP connections only.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from twin.exceptions import TwinError

__all__ = [
    "PROXY_HOST",
    "PHASE_GAP_S",
    "CONNECT_TIMEOUT_S",
    "REQUEST_TIMEOUT_S",
    "QUEUE_TIMEOUT_S",
    "IDLE_TIMEOUT_S",
    "BUFFER_BYTES",
    "MAX_CLIENTS",
    "PacingError",
    "ProxyConnection",
    "Rejection",
    "PacingProxy",
    "needs_pacing",
    "max_in_window",
]

log = logging.getLogger(__name__)

# Address the proxy listens on. Loopback only, so no other host can use it.
PROXY_HOST = "127.0.0.1"
# Seconds between nmap's first request for a target and the proxy's first SYN
# to it, and between each proxied SYN and the moment nmap receives anything
# about that connection (default 1.0). Rates are measured over 1 s windows, so a gap of 1 s keeps
# the proxy's SYNs and nmap's port-scan SYNs in separate windows.
PHASE_GAP_S = 1.0
# Seconds an outbound connection may take to be accepted (default 0.9). Below
# Linux's initial SYN retransmission timeout (1 s), so each attempt sends
# exactly one SYN. A target slower than this is reported to nmap as rejected.
CONNECT_TIMEOUT_S = 0.9
# Seconds a client has to send its whole SOCKS4 request (default 5).
REQUEST_TIMEOUT_S = 5.0
# Seconds a request may wait for a free connection slot of its target
# (default 20); after that it is rejected.
QUEUE_TIMEOUT_S = 20.0
# Seconds a relayed connection may stay without traffic either way before the
# proxy closes it (default 30).
IDLE_TIMEOUT_S = 30.0
# Bytes read from one side of a relayed connection at a time (default 16384).
# The relay writes each chunk before it reads the next, so a connection keeps
# at most this many bytes in the proxy.
BUFFER_BYTES = 16384
# Client connections served at once (default 64); further clients are closed
# at once. One group's nmap opens a few connections at a time.
MAX_CLIENTS = 64
# Rejections logged one by one (default 20); later ones are only counted.
MAX_LOGGED_REJECTIONS = 20
# Seconds the select loops wait before they look at the stop flag (default 0.2).
POLL_INTERVAL_S = 0.2
# Seconds close() waits for each thread to end (default 5).
JOIN_TIMEOUT_S = 5.0

SOCKS4_VERSION = 4
SOCKS4_CONNECT = 1
SOCKS4_GRANTED = 0x5A
SOCKS4_REJECTED = 0x5B
# Maximum length of the user id in a request, in bytes (nmap sends an empty one).
MAX_USERID_BYTES = 255


class PacingError(TwinError):
    """The pacing proxy could not start, or was given invalid limits."""


class _ProtocolError(Exception):
    """A client sent something that is not a valid SOCKS4 CONNECT request."""


@dataclass
class ProxyConnection:
    """One outbound connection attempt the proxy made for nmap.

    Times are :func:`time.monotonic` seconds. ``sent`` is taken right after
    ``connect()`` returned, so the SYN left at or before it.
    """

    address: str
    port: int
    requested: float
    sent: float
    outcome: str = "pending"


@dataclass
class Rejection:
    """A request the proxy rejected with SOCKS4 reply 0x5B (or closed), and why."""

    client: str
    address: str | None
    port: int | None
    reason: str


def needs_pacing(budget) -> bool:
    """Return True when a budget's nmap run opens connections that ``--max-rate`` does not pace.

    Those are version detection and NSE scripts on TCP ports.
    """
    return bool(budget.tcp_ports) and bool({"version", "scripts"} & set(budget.probes))


def max_in_window(times: Iterable[float], width: float = 1.0) -> int:
    """Return the maximum number of events in any half-open window ``[t, t + width)``."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - width:
            start += 1
        best = max(best, end - start + 1)
    return best


class _Slots:
    """Concurrent-connection slots per target address."""

    def __init__(self, limit: int):
        self.limit = limit
        self.open: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.condition = threading.Condition()

    def acquire(self, address: str, timeout: float, stop: threading.Event) -> bool:
        deadline = time.monotonic() + timeout
        with self.condition:
            while self.open.get(address, 0) >= self.limit:
                left = deadline - time.monotonic()
                if left <= 0 or stop.is_set():
                    return False
                self.condition.wait(min(left, POLL_INTERVAL_S))
            self.open[address] = self.open.get(address, 0) + 1
            self.peak[address] = max(self.peak.get(address, 0), self.open[address])
            return True

    def release(self, address: str) -> None:
        with self.condition:
            self.open[address] -= 1
            self.condition.notify_all()


class PacingProxy:
    """SOCKS4 proxy on 127.0.0.1 that paces and restricts nmap's proxied connections.

    Parameters
    ----------
    targets : iterable of str or ip address
        The group's targets, as the scope guard returned them. Requests for
        any other address are rejected.
    max_rate : float
        Outbound connection attempts per second (the budget's ``max_rate``).
    max_connections : int
        Relayed connections open at once per target (the budget's
        ``max_connections``).
    check : callable
        Called with the destination address as a string before every
        connection; any exception rejects the request. The runner passes
        :meth:`twin.discovery.scope.ScopeGuard.check`, so the same function
        decides here as for the plan.
    ports : iterable of int, optional
        TCP ports that may be connected to (the budget's ``tcp_ports``).
        None allows every port of the targets.
    phase_gap_s, connect_timeout_s, queue_timeout_s, idle_timeout_s, request_timeout_s : float
        See :data:`PHASE_GAP_S`, :data:`CONNECT_TIMEOUT_S`,
        :data:`QUEUE_TIMEOUT_S`, :data:`IDLE_TIMEOUT_S` and
        :data:`REQUEST_TIMEOUT_S`.

    Raises
    ------
    PacingError
        When ``max_rate`` or ``max_connections`` is not positive, or a target
        is not an IPv4 address (SOCKS4 carries IPv4 addresses only).

    Examples
    --------
    >>> with PacingProxy(["10.0.0.5"], max_rate=5, max_connections=2, check=guard.check) as proxy:  # doctest: +SKIP
    ...     subprocess.run(["nmap", ..., "--proxies", proxy.url, "10.0.0.5"])
    """

    def __init__(
        self,
        targets: Iterable[Any],
        *,
        max_rate: float,
        max_connections: int,
        check: Callable[[str], Any],
        ports: Iterable[int] | None = None,
        phase_gap_s: float = PHASE_GAP_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        queue_timeout_s: float = QUEUE_TIMEOUT_S,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ):
        if not max_rate > 0:
            raise PacingError(f"invalid max_rate {max_rate!r}; expected a positive number of connections per second")
        if int(max_connections) < 1:
            raise PacingError(f"invalid max_connections {max_connections!r}; expected an integer of at least 1")
        self.targets = frozenset(self._ipv4(target) for target in targets)
        self.max_rate = float(max_rate)
        self.max_connections = int(max_connections)
        self.check = check
        self.ports = frozenset(int(p) for p in ports) if ports is not None else None
        self.phase_gap_s = float(phase_gap_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self.queue_timeout_s = float(queue_timeout_s)
        self.idle_timeout_s = float(idle_timeout_s)
        self.request_timeout_s = float(request_timeout_s)

        self.connections: list[ProxyConnection] = []
        self.rejections: list[Rejection] = []
        self._slots = _Slots(self.max_connections)
        self._clients = threading.BoundedSemaphore(MAX_CLIENTS)
        self._pace_lock = threading.Lock()
        self._next_slot = 0.0
        self._first_request: dict[str, float] = {}
        self._record_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self.port: int | None = None

    @staticmethod
    def _ipv4(target: Any) -> str:
        try:
            address = ipaddress.ip_address(str(target))
        except ValueError:
            raise PacingError(f"invalid target {target!r} for the pacing proxy; expected an IPv4 address") from None
        if address.version != 4:
            raise PacingError(
                f"target {address} is IPv6, but SOCKS4 carries IPv4 addresses only; "
                "scan IPv6 targets without version detection or scripts"
            )
        return str(address)

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """The value for nmap's ``--proxies``: ``socks4://127.0.0.1:PORT``."""
        if self.port is None:
            raise PacingError("the pacing proxy is not started; call start() first")
        return f"socks4://{PROXY_HOST}:{self.port}"

    def start(self) -> "PacingProxy":
        """Bind 127.0.0.1 on a port the kernel picks and start accepting clients."""
        if self._listener is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind((PROXY_HOST, 0))
            listener.listen(MAX_CLIENTS)
        except OSError as exc:
            listener.close()
            raise PacingError(f"the pacing proxy could not listen on {PROXY_HOST}: {exc.strerror or exc}") from None
        listener.settimeout(POLL_INTERVAL_S)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"pacing-accept-{self.port}", daemon=True)
        self._acceptor.start()
        log.info(
            "pacing proxy %s started: %d targets, max_rate %s/s, max_connections %d",
            self.url, len(self.targets), self.max_rate, self.max_connections,
        )
        return self

    def close(self) -> None:
        """Stop accepting, close every relayed connection and wait for the proxy's threads to end."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
        with self._record_lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        threads = [self._acceptor] if self._acceptor is not None else []
        with self._record_lock:
            threads += list(self._threads)
        for thread in threads:
            thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                log.warning("pacing proxy thread %s did not end within %.0f s", thread.name, JOIN_TIMEOUT_S)
        if self.port is not None:
            log.info(
                "pacing proxy %s stopped: %d connections, %d rejected",
                self.url, len(self.connections), len(self.rejections),
            )

    def __enter__(self) -> "PacingProxy":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def summary(self) -> dict[str, Any]:
        """Return the proxy's settings and counts, for the scan manifest."""
        sent = [c.sent for c in self.connections]
        return {
            "proxy": self.url if self.port is not None else None,
            "max_rate": self.max_rate,
            "max_connections": self.max_connections,
            "connections": len(self.connections),
            "rejected": len(self.rejections),
            "max_connections_per_s": max_in_window(sent),
            "peak_connections": dict(sorted(self._slots.peak.items())),
            "rejections": [f"{r.address}:{r.port}: {r.reason}" for r in self.rejections[:MAX_LOGGED_REJECTIONS]],
        }

    # ------------------------------------------------------------ serving

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                client, peer = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            if not self._clients.acquire(blocking=False):
                self._reject(None, f"{peer[0]}:{peer[1]}", None, None, f"more than {MAX_CLIENTS} clients at once")
                client.close()
                continue
            thread = threading.Thread(
                target=self._serve_client, args=(client, f"{peer[0]}:{peer[1]}"), name=f"pacing-client-{peer[1]}", daemon=True
            )
            with self._record_lock:
                self._threads.add(thread)
                self._sockets.add(client)
            thread.start()

    def _serve_client(self, client: socket.socket, peer: str) -> None:
        try:
            self._handle(client, peer)
        except OSError as exc:
            if not self._stop.is_set():
                log.warning("pacing proxy: connection from %s failed: %s", peer, exc)
        finally:
            client.close()
            with self._record_lock:
                self._sockets.discard(client)
                self._threads.discard(threading.current_thread())
            self._clients.release()

    def _handle(self, client: socket.socket, peer: str) -> None:
        client.settimeout(self.request_timeout_s)
        try:
            address, port = _read_request(client, self.request_timeout_s)
        except _ProtocolError as exc:
            self._reject(client, peer, None, None, f"invalid SOCKS4 request: {exc}")
            return
        except socket.timeout:
            self._reject(client, peer, None, None, f"no complete SOCKS4 request within {self.request_timeout_s:g} s")
            return
        requested = time.monotonic()
        reason = self._rejection_reason(address, port)
        if reason is not None:
            self._reject(client, peer, address, port, reason)
            return
        with self._pace_lock:
            self._first_request.setdefault(address, requested)
        if not self._slots.acquire(address, self.queue_timeout_s, self._stop):
            self._reject(client, peer, address, port,
                         f"no free connection slot of {self.max_connections} within {self.queue_timeout_s:g} s")
            return
        try:
            self._connect_and_relay(client, peer, address, port, requested)
        finally:
            self._slots.release(address)

    def _rejection_reason(self, address: str, port: int) -> str | None:
        """Return why a destination may not be connected to, or None when it may."""
        if address not in self.targets:
            return "the address is not a target of this scan group"
        if self.ports is not None and port not in self.ports:
            return f"port {port} is not in the budget's TCP ports"
        try:
            self.check(address)
        except Exception as exc:  # noqa: BLE001 - any failure of the check rejects the request
            return f"the scope guard rejected it: {exc}"
        return None

    def _connect_and_relay(self, client: socket.socket, peer: str, address: str, port: int, requested: float) -> None:
        if _peer_closed(client):
            log.debug("pacing proxy: %s closed while its request for %s:%d waited; nothing was sent", peer, address, port)
            return
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with self._record_lock:
            self._sockets.add(upstream)
        try:
            started = self._paced_connect(upstream, address, port, requested)
            if started is None:
                return
            attempt, code = started
            error = self._finish_connect(upstream, attempt, code)
            attempt.outcome = "connected" if error == 0 else errno.errorcode.get(error, str(error))
            # nmap learns nothing about this attempt (rejection, data, close)
            # before PHASE_GAP_S after its SYN, so nmap's next phase starts
            # at least that long after it.
            hold_until = attempt.sent + self.phase_gap_s
            if error != 0:
                log.info("pacing proxy: connection to %s:%d for %s failed: %s", address, port, peer, attempt.outcome)
                hold = hold_until - time.monotonic()
                if hold > 0 and self._stop.wait(hold):
                    return
                _send_reply(client, SOCKS4_REJECTED, address, port)
                return
            # The grant goes out at once and the target's first bytes only at
            # hold_until. When an SSH banner reached nmap 7.93 right behind
            # the 8-byte reply, nmap lost the banner and reported the port as
            # tcpwrapped (loopback test), so the two must not arrive together.
            _send_reply(client, SOCKS4_GRANTED, address, port)
            self._relay(client, upstream, hold_until)
        finally:
            upstream.close()
            with self._record_lock:
                self._sockets.discard(upstream)

    def _paced_connect(
        self, upstream: socket.socket, address: str, port: int, requested: float
    ) -> tuple[ProxyConnection, int] | None:
        """Start a non-blocking connect no sooner than the rate and the phase gap allow.

        Returns the attempt and ``connect_ex``'s code, or None when the proxy stopped first.
        """
        with self._pace_lock:
            earliest = max(self._next_slot, self._first_request[address] + self.phase_gap_s)
            wait = earliest - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return None
            upstream.setblocking(False)
            code = upstream.connect_ex((address, port))
            sent = time.monotonic()
            self._next_slot = sent + 1.0 / self.max_rate
        attempt = ProxyConnection(address, port, requested, sent)
        with self._record_lock:
            self.connections.append(attempt)
        return attempt, code

    def _finish_connect(self, upstream: socket.socket, attempt: ProxyConnection, code: int) -> int:
        """Wait for the connect to complete; return 0 or the errno (ETIMEDOUT after the connect timeout)."""
        if code not in (0, errno.EINPROGRESS):
            return code
        left = attempt.sent + self.connect_timeout_s - time.monotonic()
        _, writable, _ = select.select([], [upstream], [], max(left, 0.0))
        if not writable:
            # Closing the socket before the kernel's first retransmission
            # (1 s) keeps this attempt at one SYN.
            return errno.ETIMEDOUT
        return upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)

    def _relay(self, client: socket.socket, upstream: socket.socket, hold_until: float) -> None:
        """Copy bytes both ways until both sides closed, the proxy stops or the connection is idle too long.

        Nothing from the target (data or close) is read before ``hold_until``
        (a :func:`time.monotonic` time); the client's bytes pass at once.
        """
        client.setblocking(True)
        upstream.setblocking(True)
        client.settimeout(self.idle_timeout_s)
        upstream.settimeout(self.idle_timeout_s)
        other = {client: upstream, upstream: client}
        open_sides = [client, upstream]
        idle_since = time.monotonic()
        while open_sides and not self._stop.is_set():
            holding = time.monotonic() < hold_until
            watched = [side for side in open_sides if not (holding and side is upstream)]
            wait = min(POLL_INTERVAL_S, max(hold_until - time.monotonic(), 0.0)) if holding else POLL_INTERVAL_S
            readable, _, _ = select.select(watched, [], [], wait)
            if not readable:
                if holding:
                    continue
                if time.monotonic() - idle_since > self.idle_timeout_s:
                    log.info("pacing proxy: closing a connection idle for %.0f s", self.idle_timeout_s)
                    return
                continue
            idle_since = time.monotonic()
            for side in readable:
                try:
                    data = side.recv(BUFFER_BYTES)
                    if data:
                        other[side].sendall(data)
                        continue
                except OSError as exc:
                    # nmap resets connections once a probe has its response.
                    log.debug("pacing proxy: relayed connection ended: %s", exc)
                    return
                open_sides.remove(side)
                try:
                    other[side].shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def _reject(self, client: socket.socket | None, peer: str, address: str | None, port: int | None, reason: str) -> None:
        rejection = Rejection(peer, address, port, reason)
        with self._record_lock:
            self.rejections.append(rejection)
            count = len(self.rejections)
        if count <= MAX_LOGGED_REJECTIONS:
            log.warning("pacing proxy rejected %s:%s from %s: %s", address or "-", port or "-", peer, reason)
        elif count == MAX_LOGGED_REJECTIONS + 1:
            log.warning("pacing proxy: more rejections follow; they are counted in the manifest only")
        if client is not None:
            try:
                _send_reply(client, SOCKS4_REJECTED, address or "0.0.0.0", port or 0)
            except OSError:
                pass


# --------------------------------------------------------------------------
# SOCKS4 wire format


def _read_request(client: socket.socket, timeout: float) -> tuple[str, int]:
    """Read one SOCKS4 CONNECT request: VN=4, CD=1, DSTPORT, DSTIP, USERID, NUL."""
    deadline = time.monotonic() + timeout
    data = b""

    while len(data) < 8 or b"\0" not in data[8:]:
        if len(data) >= 8 + MAX_USERID_BYTES + 1:
            raise _ProtocolError(f"user id longer than {MAX_USERID_BYTES} bytes")
        if len(data) >= 1 and data[0] != SOCKS4_VERSION:
            raise _ProtocolError(f"version byte 0x{data[0]:02x}; expected 0x04 (SOCKS4)")
        if len(data) >= 2 and data[1] != SOCKS4_CONNECT:
            raise _ProtocolError(f"command {data[1]}; expected 1 (CONNECT), the only command served")
        if time.monotonic() > deadline:
            raise socket.timeout()
        chunk = client.recv(8 + MAX_USERID_BYTES + 1 - len(data))
        if not chunk:
            raise _ProtocolError(f"the client closed the connection after {len(data)} bytes of the request")
        data += chunk

    version, command, port = struct.unpack(">BBH", data[:4])
    if version != SOCKS4_VERSION:
        raise _ProtocolError(f"version byte 0x{version:02x}; expected 0x04 (SOCKS4)")
    if command != SOCKS4_CONNECT:
        raise _ProtocolError(f"command {command}; expected 1 (CONNECT), the only command served")
    if data[4:7] == b"\0\0\0" and data[7] != 0:
        raise _ProtocolError("a SOCKS4a host name request; expected an IPv4 address")
    end = data.index(b"\0", 8)
    if end + 1 != len(data):
        raise _ProtocolError("bytes after the request's user id; expected the request alone")
    address = socket.inet_ntoa(data[4:8])
    if port == 0:
        raise _ProtocolError("destination port 0; expected 1-65535")

    return address, port


def _send_reply(client: socket.socket, code: int, address: str, port: int) -> None:
    client.sendall(struct.pack(">BBH", 0, code, port) + socket.inet_aton(address))


def _peer_closed(client: socket.socket) -> bool:
    """Return True when the client has closed its side (nmap gave up while the request waited)."""
    readable, _, _ = select.select([client], [], [], 0)
    if not readable:
        return False
    try:
        return client.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True
