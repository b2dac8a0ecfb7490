"""Severity scale, report context and the severity gate.

Every analysis returns one DataFrame per query with a ``severity`` column
(one of :data:`SEVERITIES`) and an ``evidence`` column. This module ranks
those severities, counts findings per query and decides the exit code that
lets a pipeline fail on findings at or above a chosen level.

>>> import pandas as pd
>>> findings = {"flat_segments": pd.DataFrame({"severity": ["high", "low"], "evidence": ["", ""]})}
>>> max_severity(findings)
'high'
>>> exit_code_for(findings, "critical"), exit_code_for(findings, "medium")
(0, 3)
"""

from __future__ import annotations

import re

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from twin.model.observation import ImportResult

__all__ = [
    "SEVERITIES",
    "QUERY_ORDER",
    "EXIT_OK",
    "EXIT_FINDINGS",
    "UNRATED",
    "severity_rank",
    "normalise_severity",
    "ImportSummary",
    "TwinCounts",
    "ReportContext",
    "ordered_queries",
    "summarise",
    "max_severity",
    "exit_code_for",
    "describe_queries",
]

logger = logging.getLogger(__name__)

# Most severe first. severity_rank() gives critical the highest number.
SEVERITIES: tuple[str, ...] = ("critical", "high", "medium", "low", "info")

# Queries of the catalogue in the order reports show them. Other query names
# in a findings mapping follow these, in the mapping's own order.
QUERY_ORDER: tuple[str, ...] = (
    "misplaced_devices",
    "segment_violations",
    "external_exposure",
    "flat_segments",
    "attack_paths",
    "choke_points",
)

# Exit code when no finding is at or above the --fail-on level (or no level is set).
EXIT_OK = 0
# Exit code when at least one finding is at or above the --fail-on level. Python
# exits with 1 on an uncaught error and Click (so Typer) with 2 on a usage
# error, so code 3 lets a pipeline tell a tripped gate from a failed run.
EXIT_FINDINGS = 3

# Summary column that counts rows whose severity is missing or not in SEVERITIES.
UNRATED = "unrated"

_RANKS = {name: len(SEVERITIES) - 1 - i for i, name in enumerate(SEVERITIES)}


def normalise_severity(value: Any) -> str | None:
    """Return ``value`` as one of :data:`SEVERITIES`, or None when it is not one.

    Case and surrounding white space are ignored; missing values (None, NaN,
    ``pd.NA``) give None.

    >>> normalise_severity(" High ")
    'high'
    >>> normalise_severity("severe") is None
    True
    """
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    return text if text in _RANKS else None


def severity_rank(severity: str) -> int:
    """Return the rank of a severity: 4 for critical down to 0 for info.

    Parameters
    ----------
    severity : str
        One of :data:`SEVERITIES`, case-insensitive.

    Raises
    ------
    ValueError
        When ``severity`` is not one of :data:`SEVERITIES`.

    >>> [severity_rank(s) for s in SEVERITIES]
    [4, 3, 2, 1, 0]
    """
    name = normalise_severity(severity)
    if name is None:
        raise ValueError(
            f"invalid severity {severity!r}; expected one of {', '.join(SEVERITIES)}"
        )
    return _RANKS[name]


@dataclass
class ImportSummary:
    """Import statistics of one file, as the report shows them.

    Attributes
    ----------
    path : str
        The imported file.
    format : str
        Detected format or importer name (``nmap``, ``zeek``, ``nfdump``, ...).
    records_read : int
        Records the importer understood.
    records_skipped : int
        Bad records the importer skipped.
    issues : list of str
        One message per skipped or repaired record, ``file:line: reason``.
    capped : bool
        True when the importer kept only the first issues, so ``issues`` is
        shorter than the number of problems in the file.
    """

    path: str
    format: str
    records_read: int = 0
    records_skipped: int = 0
    issues: list[str] = field(default_factory=list)
    capped: bool = False

    @classmethod
    def from_result(
        cls, result: ImportResult, format: str | None = None, capped: bool = False
    ) -> "ImportSummary":
        """Build the summary of one :class:`~twin.model.observation.ImportResult`.

        ``format`` defaults to the importer name in ``result.source``.
        """
        return cls(
            path=str(result.path),
            format=format or result.source,
            records_read=int(result.records_read),
            records_skipped=int(result.records_skipped),
            issues=[str(issue) for issue in result.issues],
            capped=capped,
        )


