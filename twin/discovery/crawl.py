"""Live SNMP crawl: walk the seed devices, then the LLDP and CDP neighbours they report.

The crawl is breadth-first, and depth 0 is the seeds. Every walk that got a
response goes through :func:`twin.discovery.snmp.transform_varbinds`, the
transform the ``.snmprec`` importer uses. The ``neighbor`` observations it
makes (LLDP-MIB lldpRemTable with lldpRemManAddrTable, CISCO-CDP-MIB
cdpCacheTable) are the next level's candidates. A neighbour is walked only
when all of these are true:

1. it advertises a management address that the site's
   :class:`~twin.discovery.scope.ScopeGuard` allows (scopes, exclude,
   do_not_probe, special addresses);
2. it advertises a capability listed in ``discovery.snmp.crawl_capabilities``
   (seeds need none);
3. it is fewer than ``depth`` hops from a seed;
4. no device with the same address, LLDP chassis id or CDP device id was
   walked or queued before.

Every neighbour that fails 1 to 3 is listed in :attr:`CrawlResult.skipped`
with the reason, and is placed in the twin from the walked device's tables
only. No packet is sent to an address before the scope guard allows it.

Observations of a live walk keep the importer's source ``snmp`` (the same
precedence in resolution as a recorded walk) and carry the provenance in
their origin ``snmp://HOST:PORT`` and evidence (``collector``,
``crawl_run_id``, ``target``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Awaitable, Callable, Sequence

from twin.discovery.scope import OutOfScope, ScopeGuard, guard_for
from twin.discovery.snmp import LIVE_COLLECTOR, LIVE_ORIGIN_SCHEME, add_live_provenance, transform_varbinds
from twin.discovery.snmp_live import (
    SnmpCredentials,
    WalkIssue,
    WalkResult,
    WalkSettings,
    credentials_from_config,
    walk_device,
    write_snmprec,
)
from twin.exceptions import ConfigError
from twin.model.observation import ImportResult, Kind
from twin.model.site import SiteConfig, SnmpDiscovery, parse_seed

__all__ = [
    "COLLECTOR",
    "ORIGIN_SCHEME",
    "CrawlResult",
    "SeedDecision",
    "WalkFunction",
    "crawl",
    "run_crawl",
    "plan_seeds",
    "walk_settings",
    "site_credentials",
    "live_origin",
    "target_text",
    "record_path",
]

log = logging.getLogger(__name__)

COLLECTOR = LIVE_COLLECTOR
ORIGIN_SCHEME = LIVE_ORIGIN_SCHEME

# Seconds added to the device time cap before the crawl cancels a walk that
# did not stop by itself (the walker enforces the cap between requests, so
# one last request may still be in flight).
CANCEL_GRACE_S = 5.0

WalkFunction = Callable[[str, int, Sequence[SnmpCredentials], WalkSettings], Awaitable[WalkResult]]


@dataclass
class CrawlResult:
    """Outcome of one crawl.

    Attributes
    ----------
    run_id : str
        Id of the crawl, recorded in every observation's evidence and in recordings.
    walks : list of WalkResult
        Every walk in crawl order, with or without a response.
    results : list of ImportResult
        One per device that responded (duplicates by chassis id left out), origin ``snmp://HOST:PORT``.
    skipped : list of (target, reason)
        Seeds and neighbours that were not walked and why.
    issues : list of WalkIssue
        Issues of every walk.
    warnings : list of str
        Crawl-level warnings, such as a v3 engine id shared by two devices.
    recorded : list of Path
        ``.snmprec`` files written with ``record_dir``.
    """

    run_id: str
    walks: list[WalkResult] = field(default_factory=list)
    results: list[ImportResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    issues: list[WalkIssue] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    recorded: list[Path] = field(default_factory=list)

    @property
    def unanswered(self) -> list[WalkResult]:
        """Walks that got no response with any credentials profile."""
        return [walk for walk in self.walks if not walk.answered]


@dataclass(frozen=True)
class SeedDecision:
    """Scope decision on one seed: the address to walk, or why it is rejected."""

    seed: str
    host: str
    port: int
    address: str | None
    reason: str | None = None

    @property
    def allowed(self) -> bool:
        return self.address is not None


@dataclass(frozen=True)
class _Target:
    address: str
    port: int
    depth: int
    via: str | None  # target text of the device that reported it; None for a seed

    @property
    def text(self) -> str:
        return target_text(self.address, self.port)


@dataclass(frozen=True)
class _Neighbour:
    addresses: tuple[str, ...]
    capabilities: tuple[str, ...]
    chassis_id: str | None
    name: str | None
    protocol: str
    local_port: str | None

    def label(self) -> str:
        return self.name or self.chassis_id or "unnamed neighbour"

    def key(self) -> str | None:
        """Return what identifies the neighbour across reports: chassis id, name or addresses."""
        return self.chassis_id or self.name or (",".join(self.addresses) or None)


def target_text(host: str, port: int) -> str:
    """Return ``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def live_origin(target: str) -> str:
    """Return the observation origin of a live walk of ``target``."""
    return ORIGIN_SCHEME + target


