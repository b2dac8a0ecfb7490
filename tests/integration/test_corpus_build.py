"""Build a twin from the real third-party files in ../shared/corpus.

The site folder is made of symbolic links to the corpus files (nothing is
copied into the project). Expected values are read from the raw files with
plain string handling, independently of the importers.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from twin.api import Workspace
from twin.model.observation import normalise_mac

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
pytestmark = pytest.mark.corpus

SITE_YAML = """\
site: {name: corpus}
segments:
  - id: lan10
    cidrs: [10.0.0.0/8]
    zone: it
  - id: lan172
    cidrs: [172.16.0.0/12]
    zone: it
  - id: lan192
    cidrs: [192.168.0.0/16]
    zone: it
"""


def snmprec_values(path: Path, prefix: str) -> dict[str, str]:
    """Return index -> decoded text of every snmprec line under a column OID."""
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith(prefix + "."):
            continue
        oid, kind, value = line.split("|", 2)
        if kind == "4x":
            value = bytes.fromhex(value).decode("utf-8", errors="replace")
        out[oid[len(prefix) + 1 :]] = value
    return out


@pytest.fixture(scope="module")
def corpus_workspace(tmp_path_factory):
    if not CORPUS.is_dir():
        pytest.skip(f"{CORPUS} not present")
    site = tmp_path_factory.mktemp("corpus-site")
    (site / "site.yaml").write_text(SITE_YAML)
    for folder in ("snmp", "nmap", "zeek"):
        for path in sorted((CORPUS / folder).iterdir()):
            (site / f"{folder}-{path.name}").symlink_to(path)
    ws = Workspace(tmp_path_factory.mktemp("ws") / "w.sqlite")
    result = ws.build(site)
    return ws, result


def test_every_corpus_file_imports_cleanly(corpus_workspace):
    _, result = corpus_workspace
    assert len(result.files) == len(list((CORPUS / "snmp").iterdir())) + len(list((CORPUS / "nmap").iterdir())) + len(
        list((CORPUS / "zeek").iterdir())
    )
    problems = [(f.path, f.error, f.records_skipped) for f in result.files if f.error or f.records_skipped]
    assert problems == []
    assert all(f.records_read > 0 for f in result.files)


def test_cdp_neighbours_become_devices(corpus_workspace):
    ws, _ = corpus_workspace
    walk = CORPUS / "snmp" / "snmpsimdata_cisco_c3750_cdp125.snmprec"
    device_ids = {v.strip().lower() for v in snmprec_values(walk, "1.3.6.1.4.1.9.9.23.1.2.1.1.6").values()}
    hostnames = set(ws.devices()["hostname"].dropna())
    assert device_ids - hostnames == set()
    aps = ws.devices()[ws.devices()["hostname"].isin(device_ids)]
    assert set(aps["device_class"]) <= {"wireless_ap", "wireless_controller", "switch", "router", "ip_phone"}


def test_lldp_mac_chassis_ids_become_devices(corpus_workspace):
    ws, _ = corpus_workspace
    walk = CORPUS / "snmp" / "snmpsimdata_hpe_procurve_6120xg_blade.snmprec"
    subtypes = snmprec_values(walk, "1.0.8802.1.1.2.1.4.1.1.4")
    chassis = {}
    for line in walk.read_text().splitlines():
        if line.startswith("1.0.8802.1.1.2.1.4.1.1.5."):
            oid, kind, value = line.split("|", 2)
            chassis[oid[len("1.0.8802.1.1.2.1.4.1.1.5.") :]] = value
    macs = {normalise_mac(bytes.fromhex(chassis[i])) for i, st in subtypes.items() if st == "4"}
    assert macs
    known = {m for ms in ws.devices()["macs"] for m in ms}
    assert macs - known == set()
    links = ws.twin().links
    lldp_links = links[links["source"] == "lldp"]
    assert len(lldp_links) >= len(macs)


def test_nmap_hosts_with_mac_keep_vendor(corpus_workspace):
    ws, _ = corpus_workspace
    text = (CORPUS / "nmap" / "libnmap_full_sudo6_lan_24.xml").read_text()
    expected = set()
    for chunk in text.split('addrtype="mac"')[:-1]:
        addr = chunk.rsplit('addr="', 1)[1].split('"', 1)[0]
        expected.add(normalise_mac(addr))
    devices = ws.devices()
    found = devices[devices["macs"].map(lambda ms: bool(set(ms) & expected))]
    assert len(found) == len(expected)
    assert found["vendor"].notna().all()


def test_zeek_addresses_split_internal_external(corpus_workspace):
    ws, _ = corpus_workspace
    path = CORPUS / "zeek" / "rita_zeek_conn_json_ndjson.log"
    responders = {json.loads(line)["id.resp_h"] for line in path.read_text().splitlines() if line.strip()}
    public = {ip for ip in responders if ipaddress.ip_address(ip).is_global}
    externals = set(ws.twin().externals["address"])
    assert public - externals == set()
    comms = ws.twin().communications
    assert set(comms.loc[comms["dst_kind"] == "external", "dst_id"]) >= public
