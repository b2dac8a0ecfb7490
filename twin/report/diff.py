"""Changes between two snapshots: findings new, resolved and still open, and device changes.

A finding is identified across runs by the columns in :data:`FINDING_KEYS`
(a segment violation is the same finding while its source, destination,
protocol and port stay the same, whatever its byte counts). Devices are
matched by ``device_id``, which the resolver derives from the strongest
identifier (MAC, then serial, then IP, then host name), so a device that
moves to another address keeps its id as long as its MAC is known.

:func:`record_findings` stores the keys of each run's findings in the
workspace (table ``run_findings``), so how long a finding has been open and
the trend over the last runs need no recomputation.

>>> import pandas as pd
>>> old = {"flat_segments": pd.DataFrame({"segment_id": ["a", "b"], "severity": ["high", "high"]})}
>>> new = {"flat_segments": pd.DataFrame({"segment_id": ["b", "c"], "severity": ["high", "high"]})}
>>> added, resolved, still_open = diff_findings(old, new)
>>> added["flat_segments"]["segment_id"].tolist(), resolved["flat_segments"]["segment_id"].tolist()
(['c'], ['a'])
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np
import pandas as pd

from twin.exceptions import SnapshotNotFound
from twin.report.cells import is_missing
from twin.report.model import QUERY_ORDER, normalise_severity, ordered_queries, severity_rank

if TYPE_CHECKING:
    from twin.api import Workspace
    from twin.graph.embedded import EmbeddedStore, RunInfo

__all__ = [
    "FINDING_KEYS",
    "DEVICE_COLUMNS",
    "CHANGED_FIELDS",
    "CHANGED_COLUMNS",
    "DEFAULT_TREND_RUNS",
    "MAX_HISTORY_RUNS",
    "ChangeSet",
    "finding_key",
    "finding_keys",
    "diff_findings",
    "diff_devices",
    "annotate_open_since",
    "record_findings",
    "recorded_findings",
    "compute_changes",
]

logger = logging.getLogger(__name__)

# Identity columns of a finding per query: two findings with equal values in
# these columns are the same finding in two runs. Queries not listed here
# are identified by every column except severity and evidence.
FINDING_KEYS: dict[str, tuple[str, ...]] = {
    "misplaced_devices": ("device_id", "segment_id", "device_class"),
    "segment_violations": ("src_id", "dst_id", "proto", "dst_port"),
    "external_exposure": ("device_id", "direction", "external", "proto", "dst_port"),
    "flat_segments": ("segment_id",),
    "attack_paths": ("mode", "entry_id", "target_id"),
    "choke_points": ("kind", "item"),
}

# Columns of devices_new and devices_gone; ``ip`` is the primary IP (the first of ``ips``).
DEVICE_COLUMNS: tuple[str, ...] = (
    "device_id",
    "hostname",
    "ip",
    "device_class",
    "segment_id",
    "vendor",
    "model",
    "criticality",
)
# Device fields whose change is reported in devices_changed, in report order.
CHANGED_FIELDS: tuple[str, ...] = ("segment_id", "device_class")
# Columns of devices_changed; hostname, ip and segment_id are the later twin's values.
CHANGED_COLUMNS: tuple[str, ...] = ("device_id", "hostname", "ip", "segment_id", "field", "old", "new")

# Default number of runs in the trend table (compute_changes trend_runs).
DEFAULT_TREND_RUNS = 8
# Maximum runs that compute_changes reads back to find when an open finding
# first appeared. Older runs are not read, so open_since is at most this many
# runs old. Each run without recorded findings costs one catalogue run.
MAX_HISTORY_RUNS = 100

SECONDS_PER_DAY = 86_400.0

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2})?$")
_IGNORED_KEY_COLUMNS = frozenset({"severity", "evidence"})


# -- finding identity -------------------------------------------------------


def _key_value(value: Any) -> Any:
    """Return a cell as a JSON value that compares equal across runs (3 == 3.0, NaN == None)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_key_value(item) for item in value]
    if is_missing(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return int(number) if number.is_integer() else number
    return str(value)


def _key_columns(name: str, frame: pd.DataFrame) -> list[str]:
    declared = FINDING_KEYS.get(name)
    if declared is None:
        return [str(c) for c in frame.columns if str(c) not in _IGNORED_KEY_COLUMNS]
    return list(declared)


def finding_key(name: str, row: Mapping[str, Any]) -> str:
    """Return the identity of one finding of query ``name`` as compact JSON text.

    The text is the list of the row's :data:`FINDING_KEYS` values; a column
    missing from the row counts as None.

    >>> finding_key("segment_violations", {"src_id": "a", "dst_id": "b", "proto": "tcp", "dst_port": 23.0})
    '["a","b","tcp",23]'
    """
    columns = FINDING_KEYS.get(name) or [c for c in row if c not in _IGNORED_KEY_COLUMNS]
    values = [_key_value(row.get(column)) for column in columns]
    return json.dumps(values, separators=(",", ":"), ensure_ascii=False)


def _frame_keys(name: str, frame: pd.DataFrame | None) -> list[str]:
    if frame is None or len(frame) == 0:
        return []
    columns = _key_columns(name, frame)
    present = [c for c in columns if c in frame.columns]
    positions = [list(frame.columns).index(c) for c in present]
    keys = []
    for row in frame.itertuples(index=False, name=None):
        values = dict.fromkeys(columns)
        values.update({c: row[p] for c, p in zip(present, positions)})
        keys.append(json.dumps([_key_value(values[c]) for c in columns], separators=(",", ":"), ensure_ascii=False))
    return keys


def finding_keys(name: str, frame: pd.DataFrame | None) -> set[str]:
    """Return the set of finding keys (see :func:`finding_key`) of one query's findings."""
    return set(_frame_keys(name, frame))


# -- findings ---------------------------------------------------------------


def _empty_like(frame: pd.DataFrame | None) -> pd.DataFrame:
    if frame is None:
        return pd.DataFrame()
    return frame.iloc[0:0].copy()


def diff_findings(
    old: Mapping[str, pd.DataFrame], new: Mapping[str, pd.DataFrame]
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Split two runs' findings into new, resolved and still open, per query.

    Parameters
    ----------
    old, new : mapping of str to DataFrame
        Query name to findings of the earlier and of the later run.

    Returns
    -------
    tuple of dict
        ``(new, resolved, open)``, each keyed by every query in either
        input (catalogue order). ``new`` and ``open`` hold rows of the later
        frames, ``resolved`` rows of the earlier ones; row order and index
        are kept. ``open`` gains the columns ``open_since`` (the earlier
        run's findings are the only history here, so it is NaN until
        :func:`annotate_open_since` fills it) and ``open_days``.

    Notes
    -----
    O(rows) per query. Identity is :data:`FINDING_KEYS`, so a finding whose
    counts or severity changed is still open, not resolved and new.
    """
    names = ordered_queries({**dict.fromkeys(old), **dict.fromkeys(new)})
    added: dict[str, pd.DataFrame] = {}
    resolved: dict[str, pd.DataFrame] = {}
    still_open: dict[str, pd.DataFrame] = {}
    for name in names:
        old_frame = old.get(name)
        new_frame = new.get(name)
        old_keys = _frame_keys(name, old_frame)
        new_keys = _frame_keys(name, new_frame)
        old_set, new_set = set(old_keys), set(new_keys)
        if new_frame is None:
            added[name] = _empty_like(old_frame)
            opened = _empty_like(old_frame)
        else:
            added[name] = new_frame[[k not in old_set for k in new_keys]]
            opened = new_frame[[k in old_set for k in new_keys]].copy()
        resolved[name] = _empty_like(new_frame) if old_frame is None else old_frame[[k not in new_set for k in old_keys]]
        opened["open_since"] = pd.Series(np.nan, index=opened.index, dtype="float64")
        opened["open_days"] = pd.Series(np.nan, index=opened.index, dtype="float64")
        still_open[name] = opened
    return added, resolved, still_open


def annotate_open_since(
    open_findings: Mapping[str, pd.DataFrame],
    history: list[tuple[float, Mapping[str, set[str]]]],
    *,
    now: float | None = None,
) -> dict[str, pd.DataFrame]:
    """Fill ``open_since`` and ``open_days`` of still-open findings from the recorded history.

    Parameters
    ----------
    open_findings : mapping of str to DataFrame
        The ``open`` frames of :func:`diff_findings`.
    history : list of (float, mapping of str to set of str)
        One entry per run, oldest first, ending with the later run of the
        comparison: the run's finish time (epoch seconds) and its finding
        keys per query (:func:`finding_keys`).
    now : float, optional
        Time ``open_days`` counts to, epoch seconds; defaults to the finish
        time of the last run in ``history``.

    Returns
    -------
    dict of str to DataFrame
        Copies of the frames with ``open_since`` set to the finish time of
        the earliest run of the unbroken stretch of runs, ending with the
        last one, that contain the finding. A finding that was resolved and
        came back counts from its return.
    """
    if not history:
        return {name: frame.copy() for name, frame in open_findings.items()}
    if now is None:
        now = history[-1][0]
    out: dict[str, pd.DataFrame] = {}
    for name, frame in open_findings.items():
        frame = frame.copy()
        since = []
        for key in _frame_keys(name, frame.drop(columns=["open_since", "open_days"], errors="ignore")):
            first = None
            for finished_at, keys in reversed(history):
                if key not in keys.get(name, ()):
                    break
                first = finished_at
            since.append(np.nan if first is None else float(first))
        frame["open_since"] = pd.Series(since, index=frame.index, dtype="float64")
        frame["open_days"] = (float(now) - frame["open_since"]) / SECONDS_PER_DAY
        out[name] = frame
    return out


# -- devices ----------------------------------------------------------------


def _primary_ip(ips: Any) -> str | None:
    if isinstance(ips, np.ndarray):
        ips = ips.tolist()
    if isinstance(ips, (list, tuple)):
        return str(ips[0]) if ips else None
    return None if is_missing(ips) else str(ips)


def _device_view(devices: pd.DataFrame | None) -> pd.DataFrame:
    """Return the device rows reduced to :data:`DEVICE_COLUMNS`, one row per device_id."""
    if devices is None or len(devices) == 0 or "device_id" not in devices.columns:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in DEVICE_COLUMNS})
    data = {}
    for column in DEVICE_COLUMNS:
        if column == "ip":
            source = devices["ips"] if "ips" in devices.columns else pd.Series([None] * len(devices))
            data[column] = [_primary_ip(v) for v in source.tolist()]
        elif column in devices.columns:
            data[column] = [None if is_missing(v) else v for v in devices[column].tolist()]
        else:
            data[column] = [None] * len(devices)
    view = pd.DataFrame(data, columns=list(DEVICE_COLUMNS), dtype=object)
    return view.drop_duplicates("device_id", keep="first").reset_index(drop=True)


def diff_devices(
    old_devices: pd.DataFrame, new_devices: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Compare two device tables by ``device_id``.

    Parameters
    ----------
    old_devices, new_devices : DataFrame
        ``devices`` tables of the earlier and the later twin.

    Returns
    -------
    tuple of DataFrame
        ``(new, gone, changed)``. ``new`` and ``gone`` have the columns
        :data:`DEVICE_COLUMNS` (``ip`` is the primary IP), sorted by
        device_id. ``changed`` has one row per device and changed field in
        :data:`CHANGED_FIELDS`, with the columns :data:`CHANGED_COLUMNS`:
        ``device_id``, then ``hostname``, ``ip`` and ``segment_id`` of the
        later twin, then ``field``, ``old`` and ``new``.
    """
    old = _device_view(old_devices).set_index("device_id", drop=False)
    new = _device_view(new_devices).set_index("device_id", drop=False)
    added = new.loc[~new.index.isin(old.index)].sort_index().reset_index(drop=True)
    gone = old.loc[~old.index.isin(new.index)].sort_index().reset_index(drop=True)
    rows = []
    for device_id in sorted(new.index.intersection(old.index)):
        before, after = old.loc[device_id], new.loc[device_id]
        for column in CHANGED_FIELDS:
            if _key_value(before[column]) != _key_value(after[column]):
                rows.append(
                    (device_id, after["hostname"], after["ip"], after["segment_id"], column, before[column], after[column])
                )
    changed = pd.DataFrame(rows, columns=list(CHANGED_COLUMNS), dtype=object)
    return added, gone, changed


# -- the change set ---------------------------------------------------------


@dataclass
class ChangeSet:
    """Changes between two snapshots of one site.

    Attributes
    ----------
    site : str
        Site name of the later snapshot.
    old_run_id, new_run_id : str
        The compared runs.
    old_built_at, new_built_at : float
        Their finish times, epoch seconds.
    findings_new : dict of str to DataFrame
        Findings of the later run that the earlier run did not have.
    findings_resolved : dict of str to DataFrame
        Findings of the earlier run that the later run no longer has.
    findings_open : dict of str to DataFrame
        Findings of the later run present in both, with ``open_since``
        (epoch seconds) and ``open_days``.
    devices_new, devices_gone, devices_changed : DataFrame
        See :func:`diff_devices`.
    trend : DataFrame
        One row per run, oldest first: ``run_id``, ``finished_at`` (epoch
        seconds) and one finding count column per query.
    """

    site: str
    old_run_id: str
    old_built_at: float
    new_run_id: str
    new_built_at: float
    findings_new: dict[str, pd.DataFrame] = field(default_factory=dict)
    findings_resolved: dict[str, pd.DataFrame] = field(default_factory=dict)
    findings_open: dict[str, pd.DataFrame] = field(default_factory=dict)
    devices_new: pd.DataFrame = field(default_factory=lambda: _device_view(None))
    devices_gone: pd.DataFrame = field(default_factory=lambda: _device_view(None))
    devices_changed: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(CHANGED_COLUMNS)))
    trend: pd.DataFrame = field(default_factory=pd.DataFrame)

    def is_empty(self) -> bool:
        """Return True when no finding appeared or was resolved and no device appeared, left or changed."""
        counts = self.summary()
        return not (
            counts["findings_new_total"]
            or counts["findings_resolved_total"]
            or counts["devices_new"]
            or counts["devices_gone"]
            or counts["devices_changed"]
        )

    def summary(self) -> dict[str, Any]:
        """Return the counts per section, as plain JSON values.

        Keys: ``old_run_id``, ``new_run_id``, ``findings_new``,
        ``findings_resolved`` and ``findings_open`` (dicts of query to
        count), their ``*_total`` sums, ``devices_new``, ``devices_gone``,
        ``devices_changed`` (devices with any change), ``segment_changes``,
        ``class_changes``, ``attack_paths_opened`` and ``attack_paths_cut``.
        """
        def counts(frames: Mapping[str, pd.DataFrame]) -> dict[str, int]:
            return {name: int(len(frames[name])) for name in ordered_queries(frames)}

        changed = self.devices_changed
        fields = changed["field"].tolist() if len(changed) else []
        result: dict[str, Any] = {
            "old_run_id": self.old_run_id,
            "new_run_id": self.new_run_id,
            "findings_new": counts(self.findings_new),
            "findings_resolved": counts(self.findings_resolved),
            "findings_open": counts(self.findings_open),
        }
        for section in ("findings_new", "findings_resolved", "findings_open"):
            result[f"{section}_total"] = sum(result[section].values())
        result.update(
            devices_new=int(len(self.devices_new)),
            devices_gone=int(len(self.devices_gone)),
            devices_changed=int(changed["device_id"].nunique()) if len(changed) else 0,
            segment_changes=fields.count("segment_id"),
            class_changes=fields.count("device_class"),
            attack_paths_opened=int(len(self.findings_new.get("attack_paths", ()))),
            attack_paths_cut=int(len(self.findings_resolved.get("attack_paths", ()))),
        )
        return result

    def summary_line(self) -> str:
        """Return the counts as one sentence, such as ``3 new findings, 1 resolved, 2 devices new, 1 gone, 1 changed segment``."""
        counts = self.summary()
        parts = [
            _plural(counts["findings_new_total"], "new finding", "new findings"),
            f"{counts['findings_resolved_total']} resolved",
            _plural(counts["devices_new"], "device new", "devices new"),
            f"{counts['devices_gone']} gone",
            _plural(counts["segment_changes"], "changed segment", "changed segments"),
        ]
        if counts["class_changes"]:
            parts.append(_plural(counts["class_changes"], "changed device class", "changed device classes"))
        return ", ".join(parts)


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


