"""A proposed policy for the sample site, and the ground truth of simulating it.

The proposal reads like a change an architect would bring to review. Each
change lands in a different section of the simulation:

- ``quarantine-hvac`` (new deny at the top) isolates the building-systems
  HVAC controller that was seen talking to the EHR. It also blocks the
  controller's normal BACnet, DNS and NTP flows, so flows are newly blocked,
  violations are introduced and the required ``dns-and-ntp`` workflow breaks
  for a pair that was observed.
- ``biomed-remote-support`` (new allow, placed above
  ``deny-remote-access-to-clinical``) lets the IT zone open ssh, telnet,
  RDP and VNC sessions to the clinical zone. It legitimises the planted
  telnet from a workstation to an infusion pump, which opens an observed
  attack path.
- ``close-legacy-dicom-port`` (new deny above ``modalities-to-pacs``)
  closes tcp/11112 on the PACS because no flow used it. The required
  ``modalities-to-pacs`` workflow breaks for pairs that were never observed.
- ``modalities-to-vendor-cloud-eu`` (new allow) accepts the vendor's new
  cloud region, which legitimises the planted CT upload to an address
  outside the allowlist, so the exposure allowed by the policy grows.

The ground truth is derived with the generator's own first-match
evaluation (:func:`twin.sample.traffic.evaluate`) and breadth-first search,
never with the product's policy or analysis code.
"""

from __future__ import annotations

import ipaddress

import numpy as np

from twin.model.site import NAMED_SERVICES
from twin.sample.catalog import MODALITY_CLASSES
from twin.sample.plan import ROGUE_EXFIL_IP, SitePlan
from twin.sample.traffic import (
    PROTO_NAMES,
    TCP,
    UDP,
    Edges,
    _attack_paths,
    _exposure,
    _ip_text,
    _rule,
    _selector_mask,
    evaluate,
    node_table,
)

__all__ = ["build_proposed_policy", "simulation_truth", "MAX_WORKFLOW_PORTS"]

# Largest port range of a required workflow service that the truth enumerates
# port by port (count, default 64); the sample policies use single ports.
MAX_WORKFLOW_PORTS = 64


def _quarantined_hvac(plan: SitePlan):
    """Return the HVAC controller the planted traffic uses (the first normal one in building C, else the last building)."""
    c = plan.buildings[min(2, len(plan.buildings) - 1)].lower()
    for d in plan.devices:
        if not d.planted and d.segment.id == f"{c}-bms" and d.device_class == "hvac_controller":
            return d
    raise RuntimeError(f"sample generator bug: no HVAC controller in segment {c}-bms to quarantine")


def build_proposed_policy(plan: SitePlan, policy: dict) -> dict:
    """Return the proposed policy (site.yaml form) derived from the current ``policy``."""
    rules = [dict(rule) for rule in policy["rules"]]
    names = [rule["name"] for rule in rules]
    hvac = _quarantined_hvac(plan)
    quarantine = _rule("quarantine-hvac", "deny", {"device": [hvac.ip_text]}, "any",
                       description=f"Isolate {hvac.ip_text}, seen opening HTTPS to the EHR, until it is reimaged.")
    remote = _rule("biomed-remote-support", "allow", "zone:it", "zone:clinical", ["ssh", "telnet", "rdp", "vnc"],
                   description="Biomedical engineering supports clinical devices from IT workstations.")
    dicom = _rule("close-legacy-dicom-port", "deny", "any", "class:pacs", ["tcp/11112"],
                  description="No flow used DICOM on tcp/11112, so close it on the PACS.")
    cloud = _rule("modalities-to-vendor-cloud-eu", "allow", {"device_class": list(MODALITY_CLASSES)},
                  {"internet": True, "cidr": [str(ipaddress.ip_network(f"{ROGUE_EXFIL_IP}/28", strict=False))]},
                  ["https"], description="The modality vendor's new cloud region.")
    rules.insert(names.index("deny-remote-access-to-clinical"), remote)
    rules.insert([r["name"] for r in rules].index("modalities-to-pacs"), dicom)
    rules.insert([r["name"] for r in rules].index("modalities-to-vendor-cloud") + 1, cloud)
    rules.insert(0, quarantine)
    return {"default_action": policy["default_action"], "intra_segment": policy["intra_segment"], "rules": rules}


def _workflow_rules(current: dict, proposed: dict) -> list[dict]:
    """Return every required rule of either policy, once per distinct definition."""
    out: list[dict] = []
    for rule in current["rules"] + proposed["rules"]:
        if rule.get("required") and rule not in out:
            out.append(rule)
    return out


def _service_points(services: list[str]) -> list[tuple[int, int]]:
    points = []
    for text in services:
        if text in NAMED_SERVICES:
            ranges = NAMED_SERVICES[text]
        else:
            name, _, ports = text.partition("/")
            low, _, high = ports.partition("-")
            ranges = ((name, int(low), int(high or low)),)
        for name, low, high in ranges:
            if high - low >= MAX_WORKFLOW_PORTS or name not in ("tcp", "udp"):
                raise RuntimeError(f"sample generator bug: workflow service {text!r} is not a short tcp or udp range")
            number = TCP if name == "tcp" else UDP
            points.extend((number, port) for port in range(low, high + 1))
    return points


