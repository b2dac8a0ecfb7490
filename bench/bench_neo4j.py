"""Load a generated hospital into Neo4j over Bolt and with Neo4j's offline importer; time the catalogue on both stores.

Run: ``python bench/bench_neo4j.py --devices 100000``.

Steps, all in one run on the same twin:

1. Generate a hospital with ``twin.sample.generate_site`` and build it into
   an embedded workspace (reused from ``--workdir`` when it is already there).
2. Write the twin's nodes and relationships as CSV in the header format of
   ``neo4j-admin database import full`` and run that importer (the
   ``org.neo4j.cli.AdminTool`` of Neo4j 5.26, from the Maven artifact
   ``org.neo4j:neo4j-import-tool``) into an empty database. Then start a
   server on the imported store and create the same constraints and indexes
   as the Bolt path does, so both paths end with the same queryable graph.
3. Start a fresh server and load the same twin over Bolt with
   ``Neo4jStore.ensure_schema`` and ``Neo4jStore.write_twin``.
4. Run each catalogue query ``--runs`` times on that server (the Cypher form)
   and on the embedded twin (the Python form), and report the p95 of each.
   A slow Cypher query repeats only until QUERY_REPEAT_BUDGET_S is spent.

The load ratio is the importer's time divided by the Bolt time (1.0 means as
fast as the importer; the goal is 0.25 or more). It is printed twice: with
the importer's whole process (JVM start included) plus its index build, and
with only the time the importer reports for itself. Writing the CSV files is
reported apart and counted on neither side. Each server runs with a 2 GB
heap on 127.0.0.1, started by scripts/neo4j-server.sh.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SERVER_SCRIPT = REPO / "scripts" / "neo4j-server.sh"
CLASSPATH_FILE = REPO / "neo4j" / "target" / "classpath.txt"

# Goals: the Bolt load at 0.25 or more of the offline importer's speed, and
# every catalogue query's p95 on Neo4j at 2 s or less.
LOAD_RATIO_GOAL = 0.25
QUERY_P95_GOAL_S = 2.0
# Bolt port of this benchmark's own servers (default 17703).
DEFAULT_PORT = 17703
# Heap of the importer's JVM; the server script uses the same 2 GB.
IMPORTER_HEAP = "-Xmx2g"
# Seconds the importer and the index build may take before the run fails.
IMPORT_TIMEOUT_S = 1800
INDEX_TIMEOUT_S = 1800
# Repeats of one query stop once its runs have taken this many seconds
# (default 60), so a query near the server's time limit runs once or twice.
QUERY_REPEAT_BUDGET_S = 60.0
# Array delimiter in the CSV files (ASCII unit separator). List values such
# as ips and cpe never contain it, where ';' (the importer's default) could
# appear in a CPE or a sysDescr.
ARRAY_DELIMITER = "\x1f"
# Separator of the parts of a composite node key inside an importer :ID.
ID_SEPARATOR = "\x1e"

# Schema property type -> importer header type.
_CSV_TYPES = {
    "str": "string",
    "int": "long",
    "float": "double",
    "time": "double",
    "bool": "boolean",
    "list[str]": "string[]",
    "json": "string",
}


def peak_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------
# The twin


def prepare_twin(workdir: Path, devices: int, seed: int) -> tuple[Path, Path, dict]:
    """Generate and build a hospital in ``workdir`` unless a previous run left one there."""
    from twin.pipeline import build
    from twin.sample import generate_site

    site_dir = workdir / f"hospital-{devices}"
    workspace = workdir / f"ws-{devices}.sqlite"
    done = workdir / f"ws-{devices}.done"
    if done.exists():
        return site_dir, workspace, json.loads(done.read_text())
    t = time.perf_counter()
    generate_site(site_dir, devices=devices, seed=seed)
    generate_s = time.perf_counter() - t
    t = time.perf_counter()
    build(site_dir, workspace)
    info = {"generate_s": round(generate_s, 1), "build_s": round(time.perf_counter() - t, 1)}
    done.write_text(json.dumps(info))
    return site_dir, workspace, info


# --------------------------------------------------------------------------
# CSV in the importer's header format


@dataclass
class ImportFiles:
    """CSV files for ``neo4j-admin database import full`` and the rows in each."""

    nodes: list[tuple[str, Path]] = field(default_factory=list)
    relationships: list[tuple[str, Path]] = field(default_factory=list)
    # Files with a value that spans lines, read by the importer in its slower multi-line mode.
    multiline: list[Path] = field(default_factory=list)
    node_rows: dict[str, int] = field(default_factory=dict)
    relationship_rows: dict[str, int] = field(default_factory=dict)


def _csv_cell(value) -> str:
    """Format one property value as the importer reads it: no text is null, ``""`` the empty string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else repr(value)
    if isinstance(value, (list, tuple)):
        value = ARRAY_DELIMITER.join(str(v) for v in value)
    text = str(value)
    return '"' + text.replace('"', '""') + '"'


