"""SNMP walk importer: snmprec and snmpwalk parsing, and the varbind transform."""

from pathlib import Path

from twin.discovery import Raw
from twin.discovery import snmp
from twin.discovery.snmp import Varbind
from twin.model.observation import Identity, ImportResult, Kind

DATA = Path(__file__).resolve().parent.parent / "data" / "snmp"
SNMPREC = DATA / "ward3-sw1.snmprec"
WALK = DATA / "ward3-sw1.walk"


def run(text: str | bytes, fmt: str | None = None, name: str = "t.snmprec"):
    data = text.encode() if isinstance(text, str) else text
    return snmp.transform(Raw(name, data, 100.0), fmt=fmt)


def hashable(value):
    return tuple(value) if isinstance(value, list) else value


def of_kind(result, kind, *keys):
    """Return the attrs ``keys`` of every observation of ``kind``, as a set of tuples."""
    return {tuple(hashable(obs.attrs.get(key)) for key in keys) for obs in result.observations if obs.kind == kind}


def issues(result):
    return {(issue.line, issue.field) for issue in result.issues}


# -- the hand-written switch walk ----------------------------------------------


def test_fixture_device_identity():
    result = snmp.import_file(SNMPREC)
    devices = [obs for obs in result.observations if obs.kind == Kind.DEVICE]
    assert len(devices) == 1
    assert devices[0].subject == Identity(
        macs=("00:1b:2c:3d:4e:00", "00:1b:2c:3d:4e:40", "00:1b:2c:3d:4e:01", "00:1b:2c:3d:4e:02"),
        ips=("192.0.2.10",),
        hostname="ward3-sw1.example.org",
        serial="FOC1234X0AB",
    )
    assert devices[0].attrs == {
        "hostname": "ward3-sw1.example.org",
        "sys_descr": "Cisco IOS Software, C2960X Software (C2960X-UNIVERSALK9-M), Version 15.2(7)E4",
        "sys_object_id": "1.3.6.1.4.1.9.1.1208",
        "sys_location": "Building A, ward 3, IDF",
        "sys_contact": "biomed@example.org",
        "sys_services": 6,
        "vendor": "Cisco Systems",
        "model": "WS-C2960X-48FPD-L",
        "firmware": "15.2(7)E4",
        "serial": "FOC1234X0AB",
        "snmp_agent": True,
    }
    assert devices[0].evidence["sys_object_id"] == "1.3.6.1.4.1.9.1.1208"


def test_fixture_interfaces():
    result = snmp.import_file(SNMPREC)
    keys = ("if_index", "if_name", "if_alias", "mac", "speed", "oper_status", "vlan", "ips")
    assert of_kind(result, Kind.INTERFACE, *keys) == {
        (30, "Vlan30", None, "00:1b:2c:3d:4e:40", 1_000_000_000, "up", None, ("192.0.2.10/24",)),
        (10001, "GigabitEthernet1/0/1", "infusion pump bay 4", "00:1b:2c:3d:4e:01", 1_000_000_000, "up", 30, None),
        (10002, "GigabitEthernet1/0/2", None, "00:1b:2c:3d:4e:02", 100_000_000, "down", 1, None),
    }


def test_fixture_neighbors():
    result = snmp.import_file(SNMPREC)
    keys = (
        "protocol",
        "local_port",
        "local_if_index",
        "remote_chassis_id",
        "remote_chassis_id_subtype",
        "remote_mac",
        "remote_port_id",
        "remote_port_id_subtype",
        "remote_sys_name",
        "remote_capabilities",
        "remote_mgmt_ips",
    )
    assert of_kind(result, Kind.NEIGHBOR, *keys) == {
        # Chassis id subtype local(7) holding a MAC as text.
        ("lldp", "GigabitEthernet1/0/1", 10001, "00:19:b9:aa:bb:01", "local", "00:19:b9:aa:bb:01",
         "00:19:b9:aa:bb:01", "mac_address", "pump-gw1", ("station",), ("192.0.2.50",)),
        # Second neighbour on the same port: network-address chassis id and
        # a sysName with a 0xff byte and a NUL.
        ("lldp", "GigabitEthernet1/0/1", 10001, "192.0.2.51", "network_address", None,
         "1", "local", "mon\\xff\\x00itor", ("telephone",), ()),
        # CDP device id sent as six raw MAC bytes.
        ("cdp", "GigabitEthernet1/0/2", 10002, "00:19:b9:aa:bb:99", None, "00:19:b9:aa:bb:99",
         "GigabitEthernet0", None, None, ("bridge",), ("192.0.2.99",)),
    }


