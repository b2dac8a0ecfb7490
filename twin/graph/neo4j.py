"""Neo4j store: the twin in a Neo4j 5 database over Bolt.

The graph follows :mod:`twin.model.schema`: one node per row of a node table,
one relationship per row of a relationship table, and property names equal to
the table column names. On top of the schema every node and relationship
carries ``site`` (the site name) and ``run_id`` (the write that last touched
it), so several sites share one database. One ``(:Site {name, run_id,
built_at, site_yaml, site_dir})`` node per site records the latest write.

Writes go through :meth:`Neo4jStore._write_batches` only: ``UNWIND $rows ...
MERGE`` in batches of :data:`BATCH_ROWS` rows, each batch a managed write
transaction, so the driver retries transient errors such as deadlocks. Rows
are sorted by key so concurrent writers lock nodes in the same order. Values
are always query parameters; labels, types and property names come from the
schema only and are checked before they are put into a query. Nodes are
written first, then relationships, which MATCH their endpoints through the
uniqueness constraints. A label or relationship type of which the site has no
item yet is written with CREATE instead of MERGE; the uniqueness
constraints still reject a duplicate key.

After a write, items of the site whose ``run_id`` differs from the new one
are removed in chunks of :data:`STALE_CHUNK_ROWS`. Writers of the same site
take turns through a ``(:SiteLock {site})`` node, so two builds of one site
never remove each other's items. Builds of different sites run in parallel.

A relationship row whose endpoint is not a row of its node table (a link to
an interface no switch reported, for example) gets a ``:Placeholder`` node
with only the key properties, written before the relationships. Placeholders are endpoints only, and
:meth:`Neo4jStore.load_twin` leaves them out of the node tables.

Configuration comes from the environment (:meth:`Neo4jConfig.from_env`):
``NEO4J_URI``, ``NEO4J_USER``, ``NEO4J_PASSWORD`` and ``NEO4J_DATABASE``.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml

import neo4j
from neo4j.exceptions import AuthError, ConstraintError, DriverError, Neo4jError, ServiceUnavailable

from twin.exceptions import ConfigError, SnapshotNotFound, StoreError
from twin.graph.embedded import COLUMN_TYPES, _arrow_table, _frame_from_arrow
from twin.model import schema
from twin.model.site import SiteConfig, parse_site
from twin.model.twin import TABLES, Twin, empty_table

__all__ = [
    "Neo4jConfig",
    "Neo4jStore",
    "WriteStats",
    "build_to_neo4j",
    "analyze_from_neo4j",
    "export_snapshot",
    "import_site",
    "neo4j_report_context",
    "report_from_neo4j",
    "redact_uri",
    "NO_IMPORT_RECORDS_NOTE",
    "BATCH_ROWS",
    "STALE_CHUNK_ROWS",
    "REL_KEYS",
    "PLACEHOLDER_LABEL",
]

log = logging.getLogger(__name__)

# URI schemes the official driver speaks over Bolt.
URI_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")
# Rows per write transaction (one UNWIND batch), default 5,000. Neo4j 5.26
# bounds a transaction's memory by dbms.memory.transaction.total.max, 70 % of
# the heap by default. PROFILE (GlobalMemory) of one batch of 5,000
# COMMUNICATES_WITH rows (the widest relationship table) of a generated
# 100,000-device twin reported about 4 MB for the MERGE form and 64 bytes for
# the CREATE form, which streams. That is far under the default limit of a
# 2 GB heap, and batches stay short (0.2 to 1 s each on Neo4j 5.26
# Community, 2 GB heap, 2 shared cores), so a retried deadlock repeats little
# work. Batches of 10,000 and 20,000 rows were no faster there.
BATCH_ROWS = 5_000
# Items removed per transaction when stale items of a site are removed, default 10,000.
STALE_CHUNK_ROWS = 10_000
# Seconds a writer waits for another writer of the same site, default 600.
LOCK_WAIT_S = 600.0
# Seconds a site lock stays valid without renewal, default 300; a writer
# renews it after every batch, so only a crashed writer lets it expire.
LOCK_LEASE_S = 300.0
# Seconds between attempts to take a site lock held by another writer, default 0.5.
LOCK_POLL_S = 0.5
# Seconds to open a Bolt connection before the server counts as unreachable, default 10.
CONNECT_TIMEOUT_S = 10.0
# Seconds the driver keeps retrying a transaction that failed with a transient error, default 60.
RETRY_TIME_S = 60.0

# Label of nodes that exist only as relationship endpoints.
PLACEHOLDER_LABEL = "Placeholder"
SITE_LABEL = "Site"
LOCK_LABEL = "SiteLock"

# Relationship properties that, with the two endpoints, identify one
# relationship (the MERGE key). The other types allow one relationship
# per pair of endpoints, as their tables do.
REL_KEYS: dict[str, tuple[str, ...]] = {"COMMUNICATES_WITH": ("proto", "dst_port")}

# Relationship types whose endpoint label follows a kind column of the row:
# type -> (start kind column, end kind column). A kind of "external" means an
# External node, anything else a Device.
_KIND_COLUMNS: dict[str, tuple[str, str]] = {"COMMUNICATES_WITH": ("src_kind", "dst_kind")}

# Properties the write queries set from the ``$site`` and ``$run_id``
# parameters rather than from each row.
_SET_FROM_PARAMETERS = frozenset({"site", "run_id"})

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NODE_BY_LABEL = {decl.label: decl for decl in schema.NODES}
_NODE_BY_TABLE = {decl.table: decl for decl in schema.NODES}


def _quote(name: str) -> str:
    """Return a schema name as a Cypher identifier, rejecting anything but letters, digits and _."""
    if not _NAME.match(name):
        raise ValueError(f"invalid Cypher identifier {name!r}; schema names must match {_NAME.pattern}")
    return f"`{name}`"


def _endpoint_labels(pattern: str) -> tuple[list[str], list[str]]:
    """Return the start and end labels of a schema pattern such as ``(:Device)-[:X]->(:Device|External)``."""
    found = re.findall(r"\(:([A-Za-z|]+)\)", pattern)
    if len(found) != 2:
        raise ValueError(f"invalid relationship pattern {pattern!r}; expected (:Start)-[:TYPE]->(:End)")
    return found[0].split("|"), found[1].split("|")


def _rel_key(rel: schema.RelType) -> list[str]:
    """Return the columns that identify one row of a relationship table."""
    return list(rel.start) + [c for c in rel.end if c not in rel.start] + list(REL_KEYS.get(rel.type, ()))


# -- configuration ----------------------------------------------------------


@dataclass
class Neo4jConfig:
    """Connection settings of a Neo4j server.

    Attributes
    ----------
    uri : str
        Bolt or Neo4j URI, for example ``bolt://127.0.0.1:7687``.
    user, password : str or None
        Credentials; None for a server with authentication off.
    database : str or None
        Database name; None for the server's default database.
    """

    uri: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str | None = None

    @classmethod
    def from_env(cls, *, prompt: bool = False) -> "Neo4jConfig":
        """Read the settings from ``NEO4J_URI``, ``NEO4J_USER``, ``NEO4J_PASSWORD`` and ``NEO4J_DATABASE``.

        Parameters
        ----------
        prompt : bool
            When True, a user is set, ``NEO4J_PASSWORD`` is not and standard
            input is a terminal, ask for the password without echo.

        Raises
        ------
        ConfigError
            When ``NEO4J_URI`` is unset, or a user is set without a password
            and no prompt is possible.
        """
        uri = (os.environ.get("NEO4J_URI") or "").strip()
        if not uri:
            raise ConfigError(
                "NEO4J_URI is not set; set it to the Bolt URI of your Neo4j server, "
                "for example NEO4J_URI=bolt://127.0.0.1:7687"
            )
        user = os.environ.get("NEO4J_USER") or None
        password = os.environ.get("NEO4J_PASSWORD")
        if user and password is None:
            if prompt and sys.stdin is not None and sys.stdin.isatty():
                password = getpass.getpass(f"Neo4j password for {user} at {uri}: ")
            else:
                raise ConfigError(
                    f"NEO4J_USER is set to {user!r} but NEO4J_PASSWORD is not; set NEO4J_PASSWORD "
                    "or run the command in a terminal to be asked for the password"
                )
        database = os.environ.get("NEO4J_DATABASE") or None
        return cls(uri=uri, user=user, password=password, database=database)


@dataclass
class WriteStats:
    """Outcome of one :meth:`Neo4jStore.write_twin`.

    Attributes
    ----------
    site, run_id : str
        Site written and the run id its items now carry.
    nodes : dict of str to int
        Rows written per node label.
    relationships : dict of str to int
        Rows written per relationship type.
    removed_nodes, removed_relationships : int
        Stale items of the site removed after the write.
    batches : int
        Write transactions run for the rows (one per batch).
    seconds : float
        Wall-clock time of the whole write.
    """

    site: str
    run_id: str
    nodes: dict[str, int] = field(default_factory=dict)
    relationships: dict[str, int] = field(default_factory=dict)
    removed_nodes: int = 0
    removed_relationships: int = 0
    batches: int = 0
    seconds: float = 0.0


# -- rows -------------------------------------------------------------------


def _table_arrow(table: str, frame: pd.DataFrame | None, key: list[str]) -> pa.Table | None:
    """Convert a twin table to Arrow with the embedded store's types, check its keys and sort it by key.

    Returns None for a missing or empty table.
    """
    if frame is None or frame.empty:
        return None
    arrow = _arrow_table(table, frame)
    _check_keys(table, arrow, key)
    # Arrow orders text by its UTF-8 bytes, which is the code point order Python's sort uses.
    return arrow.sort_by([(k, "ascending") for k in key])


@dataclass
class _NodeRows:
    """Parameter rows of one node label: each row is a tuple of the values of ``columns``, in that order.

    A missing value is None; a query stores no property for a null, so
    Neo4j keeps the same properties as it would without the column.
    """

    columns: list[str]
    rows: list[tuple]


@dataclass
class _RelRows:
    """Parameter rows of one relationship type between two labels.

    Each row is a tuple of the start key values (the columns ``start``),
    then the end key values (``end``), then the values of ``props``.
    """

    start: tuple[str, ...]
    end: tuple[str, ...]
    props: list[str]
    rows: list[tuple] = field(default_factory=list)


def _arrow_values(arrow: pa.Table, columns: Iterable[str]) -> list[list[Any]]:
    """Return the Python values of each of ``columns``; ``json`` columns are JSON text already."""
    return [arrow.column(name).to_pylist() for name in columns]


def _check_keys(table: str, arrow: pa.Table, key: list[str]) -> None:
    """Raise StoreError when a row lacks a key value or two rows share one key."""
    for name in key:
        column = arrow.column(name)
        if column.null_count:
            index = pc.index(column.is_null(), True).as_py()
            raise StoreError(
                f"table {table}, row {index}: no value for key column {name!r}; "
                f"every row needs {', '.join(key)} to be stored in Neo4j"
            )
    duplicated = arrow.select(key).to_pandas().duplicated(keep="first").to_numpy()
    if duplicated.any():
        index = int(duplicated.argmax())
        ident = tuple(arrow.column(name)[index].as_py() for name in key)
        raise StoreError(
            f"table {table}, row {index}: key {ident!r} occurs twice; Neo4j keeps one item per key "
            f"({', '.join(key)}), so merge the duplicate rows before writing"
        )


def _normalise_table(table: str, records: list[dict[str, Any]], sort_key: list[str]) -> pd.DataFrame:
    """Build a twin table from property maps, typed as EmbeddedStore.load_twin types it."""
    if not records:
        return _frame_from_arrow(table, _arrow_table(table, empty_table(table)))
    types = COLUMN_TYPES[table]
    data: dict[str, list] = {}
    for col in TABLES[table]:
        values = [record.get(col) for record in records]
        if types.get(col) == "json":
            values = [json.loads(v) if isinstance(v, str) else v for v in values]
        data[col] = values
    frame = pd.DataFrame({col: pd.Series(values, dtype=object) for col, values in data.items()})
    frame = _frame_from_arrow(table, _arrow_table(table, frame))
    # Neo4j returns items in no particular order, so tables come back sorted by key.
    return frame.sort_values(sort_key, kind="stable", ignore_index=True)


# -- the store --------------------------------------------------------------


class Neo4jStore:
    """The twin in a Neo4j 5 database, read and written over Bolt.

    Parameters
    ----------
    config : Neo4jConfig or str
        Connection settings, or a URI of a server with authentication off.
    batch_rows : int
        Rows per write transaction; see :data:`BATCH_ROWS`.
    stale_chunk_rows : int
        Items removed per transaction; see :data:`STALE_CHUNK_ROWS`.

    Raises
    ------
    StoreError
        When the server cannot be reached or rejects the credentials.
    """

    def __init__(
        self,
        config: Neo4jConfig | str,
        *,
        batch_rows: int = BATCH_ROWS,
        stale_chunk_rows: int = STALE_CHUNK_ROWS,
    ):
        if isinstance(config, str):
            config = Neo4jConfig(uri=config)
        if batch_rows < 1 or stale_chunk_rows < 1:
            raise ValueError(f"batch_rows and stale_chunk_rows must be at least 1, got {batch_rows} and {stale_chunk_rows}")
        self.config = config
        self.batch_rows = batch_rows
        self.stale_chunk_rows = stale_chunk_rows
        scheme = config.uri.split("://", 1)[0].lower() if "://" in config.uri else ""
        if scheme not in URI_SCHEMES:
            raise StoreError(
                f"NEO4J_URI {redact_uri(config.uri)!r} does not start with a Bolt scheme; "
                f"use one of {', '.join(s + '://' for s in URI_SCHEMES)}, for example bolt://127.0.0.1:7687"
            )
        auth = (config.user, config.password or "") if config.user else None
        try:
            self.driver = neo4j.GraphDatabase.driver(
                config.uri,
                auth=auth,
                connection_timeout=CONNECT_TIMEOUT_S,
                max_transaction_retry_time=RETRY_TIME_S,
                # Query notifications, such as "null value eliminated in set
                # function" from the catalogue's aggregations, are not problems
                # in the user's data. Without this the driver logs each one
                # with the whole query text.
                notifications_min_severity="OFF",
            )
            self.driver.verify_connectivity()
        except AuthError as exc:
            raise StoreError(
                f"Neo4j at {config.uri} rejected the credentials of user {config.user!r}: {exc.message}; "
                "check NEO4J_USER and NEO4J_PASSWORD"
            ) from None
        except (ServiceUnavailable, DriverError, Neo4jError, ValueError, OSError) as exc:
            reason = " ".join((getattr(exc, "message", None) or str(exc) or type(exc).__name__).split())
            raise StoreError(f"cannot reach Neo4j at {config.uri}: {reason}; start it or set NEO4J_URI") from None
        self._schema_ready = False

    def close(self) -> None:
        self.driver.close()

    def __enter__(self) -> "Neo4jStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _session(self):
        return self.driver.session(database=self.config.database)

    def _write(self, cypher: str, **params) -> neo4j.ResultSummary:
        """Run one statement in a managed write transaction and return its summary."""
        with self._session() as session:
            return session.execute_write(lambda tx: tx.run(cypher, params).consume())

    def _read(self, cypher: str, params: dict | None = None, timeout_s: float | None = None) -> tuple[list[str], list[list]]:
        """Run one read statement in a managed read transaction and return (column names, rows)."""

        @neo4j.unit_of_work(timeout=timeout_s)
        def work(tx):
            result = tx.run(cypher, params or {})
            return list(result.keys()), [list(record.values()) for record in result]

        with self._session() as session:
            return session.execute_read(work)

    # -- schema -----------------------------------------------------------

    def schema_statements(self) -> list[str]:
        """Return the constraint and index statements that :meth:`ensure_schema` runs."""
        statements = [
            f"CREATE CONSTRAINT site_name IF NOT EXISTS FOR (s:{_quote(SITE_LABEL)}) REQUIRE s.name IS UNIQUE",
            f"CREATE CONSTRAINT site_lock IF NOT EXISTS FOR (l:{_quote(LOCK_LABEL)}) REQUIRE l.site IS UNIQUE",
        ]
        for decl in schema.NODES:
            label = _quote(decl.label)
            keys = ", ".join(f"n.{_quote(k)}" for k in ("site",) + decl.key)
            statements.append(
                f"CREATE CONSTRAINT {decl.label.lower()}_key IF NOT EXISTS FOR (n:{label}) REQUIRE ({keys}) IS UNIQUE"
            )
            statements.append(f"CREATE INDEX {decl.label.lower()}_site IF NOT EXISTS FOR (n:{label}) ON (n.site)")
            for prop in decl.properties + schema.PROVENANCE:
                if prop.indexed:
                    statements.append(
                        f"CREATE INDEX {decl.label.lower()}_{prop.name} IF NOT EXISTS FOR (n:{label}) ON (n.{_quote(prop.name)})"
                    )
        for rel in schema.RELATIONSHIPS:
            rel_type = _quote(rel.type)
            statements.append(
                f"CREATE INDEX {rel.type.lower()}_site IF NOT EXISTS FOR ()-[r:{rel_type}]-() ON (r.site)"
            )
        return statements

    def ensure_schema(self) -> None:
        """Create the uniqueness constraints and indexes that are missing; running it again changes nothing.

        Every node label gets a uniqueness constraint on ``site`` plus its
        key and an index on ``site``. The properties the schema marks as
        indexed get an index. Every relationship type gets an index on
        ``site`` for loads and stale removal.
        """
        for statement in self.schema_statements():
            try:
                self._write(statement)
            except Neo4jError as exc:
                raise StoreError(
                    f"Neo4j at {self.config.uri} rejected a schema statement ({exc.message}): {statement}; "
                    "drop the conflicting constraint or index, or use another database (NEO4J_DATABASE)"
                ) from None
        with self._session() as session:
            session.run("CALL db.awaitIndexes(300)").consume()
        self._schema_ready = True

    # -- writing ----------------------------------------------------------

    def _write_batches(
        self,
        cypher: str,
        rows: list[tuple],
        params: dict[str, Any],
        on_batch: Callable[[], None],
        *,
        expect_created: bool = False,
    ) -> int:
        """Write rows with ``UNWIND $rows`` in batches of ``batch_rows``, one managed transaction each.

        This is the only method that writes twin items. It returns the number
        of batches run. With ``expect_created``, every row must create one
        relationship; a batch that creates fewer (an endpoint MATCH found no
        node) raises StoreError.
        """
        batches = 0
        for start in range(0, len(rows), self.batch_rows):
            chunk = rows[start : start + self.batch_rows]
            summary = self._write(cypher, rows=chunk, **params)
            batches += 1
            if expect_created and summary.counters.relationships_created != len(chunk):
                raise StoreError(
                    f"Neo4j at {self.config.uri} created {summary.counters.relationships_created} of {len(chunk)} "
                    f"relationships of a batch ({cypher[:80]}...) because some endpoints were not found; "
                    "another process may have deleted nodes of the site during the write, so write the site again"
                )
            on_batch()
        return batches

    def _fresh_items(self, site: str) -> set[str]:
        """Return the node labels and relationship types of which the site has no item yet.

        Items of these kinds can be written with CREATE, which skips the
        lookup MERGE makes for every row, and need no stale removal. The
        caller holds the site lock, so the set stays true until it ends.
        """
        fresh = set()
        for decl in schema.NODES:
            _, rows = self._read(f"MATCH (n:{_quote(decl.label)}) WHERE n.site = $site RETURN 1 LIMIT 1", {"site": site})
            if not rows:
                fresh.add(decl.label)
        for rel in schema.RELATIONSHIPS:
            _, rows = self._read(f"MATCH ()-[r:{_quote(rel.type)}]->() WHERE r.site = $site RETURN 1 LIMIT 1", {"site": site})
            if not rows:
                fresh.add(rel.type)
        return fresh

    def write_twin(self, twin: Twin, site: SiteConfig | None = None, *, site_text: str | None = None, site_dir: str | None = None) -> WriteStats:
        """Write a twin as the current state of its site and remove the site's stale items.

        Parameters
        ----------
        twin : Twin
            The twin to write; its ``site`` names the site and its ``run_id``
            is stored on every item.
        site : SiteConfig, optional
            Site configuration stored with the twin; its YAML file is read
            when ``site_text`` is not given.
        site_text : str, optional
            Site configuration YAML to store as it is.
        site_dir : str, optional
            Site folder recorded on the Site node, for reference only.

        Raises
        ------
        StoreError
            When a table has a row without a key or two rows with one key,
            another writer keeps the site locked longer than LOCK_WAIT_S, or Neo4j
            rejects a write.
        """
        started = time.perf_counter()
        if not twin.site:
            raise StoreError("the twin has no site name; a site name is needed to store it in Neo4j")
        if site_text is None and site is not None:
            site_text = _site_yaml(site)
        if not self._schema_ready:
            self.ensure_schema()
        stats = WriteStats(site=twin.site, run_id=twin.run_id)
        node_rows, rel_rows = self._prepare(twin)
        placeholder_rows = _placeholder_rows(node_rows, rel_rows)
        with _SiteLock(self, twin.site) as lock:
            params = {"site": twin.site, "run_id": twin.run_id}
            # Checked under the lock, so no other writer of the site adds items until the write ends.
            fresh = self._fresh_items(twin.site)
            for decl in schema.NODES:
                rows = node_rows[decl.label]
                cypher = _node_query(decl, rows.columns, create=decl.label in fresh)
                stats.batches += self._write_batches(cypher, rows.rows, params, lock.renew)
                stats.nodes[decl.label] = len(rows.rows)
            for decl in schema.NODES:
                rows = placeholder_rows[decl.label]
                cypher = _node_query(decl, rows.columns, create=decl.label in fresh, placeholder=True)
                stats.batches += self._write_batches(cypher, rows.rows, params, lock.renew)
            for rel in schema.RELATIONSHIPS:
                groups = rel_rows[rel.type]
                create = rel.type in fresh
                for (start_label, end_label), rows in groups.items():
                    cypher = _rel_query(rel, rows, start_label, end_label, create=create)
                    stats.batches += self._write_batches(cypher, rows.rows, params, lock.renew, expect_created=create)
                stats.relationships[rel.type] = sum(len(rows.rows) for rows in groups.values())
            self._write(
                f"MERGE (s:{_quote(SITE_LABEL)} {{name: $site}}) "
                "SET s.run_id = $run_id, s.built_at = $built_at, s.site_yaml = $site_yaml, "
                "s.site_dir = $site_dir, s.written_at = timestamp()",
                site=twin.site,
                run_id=twin.run_id,
                built_at=float(twin.built_at),
                site_yaml=site_text,
                site_dir=site_dir,
            )
            stats.removed_relationships, stats.removed_nodes = self._remove_stale(
                twin.site, twin.run_id, lock.renew, skip=fresh
            )
        stats.seconds = time.perf_counter() - started
        log.info(
            "site %r run %s: wrote %d nodes and %d relationships to %s in %d batches, removed %d stale nodes and "
            "%d stale relationships, %.1f s",
            twin.site,
            twin.run_id,
            sum(stats.nodes.values()),
            sum(stats.relationships.values()),
            self.config.uri,
            stats.batches,
            stats.removed_nodes,
            stats.removed_relationships,
            stats.seconds,
        )
        return stats

    def _prepare(self, twin: Twin) -> tuple[dict[str, _NodeRows], dict[str, dict[tuple[str, str], _RelRows]]]:
        """Return parameter rows per node label and per (relationship type, endpoint labels), sorted by key.

        Rows are tuples without ``site`` and ``run_id``: the write queries
        set both from parameters and name every column, which keeps a
        million-row payload about half the size of property maps.
        """
        node_rows: dict[str, _NodeRows] = {}
        arrows: dict[str, pa.Table | None] = {}
        for decl in schema.NODES:
            frame = twin.tables.get(decl.table)
            if decl.label == "Segment":
                _check_segment_site(frame, twin.site)
            arrow = _table_arrow(decl.table, frame, list(decl.key))
            arrows[decl.table] = arrow
            columns = [col for col in TABLES[decl.table] if col not in _SET_FROM_PARAMETERS]
            rows = list(zip(*_arrow_values(arrow, columns))) if arrow is not None else []
            node_rows[decl.label] = _NodeRows(columns, rows)
        rel_rows: dict[str, dict[tuple[str, str], _RelRows]] = {}
        for rel in schema.RELATIONSHIPS:
            if rel.table in arrows:
                # A node table, already sorted by the node key, which is also the relationship key.
                arrow = arrows[rel.table]
            else:
                arrow = _table_arrow(rel.table, twin.tables.get(rel.table), _rel_key(rel))
            rel_rows[rel.type] = _rel_param_rows(rel, arrow)
        return node_rows, rel_rows

    def _remove_stale(
        self, site: str, run_id: str, on_chunk: Callable[[], None], *, skip: Iterable[str] = ()
    ) -> tuple[int, int]:
        """Remove the site's relationships and nodes whose run_id differs, in chunks; return (relationships, nodes).

        Labels and relationship types in ``skip`` are left alone; they are the
        kinds this write created from scratch, so all their items are current.
        """
        skip = set(skip)
        removed_rels = 0
        for rel in schema.RELATIONSHIPS:
            if rel.type in skip:
                continue
            cypher = (
                f"MATCH ()-[r:{_quote(rel.type)}]->() WHERE r.site = $site AND coalesce(r.run_id, '') <> $run_id "
                "WITH r LIMIT $chunk DELETE r RETURN count(*) AS removed"
            )
            removed_rels += self._remove_chunks(cypher, site, run_id, on_chunk)
        removed_nodes = 0
        for decl in schema.NODES:
            if decl.label in skip:
                continue
            cypher = (
                f"MATCH (n:{_quote(decl.label)}) WHERE n.site = $site AND coalesce(n.run_id, '') <> $run_id "
                "WITH n LIMIT $chunk DETACH DELETE n RETURN count(*) AS removed"
            )
            removed_nodes += self._remove_chunks(cypher, site, run_id, on_chunk)
        return removed_rels, removed_nodes

    def _remove_chunks(self, cypher: str, site: str, run_id: str, on_chunk: Callable[[], None]) -> int:
        total = 0
        while True:
            with self._session() as session:
                removed = session.execute_write(
                    lambda tx: tx.run(cypher, site=site, run_id=run_id, chunk=self.stale_chunk_rows).single()["removed"]
                )
            total += removed
            on_chunk()
            if removed < self.stale_chunk_rows:
                return total

    def delete_site(self, site: str) -> int:
        """Remove every node and relationship of a site, in chunks, and its Site node; return the items removed."""
        with _SiteLock(self, site) as lock:
            # A run id no item carries marks every item of the site as stale.
            rels, nodes = self._remove_stale(site, f"delete-{uuid.uuid4().hex}", lock.renew)
            summary = self._write(f"MATCH (s:{_quote(SITE_LABEL)} {{name: $site}}) DELETE s", site=site)
        removed = rels + nodes + summary.counters.nodes_deleted
        log.info("site %r: removed %d items from %s", site, removed, self.config.uri)
        return removed

    # -- reading ----------------------------------------------------------

    def sites(self) -> list[str]:
        """Return the names of the sites stored, sorted."""
        _, rows = self._read(f"MATCH (s:{_quote(SITE_LABEL)}) RETURN s.name ORDER BY s.name")
        return [row[0] for row in rows]

    def site_info(self, site: str | None = None) -> dict[str, Any]:
        """Return the Site node's properties of ``site`` (the only site when None)."""
        name = self._resolve_site(site)
        _, rows = self._read(f"MATCH (s:{_quote(SITE_LABEL)} {{name: $site}}) RETURN properties(s)", {"site": name})
        return rows[0][0]

    def _resolve_site(self, site: str | None) -> str:
        known = self.sites()
        if site is None:
            if len(known) == 1:
                return known[0]
            if not known:
                raise SnapshotNotFound(
                    f"Neo4j at {self.config.uri} contains no site yet; write one with 'twin neo4j build SITE_DIR' "
                    "or 'twin export neo4j'"
                )
            raise SnapshotNotFound(
                f"Neo4j at {self.config.uri} contains {len(known)} sites ({', '.join(known)}); choose one with --site"
            )
        if site not in known:
            raise SnapshotNotFound(
                f"no site {site!r} in Neo4j at {self.config.uri}; known sites: {', '.join(known) or '(none)'}"
            )
        return site

    def load_twin(self, site: str | None = None) -> Twin:
        """Load the latest twin written for ``site`` (the only site when None).

        Tables are typed as :meth:`EmbeddedStore.load_twin` types them and
        sorted by key, because Neo4j keeps no row order. A load that runs
        while another writer writes the same site can see a mix of both
        writes, because each batch is its own transaction.
        """
        info = self.site_info(site)
        name = info["name"]
        tables: dict[str, pd.DataFrame] = {}
        for decl in schema.NODES:
            _, rows = self._read(
                f"MATCH (n:{_quote(decl.label)}) WHERE n.site = $site AND NOT n:{_quote(PLACEHOLDER_LABEL)} "
                "RETURN properties(n)",
                {"site": name},
            )
            records = [row[0] for row in rows]
            if decl.label == "Segment":
                records = [dict(record, site=name) for record in records]
            tables[decl.table] = _normalise_table(decl.table, records, list(decl.key))
        for rel in schema.RELATIONSHIPS:
            if rel.table in _NODE_BY_TABLE:
                continue
            tables[rel.table] = self._load_rel_table(rel, name)
        return Twin(site=name, run_id=info.get("run_id") or "", built_at=float(info.get("built_at") or 0.0), tables=tables)

    def _load_rel_table(self, rel: schema.RelType, site: str) -> pd.DataFrame:
        start_labels, end_labels = _endpoint_labels_for(rel)
        start = _endpoint_return("a", start_labels, rel.start)
        end = _endpoint_return("b", end_labels, rel.end)
        _, rows = self._read(
            f"MATCH (a)-[r:{_quote(rel.type)}]->(b) WHERE r.site = $site RETURN {start}, {end}, properties(r)",
            {"site": site},
        )
        records = []
        for start_values, end_values, props in rows:
            record = dict(props)
            record.pop("site", None)
            record.update(zip(rel.start, start_values))
            record.update(zip(rel.end, end_values))
            records.append(record)
        return _normalise_table(rel.table, records, _rel_key(rel))

    def load_site(self, site: str | None = None) -> SiteConfig:
        """Return the site configuration stored with ``site`` (the only site when None).

        Raises
        ------
        SnapshotNotFound
            When the site was written without a configuration.
        """
        info = self.site_info(site)
        text = info.get("site_yaml")
        if not text:
            raise SnapshotNotFound(
                f"site {info['name']!r} in Neo4j at {self.config.uri} was written without its site.yaml; "
                "write it again with 'twin neo4j build SITE_DIR' or 'twin export neo4j'"
            )
        return parse_site(text, f"{self.config.uri} site {info['name']!r} site.yaml")

    def run(self, cypher: str, params: dict | None = None, *, timeout_s: float | None = None) -> pd.DataFrame:
        """Run a read query and return its rows as a DataFrame with the query's columns.

        The query runs in a read transaction, so Neo4j rejects writes in it.
        ``timeout_s`` ends it on the server after that many seconds.
        """
        columns, rows = self._read(cypher, params, timeout_s)
        return pd.DataFrame(rows, columns=columns)

    def status(self) -> dict[str, Any]:
        """Return the server version, edition and, per site, its run and the node count per label."""
        _, components = self._read("CALL dbms.components() YIELD name, versions, edition RETURN name, versions, edition")
        name, versions, edition = components[0]
        sites = []
        for site in self.sites():
            info = self.site_info(site)
            counts = {}
            for decl in schema.NODES:
                _, rows = self._read(
                    f"MATCH (n:{_quote(decl.label)}) WHERE n.site = $site AND NOT n:{_quote(PLACEHOLDER_LABEL)} "
                    "RETURN count(n)",
                    {"site": site},
                )
                counts[decl.label] = rows[0][0]
            rel_counts = {}
            for rel in schema.RELATIONSHIPS:
                _, rows = self._read(f"MATCH ()-[r:{_quote(rel.type)}]->() WHERE r.site = $site RETURN count(r)", {"site": site})
                rel_counts[rel.type] = rows[0][0]
            sites.append(
                {"site": site, "run_id": info.get("run_id"), "built_at": info.get("built_at"), "nodes": counts, "relationships": rel_counts}
            )
        return {"uri": self.config.uri, "server": name, "version": ", ".join(versions), "edition": edition, "sites": sites}


