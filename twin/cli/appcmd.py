"""``twin app``: start the Streamlit app on the workspace or a Neo4j server, bound to loopback by default.

With ``--store neo4j`` the app reads ``NEO4J_URI``, ``NEO4J_USER``,
``NEO4J_PASSWORD`` and ``NEO4J_DATABASE``. A password asked for at the
prompt reaches the app through ``NEO4J_PASSWORD`` in its environment, never
through its command line.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

__all__ = ["APP_SCRIPT", "DEFAULT_PORT", "DEFAULT_ADDRESS", "STORE_ENV", "NEO4J_SITE_ENV", "streamlit_command", "register"]

# The Streamlit script `twin app` runs, inside the installed package (the repository's app.py is not installed).
APP_SCRIPT = Path(__file__).resolve().parent.parent / "app" / "entry" / "app.py"

# Port and address the app listens on (defaults 8501 and 127.0.0.1, loopback only).
DEFAULT_PORT = 8501
DEFAULT_ADDRESS = "127.0.0.1"

# Environment variables this command sets for the app (twin.app.data reads them):
# the store to read (embedded or neo4j) and, with neo4j, the site to open first.
STORE_ENV = "TWIN_STORE"
NEO4J_SITE_ENV = "TWIN_NEO4J_SITE"


def streamlit_command(port: int = DEFAULT_PORT, address: str = DEFAULT_ADDRESS) -> list[str]:
    """Return the command line that starts the app: headless, usage statistics off.

    >>> streamlit_command(8600)[-8:]
    ['--server.port', '8600', '--server.address', '127.0.0.1', '--server.headless', 'true', '--browser.gatherUsageStats', 'false']
    """
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_SCRIPT),
        "--server.port",
        str(int(port)),
        "--server.address",
        address,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def register(app: typer.Typer) -> None:
    """Add ``twin app`` to the ``twin`` command."""
    from twin.cli.main import WorkspaceOption, _fail, _use_neo4j, err, out
    from twin.api import WORKSPACE_ENV, default_workspace
    from twin.exceptions import TwinError

    @app.command("app")
    def app_command(
        workspace: Optional[Path] = WorkspaceOption,
        port: int = typer.Option(DEFAULT_PORT, "--port", min=1, max=65535, help="TCP port the app listens on."),
        address: str = typer.Option(
            DEFAULT_ADDRESS,
            "--address",
            help="Address the app binds to. The app has no login, so anything but loopback exposes the twin to that network.",
        ),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the streamlit command and the workspace, and exit."),
        store: str = typer.Option("embedded", "--store", help="embedded (the workspace file) or neo4j (NEO4J_URI, NEO4J_USER, NEO4J_PASSWORD)."),
        site: Optional[str] = typer.Option(None, "--site", help="With --store neo4j: the site to open first. Default: the first site stored."),
    ) -> None:
        """Open the twin in the browser: map, devices, findings, attack paths, policy simulation, dashboards."""
        neo4j = _use_neo4j(store)
        if site is not None and not neo4j:
            raise typer.BadParameter("--site selects a site in Neo4j; use it with --store neo4j", param_hint="--site")
        path = (workspace or default_workspace()).expanduser().resolve()
        command = streamlit_command(port, address)
        env = {**os.environ, WORKSPACE_ENV: str(path), STORE_ENV: store}
        shown = {WORKSPACE_ENV: str(path), STORE_ENV: store}
        if neo4j:
            from twin.graph.neo4j import Neo4jConfig, redact_uri

            try:
                config = Neo4jConfig.from_env(prompt=not dry_run)
            except TwinError as exc:
                _fail(exc)
            if config.password is not None:
                env["NEO4J_PASSWORD"] = config.password
            if site is not None:
                env[NEO4J_SITE_ENV] = site
                shown[NEO4J_SITE_ENV] = site
            source = f"Neo4j {redact_uri(config.uri)}" + (f", site {site}" if site else "")
        else:
            source = f"workspace {path}"
        # Warn before the dry run exits too: its command binds the same address.
        if not _is_loopback(address):
            err.print(f"warning: binding to {address}: anyone who can reach it sees the twin; the app has no login", highlight=False)
        if dry_run:
            assignments = " ".join(f"{name}={shlex.quote(value)}" for name, value in shown.items())
            out.print(f"{assignments} {shlex.join(command)}", highlight=False, soft_wrap=True)
            raise typer.Exit(0)
        if not neo4j and not path.exists():
            err.print(f"warning: workspace {path} not found; the app will show how to build one ('twin build SITE_DIR -w {path}')", highlight=False)
        err.print(f"starting the app on http://{address}:{port} ({source}); stop it with Ctrl+C", highlight=False)
        sys.stdout.flush()
        sys.stderr.flush()
        # Replace this process, so the app keeps this process id and a signal to it stops the app.
        os.execve(sys.executable, command, env)


# Registers this module's commands when it was imported before twin.cli.main
# finished (see register_module there).
_main = sys.modules.get("twin.cli.main")
if _main is not None and hasattr(_main, "register_module"):
    _main.register_module(sys.modules[__name__])
