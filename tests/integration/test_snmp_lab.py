"""`twin discover snmp` crawls a namespace lab of real snmpd and lldpd daemons.

The lab (:mod:`tests.lab.snmplab`) is one Ethernet segment 10.231.0.0/24:

======== ===== ================================= ======================================
name     .N    runs                              how the crawl learns about it
======== ===== ================================= ======================================
sw1      .1    snmpd + BRIDGE-MIB + lldpd (br0)  the seed
router   .254  snmpd + lldpd, ip_forward=1       LLDP (router capability), then walked
ws1      .11   lldpd                             LLDP on the switch, FDB, ARP
ws2      .12   lldpd                             LLDP on the switch, FDB, ARP
pacs1    .13   lldpd                             LLDP on the switch, FDB, ARP
pump1    .14   nothing                           the switch's FDB and ARP tables only
======== ===== ================================= ======================================

First net-snmp's snmpbulkwalk, run inside the lab, proves that the lab
serves IF-MIB, BRIDGE-MIB and LLDP-MIB over v2c and v3. Then the product
crawls from one seed (the switch) inside the switch namespace, recording
every walk into the site folder, and a second ``twin build`` of that
folder must give the same twin. Expected devices, ports and links come
from what the lab wired, never from the product's output.

Needs root, iproute2, snmpd, snmp (snmpbulkwalk) and lldpd; skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.lab.snmplab import (
    COMMUNITY,
    SWITCH_MAC,
    SWITCH_NAME,
    V3_AUTH_KEY,
    V3_PRIV_KEY,
    V3_USER,
    SnmpLab,
    snmp_lab_unavailable,
)

pytestmark = pytest.mark.timeout(300)

_REASON = snmp_lab_unavailable()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

SUBNET = "10.231.0.0/24"
LLDP_REM_TABLE = "1.0.8802.1.1.2.1.4.1"
LLDP_REM_SYS_NAME = "1.0.8802.1.1.2.1.4.1.1.9."
LLDP_REM_PORT_ID = "1.0.8802.1.1.2.1.4.1.1.7."
LLDP_LOC_PORT_ID = "1.0.8802.1.1.2.1.3.7.1.3."
IF_NAME = "1.3.6.1.2.1.31.1.1.1.1."
DOT1D_BASE_PORT_IF_INDEX = "1.3.6.1.2.1.17.1.4.1.2."
DOT1D_TP_FDB_PORT = "1.3.6.1.2.1.17.4.3.1.2."
DOT1D_TP_FDB_STATUS = "1.3.6.1.2.1.17.4.3.1.3."
# Environment variables the site config names for the lab's secrets.
SECRET_ENV = {"TWIN_LAB_AUTH_KEY": V3_AUTH_KEY, "TWIN_LAB_PRIV_KEY": V3_PRIV_KEY, "TWIN_LAB_COMMUNITY": COMMUNITY}
# Seconds the crawl and each build may take (the crawl takes a few seconds).
CLI_TIMEOUT_S = 180


def twin_cli() -> list[str]:
    """Command prefix that runs the `twin` CLI with the test's interpreter."""
    return [sys.executable, "-c", "import sys; from twin.cli.main import app; sys.argv[0] = 'twin'; app()"]


@pytest.fixture(scope="module")
def lab():
    # Unix socket paths must stay short, so the work folder is not pytest's deep tmp_path.
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="twsl-"))
    try:
        with SnmpLab(folder) as snmp_lab:
            snmp_lab.generate_traffic()
            snmp_lab.wait_for_lldp()
            yield snmp_lab
            prefix = snmp_lab.lab.prefix
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert not any(name.startswith(prefix) for name in os.listdir("/var/run/netns")), "lab namespaces left behind"


def _index_of(oid: str, prefix: str) -> str:
    return oid[len(prefix):]


def _text(value: str) -> str:
    return value.strip().strip('"')


def _hex_mac(value: str) -> str:
    return ":".join(part.lower() for part in value.split())


# --------------------------------------------------------------------------
# The lab itself, checked with net-snmp's snmpbulkwalk


@pytest.mark.parametrize("version", ["2c", "3"])
def test_switch_lldp_rem_table_lists_lldp_hosts(lab, version):
    rows = lab.snmp_walk(lab.switch, LLDP_REM_TABLE, version=version)
    names = {_index_of(oid, LLDP_REM_SYS_NAME): _text(value) for oid, _, value in rows if oid.startswith(LLDP_REM_SYS_NAME)}
    ports = {_index_of(oid, LLDP_REM_PORT_ID): _text(value) for oid, _, value in rows if oid.startswith(LLDP_REM_PORT_ID)}
    local_ports = {
        _index_of(oid, LLDP_LOC_PORT_ID): _text(value)
        for oid, _, value in lab.snmp_walk(lab.switch, "1.0.8802.1.1.2.1.3.7", version=version)
        if oid.startswith(LLDP_LOC_PORT_ID)
    }
    # lldpRemTable index: timeMark.localPortNum.remIndex.
    seen = {(local_ports[index.split(".")[1]], names[index], ports[index]) for index in names}
    expected = {(port, host, remote_port) for (_, port), (host, remote_port) in lab.expected_lldp_links()}
    assert seen == expected


