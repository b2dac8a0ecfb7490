"""Unit tests of twin.report: summary, severity gate, terminal tables and report files."""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import math
import re
import sys
import types
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from twin.report import (
    EXIT_FINDINGS,
    EXIT_OK,
    SEVERITIES,
    ImportSummary,
    ReportContext,
    TwinCounts,
    describe_queries,
    exit_code_for,
    max_severity,
    render_terminal,
    severity_rank,
    summarise,
    write_report,
)
from twin.report.cells import display_text
from twin.report.document import SCHEMA_VERSION, render_json
from twin.report.htmlpage import render_html
from twin.report.model import UNRATED
from twin.report.terminal import findings_table
from twin.report.writers import markdown_escape, render_csv, render_markdown, write_text_atomic
from twin.model.observation import ImportResult

SCRIPT = "<script>alert(1)</script>"
NAN = float("nan")

# Findings rows per query, written by hand. Hostile strings: markup, pipes,
# quotes, non-ASCII, an escaped NUL, and NaN cells.
ROWS: dict[str, list[dict]] = {
    "misplaced_devices": [
        {"device_id": "d1", "hostname": SCRIPT, "device_class": "infusion_pump",
         "segment_id": "guest-wifi", "severity": "high", "evidence": "class infusion_pump not designated for guest-wifi"},
        {"device_id": "d2", "hostname": "a|b", "device_class": "patient_monitor",
         "segment_id": None, "severity": "critical", "evidence": 'vendor "Acme" \'quoted\''},
        {"device_id": "d3", "hostname": "überwachung-δ", "device_class": "workstation",
         "segment_id": "clinical", "severity": "low", "evidence": "sysDescr ends in \\x00 (escaped NUL)"},
    ],
    "segment_violations": [
        {"src_id": "d1", "dst_id": "d9", "proto": "tcp", "dst_port": 104, "rule": "deny-guest",
         "bytes": NAN, "severity": "medium", "evidence": "=HYPERLINK(\"http://x\")"},
    ],
    "external_exposure": [],
    "flat_segments": [
        {"segment_id": "ward-3", "medical_devices": 4, "it_devices": 9, "severity": "info",
         "evidence": "mixes infusion_pump, workstation"},
    ],
    "attack_paths": [
        {"mode": "observed", "path": ["d7", "d1", "d2"], "path_hostnames": ["guest-ap", SCRIPT, "a|b"],
         "hops": 2, "cost": 1.5, "severity": "critical", "evidence": "flows 2024-05-01"},
        {"mode": "permitted", "path": ["d7", "d3"], "path_hostnames": ["guest-ap", "überwachung-δ"],
         "hops": 1, "cost": NAN, "severity": "high", "evidence": "rule allow-any"},
    ],
    "choke_points": [
        {"kind": "device", "item": "d1", "paths_through": 2, "share": 1.0,
         "recommendation": "isolate d1", "severity": "high", "evidence": "on 2 of 2 paths"},
    ],
}

EMPTY_COLUMNS = ["device_id", "address", "severity", "evidence"]


def make_findings() -> dict[str, pd.DataFrame]:
    findings = {}
    for name, rows in ROWS.items():
        if rows:
            findings[name] = pd.DataFrame(rows)
        else:
            findings[name] = pd.DataFrame({c: pd.Series(dtype=object) for c in EMPTY_COLUMNS})
    # numpy scalar types, as analyses built on pandas produce them.
    findings["attack_paths"]["hops"] = findings["attack_paths"]["hops"].astype(np.int64)
    return findings


def make_context() -> ReportContext:
    result = ImportResult(source="nmap", path="scans/ward<3>.xml", records_read=40)
    result.skip("host without address", line=12, field="address")
    result.skip(f"hostname {SCRIPT} is not valid", line=97)
    return ReportContext(
        site="St. Example <Hospital>",
        run_id="run-\"42\"",
        built_at=1714521600.0,
        workspace=Path("/tmp/ws/twin.sqlite"),
        counts=TwinCounts(devices=12, segments=3, communications=30, services=8,
                          by_device_class={"infusion_pump": 4, SCRIPT: 1}, by_segment={"guest-wifi": 2}),
        imports=[ImportSummary.from_result(result), ImportSummary("flows/conn.log", "zeek", 100, 0)],
        descriptions={"attack_paths": "Find k shortest paths from entry points to targets."},
        limitations={"attack_paths": "Traffic that no flow exporter saw <encrypted> is not on any path."},
    )


