"""The live SNMP walker against agents that misbehave on purpose.

:mod:`tests.lab.bad_agent` serves a fixed data set on 127.0.0.1 and breaks
one rule per mode (OIDs going backwards, tooBig or silence above a GETBULK
size, no response at all, bytes that are not UTF-8). Expected varbinds come
from the agent's own data set, and the agent's request log shows what the
walker really sent. The last test needs root: two real snmpd in a
namespace lab share one v3 engine id, and the crawl must warn about both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.lab.bad_agent import (
    BACKWARDS_AT,
    BACKWARDS_TO,
    BINARY_VALUES,
    COMMUNITY,
    DEFAULT_THRESHOLD,
    IF_ENTRY,
    dataset,
    snmprec_text,
    start_bad_agent,
)

snmp_live = pytest.importorskip("twin.discovery.snmp_live", reason="twin.discovery.snmp_live is not written yet")

from twin.discovery.snmp import parse_snmprec, transform_varbinds  # noqa: E402
from twin.model.observation import ImportResult, Kind  # noqa: E402

pytestmark = pytest.mark.timeout(120)

CREDENTIALS = [snmp_live.SnmpCredentials(name="v2c", version="2c", community=COMMUNITY)]
# Short timeouts keep the silent modes fast; max_repetitions starts above
# the agents' threshold so too_big and silent_bulk are triggered.
SETTINGS = snmp_live.WalkSettings(timeout_s=0.5, retries=0, max_repetitions=25, device_time_cap_s=60.0)


def oid_text(oid) -> str:
    return ".".join(map(str, oid))


def under_roots(oid: tuple[int, ...]) -> bool:
    return any(oid[: len(root)] == root for _, root in snmp_live.WALK_ROOTS)


def expected_varbinds(mode: str) -> list[tuple]:
    """The agent's data set under the walk roots, as parse_snmprec reads it: ``(oid, type, value)``."""
    parsed = parse_snmprec(snmprec_text(dataset(mode)), ImportResult("snmp", "expected"))
    return [(v.oid, v.type, v.value) for v in parsed if under_roots(v.oid)]


def walked(result) -> list[tuple]:
    return [(v.oid, v.type, v.value) for v in result.varbinds]


def walk(agent, settings=SETTINGS):
    return asyncio.run(snmp_live.walk_device("127.0.0.1", agent.port, CREDENTIALS, settings))


@pytest.fixture
def agent_log(tmp_path):
    return tmp_path / "requests.jsonl"


def test_normal_agent_walks_completely(agent_log):
    with start_bad_agent("normal", agent_log) as agent:
        result = walk(agent)
    assert result.answered
    assert result.issues == []
    assert walked(result) == expected_varbinds("normal")
    assert all(result.complete.values())


def bulk_starts(agent) -> list[str]:
    """First OID of every GETBULK the agent logged, oldest first."""
    return [record["oid"] for record in agent.requests() if record["pdu"] == "GetBulkRequestPDU"]


def test_empty_roots_cost_no_request(agent_log):
    # Roots are walked in OID order, so a response that runs past one root
    # already shows whether the next roots hold anything.
    rows = expected_varbinds("normal")
    empty = [(name, root) for name, root in snmp_live.WALK_ROOTS if not any(oid[: len(root)] == root for oid, _, _ in rows)]
    assert len(empty) >= 5, "the data set should leave several roots empty"
    with start_bad_agent("normal", agent_log) as agent:
        result = walk(agent)
    starts = bulk_starts(agent)
    assert walked(result) == rows
    assert all(result.complete[name] for name, _ in empty)
    assert not {oid_text(root) for _, root in empty} & set(starts)
    # Every request starts at a root or at an OID the agent returned before.
    returned = {oid_text(oid) for oid, _, _ in rows}
    assert set(starts) <= returned | {oid_text(root) for _, root in snmp_live.WALK_ROOTS}
    assert len(starts) < len(snmp_live.WALK_ROOTS)


@pytest.mark.parametrize("repetitions", [10, 25, 60])
def test_rows_between_roots_are_left_out(agent_log, repetitions):
    # ifTable and ipNetToMediaTable lie between system and dot1dBase: the
    # system group's last response runs into them, and none may be kept.
    roots = [("system", (1, 3, 6, 1, 2, 1, 1)), ("dot1dBase", (1, 3, 6, 1, 2, 1, 17, 1))]
    settings = snmp_live.WalkSettings(timeout_s=0.5, retries=0, max_repetitions=repetitions, min_repetitions=1)
    with start_bad_agent("normal", agent_log) as agent:
        result = asyncio.run(snmp_live.walk_device("127.0.0.1", agent.port, CREDENTIALS, settings, roots=roots))
    starts = bulk_starts(agent)
    expected = [row for row in expected_varbinds("normal") if any(row[0][: len(root)] == root for _, root in roots)]
    assert walked(result) == expected
    assert result.issues == []
    assert all(result.complete.values())
    assert oid_text(roots[1][1]) in starts


