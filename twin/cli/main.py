"""``twin``: build the hospital network twin and report what is wrong with it.

Results go to stdout, progress and diagnostics to stderr.

Exit codes
----------
0  success
1  the command failed (invalid site configuration, missing workspace, ...)
2  invalid command-line usage
3  findings at or above ``--fail-on`` exist
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from twin import __version__
from twin.api import WORKSPACE_ENV, Workspace, default_workspace
from twin.exceptions import TwinError

app = typer.Typer(
    help="iomt-twin: a network digital twin for hospital and medical-IoT security.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
show_app = typer.Typer(help="Show one item of the twin with all its evidence.", no_args_is_help=True)
app.add_typer(show_app, name="show")
schedule_app = typer.Typer(help="Scheduled report cycles: build, analyse, report what changed, deliver.", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")

# Width of tables when output goes to a file or pipe, where rich would
# otherwise assume 80 columns and wrap every cell.
PIPE_WIDTH = 160


def _console(stderr: bool) -> Console:
    console = Console(stderr=stderr, soft_wrap=True)
    if not console.is_terminal:
        console = Console(stderr=stderr, soft_wrap=True, width=PIPE_WIDTH)
    return console


out = _console(stderr=False)
err = _console(stderr=True)

EXIT_ERROR = 1

WorkspaceOption = typer.Option(
    None,
    "--workspace",
    "-w",
    help=f"Workspace file. Default: ${WORKSPACE_ENV} or .twin/workspace.sqlite.",
    envvar=WORKSPACE_ENV,
)
SnapshotOption = typer.Option(None, "--snapshot", "-s", help="Snapshot (run id or prefix, 'latest', 'previous'). Default: latest.")


def _fail(exc: Exception) -> None:
    err.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
    raise typer.Exit(EXIT_ERROR)


def _workspace(path: Optional[Path]) -> Workspace:
    return Workspace(path or default_workspace())


@app.callback(invoke_without_command=True)
def main(
    ctx: typer.Context,
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="Log more: -v for INFO, -vv for DEBUG."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if verbose == 0:
        # Per-record warnings are summarised in the build table instead.
        logging.getLogger("twin").setLevel(logging.ERROR)
    if version:
        out.print(f"iomt-twin {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        out.print(ctx.get_help())
        raise typer.Exit(0)


@app.command()
def build(
    site_dir: Path = typer.Argument(..., exists=True, file_okay=False, dir_okay=True, help="Site folder holding site.yaml and discovery files."),
    workspace: Optional[Path] = WorkspaceOption,
    store: str = typer.Option("embedded", "--store", help="embedded (the workspace file) or neo4j (NEO4J_URI, NEO4J_USER, NEO4J_PASSWORD)."),
    flow_port: Optional[list[int]] = typer.Option(
        None, "--flow-port", min=1, max=65535,
        help="UDP port whose datagrams in pcap files are NetFlow, IPFIX or sFlow exports, in addition to flows.export_ports of site.yaml. Repeatable.",
    ),
) -> None:
    """Import a site's discovery files, resolve devices, and commit a new snapshot."""
    if _use_neo4j(store):
        if flow_port:
            raise typer.BadParameter(
                "--flow-port works with --store embedded only; for Neo4j add the ports to flows.export_ports in site.yaml",
                param_hint="--flow-port",
            )
        from twin.cli import neo4jcmd

        neo4jcmd.build(site_dir)
        return
    ws = _workspace(workspace)
    try:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as progress:
            files_task = progress.add_task("importing", total=None)
            stage_task = None

            def on_file(path: Path, index: int, total: int) -> None:
                progress.update(files_task, total=total, completed=index, description=f"importing {path.name}")

            def on_stage(stage: str) -> None:
                nonlocal stage_task
                progress.update(files_task, completed=progress.tasks[0].total or 0, description="imported")
                if stage_task is None:
                    stage_task = progress.add_task("resolving", total=None)
                progress.update(stage_task, description=f"resolving: {stage}")

            result = ws.build(site_dir, on_file=on_file, on_stage=on_stage, flow_ports=flow_port or ())
    except TwinError as exc:
        _fail(exc)

    table = Table(title=f"Imported files ({result.site})", show_lines=False)
    for col in ("file", "format", "records", "skipped", "note"):
        table.add_column(col, justify="right" if col in ("records", "skipped") else "left")
    for f in result.files:
        note = f.error or (f.issues[0] if f.issues else "")
        if len(f.issues) > 1:
            note += f" (and {len(f.issues) - 1} more; all are listed in the report)"
        table.add_row(_relative(f.path, site_dir), f.format or "-", str(f.records_read), str(f.records_skipped), note)
    err.print(table)
    stats = result.stats
    for conflict in result.conflicts[:10]:
        err.print(f"[yellow]conflict:[/yellow] {conflict}", highlight=False)
    if len(result.conflicts) > 10:
        err.print(f"[yellow]... and {len(result.conflicts) - 10} more conflicts[/yellow]")
    if stats.get("flow_rows_external_only"):
        err.print(
            f"note: {stats['flow_rows_external_only']} aggregated flow rows run between two addresses outside the site's "
            "segments, external.internal_cidrs and the private ranges, so they are not communications of the twin; "
            "if those addresses belong to the site, add their prefixes to segments or external.internal_cidrs in site.yaml",
            highlight=False,
            markup=False,
        )
    out.print(
        f"snapshot {result.run_id}: {stats.get('devices', 0)} devices"
        + (f" ({stats['stale_devices']} stale)" if stats.get("stale_devices") else "")
        + f", {stats.get('communications', 0)} communications, "
        f"{stats.get('links', 0)} links, {stats.get('services', 0)} services, {len(result.conflicts)} conflicts "
        f"-> {result.workspace}",
        highlight=False,
    )


