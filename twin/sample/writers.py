"""Writers for the real input formats of a sample site.

Each writer produces the file layout the real tool writes: nmap ``-oX`` XML,
snmpsim ``.snmprec`` walks, ``lldpcli -f json show neighbors``, Zeek TSV
``conn.log``, ``nfdump -o csv`` and a CMMS asset export. Flow files are
formatted column by column with pyarrow, so a million records take seconds.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import time
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from twin.sample.catalog import CLASS_PROFILES, DOMAIN, SYS_OBJECT_ID
from twin.sample.plan import PORTS_PER_SWITCH, DevicePlan, SitePlan, SwitchPlan, fqdn
from twin.sample.traffic import DC_KINDS, TCP, UDP, Edges

__all__ = [
    "write_inventory",
    "write_nmap",
    "write_snmp",
    "write_lldp",
    "write_flows",
    "write_truth_devices",
    "NMAP_MAX_HOSTS",
    "SNMP_MAX_SWITCHES",
]

# Hosts per nmap XML file; larger segments are sampled (planted devices first).
NMAP_MAX_HOSTS = 1000
# Access switches walked; the core router is always walked and lists every device in ARP.
SNMP_MAX_SWITCHES = 40
# ifIndex, ifName and bridge port of each access switch's uplink to the core.
UPLINK_IFINDEX = 10601
UPLINK_IFNAME = "Te1/1/1"
UPLINK_BRIDGE_PORT = PORTS_PER_SWITCH + 1
# SVI ifIndex = SVI_IFINDEX_BASE + VLAN id.
SVI_IFINDEX_BASE = 20000


def _mac_text(mac: int, sep: str = ":", upper: bool = False) -> str:
    text = sep.join(f"{(mac >> s) & 0xFF:02x}" for s in range(40, -8, -8))
    return text.upper() if upper else text


def _ip_text(ip: int) -> str:
    return str(ipaddress.IPv4Address(ip))


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)


# ---------------------------------------------------------------------------
# CMMS inventory

INVENTORY_COLUMNS = ("Asset Tag", "Serial Number", "Manufacturer", "Model", "Device Type", "Department",
                     "Location", "Building", "MAC Address", "IP Address", "Hostname", "Status")


def _location(dev: DevicePlan) -> str:
    if dev.segment.kind in DC_KINDS:
        return f"Data Centre {dev.building}, rack {1 + dev.index % 12:02d}"
    floor = 1 + dev.index % 4
    profile = CLASS_PROFILES[dev.device_class]
    return f"{profile.department} {dev.building}{floor}, room {floor}{dev.index % 40:02d}"


def write_inventory(plan: SitePlan, path: Path) -> int:
    """Write the CMMS export: medical devices, building systems, servers and printers."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(INVENTORY_COLUMNS)
    rows = 0
    for dev in plan.devices:
        profile = CLASS_PROFILES[dev.device_class]
        if not profile.in_inventory:
            continue
        # Real exports are uneven: dashes in some MACs, missing addresses for DHCP devices.
        mac = _mac_text(dev.mac, "-" if dev.index % 7 == 0 else ":", upper=True)
        ip = "" if dev.index % 13 == 5 and dev.segment.kind not in DC_KINDS and not dev.planted else dev.ip_text
        status = "Under Repair" if dev.index % 29 == 11 else "In Service"
        writer.writerow([dev.asset_tag, dev.serial, dev.vendor, dev.model, profile.device_type, profile.department,
                         _location(dev), f"Building {dev.building}", mac, ip, dev.hostname or "", status])
        rows += 1
    _write_text(path, buffer.getvalue())
    return rows


