"""Zeek conn.log (TSV, JSON lines) and nfdump CSV import on small hand-written files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from twin.discovery import Raw, detect_format, import_path
from twin.discovery import flows
from twin.exceptions import InputFormatError
from twin.model.observation import FLOW_COLUMNS

DATA = Path(__file__).resolve().parents[1] / "data" / "flows"
ZEEK_TSV = DATA / "zeek_conn_ward.log"
ZEEK_JSON = DATA / "zeek_conn_ward.json"
NFDUMP = DATA / "nfdump_ward.csv"

# 2024-01-01 10:00:00 UTC
T0 = 1704103200.0


def frame(rows: list[tuple]) -> pd.DataFrame:
    """Build the expected aggregate in the importer's dtypes, sorted by key."""
    expected = pd.DataFrame(rows, columns=list(FLOW_COLUMNS))
    expected = expected.astype(
        {"src_ip": "str", "dst_ip": "str", "proto": "str", "dst_port": "int64", "bytes": "int64",
         "packets": "int64", "flows": "int64", "first_seen": "float64", "last_seen": "float64"}
    )
    return sorted_flows(expected)


def sorted_flows(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["src_ip", "dst_ip", "proto", "dst_port"]).reset_index(drop=True)


def issues_of(result) -> set[tuple]:
    return {(issue.line, issue.field) for issue in result.issues}


def tsv_lines(path: Path = ZEEK_TSV) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def raw_of(text: str | bytes, name: str = "conn.log") -> Raw:
    data = text.encode() if isinstance(text, str) else text
    return Raw(name, data, 0.0)


# --------------------------------------------------------------------------
# Zeek TSV


def test_zeek_tsv_aggregate_whole_result():
    result = flows.import_file(ZEEK_TSV)

    # Lines 9-13 are good; 14 has 5 fields, 15 has the address 10.30.4.999.
    expected = frame(
        [
            ("10.30.4.21", "10.30.0.10", "tcp", 443, 100 + 2000 + 50 + 500, 5 + 6 + 3 + 4, 2, T0, T0 + 10 + 2.0),
            ("10.30.4.22", "224.0.0.251", "udp", 5353, 0, 1, 1, T0 + 20.5, T0 + 20.5),
            ("2001:db8::1", "ff02::2", "icmp", 0, 32 + 16, 2, 2, T0 + 30, T0 + 40),
        ]
    )
    pd.testing.assert_frame_equal(sorted_flows(result.flows), expected)
    assert result.observations == []
    assert result.source == "zeek"
    assert (result.records_read, result.records_skipped) == (5, 2)
    assert result.counts == {"flows": 5, "edges": 3}
    assert issues_of(result) == {(14, None), (15, "id.orig_h")}


def test_zeek_tsv_issue_messages_name_file_and_problem():
    result = flows.import_file(ZEEK_TSV)
    by_line = {issue.line: issue for issue in result.issues}

    assert by_line[14].path == str(ZEEK_TSV)
    assert "expected 21" in by_line[14].message
    assert "found 5" in by_line[14].message
    assert "10.30.4.999" in by_line[15].message


def test_zeek_tsv_bad_counter_keeps_good_rows():
    lines = tsv_lines()
    # Line 10 (index 9): orig_bytes "50" becomes "5x0".
    lines[9] = lines[9].replace("\t50\t500\t", "\t5x0\t500\t")
    result = flows.transform(raw_of("".join(lines)))

    expected = frame(
        [
            ("10.30.4.21", "10.30.0.10", "tcp", 443, 2100, 11, 1, T0, T0 + 1.5),
            ("10.30.4.22", "224.0.0.251", "udp", 5353, 0, 1, 1, T0 + 20.5, T0 + 20.5),
            ("2001:db8::1", "ff02::2", "icmp", 0, 48, 2, 2, T0 + 30, T0 + 40),
        ]
    )
    pd.testing.assert_frame_equal(sorted_flows(result.flows), expected)
    assert issues_of(result) == {(10, "orig_bytes"), (14, None), (15, "id.orig_h")}
    assert (result.records_read, result.records_skipped) == (4, 3)


def test_zeek_tsv_unset_time_is_reported():
    lines = tsv_lines()
    lines[8] = "-" + lines[8][lines[8].index("\t"):]
    result = flows.transform(raw_of("".join(lines)))

    assert (9, "ts") in issues_of(result)
    assert result.records_read == 4


def test_zeek_tsv_binary_bytes_do_not_crash():
    data = ZEEK_TSV.read_bytes().replace(b"10.30.4.999", b"10.\x00\xff.4.9")
    result = flows.transform(raw_of(data))

    assert issues_of(result) == {(14, None), (15, "id.orig_h")}
    message = next(issue.message for issue in result.issues if issue.line == 15)
    assert "\\x00" in message
    assert "\\xff" in message


def test_zeek_tsv_repeated_header_and_crlf():
    lines = tsv_lines()
    header = lines[:8]
    body = lines[8:13]
    text = "".join(header + body[:2] + header + body[2:])
    result = flows.transform(raw_of(text.replace("\n", "\r\n")))

    assert result.records_read == 5
    assert result.records_skipped == 0
    assert result.flows["bytes"].sum() == 2650 + 48


def test_zeek_tsv_without_fields_header_is_rejected():
    with pytest.raises(InputFormatError, match="#fields"):
        flows.transform(raw_of("#separator \\x09\n1\t2\n"), fmt="zeek-conn")


