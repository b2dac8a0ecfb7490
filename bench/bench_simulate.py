"""Time the policy simulation, section by section, on a generated hospital, with the query catalogue as the peer.

Run: ``python bench/bench_simulate.py --devices 100000 --workdir /tmp/sim100k``.

The script generates a hospital site with :func:`twin.sample.generate_site`
and builds it into a workspace, unless the work folder already contains both
(``site/`` and ``twin.sqlite``). The generator writes ``proposed_policy.yaml``
for the hospital scenario, and the script simulates that policy against the
site's current policy.

Timed, in one process, on the same twin:

- each section of :func:`twin.policy.simulate.simulate` as the function runs
  it: endpoint tables, flow decisions, required workflows, violations,
  attack paths in each mode (observed, permitted), exposure;
- ``simulate``: the whole function, both attack-path modes;
- ``catalogue``: the peer, :func:`twin.analysis.run_catalogue` with every
  query. The simulation runs the violation, exposure and attack-path
  queries of the catalogue twice (current and proposed policy).

It prints wall-clock seconds, the ratio of the whole simulation to the
catalogue, the process CPU seconds of both (lower than wall time when other
jobs take the cores), and the peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path


def peak_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def prepare(workdir: Path, devices: int, seed: int) -> tuple[Path, Path, dict]:
    """Generate and build the site unless ``workdir`` already contains both; return (site dir, workspace, timings)."""
    from twin.api import Workspace
    from twin.sample import generate_site

    site_dir, ws_path = workdir / "site", workdir / "twin.sqlite"
    timings: dict = {}
    if not (site_dir / "site.yaml").exists():
        started = time.perf_counter()
        generate_site(site_dir, devices=devices, seed=seed)
        timings["generate_s"] = round(time.perf_counter() - started, 1)
    if not ws_path.exists():
        started = time.perf_counter()
        Workspace(ws_path).build(site_dir)
        timings["build_s"] = round(time.perf_counter() - started, 1)
    return site_dir, ws_path, timings


def time_sections(twin, site, proposed_path: Path) -> dict[str, float]:
    """Run the steps of ``simulate`` one by one, in its order, and return seconds per step."""
    from twin.analysis._common import device_view
    from twin.policy import simulate as sim
    from twin.policy.engine import EndpointTable, PolicyEngine

    seconds: dict[str, float] = {}

    def timed(name, func, *args):
        started = time.perf_counter()
        value = func(*args)
        seconds[name] = round(time.perf_counter() - started, 2)
        print(f"{name}: {seconds[name]} s", file=sys.stderr, flush=True)
        return value

    proposed = timed("load_policy", lambda: sim.load_policy(proposed_path, name="<proposed policy>", site=site))
    engines = {"current": PolicyEngine(site, site.policy), "proposed": PolicyEngine(site, proposed)}

    def build_tables():
        externals = sim._external_addresses(twin)
        return {k: EndpointTable.build(e, twin.devices, twin.communications, externals) for k, e in engines.items()}

    tables = timed("endpoint_tables", build_tables)
    view = timed("device_view", device_view, twin, site)
    flows = timed("flows", sim._flows, twin, site, engines, tables, view)
    checker = timed("workflow_setup", sim._WorkflowChecker, twin, site, engines, tables, flows, view)
    timed("workflows", sim._workflows, checker, site.policy, proposed)
    timed("violations", sim._violations, twin, site, engines)
    warnings: list[str] = []
    for mode in sim.MODES:
        timed(f"attack_paths_{mode}", sim._attack_paths, twin, site, engines, flows, (mode,), view, warnings)
    timed("exposure", sim._exposure, twin, site, flows)
    seconds["flow_rows"] = len(flows)
    return seconds


def run(workdir: Path, devices: int, seed: int) -> dict:
    from twin.analysis import run_catalogue
    from twin.api import Workspace
    from twin.policy.simulate import simulate

    site_dir, ws_path, prepared = prepare(workdir, devices, seed)
    proposed_path = site_dir / "proposed_policy.yaml"
    if not proposed_path.exists():
        raise SystemExit(f"{proposed_path} is missing; generate the site with the hospital scenario")
    ws = Workspace(ws_path)
    started = time.perf_counter()
    twin, site = ws.twin(), ws.site()
    load_s = time.perf_counter() - started

    sections = time_sections(twin, site, proposed_path)

    started, cpu = time.perf_counter(), time.process_time()
    result = simulate(twin, site, proposed_path)
    simulate_s, simulate_cpu_s = time.perf_counter() - started, time.process_time() - cpu

    # Peer: every catalogue query once, on the same twin.
    started, cpu = time.perf_counter(), time.process_time()
    catalogue = run_catalogue(twin, site)
    catalogue_s, catalogue_cpu_s = time.perf_counter() - started, time.process_time() - cpu

    return {
        **prepared,
        "devices": len(twin.devices),
        "communications": len(twin.communications),
        "rules_current": len(site.policy.rules),
        "rules_proposed": len(result.proposed.rules),
        "load_twin_s": round(load_s, 2),
        "sections_s": sections,
        "simulate_s": round(simulate_s, 2),
        "catalogue_s": round(catalogue_s, 2),
        "ratio_simulate_to_catalogue": round(simulate_s / catalogue_s, 2),
        "simulate_cpu_s": round(simulate_cpu_s, 2),
        "catalogue_cpu_s": round(catalogue_cpu_s, 2),
        "summary": result.summary,
        "catalogue_rows": {name: len(frame) for name, frame in catalogue.items()},
        "warnings": result.warnings,
        "peak_mb": round(peak_mb(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000, help="Target device count of the generated hospital (default 100,000).")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_simulate"),
                        help="Folder for the generated site and its workspace; reused when both exist (default /tmp/bench_simulate).")
    parser.add_argument("--seed", type=int, default=7, help="Generator seed (default 7).")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(json.dumps(run(args.workdir, args.devices, args.seed), indent=2, default=str))


if __name__ == "__main__":
    main()
