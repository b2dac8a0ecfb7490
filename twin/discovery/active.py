"""Run a scan plan with nmap and keep every result, complete or not.

:func:`run_plan` executes the groups of a :class:`twin.discovery.plan.ScanPlan`
one after the other, each as one nmap process. Safety checks happen before
anything is sent: the maintenance window must be open, and every target of
every group is checked again with the site's scope guard
(:meth:`twin.discovery.scope.ScopeGuard.check`). The command line of a group
is built only from the group's ``nmap_args``, ``-oX FILE`` and the addresses
the guard returned.

python-nmap locates the nmap binary and reads its version
(:func:`find_nmap`). The scan itself runs through :mod:`subprocess`, not
through python-nmap's blocking ``PortScanner.scan``, so the runner owns the
process id, enforces its own timeout and kills exactly that process. Each
group writes its XML to a file with ``-oX``, so a scan that is killed keeps
the hosts it finished. The core's importer (:mod:`twin.discovery.scan`) reads
that XML, keeps those hosts and reports where the file breaks off.

nmap 7.93 applies ``--max-rate`` to its port scan only. For a group whose
budget has ``version`` or ``scripts`` probes, the runner starts a
:class:`twin.discovery.pacing.PacingProxy` on 127.0.0.1 for the length of
the group and adds ``--proxies socks4://127.0.0.1:PORT`` to its command
line. nmap then opens every version-detection and NSE connection through
the proxy. The proxy spaces them at the budget's ``max_rate`` and caps them
at ``max_connections`` per target. It rejects any destination that is not a
target of the group, and checks the others again with the scope guard.

Output layout (default folder ``<site dir>/nmap/active``)::

    <out>/<run id>/g01-workstation.xml   one XML file per group
    <out>/<run id>/.manifest.json        the run's manifest

The manifest is rewritten after every step, so it shows the running nmap's
process id while a group runs. Its name starts with a dot because
``twin build`` skips hidden files, and it reads every ``*.xml`` under the site
folder: the next build takes the scan results.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from twin.exceptions import ScopeError, TwinError

__all__ = [
    "ACTIVE_SUBDIR",
    "MANIFEST_NAME",
    "GROUP_TIMEOUT_MARGIN_S",
    "KILL_GRACE_S",
    "FORBIDDEN_NMAP_OPTIONS",
    "WINDOW_CLOSED",
    "NmapNotFound",
    "ScanRejected",
    "NmapInfo",
    "GroupResult",
    "ScanRun",
    "find_nmap",
    "default_output_dir",
    "group_timeout",
    "build_argv",
    "describe_pacing",
    "run_plan",
]

log = logging.getLogger(__name__)

# Folder under the site folder that receives scan results by default.
ACTIVE_SUBDIR = Path("nmap") / "active"
# Manifest file name inside a run folder (hidden, so `twin build` skips it).
MANIFEST_NAME = ".manifest.json"
# Seconds added to the sum of the targets' host timeouts before the runner
# kills a group's nmap (default 30): nmap's own start-up, DNS-free set-up and
# XML writing take a few seconds on top of the per-host limit.
GROUP_TIMEOUT_MARGIN_S = 30.0
# Seconds nmap gets to exit after SIGTERM before SIGKILL (default 5).
KILL_GRACE_S = 5.0
# Last characters of nmap's stderr kept in the manifest per group (default 2000).
STDERR_KEPT_CHARS = 2000

# nmap options that add targets, output files or a proxy on their own. A plan
# whose arguments contain one is rejected, because targets must come only
# from the scope guard, output only from the runner, and the only proxy is
# the runner's pacing proxy.
FORBIDDEN_NMAP_OPTIONS = (
    "-iL", "-iR", "--resume", "-oN", "-oX", "-oG", "-oA", "-oS", "-oM", "--stylesheet",
    "--datadir", "--servicedb", "--versiondb", "--script-args-file", "--excludefile", "--append-output",
    "--proxies", "--proxy",
)

# Reason recorded for a group that the closing maintenance window stopped or never started.
WINDOW_CLOSED = "maintenance window closed"

_HOST_TIMEOUT_LINE = re.compile(r"Skipping host (\S+) due to host timeout")


class NmapNotFound(TwinError):
    """The nmap binary is missing or does not run."""


class ScanRejected(TwinError):
    """A scan was refused before sending anything (maintenance window closed, invalid plan)."""


@dataclass(frozen=True)
class NmapInfo:
    """The nmap binary a scan runs: its path and version as nmap reports it."""

    path: str
    version: str


@dataclass
class GroupResult:
    """Outcome of one scan group: one nmap process over one budget's targets."""

    index: int
    budget: str
    targets: list[str]
    argv: list[str]
    xml: str
    timeout_s: float
    pid: int | None = None
    started: str | None = None
    finished: str | None = None
    exit_status: int | None = None
    complete: bool = False
    reason: str = "not started"
    hosts_in_xml: int = 0
    hosts_up: int = 0
    services: int = 0
    issues: list[str] = field(default_factory=list)
    stderr: str = ""
    pacing: dict[str, Any] | None = None


