"""Numeric OIDs and value decoders for the MIB tables the SNMP importer reads.

No MIB files are needed: every table is addressed by the numeric OID of its
entry (``...Table.1``), and a varbind under it is ``entry.column.index``.
The names follow the MIB modules they come from: SNMPv2-MIB, IF-MIB, IP-MIB,
BRIDGE-MIB (RFC 4188), Q-BRIDGE-MIB (RFC 4363), ENTITY-MIB (RFC 6933),
LLDP-MIB (IEEE 802.1AB-2005) and CISCO-CDP-MIB.
"""

from __future__ import annotations

import ipaddress

from twin.model.observation import escape_text, normalise_mac

__all__ = [
    "TABLES",
    "PREFIXES",
    "PREFIX_LENGTHS",
    "ENT_CLASS_CHASSIS",
    "SYS",
    "IF",
    "IFX",
    "IP_ADDR",
    "IP_ADDRESS",
    "IP_NET_TO_MEDIA",
    "IP_NET_TO_PHYSICAL",
    "DOT1D_BASE",
    "DOT1D_BASE_PORT",
    "DOT1D_TP_FDB",
    "DOT1Q_TP_FDB",
    "DOT1Q_VLAN_CURRENT",
    "DOT1Q_PORT_VLAN",
    "ENT_PHYSICAL",
    "LLDP_LOC",
    "LLDP_LOC_PORT",
    "LLDP_REM",
    "CDP_CACHE",
    "IF_STATUS",
    "FDB_STATUS",
    "ARP_TYPE",
    "LLDP_CHASSIS_SUBTYPES",
    "LLDP_PORT_SUBTYPES",
    "LLDP_CAPABILITIES",
    "CDP_CAPABILITIES",
    "ENTERPRISE_VENDORS",
    "decode_text",
    "decode_int",
    "decode_mac",
    "decode_inet_address",
    "split_inet_index",
    "decode_lldp_bits",
    "decode_cdp_capabilities",
    "lldp_id_text",
    "is_unicast_mac",
    "is_printable",
]

# Table name -> numeric OID of its entry (or of its scalar group).
TABLES: dict[str, tuple[int, ...]] = {
    "system": (1, 3, 6, 1, 2, 1, 1),
    "ifTable": (1, 3, 6, 1, 2, 1, 2, 2, 1),
    "ifXTable": (1, 3, 6, 1, 2, 1, 31, 1, 1, 1),
    "ipAddrTable": (1, 3, 6, 1, 2, 1, 4, 20, 1),
    "ipAddressTable": (1, 3, 6, 1, 2, 1, 4, 34, 1),
    "ipNetToMediaTable": (1, 3, 6, 1, 2, 1, 4, 22, 1),
    "ipNetToPhysicalTable": (1, 3, 6, 1, 2, 1, 4, 35, 1),
    "dot1dBase": (1, 3, 6, 1, 2, 1, 17, 1),
    "dot1dBasePortTable": (1, 3, 6, 1, 2, 1, 17, 1, 4, 1),
    "dot1dTpFdbTable": (1, 3, 6, 1, 2, 1, 17, 4, 3, 1),
    "dot1qTpFdbTable": (1, 3, 6, 1, 2, 1, 17, 7, 1, 2, 2, 1),
    "dot1qVlanCurrentTable": (1, 3, 6, 1, 2, 1, 17, 7, 1, 4, 2, 1),
    "dot1qPortVlanTable": (1, 3, 6, 1, 2, 1, 17, 7, 1, 4, 5, 1),
    "entPhysicalTable": (1, 3, 6, 1, 2, 1, 47, 1, 1, 1, 1),
    "lldpLocalSystemData": (1, 0, 8802, 1, 1, 2, 1, 3),
    "lldpLocPortTable": (1, 0, 8802, 1, 1, 2, 1, 3, 7, 1),
    "lldpRemTable": (1, 0, 8802, 1, 1, 2, 1, 4, 1, 1),
    "lldpRemManAddrTable": (1, 0, 8802, 1, 1, 2, 1, 4, 2, 1),
    "cdpCacheTable": (1, 3, 6, 1, 4, 1, 9, 9, 23, 1, 2, 1, 1),
}

# Entry OID -> table name, and the entry lengths, longest first, so that a
# nested table (lldpLocPortTable inside lldpLocalSystemData) wins.
PREFIXES: dict[tuple[int, ...], str] = {oid: name for name, oid in TABLES.items()}
PREFIX_LENGTHS: tuple[int, ...] = tuple(sorted({len(oid) for oid in TABLES.values()}, reverse=True))


class _Columns:
    """Column numbers of one table, as attributes."""

    def __init__(self, **columns: int) -> None:
        self.__dict__.update(columns)


