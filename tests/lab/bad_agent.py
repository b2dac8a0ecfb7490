"""An SNMPv2c agent on 127.0.0.1 that misbehaves on purpose, for walker tests.

It serves a fixed data set of a fictional 24-port switch ``bad-sw1``
(:func:`dataset`: system group, ifTable, ifXTable ifName, BRIDGE-MIB base
port and FDB tables, LLDP-MIB local ports and remote table, ipNetToMedia)
and responds to GET, GETNEXT and GETBULK with messages encoded by pysnmp's
protocol API (``pysnmp.proto.api.v2c``) and pyasn1's BER codec. Modes:

``normal``
    Correct answers.
``backwards``
    When the next OID after a request would be :data:`BACKWARDS_AT`, the
    agent returns :data:`BACKWARDS_TO` in its place, an OID lower than the
    request, in GETNEXT and GETBULK answers alike.
``too_big``
    GETBULK with max-repetitions above ``--threshold`` gets a response with
    error-status tooBig(1) and no varbinds; smaller requests are answered.
``silent_bulk``
    GETBULK with max-repetitions above ``--threshold`` gets no answer at all;
    smaller requests are answered.
``garbled_bulk``
    GETBULK with max-repetitions above ``--threshold`` gets only the first
    half of its encoded response, which no decoder can read; smaller
    requests are answered.
``silent``
    Receives every request and answers none.
``binary``
    sysName, ifDescr.1 and the first lldpRemSysName hold bytes that are not
    UTF-8 (:data:`BINARY_VALUES`).

Every request is logged as one JSON line (``--log``): PDU type, first OID,
max-repetitions and whether it was answered, so a test can check what a
walker sent without trusting the walker.

Run it through :func:`start_bad_agent`; as a script it prints
``READY <port>`` once bound and exits after ``--lifetime`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import time
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MODES",
    "COMMUNITY",
    "BACKWARDS_AT",
    "BACKWARDS_TO",
    "BINARY_VALUES",
    "DEFAULT_THRESHOLD",
    "dataset",
    "snmprec_text",
    "BadAgent",
    "start_bad_agent",
]

MODES = ("normal", "backwards", "too_big", "silent_bulk", "garbled_bulk", "silent", "binary")
COMMUNITY = "bad-public"
# GETBULK max-repetitions above which too_big, silent_bulk and garbled_bulk misbehave.
DEFAULT_THRESHOLD = 10
# Seconds the agent runs before it exits on its own (default 600).
DEFAULT_LIFETIME_S = 600.0
# Seconds start_bad_agent waits for READY.
READY_TIMEOUT_S = 10.0

PORTS = 24
SYSTEM = (1, 3, 6, 1, 2, 1, 1)
IF_ENTRY = (1, 3, 6, 1, 2, 1, 2, 2, 1)
IFX_NAME = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 1)
NET_TO_MEDIA = (1, 3, 6, 1, 2, 1, 4, 22, 1)
DOT1D_BASE = (1, 3, 6, 1, 2, 1, 17, 1)
DOT1D_FDB = (1, 3, 6, 1, 2, 1, 17, 4, 3, 1)
LLDP_LOC_PORT = (1, 0, 8802, 1, 1, 2, 1, 3, 7, 1)
LLDP_REM = (1, 0, 8802, 1, 1, 2, 1, 4, 1, 1)

# backwards: ifDescr.12 is replaced by ifDescr.3, lower than any request
# that reaches it.
BACKWARDS_AT = IF_ENTRY + (2, 12)
BACKWARDS_TO = IF_ENTRY + (2, 3)
# binary: OID -> value that is not valid UTF-8.
BINARY_VALUES = {
    SYSTEM + (5, 0): b"bad-\xff\xfe-sw1",
    IF_ENTRY + (2, 1): b"port\x80\x81one",
    LLDP_REM + (9, 0, 1, 1): b"\xc3\x28neighbour",
}

# snmprec type tags (snmpsim format) of the values below.
INTEGER, OCTETS, OID, IPADDRESS, COUNTER32, GAUGE32, TIMETICKS = "2", "4", "6", "64", "65", "66", "67"


def _mac(last: int, first: int = 0x02) -> bytes:
    return bytes([first, 0x00, 0x5E, 0x10, 0x00, last])


def dataset(mode: str = "normal") -> list[tuple[tuple[int, ...], str, object]]:
    """Return the agent's objects as sorted ``(oid, snmprec tag, value)`` rows.

    Values are int, bytes (OCTET STRING and IpAddress) or an OID tuple.
    """
    rows: list[tuple[tuple[int, ...], str, object]] = [
        (SYSTEM + (1, 0), OCTETS, b"Bad agent switch, deliberately broken for tests"),
        (SYSTEM + (2, 0), OID, (1, 3, 6, 1, 4, 1, 8072, 3, 2, 10)),
        (SYSTEM + (3, 0), TIMETICKS, 123456),
        (SYSTEM + (4, 0), OCTETS, b"lab@example.invalid"),
        (SYSTEM + (5, 0), OCTETS, b"bad-sw1"),
        (SYSTEM + (6, 0), OCTETS, b"test bench"),
        (SYSTEM + (7, 0), INTEGER, 2),
        (DOT1D_BASE + (1, 0), OCTETS, _mac(0xFF, 0x02)),
        (DOT1D_BASE + (2, 0), INTEGER, PORTS),
    ]
    for port in range(1, PORTS + 1):
        rows += [
            (IF_ENTRY + (1, port), INTEGER, port),
            (IF_ENTRY + (2, port), OCTETS, f"GigabitEthernet1/0/{port}".encode()),
            (IF_ENTRY + (3, port), INTEGER, 6),
            (IF_ENTRY + (4, port), INTEGER, 1500),
            (IF_ENTRY + (5, port), GAUGE32, 1_000_000_000),
            (IF_ENTRY + (6, port), OCTETS, _mac(port, 0x06)),
            (IF_ENTRY + (7, port), INTEGER, 1),
            (IF_ENTRY + (8, port), INTEGER, 1 if port <= 4 else 2),
            (IF_ENTRY + (10, port), COUNTER32, port * 1000),
            (IFX_NAME + (port,), OCTETS, f"Gi1/0/{port}".encode()),
            (DOT1D_BASE + (4, 1, 1, port), INTEGER, port),
            (DOT1D_BASE + (4, 1, 2, port), INTEGER, port),
            (LLDP_LOC_PORT + (2, port), INTEGER, 5),
            (LLDP_LOC_PORT + (3, port), OCTETS, f"Gi1/0/{port}".encode()),
        ]
    # Hosts on ports 1 to 4: FDB learned(3) entries and ARP dynamic(3) entries.
    for port in range(1, 5):
        mac = _mac(0x20 + port)
        rows += [
            (DOT1D_FDB + (1, *mac), OCTETS, mac),
            (DOT1D_FDB + (2, *mac), INTEGER, port),
            (DOT1D_FDB + (3, *mac), INTEGER, 3),
            (NET_TO_MEDIA + (1, 100, 10, 0, 0, 20 + port), INTEGER, 100),
            (NET_TO_MEDIA + (2, 100, 10, 0, 0, 20 + port), OCTETS, mac),
            (NET_TO_MEDIA + (3, 100, 10, 0, 0, 20 + port), IPADDRESS, bytes([10, 0, 0, 20 + port])),
            (NET_TO_MEDIA + (4, 100, 10, 0, 0, 20 + port), INTEGER, 3),
        ]
    # LLDP neighbours on ports 1 and 2 (index timeMark.localPort.remIndex).
    for port, name in ((1, b"neighbour-a"), (2, b"neighbour-b")):
        index = (0, port, 1)
        rows += [
            (LLDP_REM + (4, *index), INTEGER, 4),
            (LLDP_REM + (5, *index), OCTETS, _mac(0x40 + port)),
            (LLDP_REM + (6, *index), INTEGER, 5),
            (LLDP_REM + (7, *index), OCTETS, b"eth0"),
            (LLDP_REM + (9, *index), OCTETS, name),
            (LLDP_REM + (12, *index), OCTETS, b"\x20"),
        ]
    if mode == "binary":
        rows = [(oid, tag, BINARY_VALUES.get(oid, value)) for oid, tag, value in rows]
    return sorted(rows)


def snmprec_text(rows) -> str:
    """Return ``rows`` as snmpsim ``OID|TAG|VALUE`` lines; bytes that are not printable ASCII become ``4x`` hex."""
    lines = []
    for oid, tag, value in rows:
        text_oid = ".".join(map(str, oid))
        if tag == OCTETS and isinstance(value, bytes) and not all(0x20 <= b < 0x7F for b in value):
            lines.append(f"{text_oid}|4x|{value.hex()}")
        elif tag == IPADDRESS:
            lines.append(f"{text_oid}|{tag}|{'.'.join(map(str, value))}")
        elif tag == OID:
            lines.append(f"{text_oid}|{tag}|{'.'.join(map(str, value))}")
        elif isinstance(value, bytes):
            lines.append(f"{text_oid}|{tag}|{value.decode('ascii')}")
        else:
            lines.append(f"{text_oid}|{tag}|{value}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Agent process


class _Agent:
    """Data set and response rules of one mode."""

    def __init__(self, mode: str, threshold: int) -> None:
        from pysnmp.proto.api import v2c

        self.v2c = v2c
        self.mode = mode
        self.threshold = threshold
        self.objects = {oid: (tag, value) for oid, tag, value in dataset(mode)}
        self.oids = sorted(self.objects)

    def _value(self, oid: tuple[int, ...]):
        v2c = self.v2c
        tag, value = self.objects[oid]
        factory = {
            INTEGER: v2c.Integer,
            OCTETS: v2c.OctetString,
            OID: v2c.ObjectIdentifier,
            IPADDRESS: v2c.IpAddress,
            COUNTER32: v2c.Counter32,
            GAUGE32: v2c.Gauge32,
            TIMETICKS: v2c.TimeTicks,
        }[tag]
        return factory(value)

    def next_of(self, oid: tuple[int, ...]):
        """Return ``(oid, value)`` following ``oid``, with the mode's misbehaviour."""
        position = bisect_right(self.oids, oid)
        if position >= len(self.oids):
            return oid, self.v2c.EndOfMibView()
        found = self.oids[position]
        if self.mode == "backwards" and found == BACKWARDS_AT:
            return BACKWARDS_TO, self._value(BACKWARDS_TO)
        return found, self._value(found)

    def get(self, oid: tuple[int, ...]):
        if oid in self.objects:
            return oid, self._value(oid)
        return oid, self.v2c.NoSuchObject()

    def answer(self, data: bytes) -> tuple[bytes | None, dict]:
        """Return the encoded response (None: send nothing) and a log record for one request."""
        from pyasn1.codec.ber import decoder, encoder

        v2c = self.v2c
        message, _ = decoder.decode(data, asn1Spec=v2c.Message())
        if bytes(v2c.apiMessage.get_community(message)) != COMMUNITY.encode():
            return None, {"pdu": "unknown-community"}
        request = v2c.apiMessage.get_pdu(message)
        names = [tuple(name) for name, _ in v2c.apiPDU.get_varbinds(request)]
        record = {"pdu": request.__class__.__name__, "oid": ".".join(map(str, names[0])) if names else None}
        response = v2c.apiMessage.get_response(message)
        response_pdu = v2c.apiMessage.get_pdu(response)

        if self.mode == "silent":
            return None, record
        if request.isSameTypeWith(v2c.GetBulkRequestPDU()):
            repetitions = int(v2c.apiBulkPDU.get_max_repetitions(request))
            non_repeaters = int(v2c.apiBulkPDU.get_non_repeaters(request))
            record["max_repetitions"] = repetitions
            if repetitions > self.threshold and self.mode == "silent_bulk":
                return None, record
            if repetitions > self.threshold and self.mode == "too_big":
                v2c.apiPDU.set_error_status(response_pdu, 1)
                v2c.apiPDU.set_error_index(response_pdu, 0)
                v2c.apiPDU.set_varbinds(response_pdu, [])
                return encoder.encode(response), record
            varbinds = [self.next_of(oid) for oid in names[:non_repeaters]]
            cursors = names[non_repeaters:]
            for _ in range(repetitions):
                if not cursors:
                    break
                row = [self.next_of(oid) for oid in cursors]
                varbinds += row
                cursors = [oid for oid, _ in row]
            v2c.apiPDU.set_varbinds(response_pdu, varbinds)
            if repetitions > self.threshold and self.mode == "garbled_bulk":
                encoded = encoder.encode(response)
                return encoded[: len(encoded) // 2], record
        elif request.isSameTypeWith(v2c.GetNextRequestPDU()):
            v2c.apiPDU.set_varbinds(response_pdu, [self.next_of(oid) for oid in names])
        elif request.isSameTypeWith(v2c.GetRequestPDU()):
            v2c.apiPDU.set_varbinds(response_pdu, [self.get(oid) for oid in names])
        else:
            return None, record
        return encoder.encode(response), record


def serve(mode: str, port: int, threshold: int, lifetime: float, log_path: str | None) -> None:
    """Respond to requests on 127.0.0.1:``port`` until ``lifetime`` seconds have passed."""
    agent = _Agent(mode, threshold)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sys.stdout.write(f"READY {sock.getsockname()[1]}\n")
    sys.stdout.flush()
    log = open(log_path, "a", encoding="utf-8") if log_path else None
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], min(1.0, max(0.0, deadline - time.monotonic())))
        if not ready:
            continue
        data, peer = sock.recvfrom(65535)
        try:
            reply, record = agent.answer(data)
        except Exception as error:  # noqa: BLE001 - a malformed request is logged, not fatal
            reply, record = None, {"pdu": "undecodable", "error": str(error)}
        record["answered"] = reply is not None
        # Logged before the reply is sent, so a test that stops the agent
        # right after its last response still finds that request in the log.
        if log:
            log.write(json.dumps(record) + "\n")
            log.flush()
        if reply is not None:
            sock.sendto(reply, peer)


