"""lldpd importer: lldpcli -f json and -f json0 output."""

import json
from pathlib import Path

import pytest

from twin.discovery import Raw, detect_format
from twin.discovery import lldp
from twin.exceptions import InputFormatError
from twin.model.observation import Identity, Kind

DATA = Path(__file__).resolve().parent.parent / "data" / "lldp"

KEYS = (
    "protocol",
    "local_port",
    "remote_chassis_id",
    "remote_chassis_id_subtype",
    "remote_mac",
    "remote_port_id",
    "remote_port_id_subtype",
    "remote_sys_name",
    "remote_mgmt_ips",
    "remote_capabilities",
)


def hashable(value):
    return tuple(value) if isinstance(value, list) else value


def neighbors(result):
    """Return the neighbour attrs in KEYS order, as a set of tuples."""
    return {tuple(hashable(obs.attrs.get(key)) for key in KEYS) for obs in result.observations if obs.kind == Kind.NEIGHBOR}


def test_one_neighbor_json():
    result = lldp.import_file(DATA / "pump-gw1.json")
    assert neighbors(result) == {
        ("lldp", "eth0", "00:1b:2c:3d:4e:01", "mac_address", "00:1b:2c:3d:4e:01", "Gi1/0/4", "interface_name",
         "ward3-sw1.example.org", ("192.0.2.10",), ("bridge",)),
    }
    # Without a local chassis the subject comes from the file name.
    assert {obs.subject for obs in result.observations} == {Identity(hostname="pump-gw1")}
    assert result.counts == {"neighbors": 1}
    assert result.observations[0].evidence["vlans"] == ["v30-infusion"]


def test_several_neighbors_json():
    result = lldp.import_file(DATA / "ward3-srv2.json")
    assert neighbors(result) == {
        ("lldp", "eth0", "00:1b:2c:3d:4e:01", "mac_address", "00:1b:2c:3d:4e:01", "Gi1/0/7", "interface_name",
         "ward3-sw1.example.org", ("192.0.2.10", "2001:db8::10"), ("bridge", "router")),
        # Second neighbour on eth0: no system name, MAC sent as local text.
        ("lldp", "eth0", "001a.2b3c.4d5e", "local", "00:1a:2b:3c:4d:5e", "00:1a:2b:3c:4d:5e", "mac_address",
         None, (), ("station",)),
        ("cdpv2", "eth1", "ward3-ap4", "local", None, "GigabitEthernet0", "interface_name",
         "ward3-ap4", ("192.0.2.44",), ("bridge", "wlan")),
    }
    med = [obs.evidence.get("lldp_med") for obs in result.observations if obs.evidence.get("lldp_med")]
    assert med == [
        {
            "device_type": "Generic Endpoint (Class I)",
            "inventory": {
                "hardware": "rev B",
                "software": "4.2.1",
                "firmware": "1.10",
                "serial": "PM-0042",
                "manufacturer": "Example Medical",
                "model": "Infusomat X",
                "asset": "BME-17731",
            },
        }
    ]
    # A newline in a description is escaped, not stored raw.
    descrs = {obs.attrs.get("remote_sys_descr") for obs in result.observations}
    assert "cisco AIR-AP2802I-E-K9 running on\\x0aCisco IOS Software" in descrs


def test_json0_with_local_chassis():
    result = lldp.import_file(DATA / "ward3-srv3.json0")
    local = Identity(macs=("52:54:00:aa:bb:03",), ips=("198.51.100.3",), hostname="ward3-srv3.example.org")
    assert {(obs.kind, obs.subject) for obs in result.observations} == {(Kind.DEVICE, local), (Kind.NEIGHBOR, local)}
    assert neighbors(result) == {
        ("lldp", "ens3", "00:1b:2c:3d:4e:01", "mac_address", "00:1b:2c:3d:4e:01", "Gi1/0/9", "interface_name",
         "ward3-sw1.example.org", ("192.0.2.10",), ("bridge",)),
    }
    assert result.counts == {"local_chassis": 1, "neighbors": 1}