def _check_segment_site(frame: pd.DataFrame | None, site: str) -> None:
    """Warn when a Segment row names another site: its ``site`` property stores the twin's site."""
    if frame is None or frame.empty or "site" not in frame.columns:
        return
    others = sorted({value for value in frame["site"].tolist() if value is not None and value == value and value != site})
    if others:
        log.warning("segments name site(s) %s but the twin is site %r; Neo4j stores them under %r", others, site, site)


def _site_yaml(site: SiteConfig) -> str:
    """Return the YAML text of a site configuration: its file when readable, else a dump of the model."""
    path = getattr(site, "path", None)
    if path and Path(path).is_file():
        return Path(path).read_text(encoding="utf-8")
    return yaml.safe_dump(site.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=False)


# -- query text -------------------------------------------------------------


def _row_map(columns: Iterable[str], offset: int = 0) -> str:
    """Return the Cypher map entries ``site``, ``run_id`` and ``column: row[offset + i]`` for each column."""
    entries = ["site: $site", "run_id: $run_id"]
    entries += [f"{_quote(col)}: row[{offset + index}]" for index, col in enumerate(columns)]
    return ", ".join(entries)


def _node_query(decl: schema.NodeLabel, columns: list[str], *, create: bool = False, placeholder: bool = False) -> str:
    """Return the UNWIND query that writes node rows of ``columns`` (see :class:`_NodeRows`).

    ``create`` is for a label of which the site has no node yet: CREATE
    skips MERGE's lookup, and the uniqueness constraint still rejects a
    duplicate key. ``placeholder`` rows (key columns only) add the
    Placeholder label; a node that a previous run wrote in full then loses
    its other properties, because this run has no row for it.
    """
    label = _quote(decl.label)
    placeholder_label = _quote(PLACEHOLDER_LABEL)
    props = "{" + _row_map(columns) + "}"
    if create:
        labels = f"{label}:{placeholder_label}" if placeholder else label
        return f"UNWIND $rows AS row CREATE (n:{labels} {props})"
    keys = ", ".join(f"{_quote(k)}: row[{columns.index(k)}]" for k in decl.key)
    merge = f"UNWIND $rows AS row MERGE (n:{label} {{site: $site, {keys}}}) SET n = {props}"
    if placeholder:
        return f"{merge}, n:{placeholder_label}"
    return f"{merge} REMOVE n:{placeholder_label}"


