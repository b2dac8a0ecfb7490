"""The SNMP v1/v2c client (twin.discovery.snmp_wire) against snmpsim on 127.0.0.1.

snmpsim serves walks written by the sample-network generator, and the small
real walks of the corpus when ``../shared/corpus`` is present. Each walk is
walked with GETBULK through :class:`CommunityClient` until endOfMibView, and
every varbind must equal the file's line as
:func:`twin.discovery.snmp.parse_snmprec` reads it. Needs snmpsim (with
pysmi) and net-snmp's snmpget, which the snmpsim runner uses to wait for the
agent; skipped otherwise.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from tests.lab.snmpsim import Snmpsim, snmpsim_unavailable
from twin.discovery import snmp
from twin.discovery.snmp_wire import CommunityClient, RequestTimeout
from twin.model.observation import ImportResult
from twin.sample.plan import build_plan
from twin.sample.writers import write_snmp

_REASON = snmpsim_unavailable()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "snmp"
# Corpus walks up to this size are walked too; the larger ones (1 to 2 MB)
# are walked by test_snmp_live_corpus.py.
MAX_CORPUS_BYTES = 200_000
CORPUS_FILES = sorted(path for path in CORPUS.glob("*.snmprec") if path.stat().st_size <= MAX_CORPUS_BYTES) if CORPUS.is_dir() else []

TIMEOUT_S = 2.0
RETRIES = 1
# Upper bound of one whole test in seconds (the walks take well under one).
TEST_LIMIT_S = 120.0

SYSTEM = (1, 3, 6, 1, 2, 1, 1)
SYS_NAME = (1, 3, 6, 1, 2, 1, 1, 5, 0)


def community_of(path: Path) -> str:
    return path.stem.removeprefix("snmpsimdata_")


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    """One snmpsim port serving the generated and the small corpus walks.

    Yields ``(host, port, generated)``: ``generated`` lists the generated
    walk files in the served folder (file name = community).
    """
    data = tmp_path_factory.mktemp("snmpsim-data")
    site = tmp_path_factory.mktemp("generated-site")
    write_snmp(build_plan(60, 11, "wire", "hospital"), site)
    generated = []
    for path in sorted(site.glob("*.snmprec")):
        shutil.copyfile(path, data / path.name)
        generated.append(data / path.name)
    for path in CORPUS_FILES:
        shutil.copyfile(path, data / f"{community_of(path)}.snmprec")
    with Snmpsim(data, 1) as simulator:
        host, port = simulator.endpoints[0]
        yield host, port, generated


class FileVarbinds:
    """The varbinds of one walk file, sorted by OID, and the OIDs whose value snmpsim computes at run time."""

    def __init__(self, path: Path) -> None:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        result = ImportResult("snmp", str(path))
        self.varbinds = sorted((varbind.oid, varbind.type, varbind.value) for varbind in snmp.parse_snmprec(text, result))
        self.skipped = len(result.issues)
        # A TYPE field such as "2:numeric" names a snmpsim variation module.
        self.computed = {
            tuple(int(arc) for arc in line.split("|", 1)[0].strip().lstrip(".").split("."))
            for line in text.splitlines()
            if line.count("|") >= 2 and ":" in line.split("|", 2)[1]
        }


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, TEST_LIMIT_S))


async def bulk_walk(host: str, port: int, community: str, max_repetitions: int, request_limit: int) -> list[tuple]:
    """Walk everything after OID 0.0 with GETBULK until endOfMibView, in at most ``request_limit`` requests."""
    client = await CommunityClient.open(host, port)
    walked: list[tuple] = []
    last = (0, 0)
    try:
        for _ in range(request_limit):
            response = await client.request(
                1, community.encode(), "bulk", [last], max_repetitions=max_repetitions, timeout_s=TIMEOUT_S, retries=RETRIES
            )
            assert response.error_status == 0, f"error-status {response.error_status} after {last}"
            assert response.varbinds, f"empty response after {last}"
            for oid, value_type, value in response.varbinds:
                if value_type == snmp.END_OF_MIB_VIEW:
                    return walked
                assert oid > last, f"{oid} does not follow {last}"
                walked.append((oid, value_type, value))
                last = oid
    finally:
        client.close()
    raise AssertionError(f"the walk of {community} did not reach endOfMibView within {request_limit} requests")


async def next_walk(host: str, port: int, community: str, root: tuple[int, ...], request_limit: int) -> list[tuple]:
    """Walk the subtree ``root`` with SNMPv1 GETNEXT, in at most ``request_limit`` requests."""
    client = await CommunityClient.open(host, port)
    walked: list[tuple] = []
    last = root
    try:
        for _ in range(request_limit):
            response = await client.request(0, community.encode(), "next", [last], timeout_s=TIMEOUT_S, retries=RETRIES)
            # An SNMPv1 agent reports the end of its MIB view with noSuchName (2).
            if response.error_status == 2:
                return walked
            assert response.error_status == 0, f"error-status {response.error_status} after {last}"
            [(oid, value_type, value)] = response.varbinds
            if oid[: len(root)] != root:
                return walked
            assert oid > last, f"{oid} does not follow {last}"
            walked.append((oid, value_type, value))
            last = oid
    finally:
        client.close()
    raise AssertionError(f"the GETNEXT walk of {root} did not leave the subtree within {request_limit} requests")


def assert_same_varbinds(walked: list[tuple], expected: FileVarbinds) -> None:
    """Compare walked varbinds with the file's. Values that snmpsim computes compare by OID and type only."""
    assert len(walked) == len(expected.varbinds)
    for position, (got, want) in enumerate(zip(walked, expected.varbinds)):
        if want[0] in expected.computed:
            assert got[:2] == want[:2], f"varbind {position}"
        else:
            assert got == want, f"varbind {position}"


