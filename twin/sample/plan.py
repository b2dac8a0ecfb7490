"""Plan of a fictional hospital: buildings, segments, devices, switches and policy.

Everything here is derived from the arguments and a seeded random generator,
so the same arguments give the same plan. Device lists are plain Python
objects: at 100,000 devices one loop per device takes about a second, while
the flows (ten per device and more) are built with numpy in ``traffic``.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field

import numpy as np

from twin.sample.catalog import (
    BUILDING_SEGMENTS,
    CLASS_PROFILES,
    DC_SEGMENTS,
    DOMAIN,
    LIFE_CRITICAL_CLASSES,
    MODALITY_CLASSES,
)

__all__ = ["SegmentPlan", "DevicePlan", "SwitchPlan", "SitePlan", "build_plan", "SCENARIOS"]

SCENARIOS = ("hospital", "compliant", "violating")

# Devices per building, used to choose the number of buildings (A, B, C ...).
DEVICES_PER_BUILDING = 500
# At most 26 buildings, one letter each.
MAX_BUILDINGS = 26
# Access ports per switch: a stack of five 48-port members.
PORTS_PER_SWITCH = 240
# First host offset inside each prefix; .1 is the core router's gateway address.
FIRST_HOST_OFFSET = 10
# Seconds since the epoch of 2024-03-04 00:00:00 UTC; the seed adds whole days.
BASE_EPOCH = 1709510400

# External endpoints, all in documentation ranges (RFC 5737).
VENDOR_CLOUD_NET = "198.51.100.0/24"
REMOTE_USERS_NET = "192.0.2.0/24"
ROGUE_EXFIL_IP = "203.0.113.66"
ROGUE_SCANNER_IP = "203.0.113.77"


@dataclass
class SegmentPlan:
    id: str
    name: str
    zone: str
    building: str | None
    vlan: int
    trust: str
    designated: tuple[str, ...]
    kind: str
    network: ipaddress.IPv4Network | None = None
    next_host: int = FIRST_HOST_OFFSET

    def to_yaml(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "cidrs": [str(self.network)],
            "vlan_ids": [self.vlan],
            "zone": self.zone,
            "building": self.building,
            "designated_classes": list(self.designated),
            "trust": self.trust,
        }


@dataclass
class DevicePlan:
    index: int
    device_class: str
    segment: SegmentPlan
    building: str
    ip: int
    mac: int
    vendor: str
    model: str
    serial: str
    asset_tag: str
    hostname: str | None
    role: str = ""  # server role: ehr, dns, druglib ... ("" for other devices)
    planted: str = ""  # why the device is misplaced, "" when it sits where it belongs
    switch: "SwitchPlan | None" = None
    port_position: int = 0

    @property
    def ip_text(self) -> str:
        return str(ipaddress.IPv4Address(self.ip))

    @property
    def mac_text(self) -> str:
        return ":".join(f"{(self.mac >> s) & 0xFF:02x}" for s in range(40, -8, -8))

    @property
    def criticality(self) -> str:
        return criticality_of(self.device_class)


@dataclass
class SwitchPlan:
    name: str
    building: str
    device: DevicePlan | None = None
    ports: list[DevicePlan] = field(default_factory=list)
    uplink_core_port: int = 0  # position on the core router (1-based)
    port_id_subtype: int = 5  # LLDP port-id subtype the switch sends for its uplink


@dataclass
class SitePlan:
    name: str
    scenario: str
    seed: int
    base_epoch: int
    buildings: list[str]
    segments: list[SegmentPlan]
    devices: list[DevicePlan]
    switches: list[SwitchPlan]
    core: DevicePlan
    roles: dict[str, list[DevicePlan]]
    planted: dict[str, DevicePlan]  # planted device name -> device
    remote_users: list[str]
    vendor_cloud: list[str]

    def segment(self, segment_id: str) -> SegmentPlan:
        return next(s for s in self.segments if s.id == segment_id)


def criticality_of(device_class: str) -> str:
    """Return the criticality the site's rules give a device class."""
    if device_class in LIFE_CRITICAL_CLASSES:
        return "life_critical"
    if device_class in (*MODALITY_CLASSES, "pacs", "server"):
        return "high"
    if device_class in ("lab_analyzer", "pharmacy_dispenser", "nurse_call", "workstation"):
        return "medium"
    return "low"