def _write_csv(path: Path, header: list[str], names: list[str], rows: list[dict], files: ImportFiles) -> int:
    """Write ``rows`` (property maps) under ``header``, one column per name in ``names``."""
    multiline = False
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write(",".join(header) + "\n")
        for row in rows:
            line = ",".join(_csv_cell(row.get(name)) for name in names)
            if "\n" in line or "\r" in line:
                multiline = True
            handle.write(line + "\n")
    if multiline:
        files.multiline.append(path)
    return len(rows)


def _header(names: list[str], types: dict[str, str]) -> list[str]:
    return [f"{name}:{_CSV_TYPES[types.get(name, 'str')]}" for name in names]


def _node_id(key: list) -> str:
    return ID_SEPARATOR.join(str(part) for part in key)


def export_csv(twin, site_text: str | None, out_dir: Path) -> ImportFiles:
    """Write the nodes and relationships that ``Neo4jStore.write_twin`` writes for ``twin`` as importer CSV.

    The property maps come from the store's own preparation step, so both
    loads carry the same properties. Every node and relationship has
    ``site`` and ``run_id``, and one ``:Site`` node contains the site name,
    run id, build time and site YAML. A relationship end that no node row
    provides becomes a ``:Placeholder`` node with only its key properties. Node ids
    are the key properties (joined with :data:`ID_SEPARATOR` for composite
    keys), one id space per label.
    """
    from twin.graph.embedded import COLUMN_TYPES
    from twin.graph.neo4j import PLACEHOLDER_LABEL, Neo4jStore
    from twin.model import schema

    out_dir.mkdir(parents=True, exist_ok=True)
    files = ImportFiles()
    # NOTE: _prepare is the store's private row builder; it uses no connection,
    # and calling it keeps the CSV in step with what write_twin sends.
    node_rows, rel_rows = Neo4jStore._prepare(None, twin)

    site_path = out_dir / "site.csv"
    site_row = {"id": twin.site, "name": twin.site, "run_id": twin.run_id, "built_at": float(twin.built_at), "site_yaml": site_text}
    files.node_rows["Site"] = _write_csv(
        site_path,
        [":ID(Site)", "name:string", "run_id:string", "built_at:double", "site_yaml:string"],
        ["id", "name", "run_id", "built_at", "site_yaml"],
        [site_row],
        files,
    )
    files.nodes.append(("Site", site_path))

    node_ids: dict[str, set[str]] = {}
    for decl in schema.NODES:
        types = COLUMN_TYPES[decl.table]
        names = [c for c in decl.columns if c != "site"] + ["site"]
        prepared = node_rows[decl.label]
        rows = [dict(zip(prepared.columns, values)) for values in prepared.rows]
        ids = [_node_id([row[k] for k in decl.key]) for row in rows]
        node_ids[decl.label] = set(ids)
        for row, ident in zip(rows, ids):
            row["\0id"] = ident
            # write_twin sets site and run_id from query parameters, so its rows carry neither.
            row["site"] = twin.site
            row["run_id"] = twin.run_id
        path = out_dir / f"node-{decl.label}.csv"
        header = [f":ID({decl.label})"] + _header(names, types)
        files.node_rows[decl.label] = _write_csv(path, header, ["\0id"] + names, rows, files)
        files.nodes.append((decl.label, path))

    placeholders: dict[str, dict[str, dict]] = {decl.label: {} for decl in schema.NODES}
    for rel in schema.RELATIONSHIPS:
        types = COLUMN_TYPES[rel.table]
        endpoint_columns = set(rel.start) | set(rel.end)
        names = [c for c in rel.columns if c not in endpoint_columns and c != "run_id"] + ["site", "run_id"]
        if rel.table in {decl.table for decl in schema.NODES}:
            names = ["site", "run_id"]
        total = 0
        for (start_label, end_label), prepared in sorted(rel_rows[rel.type].items()):
            split = len(prepared.start)
            stop = split + len(prepared.end)
            rows = [
                {"s": list(values[:split]), "e": list(values[split:stop]), "props": dict(zip(prepared.props, values[stop:]))}
                for values in prepared.rows
            ]
            flat = []
            for row in rows:
                start_id = _node_id(row["s"])
                end_id = _node_id(row["e"])
                for label, ident, key in ((start_label, start_id, row["s"]), (end_label, end_id, row["e"])):
                    if ident not in node_ids[label] and ident not in placeholders[label]:
                        placeholders[label][ident] = key
                flat.append({"\0start": start_id, "\0end": end_id, **row["props"], "site": twin.site, "run_id": twin.run_id})
            path = out_dir / f"rel-{rel.type}-{start_label}-{end_label}.csv"
            header = [f":START_ID({start_label})", f":END_ID({end_label})"] + _header(names, types)
            total += _write_csv(path, header, ["\0start", "\0end"] + names, flat, files)
            files.relationships.append((rel.type, path))
        files.relationship_rows[rel.type] = total

    for decl in schema.NODES:
        found = placeholders[decl.label]
        if not found:
            continue
        rows = [
            {"\0id": ident, **dict(zip(decl.key, key)), "site": twin.site, "run_id": twin.run_id}
            for ident, key in sorted(found.items())
        ]
        names = list(decl.key) + ["site", "run_id"]
        path = out_dir / f"node-{decl.label}-{PLACEHOLDER_LABEL}.csv"
        header = [f":ID({decl.label})"] + _header(names, COLUMN_TYPES[decl.table])
        files.node_rows[f"{decl.label}:{PLACEHOLDER_LABEL}"] = _write_csv(path, header, ["\0id"] + names, rows, files)
        files.nodes.append((f"{decl.label}:{PLACEHOLDER_LABEL}", path))
    return files


