"""Live SNMP crawl against snmpsim agents on distinct loopback addresses.

Each generated device (tests/lab/snmp_chain.py) is served by its own
snmpsim responder on 127.0.0.N, all on one UDP port, because LLDP
management addresses carry no port. Device N lists device N+1 in its LLDP
tables, so the crawl follows the chain. Expected devices, links and skips
come from the generated chain, not from the crawler.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.lab.snmp_chain import ChainDevice, device_varbinds
from tests.lab.snmpsim import Snmpsim, snmpsim_unavailable
from twin.discovery.crawl import run_crawl
from twin.discovery.snmp_live import write_snmprec
from twin.graph.embedded import EmbeddedStore
from twin.model.site import parse_site
from twin.pipeline import build

pytestmark = pytest.mark.skipif(snmpsim_unavailable() is not None, reason=f"snmpsim unavailable: {snmpsim_unavailable()}")

COMMUNITY = "crawl"
COMMUNITY_ENV = "TWIN_CRAWL_TEST_COMMUNITY"
OUTSIDE_ADDRESS = "10.231.9.9"
EXCLUDED_ADDRESS = "127.0.0.200"

SITE = f"""\
site: {{name: Crawl Lab}}
discovery:
  scopes: [127.0.0.0/24]
  exclude: [127.0.0.192/26]
  snmp:
    seeds: ["SEED"]
    port: PORT
    depth: DEPTH
    timeout_s: 0.5
    retries: 0
credentials:
  snmp: {{version: 2c, community_env: {COMMUNITY_ENV}}}
