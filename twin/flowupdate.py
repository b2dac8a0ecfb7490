"""Incremental twin update: the batches of a collector run become one derived snapshot.

A flow collector aggregates flow records into edges per (src_ip, dst_ip,
proto, dst_port) and hourly buckets, and every batch calls
:func:`apply_flow_batch`. The batch is mapped to devices with the resolver's
rules (:func:`twin.resolve.resolver._communications`) and merged into the
communications of the collector run's snapshot. The first batch of a run
derives a new snapshot from the site's latest one. Each later batch commits a
snapshot that replaces the previous one of the run, in the same transaction,
so a collector run adds one snapshot on top of its base however many batches
it stores. No discovery file is read again.

Merge rules
-----------
* A communication already in the snapshot gets the batch's bytes, packets
  and flows added, the earlier ``first_seen`` and the later ``last_seen``,
  the batch's source added to ``sources`` and the new run id.
* An internal address that no device has becomes a flow-only device, as
  in a full build. It gets the resolver's identity record for a flow
  address, a class from the ports it receives flows on, a segment by CIDR
  and the site's criticality rules.
* External addresses become ``externals`` rows, and TCP/UDP destination
  ports of devices become ``services`` rows, as the resolver makes them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from twin.exceptions import SnapshotNotFound, StoreError
from twin.graph.embedded import FLOW_HOUR_COLUMNS, EmbeddedStore, RunInfo, SnapshotChanged
from twin.model.observation import FLOW_COLUMNS
from twin.model.site import SiteConfig, parse_site
from twin.model.twin import TABLES, Twin
from twin.resolve.addresses import AddressPlan
from twin.resolve.identity import cluster_identities
from twin.resolve.resolver import (
    _apply_criticality,
    _build_devices,
    _communications,
    _flow_ip_records,
    _ip_owner,
    _listening_ports,
    _services,
)
from twin.resolve.segments import assign_segments

__all__ = ["BatchResult", "CollectorRun", "apply_flow_batch", "latest_site_run", "merge_flow_batch"]

log = logging.getLogger(__name__)

# Attempts to derive a snapshot when another snapshot of the site is
# committed between reading the base and writing (a build or a second
# collector writing to the same workspace).
WRITE_ATTEMPTS = 3

_COMMUNICATION_KEYS = ["src_id", "dst_id", "proto", "dst_port"]


@dataclass
class BatchResult:
    """Tables a batch changes and what it changed."""

    tables: dict[str, pd.DataFrame]
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class CollectorRun:
    """One collector run's progress in a workspace: the snapshot its batches go into.

    ``run_id`` identifies the collector run (not a snapshot). ``snapshot_id``
    is the run's current snapshot, derived from ``base_run_id``, and the
    other fields describe the batches it contains. ``first_batch_at`` is
    the start of the first batch and ``last_batch_at`` the end of the last
    one (epoch seconds). ``merged`` sums the counts of
    :func:`merge_flow_batch`, ``edges`` among them. They start over when
    another snapshot of the site is committed after the run's snapshot,
    because the next batch then goes into a new snapshot derived from that
    one.
    """

    run_id: str
    source: str = "netflow"
    origin: str = "udp://127.0.0.1:2055"
    snapshot_id: str | None = None
    base_run_id: str | None = None
    # Snapshots this run committed, oldest first, without the ones it replaced.
    snapshots: list[str] = field(default_factory=list)
    batches: int = 0
    first_batch_at: float | None = None
    last_batch_at: float | None = None
    merged: dict[str, int] = field(default_factory=dict)

    @classmethod
    def new(cls, *, source: str = "netflow", origin: str = "udp://127.0.0.1:2055") -> "CollectorRun":
        """Return a run with a new id (``collect-`` and a sortable time stamp)."""
        from twin.pipeline import new_run_id

        return cls(run_id=f"collect-{new_run_id()}", source=source, origin=origin)

    def start_over(self) -> None:
        """Forget the current snapshot, so the next batch derives a new one from the site's latest snapshot."""
        self.snapshot_id = None
        self.base_run_id = None
        self.batches = 0
        self.first_batch_at = None
        self.last_batch_at = None
        self.merged = {}

    def summary(self, counts: dict[str, int], started_at: float | None, ended_at: float, counters: dict[str, Any] | None) -> dict[str, Any]:
        """Return the ``collector`` part of the summary of the snapshot that adds one batch to this run's."""
        merged = dict(self.merged)
        for name, value in counts.items():
            merged[name] = merged.get(name, 0) + int(value)
        first = self.first_batch_at if self.first_batch_at is not None else started_at
        return {
            "run_id": self.run_id,
            "source": self.source,
            "origin": self.origin,
            "batches": self.batches + 1,
            "first_batch_at": first if first is not None else ended_at,
            "last_batch_at": ended_at,
            "merged": merged,
            "counters": dict(counters or {}),
        }

    def record(self, snapshot_id: str, base_run_id: str, summary: dict[str, Any]) -> None:
        """Take over the state of the snapshot just committed."""
        if self.snapshot_id in self.snapshots:
            self.snapshots.remove(self.snapshot_id)
        self.snapshots.append(snapshot_id)
        self.snapshot_id = snapshot_id
        self.base_run_id = base_run_id
        self.batches = summary["batches"]
        self.first_batch_at = summary["first_batch_at"]
        self.last_batch_at = summary["last_batch_at"]
        self.merged = dict(summary["merged"])