# --------------------------------------------------------------------------
# The offline importer


def _classpath() -> str:
    subprocess.run(["bash", str(SERVER_SCRIPT), "build"], check=True)
    return f"{REPO / 'neo4j' / 'target' / 'classes'}:{CLASSPATH_FILE.read_text().strip()}"


def run_offline_import(files: ImportFiles, home: Path) -> dict:
    """Run ``neo4j-admin database import full`` on ``files`` into the database ``neo4j`` under ``home``.

    ``home`` becomes the importer's NEO4J_HOME, so the store lands in
    ``home/data/databases/neo4j``, where a server started with ``home`` as
    its home directory finds it.
    """
    conf = home / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "neo4j.conf").write_text("")
    command = [
        "java", IMPORTER_HEAP, "-cp", _classpath(), "org.neo4j.cli.AdminTool",
        "database", "import", "full", "neo4j",
        f"--array-delimiter=U+{ord(ARRAY_DELIMITER):04X}",
        f"--report-file={home / 'import.report'}",
    ]
    if files.multiline:
        # Only the v2 multi-line format of Neo4j 5.26 accepts a list of files.
        command += ["--multiline-fields-format=v2", "--multiline-fields=" + ",".join(str(p) for p in files.multiline)]
    command += [f"--nodes={label}={path}" for label, path in files.nodes]
    command += [f"--relationships={rel_type}={path}" for rel_type, path in files.relationships]
    env = dict(os.environ, NEO4J_HOME=str(home), NEO4J_CONF=str(conf))
    t = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S, check=False)
    wall_s = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"neo4j-admin database import full failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    # The importer ends with "IMPORT DONE in 12s 345ms." (minutes and hours when longer).
    done = re.search(r"IMPORT DONE in ([^.]+)\.", proc.stdout)
    return {"import_s": round(wall_s, 2), "import_core_s": round(_parse_duration(done.group(1)), 2) if done else None}


