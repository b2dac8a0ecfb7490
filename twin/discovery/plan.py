"""Scan planner: which address gets which probes, and the dry run that lists them.

:func:`plan_scan` turns a site and its twin into a :class:`ScanPlan`:

1. every target goes through the site's :class:`~twin.discovery.scope.ScopeGuard`;
2. each allowed address takes the device class the twin stores for it (from
   inventory, SNMP and flows), or ``unknown`` when the twin has no device
   with that address. A device gets the most conservative budget among its
   class and every class its class evidence names;
3. the do-not-probe list (addresses, MAC prefixes, classes, also a class in
   the evidence) and passive budgets skip a device, with the reason;
4. the remaining addresses are grouped by budget, one nmap argument list per
   group.

The planner sends nothing. :func:`render_dry_run` prints every probe of a plan.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterable
from zoneinfo import ZoneInfo

from twin.discovery.budget import UNKNOWN_CLASS, Budget, budget_for, budgets_for
from twin.discovery.scope import MAX_TARGETS, Address, OutOfScope, ScopeGuard, guard_for, parse_target
from twin.model.site import WEEKDAYS, MaintenanceWindow, SiteConfig
from twin.model.twin import Twin

__all__ = [
    "Probe",
    "ScanGroup",
    "Skip",
    "ScanPlan",
    "SnapshotCheck",
    "WindowCheck",
    "check_snapshot",
    "check_window",
    "nmap_arguments",
    "plan_scan",
    "render_dry_run",
]

log = logging.getLogger(__name__)

# Probe kinds that send packets to one listed port; the others (version, os,
# scripts) are one dry-run line per target.
PORT_PROBE_KINDS = ("connect", "udp")

# Source name of devices listed in the CMMS / medical-device inventory
# (twin.discovery.inventory.SOURCE), as stored in devices.sources.
INVENTORY_SOURCE = "inventory"

# Skip reason of an inventory device whose type maps to no class.
INVENTORY_UNKNOWN_REASON = (
    "it is in the medical-device inventory with an unrecognised type, so it is treated as a medical device "
    "and not probed; give it a class (a Device Type that maps to one, or a site model pattern) and rebuild"
)

# Targets listed after the nmap arguments of each group in the dry run
# (default 20); the full list is in the probe lines.
DRY_RUN_LISTED_TARGETS = 20

# Worst-case scan duration in seconds above which a plan without a
# maintenance window gets a warning (default 8 h, one night shift).
LONG_SCAN_S = 8 * 3600

# Devices named one by one in the warnings about budgets taken from class
# evidence (default 10); the rest are counted.
EVIDENCE_WARNINGS_LISTED = 10


@dataclass
class Probe:
    """One line of the dry run: a probe kind sent to one target (and port)."""

    target: str
    device_id: str | None
    device_class: str
    proto: str
    port: int | None
    kind: str


@dataclass
class ScanGroup:
    """Targets that share one budget, and the nmap arguments for them.

    ``nmap_args`` excludes the targets and the output options; it always
    starts with ``-n -Pn`` (no DNS, no host discovery).
    """

    budget: Budget
    targets: list[str]
    nmap_args: list[str]

    @property
    def worst_case_s(self) -> int:
        """Seconds the group takes at most: one host timeout per target, because targets are scanned one at a time."""
        return len(self.targets) * self.budget.host_timeout_s


@dataclass
class Skip:
    """A target (an address, or a prefix summarising many) that the plan does not probe, and why.

    ``rejected`` is True for a target given explicitly (``--target``) that
    the scope guard or the do-not-probe list rejects; a scan with such a
    target exits with an error after it ran the rest.
    """

    target: str
    device_id: str | None
    device_class: str
    reason: str
    rejected: bool = False


@dataclass(frozen=True)
class WindowCheck:
    """Whether a scan may start now under the site's maintenance windows.

    Attributes
    ----------
    open : bool
        True when a window is open now, or when no window is configured.
    reason : str
        The decision in words, with the times in the site's timezone.
    next_start : datetime or None
        Start of the next window when closed (None when open or unconfigured).
    closes : datetime or None
        End of the open window (None when closed or unconfigured).
    configured : bool
        False when the site configures no maintenance window at all.
    next_end : datetime or None
        End of the window that starts at ``next_start``.
    """

    open: bool
    reason: str
    next_start: datetime | None = None
    closes: datetime | None = None
    configured: bool = True
    next_end: datetime | None = None

    def seconds_available(self, now: datetime) -> float | None:
        """Return the seconds a scan started now (or at the next opening) may run; None without windows."""
        if not self.configured:
            return None
        if self.open and self.closes is not None:
            return max(0.0, (self.closes - now).total_seconds())
        if self.next_start is not None and self.next_end is not None:
            return (self.next_end - self.next_start).total_seconds()
        return 0.0


@dataclass
class ScanPlan:
    """Everything a scan would send, what it skips and why, and the window state."""

    site: str
    created: datetime
    groups: list[ScanGroup]
    probes: list[Probe]
    skipped: list[Skip]
    window: WindowCheck
    warnings: list[str] = field(default_factory=list)
    resolved_names: list[str] = field(default_factory=list)

    @property
    def worst_case_s(self) -> int:
        """Seconds the whole scan takes at most: groups run one after the other."""
        return sum(group.worst_case_s for group in self.groups)

    def probe_set(self) -> set[tuple[str, str, int]]:
        """Return ``(target, proto, port)`` of every port probe (connect and udp) in the plan."""
        return {(p.target, p.proto, p.port) for p in self.probes if p.kind in PORT_PROBE_KINDS and p.port is not None}

    def targets(self) -> list[str]:
        """Return every planned target, in group order."""
        return [target for group in self.groups for target in group.targets]


# -- maintenance windows ---------------------------------------------------


def _window_bounds(day: date, window: MaintenanceWindow, tz: ZoneInfo) -> tuple[datetime, datetime]:
    start_h, start_m = map(int, window.start.split(":"))
    end_h, end_m = map(int, window.end.split(":"))
    start = datetime.combine(day, time(start_h, start_m), tzinfo=tz)
    if (end_h, end_m) == (24, 0):
        end = datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=tz)
    elif (end_h, end_m) <= (start_h, start_m):
        end = datetime.combine(day + timedelta(days=1), time(end_h, end_m), tzinfo=tz)
    else:
        end = datetime.combine(day, time(end_h, end_m), tzinfo=tz)
    return start, end


def _describe_window(window: MaintenanceWindow) -> str:
    days = "every day" if len(window.days) == len(WEEKDAYS) else ",".join(window.days)
    return f"{days} {window.start}-{window.end}"


def check_window(site: SiteConfig, now: datetime | None = None) -> WindowCheck:
    """Decide whether a scan may start at ``now`` under the site's maintenance windows.

    Parameters
    ----------
    site : SiteConfig
        Its ``discovery.maintenance_windows`` are read in ``site.timezone``.
    now : datetime, optional
        Defaults to the current time; a naive datetime is taken as UTC.

    Returns
    -------
    WindowCheck
        Open when ``now`` lies in a window (``start <= now < end``, wall
        clock time of the site's timezone), or when no window is configured.

    Notes
    -----
    A window belongs to the day it starts on, so ``{days: [sat], start:
    "22:00", end: "02:00"}`` is open from Saturday 22:00 to Sunday 02:00.
    """
    tz = ZoneInfo(site.site.timezone)
    if now is None:
        now = datetime.now(timezone.utc)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    local = now.astimezone(tz)
    windows = site.discovery.maintenance_windows
    if not windows:
        return WindowCheck(
            True, "no maintenance window is configured, so scans may start at any time", configured=False
        )
    # Windows that touch or overlap (22:00-23:20 then 23:20-24:00, or a night
    # split over two days) form one span, so a scan is not stopped between them.
    spans: list[list] = []
    for start, end in sorted(
        _window_bounds(local.date() + timedelta(days=offset), window, tz)
        for window in windows
        for offset in range(-1, 9)
        if WEEKDAYS[(local.date() + timedelta(days=offset)).weekday()] in window.days
    ):
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    for start, end in spans:
        if start <= local < end:
            described = "; ".join(_describe_window(w) for w in windows)
            return WindowCheck(
                True,
                f"inside a maintenance window ({described}, {site.site.timezone}) until {end.isoformat()}",
                closes=end,
            )
    upcoming = [(start, end) for start, end in spans if start > local]
    next_start, next_end = upcoming[0] if upcoming else (None, None)
    listed = "; ".join(_describe_window(w) for w in windows)
    return WindowCheck(
        False,
        f"it is {local.strftime('%a %H:%M')} in {site.site.timezone}, outside every maintenance window ({listed}); "
        f"the next one opens {next_start.isoformat() if next_start else 'never'}",
        next_start=next_start,
        next_end=next_end,
    )


# -- snapshot freshness ----------------------------------------------------


@dataclass
class SnapshotCheck:
    """Whether the workspace holds a current snapshot of the site, which classes every device before a scan.

    Attributes
    ----------
    twin : Twin or None
        The latest snapshot of the site, even when it is out of date; None
        when there is none.
    run_id : str or None
        Its run id.
    problems : list of str
        Why the snapshot cannot be trusted (missing, of another site, or
        discovery files added, removed or modified since its build); empty
        when it is current. Each names the fix.
    """

    twin: Twin | None
    run_id: str | None
    problems: list[str]

    @property
    def current(self) -> bool:
        """True when there is a snapshot of the site and it imported exactly the current discovery files."""
        return not self.problems


# Files listed by name per kind of change (added, modified, removed) in a
# snapshot problem (default 5); the rest are counted.
CHANGED_FILES_LISTED = 5

# Bytes read at a time when a discovery file is hashed (default 1 MiB).
HASH_CHUNK_BYTES = 1 << 20


def check_snapshot(workspace_path, site: SiteConfig, site_dir, *, skip_dirs: Iterable = ()) -> SnapshotCheck:
    """Check that the latest snapshot of this site imported exactly the site's current discovery files.

    Parameters
    ----------
    workspace_path : path
        The SQLite workspace ``twin build`` writes.
    site : SiteConfig
        The site; its name selects the snapshot.
    site_dir : path
        The site folder. Every file ``twin build`` would read there is
        compared with the files the snapshot's build recorded, except the
        report folder, the scanner's own output (``nmap/active``) and
        ``skip_dirs``.
    skip_dirs : iterable of path
        Further folders to leave out, such as a ``--out`` folder.

    Returns
    -------
    SnapshotCheck
        The twin of the latest snapshot of the site, and the problems found.

    Notes
    -----
    A file is out of date when it was added or removed since the build,
    when its modification time is later than the build's start, or when
    its SHA-256 differs from the one the build recorded. The hash catches a
    file copied in with an older modification time (``cp -p``, ``mv``), so
    every discovery file is read once per check. Inventory files are named
    first, because a device added to the inventory is otherwise probed as
    ``unknown``.
    """
    from pathlib import Path

    from twin.api import Workspace
    from twin.discovery.active import ACTIVE_SUBDIR
    from twin.exceptions import StoreError
    from twin.pipeline import find_discovery_files

    path = Path(workspace_path)
    site_dir = Path(site_dir)
    name = site.site.name
    fix = f"run `twin build {site_dir} -w {path}` first"
    if not path.exists():
        return SnapshotCheck(None, None, [f"workspace {path} does not exist, so no device has a class; {fix}"])
    workspace = Workspace(path)
    try:
        with workspace.store() as store:
            runs = [run for run in store.runs() if run.site == name]
            latest = runs[-1] if runs else None
            records = store.import_files(latest.run_id) if latest is not None else []
            built_config = store.config_yaml(latest.run_id)[1] if latest is not None else None
        twin = workspace.twin(latest.run_id) if latest is not None else None
    except StoreError as exc:
        return SnapshotCheck(None, None, [f"workspace {path} cannot be read ({exc}); {fix}"])
    if latest is None:
        return SnapshotCheck(None, None, [f"workspace {path} holds no snapshot of site {name!r}; {fix}"])

    report_dir = Path(site.reports.output_dir)
    excluded = (
        report_dir if report_dir.is_absolute() else site_dir / report_dir,
        site_dir / ACTIVE_SUBDIR,
        *(Path(d) for d in skip_dirs),
    )
    built = float(latest.started_at or latest.finished_at)
    problems = []
    # Classification patterns, the inventory column map and the segments
    # decide device classes, so an edited site.yaml makes the classes stale.
    config = site_dir / "site.yaml"
    if built_config is not None and config.is_file() and config.read_text(encoding="utf-8", errors="replace") != built_config:
        problems.append(
            f"{config} changed since snapshot {latest.run_id} was built; its classification, inventory mapping and "
            f"segments decide each device's class and so its probe budget, so rebuild first: twin build {site_dir} -w {path}"
        )
    # Only files in a discovery format can add or change devices: backups and
    # notes beside the data do not make the snapshot stale.
    current = {p.relative_to(site_dir): p for p, fmt in find_discovery_files(site_dir, exclude=excluded) if fmt}
    recorded = _recorded_files([r for r in records if r.get("format")], Path(latest.site_dir or site_dir), site_dir, excluded)
    added = sorted(set(current) - set(recorded), key=_inventory_first)
    removed = sorted(set(recorded) - set(current), key=_inventory_first)
    modified = sorted(
        (rel for rel in set(current) & set(recorded) if _file_changed(current[rel], recorded[rel], built)),
        key=_inventory_first,
    )
    total = len(added) + len(removed) + len(modified)
    if not total:
        return SnapshotCheck(twin, latest.run_id, problems)
    changes = "; ".join(
        f"{label} {_list_files(files)}"
        for label, files in (("added", added), ("modified", modified), ("removed", removed))
        if files
    )
    when = datetime.fromtimestamp(built, timezone.utc).isoformat(timespec="seconds")
    log.info("snapshot %s of site %r is out of date: %s", latest.run_id, name, changes)
    return SnapshotCheck(twin, latest.run_id, problems + [
        f"{total} discovery {_plural(total, 'file')} changed since snapshot {latest.run_id} was built ({when}): "
        f"{changes}; devices added there would be probed as unknown, so rebuild first: twin build {site_dir} -w {path}"
    ])


def _inventory_first(relative) -> tuple[bool, str]:
    return (relative.parts[0] != "inventory", str(relative))


def _list_files(files: list) -> str:
    listed = ", ".join(str(f) for f in files[:CHANGED_FILES_LISTED])
    if len(files) > CHANGED_FILES_LISTED:
        listed += f" and {len(files) - CHANGED_FILES_LISTED} more"
    return listed


def _file_changed(path, record: dict, built: float) -> bool:
    """True when a file's modification time is after the build, or its SHA-256 differs from the recorded one."""
    if path.stat().st_mtime > built:
        return True
    # NOTE: a file the build could not import has no recorded hash, so only
    # its modification time is compared.
    if not record.get("sha256"):
        return False
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest() != record["sha256"]


def _recorded_files(records: list[dict], built_dir, site_dir, excluded) -> dict:
    """Map each file a build recorded to its path relative to the site folder, leaving out ``excluded`` folders.

    A file the path of which cannot be placed under the site folder keeps
    its recorded path as key, so it counts as removed and forces a rebuild.
    """
    from pathlib import Path

    site_resolved = Path(site_dir).resolve()
    skipped = tuple(Path(d).resolve() for d in excluded)
    out = {}
    for record in records:
        relative = _site_relative(str(record["path"]), Path(built_dir), Path(site_dir))
        if relative is None:
            out[Path(record["path"])] = record
            continue
        absolute = site_resolved / relative
        if any(absolute == d or d in absolute.parents for d in skipped):
            continue
        out[relative] = record
    return out


def _site_relative(recorded: str, built_dir, site_dir):
    """Return a recorded import path relative to the site folder, or None.

    ``twin build`` records ``<site folder as given>/<relative path>``, so the
    path is relative to the folder the build ran in when the site folder
    was given as a relative path. ``built_dir`` is the resolved site folder
    the build recorded.
    """
    from pathlib import Path, PurePath

    path = Path(recorded)
    bases = (built_dir, site_dir.resolve(), site_dir.absolute())
    if path.is_absolute():
        for candidate in (path, path.resolve()):
            for base in bases:
                if candidate.is_relative_to(base):
                    return PurePath(candidate.relative_to(base))
        return None
    # A relative site folder such as "../sites/ward" or "sites/ward": drop
    # the leading ".." parts, then the longest run of the built folder's
    # last names that starts the path.
    parts = path.parts
    while parts and parts[0] == "..":
        parts = parts[1:]
    names = built_dir.parts
    for count in range(min(len(names) - 1, len(parts) - 1), 0, -1):
        if tuple(parts[:count]) == tuple(names[-count:]):
            return PurePath(*parts[count:])
    # The build ran inside the site folder (site folder ".").
    return PurePath(*parts) if parts else None


# -- nmap arguments --------------------------------------------------------


def _port_ranges(ports: Iterable[int]) -> str:
    """Join sorted ports, runs as ranges: ``22,80,8000-8080``."""
    parts: list[str] = []
    run: list[int] = []
    for port in sorted(ports):
        if run and port == run[-1] + 1:
            run.append(port)
            continue
        if run:
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [port]
    if run:
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(parts)


def nmap_arguments(budget: Budget) -> list[str]:
    """Build the nmap arguments of one budget, without targets and output options.

    >>> from twin.discovery.budget import DEFAULT_BUDGETS
    >>> " ".join(nmap_arguments(DEFAULT_BUDGETS["printer"]))
    '-n -Pn -sT -p T:22,80,443,8080,8443 --max-rate 10 --max-parallelism 1 --max-hostgroup 1 --host-timeout 60s --max-retries 1'
    """
    args = ["-n", "-Pn"]
    ports = []
    if budget.tcp_ports:
        args.append("-sT")
        ports.append("T:" + _port_ranges(budget.tcp_ports))
    if budget.udp_ports:
        args.append("-sU")
        ports.append("U:" + _port_ranges(budget.udp_ports))
    args += ["-p", ",".join(ports)]
    args += [
        "--max-rate", str(budget.max_rate),
        "--max-parallelism", str(budget.max_connections),
        "--max-hostgroup", "1",
        "--host-timeout", f"{budget.host_timeout_s}s",
        "--max-retries", str(budget.retries),
    ]
    if "version" in budget.probes:
        args += ["-sV", "--version-light"]
    if "os" in budget.probes:
        args.append("-O")
    if "scripts" in budget.probes and budget.scripts:
        args += ["--script", ",".join(budget.scripts)]
    return args


# -- planning --------------------------------------------------------------


@dataclass
class _Device:
    device_id: str
    device_class: str
    macs: list[str]
    ips: list[str]
    from_inventory: bool = False
    # (class, rule, value) of every class proposal in devices.class_evidence.
    evidence: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class _Decision:
    device_id: str | None
    device_class: str
    budget: Budget | None
    reason: str | None
    # Why the budget is that of another class named in the class evidence.
    note: str | None = None


def _sort_key(address: Address) -> tuple[int, int]:
    return (address.version, int(address))


def _listed(value) -> list[str]:
    """Return a list cell (list, tuple or numpy array) as a list of strings; anything else as []."""
    return [str(v) for v in _listed_items(value)]


def _class_evidence(value) -> list[tuple[str, str, str]]:
    """Return (class, rule, value) of each class proposal in a ``class_evidence`` cell (a list of dicts or its JSON text)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    proposals = []
    for item in _listed_items(value):
        if isinstance(item, dict) and isinstance(item.get("class"), str) and item["class"]:
            proposals.append((item["class"], str(item.get("rule") or "class evidence"), str(item.get("value") or "")))
    return proposals


def _listed_items(value) -> list:
    """Return a list cell (list, tuple or numpy array) as a list of its items; anything else as []."""
    if value is None or isinstance(value, (str, dict)):
        return []
    try:
        return list(value)
    except TypeError:
        return []


def _device_index(twin: Twin | None) -> dict[Address, list[_Device]]:
    """Map each address of the twin's devices to the devices that hold it."""
    index: dict[Address, list[_Device]] = {}
    if twin is None or twin.devices.empty:
        return index
    for row in twin.devices.itertuples(index=False):
        device = _Device(
            device_id=str(row.device_id),
            device_class=str(row.device_class) if isinstance(row.device_class, str) and row.device_class else UNKNOWN_CLASS,
            macs=[str(m).lower() for m in (row.macs if isinstance(row.macs, (list, tuple)) else [])],
            ips=[str(a) for a in (row.ips if isinstance(row.ips, (list, tuple)) else [])],
            from_inventory=INVENTORY_SOURCE in _listed(getattr(row, "sources", None)),
            evidence=_class_evidence(getattr(row, "class_evidence", None)),
        )
        for text in device.ips:
            try:
                value = parse_target(text)
            except OutOfScope:
                continue
            if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                index.setdefault(value, []).append(device)
    return index


class _Planner:
    def __init__(self, twin: Twin | None, site: SiteConfig, guard: ScopeGuard):
        self.site = site
        self.guard = guard
        self.budgets = budgets_for(site)
        self.index = _device_index(twin)
        dnp = site.discovery.do_not_probe
        self.dnp_networks = [ipaddress.ip_network(text) for text in dnp.addresses]
        self.dnp_macs = list(dnp.mac_prefixes)
        self.dnp_classes = set(dnp.classes)

    def _device_skip_reason(self, device: _Device) -> str | None:
        if device.device_class in self.dnp_classes:
            return f"class {device.device_class} is on discovery.do_not_probe.classes"
        for device_class, rule, value in device.evidence:
            if device_class in self.dnp_classes:
                return (
                    f"its class evidence names class {device_class} ({rule} {value!r}), which is on "
                    "discovery.do_not_probe.classes"
                )
        for mac in device.macs:
            for prefix in self.dnp_macs:
                if mac.startswith(prefix):
                    return f"MAC {mac} matches discovery.do_not_probe.mac_prefixes {prefix}"
        for text in device.ips:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                continue
            for net in self.dnp_networks:
                if address.version == net.version and address in net:
                    return f"address {address} of this device is on discovery.do_not_probe.addresses ({net})"
        return None

    def _budget_skip_reason(self, budget: Budget) -> str | None:
        if not budget.passive:
            return None
        if budget.probes == frozenset({"none"}):
            return f"the {budget.name} budget is passive only (probes: none; source: {budget.source})"
        return f"the {budget.name} budget lists no ports for its probes (source: {budget.source})"

    def unknown_decision(self) -> _Decision:
        budget = budget_for(UNKNOWN_CLASS, self.budgets)
        if UNKNOWN_CLASS in self.dnp_classes:
            return _Decision(None, UNKNOWN_CLASS, None, "class unknown is on discovery.do_not_probe.classes")
        return _Decision(None, UNKNOWN_CLASS, budget, self._budget_skip_reason(budget))

    def decide(self, address: Address) -> _Decision:
        devices = sorted(self.index.get(address, []), key=lambda d: d.device_id)
        if not devices:
            return self.unknown_decision()
        ids = "+".join(d.device_id for d in devices)
        for device in devices:
            reason = self._device_skip_reason(device)
            if reason:
                return _Decision(ids, device.device_class, None, reason)
        for device in devices:
            if device.from_inventory and device.device_class == UNKNOWN_CLASS:
                return _Decision(ids, UNKNOWN_CLASS, budget_for(UNKNOWN_CLASS, {}), INVENTORY_UNKNOWN_REASON)
        # Several devices on one address: the most conservative budget wins.
        chosen = [self._device_budget(device) for device in devices]
        index = min(range(len(devices)), key=lambda i: _conservative_key(chosen[i][0]))
        device = devices[index]
        budget, note = chosen[index]
        reason = self._budget_skip_reason(budget)
        if reason is not None and note is not None:
            reason = f"{note}; {reason}"
        return _Decision(ids, device.device_class, budget, reason, note if reason is None else None)

    def _device_budget(self, device: _Device) -> tuple[Budget, str | None]:
        """Return the most conservative budget among the device's class and every class its evidence names.

        The second value is the reason when that budget belongs to a class
        other than the device's own, and None otherwise.
        """
        budget = budget_for(device.device_class, self.budgets)
        note = None
        for device_class, rule, value in device.evidence:
            other = budget_for(device_class, self.budgets)
            if _conservative_key(other) < _conservative_key(budget):
                budget = other
                note = (
                    f"class {device.device_class}, but its class evidence also names {device_class} "
                    f"({rule} {value!r}), so the more conservative {device_class} budget applies"
                )
        return budget, note


def _conservative_key(budget: Budget) -> tuple:
    """Sort key of a budget without its name: two budgets with the same settings are equally conservative."""
    return budget.restrictiveness()[:-1]


def plan_scan(
    twin: Twin | None,
    site: SiteConfig,
    *,
    targets: Iterable[str] | None = None,
    allow_public: bool = False,
    now: datetime | None = None,
    max_targets: int = MAX_TARGETS,
    resolve=None,
) -> ScanPlan:
    """Plan an active scan: the budget of every allowed address, and what is skipped and why.

    Parameters
    ----------
    twin : Twin or None
        The latest snapshot; its ``devices.device_class`` gives each known
        address its budget. None plans every address as ``unknown``.
    site : SiteConfig
        Scopes, exclude, do-not-probe list, windows and budgets.
    targets : iterable of str, optional
        Addresses, prefixes or host names; each must pass
        :meth:`ScopeGuard.check` whole. Defaults to the site's scopes, of
        which only the allowed part is planned.
    allow_public : bool
        The command-line public-range override.
    now : datetime, optional
        Time of the plan and of the window check.
    max_targets : int
        Most addresses planned (default :data:`~twin.discovery.scope.MAX_TARGETS`).
        Known devices come first; the rest are reported in a warning.
    resolve : callable, optional
        Host-name resolver passed to the guard.

    Returns
    -------
    ScanPlan

    Notes
    -----
    Unknown addresses of a prefix that are skipped for one reason (passive
    budget, class ``unknown`` on the do-not-probe list) become one
    :class:`Skip` for the prefix, so a /12 scope gives one line, not a
    million. Work grows with the number of known devices plus ``max_targets``,
    not with the size of the scopes.
    """
    created = now or datetime.now(timezone.utc)
    if created.tzinfo is None:
        created = created.replace(tzinfo=timezone.utc)
    guard = guard_for(site, allow_public=allow_public, resolve=resolve)
    planner = _Planner(twin, site, guard)
    window = check_window(site, created)
    warnings: list[str] = []
    skipped: list[Skip] = []
    if not window.configured:
        warnings.append("no maintenance window is configured, so this scan may start at any time")
    elif not window.open:
        warnings.append(f"the scan will not start now: {window.reason}")

    chosen: dict[Address, _Decision] = {}
    if not site.discovery.scopes:
        skipped.append(Skip(
            ", ".join(str(t) for t in targets) if targets else "(all targets)", None, UNKNOWN_CLASS,
            "active discovery is off because discovery.scopes is empty; add the prefixes that may be probed to "
            "discovery.scopes in site.yaml",
            rejected=targets is not None,
        ))
    elif targets is None:
        _plan_scopes(planner, guard, site, chosen, skipped, warnings, max_targets)
    else:
        _plan_targets(planner, guard, list(targets), chosen, skipped, warnings, max_targets)

    groups, probes = _build_groups(chosen)
    warnings += _evidence_warnings(chosen)
    warnings += _fragile_port_warnings(planner.budgets, groups)
    skipped.sort(key=_skip_sort_key)
    plan = ScanPlan(site.site.name, created, groups, probes, skipped, window, warnings)
    if targets is not None:
        plan.resolved_names = [str(t) for t in targets if _is_hostname(t)]
    plan.warnings += _duration_warnings(plan)
    log.info(
        "scan plan for %s: %d targets in %d groups, %d probes, %d skipped",
        site.site.name, len(plan.targets()), len(groups), len(probes), len(skipped),
    )
    return plan


def _is_hostname(target) -> bool:
    try:
        return isinstance(parse_target(str(target)), str)
    except OutOfScope:
        return False


def _format_duration(seconds: float) -> str:
    """Format seconds as ``3 h 20 min``, ``8 h``, ``12 min`` or ``45 s``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    hours, minutes = divmod((seconds + 59) // 60, 60)
    if not hours:
        return f"{minutes} min"
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _duration_warnings(plan: ScanPlan) -> list[str]:
    """Warn when the worst-case duration exceeds the time the maintenance window leaves, or :data:`LONG_SCAN_S` without a window."""
    if not plan.groups:
        return []
    available = plan.window.seconds_available(plan.created)
    if available is None:
        if plan.worst_case_s <= LONG_SCAN_S:
            return []
        return [
            f"the scan takes up to {_format_duration(plan.worst_case_s)} (one host timeout per target, one target at a "
            f"time), more than {_format_duration(LONG_SCAN_S)}, and no maintenance window limits it; narrow the "
            "targets with --target, lower host_timeout, or configure discovery.maintenance_windows"
        ]
    if plan.worst_case_s <= available:
        return []
    which = "the current maintenance window has" if plan.window.open else "the next maintenance window has"
    return [
        f"the scan takes up to {_format_duration(plan.worst_case_s)} (one host timeout per target, one target at a "
        f"time), but {which} {_format_duration(available)} left; groups that would start after the window closes "
        "are not started and a running nmap is stopped, so narrow the targets with --target or lower host_timeout"
    ]


def _evidence_warnings(chosen: dict[Address, "_Decision"]) -> list[str]:
    """Name the planned devices whose budget is that of a more conservative class from their class evidence."""
    noted = [(address, decision) for address, decision in sorted(chosen.items(), key=lambda item: _sort_key(item[0]))
             if decision.note]
    warnings = [
        f"device {decision.device_id} ({address}) is {decision.note}"
        for address, decision in noted[:EVIDENCE_WARNINGS_LISTED]
    ]
    if len(noted) > EVIDENCE_WARNINGS_LISTED:
        more = len(noted) - EVIDENCE_WARNINGS_LISTED
        warnings.append(
            f"{more} more planned {_plural(more, 'address', 'addresses')} get the budget of a more conservative "
            "class named in their class evidence (see the group of each probe line)"
        )
    return warnings


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    """Return ``singular`` for a count of 1, else ``plural`` (default: ``singular`` plus ``s``)."""
    return singular if count == 1 else (plural or singular + "s")


def _skip_sort_key(skip: Skip) -> tuple:
    """Order skips by address (IPv4 before IPv6, then prefix length); host names and other text come last."""
    try:
        value = parse_target(re.split(r"[,\s]", skip.target, maxsplit=1)[0])
    except OutOfScope:
        value = skip.target
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return (0, value.version, int(value), value.max_prefixlen, "")
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return (0, value.version, int(value.network_address), value.prefixlen, "")
    return (1, 0, 0, 0, str(value))


def _fragile_port_warnings(budgets: dict[str, Budget], groups: list[ScanGroup]) -> list[str]:
    """Warn, per budget of the plan, about listed raw-print ports that are left out."""
    used = {group.budget.name for group in groups}
    warnings = []
    for name in sorted(used):
        dropped = budgets[name].dropped_ports if name in budgets else ()
        if dropped:
            warnings.append(
                f"budget {name} lists {', '.join(dropped)}, raw-print and printer-management ports that are never "
                "probed; they are left out of the scan"
            )
    return warnings


def _add(address: Address, decision: _Decision, chosen: dict, skipped: list[Skip]) -> bool:
    """Record one address; return True when it is planned, False when skipped."""
    if decision.reason is not None or decision.budget is None:
        skipped.append(Skip(str(address), decision.device_id, decision.device_class, decision.reason or "no budget"))
        return False
    chosen[address] = decision
    return True


def _plan_scopes(planner: _Planner, guard: ScopeGuard, site: SiteConfig, chosen: dict, skipped: list[Skip],
                 warnings: list[str], max_targets: int) -> None:
    seen: set[Address] = set()
    known = sorted((a for a in planner.index if guard.is_allowed(str(a))), key=_sort_key)
    unknown = planner.unknown_decision()
    for scope in site.discovery.scopes:
        for prefix, reason in guard.refused_parts(scope):
            device_id, device_class = _known_device(planner, prefix)
            skipped.append(Skip(prefix, device_id, device_class, f"part of scope {scope} rejected: {reason}"))
    # Known devices first, so a large scope never crowds them out.
    left_out = 0
    for address in known:
        if address in seen:
            continue
        seen.add(address)
        decision = planner.decide(address)
        if decision.reason is None and len(chosen) >= max_targets:
            left_out += 1
            continue
        _add(address, decision, chosen, skipped)
    if left_out:
        warnings.append(
            f"{left_out} {_plural(left_out, 'address', 'addresses')} of devices in the twin "
            f"{_plural(left_out, 'is', 'are')} not planned because the plan is limited to "
            f"{max_targets} targets; narrow the targets with --target or split the scope"
        )
    for scope in site.discovery.scopes:
        allowed_total = guard.allowed_count(scope)
        known_here = sum(1 for a in known if a in ipaddress.ip_network(scope))
        unknown_total = allowed_total - known_here
        if unknown_total <= 0:
            continue
        if unknown.reason is not None:
            skipped.append(Skip(
                scope, None, UNKNOWN_CLASS,
                f"{unknown_total} {_plural(unknown_total, 'address', 'addresses')} not in the twin: {unknown.reason}",
            ))
            continue
        room = max_targets - len(chosen)
        planned = 0
        if room > 0:
            for address in guard.allowed_hosts(scope, limit=room + known_here + len(seen)):
                if address in seen:
                    continue
                if len(chosen) >= max_targets:
                    break
                seen.add(address)
                chosen[address] = unknown
                planned += 1
        left = unknown_total - planned
        if left > 0:
            warnings.append(
                f"{left} allowed {_plural(left, 'address', 'addresses')} of scope {scope} "
                f"{_plural(left, 'is', 'are')} not planned because the plan is limited to "
                f"{max_targets} targets; narrow the targets with --target or split the scope"
            )


def _plan_targets(planner: _Planner, guard: ScopeGuard, targets: list[str], chosen: dict, skipped: list[Skip],
                  warnings: list[str], max_targets: int) -> None:
    seen: set[Address] = set()
    for target in targets:
        try:
            addresses = guard.check(target, limit=max_targets)
        except OutOfScope as exc:
            device_id, device_class = _known_device(planner, str(target))
            skipped.append(Skip(str(target), device_id, device_class, f"{exc.reason}; {exc.fix}", rejected=True))
            continue
        unknown_skips: dict[str, list[Address]] = {}
        for address in addresses:
            if address in seen:
                continue
            seen.add(address)
            if len(chosen) >= max_targets:
                warnings.append(f"target {target}: addresses from {address} on are not planned; the plan is limited to {max_targets} targets")
                break
            decision = planner.decide(address)
            if decision.device_id is None and decision.reason is not None:
                unknown_skips.setdefault(decision.reason, []).append(address)
                continue
            if not _add(address, decision, chosen, skipped) and decision.budget is None:
                # Skipped by the do-not-probe list (MAC prefix, class or another address of the device).
                skipped[-1].rejected = True
        for reason, skipped_addresses in unknown_skips.items():
            if len(skipped_addresses) == 1:
                skipped.append(Skip(str(skipped_addresses[0]), None, UNKNOWN_CLASS, reason))
            else:
                skipped.append(Skip(str(target), None, UNKNOWN_CLASS, f"{len(skipped_addresses)} addresses not in the twin: {reason}"))


def _known_device(planner: _Planner, target: str) -> tuple[str | None, str]:
    """Return (device ids, class) of the twin's device on a single-address target, else (None, unknown)."""
    try:
        value = parse_target(target)
    except OutOfScope:
        return None, UNKNOWN_CLASS
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)) and value.num_addresses == 1:
        value = value.network_address
    devices = planner.index.get(value, []) if not isinstance(value, str) else []
    if not devices:
        return None, UNKNOWN_CLASS
    devices = sorted(devices, key=lambda d: d.device_id)
    return "+".join(d.device_id for d in devices), devices[0].device_class


