"""The graph model, declared once.

Every node label and relationship type of the twin is described here with a
description per property. Both store backends, the docs generator and the
in-memory :class:`twin.model.twin.Twin` tables are derived from these
declarations; nothing else lists the columns.

Labels are PascalCase nouns, relationship types UPPER_SNAKE verbs, properties
snake_case. Every node and relationship also carries the provenance
properties in :data:`PROVENANCE`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Property",
    "NodeLabel",
    "RelType",
    "PROVENANCE",
    "NODES",
    "RELATIONSHIPS",
    "node",
    "relationship",
]


@dataclass(frozen=True, slots=True)
class Property:
    """One property of a node or relationship.

    ``type`` is one of ``str``, ``int``, ``float``, ``bool``, ``list[str]``,
    ``json`` or ``time`` (epoch seconds, float).
    """

    name: str
    type: str
    description: str
    indexed: bool = False


@dataclass(frozen=True, slots=True)
class NodeLabel:
    """A node label, its key properties and its table."""

    label: str
    table: str
    key: tuple[str, ...]
    description: str
    properties: tuple[Property, ...]

    @property
    def columns(self) -> list[str]:
        return [p.name for p in self.properties] + [p.name for p in PROVENANCE]


@dataclass(frozen=True, slots=True)
class RelType:
    """A relationship type, its endpoints and its table.

    ``start`` and ``end`` name the columns that hold the endpoint keys.
    """

    type: str
    pattern: str
    table: str
    start: tuple[str, ...]
    end: tuple[str, ...]
    description: str
    properties: tuple[Property, ...] = ()

    @property
    def columns(self) -> list[str]:
        cols = list(self.start) + list(self.end)
        cols += [p.name for p in self.properties if p.name not in cols]
        return cols + [p.name for p in PROVENANCE]


PROVENANCE = (
    Property("first_seen", "time", "Earliest observation time of this item."),
    Property("last_seen", "time", "Latest observation time of this item."),
    Property("sources", "list[str]", "Sources that observed it (nmap, snmp, lldpd, zeek, ...)."),
    Property("run_id", "str", "Build run that last touched it.", indexed=True),
)

DEVICE = NodeLabel(
    label="Device",
    table="devices",
    key=("device_id",),
    description="A host on the hospital network: medical, IT, network, IoT or building device.",
    properties=(
        Property("device_id", "str", "Stable id derived from the strongest identifier (MAC, serial, IP, host name)."),
        Property("macs", "list[str]", "MAC addresses, lower-case colon-separated.", indexed=True),
        Property("ips", "list[str]", "IP addresses.", indexed=True),
        Property("hostname", "str", "Host name or SNMP sysName, lower-case.", indexed=True),
        Property("vendor", "str", "Manufacturer, from inventory, SNMP or the IEEE OUI registry."),
        Property("model", "str", "Model name or number."),
        Property("firmware", "str", "Firmware or software version."),
        Property("os", "str", "Operating system, from nmap OS detection or sysDescr."),
        Property("serial", "str", "Serial number, upper-case.", indexed=True),
        Property("device_class", "str", "Device class such as infusion_pump, patient_monitor, ct_scanner, workstation, switch.", indexed=True),
        Property("criticality", "str", "life_critical, high, medium or low, from the site's criticality rules.", indexed=True),
        Property("role", "str", "medical, it, network, iot or building."),
        Property("managed", "bool", "True when the device is in the asset inventory (CMMS)."),
        Property("confidence", "float", "Classification confidence between 0 and 1."),
        Property("class_evidence", "json", "Rules and values that decided device_class."),
        Property("segment_id", "str", "Segment the device was assigned to.", indexed=True),
        Property("asset_tag", "str", "CMMS asset tag."),
        Property("department", "str", "Clinical department from the inventory."),
        Property("location", "str", "Room or location from the inventory or sysLocation."),
        Property("building", "str", "Building, from the inventory or the segment."),
        Property("sys_descr", "str", "SNMP sysDescr, escaped."),
        Property("attached_to", "str", "device_id of the switch the device is attached to, from FDB or LLDP."),
        Property("attached_port", "str", "Normalised switch port name the device is attached to."),
        Property("stale", "bool", "True when an earlier live SNMP crawl found the device and the latest crawl did not; its last observations are kept."),
    ),
)

INTERFACE = NodeLabel(
    label="Interface",
    table="interfaces",
    key=("device_id", "if_name"),
    description="A network interface or switch port of a device.",
    properties=(
        Property("device_id", "str", "Owning device."),
        Property("if_name", "str", "Normalised interface name (GigabitEthernet1/0/4)."),
        Property("if_index", "int", "SNMP ifIndex."),
        Property("if_descr", "str", "ifDescr or ifAlias as reported."),
        Property("mac", "str", "Interface MAC address."),
        Property("speed", "int", "Speed in bit/s."),
        Property("vlan", "int", "Access VLAN or PVID."),
        Property("oper_status", "str", "up, down or another IF-MIB ifOperStatus name."),
    ),
)

SEGMENT = NodeLabel(
    label="Segment",
    table="segments",
    key=("segment_id",),
    description="A network segment (VLAN and prefixes) from the site configuration.",
    properties=(
        Property("segment_id", "str", "Id from the site configuration."),
        Property("name", "str", "Display name."),
        Property("cidrs", "list[str]", "Prefixes of the segment."),
        Property("vlan_ids", "list[str]", "VLAN ids of the segment."),
        Property("zone", "str", "Zone such as clinical, it, guest, dmz, building."),
        Property("site", "str", "Site name."),
        Property("building", "str", "Building the segment serves, when it serves one."),
        Property("designated_classes", "list[str]", "Device classes that belong in this segment."),
        Property("trust", "str", "Trust level: high, medium, low or untrusted."),
    ),
)

SERVICE = NodeLabel(
    label="Service",
    table="services",
    key=("device_id", "proto", "port"),
    description="A listening service on a device, from active scans or flows.",
    properties=(
        Property("device_id", "str", "Device exposing the service."),
        Property("proto", "str", "tcp or udp."),
        Property("port", "int", "Port number."),
        Property("name", "str", "Service name (nmap's name, or a well-known name)."),
        Property("product", "str", "Product from version detection."),
        Property("version", "str", "Product version."),
        Property("cpe", "list[str]", "CPE names."),
        Property("tls", "bool", "True when the service speaks TLS."),
    ),
)

EXTERNAL = NodeLabel(
    label="External",
    table="externals",
    key=("address",),
    description="A public endpoint outside the hospital's segments.",
    properties=(
        Property("address", "str", "IP address or domain."),
        Property("asn", "int", "Autonomous system number, when known."),
        Property("country", "str", "Country code, when known."),
        Property("category", "str", "Category, such as vendor-cloud or unknown."),
    ),
)

COMPONENT = NodeLabel(
    label="Component",
    table="components",
    key=("component_id",),
    description="A software component from an SBOM.",
    properties=(
        Property("component_id", "str", "purl or CPE."),
        Property("name", "str", "Component name."),
        Property("version", "str", "Component version."),
        Property("supplier", "str", "Supplier."),
    ),
)

VULNERABILITY = NodeLabel(
    label="Vulnerability",
    table="vulnerabilities",
    key=("vuln_id",),
    description="A CVE or OSV advisory.",
    properties=(
        Property("vuln_id", "str", "CVE or OSV id."),
        Property("severity", "str", "critical, high, medium or low."),
        Property("cvss", "float", "CVSS base score."),
        Property("kev", "bool", "In CISA's Known Exploited Vulnerabilities catalogue."),
        Property("fixed_in", "str", "First fixed version."),
    ),
)

NODES = (DEVICE, INTERFACE, SEGMENT, SERVICE, EXTERNAL, COMPONENT, VULNERABILITY)

RELATIONSHIPS = (
    RelType(
        type="HAS_INTERFACE",
        pattern="(:Device)-[:HAS_INTERFACE]->(:Interface)",
        table="interfaces",
        start=("device_id",),
        end=("device_id", "if_name"),
        description="Derived from the interfaces table.",
    ),
    RelType(
        type="CONNECTED_TO",
        pattern="(:Interface)-[:CONNECTED_TO]->(:Interface)",
        table="links",
        start=("a_device_id", "a_if_name"),
        end=("b_device_id", "b_if_name"),
        description="Physical or layer-2 link learned from LLDP, CDP or FDB tables.",
        properties=(
            Property("source", "str", "lldp, cdp or fdb."),
            Property("confidence", "float", "1.0 for LLDP/CDP seen from both ends, lower for FDB inference."),
        ),
    ),
    RelType(
        type="IN_SEGMENT",
        pattern="(:Device)-[:IN_SEGMENT]->(:Segment)",
        table="memberships",
        start=("device_id",),
        end=("segment_id",),
        description="Segment assignment.",
        properties=(Property("evidence", "str", "How the segment was chosen: cidr, vlan or port."),),
    ),
    RelType(
        type="COMMUNICATES_WITH",
        pattern="(:Device)-[:COMMUNICATES_WITH]->(:Device|External)",
        table="communications",
        start=("src_id",),
        end=("dst_id",),
        description="Flows aggregated per (proto, dst_port). src_id and dst_id hold a device_id or, for External endpoints, the address.",
        properties=(
            Property("src_kind", "str", "device or external (inbound traffic from the internet)."),
            Property("dst_kind", "str", "device or external."),
            Property("proto", "str", "tcp, udp, icmp or another protocol name."),
            Property("dst_port", "int", "Destination port, 0 when the protocol has none."),
            Property("bytes", "int", "Bytes in both directions."),
            Property("packets", "int", "Packets in both directions."),
            Property("flows", "int", "Number of flows or connections."),
        ),
    ),
    RelType(
        type="EXPOSES",
        pattern="(:Device)-[:EXPOSES]->(:Service)",
        table="services",
        start=("device_id",),
        end=("device_id", "proto", "port"),
        description="Derived from the services table.",
    ),
    RelType(
        type="RUNS",
        pattern="(:Device)-[:RUNS]->(:Component)",
        table="device_components",
        start=("device_id",),
        end=("component_id",),
        description="Software component running on a device.",
    ),
    RelType(
        type="AFFECTED_BY",
        pattern="(:Component)-[:AFFECTED_BY]->(:Vulnerability)",
        table="affected_by",
        start=("component_id",),
        end=("vuln_id",),
        description="A component affected by a vulnerability.",
    ),
)


def node(label: str) -> NodeLabel:
    """Return the declaration of a node label, raising KeyError with the valid labels."""
    for decl in NODES:
        if decl.label == label:
            return decl
    raise KeyError(f"unknown label {label!r}; known: {', '.join(n.label for n in NODES)}")


def relationship(rel_type: str) -> RelType:
    """Return the declaration of a relationship type."""
    for decl in RELATIONSHIPS:
        if decl.type == rel_type:
            return decl
    known = ", ".join(r.type for r in RELATIONSHIPS)
    raise KeyError(f"unknown relationship type {rel_type!r}; known: {known}")