@pytest.mark.parametrize("version", ["2c", "3"])
def test_switch_bridge_mib_maps_hosts_to_ports(lab, version):
    if_names = {_index_of(oid, IF_NAME): _text(value) for oid, _, value in lab.snmp_walk(lab.switch, "1.3.6.1.2.1.31.1.1.1.1", version=version)}
    bridge = lab.snmp_walk(lab.switch, "1.3.6.1.2.1.17", version=version)
    port_if = {_index_of(oid, DOT1D_BASE_PORT_IF_INDEX): value for oid, _, value in bridge if oid.startswith(DOT1D_BASE_PORT_IF_INDEX)}
    fdb_port = {_index_of(oid, DOT1D_TP_FDB_PORT): value for oid, _, value in bridge if oid.startswith(DOT1D_TP_FDB_PORT)}
    fdb_status = {_index_of(oid, DOT1D_TP_FDB_STATUS): value for oid, _, value in bridge if oid.startswith(DOT1D_TP_FDB_STATUS)}

    learned = {}
    for index, port in fdb_port.items():
        if fdb_status[index] == "3":
            mac = ":".join(f"{int(octet):02x}" for octet in index.split("."))
            learned[mac] = if_names[port_if[port]]
    expected = {host.mac: host.switch_port for host in lab.lab.hosts.values()}
    assert learned == expected
    bridge_address = next(value for oid, _, value in bridge if oid == "1.3.6.1.2.1.17.1.1.0")
    assert _hex_mac(bridge_address) == SWITCH_MAC


@pytest.mark.parametrize("version", ["2c", "3"])
def test_router_serves_lldp_and_if_mib(lab, version):
    router = lab.agents["router"]
    rows = lab.snmp_walk(router, LLDP_REM_TABLE, version=version)
    names = {_text(value) for oid, _, value in rows if oid.startswith(LLDP_REM_SYS_NAME)}
    ports = {_text(value) for oid, _, value in rows if oid.startswith(LLDP_REM_PORT_ID)}
    assert names == {SWITCH_NAME}
    assert ports == {lab.host("router").switch_port}
    if_names = {_text(value) for _, _, value in lab.snmp_walk(router, "1.3.6.1.2.1.31.1.1.1.1", version=version)}
    assert {"eth0", "lan2"} <= if_names


def test_wrong_v3_key_is_rejected(lab):
    argv = ["snmpget", "-v3", "-l", "authPriv", "-u", V3_USER, "-a", "SHA-256", "-A", "wrong-key-0000", "-x", "AES",
            "-X", V3_PRIV_KEY, "-t", "1", "-r", "0", lab.switch_ip, "1.3.6.1.2.1.1.5.0"]
    result = lab.lab.switch.run(argv, check=False, env={**os.environ, "MIBS": ""})
    assert result.returncode != 0
    assert "sw1" not in result.stdout


# --------------------------------------------------------------------------
# The crawl


