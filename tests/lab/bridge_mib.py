"""BRIDGE-MIB (RFC 4188) for a Linux bridge, as a net-snmp ``pass_persist`` script.

net-snmp 5.9 serves no BRIDGE-MIB for a Linux bridge, so the lab's switch
snmpd runs this file (``pass_persist .1.3.6.1.2.1.17 PYTHON bridge_mib.py
--bridge br0``) inside the switch namespace. It serves, from ``ip -j link``,
``bridge -j fdb`` and ``/sys/class/net/BRIDGE/brif/PORT/port_no``:

- dot1dBaseBridgeAddress (1.3.6.1.2.1.17.1.1.0), dot1dBaseNumPorts (.1.2.0)
  and dot1dBaseType (.1.3.0, transparent-only(2));
- dot1dBasePortTable (.1.4.1): dot1dBasePort and dot1dBasePortIfIndex per
  bridge port, the port number being the kernel's ``port_no``;
- dot1dTpFdbTable (.4.3.1): dot1dTpFdbAddress, dot1dTpFdbPort and
  dot1dTpFdbStatus per unicast MAC, indexed by the six MAC octets.
  Dynamic entries are learned(3). Permanent entries (the bridge's and each
  port's own MAC) are self(4). The bridge's own MAC has port 0, as RFC 4188
  prescribes for an address that is not learned on a port.

Protocol (net-snmp ``pass_persist``): snmpd writes ``PING`` (response
``PONG``), ``get`` or ``getnext`` followed by an OID line (response: OID,
type and value lines, or ``NONE``), or ``set`` (response ``not-writable``). The
tables are read again when they are older than :data:`REFRESH_S`.

Only the standard library is used, because snmpd runs this file as a plain
script.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from bisect import bisect_right
from pathlib import Path

BRIDGE_MIB = (1, 3, 6, 1, 2, 1, 17)
BASE = BRIDGE_MIB + (1,)
BASE_PORT_ENTRY = BASE + (4, 1)
TP_FDB_ENTRY = BRIDGE_MIB + (4, 3, 1)
# Seconds a read of the kernel tables is reused before it is read again.
REFRESH_S = 1.0
# Seconds one `ip` or `bridge` command may run.
COMMAND_TIMEOUT_S = 5.0

FDB_LEARNED = 3
FDB_SELF = 4


def _json_command(argv: list[str]) -> list[dict]:
    output = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=True).stdout
    return json.loads(output or "[]")


def _mac_octets(mac: str) -> tuple[int, ...]:
    return tuple(int(part, 16) for part in mac.split(":"))


def _is_unicast(octets: tuple[int, ...]) -> bool:
    return len(octets) == 6 and not octets[0] & 0x01


def read_bridge(bridge: str) -> dict[tuple[int, ...], tuple[str, object]]:
    """Return the BRIDGE-MIB objects of ``bridge``: ``{oid: (pass_persist type, value)}``."""
    links = _json_command(["ip", "-j", "link", "show"])
    bridge_link = next(link for link in links if link["ifname"] == bridge)
    ports: dict[str, tuple[int, int]] = {}
    for link in links:
        if link.get("master") != bridge:
            continue
        port_no = Path(f"/sys/class/net/{bridge}/brif/{link['ifname']}/port_no").read_text().strip()
        ports[link["ifname"]] = (int(port_no, 0), link["ifindex"])

    objects: dict[tuple[int, ...], tuple[str, object]] = {
        BASE + (1, 0): ("octet", _mac_octets(bridge_link["address"])),
        BASE + (2, 0): ("integer", len(ports)),
        BASE + (3, 0): ("integer", 2),
    }
    for port, if_index in ports.values():
        objects[BASE_PORT_ENTRY + (1, port)] = ("integer", port)
        objects[BASE_PORT_ENTRY + (2, port)] = ("integer", if_index)

    for entry in _json_command(["bridge", "-j", "fdb", "show", "br", bridge]):
        # Entries flagged "self" are the devices' own multicast filters, not
        # the bridge's forwarding database.
        if entry.get("master") != bridge or "self" in entry.get("flags", []):
            continue
        octets = _mac_octets(entry["mac"])
        if not _is_unicast(octets):
            continue
        permanent = entry.get("state") == "permanent"
        port = 0 if entry["ifname"] == bridge else ports.get(entry["ifname"], (0, 0))[0]
        objects[TP_FDB_ENTRY + (1,) + octets] = ("octet", octets)
        objects[TP_FDB_ENTRY + (2,) + octets] = ("integer", port)
        objects[TP_FDB_ENTRY + (3,) + octets] = ("integer", FDB_SELF if permanent else FDB_LEARNED)
    return objects


def _format(oid: tuple[int, ...], kind: str, value) -> str:
    text = " ".join(f"{octet:02x}" for octet in value) if kind == "octet" else str(value)
    return f".{'.'.join(map(str, oid))}\n{kind}\n{text}\n"


def _parse_oid(text: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(arc) for arc in text.strip().strip(".").split(".") if arc)
    except ValueError:
        return None


class BridgeMib:
    """Sorted BRIDGE-MIB objects of one bridge, read again when older than REFRESH_S."""

    def __init__(self, bridge: str) -> None:
        self.bridge = bridge
        self.read_at = 0.0
        self.oids: list[tuple[int, ...]] = []
        self.objects: dict[tuple[int, ...], tuple[str, object]] = {}

    def refresh(self) -> None:
        if time.monotonic() - self.read_at < REFRESH_S:
            return
        self.objects = read_bridge(self.bridge)
        self.oids = sorted(self.objects)
        self.read_at = time.monotonic()

    def get(self, oid: tuple[int, ...]) -> str:
        self.refresh()
        if oid in self.objects:
            return _format(oid, *self.objects[oid])
        return "NONE\n"

    def get_next(self, oid: tuple[int, ...]) -> str:
        self.refresh()
        position = bisect_right(self.oids, oid)
        if position < len(self.oids):
            found = self.oids[position]
            return _format(found, *self.objects[found])
        return "NONE\n"


def serve(bridge: str, stdin=sys.stdin, stdout=sys.stdout) -> None:
    """Respond to pass_persist requests on ``stdin`` until snmpd closes it."""
    mib = BridgeMib(bridge)
    while True:
        command = stdin.readline()
        if not command:
            return
        command = command.strip().lower()
        if command == "ping":
            stdout.write("PONG\n")
        elif command in ("get", "getnext"):
            oid = _parse_oid(stdin.readline())
            if oid is None:
                stdout.write("NONE\n")
            elif command == "get":
                stdout.write(mib.get(oid))
            else:
                stdout.write(mib.get_next(oid))
        elif command == "set":
            stdin.readline()
            stdin.readline()
            stdout.write("not-writable\n")
        else:
            stdout.write("NONE\n")
        stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bridge", default="br0", help="Linux bridge to serve (default br0)")
    parser.add_argument("--dump", action="store_true", help="print every object once and exit, for debugging")
    args = parser.parse_args(argv)
    if args.dump:
        for oid, (kind, value) in sorted(read_bridge(args.bridge).items()):
            sys.stdout.write(_format(oid, kind, value).replace("\n", " ") + "\n")
        return 0
    serve(args.bridge)
    return 0


if __name__ == "__main__":
    sys.exit(main())
