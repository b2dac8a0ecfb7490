"""Loading and caching for the Streamlit app.

Every page reads the twin through this module. The workspace connection is
cached with ``st.cache_resource``. The site, findings and query results are
cached with ``st.cache_data``, keyed by the workspace path and the snapshot
run id. A new ``twin build`` has a new run id, so it is never served stale results.

The :class:`~twin.model.twin.Twin` itself is cached with
``st.cache_resource`` as well: ``st.cache_data`` returns a fresh unpickled
copy on every call, which at 100,000 devices costs seconds per rerun, and
the pages only read it. Treat the returned twin as read-only.

With ``TWIN_STORE=neo4j`` in the environment (``twin app --store neo4j``
sets it) the pages read a site's twin from a Neo4j server configured by
``NEO4J_URI``, ``NEO4J_USER``, ``NEO4J_PASSWORD`` and ``NEO4J_DATABASE``.
The context's ``path`` is then a source key made by :func:`neo4j_source`
from the URI without credentials and the site name. Its ``run_id`` is the
run id on the site's ``:Site`` node, so a new write to Neo4j changes every
cache key. Neo4j keeps one twin per site and no observations, so there is
no previous snapshot and no observation list in that mode.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from twin.api import WORKSPACE_ENV, DeviceDetail, Workspace, default_workspace
from twin.cli.appcmd import NEO4J_SITE_ENV, STORE_ENV
from twin.exceptions import ConfigError, SnapshotNotFound, TwinError
from twin.model.site import Policy, SiteConfig
from twin.model.twin import Twin

__all__ = [
    "CACHE_TTL",
    "STORE_ENV",
    "NEO4J_SITE_ENV",
    "STATE_WORKSPACE",
    "STATE_SNAPSHOT",
    "STATE_NEO4J_SITE",
    "app_store",
    "get_neo4j_store",
    "neo4j_source",
    "is_neo4j_source",
    "resolve_neo4j_context",
    "AppContext",
    "get_workspace",
    "list_snapshots",
    "load_twin",
    "load_site",
    "load_findings",
    "load_attack_paths",
    "load_choke_points",
    "load_device",
    "load_device_view",
    "load_changes",
    "load_map_html",
    "run_simulation",
    "current_context",
    "set_context",
    "store_description",
]

log = logging.getLogger(__name__)

# Lifetime of cached query results, seconds (default 3600). Keys include
# the run id, so this only bounds memory held by snapshots no longer viewed.
CACHE_TTL = 3600

STORES = ("embedded", "neo4j")

# Session-state keys the sidebar writes and the pages read.
STATE_WORKSPACE = "twin_workspace"
STATE_SNAPSHOT = "twin_snapshot"
STATE_NEO4J_SITE = "twin_neo4j_site"
STATE_CONTEXT = "twin_context"


@dataclass(frozen=True)
class AppContext:
    """The workspace and snapshot the pages show.

    Attributes
    ----------
    path : str
        Workspace file.
    run_id : str
        Run id of the selected snapshot.
    site_name : str
        Site name of that snapshot.
    previous_run_id : str or None
        The snapshot of the same site built before it, for change views.
    store : str
        ``embedded`` or ``neo4j``; with ``neo4j``, ``path`` is a source key
        from :func:`neo4j_source` and ``run_id`` the site's latest write.
    """

    path: str
    run_id: str
    site_name: str
    previous_run_id: str | None = None
    store: str = "embedded"

    @property
    def is_neo4j(self) -> bool:
        return self.store == "neo4j"

    @property
    def workspace(self) -> Workspace:
        return get_workspace(self.path)

    def twin(self) -> Twin:
        return load_twin(self.path, self.run_id)

    def site(self) -> SiteConfig:
        return load_site(self.path, self.run_id)

    def findings(self) -> dict[str, pd.DataFrame]:
        return load_findings(self.path, self.run_id)


def store_description(path: str) -> str:
    """Return what the sidebar shows as the store in use."""
    if is_neo4j_source(path):
        uri, site = _parse_neo4j_source(path)
        return f"Neo4j {uri}, site {site}"
    return f"embedded SQLite workspace {path}"


def app_store() -> str:
    """Return the store the app reads, from ``$TWIN_STORE`` (default ``embedded``).

    Raises
    ------
    ConfigError
        When ``TWIN_STORE`` is neither ``embedded`` nor ``neo4j``.
    """
    store = (os.environ.get(STORE_ENV) or "embedded").strip().lower()
    if store not in STORES:
        raise ConfigError(f"{STORE_ENV}={store!r} is invalid; expected embedded or neo4j")
    return store


_NEO4J_PREFIX = "neo4j:"


def neo4j_source(uri: str, site: str) -> str:
    """Return the source key the loaders take in place of a workspace path for a site in Neo4j.

    ``uri`` must come without credentials (:func:`twin.graph.neo4j.redact_uri`),
    because the key is part of every cache key.
    """
    return _NEO4J_PREFIX + json.dumps([uri, site])


def is_neo4j_source(path: str) -> bool:
    """Return True when ``path`` is a source key from :func:`neo4j_source`."""
    return isinstance(path, str) and path.startswith(_NEO4J_PREFIX)


def _parse_neo4j_source(path: str) -> tuple[str, str]:
    uri, site = json.loads(path[len(_NEO4J_PREFIX):])
    return uri, site


@st.cache_resource(show_spinner=False)
def get_neo4j_store(uri: str):
    """Return the cached :class:`~twin.graph.neo4j.Neo4jStore` of the server in ``NEO4J_URI``.

    The settings, password included, come from the environment
    (:meth:`~twin.graph.neo4j.Neo4jConfig.from_env`). ``uri`` is
    ``NEO4J_URI`` without credentials and serves as the cache key only.
    A failed connection raises and is not cached, so the next rerun tries again.

    Raises
    ------
    ConfigError
        When ``NEO4J_URI`` is unset, or ``NEO4J_USER`` is set without ``NEO4J_PASSWORD``.
    StoreError
        When the server cannot be reached or rejects the credentials.
    """
    from twin.graph.neo4j import Neo4jConfig, Neo4jStore

    log.info("app: connecting to Neo4j at %s", uri)
    return Neo4jStore(Neo4jConfig.from_env())


def _neo4j_store_for(path: str):
    uri, site = _parse_neo4j_source(path)
    return get_neo4j_store(uri), site


@st.cache_resource(show_spinner=False)
def get_workspace(path: str) -> Workspace:
    """Return the cached :class:`~twin.api.Workspace` for a workspace file."""
    log.info("app: opening workspace %s", path)
    return Workspace(path)


def list_snapshots(path: str) -> pd.DataFrame:
    """Return the snapshots of a workspace, oldest first.

    Not cached: one small SQLite query, and it is how the app notices a new build.

    Raises
    ------
    SnapshotNotFound
        When the workspace file is missing or contains no snapshot.
    """
    if not Path(path).exists():
        raise SnapshotNotFound(f"{path}: workspace not found")
    return get_workspace(path).snapshots()


@st.cache_resource(show_spinner=False, max_entries=4)
def load_twin(path: str, run_id: str) -> Twin:
    """Return one snapshot of the twin (shared between sessions; do not modify it)."""
    if is_neo4j_source(path):
        store, site = _neo4j_store_for(path)
        return store.load_twin(site)
    return get_workspace(path).twin(run_id)


@st.cache_data(show_spinner=False, ttl=CACHE_TTL, max_entries=8)
def load_site(path: str, run_id: str) -> SiteConfig:
    """Return the site configuration recorded with a snapshot."""
    if is_neo4j_source(path):
        store, site = _neo4j_store_for(path)
        return store.load_site(site)
    return get_workspace(path).site(run_id)


@st.cache_data(show_spinner="Running the query catalogue ...", ttl=CACHE_TTL, max_entries=8)
def load_findings(path: str, run_id: str) -> dict[str, pd.DataFrame]:
    """Return the whole query catalogue's findings for a snapshot."""
    if is_neo4j_source(path):
        from twin.analysis import run_catalogue

        return run_catalogue(load_twin(path, run_id), load_site(path, run_id))
    return get_workspace(path).findings(run_id)


