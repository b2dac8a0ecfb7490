"""Reports of analysis findings: terminal tables, JSON, CSV, Markdown, HTML and the severity gate.

Analyses return ``findings``, a mapping of query name to DataFrame with at
least a ``severity`` and an ``evidence`` column. :func:`render_terminal`
prints them, :func:`write_report` writes the report files and
:func:`exit_code_for` turns them into a pipeline exit code.
"""

from twin.report.model import (
    EXIT_FINDINGS,
    EXIT_OK,
    QUERY_ORDER,
    SEVERITIES,
    ImportSummary,
    ReportContext,
    TwinCounts,
    describe_queries,
    exit_code_for,
    max_severity,
    severity_rank,
    summarise,
)
from twin.report.terminal import render_terminal
from twin.report.writers import FORMATS, write_report

__all__ = [
    "SEVERITIES",
    "QUERY_ORDER",
    "EXIT_OK",
    "EXIT_FINDINGS",
    "FORMATS",
    "ImportSummary",
    "TwinCounts",
    "ReportContext",
    "severity_rank",
    "summarise",
    "max_severity",
    "exit_code_for",
    "describe_queries",
    "render_terminal",
    "write_report",
]
