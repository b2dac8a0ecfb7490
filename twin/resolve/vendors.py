"""Vendor names: one spelling per manufacturer.

The same manufacturer arrives as "Cisco Systems, Inc" from the IEEE
registry, "Cisco" from ENTITY-MIB and "cisco" in a CDP platform string.
Reports and filters need one name, so every vendor passes through
:func:`canonical_vendor`.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["canonical_vendor", "vendor_from_text"]

# Lower-case substring -> canonical name, tried in order.
_ALIASES = (
    ("hewlett packard enterprise", "HPE"),
    ("h3c", "H3C"),
    ("huawei", "Huawei"),
    ("hewlett-packard", "HP"),
    ("hewlett packard", "HP"),
    ("procurve", "HP"),
    ("cisco", "Cisco"),
    ("arista", "Arista Networks"),
    ("juniper", "Juniper Networks"),
    ("aruba", "Aruba"),
    ("international business machines", "IBM"),
    ("ibm", "IBM"),
    ("dell", "Dell"),
    ("intel corporat", "Intel"),
    ("apple", "Apple"),
    ("microsoft", "Microsoft"),
    ("vmware", "VMware"),
    ("philips", "Philips"),
    ("ge healthcare", "GE HealthCare"),
    ("siemens", "Siemens"),
    ("baxter", "Baxter"),
    ("b. braun", "B. Braun"),
    ("b.braun", "B. Braun"),
)

# Corporate suffixes dropped from names that match no alias.
_SUFFIX = re.compile(
    r"[,\s]+(inc\.?|incorporated|corp\.?|corporation|co\.?,?\s*ltd\.?|ltd\.?|limited|gmbh|ag|s\.?a\.?|llc|plc|b\.?v\.?)$",
    re.IGNORECASE,
)

# Vendors recognisable from sysDescr or a CDP/LLDP platform string.
_TEXT_VENDORS = (
    (re.compile(r"\bcisco\b|\bios\b|nx-os", re.IGNORECASE), "Cisco"),
    (re.compile(r"procurve|\bhpe?\b|aruba", re.IGNORECASE), "HP"),
    (re.compile(r"\barista\b", re.IGNORECASE), "Arista Networks"),
    (re.compile(r"\bjunos\b|juniper", re.IGNORECASE), "Juniper Networks"),
    (re.compile(r"windows", re.IGNORECASE), "Microsoft"),
)


@lru_cache(maxsize=4096)
def canonical_vendor(name: str | None) -> str | None:
    """Return one spelling per manufacturer.

    >>> canonical_vendor("Cisco Systems, Inc"), canonical_vendor("cisco")
    ('Cisco', 'Cisco')
    >>> canonical_vendor("Hewlett Packard"), canonical_vendor("Hewlett Packard Enterprise")
    ('HP', 'HPE')
    >>> canonical_vendor("Meridian Infusion Systems Ltd")
    'Meridian Infusion Systems'
    """
    if not name or not name.strip():
        return None
    text = " ".join(name.split())
    lowered = text.lower()
    for needle, canonical in _ALIASES:
        if needle in lowered:
            return canonical
    while True:
        trimmed = _SUFFIX.sub("", text)
        if trimmed == text:
            break
        text = trimmed
    text = text.strip(" ,.")
    if text.isupper() and len(text) > 4:
        # Registrants written in capitals ("EXAMPLE MEDICAL SYSTEMS") read as titles.
        text = text.title()
    return text or None


def vendor_from_text(text: str | None) -> str | None:
    """Return the vendor a sysDescr or platform string names, or None.

    >>> vendor_from_text("Cisco IOS Software, C3750 Software (C3750-IPSERVICESK9-M)")
    'Cisco'
    """
    if not text:
        return None
    for pattern, vendor in _TEXT_VENDORS:
        if pattern.search(text):
            return vendor
    return None
