"""``twin neo4j``, ``twin export neo4j`` and ``twin import neo4j``: the twin in a Neo4j server.

The server comes from the environment: ``NEO4J_URI`` (required),
``NEO4J_USER``, ``NEO4J_PASSWORD`` and ``NEO4J_DATABASE``. The password is
read from ``NEO4J_PASSWORD`` or asked for at a terminal prompt. No option
takes it, so it never shows in shell history or the process list.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from twin.cli.main import SnapshotOption, WorkspaceOption, _fail, _workspace, err, out
from twin.exceptions import SnapshotNotFound, TwinError

__all__ = ["register", "neo4j_app", "export_app", "import_app"]

_ENV_HELP = (
    "The server is read from NEO4J_URI (for example bolt://127.0.0.1:7687), NEO4J_USER, NEO4J_PASSWORD "
    "(or a prompt at a terminal when NEO4J_USER is set) and NEO4J_DATABASE."
)

neo4j_app = typer.Typer(help=f"Build, analyse and inspect the twin in a Neo4j server. {_ENV_HELP}", no_args_is_help=True)
export_app = typer.Typer(help="Copy a workspace snapshot to another store.", no_args_is_help=True)
import_app = typer.Typer(help="Copy a twin from another store into the workspace as a new snapshot.", no_args_is_help=True)

SiteNameOption = typer.Option(None, "--site", help="Site name in Neo4j. Default: the only site stored.")


def _config():
    from twin.graph.neo4j import Neo4jConfig

    return Neo4jConfig.from_env(prompt=True)


def _print_stats(stats) -> None:
    out.print(
        f"site {stats.site!r} run {stats.run_id}: {sum(stats.nodes.values())} nodes and "
        f"{sum(stats.relationships.values())} relationships written in {stats.batches} batches, "
        f"{stats.removed_nodes} stale nodes and {stats.removed_relationships} stale relationships removed, "
        f"{stats.seconds:.1f} s",
        highlight=False,
    )


@neo4j_app.command("build")
def build(
    site_dir: Path = typer.Argument(..., exists=True, file_okay=False, dir_okay=True, help="Site folder holding site.yaml and discovery files."),
) -> None:
    """Build a site folder and write the twin to Neo4j, replacing the site's previous twin there."""
    from twin.graph.neo4j import build_to_neo4j

    try:
        stats = build_to_neo4j(site_dir, _config())
    except TwinError as exc:
        _fail(exc)
    _print_stats(stats)


@neo4j_app.command("analyze")
def analyze(
    site: Optional[str] = SiteNameOption,
    query: Optional[list[str]] = typer.Option(None, "--query", "-q", help="Run only this query (repeatable)."),
    output: str = typer.Option("table", "--output", "-o", help="table or json."),
    top: int = typer.Option(20, "--top", min=1, help="Rows shown per query in table output."),
    python: bool = typer.Option(False, "--python", help="Load the twin and run the Python forms instead of the Cypher forms on the server."),
) -> None:
    """Run the query catalogue on a site's twin in Neo4j (its Cypher forms) and print the findings."""
    from twin.analysis import CATALOGUE
    from twin.graph.neo4j import analyze_from_neo4j

    if output not in ("table", "json"):
        raise typer.BadParameter(f"invalid output {output!r}; expected table or json", param_hint="--output")
    unknown = [q for q in query or [] if q not in CATALOGUE]
    if unknown:
        raise typer.BadParameter(f"unknown query {', '.join(unknown)}; known: {', '.join(CATALOGUE)}", param_hint="--query")
    try:
        findings = analyze_from_neo4j(_config(), site=site, queries=query or None, engine="python" if python else "cypher")
    except TwinError as exc:
        _fail(exc)
    if output == "json":
        document = {name: json.loads(frame.to_json(orient="records", default_handler=str)) for name, frame in findings.items()}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    for name, frame in findings.items():
        table = Table(title=f"{name}: {len(frame)} findings")
        columns = [c for c in frame.columns if c != "evidence"][:8]
        for col in columns:
            table.add_column(col)
        for row in frame.head(top).itertuples(index=False):
            values = row._asdict()
            table.add_row(*(str(values.get(col, "")) for col in columns))
        out.print(table)


@neo4j_app.command("status")
def status() -> None:
    """Print the Neo4j server version and, per site, its run and the count of each label and relationship type."""
    from twin.graph.neo4j import Neo4jStore

    try:
        with Neo4jStore(_config()) as store:
            info = store.status()
    except TwinError as exc:
        _fail(exc)
    out.print(f"{info['server']} {info['version']} {info['edition']} at {info['uri']}", highlight=False)
    if not info["sites"]:
        out.print("no site stored yet; write one with 'twin neo4j build SITE_DIR' or 'twin export neo4j'")
        return
    for site in info["sites"]:
        table = Table(title=f"site {site['site']!r}, run {site['run_id']}")
        table.add_column("label or type")
        table.add_column("count", justify="right")
        for name, count in {**site["nodes"], **site["relationships"]}.items():
            table.add_row(name, str(count))
        out.print(table)


@neo4j_app.command("delete")
def delete(site: str = typer.Option(..., "--site", help="Site name to remove from Neo4j.")) -> None:
    """Remove every node and relationship of one site from Neo4j."""
    from twin.graph.neo4j import Neo4jStore

    try:
        with Neo4jStore(_config()) as store:
            known = store.sites()
            if site not in known:
                raise SnapshotNotFound(f"no site {site!r} in Neo4j at {store.config.uri}; known sites: {', '.join(known) or '(none)'}")
            removed = store.delete_site(site)
    except TwinError as exc:
        _fail(exc)
    out.print(f"site {site!r}: {removed} items removed", highlight=False)


@export_app.command("neo4j")
def export_neo4j(workspace: Optional[Path] = WorkspaceOption, snapshot: Optional[str] = SnapshotOption) -> None:
    """Write a workspace snapshot (the latest by default) to Neo4j, replacing the site's twin there."""
    from twin.graph.neo4j import export_snapshot

    ws = _workspace(workspace)
    try:
        stats = export_snapshot(ws.path, _config(), snapshot)
    except TwinError as exc:
        _fail(exc)
    _print_stats(stats)


@import_app.command("neo4j")
def import_neo4j(workspace: Optional[Path] = WorkspaceOption, site: Optional[str] = SiteNameOption) -> None:
    """Copy a site's twin from Neo4j into the workspace as a snapshot with the same run id."""
    from twin.graph.neo4j import import_site

    ws = _workspace(workspace)
    try:
        run_id = import_site(_config(), ws.path, site)
    except TwinError as exc:
        _fail(exc)
    out.print(f"snapshot {run_id} imported from Neo4j -> {ws.path}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``neo4j``, ``export`` and ``import`` command groups to ``app``."""
    app.add_typer(neo4j_app, name="neo4j")
    app.add_typer(export_app, name="export")
    app.add_typer(import_app, name="import")


# Registers this module's commands when it was imported before twin.cli.main
# finished (see register_module there).
_main = sys.modules.get("twin.cli.main")
if _main is not None and hasattr(_main, "register_module"):
    _main.register_module(sys.modules[__name__])
