"""CMMS asset-inventory CSV import on small hand-written exports."""

from __future__ import annotations

from pathlib import Path

import pytest

from twin.discovery import Raw
from twin.discovery import inventory
from twin.exceptions import InputFormatError
from twin.model.observation import Identity, Kind

DATA = Path(__file__).resolve().parents[1] / "data" / "inventory"
SEMICOLON = DATA / "cmms_export_semicolon.csv"
CP1252 = DATA / "cmms_export_cp1252.csv"
CUSTOM = DATA / "cmms_export_custom_headers.csv"


def summary(result) -> set[tuple]:
    return {
        (
            obs.origin.rsplit(":", 1)[1],
            obs.subject,
            obs.attrs["asset_tag"],
            obs.attrs["model"],
            obs.attrs["vendor"],
            obs.attrs["device_class"],
            obs.attrs["department"],
            obs.attrs["location"],
            obs.attrs["building"],
            obs.attrs["managed"],
        )
        for obs in result.observations
    }


def issue_set(result) -> set[tuple]:
    return {(issue.line, issue.field, issue.severity) for issue in result.issues}


def test_semicolon_export_whole_result():
    result = inventory.import_file(SEMICOLON, seen_at=1704103200.0)

    assert summary(result) == {
        ("2", Identity(macs=("00:1b:2c:3d:4e:5f",), ips=("10.30.4.21",), hostname="pump-icu-04", serial="SN-4471"),
         "BME-00101", "Alaris 8015", "BD", "Infusion Pump", "ICU", "Bed 4", "North", True),
        # "N/A" is no serial; two IP addresses in one cell.
        ("3", Identity(macs=("00:09:fb:12:34:56",), ips=("10.30.4.22", "10.30.5.22")),
         "BME-00102", "IntelliVue MX450", "Philips", "Patient Monitor", "ICU", "Bed 5", "North", True),
        # A delimiter inside a quoted value stays in the value.
        ("7", Identity(hostname="ct-1.example.org", serial="SN-9001"),
         "BME-00105", "Model; with delimiter", "GE", "CT Scanner", "Radiology", "CT 1", "South", True),
    }
    assert issue_set(result) == {
        (4, "MAC Address", "warning"),  # row 4 has a bad MAC and a bad IP and nothing else
        (5, "MAC Address", "warning"),
        (8, None, "warning"),
    }
    assert (result.records_read, result.records_skipped) == (6, 3)
    assert result.counts == {"rows": 6, "devices": 3}
    assert {obs.seen_at for obs in result.observations} == {1704103200.0}
    assert {obs.kind for obs in result.observations} == {Kind.DEVICE}
    assert {obs.source for obs in result.observations} == {"inventory"}


def test_bad_field_dropped_when_row_keeps_another_identifier(tmp_path):
    path = tmp_path / "cmms.csv"
    path.write_text("Asset Tag,MAC Address,IP Address\nA-1,00:11:22:33:44:55,10.0.0.300\n")
    result = inventory.import_file(path)

    assert [obs.subject for obs in result.observations] == [Identity(macs=("00:11:22:33:44:55",))]
    assert [(i.line, i.field) for i in result.issues] == [(2, "IP Address")]
    assert "row kept with MAC 00:11:22:33:44:55" in result.issues[0].message
    assert "10.0.0.300" in result.issues[0].message
    assert result.records_skipped == 0


def test_skipped_row_message_names_each_bad_field():
    result = inventory.import_file(SEMICOLON)
    message = next(i.message for i in result.issues if i.line == 4)

    assert "'not-a-mac'" in message
    assert "'10.30.4.300'" in message
    assert "no other identifier" in message


def test_cp1252_export_is_decoded():
    result = inventory.import_file(CP1252)

    assert {(o.attrs["department"], o.attrs["building"], o.attrs["vendor"], o.subject) for o in result.observations} == {
        ("Laboratoire Médical", "Bâtiment B", "Roche", Identity(macs=("00:1e:c0:01:02:03",), ips=("10.50.0.7",), serial="SN-77")),
        ("Intensivstation", "Haus A", "Dräger", Identity(serial="SN-78")),
    }
    assert [(i.severity, i.line) for i in result.issues] == [("info", 2)]