def test_backwards_keeps_rows_before_bad_oid(agent_log):
    with start_bad_agent("backwards", agent_log) as agent:
        result = walk(agent)
    assert result.answered
    order = [issue for issue in result.issues if issue.kind == "order"]
    assert len(order) == 1, result.issues
    assert agent.target in order[0].message
    assert oid_text(BACKWARDS_TO) in order[0].message

    if_table = [row for row in walked(result) if row[0][: len(IF_ENTRY)] == IF_ENTRY]
    expected_if = [row for row in expected_varbinds("backwards") if row[0][: len(IF_ENTRY)] == IF_ENTRY and row[0] < BACKWARDS_AT]
    assert if_table == expected_if

    others = [row for row in walked(result) if row[0][: len(IF_ENTRY)] != IF_ENTRY]
    assert others == [row for row in expected_varbinds("backwards") if row[0][: len(IF_ENTRY)] != IF_ENTRY]
    incomplete = {name for name, done in result.complete.items() if not done}
    assert incomplete == {name for name, root in snmp_live.WALK_ROOTS if IF_ENTRY[: len(root)] == root}


@pytest.mark.parametrize("mode", ["too_big", "silent_bulk", "garbled_bulk"])
def test_large_bulk_shrinks_and_completes(agent_log, caplog, mode):
    caplog.set_level("INFO", logger="twin.discovery.snmp_live")
    with start_bad_agent(mode, agent_log) as agent:
        result = walk(agent)
        requests = agent.requests()
    assert result.answered
    assert walked(result) == expected_varbinds(mode)
    assert all(result.complete.values())
    # One warning names the device and reports that the walk recovered, and no other issue is raised.
    recovered_kind = {"too_big": "too_big", "silent_bulk": "timeout", "garbled_bulk": "decode"}[mode]
    warnings = [issue for issue in result.issues if issue.kind == recovered_kind]
    assert len(warnings) == 1
    assert agent.target in warnings[0].message
    assert "max-repetitions lowered" in warnings[0].message
    if mode == "garbled_bulk":
        assert "malformed" in warnings[0].message
    others = [issue for issue in result.issues if issue is not warnings[0]]
    assert [issue for issue in others if issue.kind in ("transport", "timeout", "agent", "order", "too_big")] == []

    bulks = [r for r in requests if r["pdu"] == "GetBulkRequestPDU"]
    rejected = [r for r in bulks if r["max_repetitions"] > DEFAULT_THRESHOLD]
    assert rejected, "the walker never sent a GETBULK above the agent's threshold"
    answered = [r for r in bulks if r["answered"] and r["max_repetitions"] <= DEFAULT_THRESHOLD]
    assert answered, "the walker never shrank max-repetitions to an accepted size"

    # Each shrink is logged with the device and the OID it happened at.
    shrinks = [record.getMessage() for record in caplog.records if "max-repetitions" in record.getMessage()]
    assert shrinks, "the walker logged no shrink of max-repetitions"
    assert all(agent.target in message for message in shrinks)
    assert all(any(r["oid"] in message for r in rejected) for message in shrinks), shrinks


def test_silent_bulk_requests_get_no_answer(agent_log):
    with start_bad_agent("silent_bulk", agent_log) as agent:
        walk(agent)
        requests = agent.requests()
    large = [r for r in requests if r["pdu"] == "GetBulkRequestPDU" and r["max_repetitions"] > DEFAULT_THRESHOLD]
    assert large
    assert {r["answered"] for r in large} == {False}


def test_silent_agent_is_not_answered(agent_log):
    with start_bad_agent("silent", agent_log) as agent:
        result = walk(agent)
        requests = agent.requests()
    assert result.answered is False
    assert result.varbinds == []
    assert result.issues, "a silent agent must give an issue"
    assert any(agent.target in issue.message for issue in result.issues)
    assert requests, "the walker sent nothing"
    assert all(r["answered"] is False for r in requests)


def test_binary_strings_kept_as_bytes(agent_log, tmp_path):
    with start_bad_agent("binary", agent_log) as agent:
        result = walk(agent)
    assert result.answered
    assert all(result.complete.values())
    values = {v.oid: v.value for v in result.varbinds}
    for oid, raw in BINARY_VALUES.items():
        assert values[oid] == raw, oid_text(oid)
    assert walked(result) == expected_varbinds("binary")

    # The recording keeps the bytes, and the transform escapes them without failing.
    path = tmp_path / "binary.snmprec"
    snmp_live.write_snmprec(result.varbinds, path)
    reread = parse_snmprec(path.read_text(encoding="utf-8"), ImportResult("snmp", str(path)))
    assert [(v.oid, v.type, v.value) for v in reread] == walked(result)

    imported = transform_varbinds(result.varbinds, path="snmp://" + agent.target, seen_at=0.0)
    interfaces = {o.attrs.get("if_index"): o.attrs for o in imported.observations if o.kind == Kind.INTERFACE}
    assert "\\x80\\x81" in interfaces[1]["if_descr"]
    neighbours = [o.attrs.get("remote_sys_name") for o in imported.observations if o.kind == Kind.NEIGHBOR]
    assert any(name and "\\xc3(" in name for name in neighbours), neighbours


