"""Embedded store: one SQLite workspace file in WAL mode.

The workspace contains every build run, the observations each run read (with
provenance), the aggregated flow observations, and one snapshot of the
resolved graph per run. A build writes all of that in one transaction, so a
build killed midway (even with ``kill -9``) leaves the previous snapshots
intact and queryable and no half-written run.

A flow collector adds *derived* snapshots: a copy of a base snapshot's tables
with some tables (communications, and devices or externals that the flows
added) replaced, plus the batch's flows and hourly flow buckets
(:meth:`EmbeddedStore.write_derived_snapshot`). Table ``snapshot_bases``
records each derived snapshot's base and the build run at the root of its
lineage, where the observations are. Each later batch of the same collector
run replaces the run's derived snapshot in one transaction, so a collector
run adds one snapshot, not one per batch.

Notes
-----
Observations are rows (with JSON attributes) so ``twin show device`` can
select them by device. Each snapshot table, and the aggregated flows of each
imported file, is one Parquet blob in a row of its own. Writing and reading a
million communication edges then takes about a second, where row-by-row
inserts took tens of seconds (measured with bench/bench_build.py).
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from twin.exceptions import SnapshotNotFound, StoreError
from twin.model import schema
from twin.model.observation import FLOW_COLUMNS, Observation
from twin.model.twin import TABLES, Twin, empty_table

__all__ = [
    "EmbeddedStore",
    "SCHEMA_VERSION",
    "DEFAULT_WORKSPACE",
    "FLOW_HOUR_COLUMNS",
    "RunInfo",
    "SnapshotChanged",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
DEFAULT_WORKSPACE = ".twin/workspace.sqlite"

# Rows per executemany call and per DELETE chunk when pruning old snapshots.
WRITE_BATCH_ROWS = 50_000
PRUNE_CHUNK_ROWS = 50_000
# Snapshots that prune() keeps by default.
DEFAULT_KEEP_SNAPSHOTS = 20
# Run ids per "IN (...)" query, below SQLite's default limit of host parameters.
IN_CHUNK = 500

# Columns of the hourly flow buckets: one row per (src_ip, dst_ip, proto,
# dst_port, hour), where hour is the start of the UTC hour in epoch seconds.
FLOW_HOUR_COLUMNS = ("src_ip", "dst_ip", "proto", "dst_port", "hour", "bytes", "packets", "flows")
_FLOW_HOUR_DTYPES = {"dst_port": "int64", "hour": "int64", "bytes": "int64", "packets": "int64", "flows": "int64"}

_JSON_TYPES = {"list[str]", "json"}


def _column_types() -> dict[str, dict[str, str]]:
    types: dict[str, dict[str, str]] = {}
    for decl in schema.NODES:
        types[decl.table] = {p.name: p.type for p in decl.properties + schema.PROVENANCE}
    for rel in schema.RELATIONSHIPS:
        cols = types.setdefault(rel.table, {})
        for name in rel.start + rel.end:
            cols.setdefault(name, "str")
        for prop in rel.properties + schema.PROVENANCE:
            cols.setdefault(prop.name, prop.type)
    return types


COLUMN_TYPES = _column_types()


class SnapshotChanged(StoreError):
    """The base of a derived snapshot is no longer the latest snapshot of its site."""


class RunInfo(dict):
    """One row of the runs table, as a dict with attribute access."""

    __getattr__ = dict.get


_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _to_json(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return orjson.dumps(value, default=_json_default, option=_ORJSON_OPTIONS).decode()


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def _scalar(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        value = value.item()
    if value is pd.NA or value is pd.NaT:
        return None
    return value


# Parquet compression of snapshot tables and flow observations: zstd keeps
# a million-edge snapshot to tens of MB and decodes at memory speed.
PARQUET_COMPRESSION = "zstd"

_ARROW_TYPES = {
    "str": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "time": pa.float64(),
    "bool": pa.bool_(),
    "list[str]": pa.list_(pa.string()),
    "json": pa.string(),
}


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=PARQUET_COMPRESSION)
    return sink.getvalue().to_pybytes()


def _arrow_column(values: list, kind: str) -> pa.Array:
    if kind == "json":
        return pa.array(_json_column(values), type=pa.string())
    if kind == "list[str]":
        cleaned = [None if v is None or (isinstance(v, float) and math.isnan(v)) else [str(x) for x in v] for v in values]
        return pa.array(cleaned, type=pa.list_(pa.string()))
    if kind == "str":
        return pa.array([None if _scalar(v) is None else str(v) for v in values], type=pa.string())
    if kind == "bool":
        return pa.array([None if _scalar(v) is None else bool(v) for v in values], type=pa.bool_())
    return pa.array([_scalar(v) for v in values], type=_ARROW_TYPES[kind])


def _arrow_table(table: str, frame: pd.DataFrame) -> pa.Table:
    """Convert a twin table to Arrow with the declared type of every column."""
    types = COLUMN_TYPES[table]
    arrays, names = [], []
    for col in TABLES[table]:
        kind = types.get(col, "str")
        if col not in frame.columns:
            arrays.append(pa.nulls(len(frame), type=_ARROW_TYPES[kind]))
        elif kind in ("int", "float", "time") and frame[col].dtype.kind in "iuf":
            arrays.append(pa.array(frame[col].to_numpy(), type=_ARROW_TYPES[kind], from_pandas=True))
        elif kind in ("str", "list[str]"):
            # Fast path for columns that already hold only text (or lists of
            # text) and missing values; anything else is converted per value.
            try:
                arrays.append(pa.array(frame[col], type=_ARROW_TYPES[kind], from_pandas=True))
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                arrays.append(_arrow_column(frame[col].tolist(), kind))
        else:
            arrays.append(_arrow_column(frame[col].tolist(), kind))
        names.append(col)
    return pa.Table.from_arrays(arrays, names=names)


def _frame_from_arrow(table: str, arrow: pa.Table) -> pd.DataFrame:
    """Rebuild a twin table: lists as Python lists, JSON parsed, missing values as None."""
    types = COLUMN_TYPES[table]
    data = {}
    for col in arrow.column_names:
        kind = types.get(col, "str")
        column = arrow.column(col)
        if kind in ("int", "float", "time"):
            series = column.to_pandas()
            if kind == "int" and column.null_count == 0:
                series = series.astype("int64")
            data[col] = series
        elif kind == "json":
            cache: dict[str | None, Any] = {}
            parsed = []
            for text in column.to_pylist():
                if text not in cache:
                    cache[text] = json.loads(text) if text is not None else None
                value = cache[text]
                parsed.append(list(value) if isinstance(value, list) else value)
            data[col] = pd.Series(parsed, dtype=object)
        elif kind == "list[str]":
            data[col] = pd.Series([v if v is not None else [] for v in column.to_pylist()], dtype=object)
        else:
            data[col] = pd.Series(column.to_pylist(), dtype=object)
    return pd.DataFrame(data)


def _json_column(values: list) -> list:
    """Serialise a column of lists or dicts, once per distinct list of strings."""
    cache: dict[tuple, str | None] = {}
    out = []
    for value in values:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            key = tuple(value)
            text = cache.get(key)
            if text is None:
                text = cache[key] = _to_json(value)
            out.append(text)
        else:
            out.append(_to_json(value))
    return out


class EmbeddedStore:
    """The default store: one SQLite file holding runs, observations and snapshots.

    Parameters
    ----------
    path : str or Path
        Workspace file; created with its folder when missing.
    create : bool
        When False, a missing workspace raises SnapshotNotFound instead of
        being created (for commands that only read).
    """

    def __init__(self, path: str | Path = DEFAULT_WORKSPACE, *, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.exists():
            raise SnapshotNotFound(
                f"{self.path}: workspace not found; run 'twin build SITE_DIR' first, or pass --workspace"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
            tables = {row[0] for row in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"{self.path}: cannot open as a workspace ({exc}); pass a workspace written by 'twin build' or a new file path"
            ) from None
        # Check before writing anything, so another program's database (or a
        # mistyped path) is never converted into a workspace.
        if tables and not {"meta", "runs"} <= tables:
            self.conn.close()
            raise StoreError(
                f"{self.path}: not an iomt-twin workspace (it has tables {', '.join(sorted(tables)[:5])}); "
                "pass a workspace written by 'twin build' or a new file path"
            )
        if not tables and not create:
            self.conn.close()
            raise SnapshotNotFound(f"{self.path}: the workspace is empty; run 'twin build SITE_DIR' first")
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=OFF")
        self._create_schema()

    # -- schema -----------------------------------------------------------

    def _create_schema(self) -> None:
        cur = self.conn.cursor()
        cur.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        row = cur.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row and int(row[0]) > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: workspace schema version {row[0]} is newer than this iomt-twin supports "
                f"({SCHEMA_VERSION}); upgrade iomt-twin or use another workspace"
            )
        cur.execute(
            """CREATE TABLE IF NOT EXISTS runs (
                run_id TEXT PRIMARY KEY, site TEXT, site_dir TEXT, config_yaml TEXT,
                started_at REAL, finished_at REAL, status TEXT, summary TEXT)"""
        )
        cur.execute(
            """CREATE TABLE IF NOT EXISTS import_files (
                run_id TEXT, path TEXT, format TEXT, sha256 TEXT, records_read INTEGER,
                records_skipped INTEGER, counts TEXT, issues TEXT)"""
        )
        cur.execute(
            """CREATE TABLE IF NOT EXISTS observations (
                run_id TEXT, kind TEXT, source TEXT, origin TEXT, seen_at REAL,
                subject TEXT, attrs TEXT, evidence TEXT, device_id TEXT, about_id TEXT)"""
        )
        cur.execute("CREATE INDEX IF NOT EXISTS observations_run_device ON observations(run_id, device_id)")
        cur.execute("CREATE INDEX IF NOT EXISTS observations_run_about ON observations(run_id, about_id)")
        cur.execute(
            """CREATE TABLE IF NOT EXISTS flow_observations (
                run_id TEXT, source TEXT, origin TEXT, rows INTEGER, data BLOB)"""
        )
        cur.execute(
            """CREATE TABLE IF NOT EXISTS flow_hours (
                run_id TEXT, source TEXT, origin TEXT, rows INTEGER, data BLOB)"""
        )
        cur.execute("CREATE INDEX IF NOT EXISTS flow_hours_run ON flow_hours(run_id)")
        cur.execute(
            """CREATE TABLE IF NOT EXISTS snapshot_bases (
                run_id TEXT PRIMARY KEY, base_run_id TEXT NOT NULL, build_run_id TEXT NOT NULL)"""
        )
        cur.execute(
            """CREATE TABLE IF NOT EXISTS snapshot_tables (
                snapshot TEXT, name TEXT, rows INTEGER, data BLOB, PRIMARY KEY (snapshot, name))"""
        )
        cur.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    # -- transactions -----------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """Run the block in one write transaction; roll back on any exception."""
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")

    # -- writing ----------------------------------------------------------

    def write_build(
        self,
        *,
        run_id: str,
        site: str,
        site_dir: str,
        config_yaml: str,
        started_at: float,
        twin: Twin,
        observations: Iterable[tuple[Observation, str | None, str | None]],
        flows: Iterable[tuple[str, str, pd.DataFrame]],
        import_files: Iterable[dict[str, Any]],
        summary: dict[str, Any],
        finished_at: float | None = None,
        flow_hours: Iterable[tuple[str, str, pd.DataFrame]] = (),
    ) -> None:
        """Write a whole build (observations, flows, snapshot, run row) atomically.

        ``observations`` yields (observation, device_id, about_id) triples.
        ``device_id`` is the device the subject resolved to, and ``about_id``
        is the other device an ARP, FDB or neighbour entry names.
        ``flows`` yields (source, origin, DataFrame with FLOW_COLUMNS), and
        ``flow_hours`` (source, origin, DataFrame with FLOW_HOUR_COLUMNS).
        ``finished_at`` (epoch seconds, default now) becomes the snapshot's
        build time; an import from another store passes the original one.
        """
        with self.transaction() as cur:
            self._insert_observations(cur, run_id, observations)
            for source, origin, frame in flows:
                self._insert_flows(cur, run_id, source, origin, frame)
            for source, origin, frame in flow_hours:
                self._insert_flow_hours(cur, run_id, source, origin, frame)
            for info in import_files:
                cur.execute(
                    "INSERT INTO import_files VALUES (?,?,?,?,?,?,?,?)",
                    (
                        run_id,
                        info["path"],
                        info.get("format"),
                        info.get("sha256"),
                        info.get("records_read", 0),
                        info.get("records_skipped", 0),
                        _to_json(info.get("counts", {})),
                        _to_json(info.get("issues", [])),
                    ),
                )
            for table in TABLES:
                self._insert_table(cur, table, run_id, twin.tables[table])
            cur.execute(
                "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    site,
                    site_dir,
                    config_yaml,
                    started_at,
                    time.time() if finished_at is None else finished_at,
                    "committed",
                    _to_json(summary),
                ),
            )
        log.info("run %s: snapshot committed to %s", run_id, self.path)

    def _insert_observations(self, cur, run_id, observations) -> None:
        batch: list[tuple] = []
        sql = "INSERT INTO observations VALUES (?,?,?,?,?,?,?,?,?,?)"
        for obs, device_id, about_id in observations:
            batch.append(
                (
                    run_id,
                    str(obs.kind),
                    obs.source,
                    obs.origin,
                    obs.seen_at,
                    _to_json(obs.subject.to_dict()),
                    _to_json(obs.attrs),
                    _to_json(obs.evidence),
                    device_id,
                    about_id,
                )
            )
            if len(batch) >= WRITE_BATCH_ROWS:
                cur.executemany(sql, batch)
                batch.clear()
        if batch:
            cur.executemany(sql, batch)

    def _insert_flows(self, cur, run_id, source, origin, frame: pd.DataFrame) -> None:
        if frame is None or frame.empty:
            return
        table = pa.Table.from_pandas(frame[list(FLOW_COLUMNS)], preserve_index=False)
        cur.execute(
            "INSERT INTO flow_observations VALUES (?,?,?,?,?)",
            (run_id, source, origin, len(frame), _parquet_bytes(table)),
        )

    def write_derived_snapshot(
        self,
        *,
        base_run_id: str,
        run_id: str,
        tables: dict[str, pd.DataFrame],
        summary: dict[str, Any],
        started_at: float,
        flows: Iterable[tuple[str, str, pd.DataFrame]] = (),
        flow_hours: Iterable[tuple[str, str, pd.DataFrame]] = (),
        require_latest: bool = True,
        replaces: str | None = None,
    ) -> None:
        """Commit a snapshot derived from ``base_run_id`` in one transaction.

        The new snapshot contains the base's tables, except those in ``tables``,
        which replace them. ``flows`` and ``flow_hours`` are stored under
        ``run_id`` as for a build. The run row copies the base's site and
        configuration, and its finish time is now (at least the base's, so
        the new snapshot sorts after it).

        ``replaces`` names an earlier snapshot derived from the same base
        (the previous batch of the same collector run). The new snapshot then
        takes its tables, site and configuration from that snapshot instead
        of the base, whose run row may have been pruned. Its flows and hourly
        buckets are re-keyed to ``run_id``. The replaced snapshot's run row,
        tables, lineage row and recorded findings are deleted in the same
        transaction. A crash before the
        commit leaves the replaced snapshot as it was.

        Raises
        ------
        SnapshotNotFound
            When ``base_run_id`` or ``replaces`` is not a committed snapshot.
        SnapshotChanged
            With ``require_latest``, when another snapshot of the site was
            committed after the base (after ``replaces`` when given), or when
            another snapshot derives from ``replaces``. Nothing is written,
            and the caller derives again from the new latest snapshot.
        StoreError
            When ``replaces`` does not derive from ``base_run_id``.
        """
        unknown = sorted(set(tables) - set(TABLES))
        if unknown:
            raise ValueError(f"unknown snapshot tables {unknown}; expected some of {', '.join(TABLES)}")
        with self.transaction() as cur:
            if replaces is not None:
                self._check_replaceable(cur, replaces, base_run_id)
            # The replaced snapshot has the base's site and configuration, and
            # it is still there when the base's run row was pruned.
            parent = replaces if replaces is not None else base_run_id
            row = cur.execute(
                "SELECT site, site_dir, config_yaml, finished_at FROM runs WHERE run_id=? AND status='committed'",
                (parent,),
            ).fetchone()
            if row is None:
                raise SnapshotNotFound(f"{self.path}: no committed snapshot {base_run_id!r} to derive a snapshot from")
            site, site_dir, config_yaml, base_finished = row
            if require_latest:
                expected = replaces if replaces is not None else base_run_id
                latest = cur.execute(
                    "SELECT run_id FROM runs WHERE status='committed' AND site=? ORDER BY finished_at DESC LIMIT 1",
                    (site,),
                ).fetchone()
                if latest[0] != expected:
                    raise SnapshotChanged(
                        f"{self.path}: snapshot {latest[0]} of site {site!r} was committed after {expected}; "
                        "derive the new snapshot from the latest one"
                    )
            replaced = list(tables)
            marks = ",".join("?" for _ in replaced) or "''"
            if replaces is None:
                cur.execute(
                    f"INSERT INTO snapshot_tables SELECT ?, name, rows, data FROM snapshot_tables "
                    f"WHERE snapshot=? AND name NOT IN ({marks})",
                    (run_id, base_run_id, *replaced),
                )
            else:
                # The unchanged tables move to the new snapshot without copying their data.
                cur.execute(
                    f"UPDATE snapshot_tables SET snapshot=? WHERE snapshot=? AND name NOT IN ({marks})",
                    (run_id, replaces, *replaced),
                )
                self._remove_replaced(cur, replaces, run_id)
            for name, frame in tables.items():
                self._insert_table(cur, name, run_id, frame)
            for source, origin, frame in flows:
                self._insert_flows(cur, run_id, source, origin, frame)
            for source, origin, frame in flow_hours:
                self._insert_flow_hours(cur, run_id, source, origin, frame)
            build_run_id = self._build_run_of(cur, base_run_id)
            cur.execute("INSERT INTO snapshot_bases VALUES (?,?,?)", (run_id, base_run_id, build_run_id))
            finished_at = max(time.time(), float(base_finished or 0.0) + 1e-3)
            cur.execute(
                "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?)",
                (run_id, site, site_dir, config_yaml, started_at, finished_at, "committed", _to_json(summary)),
            )
        if replaces is None:
            log.info("run %s: snapshot derived from %s committed to %s", run_id, base_run_id, self.path)
        else:
            log.info("run %s: snapshot derived from %s committed to %s, replacing %s", run_id, base_run_id, self.path, replaces)

    def _check_replaceable(self, cur, replaces: str, base_run_id: str) -> None:
        """Raise unless ``replaces`` is a committed snapshot derived from ``base_run_id`` with nothing derived from it."""
        committed = cur.execute(
            "SELECT 1 FROM runs WHERE run_id=? AND status='committed'", (replaces,)
        ).fetchone()
        if committed is None:
            raise SnapshotNotFound(
                f"{self.path}: no committed snapshot {replaces!r} to replace; it was pruned or never committed, "
                "so derive a new snapshot from the latest one"
            )
        row = cur.execute("SELECT base_run_id FROM snapshot_bases WHERE run_id=?", (replaces,)).fetchone()
        if row is None or row[0] != base_run_id:
            raise StoreError(
                f"{self.path}: snapshot {replaces} derives from {row[0] if row else 'no snapshot'}, not from "
                f"{base_run_id}; only a snapshot derived from the same base can be replaced"
            )
        child = cur.execute("SELECT run_id FROM snapshot_bases WHERE base_run_id=? LIMIT 1", (replaces,)).fetchone()
        if child is not None:
            raise SnapshotChanged(
                f"{self.path}: snapshot {child[0]} derives from {replaces}, so {replaces} cannot be replaced; "
                "derive the new snapshot from the latest one"
            )

    def _remove_replaced(self, cur, replaces: str, run_id: str) -> None:
        """Move the flows and hourly buckets of ``replaces`` to ``run_id`` and delete the rest of ``replaces``."""
        cur.execute("UPDATE flow_observations SET run_id=? WHERE run_id=?", (run_id, replaces))
        cur.execute("UPDATE flow_hours SET run_id=? WHERE run_id=?", (run_id, replaces))
        cur.execute("DELETE FROM snapshot_tables WHERE snapshot=?", (replaces,))
        cur.execute("DELETE FROM snapshot_bases WHERE run_id=?", (replaces,))
        cur.execute("DELETE FROM runs WHERE run_id=?", (replaces,))
        # Findings recorded for the replaced snapshot (by a change report) describe a snapshot that no longer exists.
        names = {row[0] for row in cur.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table in ("run_findings", "run_findings_queries"):
            if table in names:
                cur.execute(f"DELETE FROM {table} WHERE run_id=?", (replaces,))

    def _insert_flow_hours(self, cur, run_id, source, origin, frame: pd.DataFrame) -> None:
        if frame is None or frame.empty:
            return
        table = pa.Table.from_pandas(frame[list(FLOW_HOUR_COLUMNS)], preserve_index=False)
        cur.execute(
            "INSERT INTO flow_hours VALUES (?,?,?,?,?)",
            (run_id, source, origin, len(frame), _parquet_bytes(table)),
        )

    def _insert_table(self, cur, table: str, run_id: str, frame: pd.DataFrame) -> None:
        if frame is None:
            return
        arrow = _arrow_table(table, frame)
        cur.execute(
            "INSERT INTO snapshot_tables VALUES (?,?,?,?)",
            (run_id, table, arrow.num_rows, _parquet_bytes(arrow)),
        )

    # -- reading ----------------------------------------------------------

    def runs(self) -> list[RunInfo]:
        """Return committed runs, oldest first."""
        cur = self.conn.execute(
            "SELECT run_id, site, site_dir, started_at, finished_at, status, summary FROM runs "
            "WHERE status='committed' ORDER BY finished_at"
        )
        out = []
        for run_id, site, site_dir, started, finished, status, summary in cur:
            out.append(
                RunInfo(
                    run_id=run_id,
                    site=site,
                    site_dir=site_dir,
                    started_at=started,
                    finished_at=finished,
                    status=status,
                    summary=json.loads(summary) if summary else {},
                )
            )
        return out

    def resolve_snapshot(self, snapshot: str | None = None) -> RunInfo:
        """Return the run of ``snapshot`` (a run id or unique prefix), or the latest one."""
        runs = self.runs()
        if not runs:
            raise SnapshotNotFound(f"{self.path}: the workspace contains no snapshot yet; run 'twin build SITE_DIR' first")
        if snapshot in (None, "latest", "last"):
            return runs[-1]
        if snapshot == "previous":
            if len(runs) < 2:
                raise SnapshotNotFound(f"{self.path}: no snapshot before the latest one; build the site again first")
            return runs[-2]
        matches = [r for r in runs if r.run_id == snapshot] or [r for r in runs if r.run_id.startswith(snapshot)]
        if len(matches) != 1:
            known = ", ".join(r.run_id for r in runs[-10:])
            what = "matches no" if not matches else "matches more than one"
            raise SnapshotNotFound(f"snapshot {snapshot!r} {what} run in {self.path}; recent runs: {known}")
        return matches[0]

    def config_yaml(self, run_id: str) -> tuple[str, str]:
        """Return (site_dir, config YAML text) recorded with a run."""
        row = self.conn.execute("SELECT site_dir, config_yaml FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            raise SnapshotNotFound(f"no run {run_id!r} in {self.path}")
        return row[0], row[1]

    def load_twin(self, snapshot: str | None = None, tables: Iterable[str] | None = None) -> Twin:
        """Load one snapshot (the latest by default) into memory."""
        run = self.resolve_snapshot(snapshot)
        loaded: dict[str, pd.DataFrame] = {}
        for table in tables or TABLES:
            loaded[table] = self._load_table(table, run.run_id)
        return Twin(site=run.site, run_id=run.run_id, built_at=run.finished_at, tables=loaded)

    def _load_table(self, table: str, run_id: str) -> pd.DataFrame:
        row = self.conn.execute(
            "SELECT data FROM snapshot_tables WHERE snapshot=? AND name=?", (run_id, table)
        ).fetchone()
        if row is None:
            return empty_table(table)
        return _frame_from_arrow(table, pq.read_table(pa.BufferReader(row[0])))

    def _build_run_of(self, cur, run_id: str) -> str:
        row = cur.execute("SELECT build_run_id FROM snapshot_bases WHERE run_id=?", (run_id,)).fetchone()
        return row[0] if row else run_id

    def build_run_of(self, run_id: str) -> str:
        """Return the build run at the root of a snapshot's lineage (the run itself for a build)."""
        return self._build_run_of(self.conn, run_id)

    def lineage(self, run_id: str) -> list[str]:
        """Return ``run_id`` and the runs it derives from, newest first, ending with its build run."""
        bases = dict(self.conn.execute("SELECT run_id, base_run_id FROM snapshot_bases"))
        chain = [run_id]
        # Each step moves to an older run, so the walk ends within len(bases) steps.
        for _ in range(len(bases)):
            base = bases.get(chain[-1])
            if base is None or base in chain:
                break
            chain.append(base)
        return chain

    def flow_hours(self, run_id: str | None = None) -> pd.DataFrame:
        """Return the hourly flow buckets of a snapshot and of every run it derives from.

        ``run_id`` is a snapshot (run id, prefix, ``latest`` or ``previous``;
        default the latest). Columns are :data:`FLOW_HOUR_COLUMNS` plus
        ``run_id``, ``source`` and ``origin``, one row per stored bucket:
        buckets of one key from several batches are not summed.
        """
        run = self.resolve_snapshot(run_id)
        chain = self.lineage(run.run_id)
        frames = []
        for start in range(0, len(chain), IN_CHUNK):
            part = chain[start : start + IN_CHUNK]
            marks = ",".join("?" for _ in part)
            cur = self.conn.execute(
                f"SELECT run_id, source, origin, data FROM flow_hours WHERE run_id IN ({marks}) ORDER BY rowid", part
            )
            for hour_run, source, origin, data in cur:
                frame = pq.read_table(pa.BufferReader(data)).to_pandas()
                frame["run_id"] = hour_run
                frame["source"] = source
                frame["origin"] = origin
                frames.append(frame)
        columns = [*FLOW_HOUR_COLUMNS, "run_id", "source", "origin"]
        if not frames:
            return pd.DataFrame({col: pd.Series(dtype=_FLOW_HOUR_DTYPES.get(col, "str")) for col in columns})
        return pd.concat(frames, ignore_index=True)[columns]

    def flow_observations(self, run_id: str) -> list[tuple[str, str, pd.DataFrame]]:
        """Return the aggregated flows each file of a run contributed, as (source, origin, DataFrame)."""
        cur = self.conn.execute("SELECT source, origin, data FROM flow_observations WHERE run_id=?", (run_id,))
        return [(source, origin, pq.read_table(pa.BufferReader(data)).to_pandas()) for source, origin, data in cur]

    def observations_for(self, device_id: str, run_id: str) -> pd.DataFrame:
        """Return every observation a run attributed to one device.

        For a derived snapshot these are the observations of the build run
        at the root of its lineage.
        """
        run_id = self.build_run_of(run_id)
        frame = pd.read_sql_query(
            "SELECT kind, source, origin, seen_at, subject, attrs, evidence, "
            "CASE WHEN device_id=? THEN 'subject' ELSE 'named' END AS role FROM observations "
            "WHERE run_id=? AND (device_id=? OR about_id=?) ORDER BY seen_at, source, origin",
            self.conn,
            params=(device_id, run_id, device_id, device_id),
        )
        for col in ("subject", "attrs", "evidence"):
            frame[col] = [json.loads(v) if v else {} for v in frame[col]]
        return frame

    def import_files(self, run_id: str) -> list[dict[str, Any]]:
        """Return the import summary of a run, one dict per file.

        A derived snapshot imported no files, so it returns those of the
        build run at the root of its lineage.
        """
        run_id = self.build_run_of(run_id)
        cur = self.conn.execute(
            "SELECT path, format, sha256, records_read, records_skipped, counts, issues FROM import_files WHERE run_id=?",
            (run_id,),
        )
        return [
            {
                "path": path,
                "format": fmt,
                "sha256": sha,
                "records_read": read,
                "records_skipped": skipped,
                "counts": json.loads(counts) if counts else {},
                "issues": json.loads(issues) if issues else [],
            }
            for path, fmt, sha, read, skipped, counts, issues in cur
        ]

    # -- maintenance ------------------------------------------------------

    def prune(self, keep: int = DEFAULT_KEEP_SNAPSHOTS) -> list[str]:
        """Delete all but the newest ``keep`` snapshots, in bounded chunks; return the removed run ids.

        A removed run whose data a kept derived snapshot still reads (its
        build's observations and import summary, the flows and hourly
        buckets of its lineage) loses only its snapshot tables and run row.
        """
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        runs = self.runs()
        doomed = [r.run_id for r in runs[:-keep]]
        needed: set[str] = set()
        for run in runs[-keep:]:
            needed.update(self.lineage(run.run_id))
        for run_id in doomed:
            tables = ["snapshot_tables"]
            if run_id not in needed:
                tables += ["observations", "flow_observations", "flow_hours", "import_files", "snapshot_bases"]
            for table in tables:
                key = "snapshot" if table == "snapshot_tables" else "run_id"
                while True:
                    with self.transaction() as cur:
                        cur.execute(
                            f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {key}=? LIMIT ?)",
                            (run_id, PRUNE_CHUNK_ROWS),
                        )
                        deleted = cur.rowcount
                    if deleted < PRUNE_CHUNK_ROWS:
                        break
            with self.transaction() as cur:
                cur.execute("DELETE FROM runs WHERE run_id=?", (run_id,))
            log.info("pruned snapshot %s from %s", run_id, self.path)
        return doomed

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "EmbeddedStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
