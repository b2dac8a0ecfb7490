"""Report files: JSON, one CSV per query, Markdown and a self-contained HTML page.

:func:`write_report` writes every requested format into one folder. Each
file is written to a temporary file in the same folder and then renamed
over the target with :func:`os.replace`, so a reader sees either the old
file or the complete new one, never a half-written report.
"""

from __future__ import annotations

import io
import logging
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from twin.report.cells import csv_value, display_text, iso_utc, report_view
from twin.report.document import GENERATOR, render_json
from twin.report.htmlpage import MAX_DOCUMENT_ROWS, MAX_ISSUES_SHOWN, render_html
from twin.report.model import SEVERITIES, UNRATED, ReportContext, ordered_queries, summarise

__all__ = [
    "FORMATS",
    "REPORT_BASENAME",
    "CSV_FORMULA_PREFIXES",
    "write_report",
    "write_text_atomic",
    "render_csv",
    "render_markdown",
    "markdown_escape",
    "csv_filename",
]

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("html", "md", "json", "csv")
# Base name of report.html, report.md and report.json in the output folder.
REPORT_BASENAME = "report"
# Text cells starting with one of these are prefixed with "'" in CSV files, so
# a spreadsheet shows a hostile host name such as "=HYPERLINK(...)" as text
# instead of running it as a formula (OWASP "CSV Injection").
CSV_FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` through a temporary file and :func:`os.replace`.

    The temporary file sits in the same folder (a rename is atomic only
    within one file system), is flushed and fsynced before the rename, and
    is removed when writing fails. The new file gets the mode a plain
    ``open(path, "w")`` would give under the current umask.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def csv_filename(query: str) -> str:
    """Return the CSV file name of a query, with characters unsafe in file names replaced.

    >>> csv_filename("attack_paths")
    'attack_paths.csv'
    """
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", str(query)).lstrip(".") or "query"
    return f"{stem}.csv"


def _guard_formula(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(CSV_FORMULA_PREFIXES):
        return "'" + value
    return value


def render_csv(df: pd.DataFrame | None, *, formula_guard: bool = True) -> str:
    """Return one query's findings as CSV text, header first, rows in frame order.

    Path columns join their hops with ``" -> "`` and other list cells their
    items with ``";"``; missing values are empty fields. With
    ``formula_guard`` (the default), text cells starting with one of
    :data:`CSV_FORMULA_PREFIXES` get a leading ``'``.
    """
    if df is None or len(df.columns) == 0:
        return ""
    columns = [str(c) for c in df.columns]
    rows = []
    for row in df.itertuples(index=False, name=None):
        values = [csv_value(value, column) for column, value in zip(columns, row)]
        if formula_guard:
            values = [_guard_formula(value) for value in values]
        rows.append(values)
    table = pd.DataFrame(rows, columns=columns, dtype=object)
    buffer = io.StringIO()
    table.to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()


def markdown_escape(value: Any) -> str:
    """Return text safe inside a Markdown table cell or paragraph.

    Backslashes, pipes, backticks, asterisks and square brackets are
    backslash-escaped, ``&`` and ``<`` become HTML entities (so a
    ``<script>`` host name stays text in renderers that pass HTML through),
    and line breaks become ``<br>``.

    >>> markdown_escape("a|b <i>")
    'a\\\\|b &lt;i>'
    """
    text = value if isinstance(value, str) else str(value)
    text = text.replace("\\", "\\\\")
    for char in "|`*[]":
        text = text.replace(char, "\\" + char)
    # Without a literal "<" no HTML tag can start, so ">" stays as typed ("a -> b").
    text = text.replace("&", "&amp;").replace("<", "&lt;")
    return text.replace("\r\n", "\n").replace("\n", "<br>")


def _markdown_table(header: list[str], rows: Iterable[list[str]], right: Iterable[int] = ()) -> list[str]:
    right = set(right)
    lines = ["| " + " | ".join(markdown_escape(h) for h in header) + " |"]
    lines.append("| " + " | ".join("---:" if i in right else "---" for i in range(len(header))) + " |")
    for row in rows:
        lines.append("| " + " | ".join(markdown_escape(cell) for cell in row) + " |")
    return lines


def _markdown_header(context: ReportContext, generated_at: float | None) -> list[str]:
    counts = context.counts
    lines = [f"# iomt-twin report: {markdown_escape(context.site)}", ""]
    lines.append(f"- Run: {markdown_escape(context.run_id)}")
    lines.append(f"- Twin built: {iso_utc(context.built_at) or 'unknown'}")
    if generated_at is not None:
        lines.append(f"- Report generated: {iso_utc(generated_at)}")
    if context.workspace is not None:
        lines.append(f"- Workspace: {markdown_escape(context.workspace)}")
    lines.append(
        f"- Devices: {counts.devices}, segments: {counts.segments}, "
        f"communications: {counts.communications}, services: {counts.services}"
    )
    lines.append("")
    return lines


