"""Static checks of cypher/*.cypher: header, declared model names, bounded paths, parameters only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from twin.analysis import CATALOGUE
from twin.exceptions import ConfigError
from twin.graph.cypher import HEADER_FIELDS as RUNNER_HEADER_FIELDS, load_query, query_names
from twin.model import schema

CYPHER_DIR = Path(__file__).resolve().parents[2] / "cypher"
FILES = sorted(CYPHER_DIR.glob("*.cypher"))
HEADER_FIELDS = ("name", "category", "description", "parameters", "limits", "cannot see", "revision")

# The Neo4j store adds ``site`` to every node and relationship, and marks
# relationship endpoints that no node row wrote with the Placeholder label.
STORE_PROPERTIES = {"site", "run_id"}
LABELS = {
    decl.label: {p.name for p in decl.properties} | {p.name for p in schema.PROVENANCE} | STORE_PROPERTIES
    for decl in schema.NODES
}
LABELS["Placeholder"] = set()
REL_TYPES = {
    decl.type: {p.name for p in decl.properties} | {p.name for p in schema.PROVENANCE} | STORE_PROPERTIES
    for decl in schema.RELATIONSHIPS
}
# Labels either end of COMMUNICATES_WITH may carry, from the schema's pattern.
ENDPOINT_LABELS = set(re.findall(r"\w+", schema.relationship("COMMUNICATES_WITH").pattern.split("->")[1]))


def _header(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        if not line.startswith("//"):
            break
        key, sep, value = line[2:].strip().partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _body(text: str) -> str:
    """Return the query without comment lines and string literals."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("//")]
    return re.sub(r"'[^']*'", "''", "\n".join(lines))


def test_one_file_per_query():
    assert {f.stem for f in FILES} == set(CATALOGUE)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_header_fields(path):
    header = _header(path.read_text(encoding="utf-8"))
    missing = [f for f in HEADER_FIELDS if not header.get(f)]
    assert not missing, f"{path.name}: missing header fields {missing}"
    assert header["name"] == path.stem
    assert header["revision"].isdigit()


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_declared_labels_types_and_properties(path):
    body = _body(path.read_text(encoding="utf-8"))
    variables: dict[str, set[str]] = {}
    for var, label in re.findall(r"\(\s*(\w*)\s*:\s*(\w+)", body):
        assert label in LABELS, f"{path.name}: undeclared label {label}"
        if var:
            variables.setdefault(var, set()).update(LABELS[label])
    for var, rel in re.findall(r"\[\s*(\w*)\s*:\s*(\w+)", body):
        assert rel in REL_TYPES, f"{path.name}: undeclared relationship type {rel}"
        if var:
            variables.setdefault(var, set()).update(REL_TYPES[rel])
    # Label predicates such as `src:Device` outside patterns.
    for label in re.findall(r"\b\w+:(\w+)\b", body):
        if label[0].isupper():
            assert label in LABELS or label in REL_TYPES, f"{path.name}: undeclared label {label}"
    # Variables bound with alternative labels (WHERE src:Device OR src:External), or a
    # communication endpoint chosen by CASE and tested for one of its labels.
    for var, label in re.findall(r"\b(\w+):([A-Z]\w*)\b", body):
        if label in LABELS:
            variables.setdefault(var, set()).update(LABELS[label])
        if label in ENDPOINT_LABELS:
            for other in ENDPOINT_LABELS:
                variables[var].update(LABELS[other])
    for var, prop in re.findall(r"\b([a-z_]\w*)\.([a-z_]\w*)\b", body):
        if var in variables:
            assert prop in variables[var], f"{path.name}: {var}.{prop} is not a declared property"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_paths_bounded_and_limited(path):
    body = _body(path.read_text(encoding="utf-8"))
    assert re.search(r"\bLIMIT\b", body), f"{path.name}: no LIMIT"
    for match in re.finditer(r"\*\s*([^\]\s]*)", body):
        spec = match.group(1)
        if spec.startswith(("1..", "0..")) or spec[:1].isdigit():
            assert re.fullmatch(r"\d+\.\.\d+", spec), f"{path.name}: unbounded or parameterised length {spec!r}"
    assert "*]" not in body.replace(" ", "")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_balanced_brackets(path):
    body = _body(path.read_text(encoding="utf-8"))
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    for char in body:
        if char in "([{":
            stack.append(char)
        elif char in pairs:
            assert stack and stack[-1] == pairs[char], f"{path.name}: unbalanced {char}"
            stack.pop()
    assert not stack, f"{path.name}: unclosed {stack}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_interpolated_values(path):
    text = path.read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
    for pattern in (r"%\(?\w*\)?s", r"\{\w*\}", r"\$\{", r"\{\{", r"\+\s*\$\w+\s*\+"):
        assert not re.search(pattern, body), f"{path.name}: looks like string interpolation ({pattern})"
    declared = set(re.findall(r"\$(\w+)", _header(text)["parameters"]))
    used = set(re.findall(r"\$(\w+)", body))
    assert used <= declared, f"{path.name}: parameters used but not declared: {used - declared}"


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_load_query_parses_header(name):
    query = load_query(name)
    assert query.name == name
    assert tuple(query.header)[: len(RUNNER_HEADER_FIELDS)] == RUNNER_HEADER_FIELDS
    assert query.parameters and "site" in query.parameters


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_declared_parameters_equal_used(path):
    text = path.read_text(encoding="utf-8")
    declared = re.findall(r"\$(\w+)", _header(text)["parameters"])
    used = set(re.findall(r"\$(\w+)", _body(text)))
    assert len(declared) == len(set(declared)), f"{path.name}: a parameter is declared twice"
    assert set(declared) == used


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_variable_length_bounds_literal(path):
    body = _body(path.read_text(encoding="utf-8"))
    for match in re.finditer(r"\[\s*\w*\s*:\s*\w+[^\]*]*\*([^\]]*)\]", body):
        assert re.fullmatch(r"\s*\d+\.\.\d+\s*", match.group(1)), f"{path.name}: variable-length bound {match.group(0)!r}"
    assert not re.search(r"\{\s*\d*\s*,\s*\}|\)\s*[+*]\s*\(", body), f"{path.name}: unbounded quantified path pattern"


def test_load_query_rejects_undeclared_parameter(tmp_path):
    text = "\n".join(f"// {field}: x" for field in RUNNER_HEADER_FIELDS).replace("// name: x", "// name: broken")
    text = text.replace("// parameters: x", "// parameters: $site")
    (tmp_path / "broken.cypher").write_text(text + "\nMATCH (d:Device {site: $site}) RETURN d LIMIT $rows\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="rows"):
        load_query("broken", tmp_path)


def test_load_query_unknown_name_lists_known():
    with pytest.raises(ConfigError, match="misplaced_devices"):
        load_query("no_such_query")


def test_query_names_match_catalogue():
    assert query_names() == sorted(CATALOGUE)


def test_attack_paths_expands_one_hop_per_match():
    # A variable-length or quantified COMMUNICATES_WITH pattern enumerates every walk from every entry before
    # any filter applies, and that timed out at 100,000 devices. The search must expand one hop per MATCH.
    body = _body((CYPHER_DIR / "attack_paths.cypher").read_text(encoding="utf-8"))
    assert not re.search(r"COMMUNICATES_WITH\s*\*", body)
    assert not re.search(r"\)\s*\{\s*\d*\s*,\s*\d*\s*\}", body)
    assert not re.search(r"\b(?:SHORTEST|shortestPath|allShortestPaths)\b", body)
    assert "$permitted_paths" in body