def _placeholder_rows(
    node_rows: dict[str, _NodeRows], rel_rows: dict[str, dict[tuple[str, str], _RelRows]]
) -> dict[str, _NodeRows]:
    """Return, per label, the relationship endpoints that no node row provides, as key rows sorted by key."""
    written: dict[str, set[tuple]] = {}
    for decl in schema.NODES:
        rows = node_rows[decl.label]
        positions = [rows.columns.index(k) for k in decl.key]
        written[decl.label] = {tuple(row[i] for i in positions) for row in rows.rows}
    missing: dict[str, set[tuple]] = {decl.label: set() for decl in schema.NODES}
    for groups in rel_rows.values():
        for (start_label, end_label), rows in groups.items():
            split = len(rows.start)
            stop = split + len(rows.end)
            for label, first, last in ((start_label, 0, split), (end_label, split, stop)):
                known = written[label]
                missing[label].update(key for key in (row[first:last] for row in rows.rows) if key not in known)
    return {decl.label: _NodeRows(list(decl.key), sorted(missing[decl.label])) for decl in schema.NODES}


def _endpoint_labels_for(rel: schema.RelType) -> tuple[list[str], list[str]]:
    start, end = _endpoint_labels(rel.pattern)
    if rel.type in _KIND_COLUMNS:
        # Either end may be a Device or an External endpoint, whatever the pattern's start label is.
        both = sorted(set(start) | set(end))
        return both, both
    return start, end


