"""First-pass device classification from the evidence the twin holds.

Each rule looks at one kind of evidence (an inventory device type, a model
name, sysDescr, LLDP capabilities, nmap's OS class, open ports, the host
name, the vendor) and proposes a device class with a weight. The proposal
with the highest weight wins; every other proposal that agrees raises the
confidence a little. The evidence list is kept on the device, so the app and
``twin show device`` can show why a device is an infusion pump.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable

from twin.discovery.inventory import device_type_to_class
from twin.model.classes import DEVICE_CLASSES, MEDICAL_CLASSES, ROLE_OF_CLASS

__all__ = [
    "DEVICE_CLASSES",
    "ROLE_OF_CLASS",
    "MEDICAL_CLASSES",
    "Proposal",
    "classify",
    "type_to_class",
]


# Weights per kind of evidence: how much each is trusted to decide a class.
# A site pattern is the user's explicit statement about the site's devices,
# so a match outranks every built-in rule, the inventory device type included.
WEIGHT_SITE_MODEL_PATTERN = 0.98
WEIGHT_SITE_HOSTNAME_PATTERN = 0.97
WEIGHT_INVENTORY_TYPE = 0.95
WEIGHT_MODEL = 0.85
WEIGHT_SYS_DESCR = 0.8
WEIGHT_LLDP_CAPABILITY = 0.7
WEIGHT_NMAP_OS = 0.65
WEIGHT_PORTS = 0.6
WEIGHT_HOSTNAME = 0.55
WEIGHT_VENDOR = 0.4
# Confidence added per further proposal that agrees with the winner, and its cap.
AGREEMENT_BONUS = 0.05
MAX_CONFIDENCE = 0.99

# (regex, class) over free text such as a CMMS device type or a model name.
# Order matters: the first match wins, so specific terms come first.
_TEXT_RULES: tuple[tuple[str, str], ...] = (
    (r"infusion|syringe pump|\bpca\b|volumetric pump|alaris|sigma spectrum|plum 360|infusomat|perfusor", "infusion_pump"),
    (r"ventilator|respirator|anesthes|anaesthes", "ventilator"),
    (r"patient monitor|bedside monitor|vital signs|intellivue|carescape|\bmonitor\b.*patient|telemetry", "patient_monitor"),
    (r"\bct\b|computed tomography|somatom|revolution ct|aquilion", "ct_scanner"),
    (r"\bmri\b|magnetic resonance|magnetom|signa", "mri_scanner"),
    (r"x-?ray|radiograph|fluoroscop|c-arm|mammograph|\bdr\b detector", "xray"),
    (r"ultrasound|sonograph|echocardio", "ultrasound"),
    (r"modality|angiograph|pet/ct|nuclear medicine|gamma camera", "imaging_modality"),
    (r"\bpacs\b|image archive|vna\b|vendor neutral archive", "pacs"),
    (r"analy[sz]er|laborator|\blab\b|hematology|chemistry|blood gas", "lab_analyzer"),
    (r"dispens|pyxis|omnicell|pharmacy", "pharmacy_dispenser"),
    (r"nurse call|nurse-call", "nurse_call"),
    (r"ip phone|voip phone|\bphone\b|handset|telephone", "ip_phone"),
    (r"printer|laserjet|officejet|label print|zebra", "printer"),
    (r"wireless (lan )?controller|cisco controller|\bair-ct\d|\bwlc\b", "wireless_controller"),
    (r"access point|wireless ap|\bwap\b|aironet|\bap\b|\bair-[a-z]*ap\d|\bap\d[a-z0-9]*-k9", "wireless_ap"),
    (r"firewall|fortigate|palo alto|\basa\b|pan-os", "firewall"),
    (r"router|\bisr\b|\basr\b", "router"),
    (r"switch|catalyst|procurve|nexus|\beos\b|arista|\bdcs-\d|\bws-c\d|\bc(2960|3560|3750|3850|9200|9300|9500)\b|junos", "switch"),
    (r"camera|\bcctv\b|\bnvr\b|surveillance", "camera"),
    (r"badge|card reader|access control", "badge_reader"),
    (r"hvac|\bbms\b|building management|bacnet|air handler|chiller", "hvac_controller"),
    (r"sensor|thermometer|temperature|humidity", "iot_sensor"),
    (r"windows server|windows (nt|20(03|08|12|16|19|22))\b", "server"),
    (r"windows (xp|2000|vista|7|8|10|11)\b|software: windows", "workstation"),
    (r"server|\bvm\b|virtual machine|\behr\b|\bemr\b|interface engine|domain controller", "server"),
    (r"workstation|desktop|laptop|\bpc\b|thin client|computer", "workstation"),
)
_COMPILED_TEXT_RULES = tuple((re.compile(p, re.IGNORECASE), c) for p, c in _TEXT_RULES)

# Default host-name patterns (site configuration can add more).
DEFAULT_HOSTNAME_PATTERNS: dict[str, tuple[str, ...]] = {
    "infusion_pump": (r"^(pump|inf|iv)[-_]",),
    "patient_monitor": (r"^(mon|pm|monitor)[-_]",),
    "ventilator": (r"^(vent)[-_]",),
    "ct_scanner": (r"^ct[-_]",),
    "mri_scanner": (r"^mri?[-_]",),
    "xray": (r"^(xr|dr|cr)[-_]",),
    "ultrasound": (r"^(us|echo)[-_]",),
    "pacs": (r"^pacs",),
    "lab_analyzer": (r"^(lab|ana)[-_]",),
    "pharmacy_dispenser": (r"^(disp|pyxis|rx)[-_]",),
    "workstation": (r"^(ws|pc|wks|desk|lt)[-_]",),
    "server": (r"^(srv|svr|dc|ehr|hl7|app|db)[-_]",),
    "printer": (r"^(prn|print)[-_]",),
    "ip_phone": (r"^(phone|sep[0-9a-f]{12})",),
    "wireless_ap": (r"^(ap|wap)[-_]",),
    "switch": (r"^(sw|asw|dsw|csw)[-_]",),
    "router": (r"^(rtr|gw|core)[-_]",),
    "firewall": (r"^(fw|fwl)[-_]",),
    "camera": (r"^(cam|cctv)[-_]",),
    "badge_reader": (r"^(badge|acs)[-_]",),
    "hvac_controller": (r"^(hvac|bms|ahu)[-_]",),
}

# Ports whose presence as a listening service points to a class.
_PORT_RULES: tuple[tuple[frozenset[int], str], ...] = (
    (frozenset({104, 11112}), "pacs"),
    (frozenset({9100, 515, 631}), "printer"),
    (frozenset({5060, 5061}), "ip_phone"),
    (frozenset({47808}), "hvac_controller"),
    (frozenset({2575}), "server"),
    (frozenset({3389}), "workstation"),
)

# nmap osclass type -> class.
_NMAP_TYPES = {
    "switch": "switch",
    "router": "router",
    "firewall": "firewall",
    "printer": "printer",
    "phone": "ip_phone",
    "voip phone": "ip_phone",
    "wap": "wireless_ap",
    "webcam": "camera",
    "specialized": None,
    "general purpose": None,
}

# Substring of an OUI vendor name -> class, for vendors that make one kind of device.
_VENDOR_HINTS = (
    ("baxter", "infusion_pump"),
    ("b. braun", "infusion_pump"),
    ("b.braun", "infusion_pump"),
    ("carefusion", "infusion_pump"),
    ("icu medical", "infusion_pump"),
    ("hospira", "infusion_pump"),
    ("smiths medical", "infusion_pump"),
    ("draeger", "patient_monitor"),
    ("drägerwerk", "patient_monitor"),
    ("nihon kohden", "patient_monitor"),
    ("mindray", "patient_monitor"),
    ("spacelabs", "patient_monitor"),
    ("polycom", "ip_phone"),
    ("yealink", "ip_phone"),
    ("avaya", "ip_phone"),
    ("axis communications", "camera"),
    ("hikvision", "camera"),
    ("aruba", "wireless_ap"),
    ("ruckus", "wireless_ap"),
    ("zebra", "printer"),
    ("lexmark", "printer"),
    ("fortinet", "firewall"),
    ("palo alto", "firewall"),
)


@dataclass(frozen=True, slots=True)
class Proposal:
    """One rule's vote for a device class."""

    device_class: str
    weight: float
    rule: str
    value: str

    def as_dict(self) -> dict[str, Any]:
        return {"class": self.device_class, "weight": self.weight, "rule": self.rule, "value": self.value}


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern, re.IGNORECASE)


