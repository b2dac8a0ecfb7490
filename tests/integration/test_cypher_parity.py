"""Every cypher/ query on Neo4j returns the same rows as its Python form on the embedded store.

Each sample network is built with the pipeline into a temporary workspace,
written to a real Neo4j under its own site name, and every catalogue query
is run both ways. Rows are compared as sets of tuples over every column the
Python form returns; lists compare as tuples and floats exactly, because
both forms add the same float64 values.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twin.analysis import CATALOGUE, run_catalogue
from twin.api import Workspace
from twin.analysis import attack_paths
from twin.graph.cypher import COMMUNICATION_COLUMNS, INPUT_TABLES, load_input_twin, load_query, query_parameters, run_catalogue_cypher
from twin.model.twin import Twin

neo4j_store = pytest.importorskip("twin.graph.neo4j")

REPO = Path(__file__).resolve().parents[2]
NETWORKS = {
    "hospital": REPO / "sample_networks" / "hospital",
    "pair-compliant": REPO / "sample_networks" / "pair" / "compliant",
    "pair-violating": REPO / "sample_networks" / "pair" / "violating",
}


def _value(value):
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_value(v) for v in value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        value = float(value)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if value is pd.NA:
        return None
    return value


def _rows(frame: pd.DataFrame) -> list[tuple]:
    return sorted((tuple(_value(v) for v in row) for row in frame.itertuples(index=False)), key=repr)


@pytest.fixture(scope="module")
def stored(neo4j_uri, tmp_path_factory):
    """Yield (store, {network: (twin, site config, site name in the store)}) with every sample network written."""
    logging.getLogger("neo4j.notifications").setLevel(logging.ERROR)
    with neo4j_store.Neo4jStore(neo4j_uri) as store:
        networks = {}
        for network, folder in NETWORKS.items():
            workspace = Workspace(tmp_path_factory.mktemp("parity") / f"{network}.sqlite")
            workspace.build(folder)
            twin, site = workspace.twin(), workspace.site()
            # The two pair networks share a site name, so each is stored under its network name.
            stored_twin = Twin(site=f"parity-{network}", run_id=twin.run_id, built_at=twin.built_at, tables=twin.tables)
            store.write_twin(stored_twin, site)
            networks[network] = (twin, site, stored_twin.site)
        yield store, networks
        for network in NETWORKS:
            store.delete_site(f"parity-{network}")


@pytest.fixture(scope="module")
def results(stored):
    """Return {network: (python results, cypher results)} for every sample network."""
    store, networks = stored
    out = {}
    for network, (twin, site, name) in networks.items():
        out[network] = (run_catalogue(twin, site), run_catalogue_cypher(store, site, site=name))
    return out


@pytest.mark.parametrize("network", list(NETWORKS))
@pytest.mark.parametrize("name", list(CATALOGUE))
def test_cypher_matches_python(results, network, name):
    python, cypher = results[network]
    assert list(cypher[name].columns) == list(python[name].columns)
    assert _rows(cypher[name]) == _rows(python[name])


def test_parity_covers_findings(results):
    # The comparison is only as strong as the rows it sees: every query finds something somewhere.
    found = {name for python, _ in results.values() for name, frame in python.items() if not frame.empty}
    assert found == set(CATALOGUE)


def test_attack_paths_both_modes_compared(results):
    python, _ = results["hospital"]
    assert set(python["attack_paths"]["mode"]) == {"observed", "permitted"}


def test_input_twin_matches_stored_tables(stored):
    # The runner's parameters read a partial load of the twin: it must equal the full load where it is filled.
    store, networks = stored
    _, _, name = networks["hospital"]
    full = store.load_twin(name)
    partial = load_input_twin(store, name)
    for table in INPUT_TABLES:
        pd.testing.assert_frame_equal(partial.tables[table], full.tables[table], check_like=False)
    columns = list(COMMUNICATION_COLUMNS)
    pd.testing.assert_frame_equal(partial.communications[columns], full.communications[columns])
    assert partial.communications[["bytes", "flows", "first_seen"]].isna().all().all()
    assert partial.interfaces.empty


def _vulnerable_services(twin: Twin, paths: pd.DataFrame) -> pd.DataFrame:
    """Return the services of every second node on the observed paths, so some paths get cheaper than others."""
    on_paths = sorted({node for path in paths["path"] for node in path[1:]})[::2]
    services = twin.services[twin.services["device_id"].isin(on_paths)]
    return pd.DataFrame(
        {
            "device_id": services["device_id"].astype(str).to_numpy(),
            "proto": services["proto"].astype(str).str.lower().to_numpy(),
            "port": services["port"].astype("int64").to_numpy(),
        }
    )


def test_attack_paths_vulnerable_costs_match(stored, results):
    # The schema has no vulnerability flag yet, so the catalogue runs see only cost 1.0 edges. This passes the same
    # vulnerable services to both forms, which changes costs and the k cheapest paths per pair.
    store, networks = stored
    twin, site, name = networks["hospital"]
    python_all, _ = results["hospital"]
    vulnerable = _vulnerable_services(twin, python_all["attack_paths"].query("mode == 'observed'"))
    assert not vulnerable.empty
    python = attack_paths.find(twin, site, mode="observed", vulnerable=vulnerable)
    assert (python["cost"] != python["hops"]).any(), "no path crosses a vulnerable service; the test compares nothing new"

    params = query_parameters("attack_paths", store, site, site=name)
    params["modes"] = ["observed"]
    params["vulnerable"] = sorted({f"{d}/{p}/{q}" for d, p, q in vulnerable.itertuples(index=False)})
    query = load_query("attack_paths")
    cypher = store.run(query.text, {key: params[key] for key in query.parameters}).reindex(columns=list(python.columns))
    assert _rows(cypher) == _rows(python)
