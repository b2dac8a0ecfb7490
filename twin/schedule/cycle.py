"""One scheduled report cycle: build, analyse, compare, write, deliver.

:func:`run_cycle` is what ``twin schedule run`` (and so the systemd timer or
the crontab line) runs. Its steps, in order:

1. take the workspace lock (``<workspace>.lock``, ``fcntl.flock``), so two
   cycles never build into one workspace at once;
2. build a snapshot of the site (:func:`twin.pipeline.build`);
3. run the query catalogue and record the finding keys;
4. compare with an earlier snapshot (:func:`twin.report.diff.compute_changes`);
   the first cycle of a site has nothing to compare with and writes a
   report without a change section;
5. write the report into a hidden temporary folder in ``reports.output_dir``,
   render the PDF when asked, then rename the folder to ``<run_id>``;
6. point ``<output_dir>/latest`` at it (a symbolic link, replaced atomically);
7. deliver (folder retention, email, webhook) and record the outcomes.

Every cycle adds a row to the workspace table ``cycles``. A step that fails
before step 6 removes its temporary folder, leaves earlier run folders and
``latest`` as they were, records the failure and raises
:class:`~twin.exceptions.CycleError`. A snapshot committed by the build stays
in the workspace. The link moves before delivery, because folder retention
may delete the run folder that ``latest`` pointed at. So a delivery step
that raises (rather than returning failed outcomes) leaves the new report
published.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from twin.exceptions import CycleError, LockHeldError, TwinError
from twin.model.site import Reports, load_site

__all__ = ["CycleResult", "run_cycle", "workspace_lock", "output_dir_of", "LATEST_LINK", "CYCLES_TABLE"]

log = logging.getLogger(__name__)

# Name of the symbolic link in the output folder that points at the newest report run.
LATEST_LINK = "latest"
# Workspace table with one row per cycle.
CYCLES_TABLE = "cycles"

_CREATE_CYCLES = f"""CREATE TABLE IF NOT EXISTS {CYCLES_TABLE} (
    run_id TEXT, started_at REAL, finished_at REAL, status TEXT, error TEXT)"""


@dataclass
class CycleResult:
    """Outcome of one report cycle.

    Attributes
    ----------
    run_id : str
        Build run of the cycle; also the name of the report folder.
    run_dir : Path
        The report folder, ``<output_dir>/<run_id>``.
    changes_summary : dict
        ``ChangeSet.summary()`` plus ``site``; on the first cycle of a site
        only ``site``, ``new_run_id`` and ``first_run``.
    outcomes : list of DeliveryOutcome
        Folder retention, email and webhook outcomes.
    exit_code : int
        0, or 3 when findings at or above ``reports.fail_on`` exist.
    files : dict of str to Path
        Report files by format key, as the report writer returns them.
    first_run : bool
        True when there was no earlier snapshot to compare with.
    """

    run_id: str
    run_dir: Path
    changes_summary: dict[str, Any]
    outcomes: list = field(default_factory=list)
    exit_code: int = 0
    files: dict[str, Path] = field(default_factory=dict)
    first_run: bool = False

    @property
    def deliveries_ok(self) -> bool:
        """True when every delivery channel succeeded."""
        return all(outcome.ok for outcome in self.outcomes)


def output_dir_of(reports: Reports, site_dir: Path) -> Path:
    """Return the report output folder: ``reports.output_dir``, relative to the site folder unless absolute."""
    folder = Path(reports.output_dir).expanduser()
    return folder if folder.is_absolute() else Path(site_dir).absolute() / folder


@contextmanager
def workspace_lock(workspace: str | Path) -> Iterator[Path]:
    """Hold the exclusive cycle lock of a workspace for the block.

    The lock is ``fcntl.flock`` on ``<workspace>.lock``, taken without
    waiting; the kernel releases it when the process exits, so a crashed
    cycle leaves no stale lock. The file contains the process id of the holder.

    Raises
    ------
    LockHeldError
        When another process holds the lock.
    """
    path = Path(f"{workspace}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise LockHeldError(
                f"{path}: another report cycle (process {holder}) holds the lock of workspace {workspace}; "
                "wait for it to finish, or give this cycle another --workspace"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield path
    finally:
        # Closing the file releases the flock.
        handle.close()


def _record_cycle(workspace: Path, run_id: str | None, started: float, status: str, error: str | None) -> None:
    from twin.graph.embedded import EmbeddedStore

    with EmbeddedStore(workspace) as store, store.transaction() as cur:
        cur.execute(_CREATE_CYCLES)
        cur.execute(
            f"INSERT INTO {CYCLES_TABLE} (run_id, started_at, finished_at, status, error) VALUES (?, ?, ?, ?, ?)",
            (run_id, started, time.time(), status, error),
        )


def _has_earlier_snapshot(ws, site_name: str) -> bool:
    with ws.store() as store:
        return sum(1 for run in store.runs() if run.site == site_name) >= 2


def _publish(staging: Path, run_dir: Path, output_dir: Path) -> None:
    """Rename the finished staging folder to the run folder and repoint ``latest`` at it."""
    os.rename(staging, run_dir)
    link = output_dir / LATEST_LINK
    temporary = output_dir / f".{LATEST_LINK}.tmp-{os.getpid()}"
    if temporary.is_symlink() or temporary.exists():
        temporary.unlink()
    # Relative target, so the output folder can be moved or mounted elsewhere.
    os.symlink(run_dir.name, temporary)
    try:
        os.replace(temporary, link)
    except OSError:
        temporary.unlink()
        os.rename(run_dir, staging)
        raise


def run_cycle(
    site_dir: str | Path,
    *,
    workspace: str | Path,
    since: str = "last",
    now: float | None = None,
) -> CycleResult:
    """Run one report cycle of a site: build, analyse, compare, write, deliver.

    Parameters
    ----------
    site_dir : path
        Site folder; its ``site.yaml`` ``reports:`` section sets the output
        folder, formats, retention, severity gate, trend length and delivery.
    workspace : path
        Workspace file to build into (created when missing).
    since : str
        Snapshot to compare with: ``"last"`` (the one before this cycle's
        build), a run id or prefix, or an ISO date; see
        :func:`twin.report.diff.compute_changes`.
    now : float, optional
        Start time of the cycle, epoch seconds (recorded in ``cycles`` and
        written into a first-run report); defaults to the current time.

    Returns
    -------
    CycleResult

    Raises
    ------
    LockHeldError
        When another cycle holds the workspace lock (nothing is done).
    CycleError
        When a step fails; ``step`` names it and the original error is
        chained. The failure is recorded in the table ``cycles``.

    Notes
    -----
    When ``"pdf"`` is among the formats, ``report.html`` is written too,
    because the PDF is printed from it.
    """
    site_dir = Path(site_dir).absolute()
    workspace = Path(workspace).absolute()
    started = float(now) if now is not None else time.time()
    with workspace_lock(workspace):
        state: dict[str, Any] = {"step": "config", "run_id": None, "staging": None}
        try:
            result = _run_steps(site_dir, workspace, since, started, state)
        except Exception as exc:
            if state["staging"] is not None:
                shutil.rmtree(state["staging"], ignore_errors=True)
            message = str(exc) or type(exc).__name__
            log.error("run %s: report cycle of %s failed at step %s: %s", state["run_id"], site_dir, state["step"], message)
            try:
                _record_cycle(workspace, state["run_id"], started, "failed", f"{state['step']}: {message}")
            except TwinError as record_exc:
                log.error("run %s: cannot record the failed cycle in %s: %s", state["run_id"], workspace, record_exc)
            raise CycleError(state["step"], message, run_id=state["run_id"]) from exc
        _record_cycle(workspace, result.run_id, started, "ok", None)
    return result


def _run_steps(site_dir: Path, workspace: Path, since: str, started: float, state: dict[str, Any]) -> CycleResult:
    """Run the cycle's steps, keeping ``state`` current so the caller can report and clean up a failure."""
    from twin.analysis import run_catalogue
    from twin.api import Workspace
    from twin.pipeline import build
    from twin.report import exit_code_for, write_report
    from twin.report.diff import compute_changes, record_findings

    site = load_site(site_dir)
    reports = site.reports
    site_name = site.site.name
    output_dir = output_dir_of(reports, site_dir)

    state["step"] = "build"
    built = build(site_dir, workspace)
    run_id = state["run_id"] = built.run_id
    ws = Workspace(workspace)
    log.info("run %s: report cycle of site %r: build committed", run_id, site_name)

    state["step"] = "findings"
    recorded_site = ws.site(run_id)
    findings = run_catalogue(ws.twin(run_id), recorded_site)
    with ws.store() as store:
        record_findings(store, run_id, findings)

    state["step"] = "changes"
    changes = None
    if since not in ("last", "previous") or _has_earlier_snapshot(ws, site_name):
        changes = compute_changes(ws, since=since, trend_runs=reports.trend_runs)
        summary = {"site": site_name, **changes.summary()}
    else:
        log.info("run %s: first snapshot of site %r, the report has no change section", run_id, site_name)
        summary = {"site": site_name, "new_run_id": run_id, "first_run": True}

    state["step"] = "report"
    context = ws.report_context(run_id)
    formats = [fmt for fmt in reports.formats if fmt != "pdf"]
    if "pdf" in reports.formats and "html" not in formats:
        formats.append("html")
    output_dir.mkdir(parents=True, exist_ok=True)
    # Hidden, so folder retention and readers of the output folder skip it.
    staging = state["staging"] = output_dir / f".{run_id}.partial"
    if changes is None:
        files = write_report(findings, context, staging, formats, generated_at=started)
    else:
        from twin.report.changes import write_change_report

        files = write_change_report(changes, findings, context, staging, formats=tuple(formats))

    if "pdf" in reports.formats:
        from twin.report.pdf import render_pdf

        state["step"] = "pdf"
        files["pdf"] = render_pdf(staging / "report.html", staging / "report.pdf")

    state["step"] = "publish"
    run_dir = output_dir / run_id
    _publish(staging, run_dir, output_dir)
    state["staging"] = None
    files = {key: run_dir / Path(path).relative_to(staging) for key, path in files.items()}
    log.info("run %s: report written to %s", run_id, run_dir)

    state["step"] = "deliver"
    from twin.report.deliver import deliver_all, record_deliveries

    outcomes = deliver_all(run_dir, files, summary, reports, site_dir, run_id=run_id)
    with ws.store() as store:
        record_deliveries(store, run_id, outcomes)
    failed = [outcome for outcome in outcomes if not outcome.ok]
    if failed:
        log.warning("run %s: %d of %d deliveries failed: %s", run_id, len(failed), len(outcomes),
                    "; ".join(f"{o.channel} {o.target}: {o.error}" for o in failed))

    return CycleResult(
        run_id=run_id,
        run_dir=run_dir,
        changes_summary=summary,
        outcomes=outcomes,
        exit_code=exit_code_for(findings, reports.fail_on),
        files=files,
        first_run=changes is None,
    )
