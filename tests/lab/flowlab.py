"""Flow exporters and a reference collector for the namespace lab.

Library part, used by the flow lab test:

* :class:`Softflowd` starts softflowd 1.1.0 on an interface of a lab
  namespace, exporting NetFlow v5, v9 or IPFIX to one or more collectors,
  with its own control socket and pidfile, and drives it with softflowctl.
* :func:`flush_capture` pushes captured packets through softflowd's capture
  buffer (see below).
* :class:`Nfcapd` starts nfcapd (nfdump 1.7.1) in a lab namespace, and
  :func:`nfdump_aggregate` reads what it wrote with nfdump.

Script part: this file run as a program inside a lab namespace generates
traffic of known size, so a test can derive what the exporter should see. Kinds:

``tcp-send HOST PORT BYTES``
    Connect, send BYTES bytes, half-close, wait for the server to close.
``udp-send HOST PORT COUNT SIZE [--echo]``
    Send COUNT datagrams of SIZE bytes; with ``--echo`` wait for each reply.
``udp-broadcast PORT COUNT SIZE``
    Send COUNT datagrams to 255.255.255.255 out of ``eth0`` (stays on the lab segment).
``icmp-echo HOST COUNT SIZE``
    Send COUNT ICMP echo requests with SIZE bytes of data and wait for each
    reply (raw socket, needs root).
``udp-sink PORT``
    Receive and discard datagrams; prints ``READY`` once bound.
``ether-fill IFACE COUNT``
    Send COUNT broadcast Ethernet frames with EtherType :data:`FILL_ETHERTYPE`.

Each kind prints one line of JSON with what it sent and received. Only the
standard library is used in the script part, because it runs as a plain file.

Why the fill frames: softflowd reads packets through libpcap's memory-mapped
ring without a timeout, so it receives captured packets only when a ring
block of about 256 KiB fills up. With Debian 12's libpcap 1.10.3 and
softflowd's snaplen, the first block held 1,818 frames in a trial. Frames of an EtherType that softflowd does not decode
fill the block without creating flows, and softflowd counts them as
"non-IP" ignored packets, so a nonzero count proves that every packet captured
before them has been processed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "FLOW_VERSIONS",
    "FILL_ETHERTYPE",
    "SoftflowdStatistics",
    "Softflowd",
    "Nfcapd",
    "NfdumpRow",
    "flowlab_unavailable",
    "flush_capture",
    "nfdump_aggregate",
    "traffic_argv",
    "start_udp_sink",
    "main",
]

# Test parameter name -> softflowd ``-v`` value.
FLOW_VERSIONS = {"v5": "5", "v9": "9", "ipfix": "10"}

# IEEE 802 local experimental EtherType 1, which no lab program decodes.
FILL_ETHERTYPE = 0x88B5

# Frames sent per flush round; more than one ring block of softflowd (1,818).
FILL_FRAMES = 2500
# Flush rounds before flush_capture gives up (default 6).
FILL_ROUNDS = 6

# Seconds a daemon gets to become ready (control socket, bound port).
READY_TIMEOUT_S = 10.0
# Seconds a daemon gets to exit after a shutdown request or SIGTERM.
STOP_TIMEOUT_S = 10.0
# Seconds a traffic generator waits for a reply or for the peer to close.
REPLY_TIMEOUT_S = 5.0
# Seconds one nfdump read may take.
NFDUMP_TIMEOUT_S = 60.0

_TOOLS = ("ip", "softflowd", "softflowctl", "nfcapd", "nfdump")


def flowlab_unavailable() -> str | None:
    """Return why the flow lab cannot run here (not root, a tool missing), or None when it can."""
    if os.geteuid() != 0:
        return "the flow lab needs root (network namespaces, packet capture)"
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        return f"the flow lab needs {', '.join(missing)} on PATH (apt-get install softflowd nfdump iproute2)"
    return None


# ------------------------------------------------------------------ softflowd


@dataclass
class SoftflowdStatistics:
    """Counters of ``softflowctl statistics`` (softflowd 1.1.0 wording)."""

    active_flows: int
    packets_processed: int
    ignored_non_ip: int
    flows_exported: int
    records_exported: int
    datagrams_exported: int
    send_failures: int
    pcap_received: int
    pcap_dropped: int
    interface_dropped: int
    text: str = ""


_STATISTICS_PATTERNS = {
    "active_flows": r"Number of active flows: (\d+)",
    "packets_processed": r"Packets processed: (\d+)",
    "ignored_non_ip": r"Ignored packets: \d+ \((\d+) non-IP",
    "flows_exported": r"Flows exported: (\d+)",
    "records_exported": r"Flows exported: \d+ \((\d+) records\)",
    "datagrams_exported": r"Flows exported: .* in (\d+) packets",
    "send_failures": r"Flows exported: .* \((\d+) failures\)",
    "pcap_received": r"Packets received by libpcap: (\d+)",
    "pcap_dropped": r"Packets dropped by libpcap: (\d+)",
    "interface_dropped": r"Packets dropped by interface: (\d+)",
}


def parse_softflowd_statistics(text: str) -> SoftflowdStatistics:
    """Parse the output of ``softflowctl statistics``; raise ValueError when a counter is missing."""
    values = {}
    for name, pattern in _STATISTICS_PATTERNS.items():
        match = re.search(pattern, text)
        if match is None:
            raise ValueError(f"softflowctl statistics output has no {name!r} line ({pattern}): {text[:500]!r}")
        values[name] = int(match.group(1))
    return SoftflowdStatistics(**values, text=text)


@dataclass
class Softflowd:
    """One softflowd capturing on ``iface`` in a lab namespace; its files live in ``folder``.

    Parameters
    ----------
    namespace : tests.lab.netns.Namespace
        Namespace to run in; the lab kills the process at teardown.
    iface : str
        Interface to capture on (a host's ``eth0`` or the switch's ``br0``).
    destinations : list of str
        ``HOST:PORT`` collectors; softflowd sends every datagram to each of
        them (no ``-l`` load balancing).
    version : str
        softflowd ``-v`` value: ``5``, ``9`` or ``10`` (IPFIX).
    folder : Path
        Folder for the control socket, pidfile and log.
    bpf : str
        Capture filter. Leave the exporter's own datagrams out, or softflowd
        reports flows of its own export.
    """

    namespace: object
    iface: str
    destinations: list[str]
    version: str
    folder: Path
    bpf: str = ""
    process: subprocess.Popen | None = None
    control_socket: Path = field(init=False)
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.control_socket = self.folder / f"softflowd-v{self.version}.ctl"
        self.log_path = self.folder / f"softflowd-v{self.version}.log"

    def start(self) -> "Softflowd":
        """Start softflowd in the foreground and return once its control socket responds."""
        argv = [
            "softflowd", "-d", "-i", self.iface, "-v", self.version,
            "-n", ",".join(self.destinations),
            "-c", str(self.control_socket),
            "-p", str(self.folder / f"softflowd-v{self.version}.pid"),
        ]
        if self.bpf:
            argv.append(self.bpf)
        with open(self.log_path, "wb") as log:
            self.process = self.namespace.spawn(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"softflowd -v {self.version} exited {self.process.returncode}: {self._log_tail()}")
            if self.control_socket.exists() and self._control("statistics", check=False).returncode == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"softflowd -v {self.version} control socket {self.control_socket} did not respond "
                           f"within {READY_TIMEOUT_S} s: {self._log_tail()}")

    def statistics(self) -> SoftflowdStatistics:
        """Return the current counters."""
        return parse_softflowd_statistics(self._control("statistics").stdout)

    def expire_all(self, timeout: float = READY_TIMEOUT_S) -> SoftflowdStatistics:
        """Expire and export every active flow; return the counters once no flow is active."""
        self._control("expire-all")
        deadline = time.monotonic() + timeout
        while True:
            stats = self.statistics()
            if stats.active_flows == 0 or time.monotonic() > deadline:
                return stats
            time.sleep(0.1)

    def shutdown(self) -> int:
        """Ask softflowd to exit (it exports what is left) and return its exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self._control("shutdown", check=False)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.namespace.lab._kill(self.process)
            raise RuntimeError(f"softflowd -v {self.version} did not exit within {STOP_TIMEOUT_S} s of shutdown")

    def _control(self, command: str, *, check: bool = True) -> subprocess.CompletedProcess:
        return self.namespace.run(["softflowctl", "-c", str(self.control_socket), command], check=check)

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-1000:]
        except OSError:
            return ""


