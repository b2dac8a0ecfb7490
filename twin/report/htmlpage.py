"""The report as one self-contained HTML page.

The page carries its CSS and a small script inline and references nothing
outside itself, so it opens offline and can be mailed as one file. Jinja2
renders it with autoescaping on, so every value taken from the network (host
names, evidence, file names) is HTML-escaped. A Content-Security-Policy
meta tag allows only the page's own script (by its SHA-256 hash) and inline
styles, as a second line of defence should a value ever reach the page
unescaped.
"""

from __future__ import annotations

import base64
import hashlib
import numbers
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

import jinja2
import numpy as np
import pandas as pd

from twin.report.cells import display_text, is_missing, iso_utc, report_view
from twin.report.document import GENERATOR
from twin.report.model import (
    SEVERITIES,
    UNRATED,
    ReportContext,
    normalise_severity,
    ordered_queries,
    severity_rank,
    summarise,
)

__all__ = ["MAX_DOCUMENT_ROWS", "MAX_ISSUES_SHOWN", "TEMPLATE", "SCRIPT", "render_html"]

# Rows per query in the HTML and Markdown reports, most severe first; the
# JSON and CSV files always hold every row.
MAX_DOCUMENT_ROWS = 1000
# Import issues listed per file in the HTML and Markdown reports. The JSON
# file contains all of them.
MAX_ISSUES_SHOWN = 100

TEMPLATE = "report.html.j2"
SCRIPT = "report.js"


@lru_cache(maxsize=1)
def template_environment() -> jinja2.Environment:
    """Return the Jinja2 environment of the report templates, with autoescaping on."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("twin.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@lru_cache(maxsize=1)
def _script() -> tuple[str, str]:
    """Return the inline script and the base64 SHA-256 digest its CSP source names."""
    text = resources.files("twin.report").joinpath("templates", SCRIPT).read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    return text, digest


def _sort_key(value: Any, column: str) -> str:
    """Return the ``data-sort`` value the page's script sorts a cell by."""
    if column == "severity":
        name = normalise_severity(value)
        return str(len(SEVERITIES) if name is None else severity_rank(name))
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, numbers.Real) and not is_missing(value):
        return repr(float(value))
    return ""


def _query_section(name: str, df: pd.DataFrame | None, context: ReportContext) -> dict[str, Any]:
    name = str(name)
    total = 0 if df is None else len(df)
    section: dict[str, Any] = {
        "name": name,
        "anchor": "q-" + "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name),
        "description": context.descriptions.get(name),
        "cannot_see": context.limitations.get(name),
        "total": total,
        "columns": [],
        "rows": [],
        "hidden": 0,
    }
    if df is None or total == 0:
        return section
    columns, shown = report_view(df, MAX_DOCUMENT_ROWS)
    rows = []
    for row in shown.itertuples(index=False, name=None):
        cells = []
        for column, value in zip(columns, row):
            cell = {"text": display_text(value, column), "sort": _sort_key(value, column), "badge": None}
            if column == "severity":
                cell["badge"] = normalise_severity(value) or UNRATED
                cell["text"] = cell["text"] or UNRATED
            cells.append(cell)
        rows.append(cells)
    section.update(columns=columns, rows=rows, hidden=total - len(shown))
    return section


def _imports_view(context: ReportContext) -> list[dict[str, Any]]:
    return [
        {
            "path": display_text(item.path),
            "format": display_text(item.format),
            "records_read": item.records_read,
            "records_skipped": item.records_skipped,
            "capped": item.capped,
            "issues": [display_text(issue) for issue in item.issues[:MAX_ISSUES_SHOWN]],
            "more_issues": max(len(item.issues) - MAX_ISSUES_SHOWN, 0),
        }
        for item in context.imports
    ]


def render_html(
    findings: Mapping[str, pd.DataFrame],
    context: ReportContext,
    *,
    generated_at: float | None = None,
) -> str:
    """Return the HTML report page.

    The page starts with a header (site, run, build and report times, twin
    counts), one card per severity with its finding count and the summary
    table. One table per query follows, with severity badges and the query's
    "what it cannot see" note. The imported files and their skipped records
    come last. Query tables list
    every column and at most :data:`MAX_DOCUMENT_ROWS` rows, most severe
    first; the inline script filters and sorts them in the browser.
    """
    summary = summarise(findings)
    records = summary.to_dict("records")
    totals = {severity: int(summary[severity].sum()) if len(summary) else 0 for severity in (*SEVERITIES, UNRATED)}
    script, script_digest = _script()
    counts = context.counts
    template = template_environment().get_template(TEMPLATE)
    return template.render(
        generator=GENERATOR,
        site=display_text(context.site),
        run_id=display_text(context.run_id),
        built_at=iso_utc(context.built_at) or "unknown",
        generated_at=iso_utc(generated_at) if generated_at is not None else None,
        workspace=None if context.workspace is None else display_text(context.workspace),
        counts=counts,
        by_device_class=sorted(counts.by_device_class.items(), key=lambda kv: (-kv[1], str(kv[0]))),
        by_segment=sorted(counts.by_segment.items(), key=lambda kv: (-kv[1], str(kv[0]))),
        severities=SEVERITIES,
        unrated=UNRATED,
        totals=totals,
        summary=records,
        sections=[_query_section(name, findings[name], context) for name in ordered_queries(findings)],
        imports=_imports_view(context),
        imports_note=None if context.imports_note is None else display_text(context.imports_note),
        max_issues=MAX_ISSUES_SHOWN,
        script=script,
        script_digest=script_digest,
    )