def _label_for_kind(kind: Any) -> str:
    return "External" if kind == "external" else "Device"


def _rel_param_rows(rel: schema.RelType, arrow: pa.Table | None) -> dict[tuple[str, str], _RelRows]:
    """Split the rows of a relationship table by endpoint labels, keeping the order of ``arrow`` (by key).

    ``props`` are the columns other than the endpoint keys, ``site`` and
    ``run_id``; a relationship of a node table (HAS_INTERFACE, EXPOSES)
    has none.
    """
    if arrow is None:
        return {}
    start_labels, end_labels = _endpoint_labels_for(rel)
    if rel.table in _NODE_BY_TABLE:
        props: list[str] = []
    else:
        skip = set(rel.start) | set(rel.end) | _SET_FROM_PARAMETERS
        props = [col for col in arrow.column_names if col not in skip]
    rows = list(zip(*_arrow_values(arrow, list(rel.start) + list(rel.end) + props)))
    if rel.type not in _KIND_COLUMNS:
        return {(start_labels[0], end_labels[0]): _RelRows(rel.start, rel.end, props, rows)}
    start_kind, end_kind = _KIND_COLUMNS[rel.type]
    labels = zip(
        map(_label_for_kind, arrow.column(start_kind).to_pylist()),
        map(_label_for_kind, arrow.column(end_kind).to_pylist()),
    )
    groups: dict[tuple[str, str], _RelRows] = {}
    for pair, row in zip(labels, rows):
        group = groups.get(pair)
        if group is None:
            group = groups[pair] = _RelRows(rel.start, rel.end, props)
        group.rows.append(row)
    return groups