@pytest.mark.parametrize("max_repetitions", [1, 25, 100])
def test_bulk_walk_generated_files(agent, max_repetitions):
    host, port, generated = agent
    assert len(generated) >= 2

    for path in generated:
        expected = FileVarbinds(path)
        assert expected.skipped == 0
        walked = run(bulk_walk(host, port, path.stem, max_repetitions, request_limit=len(expected.varbinds) + 10))

        assert_same_varbinds(walked, expected)


@pytest.mark.skipif(not CORPUS_FILES, reason=f"corpus folder {CORPUS} is absent or has no walk under {MAX_CORPUS_BYTES} bytes")
@pytest.mark.parametrize("path", CORPUS_FILES, ids=[community_of(path) for path in CORPUS_FILES])
def test_bulk_walk_corpus_file(agent, path):
    host, port, _ = agent
    community = community_of(path)
    expected = FileVarbinds(path)

    walked = run(bulk_walk(host, port, community, 25, request_limit=len(expected.varbinds) + 10))

    assert_same_varbinds(walked, expected)


def test_v1_next_walk_system_group(agent):
    host, port, generated = agent
    path = generated[0]
    expected = FileVarbinds(path)
    subtree = [varbind for varbind in expected.varbinds if varbind[0][: len(SYSTEM)] == SYSTEM]
    assert subtree

    walked = run(next_walk(host, port, path.stem, SYSTEM, request_limit=len(subtree) + 5))

    assert walked == subtree


async def request_once(host, port, version, community, oids, *, timeout_s=TIMEOUT_S, retries=RETRIES):
    """Send one GET through a new client and return the response."""
    client = await CommunityClient.open(host, port)
    try:
        return await client.request(version, community, "get", oids, timeout_s=timeout_s, retries=retries)
    finally:
        client.close()


def test_v2c_get_present_and_missing(agent):
    host, port, generated = agent
    path = generated[0]
    expected = dict((oid, (value_type, value)) for oid, value_type, value in FileVarbinds(path).varbinds)
    missing = SYSTEM + (99, 0)
    assert missing not in expected

    response = run(request_once(host, port, 1, path.stem.encode(), [SYS_NAME, missing]))

    assert response.error_status == 0
    assert response.varbinds[0] == (SYS_NAME, *expected[SYS_NAME])
    assert response.varbinds[1][0] == missing
    assert response.varbinds[1][1] in (snmp.NO_SUCH_OBJECT, snmp.NO_SUCH_INSTANCE)
    assert response.varbinds[1][2] is None


def test_v1_get_missing_is_no_such_name(agent):
    host, port, generated = agent
    path = generated[0]
    missing = SYSTEM + (99, 0)

    response = run(request_once(host, port, 0, path.stem.encode(), [SYS_NAME, missing]))

    # RFC 1157: noSuchName (2), and error-index names the second varbind.
    assert response.version == 0
    assert response.error_status == 2
    assert response.error_index == 2


def test_unknown_community_times_out(agent):
    host, port, _ = agent

    with pytest.raises(RequestTimeout) as caught:
        run(request_once(host, port, 1, b"no-such-community", [SYS_NAME], timeout_s=0.3, retries=1))

    assert caught.value.attempts == 2
