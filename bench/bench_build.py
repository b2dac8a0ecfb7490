"""Build and analyse generated hospitals; print time and peak memory per stage.

Run: ``python bench/bench_build.py --sizes 1500,10000,100000``.

Each size runs in its own child process so peak memory (``ru_maxrss``) is
per size. Stages: generate (not counted in the build), import, resolve,
store, load, analyse. The build budget for 100,000 devices is 60 s and the
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


def run_one(devices: int, seed: int, workdir: Path) -> dict:
    from twin.analysis import run_catalogue
    from twin.graph.embedded import EmbeddedStore
    from twin.model.site import load_site
    from twin.pipeline import build
    from twin.sample import generate_site

    site_dir = workdir / f"hospital-{devices}"
    t = time.perf_counter()
    generate_site(site_dir, devices=devices, seed=seed)
    generate_s = time.perf_counter() - t

    stage_marks: dict[str, float] = {}
    memory: dict[str, float] = {}

    def on_stage(stage: str) -> None:
        stage_marks[stage] = time.perf_counter()
        memory[stage] = peak_mb()

    workspace = workdir / f"ws-{devices}.sqlite"
    t0 = time.perf_counter()
    result = build(site_dir, workspace, on_stage=on_stage)
    build_s = time.perf_counter() - t0
    build_peak = peak_mb()

    t = time.perf_counter()
    with EmbeddedStore(workspace) as store:
        twin = store.load_twin()
    load_s = time.perf_counter() - t
    site = load_site(site_dir)
    t = time.perf_counter()
    findings = run_catalogue(twin, site)
    analyse_s = time.perf_counter() - t
    return {
        "devices": devices,
        "generate_s": round(generate_s, 2),
        "import_s": round(result.timings["import"], 2),
        "resolve_s": round(result.timings["resolve"], 2),
        "store_s": round(result.timings["store"], 2),
        "build_s": round(build_s, 2),
        "load_s": round(load_s, 2),
        "analyse_s": round(analyse_s, 2),
        "build_peak_mb": round(build_peak, 1),
        "peak_mb": round(peak_mb(), 1),
        "resolved_devices": result.stats.get("devices"),
        "communications": result.stats.get("communications"),
        "findings": {name: len(frame) for name, frame in findings.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1500,10000,100000", help="Comma-separated device counts.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        print(json.dumps(run_one(args.one, args.seed, Path(args.workdir))))
        return 0

    rows = []
    with tempfile.TemporaryDirectory(prefix="twin-bench-") as tmp:
        for size in [int(s) for s in args.sizes.split(",")]:
            proc = subprocess.run(
                [sys.executable, __file__, "--one", str(size), "--seed", str(args.seed), "--workdir", tmp],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return proc.returncode
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    header = ["devices", "communications", "import_s", "resolve_s", "store_s", "build_s", "load_s", "analyse_s", "peak_mb"]
    print(" ".join(f"{h:>14}" for h in header))
    for row in rows:
        print(" ".join(f"{row[h]!s:>14}" for h in header))
    for row in rows:
        if row["devices"] >= 100_000:
            print(
                f"100k budget: build {row['build_s']} s of {BUILD_BUDGET_S:.0f} s ({row['build_s'] / BUILD_BUDGET_S:.2f}x), "
                f"analyse {row['load_s'] + row['analyse_s']:.2f} s of {ANALYSE_BUDGET_S:.0f} s, "
                f"peak {row['peak_mb']} MB of {MEMORY_BUDGET_MB:.0f} MB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
