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
from twin.graph.cypher import run_catalogue_cypher
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
def results(neo4j_uri, tmp_path_factory):
    """Return {network: (python results, cypher results)} for every sample network."""
    logging.getLogger("neo4j.notifications").setLevel(logging.ERROR)
    out = {}
    with neo4j_store.Neo4jStore(neo4j_uri) as store:
        for network, folder in NETWORKS.items():
            workspace = Workspace(tmp_path_factory.mktemp("parity") / f"{network}.sqlite")
            workspace.build(folder)
            twin, site = workspace.twin(), workspace.site()
            # The two pair networks share a site name, so each is stored under its network name.
            stored = Twin(site=f"parity-{network}", run_id=twin.run_id, built_at=twin.built_at, tables=twin.tables)
            store.write_twin(stored, site)
            python = run_catalogue(twin, site)
            cypher = run_catalogue_cypher(store, site, site=stored.site)
            out[network] = (python, cypher)
        for network in NETWORKS:
            store.delete_site(f"parity-{network}")
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