"""


def shared_port(addresses: list[str]) -> int:
    """Return a UDP port that was free on every address a moment ago."""
    for _ in range(20):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind((addresses[0], 0))
        port = probe.getsockname()[1]
        sockets = [probe]
        try:
            for address in addresses[1:]:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind((address, port))
            return port
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no UDP port free on all of {addresses} after 20 tries")


def make_chain(first: int, count: int) -> list[ChainDevice]:
    devices = [ChainDevice(f"lab-sw{i}", i, f"127.0.0.{i}") for i in range(first, first + count)]
    for left, right in zip(devices, devices[1:]):
        left.neighbours.append(right.neighbour_entry(2, 1))
        right.neighbours.append(left.neighbour_entry(1, 2))
    return devices


class Agents:
    """One snmpsim responder per device, each on its own loopback address and the same port.

    ``snmpsim_options`` go to every :class:`Snmpsim` (a v3 user, an engine id).
    """

    def __init__(self, devices: list[ChainDevice], data_root: Path, **snmpsim_options):
        self.devices = devices
        self.port = shared_port([d.address for d in devices])
        self.stack = ExitStack()
        self.servers: dict[str, Snmpsim] = {}
        for device in devices:
            folder = data_root / device.name
            folder.mkdir(parents=True)
            write_snmprec(device_varbinds(device), folder / f"{COMMUNITY}.snmprec")
            self.servers[device.name] = Snmpsim(folder, [self.port], host=device.address, **snmpsim_options)

    def __enter__(self) -> "Agents":
        try:
            for server in self.servers.values():
                self.stack.enter_context(server)
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stack.close()


def lab_chain(first: int, count: int) -> list[ChainDevice]:
    """A chain whose head also lists a neighbour outside the scope and one in an excluded prefix."""
    devices = make_chain(first, count)
    outside = ChainDevice("far-router", 90, OUTSIDE_ADDRESS, capabilities=("router",))
    excluded = ChainDevice("excluded-sw", 91, EXCLUDED_ADDRESS)
    devices[0].neighbours += [outside.neighbour_entry(3), excluded.neighbour_entry(4)]
    return devices


@pytest.fixture(scope="module")
def chain_agents(tmp_path_factory):
    devices = lab_chain(2, 4)
    with Agents(devices, tmp_path_factory.mktemp("snmpsim")) as agents:
        yield agents


@pytest.fixture
def community(monkeypatch):
    monkeypatch.setenv(COMMUNITY_ENV, COMMUNITY)


def site_dir_for(path: Path, agents: Agents, depth: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    text = SITE.replace("SEED", agents.devices[0].address).replace("PORT", str(agents.port)).replace("DEPTH", str(depth))
    (path / "site.yaml").write_text(text, encoding="utf-8")
    return path


def load_site_dir(site_dir: Path):
    return parse_site((site_dir / "site.yaml").read_text(encoding="utf-8"), str(site_dir / "site.yaml"))


class Listener:
    """A UDP socket on an address the crawl must never contact; counts what arrives."""

    def __init__(self, address: str, port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, port))
        self.sock.setblocking(False)

    def received(self) -> int:
        count = 0
        for _ in range(1000):
            try:
                self.sock.recv(65535)
            except BlockingIOError:
                break
            count += 1
        return count

    def close(self) -> None:
        self.sock.close()


def hostnames(twin) -> set[str]:
    return {name for name in twin.devices["hostname"] if name}


def link_ports(twin) -> set[frozenset]:
    names = dict(zip(twin.devices["device_id"], twin.devices["hostname"]))
    return {
        frozenset({(names.get(a), a_port), (names.get(b), b_port)})
        for a, a_port, b, b_port in zip(
            twin.links["a_device_id"], twin.links["a_if_name"], twin.links["b_device_id"], twin.links["b_if_name"]
        )
    }


def expected_links(devices: list[ChainDevice]) -> set[frozenset]:
    return {
        frozenset({(left.name, "eth2"), (right.name, "eth1")})
        for left, right in zip(devices, devices[1:])
    }


def test_crawl_follows_chain_to_depth(chain_agents, community, tmp_path):
    site = load_site_dir(site_dir_for(tmp_path / "site", chain_agents, depth=2))
    result = run_crawl(site)
    devices = chain_agents.devices
    port = chain_agents.port
    assert [walk.target for walk in result.walks] == [f"{d.address}:{port}" for d in devices[:3]]
    assert all(walk.answered for walk in result.walks)
    assert [r.path for r in result.results] == [f"snmp://{d.address}:{port}" for d in devices[:3]]
    skipped = {target.split(" ")[0]: reason for target, reason in result.skipped}
    assert "beyond depth 2" in skipped[f"{devices[3].address}:{port}"]


def test_crawl_never_contacts_refused_neighbours(chain_agents, community, tmp_path):
    site = load_site_dir(site_dir_for(tmp_path / "site", chain_agents, depth=3))
    listener = Listener(EXCLUDED_ADDRESS, chain_agents.port)
    try:
        result = run_crawl(site)
        arrived = listener.received()
    finally:
        listener.close()
    assert arrived == 0
    walked = {walk.host for walk in result.walks}
    assert walked == {d.address for d in chain_agents.devices}
    assert OUTSIDE_ADDRESS not in walked
    assert EXCLUDED_ADDRESS not in walked
    skipped = {target.split(" ")[0]: reason for target, reason in result.skipped}
    assert "outside every discovery scope" in skipped[f"{OUTSIDE_ADDRESS}:{chain_agents.port}"]
    assert "excluded prefix 127.0.0.192/26" in skipped[f"{EXCLUDED_ADDRESS}:{chain_agents.port}"]


def test_record_replay_builds_same_twin(chain_agents, community, tmp_path):
    live_site = site_dir_for(tmp_path / "live", chain_agents, depth=3)
    replay_site = site_dir_for(tmp_path / "replay", chain_agents, depth=3)
    record_dir = tmp_path / "recordings"
    result = run_crawl(load_site_dir(live_site), record_dir=record_dir)
    assert len(result.recorded) == len(chain_agents.devices)

    live = build(live_site, tmp_path / "live.sqlite", extra_results=result.results, live_crawl=True)
    shutil.copytree(record_dir, replay_site / "snmp", copy_function=shutil.copy2)
    replay = build(replay_site, tmp_path / "replay.sqlite")

    with EmbeddedStore(tmp_path / "live.sqlite") as store:
        live_twin = store.load_twin(live.run_id)
    with EmbeddedStore(tmp_path / "replay.sqlite") as store:
        replay_twin = store.load_twin(replay.run_id)

    devices = chain_agents.devices
    assert {d.name for d in devices} <= hostnames(live_twin)
    assert link_ports(live_twin) >= expected_links(devices)
    for table in ("devices", "interfaces", "links"):
        assert len(live_twin.tables[table]) > 0, table
        assert table_rows(live_twin, table) == table_rows(replay_twin, table), table


def table_rows(twin, table: str) -> list[str]:
    """Return a table's rows without the run id, as sorted text, so row order does not matter."""
    records = twin.tables[table].drop(columns=["run_id"]).to_dict("records")
    return sorted(repr(sorted(record.items())) for record in records)