def test_fixture_fdb_and_arp():
    result = snmp.import_file(SNMPREC)
    # The self(4) entry is left out; FDB id 1 maps to VLAN 30.
    assert of_kind(result, Kind.FDB, "mac", "vlan", "bridge_port", "if_index", "if_name", "status") == {
        ("00:19:b9:aa:bb:01", 30, 1, 10001, "GigabitEthernet1/0/1", "learned"),
    }
    assert of_kind(result, Kind.ARP, "ip", "mac", "if_index") == {("192.0.2.50", "00:19:b9:aa:bb:01", 30)}


def test_fixture_counts():
    result = snmp.import_file(SNMPREC)
    expected = {
        "ifTable": 3,
        "ifXTable": 3,
        "lldpRemTable": 2,
        "lldpLocPortTable": 2,
        "cdpCacheTable": 1,
        "dot1qTpFdbTable": 2,
        "ipNetToMediaTable": 1,
        "entPhysicalTable": 2,
    }
    assert {key: result.counts.get(key) for key in expected} == expected
    assert result.records_read == 106
    assert result.records_skipped == 0
    assert result.issues == []


def test_walk_matches_snmprec():
    from_rec = snmp.import_file(SNMPREC, seen_at=5.0)
    from_walk = snmp.import_file(WALK, seen_at=5.0)

    def flat(result):
        return [(o.kind, o.subject, o.attrs, o.evidence) for o in result.observations]

    assert flat(from_walk) == flat(from_rec)
    assert from_walk.counts == from_rec.counts


def test_seen_at_defaults_to_mtime():
    result = snmp.transform(Raw("x.snmprec", b"1.3.6.1.2.1.1.5.0|4|sw\n", 1234.5))
    assert {obs.seen_at for obs in result.observations} == {1234.5}


# -- bad input --------------------------------------------------------------------


def test_bad_snmprec_lines_skipped():
    text = "\n".join(
        [
            "# comment",
            "1.3.6.1.2.1.1.1.0|4|good descr",
            "1.3.6.1.2.1.1.2.0 no separators",
            "1.3.6.1.2.1.1.3.0|99|7",
            "1.3.6.1.2.1.1.4.0|4x|zz12",
            "1.3.6.x.2.1.1.5.0|4|bad oid",
            "1.3.6.1.2.1.1.6.0|2|not-a-number",
            "1.3.6.1.2.1.1.7.0|2|72",
        ]
    )
    result = run(text, fmt="snmprec")
    assert issues(result) == {(3, "TYPE"), (4, "TYPE"), (5, "VALUE"), (6, "OID"), (7, "VALUE")}
    assert result.records_skipped == 5
    assert result.records_read == 2
    device = result.observations[0]
    assert (device.attrs["sys_descr"], device.attrs["sys_services"]) == ("good descr", 72)


def test_walk_loop_stops_only_that_table():
    text = "\n".join(
        [
            "1.3.6.1.2.1.1.5.0|4|sw1",
            "1.3.6.1.2.1.2.2.1.1.1|2|1",
            "1.3.6.1.2.1.2.2.1.1.2|2|2",
            "1.3.6.1.2.1.2.2.1.1.1|2|1",
            "1.3.6.1.2.1.2.2.1.1.3|2|3",
            "1.3.6.1.2.1.31.1.1.1.1.1|4|Gi1/0/1",
            "1.3.6.1.2.1.31.1.1.1.1.1|4|Gi1/0/1",
        ]
    )
    result = run(text, fmt="snmprec")
    assert issues(result) == {(4, "OID"), (7, "OID")}
    assert {issue.severity for issue in result.issues} == {"warning"}
    assert result.counts["ifTable"] == 2
    assert result.counts["ifXTable"] == 1
    assert result.records_skipped == 3
    assert of_kind(result, Kind.INTERFACE, "if_index", "if_name") == {(1, "GigabitEthernet1/0/1"), (2, None)}
    assert result.observations[0].subject.hostname == "sw1"


def test_binary_strings_escaped():
    data = b"1.3.6.1.2.1.1.1.0|4|descr\x00with nul \xff\xfe\n1.3.6.1.2.1.1.5.0|4x|737700ff\n"
    result = run(data, fmt="snmprec")
    device = result.observations[0]
    assert device.attrs["sys_descr"] == "descr\\x00with nul \\xff\\xfe"
    assert device.subject.hostname == "sw\\x00\\xff"