# --------------------------------------------------------------------------
# Shared v3 engine id, with two real snmpd in a namespace lab


@contextlib.contextmanager
def _removed_after(folder: Path):
    try:
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_shared_engine_id_warns_naming_both(tmp_path):
    from tests.lab.snmplab import (
        V3_AUTH_KEY,
        V3_PRIV_KEY,
        V3_USER,
        HostSpec,
        SnmpLab,
        snmp_lab_unavailable,
    )

    reason = snmp_lab_unavailable()
    if reason:
        pytest.skip(reason)
    hosts = (HostSpec("clone1", 21, snmp=True, engine_id="iomt-lab-clone"),
             HostSpec("clone2", 22, snmp=True, engine_id="iomt-lab-clone"))
    folder = Path(tempfile.mkdtemp(prefix="twsl-"))
    with _removed_after(folder), SnmpLab(folder, hosts=hosts, switch_snmp=False) as lab:
        first, second = lab.agents["clone1"], lab.agents["clone2"]
        # net-snmp's own view: both agents report the same snmpEngineID.
        engine_ids = {lab.snmp_walk(agent, "1.3.6.1.6.3.10.2.1.1", version="2c")[0][2] for agent in (first, second)}
        assert len(engine_ids) == 1

        site = tmp_path / "site"
        site.mkdir()
        config = {
            "site": {"name": "Clone Lab", "timezone": "UTC"},
            "discovery": {"scopes": [lab.subnet], "snmp": {"seeds": [first.address, second.address], "depth": 0}},
            "credentials": {"snmp": {"version": 3, "user": V3_USER, "auth_protocol": "sha256", "auth_key_env": "TWIN_LAB_AUTH_KEY",
                                     "priv_protocol": "aes128", "priv_key_env": "TWIN_LAB_PRIV_KEY"}},
        }
        (site / "site.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        env = {**os.environ, "TWIN_LAB_AUTH_KEY": V3_AUTH_KEY, "TWIN_LAB_PRIV_KEY": V3_PRIV_KEY}
        cli = [sys.executable, "-c", "import sys; from twin.cli.main import app; sys.argv[0] = 'twin'; app()"]
        result = lab.lab.switch.run([*cli, "discover", "snmp", "--site", str(site), "--no-build"], check=False, timeout=120, env=env)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    warning = [line for line in output.splitlines() if "engine id" in line.lower()]
    assert warning, output
    assert f"{first.address}:161" in warning[0]
    assert f"{second.address}:161" in warning[0]
    assert output.count("answered (v3") == 2, output


@pytest.mark.parametrize(
    ("caps", "named"),
    [
        ({"device_time_cap_s": 0.8}, "device time cap of 0.8 s"),
        ({"table_time_cap_s": 0.8}, "time cap of 0.8 s per table"),
    ],
)
def test_cap_message_names_the_cap(agent_log, caps, named):
    # Each oversized GETBULK waits 0.5 s unanswered, so the first table
    # passes 0.8 s while the walker shrinks max-repetitions.
    settings = snmp_live.WalkSettings(timeout_s=0.5, retries=0, max_repetitions=25, **caps)
    with start_bad_agent("silent_bulk", agent_log) as agent:
        result = walk(agent, settings)
    cut = [issue for issue in result.issues if issue.kind == "cap" and "cut off" in issue.message]
    assert cut, result.issues
    assert named in cut[0].message
    assert agent.target in cut[0].message


def test_fatal_timeout_lists_tables_not_walked(agent_log):
    # The agent sends no response above 10 repetitions and the walker may
    # not shrink below 11, so the first table fails and the walk ends there.
    settings = snmp_live.WalkSettings(timeout_s=0.3, retries=0, max_repetitions=25, min_repetitions=11)
    with start_bad_agent("silent_bulk", agent_log) as agent:
        result = walk(agent, settings)
    stopped = [issue for issue in result.issues if issue.kind == "timeout" and "stopped at OID" in issue.message]
    assert len(stopped) == 1, result.issues
    first, *rest = [name for name, _ in snmp_live.WALK_ROOTS]
    assert f"{first} stopped" in stopped[0].message
    assert "at max-repetitions 11" in stopped[0].message
    assert f"tables not walked: {', '.join(rest)}" in stopped[0].message
    assert not any(result.complete[name] for name in rest)
