"""What-if policy simulation: compare a proposed policy with the current one on the same twin.

Both policies are evaluated against the recorded communications of one
snapshot and against the query catalogue. :func:`simulate` reports

- **flows**: every observed communication with its decision under each
  policy; ``newly_blocked`` (current allows, proposed denies) and
  ``newly_allowed`` (the reverse);
- **workflows broken**: required rules (``required: true`` in either policy)
  whose covered (source device, destination device, service) triples the
  proposed policy denies, whether or not such a flow was ever observed;
- **violations** resolved and introduced (the ``segment_violations`` query
  under each policy, matched by communication);
- **attack paths** cut, opened, longer or shorter, per (mode, entry, target)
  with the minimum hop count within ``attack_paths.max_hops``: *cut* when
  the current policy lets the path through and the proposed one stops it,
  *opened* the reverse. ``observed`` mode searches the observed
  communications that each policy allows, and also today's network (every
  observed communication): a path that exists today and that both
  policies stop is *unenforced*, a gap in enforcement rather than in the
  policy. ``permitted`` mode searches the graph of services each policy
  permits;
- **exposure**: the ``external_exposure`` rows and whether each policy
  allows that communication.

:func:`load_policy` reads a proposed policy (YAML file or text, bare or
under a ``policy:`` key, so a whole site.yaml works) and
:func:`policy_to_yaml` writes one back. :func:`edit_policy` adds, removes,
moves and replaces rules with validation.

What it cannot see
------------------
The same as the queries it reuses: only recorded flows and known services.
A workflow whose source or destination selector matches no device of the
snapshot cannot be checked and is reported in ``warnings``. The internet
side of a workflow is checked only against External addresses the twin
recorded.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError

from twin.analysis import external_exposure, segment_violations
from twin.analysis._common import device_view
from twin.analysis._reach import ReachGraph
from twin.analysis.attack_paths import build_observed_graph, build_permitted_graph
from twin.exceptions import ConfigError
from twin.model.site import Policy, PolicyRule, Selector, ServiceSpec, SiteConfig, _line_map, _line_of, _loc_to_path
from twin.model.twin import Twin
from twin.policy.engine import EndpointTable, PolicyEngine, equals_text
from twin.policy.first_match import FlowDecider

__all__ = [
    "SimulationResult",
    "load_policy",
    "policy_to_yaml",
    "edit_policy",
    "simulate",
    "simulate_workspace",
    "decide_communications",
    "FLOW_COLUMNS",
    "WORKFLOW_COLUMNS",
    "ATTACK_PATH_COLUMNS",
    "SUMMARY_KEYS",
    "MAX_ATTACK_PAIRS",
    "WORKFLOW_BATCH",
]

log = logging.getLogger(__name__)

FLOW_COLUMNS = [
    "src_id", "src_kind", "src_label", "src_ip", "src_segment",
    "dst_id", "dst_kind", "dst_label", "dst_ip", "dst_segment",
    "proto", "dst_port", "bytes", "packets", "flows",
    "current_action", "current_rule", "proposed_action", "proposed_rule", "change",
]
WORKFLOW_COLUMNS = [
    "workflow", "source", "from", "to", "services", "blocked", "observed_blocked",
    "example_src", "example_dst", "example_service", "blocked_by", "current_blocked",
]
ATTACK_PATH_COLUMNS = [
    "mode", "entry", "entry_label", "target", "target_label",
    "today_hops", "current_hops", "proposed_hops", "change", "today_path", "current_path", "proposed_path",
]
SUMMARY_KEYS = (
    "newly_blocked", "newly_allowed", "workflows_broken", "violations_resolved", "violations_introduced",
    "attack_paths_cut", "attack_paths_opened", "attack_paths_unenforced", "workflows_newly_broken",
    "workflows_already_broken", "exposure_before", "exposure_after",
)
MODES = ("observed", "permitted")
# Communication key shared by the flows, violations and exposure sections.
_KEY = ["src_id", "dst_id", "proto", "dst_port"]

# (mode, entry, target) pairs kept per mode and policy (count, default 200,000);
# past it the pairs of the remaining entries are dropped with a warning.
MAX_ATTACK_PAIRS = 200_000
# Entries searched together in one batch of attack-path searches are at most this
# count divided by the graph's node count (count, default 4,000,000), which bounds
# the (entry, node) states the batch reaches. Each state costs about 24 bytes.
BFS_BATCH_STATES = 4_000_000
# (source group, destination group, service point) combinations decided per batch
# when checking one workflow (count, default 1,000,000).
WORKFLOW_BATCH = 1_000_000
# Protocols checked for a workflow service of protocol "any", besides those the rules name.
ANY_PROTOCOLS = ("tcp", "udp", "icmp", "sctp")


# ---------------------------------------------------------------------------
# Reading, writing and editing policies


def load_policy(source: str | Path | dict | Policy, *, name: str = "<policy>", site: SiteConfig | None = None) -> Policy:
    """Load a policy from a YAML file, YAML text or a mapping.

    Parameters
    ----------
    source : str, Path, dict or Policy
        A path to a YAML file, YAML text, or the parsed mapping. The
        document is either a bare policy (``default_action``,
        ``intra_segment``, ``rules``) or has a top-level ``policy:`` key,
        so a whole site.yaml works. A Policy is returned unchanged.
    name : str
        Name used in error messages for text and mappings.
    site : SiteConfig, optional
        When given, segment names in selectors must be segments of the site.

    Returns
    -------
    Policy

    Raises
    ------
    ConfigError
        The file is missing, the YAML is invalid, or a field is invalid;
        the message names the file, the line and the field.

    Examples
    --------
    >>> policy = load_policy("rules: [{name: r1, action: allow, from: any, to: zone:clinical, services: [https]}]")
    >>> policy.rules[0].to.zone
    ['clinical']
    """
    if isinstance(source, Policy):
        _check_segments(source, site, name, {}, ())
        return source
    text: str | None = None
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and source.strip().endswith((".yaml", ".yml"))):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"{path}: policy file not found; pass a YAML file with a 'policy:' mapping or a bare policy")
        raw, name = path.read_bytes(), str(path)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise ConfigError(
                f"{name}:{line}: byte 0x{raw[exc.start]:02x} at offset {exc.start} is not UTF-8; "
                "save the policy as UTF-8 text"
            ) from None
        data = _parse_yaml(text, name)
    elif isinstance(source, str):
        text = source
        data = _parse_yaml(text, name)
    elif isinstance(source, dict):
        data = source
    else:
        raise ConfigError(f"{name}: cannot read a policy from {type(source).__name__}; expected a file path, YAML text or a mapping")
    prefix: tuple = ()
    if isinstance(data, dict) and isinstance(data.get("policy"), dict):
        data, prefix = data["policy"], ("policy",)
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected a policy mapping (default_action, intra_segment, rules) or a document with a 'policy:' key, got {type(data).__name__}")
    lines = _line_map(text) if text is not None else {}
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        messages = []
        for error in exc.errors():
            loc = prefix + _loc_to_path(tuple(p for p in error["loc"] if not isinstance(p, str) or not p.startswith("function-")))
            msg = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                msg = "unknown field; valid policy fields are default_action, intra_segment and rules; rule fields are name, action, from, to, services, required and description"
            messages.append(f"{_where(name, lines, loc)}: field {'.'.join(str(p) for p in loc) or '(top level)'}: {msg}")
        raise ConfigError("invalid policy:\n  " + "\n  ".join(messages)) from None
    _check_segments(policy, site, name, lines, prefix)
    return policy


def _parse_yaml(text: str, name: str) -> Any:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{name}{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        raise ConfigError(f"{name}: the policy is empty; it needs at least 'rules:' (see docs/policy-simulation.md)")
    return data


def _where(name: str, lines: dict, loc: tuple) -> str:
    line = _line_of(lines, loc) if lines else None
    return f"{name}:{line}" if line else name


def _check_segments(policy: Policy, site: SiteConfig | None, name: str, lines: dict, prefix: tuple) -> None:
    if site is None or not site.segments:
        return
    known = {"segment": {seg.id for seg in site.segments}, "zone": {seg.zone for seg in site.segments if seg.zone}}
    messages = []
    for index, rule in enumerate(policy.rules):
        for key, selector in (("from", rule.from_), ("to", rule.to)):
            for kind, names in (("segment", selector.segment), ("zone", selector.zone)):
                # A site whose segments declare no zone cannot tell a typo.
                if not known[kind]:
                    continue
                for value in names:
                    if value not in known[kind]:
                        loc = prefix + ("rules", index, key)
                        messages.append(
                            f"{_where(name, lines, loc)}: field {'.'.join(str(p) for p in loc)}: rule {rule.name!r} names "
                            f"{kind} {value!r}, which no segment of the site has; known: {', '.join(sorted(known[kind]))}"
                        )
    if messages:
        raise ConfigError("invalid policy:\n  " + "\n  ".join(messages))


_SHORTHAND = {"segment": "segment", "zone": "zone", "device_class": "class", "device": "device",
              "criticality": "criticality", "cidr": "cidr", "building": "building"}


def _selector_data(selector: Selector) -> str | dict:
    """Return the shortest YAML form of a selector that parses back to an equal one."""
    if selector.any:
        return "any"
    keys = {key: list(getattr(selector, key)) for key in _SHORTHAND if getattr(selector, key)}
    if selector.internet:
        return "internet" if not keys else {"internet": True, **keys}
    if len(keys) == 1:
        (key, values), = keys.items()
        if len(values) == 1:
            return f"{_SHORTHAND[key]}:{values[0]}"
    return keys


def _rule_data(rule: PolicyRule) -> dict:
    data: dict[str, Any] = {"name": rule.name, "action": rule.action, "from": _selector_data(rule.from_),
                            "to": _selector_data(rule.to), "services": list(rule.services)}
    if rule.required:
        data["required"] = True
    if rule.description:
        data["description"] = rule.description
    return data


def policy_to_yaml(policy: Policy) -> str:
    """Return the policy as a YAML document with a top-level ``policy:`` key.

    :func:`load_policy` reads it back to an equal :class:`Policy`, and the
    ``policy:`` block can be pasted into a site.yaml.

    >>> policy = load_policy({"rules": [{"name": "r", "action": "deny", "from": "zone:guest", "to": "any"}]})
    >>> load_policy(policy_to_yaml(policy)) == policy
    True
    """
    data = {"policy": {"default_action": policy.default_action, "intra_segment": policy.intra_segment,
                       "rules": [_rule_data(rule) for rule in policy.rules]}}
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120, allow_unicode=True)


def _as_rule(value: PolicyRule | dict, what: str) -> PolicyRule:
    if isinstance(value, PolicyRule):
        return value
    try:
        return PolicyRule.model_validate(value)
    except ValidationError as exc:
        label = value.get("name", "(no name)") if isinstance(value, dict) else value
        details = "; ".join(
            f"field {'.'.join(str(p) for p in _loc_to_path(tuple(e['loc']))) or '(rule)'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigError(f"invalid rule {label!r} in {what}: {details}") from None


def edit_policy(
    policy: Policy,
    *,
    add: Iterable = (),
    remove: Iterable[str] = (),
    move: Iterable[tuple[str, int]] = (),
    replace: Iterable[tuple[str, PolicyRule | dict]] | dict = (),
) -> Policy:
    """Return a copy of ``policy`` with rules removed, replaced, added and moved, in that order.

    Parameters
    ----------
    policy : Policy
    add : iterable
        Rules (PolicyRule or mapping) appended at the end, or
        ``(position, rule)`` pairs inserted at a 0-based position.
    remove : iterable of str
        Names of rules to delete.
    move : iterable of (str, int)
        ``(name, position)``: move the rule to the 0-based position in the
        edited list; applied one after another.
    replace : mapping or iterable of (str, rule)
        Rule name to its new definition, kept at the same position.

    Returns
    -------
    Policy
        A new, validated policy; ``policy`` is not changed.

    Raises
    ------
    ConfigError
        An unknown rule name, a position out of range, an invalid rule, a
        duplicate name or a required rule that denies.

    Examples
    --------
    >>> base = load_policy({"rules": [{"name": "a", "action": "allow", "from": "any", "to": "any"},
    ...                              {"name": "b", "action": "deny", "from": "zone:guest", "to": "any"}]})
    >>> [r.name for r in edit_policy(base, move=[("b", 0)]).rules]
    ['b', 'a']
    """
    rules = list(policy.rules)

    def position(rule_name: str) -> int:
        for index, rule in enumerate(rules):
            if rule.name == rule_name:
                return index
        raise ConfigError(f"no rule named {rule_name!r} in the policy; known: {', '.join(r.name for r in rules) or '(none)'}")

    for rule_name in remove:
        del rules[position(rule_name)]
    pairs = replace.items() if isinstance(replace, dict) else replace
    for rule_name, new in pairs:
        rules[position(rule_name)] = _as_rule(new, f"replace[{rule_name!r}]")
    for item in add:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], int):
            at, new = item
            if not 0 <= at <= len(rules):
                raise ConfigError(f"invalid position {at} to add a rule; expected 0 to {len(rules)}")
            rules.insert(at, _as_rule(new, "add"))
        else:
            rules.append(_as_rule(item, "add"))
    for rule_name, at in move:
        rule = rules.pop(position(rule_name))
        if not 0 <= int(at) <= len(rules):
            raise ConfigError(f"invalid position {at} to move rule {rule_name!r}; expected 0 to {len(rules)}")
        rules.insert(int(at), rule)
    data = policy.model_dump(by_alias=True)
    data["rules"] = [rule.model_dump(by_alias=True) for rule in rules]
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise ConfigError(f"invalid edited policy: {details}") from None


# ---------------------------------------------------------------------------
# Result


def _records(frame: pd.DataFrame) -> list[dict]:
    if frame.empty:
        return []
    return json.loads(frame.to_json(orient="records", date_format="iso", default_handler=str))


@dataclass
class SimulationResult:
    """The changes a proposed policy makes against the current one; see :func:`simulate`."""

    current: Policy
    proposed: Policy
    flows: pd.DataFrame
    newly_blocked: pd.DataFrame
    newly_allowed: pd.DataFrame
    workflows_broken: pd.DataFrame
    violations_resolved: pd.DataFrame
    violations_introduced: pd.DataFrame
    attack_paths: pd.DataFrame
    attack_paths_cut: pd.DataFrame
    attack_paths_opened: pd.DataFrame
    exposure: pd.DataFrame
    summary: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    attack_paths_unenforced: pd.DataFrame = field(default_factory=pd.DataFrame)

    SECTIONS = (
        "newly_blocked", "newly_allowed", "workflows_broken", "violations_resolved", "violations_introduced",
        "attack_paths_cut", "attack_paths_opened", "attack_paths_unenforced", "exposure",
    )

    @property
    def breaks_workflows(self) -> bool:
        """True when the proposed policy blocks at least one required workflow."""
        return not self.workflows_broken.empty

    def newly_broken_workflow_names(self) -> list[str]:
        """Return the broken workflows that the current policy does not already break."""
        frame = self.workflows_broken
        if frame.empty:
            return []
        blocked = pd.to_numeric(frame["blocked"], errors="coerce").fillna(0)
        already = pd.to_numeric(frame["current_blocked"], errors="coerce").fillna(0)
        return list(dict.fromkeys(frame.loc[(blocked > already).to_numpy(), "workflow"]))

    def already_broken_workflow_names(self) -> list[str]:
        """Return the broken workflows that the current policy already blocks in part.

        A workflow can be both already broken and newly broken, when the
        proposal blocks more of it than the current policy does.
        """
        frame = self.workflows_broken
        if frame.empty:
            return []
        already = pd.to_numeric(frame["current_blocked"], errors="coerce").fillna(0)
        return list(dict.fromkeys(frame.loc[(already > 0).to_numpy(), "workflow"]))

    def broken_workflow_names(self) -> list[str]:
        """Return the names of the broken required workflows, in policy order of first appearance."""
        return list(dict.fromkeys(self.workflows_broken["workflow"])) if not self.workflows_broken.empty else []

    def to_dict(self) -> dict:
        """Return the whole result as JSON-ready data (no NaN, no numpy types)."""
        return {
            "summary": {key: int(value) for key, value in self.summary.items()},
            "warnings": list(self.warnings),
            "current": json.loads(self.current.model_dump_json(by_alias=True)),
            "proposed": json.loads(self.proposed.model_dump_json(by_alias=True)),
            "flows": _records(self.flows),
            **{name: _records(getattr(self, name)) for name in self.SECTIONS},
            "attack_paths": _records(self.attack_paths),
        }


# ---------------------------------------------------------------------------
# Flows


def _endpoint_info(ids: pd.Series, kinds: pd.Series, view: pd.DataFrame) -> dict[str, np.ndarray]:
    ids = ids.astype(str)
    text = ids.to_numpy(dtype=object)
    # Distinct ids are looked up once and broadcast back to the rows.
    codes, uniques = pd.factorize(ids)
    pos = pd.Index(view["device_id"]).get_indexer(pd.Index(uniques, dtype=object))[np.asarray(codes, dtype=np.int64)]
    external = equals_text(kinds, "external")
    found = (pos >= 0) & ~external
    out = {}
    for column in ("label", "ip", "segment_id"):
        values = np.full(len(text), None, dtype=object)
        values[found] = view[column].to_numpy(dtype=object)[pos[found]]
        out[column] = values
    out["label"] = np.where(pd.isna(out["label"]), text, out["label"])
    out["label"][external] = text[external]
    out["ip"][external] = text[external]
    out["segment_id"][external] = "internet"
    return out


def decide_communications(
    comm: pd.DataFrame,
    twin: Twin,
    engine: PolicyEngine,
    table: EndpointTable | None = None,
    positions: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decide communication rows through the flow decision path; return (allow, rule names).

    Gives the same decisions as :meth:`PolicyEngine.decide`, through
    :class:`twin.policy.first_match.FlowDecider`. ``positions`` are the
    (source, destination) endpoint positions of the rows from
    :meth:`EndpointTable.locate` on ``table`` or on a table with the same
    endpoint names; they are computed when omitted.
    """
    if comm.empty:
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=object)
    table = table or EndpointTable.build(engine, twin.devices, comm, _external_addresses(twin))
    if positions is None:
        positions = (table.locate(comm["src_id"], comm.get("src_kind")), table.locate(comm["dst_id"], comm.get("dst_kind")))
    allow, rule_index = _decide_indexes(comm, engine, table, positions)
    return allow, engine.rule_names(rule_index)


