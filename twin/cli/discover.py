"""``twin discover``: active discovery commands (``twin discover scan`` runs nmap, ``twin discover snmp`` crawls SNMP).

``twin discover scan`` plans a scan from the site configuration and the
device classes recorded in the latest twin, prints the plan with ``--dry-run`` (sending
nothing), or runs it with nmap and writes the XML beside the site's other
discovery files.

Exit codes of a scan:

- 0: the scan ran completely, or there was nothing to scan.
- 1: the scan was rejected (no current snapshot of the site, maintenance
  window closed, nmap missing, invalid site configuration). Or an explicit
  target was rejected because it is out of scope, on the do-not-probe list,
  or the site has no scopes, and the other targets were still scanned. Or a
  group ended incomplete, after its results were kept.
- 2: invalid command-line usage.

Exit codes of ``--dry-run``: 0 the plan was printed. 1 an explicit target
was rejected, as the real scan would exit (the error follows the plan), or
the site configuration is invalid. 2 invalid command-line usage. A stale
snapshot, a closed maintenance window and a missing nmap are ``warning:``
lines of the dry run, because they depend on when and where the real scan
runs.
"""

from __future__ import annotations

import sys

from pathlib import Path
from typing import Optional

import typer

from twin.cli.main import EXIT_ERROR, WorkspaceOption, _fail, _workspace, err, out
from twin.exceptions import TwinError

__all__ = ["discover_app", "register", "scan", "snmp"]

