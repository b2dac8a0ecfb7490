"""Shared pieces of the app's pages: the open-workspace guard, finding tables, device links, selector text.

The pure helpers (:func:`filter_findings`, :func:`display_frame`,
:func:`parse_selector_text`, :func:`selector_text`, :func:`device_url`)
take and return plain values so tests can call them without Streamlit.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterable
from urllib.parse import quote

import numpy as np
import pandas as pd
import streamlit as st
from pydantic import ValidationError

from twin.app.data import AppContext, current_context
from twin.exceptions import ConfigError, DeviceNotFound
from twin.model.site import Selector
from twin.report.cells import TIME_COLUMNS, display_text, iso_utc
from twin.report.writers import render_csv

__all__ = [
    "MAX_TABLE_ROWS",
    "DEVICE_PAGE_PATH",
    "NO_WORKSPACE_MESSAGE",
    "SEVERITY_ORDER",
    "require_context",
    "show_error",
    "device_url",
    "display_frame",
    "filter_findings",
    "finding_table",
    "plural",
    "is_time_column",
    "with_endpoint_classes",
    "parse_selector_text",
    "parse_selector_lines",
    "selector_text",
    "show_table",
]

log = logging.getLogger(__name__)

# Rows a table draws in the browser (count, default 2,000). The CSV download contains every row.
MAX_TABLE_ROWS = 2000

# URL path of the device page, as registered with st.navigation.
DEVICE_PAGE_PATH = "device"

NO_WORKSPACE_MESSAGE = (
    "No snapshot to show. Build one with `twin build SITE_DIR -w WORKSPACE` "
    "(for example `twin build sample_networks/hospital`), then pick that workspace in the sidebar "
    "or start the app with `twin app -w WORKSPACE`."
)

SEVERITY_ORDER = ("critical", "high", "medium", "low", "info")

# Columns holding device ids, which get a link to the device page.
DEVICE_ID_COLUMNS = ("device_id", "src_id", "dst_id", "entry_id", "target_id")
# Columns holding segment ids and device classes, used by the filters. Class
# columns may hold one class or a list of classes (flat_segments' medical_classes).
SEGMENT_COLUMNS = ("segment_id", "src_segment", "dst_segment")
CLASS_COLUMNS = ("device_class", "target_class", "src_class", "dst_class", "medical_classes", "it_classes")
# Name suffixes of columns holding epoch seconds, shown as ISO 8601 UTC like the CSV downloads.
TIME_SUFFIXES = ("_seen", "_at")

# Selector keys accepted in text form, and the Selector field each sets.
_SELECTOR_KEYS = {
    "segment": "segment",
    "zone": "zone",
    "class": "device_class",
    "device_class": "device_class",
    "device": "device",
    "criticality": "criticality",
    "cidr": "cidr",
    "building": "building",
}


def require_context() -> AppContext:
    """Return the open snapshot, or show how to build one and stop the page."""
    ctx = current_context()
    if ctx is None:
        st.info(NO_WORKSPACE_MESSAGE)
        st.stop()
    return ctx


def show_error(what: str, exc: BaseException) -> None:
    """Show an error without a traceback, and log it: invalid user input without a traceback, anything else with one."""
    if isinstance(exc, (ConfigError, DeviceNotFound)):
        log.info("app: %s failed on invalid input: %s", what, exc)
    else:
        log.warning("app: %s failed: %s", what, exc, exc_info=exc)
    st.error(f"{what} failed: {exc}")


def device_url(device_id: str) -> str:
    """Return the relative URL of a device's page.

    >>> device_url("dev-1a")
    'device?device=dev-1a'
    """
    return f"{DEVICE_PAGE_PATH}?device={quote(str(device_id), safe='')}"


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """Return ``count`` and the noun in the matching number.

    >>> plural(1, "row"), plural(2, "row"), plural(0, "policy", "policies")
    ('1 row', '2 rows', '0 policies')
    """
    return f"{count} {noun if count == 1 else (plural_form or noun + 's')}"


def is_time_column(column: str) -> bool:
    """Return True for columns holding epoch seconds (first_seen, last_seen, seen_at, built_at, any ``*_seen`` or ``*_at``)."""
    name = str(column)
    return name in TIME_COLUMNS or name.endswith(TIME_SUFFIXES)


def display_frame(frame: pd.DataFrame, max_rows: int = MAX_TABLE_ROWS) -> pd.DataFrame:
    """Return the first ``max_rows`` rows with list, dict and bytes cells turned into escaped text.

    Numeric and boolean columns are kept as they are so the browser sorts
    them as numbers, except epoch-second columns (see :func:`is_time_column`),
    which become ISO 8601 UTC text as in the CSV downloads.
    """
    head = frame.head(max_rows)
    out = {}
    for column in head.columns:
        series = head[column]
        if is_time_column(column) and pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            out[column] = [iso_utc(value) for value in series]
        elif pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            out[column] = series.to_numpy()
        else:
            out[column] = [display_text(value, str(column)) for value in series]
    return pd.DataFrame(out, index=range(len(head)), columns=list(head.columns))


def with_endpoint_classes(frame: pd.DataFrame, view: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with ``src_class`` and ``dst_class`` added from the device view, when it has src_id or dst_id.

    Endpoints that are no device (External addresses) get no class. Columns already present are kept.
    """
    class_of = dict(zip(view["device_id"].astype(str), view["device_class"]))
    added = {}
    for side in ("src", "dst"):
        if f"{side}_id" in frame.columns and f"{side}_class" not in frame.columns:
            added[f"{side}_class"] = [class_of.get(str(v)) if isinstance(v, str) else None for v in frame[f"{side}_id"]]
    if not added:
        return frame
    return frame.assign(**{name: pd.Series(values, index=frame.index, dtype=object) for name, values in added.items()})