def test_column_map_overrides_defaults():
    column_map = {"asset_tag": "Equip No", "serial": "mfr serial", "mac": "NIC MAC", "ip": "Addr", "device_type": "Kind"}
    result = inventory.import_file(CUSTOM, column_map=column_map)

    assert {(o.attrs["asset_tag"], o.attrs["device_class"], o.subject) for o in result.observations} == {
        ("E-1", "Syringe Pump", Identity(macs=("00:50:56:aa:bb:01",), ips=("10.60.0.1",), serial="S-1")),
        ("E-2", "Nurse Call Station", Identity(macs=("00:50:56:aa:bb:02",), ips=("10.60.0.2",), serial="S-2")),
    }
    assert {o.evidence["device_class_mapped"] for o in result.observations} == {"infusion_pump", "nurse_call"}


def test_missing_identifier_headers_name_file_and_setting():
    with pytest.raises(InputFormatError) as caught:
        inventory.import_file(CUSTOM)
    text = str(caught.value)
    assert str(CUSTOM) in text
    assert "'MAC Address'" in text
    assert "inventory.column_map" in text


def test_column_map_with_unknown_header_is_rejected():
    with pytest.raises(InputFormatError, match="'Wired MAC'"):
        inventory.import_file(CUSTOM, column_map={"mac": "Wired MAC"})


def test_column_map_with_unknown_field_is_rejected():
    with pytest.raises(InputFormatError, match="unknown field 'nic'"):
        inventory.import_file(CUSTOM, column_map={"nic": "NIC MAC"})


def test_tab_delimited_with_nul_bytes(tmp_path):
    path = tmp_path / "cmms.tsv"
    path.write_bytes(b"Asset Tag\tSerial Number\tModel\nT-1\tSN\x001\tPump\x00X\n")
    result = inventory.import_file(path)

    assert [(o.subject.serial, o.attrs["model"]) for o in result.observations] == [("SN\\X001", "Pump\\x00X")]


def test_empty_file_is_rejected():
    with pytest.raises(InputFormatError, match="empty file"):
        inventory.transform(Raw("empty.csv", b"", 0.0))


@pytest.mark.parametrize(
    "text, device_class",
    [
        ("Infusion Pump", "infusion_pump"),
        ("PUMP, INFUSION, SYRINGE", "infusion_pump"),
        ("Monitor, Physiological", "patient_monitor"),
        ("Patient Monitor", "patient_monitor"),
        ("Ventilator, Intensive Care", "ventilator"),
        ("CT Scanner", "ct_scanner"),
        ("MRI System", "mri_scanner"),
        ("Mobile X-Ray", "xray"),
        ("Ultrasound Scanner", "ultrasound"),
        ("PET/CT", "ct_scanner"),
        ("Gamma Camera", "imaging_modality"),
        ("Chemistry Analyzer", "lab_analyzer"),
        ("Automated Dispensing Cabinet", "pharmacy_dispenser"),
        ("Nurse Call Station", "nurse_call"),
        ("Clinical Workstation", "workstation"),
        ("PACS Server", "server"),
        ("Label Printer", "printer"),
        ("VoIP Phone", "ip_phone"),
        ("Wireless Access Point", "wireless_ap"),
        ("Core Switch", "switch"),
        ("WAN Router", "router"),
        ("Firewall", "firewall"),
        ("CCTV Camera", "camera"),
        ("Badge Reader", "badge_reader"),
        ("Heat Pump Controller", "hvac_controller"),
        ("Fridge Temperature Sensor", "iot_sensor"),
        ("Coffee Machine", None),
        ("", None),
        (None, None),
    ],
)
def test_device_type_to_class(text, device_class):
    assert inventory.device_type_to_class(text) == device_class
