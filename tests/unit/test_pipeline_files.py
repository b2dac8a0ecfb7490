"""Which files of a site folder a build reads."""

from __future__ import annotations

from twin.pipeline import find_discovery_files


def test_yaml_configuration_is_not_discovery_input(tmp_path):
    (tmp_path / "site.yaml").write_text("site: {name: x}\n", encoding="utf-8")
    (tmp_path / "proposed_policy.yaml").write_text("policy:\n  rules: []\n", encoding="utf-8")
    (tmp_path / "notes.yml").write_text("a: 1\n", encoding="utf-8")
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "mystery.bin").write_bytes(b"\x00\x01junk")
    for name in ("ws.sqlite", "ws.sqlite-wal", "ws.sqlite-shm"):
        (tmp_path / name).write_bytes(b"SQLite format 3\x00")
    names = {path.name for path, _ in find_discovery_files(tmp_path)}
    assert names == {"mystery.bin"}



def test_walk_twice_keeps_links(tmp_path):
    # The same switch walk present twice (a recording beside the original,
    # or two weeks of walks) must give the same FDB links and attachments:
    # five MACs on one access port stay five, not ten.
    from tests.lab.snmp_chain import ChainDevice, device_varbinds
    from twin.api import Workspace
    from twin.discovery.snmp_live import write_snmprec

    switch = ChainDevice("sw1", 1, "10.231.0.1", fdb={f"02:aa:00:00:00:{n:02x}": 3 for n in range(1, 6)})
    twins = []
    for copies in (1, 2):
        site = tmp_path / f"site{copies}"
        (site / "snmp").mkdir(parents=True)
        (site / "site.yaml").write_text("site: {name: Walk copies}\n", encoding="utf-8")
        for copy in range(copies):
            write_snmprec(device_varbinds(switch), site / "snmp" / f"sw1-{copy}.snmprec")
        workspace = Workspace(tmp_path / f"site{copies}.sqlite")
        workspace.build(site)
        twins.append(workspace.twin())

    columns = ["a_device_id", "a_if_name", "b_device_id", "b_if_name", "source"]
    links_once, links_twice = (t.links[columns].sort_values(columns).reset_index(drop=True) for t in twins)
    assert (links_once["source"] == "fdb").sum() == 5
    assert links_twice.equals(links_once)
    attached = [t.devices.set_index("device_id")[["attached_to", "attached_port"]].dropna().sort_index() for t in twins]
    assert len(attached[0]) == 5
    assert attached[1].equals(attached[0])