SYS = _Columns(descr=1, object_id=2, uptime=3, contact=4, name=5, location=6, services=7)
IF = _Columns(index=1, descr=2, type=3, mtu=4, speed=5, phys_address=6, admin_status=7, oper_status=8)
IFX = _Columns(name=1, high_speed=15, alias=18)
IP_ADDR = _Columns(addr=1, if_index=2, net_mask=3)
IP_ADDRESS = _Columns(if_index=3, type=4, prefix=5)
IP_NET_TO_MEDIA = _Columns(if_index=1, phys_address=2, net_address=3, type=4)
IP_NET_TO_PHYSICAL = _Columns(phys_address=4, type=6, state=7)
DOT1D_BASE = _Columns(bridge_address=1)
DOT1D_BASE_PORT = _Columns(port=1, if_index=2)
DOT1D_TP_FDB = _Columns(address=1, port=2, status=3)
DOT1Q_TP_FDB = _Columns(port=2, status=3)
DOT1Q_VLAN_CURRENT = _Columns(fdb_id=3)
DOT1Q_PORT_VLAN = _Columns(pvid=1)
ENT_PHYSICAL = _Columns(
    descr=2,
    vendor_type=3,
    contained_in=4,
    cls=5,
    name=7,
    hardware_rev=8,
    firmware_rev=9,
    software_rev=10,
    serial_num=11,
    mfg_name=12,
    model_name=13,
)
ENT_CLASS_CHASSIS = 3
LLDP_LOC = _Columns(chassis_id_subtype=1, chassis_id=2, sys_name=3, sys_desc=4)
LLDP_LOC_PORT = _Columns(port_id_subtype=2, port_id=3, port_desc=4)
LLDP_REM = _Columns(
    chassis_id_subtype=4,
    chassis_id=5,
    port_id_subtype=6,
    port_id=7,
    port_desc=8,
    sys_name=9,
    sys_desc=10,
    sys_cap_supported=11,
    sys_cap_enabled=12,
)
CDP_CACHE = _Columns(
    address_type=3,
    address=4,
    version=5,
    device_id=6,
    device_port=7,
    platform=8,
    capabilities=9,
    native_vlan=11,
)

# IF-MIB ifAdminStatus / ifOperStatus values.
IF_STATUS = {
    1: "up",
    2: "down",
    3: "testing",
    4: "unknown",
    5: "dormant",
    6: "notPresent",
    7: "lowerLayerDown",
}
# BRIDGE-MIB dot1dTpFdbStatus and Q-BRIDGE-MIB dot1qTpFdbStatus values.
FDB_STATUS = {1: "other", 2: "invalid", 3: "learned", 4: "self", 5: "mgmt"}
# IP-MIB ipNetToMediaType / ipNetToPhysicalType values.
ARP_TYPE = {1: "other", 2: "invalid", 3: "dynamic", 4: "static", 5: "local"}

# LLDP-MIB LldpChassisIdSubtype and LldpPortIdSubtype, as snake_case names.
LLDP_CHASSIS_SUBTYPES = {
    1: "chassis_component",
    2: "interface_alias",
    3: "port_component",
    4: "mac_address",
    5: "network_address",
    6: "interface_name",
    7: "local",
}
LLDP_PORT_SUBTYPES = {
    1: "interface_alias",
    2: "port_component",
    3: "mac_address",
    4: "network_address",
    5: "interface_name",
    6: "agent_circuit_id",
    7: "local",
}
# LLDP-MIB LldpSystemCapabilitiesMap, bit 0 first (the most significant bit
# of the first octet, as for every SNMP BITS value).
LLDP_CAPABILITIES = ("other", "repeater", "bridge", "wlan", "router", "telephone", "docsis", "station")
# CISCO-CDP-MIB cdpCacheCapabilities bits (CDP capability TLV, big-endian
# 32-bit word), mapped onto the LLDP names above. Trans-bridge, source-route
# bridge and switch all become ``bridge``; IGMP has no LLDP counterpart.
CDP_CAPABILITIES = (
    (0x01, "router"),
    (0x02, "bridge"),
    (0x04, "bridge"),
    (0x08, "bridge"),
    (0x10, "station"),
    (0x40, "repeater"),
    (0x80, "telephone"),
)

# IANA private enterprise number (first arc after 1.3.6.1.4.1 in
# sysObjectID) -> vendor, used when ENTITY-MIB gives no manufacturer.
ENTERPRISE_VENDORS = {
    9: "Cisco",
    11: "Hewlett-Packard",
    43: "3Com",
    171: "D-Link",
    311: "Microsoft",
    674: "Dell",
    1916: "Extreme Networks",
    2011: "Huawei",
    2021: "Net-SNMP",
    2636: "Juniper Networks",
    4526: "Netgear",
    6486: "Alcatel-Lucent",
    6527: "Nokia",
    8072: "Net-SNMP",
    12356: "Fortinet",
    14179: "Cisco",
    14823: "Aruba",
    14988: "MikroTik",
    21239: "Geist",
    25461: "Palo Alto Networks",
    25506: "H3C",
    30065: "Arista Networks",
    47196: "Hewlett Packard Enterprise",
}

# IANA address family numbers used in LLDP network-address ids.
_ADDRESS_FAMILY = {1: 4, 2: 6}


def decode_text(value) -> str | None:
    """Return an SNMP OCTET STRING as escaped text, or None when empty.

    Trailing NUL padding and surrounding whitespace are dropped; other NUL
    bytes and bytes that are not UTF-8 are escaped as ``\\xNN``.
    """
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).rstrip(b"\x00")
    elif isinstance(value, tuple):
        value = ".".join(str(arc) for arc in value)
    elif not isinstance(value, str):
        value = str(value)
    text = escape_text(value).strip()
    return text or None