def record_path(record_dir: Path, host: str, port: int) -> Path:
    """Return the ``.snmprec`` path of one device's recording."""
    return Path(record_dir) / f"{host.replace(':', '-')}_{port}.snmprec"


def walk_settings(config: SnmpDiscovery, *, timeout_s: float | None = None, retries: int | None = None) -> WalkSettings:
    """Return the walk settings of ``discovery.snmp``, with command-line overrides."""
    return WalkSettings(
        timeout_s=config.timeout_s if timeout_s is None else timeout_s,
        retries=config.retries if retries is None else retries,
        max_repetitions=config.max_repetitions,
        device_time_cap_s=config.device_time_cap_s,
    )


def site_credentials(site: SiteConfig, environ=None) -> list[SnmpCredentials]:
    """Return the site's SNMP credentials profiles, with secrets read from the environment.

    Raises
    ------
    ConfigError
        When the site has no ``credentials.snmp`` or a named variable is unset.
    """
    profiles = site.credentials.get("snmp")
    if not profiles:
        raise ConfigError(
            f"{site.path or 'site.yaml'}: credentials.snmp is missing; add a profile such as "
            "{version: 3, user: twin-monitor, auth_protocol: sha256, auth_key_env: TWIN_SNMP_AUTH_KEY, "
            "priv_protocol: aes128, priv_key_env: TWIN_SNMP_PRIV_KEY} (see docs/snmp-live.md)"
        )
    if environ is None:
        return credentials_from_config(profiles, where="credentials.snmp")
    return credentials_from_config(profiles, environ, where="credentials.snmp")


def plan_seeds(site: SiteConfig, seeds: Sequence[str] | None = None, *, guard: ScopeGuard | None = None) -> list[SeedDecision]:
    """Check every seed against the scope guard; nothing is sent.

    A host name is resolved, and it is allowed only when every address it
    resolves to is. Its first address is walked.
    """
    config = site.discovery.snmp
    guard = guard or guard_for(site)
    texts = list(config.seeds if seeds is None else seeds)
    decisions = []
    for text in texts:
        try:
            host, port = parse_seed(text, config.port)
        except ValueError as exc:
            decisions.append(SeedDecision(text, text, config.port, None, str(exc)))
            continue
        try:
            addresses = guard.check(host, limit=1)
        except OutOfScope as exc:
            decisions.append(SeedDecision(text, host, port, None, str(exc)))
            continue
        decisions.append(SeedDecision(text, host, port, str(addresses[0])))
    return decisions


def _unanswered(target: _Target, kind: str, message: str, started: float) -> WalkResult:
    issue = WalkIssue(device=target.text, kind=kind, message=message)
    return WalkResult(
        host=target.address,
        port=target.port,
        target=target.text,
        answered=False,
        credentials=None,
        version=None,
        engine_id=None,
        varbinds=[],
        issues=[issue],
        started_at=started,
        finished_at=time.time(),
        complete={},
    )