def _match_endpoint(var: str, label: str, offset: int) -> str:
    """Return MATCH text for one endpoint whose key values start at ``row[offset]``.

    The index hint makes the match seek the index of the label's uniqueness
    constraint (site and key) whatever the statistics say. Without it, a plan
    made while the label's nodes were still being written can scan the label
    for every row until Neo4j replans; one such plan took 54 s for 10,039
    HAS_INTERFACE rows that take under 1 s with the seek.
    """
    decl = _NODE_BY_LABEL[label]
    keys = ", ".join(f"{_quote(k)}: row[{offset + i}]" for i, k in enumerate(decl.key))
    properties = ", ".join(_quote(k) for k in ("site",) + decl.key)
    return f"MATCH ({var}:{_quote(label)} {{site: $site, {keys}}}) USING INDEX {var}:{_quote(label)}({properties}) "


def _rel_query(rel: schema.RelType, rows: _RelRows, start_label: str, end_label: str, *, create: bool = False) -> str:
    """Return the UNWIND query that writes relationship rows (see :class:`_RelRows`) between nodes written before it.

    Both endpoints exist when it runs, because the node rows and the
    placeholder rows of :func:`_placeholder_rows` are written first.
    ``create`` is for a type of which the site has no relationship yet. Rows
    are unique by key (checked in Python), so CREATE writes what MERGE would.
    """
    offset = len(rows.start) + len(rows.end)
    head = "UNWIND $rows AS row " + _match_endpoint("a", start_label, 0) + _match_endpoint("b", end_label, len(rows.start))
    props = "{" + _row_map(rows.props, offset) + "}"
    rel_type = _quote(rel.type)
    if create:
        return head + f"CREATE (a)-[r:{rel_type} {props}]->(b)"
    rel_keys = "".join(f", {_quote(k)}: row[{offset + rows.props.index(k)}]" for k in REL_KEYS.get(rel.type, ()))
    return head + f"MERGE (a)-[r:{rel_type} {{site: $site{rel_keys}}}]->(b) SET r = {props}"


