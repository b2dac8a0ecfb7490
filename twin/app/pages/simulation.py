"""Policy simulation page: edit the site's policy in a table (or upload one) and see what it would change.

The simulator (:func:`twin.policy.simulate.simulate`) evaluates the current
and the proposed policy against the snapshot's recorded communications and
the query catalogue.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
from typing import Any, Iterable

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from twin.app import data
from twin.app.widgets import display_frame, parse_selector_text, plural, require_context, selector_text, show_error, show_table
from twin.exceptions import ConfigError, TwinError
from twin.model.site import Policy, PolicyRule, ServiceSpec, SiteConfig
from twin.report.writers import render_csv

__all__ = [
    "TABLE_COLUMNS",
    "STATE_CARRY_RULES",
    "policy_to_table",
    "policy_from_table",
    "site_names",
    "comparison_table",
    "workflow_status",
    "broken_workflow_names",
    "upload_error_message",
    "render",
]

log = logging.getLogger(__name__)

TABLE_COLUMNS = ["order", "name", "action", "from", "to", "services", "required", "description"]

# Session-state keys: the table's base rows, the editor generation, the last upload, the simulated policy.
STATE_CARRY_RULES = "simulation-carried-rules"
STATE_BASE = "simulation-base"
STATE_GENERATION = "simulation-generation"
STATE_UPLOAD = "simulation-upload-digest"
STATE_UPLOAD_ERROR = "simulation-upload-error"
STATE_RESULT_YAML = "simulation-result-yaml"
STATE_DEFAULTS = "simulation-defaults"
STATE_NOTICE = "simulation-notice"

# Rows a result section draws (count, default 500). Its CSV download contains every row.
MAX_SECTION_ROWS = 500

# Workflow names an alert lists before it says "and N more" (count, default 10).
MAX_NAMED_WORKFLOWS = 10

# Values of the ``status`` column of :func:`workflow_status`.
NEWLY_BROKEN = "newly broken"
ALREADY_BROKEN = "already broken"
ALREADY_AND_NEWLY_BROKEN = "already broken, and newly broken further"

# Attack-path sections: (result attribute, title, caption).
ATTACK_PATH_SECTIONS = (
    ("attack_paths_cut", "Attack paths cut",
     "Entry-target pairs that the current policy lets through and the proposed policy stops."),
    ("attack_paths_opened", "Attack paths opened",
     "Entry-target pairs that the current policy stops and the proposed policy lets through."),
    ("attack_paths_unenforced", "Paths that exist today only because the policy is not enforced: both policies deny a hop",
     "Observed paths: the recorded communications make them possible today, but both the current and the proposed "
     "policy deny at least one of their hops. Enforcing either policy on the firewalls cuts them."),
)


def _rule_row(order: int, rule: PolicyRule) -> dict[str, Any]:
    return {
        "order": order,
        "name": rule.name,
        "action": rule.action,
        "from": selector_text(rule.from_),
        "to": selector_text(rule.to),
        "services": ", ".join(rule.services),
        "required": bool(rule.required),
        "description": rule.description,
    }


def policy_to_table(policy: Policy) -> pd.DataFrame:
    """Return a policy's rules as editable rows: order, name, action, from, to, services, required, description."""
    rows = [_rule_row(i, rule) for i, rule in enumerate(policy.rules, start=1)]
    return _typed(pd.DataFrame(rows, columns=TABLE_COLUMNS))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reindex(columns=TABLE_COLUMNS)
    out = pd.DataFrame(
        {
            "order": pd.to_numeric(frame["order"], errors="coerce").astype("Int64"),
            "required": frame["required"].fillna(False).astype(bool),
        }
    )
    for column in ("name", "action", "from", "to", "services", "description"):
        out[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return out[TABLE_COLUMNS].reset_index(drop=True)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip()) or value is pd.NA


def site_names(site: SiteConfig, buildings: Iterable[str] = ()) -> dict[str, set[str]]:
    """Return the segment, zone and building names a selector may use on ``site``.

    Segments and zones come from the site's segments. Buildings come from
    the segments and from ``buildings``, the devices' own building names,
    because the policy engine matches a device's own building first.
    """
    return {
        "segment": {seg.id for seg in site.segments},
        "zone": {seg.zone for seg in site.segments},
        "building": {seg.building for seg in site.segments if seg.building} | {str(b) for b in buildings if isinstance(b, str) and b},
    }