def _transform(walk: WalkResult, run_id: str) -> ImportResult:
    """Turn one walk that got a response into observations with live provenance."""
    # Whole seconds: a recording's file time is set to this value, so
    # importing the recording gives the same observation times.
    seen_at = float(int(walk.finished_at))
    result = transform_varbinds(walk.varbinds, path=live_origin(walk.target), seen_at=seen_at)
    add_live_provenance(result, walk.target, run_id, walk.credentials, walk.engine_id.hex() if walk.engine_id else None)
    return result


def _local_identity(result: ImportResult) -> tuple[str | None, str | None]:
    """Return (LLDP local chassis id, host name) of the walked device."""
    for observation in result.observations:
        if observation.kind == Kind.DEVICE:
            return observation.evidence.get("lldp_local_chassis_id"), observation.subject.hostname
    return None, None


def _neighbours(result: ImportResult) -> list[_Neighbour]:
    found = []
    for observation in result.observations:
        if observation.kind != Kind.NEIGHBOR:
            continue
        attrs = observation.attrs
        found.append(
            _Neighbour(
                addresses=tuple(attrs.get("remote_mgmt_ips") or ()),
                capabilities=tuple(attrs.get("remote_capabilities") or ()),
                chassis_id=attrs.get("remote_chassis_id"),
                name=attrs.get("remote_sys_name"),
                protocol=attrs.get("protocol", "lldp"),
                local_port=attrs.get("local_port"),
            )
        )
    return found


def _record(walk: WalkResult, record_dir: Path, run_id: str) -> Path:
    path = record_path(record_dir, walk.host, walk.port)
    comment = {
        "target": walk.target,
        "time": datetime.fromtimestamp(walk.finished_at, tz=timezone.utc).isoformat(timespec="seconds"),
        "run id": run_id,
        "profile": walk.credentials or "",
        "version": walk.version or "",
    }
    if walk.engine_id:
        comment["engine id"] = walk.engine_id.hex()
    cut = [name for name, complete in walk.complete.items() if not complete]
    if cut:
        # A build of this file warns that the walk is partial.
        comment["incomplete"] = ", ".join(cut)
    write_snmprec(walk.varbinds, path, comment=comment)
    seen_at = float(int(walk.finished_at))
    os.utime(path, (seen_at, seen_at))
    return path


