"""The "What changed" report: the findings report of the latest run with a change section first.

:func:`write_change_report` writes the same files as
:func:`twin.report.write_report` and adds the changes of a
:class:`~twin.report.diff.ChangeSet` to each: a section at the top of the
HTML and Markdown pages, a ``changes`` object in the JSON document and
extra CSV files. The HTML section draws its map and trend charts as inline
SVG, so the page stays one self-contained file.
"""

from __future__ import annotations

import logging
import json
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from twin.report.cells import display_text, iso_utc, sort_by_severity, to_jsonable
from twin.report.diff import CHANGED_COLUMNS, DEVICE_COLUMNS, ChangeSet
from twin.report.document import findings_records, report_document
from twin.report.htmlpage import MAX_DOCUMENT_ROWS, template_environment, render_html
from twin.report.model import UNRATED, ReportContext, normalise_severity, ordered_queries
from twin.report.writers import (
    FORMATS,
    REPORT_BASENAME,
    csv_filename,
    markdown_escape,
    render_csv,
    render_markdown,
    write_report,
    write_text_atomic,
)

__all__ = [
    "CHANGES_TEMPLATE",
    "MAX_MAP_DEVICES_PER_SEGMENT",
    "changes_document",
    "render_changes_html",
    "render_changes_markdown",
    "write_change_report",
]

logger = logging.getLogger(__name__)

CHANGES_TEMPLATE = "changes.html.j2"
# Devices drawn per segment box of the change map; the tables list all of them.
MAX_MAP_DEVICES_PER_SEGMENT = 12
# Change map layout, in SVG user units (pixels at 100 % zoom).
MAP_COLUMNS = 4
MAP_BOX_WIDTH = 230
MAP_ROW_HEIGHT = 18
MAP_GAP = 12
# Trend chart size, in SVG user units.
CHART_WIDTH = 240
CHART_HEIGHT = 96
# Maximum characters of a device label on the map; the tooltip has the whole text.
MAP_LABEL_CHARS = 26

# Colours of new, gone and changed devices on the map (as in the legend).
STATE_COLOURS = {"new": "#2f9e44", "gone": "#868e96", "changed": "#e8590c"}
# Marker placed before the change section in the base HTML page and Markdown text.
_HTML_ANCHOR = '<section id="summary">'
_MARKDOWN_ANCHOR = "## Summary\n"
_NO_SEGMENT = "(no segment)"


# -- JSON -------------------------------------------------------------------


def changes_document(changes: ChangeSet) -> dict[str, Any]:
    """Build the ``changes`` object of the JSON report (described in docs/report-format.md)."""
    def by_query(frames: Mapping[str, pd.DataFrame]) -> dict[str, list[dict[str, Any]]]:
        return {name: findings_records(frames[name]) for name in ordered_queries(frames)}

    return {
        "site": str(changes.site),
        "old_run_id": str(changes.old_run_id),
        "old_built_at": iso_utc(changes.old_built_at),
        "old_built_at_epoch": to_jsonable(changes.old_built_at),
        "new_run_id": str(changes.new_run_id),
        "new_built_at": iso_utc(changes.new_built_at),
        "new_built_at_epoch": to_jsonable(changes.new_built_at),
        "summary": changes.summary(),
        "summary_line": changes.summary_line(),
        "findings": {
            "new": by_query(changes.findings_new),
            "resolved": by_query(changes.findings_resolved),
            "open": by_query(changes.findings_open),
        },
        "devices": {
            "new": findings_records(changes.devices_new),
            "gone": findings_records(changes.devices_gone),
            "changed": findings_records(changes.devices_changed),
        },
        "trend": findings_records(changes.trend),
    }


# -- rows shown in HTML and Markdown ----------------------------------------

_FINDING_COLUMNS = ("query", "severity", "evidence")
_OPEN_COLUMNS = ("query", "severity", "evidence", "open_since", "open_days")