def plain(value):
    """Return a hand-written cell as JSON reads it back: NaN as None, lists as tuples."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return tuple(value)
    return value


def record_set(records: list[dict], columns: list[str]) -> set[tuple]:
    return {tuple(plain(record.get(c)) for c in columns) for record in records}


# Summary and severity gate -------------------------------------------------


def test_severity_rank_orders_scale():
    assert [severity_rank(s) for s in SEVERITIES] == sorted(
        (severity_rank(s) for s in SEVERITIES), reverse=True
    )
    assert severity_rank("CRITICAL") > severity_rank("high") > severity_rank("info")
    with pytest.raises(ValueError, match="critical, high, medium, low, info"):
        severity_rank("severe")


def test_summarise_counts_per_severity():
    summary = summarise(make_findings())
    expected = pd.DataFrame(
        [
            ("misplaced_devices", 3, 1, 1, 0, 1, 0, 0),
            ("segment_violations", 1, 0, 0, 1, 0, 0, 0),
            ("external_exposure", 0, 0, 0, 0, 0, 0, 0),
            ("flat_segments", 1, 0, 0, 0, 0, 1, 0),
            ("attack_paths", 2, 1, 1, 0, 0, 0, 0),
            ("choke_points", 1, 0, 1, 0, 0, 0, 0),
        ],
        columns=["query", "total", *SEVERITIES, UNRATED],
    )
    for column in expected.columns[1:]:
        expected[column] = expected[column].astype("int64")
    pd.testing.assert_frame_equal(summary, expected, check_dtype=False)
    assert summary["total"].dtype == "int64"


def test_summarise_orders_catalogue_first():
    findings = {
        "custom_check": pd.DataFrame({"severity": ["low"], "evidence": ["x"]}),
        "choke_points": pd.DataFrame({"severity": [], "evidence": []}),
        "misplaced_devices": pd.DataFrame({"severity": ["info"], "evidence": ["y"]}),
    }
    assert list(summarise(findings)["query"]) == ["misplaced_devices", "choke_points", "custom_check"]


def test_summarise_counts_unrated_rows():
    findings = {
        "flat_segments": pd.DataFrame({"severity": ["High", "bogus", None, NAN], "evidence": [""] * 4}),
        "choke_points": pd.DataFrame({"item": ["x"], "evidence": ["no severity column"]}),
    }
    rows = {tuple(r) for r in summarise(findings)[["query", "total", "high", UNRATED]].itertuples(index=False)}
    assert rows == {("flat_segments", 4, 1, 3), ("choke_points", 1, 0, 1)}


def test_max_severity_cases():
    assert max_severity(make_findings()) == "critical"
    assert max_severity({}) is None
    assert max_severity({"x": pd.DataFrame({"severity": ["low", "medium"], "evidence": ["", ""]})}) == "medium"
    assert max_severity({"x": pd.DataFrame({"severity": ["bogus"], "evidence": [""]})}) is None


def gate_findings(*severities):
    return {"flat_segments": pd.DataFrame({"severity": list(severities), "evidence": [""] * len(severities)})}


@pytest.mark.parametrize(
    ("severities", "fail_on", "expected"),
    [
        (("critical",), None, EXIT_OK),
        ((), "info", EXIT_OK),
        (("info",), "info", EXIT_FINDINGS),
        (("info",), "low", EXIT_OK),
        (("low",), "low", EXIT_FINDINGS),
        (("low",), "medium", EXIT_OK),
        (("medium",), "medium", EXIT_FINDINGS),
        (("medium", "low"), "high", EXIT_OK),
        (("high",), "high", EXIT_FINDINGS),
        (("high",), "critical", EXIT_OK),
        (("critical",), "critical", EXIT_FINDINGS),
        (("info", "critical"), "critical", EXIT_FINDINGS),
        (("critical",), "High", EXIT_FINDINGS),
        (("Critical ",), "critical", EXIT_FINDINGS),
        # An unrated finding fails closed: it counts as critical.
        (("bogus",), "critical", EXIT_FINDINGS),
        ((None,), "critical", EXIT_FINDINGS),
    ],
)
def test_exit_code_for_levels(severities, fail_on, expected):
    assert exit_code_for(gate_findings(*severities), fail_on) == expected


def test_exit_code_values():
    assert EXIT_OK == 0
    assert EXIT_FINDINGS not in (0, 1, 2)


@pytest.mark.parametrize("fail_on", ["severe", "", "warning", "none"])
def test_exit_code_rejects_invalid_level(fail_on):
    with pytest.raises(ValueError) as excinfo:
        exit_code_for({}, fail_on)
    message = str(excinfo.value)
    assert repr(fail_on) in message
    for severity in SEVERITIES:
        assert severity in message


# Context helpers -------------------------------------------------------------


def test_import_summary_from_result():
    summary = make_context().imports[0]
    assert (summary.path, summary.format, summary.records_read, summary.records_skipped) == (
        "scans/ward<3>.xml", "nmap", 40, 2,
    )
    assert summary.issues == [
        "scans/ward<3>.xml:12 field 'address': host without address",
        f"scans/ward<3>.xml:97: hostname {SCRIPT} is not valid",
    ]


def test_describe_queries_reads_docstrings():
    heading = types.ModuleType("twin.analysis.fake_heading_query")
    heading.__doc__ = (
        "Find fake things.\n\nWhat it cannot see\n------------------\n"
        "Devices that never sent\na packet.\n\nNotes\n-----\nother text\n"
    )
    constant = types.ModuleType("twin.analysis.fake_constant_query")
    constant.__doc__ = "Find other things.\n\nIt cannot see everything.\n"
    constant.CANNOT_SEE = "Encrypted   payloads."
    sys.modules[heading.__name__] = heading
    sys.modules[constant.__name__] = constant
    try:
        descriptions, limitations = describe_queries(
            ["fake_heading_query", "fake_constant_query", "no_such_query_module"]
        )
    finally:
        del sys.modules[heading.__name__]
        del sys.modules[constant.__name__]
    assert descriptions == {"fake_heading_query": "Find fake things.", "fake_constant_query": "Find other things."}
    assert limitations == {
        "fake_heading_query": "Devices that never sent a packet.",
        "fake_constant_query": "Encrypted payloads.",
    }


# Terminal --------------------------------------------------------------------


def render_to_text(findings, context=None, top=20) -> str:
    console = Console(record=True, width=250, color_system=None)
    render_terminal(findings, console, context, top=top)
    return console.export_text()


def test_terminal_shows_rows_and_paths():
    text = render_to_text(make_findings(), make_context())
    for needle in [SCRIPT, "a|b", "überwachung-δ", "guest-ap -> <script>alert(1)</script> -> a|b",
                   "isolate d1", "deny-guest", "ward-3", "St. Example <Hospital>", "scans/ward<3>.xml"]:
        assert needle in text
    # The readable path_hostnames replaces the path of device ids.
    assert "d7 -> d1 -> d2" not in text


def test_terminal_markup_is_not_interpreted():
    findings = {"misplaced_devices": pd.DataFrame(
        {"hostname": ["[bold red]pump[/]"], "severity": ["high"], "evidence": ["[link=x]y[/link]"]}
    )}
    text = render_to_text(findings)
    assert "[bold red]pump[/]" in text
    assert "[link=x]y[/link]" in text


def test_terminal_top_limits_rows():
    df = pd.DataFrame({
        "item": [f"item-{i:02d}" for i in range(25)],
        "severity": ["low"] * 24 + ["critical"],
        "evidence": [""] * 25,
    })
    text = render_to_text({"choke_points": df}, top=5)
    shown = sorted(set(re.findall(r"item-\d\d", text)))
    assert shown == ["item-00", "item-01", "item-02", "item-03", "item-24"]
    assert "20 more rows not shown" in text


def test_terminal_handles_empty_and_odd_frames():
    findings = {
        "external_exposure": pd.DataFrame(),
        "flat_segments": pd.DataFrame({"segment_id": ["s1"]}),
        "choke_points": None,
        "attack_paths": pd.DataFrame({"path": [[]], "severity": [NAN], "evidence": [None]}),
    }
    text = render_to_text(findings)
    assert text.count("no findings") == 2
    assert "s1" in text
    assert UNRATED in text


def test_findings_table_columns_severity_first():
    table = findings_table("misplaced_devices", make_findings()["misplaced_devices"])
    headers = [column.header for column in table.columns]
    assert headers[0] == "severity"
    assert headers[-1] == "evidence"
    assert {"hostname", "device_class", "segment_id"} <= set(headers)


# JSON ------------------------------------------------------------------------


def test_json_round_trips_records():
    findings = make_findings()
    document = json.loads(render_json(findings, make_context(), generated_at=1714525200.0))
    assert document["schema_version"] == SCHEMA_VERSION
    assert (document["site"], document["run_id"]) == ("St. Example <Hospital>", 'run-"42"')
    assert document["built_at"] == "2024-05-01T00:00:00Z"
    assert document["generated_at"] == "2024-05-01T01:00:00Z"
    assert document["max_severity"] == "critical"
    assert list(document["findings"]) == list(ROWS)
    for name, rows in ROWS.items():
        columns = list(findings[name].columns)
        assert document["queries"][name]["columns"] == columns
        got = [{c: plain(v) for c, v in record.items()} for record in document["findings"][name]]
        assert record_set(got, columns) == record_set(rows, columns), name
        assert len(got) == len(rows)


def test_json_keeps_types():
    document = json.loads(render_json(make_findings(), make_context()))
    path = document["findings"]["attack_paths"][0]
    assert path["path_hostnames"] == ["guest-ap", SCRIPT, "a|b"]
    assert isinstance(path["hops"], int)
    assert document["findings"]["attack_paths"][1]["cost"] is None
    assert document["findings"]["segment_violations"][0]["bytes"] is None


def test_json_summary_and_context():
    document = json.loads(render_json(make_findings(), make_context()))
    assert document["summary"] == summarise(make_findings()).to_dict("records")
    assert document["counts"]["by_device_class"] == {"infusion_pump": 4, SCRIPT: 1}
    assert document["imports"][0]["records_skipped"] == 2
    assert document["imports"][0]["issues"][1].endswith(f"hostname {SCRIPT} is not valid")
    assert document["queries"]["attack_paths"]["cannot_see"].startswith("Traffic that")
    assert document["queries"]["misplaced_devices"]["description"] is None
    assert document["workspace"] == "/tmp/ws/twin.sqlite"


def test_json_is_strict_with_infinities():
    findings = {"attack_paths": pd.DataFrame(
        {"cost": [math.inf, -math.inf, np.float32(2.5)], "severity": ["low"] * 3, "evidence": [b"\x00raw", "", ""]}
    )}
    text = render_json(findings, make_context())
    records = json.loads(text)["findings"]["attack_paths"]
    assert [r["cost"] for r in records] == [None, None, 2.5]
    assert records[0]["evidence"] == "\\x00raw"
    assert "Infinity" not in text


# CSV -------------------------------------------------------------------------


def csv_expected(value, column):
    """Return a hand-written cell as the CSV file must spell it."""
    value = plain(value)
    if value is None:
        return ""
    if isinstance(value, tuple):
        return (" -> " if column.startswith("path") else ";").join(value)
    if isinstance(value, float) and value.is_integer():
        return str(value)
    return str(value)


def test_csv_reads_back_same_rows():
    findings = make_findings()
    for name, rows in ROWS.items():
        if name == "segment_violations":
            continue  # its evidence starts with "=", checked in the formula test
        text = render_csv(findings[name], formula_guard=False)
        read = list(csv.reader(io.StringIO(text)))
        columns = list(findings[name].columns)
        assert read[0] == columns
        expected = {tuple(csv_expected(row.get(c), c) for c in columns) for row in rows}
        assert {tuple(r) for r in read[1:]} == expected, name
        assert len(read) - 1 == len(rows)


def test_csv_reads_back_with_pandas():
    df = make_findings()["misplaced_devices"]
    back = pd.read_csv(io.StringIO(render_csv(df)), dtype=str, keep_default_na=False)
    expected = df.fillna("").astype(str)
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)


def test_csv_guards_formulas():
    df = pd.DataFrame({"hostname": ["=cmd|' /C calc'!A0", "+1", "@SUM(1)", "-x", "ok=1"], "n": [-1, 2, 3, 4, 5]})
    rows = list(csv.reader(io.StringIO(render_csv(df))))[1:]
    assert rows == [
        ["'=cmd|' /C calc'!A0", "-1"],
        ["'+1", "2"],
        ["'@SUM(1)", "3"],
        ["'-x", "4"],
        ["ok=1", "5"],
    ]


def test_csv_empty_frames():
    assert render_csv(pd.DataFrame()) == ""
    text = render_csv(pd.DataFrame({c: pd.Series(dtype=object) for c in EMPTY_COLUMNS}))
    assert list(csv.reader(io.StringIO(text))) == [EMPTY_COLUMNS]


def test_csv_escapes_control_characters():
    df = pd.DataFrame({"hostname": ["pump\x00\x1b[31m"], "evidence": ["line 1\r\nline 2"]})
    rows = list(csv.reader(io.StringIO(render_csv(df))))
    assert rows[1] == ["pump\\x00\\x1b[31m", "line 1\nline 2"]


# Markdown --------------------------------------------------------------------


def markdown_sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = line[3:]
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return sections


def unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line.replace("\\\\", "")))


def test_markdown_table_row_counts():
    findings = make_findings()
    sections = markdown_sections(render_markdown(findings, make_context()))
    for name, rows in ROWS.items():
        table = [line for line in sections[name] if line.startswith("|")]
        if not rows:
            assert table == []
            assert "No findings." in sections[name]
            continue
        assert len(table) == len(rows) + 2, name
        width = len(findings[name].columns) + 1
        assert {unescaped_pipes(line) for line in table} == {width}, name
    summary_rows = [line for line in sections["Summary"] if line.startswith("|")]
    assert len(summary_rows) == len(ROWS) + 2


def test_markdown_escapes_hostile_text():
    text = render_markdown(make_findings(), make_context())
    assert SCRIPT not in text
    assert "&lt;script>alert(1)&lt;/script>" in text
    assert "a\\|b" in text
    assert "St. Example &lt;Hospital>" in text
    assert "**What it cannot see:** Traffic that no flow exporter saw &lt;encrypted>" in text
    assert markdown_escape("x\ny*[z]`") == "x<br>y\\*\\[z\\]\\`"


# HTML ------------------------------------------------------------------------


class TableText(HTMLParser):
    """Collects the text of each <tbody> row per table id, and every src/href value."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[tuple[str, ...]]] = {}
        self.links: list[str] = []
        self.scripts: list[str] = []
        self._table = None
        self._row = None
        self._cell = None
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href", "action", "srcset"):
            if key in attrs:
                self.links.append(attrs[key])
        if tag == "table":
            self._table = attrs.get("id")
            self.tables.setdefault(self._table, [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row:
                self.tables[self._table].append(tuple(self._row))
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_script:
            self.scripts[-1] += data


def parse_html(text: str) -> TableText:
    parser = TableText()
    parser.feed(text)
    parser.close()
    return parser


def test_html_tables_show_every_row():
    findings = make_findings()
    page = parse_html(render_html(findings, make_context()))
    for name, rows in ROWS.items():
        if not rows:
            assert f"q-{name}-table" not in page.tables
            continue
        df = findings[name]
        columns = ["severity"] + [c for c in df.columns if c not in ("severity", "evidence")] + ["evidence"]
        expected = {tuple(display_text(row[c], c) for c in columns) for row in df.to_dict("records")}
        assert set(page.tables[f"q-{name}-table"]) == expected, name


def test_html_escapes_hostile_strings():
    text = render_html(make_findings(), make_context())
    assert SCRIPT not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "St. Example &lt;Hospital&gt;" in text
    assert "run-&#34;42&#34;" in text
    assert text.count("<script") == 1


def test_html_has_no_external_resources():
    text = render_html(make_findings(), make_context())
    page = parse_html(text)
    assert [link for link in page.links if re.match(r"\s*(https?:)?//", link, re.I)] == []
    assert re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//""", text, re.I) is None
    assert re.search(r"url\(\s*['\"]?\s*(https?:)?//", text, re.I) is None
    assert re.search(r"@import", text) is None


def test_html_csp_allows_only_inline_script():
    text = render_html(make_findings(), make_context())
    page = parse_html(text)
    assert len(page.scripts) == 1
    digest = base64.b64encode(hashlib.sha256(page.scripts[0].encode("utf-8")).digest()).decode()
    policy = html.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text).group(1))
    assert f"script-src 'sha256-{digest}'" in policy
    assert "default-src 'none'" in policy