def _use_neo4j(store: str) -> bool:
    if store not in ("embedded", "neo4j"):
        raise typer.BadParameter(f"invalid store {store!r}; expected embedded or neo4j", param_hint="--store")
    return store == "neo4j"


def _relative(path: str, base: Path) -> str:
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return path


def _findings_check(queries: Optional[list[str]]) -> None:
    from twin.analysis import CATALOGUE

    if queries:
        unknown = [q for q in queries if q not in CATALOGUE]
        if unknown:
            raise typer.BadParameter(f"unknown query {', '.join(unknown)}; known: {', '.join(CATALOGUE)}", param_hint="--query")


def _findings(ws: Workspace, snapshot: Optional[str], queries: Optional[list[str]]):
    _findings_check(queries)
    return ws.findings(snapshot, names=queries or None)


def _check_fail_on(fail_on: Optional[str]) -> Optional[str]:
    from twin.report import SEVERITIES

    if fail_on is not None and fail_on not in SEVERITIES:
        raise typer.BadParameter(f"invalid severity {fail_on!r}; expected one of {', '.join(SEVERITIES)}", param_hint="--fail-on")
    return fail_on


@app.command()
def analyze(
    workspace: Optional[Path] = WorkspaceOption,
    snapshot: Optional[str] = SnapshotOption,
    query: Optional[list[str]] = typer.Option(None, "--query", "-q", help="Run only this query (repeatable)."),
    output: str = typer.Option("table", "--output", "-o", help="table, json or csv (csv needs exactly one --query)."),
    top: int = typer.Option(20, "--top", min=1, help="Rows shown per query in table output."),
    fail_on: Optional[str] = typer.Option(None, "--fail-on", help="Exit 3 when findings at or above this severity exist (critical, high, medium, low, info)."),
    store: str = typer.Option("embedded", "--store", help="embedded (the workspace file) or neo4j (NEO4J_URI, NEO4J_USER, NEO4J_PASSWORD; the Cypher forms run on the server)."),
    site: Optional[str] = typer.Option(None, "--site", help="With --store neo4j: the site name, when the database contains several."),
) -> None:
    """Run the query catalogue on a snapshot and print the findings."""
    from twin.report import exit_code_for, render_terminal
    from twin.report.document import render_json

    fail_on = _check_fail_on(fail_on)
    if output not in ("table", "json", "csv"):
        raise typer.BadParameter(f"invalid output {output!r}; expected table, json or csv", param_hint="--output")
    if output == "csv" and (not query or len(query) != 1):
        raise typer.BadParameter("csv output needs exactly one --query", param_hint="--output")
    if _use_neo4j(store) and snapshot is not None:
        raise typer.BadParameter("the Neo4j store keeps one twin per site, so --snapshot does not apply; use --site", param_hint="--snapshot")
    try:
        if _use_neo4j(store):
            from twin.graph.neo4j import Neo4jConfig, report_from_neo4j

            _findings_check(query)
            findings, context = report_from_neo4j(Neo4jConfig.from_env(prompt=True), site)
            if query:
                findings = {name: findings[name] for name in query}
        else:
            findings = _findings(_workspace(workspace), snapshot, query)
            context = _workspace(workspace).report_context(snapshot)
    except TwinError as exc:
        _fail(exc)
    if output == "table":
        render_terminal(findings, out, context, top=top)
    elif output == "json":
        sys.stdout.write(render_json(findings, context) + "\n")
    else:
        from twin.report.cells import csv_value

        frame = findings[query[0]]
        frame = frame.apply(lambda col: col.map(lambda v, c=col.name: csv_value(v, c)))
        frame.to_csv(sys.stdout, index=False)
    code = exit_code_for(findings, fail_on)
    _explain_gate(findings, fail_on, code)
    raise typer.Exit(code)


