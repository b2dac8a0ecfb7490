"""Interface-name normalisation, so one port has one name in the twin.

Switches spell the same port several ways: ``show cdp neighbors`` prints
``Gi1/0/4``, IF-MIB's ifName contains ``Gi1/0/4`` on IOS but
``GigabitEthernet1/0/4`` in ifDescr, and LLDP neighbours send either form.
:func:`normalise_if_name` maps the Cisco-style abbreviations onto the long
form so interfaces and neighbour ports from different sources match. Names
that follow other conventions (Linux ``eth0``, ``ens3``, ``swp1``; HP and
Aruba ``1``, ``A1``, ``1/1/1``; Juniper ``ge-0/0/0``) are kept as they are.
"""

from __future__ import annotations

import re

__all__ = ["normalise_if_name", "IF_NAME_PREFIXES"]

# Lower-case prefix as devices print it -> canonical long form. Each long
# form also maps onto itself so that any capitalisation is canonicalised.
IF_NAME_PREFIXES: dict[str, str] = {}

_LONG_FORMS: dict[str, tuple[str, ...]] = {
    "FastEthernet": ("fa", "fas", "fast", "fastethernet"),
    "GigabitEthernet": ("gi", "gig", "gige", "gigabitethernet"),
    "TwoGigabitEthernet": ("tw", "two", "twogig", "twogigabitethernet"),
    "FiveGigabitEthernet": ("fi", "fivegig", "fivegigabitethernet"),
    "TenGigabitEthernet": ("te", "ten", "tengig", "tengige", "tengigabitethernet"),
    "TwentyFiveGigE": ("twe", "twentyfivegige", "twentyfivegigabitethernet"),
    "FortyGigabitEthernet": ("fo", "for", "forty", "fortygige", "fortygigabitethernet"),
    "HundredGigE": ("hu", "hun", "hundredgige", "hundredgigabitethernet"),
    "Ethernet": ("et", "ethernet"),
    "Port-channel": ("po", "port-channel", "portchannel"),
    "Bundle-Ether": ("be", "bundle-ether"),
    "Vlan": ("vl", "vlan"),
    "Loopback": ("lo", "loopback"),
    "Tunnel": ("tu", "tunnel"),
    "Serial": ("se", "serial"),
    "Management": ("ma", "management"),
    "mgmt": ("mgmt",),
    "AppGigabitEthernet": ("ap", "appgigabitethernet"),
}
for _long, _shorts in _LONG_FORMS.items():
    for _short in _shorts:
        IF_NAME_PREFIXES[_short] = _long

# ``eth`` is Linux (``eth0``) unless a slash follows, as in NX-OS ``Eth1/1``.
_SLASH_ONLY_PREFIXES = {"eth": "Ethernet"}

# A letter prefix, optional spaces (Dell and Force10 print "Te 0/1"), then a
# port number made of digits and the separators / . : only.
_IF_NAME = re.compile(r"^([A-Za-z][A-Za-z\-]*?)\s*(\d[\d/.:]*)$")


def normalise_if_name(name: str) -> str:
    """Return the canonical long Cisco-style form of an interface name.

    Parameters
    ----------
    name : str
        Interface name as a device or protocol reported it.

    Returns
    -------
    str
        The long form (``GigabitEthernet1/0/4``) when ``name`` starts with a
        known abbreviation followed by a port number; otherwise ``name``
        with surrounding whitespace removed.

    Examples
    --------
    >>> normalise_if_name("Gi1/0/4")
    'GigabitEthernet1/0/4'
    >>> normalise_if_name(" gigabitethernet1/0/4 ")
    'GigabitEthernet1/0/4'
    >>> normalise_if_name("Te 0/1")
    'TenGigabitEthernet0/1'
    >>> normalise_if_name("Po12")
    'Port-channel12'
    >>> normalise_if_name("Eth1/49")
    'Ethernet1/49'
    >>> normalise_if_name("eth0")
    'eth0'
    >>> normalise_if_name("A1")
    'A1'
    """
    text = name.strip()
    match = _IF_NAME.match(text)
    if match is None:
        return text
    prefix, number = match.groups()
    key = prefix.lower()
    long_form = IF_NAME_PREFIXES.get(key)
    if long_form is None and "/" in number:
        long_form = _SLASH_ONLY_PREFIXES.get(key)
    if long_form is None:
        return text
    return long_form + number