def test_cdp_binary_device_id_never_crashes():
    text = "\n".join(
        [
            "1.3.6.1.4.1.9.9.23.1.2.1.1.6.5.1|4x|c3a9ff00fe",
            "1.3.6.1.4.1.9.9.23.1.2.1.1.6.5.2|4|SEP001A2B3C4D5E",
            "1.3.6.1.4.1.9.9.23.1.2.1.1.7.5.1|4x|00",
            "1.3.6.1.4.1.9.9.23.1.2.1.1.9.5.2|4x|00000090",
        ]
    )
    result = run(text, fmt="snmprec")
    assert of_kind(result, Kind.NEIGHBOR, "remote_chassis_id", "remote_mac", "remote_port_id", "remote_capabilities") == {
        ("é\\xff\\x00\\xfe", None, None, ()),
        ("SEP001A2B3C4D5E", "00:1a:2b:3c:4d:5e", None, ("telephone", "station")),
    }


# -- snmpwalk text --------------------------------------------------------------


def test_snmpwalk_value_forms():
    text = "\n".join(
        [
            '.1.3.6.1.2.1.1.1.0 = STRING: "Line one',
            'line two with \\"quote\\""',
            ".1.3.6.1.2.1.1.2.0 = OID: .1.3.6.1.4.1.9.1.1208",
            ".1.3.6.1.2.1.1.3.0 = Timeticks: (123) 0:00:01.23",
            '.1.3.6.1.2.1.1.4.0 = ""',
            ".1.3.6.1.2.1.1.5.0 = No Such Object available on this agent at this OID",
            ".1.3.6.1.2.1.2.2.1.6.1 = Hex-STRING: 00 01 02 03 04 05 06 07 08 09 0A 0B 0C 0D 0E 0F",
            "10 11 ",
            ".1.3.6.1.2.1.2.2.1.7.1 = INTEGER: up(1)",
            ".1.3.6.1.2.1.2.2.1.8.1 = INTEGER: 2",
            ".1.3.6.1.2.1.4.20.1.1.192.0.2.1 = IpAddress: 192.0.2.1",
            ".1.3.6.1.2.1.31.1.1.1.15.1 = Gauge32: 1000",
            ".1.3.6.1.2.1.31.1.1.1.6.1 = Counter64: 18446744073709551615",
            ".1.0.8802.1.1.2.1.4.1.1.12.0.1.1 = BITS: 28 00 bridge(2) router(4)",
            ".1.3.6.1.2.1.1.9.1.2.1 = Wrong Type (should be OBJECT IDENTIFIER): INTEGER: 5",
            "iso.3.6.1.2.1.1.6.0 = STRING: plain text",
            ".1.3.6.1.6.3.1 = No more variables left in this MIB View (It is past the end of the MIB tree)",
        ]
    )
    result = ImportResult("snmp", "w.txt")
    varbinds = snmp.parse_snmpwalk(text, result)
    assert result.issues == []
    assert varbinds == [
        Varbind((1, 3, 6, 1, 2, 1, 1, 1, 0), snmp.OCTET_STRING, b'Line one\nline two with "quote"', 1),
        Varbind((1, 3, 6, 1, 2, 1, 1, 2, 0), snmp.OBJECT_IDENTIFIER, (1, 3, 6, 1, 4, 1, 9, 1, 1208), 3),
        Varbind((1, 3, 6, 1, 2, 1, 1, 3, 0), snmp.TIMETICKS, 123, 4),
        Varbind((1, 3, 6, 1, 2, 1, 1, 4, 0), snmp.OCTET_STRING, b"", 5),
        Varbind((1, 3, 6, 1, 2, 1, 1, 5, 0), snmp.NO_SUCH_OBJECT, None, 6),
        Varbind((1, 3, 6, 1, 2, 1, 2, 2, 1, 6, 1), snmp.OCTET_STRING, bytes(range(18)), 7),
        Varbind((1, 3, 6, 1, 2, 1, 2, 2, 1, 7, 1), snmp.INTEGER, 1, 9),
        Varbind((1, 3, 6, 1, 2, 1, 2, 2, 1, 8, 1), snmp.INTEGER, 2, 10),
        Varbind((1, 3, 6, 1, 2, 1, 4, 20, 1, 1, 192, 0, 2, 1), snmp.IP_ADDRESS_TYPE, b"\xc0\x00\x02\x01", 11),
        Varbind((1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 15, 1), snmp.GAUGE32, 1000, 12),
        Varbind((1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 6, 1), snmp.COUNTER64, 18446744073709551615, 13),
        Varbind((1, 0, 8802, 1, 1, 2, 1, 4, 1, 1, 12, 0, 1, 1), snmp.OCTET_STRING, b"\x28\x00", 14),
        Varbind((1, 3, 6, 1, 2, 1, 1, 9, 1, 2, 1), snmp.INTEGER, 5, 15),
        Varbind((1, 3, 6, 1, 2, 1, 1, 6, 0), snmp.OCTET_STRING, b"plain text", 16),
        Varbind((1, 3, 6, 1, 6, 3, 1), snmp.END_OF_MIB_VIEW, None, 17),
    ]