class _Crawler:
    """State of one crawl: what was walked, queued and skipped."""

    def __init__(self, site, guard, credentials, settings, max_depth, concurrency, walk, record_dir, run_id):
        self.config = site.discovery.snmp
        self.guard = guard
        self.credentials = credentials
        self.settings = settings
        self.max_depth = max_depth
        self.semaphore = asyncio.Semaphore(concurrency)
        self.walk = walk
        self.record_dir = record_dir
        self.out = CrawlResult(run_id=run_id)
        self.queued: set[tuple[str, int]] = set()
        self.chassis: dict[str, str] = {}  # LLDP chassis id or CDP device id -> target text
        self.names: dict[str, str] = {}    # host name -> target text
        self.engines: dict[bytes, str] = {}
        self.skipped_neighbours: set[str] = set()  # chassis ids or names already listed as skipped
        self.capabilities = set(self.config.crawl_capabilities)

    async def walk_one(self, target: _Target) -> WalkResult:
        cap = self.settings.device_time_cap_s + CANCEL_GRACE_S
        started = time.time()
        async with self.semaphore:
            log.info("crawl %s: walking %s (depth %d%s)", self.out.run_id, target.text, target.depth, f", via {target.via}" if target.via else "")
            try:
                return await asyncio.wait_for(self.walk(target.address, target.port, self.credentials, self.settings), timeout=cap)
            except asyncio.TimeoutError:
                message = f"{target.text}: walk cancelled after {cap:.0f} s (device time cap plus {CANCEL_GRACE_S:.0f} s)"
                log.warning("crawl %s: %s", self.out.run_id, message)
                return _unanswered(target, "timeout", message, started)
            except OSError as exc:
                message = f"{target.text}: walk failed: {exc}"
                log.warning("crawl %s: %s", self.out.run_id, message)
                return _unanswered(target, "transport", message, started)

    def accept(self, target: _Target, walk: WalkResult) -> ImportResult | None:
        """Keep a walk that got a response, unless its device was already walked through another address."""
        result = _transform(walk, self.out.run_id)
        chassis, hostname = _local_identity(result)
        if chassis and self.chassis.get(chassis, target.text) != target.text:
            reason = f"same LLDP chassis id {chassis} as {self.chassis[chassis]}, so it is the same device; kept once"
            self.out.skipped.append((target.text, reason))
            log.info("crawl %s: %s: %s", self.out.run_id, target.text, reason)
            return None
        if walk.engine_id:
            other = self.engines.get(walk.engine_id)
            if other is not None:
                message = (
                    f"{other} and {target.text} share SNMP engine id {walk.engine_id.hex()}; both are kept. "
                    "Devices cloned from one image keep the engine id, which confuses SNMPv3 time windows; "
                    "give each device its own engine id"
                )
                self.out.warnings.append(message)
                log.warning("crawl %s: %s", self.out.run_id, message)
            else:
                self.engines[walk.engine_id] = target.text
        if chassis:
            self.chassis[chassis] = target.text
        if hostname:
            self.names.setdefault(hostname, target.text)
        return result

    def known(self, neighbour: _Neighbour) -> bool:
        """Return True for a neighbour already walked, queued or listed as skipped."""
        if neighbour.chassis_id and neighbour.chassis_id in self.chassis:
            return True
        if neighbour.key() is not None and neighbour.key() in self.skipped_neighbours:
            return True
        name = (neighbour.name or "").lower().rstrip(".")
        return bool(name) and name in self.names

    def decide(self, parent: _Target, neighbour: _Neighbour) -> _Target | None:
        """Return the neighbour's target when it is to be walked; record the skip otherwise."""
        if self.known(neighbour):
            return None
        # A neighbour that several devices report is listed as skipped once.
        if neighbour.key() is not None:
            self.skipped_neighbours.add(neighbour.key())
        label = f"{neighbour.label()} ({neighbour.protocol} neighbour of {parent.text}"
        label += f" on {neighbour.local_port})" if neighbour.local_port else ")"

        if not neighbour.addresses:
            self.skip(label, "it advertises no management address; placed from the neighbour tables only")
            return None
        port = self.config.port
        if all((address, port) in self.queued for address in neighbour.addresses):
            return None

        allowed = None
        rejection = None
        for address in neighbour.addresses:
            try:
                allowed = str(self.guard.check(address, limit=1)[0])
                break
            except OutOfScope as exc:
                rejection = rejection or exc
        target = target_text(allowed or neighbour.addresses[0], port)
        if allowed is None:
            # The reason without the address, so the summary can group neighbours by reason.
            self.skip(f"{target} {label}", f"rejected: {rejection.reason}; {rejection.fix}")
            return None
        if (allowed, port) in self.queued:
            return None

        if not self.capabilities.intersection(neighbour.capabilities):
            advertised = ", ".join(neighbour.capabilities) or "none"
            self.skip(
                f"{target} {label}",
                f"it advertises capabilities {advertised} and none of crawl_capabilities "
                f"({', '.join(sorted(self.capabilities))}); placed from the neighbour tables only",
            )
            return None
        if parent.depth >= self.max_depth:
            self.skip(f"{target} {label}", f"it is {parent.depth + 1} hops from a seed, beyond depth {self.max_depth}")
            return None

        self.skipped_neighbours.discard(neighbour.key())
        if neighbour.chassis_id:
            self.chassis.setdefault(neighbour.chassis_id, target)
        self.queued.add((allowed, port))
        return _Target(allowed, port, parent.depth + 1, parent.text)

    def skip(self, target: str, reason: str) -> None:
        self.out.skipped.append((target, reason))
        log.info("crawl %s: skipped %s: %s", self.out.run_id, target, reason)

    async def run(self, seeds: list[SeedDecision]) -> CrawlResult:
        level: list[_Target] = []
        for decision in seeds:
            if not decision.allowed:
                self.skip(decision.seed, decision.reason or "rejected")
                continue
            key = (decision.address, decision.port)
            if key not in self.queued:
                self.queued.add(key)
                level.append(_Target(decision.address, decision.port, 0, None))

        # One pass per depth, so a level's results are handled in target
        # order and deduplication does not depend on which walk ends first.
        # NOTE: a slow device holds back the next level until the device
        # time cap; walks within one level run concurrently.
        for _ in range(self.max_depth + 1):
            if not level:
                break
            walks = await asyncio.gather(*(self.walk_one(target) for target in level))
            next_level: list[_Target] = []
            for target, walk in zip(level, walks):
                self.out.walks.append(walk)
                self.out.issues.extend(walk.issues)
                if not walk.answered:
                    continue
                result = self.accept(target, walk)
                if result is None:
                    continue
                self.out.results.append(result)
                if self.record_dir is not None:
                    self.out.recorded.append(_record(walk, self.record_dir, self.out.run_id))
                for neighbour in _neighbours(result):
                    found = self.decide(target, neighbour)
                    if found is not None:
                        next_level.append(found)
            level = next_level
        return self.out