def latest_site_run(store: EmbeddedStore, site_name: str | None) -> RunInfo:
    """Return the latest committed snapshot of a site (of any site when ``site_name`` is None).

    Raises SnapshotNotFound, naming the workspace and telling the user to
    run ``twin build`` first, when there is none.
    """
    runs = store.runs()
    if site_name is not None:
        runs = [run for run in runs if run.site == site_name]
    if not runs:
        which = f"no snapshot of site {site_name!r}" if site_name is not None else "no snapshot"
        raise SnapshotNotFound(
            f"{store.path}: the workspace contains {which} yet; run 'twin build SITE_DIR -w {store.path}' first, "
            "then start the collector again"
        )
    return runs[-1]


def apply_flow_batch(
    workspace_path: str | Path,
    site_config: SiteConfig | None,
    edges: pd.DataFrame,
    hours: pd.DataFrame,
    *,
    source: str = "netflow",
    origin: str = "udp://127.0.0.1:2055",
    started_at: float | None = None,
    ended_at: float | None = None,
    run: CollectorRun | None = None,
    counters: dict[str, Any] | None = None,
) -> str | None:
    """Merge one batch of aggregated flows into a collector run's snapshot and commit it.

    The first batch of ``run`` derives a snapshot from the site's latest
    snapshot. Each later batch derives from the run's snapshot and replaces
    it (:meth:`EmbeddedStore.write_derived_snapshot` with ``replaces``), so
    the workspace contains one snapshot per run. When another snapshot of the
    site (a build, or another collector) was committed after the run's
    snapshot, the run's snapshot stays as it is and the batch starts a new
    snapshot derived from the newer one.

    Parameters
    ----------
    workspace_path : path
        Workspace file written by ``twin build``.
    site_config : SiteConfig or None
        Site whose latest snapshot is the base; its segments and internal
        prefixes decide which addresses are internal. None uses the site
        configuration recorded with the workspace's latest snapshot.
    edges : DataFrame
        Aggregated flows with :data:`FLOW_COLUMNS`, stored as the snapshot's
        flow observations.
    hours : DataFrame
        Hourly buckets with :data:`FLOW_HOUR_COLUMNS`, stored as the
        snapshot's flow hours.
    source, origin : str
        Source name (``netflow`` for NetFlow, IPFIX and sFlow) and where the
        flows came from, recorded with the flows. A given ``run`` overrides them.
    started_at, ended_at : float, optional
        Start and end of the batch, epoch seconds (``ended_at`` defaults to
        now); recorded in the snapshot summary.
    run : CollectorRun, optional
        The collector run the batch belongs to; updated in place after the
        commit. Without it the batch is a run of its own and adds a snapshot.
    counters : dict, optional
        Collector counters at the end of the batch, recorded in the summary.

    Returns
    -------
    str or None
        Run id of the new snapshot, or None when ``edges`` is empty (no
        snapshot is written).

    Raises
    ------
    SnapshotNotFound
        When the workspace or a snapshot of the site does not exist yet.
    StoreError
        When other snapshots keep being committed while the batch is merged
        (after :data:`WRITE_ATTEMPTS` attempts).
    """
    from twin.pipeline import new_run_id

    if edges is None or edges.empty:
        return None
    if run is None:
        run = CollectorRun.new(source=source, origin=origin)
    source, origin = run.source, run.origin
    ended_at = time.time() if ended_at is None else ended_at
    site_name = site_config.site.name if site_config is not None else None
    with EmbeddedStore(workspace_path, create=False) as store:
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            latest = latest_site_run(store, site_name)
            if run.snapshot_id is not None and latest.run_id != run.snapshot_id:
                log.warning(
                    "collector run %s: snapshot %s of site %r was committed after the run's snapshot %s, "
                    "which keeps the %d batches so far; the next batches go into a new snapshot derived from %s",
                    run.run_id, latest.run_id, latest.site, run.snapshot_id, run.batches, latest.run_id,
                )
                run.start_over()
            # The run's snapshot contains every earlier batch, so the batch merges into it.
            current = latest
            base_run_id = run.base_run_id if run.snapshot_id is not None else latest.run_id
            site = site_config
            if site is None:
                site_dir, text = store.config_yaml(current.run_id)
                site = parse_site(text, str(Path(site_dir) / "site.yaml"))
            run_id = new_run_id()
            twin = store.load_twin(current.run_id)
            batch = merge_flow_batch(twin, site, edges, run_id=run_id, source=source)
            stats = dict((current.summary or {}).get("stats") or {})
            stats.update({name: len(frame) for name, frame in batch.tables.items()})
            collector = run.summary(batch.counts, started_at, ended_at, counters)
            summary = {
                "stats": stats,
                "derived_from": base_run_id,
                "collector": collector,
                "flow_batch": {"source": source, "origin": origin, "started_at": started_at, "ended_at": ended_at, **batch.counts},
            }
            try:
                store.write_derived_snapshot(
                    base_run_id=base_run_id,
                    run_id=run_id,
                    tables=batch.tables,
                    summary=summary,
                    # The discovery files of a derived snapshot are its base's,
                    # read when the base build started.
                    started_at=float(current.started_at or current.finished_at),
                    flows=[(source, origin, edges[list(FLOW_COLUMNS)])],
                    flow_hours=[(source, origin, hours[list(FLOW_HOUR_COLUMNS)])] if hours is not None and not hours.empty else [],
                    replaces=run.snapshot_id,
                )
            except SnapshotChanged as exc:
                log.info("run %s: attempt %d of %d: %s", run_id, attempt, WRITE_ATTEMPTS, exc)
                continue
            except SnapshotNotFound as exc:
                if run.snapshot_id is None:
                    raise
                # The run's snapshot was pruned after the check above; start a new one.
                log.warning("collector run %s: attempt %d of %d: %s", run.run_id, attempt, WRITE_ATTEMPTS, exc)
                run.start_over()
                continue
            replaced = run.snapshot_id
            run.record(run_id, base_run_id, collector)
            log.info(
                "run %s: %d flow edges from %s merged into snapshot %s (batch %d of collector run %s%s): %s",
                run_id, len(edges), origin, current.run_id, run.batches, run.run_id,
                f", replacing {replaced}" if replaced else "", batch.counts,
            )
            return run_id
    raise StoreError(
        f"{workspace_path}: other snapshots were committed during each of {WRITE_ATTEMPTS} attempts to add a flow batch; "
        "stop the other writer (a build or a second collector) and try again"
    )