@dataclass
class ScanRun:
    """Outcome of :func:`run_plan`: one entry per group and the manifest path."""

    run_id: str
    site: str
    output_dir: Path
    manifest: Path
    nmap: NmapInfo
    started: str
    finished: str | None = None
    groups: list[GroupResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every group finished with a whole XML file and exit status 0."""
        return all(group.complete for group in self.groups)

    def as_dict(self) -> dict[str, Any]:
        """Return the manifest document."""
        return {
            "run_id": self.run_id,
            "site": self.site,
            "started": self.started,
            "finished": self.finished,
            "complete": self.complete if self.finished else None,
            "nmap": asdict(self.nmap),
            "warnings": self.warnings,
            "skipped": self.skipped,
            "groups": [asdict(group) for group in self.groups],
        }


# --------------------------------------------------------------------------
# nmap binary


def find_nmap(nmap_path: str | os.PathLike | None = None) -> NmapInfo:
    """Locate nmap and read its version through python-nmap.

    Parameters
    ----------
    nmap_path : path, optional
        The nmap binary to use. Default: ``nmap`` looked up on ``PATH`` only
        (python-nmap would also try fixed folders, which would hide an empty
        ``PATH``).

    Raises
    ------
    NmapNotFound
        When the binary is missing or ``nmap -V`` fails, with the fix.
    """
    import nmap

    fix = "install it with `apt-get install nmap` or pass --nmap PATH"
    if nmap_path is None:
        found = shutil.which("nmap")
        if found is None:
            raise NmapNotFound(f"nmap was not found on PATH; {fix}")
    else:
        found = str(nmap_path)
        if not os.path.exists(found):
            raise NmapNotFound(f"{found} does not exist; {fix}")
        if os.path.isdir(found) or not os.access(found, os.X_OK):
            raise NmapNotFound(f"{found} is not executable; pass the nmap binary with --nmap PATH")
    _check_is_nmap(found)
    try:
        scanner = nmap.PortScanner(nmap_search_path=(found,))
    except nmap.PortScannerError:
        # python-nmap's message lists every folder it searched; the check above already named the binary.
        raise NmapNotFound(f"{found} is not nmap (python-nmap could not read its version); {fix}") from None
    major, minor = scanner.nmap_version()
    return NmapInfo(path=found, version=f"{major}.{minor}")


# Seconds `nmap -V` may take when find_nmap checks a binary (default 30).
VERSION_CHECK_TIMEOUT_S = 30.0


def _check_is_nmap(path: str) -> None:
    """Run ``PATH -V`` and raise NmapNotFound unless it prints nmap's version line."""
    try:
        done = subprocess.run(
            [path, "-V"], stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
            timeout=VERSION_CHECK_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise NmapNotFound(f"{path} is not nmap (`{path} -V` did not finish within {VERSION_CHECK_TIMEOUT_S:.0f} s)") from None
    except OSError as exc:
        raise NmapNotFound(f"{path} could not be run ({exc.strerror or exc}); pass the nmap binary with --nmap PATH") from None
    printed = (done.stdout or "") + (done.stderr or "")
    if re.search(r"Nmap version \d+\.\d+", printed):
        return
    shown = " ".join(printed.split())[:120]
    raise NmapNotFound(
        f"{path} is not nmap (`{path} -V` printed {shown!r})" if shown else f"{path} is not nmap (`{path} -V` printed nothing)"
    )


# --------------------------------------------------------------------------
# Building the command line


def default_output_dir(site_dir: str | os.PathLike) -> Path:
    """Return the default result folder of a site: ``<site dir>/nmap/active``."""
    return Path(site_dir) / ACTIVE_SUBDIR


def group_timeout(group) -> float:
    """Return the seconds a group's nmap may run: one host timeout per target plus a margin.

    The plan scans one host at a time (``--max-hostgroup 1``), so the host
    timeouts add up.
    """
    return len(group.targets) * float(group.budget.host_timeout_s) + GROUP_TIMEOUT_MARGIN_S


def build_argv(nmap_path: str, nmap_args: Sequence[str], xml_path: str | os.PathLike, addresses: Sequence[Any]) -> list[str]:
    """Return the nmap command line of one group: binary, plan arguments, ``-oX FILE``, addresses.

    Raises
    ------
    ScanRejected
        When ``nmap_args`` contain an option that adds targets, output
        files or a proxy (:data:`FORBIDDEN_NMAP_OPTIONS`), or do not start
        with ``-n -Pn``.
    """
    args = [str(arg) for arg in nmap_args]
    for arg in args:
        name = arg.split("=", 1)[0]
        if name in FORBIDDEN_NMAP_OPTIONS or any(arg.startswith(opt) for opt in ("-iL", "-iR", "-oX", "-oN", "-oG", "-oA")):
            raise ScanRejected(
                f"nmap argument {arg!r} in the scan plan adds targets, output files or a proxy; "
                "targets come only from the scope guard, output and the pacing proxy only from the runner"
            )
    if args[:2] != ["-n", "-Pn"]:
        raise ScanRejected(
            f"scan plan arguments start with {args[:2]!r}; expected ['-n', '-Pn'] "
            "(no reverse DNS, no host discovery probes outside the budget)"
        )
    return [nmap_path, *args, "-oX", str(xml_path), *(str(address) for address in addresses)]


def _guard_targets(plan, guard) -> list[list[Any]]:
    """Check every target of every group with the scope guard before anything runs."""
    checked = []
    for group in plan.groups:
        addresses = []
        for target in group.targets:
            try:
                addresses.extend(guard.check(target))
            except ScopeError:
                raise
            except TwinError as exc:
                raise ScopeError(f"target {target!r} of the scan plan failed the scope check: {exc}") from None
        checked.append(addresses)
    return checked


# --------------------------------------------------------------------------
# Running


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_manifest(run: ScanRun) -> None:
    temporary = run.manifest.with_suffix(".tmp")
    temporary.write_text(json.dumps(run.as_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, run.manifest)


def run_plan(
    plan,
    site,
    site_dir: str | os.PathLike,
    *,
    nmap_path: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    allow_public: bool = False,
    timeout_s: float | None = None,
    now: datetime | None = None,
    on_group_start: Callable[[GroupResult], None] | None = None,
    on_group_end: Callable[[GroupResult], None] | None = None,
) -> ScanRun:
    """Run every group of a scan plan with nmap and import what each one wrote.

    Parameters
    ----------
    plan : twin.discovery.plan.ScanPlan
        The plan from :func:`twin.discovery.plan.plan_scan`.
    site : SiteConfig
        The site the plan was made for; its scope guard re-checks every
        target and its maintenance windows are checked before each group.
    site_dir : path
        Site folder; results go to ``<site dir>/nmap/active`` by default.
    nmap_path : path, optional
        nmap binary; default ``nmap`` on ``PATH``.
    output_dir : path, optional
        Folder for the run folder; default :func:`default_output_dir`.
    allow_public : bool
        The command-line override for public addresses, passed to the guard.
    timeout_s : float, optional
        Seconds each group may run before the runner kills it; default
        :func:`group_timeout` of the group.
    now : datetime, optional
        Time used for the window check (tests); default the current time.
    on_group_start, on_group_end : callable, optional
        Called with the :class:`GroupResult` once nmap started (``pid`` set)
        and once the group's XML is imported.

    Returns
    -------
    ScanRun
        Every group with its exit status, completeness and reason; the
        manifest is written to ``<run folder>/.manifest.json``.

    Raises
    ------
    ScanRejected
        When the maintenance window is closed or the plan's arguments are
        invalid; nothing is sent.
    ScopeError
        When a target fails the scope guard (``OutOfScope``); nothing is sent.
    NmapNotFound
        When nmap is missing; nothing is sent.

    Notes
    -----
    A group that is killed, times out, exits non-zero or leaves a cut-off
    XML file is marked incomplete with the reason. Its finished hosts stay
    in the XML file, and the following groups still run. Groups run one
    after the other, so the run takes about the sum of the groups' times.
    """
    from twin.discovery import scan
    from twin.discovery.plan import check_window
    from twin.discovery.scope import guard_for
    from twin.pipeline import new_run_id

    window = plan.window
    if not window.open:
        raise ScanRejected(
            f"scan rejected because the maintenance window is closed: {_window_text(window)}; nothing was sent"
        )
    guard = guard_for(site, allow_public=allow_public)
    addresses = _guard_targets(plan, guard)
    nmap_info = find_nmap(nmap_path)

    run_id = new_run_id()
    out = Path(output_dir) if output_dir is not None else default_output_dir(site_dir)
    run_dir = out / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    run = ScanRun(
        run_id=run_id,
        site=site.site.name,
        output_dir=run_dir,
        manifest=run_dir / MANIFEST_NAME,
        nmap=nmap_info,
        started=_now(),
        warnings=list(plan.warnings),
        skipped=[asdict(skip) for skip in plan.skipped],
    )
    for index, (group, group_addresses) in enumerate(zip(plan.groups, addresses), start=1):
        xml = run_dir / f"g{index:02d}-{_safe_name(group.budget.name)}.xml"
        run.groups.append(
            GroupResult(
                index=index,
                budget=group.budget.name,
                targets=[str(a) for a in group_addresses],
                argv=build_argv(nmap_info.path, group.nmap_args, xml, group_addresses),
                xml=str(xml),
                timeout_s=timeout_s if timeout_s is not None else group_timeout(group),
            )
        )
    _write_manifest(run)
    log.info("scan run %s of site %r started: %d groups -> %s", run_id, run.site, len(run.groups), run_dir)

    # The window is checked against `now` plus the time the run has taken, so
    # a test can start the run just before its window closes.
    started = datetime.now(timezone.utc) if now is None else now
    clock = time.monotonic()
    for result in run.groups:
        current_time = started + timedelta(seconds=time.monotonic() - clock)
        current = check_window(site, current_time)
        if not current.open:
            result.reason = f"not started: {WINDOW_CLOSED}; {_window_text(current)}"
            log.warning("scan run %s group %d %s", run_id, result.index, result.reason)
            _write_manifest(run)
            continue
        window_left = (current.closes - current_time).total_seconds() if current.closes is not None else None
        _run_group(result, run, on_group_start, group=plan.groups[result.index - 1], guard=guard, window_left_s=window_left)
        _import_group(result, scan)
        _write_manifest(run)
        log.info(
            "scan run %s group %d (%s): %s, %d hosts up, %d services",
            run_id, result.index, result.budget, "complete" if result.complete else f"incomplete: {result.reason}",
            result.hosts_up, result.services,
        )
        if on_group_end:
            on_group_end(result)

    run.finished = _now()
    _write_manifest(run)
    log.info("scan run %s finished: %s", run_id, "complete" if run.complete else "incomplete")
    return run


def _window_text(window) -> str:
    # The reason of a closed window already names the next opening.
    return str(getattr(window, "reason", "") or "outside every maintenance window")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)) or "group"


def describe_pacing(plan) -> list[str]:
    """Return one dry-run line per group whose version detection or scripts go through the pacing proxy."""
    from twin.discovery.pacing import needs_pacing

    lines = []
    for group in plan.groups:
        budget = group.budget
        if not needs_pacing(budget):
            continue
        lines.append(
            f"pacing: group {budget.name}: nmap also gets --proxies socks4://127.0.0.1:PORT (a port picked at run "
            f"time), so version detection and scripts connect through a local proxy that starts at most "
            f"{budget.max_rate} connections per second, keeps at most {budget.max_connections} open per target, "
            f"waits 1 s after each target's port scan, and connects only to this group's targets and TCP ports"
        )
    return lines


def _start_pacing(result: GroupResult, group, guard):
    """Start the group's pacing proxy and add ``--proxies`` to its command line; None when the budget needs none."""
    from twin.discovery.pacing import PacingProxy, needs_pacing

    if group is None or guard is None or not needs_pacing(group.budget):
        return None
    budget = group.budget
    proxy = PacingProxy(
        result.targets,
        max_rate=budget.max_rate,
        max_connections=budget.max_connections,
        check=guard.check,
        ports=budget.tcp_ports,
    ).start()
    at = result.argv.index("-oX")
    result.argv = [*result.argv[:at], "--proxies", proxy.url, *result.argv[at:]]
    return proxy


def _run_group(result: GroupResult, run: ScanRun, on_group_start, *, group=None, guard=None,
               window_left_s: float | None = None) -> None:
    """Start nmap for one group, wait with a timeout, and record how it ended.

    When the group's budget has version or script probes, its pacing proxy
    runs from before nmap starts until after nmap ended.
    """
    result.started = _now()
    try:
        proxy = _start_pacing(result, group, guard)
    except TwinError as exc:
        result.reason = f"the pacing proxy could not start, so nmap was not started: {exc}"
        result.finished = _now()
        return
    try:
        _run_nmap(result, run, on_group_start, window_left_s=window_left_s)
    finally:
        if proxy is not None:
            proxy.close()
            result.pacing = proxy.summary()


def _run_nmap(result: GroupResult, run: ScanRun, on_group_start, *, window_left_s: float | None = None) -> None:
    try:
        process = subprocess.Popen(
            result.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        result.reason = f"nmap could not be started: {exc.strerror or exc}"
        result.finished = _now()
        return
    result.pid = process.pid
    result.reason = "running"
    _write_manifest(run)
    if on_group_start:
        on_group_start(result)

    timed_out = False
    window_stop = window_left_s is not None and window_left_s < result.timeout_s
    wait_s = max(0.0, window_left_s) if window_stop else result.timeout_s
    try:
        stdout, stderr = process.communicate(timeout=wait_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        if window_stop:
            log.warning("scan run %s group %d: the maintenance window closed; stopping nmap pid %d", run.run_id, result.index, process.pid)
        else:
            log.warning("scan run %s group %d: nmap pid %d timed out after %.0f s; stopping it", run.run_id, result.index, process.pid, result.timeout_s)
        process.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = process.communicate(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
    result.finished = _now()
    result.exit_status = process.returncode
    result.stderr = (stderr or "")[-STDERR_KEPT_CHARS:]

    skipped_hosts = _HOST_TIMEOUT_LINE.findall(stdout or "")
    if timed_out and window_stop:
        result.reason = f"{WINDOW_CLOSED}; nmap was stopped"
    elif timed_out:
        result.reason = f"timed out after {result.timeout_s:.0f} s; nmap was stopped"
    elif process.returncode < 0:
        result.reason = f"nmap was killed by {signal.Signals(-process.returncode).name}"
    elif process.returncode != 0:
        last = result.stderr.strip().splitlines()[-1:] or ["no message"]
        result.reason = f"nmap exited with status {process.returncode}: {last[0]}"
    elif skipped_hosts:
        result.reason = f"host timeout reached for {', '.join(skipped_hosts)}"
    else:
        result.reason = ""


def _import_group(result: GroupResult, scan) -> None:
    """Import a group's XML with the core importer and decide whether the group is complete."""
    xml = Path(result.xml)
    if not xml.is_file() or xml.stat().st_size == 0:
        result.reason = result.reason or "nmap wrote no XML"
        if xml.is_file():
            xml.unlink()
        return
    data = xml.read_bytes()
    try:
        imported = scan.import_file(xml)
    except TwinError as exc:
        result.issues.append(str(exc))
        result.reason = result.reason or f"XML could not be read: {exc}"
        return
    result.hosts_in_xml = imported.records_read
    result.hosts_up = imported.counts.get("hosts_up", 0)
    result.services = imported.counts.get("services", 0)
    result.issues.extend(str(issue) for issue in imported.issues)
    whole = data.rstrip().endswith(b"</nmaprun>")
    if not whole and not result.reason:
        result.reason = "XML file is cut off (no closing </nmaprun>)"
    result.complete = not result.reason