def _external_addresses(twin: Twin) -> list[str]:
    ext = twin.externals
    if ext.empty or "address" not in ext:
        return []
    return sorted(ext["address"].dropna().astype(str).unique())


def _flows(twin: Twin, site: SiteConfig, engines: dict[str, PolicyEngine], tables: dict[str, EndpointTable],
           view: pd.DataFrame | None = None) -> pd.DataFrame:
    comm = twin.communications
    if comm.empty:
        return pd.DataFrame({col: pd.Series(dtype=object) for col in FLOW_COLUMNS})
    if view is None:
        view = device_view(twin, site)
    src_kind = comm["src_kind"] if "src_kind" in comm else pd.Series("device", index=comm.index)
    dst_kind = comm["dst_kind"] if "dst_kind" in comm else pd.Series("device", index=comm.index)
    src = _endpoint_info(comm["src_id"], src_kind, view)
    dst = _endpoint_info(comm["dst_id"], dst_kind, view)
    frame = pd.DataFrame(
        {
            "src_id": comm["src_id"].astype(str).array,
            "src_kind": src_kind.astype(object).to_numpy(),
            "src_label": src["label"], "src_ip": src["ip"], "src_segment": src["segment_id"],
            "dst_id": comm["dst_id"].astype(str).array,
            "dst_kind": dst_kind.astype(object).to_numpy(),
            "dst_label": dst["label"], "dst_ip": dst["ip"], "dst_segment": dst["segment_id"],
            "proto": comm["proto"].astype(object).where(comm["proto"].notna(), "").astype(str).str.lower().to_numpy(dtype=object),
            "dst_port": pd.to_numeric(comm["dst_port"], errors="coerce").fillna(0).astype("int64").to_numpy(),
            "bytes": comm["bytes"].to_numpy() if "bytes" in comm else 0,
            "packets": comm["packets"].to_numpy() if "packets" in comm else 0,
            "flows": comm["flows"].to_numpy() if "flows" in comm else 0,
        }
    )
    positions = None
    allow: dict[str, np.ndarray] = {}
    rule_index: dict[str, np.ndarray] = {}
    for which in ("current", "proposed"):
        table = tables[which]
        # Both tables list the same endpoints, so the rows are located once.
        if positions is None or not table.names.equals(tables["current"].names):
            positions = (table.locate(comm["src_id"], comm.get("src_kind")), table.locate(comm["dst_id"], comm.get("dst_kind")))
        allow[which], rule_index[which] = _decide_indexes(comm, engines[which], table, positions)
        # Text columns are taken from a few distinct strings by code, which skips
        # converting a million Python strings to the frame's string dtype.
        frame[f"{which}_action"] = _ACTIONS.take(np.where(allow[which], 0, 1))
        frame[f"{which}_rule"] = pd.array(engines[which].rule_names(np.arange(-3, len(engines[which].rules))), dtype="str").take(rule_index[which] + 3)
    cur_allow, new_allow = allow["current"], allow["proposed"]
    rule_changed = frame["current_rule"].to_numpy(dtype=object) != frame["proposed_rule"].to_numpy(dtype=object)
    change = np.select([cur_allow & ~new_allow, ~cur_allow & new_allow, rule_changed], [0, 1, 2], default=3)
    frame["change"] = _CHANGES.take(change)
    return frame[FLOW_COLUMNS]