def _parse_duration(text: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)(ms|h|m|s)\b", text))


# --------------------------------------------------------------------------
# Servers


@contextmanager
def local_server(port: int, state: Path) -> Iterator[str]:
    """Start scripts/neo4j-server.sh on ``port`` with ``state`` and stop it (deleting ``state``) at the end."""
    started = subprocess.run(["bash", str(SERVER_SCRIPT), "start", str(port), str(state)], capture_output=True, text=True, check=False)
    try:
        if started.returncode != 0:
            raise RuntimeError(f"scripts/neo4j-server.sh start {port} failed: {started.stderr.strip()}")
        yield f"bolt://127.0.0.1:{port}"
    finally:
        subprocess.run(["bash", str(SERVER_SCRIPT), "stop", str(port), str(state)], capture_output=True, check=False)


def graph_counts(store) -> dict[str, int]:
    """Count nodes per label and relationships per type on the server of ``store``."""
    counts: dict[str, int] = {}
    labels = store.run("CALL db.labels() YIELD label RETURN label")["label"].tolist()
    for label in sorted(labels):
        frame = store.run(f"MATCH (n:`{label}`) RETURN count(n) AS n")
        counts[label] = int(frame["n"].iloc[0])
    types = store.run("CALL db.relationshipTypes() YIELD relationshipType RETURN relationshipType")["relationshipType"].tolist()
    for rel_type in sorted(types):
        frame = store.run(f"MATCH ()-[r:`{rel_type}`]->() RETURN count(r) AS n")
        counts[rel_type] = int(frame["n"].iloc[0])
    return counts


def build_schema(store) -> float:
    """Create the store's constraints and indexes and wait until they are online; return seconds."""
    t = time.perf_counter()
    store.ensure_schema()
    store.run("CALL db.awaitIndexes($timeout)", {"timeout": INDEX_TIMEOUT_S})
    return time.perf_counter() - t


# --------------------------------------------------------------------------
# Queries


def p95(samples: list[float]) -> float:
    """Return the 95th percentile of ``samples`` (nearest rank)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def time_cypher_queries(store, site, runs: int) -> dict[str, dict]:
    """Time each catalogue query's Cypher text on ``store``, up to ``runs`` times, with its parameters computed once.

    The parameters are built as ``run_catalogue_cypher`` builds them, and
    some need the twin loaded from the store and the policy engine. That
    time is reported apart as ``params_s`` because it is Python work, not
    the query. A query that fails, or that the server stops at the runner's
    time limit, is recorded with its error and the rest still run.
    """
    from neo4j.exceptions import DriverError, Neo4jError

    from twin.analysis import CATALOGUE
    from twin.exceptions import StoreError
    from twin.graph import cypher

    # NOTE: _Inputs and _PARAMETER_BUILDERS are the runner's private steps; they
    # are used here so the query text is timed apart from the parameter work.
    inputs = cypher._Inputs(store, site, store.sites()[0])
    results: dict[str, dict] = {}
    for name in CATALOGUE:
        query = cypher.load_query(name)
        t = time.perf_counter()
        computed = {"site": inputs.site, **cypher._PARAMETER_BUILDERS[name](inputs)}
        params_s = time.perf_counter() - t
        params = {key: computed[key] for key in query.parameters}
        samples: list[float] = []
        frame = None
        error = None
        for _ in range(runs):
            t = time.perf_counter()
            try:
                frame = store.run(query.text, params, timeout_s=cypher.QUERY_TIMEOUT_S)
            except (Neo4jError, DriverError, StoreError) as exc:
                error = f"{type(exc).__name__} after {time.perf_counter() - t:.0f} s: {str(exc)[:200]}"
                break
            samples.append(time.perf_counter() - t)
            if sum(samples) >= QUERY_REPEAT_BUDGET_S:
                break
        if name == "attack_paths":
            columns = list(CATALOGUE[name].COLUMNS)
            inputs.attack_paths = frame.reindex(columns=columns) if frame is not None else pd.DataFrame(columns=columns)
        results[name] = {
            "p95_s": p95(samples) if samples else None,
            "runs": len(samples),
            "params_s": params_s,
            "rows": len(frame) if frame is not None else None,
            "error": error,
        }
        _progress(f"cypher {name}: {results[name]}")
    return results


def time_python_queries(twin, site, runs: int) -> dict[str, dict]:
    """Time each catalogue query's Python form on the in-memory twin, ``runs`` times."""
    from twin.analysis import CATALOGUE

    results: dict[str, dict] = {}
    paths = None
    for name, module in CATALOGUE.items():
        samples = []
        frame = None
        for _ in range(runs):
            t = time.perf_counter()
            # choke_points reuses the attack paths, as run_catalogue and the Cypher runner do.
            frame = module.find(twin, site, paths=paths) if name == "choke_points" else module.find(twin, site)
            samples.append(time.perf_counter() - t)
        if name == "attack_paths":
            paths = frame
        results[name] = {"p95_s": p95(samples), "rows": len(frame)}
    return results


