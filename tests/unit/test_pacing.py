"""The pacing proxy on 127.0.0.1: rate, concurrency, rejected destinations, SOCKS4 protocol errors.

Every socket here is on loopback: the proxy, the test servers behind it
(127.0.0.1 and 127.0.0.2) and the clients.
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest

from twin.discovery.budget import DEFAULT_BUDGETS
from twin.discovery.pacing import PacingError, PacingProxy, max_in_window, needs_pacing
from twin.discovery.scope import ScopeGuard
from twin.model.site import Discovery

pytestmark = pytest.mark.timeout(60)

# Slack for thread wake-up on a loaded 2-core machine, in seconds.
JITTER_S = 0.02


class Server:
    """Loopback TCP server: records accept times and open connections, echoes data, keeps each connection open for hold_s."""

    def __init__(self, host: str = "127.0.0.1", hold_s: float = 0.0, backlog: int = 16, accept: bool = True):
        self.listener = socket.socket()
        self.listener.bind((host, 0))
        self.listener.listen(backlog)
        self.listener.settimeout(0.1)
        self.host = host
        self.port = self.listener.getsockname()[1]
        self.hold_s = hold_s
        self.accepted: list[float] = []
        self.open_now = 0
        self.peak = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        if accept:
            self.thread = threading.Thread(target=self._loop, daemon=True)
            self.thread.start()

    def _loop(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            with self.lock:
                self.accepted.append(time.monotonic())
                self.open_now += 1
                self.peak = max(self.peak, self.open_now)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn):
        conn.settimeout(2)
        deadline = time.monotonic() + self.hold_s
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
        except OSError:
            pass
        left = deadline - time.monotonic()
        if left > 0:
            time.sleep(left)
        with self.lock:
            self.open_now -= 1
        conn.close()

    def close(self):
        self.stop.set()
        self.listener.close()
        for thread in self.threads:
            thread.join(3)


def _guard() -> ScopeGuard:
    return ScopeGuard(Discovery(scopes=["127.0.0.0/29"], exclude=["127.0.0.5/32"]))


def _request(address: str, port: int, command: int = 1, userid: bytes = b"") -> bytes:
    return struct.pack(">BBH", 4, command, port) + socket.inet_aton(address) + userid + b"\0"


def socks_connect(proxy: PacingProxy, address: str, port: int, *, payload: bytes | None = None) -> tuple[int, socket.socket]:
    """Send a SOCKS4 CONNECT through the proxy; return the reply code and the open socket."""
    client = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    client.sendall(payload if payload is not None else _request(address, port))
    reply = b""
    while len(reply) < 8:
        chunk = client.recv(8 - len(reply))
        if not chunk:
            break
        reply += chunk
    assert len(reply) == 8, f"short SOCKS4 reply {reply!r}"
    return reply[1], client


def _in_parallel(count: int, function) -> list:
    results: list = [None] * count

    def run(i):
        results[i] = function(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


@pytest.fixture
def server():
    server = Server(hold_s=0.0)
    yield server
    server.close()


# --------------------------------------------------------------------------
# Relaying


def test_relay_returns_echoed_bytes(server):
    data = bytes(range(256)) * 400 + b"\0\xff binary"
    with PacingProxy(["127.0.0.1"], max_rate=50, max_connections=2, check=_guard().check, phase_gap_s=0) as proxy:
        code, client = socks_connect(proxy, "127.0.0.1", server.port)
        assert code == 0x5A
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := client.recv(65536):
            received += chunk
        client.close()
    assert received == data
    assert [(c.address, c.port, c.outcome) for c in proxy.connections] == [("127.0.0.1", server.port, "connected")]


def test_proxy_listens_on_loopback_only():
    with PacingProxy(["127.0.0.1"], max_rate=5, max_connections=1, check=_guard().check) as proxy:
        assert proxy._listener.getsockname()[0] == "127.0.0.1"
        assert proxy.url == f"socks4://127.0.0.1:{proxy.port}"


# --------------------------------------------------------------------------
# Rate and concurrency


def test_rate_spaces_every_connection(server):
    rate = 20
    count = 12
    with PacingProxy(["127.0.0.1"], max_rate=rate, max_connections=count, check=_guard().check, phase_gap_s=0) as proxy:
        def one(_):
            code, client = socks_connect(proxy, "127.0.0.1", server.port)
            client.close()
            return code

        codes = _in_parallel(count, one)
    assert codes == [0x5A] * count
    sent = sorted(c.sent for c in proxy.connections)
    gaps = [b - a for a, b in zip(sent, sent[1:])]
    assert min(gaps) >= 1 / rate
    accepted = sorted(server.accepted)
    assert len(accepted) == count
    server_gaps = [b - a for a, b in zip(accepted, accepted[1:])]
    assert min(server_gaps) >= 1 / rate - JITTER_S
    assert max_in_window(sent) <= rate


def test_rate_within_one_second_window():
    """With max_rate 5 and 12 requests at once, no 1 s window contains more than 5 SYNs."""
    server = Server(hold_s=0.0)
    try:
        with PacingProxy(["127.0.0.1"], max_rate=5, max_connections=12, check=_guard().check, phase_gap_s=0) as proxy:
            _in_parallel(12, lambda _: socks_connect(proxy, "127.0.0.1", server.port)[1].close())
    finally:
        server.close()
    assert len(server.accepted) == 12
    assert max_in_window([c.sent for c in proxy.connections]) == 5
    assert proxy.summary()["max_connections_per_s"] == 5


def test_concurrency_capped_per_target():
    first = Server("127.0.0.1", hold_s=0.4)
    second = Server("127.0.0.2", hold_s=0.4)
    try:
        with PacingProxy(["127.0.0.1", "127.0.0.2"], max_rate=100, max_connections=2, check=_guard().check,
                         phase_gap_s=0) as proxy:
            def one(i):
                target = first if i % 2 else second
                code, client = socks_connect(proxy, target.host, target.port)
                # Keep the client side open until the server closes after hold_s.
                client.settimeout(5)
                client.recv(1)
                client.close()
                return code

            codes = _in_parallel(8, one)
    finally:
        first.close()
        second.close()
    assert codes == [0x5A] * 8
    assert (first.peak, second.peak) == (2, 2)
    assert proxy.summary()["peak_connections"] == {"127.0.0.1": 2, "127.0.0.2": 2}


class BannerServer(Server):
    """Sends a banner the moment it accepts, as SSH does."""

    BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"

    def _serve(self, conn):
        try:
            conn.sendall(self.BANNER)
        except OSError:
            # nmap's connect scan resets the connection at once.
            pass
        super()._serve(conn)


def test_phase_gap_delays_first_connection_and_target_data():
    gap = 0.5
    banner = BannerServer()
    try:
        with PacingProxy(["127.0.0.1"], max_rate=50, max_connections=2, check=_guard().check, phase_gap_s=gap) as proxy:
            before = time.monotonic()
            code, client = socks_connect(proxy, "127.0.0.1", banner.port)
            granted = time.monotonic()
            received = client.recv(1024)
            first_byte = time.monotonic()
            client.close()
    finally:
        banner.close()
    assert code == 0x5A
    assert received == BannerServer.BANNER
    attempt = proxy.connections[0]
    assert attempt.requested >= before
    assert attempt.sent - attempt.requested >= gap
    assert granted - attempt.sent < gap
    assert first_byte - attempt.sent >= gap


def test_refused_connect_reply_held_for_gap():
    closed = Server(accept=False)
    port = closed.port
    closed.close()
    with PacingProxy(["127.0.0.1"], max_rate=50, max_connections=1, check=_guard().check, phase_gap_s=0.4) as proxy:
        code, client = socks_connect(proxy, "127.0.0.1", port)
        replied = time.monotonic()
        client.close()
    assert code == 0x5B
    assert [c.outcome for c in proxy.connections] == ["ECONNREFUSED"]
    assert replied - proxy.connections[0].sent >= 0.4


def test_stalled_connect_times_out_with_one_attempt():
    """A target that never accepts (full backlog) gets 0x5B after the connect timeout."""
    stalled = Server(backlog=0, accept=False)
    fillers = []
    try:
        # Fill the listen queue so the kernel drops further SYNs.
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", stalled.port))
            fillers.append(filler)
        time.sleep(0.1)
        with PacingProxy(["127.0.0.1"], max_rate=50, max_connections=1, check=_guard().check, phase_gap_s=0,
                         connect_timeout_s=0.3) as proxy:
            started = time.monotonic()
            code, client = socks_connect(proxy, "127.0.0.1", stalled.port)
            elapsed = time.monotonic() - started
            client.close()
    finally:
        for filler in fillers:
            filler.close()
        stalled.close()
    assert code == 0x5B
    assert [c.outcome for c in proxy.connections] == ["ETIMEDOUT"]
    assert 0.3 <= elapsed < 1.0


# --------------------------------------------------------------------------
# Rejected destinations


def test_out_of_plan_destinations_rejected(server):
    other = Server("127.0.0.2")
    excluded_target_port = server.port
    try:
        with PacingProxy(["127.0.0.1", "127.0.0.5"], max_rate=50, max_connections=2, check=_guard().check,
                         ports=[server.port], phase_gap_s=0) as proxy:
            results = {
                "not a target": socks_connect(proxy, "127.0.0.2", other.port)[0],
                "port not in budget": socks_connect(proxy, "127.0.0.1", other.port)[0],
                "guard rejects": socks_connect(proxy, "127.0.0.5", excluded_target_port)[0],
                "allowed": socks_connect(proxy, "127.0.0.1", server.port)[0],
            }
    finally:
        other.close()
    assert results == {"not a target": 0x5B, "port not in budget": 0x5B, "guard rejects": 0x5B, "allowed": 0x5A}
    assert other.accepted == []
    assert len(server.accepted) == 1
    reasons = [(r.address, r.port, r.reason.split(":")[0]) for r in proxy.rejections]
    assert reasons == [
        ("127.0.0.2", other.port, "the address is not a target of this scan group"),
        ("127.0.0.1", other.port, f"port {other.port} is not in the budget's TCP ports"),
        ("127.0.0.5", excluded_target_port, "the scope guard rejected it"),
    ]
    assert [(c.address, c.port) for c in proxy.connections] == [("127.0.0.1", server.port)]


# --------------------------------------------------------------------------
# SOCKS4 protocol errors


PROTOCOL_ERRORS = {
    "socks5 greeting": (b"\x05\x01\x00", "version byte 0x05"),
    "http request": (b"CONNECT 127.0.0.1:80 HTTP/1.0\r\n\r\n", "version byte 0x43"),
    "bind command": (_request("127.0.0.1", 80, command=2), "command 2"),
    "socks4a host name": (struct.pack(">BBH", 4, 1, 80) + b"\0\0\0\x01" + b"\0" + b"example.org\0", "a SOCKS4a host name"),
    "port zero": (_request("127.0.0.1", 0), "destination port 0"),
    "user id too long": (struct.pack(">BBH", 4, 1, 80) + socket.inet_aton("127.0.0.1") + b"u" * 300, "user id longer"),
    "binary after request": (_request("127.0.0.1", 80) + b"\0\xff\xfe", "bytes after the request"),
}


@pytest.mark.parametrize("name", sorted(PROTOCOL_ERRORS))
def test_protocol_error_rejected(name, server):
    payload, reason = PROTOCOL_ERRORS[name]
    with PacingProxy(["127.0.0.1"], max_rate=50, max_connections=2, check=_guard().check, phase_gap_s=0) as proxy:
        code, client = socks_connect(proxy, "", 0, payload=payload)
        client.close()
        # The proxy keeps serving after a bad client.
        good, second = socks_connect(proxy, "127.0.0.1", server.port)
        second.close()
    assert code == 0x5B
    assert good == 0x5A
    assert len(proxy.rejections) == 1
    assert reason in proxy.rejections[0].reason
    assert [(c.address, c.port) for c in proxy.connections] == [("127.0.0.1", server.port)]


def test_truncated_request_rejected():
    with PacingProxy(["127.0.0.1"], max_rate=50, max_connections=2, check=_guard().check, request_timeout_s=0.3) as proxy:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        client.sendall(b"\x04\x01\x00")
        reply = client.recv(8)
        client.close()
        closed = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        closed.sendall(b"\x04\x01")
        closed.shutdown(socket.SHUT_WR)
        closed.recv(8)
        closed.close()
        deadline = time.monotonic() + 5
        while len(proxy.rejections) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert reply[:2] == b"\x00\x5b"
    reasons = sorted(r.reason for r in proxy.rejections)
    assert reasons == [
        "invalid SOCKS4 request: the client closed the connection after 2 bytes of the request",
        "no complete SOCKS4 request within 0.3 s",
    ]
    assert proxy.connections == []


# --------------------------------------------------------------------------
# Lifecycle and settings


def test_close_ends_threads_and_listener(server):
    proxy = PacingProxy(["127.0.0.1"], max_rate=50, max_connections=2, check=_guard().check, phase_gap_s=0).start()
    code, client = socks_connect(proxy, "127.0.0.1", server.port)
    port = proxy.port
    proxy.close()
    client.close()
    assert code == 0x5A
    assert [t.name for t in threading.enumerate() if t.name.startswith(f"pacing-") and str(port) in t.name] == []
    assert [t for t in proxy._threads if t.is_alive()] == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_rate": 0, "max_connections": 1}, "invalid max_rate 0"),
        ({"max_rate": 5, "max_connections": 0}, "invalid max_connections 0"),
    ],
)
def test_invalid_limits_raise(kwargs, message):
    with pytest.raises(PacingError, match=message):
        PacingProxy(["127.0.0.1"], check=_guard().check, **kwargs)


def test_ipv6_target_raises():
    with pytest.raises(PacingError, match="target ::1 is IPv6"):
        PacingProxy(["::1"], max_rate=5, max_connections=1, check=_guard().check)


def test_needs_pacing_by_budget():
    paced = {name for name, budget in DEFAULT_BUDGETS.items() if needs_pacing(budget)}
    assert paced == {"workstation", "server", "pacs"}


def test_max_in_window_half_open():
    assert max_in_window([]) == 0
    assert max_in_window([0.0, 0.5, 1.0, 1.5]) == 2
    assert max_in_window([0.0, 0.2, 0.4, 0.6, 0.8, 0.999]) == 6


# --------------------------------------------------------------------------
# The runner: --proxies on the command line, and real nmap through the proxy


def test_build_argv_rejects_proxies():
    from twin.discovery.active import ScanRejected, build_argv

    for option in ("--proxies", "--proxy"):
        with pytest.raises(ScanRejected, match=f"nmap argument '{option}' in the scan plan adds targets, output files or a proxy"):
            build_argv("nmap", ["-n", "-Pn", option, "socks4://127.0.0.1:1080"], "out.xml", ["127.0.0.1"])


def test_describe_pacing_lists_version_groups():
    from datetime import datetime, timezone

    from twin.discovery.active import describe_pacing
    from twin.discovery.plan import ScanGroup, ScanPlan, WindowCheck, nmap_arguments

    groups = [ScanGroup(DEFAULT_BUDGETS[name], ["10.0.0.1"], nmap_arguments(DEFAULT_BUDGETS[name])) for name in ("printer", "workstation")]
    plan = ScanPlan("Ward", datetime.now(timezone.utc), groups, [], [], WindowCheck(True, "open"))
    lines = describe_pacing(plan)
    assert len(lines) == 1
    assert lines[0].startswith("pacing: group workstation: nmap also gets --proxies socks4://127.0.0.1:PORT")
    assert "at most 50 connections per second, keeps at most 4 open per target" in lines[0]


def _service_versions(xml_path) -> set[tuple]:
    import xml.etree.ElementTree as ElementTree

    root = ElementTree.parse(xml_path).getroot()
    found = set()
    for port in root.iter("port"):
        service = port.find("service")
        found.add((port.get("portid"), port.find("state").get("state"), service.get("name"), service.get("product"), service.get("version")))
    return found


@pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed (apt-get install nmap)")
def test_run_plan_version_detection_through_proxy(tmp_path):
    """run_plan passes --proxies for a version budget; nmap's results equal a direct nmap -sV run."""
    from twin.discovery.active import run_plan
    from twin.discovery.plan import plan_scan
    from twin.model.site import parse_site

    banner = BannerServer()
    try:
        text = (
            "site: {name: Loopback, timezone: UTC}\n"
            "discovery:\n"
            "  scopes: [127.0.0.1/32]\n"
            "  budgets:\n"
            f"    unknown: {{probes: [connect, version], ports: [tcp/{banner.port}], max_rate: 5, max_connections: 1, host_timeout: 60s}}\n"
        )
        site_dir = tmp_path / "site"
        site_dir.mkdir()
        (site_dir / "site.yaml").write_text(text, encoding="utf-8")
        site = parse_site(text, str(site_dir / "site.yaml"))
        run = run_plan(plan_scan(None, site, targets=["127.0.0.1"]), site, site_dir)
        direct_xml = tmp_path / "direct.xml"
        subprocess.run(
            ["nmap", "-n", "-Pn", "-sT", "-p", str(banner.port), "-sV", "--version-light", "-oX", str(direct_xml), "127.0.0.1"],
            capture_output=True, timeout=60, check=True,
        )
    finally:
        banner.close()

    group = run.groups[0]
    assert (group.complete, group.reason) == (True, "")
    at = group.argv.index("--proxies")
    assert group.argv[at + 1] == group.pacing["proxy"]
    assert group.argv[at + 2] == "-oX"
    assert group.pacing["connections"] >= 1
    assert group.pacing["rejected"] == 0
    assert group.pacing["peak_connections"] == {"127.0.0.1": 1}
    proxied = _service_versions(group.xml)
    assert proxied == _service_versions(direct_xml)
    assert proxied == {(str(banner.port), "open", "ssh", "OpenSSH", "9.2p1 Debian 2+deb12u3")}
