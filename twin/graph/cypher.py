"""Run the Cypher forms of the query catalogue (``cypher/*.cypher``) on a Neo4j store.

Each file holds one query with a header of ``// key: value`` lines (name,
category, description, parameters, limits, cannot see, revision).
:func:`load_query` parses it; :func:`run_catalogue_cypher` computes the
parameters each query declares and returns DataFrames with the columns of
the Python forms in :data:`twin.analysis.CATALOGUE`.

Parameters that Cypher cannot compute soundly are computed in Python and
passed in, and the query's header says so: policy decisions
(``segment_violations``), allowlist prefix matches (``external_exposure``),
selector matches and the permitted-mode paths, which are searched over the
policy's reachability graph (``attack_paths``),
and the minimum cut and permitted services (``choke_points``). Everything
else (joins, counts, severities, evidence text and the observed-mode path
search) runs on the server.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from twin.exceptions import ConfigError
from twin.model.site import Selector, SiteConfig

if TYPE_CHECKING:
    from twin.graph.neo4j import Neo4jStore
    from twin.model.twin import Twin

__all__ = [
    "COMMUNICATION_COLUMNS",
    "CYPHER_DIR",
    "HEADER_FIELDS",
    "INPUT_TABLES",
    "QUERY_TIMEOUT_S",
    "CypherQuery",
    "load_input_twin",
    "load_query",
    "query_names",
    "query_parameters",
    "run_catalogue_cypher",
]

log = logging.getLogger(__name__)

# Folder of the query files: cypher/ at the repository root.
CYPHER_DIR = Path(__file__).resolve().parents[2] / "cypher"

# Header fields every query file must have, in file order.
HEADER_FIELDS = ("name", "category", "description", "parameters", "limits", "cannot see", "revision")

# Server-side time limit of one catalogue query (seconds, default 120).
QUERY_TIMEOUT_S = 120.0

_PARAMETER = re.compile(r"\$(\w+)")


@dataclass(frozen=True)
class CypherQuery:
    """One query file: its name, header fields, query text and declared parameters."""

    name: str
    header: dict[str, str]
    text: str
    parameters: tuple[str, ...]


def _strip_strings_and_comments(text: str) -> str:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("//")]
    return re.sub(r"'(?:[^'\\]|\\.)*'", "''", "\n".join(lines))


def load_query(name: str, directory: Path | None = None) -> CypherQuery:
    """Read and parse ``cypher/<name>.cypher``.

    Raises
    ------
    ConfigError
        When the file is missing, a header field is missing or empty, the
        header names another query, or the query uses a ``$parameter`` its
        header does not declare (or declares one it never uses).
    """
    directory = directory or CYPHER_DIR
    path = directory / f"{name}.cypher"
    if not path.is_file():
        known = ", ".join(query_names(directory)) or "(none)"
        raise ConfigError(f"{path}: no Cypher query named {name!r}; known: {known}")
    text = path.read_text(encoding="utf-8")
    header: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.startswith("//"):
            break
        key, sep, value = line[2:].strip().partition(":")
        if not sep:
            raise ConfigError(f"{path}, line {number}: header line without 'key: value'; expected one of {', '.join(HEADER_FIELDS)}")
        header[key.strip()] = value.strip()
    missing = [field for field in HEADER_FIELDS if not header.get(field)]
    if missing:
        raise ConfigError(f"{path}: header field(s) {', '.join(missing)} missing or empty; add '// {missing[0]}: ...' lines at the top")
    if header["name"] != name:
        raise ConfigError(f"{path}: header name {header['name']!r} differs from the file name; expected {name!r}")
    declared = tuple(_PARAMETER.findall(header["parameters"]))
    used = set(_PARAMETER.findall(_strip_strings_and_comments(text)))
    if used != set(declared):
        raise ConfigError(
            f"{path}: parameters used {sorted(used)} differ from those declared in the header {sorted(declared)}; "
            "list every $name the query uses in '// parameters:'"
        )
    return CypherQuery(name=name, header=header, text=text, parameters=declared)


def query_names(directory: Path | None = None) -> list[str]:
    """Return the names of the query files, sorted."""
    return sorted(p.stem for p in (directory or CYPHER_DIR).glob("*.cypher"))


# -- parameters ---------------------------------------------------------------


# Twin tables the policy engine, the attack-path graphs and the choke-point service labels read. The
# runner loads only these (and the communication columns below) from the store; the other tables stay empty.
INPUT_TABLES = ("devices", "segments", "externals", "services")
# Communication columns those steps read. The counters, timestamps and sources stay empty.
COMMUNICATION_COLUMNS = ("src_id", "dst_id", "src_kind", "dst_kind", "proto", "dst_port")


class _Inputs:
    """Python-side inputs of one catalogue run, computed once and on first use.

    The twin is loaded from the store at most once per run, and only when a
    query needs the policy engine (decisions, selector matches, permitted
    graph). It contains :data:`INPUT_TABLES` in full and the communications
    with :data:`COMMUNICATION_COLUMNS` only.
    """

    def __init__(self, store: "Neo4jStore", site_config: SiteConfig, site: str):
        from twin.policy.engine import PolicyEngine

        self.store = store
        self.site_config = site_config
        self.site = site
        self.engine = PolicyEngine(site_config)
        self._twin: "Twin | None" = None
        self.attack_paths: pd.DataFrame | None = None

    @property
    def twin(self) -> "Twin":
        if self._twin is None:
            started = time.perf_counter()
            self._twin = load_input_twin(self.store, self.site)
            log.info("site %r: loaded the twin for policy inputs in %.1f s", self.site, time.perf_counter() - started)
        return self._twin


def load_input_twin(store: "Neo4jStore", site: str) -> "Twin":
    """Load the part of ``site``'s twin that the runner's Python-side parameters read.

    Each table comes back as one row holding a list of rows: the driver
    decodes that about four times faster than a million records (14 s
    against 57 s for 1,075,933 communications, see docs/benchmarks.md).

    Parameters
    ----------
    store : Neo4jStore
    site : str
        Site name in the store.

    Returns
    -------
    Twin
        :data:`INPUT_TABLES` as :meth:`Neo4jStore.load_twin` returns them,
        the communications with only :data:`COMMUNICATION_COLUMNS` filled,
        and every other table empty.
    """
    from twin.graph.embedded import _arrow_table, _frame_from_arrow
    # NOTE: _normalise_table is the store's private row typing; reusing it keeps this load equal to load_twin's.
    from twin.graph.neo4j import PLACEHOLDER_LABEL, _normalise_table
    from twin.model import schema
    from twin.model.twin import TABLES, Twin, empty_table

    info = store.site_info(site)
    tables: dict[str, pd.DataFrame] = {}
    for decl in schema.NODES:
        if decl.table not in INPUT_TABLES:
            continue
        frame = store.run(
            f"MATCH (n:{decl.label}) WHERE n.site = $site AND NOT n:{PLACEHOLDER_LABEL} RETURN collect(properties(n)) AS rows",
            {"site": site},
        )
        records = list(frame["rows"].iloc[0])
        # The store keeps the site name of a segment in the node's site property only.
        if decl.table == "segments":
            records = [dict(record, site=site) for record in records]
        tables[decl.table] = _normalise_table(decl.table, records, list(decl.key))
    # COMMUNICATES_WITH joins a Device or External node at either end, so the endpoint key is either property.
    frame = store.run(
        "MATCH (a)-[r:COMMUNICATES_WITH]->(b) WHERE r.site = $site "
        "RETURN collect([coalesce(a.device_id, a.address), coalesce(b.device_id, b.address), "
        "r.src_kind, r.dst_kind, r.proto, r.dst_port]) AS rows",
        {"site": site},
    )
    # NOTE: the whole table is one list in one transaction. A twin far above 1,000,000 communications may need
    # chunks to stay inside the server's transaction memory.
    rows = frame["rows"].iloc[0]
    # None of these columns is a json column, so typing them through Arrow as the embedded store does is enough.
    communications = pd.DataFrame(
        {column: pd.Series([row[i] for row in rows], dtype=object) for i, column in enumerate(COMMUNICATION_COLUMNS)}
    )
    communications = _frame_from_arrow("communications", _arrow_table("communications", communications))
    tables["communications"] = communications.sort_values(
        ["src_id", "dst_id", "proto", "dst_port"], kind="stable", ignore_index=True
    )
    for table in TABLES:
        tables.setdefault(table, empty_table(table))
    return Twin(site=site, run_id=info.get("run_id") or "", built_at=float(info.get("built_at") or 0.0), tables=tables)


def _class_parameters() -> dict[str, Any]:
    from twin.analysis._common import IT_CLASSES, MEDICAL_CLASSES

    return {"medical_classes": sorted(MEDICAL_CLASSES), "it_classes": sorted(IT_CLASSES)}


def _misplaced_parameters(inputs: _Inputs) -> dict[str, Any]:
    from twin.analysis.misplaced_devices import CLINICAL_ZONES, EXPOSED_ZONES

    return {**_class_parameters(), "exposed_zones": sorted(EXPOSED_ZONES), "clinical_zones": sorted(CLINICAL_ZONES)}


def _flat_parameters(inputs: _Inputs) -> dict[str, Any]:
    return _class_parameters()


def _violation_parameters(inputs: _Inputs) -> dict[str, Any]:
    from twin.analysis.segment_violations import denied

    rows = denied(inputs.twin, inputs.site_config, inputs.engine)
    decisions = [
        {
            "src_id": str(src_id),
            "src_kind": str(src_kind),
            "dst_id": str(dst_id),
            "dst_kind": str(dst_kind),
            "proto": str(proto),
            "dst_port": int(port),
            "rule": str(rule),
        }
        for src_id, src_kind, dst_id, dst_kind, proto, port, rule in zip(
            rows["src_id"], rows["src_kind"], rows["dst_id"], rows["dst_kind"], rows["proto"], rows["dst_port"], rows["rule"], strict=True
        )
    ]
    return {"decisions": decisions}


def _exposure_parameters(inputs: _Inputs) -> dict[str, Any]:
    from twin.analysis._common import in_address_list
    from twin.analysis.external_exposure import GUEST_ZONES

    frame = inputs.store.run("MATCH (e:External) WHERE e.site = $site RETURN e.address AS address", {"site": inputs.site})
    addresses = frame["address"].dropna().astype(str) if not frame.empty else pd.Series([], dtype=object)
    allowed = sorted(addresses[in_address_list(addresses, list(inputs.site_config.external.allowlist))]) if len(addresses) else []
    return {**_class_parameters(), "allowed_externals": allowed, "guest_zones": sorted(GUEST_ZONES)}


def _attack_parameters(inputs: _Inputs, mode: str = "both") -> dict[str, Any]:
    # NOTE: _collect is the Python form's private path collector. Calling it keeps the permitted paths of the
    # two forms equal, because the search over the policy graph cannot run in Cypher.
    from twin.analysis.attack_paths import MODES, _collect, build_observed_graph, build_permitted_graph, vulnerable_services

    cfg = inputs.site_config.attack_paths
    modes = list(MODES) if mode == "both" else [mode]
    empty = {
        "modes": [],
        "entry_ids": [],
        "external_entry_ids": [],
        "target_ids": [],
        "vulnerable": [],
        "permitted_paths": [],
        "max_hops": int(cfg.max_hops),
        "k": int(cfg.k),
        "max_paths": int(cfg.max_paths),
    }
    entries = [Selector.parse(s) for s in cfg.entry_points]
    goals = [Selector.parse(s) for s in cfg.targets]
    twin = inputs.twin
    if not entries or not goals or twin.devices.empty:
        return empty
    vulnerable = vulnerable_services(twin)
    # Only the entry and target flags of the observed graph are used: its edges are walked in Neo4j.
    observed = build_observed_graph(twin, inputs.engine, entries, goals, vulnerable)
    names = np.array([m[0] for m in observed.members], dtype=object)
    params = dict(empty)
    params["modes"] = modes
    params["entry_ids"] = sorted(names[observed.is_entry & ~observed.is_external])
    params["external_entry_ids"] = sorted(names[observed.is_entry & observed.is_external])
    params["target_ids"] = sorted(names[observed.is_target])
    params["vulnerable"] = sorted(
        {f"{d}/{p}/{int(q)}" for d, p, q in zip(vulnerable["device_id"], vulnerable["proto"], vulnerable["port"], strict=True)}
    )
    if "permitted" in modes:
        graph = build_permitted_graph(twin, inputs.engine, entries, goals, vulnerable)
        warnings: list[str] = []
        found = _collect(graph, int(cfg.max_hops), int(cfg.k), int(cfg.max_paths), warnings, "permitted")
        for warning in warnings:
            log.warning("site %r: attack paths %s", inputs.site, warning)
        params["permitted_paths"] = [
            {"ids": list(path), "cost": float(cost), "hops": int(hops)} for cost, hops, path in sorted(found)
        ]
    return params


def _choke_parameters(inputs: _Inputs) -> dict[str, Any]:
    paths = inputs.attack_paths
    if paths is None:
        paths = _run(inputs, "attack_paths")
    rows = [
        {"mode": str(mode), "ids": [str(n) for n in path], "critical": severity == "critical"}
        for mode, path, severity in zip(paths["mode"], paths["path"], paths["severity"], strict=True)
    ] if not paths.empty else []
    cut = [list(edge) for edge in _min_cut_edges(paths)] if rows else []
    services = _permitted_services(inputs, paths) if rows else {}
    permitted = [{"src": u, "dst": v, "services": labels} for (u, v), labels in sorted(services.items())]
    return {"paths": rows, "min_cut": cut, "permitted_services": permitted}


def _min_cut_edges(paths: pd.DataFrame) -> list[tuple[str, str]]:
    """Return the minimum edge cut between all entries and all targets over the union of the paths.

    The graph is built as :mod:`twin.analysis.choke_points` builds it: the
    first node of a path is its own entry node, path edges have capacity 1
    and the super source and sink edges are uncut.
    """
    import networkx as nx

    source, sink = ("__source__",), ("__sink__",)
    graph = nx.DiGraph()
    for path in paths["path"]:
        nodes = [("e", path[0])] + [("n", node) for node in path[1:]]
        graph.add_edge(source, nodes[0])
        graph.add_edge(nodes[-1], sink)
        for u, v in zip(nodes[:-1], nodes[1:], strict=True):
            graph.add_edge(u, v, capacity=1)
    _, (reachable, _) = nx.minimum_cut(graph, source, sink)
    return sorted(
        {(u[1], v[1]) for u, v in graph.edges if u in reachable and v not in reachable and u != source and v != sink}
    )


def _permitted_services(inputs: _Inputs, paths: pd.DataFrame) -> dict[tuple[str, str], list[str]]:
    """Return the proto/port labels the policy permits per permitted-mode path edge."""
    # NOTE: this reuses a private helper of twin.analysis.choke_points, so the two forms cannot drift apart.
    from twin.analysis.choke_points import _services

    edges = sorted(
        {("permitted", u, v) for mode, path in zip(paths["mode"], paths["path"], strict=True) if mode == "permitted"
         for u, v in zip(path[:-1], path[1:], strict=True)}
    )
    if not edges:
        return {}
    labels = _services(inputs.twin, inputs.site_config, edges, inputs.engine)
    return {(u, v): found for (mode, u, v), found in labels.items() if mode == "permitted"}


_PARAMETER_BUILDERS = {
    "misplaced_devices": _misplaced_parameters,
    "segment_violations": _violation_parameters,
    "external_exposure": _exposure_parameters,
    "flat_segments": _flat_parameters,
    "attack_paths": _attack_parameters,
    "choke_points": _choke_parameters,
}


def query_parameters(name: str, store: "Neo4jStore", site_config: SiteConfig, site: str | None = None) -> dict[str, Any]:
    """Return the parameters query ``name`` declares, computed for ``site`` (the only site when None)."""
    site_name = site or store.site_info(None)["name"]
    inputs = _Inputs(store, site_config, site_name)
    return {"site": site_name, **_PARAMETER_BUILDERS[name](inputs)}


def _run(inputs: _Inputs, name: str) -> pd.DataFrame:
    from twin.analysis import CATALOGUE

    query = load_query(name)
    computed = {"site": inputs.site, **_PARAMETER_BUILDERS[name](inputs)}
    missing = sorted(set(query.parameters) - set(computed))
    if missing:
        raise ConfigError(f"{name}.cypher declares ${', $'.join(missing)}, which the runner does not compute; add them to its parameter builder")
    params = {key: computed[key] for key in query.parameters}
    started = time.perf_counter()
    frame = inputs.store.run(query.text, params, timeout_s=QUERY_TIMEOUT_S)
    columns = list(CATALOGUE[name].COLUMNS)
    if frame.empty:
        frame = pd.DataFrame({column: pd.Series(dtype=object) for column in columns})
    frame = frame.reindex(columns=columns)
    log.info("cypher query %s on site %r: %d rows in %.2f s", name, inputs.site, len(frame), time.perf_counter() - started)
    if name == "attack_paths":
        inputs.attack_paths = frame
    return frame


def run_catalogue_cypher(
    store: "Neo4jStore",
    twin_site: SiteConfig,
    names: list[str] | None = None,
    site: str | None = None,
) -> dict[str, pd.DataFrame]:
    """Run the Cypher form of the named queries (all when ``names`` is None) on a Neo4j store.

    Parameters
    ----------
    store : Neo4jStore
        Store holding the site's twin.
    twin_site : SiteConfig
        Site configuration: policy, selectors, allowlist and bounds.
    names : list of str, optional
        Query names from :data:`twin.analysis.CATALOGUE`.
    site : str, optional
        Site name in the store; the only site when None.

    Returns
    -------
    dict of str to DataFrame
        Findings per query name, with the columns of the Python form (its
        ``COLUMNS``). Row order is the query's ``ORDER BY``, not the Python
        form's severity order.

    Raises
    ------
    KeyError
        When a name is not in the catalogue; the message lists the known names.

    Notes
    -----
    ``choke_points`` reuses the ``attack_paths`` rows of the same run, as
    :func:`twin.analysis.run_catalogue` does.
    """
    from twin.analysis import CATALOGUE

    names = list(CATALOGUE) if names is None else list(names)
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown:
        raise KeyError(f"unknown query {', '.join(unknown)}; known: {', '.join(CATALOGUE)}")
    site_name = site or store.site_info(None)["name"]
    inputs = _Inputs(store, twin_site, site_name)
    return {name: _run(inputs, name) for name in names}