def _cell_values(value: Any) -> list[str]:
    """Return the values of one cell as text: the items of a list cell, else the cell itself."""
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        return [str(v) for v in value]
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return []
    return [str(value)]


def _column_values(frame: pd.DataFrame, columns: Iterable[str]) -> list[str]:
    values: set[str] = set()
    for column in columns:
        if column in frame.columns:
            for cell in frame[column]:
                values.update(_cell_values(cell))
    return sorted(values)


def _hits(series: pd.Series, wanted: set[str]) -> np.ndarray:
    """Return True per cell holding one of ``wanted`` (any item of a list cell counts)."""
    return np.fromiter((not wanted.isdisjoint(_cell_values(v)) for v in series), dtype=bool, count=len(series))


def filter_findings(
    frame: pd.DataFrame,
    *,
    severities: Iterable[str] = (),
    segments: Iterable[str] = (),
    classes: Iterable[str] = (),
    text: str = "",
) -> pd.DataFrame:
    """Return the findings that pass every given filter (an empty filter passes all).

    Parameters
    ----------
    frame : DataFrame
        Findings of one query.
    severities : iterable of str
        Keep rows whose ``severity`` is one of these.
    segments : iterable of str
        Keep rows with one of these in ``segment_id``, ``src_segment`` or ``dst_segment``.
    classes : iterable of str
        Keep rows with one of these in a class column: ``device_class``,
        ``target_class``, ``src_class``, ``dst_class`` or the class lists
        ``medical_classes`` and ``it_classes``.
    text : str
        Keep rows where any cell's displayed text contains it (case-insensitive).

    Examples
    --------
    >>> f = pd.DataFrame({"severity": ["high", "low"], "segment_id": ["a", "b"], "evidence": ["x", "y"]})
    >>> filter_findings(f, severities=["high"])["segment_id"].tolist()
    ['a']
    """
    mask = np.ones(len(frame), dtype=bool)
    severities, segments, classes = set(severities), set(segments), set(classes)
    if severities and "severity" in frame.columns:
        mask &= frame["severity"].astype(str).isin(severities).to_numpy()
    if segments:
        hit = np.zeros(len(frame), dtype=bool)
        for column in SEGMENT_COLUMNS:
            if column in frame.columns:
                hit |= frame[column].astype(object).isin(segments).to_numpy()
        mask &= hit
    if classes:
        hit = np.zeros(len(frame), dtype=bool)
        for column in CLASS_COLUMNS:
            if column in frame.columns:
                hit |= _hits(frame[column], classes)
        mask &= hit
    needle = text.strip().lower()
    if needle:
        hit = np.zeros(len(frame), dtype=bool)
        for column in frame.columns:
            cells = [display_text(value, str(column)).lower() for value in frame[column]]
            hit |= np.fromiter((needle in cell for cell in cells), dtype=bool, count=len(cells))
        mask &= hit
    return frame[mask]