def _server_counts(devices: int) -> dict[str, tuple[str, int]]:
    """Return server role -> (segment id, count), scaled with the site size."""
    return {
        "pacs": ("dc-imaging", max(1, devices // 20000)),
        "druglib": ("dc-clinical", max(1, devices // 25000)),
        "hl7": ("dc-clinical", max(1, devices // 25000)),
        "central": ("dc-clinical", 0),  # one per building, set by build_plan
        "ehr": ("dc-it", max(2, devices // 5000)),
        "dns": ("dc-it", max(2, devices // 20000)),
        "callmgr": ("dc-it", max(1, devices // 20000)),
        "file": ("dc-it", max(1, devices // 10000)),
        "bms": ("dc-it", 1),
        "nms": ("dc-it", 1),
        "portal": ("dmz", 1),
        "vpn": ("dmz", 1),
    }


_ROLE_HOSTNAMES = {
    "pacs": "pacs-{n:02d}", "druglib": "druglib-{n:02d}", "hl7": "hl7-engine-{n:02d}",
    "central": "central-station-{n:02d}", "ehr": "ehr-app-{n:02d}", "dns": "ad-dc-{n:02d}",
    "callmgr": "callmgr-{n:02d}", "file": "file-{n:02d}", "bms": "bms-{n:02d}", "nms": "nms-{n:02d}",
    "portal": "portal-{n:02d}", "vpn": "vpn-{n:02d}",
}


class _Allocator:
    """Hand out aligned prefixes from 10.16.0.0 upwards, smallest /24."""

    def __init__(self) -> None:
        self.cursor = int(ipaddress.IPv4Address("10.16.0.0"))

    def take(self, hosts: int) -> ipaddress.IPv4Network:
        need = hosts + FIRST_HOST_OFFSET + 16
        prefix = min(24, 32 - math.ceil(math.log2(need)))
        size = 1 << (32 - prefix)
        start = (self.cursor + size - 1) // size * size
        self.cursor = start + size
        return ipaddress.IPv4Network((start, prefix))


class _MacFactory:
    """Unique MACs per OUI; locally administered ones for devices without an OUI."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.counters: dict[int, int] = {}
        self.salt = int(rng.integers(0, 1 << 20))

    def next(self, oui: int | None) -> int:
        key = -1 if oui is None else oui
        count = self.counters.get(key, 0)
        self.counters[key] = count + 1
        # Spread NIC-specific parts over the 24-bit space; 0x9E3779 is odd, so
        # the map is a bijection modulo 2**24 and MACs never repeat.
        nic = (self.salt + count * 0x9E3779) & 0xFFFFFF
        if oui is None:
            # Locally administered, unicast: bit 1 of the first octet set, bit 0 clear.
            return (0xDA << 40) | ((count & 0xFFFF) << 24) | nic
        return (oui << 24) | nic


def _class_counts(per_building: float) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for kind, _name, _zone, _vlan, _trust, _designated, classes in BUILDING_SEGMENTS:
        counts[kind] = {}
        for cls, share, minimum in classes:
            counts[kind][cls] = max(minimum, round(share * per_building))
    return counts


def build_plan(devices: int, seed: int, name: str | None, scenario: str) -> SitePlan:
    """Lay out buildings, segments, devices, switch ports and planted devices.

    ``devices`` is a target: the plan holds about that many devices (the
    small scenarios hold their class minimums, about 40).
    """
    rng = np.random.default_rng(seed)
    macs = _MacFactory(rng)
    tiny = scenario in ("compliant", "violating")
    n_buildings = 1 if tiny else max(2, min(MAX_BUILDINGS, math.ceil(devices / DEVICES_PER_BUILDING)))
    buildings = [chr(ord("A") + i) for i in range(n_buildings)]
    site_name = name or ("Northbrook Clinic" if tiny else "Northbrook General Hospital")

    # Segments: data-centre ones first, then the per-building ones.
    segments: list[SegmentPlan] = []
    for seg_id, seg_name, zone, vlan, trust, designated in DC_SEGMENTS:
        segments.append(SegmentPlan(seg_id, seg_name, zone, "A", vlan, trust, designated, seg_id))
    for b_index, building in enumerate(buildings):
        for kind, seg_name, zone, vlan_offset, trust, designated, _classes in BUILDING_SEGMENTS:
            segments.append(SegmentPlan(
                f"{building.lower()}-{kind}", f"Building {building} {seg_name.lower()}", zone, building,
                100 * (b_index + 1) + vlan_offset, trust, designated, kind,
            ))
    by_id = {s.id: s for s in segments}

    if tiny:
        devices = 0  # the small scenarios hold the class minimums only
    servers = _server_counts(devices)
    servers["central"] = ("dc-clinical", n_buildings)
    server_total = sum(count for _seg, count in servers.values())
    per_building = max(0.0, (devices - server_total) / n_buildings)
    counts = _class_counts(per_building)
    ap_count = 1 if tiny else max(1, round(0.02 * per_building))

    # Device specifications in a fixed order: (class, segment, building, role, planted).
    specs: list[tuple[str, SegmentPlan, str, str, str]] = []
    for role, (seg_id, count) in servers.items():
        cls = "pacs" if role == "pacs" else "server"
        for _ in range(count):
            specs.append((cls, by_id[seg_id], "A", role, ""))
    for building in buildings:
        b = building.lower()
        for kind, *_rest in BUILDING_SEGMENTS:
            for cls, count in counts[kind].items():
                specs += [(cls, by_id[f"{b}-{kind}"], building, "", "")] * count
        specs += [("wireless_ap", by_id["mgmt"], building, "", "")] * ap_count
    specs += _planted_specs(scenario, buildings, by_id)

    plan_devices: list[DevicePlan] = []
    roles: dict[str, list[DevicePlan]] = {}
    planted: dict[str, DevicePlan] = {}
    role_numbers: dict[str, int] = {}
    class_numbers: dict[str, int] = {}
    for cls, seg, building, role, plant in specs:
        plan_devices.append(_make_device(len(plan_devices), cls, seg, building, role, plant, rng, macs,
                                         role_numbers, class_numbers))
        dev = plan_devices[-1]
        if role:
            roles.setdefault(role, []).append(dev)
        if plant:
            planted[plant] = dev

    switches, core = _attach(plan_devices, buildings, by_id["mgmt"], rng, macs)
    for sw in switches:
        plan_devices.append(sw.device)
    plan_devices.append(core)
    # Renumber so the device index equals the list position.
    for i, dev in enumerate(plan_devices):
        dev.index = i

    remote_users = [f"192.0.2.{10 + i}" for i in range(min(200, max(5, devices // 500)))]
    vendor_cloud = ["198.51.100.10", "198.51.100.20"]
    return SitePlan(site_name, scenario, seed, BASE_EPOCH + 86400 * (seed % 28), buildings, segments,
                    plan_devices, switches, core, roles, planted, remote_users, vendor_cloud)


def _planted_specs(scenario: str, buildings: list[str], by_id: dict[str, SegmentPlan]) -> list[tuple]:
    """Return the devices whose placement is a planted finding, or that planted flows need."""
    if scenario == "compliant":
        return []
    a = buildings[0].lower()
    if scenario == "violating":
        return [("workstation", by_id[f"{a}-monitors"], buildings[0], "", "flat_workstation")]
    b = buildings[1].lower()
    c = buildings[min(2, len(buildings) - 1)].lower()
    specs = [
        ("infusion_pump", by_id[f"{b}-guest"], buildings[1], "", "pump_on_guest"),
        ("patient_monitor", by_id[f"{c}-it"], buildings[min(2, len(buildings) - 1)], "", "monitor_in_it"),
        ("workstation", by_id[f"{a}-pumps"], buildings[0], "", "workstation_in_pumps"),
    ]
    # Several workstations make building B's monitoring segment flat.
    specs.append(("workstation", by_id[f"{b}-monitors"], buildings[1], "", "flat_workstation"))
    specs += [("workstation", by_id[f"{b}-monitors"], buildings[1], "", f"flat_workstation_{i}") for i in range(2, 7)]
    return specs


def _make_device(index, cls, seg, building, role, plant, rng, macs, role_numbers, class_numbers) -> DevicePlan:
    profile = CLASS_PROFILES[cls]
    vendor = profile.vendors[index % len(profile.vendors)]
    model = vendor.models[(index // len(profile.vendors)) % len(vendor.models)]
    number = class_numbers.get(cls, 0) + 1
    class_numbers[cls] = number
    b = building.lower()
    hostname = None
    if role:
        role_numbers[role] = role_numbers.get(role, 0) + 1
        hostname = _ROLE_HOSTNAMES[role].format(n=role_numbers[role], b=b)
    elif profile.hostname_prefix:
        hostname = f"{b}-{profile.hostname_prefix}-{number:04d}"
    serial_letters = "".join(chr(65 + int(x)) for x in rng.integers(0, 26, 2))
    serial = f"{serial_letters}{int(rng.integers(10_000_000, 99_999_999))}" if cls != "unknown" else ""
    asset_tag = f"NB-{index + 100001}" if profile.in_inventory else ""
    return DevicePlan(index, cls, seg, building, 0, macs.next(vendor.oui), vendor.name, model, serial,
                      asset_tag, hostname, role, plant)


def _attach(devices: list[DevicePlan], buildings: list[str], mgmt: SegmentPlan, rng, macs):
    """Give every device an address and an access-switch port; build switches and the core."""
    # Addresses: prefixes sized by the devices each segment holds.
    allocator = _Allocator()
    members: dict[str, list[DevicePlan]] = {}
    for dev in devices:
        members.setdefault(dev.segment.id, []).append(dev)
    # Switches get management addresses too: at most one per PORTS_PER_SWITCH
    # devices, plus one partly filled switch per building and the data centre.
    switch_reserve = len(devices) // PORTS_PER_SWITCH + len(buildings) + 2
    seen: set[str] = set()
    for dev in devices:
        seg = dev.segment
        if seg.id in seen:
            continue
        seen.add(seg.id)
        extra = switch_reserve if seg is mgmt else 0
        seg.network = allocator.take(len(members[seg.id]) + extra)
    for dev in devices:
        seg = dev.segment
        dev.ip = int(seg.network.network_address) + seg.next_host
        seg.next_host += 1

    # Switch ports: one access-switch stack group per building, one for the data centre.
    groups: dict[str, list[DevicePlan]] = {}
    for dev in devices:
        key = "dc" if dev.segment.kind in ("dc-imaging", "dc-clinical", "dc-it", "dmz") else dev.building.lower()
        groups.setdefault(key, []).append(dev)
    switches: list[SwitchPlan] = []
    sw_profile = CLASS_PROFILES["switch"]
    for key in ["dc"] + [b.lower() for b in buildings]:
        group = sorted(groups.get(key, []), key=lambda d: (d.segment.vlan, d.index))
        n_sw = max(1, math.ceil(len(group) / PORTS_PER_SWITCH))
        for s in range(n_sw):
            building = "A" if key == "dc" else key.upper()
            sw_dev = DevicePlan(0, "switch", mgmt, building, int(mgmt.network.network_address) + mgmt.next_host,
                                macs.next(sw_profile.vendors[0].oui), sw_profile.vendors[0].name,
                                sw_profile.vendors[0].models[0],
                                f"FOC{int(rng.integers(1000, 9999))}X{int(rng.integers(100, 999))}", "",
                                f"sw-{key}-{s + 1:02d}")
            mgmt.next_host += 1
            sw = SwitchPlan(sw_dev.hostname, building, sw_dev, uplink_core_port=len(switches) + 1,
                            port_id_subtype=3 if key == "dc" else 5)
            for pos, dev in enumerate(group[s * PORTS_PER_SWITCH:(s + 1) * PORTS_PER_SWITCH]):
                dev.switch = sw
                dev.port_position = pos
                sw.ports.append(dev)
            switches.append(sw)
    router = CLASS_PROFILES["router"].vendors[0]
    core = DevicePlan(0, "router", mgmt, "A", int(mgmt.network.network_address) + 1, macs.next(router.oui),
                      router.name, router.models[0], f"FXS{int(rng.integers(1000, 9999))}Q{int(rng.integers(100, 999))}",
                      "", "core-rtr-01")
    return switches, core


def fqdn(hostname: str | None) -> str | None:
    """Return the host name inside the site's DNS domain."""
    return f"{hostname}.{DOMAIN}" if hostname else None