@st.cache_data(show_spinner="Searching attack paths ...", ttl=CACHE_TTL, max_entries=32)
def load_attack_paths(
    path: str,
    run_id: str,
    mode: str,
    entry_points: tuple[str, ...] | None,
    targets: tuple[str, ...] | None,
    k: int,
    max_hops: int,
) -> pd.DataFrame:
    """Return attack paths; ``None`` entry points or targets mean the site's own.

    Entry points and targets are selector texts as :func:`twin.app.widgets.parse_selector_text` reads them.
    """
    from twin.analysis import attack_paths
    from twin.app.widgets import parse_selector_text

    return attack_paths.find(
        load_twin(path, run_id),
        load_site(path, run_id),
        mode=mode,
        entry_points=[parse_selector_text(s) for s in entry_points] if entry_points is not None else None,
        targets=[parse_selector_text(s) for s in targets] if targets is not None else None,
        k=k,
        max_hops=max_hops,
    )


@st.cache_data(show_spinner=False, ttl=CACHE_TTL, max_entries=32)
def load_choke_points(
    path: str,
    run_id: str,
    mode: str,
    entry_points: tuple[str, ...] | None,
    targets: tuple[str, ...] | None,
    k: int,
    max_hops: int,
) -> pd.DataFrame:
    """Return the choke points of the attack paths found with the same arguments."""
    from twin.analysis import choke_points

    paths = load_attack_paths(path, run_id, mode, entry_points, targets, k, max_hops)
    return choke_points.find(load_twin(path, run_id), load_site(path, run_id), mode=mode, paths=paths)