def _check_names(selector, known: dict[str, set[str]], where: str, field: str) -> None:
    """Raise ConfigError when a selector names a segment, zone or building the site does not define."""
    for key, names in known.items():
        if not names:
            continue
        for value in getattr(selector, key):
            if value in names:
                continue
            close = difflib.get_close_matches(value, sorted(names), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            raise ConfigError(
                f"{where}, field '{field}': {key} {value!r} is not defined in the site{hint} "
                f"Known {key}s: {', '.join(sorted(names))}"
            )


def policy_from_table(
    frame: pd.DataFrame,
    *,
    default_action: str = "deny",
    intra_segment: str = "allow",
    site: SiteConfig | None = None,
    buildings: Iterable[str] = (),
) -> Policy:
    """Build a :class:`Policy` from edited table rows, ordered by the ``order`` column.

    Rows with no name, from, to and services are ignored (a new empty row).
    Rows without an ``order`` keep their place after the numbered ones.
    With ``site``, every segment, zone and building a selector names must
    exist (see :func:`site_names`; ``buildings`` adds the devices' own).

    Raises
    ------
    ConfigError
        For the first invalid row: the message names the row (1-based, as
        the table shows it), the rule and the field, and what is expected.
    """
    known = site_names(site, buildings) if site is not None and site.segments else {}
    rules: list[tuple[float, int, PolicyRule]] = []
    for number, row in enumerate(frame.reindex(columns=TABLE_COLUMNS).to_dict("records"), start=1):
        if all(_blank(row.get(c)) for c in ("name", "from", "to", "services")):
            continue
        name = "" if _blank(row.get("name")) else str(row["name"]).strip()
        where = f"row {number}" + (f" (rule {name!r})" if name else "")
        if not name:
            raise ConfigError(f"{where}, field 'name': missing; give every rule a unique name")
        action = "" if _blank(row.get("action")) else str(row["action"]).strip().lower()
        if action not in ("allow", "deny"):
            raise ConfigError(f"{where}, field 'action': invalid value {row.get('action')!r}; expected allow or deny")
        selectors = {}
        for field in ("from", "to"):
            if _blank(row.get(field)):
                raise ConfigError(f"{where}, field '{field}': missing; write any, internet, KEY:VALUE or a device id")
            try:
                selectors[field] = parse_selector_text(str(row[field]))
            except ConfigError as exc:
                raise ConfigError(f"{where}, field '{field}': {exc}") from None
            _check_names(selectors[field], known, where, field)
        services = ["any"] if _blank(row.get("services")) else [s.strip() for s in str(row["services"]).split(",") if s.strip()]
        for text in services:
            try:
                ServiceSpec.parse_many(text)
            except ValueError as exc:
                raise ConfigError(f"{where}, field 'services': {exc}") from None
        try:
            rule = PolicyRule.model_validate(
                {
                    "name": name,
                    "action": action,
                    "from": selectors["from"],
                    "to": selectors["to"],
                    "services": services,
                    "required": bool(row.get("required")) if not _blank(row.get("required")) else False,
                    "description": "" if _blank(row.get("description")) else str(row["description"]),
                }
            )
        except ValidationError as exc:
            problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            field = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "rule"
            raise ConfigError(f"{where}, field '{field}': {problems}") from None
        order = row.get("order")
        rank = float(order) if not _blank(order) else float("inf")
        rules.append((rank, number, rule))
    rules.sort(key=lambda item: (item[0], item[1]))
    seen: dict[str, int] = {}
    for _, number, rule in rules:
        if rule.name in seen:
            raise ConfigError(f"row {number}, field 'name': duplicate rule name {rule.name!r} (also row {seen[rule.name]}); rule names must be unique")
        seen[rule.name] = number
    return Policy(default_action=default_action, intra_segment=intra_segment, rules=[rule for _, _, rule in rules])


def comparison_table(result) -> pd.DataFrame:
    """Return the current and proposed policy's totals side by side, one row per measure."""
    flows = result.flows
    rows = []
    if not flows.empty:
        for label, action in (("Communications allowed", "allow"), ("Communications denied (segment violations)", "deny")):
            rows.append(
                {
                    "measure": label,
                    "current": int((flows["current_action"] == action).sum()),
                    "proposed": int((flows["proposed_action"] == action).sum()),
                }
            )
    rows.append({"measure": "External exposure allowed", "current": int(result.summary["exposure_before"]), "proposed": int(result.summary["exposure_after"])})
    paths = result.attack_paths
    for mode in ("observed", "permitted"):
        if paths.empty or not (paths["mode"] == mode).any():
            continue
        mine = paths[paths["mode"] == mode]
        if mode == "observed" and "today_hops" in mine:
            # Today's network enforces neither policy: the baseline for paths cut.
            rows.append({"measure": "Attack-path pairs reachable today (observed, nothing enforced)",
                         "current": int(mine["today_hops"].notna().sum()), "proposed": None})
        rows.append(
            {
                "measure": f"Attack-path pairs reachable ({mode})",
                "current": int(mine["current_hops"].notna().sum()),
                "proposed": int(mine["proposed_hops"].notna().sum()),
            }
        )
    _, already = broken_workflow_names(result)
    current_broken = len(already) if "current_blocked" in result.workflows_broken or result.workflows_broken.empty else None
    rows.append({"measure": "Required workflows broken", "current": current_broken, "proposed": int(result.summary["workflows_broken"])})
    table = pd.DataFrame(rows, columns=["measure", "current", "proposed"]).astype({"current": "Int64", "proposed": "Int64"})
    table["change"] = table["proposed"] - table["current"]
    return table


def workflow_status(workflows: pd.DataFrame) -> pd.DataFrame:
    """Return one row per broken workflow: ``workflow``, ``newly_broken``, ``already_broken`` and ``status``.

    The rows of ``workflows_broken`` are per workflow and blocking rule.
    ``blocked`` counts the (source, destination, service) triples the
    proposed policy denies and ``current_blocked`` those among them that the
    current policy already denies. A workflow is already broken when any of
    its rows has ``current_blocked`` > 0, and newly broken when any row has
    ``blocked`` > ``current_blocked``, so a workflow can be both. Without a
    ``current_blocked`` column every workflow counts as newly broken only.
    Workflows keep their first-row order.

    Examples
    --------
    >>> rows = pd.DataFrame({"workflow": ["a", "a", "b", "c"], "blocked": [4, 2, 3, 5], "current_blocked": [4, 0, 3, 0]})
    >>> workflow_status(rows)["status"].tolist()
    ['already broken, and newly broken further', 'already broken', 'newly broken']
    """
    columns = ["workflow", "newly_broken", "already_broken", "status"]
    if workflows.empty:
        return pd.DataFrame(columns=columns)
    blocked = pd.to_numeric(workflows["blocked"], errors="coerce").fillna(0).to_numpy()
    if "current_blocked" in workflows:
        current = pd.to_numeric(workflows["current_blocked"], errors="coerce").fillna(0).to_numpy()
    else:
        current = blocked * 0
    flags = pd.DataFrame({"newly_broken": blocked > current, "already_broken": current > 0})
    grouped = flags.groupby(workflows["workflow"].to_numpy(), sort=False).any()
    status = [
        ALREADY_AND_NEWLY_BROKEN if newly and already else NEWLY_BROKEN if newly else ALREADY_BROKEN
        for newly, already in zip(grouped["newly_broken"], grouped["already_broken"])
    ]
    return pd.DataFrame(
        {"workflow": grouped.index, "newly_broken": grouped["newly_broken"].to_numpy(), "already_broken": grouped["already_broken"].to_numpy(), "status": status},
        columns=columns,
    )


def broken_workflow_names(result) -> tuple[list[str], list[str]]:
    """Return the names of the workflows newly broken and already broken (see :func:`workflow_status`); a workflow may be in both.

    Uses the simulator's own ``newly_broken_workflow_names`` and
    ``already_broken_workflow_names`` when the result has them.
    """
    status = workflow_status(result.workflows_broken)
    newly = status.loc[status["newly_broken"].astype(bool), "workflow"].tolist()
    already = status.loc[status["already_broken"].astype(bool), "workflow"].tolist()
    if hasattr(result, "newly_broken_workflow_names"):
        newly = list(result.newly_broken_workflow_names())
    if hasattr(result, "already_broken_workflow_names"):
        already = list(result.already_broken_workflow_names())
    return newly, already


def upload_error_message(file_name: str, exc: BaseException) -> str:
    """Return the error shown for an invalid upload, naming the file once.

    >>> upload_error_message("p.yaml", ValueError("p.yaml:1: invalid YAML"))
    'p.yaml:1: invalid YAML'
    >>> upload_error_message("p.yaml", ValueError("invalid policy"))
    'p.yaml: invalid policy'
    """
    text = str(exc)
    return text if file_name in text else f"{file_name}: {text}"


def _reset(base: pd.DataFrame, defaults: tuple[str, str], notice: str | None = None) -> None:
    st.session_state[STATE_BASE] = base
    st.session_state[STATE_DEFAULTS] = defaults
    st.session_state[STATE_GENERATION] = st.session_state.get(STATE_GENERATION, 0) + 1
    st.session_state.pop(STATE_RESULT_YAML, None)
    if notice:
        st.session_state[STATE_NOTICE] = notice


def _load_upload(upload, site) -> str | None:
    """Load a newly selected upload into the table; return the error of the selected upload, if it is invalid.

    The digest and the error are kept in the session, so the error stays
    visible on every rerun while that file is selected.
    """
    from twin.policy.simulate import load_policy

    content = upload.getvalue()
    digest = hashlib.sha256(content).hexdigest()
    if st.session_state.get(STATE_UPLOAD) == digest:
        return st.session_state.get(STATE_UPLOAD_ERROR)
    text = content.decode("utf-8", errors="replace")
    try:
        policy = load_policy(text, name=upload.name, site=site)
    except TwinError as exc:
        message = upload_error_message(upload.name, exc)
        st.session_state[STATE_UPLOAD] = digest
        st.session_state[STATE_UPLOAD_ERROR] = message
        return message
    st.session_state[STATE_UPLOAD] = digest
    st.session_state.pop(STATE_UPLOAD_ERROR, None)
    _reset(policy_to_table(policy), (policy.default_action, policy.intra_segment), f"Loaded {plural(len(policy.rules), 'rule')} from {upload.name}.")
    return None


def _forget_upload() -> None:
    """Forget the last upload once the uploader is cleared, so uploading the same file again reloads it."""
    st.session_state.pop(STATE_UPLOAD, None)
    st.session_state.pop(STATE_UPLOAD_ERROR, None)


def _take_carried_rules() -> None:
    carried = st.session_state.pop(STATE_CARRY_RULES, None)
    if not carried:
        return
    base = st.session_state[STATE_BASE]
    present = set(base["name"].dropna().astype(str))
    added = []
    for rule in carried:
        if rule["name"] in present:
            continue
        added.append({**rule, "services": ", ".join(rule.get("services") or ["any"]), "required": False})
    table = pd.concat([pd.DataFrame(added, columns=TABLE_COLUMNS), base], ignore_index=True)
    # Carried deny rules go first, so they decide before any allow rule.
    table["order"] = range(1, len(table) + 1)
    skipped = len(carried) - len(added)
    notice = f"Added {plural(len(added), 'recommended deny rule')} from the Attack paths page at the top."
    if skipped:
        notice += f" {plural(skipped, 'rule')} with a name already in the table {'was' if skipped == 1 else 'were'} not added."
    _reset(_typed(table), st.session_state[STATE_DEFAULTS], notice)


def _section(title: str, frame: pd.DataFrame, key: str, *, count: int | None = None, caption: str | None = None) -> None:
    """Draw one result section: its title with ``count`` (default: rows), a caption, the table and its CSV download."""
    st.subheader(f"{title} ({len(frame) if count is None else count})")
    if caption:
        st.caption(caption)
    if frame.empty:
        st.caption("None.")
        return
    show_table(display_frame(frame, MAX_SECTION_ROWS), hide_index=True, key=f"sim-{key}")
    st.download_button(f"Download CSV ({plural(len(frame), 'row')})", render_csv(frame), file_name=f"{key}.csv", mime="text/csv", key=f"sim-{key}-csv")


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMED_WORKFLOWS])
    rest = len(names) - MAX_NAMED_WORKFLOWS
    return shown + (f" and {rest} more" if rest > 0 else "")


