"""Loading and caching for the Streamlit app.

Every page reads the twin through this module. The workspace connection is
cached with ``st.cache_resource``. The site, findings and query results are
cached with ``st.cache_data``, keyed by the workspace path and the snapshot
run id. A new ``twin build`` has a new run id, so it is never served stale results.

The :class:`~twin.model.twin.Twin` itself is cached with
``st.cache_resource`` as well: ``st.cache_data`` returns a fresh unpickled
copy on every call, which at 100,000 devices costs seconds per rerun, and
the pages only read it. Treat the returned twin as read-only.

Only the embedded SQLite workspace is supported.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from twin.api import WORKSPACE_ENV, DeviceDetail, Workspace, default_workspace
from twin.exceptions import SnapshotNotFound, TwinError
from twin.model.site import Policy, SiteConfig
from twin.model.twin import Twin

__all__ = [
    "CACHE_TTL",
    "STATE_WORKSPACE",
    "STATE_SNAPSHOT",
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

# Session-state keys the sidebar writes and the pages read.
STATE_WORKSPACE = "twin_workspace"
STATE_SNAPSHOT = "twin_snapshot"
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
    """

    path: str
    run_id: str
    site_name: str
    previous_run_id: str | None = None

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
    # NOTE: a Neo4j store would plug in here and in get_workspace: the pages
    # only call Workspace methods, so a Neo4j-backed Workspace needs no page change.
    return f"embedded SQLite workspace {path}"


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
    return get_workspace(path).twin(run_id)


@st.cache_data(show_spinner=False, ttl=CACHE_TTL, max_entries=8)
def load_site(path: str, run_id: str) -> SiteConfig:
    """Return the site configuration recorded with a snapshot."""
    return get_workspace(path).site(run_id)


@st.cache_data(show_spinner="Running the query catalogue ...", ttl=CACHE_TTL, max_entries=8)
def load_findings(path: str, run_id: str) -> dict[str, pd.DataFrame]:
    """Return the whole query catalogue's findings for a snapshot."""
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
    """Return everything the twin stores about one device (see :meth:`Workspace.device`)."""
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