@st.cache_data(show_spinner=False, ttl=CACHE_TTL, max_entries=64)
def load_device(path: str, run_id: str, ident: str) -> DeviceDetail:
    """Return everything the twin stores about one device (see :meth:`Workspace.device`).

    From Neo4j the observations are an empty table, because Neo4j keeps none.
    """
    if is_neo4j_source(path):
        twin = load_twin(path, run_id)
        view = _LoadedTwinWorkspace(twin, load_site(path, run_id), load_findings(path, run_id))
        return view.device(ident)
    workspace = get_workspace(path)
    # Workspace.device runs the catalogue again; seed it from the cached findings instead.
    return _device_detail(workspace, run_id, ident, load_findings(path, run_id))


def _device_detail(workspace: Workspace, run_id: str, ident: str, findings: dict[str, pd.DataFrame]) -> DeviceDetail:
    return _KnownFindingsWorkspace(workspace, findings).device(ident, run_id)


class _KnownFindingsWorkspace(Workspace):
    """A workspace view whose ``findings`` returns findings already computed, sharing the loaded twins."""

    def __init__(self, base: Workspace, findings: dict[str, pd.DataFrame]):
        super().__init__(base.path)
        self._twins = base._twins
        self._known_findings = findings

    def findings(self, snapshot=None, names=None) -> dict[str, pd.DataFrame]:
        return self._known_findings


# Columns of EmbeddedStore.observations_for, for the empty table a Neo4j device gets.
_OBSERVATION_COLUMNS = ("kind", "source", "origin", "seen_at", "subject", "attrs", "evidence", "role")


class _NoObservations:
    """Empty replacement of the embedded store in :meth:`Workspace.device`, for a twin without observations."""

    def __enter__(self) -> "_NoObservations":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def observations_for(self, device_id: str, run_id: str) -> pd.DataFrame:
        return pd.DataFrame(columns=list(_OBSERVATION_COLUMNS))


