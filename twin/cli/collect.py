"""``twin collect``: live collection (``twin collect flows`` receives NetFlow, IPFIX and sFlow over UDP).

``twin collect flows`` listens on UDP (127.0.0.1:2055 by default), decodes
NetFlow v5/v9, IPFIX and sFlow v5 exports, and aggregates them into edges and
hourly buckets. Every ``--batch-seconds`` it merges the batch into the run's
snapshot in the workspace, or writes Parquet files into ``--out``. The first
batch derives that snapshot from the site's latest one, and each later batch
replaces it, so one run adds one snapshot. Counters go to stderr every ``--stats-interval`` and to
stdout at the end. SIGINT (Ctrl-C) or SIGTERM stops it after the last batch
is stored; a second SIGINT interrupts at once.

Exit codes: 0 stopped cleanly; 1 a socket could not be bound or a batch
could not be stored; 2 invalid usage, or no workspace or snapshot to update
yet (run ``twin build`` first, or pass ``--out``).
"""

from __future__ import annotations

import logging
import signal
from collections import Counter
import sys
import threading
from pathlib import Path
from typing import Any, Optional

import typer

from twin.cli.main import EXIT_ERROR, WorkspaceOption, err, out
from twin.exceptions import TwinError

__all__ = ["collect_app", "register", "flows", "EXIT_NO_SNAPSHOT"]

# Exit code when there is no workspace or snapshot to update.
EXIT_NO_SNAPSHOT = 2
DEFAULT_LISTEN = "127.0.0.1:2055"

