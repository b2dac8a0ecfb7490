"""Real flow captures and IPFIX files of the shared corpus: record counts against tshark, and twin build.

Expected counts come from tshark 4.0 at test time. ``-2`` (two passes) lets
tshark decode a NetFlow v9 data set that comes before its template in the
same datagram, as the product's decoder does by holding it.
"""

from __future__ import annotations

import inspect
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twin import pipeline
from twin.api import Workspace
from twin.cli.main import app
from twin.discovery import import_path, pcap
from twin.discovery.flowrecords import addr_texts
from twin.discovery.netflow import FlowDecoder

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
V5 = CORPUS / "netflow" / "akvorado_netflow_v5.pcap"
V9 = CORPUS / "netflow" / "akvorado_netflow_v9_templates_and_data.pcap"
IPFIX_TEMPLATES = CORPUS / "ipfix" / "akvorado_ipfix_ipfixprobe_templates_pen29305.pcap"
IPFIX_DATA = CORPUS / "ipfix" / "akvorado_ipfix_ipfixprobe_data.pcap"
IPFIX_FILE = CORPUS / "ipfix" / "ipfixcol2_example_flows.ipfix"
HL7 = CORPUS / "pcap-medical" / "ndpi_hl7_mllp_tcp6661.pcap"

pytestmark = pytest.mark.corpus

SITE_YAML = """\
site: {name: corpus-flows}
segments:
  - id: lab
    cidrs: [10.0.0.0/8]
    zone: it
"""


def corpus(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"corpus file {path} is absent")
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    return path


def tshark_fields(path: Path, fields: list[str], *extra: str) -> list[str]:
    """Return every value of the fields over all packets (tshark joins repeats with commas)."""
    command = ["tshark", "-2", "-n", "-r", str(path), *extra, "-T", "fields", "-E", "occurrence=a"]
    for name in fields:
        command += ["-e", name]
    output = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    values = []
    for line in output.splitlines():
        for column in line.split("\t"):
            values.extend(value for value in column.split(",") if value)
    return values


def flow_sources(path: Path, *extra: str) -> list[str]:
    return tshark_fields(path, ["cflow.srcaddr", "cflow.srcaddrv6"], *extra)


def decoded_sources(table) -> list[str]:
    return addr_texts(table["src_addr"])


# --------------------------------------------------------------------------
# Record counts against tshark


def test_netflow_v5_on_port_9990(tmp_path):
    path = corpus(V5)
    expected = flow_sources(path, "-d", "udp.port==9990,cflow")
    expected_bytes = sum(int(v) for v in tshark_fields(path, ["cflow.octets"], "-d", "udp.port==9990,cflow"))

    table, problems, counters = pcap.read_flow_capture(path, [9990])

    assert problems == []
    assert table.num_rows == len(expected)
    assert sorted(decoded_sources(table)) == sorted(expected)
    # The header's sampling interval is 0 (not sampled), so the bytes are as sent.
    assert sum(table["bytes"].to_pylist()) == expected_bytes


def test_netflow_v9_templates_and_data():
    path = corpus(V9)
    expected = flow_sources(path)

    table, problems, counters = pcap.read_flow_capture(path, [2055])

    assert problems == []
    assert table.num_rows == len(expected)
    assert sorted(decoded_sources(table)) == sorted(expected)
    assert counters.undecodable == 0


def test_ipfix_templates_then_data_share_decoder(tmp_path):
    templates, data = corpus(IPFIX_TEMPLATES), corpus(IPFIX_DATA)
    merged = tmp_path / "merged.pcap"
    subprocess.run(["mergecap", "-F", "pcap", "-w", str(merged), str(templates), str(data)], check=True, timeout=60)
    expected = flow_sources(merged)

    decoder = FlowDecoder()
    first, _, _ = pcap.read_flow_capture(templates, [4739], decoder)
    second, problems, counters = pcap.read_flow_capture(data, [4739], decoder)
    from_merged, _, _ = pcap.read_flow_capture(merged, [4739])

    assert first.num_rows == 0
    assert second.num_rows == len(expected)
    assert sorted(decoded_sources(second)) == sorted(expected)
    assert from_merged.num_rows == len(expected)
    assert counters.enterprise_fields.get(29305, 0) > 0


def test_ipfix_data_alone_is_explained():
    path = corpus(IPFIX_DATA)

    result = import_path(path)

    assert result.records_read == 0
    assert result.counts["undecodable"] == 1
    assert any("template never arrived" in issue.message for issue in result.issues)


def test_ipfix_templates_alone_are_explained():
    result = import_path(corpus(IPFIX_TEMPLATES))

    assert result.records_read == 0
    assert result.counts["templates"] > 0
    assert any("templates and no flow records" in issue.message for issue in result.issues)


def test_ipfix_file():
    path = corpus(IPFIX_FILE)
    expected = flow_sources(path)

    result = import_path(path)

    assert result.records_read == len(expected)
    assert result.records_skipped == 0
    assert int(result.flows["flows"].sum()) + result.counts.get("not_device_destinations", 0) == len(expected)