def _explain_gate(findings, fail_on: Optional[str], code: int) -> None:
    """Say on stderr why --fail-on gave a non-zero exit code."""
    from twin.report import severity_rank

    if not code or fail_on is None:
        return
    threshold = severity_rank(fail_on)
    count = 0
    for frame in findings.values():
        if "severity" in frame.columns:
            count += sum(1 for s in frame["severity"] if s not in (None, "") and _rank_or_top(s, severity_rank) >= threshold)
    err.print(f"{count} finding(s) at or above {fail_on}: exit code {code}", highlight=False)


def _rank_or_top(severity, severity_rank) -> int:
    try:
        return severity_rank(str(severity))
    except ValueError:
        return 99  # unrated findings count as the most severe, as the gate treats them


@app.command()
def report(
    workspace: Optional[Path] = WorkspaceOption,
    snapshot: Optional[str] = SnapshotOption,
    out_dir: Path = typer.Option(Path("report"), "--out", "-o", help="Folder the report files are written to."),
    formats: str = typer.Option("html,md,json,csv", "--format", "-f", help="Comma-separated: html, pdf, md, json, csv (pdf needs Debian's chromium)."),
    fail_on: Optional[str] = typer.Option(None, "--fail-on", help="Exit 3 when findings at or above this severity exist (critical, high, medium, low, info)."),
    since: Optional[str] = typer.Option(None, "--since", help="Add what changed since an earlier snapshot: 'last' (the one before), a run id, or a date (YYYY-MM-DD)."),
    trend_runs: int = typer.Option(8, "--trend", min=2, max=1000, help="Snapshots shown in the trend charts with --since."),
    quiet: bool = typer.Option(False, "--quiet", help="Do not print the terminal tables."),
    store: str = typer.Option("embedded", "--store", help="embedded (the workspace file) or neo4j (NEO4J_URI, NEO4J_USER, NEO4J_PASSWORD; the Cypher forms run on the server)."),
    site: Optional[str] = typer.Option(None, "--site", help="With --store neo4j: the site name, when the database contains several."),
) -> None:
    """Write the segmentation report (HTML, PDF, Markdown, JSON, CSV) and print its summary."""
    from twin.report import exit_code_for, render_terminal, write_report

    fail_on = _check_fail_on(fail_on)
    wanted = [f.strip() for f in formats.split(",") if f.strip()]
    valid = ("html", "pdf", "md", "json", "csv")
    bad = [f for f in wanted if f not in valid]
    if bad or not wanted:
        raise typer.BadParameter(f"invalid format {', '.join(bad) or formats!r}; expected some of {', '.join(valid)}", param_hint="--format")
    if since is not None and snapshot is not None:
        raise typer.BadParameter("--since compares the latest snapshot with an earlier one; drop --snapshot", param_hint="--since")
    neo4j = _use_neo4j(store)
    if neo4j and (since is not None or snapshot is not None):
        raise typer.BadParameter(
            "the Neo4j store keeps one twin per site and no earlier snapshots, so --since and --snapshot do not apply; "
            "drop them, or report from a workspace (twin report -w WORKSPACE --since ...)",
            param_hint="--store",
        )
    if site is not None and not neo4j:
        raise typer.BadParameter("--site selects a site in Neo4j; use it with --store neo4j", param_hint="--site")
    try:
        if neo4j:
            from twin.graph.neo4j import Neo4jConfig, report_from_neo4j

            if logging.getLogger("twin").level >= logging.ERROR:
                # Without -v, keep the server's query notifications (such as "null value
                # eliminated in set function") out of the output, as other warnings are.
                logging.getLogger("neo4j.notifications").setLevel(logging.ERROR)
            findings, context = report_from_neo4j(Neo4jConfig.from_env(prompt=True), site)
        else:
            ws = _workspace(workspace)
            findings = _findings(ws, snapshot, None)
            context = ws.report_context(snapshot)
        base_formats = [f for f in wanted if f != "pdf"] or ["html"]
        if "pdf" in wanted and "html" not in base_formats:
            base_formats.append("html")
        if since is None:
            written = write_report(findings, context, out_dir, base_formats)
        else:
            from twin.report.changes import write_change_report
            from twin.report.diff import compute_changes, record_findings

            with ws.store() as embedded:
                record_findings(embedded, context.run_id, findings)
            changes = compute_changes(ws, since=since, trend_runs=trend_runs)
            written = write_change_report(changes, findings, context, out_dir, base_formats)
            err.print(f"changes since {changes.old_run_id}: {changes.summary_line()}", highlight=False)
        if "pdf" in wanted:
            from twin.report.pdf import render_pdf

            written["pdf"] = render_pdf(written["html"], Path(out_dir) / "report.pdf")
    except TwinError as exc:
        _fail(exc)
    code = exit_code_for(findings, fail_on)
    if not quiet:
        render_terminal(findings, out, context, top=10)
    for key, path in written.items():
        if not key.startswith("csv:"):
            err.print(f"wrote {path}", highlight=False)
    csvs = [p for k, p in written.items() if k.startswith("csv:")]
    if csvs:
        err.print(f"wrote {len(csvs)} CSV files to {csvs[0].parent}", highlight=False)
    _explain_gate(findings, fail_on, code)
    raise typer.Exit(code)