def write_site(folder: Path, lab) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "site": {"name": "SNMP Lab", "timezone": "UTC"},
        "discovery": {
            "scopes": [SUBNET],
            "snmp": {"seeds": [lab.switch_ip], "depth": 2, "timeout_s": 2.0, "retries": 1,
                     "crawl_capabilities": ["bridge", "router"]},
        },
        "credentials": {
            "snmp": [
                {"version": 3, "user": V3_USER, "auth_protocol": "sha256", "auth_key_env": "TWIN_LAB_AUTH_KEY",
                 "priv_protocol": "aes128", "priv_key_env": "TWIN_LAB_PRIV_KEY"},
                {"version": "2c", "community_env": "TWIN_LAB_COMMUNITY"},
            ]
        },
        "segments": [{"id": "lab", "name": "Lab segment", "cidrs": [SUBNET], "zone": "clinical",
                      "designated_classes": ["workstation", "server", "switch", "router", "infusion_pump"]}],
    }
    (folder / "site.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def crawl_run(lab, tmp_path_factory):
    base = tmp_path_factory.mktemp("snmpsite")
    site = write_site(base / "site", lab)
    record = site / "snmp-live"
    live_ws = base / "live.sqlite"
    env = {**os.environ, **SECRET_ENV}
    # The crawl runs in the switch namespace, which reaches only the lab segment.
    crawl = lab.lab.switch.run(
        [*twin_cli(), "discover", "snmp", "--site", str(site), "--record", str(record), "-w", str(live_ws)],
        check=False, timeout=CLI_TIMEOUT_S, env=env,
    )
    replay_ws = base / "replay.sqlite"
    replay = lab.lab.switch.run([*twin_cli(), "build", str(site), "-w", str(replay_ws)], check=False, timeout=CLI_TIMEOUT_S)
    return {"crawl": crawl, "replay": replay, "site": site, "record": record, "live": live_ws, "replay_ws": replay_ws}


def lab_names_by_mac(lab) -> dict[str, str]:
    names = {host.mac: name for name, host in lab.lab.hosts.items()}
    names[SWITCH_MAC] = SWITCH_NAME
    return names


def twin_view(lab, workspace: Path) -> dict:
    """Devices, links and attachments of a workspace, with device ids replaced by lab names."""
    from twin.api import Workspace

    twin = Workspace(workspace).twin()
    devices = twin.devices
    by_mac = lab_names_by_mac(lab)
    name_of: dict[str, str] = {}
    unmatched = []
    for row in devices.itertuples():
        names = {by_mac[mac] for mac in row.macs if mac in by_mac}
        if len(names) == 1:
            name_of[row.device_id] = names.pop()
        else:
            unmatched.append((row.device_id, list(row.macs), list(row.ips), row.hostname, sorted(names)))
    links = set()
    for row in twin.links.itertuples():
        a = (name_of.get(row.a_device_id, row.a_device_id), row.a_if_name)
        b = (name_of.get(row.b_device_id, row.b_device_id), row.b_if_name)
        links.add((frozenset((a, b)), row.source))
    attachments = {}
    for row in devices.itertuples():
        attached = getattr(row, "attached_to", None)
        if isinstance(attached, str) and attached:
            attachments[name_of.get(row.device_id, row.device_id)] = (name_of.get(attached, attached), row.attached_port)
    stale = {name_of.get(row.device_id, row.device_id) for row in devices.itertuples() if bool(getattr(row, "stale", False))}
    ips = {name_of.get(row.device_id, row.device_id): set(row.ips) for row in devices.itertuples()}
    hostnames = {name_of.get(row.device_id, row.device_id): row.hostname for row in devices.itertuples()}
    return {"names": set(name_of.values()), "unmatched": unmatched, "links": links, "attachments": attachments,
            "stale": stale, "ips": ips, "hostnames": hostnames}


def test_crawl_succeeds(crawl_run):
    crawl = crawl_run["crawl"]
    assert crawl.returncode == 0, crawl.stdout + crawl.stderr


def test_crawl_records_switch_and_router(lab, crawl_run):
    recorded = sorted(path.name for path in crawl_run["record"].glob("*.snmprec"))
    assert len(recorded) == 2, recorded
    assert any(lab.switch_ip in name for name in recorded)
    assert any(lab.agents["router"].address in name for name in recorded)


def test_twin_holds_every_lab_device(lab, crawl_run):
    view = twin_view(lab, crawl_run["live"])
    assert view["unmatched"] == []
    assert view["names"] == {SWITCH_NAME, *lab.lab.hosts}
    assert view["stale"] == set()


def test_twin_device_names_and_addresses(lab, crawl_run):
    view = twin_view(lab, crawl_run["live"])
    for spec in lab.hosts:
        if spec.lldp or spec.snmp:
            assert view["hostnames"][spec.name] == spec.name
        assert lab.host(spec.name).ip in view["ips"][spec.name], spec.name
    assert view["hostnames"][SWITCH_NAME] == SWITCH_NAME
    assert lab.switch_ip in view["ips"][SWITCH_NAME]


def test_twin_holds_every_lldp_link(lab, crawl_run):
    view = twin_view(lab, crawl_run["live"])
    lldp_links = {ends for ends, source in view["links"] if source == "lldp"}
    expected = {frozenset(pair) for pair in lab.expected_lldp_links()}
    assert lldp_links == expected


def test_every_host_attached_to_its_port(lab, crawl_run):
    view = twin_view(lab, crawl_run["live"])
    expected = {name: (SWITCH_NAME, host.switch_port) for name, host in lab.lab.hosts.items()}
    assert view["attachments"] == expected


def test_host_without_lldp_placed_from_fdb(lab, crawl_run):
    view = twin_view(lab, crawl_run["live"])
    silent = [spec.name for spec in lab.hosts if not spec.lldp and not spec.snmp]
    assert silent, "the lab needs a host without LLDP and SNMP"
    for name in silent:
        assert view["attachments"].get(name) == (SWITCH_NAME, lab.host(name).switch_port)
        assert lab.host(name).ip in view["ips"][name]


def test_replay_of_recordings_gives_same_twin(lab, crawl_run):
    replay = crawl_run["replay"]
    assert replay.returncode == 0, replay.stdout + replay.stderr
    live = twin_view(lab, crawl_run["live"])
    replayed = twin_view(lab, crawl_run["replay_ws"])
    assert replayed["names"] == live["names"]
    assert replayed["unmatched"] == live["unmatched"]
    assert {ends for ends, _ in replayed["links"]} == {ends for ends, _ in live["links"]}
    assert replayed["attachments"] == live["attachments"]
    assert replayed["ips"] == live["ips"]
    assert replayed["hostnames"] == live["hostnames"]

