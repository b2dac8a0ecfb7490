"""The build pipeline: site folder in, committed snapshot out.

``build`` finds the discovery files of a site, imports each one, resolves
the observations into a twin and writes everything to the store in one
transaction. A file that cannot be read is reported and skipped; the build
goes on with the others. Results of a live collector (``extra_results``,
such as a live SNMP crawl) join the file imports in the same snapshot.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import secrets
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from twin.discovery import detect_format, import_path
from twin.exceptions import ConfigError, InputFormatError, TwinError
from twin.graph.embedded import EmbeddedStore
from twin.model.observation import ImportResult
from twin.model.site import SiteConfig, load_site
from twin.resolve import resolve
from twin.resolve.stale import (
    LIVE_ORIGIN_PREFIX,
    absent_devices,
    absent_walks,
    carry_forward,
    mark_stale,
    previous_live_observations,
    stale_devices,
)

__all__ = ["BuildResult", "build", "find_discovery_files", "new_run_id", "SKIPPED_NAMES"]

log = logging.getLogger(__name__)

# Origin of the flows a live collector (twin collect flows) stored; file
# builds carry these forward.
COLLECTED_ORIGIN_PREFIX = "udp://"
# Files in a site folder that are never discovery input: the configuration,
# notes, and the ground truth that sample sites carry beside their data.
# No discovery format is YAML, so proposed policies and other YAML files
# beside site.yaml are configuration too, and a workspace kept in the site
# folder (SQLite with its WAL files) is the build's output, not input.
SKIPPED_NAMES = {"site.yaml", "site.yml", "readme.md", "readme.txt"}
SKIPPED_PREFIXES = ("ground_truth",)
SKIPPED_SUFFIXES = (".yaml", ".yml", ".sqlite", ".sqlite-wal", ".sqlite-shm")
# Issues kept per file in the store and the report; the rest are counted.
MAX_ISSUES_PER_FILE = 200
# Worker processes for importing files (TWIN_IMPORT_WORKERS, default: the
# machine's cores, at most 4; 1 imports in the calling process), and the
# total input size below which one process is faster.
IMPORT_WORKERS = int(os.environ.get("TWIN_IMPORT_WORKERS") or min(4, os.cpu_count() or 1))
PARALLEL_IMPORT_MIN_BYTES = 64 * 1024 * 1024


@dataclass
class FileSummary:
    """Import outcome of one discovery file in a build."""

    path: str
    format: str | None
    records_read: int = 0
    records_skipped: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    issues: list[str] = field(default_factory=list)
    error: str | None = None
    sha256: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "records_read": self.records_read,
            "records_skipped": self.records_skipped,
            "counts": self.counts,
            "issues": self.issues if not self.error else [self.error] + self.issues,
            "sha256": self.sha256,
        }


@dataclass
class BuildResult:
    """Outcome of one build."""

    run_id: str
    site: str
    workspace: str
    files: list[FileSummary]
    stats: dict[str, int]
    conflicts: list[str]
    timings: dict[str, float]


def new_run_id(now: float | None = None) -> str:
    """Return a sortable run id: UTC time plus a random suffix."""
    stamp = datetime.fromtimestamp(now or time.time(), tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def find_discovery_files(site_dir: Path, exclude: tuple[Path, ...] = ()) -> list[tuple[Path, str | None]]:
    """Return every file under ``site_dir`` with its detected format (None when unrecognised).

    Hidden files and folders and everything under ``exclude`` (the site's
    report folder) are left out, so a build never reads its own reports.
    """
    excluded = tuple(p.resolve() for p in exclude)
    out = []
    for path in sorted(site_dir.rglob("*")):
        name = path.name.lower()
        if not path.is_file() or name in SKIPPED_NAMES or name.startswith(SKIPPED_PREFIXES) or name.endswith(SKIPPED_SUFFIXES):
            continue
        relative = path.relative_to(site_dir).parts
        if any(part.startswith(".") for part in relative):
            continue
        resolved = path.resolve()
        if any(resolved == e or e in resolved.parents for e in excluded):
            continue
        out.append((path, detect_format(path)))
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _import_one(path: Path, fmt: str | None, options: dict) -> ImportResult | str:
    """Import one file; return its result, or the error message when it cannot be read."""
    if fmt is None:
        return f"{path}: unrecognised file format; skipped"
    if fmt == "inventory-csv":
        file_options = {key: value for key, value in options.items() if key == "column_map"}
    elif fmt in ("pcap", "pcapng"):
        file_options = {key: value for key, value in options.items() if key == "export_ports"}
    else:
        file_options = {}
    try:
        return import_path(path, fmt, **file_options)
    except InputFormatError as exc:
        return str(exc)


def _import_all(files, options, on_file) -> list[ImportResult | str]:
    """Import every file, in worker processes when the site is large enough to gain from it."""
    total_bytes = sum(path.stat().st_size for path, _ in files)
    workers = min(IMPORT_WORKERS, len(files))
    if workers < 2 or total_bytes < PARALLEL_IMPORT_MIN_BYTES:
        outcomes = []
        for index, (path, fmt) in enumerate(files):
            if on_file:
                on_file(path, index, len(files))
            outcomes.append(_import_one(path, fmt, options))
        return outcomes

    # Largest files first, so one big flow log does not finish last alone.
    order = sorted(range(len(files)), key=lambda i: -files[i][0].stat().st_size)
    outcomes: list[ImportResult | str | None] = [None] * len(files)
    # fork, unlike spawn, works from scripts and notebooks without a
    # __main__ guard; the parent has not started pyarrow threads by now.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(_import_one, files[i][0], files[i][1], options): i for i in order}
        for done, future in enumerate(as_completed(futures)):
            index = futures[future]
            if on_file:
                on_file(files[index][0], done, len(files))
            outcomes[index] = future.result()
    return outcomes


def _live_summary(result: ImportResult) -> FileSummary:
    """Return the import summary row of a live collector's result."""
    summary = FileSummary(path=result.path, format=f"{result.source}-live")
    summary.records_read = result.records_read
    summary.records_skipped = result.records_skipped
    summary.counts = dict(result.counts)
    summary.issues = [str(issue) for issue in result.issues[:MAX_ISSUES_PER_FILE]]
    if len(result.issues) > MAX_ISSUES_PER_FILE:
        summary.issues.append(f"... and {len(result.issues) - MAX_ISSUES_PER_FILE} more issues in {result.path}")
    return summary


