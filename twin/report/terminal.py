"""Findings as rich tables on a terminal.

:func:`render_terminal` prints a summary table and then, per query, its most
severe rows. Cell text is passed to rich as :class:`rich.text.Text`, so a
host name such as ``[bold]x`` is shown as typed, never read as markup.
"""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from twin.report.cells import display_text, sort_by_severity
from twin.report.model import (
    SEVERITIES,
    UNRATED,
    ReportContext,
    normalise_severity,
    ordered_queries,
    summarise,
)

__all__ = [
    "DEFAULT_TOP_ROWS",
    "MAX_COLUMNS",
    "MAX_CELL_CHARS",
    "KEY_COLUMNS",
    "SEVERITY_STYLES",
    "key_columns",
    "summary_table",
    "findings_table",
    "render_terminal",
]

# Rows shown per query, most severe first. The CLI's --top option overrides it.
DEFAULT_TOP_ROWS = 20
# Columns shown per query table, severity and evidence included.
MAX_COLUMNS = 7
# Cell text longer than this many characters is cut and ends in an ellipsis.
MAX_CELL_CHARS = 120

# Preferred columns per query, in display order. Columns a frame lacks are
# skipped, and the table is filled up to MAX_COLUMNS from the frame's other
# columns, so a query that renames a column still shows something useful.
KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "misplaced_devices": (
        "hostname", "ip", "device_class", "segment_id", "designated_classes", "device_id",
    ),
    "segment_violations": (
        "src_hostname", "dst_hostname", "proto", "dst_port", "rule", "src_id", "dst_id",
    ),
    "external_exposure": (
        "hostname", "direction", "external", "proto", "dst_port", "device_id",
    ),
    "flat_segments": (
        "segment_id", "zone", "medical_devices", "it_devices", "medical_classes",
    ),
    "attack_paths": ("mode", "path_hostnames", "path", "hops", "cost", "target_class"),
    "choke_points": ("kind", "item", "paths_through", "share", "recommendation"),
}

SEVERITY_STYLES: dict[str, str] = {
    "critical": "bold white on red",
    "high": "bold red",
    "medium": "yellow",
    "low": "cyan",
    "info": "dim",
    UNRATED: "bold magenta",
}


def key_columns(query: str, df: pd.DataFrame) -> list[str]:
    """Return the columns the terminal shows for one query's findings.

    ``severity`` comes first and ``evidence`` last when the frame has them.
    The preferred columns in :data:`KEY_COLUMNS` that the frame has fill the
    middle; ``path`` is dropped when ``path_hostnames`` is shown.
    """
    present = [str(c) for c in df.columns]
    middle = [c for c in KEY_COLUMNS.get(query, ()) if c in present]
    # path_hostnames is the readable form of path, so the table shows one of them.
    skipped = {"severity", "evidence"}
    if "path_hostnames" in middle:
        skipped.add("path")
    middle = [c for c in middle if c not in skipped]
    head = ["severity"] if "severity" in present else []
    tail = ["evidence"] if "evidence" in present else []
    room = MAX_COLUMNS - len(head) - len(tail)
    for column in present:
        if len(middle) >= room:
            break
        if column not in middle and column not in skipped:
            middle.append(column)
    return head + middle[:room] + tail


def _cell(value: Any, column: str) -> Text:
    text = display_text(value, column)
    if len(text) > MAX_CELL_CHARS:
        text = text[: MAX_CELL_CHARS - 1] + "\u2026"
    if column == "severity":
        name = normalise_severity(value) or UNRATED
        return Text(text or UNRATED, style=SEVERITY_STYLES[name])
    return Text(text)


def summary_table(findings: Mapping[str, pd.DataFrame]) -> Table:
    """Build the table of finding counts per query and severity."""
    summary = summarise(findings)
    table = Table(title="Findings by query and severity", title_justify="left")
    table.add_column("query")
    table.add_column("total", justify="right")
    for severity in SEVERITIES:
        table.add_column(severity, justify="right", header_style=SEVERITY_STYLES[severity])
    show_unrated = bool(summary[UNRATED].sum()) if len(summary) else False
    if show_unrated:
        table.add_column(UNRATED, justify="right", header_style=SEVERITY_STYLES[UNRATED])
    for row in summary.to_dict("records"):
        cells = [Text(str(row["query"])), Text(str(row["total"]))]
        for severity in SEVERITIES:
            count = row[severity]
            cells.append(Text(str(count), style=SEVERITY_STYLES[severity] if count else "dim"))
        if show_unrated:
            cells.append(Text(str(row[UNRATED])))
        table.add_row(*cells)
    return table


def findings_table(query: str, df: pd.DataFrame | None, top: int = DEFAULT_TOP_ROWS) -> Table:
    """Build the table of one query's ``top`` most severe findings.

    Parameters
    ----------
    query : str
        Query name, used in the title and to choose the columns.
    df : DataFrame or None
        The query's findings; None or an empty frame gives a table with one
        "no findings" row.
    top : int
        Maximum rows shown; the caption counts the rows left out.
    """
    total = 0 if df is None else len(df)
    title = f"{query} ({total} findings)"
    table = Table(title=title, title_justify="left", min_width=len(title))
    if df is None or total == 0:
        table.add_column("result")
        table.add_row(Text("no findings", style="dim"))
        return table
    columns = key_columns(query, df)
    for column in columns:
        table.add_column(column, overflow="fold")
    # The first column of each name, by position, because names may repeat or not be text.
    names = [str(c) for c in df.columns]
    positions = [names.index(column) for column in columns]
    shown = sort_by_severity(df).head(max(top, 0))
    for row in shown.itertuples(index=False, name=None):
        table.add_row(*[_cell(row[i], column) for i, column in zip(positions, columns)])
    if total > len(shown):
        table.caption = f"{total - len(shown)} more rows not shown; see the report files"
    return table


def render_terminal(
    findings: Mapping[str, pd.DataFrame],
    console: Console,
    context: ReportContext | None = None,
    *,
    top: int = DEFAULT_TOP_ROWS,
) -> None:
    """Print the summary table, then each query's most severe findings, to ``console``.

    Parameters
    ----------
    findings : mapping of str to DataFrame
        Query name to its findings.
    console : rich.console.Console
        Where to print; pass ``Console(record=True)`` to capture the output.
    context : ReportContext, optional
        When given, a header line names the site and run, and files with
        skipped records are listed after the findings.
    top : int
        Rows shown per query (default :data:`DEFAULT_TOP_ROWS`).
    """
    if context is not None:
        header = Text(f"Site {context.site}, run {context.run_id}", style="bold")
        console.print(header)
    console.print(summary_table(findings))
    for query in ordered_queries(findings):
        console.print(findings_table(query, findings[query], top))
    if context is None:
        return
    skipped = [item for item in context.imports if item.records_skipped]
    if not skipped:
        return
    table = Table(title="Imported files with skipped records", title_justify="left")
    for column in ("path", "format", "read", "skipped"):
        table.add_column(column, justify="right" if column in ("read", "skipped") else "left")
    for item in skipped:
        table.add_row(
            Text(display_text(item.path)),
            Text(display_text(item.format)),
            Text(str(item.records_read)),
            Text(str(item.records_skipped), style="yellow"),
        )
    console.print(table)
