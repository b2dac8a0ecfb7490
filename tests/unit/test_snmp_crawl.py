"""SNMP crawl graph logic: traversal, scope decisions, deduplication, recording, stale devices.

The walks come from generated device tables (tests/lab/snmp_chain.py),
handed to the crawler through its ``walk`` parameter, so nothing is sent.
The integration test runs the same crawl against snmpsim agents.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.lab.snmp_chain import ChainDevice, device_varbinds
from twin.discovery import snmp
from twin.discovery.crawl import COLLECTOR, live_origin, record_path, run_crawl, target_text
from twin.discovery.snmp_live import WALK_ROOTS, SnmpCredentials, WalkResult
from twin.graph.embedded import EmbeddedStore
from twin.model.observation import Kind
from twin.model.site import parse_site
from twin.pipeline import build

CREDENTIALS = [SnmpCredentials(name="v2c test", version="2c", community="crawl-unit-secret")]

SITE = """\
site: {name: Crawl Unit}
discovery:
  scopes: [10.231.0.0/24]
  exclude: [10.231.0.128/25]
  do_not_probe: {addresses: [10.231.0.66]}
  snmp:
    seeds: [10.231.0.1]
    depth: DEPTH
    crawl_capabilities: [bridge, router]
credentials:
  snmp: {version: 2c, community_env: TWIN_TEST_COMMUNITY}