def _keep_stale_devices(workspace, site, observations, resolution, resolve_again, run_id):
    """Carry forward the previous live observations of devices this crawl did not find, and mark them stale.

    ``observations`` is extended in place with the carried observations, so
    the store keeps them in this run as well. Resolves a second time only
    when something is carried.
    """
    with EmbeddedStore(workspace) as store:
        previous = previous_live_observations(store, site.site.name)
    walks = absent_walks(previous, observations) if previous else set()
    devices = absent_devices(previous, resolution.twin) if previous else set()
    carried = carry_forward(previous, walks, devices)
    if carried:
        fresh_count = len(observations)
        observations.extend(carried)
        resolution = resolve_again()
        stale = stale_devices(observations, resolution.observation_devices, fresh_count)
    else:
        stale = set()
    mark_stale(resolution.twin, stale)
    resolution.stats["stale_devices"] = len(stale)
    resolution.stats["carried_observations"] = len(carried)
    log.info("run %s: %d devices absent from the live crawl kept as stale (%d observations carried forward)", run_id, len(stale), len(carried))
    return resolution


def _keep_live_observations(workspace, site, observations, resolution, resolve_again, run_id):
    """Carry the previous snapshot's live SNMP observations into a build without a crawl.

    A file build must not drop what the last crawl found: its observations
    are added unchanged, and devices that were stale stay stale unless a
    file names them.
    """
    if not Path(workspace).exists():
        return resolution
    with EmbeddedStore(workspace) as store:
        previous = previous_live_observations(store, site.site.name)
        was_stale = _previously_stale(store, site.site.name) if previous else set()
    if not previous:
        return resolution
    # A walk that this build also reads from a file (the crawl's recording
    # kept in the site folder) is not carried, so it is not counted twice.
    uncovered = absent_walks(previous, observations, files=True)
    carried = [observation for observation, _, _ in previous if observation.origin in uncovered]
    fresh_count = len(observations)
    if carried:
        observations.extend(carried)
        resolution = resolve_again()
    # Files refresh the devices they name, except crawl recordings, because
    # a recording of an earlier crawl contains no more than that crawl did.
    named_by_files = {
        device_id
        for observation, pair in zip(observations[:fresh_count], resolution.observation_devices[:fresh_count])
        if not observation.origin.startswith(LIVE_ORIGIN_PREFIX)
        for device_id in pair
        if device_id
    }
    stale = (was_stale & set(resolution.twin.devices["device_id"])) - named_by_files
    mark_stale(resolution.twin, stale)
    resolution.stats["stale_devices"] = len(stale)
    resolution.stats["carried_observations"] = len(carried)
    log.info("run %s: %d observations of the last live crawl carried into a file build", run_id, len(carried))
    return resolution