def _first_match(patterns_by_class, text: str) -> str | None:
    for device_class, patterns in patterns_by_class.items():
        if any(_compiled(p).search(text) for p in patterns):
            return device_class
    return None


@lru_cache(maxsize=65536)
def type_to_class(text: str | None) -> str | None:
    """Map free text (a CMMS device type or model name) to a device class.

    >>> type_to_class("Infusion Pump, Large Volume")
    'infusion_pump'
    >>> type_to_class("Catalyst 9300 switch")
    'switch'
    >>> type_to_class("Coffee machine") is None
    True
    """
    if not text:
        return None
    if text.strip().lower() in ROLE_OF_CLASS:
        return text.strip().lower()
    for regex, device_class in _COMPILED_TEXT_RULES:
        if regex.search(text):
            return device_class
    return None


@lru_cache(maxsize=65536)
def _inventory_class(text: str | None) -> str | None:
    # Two vocabularies read the CMMS text; a medical class from either wins,
    # so "PACS Server" is a PACS and not a generic server.
    readings = [r for r in (device_type_to_class(text), type_to_class(text)) if r]
    return next((r for r in readings if r in MEDICAL_CLASSES), readings[0] if readings else None)


def _capability_class(capabilities: Iterable[str]) -> str | None:
    caps = {c.lower() for c in capabilities}
    if "telephone" in caps:
        return "ip_phone"
    if "wlan" in caps:
        return "wireless_ap"
    if "router" in caps and "bridge" not in caps:
        return "router"
    if "bridge" in caps:
        return "switch"
    return None