def flush_capture(sender, iface: str, exporters: list[Softflowd], *, frames: int = FILL_FRAMES,
                  rounds: int = FILL_ROUNDS) -> list[SoftflowdStatistics]:
    """Send fill frames from ``sender`` until every exporter has processed all earlier packets.

    Each exporter's capture filter must let :data:`FILL_ETHERTYPE` frames in
    and no other non-IP frame, so its "non-IP" count rises only when the fill
    frames, which come after every earlier packet, reach softflowd.

    Returns the counters of each exporter; raises RuntimeError after
    ``rounds`` rounds without that proof.
    """
    for _ in range(rounds):
        sender.run(traffic_argv("ether-fill", iface, str(frames)))
        # The kernel hands a full ring block over at once; give softflowd a moment to read it.
        time.sleep(0.3)
        stats = [exporter.statistics() for exporter in exporters]
        if all(item.ignored_non_ip > 0 for item in stats):
            return stats
    raise RuntimeError(f"softflowd did not process the fill frames after {rounds} rounds of {frames}: "
                       + "; ".join(f"v{e.version} non-IP {s.ignored_non_ip}" for e, s in zip(exporters, stats)))


# -------------------------------------------------------------------- nfcapd


@dataclass
class Nfcapd:
    """One nfcapd bound to ``address:port`` in a lab namespace, writing into ``folder``."""

    namespace: object
    address: str
    port: int
    folder: Path
    process: subprocess.Popen | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.log_path = self.folder.with_name(self.folder.name + ".log")

    def start(self) -> "Nfcapd":
        """Start nfcapd in the foreground and return once it reports that it is bound."""
        self.folder.mkdir(parents=True, exist_ok=True)
        # -t 3600: one file for the whole test, written when nfcapd exits.
        argv = ["nfcapd", "-b", self.address, "-p", str(self.port), "-w", str(self.folder), "-t", "3600"]
        with open(self.log_path, "wb") as log:
            self.process = self.namespace.spawn(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nfcapd on {self.address}:{self.port} exited {self.process.returncode}: {self.log()[-1000:]}")
            if "Startup nfcapd" in self.log():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"nfcapd on {self.address}:{self.port} did not start within {READY_TIMEOUT_S} s: {self.log()[-1000:]}")

    def stop(self) -> str:
        """Stop nfcapd with SIGTERM (it writes its file on exit) and return its log."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.namespace.lab._kill(self.process)
                raise RuntimeError(f"nfcapd on {self.address}:{self.port} did not exit within {STOP_TIMEOUT_S} s of SIGTERM")
        return self.log()

    def log(self) -> str:
        """Return what nfcapd has logged so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""