def merge_flow_batch(twin: Twin, site: SiteConfig, edges: pd.DataFrame, *, run_id: str, source: str) -> BatchResult:
    """Return the snapshot tables a batch of aggregated flows changes, merged with ``twin``'s.

    Only changed tables are returned: always ``communications``, and
    ``devices``, ``memberships``, ``externals`` and ``services`` when the
    batch adds to them. ``twin`` is not modified.
    """
    plan = AddressPlan([cidr for seg in site.segments for cidr in seg.cidrs], site.external.internal_cidrs)
    devices = twin.devices
    ip_owner = _ip_owner(devices[["device_id", "ips", "last_seen"]].to_dict("records")) if not devices.empty else {}
    tables: dict[str, pd.DataFrame] = {}
    counts: dict[str, int] = {"edges": len(edges)}

    new_devices, new_memberships, owners = _flow_only_devices(edges, plan, ip_owner, set(devices["device_id"]), site, run_id)
    ip_owner.update(owners)
    counts["devices_added"] = len(new_devices)
    if len(new_devices):
        tables["devices"] = _append(devices, new_devices, "devices")
        tables["memberships"] = _append(twin.memberships, new_memberships, "memberships")

    batch_comms, batch_externals, _ = _communications([(source, edges)], plan, ip_owner, run_id)
    communications, added, updated = _merge_communications(twin.communications, batch_comms, source, run_id)
    tables["communications"] = communications
    counts["communications_added"] = added
    counts["communications_updated"] = updated

    if not batch_externals.empty:
        externals, added = _merge_externals(twin.externals, batch_externals, run_id)
        tables["externals"] = externals
        counts["externals_added"] = added

    batch_services = _services([], [], batch_comms, run_id)
    if not batch_services.empty:
        services, added, changed = _merge_services(twin.services, batch_services, run_id)
        if added or changed:
            tables["services"] = services
        counts["services_added"] = added
    # NOTE: a full build would also reclassify existing devices from the ports
    # they now receive flows on, and widen their first_seen and last_seen to
    # the flow times. A derived snapshot keeps existing device rows unchanged.
    return BatchResult(tables=tables, counts=counts)