def _collected_flows(workspace, site: str) -> tuple[list, list]:
    """Return the flows and hour buckets that flow collectors added to the site's latest snapshot.

    Collected flows exist only in the workspace (``twin collect flows``),
    so a file build carries them forward from every snapshot in the latest
    snapshot's lineage, as (source, frame, origin) and (source, origin,
    hours) tuples. A build that carried them before stores them under its
    own run id, so they are counted once.
    """
    if not Path(workspace).exists():
        return [], []
    with EmbeddedStore(workspace) as store:
        runs = [run for run in store.runs() if run.site == site]
        if not runs:
            return [], []
        flows, hours = [], []
        for run_id in store.lineage(runs[-1].run_id):
            for source, origin, frame in store.flow_observations(run_id):
                if origin.startswith(COLLECTED_ORIGIN_PREFIX):
                    flows.append((source, frame, origin))
        stored_hours = store.flow_hours(runs[-1].run_id)
    collected = stored_hours[stored_hours["origin"].str.startswith(COLLECTED_ORIGIN_PREFIX)]
    for (source, origin), frame in collected.groupby(["source", "origin"], sort=False):
        hours.append((source, origin, frame.drop(columns=["run_id", "source", "origin"]).reset_index(drop=True)))
    return flows, hours


def _previously_stale(store: EmbeddedStore, site: str) -> set[str]:
    """Return the ids of the devices marked stale in the site's latest snapshot."""
    runs = [run for run in store.runs() if run.site == site]
    if not runs:
        return set()
    devices = store.load_twin(runs[-1].run_id, tables=["devices"]).devices
    if "stale" not in devices.columns:
        return set()
    return {device_id for device_id, stale in zip(devices["device_id"], devices["stale"]) if stale is True}


