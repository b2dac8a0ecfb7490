"""``twin simulate``: compare a proposed policy with the current one on a snapshot.

Exit codes: 0 success, 1 failed (invalid policy file, missing workspace),
2 invalid usage, 3 with ``--fail-on-broken`` when a required workflow breaks.
"""

from __future__ import annotations

import sys

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from twin.cli.main import SnapshotOption, WorkspaceOption, _fail, _workspace, err, out
from twin.exceptions import TwinError

__all__ = ["register", "EXIT_BROKEN", "SECTION_COLUMNS"]

# Exit code when --fail-on-broken is set and a required workflow breaks.
EXIT_BROKEN = 3

# Columns shown per section in table output.
SECTION_COLUMNS: dict[str, list[str]] = {
    "newly_blocked": ["src_label", "src_segment", "dst_label", "dst_segment", "proto", "dst_port", "current_rule", "proposed_rule"],
    "newly_allowed": ["src_label", "src_segment", "dst_label", "dst_segment", "proto", "dst_port", "current_rule", "proposed_rule"],
    "workflows_broken": ["workflow", "source", "blocked", "observed_blocked", "example_src", "example_dst", "example_service", "blocked_by"],
    "violations_resolved": ["src_hostname", "src_ip", "dst_hostname", "dst_ip", "proto", "dst_port", "rule", "severity"],
    "violations_introduced": ["src_hostname", "src_ip", "dst_hostname", "dst_ip", "proto", "dst_port", "rule", "severity"],
    "attack_paths_cut": ["mode", "entry_label", "target_label", "current_hops", "current_path"],
    "attack_paths_opened": ["mode", "entry_label", "target_label", "proposed_hops", "proposed_path"],
    "attack_paths_unenforced": ["mode", "entry_label", "target_label", "today_hops", "today_path"],
    "exposure": ["hostname", "ip", "direction", "external", "proto", "dst_port", "current_allowed", "proposed_allowed"],
}
_TITLES = {
    "newly_blocked": "Newly blocked flows",
    "newly_allowed": "Newly allowed flows",
    "workflows_broken": "Required workflows broken",
    "violations_resolved": "Violations resolved",
    "violations_introduced": "Violations introduced",
    "attack_paths_cut": "Attack paths cut",
    "attack_paths_opened": "Attack paths opened",
    "attack_paths_unenforced": "Attack paths that exist today although both policies stop them (enforcement gap)",
    "exposure": "External exposure with a changed decision",
}
FORMATS = ("table", "json", "csv")


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return str(value)


def _print_summary(result) -> None:
    s = result.summary
    table = Table(title="Simulation summary")
    for column in ("measure", "current", "proposed", "change"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    table.add_row("rules", str(len(result.current.rules)), str(len(result.proposed.rules)), f"{len(result.proposed.rules) - len(result.current.rules):+d}")
    table.add_row("flows allowed -> blocked", "", "", str(s["newly_blocked"]))
    table.add_row("flows blocked -> allowed", "", "", str(s["newly_allowed"]))
    table.add_row("required workflows broken", str(s["workflows_already_broken"]), str(s["workflows_broken"]),
                  f"{s['workflows_newly_broken']} newly")
    table.add_row("violations resolved / introduced", "", "", f"-{s['violations_resolved']} / +{s['violations_introduced']}")
    table.add_row("attack paths cut / opened", "", "", f"-{s['attack_paths_cut']} / +{s['attack_paths_opened']}")
    table.add_row("attack paths not enforced today", "", "", str(s["attack_paths_unenforced"]))
    table.add_row("exposure allowed", str(s["exposure_before"]), str(s["exposure_after"]), f"{s['exposure_after'] - s['exposure_before']:+d}")
    out.print(table)


def _print_section(name: str, frame, limit: int) -> None:
    if frame.empty:
        return
    columns = [c for c in SECTION_COLUMNS[name] if c in frame.columns]
    table = Table(title=f"{_TITLES[name]} ({len(frame)})")
    for column in columns:
        table.add_column(column)
    for row in frame.head(limit)[columns].itertuples(index=False):
        table.add_row(*(_cell(v) for v in row))
    out.print(table)
    if len(frame) > limit:
        out.print(f"... and {len(frame) - limit} more {_TITLES[name].lower()}; use --format csv --out DIR for all rows", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``twin simulate`` to ``app``."""

    @app.command()
    def simulate(
        policy: Path = typer.Option(..., "--policy", "-p", exists=True, dir_okay=False, help="Proposed policy YAML: a bare policy, or a document with a 'policy:' key (a site.yaml works)."),
        workspace: Optional[Path] = WorkspaceOption,
        snapshot: Optional[str] = SnapshotOption,
        output_format: str = typer.Option("table", "--format", "-f", help="table, json or csv (csv writes one file per section into --out)."),
        out_dir: Optional[Path] = typer.Option(None, "--out", "-o", file_okay=False, help="Folder for csv output; created if missing."),
        limit: int = typer.Option(20, "--limit", min=1, help="Rows shown per section in table output."),
        fail_on_broken: bool = typer.Option(False, "--fail-on-broken", help="Exit 3 when the proposed policy breaks a required workflow, also one the current policy already breaks."),
        fail_on_new_breaks: bool = typer.Option(False, "--fail-on-new-breaks", help="Exit 3 only when the proposed policy blocks more of a required workflow than the current policy does."),
    ) -> None:
        """Simulate a proposed policy against the recorded flows and the query catalogue."""
        from twin.policy.simulate import simulate_workspace

        if output_format not in FORMATS:
            raise typer.BadParameter(f"invalid format {output_format!r}; expected one of {', '.join(FORMATS)}", param_hint="--format")
        if output_format == "csv" and out_dir is None:
            raise typer.BadParameter("csv output needs --out DIR", param_hint="--out")
        ws = _workspace(workspace)
        try:
            result = simulate_workspace(ws, policy, snapshot)
        except TwinError as exc:
            _fail(exc)
        for warning in result.warnings:
            err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)

        if output_format == "json":
            typer.echo(json.dumps(result.to_dict(), indent=2))
        elif output_format == "csv":
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in ("flows", "attack_paths", *result.SECTIONS):
                getattr(result, name).to_csv(out_dir / f"{name}.csv", index=False)
            (out_dir / "summary.json").write_text(json.dumps(result.summary, indent=2) + "\n", encoding="utf-8")
            err.print(f"wrote {2 + len(result.SECTIONS)} CSV files and summary.json to {out_dir}", highlight=False)
        else:
            _print_summary(result)
            for name in result.SECTIONS:
                frame = getattr(result, name)
                if name == "exposure":
                    frame = frame[frame["current_allowed"] != frame["proposed_allowed"]] if not frame.empty else frame
                _print_section(name, frame, limit)

        if result.breaks_workflows:
            newly = result.newly_broken_workflow_names()
            already = result.already_broken_workflow_names()
            if newly:
                err.print(f"[red]required workflows the proposed policy breaks (further):[/red] {', '.join(newly)}", highlight=False)
            if already:
                err.print(f"[yellow]required workflows already broken under the current policy:[/yellow] {', '.join(already)}", highlight=False)
            if fail_on_new_breaks and newly:
                raise typer.Exit(EXIT_BROKEN)
            if fail_on_broken:
                raise typer.Exit(EXIT_BROKEN)


# Registers this module's commands when it was imported before twin.cli.main
# finished (see register_module there).
_main = sys.modules.get("twin.cli.main")
if _main is not None and hasattr(_main, "register_module"):
    _main.register_module(sys.modules[__name__])