def _flow_only_devices(edges, plan, ip_owner, known_ids, site: SiteConfig, run_id: str):
    """Return (devices, memberships, owner of each address) for internal flow addresses that no device has."""
    records = [record for record in _flow_ip_records([edges], plan) if record.ips[0] not in ip_owner]
    if not records:
        return pd.DataFrame(), pd.DataFrame(), {}
    clusters = cluster_identities(records, ip_window_s=site.resolution.ip_time_window_s)
    rows, _ = _build_devices([], clusters, clusters.groups(), site, _listening_ports([edges]))
    owners = {ip: row["device_id"] for row in rows for ip in row["ips"]}

    # A device id is a hash of the address, so a clash means the device is
    # already in the snapshot under that id: the address maps to it.
    rows = [row for row in rows if row["device_id"] not in known_ids]
    if not rows:
        return pd.DataFrame(), pd.DataFrame(), owners

    segment_ids, evidence = assign_segments([row["ips"][0] for row in rows], [None] * len(rows), site)
    building_of = {seg.id: seg.building for seg in site.segments}
    memberships = []
    for row, segment_id, why in zip(rows, segment_ids, evidence):
        row["segment_id"] = segment_id
        row["run_id"] = run_id
        if segment_id is None:
            continue
        row["building"] = row.get("building") or building_of.get(segment_id)
        memberships.append(
            {
                "device_id": row["device_id"],
                "segment_id": segment_id,
                "evidence": why,
                "first_seen": row["first_seen"],
                "last_seen": row["last_seen"],
                "sources": row["sources"],
                "run_id": run_id,
            }
        )

    new = Twin(site=site.site.name, run_id=run_id, built_at=time.time(), tables={"devices": pd.DataFrame(rows)})
    _apply_criticality(new, site)
    return new.devices, pd.DataFrame(memberships), owners


def _append(base: pd.DataFrame, rows: pd.DataFrame, table: str) -> pd.DataFrame:
    if rows.empty:
        return base
    columns = list(dict.fromkeys([*TABLES[table], *base.columns, *rows.columns]))
    parts = [frame.reindex(columns=columns) for frame in (base, rows) if not frame.empty]
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def _with_source(sources: Any, source: str) -> list[str]:
    current = list(sources) if isinstance(sources, (list, tuple, np.ndarray)) else []
    return current if source in current else sorted([*current, source])