async def crawl(
    site: SiteConfig,
    *,
    seeds: Sequence[str] | None = None,
    depth: int | None = None,
    settings: WalkSettings | None = None,
    credentials: Sequence[SnmpCredentials] | None = None,
    record_dir: Path | None = None,
    concurrency: int | None = None,
    run_id: str | None = None,
    allow_public: bool = False,
    walk: WalkFunction | None = None,
    guard: ScopeGuard | None = None,
) -> CrawlResult:
    """Crawl the site's SNMP devices from the seeds, within its scope.

    Parameters
    ----------
    site : SiteConfig
        Scopes, ``discovery.snmp`` settings and ``credentials.snmp``.
    seeds, depth, concurrency : optional
        Override ``discovery.snmp.seeds``, ``depth`` and ``concurrency``.
    settings : WalkSettings, optional
        Default: :func:`walk_settings` of ``discovery.snmp``.
    credentials : sequence of SnmpCredentials, optional
        Default: :func:`site_credentials` (secrets from the environment).
    record_dir : Path, optional
        Folder that receives one ``.snmprec`` per device that responded.
    run_id : str, optional
        Default: a new sortable id.
    allow_public : bool
        The command-line public-address override (the site must allow it too).
    walk : callable, optional
        ``walk(host, port, credentials, settings)`` returning a WalkResult;
        default :func:`twin.discovery.snmp_live.walk_device`. Unit tests pass
        recorded walks here.
    guard : ScopeGuard, optional
        Default: :func:`twin.discovery.scope.guard_for` of the site.

    Raises
    ------
    ConfigError
        When credentials are missing or the depth or concurrency is invalid.
    """
    from twin.pipeline import new_run_id

    config = site.discovery.snmp
    max_depth = config.depth if depth is None else depth
    workers = config.concurrency if concurrency is None else concurrency
    if max_depth < 0:
        raise ConfigError(f"invalid depth {max_depth}; expected 0 or more hops")
    if workers < 1:
        raise ConfigError(f"invalid concurrency {workers}; expected 1 or more devices at once")
    guard = guard or guard_for(site, allow_public=allow_public)
    if credentials is None:
        credentials = site_credentials(site)
    if record_dir is not None:
        record_dir = Path(record_dir)
        record_dir.mkdir(parents=True, exist_ok=True)
    run_id = run_id or new_run_id()
    decisions = plan_seeds(site, seeds, guard=guard)
    crawler = _Crawler(
        site, guard, list(credentials), settings or walk_settings(config), max_depth, workers,
        walk or _default_walk, record_dir, run_id,
    )
    started = time.perf_counter()
    log.info("crawl %s: started from %d seeds, depth %d, concurrency %d", run_id, len(decisions), max_depth, workers)
    result = await crawler.run(decisions)
    log.info(
        "crawl %s: finished in %.1f s: %d walks, %d with a response, %d skipped, %d issues",
        run_id, time.perf_counter() - started, len(result.walks), len(result.results), len(result.skipped), len(result.issues),
    )
    return result


async def _default_walk(host: str, port: int, credentials: Sequence[SnmpCredentials], settings: WalkSettings) -> WalkResult:
    return await walk_device(host, port, credentials, settings)


def run_crawl(site: SiteConfig, **options) -> CrawlResult:
    """Run :func:`crawl` in a new event loop; the options are those of :func:`crawl`."""
    return asyncio.run(crawl(site, **options))