def _finding_rows(frames: Mapping[str, pd.DataFrame], with_age: bool) -> tuple[list[str], list[list[dict]], int]:
    """Return (columns, rows, hidden) of one finding table across queries, most severe first per query."""
    columns = list(_OPEN_COLUMNS if with_age else _FINDING_COLUMNS)
    rows: list[list[dict]] = []
    total = 0
    for name in ordered_queries(frames):
        frame = frames[name]
        if frame is None or len(frame) == 0:
            continue
        total += len(frame)
        for record in sort_by_severity(frame).to_dict("records"):
            if len(rows) >= MAX_DOCUMENT_ROWS:
                break
            severity = normalise_severity(record.get("severity"))
            row = [
                {"text": display_text(name), "badge": None, "num": False},
                {"text": severity or UNRATED, "badge": severity or UNRATED, "num": False},
                {"text": display_text(record.get("evidence")), "badge": None, "num": False},
            ]
            if with_age:
                row.append({"text": iso_utc(record.get("open_since")) or "", "badge": None, "num": False})
                row.append({"text": display_text(record.get("open_days")), "badge": None, "num": True})
            rows.append(row)
    return columns, rows, total - len(rows)


def _device_rows(frame: pd.DataFrame, columns: Iterable[str]) -> tuple[list[str], list[list[dict]], int]:
    columns = list(columns)
    rows = []
    shown = frame.head(MAX_DOCUMENT_ROWS)
    for record in shown.to_dict("records"):
        rows.append([{"text": display_text(record.get(c), c)} for c in columns])
    return columns, rows, len(frame) - len(shown)


def _paths_frames(changes: ChangeSet, which: str) -> dict[str, pd.DataFrame]:
    frames = changes.findings_new if which == "new" else changes.findings_resolved
    frame = frames.get("attack_paths")
    return {} if frame is None else {"attack_paths": frame}


def _finding_tables(changes: ChangeSet) -> list[dict[str, Any]]:
    # The still-open list is long and unchanged by definition, so it comes
    # last ("late"), after the device changes, where it does not hide them.
    specs = [
        ("New findings", changes.findings_new, False),
        ("Resolved findings", changes.findings_resolved, False),
        ("Attack paths opened", _paths_frames(changes, "new"), False),
        ("Attack paths cut", _paths_frames(changes, "resolved"), False),
        ("Still open", changes.findings_open, True),
    ]
    tables = []
    for title, frames, with_age in specs:
        columns, rows, hidden = _finding_rows(frames, with_age)
        tables.append(
            {"title": title, "columns": columns, "rows": rows, "hidden": hidden, "total": len(rows) + hidden, "late": with_age}
        )
    return tables


def _device_tables(changes: ChangeSet) -> list[dict[str, Any]]:
    listed = ("device_id", "hostname", "ip", "device_class", "segment_id")
    specs = [
        ("New devices", changes.devices_new, listed),
        ("Gone devices", changes.devices_gone, listed),
        ("Changed devices", changes.devices_changed, CHANGED_COLUMNS),
    ]
    tables = []
    for title, frame, columns in specs:
        names, rows, hidden = _device_rows(frame, columns)
        tables.append({"title": title, "columns": names, "rows": rows, "hidden": hidden, "total": len(frame)})
    return tables


# -- inline SVG ---------------------------------------------------------------


def _label(record: Mapping[str, Any]) -> str:
    for column in ("hostname", "ip", "device_id"):
        text = display_text(record.get(column))
        if text:
            return text
    return "?"