def test_html_lists_skipped_records_and_notes():
    text = render_html(make_findings(), make_context())
    assert "scans/ward&lt;3&gt;.xml:12 field &#39;address&#39;: host without address" in text
    assert f"hostname {SCRIPT.replace('<', '&lt;').replace('>', '&gt;')} is not valid" in text
    assert "What it cannot see:" in text
    assert "Traffic that no flow exporter saw &lt;encrypted&gt; is not on any path." in text
    assert 'class="badge sev-critical"' in text
    for severity in SEVERITIES:
        assert f'class="card sev-{severity}"' in text


def test_html_without_findings_or_imports():
    context = ReportContext(site="empty", run_id="r0", built_at=NAN)
    page = parse_html(render_html({}, context))
    assert page.tables["summary-table"] == []


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40))
def test_html_and_json_keep_any_hostname(hostname):
    findings = {"misplaced_devices": pd.DataFrame({"hostname": [hostname], "severity": ["low"], "evidence": ["e"]})}
    context = ReportContext(site="s", run_id="r", built_at=0.0)
    document = json.loads(render_json(findings, context))
    assert document["findings"]["misplaced_devices"][0]["hostname"] == hostname
    page = parse_html(render_html(findings, context))
    rows = page.tables["q-misplaced_devices-table"]
    # Browsers and html.parser fold "\r" into "\n" in text, so compare after that.
    shown = display_text(hostname, "hostname").replace("\r", "\n")
    assert rows == [("low", shown, "e")]