_ACTIONS = pd.array(["allow", "deny"], dtype="str")
_CHANGES = pd.array(["newly_blocked", "newly_allowed", "rule_changed", "unchanged"], dtype="str")


def _decide_indexes(comm: pd.DataFrame, engine: PolicyEngine, table: EndpointTable, positions) -> tuple[np.ndarray, np.ndarray]:
    """Return (allow, rule index) of communication rows at the given endpoint positions."""
    src, dst = positions
    port = pd.to_numeric(comm["dst_port"], errors="coerce").fillna(0).astype(np.int64).to_numpy()
    return FlowDecider(engine, table).decide(src, dst, comm["proto"].astype(object).to_numpy(), port)


# ---------------------------------------------------------------------------
# Required workflows


def _workflow_definitions(current: Policy, proposed: Policy) -> list[tuple[PolicyRule, str]]:
    """Return (rule, source) for every required rule of either policy; an edited one is checked in both forms."""
    cur = {rule.name: rule for rule in current.rules if rule.required}
    new = {rule.name: rule for rule in proposed.rules if rule.required}
    out: list[tuple[PolicyRule, str]] = []
    for name in list(cur) + [n for n in new if n not in cur]:
        a, b = cur.get(name), new.get(name)
        if a is not None and b is not None and a.model_dump() == b.model_dump():
            out.append((a, "both"))
            continue
        if a is not None:
            out.append((a, "current"))
        if b is not None:
            out.append((b, "proposed"))
    return out