def _endpoint_return(var: str, labels: list[str], columns: tuple[str, ...]) -> str:
    """Return a Cypher list expression with an endpoint's key values in the order of ``columns``."""
    if len(labels) == 1:
        decl = _NODE_BY_LABEL[labels[0]]
        return "[" + ", ".join(f"{var}.{_quote(k)}" for k in decl.key) + "]"
    cases = " ".join(
        f"WHEN {var}:{_quote(label)} THEN {var}.{_quote(_NODE_BY_LABEL[label].key[0])}" for label in labels
    )
    return f"[CASE {cases} END]"


# -- the site lock ----------------------------------------------------------


class _SiteLock:
    """A lease on one site, held in a ``(:SiteLock {site, owner, expires_at})`` node.

    The uniqueness constraint on ``SiteLock.site`` lets only one writer
    create the node; others poll every LOCK_POLL_S seconds for up to
    LOCK_WAIT_S seconds. An expired lease (a crashed writer) is taken over.
    Times are the server's clock (``timestamp()``, milliseconds).
    """

    def __init__(self, store: Neo4jStore, site: str):
        self.store = store
        self.site = site
        self.owner = uuid.uuid4().hex
        self.renewed = 0.0

    def __enter__(self) -> "_SiteLock":
        deadline = time.monotonic() + LOCK_WAIT_S
        label = _quote(LOCK_LABEL)
        while True:
            try:
                self.store._write(
                    f"OPTIONAL MATCH (old:{label} {{site: $site}}) WHERE old.expires_at < timestamp() "
                    f"DETACH DELETE old WITH 1 AS _ "
                    f"CREATE (:{label} {{site: $site, owner: $owner, expires_at: timestamp() + $lease_ms}})",
                    site=self.site,
                    owner=self.owner,
                    lease_ms=int(LOCK_LEASE_S * 1000),
                )
                self.renewed = time.monotonic()
                return self
            except ConstraintError:
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"another writer has held site {self.site!r} in Neo4j at {self.store.config.uri} for more than "
                        f"{LOCK_WAIT_S:.0f} s; wait for it to finish, or delete its (:{LOCK_LABEL} {{site}}) node "
                        "when no writer runs"
                    ) from None
                log.debug("site %r: waiting for another writer", self.site)
                time.sleep(LOCK_POLL_S)

    def renew(self) -> None:
        """Extend the lease when a tenth of it has passed; raise StoreError when the lock was lost."""
        if time.monotonic() - self.renewed < LOCK_LEASE_S / 10:
            return
        summary = self.store._write(
            f"MATCH (l:{_quote(LOCK_LABEL)} {{site: $site, owner: $owner}}) SET l.expires_at = timestamp() + $lease_ms",
            site=self.site,
            owner=self.owner,
            lease_ms=int(LOCK_LEASE_S * 1000),
        )
        if summary.counters.properties_set == 0:
            raise StoreError(
                f"the write lock of site {self.site!r} expired and another writer took it; write the site again"
            )
        self.renewed = time.monotonic()

    def __exit__(self, *exc) -> None:
        try:
            self.store._write(
                f"MATCH (l:{_quote(LOCK_LABEL)} {{site: $site, owner: $owner}}) DELETE l", site=self.site, owner=self.owner
            )
        except (Neo4jError, DriverError) as exc:
            log.warning("site %r: cannot release the write lock (%s); it expires after %.0f s", self.site, exc, LOCK_LEASE_S)