# ---------------------------------------------------------------------------
# Test helper


@dataclass
class BadAgent:
    """A running bad agent: its mode, port, request log and process."""

    mode: str
    port: int
    log: Path
    process: subprocess.Popen
    threshold: int = DEFAULT_THRESHOLD

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def requests(self) -> list[dict]:
        """Return the logged requests, oldest first."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines() if line]

    def stop(self) -> None:
        """Stop the agent process (SIGTERM, then SIGKILL after 5 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stdout:
            self.process.stdout.close()

    def __enter__(self) -> "BadAgent":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start_bad_agent(mode: str, log: str | Path, *, threshold: int = DEFAULT_THRESHOLD, lifetime: float = DEFAULT_LIFETIME_S) -> BadAgent:
    """Start a bad agent in ``mode`` on a free 127.0.0.1 port and wait until it is bound."""
    if mode not in MODES:
        raise ValueError(f"unknown bad agent mode {mode!r}; expected one of {', '.join(MODES)}")
    argv = [sys.executable, os.path.abspath(__file__), "--mode", mode, "--port", "0", "--threshold", str(threshold),
            "--lifetime", str(lifetime), "--log", str(log)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    ready, _, _ = select.select([process.stdout], [], [], READY_TIMEOUT_S)
    line = process.stdout.readline().decode() if ready else ""
    if not line.startswith("READY "):
        process.kill()
        _, stderr = process.communicate(timeout=5)
        raise RuntimeError(f"bad agent {mode} did not start within {READY_TIMEOUT_S} s: {stderr.decode(errors='replace')[-1000:]}")
    return BadAgent(mode, int(line.split()[1]), Path(log), process, threshold)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SNMPv2c agent on 127.0.0.1 that misbehaves on purpose.")
    parser.add_argument("--mode", choices=MODES, default="normal")
    parser.add_argument("--port", type=int, default=0, help="UDP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--threshold", type=int, default=DEFAULT_THRESHOLD,
                        help="GETBULK max-repetitions above which too_big and silent_bulk misbehave")
    parser.add_argument("--lifetime", type=float, default=DEFAULT_LIFETIME_S, help="seconds before the agent exits")
    parser.add_argument("--log", help="file that receives one JSON line per request")
    parser.add_argument("--dump", action="store_true", help="print the mode's data set as snmprec and exit")
    args = parser.parse_args(argv)
    if args.dump:
        sys.stdout.write(snmprec_text(dataset(args.mode)))
        return 0
    serve(args.mode, args.port, args.threshold, args.lifetime, args.log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
