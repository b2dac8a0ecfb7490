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