# -- whole operations for the CLI ------------------------------------------


def build_to_neo4j(site_dir: str | Path, config: Neo4jConfig | str, *, on_file=None, on_stage=None) -> WriteStats:
    """Build a site folder and write the twin to Neo4j.

    The build runs as ``twin build`` does, into a temporary workspace that is
    deleted afterwards, so the twin written is the one the embedded store
    would hold.
    """
    from twin.graph.embedded import EmbeddedStore
    from twin.pipeline import build

    with tempfile.TemporaryDirectory(prefix="twin-neo4j-build-") as folder:
        workspace = Path(folder) / "workspace.sqlite"
        build(site_dir, workspace, on_file=on_file, on_stage=on_stage)
        with EmbeddedStore(workspace, create=False) as embedded:
            run = embedded.resolve_snapshot()
            twin = embedded.load_twin(run.run_id)
            recorded_dir, site_text = embedded.config_yaml(run.run_id)
    with Neo4jStore(config) as store:
        return store.write_twin(twin, site_text=site_text, site_dir=recorded_dir)


def analyze_from_neo4j(config: Neo4jConfig | str, site: str | None = None, queries: Iterable[str] | None = None,
                       *, engine: str = "cypher") -> dict[str, pd.DataFrame]:
    """Run the query catalogue on a site's twin in Neo4j and return findings per query name.

    ``engine="cypher"`` (the default) runs the Cypher forms in ``cypher/`` on
    the server (:func:`twin.graph.cypher.run_catalogue_cypher`); the policy
    decisions and the permitted graph they take as parameters are computed
    in Python. ``engine="python"`` loads the whole twin and runs the Python
    forms; both give the same rows (tests/integration/test_cypher_parity.py).
    """
    names = list(queries) if queries else None
    if engine not in ("cypher", "python"):
        raise ValueError(f"unknown engine {engine!r}; expected cypher or python")
    with Neo4jStore(config) as store:
        if engine == "cypher":
            from twin.graph.cypher import run_catalogue_cypher

            site_config = store.load_site(site)
            return run_catalogue_cypher(store, site_config, names=names, site=site or site_config.site.name)
        twin = store.load_twin(site)
        site_config = store.load_site(twin.site)
    from twin.analysis import run_catalogue

    return run_catalogue(twin, site_config, names=names)


