"""The device-class vocabulary and the role of each class."""

from __future__ import annotations

__all__ = ["ROLE_OF_CLASS", "DEVICE_CLASSES", "MEDICAL_CLASSES"]

# Device class -> role (medical, it, network, iot, building).
ROLE_OF_CLASS = {
    "infusion_pump": "medical",
    "patient_monitor": "medical",
    "ventilator": "medical",
    "ct_scanner": "medical",
    "mri_scanner": "medical",
    "xray": "medical",
    "ultrasound": "medical",
    "imaging_modality": "medical",
    "pacs": "medical",
    "lab_analyzer": "medical",
    "pharmacy_dispenser": "medical",
    "nurse_call": "medical",
    "dialysis_machine": "medical",
    "workstation": "it",
    "server": "it",
    "printer": "it",
    "ip_phone": "it",
    "wireless_ap": "network",
    "wireless_controller": "network",
    "switch": "network",
    "router": "network",
    "firewall": "network",
    "camera": "building",
    "badge_reader": "building",
    "hvac_controller": "building",
    "iot_sensor": "iot",
    "unknown": "unknown",
}
DEVICE_CLASSES = tuple(ROLE_OF_CLASS)
MEDICAL_CLASSES = frozenset(c for c, r in ROLE_OF_CLASS.items() if r == "medical")