class _LoadedTwinWorkspace(Workspace):
    """A workspace view over a twin, site and findings already loaded (from Neo4j), without observations."""

    def __init__(self, twin: Twin, site: SiteConfig, findings: dict[str, pd.DataFrame]):
        super().__init__(f"neo4j-{twin.site}")
        self._twin = twin
        self._site = site
        self._known_findings = findings

    def store(self):
        return _NoObservations()

    def twin(self, snapshot=None) -> Twin:
        return self._twin

    def site(self, snapshot=None) -> SiteConfig:
        return self._site

    def findings(self, snapshot=None, names=None) -> dict[str, pd.DataFrame]:
        return self._known_findings


@st.cache_data(show_spinner=False, ttl=CACHE_TTL, max_entries=8)
def load_device_view(path: str, run_id: str) -> pd.DataFrame:
    """Return the devices with primary ``ip``, ``label``, ``role`` and ``zone`` (see ``device_view``)."""
    from twin.analysis._common import device_view

    return device_view(load_twin(path, run_id), load_site(path, run_id)).reset_index(drop=True)


@st.cache_data(show_spinner="Comparing with the previous snapshot ...", ttl=CACHE_TTL, max_entries=8)
def load_changes(path: str, run_id: str, previous_run_id: str) -> dict[str, Any]:
    """Return findings new and resolved and devices new, gone and changed between two snapshots.

    Uses :func:`twin.report.diff.diff_findings` and
    :func:`~twin.report.diff.diff_devices` directly rather than
    ``compute_changes``, because that records finding keys into the
    workspace and the app only reads it.
    """
    from twin.report.diff import diff_devices, diff_findings

    old = load_findings(path, previous_run_id)
    new = load_findings(path, run_id)
    added, resolved, still_open = diff_findings(old, new)
    devices_new, devices_gone, devices_changed = diff_devices(
        load_twin(path, previous_run_id).devices, load_twin(path, run_id).devices
    )
    return {
        "findings_new": added,
        "findings_resolved": resolved,
        "findings_open": still_open,
        "devices_new": devices_new,
        "devices_gone": devices_gone,
        "devices_changed": devices_changed,
    }


@st.cache_data(show_spinner="Drawing the map ...", ttl=CACHE_TTL, max_entries=32)
def load_map_html(
    path: str,
    run_id: str,
    expand: tuple[str, ...],
    colour_by: str,
    size_by: str,
    show_violations: bool,
    attack_path_ids: tuple[str, ...] | None,
    attack_mode: str = "both",
    attack_params: tuple = (),
    focus: tuple[str, ...] = (),
    height: str = "720px",
) -> tuple[str, list[tuple[str, str]], dict[str, int], list[str], int, int]:
    """Return the rendered map and its facts: HTML, legend, truncation, expandable ids, node and edge counts.

    ``attack_path_ids`` selects rows of the site's attack paths (or of the
    paths found with ``attack_params``: mode, entries, targets, k, max
    hops) to draw; ``None`` draws none.
    """
    from twin.app import mapview

    twin = load_twin(path, run_id)
    site = load_site(path, run_id)
    violations = load_findings(path, run_id)["segment_violations"] if show_violations else None
    paths = None
    if attack_path_ids is not None:
        if attack_params:
            paths = load_attack_paths(path, run_id, *attack_params)
        else:
            paths = load_findings(path, run_id)["attack_paths"]
            if attack_mode != "both":
                paths = paths[paths["mode"] == attack_mode]
        if attack_path_ids:
            paths = paths[paths["path_id"].isin(attack_path_ids)]
    view = mapview.build_view(
        twin,
        site,
        expand=expand,
        colour_by=colour_by,
        size_by=size_by,
        violations=violations,
        attack_paths=paths,
        focus=focus,
    )
    html = mapview.render_html(view, height=height)
    return html, list(view.legend), dict(view.truncated), list(mapview.expandable_ids(view)), len(view.nodes), len(view.edges)


