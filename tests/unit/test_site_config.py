"""Site configuration: valid files load, each invalid field names its line."""

import pytest

from twin.exceptions import ConfigError
from twin.model.site import Selector, ServiceSpec, parse_site

VALID = """\
site: {name: Example General}
segments:
  - id: pumps
    cidrs: [10.20.0.0/24]
    vlan_ids: [120]
    zone: clinical
    designated_classes: [infusion_pump]
  - id: servers
    cidrs: [10.30.0.0/24]
    zone: it
policy:
  default_action: deny
  rules:
    - name: pumps-to-druglib
      action: allow
      from: class:infusion_pump
      to: {segment: servers}
      services: [https]
      required: true
attack_paths:
  entry_points: [internet, "zone:guest"]
  targets: ["criticality:life_critical"]
"""


def test_valid_site_loads():
    site = parse_site(VALID, "site.yaml")
    assert [s.id for s in site.segments] == ["pumps", "servers"]
    rule = site.policy.rules[0]
    assert (rule.from_.device_class, rule.to.segment, rule.required) == (["infusion_pump"], ["servers"], True)
    assert [(s.proto, s.port_min) for s in rule.service_specs()] == [("tcp", 443), ("tcp", 8443)]
    assert site.attack_paths.entry_points[0].internet


@pytest.mark.parametrize(
    "old, new, line, field",
    [
        ("cidrs: [10.20.0.0/24]", "cidrs: [10.20.0.0/33]", 4, "segments.0.cidrs"),
        ("vlan_ids: [120]", "vlan_ids: [5000]", 5, "segments.0.vlan_ids"),
        ("services: [https]", "services: [tcp/70000]", 18, "policy.rules.0.services"),
        ("to: {segment: servers}", "to: {segment: nowhere}", 17, "policy.rules.0.to"),
        ("- id: servers", "- id: pumps", 8, "segments.1.id"),
        ("cidrs: [10.30.0.0/24]", "cidrs: [10.30.0.1/24]", 9, "segments.1.cidrs"),
        ("designated_classes: [infusion_pump]", "designated_classes: [infusion_pmp]", 7, "segments.0.designated_classes"),
        ("from: class:infusion_pump", "from: class:infusoin_pump", 16, "policy.rules.0.from.device_class"),
        ("action: allow", "action: permit", 15, "policy.rules.0.action"),
        ("zone: it", "zone: it\n    colour: red", 11, "segments.1.colour"),
    ],
)
def test_invalid_field_names_line(old, new, line, field):
    text = VALID.replace(old, new)
    with pytest.raises(ConfigError) as info:
        parse_site(text, "site.yaml")
    message = str(info.value)
    assert f"field {field}" in message
    if line is not None:
        assert f"site.yaml:{line}:" in message


def test_empty_file_rejected():
    with pytest.raises(ConfigError, match="site configuration is empty"):
        parse_site("", "site.yaml")


def test_required_deny_rejected():
    text = VALID.replace("action: allow", "action: deny")
    with pytest.raises(ConfigError, match="required but its action is deny"):
        parse_site(text, "site.yaml")


def test_yaml_syntax_error_names_line():
    with pytest.raises(ConfigError, match=r"site.yaml:3: invalid YAML"):
        parse_site("site: {name: x}\nfoo: 1\nbar: baz: qux\n", "site.yaml")


def test_selector_shorthands():
    assert Selector.parse("any").any
    assert Selector.parse("device:10.0.0.5").device == ["10.0.0.5"]
    with pytest.raises(ValueError, match="invalid selector"):
        Selector.parse("colour:red")


def test_service_specs():
    assert ServiceSpec.parse_many("udp/1000-2000")[0].matches("udp", 1500)
    assert not ServiceSpec.parse_many("udp/1000-2000")[0].matches("tcp", 1500)
    assert {s.port_min for s in ServiceSpec.parse_many("dicom")} == {104, 11112}
    with pytest.raises(ValueError, match="invalid service"):
        ServiceSpec.parse_many("http/80")