def _build_groups(chosen: dict[Address, _Decision]) -> tuple[list[ScanGroup], list[Probe]]:
    by_budget: dict[str, tuple[Budget, list[Address]]] = {}
    for address, decision in chosen.items():
        budget = decision.budget
        assert budget is not None
        by_budget.setdefault(budget.name, (budget, []))[1].append(address)
    groups: list[ScanGroup] = []
    probes: list[Probe] = []
    for name in sorted(by_budget):
        budget, addresses = by_budget[name]
        addresses.sort(key=_sort_key)
        targets = [str(a) for a in addresses]
        groups.append(ScanGroup(budget, targets, nmap_arguments(budget)))
        for address in addresses:
            decision = chosen[address]
            target = str(address)
            for port in budget.tcp_ports:
                probes.append(Probe(target, decision.device_id, decision.device_class, "tcp", port, "connect"))
            for port in budget.udp_ports:
                probes.append(Probe(target, decision.device_id, decision.device_class, "udp", port, "udp"))
            for kind in ("version", "os", "scripts"):
                if kind in budget.probes:
                    probes.append(Probe(target, decision.device_id, decision.device_class, "any", None, kind))
    return groups, probes


# -- dry run ---------------------------------------------------------------


def render_dry_run(plan: ScanPlan) -> str:
    """Render every probe of a plan as text, in a stable order; nothing is sent.

    Sections: the window state, one block per group (budget settings and the
    nmap command line), one ``probe`` line per probe (target, proto/port,
    kind, class, device), one ``skip`` line per skipped target with its
    reason, and the warnings. Columns are separated by two spaces, so a
    ``probe`` line splits back into its fields with ``split()``.
    """
    header = f"# dry run for site {plan.site}, planned {plan.created.isoformat()}: nothing is sent to the targets"
    if plan.resolved_names:
        header += f"; host names {', '.join(plan.resolved_names)} were resolved by the system resolver (hosts file or DNS)"
    lines = [
        header,
        f"window: {'open' if plan.window.open else 'closed'}: {plan.window.reason}",
        f"summary: targets {len(plan.targets())}, groups {len(plan.groups)}, probes {len(plan.probes)}, "
        f"port probes {len(plan.probe_set())}, skipped {len(plan.skipped)}, "
        f"worst-case duration {_format_duration(plan.worst_case_s)}",
        "",
    ]
    for group in plan.groups:
        budget = group.budget
        lines.append(
            f"group {budget.name}: {len(group.targets)} target{'' if len(group.targets) == 1 else 's'}, probes {','.join(sorted(budget.probes))}, "
            f"max_rate {budget.max_rate}/s, max_connections {budget.max_connections} per target, "
            f"host_timeout {budget.host_timeout_s}s, retries {budget.retries}, "
            f"worst case {_format_duration(group.worst_case_s)} (source: {budget.source})"
        )
        shown = group.targets[:DRY_RUN_LISTED_TARGETS]
        more = len(group.targets) - len(shown)
        lines.append("  nmap " + " ".join(group.nmap_args) + " " + " ".join(shown) + (f" ... (+{more} more)" if more else ""))
    if plan.groups:
        lines.append("")
    for probe in plan.probes:
        where = f"{probe.proto}/{probe.port}" if probe.port is not None else f"{probe.proto}/*"
        lines.append(f"probe  {probe.target}  {where}  {probe.kind}  {probe.device_class}  {probe.device_id or '-'}")
    for skip in plan.skipped:
        lines.append(f"skip  {skip.target}  {skip.device_class}  {skip.device_id or '-'}  {skip.reason}")
    for warning in plan.warnings:
        lines.append(f"warning: {warning}")
    return "\n".join(lines) + "\n"