@dataclass
class TwinCounts:
    """Sizes of the twin the findings come from.

    ``by_device_class`` and ``by_segment`` map a device class or segment id
    to its number of devices.
    """

    devices: int = 0
    segments: int = 0
    communications: int = 0
    services: int = 0
    by_device_class: dict[str, int] = field(default_factory=dict)
    by_segment: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, twin) -> "TwinCounts":
        """Count the devices, segments, communications and services of a twin."""
        devices = twin.devices
        return cls(
            devices=len(devices),
            segments=len(twin.segments),
            communications=len(twin.communications),
            services=len(twin.services),
            by_device_class=devices["device_class"].value_counts().to_dict() if len(devices) else {},
            by_segment=devices["segment_id"].fillna("(none)").value_counts().to_dict() if len(devices) else {},
        )


@dataclass
class ReportContext:
    """Everything a report shows besides the findings.

    Attributes
    ----------
    site : str
        Site name from the site configuration.
    run_id : str
        Build run that produced the twin.
    built_at : float
        Build time, seconds since the Unix epoch (UTC).
    workspace : str or Path, optional
        Workspace file the twin was read from.
    counts : TwinCounts
        Devices, segments, communications and services in the twin.
    imports : list of ImportSummary
        One entry per imported file.
    descriptions : dict of str to str
        Query name to a one-line description (the first line of the
        analysis module's docstring).
    limitations : dict of str to str
        Query name to what the query cannot see.
    imports_note : str, optional
        Why ``imports`` is empty when the store keeps no per-file import
        records (the Neo4j store); reports show it in place of the table.
    """

    site: str
    run_id: str
    built_at: float
    workspace: str | Path | None = None
    counts: TwinCounts = field(default_factory=TwinCounts)
    imports: list[ImportSummary] = field(default_factory=list)
    descriptions: dict[str, str] = field(default_factory=dict)
    limitations: dict[str, str] = field(default_factory=dict)
    imports_note: str | None = None


def ordered_queries(findings: Mapping[str, Any]) -> list[str]:
    """Return the query names of ``findings``, catalogue queries first in catalogue order."""
    known = [name for name in QUERY_ORDER if name in findings]
    others = [name for name in findings if name not in QUERY_ORDER]
    return known + others


def _severity_values(name: str, df: pd.DataFrame | None) -> list[str | None]:
    """Return the normalised severity of every row; None for an unrated row."""
    if df is None or len(df) == 0:
        return []
    if "severity" not in df.columns:
        logger.warning(
            "findings of %s have no severity column; its %d rows count as unrated",
            name,
            len(df),
        )
        return [None] * len(df)
    # iloc on the first match, because df["severity"] is a frame when the column name repeats.
    position = list(df.columns).index("severity")
    values = [normalise_severity(v) for v in df.iloc[:, position].tolist()]
    unrated = sum(v is None for v in values)
    if unrated:
        logger.warning(
            "%d findings of %s have a severity outside %s and count as unrated",
            unrated,
            name,
            ", ".join(SEVERITIES),
        )
    return values