def _service_points(spec: ServiceSpec, rules: list[PolicyRule]) -> list[tuple[str, int]]:
    """Return (proto, port) points, one per sub-range of ``spec`` inside which every rule decides alike."""
    all_specs = [s for rule in rules for s in rule.service_specs()]
    protos = [spec.proto] if spec.proto != "any" else sorted(set(ANY_PROTOCOLS) | {s.proto for s in all_specs if s.proto != "any"})
    points = []
    for proto in protos:
        cuts = {spec.port_min}
        for other in all_specs:
            if other.proto in (proto, "any"):
                for edge in (other.port_min, other.port_max + 1):
                    if spec.port_min < edge <= spec.port_max:
                        cuts.add(edge)
        points.extend((proto, port) for port in sorted(cuts))
    return points


@dataclass
class _Groups:
    """Endpoints of one workflow side grouped by what the decisions depend on."""

    code: np.ndarray  # group per selected endpoint
    positions: np.ndarray  # endpoint positions, sorted by name within the side
    size: np.ndarray
    cur_sig: np.ndarray
    new_sig: np.ndarray
    segment: np.ndarray
    external: np.ndarray


def _side_groups(mask: np.ndarray, cur_sig: np.ndarray, new_sig: np.ndarray, table: EndpointTable) -> _Groups:
    positions = np.flatnonzero(mask)
    keys = pd.DataFrame({"c": cur_sig[positions], "n": new_sig[positions], "s": table.segment[positions], "e": table.is_external[positions]})
    code, _ = pd.factorize(pd.MultiIndex.from_frame(keys)) if len(keys) else (np.zeros(0, dtype=np.int64), None)
    code = np.asarray(code, dtype=np.int64)
    n = int(code.max()) + 1 if len(code) else 0
    first = np.zeros(n, dtype=np.int64)
    first[code[::-1]] = np.arange(len(code) - 1, -1, -1)
    rep = positions[first]
    return _Groups(code, positions, np.bincount(code, minlength=n), cur_sig[rep], new_sig[rep], table.segment[rep], table.is_external[rep])