def finding_table(
    frame: pd.DataFrame,
    *,
    key: str,
    csv_name: str,
    filters: bool = True,
    noun: str = "finding",
    extra_columns: Iterable[str] = (),
) -> pd.DataFrame:
    """Draw one findings table with filter widgets, a row count, device links and a CSV download.

    ``noun`` names what a row is in the count ("12 of 40 findings").
    ``extra_columns`` were added for the filters and the table only, such as
    the endpoint classes of :func:`with_endpoint_classes`. The CSV download
    leaves them out, so it has the finding's own columns as ``twin report``
    writes them. Returns the filtered rows (all of them, not only those drawn).
    """
    shown = frame
    if filters and not frame.empty:
        cols = st.columns(4)
        severities = cols[0].multiselect(
            "Severity",
            [s for s in SEVERITY_ORDER if "severity" in frame.columns and (frame["severity"] == s).any()],
            key=f"{key}-severity",
        )
        segments = cols[1].multiselect("Segment", _column_values(frame, SEGMENT_COLUMNS), key=f"{key}-segment")
        classes = cols[2].multiselect("Device class", _column_values(frame, CLASS_COLUMNS), key=f"{key}-class")
        text = cols[3].text_input("Text contains", key=f"{key}-text")
        shown = filter_findings(frame, severities=severities, segments=segments, classes=classes, text=text)
    st.caption(f"{len(shown)} of {plural(len(frame), noun)}" + (f"; the first {MAX_TABLE_ROWS} are drawn" if len(shown) > MAX_TABLE_ROWS else ""))
    if shown.empty:
        return shown
    table = display_frame(shown)
    config: dict[str, Any] = {}
    for column in DEVICE_ID_COLUMNS:
        if column in shown.columns:
            ids = shown[column].head(MAX_TABLE_ROWS).astype(object)
            # Only device ids get a link; External addresses stay plain text.
            table[column] = [device_url(v) if isinstance(v, str) and v.startswith("dev-") else None for v in ids]
            config[column] = st.column_config.LinkColumn(column, display_text=r"device=(.*)$")
    show_table(table, hide_index=True, column_config=config, key=f"{key}-table")
    st.download_button(
        f"Download CSV ({plural(len(shown), 'row')})",
        render_csv(shown.drop(columns=[c for c in extra_columns if c in shown.columns])),
        file_name=csv_name,
        mime="text/csv",
        key=f"{key}-csv",
    )
    return shown


def show_table(frame: pd.DataFrame, *, key: str, **kwargs) -> Any:
    """Draw a read-only table whose alternative text is ``Table <key>``, so tests and screen readers can find it."""
    return st.dataframe(frame, key=key, alt=f"Table {key}", **kwargs)


def parse_selector_text(text: str) -> Selector:
    """Parse one selector written as text.

    Accepted forms: ``any``, ``internet``, ``KEY:VALUE`` (KEY one of
    segment, zone, class, device_class, device, criticality, cidr,
    building; ``|`` separates alternatives), several of those joined with
    ``&`` (as :meth:`Selector.describe` writes them), or a bare device id,
    IP address or host name, read as ``device:TEXT``.

    Raises
    ------
    ConfigError
        When a key or value is invalid; the message names the text and the valid keys.

    Examples
    --------
    >>> parse_selector_text("zone:guest & class:workstation|printer").device_class
    ['workstation', 'printer']
    >>> parse_selector_text("10.16.4.10").device
    ['10.16.4.10']
    """
    source = str(text).strip()
    if not source:
        raise ConfigError("empty selector; write any, internet, KEY:VALUE or a device id, IP address or host name")
    fields: dict[str, Any] = {}
    for part in (p.strip() for p in source.split("&")):
        if part in ("any", "*"):
            fields["any"] = True
            continue
        if part == "internet":
            fields["internet"] = True
            continue
        key, sep, value = part.partition(":")
        key = key.strip().lower()
        if sep and key in _SELECTOR_KEYS:
            values = [v.strip() for v in value.split("|") if v.strip()]
            fields.setdefault(_SELECTOR_KEYS[key], []).extend(values)
        elif sep and re.fullmatch(r"[a-z_]+", key) and not _looks_like_address(part):
            raise ConfigError(
                f"invalid selector {source!r}: unknown key {key!r}; expected any, internet, or KEY:VALUE with KEY one of "
                + ", ".join(sorted(_SELECTOR_KEYS))
            )
        else:
            fields.setdefault("device", []).append(part)
    try:
        return Selector.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(error["msg"].removeprefix("Value error, ") for error in exc.errors())
        raise ConfigError(f"invalid selector {source!r}: {problems}") from None


def _looks_like_address(text: str) -> bool:
    """Return True for MAC or IPv6 text, whose colons are not a KEY:VALUE separator."""
    return bool(re.fullmatch(r"[0-9A-Fa-f:.]+(/\d+)?", text)) and text.count(":") >= 2


def parse_selector_lines(text: str) -> tuple[list[str], list[str]]:
    """Parse one selector per line (or comma-separated) and return (selectors in shorthand form, errors).

    Each error names the line number and the selector text.
    """
    selectors: list[str] = []
    errors: list[str] = []
    items = [item.strip() for line in str(text).splitlines() for item in line.split(",")]
    for number, item in enumerate((i for i in items if i), start=1):
        try:
            selectors.append(selector_text(parse_selector_text(item)))
        except ConfigError as exc:
            errors.append(f"selector {number}: {exc}")
    return selectors, errors


def selector_text(selector: Selector | dict | str) -> str:
    """Return a selector in the text form :func:`parse_selector_text` reads back.

    >>> selector_text({"segment": ["a-it", "b-it"], "zone": "it"})
    'segment:a-it|b-it & zone:it'
    """
    return Selector.parse(selector).describe().replace("device_class:", "class:")
