"""The live SNMP walker against snmpsim on 127.0.0.1 serving real recorded walks.

Every corpus walk (``../shared/corpus/snmp/*.snmprec``) is served by snmpsim
and walked with :func:`walk_device`; the observations of the live varbinds
must equal those of importing the file. Expected values come from the file
itself (through the file importer) or from net-snmp's ``snmpbulkwalk``.
The corpus files are copied into a temporary folder, because snmpsim names
a data file by its resolved path. Needs snmpsim, pysmi and net-snmp's tools;
skipped otherwise.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.lab.snmpsim import Snmpsim, snmpsim_unavailable
from twin.discovery import snmp
from twin.discovery.snmp_live import WALK_ROOTS, SnmpCredentials, WalkSettings, walk_device, write_snmprec
from twin.model.observation import ImportResult

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "snmp"
FILES = sorted(CORPUS.glob("*.snmprec")) if CORPUS.is_dir() else []

V3_USER = "twin-test"
V3_AUTH_KEY = "auth-key-for-tests"
V3_PRIV_KEY = "priv-key-for-tests"

_REASON = snmpsim_unavailable() or (None if shutil.which("snmpbulkwalk") else "snmpbulkwalk is not installed")
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

# A walk that loops back: snmpsim answers GETNEXT in file order, so the
# unsorted ifIndex lines make it return .1.1.3 after .1.1.5.
LOOP_WALK = """\
1.3.6.1.2.1.1.1.0|4|loop test
1.3.6.1.2.1.1.5.0|4|loop1
1.3.6.1.2.1.2.2.1.1.1|2|1
1.3.6.1.2.1.2.2.1.1.2|2|2
1.3.6.1.2.1.2.2.1.1.5|2|5
1.3.6.1.2.1.2.2.1.1.3|2|3
1.3.6.1.2.1.2.2.1.1.4|2|4
1.3.6.1.2.1.2.2.1.2.1|4|eth1
1.3.6.1.2.1.31.1.1.1.1.1|4|eth1
"""

# Binary and odd strings a recording must carry unchanged.
BINARY_WALK = """\
1.3.6.1.2.1.1.1.0|4x|00ff41420a7c43
1.3.6.1.2.1.1.5.0|4|binary1
1.3.6.1.2.1.1.6.0|4x|47656bc3a475646520330a
1.3.6.1.2.1.2.2.1.1.1|2|1
1.3.6.1.2.1.2.2.1.2.1|4|eth0
1.3.6.1.2.1.2.2.1.6.1|4x|0200e7000101
"""


def community_of(path: Path) -> str:
    return path.stem.removeprefix("snmpsimdata_")


@pytest.fixture(scope="module")
def agents(tmp_path_factory):
    """One snmpsim on two loopback ports serving the corpus and the test walks."""
    data = tmp_path_factory.mktemp("snmpsim-data")
    for path in FILES:
        shutil.copyfile(path, data / f"{community_of(path)}.snmprec")
    (data / "loop.snmprec").write_text(LOOP_WALK)
    (data / "binary.snmprec").write_text(BINARY_WALK)
    with Snmpsim(data, 2, v3_user=V3_USER, v3_auth_key=V3_AUTH_KEY, v3_priv_key=V3_PRIV_KEY) as simulator:
        yield simulator, data


def v2c(community: str) -> SnmpCredentials:
    return SnmpCredentials(name="v2c", version="2c", community=community)


def v1(community: str) -> SnmpCredentials:
    return SnmpCredentials(name="v1", version="1", community=community)


def v3(context: str) -> SnmpCredentials:
    return SnmpCredentials(
        name="v3 authPriv",
        version="3",
        user=V3_USER,
        auth_protocol="sha256",
        auth_key=V3_AUTH_KEY,
        priv_protocol="aes128",
        priv_key=V3_PRIV_KEY,
        context=context,
    )


def walk(host, port, credentials, settings=WalkSettings(), **options):
    return asyncio.run(walk_device(host, port, credentials, settings, **options))


def observation_keys(result: ImportResult) -> list[str]:
    """Kinds, subjects and attributes of every observation (no time or origin), sorted."""
    return sorted(repr((o.kind, o.subject, sorted(o.attrs.items(), key=repr))) for o in result.observations)


def in_roots(oid: tuple[int, ...]) -> bool:
    return any(oid[: len(root)] == root for _, root in WALK_ROOTS)


def file_varbinds(path: Path) -> list[snmp.Varbind]:
    result = ImportResult("snmp", str(path))
    return snmp.parse_snmprec(path.read_text(encoding="utf-8", errors="surrogateescape"), result)


def corpus_params():
    if not FILES:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"corpus folder {CORPUS} is absent"))]
    return [pytest.param(path, id=community_of(path)) for path in FILES]


@pytest.mark.corpus
@pytest.mark.parametrize("path", corpus_params())
def test_corpus_live_equals_import(agents, path):
    simulator, data = agents
    host, port = simulator.endpoints[0]
    served = data / f"{community_of(path)}.snmprec"

    result = walk(host, port, [v2c(community_of(path))])

    assert result.answered
    assert result.issues == []
    assert all(result.complete.values())
    live = snmp.transform_varbinds(result.varbinds, path="live", seen_at=0.0)
    recorded = snmp.import_file(served, origin="live", seen_at=0.0)
    assert live.observations, "the live walk gave no observation"
    assert observation_keys(live) == observation_keys(recorded)

    # Varbinds outside the walk roots do not change the observations.
    inside = [varbind for varbind in file_varbinds(served) if in_roots(varbind.oid)]
    restricted = snmp.transform_varbinds(inside, path="live", seen_at=0.0)
    assert observation_keys(restricted) == observation_keys(recorded)

    # The live walk returns exactly the file's varbinds inside the roots.
    assert [(v.oid, v.type, v.value) for v in result.varbinds] == [(v.oid, v.type, v.value) for v in inside]


@pytest.mark.corpus
@pytest.mark.parametrize("path", corpus_params())
def test_corpus_record_round_trip(agents, path, tmp_path):
    simulator, data = agents
    host, port = simulator.endpoints[1]
    community = community_of(path)
    result = walk(host, port, [v2c(community)])
    recording = tmp_path / f"{community}.snmprec"

    write_snmprec(result.varbinds, recording, comment={"target": result.target, "credentials": "v2c"})

    parsed = file_varbinds(recording)
    assert [(v.oid, v.type, v.value) for v in parsed] == [(v.oid, v.type, v.value) for v in result.varbinds]
    replayed = snmp.import_file(recording, origin="live", seen_at=0.0)
    live = snmp.transform_varbinds(result.varbinds, path="live", seen_at=0.0)
    assert observation_keys(replayed) == observation_keys(live)


@pytest.mark.corpus
@pytest.mark.parametrize("fragment", ["procurve", "geist", "windows"])
def test_corpus_v3_auth_priv(agents, fragment):
    matches = [path for path in FILES if fragment in path.name]
    if not matches:
        pytest.skip(f"no corpus walk named *{fragment}*")
    simulator, data = agents
    host, port = simulator.endpoints[0]
    community = community_of(matches[0])

    result = walk(host, port, [v3(community)])

    assert result.answered
    assert result.version == "3"
    assert result.issues == []
    assert result.engine_id, "the v3 walk learned no engine id"
    recorded = snmp.import_file(data / f"{community}.snmprec", origin="live", seen_at=0.0)
    live = snmp.transform_varbinds(result.varbinds, path="live", seen_at=0.0)
    assert observation_keys(live) == observation_keys(recorded)


@pytest.mark.corpus
@pytest.mark.parametrize("fragment", ["cisco", "geist", "windows"])
def test_corpus_v1(agents, fragment):
    matches = [path for path in FILES if fragment in path.name]
    if not matches:
        pytest.skip(f"no corpus walk named *{fragment}*")
    simulator, data = agents
    host, port = simulator.endpoints[0]
    community = community_of(matches[0])

    result = walk(host, port, [v1(community)])

    assert result.answered
    assert result.version == "1"
    assert result.issues == []
    assert not any(v.type == snmp.COUNTER64 for v in result.varbinds), "SNMPv1 cannot carry Counter64"
    recorded = snmp.import_file(data / f"{community}.snmprec", origin="live", seen_at=0.0)
    live = snmp.transform_varbinds(result.varbinds, path="live", seen_at=0.0)
    assert observation_keys(live) == observation_keys(recorded)


WRONG_USER = SnmpCredentials(
    name="v3 wrong user", version="3", user="nobody", auth_protocol="sha256", auth_key="wrong-key-123",
    priv_protocol="aes128", priv_key="wrong-key-456", context="binary",
)


def test_credentials_fall_back_in_order(agents, caplog):
    simulator, _ = agents
    host, port = simulator.endpoints[0]
    settings = WalkSettings(timeout_s=0.5, retries=0)
    caplog.set_level("INFO", logger="twin.discovery.snmp_live")

    result = walk(host, port, [WRONG_USER, v2c("no-such-community"), v2c("binary")], settings)

    assert result.answered
    assert result.credentials == "v2c"
    # The earlier profiles' failures are expected with a fallback list:
    # logged, not issues of the walk.
    assert result.issues == []
    messages = [record.getMessage() for record in caplog.records if "got a response instead" in record.getMessage()]
    assert len(messages) == 2
    assert "'v3 wrong user' rejected" in messages[0]
    assert "timed out" in messages[1]
    assert all(record.levelname == "INFO" for record in caplog.records if "got a response instead" in record.getMessage())


def test_failed_profiles_are_issues_without_answer(agents):
    simulator, _ = agents
    host, port = simulator.endpoints[0]

    result = walk(host, port, [WRONG_USER, v2c("no-such-community")], WalkSettings(timeout_s=0.5, retries=0))

    assert not result.answered
    assert [issue.kind for issue in result.issues] == ["auth", "timeout"]
    assert all(issue.device == f"{host}:{port}" for issue in result.issues)


def test_no_answer_reported(agents):
    simulator, _ = agents
    host, port = simulator.endpoints[0]

    result = walk(host, port, [v2c("no-such-community")], WalkSettings(timeout_s=0.3, retries=0))

    assert not result.answered
    assert result.credentials is None
    assert result.varbinds == []
    assert [issue.kind for issue in result.issues] == ["timeout"]
    assert f"{host}:{port}" in result.issues[0].message


def snmpbulkwalk_oids(host: str, port: int, community: str, oid: str) -> tuple[list[str], str]:
    completed = subprocess.run(
        ["snmpbulkwalk", "-v2c", "-c", community, "-On", "-Cr3", "-t", "2", "-r", "1", f"{host}:{port}", oid],
        capture_output=True,
        text=True,
        timeout=30,
    )
    oids = [line.split(" = ")[0].lstrip(".") for line in completed.stdout.splitlines() if " = " in line]
    return oids, completed.stderr


def test_order_check_keeps_prefix(agents):
    simulator, _ = agents
    host, port = simulator.endpoints[0]
    if_table = [(name, oid) for name, oid in WALK_ROOTS if name == "ifTable"]
    # net-snmp stops at the same point and names the OID that went backwards.
    expected, stderr = snmpbulkwalk_oids(host, port, "loop", "1.3.6.1.2.1.2.2.1")
    assert "OID not increasing" in stderr
    kept = expected[: expected.index("1.3.6.1.2.1.2.2.1.1.5") + 1]

    result = walk(host, port, [v2c("loop")], WalkSettings(max_repetitions=3), roots=if_table)

    assert [".".join(map(str, v.oid)) for v in result.varbinds] == kept
    assert [issue.kind for issue in result.issues] == ["order"]
    assert result.issues[0].oid == "1.3.6.1.2.1.2.2.1.1.3"
    assert result.complete == {"ifTable": False}


def test_order_issue_limited_to_its_root(agents):
    simulator, _ = agents
    host, port = simulator.endpoints[0]

    result = walk(host, port, [v2c("loop")], WalkSettings(max_repetitions=3))

    assert [issue.kind for issue in result.issues] == ["order"]
    assert result.complete["ifTable"] is False
    assert result.complete["ifXTable"] is True
    assert result.complete["system"] is True
    names = [".".join(map(str, v.oid)) for v in result.varbinds]
    assert "1.3.6.1.2.1.31.1.1.1.1.1" in names
    assert "1.3.6.1.2.1.1.5.0" in names


@pytest.mark.corpus
def test_row_cap_cuts_table(agents):
    matches = [path for path in FILES if "procurve" in path.name]
    if not matches:
        pytest.skip("no corpus walk named *procurve*")
    simulator, data = agents
    host, port = simulator.endpoints[0]
    community = community_of(matches[0])
    if_table = [(name, oid) for name, oid in WALK_ROOTS if name == "ifTable"]
    file_rows = [v for v in file_varbinds(data / f"{community}.snmprec") if v.oid[:9] == if_table[0][1]]
    assert len(file_rows) > 30

    result = walk(host, port, [v2c(community)], WalkSettings(table_row_cap=30, max_repetitions=7), roots=if_table)

    assert [(v.oid, v.value) for v in result.varbinds] == [(v.oid, v.value) for v in file_rows[:30]]
    assert [issue.kind for issue in result.issues] == ["cap"]
    assert result.complete == {"ifTable": False}


def test_binary_strings_kept(agents, tmp_path):
    simulator, data = agents
    host, port = simulator.endpoints[0]
    expected = file_varbinds(data / "binary.snmprec")

    result = walk(host, port, [v2c("binary")])

    assert [(v.oid, v.type, v.value) for v in result.varbinds] == [(v.oid, v.type, v.value) for v in expected]
    recording = tmp_path / "binary.snmprec"
    write_snmprec(result.varbinds, recording)
    assert file_varbinds(recording) == [v._replace(line=position) for position, v in enumerate(result.varbinds, 1)]


def test_recording_served_again(agents, tmp_path):
    """A recording written by the walker is a valid snmpsim data file."""
    simulator, data = agents
    host, port = simulator.endpoints[0]
    first = walk(host, port, [v2c("binary")])
    replay_data = tmp_path / "replay"
    replay_data.mkdir()
    write_snmprec(first.varbinds, replay_data / "replayed.snmprec", comment={"target": first.target})

    with Snmpsim(replay_data, 1) as replay:
        replay_host, replay_port = replay.endpoints[0]
        second = walk(replay_host, replay_port, [v2c("replayed")])

    assert second.issues == []
    assert [(v.oid, v.type, v.value) for v in second.varbinds] == [(v.oid, v.type, v.value) for v in first.varbinds]