def to_json0(document):
    """Rewrite an lldpcli -f json neighbours document the way -f json0 writes it."""
    interfaces = document["lldp"]["interface"]
    entries = interfaces if isinstance(interfaces, list) else [interfaces]
    out = []
    for entry in entries:
        for name, body in entry.items():
            chassis_name, chassis = next(iter(body["chassis"].items()))
            if chassis_name == "id" or not isinstance(chassis, dict) or "id" not in chassis:
                chassis_name, chassis = None, body["chassis"]
            chassis0 = {"id": [chassis["id"]]}
            if chassis_name:
                chassis0["name"] = [{"value": chassis_name}]
            for key in ("descr",):
                if key in chassis:
                    chassis0[key] = [{"value": chassis[key]}]
            if "mgmt-ip" in chassis:
                ips = chassis["mgmt-ip"] if isinstance(chassis["mgmt-ip"], list) else [chassis["mgmt-ip"]]
                chassis0["mgmt-ip"] = [{"value": ip} for ip in ips]
            if "capability" in chassis:
                caps = chassis["capability"]
                chassis0["capability"] = caps if isinstance(caps, list) else [caps]
            port = body["port"]
            port0 = {"id": [port["id"]]}
            if "descr" in port:
                port0["descr"] = [{"value": port["descr"]}]
            out.append({"name": name, "via": body["via"], "rid": body["rid"], "chassis": [chassis0], "port": [port0]})
    return {"lldp": [{"interface": out}]}


@pytest.mark.parametrize("fixture", ["pump-gw1.json", "ward3-srv2.json"])
def test_json_and_json0_agree(fixture):
    document = json.loads((DATA / fixture).read_text())
    as_json = lldp.transform(Raw(fixture, json.dumps(document).encode(), 0.0))
    as_json0 = lldp.transform(Raw(fixture, json.dumps(to_json0(document)).encode(), 0.0))
    assert neighbors(as_json0) == neighbors(as_json)


def test_show_interfaces_entries_are_not_neighbors():
    document = {"lldp": {"interface": {"eth0": {"via": "unknown", "chassis": {"me": {"id": {"type": "mac", "value": "52:54:00:00:00:01"}}}}}}}
    result = lldp.transform(Raw("host.json", json.dumps(document).encode(), 0.0))
    assert result.observations == []
    assert result.counts == {"local_interfaces": 1}


def test_local_hostname_option():
    data = (DATA / "pump-gw1.json").read_bytes()
    result = lldp.transform(Raw("capture.json", data, 0.0), local_hostname="PUMP-GW1.example.org")
    assert {obs.subject.hostname for obs in result.observations} == {"pump-gw1.example.org"}


def test_invalid_json_raises_with_line():
    with pytest.raises(InputFormatError) as error:
        lldp.transform(Raw("bad.json", b'{"lldp": {"interface": \n  {"eth0": }}}', 0.0))
    assert (error.value.path, error.value.line) == ("bad.json", 2)


def test_trailing_garbage_is_skipped():
    data = (DATA / "pump-gw1.json").read_bytes() + b"\n{oops"
    result = lldp.transform(Raw("x.json", data, 0.0))
    assert result.counts == {"neighbors": 1}
    assert [(issue.field, issue.line) for issue in result.issues] == [("JSON", data.count(b"\n") + 1)]


def test_bad_neighbor_entry_is_skipped():
    document = {"lldp": {"interface": [{"eth0": "oops"}, json.loads((DATA / "pump-gw1.json").read_text())["lldp"]["interface"]]}}
    result = lldp.transform(Raw("x.json", json.dumps(document).encode(), 0.0))
    assert [issue.field for issue in result.issues] == ["document[0].lldp.interface[0]"]
    assert result.counts == {"neighbors": 1}


def test_non_utf8_is_escaped():
    document = '{"lldp": {"interface": {"eth0": {"via": "LLDP", "rid": "1", "chassis": {"sw\xff": {"id": {"type": "local", "value": "x"}}}}}}}'
    data = document.encode("latin-1")
    result = lldp.transform(Raw("x.json", data, 0.0))
    assert [obs.attrs["remote_sys_name"] for obs in result.observations] == ["sw\\xff"]


def test_fixtures_detected_as_lldpd_json():
    assert {detect_format(DATA / name) for name in ("pump-gw1.json", "ward3-srv2.json", "ward3-srv3.json0")} == {"lldpd-json"}