# Files -----------------------------------------------------------------------


def test_write_report_writes_every_format(tmp_path):
    out = tmp_path / "reports" / "run-42"
    written = write_report(make_findings(), make_context(), out, generated_at=0.0)
    expected_keys = {"html", "md", "json"} | {f"csv:{name}" for name in ROWS}
    assert set(written) == expected_keys
    assert {p.name for p in out.iterdir()} == {"report.html", "report.md", "report.json"} | {
        f"{name}.csv" for name in ROWS
    }
    assert json.loads(written["json"].read_text(encoding="utf-8"))["site"] == "St. Example <Hospital>"
    assert written["csv:attack_paths"].read_text(encoding="utf-8").splitlines()[1].startswith(
        "observed,d7 -> d1 -> d2,guest-ap -> <script>alert(1)</script> -> a|b,2,1.5,critical,"
    )


def test_write_report_selected_formats(tmp_path):
    written = write_report(make_findings(), make_context(), tmp_path, formats=("JSON", "md"))
    assert set(written) == {"json", "md"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "report.md"]


def test_write_report_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError, match=r"'pdf'.*html, md, json, csv"):
        write_report(make_findings(), make_context(), tmp_path, formats=("html", "pdf"))
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "report.md"
    write_text_atomic(target, "old report\n")
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(target, "new report \ud800 cannot be encoded")
    assert target.read_text(encoding="utf-8") == "old report\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_atomic_write_replaces_file(tmp_path):
    target = tmp_path / "report.json"
    write_text_atomic(target, "{}\n")
    write_text_atomic(target, '{"a": 1}\n')
    assert target.read_text(encoding="utf-8") == '{"a": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_write_report_odd_frames(tmp_path):
    odd = pd.DataFrame([["d1", "high", "first", "low"]], columns=["item", "severity", "evidence", "severity"])
    findings = {
        "flat_segments": odd,
        "external_exposure": None,
        "choke_points": pd.DataFrame(),
        7: pd.DataFrame({0: [1], "severity": ["low"], "evidence": [NAN]}),
    }
    context = ReportContext(site="s", run_id="r", built_at=NAN)
    written = write_report(findings, context, tmp_path)
    document = json.loads(written["json"].read_text(encoding="utf-8"))
    assert document["built_at"] is None
    assert [row["query"] for row in document["summary"]] == ["external_exposure", "flat_segments", "choke_points", 7]
    assert document["findings"]["7"] == [{"0": 1, "severity": "low", "evidence": None}]
    # The first severity column decides, in the summary and in the tables.
    assert document["summary"][1]["high"] == 1
    page = parse_html(written["html"].read_text(encoding="utf-8"))
    assert page.tables["q-flat_segments-table"] == [("high", "d1", "low", "first")]
    assert written["csv:7"].name == "7.csv"
    text = render_to_text(findings)
    assert "no findings" in text
