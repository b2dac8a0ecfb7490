"""Render the hospital map in headless Chromium; print the time until each view is interactive.

Run: ``python bench/bench_map.py --sizes 1500,10000,100000``.

For each size a hospital is generated with :func:`twin.sample.generate_site`
and built in a child process. A second child loads the twin, builds two
views (the default view, and the largest segment expanded down to its
devices) and writes each one twice:

``ours``
    :func:`twin.app.mapview.render_html`: server-side layout, physics off.
``pyvis default``
    The same nodes and edges in a plain ``pyvis.network.Network()`` with
    its default options (barnesHut physics, stabilisation, no x/y) and its
    default template, with the remote references stripped the same way.

The parent loads every page from ``file://`` in Debian's headless Chromium
through Playwright and reads ``window.twinMap.readyAt``: milliseconds from
navigation start to the first frame drawn with the data, or for the
physics layout the first frame after ``stabilizationIterationsDone``.
Each wait is capped at :data:`WAIT_CAP_S`; a page that does not finish is
reported as a timeout. The goal is the default view of every size
interactive in :data:`GOAL_S` or less.
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

from twin.report.pdf import BROWSER_FLAGS

# Maximum wait for one page to become interactive (seconds, default 120).
WAIT_CAP_S = 120.0
# Goal for the default view of every size (seconds, default 2).
GOAL_S = 2.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = list(BROWSER_FLAGS)
VIEWPORT = {"width": 1400, "height": 900}


def peak_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_build(devices: int, seed: int, workdir: Path) -> dict:
    from twin.pipeline import build
    from twin.sample import generate_site

    site_dir = workdir / f"hospital-{devices}"
    generate_site(site_dir, devices=devices, seed=seed)
    result = build(site_dir, workdir / f"ws-{devices}.sqlite")
    return {"devices": devices, "resolved_devices": result.stats.get("devices"), "communications": result.stats.get("communications")}


def pyvis_default_html(view) -> str:
    """Return the view's nodes and edges in a default pyvis Network, CDN references stripped."""
    from pyvis.network import Network

    from twin.app import mapview

    net = Network(directed=True, cdn_resources="in_line")
    fonts = mapview.label_font_sizes(view.nodes)
    nodes = [mapview._vis_node(row, fonts.get(row.level, mapview.FONT_SIZE.get(row.level, 12)))
             for row in view.nodes.itertuples(index=False)]
    for node in nodes:
        del node["x"], node["y"]
    net.nodes = nodes
    net.node_ids = [node["id"] for node in nodes]
    net.edges = [mapview._vis_edge(row) for row in view.edges.itertuples(index=False)]
    html = mapview.strip_external_references(net.generate_html())
    return mapview._install_hooks(html, physics=True, select_callback=False)


def run_render(devices: int, seed: int, workdir: Path) -> dict:
    from twin.app import mapview
    from twin.graph.embedded import EmbeddedStore
    from twin.model.site import load_site

    with EmbeddedStore(workdir / f"ws-{devices}.sqlite") as store:
        twin = store.load_twin()
    site = load_site(workdir / f"hospital-{devices}")
    largest = twin.devices["segment_id"].value_counts().index[0]
    classes = sorted(twin.devices.loc[twin.devices["segment_id"] == largest, "device_class"].unique())
    views = {
        "default": [],
        "expanded": [f"segment:{largest}"] + [f"class:{largest}/{cls}" for cls in classes],
    }
    out = {"largest_segment": largest, "views": {}}
    for name, expand in views.items():
        # The first call fills the per-twin caches; the second is what a page rerun costs.
        t = time.perf_counter()
        view = mapview.build_view(twin, site, expand=expand)
        first_s = time.perf_counter() - t
        t = time.perf_counter()
        view = mapview.build_view(twin, site, expand=expand)
        again_s = time.perf_counter() - t
        t = time.perf_counter()
        ours = mapview.render_html(view)
        render_s = time.perf_counter() - t
        paths = {"ours": workdir / f"map-{devices}-{name}-ours.html", "pyvis": workdir / f"map-{devices}-{name}-pyvis.html"}
        paths["ours"].write_text(ours, encoding="utf-8")
        paths["pyvis"].write_text(pyvis_default_html(view), encoding="utf-8")
        out["views"][name] = {
            "nodes": len(view.nodes),
            "edges": len(view.edges),
            "build_view_s": round(first_s, 3),
            "build_view_again_s": round(again_s, 3),
            "render_s": round(render_s, 3),
            "files": {k: str(v) for k, v in paths.items()},
        }
    out["peak_mb"] = round(peak_mb(), 1)
    return out


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


def time_page(page, path: str) -> float | None:
    """Return seconds from navigation start until the map is interactive, or None on timeout."""
    page.goto(f"file://{path}", wait_until="commit")
    try:
        page.wait_for_function("window.twinMap && window.twinMap.ready", timeout=WAIT_CAP_S * 1000, polling=50)
    except Exception as exc:  # Playwright's TimeoutError
        if "Timeout" not in type(exc).__name__:
            raise
        return None
    return page.evaluate("window.twinMap.readyAt") / 1000.0


def measure(files: dict[str, str]) -> dict[str, float | None]:
    from playwright.sync_api import sync_playwright

    results = {}
    # Playwright starts Chromium with a fresh temporary profile of its own.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            for name, path in files.items():
                # A fresh page per file, so one page's timers cannot slow the next.
                page = browser.new_page(viewport=VIEWPORT)
                results[name] = time_page(page, path)
                page.close()
        finally:
            browser.close()
    return results


def _seconds(value: float | None) -> str:
    return "timeout" if value is None else f"{value:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1500,10000,100000", help="Comma-separated device counts.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stage", choices=("build", "render"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        run = run_build if args.stage == "build" else run_render
        print(json.dumps(run(args.one, args.seed, Path(args.workdir))))
        return 0

    rows = []
    with tempfile.TemporaryDirectory(prefix="twin-bench-map-") as tmp:
        for size in [int(s) for s in args.sizes.split(",")]:
            built = child("build", size, args.seed, tmp)
            rendered = child("render", size, args.seed, tmp)
            for name, view in rendered["views"].items():
                times = measure(view["files"])
                rows.append({"devices": built["resolved_devices"], "view": name, **view, "ours_s": times["ours"], "pyvis_s": times["pyvis"], "peak_mb": rendered["peak_mb"]})
                print(f"{size} devices, {name} view: ours {_seconds(times['ours'])} s, pyvis default {_seconds(times['pyvis'])} s", file=sys.stderr)

    header = ["devices", "view", "nodes", "edges", "build_view_s", "build_view_again_s", "render_s", "ours_s", "pyvis_s", "ratio", "peak_mb"]
    print(" ".join(f"{h:>18}" for h in header))
    for row in rows:
        ours, peer = row["ours_s"], row["pyvis_s"]
        if ours is None:
            ratio = "n/a"
        elif peer is None:
            ratio = f">{WAIT_CAP_S / ours:.1f}"
        else:
            ratio = f"{peer / ours:.1f}"
        row = {**row, "ours_s": _seconds(ours), "pyvis_s": _seconds(peer), "ratio": ratio}
        print(" ".join(f"{row[h]!s:>18}" for h in header))
    defaults = [row for row in rows if row["view"] == "default"]
    met = all(row["ours_s"] is not None and row["ours_s"] <= GOAL_S for row in defaults)
    print(f"goal: default view interactive in <= {GOAL_S:.0f} s at every size: {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