def _merge_communications(base: pd.DataFrame, batch: pd.DataFrame, source: str, run_id: str) -> tuple[pd.DataFrame, int, int]:
    """Add the batch's rows to the matching base rows; append the others. Return (table, added, updated)."""
    if batch.empty:
        return base, 0, 0
    if base.empty:
        return batch.reset_index(drop=True), len(batch), 0
    base = base.reset_index(drop=True).copy()
    base["dst_port"] = pd.to_numeric(base["dst_port"], errors="coerce").fillna(0).astype("int64")
    batch = batch.copy()
    batch["dst_port"] = batch["dst_port"].astype("int64")
    index = base[_COMMUNICATION_KEYS].astype({"src_id": object, "dst_id": object, "proto": object}).copy()
    index["_row"] = np.arange(len(base))
    joined = batch.astype({"src_id": object, "dst_id": object, "proto": object}).merge(index, on=_COMMUNICATION_KEYS, how="left")
    matched = joined["_row"].notna().to_numpy()

    rows = joined.loc[matched, "_row"].to_numpy(dtype=np.int64)
    hits = joined[matched]
    for column in ("bytes", "packets", "flows"):
        values = pd.to_numeric(base[column], errors="coerce").fillna(0).to_numpy(dtype=np.int64, copy=True)
        values[rows] += hits[column].to_numpy(dtype=np.int64)
        base[column] = values
    first = pd.to_numeric(base["first_seen"], errors="coerce").to_numpy(dtype=np.float64, copy=True)
    first[rows] = np.fmin(first[rows], hits["first_seen"].to_numpy(dtype=np.float64))
    base["first_seen"] = first
    last = pd.to_numeric(base["last_seen"], errors="coerce").to_numpy(dtype=np.float64, copy=True)
    last[rows] = np.fmax(last[rows], hits["last_seen"].to_numpy(dtype=np.float64))
    base["last_seen"] = last
    sources = base["sources"].tolist()
    run_ids = base["run_id"].tolist()
    for row in rows.tolist():
        sources[row] = _with_source(sources[row], source)
        run_ids[row] = run_id
    base["sources"] = pd.Series(sources, dtype=object)
    base["run_id"] = pd.Series(run_ids, dtype=object)

    added = batch[~matched]
    merged = _append(base, added, "communications") if not added.empty else base
    return merged, int((~matched).sum()), int(matched.sum())


def _merge_externals(base: pd.DataFrame, batch: pd.DataFrame, run_id: str) -> tuple[pd.DataFrame, int]:
    if base.empty:
        return batch.reset_index(drop=True), len(batch)
    base = base.reset_index(drop=True).copy()
    position = {address: row for row, address in enumerate(base["address"].tolist())}
    first = pd.to_numeric(base["first_seen"], errors="coerce").to_numpy(dtype=np.float64, copy=True)
    last = pd.to_numeric(base["last_seen"], errors="coerce").to_numpy(dtype=np.float64, copy=True)
    sources = base["sources"].tolist()
    run_ids = base["run_id"].tolist()
    new_rows = []
    for record in batch.to_dict("records"):
        row = position.get(record["address"])
        if row is None:
            new_rows.append(record)
            continue
        first[row] = np.fmin(first[row], record["first_seen"])
        last[row] = np.fmax(last[row], record["last_seen"])
        sources[row] = _with_source(sources[row], "flows")
        run_ids[row] = run_id
    base["first_seen"] = first
    base["last_seen"] = last
    base["sources"] = pd.Series(sources, dtype=object)
    base["run_id"] = pd.Series(run_ids, dtype=object)
    return _append(base, pd.DataFrame(new_rows), "externals"), len(new_rows)


def _merge_services(base: pd.DataFrame, batch: pd.DataFrame, run_id: str) -> tuple[pd.DataFrame, int, int]:
    """Append unseen (device, proto, port) services; mark known ones as seen in flows. Return (table, added, changed)."""
    if base.empty:
        return batch.reset_index(drop=True), len(batch), 0
    base = base.reset_index(drop=True).copy()
    position = {
        (device_id, str(proto), int(port)): row
        for row, (device_id, proto, port) in enumerate(zip(base["device_id"], base["proto"], base["port"]))
        if port is not None and port == port
    }
    sources = base["sources"].tolist()
    run_ids = base["run_id"].tolist()
    new_rows, changed = [], 0
    for record in batch.to_dict("records"):
        row = position.get((record["device_id"], str(record["proto"]), int(record["port"])))
        if row is None:
            new_rows.append(record)
        elif "flows" not in (sources[row] or []):
            sources[row] = _with_source(sources[row], "flows")
            run_ids[row] = run_id
            changed += 1
    base["sources"] = pd.Series(sources, dtype=object)
    base["run_id"] = pd.Series(run_ids, dtype=object)
    return _append(base, pd.DataFrame(new_rows), "services"), len(new_rows), changed
