"""Build and analyse generated hospitals; print time and peak memory per stage.

Run: ``python bench/bench_build.py --sizes 1500,10000,100000``.

Each size is built in one child process and analysed in another, as
``twin build`` and ``twin analyze`` are, so each peak memory
(``ru_maxrss``) is its own. Stages: generate (not counted), import,
resolve, store; then load and analyse. The build budget for 100,000 devices is 60 s and the
analysis budget 10 s, in 2 GB, on 2 cores.

The peer for the flow import is pyarrow's raw CSV read of the same Zeek
conn.log, measured in the same run: ``bench/bench_zeek_import.py``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUILD_BUDGET_S = 60.0
ANALYSE_BUDGET_S = 10.0
MEMORY_BUDGET_MB = 2048.0


def peak_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_build(devices: int, seed: int, workdir: Path) -> dict:
    from twin.pipeline import build
    from twin.sample import generate_site

    site_dir = workdir / f"hospital-{devices}"
    t = time.perf_counter()
    generate_site(site_dir, devices=devices, seed=seed)
    generate_s = time.perf_counter() - t
    start_mb = peak_mb()

    workspace = workdir / f"ws-{devices}.sqlite"
    t0 = time.perf_counter()
    result = build(site_dir, workspace)
    build_s = time.perf_counter() - t0
    return {
        "devices": devices,
        "generate_s": round(generate_s, 2),
        "import_s": round(result.timings["import"], 2),
        "resolve_s": round(result.timings["resolve"], 2),
        "store_s": round(result.timings["store"], 2),
        "build_s": round(build_s, 2),
        # The generator runs in the same process first; its peak is reported apart.
        "generate_peak_mb": round(start_mb, 1),
        "build_peak_mb": round(peak_mb(), 1),
        "resolved_devices": result.stats.get("devices"),
        "communications": result.stats.get("communications"),
    }


def run_analyse(devices: int, seed: int, workdir: Path) -> dict:
    from twin.analysis import run_catalogue
    from twin.graph.embedded import EmbeddedStore
    from twin.model.site import load_site

    workspace = workdir / f"ws-{devices}.sqlite"
    t = time.perf_counter()
    with EmbeddedStore(workspace) as store:
        twin = store.load_twin()
    load_s = time.perf_counter() - t
    site = load_site(workdir / f"hospital-{devices}")
    t = time.perf_counter()
    findings = run_catalogue(twin, site)
    analyse_s = time.perf_counter() - t
    return {
        "load_s": round(load_s, 2),
        "analyse_s": round(analyse_s, 2),
        "analyse_peak_mb": round(peak_mb(), 1),
        "findings": {name: len(frame) for name, frame in findings.items()},
    }


def child(stage: str, devices: int, seed: int, workdir: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--stage", stage, "--one", str(devices), "--seed", str(seed), "--workdir", workdir],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{stage} of {devices} devices failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1500,10000,100000", help="Comma-separated device counts.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stage", choices=("build", "analyse"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        run = run_build if args.stage == "build" else run_analyse
        print(json.dumps(run(args.one, args.seed, Path(args.workdir))))
        return 0

    rows = []
    with tempfile.TemporaryDirectory(prefix="twin-bench-") as tmp:
        for size in [int(s) for s in args.sizes.split(",")]:
            # Build and analysis run in separate processes, as 'twin build'
            # and 'twin analyze' do, so each peak is its own.
            row = child("build", size, args.seed, tmp)
            row.update(child("analyse", size, args.seed, tmp))
            rows.append(row)

    header = [
        "devices",
        "communications",
        "import_s",
        "resolve_s",
        "store_s",
        "build_s",
        "build_peak_mb",
        "load_s",
        "analyse_s",
        "analyse_peak_mb",
    ]
    print(" ".join(f"{h:>14}" for h in header))
    for row in rows:
        print(" ".join(f"{row[h]!s:>14}" for h in header))
    for row in rows:
        if row["devices"] >= 100_000:
            print(
                f"100k budget: build {row['build_s']} s of {BUILD_BUDGET_S:.0f} s ({row['build_s'] / BUILD_BUDGET_S:.2f}x), "
                f"analyse {row['analyse_s']} s (plus {row['load_s']} s loading) of {ANALYSE_BUDGET_S:.0f} s, "
                f"peak {max(row['build_peak_mb'], row['analyse_peak_mb'])} MB of {MEMORY_BUDGET_MB:.0f} MB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
