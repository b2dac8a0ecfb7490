"""Device classes, fictional vendors and address plan of the sample hospital.

Manufacturer and model names are fictional. Each vendor entry carries an
IEEE OUI registered to a real company that makes that kind of device (looked
up in netaddr's offline registry), so MAC-based classification meets the
evidence it meets on a real site.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Vendor",
    "ClassProfile",
    "CLASS_PROFILES",
    "BUILDING_SEGMENTS",
    "DC_SEGMENTS",
    "MEDICAL_CLASSES",
    "IT_CLASSES",
    "LIFE_CRITICAL_CLASSES",
    "MODALITY_CLASSES",
    "DOMAIN",
    "SYS_OBJECT_ID",
]

# DNS domain of the fictional site (the reserved .example TLD).
DOMAIN = "northbrook.example"

# sysObjectID of the fictional switch vendor, under the IANA enterprise number
# reserved for documentation (RFC 5612).
SYS_OBJECT_ID = "1.3.6.1.4.1.32473.1.9300"


@dataclass(frozen=True)
class Vendor:
    """A fictional manufacturer, its models and the OUI its devices use."""

    name: str
    models: tuple[str, ...]
    oui: int | None  # None: locally administered (random) MACs


@dataclass(frozen=True)
class ClassProfile:
    """How devices of one class look in the inventory, scans and traffic."""

    device_type: str  # CMMS "Device Type" text
    department: str
    vendors: tuple[Vendor, ...]
    in_inventory: bool
    os: str = ""
    hostname_prefix: str = ""
    firmware: str = ""


def _v(name: str, models: tuple[str, ...], oui: str | None) -> Vendor:
    return Vendor(name, models, int(oui.replace(":", ""), 16) if oui else None)


CLASS_PROFILES: dict[str, ClassProfile] = {
    "infusion_pump": ClassProfile(
        "Infusion Pump", "Nursing",
        (_v("Meridian Infusion Systems", ("Meridian LVP 3", "Meridian SP-20 Syringe"), "58:46:e1"),  # Baxter
         _v("Corvane Medical", ("Corvane Infuse 7",), "9c:c8:ae"),  # Becton, Dickinson
         _v("Halden Medical", ("Halden PCA 2",), "00:1a:01")),  # Smiths Medical
        True, firmware="4.2.1"),
    "patient_monitor": ClassProfile(
        "Patient Monitor", "Intensive Care",
        (_v("Vitalis Monitoring", ("Vitalis VM-12", "Vitalis VM-8"), "00:09:5c"),  # Philips Medical Systems
         _v("Aurelia Medical", ("Aurelia PM-9000",), "00:a0:37"),  # Mindray
         _v("Kestrel Biomedical", ("Kestrel BSM-60",), "00:a0:9a")),  # Nihon Kohden
        True, firmware="B.02.11"),
    "ventilator": ClassProfile(
        "Ventilator", "Intensive Care",
        (_v("Borealis Respiratory", ("Borealis V500",), "00:30:e6"),),  # Draeger Medical Systems
        True, firmware="2.51"),
    "ct_scanner": ClassProfile(
        "CT Scanner", "Radiology", (_v("Lumen Imaging", ("Lumen CT 128",), "44:4b:5d"),), True,  # GE Healthcare
        os="Linux", hostname_prefix="ct"),
    "mri_scanner": ClassProfile(
        "MRI Scanner", "Radiology", (_v("Lumen Imaging", ("Lumen MR 1.5T",), "44:4b:5d"),), True,
        os="Linux", hostname_prefix="mr"),
    "xray": ClassProfile(
        "X-Ray System", "Radiology", (_v("Radiant Diagnostics", ("Radiant DR-2",), "00:1d:4a"),), True,  # Carestream
        os="Windows", hostname_prefix="dx"),
    "ultrasound": ClassProfile(
        "Ultrasound", "Radiology", (_v("Sonora Medical", ("Sonora US-7",), "a0:f2:17"),), True,  # GE Medical System
        os="Windows", hostname_prefix="us"),
    "pacs": ClassProfile(
        "PACS Server", "Radiology", (_v("Archeon Health IT", ("Archeon PACS 9",), "00:50:56"),), True,  # VMware
        os="Linux", hostname_prefix="pacs"),
    "lab_analyzer": ClassProfile(
        "Lab Analyzer", "Laboratory",
        (_v("Celltrace Diagnostics", ("Celltrace CA-600",), "00:0e:2f"),  # Roche Diagnostics
         _v("Hemalux", ("Hemalux XN-10",), "00:06:6b")),  # Sysmex
        True),
    "pharmacy_dispenser": ClassProfile(
        "Medication Dispensing Cabinet", "Pharmacy",
        (_v("Dosewell Automation", ("Dosewell MedStation 5",), "f8:c6:78"),), True),  # Carefusion
    "nurse_call": ClassProfile(
        "Nurse Call Station", "Nursing", (_v("Calyra Communications", ("Calyra NC-500",), "00:14:b8"),), True),  # Hill-Rom
    "workstation": ClassProfile(
        "Workstation", "Information Technology",
        (_v("Brightline Computers", ("Brightline OptiDesk 7090",), "d0:43:1e"),  # Dell
         _v("Northway Systems", ("Northway ProDesk 600",), "e4:c7:67")),  # Intel Corporate
        True, os="Windows", hostname_prefix="ws"),
    "printer": ClassProfile(
        "Printer", "Information Technology", (_v("Inkwell Imaging", ("Inkwell LaserPro M507",), "84:ba:3b"),), True,  # Canon
        hostname_prefix="prn"),
    "server": ClassProfile(
        "Server", "Information Technology", (_v("Stratus Compute", ("Stratus VM",), "00:50:56"),), True, os="Linux"),
    "ip_phone": ClassProfile(
        "IP Phone", "Information Technology", (_v("Talkpoint", ("Talkpoint VVX 450",), "64:16:7f"),), False),  # Polycom
    "camera": ClassProfile(
        "IP Camera", "Security", (_v("Vigil Optics", ("Vigil Q3515",), "b8:a4:4f"),), True),  # Axis Communications
    "badge_reader": ClassProfile(
        "Badge Reader", "Security", (_v("Keystone Access", ("Keystone R40",), "00:06:33"),), True),  # HID Global
    "hvac_controller": ClassProfile(
        "HVAC Controller", "Facilities", (_v("Climatic Controls", ("Climatic FX-80",), "00:10:8d"),), True),  # Johnson Controls
    "iot_sensor": ClassProfile(
        "Environmental Sensor", "Facilities", (_v("Sensewell", ("Sensewell TH-2",), "00:20:3d"),), True),  # Honeywell
    "wireless_ap": ClassProfile(
        "Wireless Access Point", "Information Technology",
        (_v("Skyreach Networks", ("Skyreach AP-535",), "4c:d5:87"),), False, hostname_prefix="ap"),  # Aruba
    "switch": ClassProfile(
        "Switch", "Information Technology", (_v("Ridgeway Networks", ("Ridgeway 9300-48P",), "e8:0a:b9"),), False),  # Cisco
    "router": ClassProfile(
        "Router", "Information Technology", (_v("Ridgeway Networks", ("Ridgeway 9500-C",), "48:1b:a4"),), False),  # Cisco
    "unknown": ClassProfile(
        "Guest Device", "", (_v("", ("",), None),), False),
}

MODALITY_CLASSES = ("ct_scanner", "mri_scanner", "xray", "ultrasound")
LIFE_CRITICAL_CLASSES = ("infusion_pump", "patient_monitor", "ventilator")
MEDICAL_CLASSES = (
    "infusion_pump", "patient_monitor", "ventilator", *MODALITY_CLASSES, "imaging_modality", "pacs",
    "lab_analyzer", "pharmacy_dispenser", "nurse_call",
)
IT_CLASSES = ("workstation", "server", "printer")

# Per-building segment templates: kind, name, zone, VLAN offset, trust,
# designated classes and (class, share of the building's devices, minimum).
BUILDING_SEGMENTS: tuple[tuple, ...] = (
    ("pumps", "Infusion pumps", "clinical", 10, "high", ("infusion_pump",), (("infusion_pump", 0.17, 4),)),
    ("monitors", "Patient monitoring", "clinical", 11, "high", ("patient_monitor", "ventilator"),
     (("patient_monitor", 0.10, 3), ("ventilator", 0.02, 1))),
    ("imaging", "Imaging modalities", "clinical", 12, "high", MODALITY_CLASSES,
     (("ct_scanner", 0.004, 1), ("mri_scanner", 0.003, 0), ("xray", 0.008, 1), ("ultrasound", 0.012, 0))),
    ("lab", "Laboratory analyzers", "clinical", 13, "high", ("lab_analyzer",), (("lab_analyzer", 0.02, 1),)),
    ("pharmacy", "Pharmacy automation", "clinical", 14, "high", ("pharmacy_dispenser",),
     (("pharmacy_dispenser", 0.01, 1),)),
    ("nursecall", "Nurse call", "clinical", 15, "high", ("nurse_call",), (("nurse_call", 0.03, 1),)),
    ("it", "Staff workstations", "it", 20, "medium", ("workstation", "printer"),
     (("workstation", 0.26, 4), ("printer", 0.03, 1))),
    ("voice", "Voice", "voice", 30, "medium", ("ip_phone",), (("ip_phone", 0.17, 2),)),
    ("guest", "Guest Wi-Fi", "guest", 40, "untrusted", ("unknown",), (("unknown", 0.05, 2),)),
    ("bms", "Building systems", "building", 50, "low", ("hvac_controller", "badge_reader", "camera", "iot_sensor"),
     (("hvac_controller", 0.015, 1), ("badge_reader", 0.015, 1), ("camera", 0.03, 1), ("iot_sensor", 0.01, 0))),
)

# Site-wide data-centre segments: id, name, zone, VLAN, trust, designated classes.
DC_SEGMENTS: tuple[tuple, ...] = (
    ("dc-imaging", "PACS and imaging servers", "clinical", 10, "high", ("pacs",)),
    ("dc-clinical", "Clinical application servers", "clinical", 11, "high", ("server",)),
    ("dc-it", "IT servers", "it", 20, "high", ("server",)),
    ("dmz", "DMZ", "dmz", 90, "low", ("server", "firewall")),
    ("mgmt", "Network management", "management", 99, "high", ("switch", "router", "wireless_ap", "firewall")),
)