def build(
    site_dir: str | Path,
    workspace: str | Path,
    *,
    on_file: Callable[[Path, int, int], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    extra_results: Sequence[ImportResult] = (),
    live_crawl: bool = False,
    exclude_dirs: Sequence[str | Path] = (),
    flow_ports: Sequence[int] = (),
) -> BuildResult:
    """Import every discovery file of a site, resolve, and commit a snapshot.

    Parameters
    ----------
    site_dir : path
        Folder holding ``site.yaml`` and the discovery files (any depth).
    workspace : path
        Workspace file of the embedded store.
    on_file : callable, optional
        Progress callback ``(path, index, total)`` before each file.
    on_stage : callable, optional
        Progress callback with the stage name.
    extra_results : sequence of ImportResult
        Results of live collectors, added after the files; each is listed
        in the import summary under its origin (``snmp://HOST:PORT``).
    live_crawl : bool
        True when ``extra_results`` hold a complete live SNMP crawl. Devices
        that the site's previous snapshot knew from live SNMP observations
        and this crawl did not find are kept with their previous
        observations and marked ``stale`` (see :mod:`twin.resolve.stale`).
        False (a file build): the previous snapshot's live observations are
        carried forward unchanged, so a rebuild keeps what the last crawl
        found.
    exclude_dirs : sequence of path
        Folders under ``site_dir`` not read as discovery files, such as
        the recordings of the crawl in ``extra_results``.
    flow_ports : sequence of int
        UDP ports of flow exports in pcap files, added to the site's
        ``flows.export_ports``.

    Raises
    ------
    ConfigError
        When ``site.yaml`` is missing or invalid (nothing is written).
    """
    site_dir = Path(site_dir)
    if not site_dir.is_dir():
        raise ConfigError(f"{site_dir}: site folder not found; pass the folder that holds site.yaml")
    started = time.time()
    timings: dict[str, float] = {}
    site: SiteConfig = load_site(site_dir)
    config_yaml = (site_dir / "site.yaml").read_text(encoding="utf-8")
    run_id = new_run_id(started)
    # Open the workspace before the long import, so a wrong path fails at once.
    EmbeddedStore(workspace).close()
    log.info("run %s: build of site %r from %s started", run_id, site.site.name, site_dir)

    report_dir = Path(site.reports.output_dir)
    excluded = (report_dir if report_dir.is_absolute() else site_dir / report_dir, *map(Path, exclude_dirs))
    files = find_discovery_files(site_dir, exclude=excluded)
    observations = []
    flow_frames = []
    hour_frames: list[tuple[str, str, Any]] = []
    summaries: list[FileSummary] = []
    t = time.perf_counter()
    options = {"column_map": site.inventory.column_map} if site.inventory.column_map else {}
    options["export_ports"] = sorted(set(site.flows.export_ports).union(flow_ports))
    outcomes = _import_all(files, options, on_file)
    for (path, fmt), outcome in zip(files, outcomes):
        rel = str(path)
        summary = FileSummary(path=rel, format=fmt)
        summaries.append(summary)
        if isinstance(outcome, str):
            summary.error = outcome
            log.warning("run %s: %s", run_id, outcome)
            continue
        result: ImportResult = outcome
        summary.sha256 = _sha256(path)
        summary.records_read = result.records_read
        summary.records_skipped = result.records_skipped
        summary.counts = dict(result.counts)
        summary.issues = [str(issue) for issue in result.issues[:MAX_ISSUES_PER_FILE]]
        if len(result.issues) > MAX_ISSUES_PER_FILE:
            summary.issues.append(f"... and {len(result.issues) - MAX_ISSUES_PER_FILE} more issues in {rel}")
        for issue in result.issues[:20]:
            log.warning("run %s: %s", run_id, issue)
        observations.extend(result.observations)
        if result.flows is not None and len(result.flows):
            flow_frames.append((result.source, result.flows, rel))
        if result.flow_hours is not None and len(result.flow_hours):
            hour_frames.append((result.source, rel, result.flow_hours))
    for result in extra_results:
        summaries.append(_live_summary(result))
        observations.extend(result.observations)
        if result.flows is not None and len(result.flows):
            flow_frames.append((result.source, result.flows, result.path))
        if result.flow_hours is not None and len(result.flow_hours):
            hour_frames.append((result.source, result.path, result.flow_hours))
    carried_flows, carried_hours = _collected_flows(workspace, site.site.name)
    flow_frames.extend(carried_flows)
    hour_frames.extend(carried_hours)
    timings["import"] = time.perf_counter() - t

    t = time.perf_counter()

    def resolve_all():
        """Resolve every observation and flow gathered so far (again after carrying observations forward)."""
        return resolve(
            observations,
            [(source, frame) for source, frame, _ in flow_frames],
            site,
            run_id=run_id,
            built_at=started,
            progress=on_stage,
        )

    resolution = resolve_all()
    if live_crawl:
        resolution = _keep_stale_devices(workspace, site, observations, resolution, resolve_all, run_id)
    else:
        resolution = _keep_live_observations(workspace, site, observations, resolution, resolve_all, run_id)
    timings["resolve"] = time.perf_counter() - t

    if on_stage:
        on_stage("store")
    t = time.perf_counter()
    conflicts = [c.message for c in resolution.conflicts]
    summary_doc = {"stats": resolution.stats, "conflicts": conflicts[:MAX_ISSUES_PER_FILE]}
    try:
        with EmbeddedStore(workspace) as store:
            store.write_build(
                run_id=run_id,
                site=site.site.name,
                site_dir=str(site_dir.resolve()),
                config_yaml=config_yaml,
                started_at=started,
                twin=resolution.twin,
                observations=(
                    (obs, dev, about) for obs, (dev, about) in zip(observations, resolution.observation_devices)
                ),
                flows=((source, origin, frame) for source, frame, origin in flow_frames),
                flow_hours=hour_frames,
                import_files=[s.as_dict() for s in summaries],
                summary=summary_doc,
            )
    except TwinError:
        raise
    timings["store"] = time.perf_counter() - t
    log.info(
        "run %s: build finished, %d devices, %d communications",
        run_id,
        resolution.stats.get("devices", 0),
        resolution.stats.get("communications", 0),
    )
    return BuildResult(
        run_id=run_id,
        site=site.site.name,
        workspace=str(workspace),
        files=summaries,
        stats=resolution.stats,
        conflicts=conflicts,
        timings=timings,
    )