def _short(text: str, limit: int = MAP_LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _segment_name(value: Any) -> str:
    return display_text(value) or _NO_SEGMENT


def _map_entries(changes: ChangeSet) -> dict[str, list[dict[str, str]]]:
    """Return the dots of the change map per segment: label, state, hollow (segment left) and tooltip."""
    entries: dict[str, list[dict[str, Any]]] = {}

    def add(segment: Any, record: Mapping[str, Any], state: str, note: str, hollow: bool = False) -> None:
        label = _label(record)
        entries.setdefault(_segment_name(segment), []).append(
            {"label": label, "state": state, "hollow": hollow, "title": f"{label} ({display_text(record.get('device_id'))}): {note}"}
        )

    for record in changes.devices_new.to_dict("records"):
        add(record.get("segment_id"), record, "new", f"new {display_text(record.get('device_class'))}")
    for record in changes.devices_gone.to_dict("records"):
        add(record.get("segment_id"), record, "gone", f"gone {display_text(record.get('device_class'))}")
    for record in changes.devices_changed.to_dict("records"):
        old, new = display_text(record.get("old")), display_text(record.get("new"))
        if record.get("field") == "segment_id":
            add(record.get("new"), record, "changed", f"moved from segment {_segment_name(old)}")
            add(record.get("old"), record, "changed", f"moved to segment {_segment_name(new)}", hollow=True)
        else:
            add(record.get("segment_id"), record, "changed", f"device class {old or 'unknown'} -> {new or 'unknown'}")
    return entries


def _change_map(changes: ChangeSet) -> dict[str, Any]:
    entries = _map_entries(changes)
    boxes = []
    x = y = MAP_GAP
    row_height = 0
    for index, segment in enumerate(sorted(entries)):
        if index and index % MAP_COLUMNS == 0:
            x = MAP_GAP
            y += row_height + MAP_GAP
            row_height = 0
        dots = entries[segment]
        drawn = dots[:MAX_MAP_DEVICES_PER_SEGMENT]
        more = len(dots) - len(drawn)
        height = 28 + MAP_ROW_HEIGHT * len(drawn) + (16 if more else 0)
        box_dots = []
        for position, dot in enumerate(drawn):
            colour = STATE_COLOURS[dot["state"]]
            box_dots.append(
                {
                    "x": x + 16,
                    "y": y + 36 + MAP_ROW_HEIGHT * position,
                    "fill": "#ffffff" if dot["hollow"] else colour,
                    "stroke": colour,
                    "label": _short(dot["label"]),
                    "title": dot["title"],
                }
            )
        boxes.append(
            {"x": x, "y": y, "w": MAP_BOX_WIDTH, "h": height, "label": _short(segment), "title": segment,
             "dots": box_dots, "more": more}
        )
        row_height = max(row_height, height)
        x += MAP_BOX_WIDTH + MAP_GAP
    columns = min(len(boxes), MAP_COLUMNS)
    return {
        "boxes": boxes,
        "width": MAP_GAP + columns * (MAP_BOX_WIDTH + MAP_GAP),
        "height": y + row_height + MAP_GAP,
    }


def _trend_charts(changes: ChangeSet) -> list[dict[str, Any]]:
    trend = changes.trend
    if trend is None or len(trend) == 0:
        return []
    queries = [c for c in trend.columns if c not in ("run_id", "finished_at")]
    left, right, top, bottom = 12, CHART_WIDTH - 12, 26, CHART_HEIGHT - 18
    charts = []
    for name in queries:
        values = [int(v) for v in trend[name].tolist()]
        peak = max(values) or 1
        step = (right - left) / (len(values) - 1) if len(values) > 1 else 0
        points = []
        for i, (value, run_id, finished) in enumerate(zip(values, trend["run_id"], trend["finished_at"])):
            points.append(
                {
                    "x": round(left + step * i if len(values) > 1 else (left + right) / 2, 1),
                    "y": round(bottom - (bottom - top) * value / peak, 1),
                    "title": f"{display_text(run_id)} ({iso_utc(finished) or 'unknown'}): {value}",
                }
            )
        charts.append(
            {
                "query": display_text(name),
                "width": CHART_WIDTH,
                "height": CHART_HEIGHT,
                "left": left,
                "right": right,
                "bottom": bottom,
                "points": points,
                "last": values[-1],
                "max": max(values),
                "first_label": (iso_utc(trend["finished_at"].iloc[0]) or "")[:10],
                "last_label": (iso_utc(trend["finished_at"].iloc[-1]) or "")[:10],
            }
        )
    return charts


# -- HTML and Markdown ---------------------------------------------------------


def render_changes_html(changes: ChangeSet) -> str:
    """Return the "What changed" section as an HTML fragment (a ``<style>`` and a ``<section id="changes">``).

    Every value is escaped by Jinja2's autoescaping. The change map draws
    the segments that gained, lost or changed devices as boxes and those
    devices as dots; the trend charts plot each query's finding count per run.
    """
    summary = changes.summary()
    names = ordered_queries({**changes.findings_new, **changes.findings_resolved, **changes.findings_open})
    counts = [
        {
            "query": display_text(name),
            "new": summary["findings_new"].get(name, 0),
            "resolved": summary["findings_resolved"].get(name, 0),
            "open": summary["findings_open"].get(name, 0),
        }
        for name in names
    ]
    template = template_environment().get_template(CHANGES_TEMPLATE)
    return template.render(
        summary_line=changes.summary_line(),
        old_run_id=display_text(changes.old_run_id),
        new_run_id=display_text(changes.new_run_id),
        old_built_at=iso_utc(changes.old_built_at) or "unknown",
        new_built_at=iso_utc(changes.new_built_at) or "unknown",
        counts=counts,
        finding_tables=_finding_tables(changes),
        device_tables=_device_tables(changes),
        map=_change_map(changes),
        charts=_trend_charts(changes),
        trend_runs=0 if changes.trend is None else len(changes.trend),
    )


def _markdown_table(columns: list[str], rows: list[list[dict]]) -> list[str]:
    lines = ["| " + " | ".join(markdown_escape(c) for c in columns) + " |"]
    lines.append("| " + " | ".join("---" for _ in columns) + " |")
    for row in rows:
        lines.append("| " + " | ".join(markdown_escape(cell["text"]) for cell in row) + " |")
    return lines


def render_changes_markdown(changes: ChangeSet) -> str:
    """Return the "What changed" section as Markdown text: summary line, then one table per section."""
    lines = ["## What changed", "", f"**{markdown_escape(changes.summary_line())}**", ""]
    lines.append(
        f"Run {markdown_escape(changes.new_run_id)} ({iso_utc(changes.new_built_at) or 'unknown'}) compared with "
        f"run {markdown_escape(changes.old_run_id)} ({iso_utc(changes.old_built_at) or 'unknown'})."
    )
    lines.append("")
    findings = _finding_tables(changes)
    ordered = [t for t in findings if not t["late"]] + _device_tables(changes) + [t for t in findings if t["late"]]
    for table in ordered:
        lines += [f"### {markdown_escape(table['title'])} ({table['total']})", ""]
        if not table["rows"]:
            lines += ["None.", ""]
            continue
        lines += _markdown_table(table["columns"], table["rows"])
        if table["hidden"]:
            lines += ["", f"{table['hidden']} more rows are in the JSON and CSV files."]
        lines.append("")
    trend = changes.trend
    if trend is not None and len(trend):
        lines += [
            f"### Trend over the last {len(trend)} runs",
            "",
            "Counts of distinct findings by identity; attack paths count entry-target pairs, "
            "not the k paths per pair that the tables list.",
            "",
        ]
        columns = ["run_id", "finished_at", *[c for c in trend.columns if c not in ("run_id", "finished_at")]]
        rows = [
            [{"text": iso_utc(record[c]) or "" if c == "finished_at" else display_text(record[c])} for c in columns]
            for record in trend.to_dict("records")
        ]
        lines += _markdown_table(columns, rows)
        lines.append("")
    return "\n".join(lines) + "\n"


def _insert_before(text: str, anchor: str, section: str) -> str:
    position = text.find(anchor)
    if position < 0:
        # NOTE: the base page no longer has the expected marker, so the section goes first in the body.
        logger.warning("report text has no %r marker; the change section is placed at the start", anchor)
        position = 0
    return text[:position] + section + text[position:]


def write_change_report(
    changes: ChangeSet,
    findings: Mapping[str, pd.DataFrame],
    context: ReportContext,
    out_dir: str | Path,
    formats: Iterable[str] = FORMATS,
    *,
    generated_at: float | None = None,
) -> dict[str, Path]:
    """Write the findings report of the latest run with the changes section, each file atomically.

    Parameters
    ----------
    changes : ChangeSet
        Result of :func:`twin.report.diff.compute_changes`.
    findings : mapping of str to DataFrame
        Findings of the latest run (the report body).
    context : ReportContext
        Site, run, counts and import summary of the latest run.
    out_dir : str or Path
        Output folder, created when missing.
    formats : iterable of str
        Any of ``html``, ``md``, ``json`` and ``csv``.
    generated_at : float, optional
        Time stamp written into the report, epoch seconds; defaults to now.

    Returns
    -------
    dict of str to Path
        The keys of :func:`twin.report.write_report`, plus ``csv:changes_<query>_new``,
        ``csv:changes_<query>_resolved``, ``csv:devices_new``, ``csv:devices_gone``
        and ``csv:devices_changed`` when CSV is requested.

    Raises
    ------
    ValueError
        When a format is not one of :data:`~twin.report.writers.FORMATS`.
    """
    requested = [str(f).lower() for f in formats]
    unknown = [f for f in requested if f not in FORMATS]
    if unknown:
        raise ValueError(f"invalid report format {', '.join(map(repr, unknown))}; expected any of {', '.join(FORMATS)}")
    if generated_at is None:
        generated_at = time.time()
    folder = Path(out_dir)
    written = write_report(findings, context, folder, [f for f in requested if f == "csv"], generated_at=generated_at)
    if "json" in requested:
        document = report_document(findings, context, generated_at=generated_at)
        document["changes"] = changes_document(changes)
        text = json.dumps(document, ensure_ascii=False, allow_nan=False, indent=2) + "\n"
        written["json"] = write_text_atomic(folder / f"{REPORT_BASENAME}.json", text)
    if "csv" in requested:
        for name in ordered_queries(changes.findings_new):
            written[f"csv:changes_{name}_new"] = write_text_atomic(
                folder / csv_filename(f"changes_{name}_new"), render_csv(changes.findings_new[name])
            )
        for name in ordered_queries(changes.findings_resolved):
            written[f"csv:changes_{name}_resolved"] = write_text_atomic(
                folder / csv_filename(f"changes_{name}_resolved"), render_csv(changes.findings_resolved[name])
            )
        for name, frame, columns in (
            ("devices_new", changes.devices_new, DEVICE_COLUMNS),
            ("devices_gone", changes.devices_gone, DEVICE_COLUMNS),
            ("devices_changed", changes.devices_changed, CHANGED_COLUMNS),
        ):
            # An empty frame still gets its header, so readers find the columns.
            frame = frame if len(frame.columns) else pd.DataFrame(columns=list(columns))
            written[f"csv:{name}"] = write_text_atomic(folder / csv_filename(name), render_csv(frame))
    if "md" in requested:
        text = render_markdown(findings, context, generated_at=generated_at)
        text = _insert_before(text, _MARKDOWN_ANCHOR, render_changes_markdown(changes) + "\n")
        written["md"] = write_text_atomic(folder / f"{REPORT_BASENAME}.md", text)
    if "html" in requested:
        text = render_html(findings, context, generated_at=generated_at)
        text = _insert_before(text, _HTML_ANCHOR, render_changes_html(changes))
        written["html"] = write_text_atomic(folder / f"{REPORT_BASENAME}.html", text)
    logger.info("wrote %d report files with changes since run %s for run %s", len(written), changes.old_run_id, context.run_id)
    return written
