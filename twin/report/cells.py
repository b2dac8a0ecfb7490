"""Cell values of findings DataFrames turned into JSON values and display text.

Findings cells hold strings, numbers, numpy scalars, missing values (None,
NaN, ``pd.NA``) and lists (``attack_paths.path``). Every output format goes
through the helpers here, so a value reads the same in the terminal, in
Markdown, in HTML and in CSV.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd

from twin.model.observation import escape_text
from twin.report.model import SEVERITIES, normalise_severity, severity_rank

__all__ = [
    "PATH_SEPARATOR",
    "CSV_LIST_SEPARATOR",
    "DISPLAY_LIST_SEPARATOR",
    "TIME_COLUMNS",
    "FLOAT_DECIMALS",
    "is_missing",
    "is_path_column",
    "iso_utc",
    "clean_text",
    "to_jsonable",
    "display_text",
    "csv_value",
    "sort_by_severity",
    "report_view",
]

# Joins the hops of a path column (path, path_hostnames) in every text output.
PATH_SEPARATOR = " -> "
# Joins the items of any other list cell in CSV files.
CSV_LIST_SEPARATOR = ";"
# Joins the items of any other list cell in the terminal, Markdown and HTML.
DISPLAY_LIST_SEPARATOR = ", "
# Columns holding epoch seconds, shown as ISO 8601 UTC in display text.
TIME_COLUMNS = frozenset({"first_seen", "last_seen", "seen_at", "built_at"})
# Decimal places of non-integral floats in display text (JSON and CSV keep full precision).
FLOAT_DECIMALS = 3


def is_missing(value: Any) -> bool:
    """Return True for None, NaN, NaT and ``pd.NA``; False for lists and arrays.

    >>> is_missing(float("nan")), is_missing(pd.NA), is_missing([None])
    (True, True, False)
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    if isinstance(value, (list, tuple, dict, set, np.ndarray)):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def is_path_column(column: str) -> bool:
    """Return True when a column contains the hops of a path (``path``, ``path_*``)."""
    return column == "path" or column.startswith("path_")


def iso_utc(epoch: Any) -> str | None:
    """Return epoch seconds as ISO 8601 UTC text ending in ``Z``, or None.

    >>> iso_utc(0)
    '1970-01-01T00:00:00Z'
    """
    if is_missing(epoch):
        return None
    try:
        moment = dt.datetime.fromtimestamp(float(epoch), tz=dt.timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def clean_text(value: Any) -> str:
    """Return ``value`` as text with control characters escaped, line breaks kept.

    NUL and other C0 controls become ``\\xNN`` (see
    :func:`twin.model.observation.escape_text`); ``\\r\\n`` becomes ``\\n``.
    """
    text = value if isinstance(value, str) else str(value)
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(escape_text(line) for line in lines)


def _as_list(value: Any) -> list | None:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return None


def to_jsonable(value: Any) -> Any:
    """Convert one cell to a value :func:`json.dumps` writes as strict JSON.

    Missing values and non-finite floats become None, numpy scalars and
    arrays become Python numbers and lists, lists stay lists (items
    converted), dict keys become text, bytes are escaped with
    :func:`~twin.model.observation.escape_text`, timestamps become ISO 8601
    text and anything else its ``str()``.

    >>> to_jsonable([np.int64(3), float("nan"), "a"])
    [3, None, 'a']
    """
    items = _as_list(value)
    if items is not None:
        return [to_jsonable(item) for item in items]
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if is_missing(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return escape_text(value)
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    return str(value)


def _number_text(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.{FLOAT_DECIMALS}f}".rstrip("0").rstrip(".")


def display_text(value: Any, column: str = "") -> str:
    """Return one cell as the text the terminal, Markdown and HTML show.

    Missing values give an empty string, path columns join their hops with
    :data:`PATH_SEPARATOR`, other lists with :data:`DISPLAY_LIST_SEPARATOR`,
    time columns show ISO 8601 UTC, floats are rounded to
    :data:`FLOAT_DECIMALS` places and control characters are escaped. The
    text is not escaped for any markup; each renderer does that.

    >>> display_text(["fw-1", "pacs-2"], "path")
    'fw-1 -> pacs-2'
    >>> display_text(0.66666, "share")
    '0.667'
    """
    items = _as_list(value)
    if items is not None:
        separator = PATH_SEPARATOR if is_path_column(column) else DISPLAY_LIST_SEPARATOR
        return separator.join(display_text(item) for item in items)
    if isinstance(value, dict):
        return clean_text(json.dumps(to_jsonable(value), ensure_ascii=False, sort_keys=True))
    if is_missing(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if column in TIME_COLUMNS and isinstance(value, (int, float, np.integer, np.floating)):
        return iso_utc(value) or _number_text(float(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return _number_text(float(value))
    if isinstance(value, (bytes, bytearray)):
        return escape_text(value)
    return clean_text(value)


def csv_value(value: Any, column: str = "") -> Any:
    """Return one cell as CSV writes it: scalars kept, lists and dicts as text.

    Path columns join their hops with :data:`PATH_SEPARATOR` and other
    lists their items with :data:`CSV_LIST_SEPARATOR`. Dicts become JSON and
    missing values None (an empty field). Text has its control characters
    escaped but keeps line breaks, because CSV quoting carries them.
    """
    items = _as_list(value)
    if items is not None:
        separator = PATH_SEPARATOR if is_path_column(column) else CSV_LIST_SEPARATOR
        return separator.join("" if is_missing(item) else clean_text(str(to_jsonable(item))) for item in items)
    if isinstance(value, dict):
        return clean_text(json.dumps(to_jsonable(value), ensure_ascii=False, sort_keys=True))
    if is_missing(value):
        return None
    if column in TIME_COLUMNS and isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        # Times read the same in every format: ISO 8601 UTC, as the HTML shows them.
        return iso_utc(value)
    if isinstance(value, (bool, np.bool_, int, np.integer, float, np.floating)):
        return to_jsonable(value)
    if isinstance(value, (bytes, bytearray)):
        return escape_text(value)
    return clean_text(value)


def sort_by_severity(df: pd.DataFrame) -> pd.DataFrame:
    """Return ``df`` with the most severe rows first, keeping the order within a severity.

    Rows with a missing or unknown severity sort first, because the severity
    gate treats them as critical.
    """
    if "severity" not in df.columns or len(df) == 0:
        return df
    unrated = len(SEVERITIES)

    def rank(value: Any) -> int:
        name = normalise_severity(value)
        return unrated if name is None else severity_rank(name)

    position = list(df.columns).index("severity")
    keys = [-rank(v) for v in df.iloc[:, position].tolist()]
    order = sorted(range(len(df)), key=keys.__getitem__)
    return df.iloc[order]



def report_view(df: pd.DataFrame, max_rows: int) -> tuple[list[str], pd.DataFrame]:
    """Return the column names and rows the Markdown and HTML tables show.

    Rows are the ``max_rows`` most severe, most severe first. Columns are
    selected by position, so repeated names stay apart: the first
    ``severity`` comes first, the first ``evidence`` last and the others
    keep the frame's order.
    """
    names = [str(c) for c in df.columns]
    head = [i for i, name in enumerate(names) if name == "severity"][:1]
    tail = [i for i, name in enumerate(names) if name == "evidence"][:1]
    middle = [i for i in range(len(names)) if i not in head and i not in tail]
    order = head + middle + tail
    shown = sort_by_severity(df).head(max(max_rows, 0)).iloc[:, order]
    return [names[i] for i in order], shown