@st.cache_data(show_spinner="Simulating the proposed policy ...", ttl=CACHE_TTL, max_entries=16)
def run_simulation(path: str, run_id: str, proposed_yaml: str):
    """Return the :class:`~twin.policy.simulate.SimulationResult` of a proposed policy (YAML text)."""
    from twin.policy.simulate import load_policy, simulate

    site = load_site(path, run_id)
    proposed: Policy = load_policy(proposed_yaml, name="proposed policy", site=site)
    return simulate(load_twin(path, run_id), site, proposed)


def set_context(ctx: AppContext | None) -> None:
    """Store the context the sidebar chose, for the pages."""
    st.session_state[STATE_CONTEXT] = ctx


def current_context() -> AppContext | None:
    """Return the context the sidebar chose, or None when no snapshot is open."""
    return st.session_state.get(STATE_CONTEXT)


def initial_workspace_path() -> str:
    """Return the workspace path to open first: ``$TWIN_WORKSPACE`` or the default."""
    return str(os.environ.get(WORKSPACE_ENV) or default_workspace())


def resolve_context(path: str, snapshot: str | None) -> tuple[AppContext | None, pd.DataFrame, str | None]:
    """Return the context for a workspace and snapshot, the snapshots table, and a message when none opens."""
    try:
        snaps = list_snapshots(path)
    except TwinError as exc:
        return None, pd.DataFrame(), str(exc)
    if snaps.empty:
        return None, snaps, f"{path}: the workspace contains no snapshot yet"
    ids = snaps["run_id"].tolist()
    run_id = snapshot if snapshot in ids else ids[-1]
    row = snaps[snaps["run_id"] == run_id].iloc[0]
    same_site = snaps[(snaps["site"] == row["site"])]["run_id"].tolist()
    position = same_site.index(run_id)
    previous = same_site[position - 1] if position > 0 else None
    return AppContext(path=path, run_id=run_id, site_name=str(row["site"]), previous_run_id=previous), snaps, None


def initial_neo4j_site() -> str | None:
    """Return the site to open first in Neo4j: ``$TWIN_NEO4J_SITE`` or None (the first site)."""
    return os.environ.get(NEO4J_SITE_ENV) or None


def neo4j_display_uri() -> str:
    """Return ``NEO4J_URI`` without credentials, or an empty string when it is unset."""
    from twin.graph.neo4j import redact_uri

    return redact_uri((os.environ.get("NEO4J_URI") or "").strip())


def resolve_neo4j_context(site: str | None) -> tuple[AppContext | None, list[str], str | None]:
    """Return the context for a site in Neo4j, the sites stored, and a message when none opens.

    Reads the ``:Site`` nodes on every call (two small queries), which is how
    the app notices a new write. ``site`` None or unknown opens the first site.
    """
    uri = neo4j_display_uri()
    if not uri:
        return None, [], "NEO4J_URI is not set; set it to the Bolt URI of your Neo4j server (for example bolt://127.0.0.1:7687) and start the app again"
    try:
        store = get_neo4j_store(uri)
        sites = store.sites()
        if not sites:
            return None, [], f"Neo4j at {uri} contains no site yet; write one with 'twin build SITE_DIR --store neo4j' or 'twin export neo4j'"
        name = site if site in sites else sites[0]
        info = store.site_info(name)
    except TwinError as exc:
        # Driver messages repeat the URI as given, which may carry a password.
        raw = (os.environ.get("NEO4J_URI") or "").strip()
        return None, [], str(exc).replace(raw, uri) if raw else str(exc)
    ctx = AppContext(path=neo4j_source(uri, name), run_id=str(info.get("run_id") or ""), site_name=name, store="neo4j")
    return ctx, sites, None