def test_zeek_tsv_of_another_log_names_missing_fields():
    text = "#separator \\x09\n#fields\tts\tuid\tquery\n1.0\tC1\texample.org\n"
    with pytest.raises(InputFormatError, match="id.orig_h"):
        flows.transform(raw_of(text), fmt="zeek-conn")


def test_zeek_empty_log_gives_empty_frame():
    text = "".join(tsv_lines()[:8])
    result = flows.transform(raw_of(text))

    assert list(result.flows.columns) == list(FLOW_COLUMNS)
    assert len(result.flows) == 0
    assert result.counts == {"flows": 0, "edges": 0}


# --------------------------------------------------------------------------
# Zeek JSON lines


def test_zeek_json_aggregate_whole_result():
    result = flows.import_file(ZEEK_JSON)

    expected = frame(
        [
            ("10.30.4.21", "10.30.0.10", "tcp", 443, 2650, 18, 2, T0, T0 + 12.0),
            ("10.30.4.22", "224.0.0.251", "udp", 5353, 0, 1, 1, T0 + 20.5, T0 + 20.5),
            ("2001:db8::1", "ff02::2", "icmp", 0, 32, 1, 1, T0 + 30, T0 + 30),
        ]
    )
    pd.testing.assert_frame_equal(sorted_flows(result.flows), expected)
    assert (result.records_read, result.records_skipped, result.issues) == (4, 0, [])


def test_zeek_json_bad_lines_and_iso_times():
    lines = ZEEK_JSON.read_text().splitlines()
    second = json.loads(lines[1])
    second["ts"] = "2024-01-01T10:00:10.000000Z"
    lines[1] = json.dumps(second)
    lines.insert(2, '{"ts": 1704103299.0, "id.orig_h": ')  # line 3: cut off
    lines.insert(3, '{"ts": 1704103299.0, "id.orig_h": "10.30.4.21", "id.resp_h": "10.30.0.10", "id.resp_p": "https", "proto": "tcp"}')
    result = flows.transform(raw_of("\n".join(lines) + "\n", "conn.json"))

    expected = frame(
        [
            ("10.30.4.21", "10.30.0.10", "tcp", 443, 2650, 18, 2, T0, T0 + 12.0),
            ("10.30.4.22", "224.0.0.251", "udp", 5353, 0, 1, 1, T0 + 20.5, T0 + 20.5),
            ("2001:db8::1", "ff02::2", "icmp", 0, 32, 1, 1, T0 + 30, T0 + 30),
        ]
    )
    pd.testing.assert_frame_equal(sorted_flows(result.flows), expected)
    assert issues_of(result) == {(3, None), (4, "id.resp_p")}
    assert result.records_skipped == 2


# --------------------------------------------------------------------------
# nfdump CSV


def test_nfdump_aggregate_whole_result():
    result = flows.import_file(NFDUMP)

    expected = frame(
        [
            ("10.30.4.21", "10.30.0.10", "tcp", 443, 1500 + 400 + 100, 10 + 4 + 2, 2, T0, T0 + 6.75),
            ("10.30.4.21", "10.30.0.1", "icmp", 0, 84, 1, 1, T0 + 10, T0 + 10),
            ("2001:db8::10", "2001:db8::53", "udp", 53, 190, 2, 1, T0 + 20.125, T0 + 20.5),
        ]
    )
    pd.testing.assert_frame_equal(sorted_flows(result.flows), expected)
    assert result.source == "nfdump"
    assert (result.records_read, result.records_skipped, result.issues) == (4, 0, [])


def test_nfdump_timezone_option_shifts_times():
    utc = flows.import_file(NFDUMP)
    berlin = flows.import_file(NFDUMP, timezone="Europe/Berlin")

    # Berlin is UTC+1 in January, so the same wall-clock text is one hour earlier.
    assert (utc.flows["first_seen"] - berlin.flows["first_seen"]).tolist() == [3600.0] * 3


def test_nfdump_bad_value_line_column():
    lines = NFDUMP.read_text().splitlines()
    lines[1] = lines[1].replace("2024-01-01 10:00:00,", "yesterday,", 1)
    lines[3] = lines[3].replace(",84,", ",8x4,", 1)
    result = flows.transform(raw_of("\n".join(lines) + "\n", "nf.csv"), fmt="nfdump-csv")

    assert issues_of(result) == {(2, "ts"), (4, "ibyt")}
    assert result.records_read == 2
    assert sorted(result.flows["bytes"].tolist()) == [190, 500]


def test_nfdump_missing_column_names_expected_header():
    with pytest.raises(InputFormatError, match="ts,te,td,sa,da,sp,dp,pr"):
        flows.transform(raw_of("ts,te,sa,da\n1,2,10.0.0.1,10.0.0.2\n"), fmt="nfdump-csv")


# --------------------------------------------------------------------------
# Helpers and detection


@pytest.mark.parametrize(
    "value, name",
    [(6, "tcp"), ("17", "udp"), ("1", "icmp"), ("58", "icmp"), ("ICMP6", "icmp"), ("TCP", "tcp"), (132, "sctp"), (253, "253")],
)
def test_protocol_name(value, name):
    assert flows.protocol_name(value) == name


def test_detect_format_and_import_path():
    assert detect_format(ZEEK_TSV) == "zeek-conn"
    assert detect_format(ZEEK_JSON) == "zeek-conn"
    assert detect_format(NFDUMP) == "nfdump-csv"
    assert import_path(NFDUMP).counts == {"flows": 4, "edges": 3}


def test_wrong_format_is_rejected():
    with pytest.raises(InputFormatError, match="not a flow format"):
        flows.transform(raw_of("x"), fmt="nmap-xml")