# --------------------------------------------------------------------------
# The run


def run(args: argparse.Namespace) -> dict:
    from twin.graph.embedded import EmbeddedStore
    from twin.graph.neo4j import Neo4jStore
    from twin.model.site import load_site

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict = {"devices_requested": args.devices}

    _progress(f"generating and building {args.devices} devices in {workdir} (reused when present)")
    site_dir, workspace, info = prepare_twin(workdir, args.devices, args.seed)
    result.update(info)
    with EmbeddedStore(workspace, create=False) as embedded:
        twin = embedded.load_twin()
    site = load_site(site_dir)
    site_text = (site_dir / "site.yaml").read_text(encoding="utf-8")
    result["devices"] = len(twin.devices)
    result["communications"] = len(twin.communications)

    # Offline importer, then the same schema on the imported store.
    csv_dir = workdir / "csv"
    _progress("writing CSV for the offline importer")
    t = time.perf_counter()
    files = export_csv(twin, site_text, csv_dir)
    result["csv_s"] = round(time.perf_counter() - t, 1)
    result["csv_nodes"] = sum(files.node_rows.values())
    result["csv_relationships"] = sum(files.relationship_rows.values())
    state = workdir / "import-server"
    subprocess.run(["bash", str(SERVER_SCRIPT), "stop", str(args.port), str(state)], check=False)
    _progress("running neo4j-admin database import full")
    result.update(run_offline_import(files, state / "data"))
    with local_server(args.port, state) as uri, Neo4jStore(uri) as store:
        _progress(f"import took {result['import_s']} s; creating constraints and indexes on the imported store")
        result["import_schema_s"] = round(build_schema(store), 2)
        result["import_counts"] = graph_counts(store)
    _save(workdir, result)

    # Bolt load into a fresh server, then the queries on it.
    state = workdir / "bolt-server"
    subprocess.run(["bash", str(SERVER_SCRIPT), "stop", str(args.port), str(state)], check=False)
    with local_server(args.port, state) as uri, Neo4jStore(uri) as store:
        result["bolt_schema_s"] = round(build_schema(store), 2)
        _progress("writing the twin over Bolt (Neo4jStore.write_twin)")
        t = time.perf_counter()
        stats = store.write_twin(twin, site, site_text=site_text)
        result["bolt_write_s"] = round(time.perf_counter() - t, 2)
        result["bolt_batches"] = stats.batches
        result["bolt_counts"] = graph_counts(store)
        _save(workdir, result)
        _progress(f"Bolt write took {result['bolt_write_s']} s; timing the Cypher queries")
        result["cypher"] = time_cypher_queries(store, site, args.runs)
        _save(workdir, result)
    _progress("timing the Python queries")
    result["python"] = time_python_queries(twin, site, args.runs)
    result["peak_mb"] = round(peak_mb(), 1)
    _save(workdir, result)
    return result