@dataclass(frozen=True)
class NfdumpRow:
    """One row of ``nfdump -A``: the aggregation keys and summed counters.

    ``proto`` is the IP protocol number. Keys not aggregated on are 0 (ports)
    or empty text (addresses).
    """

    src_ip: str
    dst_ip: str
    proto: int
    src_port: int
    dst_port: int
    packets: int
    bytes: int
    flows: int


_NFDUMP_KEYS = ("srcip", "dstip", "proto", "srcport", "dstport")


def nfdump_aggregate(folder: str | Path, keys: tuple[str, ...] = _NFDUMP_KEYS) -> list[NfdumpRow]:
    """Read every nfcapd file in ``folder`` with ``nfdump -R FOLDER -A KEYS``.

    ``-N`` prints counters as plain numbers (not ``1.2 M``) and protocols as
    numbers. nfdump prints an ICMP destination port as ``TYPE.CODE``; it is
    returned as ``TYPE * 256 + CODE``, the NetFlow encoding.
    """
    unknown = set(keys) - set(_NFDUMP_KEYS)
    if unknown:
        raise ValueError(f"unsupported nfdump aggregation keys {sorted(unknown)}; expected some of {_NFDUMP_KEYS}")
    fmt = "fmt:%sa|%da|%pr|%sp|%dp|%pkt|%byt|%fl"
    result = subprocess.run(
        ["nfdump", "-R", str(folder), "-q", "-N", "-A", ",".join(keys), "-o", fmt],
        capture_output=True, text=True, timeout=NFDUMP_TIMEOUT_S, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"nfdump -R {folder} exited {result.returncode}: {result.stderr.strip()[-1000:]}")
    rows = []
    for number, line in enumerate(result.stdout.splitlines(), start=1):
        # nfdump prints this line in place of rows when the files hold no flow.
        if not line.strip() or line.strip() == "No matching flows":
            continue
        fields = [part.strip() for part in line.split("|")]
        if len(fields) != 8:
            raise ValueError(f"nfdump output line {number} has {len(fields)} fields, expected 8: {line!r}")
        src, dst, proto, src_port, dst_port, packets, octets, flows = fields
        rows.append(NfdumpRow(
            src_ip=src if "srcip" in keys else "",
            dst_ip=dst if "dstip" in keys else "",
            proto=int(proto),
            src_port=_nfdump_port(src_port) if "srcport" in keys else 0,
            dst_port=_nfdump_port(dst_port) if "dstport" in keys else 0,
            packets=int(packets),
            bytes=int(octets),
            flows=int(flows),
        ))
    return rows


def _nfdump_port(text: str) -> int:
    if "." in text:
        icmp_type, icmp_code = text.split(".", 1)
        return int(icmp_type) * 256 + int(icmp_code)
    return int(text)


# ------------------------------------------------------- traffic (script part)


def traffic_argv(kind: str, *args: str) -> list[str]:
    """Return the command line that runs traffic generator ``kind`` with ``args`` in a namespace."""
    return [sys.executable, os.path.abspath(__file__), kind, *args]


