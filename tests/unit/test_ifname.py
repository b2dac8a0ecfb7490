"""Interface-name normalisation."""

import pytest

from twin.model.ifname import normalise_if_name

CASES = [
    # Cisco abbreviations and long forms map onto one spelling.
    ("Gi1/0/4", "GigabitEthernet1/0/4"),
    ("gi1/0/4", "GigabitEthernet1/0/4"),
    ("GigabitEthernet1/0/4", "GigabitEthernet1/0/4"),
    ("GIGABITETHERNET1/0/4", "GigabitEthernet1/0/4"),
    ("  Gi1/0/4\n", "GigabitEthernet1/0/4"),
    ("Gi 1/0/4", "GigabitEthernet1/0/4"),
    ("Gi1/0/4.100", "GigabitEthernet1/0/4.100"),
    ("Te1/1/1", "TenGigabitEthernet1/1/1"),
    ("TenGigE0/0/0/1", "TenGigabitEthernet0/0/0/1"),
    ("Fa0/23", "FastEthernet0/23"),
    ("Twe1/0/1", "TwentyFiveGigE1/0/1"),
    ("Tw1/0/1", "TwoGigabitEthernet1/0/1"),
    ("Fo1/1/1", "FortyGigabitEthernet1/1/1"),
    ("Hu1/0/49", "HundredGigE1/0/49"),
    ("Et23", "Ethernet23"),
    ("Eth1/19", "Ethernet1/19"),
    ("Ethernet1/19", "Ethernet1/19"),
    ("Po12", "Port-channel12"),
    ("port-channel12", "Port-channel12"),
    ("Vl30", "Vlan30"),
    ("vlan30", "Vlan30"),
    ("Lo0", "Loopback0"),
    ("mgmt0", "mgmt0"),
    ("Ma1", "Management1"),
    # Linux, HP/Aruba and Juniper names stay as they are.
    ("eth0", "eth0"),
    ("ens3", "ens3"),
    ("enp0s31f6", "enp0s31f6"),
    ("swp1", "swp1"),
    ("lo", "lo"),
    ("bond0", "bond0"),
    ("1", "1"),
    ("A1", "A1"),
    ("1/1/1", "1/1/1"),
    ("ge-0/0/0", "ge-0/0/0"),
    ("", ""),
]


@pytest.mark.parametrize("name, expected", CASES)
def test_normalise_if_name(name, expected):
    assert normalise_if_name(name) == expected


def test_abbreviation_and_long_form_agree():
    spellings = {"Gi1/0/4", "GigabitEthernet1/0/4", "gi1/0/4", "Gig1/0/4"}
    assert {normalise_if_name(name) for name in spellings} == {"GigabitEthernet1/0/4"}