def decode_int(value) -> int | None:
    """Return an INTEGER-like value as int, or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("ascii", errors="replace").strip()
    elif isinstance(value, str):
        text = value.strip()
    else:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def is_unicast_mac(mac: str | None) -> bool:
    """Return True for a MAC that can identify one device.

    Rejects None, all-zero, broadcast and group (multicast) addresses.
    """
    if not mac:
        return False
    if mac in ("00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"):
        return False
    return not int(mac[:2], 16) & 0x01


def is_printable(value: bytes) -> bool:
    """Return True when every byte is printable ASCII or a tab."""
    return all(0x20 <= byte < 0x7F or byte == 0x09 for byte in value)


def decode_mac(value, *, raw_bytes: bool = True) -> str | None:
    """Return a MAC from six raw bytes or from text such as ``001a.2b3c.4d5e``.

    With ``raw_bytes=False`` a 6-byte value is read as text only, so a
    six-letter name such as ``Eth1/1`` is not taken for a binary MAC.
    """
    if isinstance(value, (bytes, bytearray)):
        if len(value) == 6 and raw_bytes:
            return normalise_mac(bytes(value))
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str):
        return None
    text = value.strip()
    # Cisco IP phones send their CDP device id as "SEP" plus their MAC.
    if len(text) == 15 and text[:3].upper() == "SEP":
        text = text[3:]
    return normalise_mac(text)


def decode_inet_address(raw: bytes | tuple[int, ...]) -> str | None:
    """Return the text form of a 4- or 16-byte address, or None."""
    data = bytes(raw)
    if len(data) == 4:
        return str(ipaddress.IPv4Address(data))
    if len(data) == 16:
        return str(ipaddress.IPv6Address(data))
    return None


def split_inet_index(index: tuple[int, ...]) -> tuple[str | None, tuple[int, ...]]:
    """Split an ``InetAddressType.InetAddress`` index prefix off ``index``.

    The address part is length-prefixed (``1.4.10.0.0.1``); some agents omit
    the length (``1.10.0.0.1``), which is accepted too. Returns the address
    text (None when it cannot be decoded) and the rest of the index.
    """
    if len(index) < 2:
        return None, ()
    addr_type = index[0]
    size = {1: 4, 2: 16, 3: 8, 4: 20}.get(addr_type)
    if size is None:
        return None, ()
    if index[1] == size and len(index) >= 2 + size:
        octets, rest = index[2 : 2 + size], index[2 + size :]
    elif len(index) >= 1 + size:
        octets, rest = index[1 : 1 + size], index[1 + size :]
    else:
        return None, ()
    if any(not 0 <= octet <= 255 for octet in octets):
        return None, rest
    # ipv4z and ipv6z carry a 4-byte zone index after the address.
    return decode_inet_address(octets[: size - 4] if addr_type in (3, 4) else octets), rest


def decode_lldp_bits(value) -> list[str]:
    """Return the capability names set in an LLDP-MIB capabilities BITS value."""
    if not isinstance(value, (bytes, bytearray)) or not value:
        return []
    first = value[0]
    return [name for bit, name in enumerate(LLDP_CAPABILITIES) if first & (0x80 >> bit)]


def decode_cdp_capabilities(value) -> list[str]:
    """Return LLDP capability names for a cdpCacheCapabilities value.

    The MIB defines a 4-byte big-endian bitmap; some agents (HP ProCurve)
    send the bitmap as hexadecimal text such as ``"9"`` instead.
    """
    if isinstance(value, (bytes, bytearray)) and len(value) == 4:
        bits = int.from_bytes(value, "big")
    else:
        text = decode_text(value)
        if not text:
            return []
        try:
            bits = int(text, 16)
        except ValueError:
            return []
    names: list[str] = []
    for mask, name in CDP_CAPABILITIES:
        if bits & mask and name not in names:
            names.append(name)
    return [name for name in LLDP_CAPABILITIES if name in names]


def lldp_id_text(subtype_name: str | None, value) -> tuple[str | None, str | None]:
    """Return ``(id_text, mac)`` for an LLDP chassis or port id.

    ``mac_address`` ids are six raw bytes; ``network_address`` ids start with
    an IANA address-family byte. Every other subtype is text, and a MAC sent
    as text (``00:1a:2b:3c:4d:5e``, ``001a.2b3c.4d5e``) is recognised too.
    """
    if value is None:
        return None, None
    raw = bytes(value) if isinstance(value, (bytes, bytearray)) else None
    if subtype_name == "mac_address" and raw is not None and len(raw) == 6:
        mac = normalise_mac(raw)
        return mac, mac
    if subtype_name == "network_address" and raw is not None and len(raw) > 1:
        version = _ADDRESS_FAMILY.get(raw[0])
        address = decode_inet_address(raw[1:]) if version else None
        if address is not None:
            return address, None
    text = decode_text(value)
    return text, decode_mac(value, raw_bytes=False)