def summarise(findings: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Count findings per query and severity.

    Parameters
    ----------
    findings : mapping of str to DataFrame
        Query name to its findings.

    Returns
    -------
    DataFrame
        One row per query in :func:`ordered_queries` order, with the columns
        ``query``, ``total``, one column per severity (critical first) and
        ``unrated`` (rows whose severity is missing or unknown).
    """
    columns = ["query", "total", *SEVERITIES, UNRATED]
    rows = []
    for name in ordered_queries(findings):
        values = _severity_values(name, findings[name])
        row: dict[str, Any] = {"query": name, "total": len(values)}
        for severity in SEVERITIES:
            row[severity] = sum(v == severity for v in values)
        row[UNRATED] = sum(v is None for v in values)
        rows.append(row)
    summary = pd.DataFrame(rows, columns=columns)
    for column in columns[1:]:
        summary[column] = summary[column].astype("int64")
    return summary


def max_severity(findings: Mapping[str, pd.DataFrame]) -> str | None:
    """Return the highest severity of any finding, or None when there are none.

    Unrated rows are not counted here; :func:`exit_code_for` treats them as
    critical.
    """
    best: int | None = None
    for name in ordered_queries(findings):
        for value in _severity_values(name, findings[name]):
            if value is not None and (best is None or _RANKS[value] > best):
                best = _RANKS[value]
    return None if best is None else SEVERITIES[len(SEVERITIES) - 1 - best]


def exit_code_for(findings: Mapping[str, pd.DataFrame], fail_on: str | None) -> int:
    """Return the exit code of the severity gate.

    Parameters
    ----------
    findings : mapping of str to DataFrame
        Query name to its findings.
    fail_on : str or None
        Lowest severity that fails the run (case-insensitive), or None to
        never fail on findings.

    Returns
    -------
    int
        :data:`EXIT_OK` (0) when no finding is at or above ``fail_on``,
        :data:`EXIT_FINDINGS` (3) otherwise.

    Raises
    ------
    ValueError
        When ``fail_on`` is not one of :data:`SEVERITIES`; the message lists them.

    Notes
    -----
    A finding whose severity is missing or unknown counts as critical, so a
    fault in an analysis cannot let a pipeline pass silently.
    """
    if fail_on is None:
        return EXIT_OK
    threshold = normalise_severity(fail_on)
    if threshold is None:
        raise ValueError(
            f"invalid fail_on level {fail_on!r}; expected one of "
            f"{', '.join(SEVERITIES)} (or no level to never fail on findings)"
        )
    for name in ordered_queries(findings):
        for value in _severity_values(name, findings[name]):
            rank = _RANKS["critical"] if value is None else _RANKS[value]
            if rank >= _RANKS[threshold]:
                return EXIT_FINDINGS
    return EXIT_OK


def _plain_text(text: str) -> str:
    """Strip reStructuredText markup (``literal``, :mod:`role`) from docstring text for reports."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return " ".join(text.replace("``", "").split())


def _cannot_see_note(doc: str) -> str | None:
    """Return the paragraph of a docstring that states what a query cannot see."""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if "cannot see" not in line.lower():
            continue
        underline = lines[i + 1].strip() if i + 1 < len(lines) else ""
        is_heading = bool(underline) and set(underline) <= {"-", "="}
        start = i + 2 if is_heading else i
        paragraph = []
        for text in lines[start:]:
            if not text.strip():
                if paragraph:
                    break
                continue
            paragraph.append(text.strip())
        return " ".join(paragraph) or None
    return None


def describe_queries(names: Iterable[str] = QUERY_ORDER) -> tuple[dict[str, str], dict[str, str]]:
    """Read each query's description and limitation from its analysis module.

    For each name, the module ``twin.analysis.<name>`` is imported when it
    exists. The description is the first line of its docstring. The
    limitation is its ``CANNOT_SEE`` string when it defines one, otherwise
    the docstring paragraph that contains "cannot see" (or follows a heading
    that does).

    Returns
    -------
    tuple of dict
        ``(descriptions, limitations)``, each keyed by query name; a query
        without a module or note is left out.
    """
    descriptions: dict[str, str] = {}
    limitations: dict[str, str] = {}
    for name in names:
        try:
            module = importlib.import_module(f"twin.analysis.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"twin.analysis.{name}":
                raise
            logger.debug("no analysis module for query %s", name)
            continue
        doc = (module.__doc__ or "").strip()
        if doc:
            descriptions[name] = doc.splitlines()[0].strip()
        note = getattr(module, "CANNOT_SEE", None)
        if not isinstance(note, str) or not note.strip():
            note = _cannot_see_note(doc)
        if note:
            # Docstrings mark code with reStructuredText ``literals``; reports show plain text.
            limitations[name] = _plain_text(note)
        if name in descriptions:
            descriptions[name] = _plain_text(descriptions[name])
    return descriptions, limitations