collect_app = typer.Typer(help="Live collection: receive flow exports (NetFlow, IPFIX, sFlow) over UDP.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``collect`` command group to the ``twin`` app."""
    app.add_typer(collect_app, name="collect")


def _print_error(message: str) -> None:
    err.print(f"error: {message}", highlight=False, markup=False)


def _stats_line(counters: dict[str, Any]) -> str:
    return (
        f"received {counters['received']}, dropped {counters['dropped']}, decoded {counters['decoded']}, "
        f"records {counters['records']}, waiting for template {counters['waiting_for_template']}, "
        f"undecodable {counters['undecodable']}, malformed {counters.get('malformed', 0)}, "
        f"unsupported {counters.get('unsupported', 0)}, batches {counters['batches']}"
    )


def _check_workspace(workspace: Path, site_config) -> str:
    """Return the run id the first batch will derive from; raise TwinError when there is none."""
    from twin.graph.embedded import EmbeddedStore
    from twin.flowupdate import latest_site_run

    with EmbeddedStore(workspace, create=False) as store:
        run = latest_site_run(store, site_config.site.name if site_config is not None else None)
    return f"snapshot {run.run_id} of site {run.site!r}"


@collect_app.command("flows")
def flows(
    listen: Optional[list[str]] = typer.Option(
        None, "--listen", "-l",
        help=f"ADDR:PORT to receive NetFlow v5/v9, IPFIX and sFlow v5 on (repeatable). Default: {DEFAULT_LISTEN}. "
        "Other addresses are never used unless given, such as 0.0.0.0:2055 for every IPv4 address.",
    ),
    site: Optional[Path] = typer.Option(
        None, "--site", exists=True,
        help="Site folder (or its site.yaml) whose latest snapshot the flows update. Default: the site of the workspace's latest snapshot.",
    ),
    workspace: Optional[Path] = WorkspaceOption,
    out_dir: Optional[Path] = typer.Option(
        None, "--out", "-o", file_okay=False,
        help="Folder for each batch's edges and hourly buckets as Parquet files. Without --workspace, nothing is written to a workspace.",
    ),
    batch_seconds: float = typer.Option(60.0, "--batch-seconds", min=0.1, help="Seconds between batches written to the workspace or --out."),
    duration: Optional[float] = typer.Option(None, "--duration", min=0.1, help="Stop after this many seconds. Default: run until SIGINT or SIGTERM."),
    max_packets: Optional[int] = typer.Option(None, "--max-packets", min=1, help="Stop after this many datagrams were received."),
    queue_size: int = typer.Option(65536, "--queue", min=1, help="Datagrams held between the socket reader and the decoder; more are dropped and counted."),
    stats_interval: float = typer.Option(10.0, "--stats-interval", min=0.1, help="Seconds between counter lines on stderr."),
    stats_file: Optional[Path] = typer.Option(None, "--stats-file", dir_okay=False, help="JSON file rewritten with the counters every stats interval and at the end."),
    receive_buffer: int = typer.Option(32 << 20, "--receive-buffer", min=4096, help="Socket receive buffer to request, in bytes; the kernel caps it at net.core.rmem_max."),
    max_keys: int = typer.Option(1_000_000, "--max-keys", min=1, help="Edge and hour buckets held per batch; beyond it the smallest edges are evicted and counted."),
) -> None:
    """Receive flow exports over UDP and add them to the twin in batches, or write them as Parquet files."""
    # A long-running collector shows its warnings (datagrams it cannot
    # decode) even without -v; builds summarise theirs in a table instead.
    collector_log = logging.getLogger("twin.discovery.collector")
    if collector_log.getEffectiveLevel() > logging.WARNING:
        collector_log.setLevel(logging.WARNING)
    from twin.discovery.collector import CollectorError, CollectorSettings, FlowCollector, parse_listen, write_batch_files
    from twin.model.site import load_site

    try:
        addresses = [parse_listen(text) for text in (listen or [DEFAULT_LISTEN])]
    except CollectorError as exc:
        raise typer.BadParameter(str(exc), param_hint="--listen") from None
    repeated = sorted(text for text, count in Counter(str(a) for a in addresses).items() if count > 1)
    if repeated:
        raise typer.BadParameter(f"{', '.join(repeated)} given more than once; give each address once", param_hint="--listen")
    try:
        site_config = load_site(site) if site is not None else None
    except TwinError as exc:
        _print_error(str(exc))
        raise typer.Exit(EXIT_ERROR)

    use_workspace = workspace is not None or out_dir is None
    if use_workspace:
        from twin.api import default_workspace

        workspace = workspace or default_workspace()
        try:
            base = _check_workspace(workspace, site_config)
        except TwinError as exc:
            _print_error(f"{exc}; or pass --out DIR to write Parquet files instead")
            raise typer.Exit(EXIT_NO_SNAPSHOT)

    settings = CollectorSettings(
        queue_size=queue_size,
        batch_seconds=batch_seconds,
        stats_interval=stats_interval,
        duration=duration,
        max_packets=max_packets,
        receive_buffer=receive_buffer,
        max_keys=max_keys,
    )
    from twin.flowupdate import CollectorRun

    run = CollectorRun.new(source="netflow", origin="udp://" + ",".join(str(a) for a in addresses))

    def on_batch(batch) -> None:
        from twin.flowupdate import apply_flow_batch

        note = f"batch {batch.sequence + 1}: {len(batch.edges)} edges"
        if out_dir is not None:
            files = write_batch_files(out_dir, batch)
            note += f", written to {files[0].name} and {files[1].name}"
        if use_workspace:
            replaced = run.snapshot_id
            run_id = apply_flow_batch(
                workspace, site_config, batch.edges, batch.hours,
                started_at=batch.started_at, ended_at=batch.ended_at, run=run, counters=batch.counters,
            )
            if run_id is not None:
                note += f", snapshot {run_id} with {run.batches} {'batch' if run.batches == 1 else 'batches'}"
                # After another snapshot of the site was committed, the batch starts a new snapshot instead.
                if run.batches > 1:
                    note += f", replacing {replaced}"
        err.print(note, highlight=False, markup=False)

    def on_stats(counters: dict[str, Any]) -> None:
        err.print(_stats_line(counters), highlight=False, markup=False)

    collector = FlowCollector(addresses, settings=settings, on_batch=on_batch, on_stats=on_stats, stats_file=stats_file)
    try:
        collector.start()
    except CollectorError as exc:
        _print_error(str(exc))
        raise typer.Exit(EXIT_ERROR)
    run.origin = "udp://" + ",".join(str(a) for a in collector.bound)
    if use_workspace:
        err.print(f"flow batches update {base} in {workspace}", highlight=False, markup=False)
        err.print(f"collector run {run.run_id}", highlight=False, markup=False)
    for address, granted in collector.receive_buffers.items():
        err.print(
            f"listening on UDP {address} (receive buffer {granted} bytes, {receive_buffer} requested)",
            highlight=False, markup=False,
        )

    previous = _install_signal_handlers(collector)
    try:
        while not collector.wait(0.5):
            pass
    finally:
        collector.stop()
        collector.join(60.0)
        _restore_signal_handlers(previous)

    counters = collector.counters()
    if stats_file is not None:
        err.print(f"counters written to {stats_file}", highlight=False, markup=False)
    for name, value in counters.items():
        out.print(f"{name}: {value}", highlight=False, markup=False)
    if run.snapshots:
        out.print(f"collector_run: {run.run_id}", highlight=False, markup=False)
        out.print(f"snapshot: {run.snapshots[-1]}", highlight=False, markup=False)
        out.print(f"snapshot_batches: {run.batches}", highlight=False, markup=False)
        if len(run.snapshots) > 1:
            out.print(
                f"snapshots: {len(run.snapshots)} ({', '.join(run.snapshots)}): other snapshots of the site "
                "were committed during the run, so later batches started new snapshots",
                highlight=False, markup=False,
            )
    if counters["batch_errors"]:
        _print_error(f"{counters['batch_errors']} batches were not stored; the last error: {collector.last_batch_error}")
        raise typer.Exit(EXIT_ERROR)


def _install_signal_handlers(collector) -> dict[int, Any]:
    """Stop the collector on SIGINT and SIGTERM; a second SIGINT raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {}

    def handle(signum, frame) -> None:
        err.print(f"{signal.Signals(signum).name}: stopping after the last batch is stored", highlight=False, markup=False)
        collector.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handle)
    return previous


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


# Registers this module's commands when it was imported before twin.cli.main
# finished (see register_module there).
_main = sys.modules.get("twin.cli.main")
if _main is not None and hasattr(_main, "register_module"):
    _main.register_module(sys.modules[__name__])
