"""Generated SNMP walks of small networks whose LLDP tables point at each other.

Each :class:`ChainDevice` becomes the varbinds of one walk: the system
group, ifTable and ifXTable, the LLDP local system and port tables, one
lldpRemTable row (with lldpRemManAddrTable) per neighbour, and a BRIDGE-MIB
forwarding table. The crawl tests feed these walks to the crawler directly
or serve them with snmpsim. Every expected value in those tests comes from
the device list, not from the code under test.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from twin.discovery.mib import LLDP_CAPABILITIES
from twin.discovery.snmp import COUNTER32, GAUGE32, INTEGER, OBJECT_IDENTIFIER, OCTET_STRING, TIMETICKS, Varbind

__all__ = ["ChainDevice", "Neighbour", "device_varbinds", "capability_bits", "chassis_mac", "port_mac"]

LLDP = (1, 0, 8802, 1, 1, 2, 1)
# Net-SNMP's Linux sysObjectID, so the vendor decodes as Net-SNMP.
SYS_OBJECT_ID = (1, 3, 6, 1, 4, 1, 8072, 3, 2, 10)


@dataclass(frozen=True)
class Neighbour:
    """One LLDP neighbour as a device reports it on ``local_port``."""

    local_port: int
    name: str
    mac: str
    address: str | None
    capabilities: tuple[str, ...] = ("bridge",)
    remote_port: str = "eth1"


@dataclass
class ChainDevice:
    """One generated SNMP agent: identity, ports, LLDP neighbours and learned MACs."""

    name: str
    number: int
    address: str
    neighbours: list[Neighbour] = field(default_factory=list)
    ports: int = 4
    fdb: dict[str, int] = field(default_factory=dict)  # learned MAC -> bridge port
    capabilities: tuple[str, ...] = ("bridge",)

    @property
    def mac(self) -> str:
        return chassis_mac(self.number)

    def neighbour_entry(self, local_port: int, remote_port: int = 1) -> Neighbour:
        """Return the LLDP entry that another device reports for this one on its ``local_port``."""
        return Neighbour(local_port, self.name, self.mac, self.address, self.capabilities, f"eth{remote_port}")


def chassis_mac(number: int) -> str:
    """Return the chassis MAC of device ``number`` (locally administered)."""
    return f"02:00:00:00:{number:02x}:00"


def port_mac(number: int, port: int) -> str:
    return f"02:00:00:00:{number:02x}:{port:02x}"


def capability_bits(names) -> bytes:
    """Return the LLDP-MIB LldpSystemCapabilitiesMap octets for capability names."""
    value = 0
    for name in names:
        value |= 0x80 >> LLDP_CAPABILITIES.index(name)
    return bytes([value, 0])


def _mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def device_varbinds(device: ChainDevice) -> list[Varbind]:
    """Return the walk of one device, sorted by OID as an agent returns it."""
    rows: list[Varbind] = []

    def add(oid: tuple[int, ...], kind: str, value) -> None:
        rows.append(Varbind(oid, kind, value))

    system = (1, 3, 6, 1, 2, 1, 1)
    add(system + (1, 0), OCTET_STRING, f"Linux {device.name} test agent".encode())
    add(system + (2, 0), OBJECT_IDENTIFIER, SYS_OBJECT_ID)
    add(system + (3, 0), TIMETICKS, 12345)
    add(system + (5, 0), OCTET_STRING, device.name.encode())
    add(system + (7, 0), INTEGER, 6)

    if_table = (1, 3, 6, 1, 2, 1, 2, 2, 1)
    if_x_table = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)
    for port in range(1, device.ports + 1):
        add(if_table + (1, port), INTEGER, port)
        add(if_table + (2, port), OCTET_STRING, f"eth{port}".encode())
        add(if_table + (3, port), INTEGER, 6)
        add(if_table + (5, port), GAUGE32, 1_000_000_000)
        add(if_table + (6, port), OCTET_STRING, _mac_bytes(port_mac(device.number, port)))
        add(if_table + (8, port), INTEGER, 1)
        add(if_x_table + (1, port), OCTET_STRING, f"eth{port}".encode())

    local = LLDP + (3,)
    add(local + (1, 0), INTEGER, 4)
    add(local + (2, 0), OCTET_STRING, _mac_bytes(device.mac))
    add(local + (3, 0), OCTET_STRING, device.name.encode())
    for port in range(1, device.ports + 1):
        add(local + (7, 1, 2, port), INTEGER, 5)
        add(local + (7, 1, 3, port), OCTET_STRING, f"eth{port}".encode())

    remote = LLDP + (4, 1, 1)
    man_addr = LLDP + (4, 2, 1)
    for neighbour in device.neighbours:
        index = (0, neighbour.local_port, 1)
        add(remote + (4,) + index, INTEGER, 4)
        add(remote + (5,) + index, OCTET_STRING, _mac_bytes(neighbour.mac))
        add(remote + (6,) + index, INTEGER, 5)
        add(remote + (7,) + index, OCTET_STRING, neighbour.remote_port.encode())
        add(remote + (9,) + index, OCTET_STRING, neighbour.name.encode())
        add(remote + (11,) + index, OCTET_STRING, capability_bits(LLDP_CAPABILITIES))
        add(remote + (12,) + index, OCTET_STRING, capability_bits(neighbour.capabilities))
        if neighbour.address is not None:
            octets = tuple(ipaddress.IPv4Address(neighbour.address).packed)
            add(man_addr + (3,) + index + (1, 4) + octets, INTEGER, 2)

    bridge = (1, 3, 6, 1, 2, 1, 17)
    for port in range(1, device.ports + 1):
        add(bridge + (1, 4, 1, 1, port), INTEGER, port)
        add(bridge + (1, 4, 1, 2, port), INTEGER, port)
    for mac, port in device.fdb.items():
        octets = tuple(_mac_bytes(mac))
        add(bridge + (4, 3, 1, 1) + octets, OCTET_STRING, _mac_bytes(mac))
        add(bridge + (4, 3, 1, 2) + octets, INTEGER, port)
        add(bridge + (4, 3, 1, 3) + octets, INTEGER, 3)
    add((1, 3, 6, 1, 2, 1, 2, 1, 0), INTEGER, device.ports)
    add((1, 3, 6, 1, 2, 1, 11, 1, 0), COUNTER32, 1)

    return sorted(rows, key=lambda varbind: varbind.oid)
