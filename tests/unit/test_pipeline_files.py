"""Which files of a site folder a build reads."""

from __future__ import annotations

from twin.pipeline import find_discovery_files


def test_yaml_configuration_is_not_discovery_input(tmp_path):
    (tmp_path / "site.yaml").write_text("site: {name: x}\n", encoding="utf-8")
    (tmp_path / "proposed_policy.yaml").write_text("policy:\n  rules: []\n", encoding="utf-8")
    (tmp_path / "notes.yml").write_text("a: 1\n", encoding="utf-8")
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "mystery.bin").write_bytes(b"\x00\x01junk")
    names = {path.name for path, _ in find_discovery_files(tmp_path)}
    assert names == {"mystery.bin"}
