"""The report as one JSON document, and the text forms shared by the file writers.

:func:`report_document` builds the dict that ``report.json`` holds; its
fields are described in ``docs/report-format.md``. Bump
:data:`SCHEMA_VERSION` whenever a field changes meaning or is removed.
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping

import pandas as pd

import twin
from twin.report.cells import iso_utc, to_jsonable
from twin.report.model import ReportContext, max_severity, ordered_queries, summarise

__all__ = ["SCHEMA_VERSION", "GENERATOR", "findings_records", "report_document", "render_json"]

# Version of the JSON report layout. Readers should reject a major version they do not know.
SCHEMA_VERSION = 1
GENERATOR = f"iomt-twin {twin.__version__}"


def findings_records(df: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Return a findings frame as JSON-ready records, one dict per row.

    Missing values become None, numpy values Python values; list cells stay
    lists (see :func:`twin.report.cells.to_jsonable`).
    """
    if df is None or len(df) == 0:
        return []
    columns = [str(c) for c in df.columns]
    return [
        {column: to_jsonable(value) for column, value in zip(columns, row)}
        for row in df.itertuples(index=False, name=None)
    ]


def _counts_document(context: ReportContext) -> dict[str, Any]:
    counts = context.counts
    return {
        "devices": int(counts.devices),
        "segments": int(counts.segments),
        "communications": int(counts.communications),
        "services": int(counts.services),
        "by_device_class": {str(k): int(v) for k, v in counts.by_device_class.items()},
        "by_segment": {str(k): int(v) for k, v in counts.by_segment.items()},
    }


def _imports_document(context: ReportContext) -> list[dict[str, Any]]:
    return [
        {
            "path": str(item.path),
            "format": str(item.format),
            "records_read": int(item.records_read),
            "records_skipped": int(item.records_skipped),
            "issues": [str(issue) for issue in item.issues],
            "capped": bool(item.capped),
        }
        for item in context.imports
    ]


def report_document(
    findings: Mapping[str, pd.DataFrame],
    context: ReportContext,
    *,
    generated_at: float | None = None,
) -> dict[str, Any]:
    """Build the JSON report document.

    Parameters
    ----------
    findings : mapping of str to DataFrame
        Query name to its findings.
    context : ReportContext
        Site, run, counts and import summary.
    generated_at : float, optional
        Time the report is written, epoch seconds; defaults to now. Tests
        pass a fixed value so the document is reproducible.

    Returns
    -------
    dict
        Only JSON types (dict, list, str, int, float, bool, None), so
        ``json.dumps(doc, allow_nan=False)`` accepts it.
    """
    queries = ordered_queries(findings)
    summary = summarise(findings)
    return {
        "schema_version": SCHEMA_VERSION,
        "generator": GENERATOR,
        "site": str(context.site),
        "run_id": str(context.run_id),
        "built_at": iso_utc(context.built_at),
        "built_at_epoch": to_jsonable(context.built_at),
        "generated_at": iso_utc(time.time() if generated_at is None else generated_at),
        "workspace": None if context.workspace is None else str(context.workspace),
        "max_severity": max_severity(findings),
        "counts": _counts_document(context),
        "imports": _imports_document(context),
        "imports_note": context.imports_note,
        "queries": {
            name: {
                "description": context.descriptions.get(name),
                "cannot_see": context.limitations.get(name),
                "columns": [] if findings[name] is None else [str(c) for c in findings[name].columns],
            }
            for name in queries
        },
        "summary": [
            {key: to_jsonable(value) for key, value in row.items()}
            for row in summary.to_dict("records")
        ],
        "findings": {name: findings_records(findings[name]) for name in queries},
    }


def render_json(
    findings: Mapping[str, pd.DataFrame],
    context: ReportContext,
    *,
    generated_at: float | None = None,
) -> str:
    """Return the JSON report as text: strict JSON, UTF-8 characters kept, indented."""
    document = report_document(findings, context, generated_at=generated_at)
    return json.dumps(document, ensure_ascii=False, allow_nan=False, indent=2) + "\n"
