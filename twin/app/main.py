"""Entry of the Streamlit app: page config, the sidebar and the page navigation.

Both the repository's ``app.py`` (``streamlit run app.py``) and ``twin app``
(which runs ``twin/app/entry/app.py``, installed with the package) call
:func:`main`. Do not pass this file to ``streamlit run``: Streamlit would
read the ``pages`` folder next to it as a legacy page directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import streamlit as st

from twin.app import data

__all__ = ["PAGES", "PAGES_DIR", "PAGE_ICON", "MAP_ALIAS_PATH", "main", "sidebar"]

log = logging.getLogger(__name__)

PAGES_DIR = Path(__file__).resolve().parent / "pages"

# Browser-tab icon. An emoji, because Streamlit draws it as an inline SVG, while a
# ":material/...:" icon makes the browser fetch it from fonts.gstatic.com.
PAGE_ICON = "🏥"

# (file in PAGES_DIR, title, URL path, icon), in menu order. The first is the
# default page, served at "/"; Streamlit ignores its URL path.
PAGES: tuple[tuple[str, str, str, str], ...] = (
    ("map.py", "Map", "map-view", ":material/hub:"),
    ("device.py", "Device", "device", ":material/devices:"),
    ("findings.py", "Findings", "findings", ":material/report:"),
    ("attack_paths.py", "Attack paths", "attack-paths", ":material/route:"),
    ("simulation.py", "Policy simulation", "simulation", ":material/science:"),
    ("it_dashboard.py", "IT dashboard", "it", ":material/lan:"),
    ("biomed_dashboard.py", "Biomed dashboard", "biomed", ":material/medical_services:"),
)


def sidebar() -> data.AppContext | None:
    """Draw the sidebar (workspace, snapshot, site, counts) and return the chosen snapshot, if any."""
    try:
        store = data.app_store()
    except Exception as exc:  # noqa: BLE001 - shown to the user instead of a traceback
        with st.sidebar:
            st.error(str(exc))
        return None
    if store == "neo4j":
        return _neo4j_sidebar()
    with st.sidebar:
        st.markdown("**iomt-twin**")
        path = st.text_input(
            "Workspace",
            value=data.initial_workspace_path(),
            key=data.STATE_WORKSPACE,
            help="Workspace file written by 'twin build SITE_DIR -w WORKSPACE'.",
        )
        ctx, snaps, problem = data.resolve_context(path, st.session_state.get(data.STATE_SNAPSHOT))
        if ctx is None:
            st.caption(problem or "")
            return None
        labels = {r.run_id: f"{r.finished_at} · {r.run_id}" for r in snaps.itertuples(index=False)}
        run_ids = list(reversed(list(labels)))
        st.selectbox(
            "Snapshot",
            run_ids,
            index=run_ids.index(ctx.run_id),
            format_func=labels.get,
            key=data.STATE_SNAPSHOT,
            help="Builds in this workspace, newest first.",
        )
        st.markdown(f"**Site:** {ctx.site_name}")
        if not _twin_counts(ctx):
            return None
        st.caption(f"Store: {data.store_description(path)}")
    return ctx


def _twin_counts(ctx: data.AppContext) -> bool:
    """Show the twin's table sizes; return False, after showing the error, when the twin does not load."""
    try:
        twin = ctx.twin()
    except Exception as exc:  # noqa: BLE001 - shown to the user instead of a traceback
        log.warning("app: cannot load snapshot %s: %s", ctx.run_id, exc, exc_info=exc)
        st.error(f"Loading snapshot {ctx.run_id} failed: {exc}")
        return False
    cols = st.columns(2)
    cols[0].metric("Devices", f"{len(twin.devices):,}")
    cols[1].metric("Segments", f"{len(twin.segments):,}")
    cols[0].metric("Communications", f"{len(twin.communications):,}")
    cols[1].metric("Services", f"{len(twin.services):,}")
    return True


def _neo4j_sidebar() -> data.AppContext | None:
    """Draw the sidebar for a twin in Neo4j: server URI (without credentials), site picker, counts."""
    with st.sidebar:
        st.markdown("**iomt-twin**")
        uri = data.neo4j_display_uri()
        st.markdown(f"**Neo4j:** `{uri or 'NEO4J_URI is not set'}`")
        chosen = st.session_state.get(data.STATE_NEO4J_SITE) or data.initial_neo4j_site()
        ctx, sites, problem = data.resolve_neo4j_context(chosen)
        if ctx is None:
            log.warning("app: no twin from Neo4j at %s: %s", uri, problem)
            st.error(f"{problem}")
            return None
        st.selectbox(
            "Site",
            sites,
            index=sites.index(ctx.site_name),
            key=data.STATE_NEO4J_SITE,
            help="Sites stored in this Neo4j database. Neo4j keeps the latest twin of each site.",
        )
        st.caption(f"Run {ctx.run_id}")
        if not _twin_counts(ctx):
            return None
        st.caption(f"Store: {data.store_description(ctx.path)}")
    return ctx


# Second URL of the default (map) page, so /map opens the map as the other pages' paths suggest.
MAP_ALIAS_PATH = "map"


def _map_alias() -> None:
    from twin.app.pages import map as map_page

    map_page.render()


def main() -> None:
    """Run one pass of the app: page config, sidebar, then the selected page."""
    st.set_page_config(page_title="iomt-twin", page_icon=PAGE_ICON, layout="wide")
    pages = [
        st.Page(PAGES_DIR / file, title=title, url_path=url, icon=icon, default=index == 0)
        for index, (file, title, url, icon) in enumerate(PAGES)
    ]
    # The default page's own path is "", so /map needs a page of its own, hidden from the menu.
    pages.append(st.Page(_map_alias, title=PAGES[0][1], url_path=MAP_ALIAS_PATH, icon=PAGES[0][3], visibility="hidden"))
    page = st.navigation(pages)
    data.set_context(sidebar())
    try:
        page.run()
    except Exception as exc:  # noqa: BLE001 - the user sees a message, the log keeps the traceback
        log.error("app: page %s failed: %s", page.title, exc, exc_info=exc)
        st.error(f"The {page.title} page failed: {exc}")