"""


def site_config(depth: int = 2, **replace: str):
    text = SITE.replace("DEPTH", str(depth))
    for old, new in replace.items():
        text = text.replace(old, new)
    return parse_site(text, "site.yaml")


class RecordedWalks:
    """Walk function that returns walks of generated device tables and records every call."""

    def __init__(
        self,
        devices: list[ChainDevice],
        engine_ids: dict[str, bytes] | None = None,
        port: int = 161,
        cut: dict[str, list[str]] | None = None,
    ):
        self.devices = {(device.address, port): device for device in devices}
        self.engine_ids = engine_ids or {}
        # Tables each host's walk reports as not finished.
        self.cut = cut or {}
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host, port, credentials, settings) -> WalkResult:
        self.calls.append((host, port))
        device = self.devices.get((host, port))
        now = time.time()
        return WalkResult(
            host=host,
            port=port,
            target=target_text(host, port),
            answered=device is not None,
            credentials=credentials[0].name if device is not None else None,
            version="2c" if device is not None else None,
            engine_id=self.engine_ids.get(host),
            varbinds=device_varbinds(device) if device is not None else [],
            issues=[],
            started_at=now,
            finished_at=now,
            complete={name: name not in self.cut.get(host, []) for name, _ in WALK_ROOTS},
        )


def chain(count: int, first: int = 1) -> list[ChainDevice]:
    """Return devices 10.231.0.<first..> where device i lists device i+1 on port 2 and i-1 on port 1."""
    devices = [ChainDevice(f"sw{i}", i, f"10.231.0.{i}") for i in range(first, first + count)]
    for left, right in zip(devices, devices[1:]):
        left.neighbours.append(right.neighbour_entry(2, 1))
        right.neighbours.append(left.neighbour_entry(1, 2))
    return devices


def crawl_with(site, walks, **options):
    return run_crawl(site, credentials=CREDENTIALS, walk=walks, **options)


def walked_addresses(walks: RecordedWalks) -> list[str]:
    return [host for host, _ in walks.calls]


# ---------------------------------------------------------------------------
# Traversal


def test_chain_walked_to_depth():
    devices = chain(5)
    walks = RecordedWalks(devices)
    result = crawl_with(site_config(depth=2), walks)
    assert walked_addresses(walks) == [d.address for d in devices[:3]]
    assert [r.path for r in result.results] == [live_origin(f"{d.address}:161") for d in devices[:3]]
    skipped = dict(result.skipped)
    fourth = next(target for target in skipped if target.startswith(f"{devices[3].address}:161 "))
    assert "beyond depth 2" in skipped[fourth]
    assert not any(target.startswith(devices[4].address) for target in skipped)


def test_depth_zero_walks_seeds_only():
    devices = chain(3)
    walks = RecordedWalks(devices)
    result = crawl_with(site_config(depth=0), walks)
    assert walked_addresses(walks) == [devices[0].address]
    assert len(result.results) == 1
    assert any("beyond depth 0" in reason for _, reason in result.skipped)


def test_depth_override_beats_site():
    devices = chain(4)
    walks = RecordedWalks(devices)
    crawl_with(site_config(depth=0), walks, depth=3)
    assert walked_addresses(walks) == [d.address for d in devices]


def test_breadth_first_order():
    # sw1 lists sw2 and sw3; sw2 lists sw4; sw3 lists sw5: level by level.
    devices = {i: ChainDevice(f"sw{i}", i, f"10.231.0.{i}") for i in range(1, 6)}
    devices[1].neighbours += [devices[2].neighbour_entry(2), devices[3].neighbour_entry(3)]
    devices[2].neighbours.append(devices[4].neighbour_entry(2))
    devices[3].neighbours.append(devices[5].neighbour_entry(2))
    walks = RecordedWalks(list(devices.values()))
    crawl_with(site_config(depth=4), walks)
    assert walked_addresses(walks) == [f"10.231.0.{i}" for i in (1, 2, 3, 4, 5)]


def test_ring_walks_each_device_once():
    devices = chain(3)
    devices[2].neighbours.append(devices[0].neighbour_entry(3))
    devices[0].neighbours.append(devices[2].neighbour_entry(3))
    walks = RecordedWalks(devices)
    result = crawl_with(site_config(depth=5), walks)
    assert sorted(walked_addresses(walks)) == sorted(d.address for d in devices)
    assert len(walks.calls) == 3
    assert len(result.results) == 3


def test_unanswered_device_listed():
    devices = chain(2)
    walks = RecordedWalks(devices[:1])  # sw2 does not respond
    result = crawl_with(site_config(), walks)
    assert [walk.target for walk in result.unanswered] == [f"{devices[1].address}:161"]
    assert len(result.results) == 1


# ---------------------------------------------------------------------------
# Scope and capability decisions


def test_neighbours_outside_scope_not_walked():
    seed = ChainDevice("sw1", 1, "10.231.0.1")
    outside = ChainDevice("far", 2, "10.99.0.5")
    excluded = ChainDevice("excl", 3, "10.231.0.200")
    do_not_probe = ChainDevice("fragile", 4, "10.231.0.66")
    public = ChainDevice("public", 5, "8.8.8.8")
    metadata = ChainDevice("meta", 6, "169.254.169.254")
    inside = ChainDevice("sw7", 7, "10.231.0.7")
    rejected = [outside, excluded, do_not_probe, public, metadata]
    for port, device in enumerate(rejected + [inside], start=1):
        seed.neighbours.append(device.neighbour_entry(port))
    walks = RecordedWalks([seed, inside, *rejected])
    result = crawl_with(site_config(), walks)

    assert walked_addresses(walks) == [seed.address, inside.address]
    reasons = {target.split(" ")[0]: reason for target, reason in result.skipped}
    assert "outside every discovery scope" in reasons["10.99.0.5:161"]
    assert "excluded prefix 10.231.0.128/25" in reasons["10.231.0.200:161"]
    assert "do_not_probe" in reasons["10.231.0.66:161"]
    assert "outside every discovery scope" in reasons["8.8.8.8:161"]
    assert "metadata" in reasons["169.254.169.254:161"]


def test_seed_outside_scope_rejected():
    devices = chain(1)
    walks = RecordedWalks(devices)
    result = crawl_with(site_config(), walks, seeds=["10.231.0.1", "192.168.7.1", "10.231.0.200:1161"])
    assert walks.calls == [("10.231.0.1", 161)]
    rejected = dict(result.skipped)
    assert "outside every discovery scope" in rejected["192.168.7.1"]
    assert "excluded prefix" in rejected["10.231.0.200:1161"]


def test_seed_port_kept():
    device = ChainDevice("sw1", 1, "10.231.0.1")
    walks = RecordedWalks([device], port=1161)
    result = crawl_with(site_config(), walks, seeds=["10.231.0.1:1161"])
    assert walks.calls == [("10.231.0.1", 1161)]
    assert result.results[0].path == "snmp://10.231.0.1:1161"


def test_capability_not_crawled():
    seed = ChainDevice("sw1", 1, "10.231.0.1")
    phone = ChainDevice("phone", 2, "10.231.0.2", capabilities=("telephone", "station"))
    access_point = ChainDevice("ap", 3, "10.231.0.3", capabilities=("wlan",))
    router = ChainDevice("rt", 4, "10.231.0.4", capabilities=("router",))
    for port, device in enumerate((phone, access_point, router), start=1):
        seed.neighbours.append(device.neighbour_entry(port))
    walks = RecordedWalks([seed, phone, access_point, router])
    result = crawl_with(site_config(), walks)
    assert walked_addresses(walks) == [seed.address, router.address]
    reasons = {target.split(" ")[0]: reason for target, reason in result.skipped}
    assert "telephone, station" in reasons["10.231.0.2:161"]
    assert "wlan" in reasons["10.231.0.3:161"]


def test_capability_list_from_site():
    seed = ChainDevice("sw1", 1, "10.231.0.1")
    access_point = ChainDevice("ap", 3, "10.231.0.3", capabilities=("wlan",))
    seed.neighbours.append(access_point.neighbour_entry(1))
    walks = RecordedWalks([seed, access_point])
    site = site_config(**{"crawl_capabilities: [bridge, router]": "crawl_capabilities: [wlan-access-point]"})
    crawl_with(site, walks)
    assert walked_addresses(walks) == [seed.address, access_point.address]


def test_neighbour_without_address_placed_only():
    seed = ChainDevice("sw1", 1, "10.231.0.1")
    hidden = ChainDevice("hidden", 2, "10.231.0.2")
    entry = hidden.neighbour_entry(1)
    seed.neighbours.append(type(entry)(entry.local_port, entry.name, entry.mac, None, entry.capabilities))
    walks = RecordedWalks([seed, hidden])
    result = crawl_with(site_config(), walks)
    assert walked_addresses(walks) == [seed.address]
    assert any("no management address" in reason for _, reason in result.skipped)
    neighbours = [o for o in result.results[0].observations if o.kind == Kind.NEIGHBOR]
    assert [o.attrs["remote_sys_name"] for o in neighbours] == ["hidden"]


# ---------------------------------------------------------------------------
# Deduplication and engine ids


def test_same_chassis_two_addresses_kept_once():
    first = ChainDevice("sw1", 1, "10.231.0.1")
    second_address = ChainDevice("sw1", 1, "10.231.0.11")  # same chassis MAC, other address
    walks = RecordedWalks([first, second_address])
    result = crawl_with(site_config(), walks, seeds=["10.231.0.1", "10.231.0.11"])
    assert len(walks.calls) == 2
    assert len(result.results) == 1
    reason = dict(result.skipped)["10.231.0.11:161"]
    assert "same LLDP chassis id" in reason
    assert "10.231.0.1:161" in reason


def test_known_chassis_not_walked_again():
    # sw2 lists sw1 under a second management address: sw1's chassis id is known.
    devices = chain(2)
    entry = devices[0].neighbour_entry(1)
    devices[1].neighbours = [type(entry)(entry.local_port, entry.name, entry.mac, "10.231.0.21", entry.capabilities)]
    walks = RecordedWalks(devices)
    crawl_with(site_config(), walks)
    assert walked_addresses(walks) == ["10.231.0.1", "10.231.0.2"]


def test_shared_engine_id_warns_keeps_both():
    devices = chain(2)
    engine = bytes.fromhex("80001f8880aabbccdd")
    walks = RecordedWalks(devices, engine_ids={d.address: engine for d in devices})
    result = crawl_with(site_config(), walks)
    assert len(result.results) == 2
    assert len(result.warnings) == 1
    assert "10.231.0.1:161" in result.warnings[0]
    assert "10.231.0.2:161" in result.warnings[0]
    assert engine.hex() in result.warnings[0]


# ---------------------------------------------------------------------------
# Provenance and recording


def test_observations_carry_provenance():
    devices = chain(1)
    result = crawl_with(site_config(), RecordedWalks(devices), run_id="crawl-test-1")
    observations = result.results[0].observations
    assert observations
    for observation in observations:
        assert observation.origin == "snmp://10.231.0.1:161"
        assert observation.source == snmp.SOURCE
        assert observation.evidence["collector"] == COLLECTOR
        assert observation.evidence["crawl_run_id"] == "crawl-test-1"
        assert observation.evidence["target"] == "10.231.0.1:161"


def test_record_writes_one_file_per_device(tmp_path):
    devices = chain(3)
    walks = RecordedWalks(devices[:2])
    result = crawl_with(site_config(), walks, record_dir=tmp_path / "rec", run_id="crawl-rec-1")
    expected = [record_path(tmp_path / "rec", d.address, 161) for d in devices[:2]]
    assert result.recorded == expected
    assert sorted((tmp_path / "rec").iterdir()) == sorted(expected)
    for device, path, live in zip(devices, expected, result.results):
        text = path.read_text()
        assert f"# target: {device.address}:161" in text
        assert "# run id: crawl-rec-1" in text
        assert "crawl-unit-secret" not in text
        replay = snmp.import_file(path)
        assert [(o.kind, o.attrs, o.subject, o.seen_at) for o in replay.observations] == [
            (o.kind, o.attrs, o.subject, o.seen_at) for o in live.observations
        ]


def test_record_marks_cut_walk(tmp_path):
    devices = chain(2)
    walks = RecordedWalks(devices, cut={devices[1].address: ["ifTable", "ipNetToMediaTable"]})
    result = crawl_with(site_config(), walks, record_dir=tmp_path / "rec")
    whole, cut = result.recorded

    assert "# incomplete:" not in whole.read_text()
    assert "# incomplete: ifTable, ipNetToMediaTable" in cut.read_text()
    assert snmp.import_file(whole).issues == []
    issues = snmp.import_file(cut).issues
    assert len(issues) == 1
    assert "did not finish 2 tables" in issues[0].message
    assert f"{devices[1].address}:161" in issues[0].message
    assert "ifTable, ipNetToMediaTable" in issues[0].message


def test_missing_credentials_config_error(monkeypatch):
    from twin.exceptions import ConfigError

    monkeypatch.delenv("TWIN_TEST_COMMUNITY", raising=False)
    with pytest.raises(ConfigError, match="TWIN_TEST_COMMUNITY"):
        run_crawl(site_config(), walk=RecordedWalks(chain(1)))


# ---------------------------------------------------------------------------
# Stale devices across builds


def _site_dir(tmp_path: Path, depth: int = 3) -> Path:
    site_dir = tmp_path / "site"
    site_dir.mkdir(exist_ok=True)
    (site_dir / "site.yaml").write_text(SITE.replace("DEPTH", str(depth)), encoding="utf-8")
    return site_dir


def _build_crawl(site_dir: Path, workspace: Path, devices: list[ChainDevice]):
    site = parse_site((site_dir / "site.yaml").read_text(), str(site_dir / "site.yaml"))
    crawl = crawl_with(site, RecordedWalks(devices))
    return crawl, build(site_dir, workspace, extra_results=crawl.results, live_crawl=True)


def _devices_by_name(workspace: Path):
    with EmbeddedStore(workspace) as store:
        devices = store.load_twin().devices
    return {row.hostname: row for row in devices.itertuples() if row.hostname}, devices


def test_stale_carry_forward_two_builds(tmp_path):
    site_dir = _site_dir(tmp_path)
    workspace = tmp_path / "ws.sqlite"
    devices = chain(3)
    host_mac = "02:aa:00:00:00:07"
    devices[2].fdb[host_mac] = 3

    _, first = _build_crawl(site_dir, workspace, devices)
    by_name, table = _devices_by_name(workspace)
    assert {"sw1", "sw2", "sw3"} <= set(by_name)
    assert not any(table["stale"])
    first_seen_sw3 = by_name["sw3"].last_seen

    # Second crawl: sw3 stops responding, though sw2 still lists it in LLDP.
    walks_second = devices[:2]
    _, second = _build_crawl(site_dir, workspace, walks_second)
    by_name, table = _devices_by_name(workspace)
    assert by_name["sw3"].stale
    assert not by_name["sw1"].stale
    assert not by_name["sw2"].stale
    host = [row for row in table.itertuples() if host_mac in row.macs]
    assert len(host) == 1
    assert host[0].stale
    assert second.stats["stale_devices"] == 2
    with EmbeddedStore(workspace) as store:
        carried = store.conn.execute(
            "SELECT DISTINCT seen_at FROM observations WHERE run_id=? AND origin=?",
            (second.run_id, "snmp://10.231.0.3:161"),
        ).fetchall()
    assert carried == [(first_seen_sw3,)]

    # Third crawl: sw3 responds again and is no longer stale.
    _, third = _build_crawl(site_dir, workspace, devices)
    by_name, table = _devices_by_name(workspace)
    assert not any(table["stale"])
    assert third.stats["stale_devices"] == 0


def test_stale_persists_while_absent(tmp_path):
    site_dir = _site_dir(tmp_path)
    workspace = tmp_path / "ws.sqlite"
    devices = chain(3)
    _build_crawl(site_dir, workspace, devices)
    _build_crawl(site_dir, workspace, devices[:1])
    _build_crawl(site_dir, workspace, devices[:1])
    by_name, _ = _devices_by_name(workspace)
    assert by_name["sw2"].stale
    assert by_name["sw3"].stale
    assert not by_name["sw1"].stale


def test_device_moved_address_not_stale(tmp_path):
    site_dir = _site_dir(tmp_path)
    workspace = tmp_path / "ws.sqlite"
    devices = chain(2)
    _build_crawl(site_dir, workspace, devices)
    moved = chain(2)
    moved[1].address = "10.231.0.12"
    moved[0].neighbours = [moved[1].neighbour_entry(2, 1)]
    _, second = _build_crawl(site_dir, workspace, moved)
    by_name, table = _devices_by_name(workspace)
    assert not any(table["stale"])
    assert second.stats["carried_observations"] == 0


def test_file_build_keeps_last_crawl(tmp_path):
    # A plain rebuild of the site files must not drop what the last crawl
    # found, and must not refresh a device that crawl had marked stale.
    site_dir = _site_dir(tmp_path)
    workspace = tmp_path / "ws.sqlite"
    devices = chain(3)
    _build_crawl(site_dir, workspace, devices)
    _build_crawl(site_dir, workspace, devices[:2])
    before, _ = _devices_by_name(workspace)
    assert before["sw3"].stale

    result = build(site_dir, workspace)
    after, table = _devices_by_name(workspace)
    assert set(after) == set(before)
    assert after["sw3"].stale
    assert not after["sw1"].stale
    assert not after["sw2"].stale
    assert result.stats["stale_devices"] == sum(bool(flag) for flag in table["stale"])
    assert result.stats["carried_observations"] > 0


def test_recording_in_site_not_doubled(tmp_path):
    # The README's workflow: crawl with --record into the site folder, then
    # a plain build. The build reads the recordings and must not also carry
    # the same walks forward from the workspace.
    site_dir = _site_dir(tmp_path)
    workspace = tmp_path / "ws.sqlite"
    devices = chain(3)
    devices[1].fdb.update({f"02:bb:00:00:00:{n:02x}": 3 for n in range(1, 6)})
    site = parse_site((site_dir / "site.yaml").read_text(), str(site_dir / "site.yaml"))
    record_dir = site_dir / "snmp" / "recorded"
    crawl = crawl_with(site, RecordedWalks(devices), record_dir=record_dir)
    first = build(site_dir, workspace, extra_results=crawl.results, live_crawl=True, exclude_dirs=[record_dir])
    with EmbeddedStore(workspace) as store:
        links_first = store.load_twin().links

    second = build(site_dir, workspace)
    with EmbeddedStore(workspace) as store:
        links_second = store.load_twin().links
    assert second.stats.get("carried_observations", 0) == 0
    assert second.stats["observations"] == first.stats["observations"]
    columns = ["a_device_id", "a_if_name", "b_device_id", "b_if_name", "source"]
    assert (links_first["source"] == "fdb").sum() == 5
    assert links_second[columns].sort_values(columns).reset_index(drop=True).equals(
        links_first[columns].sort_values(columns).reset_index(drop=True)
    )


def test_recordings_in_site_keep_stale(tmp_path):
    # Recordings kept in the site folder (the README's layout) with plain
    # builds between crawls: a device the second crawl misses is stale in
    # that crawl's snapshot and stays stale in the next plain build.
    site_dir = _site_dir(tmp_path)
    workspace = tmp_path / "ws.sqlite"
    devices = chain(3)
    site = parse_site((site_dir / "site.yaml").read_text(), str(site_dir / "site.yaml"))
    record_dir = site_dir / "snmp" / "recorded"

    def crawl_and_build(answering):
        crawl = crawl_with(site, RecordedWalks(answering), record_dir=record_dir)
        return build(site_dir, workspace, extra_results=crawl.results, live_crawl=True, exclude_dirs=[record_dir])

    crawl_and_build(devices)
    build(site_dir, workspace)
    second = crawl_and_build(devices[:2])
    by_name, _ = _devices_by_name(workspace)
    assert by_name["sw3"].stale
    assert not by_name["sw2"].stale
    assert second.stats["stale_devices"] >= 1

    plain = build(site_dir, workspace)
    after, _ = _devices_by_name(workspace)
    assert set(after) == set(by_name)
    assert after["sw3"].stale
    assert not after["sw1"].stale
    assert plain.stats["stale_devices"] == second.stats["stale_devices"]


def test_recording_imports_with_live_provenance(tmp_path):
    devices = chain(1)
    result = crawl_with(site_config(), RecordedWalks(devices), record_dir=tmp_path / "rec", run_id="crawl-prov-1")
    replay = snmp.import_file(result.recorded[0])
    live = result.results[0]
    assert {o.origin for o in replay.observations} == {"snmp://10.231.0.1:161"}
    assert [(o.origin, o.seen_at, o.evidence) for o in replay.observations] == [
        (o.origin, o.seen_at, o.evidence) for o in live.observations
    ]
    assert replay.path == str(result.recorded[0])


def test_build_without_crawl_has_no_stale(tmp_path):
    site_dir = _site_dir(tmp_path)
    workspace = tmp_path / "ws.sqlite"
    result = build(site_dir, workspace)
    assert "stale_devices" not in result.stats
    with EmbeddedStore(workspace) as store:
        assert "stale" in store.load_twin().devices.columns


# ---------------------------------------------------------------------------
# Command line


def _cli_site(tmp_path: Path, seeds: str, scope: str = "127.0.0.0/24", credentials: bool = True) -> Path:
    site_dir = tmp_path / "cli-site"
    site_dir.mkdir()
    text = f"site: {{name: Crawl CLI}}\ndiscovery:\n  scopes: [{scope}]\n  snmp: {{seeds: {seeds}, depth: 1}}\n"
    if credentials:
        text += "credentials:\n  snmp: {version: 2c, community_env: TWIN_TEST_COMMUNITY}\n"
    (site_dir / "site.yaml").write_text(text, encoding="utf-8")
    return site_dir


def test_cli_dry_run_sends_nothing(tmp_path):
    import socket

    from typer.testing import CliRunner

    from twin.cli.main import app

    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        site_dir = _cli_site(tmp_path, f'["127.0.0.1:{port}", "10.9.9.9"]')
        outcome = CliRunner().invoke(app, ["discover", "snmp", "--site", str(site_dir), "--dry-run", "-w", str(tmp_path / "ws.sqlite")])
        with pytest.raises(BlockingIOError):
            listener.recv(65535)
    finally:
        listener.close()
    assert outcome.exit_code == 1, outcome.output
    assert f"seed 127.0.0.1:{port}: walk 127.0.0.1:{port}" in outcome.output
    assert "seed 10.9.9.9: target 10.9.9.9 rejected" in outcome.output
    assert "outside every discovery scope" in outcome.output
    assert not (tmp_path / "ws.sqlite").exists()


def test_cli_config_error_exit_two(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from twin.cli.main import app

    monkeypatch.delenv("TWIN_TEST_COMMUNITY", raising=False)
    site_dir = _cli_site(tmp_path, '["127.0.0.1:1"]')
    outcome = CliRunner().invoke(app, ["discover", "snmp", "--site", str(site_dir), "--no-build"])
    assert outcome.exit_code == 2, outcome.output
    assert "TWIN_TEST_COMMUNITY" in outcome.output


def test_cli_without_seeds_exit_two(tmp_path):
    from typer.testing import CliRunner

    from twin.cli.main import app

    site_dir = _cli_site(tmp_path, "[]")
    outcome = CliRunner().invoke(app, ["discover", "snmp", "--site", str(site_dir), "--no-build"])
    assert outcome.exit_code == 2, outcome.output
    assert "no seeds" in outcome.output


def test_neighbour_skipped_listed_once():
    devices = chain(2)
    phone = ChainDevice("phone", 9, "10.231.0.9", capabilities=("telephone",))
    devices[0].neighbours.append(phone.neighbour_entry(3))
    devices[1].neighbours.append(phone.neighbour_entry(3))
    walks = RecordedWalks([*devices, phone])
    result = crawl_with(site_config(), walks)
    assert phone.address not in walked_addresses(walks)
    listed = [target for target, _ in result.skipped if target.startswith(f"{phone.address}:161 ")]
    assert len(listed) == 1


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        (["auth", "auth"], "NOT WALKED: the agent rejected every credentials profile"),
        (["auth", "timeout"], "NOT WALKED: no credentials profile got a response (1 rejected, 1 without an answer)"),
        (["timeout"], "NOT WALKED: no answer"),
    ],
)
def test_unanswered_walk_state_counts_profiles(kinds, expected):
    from twin.cli.discover import _walk_state
    from twin.discovery.snmp_live import WalkIssue

    walk = RecordedWalks([])
    result = asyncio.run(walk("10.231.0.9", 161, CREDENTIALS, None))
    result.issues = [WalkIssue(result.target, kind, f"{kind} failure") for kind in kinds]

    assert _walk_state(result) == expected