def _markdown_imports(context: ReportContext) -> list[str]:
    if not context.imports:
        if context.imports_note:
            return ["## Imported files", "", markdown_escape(context.imports_note), ""]
        return []
    lines = ["## Imported files", ""]
    rows = [
        [item.path, item.format, str(item.records_read), str(item.records_skipped), "yes" if item.capped else "no"]
        for item in context.imports
    ]
    lines += _markdown_table(["File", "Format", "Read", "Skipped", "Issues capped"], rows, right=(2, 3))
    lines.append("")
    for item in context.imports:
        for issue in item.issues[:MAX_ISSUES_SHOWN]:
            lines.append(f"- {markdown_escape(display_text(issue))}")
        if len(item.issues) > MAX_ISSUES_SHOWN:
            lines.append(f"- {len(item.issues) - MAX_ISSUES_SHOWN} more issues in {markdown_escape(item.path)}")
    if lines[-1] != "":
        lines.append("")
    return lines


def _markdown_query(name: str, df: pd.DataFrame | None, context: ReportContext) -> list[str]:
    lines = [f"## {markdown_escape(str(name))}", ""]
    description = context.descriptions.get(name)
    if description:
        lines += [markdown_escape(description), ""]
    limitation = context.limitations.get(name)
    if limitation:
        lines += [f"**What it cannot see:** {markdown_escape(limitation)}", ""]
    total = 0 if df is None else len(df)
    if total == 0 or df is None or len(df.columns) == 0:
        return lines + ["No findings.", ""]
    columns, shown = report_view(df, MAX_DOCUMENT_ROWS)
    rows = [
        [display_text(value, column) for column, value in zip(columns, row)]
        for row in shown.itertuples(index=False, name=None)
    ]
    lines += _markdown_table(columns, rows)
    if total > len(shown):
        lines += ["", f"{total - len(shown)} more rows are in the JSON and CSV files."]
    lines.append("")
    return lines


def render_markdown(
    findings: Mapping[str, pd.DataFrame],
    context: ReportContext,
    *,
    generated_at: float | None = None,
) -> str:
    """Return the Markdown report: header, summary table, imported files, one section per query.

    Each query table lists every column and at most
    :data:`~twin.report.htmlpage.MAX_DOCUMENT_ROWS` rows, most severe first.
    """
    lines = _markdown_header(context, generated_at)
    summary = summarise(findings)
    header = ["Query", "Total", *[s.capitalize() for s in SEVERITIES], UNRATED.capitalize()]
    rows = [
        [row["query"], *[str(row[c]) for c in ["total", *SEVERITIES, UNRATED]]]
        for row in summary.to_dict("records")
    ]
    lines += ["## Summary", ""]
    lines += _markdown_table(header, rows, right=range(1, len(header)))
    lines.append("")
    lines += _markdown_imports(context)
    for name in ordered_queries(findings):
        lines += _markdown_query(name, findings[name], context)
    lines.append(f"Generated by {GENERATOR}.")
    return "\n".join(lines) + "\n"


def write_report(
    findings: Mapping[str, pd.DataFrame],
    context: ReportContext,
    out_dir: str | Path,
    formats: Iterable[str] = FORMATS,
    *,
    generated_at: float | None = None,
) -> dict[str, Path]:
    """Write the report files into ``out_dir``, each one atomically.

    Parameters
    ----------
    findings : mapping of str to DataFrame
        Query name to its findings.
    context : ReportContext
        Site, run, counts and import summary.
    out_dir : str or Path
        Output folder, created when missing.
    formats : iterable of str
        Any of ``html``, ``md``, ``json`` and ``csv``.
    generated_at : float, optional
        Time stamp written into the report, epoch seconds; defaults to now.

    Returns
    -------
    dict of str to Path
        ``html``, ``md`` and ``json`` map to ``report.html``, ``report.md``
        and ``report.json``; CSV files are keyed ``csv:<query>`` and named
        ``<query>.csv``.

    Raises
    ------
    ValueError
        When a format is not one of :data:`FORMATS`.
    """
    requested = [str(f).lower() for f in formats]
    unknown = [f for f in requested if f not in FORMATS]
    if unknown:
        raise ValueError(
            f"invalid report format {', '.join(map(repr, unknown))}; expected any of {', '.join(FORMATS)}"
        )
    if generated_at is None:
        generated_at = time.time()
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    logger.info("writing report of run %s for site %s to %s (%s)", context.run_id, context.site, folder, ", ".join(requested))
    written: dict[str, Path] = {}
    if "json" in requested:
        text = render_json(findings, context, generated_at=generated_at)
        written["json"] = write_text_atomic(folder / f"{REPORT_BASENAME}.json", text)
    if "csv" in requested:
        for name in ordered_queries(findings):
            text = render_csv(findings[name])
            written[f"csv:{name}"] = write_text_atomic(folder / csv_filename(name), text)
    if "md" in requested:
        text = render_markdown(findings, context, generated_at=generated_at)
        written["md"] = write_text_atomic(folder / f"{REPORT_BASENAME}.md", text)
    if "html" in requested:
        text = render_html(findings, context, generated_at=generated_at)
        written["html"] = write_text_atomic(folder / f"{REPORT_BASENAME}.html", text)
    logger.info("wrote %d report files for run %s", len(written), context.run_id)
    return written