@show_app.command("device")
def show_device(
    ident: str = typer.Argument(..., help="Device id, IP address, MAC address, host name, asset tag or serial number."),
    workspace: Optional[Path] = WorkspaceOption,
    snapshot: Optional[str] = SnapshotOption,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Show one device with every fact, its source and evidence, its links, flows and findings."""
    from twin.report.cells import display_text, to_jsonable

    ws = _workspace(workspace)
    try:
        detail = ws.device(ident, snapshot)
    except TwinError as exc:
        _fail(exc)
    if as_json:
        doc = {
            "device": {k: to_jsonable(v) for k, v in detail.device.items()},
            "observations": [{k: to_jsonable(v) for k, v in r.items()} for r in detail.observations.to_dict("records")],
            "interfaces": [{k: to_jsonable(v) for k, v in r.items()} for r in detail.interfaces.to_dict("records")],
            "links": [{k: to_jsonable(v) for k, v in r.items()} for r in detail.links.to_dict("records")],
            "services": [{k: to_jsonable(v) for k, v in r.items()} for r in detail.services.to_dict("records")],
            "communications": [{k: to_jsonable(v) for k, v in r.items()} for r in detail.communications.to_dict("records")],
            "findings": {q: [{k: to_jsonable(v) for k, v in r.items()} for r in f.to_dict("records")] for q, f in detail.findings.items()},
        }
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return

    dev = detail.device
    table = Table(title=f"Device {dev['device_id']}", show_header=False)
    table.add_column("property", style="bold")
    table.add_column("value")
    for key, value in dev.items():
        if key == "class_evidence":
            continue
        table.add_row(key, display_text(value, key))
    out.print(table)

    evidence = Table(title="Why this class")
    for col in ("class", "weight", "rule", "value"):
        evidence.add_column(col)
    for item in dev.get("class_evidence") or []:
        if "class" in item:
            evidence.add_row(str(item["class"]), str(item["weight"]), str(item["rule"]), display_text(item["value"]))
        elif isinstance(item.get("value"), dict):
            for prop, source in sorted(item["value"].items()):
                evidence.add_row("-", "-", f"{prop} from", str(source))
    out.print(evidence)

    obs = Table(title=f"Observations ({len(detail.observations)})")
    for col in ("kind", "source", "origin", "role", "facts"):
        obs.add_column(col)
    for row in detail.observations.head(50).itertuples(index=False):
        facts = ", ".join(f"{k}={display_text(v)}" for k, v in list(row.attrs.items())[:6])
        obs.add_row(row.kind, row.source, row.origin, row.role, facts if len(facts) <= 160 else facts[:159] + "…")
    out.print(obs)

    names = _device_names(ws, snapshot)
    for title, frame, cols in (
        ("Links", detail.links, ["a_device_id", "a_if_name", "b_device_id", "b_if_name", "source", "confidence"]),
        ("Services", detail.services, ["proto", "port", "name", "product", "version", "sources"]),
        ("Communications", detail.communications, ["src_id", "dst_id", "proto", "dst_port", "flows", "bytes", "sources"]),
    ):
        if frame.empty:
            continue
        t = Table(title=f"{title} ({len(frame)}, first 50)" if len(frame) > 50 else f"{title} ({len(frame)})")
        for col in cols:
            t.add_column(col)
        for record in frame.head(50).to_dict("records"):
            cells = []
            for col in cols:
                value = record.get(col)
                if col in ("a_device_id", "b_device_id", "src_id", "dst_id") and value in names:
                    cells.append(f"{names[value]} ({value})")
                else:
                    cells.append(display_text(value, col))
            t.add_row(*cells)
        out.print(t)
    for name, frame in detail.findings.items():
        out.print(f"[bold]{name}[/bold]: {len(frame)} finding(s); " + "; ".join(frame["evidence"].astype(str).head(5)), highlight=False)


def _device_names(ws: Workspace, snapshot: Optional[str]) -> dict[str, str]:
    """Map device ids to what a person recognises: host name, else primary IP."""
    devices = ws.twin(snapshot).devices
    names = {}
    for device_id, hostname, ips in zip(devices["device_id"], devices["hostname"], devices["ips"]):
        if isinstance(hostname, str) and hostname:
            names[device_id] = hostname
        elif ips:
            names[device_id] = ips[0]
    return names


@app.command()
def snapshots(workspace: Optional[Path] = WorkspaceOption) -> None:
    """List the snapshots in the workspace, oldest first."""
    ws = _workspace(workspace)
    try:
        frame = ws.snapshots()
    except TwinError as exc:
        _fail(exc)
    table = Table()
    for col in frame.columns:
        table.add_column(col)
    for record in frame.itertuples(index=False):
        table.add_row(*(str(v) for v in record))
    out.print(table)


@app.command()
def sample(
    out_dir: Path = typer.Argument(..., file_okay=False, help="Folder to write the site into (created)."),
    devices: int = typer.Option(1500, "--devices", "-n", min=200, max=500_000, help="Approximate number of devices, 200 to 500,000 (switch ports are filled whole, so a few less)."),
    seed: int = typer.Option(7, "--seed", help="Random seed; the same seed and size give byte-identical files."),
    pair: bool = typer.Option(False, "--pair", help="Write the small compliant/violating pair instead of a hospital."),
) -> None:
    """Generate a fictional hospital site in real discovery formats, with its ground truth."""
    from twin.sample import generate_pair, generate_site

    try:
        if pair:
            generate_pair(out_dir, seed=seed)
            out.print(f"wrote {out_dir}/compliant and {out_dir}/violating", highlight=False)
        else:
            summary = generate_site(out_dir, devices=devices, seed=seed)
            out.print(
                f"wrote {out_dir}: {summary.devices} devices in {summary.segments} segments, "
                f"{summary.edges} communication edges, {summary.flow_records} flow records; "
                f"ground truth in {out_dir / 'ground_truth.yaml'}",
                highlight=False,
            )
    except TwinError as exc:
        _fail(exc)


SiteOption = typer.Option(..., "--site", exists=True, file_okay=False, dir_okay=True, help="Site folder holding site.yaml.")


@schedule_app.command("add")
def schedule_add(
    cron: str = typer.Option(..., "--cron", help="Cron expression in the host's local time, such as '0 6 * * 1' for Mondays at 06:00."),
    site: Path = SiteOption,
    workspace: Optional[Path] = WorkspaceOption,
    unit_dir: Optional[Path] = typer.Option(None, "--unit-dir", help="Folder for the systemd units. Default: ~/.config/systemd/user."),
    crontab_file: Optional[Path] = typer.Option(None, "--crontab-file", help="Write a crontab line to this file instead of systemd units."),
) -> None:
    """Write a systemd timer and service (or a crontab line) that runs 'twin schedule run' for a site."""
    from twin.schedule import add_schedule, cron_to_on_calendars
    from twin.schedule.units import activation_command

    try:
        cron_to_on_calendars(cron)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--cron") from None
    try:
        paths = add_schedule(
            site,
            cron,
            workspace=(workspace or default_workspace()).resolve(),
            unit_dir=unit_dir,
            crontab_file=crontab_file,
            quiet=True,
        )
    except TwinError as exc:
        _fail(exc)
    for path in paths:
        out.print(f"wrote {path}", highlight=False)
    err.print(f"to enable it, run: {activation_command(paths)}", highlight=False)


@schedule_app.command("remove")
def schedule_remove(
    site: Path = SiteOption,
    unit_dir: Optional[Path] = typer.Option(None, "--unit-dir", help="Folder of the systemd units. Default: ~/.config/systemd/user."),
    crontab_file: Optional[Path] = typer.Option(None, "--crontab-file", help="Crontab file the line was written to."),
) -> None:
    """Delete a site's schedule files (disable the timer first with systemctl)."""
    from twin.schedule import remove_schedule

    try:
        removed = remove_schedule(site, unit_dir=unit_dir, crontab_file=crontab_file)
    except TwinError as exc:
        _fail(exc)
    for path in removed:
        out.print(f"removed {path}", highlight=False)


@schedule_app.command("list")
def schedule_list(
    unit_dir: Optional[Path] = typer.Option(None, "--unit-dir", help="Folder of the systemd units. Default: ~/.config/systemd/user."),
    crontab_file: Optional[Path] = typer.Option(None, "--crontab-file", help="Crontab file to read."),
) -> None:
    """List the installed schedules."""
    from twin.schedule import list_schedules

    table = Table()
    for col in ("site", "kind", "cron", "command"):
        table.add_column(col)
    for item in list_schedules(unit_dir=unit_dir, crontab_file=crontab_file):
        table.add_row(item.slug, item.kind, item.cron, item.command)
    out.print(table)


@schedule_app.command("run")
def schedule_run(
    site: Path = SiteOption,
    workspace: Optional[Path] = WorkspaceOption,
    since: str = typer.Option("last", "--since", help="Compare with this snapshot: 'last', a run id, or a date (YYYY-MM-DD)."),
) -> None:
    """Run one report cycle now: build, analyse, report what changed, deliver. Any scheduler can call this."""
    from twin.schedule import run_cycle

    # A scheduled cycle has no one watching: retries and skipped records go
    # to the journal or cron mail as warnings even without -v.
    twin_log = logging.getLogger("twin")
    if twin_log.getEffectiveLevel() > logging.WARNING:
        twin_log.setLevel(logging.WARNING)
    try:
        result = run_cycle(site, workspace=workspace or default_workspace(), since=since)
    except TwinError as exc:
        _fail(exc)
    out.print(f"report {result.run_dir}", highlight=False)
    for outcome in result.outcomes:
        state = "ok" if outcome.ok else f"failed after {outcome.attempts} attempt(s): {outcome.error}"
        (out if outcome.ok else err).print(f"run {result.run_id}: delivery {outcome.channel} {outcome.target}: {state}", highlight=False)
    if result.exit_code:
        err.print(f"findings at or above reports.fail_on: exit code {result.exit_code}", highlight=False)
    raise typer.Exit(result.exit_code)



# Commands defined in their own modules; imported last because they use the
# helpers above. A module imported on its own first (``import
# twin.cli.neo4jcmd``) is still initialising when this runs, so each module
# also registers itself at its end. Registering twice does nothing.
_REGISTERED: set[str] = set()


def register_module(module) -> None:
    """Add a command module's commands to :data:`app` once."""
    if module.__name__ in _REGISTERED or not hasattr(module, "register"):
        return
    module.register(app)
    _REGISTERED.add(module.__name__)


from twin.cli import appcmd, collect, discover, neo4jcmd, simulate  # noqa: E402

for _module in (simulate, appcmd, discover, neo4jcmd, collect):
    register_module(_module)


if __name__ == "__main__":  # pragma: no cover
    app()