def _broken_workflows(current: dict, proposed: dict, nodes, externals: list[str]) -> list[dict]:
    """Return {workflow, blocked_by} for every required rule whose covered triples the proposed policy denies."""
    every = np.arange(len(nodes.external))
    found: set[tuple[str, str]] = set()
    for rule in _workflow_rules(current, proposed):
        src = every[_selector_mask(rule["from"], nodes, every)]
        dst = every[_selector_mask(rule["to"], nodes, every)]
        pair_src = np.repeat(src, len(dst))
        pair_dst = np.tile(dst, len(src))
        keep = (pair_src != pair_dst) & ~(nodes.external[pair_src] & nodes.external[pair_dst])
        pair_src, pair_dst = pair_src[keep], pair_dst[keep]
        for proto, port in _service_points(rule["services"]):
            n = len(pair_src)
            combos = Edges(pair_src, pair_dst, np.full(n, proto, np.int64), np.full(n, port, np.int64),
                           np.zeros(n, bool), externals)
            allowed, deciding = evaluate(proposed, combos, nodes)
            for name in set(deciding[~allowed].tolist()):
                found.add((rule["name"], str(name)))
    return [{"workflow": w, "blocked_by": r} for w, r in sorted(found)]


def _flow_rows(edges: Edges, nodes, index: np.ndarray, rule: np.ndarray) -> list[dict]:
    rows = [
        {"src_ip": s, "dst_ip": d, "proto": PROTO_NAMES[int(p)], "dst_port": int(q), "rule": str(r)}
        for s, d, p, q, r in zip(_ip_text(nodes.ip[edges.src[index]]), _ip_text(nodes.ip[edges.dst[index]]),
                                 edges.proto[index], edges.port[index], rule[index])
    ]
    return sorted(rows, key=lambda v: (v["src_ip"], v["dst_ip"], v["proto"], v["dst_port"]))


def simulation_truth(plan: SitePlan, site: dict, proposed: dict, edges: Edges) -> dict:
    """Derive what simulating ``proposed`` against the site's policy must report.

    Returns
    -------
    dict
        ``newly_blocked`` and ``newly_allowed`` (deciding rule of the
        proposed policy), ``workflows_broken``, ``violations_resolved``
        (rule of the current policy), ``violations_introduced`` (rule of the
        proposed policy), ``attack_paths_cut`` and ``attack_paths_opened``
        and ``attack_paths_unenforced`` (observed mode), ``exposure_before``
        and ``exposure_after``.
    """
    current = site["policy"]
    nodes = node_table(plan, edges.externals)
    cur_allowed, cur_rule = evaluate(current, edges, nodes)
    new_allowed, new_rule = evaluate(proposed, edges, nodes)

    def path_keys(keep: np.ndarray) -> set[tuple[str, str]]:
        return {(p["entry"], p["target"]) for p in _attack_paths(plan, site, edges, nodes, keep)}

    cur_paths, new_paths = path_keys(cur_allowed), path_keys(new_allowed)
    # Paths that exist in today's network (every edge) and that both
    # policies stop are unenforced: the gap is enforcement, not the policy.
    today_paths = path_keys(np.ones(len(edges.src), dtype=bool))
    exposure_allowed = {"before": 0, "after": 0}
    lookup = {(int(s), int(d), int(p), int(q)): i for i, (s, d, p, q)
              in enumerate(zip(nodes.ip[edges.src], nodes.ip[edges.dst], edges.proto, edges.port))}
    for row in _exposure(site, edges, nodes):
        device, external = int(ipaddress.IPv4Address(row["ip"])), int(ipaddress.IPv4Address(row["external"]))
        ends = (device, external) if row["direction"] == "outbound" else (external, device)
        i = lookup[(*ends, TCP if row["proto"] == "tcp" else UDP, row["dst_port"])]
        exposure_allowed["before"] += int(cur_allowed[i])
        exposure_allowed["after"] += int(new_allowed[i])
    return {
        "newly_blocked": _flow_rows(edges, nodes, np.flatnonzero(cur_allowed & ~new_allowed), new_rule),
        "newly_allowed": _flow_rows(edges, nodes, np.flatnonzero(~cur_allowed & new_allowed), new_rule),
        "workflows_broken": _broken_workflows(current, proposed, nodes, edges.externals),
        "violations_resolved": _flow_rows(edges, nodes, np.flatnonzero(~cur_allowed & new_allowed), cur_rule),
        "violations_introduced": _flow_rows(edges, nodes, np.flatnonzero(cur_allowed & ~new_allowed), new_rule),
        "attack_paths_cut": [{"mode": "observed", "entry": e, "target": t} for e, t in sorted(cur_paths - new_paths)],
        "attack_paths_opened": [{"mode": "observed", "entry": e, "target": t} for e, t in sorted(new_paths - cur_paths)],
        "attack_paths_unenforced": [{"mode": "observed", "entry": e, "target": t}
                                    for e, t in sorted(today_paths - cur_paths - new_paths)],
        "exposure_before": exposure_allowed["before"],
        "exposure_after": exposure_allowed["after"],
    }