# -- recorded findings ------------------------------------------------------

_CREATE_FINDINGS = """CREATE TABLE IF NOT EXISTS run_findings (
    run_id TEXT, query TEXT, key_json TEXT, severity TEXT, PRIMARY KEY (run_id, query, key_json))"""
# One row per (run, query) that was recorded, so a query with no findings
# reads as "recorded, zero" instead of "never computed".
_CREATE_RECORDED = """CREATE TABLE IF NOT EXISTS run_findings_queries (
    run_id TEXT, query TEXT, findings INTEGER, recorded_at REAL, PRIMARY KEY (run_id, query))"""


def _tables_exist(store: "EmbeddedStore") -> bool:
    names = {row[0] for row in store.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    return {"run_findings", "run_findings_queries"} <= names


def record_findings(store: "EmbeddedStore", run_id: str, findings: Mapping[str, pd.DataFrame]) -> None:
    """Store the keys and severities of one run's findings in the workspace.

    Writes (run_id, query, key_json, severity) rows into the table
    ``run_findings`` and one row per query into ``run_findings_queries``,
    in one transaction. Recording a run again replaces its rows for the
    given queries, so the call is idempotent. Two findings with the same key
    are stored once, with the highest severity.

    Parameters
    ----------
    store : EmbeddedStore
        The open workspace.
    run_id : str
        Run the findings belong to.
    findings : mapping of str to DataFrame
        Query name to findings.
    """
    rows = []
    queries = []
    for name in ordered_queries(findings):
        frame = findings[name]
        keys = _frame_keys(name, frame)
        severities = (
            [normalise_severity(v) for v in frame["severity"].tolist()]
            if frame is not None and "severity" in frame.columns
            else [None] * len(keys)
        )
        best: dict[str, str | None] = {}
        for key, severity in zip(keys, severities):
            if key not in best or _severity_order(severity) > _severity_order(best[key]):
                best[key] = severity
        rows.extend((run_id, name, key, severity) for key, severity in best.items())
        queries.append((run_id, name, len(best), time.time()))
    with store.transaction() as cur:
        cur.execute(_CREATE_FINDINGS)
        cur.execute(_CREATE_RECORDED)
        for _, name, _, _ in queries:
            cur.execute("DELETE FROM run_findings WHERE run_id=? AND query=?", (run_id, name))
        cur.executemany("INSERT INTO run_findings VALUES (?,?,?,?)", rows)
        cur.executemany("INSERT OR REPLACE INTO run_findings_queries VALUES (?,?,?,?)", queries)
    logger.info("run %s: recorded %d finding keys of %d queries", run_id, len(rows), len(queries))


def _severity_order(severity: str | None) -> int:
    return -1 if severity is None else severity_rank(severity)


def recorded_findings(store: "EmbeddedStore", run_id: str) -> dict[str, set[str]] | None:
    """Return the recorded finding keys of a run per query, or None when the run was never recorded."""
    if not _tables_exist(store):
        return None
    queries = [row[0] for row in store.conn.execute("SELECT query FROM run_findings_queries WHERE run_id=?", (run_id,))]
    if not queries:
        return None
    keys: dict[str, set[str]] = {name: set() for name in queries}
    for name, key in store.conn.execute("SELECT query, key_json FROM run_findings WHERE run_id=?", (run_id,)):
        keys.setdefault(name, set()).add(key)
    return keys


# -- comparing snapshots ----------------------------------------------------


def _date_cutoff(text: str) -> float:
    """Return the first epoch second after an ISO date (whole day) or date and minute, in UTC."""
    if "T" in text:
        moment = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M") + dt.timedelta(minutes=1)
    else:
        moment = dt.datetime.strptime(text, "%Y-%m-%d") + dt.timedelta(days=1)
    return moment.replace(tzinfo=dt.timezone.utc).timestamp()


def _resolve_since(store: "EmbeddedStore", runs: list["RunInfo"], since: str) -> "RunInfo":
    """Return the earlier run to compare the latest one (``runs[-1]``) with."""
    latest = runs[-1]
    text = str(since).strip()
    if text in ("last", "previous"):
        if len(runs) < 2:
            raise SnapshotNotFound(
                f"{store.path}: only one snapshot of site {latest.site!r} ({latest.run_id}), so there is nothing "
                "to compare it with; build the site twice ('twin build SITE_DIR' again) and then ask what changed"
            )
        return runs[-2]
    if _ISO_DATE.match(text):
        try:
            cutoff = _date_cutoff(text)
        except ValueError:
            raise SnapshotNotFound(
                f"invalid date {since!r}; expected YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)"
            ) from None
        earlier = [r for r in runs[:-1] if r.finished_at < cutoff]
        if not earlier:
            first = pd.Timestamp(runs[0].finished_at, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M")
            raise SnapshotNotFound(
                f"no snapshot before the latest one was built on or before {text} (UTC); the oldest snapshot "
                f"is from {first}; pass a later date, 'last' or a run id"
            )
        return earlier[-1]
    run = store.resolve_snapshot(text)
    if run.run_id == latest.run_id:
        raise SnapshotNotFound(
            f"snapshot {since!r} is the latest snapshot ({latest.run_id}); pass an earlier run id, "
            "'last' or a date (YYYY-MM-DD)"
        )
    return run


def _keys_by_query(findings: Mapping[str, pd.DataFrame]) -> dict[str, set[str]]:
    return {name: finding_keys(name, frame) for name, frame in findings.items()}


class _History:
    """Recorded finding keys per run, computed and recorded on first use when missing."""

    def __init__(self, workspace: "Workspace", store: "EmbeddedStore"):
        self.workspace = workspace
        self.store = store
        self.cache: dict[str, dict[str, set[str]]] = {}

    def remember(self, run_id: str, findings: Mapping[str, pd.DataFrame]) -> None:
        recorded = recorded_findings(self.store, run_id)
        if recorded is None or not set(findings) <= set(recorded):
            record_findings(self.store, run_id, findings)
        self.cache[run_id] = _keys_by_query(findings)

    def keys(self, run_id: str) -> dict[str, set[str]]:
        if run_id not in self.cache:
            recorded = recorded_findings(self.store, run_id)
            if recorded is None:
                logger.info("run %s: no recorded findings, running the catalogue on its snapshot", run_id)
                findings = self.workspace.findings(run_id)
                record_findings(self.store, run_id, findings)
                recorded = _keys_by_query(findings)
            self.cache[run_id] = recorded
        return self.cache[run_id]


def _trend(history: _History, runs: list["RunInfo"], queries: Iterable[str]) -> pd.DataFrame:
    queries = list(queries)
    rows = []
    for run in runs:
        keys = history.keys(run.run_id)
        row: dict[str, Any] = {"run_id": run.run_id, "finished_at": float(run.finished_at)}
        for name in queries:
            row[name] = len(keys.get(name, ()))
        rows.append(row)
    trend = pd.DataFrame(rows, columns=["run_id", "finished_at", *queries])
    for name in queries:
        trend[name] = trend[name].astype("int64")
    return trend


def compute_changes(workspace: "Workspace", *, since: str = "last", trend_runs: int = DEFAULT_TREND_RUNS) -> ChangeSet:
    """Compare the latest snapshot of a workspace with an earlier one.

    Parameters
    ----------
    workspace : twin.api.Workspace
        The workspace; its latest snapshot is the later side.
    since : str
        The earlier side: ``"last"`` or ``"previous"`` (the snapshot before
        the latest), a run id or unique prefix, or an ISO date
        ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM`` in UTC. A date selects the
        newest snapshot, other than the latest, built on or before it.
    trend_runs : int
        Runs in the trend table, the latest one included (default
        :data:`DEFAULT_TREND_RUNS`).

    Returns
    -------
    ChangeSet

    Raises
    ------
    SnapshotNotFound
        When the workspace has no snapshot, only one snapshot of the site,
        or ``since`` names no earlier snapshot.

    Notes
    -----
    Both compared snapshots get the whole catalogue run on their twin and
    their recorded site configuration, and their finding keys are recorded
    (:func:`record_findings`). ``open_since`` walks back through at most
    :data:`MAX_HISTORY_RUNS` runs of the same site, and the trend covers
    the last ``trend_runs`` of them. A run in either whose findings were
    never recorded has the catalogue run on it once.
    """
    if trend_runs < 1:
        raise ValueError(f"trend_runs must be at least 1, got {trend_runs}")
    with workspace.store() as store:
        all_runs = store.runs()
        if not all_runs:
            raise SnapshotNotFound(f"{store.path}: the workspace contains no snapshot yet; run 'twin build SITE_DIR' first")
        latest = all_runs[-1]
        # Other sites' runs in the same workspace are neither history nor trend.
        runs = [r for r in all_runs if r.site == latest.site]
        earlier = _resolve_since(store, runs, since)
        logger.info("comparing run %s with run %s (site %s)", latest.run_id, earlier.run_id, latest.site)

        old_findings = workspace.findings(earlier.run_id)
        new_findings = workspace.findings(latest.run_id)
        history = _History(workspace, store)
        history.remember(earlier.run_id, old_findings)
        history.remember(latest.run_id, new_findings)

        added, resolved, still_open = diff_findings(old_findings, new_findings)
        walked: list[tuple[float, Mapping[str, set[str]]]] = []
        open_keys = {name: finding_keys(name, frame) for name, frame in still_open.items()}
        for run in reversed(runs[-MAX_HISTORY_RUNS:]):
            keys = history.keys(run.run_id)
            walked.append((float(run.finished_at), keys))
            # Stop once no still-open finding is in this run: older runs cannot extend any stretch.
            if not any(open_keys[name] & keys.get(name, set()) for name in open_keys):
                break
        still_open = annotate_open_since(still_open, list(reversed(walked)), now=float(latest.finished_at))

        devices_new, devices_gone, devices_changed = diff_devices(
            workspace.twin(earlier.run_id).devices, workspace.twin(latest.run_id).devices
        )
        queries = ordered_queries({**dict.fromkeys(QUERY_ORDER), **dict.fromkeys(new_findings)})
        trend = _trend(history, runs[-trend_runs:], queries)

    changes = ChangeSet(
        site=str(latest.site),
        old_run_id=earlier.run_id,
        old_built_at=float(earlier.finished_at),
        new_run_id=latest.run_id,
        new_built_at=float(latest.finished_at),
        findings_new=added,
        findings_resolved=resolved,
        findings_open=still_open,
        devices_new=devices_new,
        devices_gone=devices_gone,
        devices_changed=devices_changed,
        trend=trend,
    )
    logger.info("run %s since %s: %s", latest.run_id, earlier.run_id, changes.summary_line())
    return changes