def start_udp_sink(host, port: int) -> subprocess.Popen:
    """Start a UDP sink on ``port`` in lab ``host`` and return once it is bound."""
    from tests.lab.netns import _read_line_until

    process = host.spawn(traffic_argv("udp-sink", str(port)))
    if _read_line_until(process, process.stdout, "READY", READY_TIMEOUT_S) is None:
        raise RuntimeError(f"UDP sink on {host.name}:{port} did not start within {READY_TIMEOUT_S} s")
    return process


def _tcp_send(host: str, port: int, size: int) -> dict:
    with socket.create_connection((host, port), timeout=REPLY_TIMEOUT_S) as sock:
        local_port = sock.getsockname()[1]
        sock.sendall(b"t" * size)
        sock.shutdown(socket.SHUT_WR)
        # Wait for the server's FIN, so the whole exchange is on the wire before returning.
        while sock.recv(4096):
            pass
    return {"sent_bytes": size, "src_port": local_port}


def _udp_send(host: str, port: int, count: int, size: int, echo: bool, broadcast: bool = False) -> dict:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        if broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            # A lab host has no default route, so the limited broadcast needs its interface named.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
        sock.settimeout(REPLY_TIMEOUT_S)
        sock.bind(("0.0.0.0", 0))
        replies = 0
        for _ in range(count):
            sock.sendto(b"u" * size, (host, port))
            if echo:
                sock.recvfrom(65535)
                replies += 1
        return {"sent_datagrams": count, "replies": replies, "src_port": sock.getsockname()[1]}


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _icmp_echo(host: str, count: int, size: int) -> dict:
    identifier = os.getpid() & 0xFFFF
    payload = b"e" * size
    replies = 0
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.settimeout(REPLY_TIMEOUT_S)
        for sequence in range(count):
            header = struct.pack("!BBHHH", 8, 0, 0, identifier, sequence)
            checksum = _checksum(header + payload)
            sock.sendto(struct.pack("!BBHHH", 8, 0, checksum, identifier, sequence) + payload, (host, 0))
            # The raw socket receives every ICMP message that reaches the host, so wait for this request's reply.
            deadline = time.monotonic() + REPLY_TIMEOUT_S
            while time.monotonic() < deadline:
                data, _ = sock.recvfrom(65535)
                offset = (data[0] & 0x0F) * 4
                icmp_type, _, _, reply_id, reply_sequence = struct.unpack("!BBHHH", data[offset:offset + 8])
                if icmp_type == 0 and reply_id == identifier and reply_sequence == sequence:
                    replies += 1
                    break
    return {"sent_requests": count, "replies": replies}


def _udp_sink(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    while True:
        sock.recvfrom(65535)


def _ether_fill(iface: str, count: int) -> dict:
    source = bytes.fromhex(Path(f"/sys/class/net/{iface}/address").read_text().strip().replace(":", ""))
    frame = b"\xff" * 6 + source + struct.pack("!H", FILL_ETHERTYPE) + b"\0" * 46
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((iface, 0))
        for _ in range(count):
            sock.send(frame)
    return {"sent_frames": count}


def main(argv: list[str] | None = None) -> None:
    """Run one traffic generator and print its result as JSON."""
    parser = argparse.ArgumentParser(description="Traffic of known size for the flow lab.")
    commands = parser.add_subparsers(dest="kind", required=True)
    tcp = commands.add_parser("tcp-send")
    tcp.add_argument("host")
    tcp.add_argument("port", type=int)
    tcp.add_argument("bytes", type=int)
    udp = commands.add_parser("udp-send")
    udp.add_argument("host")
    udp.add_argument("port", type=int)
    udp.add_argument("count", type=int)
    udp.add_argument("size", type=int)
    udp.add_argument("--echo", action="store_true", help="wait for a reply to each datagram")
    broadcast = commands.add_parser("udp-broadcast")
    broadcast.add_argument("port", type=int)
    broadcast.add_argument("count", type=int)
    broadcast.add_argument("size", type=int)
    icmp = commands.add_parser("icmp-echo")
    icmp.add_argument("host")
    icmp.add_argument("count", type=int)
    icmp.add_argument("size", type=int)
    sink = commands.add_parser("udp-sink")
    sink.add_argument("port", type=int)
    fill = commands.add_parser("ether-fill")
    fill.add_argument("iface")
    fill.add_argument("count", type=int)
    args = parser.parse_args(argv)

    if args.kind == "udp-sink":
        _udp_sink(args.port)
        return
    if args.kind == "tcp-send":
        result = _tcp_send(args.host, args.port, args.bytes)
    elif args.kind == "udp-send":
        result = _udp_send(args.host, args.port, args.count, args.size, args.echo)
    elif args.kind == "udp-broadcast":
        result = _udp_send("255.255.255.255", args.port, args.count, args.size, False, broadcast=True)
    elif args.kind == "icmp-echo":
        result = _icmp_echo(args.host, args.count, args.size)
    else:
        result = _ether_fill(args.iface, args.count)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