# -- discovery: do-not-probe, maintenance windows, probe budgets --------------

DISCOVERY = """\
site: {name: Scan site, timezone: Europe/Berlin}
discovery:
  scopes: [10.16.0.0/16]
  exclude: [10.16.1.0/28]
  do_not_probe:
    addresses: [10.16.4.10, 10.16.9.0/24]
    mac_prefixes: ["00:1A:2B", "001a2b3c", "00-1a-2b-3c-4d", "001a.2b3c.4d5e"]
    classes: [ventilator]
  maintenance_windows:
    - {days: [sat, Sunday], start: 01:00, end: "05:00"}
    - {start: "22:30", end: "24:00"}
  budgets:
    workstation: {probes: [connect, version], ports: [ssh, https, tcp/3389, tcp/8000-8080], max_rate: 50,
                  max_connections: 4, host_timeout: 2m}
    unknown: {probes: [connect], ports: [tcp/22, tcp/80, tcp/443], max_rate: 10, max_connections: 1, host_timeout: 60s}
    printer: {ports: [tcp/80]}
"""


def test_discovery_keys_load():
    discovery = parse_site(DISCOVERY, "site.yaml").discovery
    assert discovery.do_not_probe.addresses == ["10.16.4.10/32", "10.16.9.0/24"]
    assert discovery.do_not_probe.mac_prefixes == ["00:1a:2b", "00:1a:2b:3c", "00:1a:2b:3c:4d", "00:1a:2b:3c:4d:5e"]
    windows = [(w.days, w.start, w.end) for w in discovery.maintenance_windows]
    assert windows == [
        (["sat", "sun"], "01:00", "05:00"),
        (["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "22:30", "24:00"),
    ]
    workstation = discovery.budgets["workstation"]
    assert (workstation.host_timeout, workstation.max_rate, workstation.retries) == (120, 50, None)
    assert discovery.budgets["unknown"].host_timeout == 60
    assert discovery.budgets["printer"].probes is None


def test_discovery_defaults_empty():
    discovery = parse_site("site: {name: x}\n", "site.yaml").discovery
    assert (discovery.scopes, discovery.maintenance_windows, discovery.budgets) == ([], [], {})
    assert discovery.do_not_probe.addresses == []


@pytest.mark.parametrize(
    "old, new, line, field, message",
    [
        ("printer: {ports: [tcp/80]}", "printer: {ports: [tcp/80, tcp/9100]}", 16, "discovery.budgets.printer.ports.1",
         "covers 9100"),
        ("printer: {ports: [tcp/80]}", "printer: {ports: [tcp/1-1024]}", 16, "discovery.budgets.printer.ports.0",
         "covers 515, 631"),
        ("tcp/443]", "tcp/443, tcp/631]", 15, "discovery.budgets.unknown.ports.3", "covers 631"),
        ("[connect, version]", "[version]", 13, "discovery.budgets.workstation.probes", "need 'connect'"),
        ("[connect, version]", "[none, connect]", 13, "discovery.budgets.workstation.probes", "must be alone"),
        ("[connect, version]", "[connect, synscan]", 13, "discovery.budgets.workstation.probes", "unknown probe 'synscan'"),
        ("tcp/3389", "icmp", 13, "discovery.budgets.workstation.ports", "tcp or udp ports"),
        ("max_rate: 50", "max_rate: 0", 13, "discovery.budgets.workstation.max_rate", "greater than or equal to 1"),
        ("host_timeout: 2m", "host_timeout: soon", 14, "discovery.budgets.workstation.host_timeout", "invalid duration"),
        ("unknown: {", "unknwn: {", 12, "discovery.budgets", "unknown device class 'unknwn'"),
        ('"001a2b3c"', '"001a2"', 7, "discovery.do_not_probe.mac_prefixes", "invalid MAC prefix '001a2'"),
        ("10.16.4.10,", "10.16.4.300,", 6, "discovery.do_not_probe.addresses", "invalid prefix '10.16.4.300'"),
        ("classes: [ventilator]", "classes: [ventilatr]", 8, "discovery.do_not_probe.classes", "unknown device class"),
        ("[sat, Sunday]", "[sat, someday]", 10, "discovery.maintenance_windows.0.days", "invalid day 'someday'"),
        ('end: "05:00"', 'end: "25:00"', 10, "discovery.maintenance_windows.0.end", "expected 00:00 to 24:00"),
        ('end: "05:00"', 'end: "01:00"', 10, "discovery.maintenance_windows.0", "empty maintenance window"),
        ("timezone: Europe/Berlin", "timezone: Europe/Berln", 1, "site.timezone", "unknown timezone"),
        ("scopes: [10.16.0.0/16]", "scopes: [10.16.0.1/16]", 3, "discovery.scopes", "host bits are set"),
    ],
)
def test_discovery_invalid_field_names_line(old, new, line, field, message):
    text = DISCOVERY.replace(old, new)
    assert text != DISCOVERY
    with pytest.raises(ConfigError) as info:
        parse_site(text, "site.yaml")
    error = str(info.value)
    assert f"site.yaml:{line}: field {field}:" in error
    assert message in error


SCRIPT_DB = '''\
Entry { filename = "banner.nse", categories = { "discovery", "safe", } }
Entry { filename = "http-title.nse", categories = { "default", "discovery", "safe", } }
Entry { filename = "smb-brute.nse", categories = { "brute", "intrusive", } }
Entry { filename = "broadcast-ping.nse", categories = { "broadcast", "discovery", "safe", } }
Entry { filename = "whois-ip.nse", categories = { "discovery", "external", "safe", } }
'''


@pytest.fixture
def script_db(tmp_path, monkeypatch):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "script.db").write_text(SCRIPT_DB)
    monkeypatch.setenv("NMAPDIR", str(tmp_path))
    return tmp_path


def _with_scripts(scripts: str) -> str:
    return DISCOVERY.replace("probes: [connect, version]", f"probes: [connect, scripts], scripts: {scripts}")


def test_safe_scripts_accepted(script_db):
    budget = parse_site(_with_scripts("[banner, http-title.nse]"), "site.yaml").discovery.budgets["workstation"]
    assert budget.scripts == ["banner", "http-title"]


@pytest.mark.parametrize(
    "scripts, message",
    [
        ("[smb-brute]", "nmap script 'smb-brute' has categories brute, intrusive"),
        ("[broadcast-ping]", "nmap script 'broadcast-ping' has categories broadcast, discovery, safe"),
        ("[whois-ip]", "nmap script 'whois-ip' has categories discovery, external, safe"),
        ("[no-such-script]", "unknown nmap script 'no-such-script'"),
    ],
)
def test_unsafe_or_unknown_scripts_rejected(script_db, scripts, message):
    with pytest.raises(ConfigError) as info:
        parse_site(_with_scripts(scripts), "site.yaml")
    assert "site.yaml:13: field discovery.budgets.workstation.scripts:" in str(info.value)
    assert message in str(info.value)


def test_scripts_without_script_db_rejected(tmp_path, monkeypatch):
    from twin.model import site as site_module

    monkeypatch.setenv("NMAPDIR", str(tmp_path))
    monkeypatch.setattr(site_module, "NMAP_DATA_DIRS", ())
    with pytest.raises(ConfigError, match="nmap's script.db was not found"):
        parse_site(_with_scripts("[banner]"), "site.yaml")


def test_scripts_need_scripts_probe(script_db):
    text = DISCOVERY.replace("probes: [connect, version]", "probes: [connect], scripts: [banner]")
    with pytest.raises(ConfigError, match="scripts are listed but probes has no 'scripts'"):
        parse_site(text, "site.yaml")
    with pytest.raises(ConfigError, match="no scripts are listed"):
        parse_site(DISCOVERY.replace("probes: [connect, version]", "probes: [connect, scripts]"), "site.yaml")