def _save(workdir: Path, result: dict) -> None:
    """Write the measurements so far to ``workdir/result.json``, so a run stopped midway keeps them."""
    (workdir / "result.json").write_text(json.dumps(result, indent=1, default=str))


def report(result: dict) -> None:
    """Print the load ratio and the query table."""
    import_total = result["import_s"] + result["import_schema_s"]
    bolt_total = result["bolt_schema_s"] + result["bolt_write_s"]
    same = result["import_counts"] == result["bolt_counts"]
    print(f"twin: {result['devices']} devices, {result['communications']} communications; "
          f"{result['csv_nodes']} nodes and {result['csv_relationships']} relationships "
          f"(CSV written in {result['csv_s']} s, counted on neither side)")
    print(f"graphs equal by label and type counts: {same}")
    if not same:
        print(f"  importer: {result['import_counts']}\n  bolt:     {result['bolt_counts']}")
    print(f"offline importer: {result['import_s']} s process ({result['import_core_s']} s reported by the importer) "
          f"+ {result['import_schema_s']} s constraints and indexes = {import_total:.1f} s")
    print(f"bolt (write_twin): {result['bolt_schema_s']} s schema + {result['bolt_write_s']} s writes "
          f"in {result['bolt_batches']} batches = {bolt_total:.1f} s")
    ratio = import_total / bolt_total
    core_ratio = (result["import_core_s"] + result["import_schema_s"]) / bolt_total if result["import_core_s"] else float("nan")
    print(f"load ratio importer/bolt: {ratio:.2f}x (goal >= {LOAD_RATIO_GOAL}x); "
          f"{core_ratio:.2f}x against the importer's own time")

    header = ["query", "neo4j_p95_s", "params_s", "neo4j_rows", "python_p95_s", "python_rows"]
    print(" ".join(f"{h:>18}" for h in header))
    for name, neo in result["cypher"].items():
        py = result["python"][name]
        neo_p95 = f"{neo['p95_s']:.3f}" if neo["p95_s"] is not None else "failed"
        cells = [name, neo_p95, f"{neo['params_s']:.2f}", neo["rows"], f"{py['p95_s']:.3f}", py["rows"]]
        print(" ".join(f"{c!s:>18}" for c in cells))
    for name, neo in result["cypher"].items():
        if neo["error"]:
            print(f"{name} on Neo4j: {neo['error']}")
    failed = [name for name, neo in result["cypher"].items() if neo["p95_s"] is None]
    timed = [neo["p95_s"] for neo in result["cypher"].values() if neo["p95_s"] is not None]
    worst = max(timed) if timed else float("nan")
    print(f"slowest Neo4j p95: {worst:.2f} s (goal <= {QUERY_P95_GOAL_S} s); failed: {', '.join(failed) or 'none'}; "
          f"peak {result['peak_mb']} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000, help="Devices to generate (default 100000).")
    parser.add_argument("--seed", type=int, default=7, help="Generator seed (default 7).")
    parser.add_argument("--runs", type=int, default=5, help="Runs per query for the p95 (default 5).")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"Bolt port of the benchmark's servers (default {DEFAULT_PORT}).")
    parser.add_argument(
        "--workdir",
        default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "twin-bench-neo4j"),
        help="Folder for the generated site, workspace, CSV and server data; the built twin is reused from it.",
    )
    parser.add_argument("--json", action="store_true", help="Print the raw measurements as JSON at the end.")
    args = parser.parse_args()

    # The driver logs every server notification (such as "null value
    # eliminated in set function") as a warning; the timings are the output here.
    logging.getLogger("neo4j.notifications").setLevel(logging.ERROR)
    result = run(args)
    report(result)
    if args.json:
        print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
