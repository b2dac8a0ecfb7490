"""Identity resolution: merge order, conflicts, and the IP time window."""

from twin.model.observation import Identity, Kind, Observation
from twin.resolve.addresses import AddressPlan
from twin.resolve.identity import build_records, cluster_identities

PLAN = AddressPlan(["10.0.0.0/16"])
DAY = 86400.0


def obs(kind=Kind.DEVICE, source="nmap", t=1000.0, attrs=None, **ident):
    return Observation(kind, source, "test", t, Identity(**ident), attrs or {})


def groups_of(observations, window=DAY):
    records = build_records(observations, PLAN)
    clusters = cluster_identities(records, ip_window_s=window)
    out = {}
    for i, rec in enumerate(records):
        if not rec.named:
            out.setdefault(clusters.root_of[i], set()).update(rec.obs_indices)
    return {frozenset(v) for v in out.values()}, clusters.conflicts


def test_mac_then_ip_then_hostname_merge():
    observations = [
        obs(macs=("00:1b:2c:3d:4e:5f",), source="inventory"),
        obs(macs=("00:1b:2c:3d:4e:5f",), ips=("10.0.1.5",)),
        obs(ips=("10.0.1.5",), hostname="pump-1"),
        obs(hostname="pump-1.example.org", source="lldpd"),
    ]
    groups, conflicts = groups_of(observations)
    assert groups == {frozenset({0, 1, 2, 3})}
    assert conflicts == []


def test_serial_merges_two_nics():
    observations = [
        obs(macs=("00:1b:2c:00:00:01",), serial="SN1"),
        obs(macs=("00:1b:2c:00:00:02",), serial="SN1"),
    ]
    groups, _ = groups_of(observations)
    assert groups == {frozenset({0, 1})}


def test_duplicate_ip_is_conflict_not_merge():
    observations = [
        obs(macs=("00:1b:2c:00:00:01",), ips=("10.0.1.9",), t=1000.0),
        obs(macs=("00:1b:2c:00:00:02",), ips=("10.0.1.9",), t=2000.0),
    ]
    groups, conflicts = groups_of(observations)
    assert groups == {frozenset({0}), frozenset({1})}
    assert [(c.key, c.value) for c in conflicts] == [("ip", "10.0.1.9")]


def test_ip_reused_outside_window_is_not_conflict():
    observations = [
        obs(macs=("00:1b:2c:00:00:01",), ips=("10.0.1.9",), t=0.0),
        obs(macs=("00:1b:2c:00:00:02",), ips=("10.0.1.9",), t=10 * DAY),
        obs(ips=("10.0.1.9",), t=10 * DAY + 60),
    ]
    groups, conflicts = groups_of(observations)
    assert groups == {frozenset({0}), frozenset({1, 2})}
    assert conflicts == []


def test_arp_entry_binds_mac_to_ip():
    router = obs(kind=Kind.ARP, source="snmp", macs=("00:aa:00:00:00:01",), attrs={"ip": "10.0.2.7", "mac": "00:1b:2c:00:00:07"})
    observations = [
        router,
        obs(source="inventory", macs=("00:1b:2c:00:00:07",), serial="X7"),
        obs(source="zeek", ips=("10.0.2.7",)),
    ]
    groups, _ = groups_of(observations)
    assert groups == {frozenset({0}), frozenset({1, 2})}


def test_virtual_router_mac_never_merges():
    observations = [
        obs(macs=("00:00:5e:00:01:01",), ips=("10.0.0.1",), hostname="rtr-a"),
        obs(macs=("00:00:5e:00:01:01",), ips=("10.0.0.2",), hostname="rtr-b"),
    ]
    groups, _ = groups_of(observations)
    assert groups == {frozenset({0}), frozenset({1})}


def test_public_address_of_device_kept():
    observations = [obs(source="snmp", ips=("203.0.113.5", "127.0.0.1"), hostname="sw-dmz")]
    records = build_records(observations, PLAN)
    assert [(r.ips, r.hostname) for r in records] == [(("203.0.113.5",), "sw-dmz")]


def test_cdp_serial_suffix_merges_with_entity_serial():
    switch = obs(source="snmp", macs=("00:aa:00:00:00:01",), hostname="core-1")
    neighbour = obs(
        kind=Kind.NEIGHBOR,
        source="snmp",
        macs=("00:aa:00:00:00:01",),
        attrs={"protocol": "cdp", "remote_sys_name": "nexus-01(SSI183706KP)"},
    )
    nexus = obs(source="snmp", macs=("00:bb:00:00:00:02",), hostname="nexus-01", serial="SSI183706KP")
    records = build_records([switch, neighbour, nexus], PLAN)
    clusters = cluster_identities(records, ip_window_s=DAY)
    named = next(i for i, r in enumerate(records) if r.named)
    own = next(i for i, r in enumerate(records) if r.serial and not r.named)
    assert records[named].hostname == "nexus-01"
    assert clusters.root_of[named] == clusters.root_of[own]