discover_app = typer.Typer(
    help="Active discovery: scan the site's scope within its probe budgets, or crawl it over SNMP.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add the ``discover`` command group to the ``twin`` app."""
    app.add_typer(discover_app, name="discover")


def _snapshot_check(workspace: Optional[Path], site, site_dir: Path, out_dir: Optional[Path]):
    """Return the :class:`twin.discovery.plan.SnapshotCheck` of the site in the workspace."""
    from twin.discovery.plan import check_snapshot

    ws = _workspace(workspace)
    return check_snapshot(ws.path, site, site_dir, skip_dirs=[out_dir] if out_dir is not None else [])


def _print_error(message: str) -> None:
    err.print(f"error: {message}", highlight=False, markup=False)


def _count(number: int, noun: str) -> str:
    """Return ``1 target`` or ``3 targets``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


# Skip lines printed when a scan of the whole scope has nothing to scan (count, default 20).
MAX_SKIPS_LISTED = 20


@discover_app.command("scan")
def scan(
    site_dir: Path = typer.Option(..., "--site", exists=True, file_okay=False, dir_okay=True, help="Site folder holding site.yaml."),
    workspace: Optional[Path] = WorkspaceOption,
    target: Optional[list[str]] = typer.Option(None, "--target", "-t", help="Address, CIDR or host name to scan (repeatable). Default: the site's discovery scopes."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print every probe the scan would send and exit without sending anything."),
    allow_public: bool = typer.Option(False, "--allow-public", help="Allow public addresses; the site must also set discovery.allow_public."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Folder for the scan results. Default: SITE/nmap/active, which 'twin build' reads."),
    nmap_path: Optional[str] = typer.Option(None, "--nmap", help="nmap binary. Default: nmap on PATH."),
    build_after: bool = typer.Option(False, "--build", help="Build the site into the workspace right after the scan."),
    unclassified: bool = typer.Option(
        False, "--unclassified",
        help="Scan although the workspace has no current snapshot of the site; every address the snapshot does not "
        "classify gets the unknown budget.",
    ),
) -> None:
    """Scan the site's scope with nmap within each device class's probe budget.

    A real scan needs a current snapshot of the site in the workspace (run
    ``twin build SITE -w WS`` after every change to the discovery files), so
    every device is classified before it is probed; ``--unclassified``
    accepts scanning without one.

    Exit status: 0 done (or nothing to scan); 1 scan rejected, a target
    rejected or a group incomplete, and with ``--dry-run`` a target
    rejected; 2 usage error.
    """
    from twin.discovery.active import NmapNotFound, describe_pacing, find_nmap, run_plan
    from twin.discovery.plan import plan_scan, render_dry_run
    from twin.model.site import load_site

    try:
        site = load_site(site_dir)
        snapshot = _snapshot_check(workspace, site, site_dir, out_dir)
        plan = plan_scan(snapshot.twin, site, targets=target or None, allow_public=allow_public)
    except TwinError as exc:
        _fail(exc)
    rejected = [skip for skip in plan.skipped if skip.rejected]

    if snapshot.problems:
        if not dry_run and not unclassified:
            for problem in snapshot.problems:
                _print_error(problem)
            _print_error(
                "scan rejected, because without a current snapshot unclassified medical devices would be "
                "probed as unknown; nothing was sent (pass --unclassified to scan anyway on the unknown budget)"
            )
            raise typer.Exit(EXIT_ERROR)
        consequence = "every address it does not classify gets the unknown budget"
        if dry_run and not unclassified:
            consequence += "; a real scan is rejected unless --unclassified is given"
        plan.warnings[:0] = [f"{problem} ({consequence})" for problem in snapshot.problems]

    try:
        find_nmap(nmap_path)
        nmap_problem = None
    except NmapNotFound as exc:
        nmap_problem = str(exc)

    if dry_run:
        if nmap_problem is not None:
            plan.warnings.append(f"{nmap_problem}; a real scan fails until nmap is found")
        out.print(render_dry_run(plan), highlight=False, markup=False)
        for line in describe_pacing(plan):
            out.print(line, highlight=False, markup=False)
        if rejected:
            # The real scan exits 1 for these targets, so the dry run does too.
            _print_error(
                f"{_count(len(rejected), 'target')} rejected and never scanned: "
                f"{', '.join(skip.target for skip in rejected)} (the reasons are in the skip lines)"
            )
            raise typer.Exit(EXIT_ERROR)
        raise typer.Exit(0)

    if plan.groups and not plan.window.open:
        _print_error(f"scan rejected because the maintenance window is closed: {plan.window.reason}; nothing was sent")
        raise typer.Exit(EXIT_ERROR)
    if nmap_problem is not None:
        if plan.groups:
            _print_error(f"{nmap_problem}; nothing was sent")
            raise typer.Exit(EXIT_ERROR)
        plan.warnings.append(nmap_problem)
    for warning in plan.warnings:
        err.print(f"warning: {warning}", highlight=False, markup=False)
    if target:
        for skip in plan.skipped:
            device = f" ({skip.device_class} {skip.device_id})" if skip.device_id else ""
            word = "rejected" if skip.rejected else "skipped"
            err.print(f"{word}: {skip.target}{device}: {skip.reason}", highlight=False, markup=False)
    if not plan.groups:
        if rejected:
            _print_error(f"nothing to scan; {_count(len(rejected), 'target')} rejected (listed above)")
            raise typer.Exit(EXIT_ERROR)
        if not target:
            # Without --target the skip lines were not printed above; a whole
            # scope skipped has few, summarised ones, so list them here.
            for skip in plan.skipped[:MAX_SKIPS_LISTED]:
                err.print(f"skipped: {skip.target}: {skip.reason}", highlight=False, markup=False)
            if len(plan.skipped) > MAX_SKIPS_LISTED:
                err.print(f"... and {len(plan.skipped) - MAX_SKIPS_LISTED} more; run --dry-run for all", highlight=False)
        err.print("nothing to scan: every target is skipped (the reasons are listed above)", highlight=False)
        raise typer.Exit(0)
    if out_dir is not None and site_dir.resolve() not in out_dir.resolve().parents:
        err.print(f"note: {out_dir} is outside the site folder, so 'twin build' will not read these results", highlight=False)

    def started(group) -> None:
        err.print(
            f"group {group.index} ({group.budget}): nmap pid {group.pid} scanning {_count(len(group.targets), 'target')}",
            highlight=False,
        )

    def finished(group) -> None:
        state = "complete" if group.complete else f"INCOMPLETE: {group.reason}"
        out.print(
            f"group {group.index} ({group.budget}): {state}; {_count(group.hosts_up, 'host')} up, "
            f"{_count(group.services, 'service')} "
            f"-> {group.xml}",
            highlight=False,
            markup=False,
        )
        for issue in group.issues[:5]:
            err.print(f"  {issue}", highlight=False, markup=False)
        if len(group.issues) > 5:
            err.print(f"  ... and {len(group.issues) - 5} more issues (listed in the manifest)", highlight=False)

    try:
        run = run_plan(
            plan,
            site,
            site_dir,
            nmap_path=nmap_path,
            output_dir=out_dir,
            allow_public=allow_public,
            on_group_start=started,
            on_group_end=finished,
        )
    except TwinError as exc:
        _fail(exc)

    for group in run.groups:
        if group.pid is None:
            out.print(f"group {group.index} ({group.budget}): INCOMPLETE: {group.reason}", highlight=False, markup=False)
    out.print(f"scan {run.run_id}: {'complete' if run.complete else 'incomplete'}; manifest {run.manifest}", highlight=False)

    if build_after:
        ws = _workspace(workspace)
        try:
            result = ws.build(site_dir)
        except TwinError as exc:
            _fail(exc)
        out.print(
            f"snapshot {result.run_id}: {result.stats.get('devices', 0)} devices, "
            f"{result.stats.get('services', 0)} services -> {result.workspace}",
            highlight=False,
        )
    if not run.complete:
        err.print("error: the scan is incomplete; the partial results were kept (see the manifest)", highlight=False)
        raise typer.Exit(EXIT_ERROR)
    if rejected:
        err.print(
            f"error: {_count(len(rejected), 'target')} rejected and not scanned: {', '.join(s.target for s in rejected)} "
            "(reasons above and in the manifest)",
            highlight=False, markup=False,
        )
        raise typer.Exit(EXIT_ERROR)


# Exit code of ``twin discover snmp`` for usage and configuration errors.
EXIT_USAGE = 2
# Issue lines printed per crawl before the rest are counted (default 20).
MAX_ISSUES_LISTED = 20
# Skipped targets listed per reason; the rest are counted.
MAX_SKIPPED_SHOWN = 5


@discover_app.command("snmp")
def snmp(
    site_dir: Path = typer.Option(..., "--site", exists=True, file_okay=False, dir_okay=True, help="Site folder holding site.yaml."),
    seed: Optional[list[str]] = typer.Option(
        None, "--seed", help="Seed device: ADDRESS, HOST or ADDRESS:PORT (repeatable). Default: discovery.snmp.seeds."
    ),
    depth: Optional[int] = typer.Option(None, "--depth", min=0, max=16, help="Hops from the seeds; 0 walks the seeds only. Default: discovery.snmp.depth."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", min=1, max=256, help="Devices walked at once. Default: discovery.snmp.concurrency."),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=0.1, max=60.0, help="Seconds to wait for each SNMP response. Default: discovery.snmp.timeout_s."),
    retries: Optional[int] = typer.Option(None, "--retries", min=0, max=10, help="Retransmissions of an unanswered request. Default: discovery.snmp.retries."),
    record: Optional[Path] = typer.Option(None, "--record", file_okay=False, help="Folder for one .snmprec recording per device that responded."),
    workspace: Optional[Path] = WorkspaceOption,
    no_build: bool = typer.Option(False, "--no-build", help="Crawl (and record) only; do not build a snapshot."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the seeds, the scope decisions and the settings, and send nothing."),
    allow_public: bool = typer.Option(False, "--allow-public", help="Allow public addresses; the site must also set discovery.allow_public."),
) -> None:
    """Walk the seed devices over SNMP, then their LLDP and CDP neighbours, within the site's scope.

    By default the live results and the site's discovery files are built
    into one snapshot. Devices that an earlier crawl found and this one did
    not are kept and marked stale.

    Exit status: 0 every walked device responded; 1 a device did not respond,
    a walk had issues or a seed was rejected; 2 usage or configuration error.
    """
    from twin.discovery.crawl import plan_seeds, run_crawl, site_credentials, walk_settings
    from twin.discovery.scope import guard_for
    from twin.model.site import load_site

    try:
        site = load_site(site_dir)
        guard = guard_for(site, allow_public=allow_public)
        decisions = plan_seeds(site, seed, guard=guard)
    except TwinError as exc:
        _print_error(str(exc))
        raise typer.Exit(EXIT_USAGE)
    config = site.discovery.snmp
    if not decisions:
        _print_error(
            "no seeds; list them under discovery.snmp.seeds in site.yaml or pass --seed ADDRESS[:PORT]"
        )
        raise typer.Exit(EXIT_USAGE)
    settings = walk_settings(config, timeout_s=timeout, retries=retries)

    if dry_run:
        _print_snmp_plan(site, decisions, settings, depth, concurrency)
        try:
            site_credentials(site)
        except TwinError as exc:
            err.print(f"warning: {exc}; a real crawl stops here", highlight=False, markup=False)
        raise typer.Exit(0 if all(d.allowed for d in decisions) else EXIT_ERROR)

    try:
        credentials = site_credentials(site)
        result = run_crawl(
            site, seeds=seed, depth=depth, settings=settings, credentials=credentials,
            record_dir=record, concurrency=concurrency, allow_public=allow_public, guard=guard,
        )
    except TwinError as exc:
        _print_error(str(exc))
        raise typer.Exit(EXIT_USAGE)

    _print_crawl(result)
    if record is not None:
        out.print(f"recorded {_count(len(result.recorded), 'walk')} in {record}", highlight=False, markup=False)

    if not no_build:
        ws = _workspace(workspace)
        inside = record is not None and site_dir.resolve() in (record.resolve(), *record.resolve().parents)
        if inside:
            err.print(
                f"note: {record} is inside the site folder, so later 'twin build' runs import these recordings as files",
                highlight=False, markup=False,
            )
        try:
            from twin.pipeline import build

            built = build(
                site_dir, ws.path, extra_results=result.results, live_crawl=True,
                exclude_dirs=[record] if inside else [],
            )
        except TwinError as exc:
            _fail(exc)
        stats = built.stats
        out.print(
            f"snapshot {built.run_id}: {stats.get('devices', 0)} devices ({stats.get('stale_devices', 0)} stale), "
            f"{stats.get('links', 0)} links -> {built.workspace}",
            highlight=False, markup=False,
        )

    rejected_seeds = [d for d in decisions if not d.allowed]
    if result.unanswered or result.issues or result.warnings or rejected_seeds:
        raise typer.Exit(EXIT_ERROR)


def _print_snmp_plan(site, decisions, settings, depth, concurrency) -> None:
    """Print what a crawl would do, from the configuration alone."""
    config = site.discovery.snmp
    out.print(f"SNMP crawl plan for site {site.site.name} (dry run: nothing is sent)", highlight=False, markup=False)
    out.print(
        f"depth {config.depth if depth is None else depth}, concurrency {config.concurrency if concurrency is None else concurrency}, "
        f"timeout {settings.timeout_s:g} s, retries {settings.retries}, max-repetitions {settings.max_repetitions}, "
        f"device time cap {settings.device_time_cap_s:g} s",
        highlight=False, markup=False,
    )
    out.print(f"neighbours walked when they advertise: {', '.join(config.crawl_capabilities) or '(none)'}", highlight=False, markup=False)
    profiles = site.credentials.get("snmp") or []
    if profiles:
        names = [f"v{p['version']}" + (f" {p['user']}" if p.get("user") else "") for p in profiles]
        out.print(f"credentials tried in order: {', '.join(names)}", highlight=False, markup=False)
    else:
        err.print("warning: credentials.snmp is missing, so a real crawl fails", highlight=False, markup=False)
    for decision in decisions:
        if decision.allowed:
            out.print(f"seed {decision.seed}: walk {decision.address}:{decision.port}", highlight=False, markup=False)
        else:
            out.print(f"seed {decision.seed}: {decision.reason}", highlight=False, markup=False)
    out.print("neighbours are checked against the same scope when the crawl finds them", highlight=False, markup=False)


def _walk_state(walk) -> str:
    """Return how one walk ended, for the crawl summary."""
    if walk.answered:
        return f"answered ({walk.credentials}), {_count(len(walk.varbinds), 'varbind')}"
    kinds = [issue.kind for issue in walk.issues]
    rejected = kinds.count("auth")
    if rejected and rejected == len(kinds):
        return "NOT WALKED: the agent rejected every credentials profile"
    if rejected:
        return f"NOT WALKED: no credentials profile got a response ({rejected} rejected, {len(kinds) - rejected} without an answer)"
    return "NOT WALKED: no answer"


def _print_crawl(result) -> None:
    for walk in result.walks:
        issues = f", {_count(len(walk.issues), 'issue')}" if walk.issues else ""
        out.print(f"{walk.target}: {_walk_state(walk)}{issues} in {walk.finished_at - walk.started_at:.1f} s", highlight=False, markup=False)
    by_reason: dict[str, list[str]] = {}
    for target, reason in result.skipped:
        by_reason.setdefault(reason, []).append(target)
    for reason, targets in by_reason.items():
        shown = ", ".join(targets[:MAX_SKIPPED_SHOWN]) + (f" and {len(targets) - MAX_SKIPPED_SHOWN} more" if len(targets) > MAX_SKIPPED_SHOWN else "")
        err.print(f"skipped {len(targets)}: {shown}: {reason}", highlight=False, markup=False)
    for warning in result.warnings:
        err.print(f"warning: {warning}", highlight=False, markup=False)
    for issue in result.issues[:MAX_ISSUES_LISTED]:
        err.print(f"issue ({issue.kind}): {issue.message}", highlight=False, markup=False)
    if len(result.issues) > MAX_ISSUES_LISTED:
        err.print(f"... and {len(result.issues) - MAX_ISSUES_LISTED} more issues (in the log)", highlight=False, markup=False)
    if any(not walk.answered and any(i.kind != "auth" for i in walk.issues) for walk in result.walks):
        err.print(
            "hint: for a device with no answer, check its address and port, the community or v3 user in "
            "credentials.snmp, and that its agent runs and accepts requests from this host",
            highlight=False, markup=False,
        )
    answered = sum(1 for walk in result.walks if walk.answered)
    duplicates = answered - len(result.results)
    duplicate_note = f" ({duplicates} of them the same device as another, kept once)" if duplicates else ""
    out.print(
        f"crawl {result.run_id}: {_count(len(result.walks), 'device')} tried, {answered} answered{duplicate_note}, "
        f"{len(result.skipped)} skipped",
        highlight=False, markup=False,
    )


# Registers this module's commands when it was imported before twin.cli.main
# finished (see register_module there).
_main = sys.modules.get("twin.cli.main")
if _main is not None and hasattr(_main, "register_module"):
    _main.register_module(sys.modules[__name__])