# Shown in reports and the app in place of the imported-files table.
NO_IMPORT_RECORDS_NOTE = (
    "The Neo4j store keeps the resolved twin only, without per-file import records or observations. "
    "Build the site into a workspace ('twin build SITE_DIR -w WORKSPACE') to see which files were imported "
    "and which records were skipped."
)


def redact_uri(uri: str) -> str:
    """Return ``uri`` without a user name or password in it, for display and cache keys.

    >>> redact_uri("neo4j://alice:secret@db.example:7687/?policy=eu")
    'neo4j://db.example:7687/?policy=eu'
    >>> redact_uri("bolt://127.0.0.1:7687")
    'bolt://127.0.0.1:7687'
    """
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def neo4j_report_context(store: Neo4jStore, site: str | None = None, *, twin: Twin | None = None):
    """Build the :class:`~twin.report.ReportContext` of a site's twin in Neo4j.

    Counts come from the twin (loaded from ``store`` unless given) as
    :meth:`twin.api.Workspace.report_context` computes them. Neo4j keeps no
    per-file import records, so ``imports`` is empty and ``imports_note``
    says why. ``workspace`` is the server URI without credentials.

    Parameters
    ----------
    store : Neo4jStore
        Open store to read from.
    site : str, optional
        Site name; the only site stored when None.
    twin : Twin, optional
        The site's twin, already loaded, to avoid reading it twice.

    Raises
    ------
    SnapshotNotFound
        When the site is not stored, or ``site`` is None and the database
        contains no site or several.
    """
    from twin.report import ReportContext, TwinCounts, describe_queries

    if twin is None:
        twin = store.load_twin(site)
    counts = TwinCounts.of(twin)
    descriptions, limitations = describe_queries()
    return ReportContext(
        site=twin.site,
        run_id=twin.run_id,
        built_at=twin.built_at,
        workspace=redact_uri(store.config.uri),
        counts=counts,
        imports=[],
        descriptions=descriptions,
        limitations=limitations,
        imports_note=NO_IMPORT_RECORDS_NOTE,
    )


def report_from_neo4j(config: Neo4jConfig | str, site: str | None = None, *, engine: str = "cypher"):
    """Run the query catalogue on a site's twin in Neo4j and return ``(findings, report context)``.

    ``engine="cypher"`` runs the Cypher forms on the server, as
    :func:`analyze_from_neo4j` does; ``engine="python"`` runs the Python
    forms on the loaded twin. Both give the same rows, though the Cypher
    forms return them in their ``ORDER BY`` order. The twin is loaded in
    both cases, because the report's counts come from it.

    Raises
    ------
    StoreError
        When the server cannot be reached.
    SnapshotNotFound
        When the site is not stored, or was written without its site.yaml.
    """
    if engine not in ("cypher", "python"):
        raise ValueError(f"unknown engine {engine!r}; expected cypher or python")
    with Neo4jStore(config) as store:
        twin = store.load_twin(site)
        site_config = store.load_site(twin.site)
        context = neo4j_report_context(store, twin.site, twin=twin)
        if engine == "cypher":
            from twin.graph.cypher import run_catalogue_cypher

            return run_catalogue_cypher(store, site_config, site=twin.site), context
    from twin.analysis import run_catalogue

    return run_catalogue(twin, site_config), context


def export_snapshot(workspace: str | Path, config: Neo4jConfig | str, snapshot: str | None = None) -> WriteStats:
    """Write one workspace snapshot (the latest by default) to Neo4j, with its site configuration."""
    from twin.graph.embedded import EmbeddedStore

    with EmbeddedStore(workspace, create=False) as embedded:
        run = embedded.resolve_snapshot(snapshot)
        twin = embedded.load_twin(run.run_id)
        site_dir, site_text = embedded.config_yaml(run.run_id)
    with Neo4jStore(config) as store:
        return store.write_twin(twin, site_text=site_text, site_dir=site_dir)


def import_site(config: Neo4jConfig | str, workspace: str | Path, site: str | None = None) -> str:
    """Copy a site's twin from Neo4j into a workspace as a new snapshot; return its run id.

    The snapshot keeps the run id and build time stored in Neo4j, so an
    exported snapshot comes back unchanged. It has no observations, because
    Neo4j holds only the resolved graph.

    Raises
    ------
    StoreError
        When the workspace already contains a snapshot with that run id.
    """
    from twin.graph.embedded import EmbeddedStore

    with Neo4jStore(config) as store:
        twin = store.load_twin(site)
        info = store.site_info(twin.site)
    site_text = info.get("site_yaml") or ""
    with EmbeddedStore(workspace) as embedded:
        if any(run.run_id == twin.run_id for run in embedded.runs()):
            raise StoreError(
                f"{workspace}: snapshot {twin.run_id} of site {twin.site!r} is already in this workspace; "
                "import into another workspace (-w) or write a new build to Neo4j first"
            )
        stats = {name: len(frame) for name, frame in twin.tables.items()}
        embedded.write_build(
            run_id=twin.run_id,
            site=twin.site,
            site_dir=info.get("site_dir") or f"{store.config.uri}",
            config_yaml=site_text,
            started_at=twin.built_at,
            finished_at=twin.built_at,
            twin=twin,
            observations=[],
            flows=[],
            import_files=[],
            summary={"stats": stats, "imported_from": store.config.uri},
        )
    log.info("site %r run %s: imported from %s into %s", twin.site, twin.run_id, store.config.uri, workspace)
    return twin.run_id