def _side_mask(selector: Selector, engine: PolicyEngine, twin: Twin, table: EndpointTable) -> np.ndarray:
    mask = np.zeros(len(table.names) + 1, dtype=bool)
    mask[: table.n_devices] = engine.match_selector(selector, twin.devices).to_numpy()
    ext = table.names[table.n_devices:]
    mask[table.n_devices : len(table.names)] = engine.match_external(selector, list(ext))
    return mask


class _WorkflowChecker:
    """Check required workflows of both policies over the same endpoint table positions."""

    def __init__(self, twin: Twin, site: SiteConfig, engines, tables, flows: pd.DataFrame, view: pd.DataFrame) -> None:
        self.twin, self.site, self.engines, self.tables, self.flows, self.view = twin, site, engines, tables, flows, view
        self.deciders = {k: FlowDecider(engines[k], tables[k]) for k in ("current", "proposed")}
        self.rules = list(engines["current"].rules) + list(engines["proposed"].rules)
        self.warnings: list[str] = []

    def label(self, position: int) -> str:
        table = self.tables["proposed"]
        name = str(table.names[position])
        if position < table.n_devices and name in self.view.index:
            value = self.view.at[name, "label"]
            return str(value) if isinstance(value, str) and value else name
        return name

    def check(self, rule: PolicyRule, source: str) -> list[dict]:
        table = self.tables["proposed"]
        engine = self.engines["proposed"]
        src_mask = _side_mask(rule.from_, engine, self.twin, table)
        dst_mask = _side_mask(rule.to, engine, self.twin, table)
        if not src_mask.any() or not dst_mask.any():
            side = "from" if not src_mask.any() else "to"
            self.warnings.append(f"workflow {rule.name!r}: its {side} selector {getattr(rule, 'from_' if side == 'from' else 'to').describe()} matches no endpoint of the snapshot, so it was not checked")
            return []
        cur_t, new_t = self.tables["current"], table
        src = _side_groups(src_mask, cur_t.from_sig, new_t.from_sig, table)
        dst = _side_groups(dst_mask, cur_t.to_sig, new_t.to_sig, table)
        # Self pairs (one endpoint on both sides) are no communication.
        both = np.flatnonzero(src_mask & dst_mask)
        self_pairs = np.zeros((len(src.size), len(dst.size)), dtype=np.int64)
        if len(both):
            a = src.code[np.searchsorted(src.positions, both)]
            b = dst.code[np.searchsorted(dst.positions, both)]
            np.add.at(self_pairs, (a, b), 1)
        pairs = np.outer(src.size, dst.size) - self_pairs
        rows: dict[str, dict] = {}
        for spec in rule.service_specs():
            points = _service_points(spec, self.rules)
            self._check_spec(rule, source, spec, points, src, dst, pairs, rows)
        self._observed(rule, rows)
        return list(rows.values())

    def _check_spec(self, rule, source, spec, points, src: _Groups, dst: _Groups, pairs, rows) -> None:
        a_all, b_all = np.nonzero(pairs > 0)
        # Internet-to-internet pairs are not communications of the site.
        keep = ~(src.external[a_all] & dst.external[b_all])
        a_all, b_all = a_all[keep], b_all[keep]
        for start in range(0, len(a_all), max(1, WORKFLOW_BATCH // max(1, len(points)))):
            a = a_all[start : start + WORKFLOW_BATCH // max(1, len(points))]
            b = b_all[start : start + len(a)]
            same = (src.segment[a] == dst.segment[b]) & (src.segment[a] >= 0)
            external = src.external[a] | dst.external[b]
            blocked_now = np.zeros(len(a), dtype=bool)
            first_rule: dict[int, np.ndarray] = {}
            for proto, port in points:
                denies = {}
                for which, sig_a, sig_b in (("current", src.cur_sig, dst.cur_sig), ("proposed", src.new_sig, dst.new_sig)):
                    decider = self.deciders[which]
                    words = decider.service_words(np.array([proto], dtype=object), np.array([port]))
                    index = decider.first_rules(sig_a[a], sig_b[b], words, np.zeros(len(a), dtype=np.int64))
                    allow, index = decider.defaults(index, same, external)
                    denies[which] = (~allow, index)
                blocked_now |= denies["current"][0]
                deny, index = denies["proposed"]
                for value in np.unique(index[deny]):
                    hit = deny & (index == value)
                    first_rule[int(value)] = first_rule.get(int(value), np.zeros(len(a), dtype=bool)) | hit
                    point_text = f"{proto}/{port}"
                    name = str(self.engines["proposed"].rule_names(np.array([value]))[0])
                    row = rows.get(name)
                    if row is None:
                        where = np.flatnonzero(hit)[0]
                        src_pos, dst_pos = self._example(src, dst, int(a[where]), int(b[where]))
                        rows[name] = row = {
                            "workflow": rule.name, "source": source, "from": rule.from_.describe(), "to": rule.to.describe(),
                            "services": ", ".join(rule.services), "blocked": 0, "observed_blocked": False,
                            "example_src": self.label(src_pos), "example_dst": self.label(dst_pos),
                            "example_service": point_text, "blocked_by": name, "current_blocked": 0,
                        }
            for value, hit in first_rule.items():
                name = str(self.engines["proposed"].rule_names(np.array([value]))[0])
                rows[name]["blocked"] += int(pairs[a[hit], b[hit]].sum())
                rows[name]["current_blocked"] += int(pairs[a[hit & blocked_now], b[hit & blocked_now]].sum())

    def _example(self, src: _Groups, dst: _Groups, a: int, b: int) -> tuple[int, int]:
        src_members = src.positions[src.code == a][:2]
        dst_members = dst.positions[dst.code == b][:2]
        for s in src_members:
            for d in dst_members:
                if s != d:
                    return int(s), int(d)
        return int(src_members[0]), int(dst_members[0])

    def _observed(self, rule: PolicyRule, rows: dict) -> None:
        flows = self.flows
        if not rows or flows.empty:
            return
        engine = self.engines["proposed"]
        denied = flows[flows["proposed_action"] == "deny"]
        if denied.empty:
            return
        src_ok = _endpoint_match(rule.from_, denied["src_id"], denied["src_kind"], engine, self.twin)
        dst_ok = _endpoint_match(rule.to, denied["dst_id"], denied["dst_kind"], engine, self.twin)
        service = np.zeros(len(denied), dtype=bool)
        protos = denied["proto"].to_numpy(dtype=object)
        ports = denied["dst_port"].to_numpy(dtype=np.int64)
        for spec in rule.service_specs():
            in_range = (ports >= spec.port_min) & (ports <= spec.port_max)
            service |= in_range if spec.proto == "any" else in_range & (protos == spec.proto)
        hit = denied[src_ok & dst_ok & service].sort_values(["src_label", "dst_label", "dst_port"], kind="stable")
        for name, group in hit.groupby("proposed_rule", sort=False):
            row = rows.get(name)
            if row is None:
                continue
            first = group.iloc[0]
            row.update(observed_blocked=True, example_src=first["src_label"], example_dst=first["dst_label"],
                       example_service=f"{first['proto']}/{int(first['dst_port'])}")


def _endpoint_match(selector: Selector, ids: pd.Series, kinds: pd.Series, engine: PolicyEngine, twin: Twin) -> np.ndarray:
    ids = ids.astype(str)
    external = (kinds.astype(object) == "external").to_numpy()
    out = np.zeros(len(ids), dtype=bool)
    devices = twin.devices
    matched = set(devices.loc[engine.match_selector(selector, devices).to_numpy(), "device_id"].astype(str))
    out[~external] = ids[~external].isin(matched).to_numpy()
    if external.any():
        out[external] = engine.match_external(selector, ids[external].tolist())
    return out


def _workflows(checker: _WorkflowChecker, current: Policy, proposed: Policy) -> pd.DataFrame:
    rows: list[dict] = []
    for rule, source in _workflow_definitions(current, proposed):
        rows.extend(checker.check(rule, source))
    if not rows:
        return pd.DataFrame({col: pd.Series(dtype=object) for col in WORKFLOW_COLUMNS})
    return pd.DataFrame(rows, columns=WORKFLOW_COLUMNS)


# ---------------------------------------------------------------------------
# Violations and exposure


def _violations(twin: Twin, site: SiteConfig, engines) -> tuple[pd.DataFrame, pd.DataFrame]:
    cur = segment_violations.find(twin, site, engine=engines["current"])
    new = segment_violations.find(twin, site, engine=engines["proposed"])
    cur_keys = pd.MultiIndex.from_frame(cur[_KEY].astype({"dst_port": "int64"})) if not cur.empty else pd.MultiIndex.from_tuples([], names=_KEY)
    new_keys = pd.MultiIndex.from_frame(new[_KEY].astype({"dst_port": "int64"})) if not new.empty else pd.MultiIndex.from_tuples([], names=_KEY)
    resolved = cur[~cur_keys.isin(new_keys)].reset_index(drop=True) if not cur.empty else cur
    introduced = new[~new_keys.isin(cur_keys)].reset_index(drop=True) if not new.empty else new
    return resolved, introduced


def _exposure(twin: Twin, site: SiteConfig, flows: pd.DataFrame) -> pd.DataFrame:
    rows = external_exposure.find(twin, site)
    columns = list(external_exposure.COLUMNS) + ["current_allowed", "proposed_allowed"]
    if rows.empty:
        return pd.DataFrame({col: pd.Series(dtype=object) for col in columns})
    outbound = (rows["direction"] == "outbound").to_numpy()
    keys = pd.DataFrame(
        {
            "src_id": np.where(outbound, rows["device_id"], rows["external"]).astype(object),
            "dst_id": np.where(outbound, rows["external"], rows["device_id"]).astype(object),
            "proto": rows["proto"].astype(str).str.lower().to_numpy(dtype=object),
            "dst_port": pd.to_numeric(rows["dst_port"], errors="coerce").fillna(0).astype("int64").to_numpy(),
        }
    )
    decided = flows[_KEY].assign(
        current_allowed=flows["current_action"].to_numpy() == "allow",
        proposed_allowed=flows["proposed_action"].to_numpy() == "allow",
    ).groupby(_KEY, as_index=False, sort=False).max()
    merged = keys.merge(decided, on=_KEY, how="left")
    out = rows.copy()
    out["current_allowed"] = merged["current_allowed"].fillna(False).astype(bool).to_numpy()
    out["proposed_allowed"] = merged["proposed_allowed"].fillna(False).astype(bool).to_numpy()
    return out[columns]


# ---------------------------------------------------------------------------
# Attack paths


def _min_hops(graph: ReachGraph, max_hops: int) -> Iterator[tuple[int, int, int, list[int]]]:
    """Yield (entry node, target node, hops, path nodes) per reachable pair, by breadth-first search.

    Intermediate nodes must be passable (not External), as in
    :func:`twin.analysis._reach.iter_paths`. The entry node itself is not
    marked at the start, so a group that is both entry and target is
    reached again through a cycle (two of its members form a pair).
    Pairs come in entry order, then target order. A node's parent on the
    path is the first frontier node, in ascending order, with an edge to it.

    The searches of up to ``BFS_BATCH_STATES // n`` entries run together,
    as one search over (entry, node) states, so the numpy work per hop is
    shared by the batch instead of repeated per entry.
    """
    n = graph.n
    entries = np.flatnonzero(graph.is_entry)
    if not n or not len(entries):
        return
    passable = graph.passable
    batch = max(1, BFS_BATCH_STATES // n)
    for begin in range(0, len(entries), batch):
        yield from _min_hops_batch(graph, entries[begin : begin + batch], max_hops, passable)


def _min_hops_batch(graph: ReachGraph, entries: np.ndarray, max_hops: int, passable: np.ndarray) -> Iterator[tuple[int, int, int, list[int]]]:
    # A state is (slot, node) with slot the entry's index in ``entries``, keyed slot * n + node.
    n = graph.n
    seen = np.zeros(0, dtype=np.int64)
    found_keys, found_parents, found_hops = [], [], []
    f_slot, f_node = np.arange(len(entries), dtype=np.int64), entries.astype(np.int64)
    for hops in range(1, max_hops + 1):
        keys = graph.src_key[f_node]
        starts, stops = graph.indptr[keys], graph.indptr[keys + 1]
        counts = stops - starts
        total = int(counts.sum())
        if total == 0:
            break
        offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(total)
        state = np.repeat(f_slot, counts) * n + graph.indices[offsets]
        parents = np.repeat(f_node, counts)
        new = ~_in_sorted(state, seen)
        state, parents = state[new], parents[new]
        if not len(state):
            break
        # Sorted states with the first occurrence of each: within one entry, the
        # lowest frontier node that reaches a node becomes its parent.
        state, first = np.unique(state, return_index=True)
        found_keys.append(state)
        found_parents.append(parents[first])
        found_hops.append(np.full(len(state), hops, dtype=np.int64))
        seen = np.union1d(seen, state)
        slot, node = state // n, state % n
        keep = passable[node] & (node != entries[slot])
        f_slot, f_node = slot[keep], node[keep]
    if not found_keys:
        return
    keys = np.concatenate(found_keys)
    parent = np.concatenate(found_parents)
    dist = np.concatenate(found_hops)
    order = np.argsort(keys, kind="stable")
    keys, parent, dist = keys[order], parent[order], dist[order]
    is_target = graph.is_target[keys % n]
    t_keys, t_hops = keys[is_target], dist[is_target]
    if not len(t_keys):
        return
    # Walk the parents back to the entry, one hop per column, for all targets at once.
    t_slot = t_keys // n
    paths = np.full((len(t_keys), max_hops + 1), -1, dtype=np.int64)
    paths[:, 0] = t_keys % n
    current = t_keys
    for step in range(1, int(t_hops.max()) + 1):
        active = t_hops >= step
        at = np.searchsorted(keys, current[active])
        paths[active, step] = parent[at]
        current = current.copy()
        current[active] = t_slot[active] * n + parent[at]
    for i in range(len(t_keys)):
        hops = int(t_hops[i])
        yield int(entries[t_slot[i]]), int(paths[i, 0]), hops, paths[i, hops::-1].tolist()


def _in_sorted(values: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    """Return a bool mask of ``values`` present in the sorted array ``sorted_values``."""
    if not len(sorted_values):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_values, values), len(sorted_values) - 1)
    return sorted_values[at] == values


def _pairs(graph: ReachGraph, max_hops: int, labels: dict, mode: str, warnings: list[str]) -> dict[tuple[str, str], tuple[int, str]]:
    out: dict[tuple[str, str], tuple[int, str]] = {}
    for entry, target, hops, nodes in _min_hops(graph, max_hops):
        middle = [labels.get(graph.members[x][0], graph.members[x][0]) for x in nodes[1:-1]]
        for e in graph.members[entry]:
            for t in graph.members[target]:
                if e == t:
                    continue
                out[(e, t)] = (hops, " -> ".join([labels.get(e, e), *middle, labels.get(t, t)]))
        if len(out) >= MAX_ATTACK_PAIRS:
            warnings.append(f"{mode}: stopped at {MAX_ATTACK_PAIRS} (entry, target) pairs; the attack-path section is incomplete")
            log.warning("%s attack-path pairs capped at %d", mode, MAX_ATTACK_PAIRS)
            break
    return out


def _attack_paths(twin: Twin, site: SiteConfig, engines, flows: pd.DataFrame, modes, view: pd.DataFrame, warnings: list[str]) -> pd.DataFrame:
    cfg = site.attack_paths
    empty = pd.DataFrame({col: pd.Series(dtype=object) for col in ATTACK_PATH_COLUMNS})
    if not cfg.entry_points or not cfg.targets or twin.devices.empty:
        return empty
    labels = {k: v for k, v in zip(view.index, view["label"], strict=True) if isinstance(v, str) and v}
    frames = []
    for mode in modes:
        found = {}
        # Observed mode also searches today's network, every recorded
        # communication: a path that exists today and that both policies stop
        # is an enforcement gap, not something the proposal changes.
        variants = ("today", "current", "proposed") if mode == "observed" else ("current", "proposed")
        for which in variants:
            if mode == "observed":
                comm = twin.communications
                if which != "today" and not comm.empty:
                    comm = comm[(flows[f"{which}_action"] == "allow").to_numpy()]
                tables = {**twin.tables, "communications": comm}
                graph = build_observed_graph(
                    Twin(twin.site, twin.run_id, twin.built_at, tables), engines["current"], cfg.entry_points, cfg.targets)
            else:
                graph = build_permitted_graph(twin, engines[which], cfg.entry_points, cfg.targets)
            found[which] = _pairs(graph, cfg.max_hops, labels, f"{mode} ({which})", warnings)
        # Permitted mode has no separate picture of today: what the current
        # policy permits is its baseline.
        baseline = found.get("today", found["current"])
        keys = sorted(set(baseline) | set(found["current"]) | set(found["proposed"]))
        rows = []
        for entry, target in keys:
            today = baseline.get((entry, target))
            cur, new = found["current"].get((entry, target)), found["proposed"].get((entry, target))
            if cur is None and new is None:
                change = "unenforced"
            elif new is None:
                change = "cut"
            elif cur is None:
                change = "opened"
            else:
                change = "unchanged"
                if new[0] > cur[0]:
                    change = "longer"
                elif new[0] < cur[0]:
                    change = "shorter"
            rows.append({
                "mode": mode, "entry": entry, "entry_label": labels.get(entry, entry), "target": target,
                "target_label": labels.get(target, target),
                "today_hops": today[0] if today else None,
                "current_hops": cur[0] if cur else None, "proposed_hops": new[0] if new else None, "change": change,
                "today_path": today[1] if today else None,
                "current_path": cur[1] if cur else None, "proposed_path": new[1] if new else None,
            })
        frames.append(pd.DataFrame(rows, columns=ATTACK_PATH_COLUMNS))
    frames = [f for f in frames if not f.empty]
    if not frames:
        return empty
    out = pd.concat(frames, ignore_index=True)
    for column in ("today_path", "current_path", "proposed_path"):
        out[column] = out[column].astype(object).where(out[column].notna(), None)
    for column in ("today_hops", "current_hops", "proposed_hops"):
        out[column] = out[column].astype("Int64")
    return out


# ---------------------------------------------------------------------------
# Entry points


def simulate(
    twin: Twin,
    site: SiteConfig,
    proposed: Policy | str | Path | dict,
    *,
    current: Policy | None = None,
    modes: tuple[str, ...] = MODES,
) -> SimulationResult:
    """Simulate replacing the current policy with ``proposed`` on one snapshot of the twin.

    Parameters
    ----------
    twin : Twin
        The snapshot whose recorded communications and services are used.
    site : SiteConfig
        Segments, attack-path entry points and targets, exposure allowlist.
    proposed : Policy, str, Path or dict
        The proposed policy, or anything :func:`load_policy` reads.
    current : Policy, optional
        The policy to compare against; default ``site.policy``.
    modes : tuple of str
        Attack-path modes to compare: ``observed``, ``permitted`` or both.

    Returns
    -------
    SimulationResult

    Raises
    ------
    ConfigError
        The proposed policy is invalid or names a segment the site lacks.
    ValueError
        An unknown attack-path mode.

    Notes
    -----
    The flows are decided by :class:`twin.policy.first_match.FlowDecider`
    in O(F + G * R / 64) for F communications, G unique (signature,
    signature, service) keys and R rules. A workflow costs
    O(A * B * P) for A source groups, B destination groups and P service
    points, never a loop over device pairs. Attack paths cost one
    breadth-first search per entry node of each graph, run for batches of
    entries at once (:data:`BFS_BATCH_STATES`).
    """
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"unknown attack-path mode {mode!r}; expected observed or permitted")
    proposed_policy = load_policy(proposed, name="<proposed policy>", site=site)
    current_policy = current if current is not None else site.policy
    engines = {"current": PolicyEngine(site, current_policy), "proposed": PolicyEngine(site, proposed_policy)}
    externals = _external_addresses(twin)
    tables = {k: EndpointTable.build(e, twin.devices, twin.communications, externals) for k, e in engines.items()}
    view = device_view(twin, site)

    flows = _flows(twin, site, engines, tables, view)
    unmatched = _unmatched_selectors(proposed_policy, engines["proposed"], twin)
    checker = _WorkflowChecker(twin, site, engines, tables, flows, view)
    workflows = _workflows(checker, current_policy, proposed_policy)
    resolved, introduced = _violations(twin, site, engines)
    warnings = unmatched + list(checker.warnings)
    paths = _attack_paths(twin, site, engines, flows, modes, view, warnings)
    exposure = _exposure(twin, site, flows)

    newly_blocked = flows[flows["change"] == "newly_blocked"].reset_index(drop=True)
    newly_allowed = flows[flows["change"] == "newly_allowed"].reset_index(drop=True)
    cut = paths[paths["change"] == "cut"].reset_index(drop=True)
    opened = paths[paths["change"] == "opened"].reset_index(drop=True)
    unenforced = paths[paths["change"] == "unenforced"].reset_index(drop=True)
    summary = {
        "newly_blocked": len(newly_blocked),
        "newly_allowed": len(newly_allowed),
        "workflows_broken": int(workflows["workflow"].nunique()) if not workflows.empty else 0,
        "violations_resolved": len(resolved),
        "violations_introduced": len(introduced),
        "attack_paths_cut": len(cut),
        "attack_paths_opened": len(opened),
        "attack_paths_unenforced": len(unenforced),
        "exposure_before": int(exposure["current_allowed"].sum()) if not exposure.empty else 0,
        "exposure_after": int(exposure["proposed_allowed"].sum()) if not exposure.empty else 0,
    }
    log.info("simulated %d rules against %d (run %s): %s", len(proposed_policy.rules), len(current_policy.rules), twin.run_id, summary)
    result = SimulationResult(
        current=current_policy, proposed=proposed_policy, flows=flows, newly_blocked=newly_blocked,
        newly_allowed=newly_allowed, workflows_broken=workflows, violations_resolved=resolved,
        violations_introduced=introduced, attack_paths=paths, attack_paths_cut=cut, attack_paths_opened=opened,
        exposure=exposure, summary=summary, warnings=warnings, attack_paths_unenforced=unenforced,
    )
    summary["workflows_newly_broken"] = len(result.newly_broken_workflow_names())
    summary["workflows_already_broken"] = len(result.already_broken_workflow_names())
    return result


def _unmatched_selectors(policy: Policy, engine: PolicyEngine, twin: Twin) -> list[str]:
    """Return a warning per rule side that matches no device and no recorded external address.

    Such a rule never decides anything, which is most often a misspelt
    device, building or zone rather than the intent.
    """
    warnings = []
    externals = _external_addresses(twin)
    for rule in policy.rules:
        for side, selector in (("from", rule.from_), ("to", rule.to)):
            if selector.any:
                continue
            matched = bool(engine.match_selector(selector, twin.devices).any()) if not twin.devices.empty else False
            if not matched and externals:
                matched = bool(np.asarray(engine.match_external(selector, externals)).any())
            if not matched:
                warnings.append(
                    f"rule {rule.name!r}: its {side} selector {selector.describe()} matches no device or recorded "
                    "external address of the snapshot, so the rule decides nothing; check the names it uses"
                )
    return warnings


def simulate_workspace(ws, proposed: Policy | str | Path | dict, snapshot: str | None = None, **params) -> SimulationResult:
    """Simulate ``proposed`` against one snapshot of a :class:`twin.api.Workspace` (the latest by default)."""
    return simulate(ws.twin(snapshot), ws.site(snapshot), proposed, **params)