def _workflow_section(result) -> None:
    """Draw the broken workflows: newly broken ones as an error, already broken ones as a warning (a workflow may be both)."""
    workflows = result.workflows_broken
    newly, already = broken_workflow_names(result)
    status = workflow_status(workflows)
    st.subheader(f"Required workflows broken ({len(status)})")
    if workflows.empty:
        st.caption("None.")
        return
    if newly:
        verb = "breaks" if len(newly) == 1 else "break"
        st.error(f"{plural(len(newly), 'required workflow')} newly {verb} under the proposed policy: {_names(newly)}.")
    if already:
        verb = "is" if len(already) == 1 else "are"
        text = f"{plural(len(already), 'required workflow')} {verb} already broken under the current policy: {_names(already)}."
        both = [name for name in already if name in newly]
        if both:
            text += f" The proposed policy breaks {len(both)} of them further: {_names(both)}."
        st.warning(text)
    st.caption(
        f"One row per workflow and the proposed rule that blocks it ({plural(len(workflows), 'row')}). "
        "blocked counts the (source, destination, service) triples the proposed policy denies; "
        "current_blocked counts those among them that the current policy already denies. "
        "A workflow is already broken when a row has current_blocked above 0, and newly broken when a row has blocked above current_blocked."
    )
    shown = workflows.merge(status[["workflow", "status"]], on="workflow", how="left")
    show_table(display_frame(shown, MAX_SECTION_ROWS), hide_index=True, key="sim-workflows_broken")
    st.download_button(f"Download CSV ({plural(len(workflows), 'row')})", render_csv(workflows), file_name="workflows_broken.csv", mime="text/csv", key="sim-workflows_broken-csv")