def test_cli_crawl_then_stale_without_agent(community, tmp_path):
    devices = make_chain(12, 3)
    runner = CliRunner()
    from twin.cli.main import app

    with Agents(devices, tmp_path / "agents") as agents:
        site_dir = site_dir_for(tmp_path / "site", agents, depth=3)
        workspace = tmp_path / "ws.sqlite"
        first = runner.invoke(app, ["discover", "snmp", "--site", str(site_dir), "-w", str(workspace)])
        assert first.exit_code == 0, first.output
        assert f"{len(devices)} devices tried, {len(devices)} answered," in first.output
        with EmbeddedStore(workspace) as store:
            twin = store.load_twin()
        assert {d.name for d in devices} <= hostnames(twin)
        assert not any(twin.devices["stale"])

        # The middle device stops; the one behind it is reached only through it.
        agents.servers[devices[1].name].stop()
        second = runner.invoke(app, ["discover", "snmp", "--site", str(site_dir), "-w", str(workspace)])
        assert second.exit_code == 1, second.output
        assert f"{devices[1].address}:{agents.port}: NOT WALKED: no answer" in second.output
        assert "2 devices tried, 1 answered," in second.output
        # The hint on unanswered devices comes after the issues it explains.
        assert second.output.index("issue (") < second.output.index("hint:")

    with EmbeddedStore(workspace) as store:
        twin = store.load_twin()
    stale = {name for name, flag in zip(twin.devices["hostname"], twin.devices["stale"]) if flag}
    assert stale == {devices[1].name, devices[2].name}
    assert {d.name for d in devices} <= hostnames(twin)
    assert link_ports(twin) >= expected_links(devices)


def test_snmpbulkwalk_sees_same_neighbours(chain_agents):
    # net-snmp reads the generated LLDP management addresses from the agent,
    # so the chain served is the chain the other tests expect.
    head = chain_agents.devices[0]
    completed = subprocess.run(
        ["snmpbulkwalk", "-v2c", "-c", COMMUNITY, "-On", "-t", "2", "-r", "1",
         f"{head.address}:{chain_agents.port}", "1.0.8802.1.1.2.1.4.2.1"],
        capture_output=True, text=True, timeout=30, env={**os.environ, "MIBS": ""},
    )
    assert completed.returncode == 0, completed.stderr
    listed = {".".join(line.split(" ")[0].split(".")[-4:]) for line in completed.stdout.splitlines() if line.strip()}
    assert listed == {devices_address for devices_address in (chain_agents.devices[1].address, OUTSIDE_ADDRESS, EXCLUDED_ADDRESS)}


V3_USER = "crawl-monitor"
V3_AUTH_KEY = "crawl-auth-key-1"
V3_PRIV_KEY = "crawl-priv-key-1"
SHARED_ENGINE_ID = "80001f8880c0ffee0000000001"


def test_shared_engine_id_warns_both_kept(monkeypatch, tmp_path):
    # Two agents cloned with one SNMPv3 engine id, crawled with SNMPv3 authPriv first as in the sample site.
    devices = make_chain(30, 2)
    monkeypatch.setenv("TWIN_CRAWL_TEST_AUTH", V3_AUTH_KEY)
    monkeypatch.setenv("TWIN_CRAWL_TEST_PRIV", V3_PRIV_KEY)
    monkeypatch.setenv(COMMUNITY_ENV, "wrong-community")
    options = {"v3_user": V3_USER, "v3_auth_key": V3_AUTH_KEY, "v3_priv_key": V3_PRIV_KEY, "engine_id": SHARED_ENGINE_ID}
    with Agents(devices, tmp_path / "agents", **options) as agents:
        site_dir = site_dir_for(tmp_path / "site", agents, depth=1)
        text = (site_dir / "site.yaml").read_text().replace(
            f"  snmp: {{version: 2c, community_env: {COMMUNITY_ENV}}}",
            "  snmp:\n"
            f"    - {{version: 3, user: {V3_USER}, auth_protocol: sha256, auth_key_env: TWIN_CRAWL_TEST_AUTH,"
            f" priv_protocol: aes128, priv_key_env: TWIN_CRAWL_TEST_PRIV, context: {COMMUNITY}}}\n"
            f"    - {{version: 2c, community_env: {COMMUNITY_ENV}}}",
        )
        (site_dir / "site.yaml").write_text(text)
        result = run_crawl(load_site_dir(site_dir))

    targets = [f"{d.address}:{agents.port}" for d in devices]
    assert [walk.target for walk in result.walks] == targets
    assert [walk.version for walk in result.walks] == ["3", "3"]
    assert [walk.engine_id.hex() for walk in result.walks] == [SHARED_ENGINE_ID, SHARED_ENGINE_ID]
    assert len(result.results) == 2
    assert len(result.warnings) == 1
    for target in targets:
        assert target in result.warnings[0]