def test_snmpwalk_bad_lines():
    text = "\n".join(
        [
            "SNMPv2-MIB::sysName.0 = STRING: sw1",
            ".1.3.6.1.2.1.1.5.0 = STRING: sw1",
            ".1.3.6.1.2.1.1.7.0 = INTEGER: many",
            ".1.3.6.1.2.1.1.6.0 = Float: 1.5",
            ".1.3.6.1.2.1.2.2.1.6.1 = Hex-STRING: 0G 11",
        ]
    )
    result = run(text, fmt="snmpwalk", name="w.txt")
    assert issues(result) == {(1, "OID"), (3, "VALUE"), (4, "TYPE"), (5, "VALUE")}
    assert result.observations[0].subject.hostname == "sw1"


def test_detect_walk_format():
    assert snmp.detect_walk_format("#HP switch\n1.3.6.1.2.1.1.1.0|4|x\n") == "snmprec"
    assert snmp.detect_walk_format('.1.3.6.1.2.1.1.1.0 = STRING: "a|b"\n') == "snmpwalk"
    assert snmp.detect_walk_format("iso.3.6.1.2.1.1.1.0 = STRING: x\n") == "snmpwalk"


# -- the transform on plain tuples (live walks) --------------------------------


def test_transform_varbinds_plain_tuples():
    varbinds = [
        ((1, 3, 6, 1, 2, 1, 1, 5, 0), snmp.OCTET_STRING, b"Lab-SW"),
        ((1, 3, 6, 1, 2, 1, 4, 20, 1, 2, 127, 0, 0, 1), snmp.INTEGER, 1),
        ((1, 3, 6, 1, 2, 1, 4, 20, 1, 2, 192, 0, 2, 7), snmp.INTEGER, 1),
        ((1, 3, 6, 1, 2, 1, 4, 34, 1, 3, 2, 16, *([0] * 15), 1), snmp.INTEGER, 1),
        ((1, 3, 6, 1, 2, 1, 4, 34, 1, 3, 2, 16, 32, 1, 13, 184, *([0] * 11), 7), snmp.INTEGER, 1),
        ((1, 3, 6, 1, 2, 1, 17, 7, 1, 2, 2, 1, 2, 20, 0, 25, 185, 170, 187, 1), snmp.INTEGER, 0),
        ((1, 3, 6, 1, 2, 1, 17, 7, 1, 2, 2, 1, 3, 20, 0, 25, 185, 170, 187, 1), snmp.INTEGER, 3),
    ]
    result = snmp.transform_varbinds(varbinds, path="lab-walker", seen_at=9.0)
    assert result.observations[0].subject == Identity(ips=("192.0.2.7", "2001:db8::7"), hostname="lab-sw")
    # Without dot1qVlanCurrentTable the FDB id is taken as the VLAN.
    assert of_kind(result, Kind.FDB, "mac", "vlan", "bridge_port", "if_index") == {("00:19:b9:aa:bb:01", 20, 0, None)}
    assert {obs.origin for obs in result.observations} == {"lab-walker"}


def test_snmprec_parse_speed():
    # A walk the size of a 2 MB ProCurve recording (45,000 lines).
    lines = [f"1.3.6.1.2.1.2.2.1.{column}.{index}|2|{index}" for column in range(1, 10) for index in range(1, 5001)]
    text = "\n".join(lines)
    import time

    start = time.perf_counter()
    result = run(text, fmt="snmprec")
    elapsed = time.perf_counter() - start
    assert result.counts["ifTable"] == 5000
    assert elapsed < 2.0