def _show_result(result, proposed_yaml: str) -> None:
    summary = result.summary
    newly, already = broken_workflow_names(result)
    st.header("Result")
    for warning in result.warnings:
        st.warning(warning)
    cols = st.columns(5)
    cols[0].metric("Newly blocked flows", summary["newly_blocked"])
    cols[1].metric("Newly allowed flows", summary["newly_allowed"])
    cols[2].metric("Workflows newly broken", len(newly), help="Workflows the proposed policy blocks more of than the current policy does.")
    cols[3].metric("Workflows already broken", len(already), help="Workflows the current policy already blocks; a workflow may also be newly broken.")
    cols[4].metric("Exposure (before → after)", f"{summary['exposure_before']} → {summary['exposure_after']}", delta=summary["exposure_after"] - summary["exposure_before"], delta_color="inverse")
    cols = st.columns(5)
    cols[0].metric("Violations resolved", summary["violations_resolved"])
    cols[1].metric("Violations introduced", summary["violations_introduced"])
    cols[2].metric("Attack paths cut", summary["attack_paths_cut"])
    cols[3].metric("Attack paths opened", summary["attack_paths_opened"])
    cols[4].metric("Attack paths unenforced", summary.get("attack_paths_unenforced", 0), help="Paths that exist today although both policies deny a hop.")
    st.subheader("Current and proposed policy")
    show_table(comparison_table(result), hide_index=True, key="sim-comparison")
    _workflow_section(result)
    _section("Newly blocked flows", result.newly_blocked, "newly_blocked")
    _section("Newly allowed flows", result.newly_allowed, "newly_allowed")
    _section("Violations resolved", result.violations_resolved, "violations_resolved")
    _section("Violations introduced", result.violations_introduced, "violations_introduced")
    for attribute, title, caption in ATTACK_PATH_SECTIONS:
        frame = getattr(result, attribute, None)
        if frame is None:
            continue
        _section(title, frame, attribute, caption=caption)
    st.subheader("External exposure before and after")
    if result.exposure.empty:
        st.caption("No external exposure recorded.")
    else:
        st.caption(
            "Exposure allowed counts the rows each policy allows; a row both policies deny is a violation of both, "
            "listed here because the communication was recorded."
        )
        exposure = result.exposure
        first = [c for c in ("current_allowed", "proposed_allowed") if c in exposure.columns]
        exposure = exposure[first + [c for c in exposure.columns if c not in first]]
        show_table(display_frame(exposure, MAX_SECTION_ROWS), hide_index=True, key="sim-exposure")
    st.download_button("Download the proposed policy (YAML)", proposed_yaml, file_name="proposed_policy.yaml", mime="application/x-yaml", key="sim-download-policy", type="primary")


