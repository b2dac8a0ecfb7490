"""End-to-end: `twin app` on 127.0.0.1 driven by Debian's headless Chromium through Playwright.

Loads the map (waits for vis-network to draw its canvas), the attack paths
page and the simulation page, runs one simulation of the sample hospital's
proposed policy and checks the result metrics. Screenshots go to a
temporary folder, and to docs/images/app-*.png when
TWIN_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from twin.api import WORKSPACE_ENV, Workspace
from twin.report.pdf import BROWSER_FLAGS

REPO = Path(__file__).resolve().parents[2]
HOSPITAL = REPO / "sample_networks" / "hospital"
CHROMIUM = Path("/usr/bin/chromium")
IMAGES = REPO / "docs" / "images"
CHROMIUM_FLAGS = list(BROWSER_FLAGS)
# Seconds to wait for the server's health check, and for one page element.
START_TIMEOUT = 60
ELEMENT_TIMEOUT_MS = 60_000

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent; scripts/install-system-deps.sh installs it")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _twin_command() -> list[str]:
    script = Path(sys.executable).parent / "twin"
    if script.exists():
        return [str(script)]
    found = shutil.which("twin")
    if found is None:
        pytest.skip("the twin console script is not installed (pip install -e .)")
    return [found]


def _wait_healthy(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"twin app exited with code {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} not healthy after {START_TIMEOUT} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("browser")
    workspace = workdir / "hospital.sqlite"
    Workspace(workspace).build(HOSPITAL)
    port = _free_port()
    log = open(workdir / "server.log", "wb")
    proc = subprocess.Popen(
        [*_twin_command(), "app", "-w", str(workspace), "--port", str(port), "--address", "127.0.0.1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, WORKSPACE_ENV: str(workspace)},
    )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/_stcore/health", proc)
        yield f"http://127.0.0.1:{port}", workdir
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        log.close()


# URL schemes that never reach the network (inline images, the srcdoc frame).
LOCAL_SCHEMES = ("data", "blob", "about")


def _is_loopback(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in LOCAL_SCHEMES or parts.hostname == "127.0.0.1"


@pytest.fixture(scope="module")
def requests_seen() -> list[str]:
    """Every URL the browser requested, in order (filled by the browser_page fixture)."""
    return []


@pytest.fixture(autouse=True)
def no_external_requests(requests_seen):
    """Fail a test when its pages requested anything but the loopback server."""
    start = len(requests_seen)
    yield
    external = [url for url in requests_seen[start:] if not _is_loopback(url)]
    assert not external, f"requests outside 127.0.0.1: {external[:5]}"


@pytest.fixture(scope="module")
def browser_page(server, tmp_path_factory, requests_seen):
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1500, "height": 1000},
        )
        context.on("request", lambda request: requests_seen.append(request.url))
        try:
            yield context.new_page()
        finally:
            context.close()


def _save(page, name: str, shots: Path) -> None:
    page.screenshot(path=str(shots / name))
    if os.environ.get("TWIN_UPDATE_SCREENSHOTS") == "1":
        IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shots / name, IMAGES / name)


def _map_frame(page):
    """Return the map's frame once vis-network has drawn nodes on its canvas."""
    page.wait_for_selector("iframe", timeout=ELEMENT_TIMEOUT_MS)
    page.frame_locator("iframe").first.locator("canvas").first.wait_for(timeout=ELEMENT_TIMEOUT_MS)
    frame = next(f for f in page.frames if f.url == "about:srcdoc")
    frame.wait_for_function(
        "() => typeof network !== 'undefined' && Object.keys(network.body.nodes).length > 0",
        timeout=ELEMENT_TIMEOUT_MS,
    )
    return frame


def _open_map(page, base: str):
    page.goto(f"{base}/", timeout=ELEMENT_TIMEOUT_MS)
    try:
        return _map_frame(page)
    except Exception:  # noqa: BLE001 - the first load after a start can be blank; retry once
        page.reload(timeout=ELEMENT_TIMEOUT_MS)
        return _map_frame(page)


def _scroll_to(locator) -> None:
    """Scroll the page so the element is at the top of the screenshot."""
    locator.evaluate("element => element.scrollIntoView({block: 'start'})")


def _metric(page, label: str) -> str:
    metric = page.locator('[data-testid="stMetric"]', has_text=label).first
    return metric.locator('[data-testid="stMetricValue"]').inner_text().strip()


def test_map_draws(server, browser_page):
    base, workdir = server
    frame = _open_map(browser_page, base)
    drawn = frame.evaluate("() => Object.keys(network.body.nodes).length")
    assert drawn > 10
    # Every script the map needs is inline: no request left the loopback server.
    assert frame.evaluate("() => Array.from(document.scripts).filter(s => s.src).length") == 0
    time.sleep(1)
    _save(browser_page, "app-map.png", workdir)


def test_map_at_map_path(server, browser_page):
    base, _ = server
    browser_page.goto(f"{base}/map", timeout=ELEMENT_TIMEOUT_MS)
    frame = _map_frame(browser_page)
    assert frame.evaluate("() => Object.keys(network.body.nodes).length") > 10
    assert browser_page.get_by_text("Page not found").count() == 0


def test_attack_paths_page(server, browser_page):
    base, workdir = server
    browser_page.goto(f"{base}/attack-paths", timeout=ELEMENT_TIMEOUT_MS)
    browser_page.get_by_text("Shortest paths").first.wait_for(timeout=ELEMENT_TIMEOUT_MS)
    _map_frame(browser_page)
    assert int(_metric(browser_page, "Paths")) > 0
    _scroll_to(browser_page.get_by_text("On the map").first)
    time.sleep(1)
    _save(browser_page, "app-attack-paths.png", workdir)


def test_simulation_runs(server, browser_page):
    base, workdir = server
    truth = yaml.safe_load((HOSPITAL / "ground_truth.yaml").read_text())["simulation"]
    page = browser_page
    page.goto(f"{base}/simulation", timeout=ELEMENT_TIMEOUT_MS)
    page.locator('input[type="file"]').first.set_input_files(str(HOSPITAL / "proposed_policy.yaml"), timeout=ELEMENT_TIMEOUT_MS)
    page.get_by_text("rules from proposed_policy.yaml").first.wait_for(timeout=ELEMENT_TIMEOUT_MS)
    page.get_by_role("button", name="Simulate", exact=True).click()
    page.locator('[data-testid="stMetric"]', has_text="Newly blocked flows").first.wait_for(timeout=ELEMENT_TIMEOUT_MS)
    assert _metric(page, "Newly blocked flows") == str(len(truth["newly_blocked"]))
    assert _metric(page, "Newly allowed flows") == str(len(truth["newly_allowed"]))
    assert _metric(page, "Violations resolved") == str(len(truth["violations_resolved"]))
    assert _metric(page, "Violations introduced") == str(len(truth["violations_introduced"]))
    _scroll_to(page.get_by_text("Result", exact=True).first)
    time.sleep(1)
    _save(page, "app-simulation.png", workdir)