def classify(
    facts: dict[str, Any],
    *,
    hostname_patterns: dict[str, list[str]] | None = None,
    model_patterns: dict[str, list[str]] | None = None,
) -> tuple[str, float, list[dict[str, Any]]]:
    """Classify one device; return (device_class, confidence, evidence).

    Parameters
    ----------
    facts : dict
        What the resolver gathered for the device: ``inventory_type``,
        ``model``, ``sys_descr``, ``capabilities`` (LLDP/CDP capabilities the
        device announced, as heard by its neighbours), ``os_classes``,
        ``ports`` (set of (proto, port) from scans), ``flow_ports`` (ports
        the device received flows on), ``hostname``, ``vendor``,
        ``snmp_sys_services``.
    hostname_patterns, model_patterns : dict, optional
        Extra regexes per class from the site configuration. They are tried
        before the built-in patterns of their kind, and a match outranks
        every built-in rule (a model pattern outranks a host-name pattern).
        The other proposals stay in the evidence.

    >>> classify({"hostname": "pump-0042", "vendor": "Baxter"})[0]
    'infusion_pump'
    """
    proposals: list[Proposal] = []

    inventory_type = facts.get("inventory_type")
    found = _inventory_class(inventory_type)
    if found:
        proposals.append(Proposal(found, WEIGHT_INVENTORY_TYPE, "inventory device type", str(inventory_type)))

    model = facts.get("model")
    if model:
        site_class = _first_match(model_patterns or {}, model)
        if site_class:
            proposals.append(Proposal(site_class, WEIGHT_SITE_MODEL_PATTERN, "site model pattern", model))
        else:
            found = type_to_class(model)
            if found:
                proposals.append(Proposal(found, WEIGHT_MODEL, "model name", model))

    sys_descr = facts.get("sys_descr")
    if sys_descr:
        found = type_to_class(sys_descr)
        if found:
            proposals.append(Proposal(found, WEIGHT_SYS_DESCR, "sysDescr", sys_descr[:120]))

    found = _capability_class(facts.get("capabilities") or ())
    if found:
        caps = ",".join(sorted(facts.get("capabilities") or ()))
        proposals.append(Proposal(found, WEIGHT_LLDP_CAPABILITY, "LLDP/CDP capabilities", caps))

    # nmap lists every OS guess that ties for the best accuracy. When one of
    # them is a general-purpose OS, the guess does not point to a class.
    os_types = [str(c.get("type", "")).lower() for c in facts.get("os_classes") or ()]
    if os_types and "general purpose" not in os_types:
        for os_type in os_types:
            found = _NMAP_TYPES.get(os_type)
            if found:
                proposals.append(Proposal(found, WEIGHT_NMAP_OS, "nmap OS class", os_type))
                break

    ports = (facts.get("ports") or set()) | (facts.get("flow_ports") or set())
    port_numbers = {port for proto, port in ports if proto == "tcp" or port in (47808, 5060)}
    for wanted, device_class in _PORT_RULES:
        hit = sorted(wanted & port_numbers)
        if hit:
            proposals.append(Proposal(device_class, WEIGHT_PORTS, "listening port", ",".join(map(str, hit))))
            break

    hostname = facts.get("hostname")
    if hostname:
        short = hostname.split(".", 1)[0]
        site_class = _first_match(hostname_patterns or {}, short)
        if site_class:
            proposals.append(Proposal(site_class, WEIGHT_SITE_HOSTNAME_PATTERN, "site host-name pattern", hostname))
        else:
            default_class = _first_match(DEFAULT_HOSTNAME_PATTERNS, short)
            if default_class:
                proposals.append(Proposal(default_class, WEIGHT_HOSTNAME, "host-name pattern", hostname))

    vendor = (facts.get("vendor") or "").lower()
    for needle, device_class in _VENDOR_HINTS:
        if needle in vendor:
            proposals.append(Proposal(device_class, WEIGHT_VENDOR, "vendor", facts.get("vendor")))
            break

    if not proposals:
        return "unknown", 0.0, []
    proposals.sort(key=lambda p: (-p.weight, p.device_class))
    winner = proposals[0]
    agreeing = sum(1 for p in proposals[1:] if p.device_class == winner.device_class)
    confidence = min(MAX_CONFIDENCE, winner.weight + AGREEMENT_BONUS * agreeing)
    return winner.device_class, round(confidence, 3), [p.as_dict() for p in proposals]