def write_truth_devices(plan: SitePlan, path: Path) -> int:
    """Write the generator's own device table (true class, segment and attachment)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["ip", "mac", "hostname", "device_class", "criticality", "segment_id", "building",
                     "switch", "port", "planted"])
    for dev in plan.devices:
        port = _port_name(dev.port_position) if dev.switch else ""
        writer.writerow([dev.ip_text, dev.mac_text, dev.hostname or "", dev.device_class, dev.criticality,
                         dev.segment.id, dev.building, dev.switch.name if dev.switch else "", port, dev.planted])
    _write_text(path, buffer.getvalue())
    return len(plan.devices)


# ---------------------------------------------------------------------------
# nmap XML

_WIN_PORTS = [(135, "msrpc", "Microsoft Windows RPC", "", "cpe:/o:microsoft:windows"),
              (139, "netbios-ssn", "Microsoft Windows netbios-ssn", "", "cpe:/o:microsoft:windows"),
              (445, "microsoft-ds", "", "", "")]
_SSH = (22, "ssh", "OpenSSH", "8.9p1 Ubuntu 3ubuntu0.6", "cpe:/a:openbsd:openssh:8.9p1")
_NGINX = (443, "https", "nginx", "1.24.0", "cpe:/a:igor_sysoev:nginx:1.24.0")
_ROLE_PORTS = {
    "ehr": [_SSH, _NGINX],
    "pacs": [_SSH, (104, "dicom", "", "", ""), (443, "https", "", "", ""), (11112, "dicom", "", "", "")],
    "druglib": [_SSH, _NGINX],
    "hl7": [_SSH, (2575, "hl7", "", "", "")],
    "central": [_SSH, (443, "https", "", "", ""), (2575, "hl7", "", "", "")],
    "dns": [(53, "domain", "Simple DNS Plus", "", ""), (88, "kerberos-sec", "Microsoft Windows Kerberos", "", ""),
            *_WIN_PORTS[:1], (389, "ldap", "Microsoft Windows Active Directory LDAP", "", ""), *_WIN_PORTS[2:],
            (636, "ldapssl", "", "", "")],
    "callmgr": [_SSH, (443, "https", "", "", ""), (5060, "sip", "", "", "")],
    "file": _WIN_PORTS,
    "bms": [(80, "http", "", "", ""), (443, "https", "", "", "")],
    "nms": [_SSH, _NGINX],
    "portal": [(80, "http", "nginx", "1.24.0", "cpe:/a:igor_sysoev:nginx:1.24.0"), _NGINX],
    "vpn": [_SSH, (443, "https", "", "", "")],
}
_CLASS_PORTS = {
    "workstation": [*_WIN_PORTS, (3389, "ms-wbt-server", "Microsoft Terminal Services", "", "cpe:/o:microsoft:windows")],
    "printer": [(80, "http", "", "", ""), (443, "https", "", "", ""), (515, "printer", "", "", ""),
                (631, "ipp", "", "", ""), (9100, "jetdirect", "", "", "")],
    "patient_monitor": [(80, "http", "lighttpd", "1.4.35", "cpe:/a:lighttpd:lighttpd:1.4.35")],
    "infusion_pump": [(443, "https", "", "", "")],
}
_OS = {
    "windows": [("Microsoft Windows 10 1809 - 21H2", "general purpose", "Microsoft", "Windows", "10",
                 "cpe:/o:microsoft:windows_10", 98)],
    "windows-server": [("Microsoft Windows Server 2019", "general purpose", "Microsoft", "Windows", "2019",
                        "cpe:/o:microsoft:windows_server_2019", 96)],
    "linux": [("Linux 4.15 - 5.19", "general purpose", "Linux", "Linux", "4.X", "cpe:/o:linux:linux_kernel:4", 95),
              ("Linux 5.0 - 5.14", "general purpose", "Linux", "Linux", "5.X", "cpe:/o:linux:linux_kernel:5", 92)],
    "printer": [("Inkwell LaserPro printer", "printer", "Inkwell", "embedded", "", "", 94)],
    "embedded": [("Linux 3.2 - 4.14", "specialized", "Linux", "Linux", "3.X", "cpe:/o:linux:linux_kernel:3", 90)],
}
NMAP_PORTS = sorted({p[0] for ports in (*_ROLE_PORTS.values(), *_CLASS_PORTS.values()) for p in ports} | {21, 23, 80, 8080, 8443})


def _host_ports(dev: DevicePlan) -> tuple[list[tuple], str]:
    if dev.role:
        windows = dev.role in ("dns", "file")
        return _ROLE_PORTS[dev.role], "windows-server" if windows else "linux"
    ports = _CLASS_PORTS.get(dev.device_class, [])
    os_key = {"workstation": "windows", "printer": "printer"}.get(dev.device_class, "embedded")
    return ports, os_key


def _oui_vendor(mac: int) -> str | None:
    import netaddr

    try:
        return netaddr.EUI(mac).oui.registration().org
    except netaddr.NotRegisteredError:
        return None


def _nmap_host(dev: DevicePlan, start: int, resolve: bool, vendors: dict[int, str | None]) -> str:
    ports, os_key = _host_ports(dev)
    oui = dev.mac >> 24
    if oui not in vendors:
        vendors[oui] = _oui_vendor(dev.mac)
    vendor = vendors[oui]
    mac_attr = f' vendor={quoteattr(vendor)}' if vendor else ""
    lines = [f'<host starttime="{start}" endtime="{start + 40 + dev.index % 60}">'
             '<status state="up" reason="arp-response" reason_ttl="0"/>',
             f'<address addr="{dev.ip_text}" addrtype="ipv4"/>',
             f'<address addr="{_mac_text(dev.mac, upper=True)}" addrtype="mac"{mac_attr}/>',
             "<hostnames>"]
    if resolve and dev.hostname:
        lines.append(f'<hostname name="{fqdn(dev.hostname)}" type="PTR"/>')
    lines.append("</hostnames>")
    closed = len(NMAP_PORTS) - len(ports)
    lines.append(f'<ports><extraports state="closed" count="{closed}">')
    lines.append(f'<extrareasons reason="resets" count="{closed}"/>')
    lines.append("</extraports>")
    for port, name, product, version, cpe in ports:
        attrs = f'name="{name}"'
        if product:
            attrs += f" product={quoteattr(product)}"
        if version:
            attrs += f" version={quoteattr(version)}"
        if port in (443, 636) and name in ("https", "ldapssl") and product:
            attrs += ' tunnel="ssl"'
        method = 'method="probed" conf="10"' if product else 'method="table" conf="3"'
        service = f"<service {attrs} {method}><cpe>{cpe}</cpe></service>" if cpe else f"<service {attrs} {method}/>"
        lines.append(f'<port protocol="tcp" portid="{port}"><state state="open" reason="syn-ack" reason_ttl="64"/>'
                     f"{service}</port>")
    lines.append("</ports>")
    open_port = ports[0][0] if ports else 80
    lines.append(f'<os><portused state="open" proto="tcp" portid="{open_port}"/>')
    lines.append('<portused state="closed" proto="tcp" portid="1"/>')
    for name, kind, vendor_name, family, gen, cpe, accuracy in _OS[os_key]:
        gen_attr = f' osgen="{gen}"' if gen else ""
        cpe_xml = f"<cpe>{cpe}</cpe>" if cpe else ""
        lines.append(f'<osmatch name={quoteattr(name)} accuracy="{accuracy}" line="{60000 + len(name) * 7}">')
        lines.append(f'<osclass type="{kind}" vendor="{vendor_name}" osfamily="{family}"{gen_attr} '
                     f'accuracy="{accuracy}">{cpe_xml}</osclass>')
        lines.append("</osmatch>")
    lines.append("</os>")
    uptime = 86400 * (3 + dev.index % 40)
    lines.append(f'<uptime seconds="{uptime}" lastboot="{time.asctime(time.gmtime(start - uptime))}"/>')
    lines.append('<distance value="1"/>')
    lines.append('<times srtt="512" rttvar="300" to="100000"/>')
    lines.append("</host>")
    return "\n".join(lines)


def _nmap_file(plan: SitePlan, path: Path, targets: list[str], hosts: list[DevicePlan], start: int, resolve: bool,
               vendors: dict) -> int:
    ports = ",".join(str(p) for p in NMAP_PORTS)
    n_flag = "" if resolve else "-n "
    args = f"nmap -sS -sV -O {n_flag}-p {ports} -oX {path.name} {' '.join(targets)}"
    stamp = time.asctime(time.gmtime(start))
    total = sum(ipaddress.IPv4Network(t).num_addresses for t in targets)
    elapsed = 60 + 2 * len(hosts)
    end = start + elapsed
    end_stamp = time.asctime(time.gmtime(end))
    parts = ['<?xml version="1.0" encoding="UTF-8"?>',
             "<!DOCTYPE nmaprun>",
             '<?xml-stylesheet href="file:///usr/bin/../share/nmap/nmap.xsl" type="text/xsl"?>',
             f"<!-- Nmap 7.93 scan initiated {stamp} as: {args} -->",
             f'<nmaprun scanner="nmap" args="{args}" start="{start}" startstr="{stamp}" version="7.93" '
             'xmloutputversion="1.05">',
             f'<scaninfo type="syn" protocol="tcp" numservices="{len(NMAP_PORTS)}" services="{ports}"/>',
             '<verbose level="0"/>',
             '<debugging level="0"/>']
    for dev in hosts:
        parts.append(_nmap_host(dev, start + 5, resolve, vendors))
    parts.append(f'<runstats><finished time="{end}" timestr="{end_stamp}" summary="Nmap done at {end_stamp}; '
                 f'{total} IP addresses ({len(hosts)} hosts up) scanned in {elapsed}.00 seconds" '
                 f'elapsed="{elapsed}.00" exit="success"/><hosts up="{len(hosts)}" down="{total - len(hosts)}" '
                 f'total="{total}"/>')
    parts.append("</runstats>")
    parts.append("</nmaprun>")
    _write_text(path, "\n".join(parts) + "\n")
    return len(hosts)


def write_nmap(plan: SitePlan, folder: Path) -> dict[str, int]:
    """Write one nmap XML per scanned area: each building's IT segment, the servers, the DMZ.

    Pumps, monitors and other clinical segments are never scanned actively.
    """
    groups: list[tuple[str, list[str], bool]] = [
        (f"it-{b.lower()}.xml", [f"{b.lower()}-it"], False) for b in plan.buildings]
    groups += [("dc-servers.xml", ["dc-imaging", "dc-clinical", "dc-it"], True), ("dmz.xml", ["dmz"], True)]
    counts: dict[str, int] = {}
    vendors: dict[int, str | None] = {}
    for index, (file_name, segment_ids, resolve) in enumerate(groups):
        members = [d for d in plan.devices if d.segment.id in segment_ids]
        members.sort(key=lambda d: (not d.planted, d.ip))
        hosts = sorted(members[:NMAP_MAX_HOSTS], key=lambda d: d.ip)
        targets = [str(plan.segment(s).network) for s in segment_ids]
        start = plan.base_epoch - 6 * 3600 + index * 900
        counts[f"nmap/{file_name}"] = _nmap_file(plan, folder / file_name, targets, hosts, start, resolve, vendors)
    return counts


# ---------------------------------------------------------------------------
# snmprec

def _hex(text: str) -> str:
    return text.encode("utf-8").hex()


def _oid(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def _mac_index(mac: int) -> str:
    return ".".join(str((mac >> s) & 0xFF) for s in range(40, -8, -8))


def _port_name(position: int) -> str:
    return f"Gi{position // 48 + 1}/0/{position % 48 + 1}"


def _port_ifindex(position: int) -> int:
    return 10000 + (position // 48 + 1) * 100 + position % 48 + 1


class _Walk:
    def __init__(self) -> None:
        self.rows: list[tuple[tuple[int, ...], str, str]] = []

    def add(self, oid: str, kind: str, value) -> None:
        self.rows.append((_oid(oid), kind, str(value)))

    def text(self) -> str:
        self.rows.sort(key=lambda r: r[0])
        return "".join(f"{'.'.join(map(str, oid))}|{kind}|{value}\n" for oid, kind, value in self.rows)


def _system(walk: _Walk, dev: DevicePlan, descr: str, services: int, uptime: int) -> None:
    walk.add("1.3.6.1.2.1.1.1.0", "4x", _hex(descr))
    walk.add("1.3.6.1.2.1.1.2.0", "6", SYS_OBJECT_ID)
    walk.add("1.3.6.1.2.1.1.3.0", "67", uptime)
    walk.add("1.3.6.1.2.1.1.4.0", "4", f"noc@{DOMAIN}")
    walk.add("1.3.6.1.2.1.1.5.0", "4", dev.hostname)
    walk.add("1.3.6.1.2.1.1.6.0", "4", f"Building {dev.building}, network room")
    walk.add("1.3.6.1.2.1.1.7.0", "2", services)
    walk.add("1.3.6.1.2.1.47.1.1.1.1.2.1", "4", f"{dev.model} chassis")
    walk.add("1.3.6.1.2.1.47.1.1.1.1.5.1", "2", 3)
    walk.add("1.3.6.1.2.1.47.1.1.1.1.7.1", "4", "Chassis 1")
    walk.add("1.3.6.1.2.1.47.1.1.1.1.11.1", "4", dev.serial)
    walk.add("1.3.6.1.2.1.47.1.1.1.1.12.1", "4", dev.vendor)
    walk.add("1.3.6.1.2.1.47.1.1.1.1.13.1", "4", dev.model)


def _interface(walk: _Walk, if_index: int, name: str, descr: str, mac: int, speed: int, alias: str,
               if_type: int = 6, counter: int = 0) -> None:
    base = "1.3.6.1.2.1.2.2.1"
    walk.add(f"{base}.1.{if_index}", "2", if_index)
    walk.add(f"{base}.2.{if_index}", "4", descr)
    walk.add(f"{base}.3.{if_index}", "2", if_type)
    walk.add(f"{base}.4.{if_index}", "2", 1500)
    walk.add(f"{base}.5.{if_index}", "66", min(speed, 4294967295))
    walk.add(f"{base}.6.{if_index}", "4x", f"{mac:012x}")
    walk.add(f"{base}.7.{if_index}", "2", 1)
    walk.add(f"{base}.8.{if_index}", "2", 1)
    walk.add(f"{base}.10.{if_index}", "65", counter % 4294967296)
    walk.add(f"{base}.16.{if_index}", "65", (counter * 3) % 4294967296)
    xbase = "1.3.6.1.2.1.31.1.1.1"
    walk.add(f"{xbase}.1.{if_index}", "4", name)
    walk.add(f"{xbase}.6.{if_index}", "70", counter)
    walk.add(f"{xbase}.10.{if_index}", "70", counter * 3)
    walk.add(f"{xbase}.15.{if_index}", "66", speed // 1_000_000)
    walk.add(f"{xbase}.18.{if_index}", "4", alias)


def _lldp_local(walk: _Walk, dev: DevicePlan, descr: str, ports: list[tuple[int, str, str]]) -> None:
    base = "1.0.8802.1.1.2.1.3"
    walk.add(f"{base}.1.0", "2", 4)
    walk.add(f"{base}.2.0", "4x", f"{dev.mac:012x}")
    walk.add(f"{base}.3.0", "4", dev.hostname)
    walk.add(f"{base}.4.0", "4x", _hex(descr))
    for port_num, name, port_descr in ports:
        walk.add(f"{base}.7.1.2.{port_num}", "2", 5)
        walk.add(f"{base}.7.1.3.{port_num}", "4", name)
        walk.add(f"{base}.7.1.4.{port_num}", "4", port_descr)


def _lldp_remote(walk: _Walk, local_port: int, chassis_mac: int, port_subtype: int, port_id: str,
                 port_descr: str, sys_name: str, sys_descr: str, caps: int, mgmt_ip: int | None) -> None:
    index = f"0.{local_port}.1"
    base = "1.0.8802.1.1.2.1.4.1.1"
    walk.add(f"{base}.4.{index}", "2", 4)
    walk.add(f"{base}.5.{index}", "4x", f"{chassis_mac:012x}")
    walk.add(f"{base}.6.{index}", "2", port_subtype)
    if port_subtype == 3:
        walk.add(f"{base}.7.{index}", "4x", port_id)
    else:
        walk.add(f"{base}.7.{index}", "4", port_id)
    walk.add(f"{base}.8.{index}", "4", port_descr)
    walk.add(f"{base}.9.{index}", "4", sys_name)
    walk.add(f"{base}.10.{index}", "4x", _hex(sys_descr))
    walk.add(f"{base}.11.{index}", "4x", f"{caps:02x}00")
    walk.add(f"{base}.12.{index}", "4x", f"{caps:02x}00")
    if mgmt_ip is not None:
        addr = f"{index}.1.4.{_ip_text(mgmt_ip)}"
        walk.add(f"1.0.8802.1.1.2.1.4.2.1.3.{addr}", "2", 2)
        walk.add(f"1.0.8802.1.1.2.1.4.2.1.4.{addr}", "2", 1)


def _switch_descr(dev: DevicePlan) -> str:
    return f"{dev.vendor} RNOS Software, {dev.model}, Version 17.9.4, RELEASE SOFTWARE"


# LLDP capability bits (first octet of the BITS value): bridge 0x20, WLAN access point 0x10, router 0x08.
CAP_BRIDGE, CAP_WLAN, CAP_ROUTER = 0x20, 0x10, 0x08


def _access_switch_walk(plan: SitePlan, sw: SwitchPlan) -> str:
    walk = _Walk()
    dev, core = sw.device, plan.core
    _system(walk, dev, _switch_descr(dev), 2, 123456789 + dev.index)
    ports = sorted(sw.ports, key=lambda d: d.port_position)
    mgmt_vlan = plan.segment("mgmt").vlan
    walk.add("1.3.6.1.2.1.2.1.0", "2", len(ports) + 2)
    for d in ports:
        if_index = _port_ifindex(d.port_position)
        _interface(walk, if_index, _port_name(d.port_position),
                   f"GigabitEthernet{d.port_position // 48 + 1}/0/{d.port_position % 48 + 1}",
                   dev.mac + 1 + d.port_position, 1_000_000_000, d.hostname or d.device_class,
                   counter=1000 * (d.index + 1))
    _interface(walk, UPLINK_IFINDEX, UPLINK_IFNAME, "TenGigabitEthernet1/1/1", dev.mac + 0x200, 10_000_000_000,
               "uplink core-rtr-01", counter=10 ** 9)
    _interface(walk, SVI_IFINDEX_BASE + mgmt_vlan, f"Vl{mgmt_vlan}", f"Vlan{mgmt_vlan}", dev.mac, 1_000_000_000,
               "management", if_type=53)
    walk.add(f"1.3.6.1.2.1.4.20.1.1.{dev.ip_text}", "64x", f"{dev.ip:08x}")
    walk.add(f"1.3.6.1.2.1.4.20.1.2.{dev.ip_text}", "2", SVI_IFINDEX_BASE + mgmt_vlan)
    walk.add(f"1.3.6.1.2.1.4.20.1.3.{dev.ip_text}", "64x", f"{(0xFFFFFFFF << (32 - dev.segment.network.prefixlen)) & 0xFFFFFFFF:08x}")

    # BRIDGE-MIB and Q-BRIDGE-MIB: bridge port = position + 1; the uplink learns the core router's MAC.
    walk.add("1.3.6.1.2.1.17.1.1.0", "4x", f"{dev.mac:012x}")
    walk.add("1.3.6.1.2.1.17.1.2.0", "2", len(ports) + 1)
    fdb: list[tuple[int, int, int]] = [(d.mac, d.port_position + 1, d.segment.vlan) for d in ports]
    for vlan in sorted({d.segment.vlan for d in ports}):
        fdb.append((core.mac, UPLINK_BRIDGE_PORT, vlan))
    for d in ports:
        bridge_port = d.port_position + 1
        walk.add(f"1.3.6.1.2.1.17.1.4.1.2.{bridge_port}", "2", _port_ifindex(d.port_position))
        walk.add(f"1.3.6.1.2.1.17.7.1.4.5.1.1.{bridge_port}", "66", d.segment.vlan)
    walk.add(f"1.3.6.1.2.1.17.1.4.1.2.{UPLINK_BRIDGE_PORT}", "2", UPLINK_IFINDEX)
    walk.add(f"1.3.6.1.2.1.17.7.1.4.5.1.1.{UPLINK_BRIDGE_PORT}", "66", 1)
    seen_macs: set[int] = set()
    for mac, bridge_port, vlan in fdb:
        index = _mac_index(mac)
        if mac not in seen_macs:
            seen_macs.add(mac)
            walk.add(f"1.3.6.1.2.1.17.4.3.1.1.{index}", "4x", f"{mac:012x}")
            walk.add(f"1.3.6.1.2.1.17.4.3.1.2.{index}", "2", bridge_port)
            walk.add(f"1.3.6.1.2.1.17.4.3.1.3.{index}", "2", 3)
        walk.add(f"1.3.6.1.2.1.17.7.1.2.2.1.2.{vlan}.{index}", "2", bridge_port)
        walk.add(f"1.3.6.1.2.1.17.7.1.2.2.1.3.{vlan}.{index}", "2", 3)

    # LLDP: the uplink to the core, and the access points on their ports. Local port number = ifIndex.
    aps = [d for d in ports if d.device_class == "wireless_ap"]
    local_ports = [(UPLINK_IFINDEX, UPLINK_IFNAME, "TenGigabitEthernet1/1/1")]
    local_ports += [(_port_ifindex(d.port_position), _port_name(d.port_position), "access port") for d in aps]
    _lldp_local(walk, dev, _switch_descr(dev), local_ports)
    _lldp_remote(walk, UPLINK_IFINDEX, core.mac, 5, f"Te1/0/{sw.uplink_core_port}",
                 f"TenGigabitEthernet1/0/{sw.uplink_core_port}", core.hostname, _switch_descr(core),
                 CAP_BRIDGE | CAP_ROUTER, core.ip)
    for ap in aps:
        _lldp_remote(walk, _port_ifindex(ap.port_position), ap.mac, 3, f"{ap.mac:012x}", "eth0", ap.hostname,
                     f"{ap.vendor} {ap.model} ArubaOS-compatible 8.10", CAP_BRIDGE | CAP_WLAN, ap.ip)
    return walk.text()


def _core_walk(plan: SitePlan) -> str:
    walk = _Walk()
    core = plan.core
    _system(walk, core, _switch_descr(core), 6, 987654321)
    segments = sorted(plan.segments, key=lambda s: s.vlan)
    walk.add("1.3.6.1.2.1.2.1.0", "2", len(plan.switches) + len(segments))
    for sw in plan.switches:
        _interface(walk, sw.uplink_core_port, f"Te1/0/{sw.uplink_core_port}",
                   f"TenGigabitEthernet1/0/{sw.uplink_core_port}", core.mac + sw.uplink_core_port, 10_000_000_000,
                   f"to {sw.name}", counter=10 ** 9 + sw.uplink_core_port)
    for seg in segments:
        if_index = SVI_IFINDEX_BASE + seg.vlan
        _interface(walk, if_index, f"Vl{seg.vlan}", f"Vlan{seg.vlan}", core.mac, 10_000_000_000, seg.id, if_type=53)
        gateway = int(seg.network.network_address) + 1
        mask = (0xFFFFFFFF << (32 - seg.network.prefixlen)) & 0xFFFFFFFF
        walk.add(f"1.3.6.1.2.1.4.20.1.1.{_ip_text(gateway)}", "64x", f"{gateway:08x}")
        walk.add(f"1.3.6.1.2.1.4.20.1.2.{_ip_text(gateway)}", "2", if_index)
        walk.add(f"1.3.6.1.2.1.4.20.1.3.{_ip_text(gateway)}", "64x", f"{mask:08x}")
    # ARP: every device but the router itself, on the SVI of its VLAN.
    for d in plan.devices:
        if d is core:
            continue
        key = f"{SVI_IFINDEX_BASE + d.segment.vlan}.{d.ip_text}"
        walk.add(f"1.3.6.1.2.1.4.22.1.1.{key}", "2", SVI_IFINDEX_BASE + d.segment.vlan)
        walk.add(f"1.3.6.1.2.1.4.22.1.2.{key}", "4x", f"{d.mac:012x}")
        walk.add(f"1.3.6.1.2.1.4.22.1.3.{key}", "64x", f"{d.ip:08x}")
        walk.add(f"1.3.6.1.2.1.4.22.1.4.{key}", "2", 3)
    local_ports = [(sw.uplink_core_port, f"Te1/0/{sw.uplink_core_port}", f"TenGigabitEthernet1/0/{sw.uplink_core_port}")
                   for sw in plan.switches]
    _lldp_local(walk, core, _switch_descr(core), local_ports)
    for sw in plan.switches:
        # Switches of the data centre send their port MAC (subtype 3); the others the ifName (subtype 5).
        port_id = f"{sw.device.mac + 0x200:012x}" if sw.port_id_subtype == 3 else UPLINK_IFNAME
        _lldp_remote(walk, sw.uplink_core_port, sw.device.mac, sw.port_id_subtype, port_id,
                     "TenGigabitEthernet1/1/1", sw.name, _switch_descr(sw.device), CAP_BRIDGE, sw.device.ip)
    return walk.text()


def write_snmp(plan: SitePlan, folder: Path) -> dict[str, int]:
    """Write snmprec walks of the core router and the access switches (sampled past SNMP_MAX_SWITCHES)."""
    counts: dict[str, int] = {}
    chosen = [sw for sw in plan.switches if any(d.planted for d in sw.ports)]
    chosen += [sw for sw in plan.switches if sw not in chosen]
    chosen = sorted(chosen[:SNMP_MAX_SWITCHES], key=lambda s: s.name)
    for sw in chosen:
        text = _access_switch_walk(plan, sw)
        _write_text(folder / f"{sw.name}.snmprec", text)
        counts[f"snmp/{sw.name}.snmprec"] = text.count("\n")
    text = _core_walk(plan)
    _write_text(folder / f"{plan.core.hostname}.snmprec", text)
    counts[f"snmp/{plan.core.hostname}.snmprec"] = text.count("\n")
    return counts


# ---------------------------------------------------------------------------
# lldpcli JSON

def write_lldp(plan: SitePlan, folder: Path) -> dict[str, int]:
    """Write ``lldpcli -f json show neighbors`` output of two servers (one neighbour each, object form)."""
    counts: dict[str, int] = {}
    for dev in [plan.roles["ehr"][0], plan.roles["pacs"][0]]:
        sw = dev.switch
        neighbour = {
            "via": "LLDP",
            "rid": "1",
            "age": f"0 day, 0{1 + dev.index % 9}:1{dev.index % 6}:0{dev.index % 10}",
            "chassis": {
                sw.name: {
                    "id": {"type": "mac", "value": sw.device.mac_text},
                    "descr": _switch_descr(sw.device),
                    "mgmt-ip": sw.device.ip_text,
                    "capability": [{"type": "Bridge", "enabled": True}, {"type": "Router", "enabled": False}],
                }
            },
            "port": {
                "id": {"type": "ifname", "value": _port_name(dev.port_position)},
                "descr": f"GigabitEthernet{dev.port_position // 48 + 1}/0/{dev.port_position % 48 + 1}",
                "ttl": "120",
            },
            "vlan": {"vlan-id": str(dev.segment.vlan), "pvid": True},
        }
        document = {"lldp": {"interface": {"eth0": neighbour}}}
        _write_text(folder / f"{dev.hostname}.json", json.dumps(document, indent=2) + "\n")
        counts[f"lldp/{dev.hostname}.json"] = 1
    return counts


# ---------------------------------------------------------------------------
# Flows

# Records per normal edge are chosen so a site writes about this many flow records (at least one per edge).
FLOW_RECORD_BUDGET = 40_000
# Records per planted edge.
PLANTED_RECORDS = 3
# Flow records formatted at a time; bounds the memory the text columns take.
FLOW_CHUNK = 200_000
_ZEEK_SERVICES = {(TCP, 443): "ssl", (UDP, 53): "dns", (UDP, 123): "ntp", (UDP, 5060): "sip", (TCP, 445): "smb",
                  (TCP, 88): "krb_tcp", (TCP, 3389): "rdp", (TCP, 22): "ssh", (UDP, 161): "snmp", (UDP, 514): "syslog",
                  (TCP, 389): "ldap_tcp"}
_ZEEK_FIELDS = ("ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service", "duration",
                "orig_bytes", "resp_bytes", "conn_state", "local_orig", "local_resp", "missed_bytes", "history",
                "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes", "tunnel_parents")
_ZEEK_TYPES = ("time", "string", "addr", "port", "addr", "port", "enum", "string", "interval", "count", "count",
               "string", "bool", "bool", "count", "string", "count", "count", "count", "count", "set[string]")
NFDUMP_HEADER = ("ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt,in,out,sas,das,smk,dmk,dtos,dir,nh,nhb,"
                 "svln,dvln,ismc,odmc,idmc,osmc,mpls1,mpls2,mpls3,mpls4,mpls5,mpls6,mpls7,mpls8,mpls9,mpls10,"
                 "cl,sl,al,ra,eng,exid,tr")
_UID_ALPHABET = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", dtype=np.uint8)


def _records(plan: SitePlan, edges: Edges, rng: np.random.Generator) -> dict[str, np.ndarray]:
    per_edge = max(1, min(4, FLOW_RECORD_BUDGET // max(1, len(edges.src))))
    repeat = np.where(edges.planted, PLANTED_RECORDS, per_edge)
    edge = np.repeat(np.arange(len(edges.src)), repeat)
    n = len(edge)
    proto, port = edges.proto[edge], edges.port[edge]
    # NTP, BACnet and SIP over UDP use their well-known port on both sides.
    fixed_sport = (proto == UDP) & np.isin(port, (123, 47808, 5060))
    sport = np.where(fixed_sport, port, rng.integers(49152, 65536, n))
    # Offsets inside one day, in microseconds, so timestamps are exact decimals.
    start_us = rng.integers(0, 86_400 * 10**6 - 120 * 10**6, n)
    duration_us = rng.integers(2_000, 30 * 10**6, n)
    orig_bytes = rng.integers(60, 4000, n)
    resp_bytes = rng.integers(40, 20000, n)
    orig_pkts = orig_bytes // 600 + 2
    resp_pkts = resp_bytes // 1200 + 1
    return {"edge": edge, "proto": proto, "port": port, "sport": sport, "start_us": start_us,
            "duration_us": duration_us, "orig_bytes": orig_bytes, "resp_bytes": resp_bytes,
            "orig_pkts": orig_pkts, "resp_pkts": resp_pkts}


def _take(records: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    order = np.argsort(records["start_us"][mask], kind="stable")
    return {k: v[mask][order] for k, v in records.items()}


def _s(values) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _decimal(total_us: np.ndarray, digits: int) -> pa.Array:
    seconds = total_us // 10**6
    fraction = (total_us % 10**6) // 10 ** (6 - digits)
    return pc.binary_join_element_wise(_s(seconds), pc.utf8_lpad(_s(fraction), digits, "0"), ".")


def _join(columns: list, sep: str) -> bytes:
    """Join columns with ``sep`` and return the lines as one newline-terminated byte string."""
    lines = pc.binary_join_element_wise(pc.binary_join_element_wise(*columns, sep), pa.scalar("\n"), "")
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset:lines.offset + len(lines) + 1]
    return lines.buffers()[2].to_pybytes()[offsets[0]:offsets[-1]]


def write_flows(plan: SitePlan, edges: Edges, folder: Path, seed: int) -> dict[str, int]:
    """Write the flow records: data-centre and internet traffic to conn.log, the rest to nfdump.csv.

    The Zeek sensor taps the data-centre core; the NetFlow exporter is the
    building distribution. Every record belongs to exactly one file, so
    together they hold every edge once or more.
    """
    rng = np.random.default_rng(seed + 1009)
    records = _records(plan, edges, rng)
    n_dev = len(plan.devices)
    node_ips = pa.array([d.ip_text for d in plan.devices] + edges.externals)
    internal = np.concatenate([np.ones(n_dev, bool), np.zeros(len(edges.externals), bool)])
    dc = np.concatenate([np.array([d.segment.kind in DC_KINDS for d in plan.devices]),
                         np.ones(len(edges.externals), bool)])
    src, dst = edges.src[records["edge"]], edges.dst[records["edge"]]
    to_zeek = dc[src] | dc[dst]
    base_us = plan.base_epoch * 10**6
    counts = {}

    zeek = _take(records, to_zeek)
    counts["flows/conn.log"] = _write_zeek(plan, edges, zeek, node_ips, internal, base_us, rng, folder / "conn.log")
    netflow = _take(records, ~to_zeek)
    counts["flows/nfdump.csv"] = _write_nfdump(plan, edges, netflow, node_ips, base_us, folder / "nfdump.csv")
    return counts


def _zeek_lines(edges, rec, node_ips, internal, base_us, rng) -> bytes:
    n = len(rec["edge"])
    src, dst = edges.src[rec["edge"]], edges.dst[rec["edge"]]
    uid_chars = _UID_ALPHABET[rng.integers(0, len(_UID_ALPHABET), (n, 17))]
    uid = np.char.add("C", uid_chars.view("S17").ravel().astype(str))
    keys = rec["proto"] * 65536 + rec["port"]
    service = np.full(n, "-", dtype=object)
    for (proto, port), name in _ZEEK_SERVICES.items():
        service[keys == proto * 65536 + port] = name
    tcp = rec["proto"] == TCP
    header_bytes = np.where(tcp, 40, 28)
    tf = np.array(["F", "T"])
    columns = [
        _decimal(base_us + rec["start_us"], 6), pa.array(uid), node_ips.take(pa.array(src)), _s(rec["sport"]),
        node_ips.take(pa.array(dst)), _s(rec["port"]), pa.array(np.where(tcp, "tcp", "udp")),
        pa.array(service.astype(str)), _decimal(rec["duration_us"], 6), _s(rec["orig_bytes"]), _s(rec["resp_bytes"]),
        pa.array(np.full(n, "SF")), pa.array(tf[internal[src].astype(int)]), pa.array(tf[internal[dst].astype(int)]),
        pa.array(np.full(n, "0")), pa.array(np.where(tcp, "ShADadFf", "Dd")), _s(rec["orig_pkts"]),
        _s(rec["orig_bytes"] + rec["orig_pkts"] * header_bytes), _s(rec["resp_pkts"]),
        _s(rec["resp_bytes"] + rec["resp_pkts"] * header_bytes), pa.array(np.full(n, "-")),
    ]
    return _join(columns, "\t")


def _chunks(rec: dict[str, np.ndarray]):
    n = len(rec["edge"])
    for start in range(0, n, FLOW_CHUNK):
        yield {k: v[start:start + FLOW_CHUNK] for k, v in rec.items()}


def _write_zeek(plan, edges, rec, node_ips, internal, base_us, rng, path: Path) -> int:
    opened = time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(plan.base_epoch))
    closed = time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(plan.base_epoch + 86400))
    head = ["#separator \\x09", "#set_separator\t,", "#empty_field\t(empty)", "#unset_field\t-", "#path\tconn",
            f"#open\t{opened}", "#fields\t" + "\t".join(_ZEEK_FIELDS), "#types\t" + "\t".join(_ZEEK_TYPES)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.write(("\n".join(head) + "\n").encode())
        for chunk in _chunks(rec):
            handle.write(_zeek_lines(edges, chunk, node_ips, internal, base_us, rng))
        handle.write(f"#close\t{closed}\n".encode())
    return len(rec["edge"])


def _nfdump_lines(plan, edges, rec, node_ips, base_us) -> bytes:
    n = len(rec["edge"])
    src, dst = edges.src[rec["edge"]], edges.dst[rec["edge"]]
    start_s = (base_us + rec["start_us"]) // 10**6
    end_s = (base_us + rec["start_us"] + rec["duration_us"]) // 10**6
    tcp = rec["proto"] == TCP
    # sas,das,smk,dmk,dtos,dir, nh,nhb, svln,dvln, four MACs, ten MPLS labels, cl,sl,al, ra, eng, exid, tr.
    constant = ("0,0,0,0,0,0,0.0.0.0,0.0.0.0,0,0,00:00:00:00:00:00,00:00:00:00:00:00,00:00:00:00:00:00,"
                "00:00:00:00:00:00," + ",".join(["0-0-0"] * 10) + f",0.000,0.000,0.000,{plan.core.ip_text},0/0,1,"
                "1970-01-01 00:00:00.000")
    # Bidirectional records (RFC 5103 biflows): ipkt/ibyt forward, opkt/obyt reverse.
    columns = [
        _stamp(start_s), _stamp(end_s), _decimal(rec["duration_us"], 3), node_ips.take(pa.array(src)),
        node_ips.take(pa.array(dst)), _s(rec["sport"]), _s(rec["port"]), pa.array(np.where(tcp, "TCP", "UDP")),
        pa.array(np.where(tcp, ".AP.SF", "......")), pa.array(np.full(n, "0")), pa.array(np.full(n, "0")),
        _s(rec["orig_pkts"]), _s(rec["orig_bytes"]), _s(rec["resp_pkts"]), _s(rec["resp_bytes"]),
        pa.array(np.full(n, "1")), pa.array(np.full(n, "2")), pa.array(np.full(n, constant)),
    ]
    return _join(columns, ",")


def _stamp(seconds: np.ndarray) -> pa.Array:
    return pc.strftime(pa.array(seconds, pa.timestamp("s")), format="%Y-%m-%d %H:%M:%S")


def _write_nfdump(plan, edges, rec, node_ips, base_us, path: Path) -> int:
    n = len(rec["edge"])
    total_bytes = int(rec["orig_bytes"].sum() + rec["resp_bytes"].sum())
    total_pkts = int(rec["orig_pkts"].sum() + rec["resp_pkts"].sum())
    span = 86400
    summary = ["Summary", "flows,bytes,packets,avg_bps,avg_pps,avg_bpp",
               f"{n},{total_bytes},{total_pkts},{total_bytes * 8 // span},{total_pkts // span},"
               f"{total_bytes // max(1, total_pkts)}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.write((NFDUMP_HEADER + "\n").encode())
        for chunk in _chunks(rec):
            handle.write(_nfdump_lines(plan, edges, chunk, node_ips, base_us))
        handle.write(("\n".join(summary) + "\n").encode())
    return n