def _device_buildings(ctx) -> list[str]:
    """Return the devices' own building names, which building selectors may also use."""
    devices = ctx.twin().devices
    if "building" not in devices:
        return []
    return sorted({b for b in devices["building"].dropna().astype(str) if b})


def render() -> None:
    """Draw the simulation page."""
    st.title("Policy simulation")
    ctx = require_context()
    try:
        from twin.policy.simulate import policy_to_yaml
    except ImportError as exc:
        show_error("Loading the simulator", exc)
        return
    site = ctx.site()
    if STATE_BASE not in st.session_state or st.session_state.get("simulation-run") != ctx.run_id:
        st.session_state["simulation-run"] = ctx.run_id
        _reset(policy_to_table(site.policy), (site.policy.default_action, site.policy.intra_segment))
    st.caption(
        "The table starts from the site's policy. Edit, add or delete rows; the order column sets the rule order "
        "(first match wins). Selectors: any, internet, KEY:VALUE (segment, zone, class, device, criticality, cidr, building; "
        "| between alternatives, & to combine) or a device id. Services: comma-separated, such as tcp/443, udp/1000-2000, https, dicom."
    )
    cols = st.columns([3, 1])
    upload = cols[0].file_uploader("Or upload a policy YAML (a policy mapping, or a site.yaml)", type=["yaml", "yml"], key="sim-upload")
    upload_error = None
    if upload is None:
        _forget_upload()
    else:
        upload_error = _load_upload(upload, site)
    if cols[1].button("Reset to the site's policy", key="sim-reset"):
        _reset(policy_to_table(site.policy), (site.policy.default_action, site.policy.intra_segment), "Table reset to the site's policy.")
    if upload_error:
        st.error(upload_error)
        st.caption("Nothing is simulated while this file is selected: remove it from the uploader (×) or upload a valid policy.")
        return
    _take_carried_rules()
    notice = st.session_state.pop(STATE_NOTICE, None)
    if notice:
        st.info(notice)

    default_action, intra_segment = st.session_state[STATE_DEFAULTS]
    generation = st.session_state[STATE_GENERATION]
    cols = st.columns(2)
    default_action = cols[0].selectbox("Default between segments and to the internet", ["deny", "allow"], index=["deny", "allow"].index(default_action), key=f"sim-default-{generation}")
    intra_segment = cols[1].selectbox("Default within a segment", ["allow", "deny"], index=["allow", "deny"].index(intra_segment), key=f"sim-intra-{generation}")
    edited = st.data_editor(
        st.session_state[STATE_BASE],
        num_rows="dynamic",
        hide_index=True,
        key=f"sim-rules-{generation}",
        column_config={
            "order": st.column_config.NumberColumn("order", help="Rules are evaluated in this order; first match wins.", step=1),
            "name": st.column_config.TextColumn("name", required=True),
            "action": st.column_config.SelectboxColumn("action", options=["allow", "deny"], required=True),
            "from": st.column_config.TextColumn("from"),
            "to": st.column_config.TextColumn("to"),
            "services": st.column_config.TextColumn("services"),
            "required": st.column_config.CheckboxColumn("required", help="A required clinical workflow: the simulator reports it when the proposed policy blocks it."),
            "description": st.column_config.TextColumn("description"),
        },
    )
    try:
        proposed = policy_from_table(edited, default_action=default_action, intra_segment=intra_segment, site=site, buildings=_device_buildings(ctx))
    except ConfigError as exc:
        log.info("app: the simulation table has an invalid rule: %s", exc)
        st.error(f"Invalid rule: {exc}")
        return
    st.caption(f"Proposed policy: {plural(len(proposed.rules), 'rule')}.")
    if st.button("Simulate", type="primary", key="sim-run"):
        st.session_state[STATE_RESULT_YAML] = policy_to_yaml(proposed)
    proposed_yaml = st.session_state.get(STATE_RESULT_YAML)
    if proposed_yaml is None:
        return
    if proposed_yaml != policy_to_yaml(proposed):
        st.caption("The table changed since this simulation; press Simulate again to update the result.")
    try:
        result = data.run_simulation(ctx.path, ctx.run_id, proposed_yaml)
    except Exception as exc:  # noqa: BLE001 - shown to the user
        show_error("The simulation", exc)
        return
    _show_result(result, proposed_yaml)


if __name__ == "__main__":
    render()
