"""The query catalogue: named questions about the twin, each returning findings.

Every query module has ``find(twin, site, **params) -> DataFrame`` (findings
with ``severity`` and ``evidence`` columns), ``subgraph(twin, site, **params)
-> networkx.DiGraph`` (path or subgraph form for the app) and
``count(twin, site) -> int``. Each module's docstring states what it cannot see.
"""

from __future__ import annotations

import logging
import time
from types import ModuleType

import pandas as pd

from twin.analysis import (
    attack_paths,
    choke_points,
    external_exposure,
    flat_segments,
    misplaced_devices,
    segment_violations,
)
from twin.model.site import SiteConfig
from twin.model.twin import Twin

__all__ = ["CATALOGUE", "run_catalogue"]

log = logging.getLogger(__name__)

# Query name -> module, in report order.
CATALOGUE: dict[str, ModuleType] = {
    "misplaced_devices": misplaced_devices,
    "segment_violations": segment_violations,
    "external_exposure": external_exposure,
    "flat_segments": flat_segments,
    "attack_paths": attack_paths,
    "choke_points": choke_points,
}


def run_catalogue(twin: Twin, site: SiteConfig, names: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Run the named queries (all when ``names`` is None) and return their findings by name.

    Attack paths are computed once and reused by ``choke_points``.

    Raises
    ------
    KeyError
        When a name is not in :data:`CATALOGUE`; the message lists the known names.
    """
    names = list(CATALOGUE) if names is None else list(names)
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown:
        raise KeyError(f"unknown query {', '.join(unknown)}; known: {', '.join(CATALOGUE)}")
    results: dict[str, pd.DataFrame] = {}
    paths = None
    for name in names:
        started = time.perf_counter()
        if name == "choke_points":
            if paths is None:
                paths = attack_paths.find(twin, site)
            results[name] = choke_points.find(twin, site, paths=paths)
        elif name == "attack_paths":
            paths = attack_paths.find(twin, site)
            results[name] = paths
        else:
            results[name] = CATALOGUE[name].find(twin, site)
        log.info("query %s: %d findings in %.2f s (run %s)", name, len(results[name]), time.perf_counter() - started, twin.run_id)
    return results