def test_hl7_capture_becomes_edge():
    path = corpus(HL7)
    packets = tshark_fields(path, ["frame.number"])
    ip_bytes = sum(int(v) for v in tshark_fields(path, ["ip.len"]))
    conversations = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-q", "-z", "conv,tcp"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    conversation_lines = [line for line in conversations.splitlines() if "<->" in line]

    table, problems = pcap.capture_to_flows(path)
    result = import_path(path)

    assert problems == []
    assert table.num_rows == len(conversation_lines)
    assert sum(table["packets"].to_pylist()) == len(packets)
    assert sum(table["bytes"].to_pylist()) == ip_bytes
    # tshark prints each conversation as "A:port <-> B:port".
    ends = {part.strip() for part in conversation_lines[0].split("<->")}
    ends = {tuple(end.split()[0].rsplit(":", 1)) for end in ends}
    server = next(end for end in ends if end[1] == "6661")
    client = next(end for end in ends if end != server)
    edge = result.flows.iloc[0]
    assert (edge["src_ip"], edge["dst_ip"], edge["proto"], edge["dst_port"]) == (client[0], server[0], "tcp", 6661)
    assert edge["packets"] == len(packets)


# --------------------------------------------------------------------------
# twin build on a site folder of corpus files


@pytest.fixture()
def flow_site(tmp_path):
    for path in (V5, V9, IPFIX_FILE, HL7):
        corpus(path)
    site = tmp_path / "site"
    site.mkdir()
    (site / "site.yaml").write_text(SITE_YAML)
    for path in (V5, V9, IPFIX_FILE, HL7):
        (site / path.name).symlink_to(path)
    return site


def communication_keys(workspace: Path) -> set[tuple]:
    """Return (source IP, destination IP, proto, port) of every communication of the latest snapshot."""
    twin = Workspace(workspace).twin()
    ips = {row.device_id: list(row.ips) for row in twin.tables["devices"].itertuples()}
    keys = set()
    for row in twin.tables["communications"].itertuples():
        src = ips[row.src_id][0] if row.src_kind == "device" else row.src_id
        dst = ips[row.dst_id][0] if row.dst_kind == "device" else row.dst_id
        keys.add((src, dst, row.proto, int(row.dst_port)))
    return keys


def import_summary(workspace: Path) -> dict[str, dict]:
    with Workspace(workspace).store() as store:
        run = store.resolve_snapshot(None)
        return {Path(row["path"]).name: row for row in store.import_files(run.run_id)}


def test_build_reads_captures_and_hints_flow_port(flow_site, tmp_path):
    workspace = tmp_path / "w.sqlite"

    result = CliRunner().invoke(app, ["build", str(flow_site), "--workspace", str(workspace)], catch_exceptions=False)

    assert result.exit_code == 0, result.output
    files = import_summary(workspace)
    assert files[V9.name]["records_read"] == len(flow_sources(V9))
    assert files[IPFIX_FILE.name]["records_read"] == len(flow_sources(IPFIX_FILE))
    assert files[HL7.name]["records_read"] == 1
    # Without --flow-port 9990 the NetFlow v5 capture is one UDP session, with a hint.
    assert files[V5.name]["records_read"] == 1
    assert "--flow-port 9990" in files[V5.name]["issues"][0]
    assert ("10.0.0.155", "10.0.0.126", "tcp", 6661) in communication_keys(workspace)


# NOTE: the build passes export ports to the capture import only once
# twin.pipeline.build has its flow_ports parameter; until then these tests skip.
NO_FLOW_PORTS = pytest.mark.skipif(
    "flow_ports" not in inspect.signature(pipeline.build).parameters,
    reason="twin.pipeline.build takes no flow_ports yet, so twin build has no --flow-port",
)


@NO_FLOW_PORTS
def test_build_with_flow_port_decodes_v5(flow_site, tmp_path):
    workspace = tmp_path / "w.sqlite"
    expected = flow_sources(V5, "-d", "udp.port==9990,cflow")

    result = CliRunner().invoke(
        app, ["build", str(flow_site), "--workspace", str(workspace), "--flow-port", "9990"], catch_exceptions=False
    )

    assert result.exit_code == 0, result.output
    files = import_summary(workspace)
    assert files[V5.name]["records_read"] == len(expected)
    assert not any("--flow-port" in issue for issue in files[V5.name]["issues"])
    hours = Workspace(workspace).flow_hours()
    hl7 = hours[(hours["dst_port"] == 6661) & (hours["proto"] == "tcp")]
    assert hl7["packets"].sum() == len(tshark_fields(HL7, ["frame.number"]))


@NO_FLOW_PORTS
def test_site_export_ports_setting(flow_site, tmp_path):
    (flow_site / "site.yaml").write_text(SITE_YAML + "flows:\n  export_ports: [9990]\n")
    workspace = tmp_path / "w.sqlite"

    result = CliRunner().invoke(app, ["build", str(flow_site), "--workspace", str(workspace)], catch_exceptions=False)

    assert result.exit_code == 0, result.output
    files = import_summary(workspace)
    assert files[V5.name]["records_read"] == len(flow_sources(V5, "-d", "udp.port==9990,cflow"))
